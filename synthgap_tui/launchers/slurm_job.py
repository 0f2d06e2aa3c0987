"""What runs inside a Slurm job: the runner, as a child process, under submitit.

Imported on the compute node by submitit's job entry point (the pickled
``RunnerJob``); stdlib and submitit only. submitit calls ``checkpoint``
when the job gets its warning signal (time limit near, or preemption):
the runner has the same signal (Slurm signals every process of the step)
and saves a checkpoint; ``checkpoint`` waits for it and hands submitit the
same job with ``--resume`` to requeue, until ``max_requeues``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import submitit

STATE_FILE = "slurm-job.json"  # in the run directory: what the job wrapper knows


def write_state(run_dir: Path, **fields) -> None:
    """Merge ``fields`` into the run's slurm-job.json (atomic: a rename)."""
    path = Path(run_dir) / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        state = {}
    state.update(fields)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)


def read_state(run_dir: Path) -> dict:
    try:
        return json.loads((Path(run_dir) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}


class RunnerJob(submitit.helpers.Checkpointable):
    def __init__(self, command: list[str], env: dict[str, str], run_dir: str, nproc: int = 1,
                 max_requeues: int = 3, requeues: int = 0, resume: bool = False):
        self.command, self.env, self.run_dir = command, env, run_dir
        self.nproc, self.max_requeues, self.requeues, self.resume = nproc, max_requeues, requeues, resume
        self.proc: subprocess.Popen | None = None

    def _command(self) -> list[str]:
        cmd = list(self.command) + (["--resume"] if self.resume and "--resume" not in self.command else [])
        env = submitit.JobEnvironment()
        nodes = env.num_nodes
        if (self.nproc > 1 or nodes > 1) and cmd[1:2] == ["-m"]:
            # One torchrun per node (submitit starts one task per node); node 0 is the rendezvous.
            cmd = [cmd[0], "-m", "torch.distributed.run", f"--nnodes={nodes}", f"--node_rank={env.node}",
                   f"--nproc_per_node={self.nproc}", f"--master_addr={env.hostnames[0]}",
                   f"--master_port={29500 + int(env.job_id.split('_')[0]) % 1000}", *cmd[1:]]
        return cmd

    def __call__(self) -> int:
        env = submitit.JobEnvironment()
        main = env.global_rank == 0
        if main:
            write_state(self.run_dir, job_id=env.job_id, node=env.hostname, requeues=self.requeues,
                        started=time.time(), exit_code=None, gave_up=None)
        with open(Path(self.run_dir) / "stdout.log", "ab") as out:
            # Not a new session: Slurm's signals reach the runner as they reach this process.
            self.proc = subprocess.Popen(self._command(), stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.run_dir,
                                         env={**os.environ, **self.env})
            code = self.proc.wait()
        if main:
            write_state(self.run_dir, exit_code=code, ended=time.time())
        return code

    def _ended(self, timeout: float) -> bool:
        """Has the runner exited (reaping it)? Not Popen.wait: this runs in a
        signal handler that interrupted __call__'s Popen.wait, which holds its lock."""
        deadline = time.time() + timeout
        while True:
            try:
                if os.waitpid(self.proc.pid, os.WNOHANG)[0]:
                    return True
            except ChildProcessError:  # reaped already
                return True
            if time.time() >= deadline:
                return False
            time.sleep(0.2)

    def checkpoint(self, *args, **kwargs):
        """Time limit or preemption: let the runner save, then requeue with --resume."""
        if self.proc is not None and not self._ended(0):
            self.proc.send_signal(signal.SIGTERM)  # it may have the warning signal already; same effect
            if not self._ended(float(os.environ.get("SYNTHGAP_CHECKPOINT_WAIT", "60"))):
                self.proc.kill()
        if self.requeues >= self.max_requeues:
            write_state(self.run_dir, gave_up=f"stopped at the time limit after {self.requeues} requeue(s) "
                        f"(max_requeues = {self.max_requeues}); resume it to continue", ended=time.time())
            return None  # submitit: not requeued, the job ends
        write_state(self.run_dir, requeued_at=time.time())
        return submitit.helpers.DelayedSubmission(RunnerJob(
            self.command, self.env, self.run_dir, self.nproc, self.max_requeues, self.requeues + 1, resume=True))
