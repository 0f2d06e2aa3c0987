"""A real one-node Slurm cluster on this machine (Debian's slurm-wlm and munge),
for the Slurm launcher's tests and bench/slurm.py. Everything lives in one
folder; the daemons are started as root in the foreground-less way their
packages use and stopped by the pids they write, never by name.

    python tests/slurm_cluster.py DIR     # start one and print the SLURM_CONF to export
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")


def available() -> str | None:
    """Why a cluster cannot start here, or None."""
    missing = [b for b in BINARIES if not shutil.which(b) and not Path(f"/usr/sbin/{b}").exists()]
    if missing:
        return f"Slurm / munge not installed ({', '.join(missing)}): apt-get install slurm-wlm munge"
    if os.geteuid() != 0:
        return "slurmd must run as root"
    return None


def _bin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class Cluster:
    def __init__(self, root: Path, cpus: int | None = None, max_array_size: int = 1001):
        self.root = Path(root)
        self.max_array_size = max_array_size  # Slurm's default; the tests make it small to see arrays split
        self.node = socket.gethostname().split(".")[0]
        self.cpus = cpus or os.cpu_count() or 1
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.pids: dict[str, Path] = {}

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def _write_config(self) -> None:
        for d in ("munge", "state", "spool", "log"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "munge", 0o700)
        key = self.root / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
            os.chmod(key, 0o400)
        r = self.root
        # Memory is left unset: the test box's RAM is not the node's business. cred_expire is
        # also how long a requeued job waits before it may start again (120 s by default); the
        # backfill pass that then starts it comes every bf_interval seconds (30 by default).
        self.conf.write_text(f"""\
ClusterName=synthgap-test
SlurmctldHost={self.node}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket},cred_expire=10
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobRequeue=1
MinJobAge=600
MaxArraySize={self.max_array_size}
SlurmctldTimeout=30
MessageTimeout=3
SlurmdTimeout=10
InactiveLimit=0
KillWait=5
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
NodeName={self.node} CPUs={self.cpus} State=UNKNOWN
PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
""")

    def start(self, timeout: float = 60.0) -> "Cluster":
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()  # what did start, by pid
            raise

    def _start(self, timeout: float) -> "Cluster":
        self._write_config()
        r = self.root
        subprocess.run([_bin("munged"), f"--socket={self.munge_socket}", f"--key-file={r}/munge/munge.key",
                        f"--pid-file={r}/munge/munged.pid", f"--log-file={r}/log/munged.log",
                        f"--seed-file={r}/munge/munged.seed", "--force"], check=True, capture_output=True)
        self.pids["munged"] = r / "munge" / "munged.pid"
        self.start_controller()
        subprocess.run([_bin("slurmd"), "-f", str(self.conf)], check=True, capture_output=True,
                       env={**os.environ, **self.env})
        self.pids["slurmd"] = r / "slurmd.pid"
        self.wait_idle(timeout)
        return self

    def start_controller(self) -> None:
        # -i: ignore state files of an earlier cluster in the same folder that cannot be recovered.
        subprocess.run([_bin("slurmctld"), "-f", str(self.conf)], check=True, capture_output=True,
                       env={**os.environ, **self.env})
        self.pids["slurmctld"] = self.root / "slurmctld.pid"

    def stop_controller(self) -> None:
        self._stop("slurmctld")

    def wait_idle(self, timeout: float = 60.0) -> None:
        deadline = time.time() + timeout
        last = ""
        while time.time() < deadline:
            out = subprocess.run(["sinfo", "--noheader", "--format=%T"], capture_output=True, text=True,
                                 env={**os.environ, **self.env})
            last = (out.stdout + out.stderr).strip()
            if out.returncode == 0 and last in ("idle", "mixed", "allocated"):
                return
            if "drain" in last or "down" in last:
                subprocess.run(["scontrol", "update", f"nodename={self.node}", "state=resume"],
                               capture_output=True, env={**os.environ, **self.env})
            time.sleep(0.5)
        raise RuntimeError(f"the test cluster's node did not come up: {last!r}; logs in {self.root / 'log'}")

    def _stop(self, name: str, timeout: float = 20.0) -> None:
        pid_file = self.pids.pop(name, None)
        try:
            pid = int(pid_file.read_text().split()[0]) if pid_file else None
        except (OSError, ValueError, IndexError):
            pid = None
        if pid is None:
            return
        try:
            proc = psutil.Process(pid)
            proc.terminate()
            deadline = time.time() + timeout
            # The daemons are init's children: an exited one may stay a zombie until init reaps it.
            while proc.status() != psutil.STATUS_ZOMBIE:
                if time.time() > deadline:
                    proc.kill()
                    return
                time.sleep(0.05)
        except psutil.NoSuchProcess:
            pass

    def stop(self) -> None:
        subprocess.run(["scancel", "--full", "--user=root"], capture_output=True, env={**os.environ, **self.env})
        for name in ("slurmd", "slurmctld", "munged"):
            self._stop(name)


if __name__ == "__main__":
    cluster = Cluster(Path(sys.argv[1])).start()
    print(f"export SLURM_CONF={cluster.conf}")
