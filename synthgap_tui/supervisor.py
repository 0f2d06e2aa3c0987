"""The supervisor: one detached process per workspace that keeps the queue moving.

It launches queued runs whose dependencies finished onto free GPUs (or CPU
slots), follows their events into the index, reaps them, marks vanished ones
``lost``, and exits when nothing runs and nothing can start. A lock file
makes it unique; a restarted supervisor adopts runs that are still alive.
Runners are started in their own session with output to files, so closing
the app or losing SSH stops neither them nor the supervisor.
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import signal
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field

import psutil
from filelock import FileLock, Timeout

from runners import kinds, protocol
from synthgap_tui import launchers
from synthgap_tui.errors import UserError
from synthgap_tui.runs import blocking, read_status, resolve_artifacts, set_state, update_status
from synthgap_tui.store import RunStore
from synthgap_tui.summaries import fold_events
from synthgap_tui.workspace import Workspace


log = logging.getLogger("synthgap.supervisor")
PID_FILE = "supervisor.pid"
CRASH_FILE = "supervisor.stderr"
LOG_BYTES = 5 * 2**20  # then supervisor.log.1 .. .3


@dataclass
class Config:
    """``config.toml`` of a workspace, section ``[supervisor]``."""

    gpus: list[int] | None = None  # GPU indices to use; None = every GPU NVML reports
    cpu_slots: int = 1  # concurrent CPU runs when a run gets no GPU
    grace_seconds: float = 30.0  # SIGTERM -> SIGKILL on cancel
    poll_seconds: float = 0.5
    launcher: str = launchers.DEFAULT  # how runs are started: "local" processes
    runners: dict[str, list[str]] = field(default_factory=dict)  # kind -> command prefix
    gc_keep_last: bool = True  # [gc] keep_last: `synthgap gc` keeps each run's last checkpoint
    keep_backups: int = 5  # [store] keep_backups: copies of the index `db rebuild` and `gc` keep
    min_free_gb: float = 20.0  # [store] min_free_gb: warn (doctor, app) when the workspace has less free
    snapshot_code: bool = True  # [supervisor] snapshot_code: runs run the runners as they were at submit
    launcher_options: dict = field(default_factory=dict)  # the table named after the launcher ([slurm])

    @classmethod
    def load(cls, ws: Workspace) -> "Config":
        try:
            data = tomllib.loads(ws.config_path.read_text())
        except FileNotFoundError:
            return cls()
        except (tomllib.TOMLDecodeError, OSError) as e:
            raise SystemExit(f"synthgap: {ws.config_path}: {e}")
        sup = data.get("supervisor", {})
        known = {k: sup[k] for k in ("gpus", "cpu_slots", "grace_seconds", "poll_seconds", "launcher",
                                     "snapshot_code") if k in sup}
        store = data.get("store", {})
        config = cls(**known, runners=data.get("runners", {}),
                     gc_keep_last=bool(data.get("gc", {}).get("keep_last", True)),
                     keep_backups=int(store.get("keep_backups", cls.keep_backups)),
                     min_free_gb=float(store.get("min_free_gb", cls.min_free_gb)))
        options = data.get(config.launcher, {})
        from runners.kinds.base import COMMON

        field = COMMON.get(config.launcher)  # the launcher's options are checked as a spec's are
        problem = field.problem(options) if field else None
        if problem:
            raise SystemExit(f"synthgap: {ws.config_path}: [{config.launcher}] {problem}")
        config.launcher_options = options
        return config

    def command(self, kind: str) -> list[str]:
        return list(self.runners.get(kind) or [sys.executable, "-m", kinds.get(kind).runner])


def detect_gpus(config: Config) -> list[int]:
    if config.gpus is not None:
        return list(config.gpus)
    from synthgap_tui.gpu import NvmlMonitor

    monitor = NvmlMonitor()
    report = monitor.snapshot()
    monitor.close()
    return [g.index for g in report.gpus]


class Supervisor:
    def __init__(self, ws: Workspace, config: Config | None = None):
        self.ws = ws
        self.store = RunStore(ws)
        self.config = config or Config.load(ws)
        self.gpus = detect_gpus(self.config)
        self.launcher = launchers.get(self.config.launcher)
        self.readers: dict[str, protocol.EventReader] = {}
        self.folded: dict[str, dict] = {}
        self.stopping = False

    # -- one pass -------------------------------------------------------------
    def tick(self) -> bool:
        """Advance everything once. Returns False when there is nothing left to do."""
        runs = {r["id"]: r for r in self._live()}
        active = [r for r in runs.values() if r["state"] in protocol.ACTIVE_STATES]
        statuses = {r["id"]: read_status(self.ws, r["id"]) for r in active}
        # One question to the launcher for all active runs of this launcher.
        polls = self.launcher.alive({i: s.get("handle") or {} for i, s in statuses.items()
                                     if s.get("launcher", launchers.DEFAULT) == self.launcher.name})
        changes: dict[str, dict] = {}
        for run in active:
            status = statuses[run["id"]]
            self._follow(run, changes)
            self._escalate_cancel(run, status)
            poll = polls.get(run["id"], launchers.Poll(True))
            if poll.info and poll.info != status.get("where"):
                self._note_where(run, poll.info, status.get("where") or {})
            # A run whose final event is written has ended, whether or not its launcher can be asked.
            ended = poll.info.get("problem") and self.folded.get(run["id"], {}).get("final")
            if not poll.running or ended:
                self._settle(run, poll)
                changes.pop(run["id"], None)
        self.store.update_many(changes)
        for run_id, why in blocking(self._live()).items():
            set_state(self.store, run_id, protocol.BLOCKED if why else protocol.QUEUED, error=why)
            log.info(f"{run_id} " + (f"blocked: {why}" if why else "unblocked"))
        runs = {r["id"]: r for r in self._live()}
        self._launch_ready(runs)
        now = self._live()
        return any(r["state"] in protocol.ACTIVE_STATES for r in now) or bool(self._ready(now))

    def _live(self) -> list[dict]:
        """The runs that have not ended and the runs they depend on: all a pass reads
        (the ended runs, most of a workspace, stay on disk)."""
        runs = self.store.list(state=sorted(protocol.ACTIVE_STATES | protocol.WAITING_STATES))
        needed = {d for r in runs for d in r.get("depends_on") or []} - {r["id"] for r in runs}
        return runs + list(self.store.get_many(needed).values())

    def _follow(self, run: dict, changes: dict) -> None:
        run_id = run["id"]
        reader = self.readers.setdefault(run_id, protocol.EventReader(self.ws.events_path(run_id)))
        events = reader.read_new()
        if not events:
            return
        fold = fold_events(events, self.folded.setdefault(run_id, {}))
        patch = {k: v for k, v in fold.items() if k != "final" and run.get(k) != v}
        if run["state"] == protocol.STARTING and any(e["type"] == protocol.START for e in events):
            set_state(self.store, run_id, protocol.RUNNING)  # status.json says it too
        if patch:
            changes[run_id] = patch

    def _note_where(self, run: dict, where: dict, before: dict) -> None:
        """Where the launcher says the run is (job, node, scheduler state) into
        status.json and the index; a new problem (a scheduler unreachable) is logged once."""
        update_status(self.store, run["id"], where=where)  # not the state: _follow may have just moved it
        if where.get("problem") and where["problem"] != before.get("problem"):
            log.warning(f"{run['id']} {run.get('name')}: {where['problem']}")
        elif before.get("problem") and not where.get("problem"):
            log.info(f"{run['id']} {run.get('name')}: {self.launcher.name} answers again")

    def _settle(self, run: dict, poll: launchers.Poll) -> None:
        run_id, exit_code, where = run["id"], poll.exit_code, poll.info
        reader = self.readers.pop(run_id, None) or protocol.EventReader(self.ws.events_path(run_id))
        # _follow read the file up to a moment ago; take what came since.
        fold = fold_events(reader.read_new(), self.folded.pop(run_id, {}))
        final = fold.pop("final", None)
        if final:
            state = protocol.STATE_OF_FINAL_EVENT[final]
            if state == protocol.FINISHED and exit_code not in (0, None):
                state, fold["error"] = protocol.FAILED_STATE, f"runner exited with code {exit_code}"
            elif state == protocol.CANCELLED_STATE and not run.get("cancel_requested") and where.get("gave_up"):
                state, fold["error"] = protocol.FAILED_STATE, where["gave_up"]  # time limit, requeues used up
        elif run.get("cancel_requested"):
            state = protocol.CANCELLED_STATE
        elif exit_code == protocol.NO_SPACE_EXIT:  # the disk filled up before the runner could say so
            state = protocol.FAILED_STATE
            folder = self.ws.run_dir(run_id)
            fold["error"] = (f"no space left on device in {folder} ({protocol.fmt_bytes(protocol.free_bytes(folder))} "
                             "free): free space, then `synthgap resume` continues from the last checkpoint")
        else:
            state = protocol.LOST
            fold["error"] = ("runner process exited with code %s without a final event" % exit_code
                             if exit_code is not None else "runner process vanished without a final event")
            if where.get("state"):
                fold["error"] += f" ({self.launcher.name} job {where.get('job')}: {where['state']})"
        fold.setdefault("ended", time.time())
        set_state(self.store, run_id, state, exit_code=exit_code, **fold)
        log.info(f"{run_id} {run.get('name')} -> {state}")

    def _escalate_cancel(self, run: dict, status: dict) -> None:
        asked = run.get("cancel_requested")
        if asked and time.time() - asked > self.config.grace_seconds:
            launcher, handle = launchers.of_status(status)
            if launcher.kill(handle):
                log.info(f"{run['id']} did not stop within {self.config.grace_seconds:.0f}s: killed")

    # -- launching ------------------------------------------------------------
    def _ready(self, runs) -> list[dict]:
        by_id = {r["id"]: r for r in runs}
        ready = []
        for r in runs:
            if r["state"] != protocol.QUEUED:
                continue
            deps = [by_id.get(d) for d in r.get("depends_on") or []]
            if all(d is not None and d["state"] == protocol.FINISHED for d in deps):
                ready.append(r)
        return ready

    def _free_devices(self, runs: dict) -> tuple[list[int], int]:
        busy, cpu_busy = set(), 0
        for r in runs.values():
            if r["state"] in protocol.ACTIVE_STATES:
                if r.get("gpus"):
                    busy.update(r["gpus"])
                else:
                    cpu_busy += 1
        return [g for g in self.gpus if g not in busy], self.config.cpu_slots - cpu_busy

    def _launch_ready(self, runs: dict) -> None:
        if self.launcher.schedules:  # the scheduler places them (and queues them until it can), together
            prepared = [(run, launch) for run in self._ready(list(runs.values()))
                        if not self.stopping and (launch := self._prepare(run, [])) is not None]
            results = self.launcher.launch_many([launch for _, launch in prepared])
            for run, launch in prepared:
                if self._record(run, launch, results[run["id"]]):
                    runs[run["id"]] = {**run, "state": protocol.STARTING, "gpus": []}
            return
        for run in self._ready(list(runs.values())):
            free_gpus, free_cpu = self._free_devices(runs)
            want = run.get("gpus_requested", 1)
            if self.gpus and want > 0:
                if len(free_gpus) < want:
                    if want > len(self.gpus):
                        set_state(self.store, run["id"], protocol.FAILED_STATE, ended=time.time(),
                                  error=f"asks for {want} GPUs; this machine has {len(self.gpus)}")
                    continue
                devices = free_gpus[:want]
            else:
                if free_cpu <= 0:
                    continue
                devices = []
            if self.stopping or not self._launch(run, devices):
                return
            runs[run["id"]] = {**run, "state": protocol.STARTING, "gpus": devices}

    def _launch(self, run: dict, devices: list[int]) -> bool:
        """Start one run. False when the launcher cannot start anything now (the
        run stays queued, with the reason in its error field)."""
        launch = self._prepare(run, devices)
        if launch is None:
            return True
        return self._record(run, launch, self.launcher.launch_many([launch])[run["id"]])

    def _prepare(self, run: dict, devices: list[int]) -> launchers.Launch | None:
        """What to start for a run, or None when it is not started now (it failed, or
        waits for disk space: its error field says which)."""
        run_id = run["id"]
        run_dir = self.ws.run_dir(run_id)
        status = read_status(self.ws, run_id)
        spec_path = run_dir / protocol.SPEC_FILE
        try:
            spec = protocol.read_json(spec_path, {}) or {}
            resolved = resolve_artifacts(self.ws, spec)
            command = self.config.command(run["kind"])
            nodes = spec.get("nodes", 1)
            if (why := self._disk_too_small(run, resolved)) is not None:
                if not (run.get("error") or "").startswith(why.split(" and ")[0]):  # said once, not every pass
                    log.warning(f"{run_id} {run.get('name')} {why}")
                    self.store.update(run_id, error=why)
                return None  # the next runs may fit; this one is asked again each pass
            if self.launcher.max_nodes is not None and nodes > self.launcher.max_nodes:
                raise UserError(f"nodes = {nodes} needs a launcher that spans nodes ([supervisor] launcher = "
                                f"\"slurm\"); {self.launcher.name} runs on one")
        except (UserError, KeyError) as e:
            set_state(self.store, run_id, protocol.FAILED_STATE, ended=time.time(), error=str(e))
            log.info(f"{run_id} {run.get('name')} not started: {e}")
            return None
        if resolved != spec:
            protocol.write_json_atomic(spec_path, resolved)
        command += ["--run-dir", str(run_dir)] + (["--resume"] if status.get("resume") else [])
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        if spec.get("code"):  # the runners as they were when it was submitted
            from synthgap_tui import snapshots

            code = snapshots.folder(self.ws.root, spec["code"])
            if not code.is_dir():
                set_state(self.store, run_id, protocol.FAILED_STATE, ended=time.time(),
                          error=f"its code snapshot {code} is gone (gc?); `synthgap retry` runs it with today's code")
                return None
            env["PYTHONPATH"] = os.pathsep.join([str(code), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
            env[snapshots.ENV] = spec["code"]
        if not self.launcher.schedules:  # a scheduler sets the devices of the node it picks
            env.update(CUDA_DEVICE_ORDER="PCI_BUS_ID", CUDA_VISIBLE_DEVICES=",".join(map(str, devices)))
        if not devices and not self.launcher.schedules and "OMP_NUM_THREADS" not in os.environ:
            # CPU runs share the cores: more threads than cores makes small ops wait.
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // max(1, self.config.cpu_slots)))
        options = {**self.config.launcher_options, **(spec.get(self.launcher.name) or {})}
        # A sweep's members (NAME@k=v) form a group a scheduler may submit together.
        name = run.get("name") or ""
        group = f"{run.get('experiment')}/{name.partition('@')[0]}" if "@" in name else None
        return launchers.Launch(run_id=run_id, command=command, nproc=max(1, run.get("gpus_requested", 1)), env=env,
                                run_dir=run_dir, devices=devices, options=options, nodes=nodes,
                                gpus=run.get("gpus_requested", 1), group=group)

    def _record(self, run: dict, launch: launchers.Launch, result: dict | launchers.LaunchError) -> bool:
        """Keep what launching a run gave: its handle, or why it is still queued (False)."""
        run_id = run["id"]
        if isinstance(result, launchers.LaunchError):
            if run.get("error") != f"not started yet: {result}":
                log.warning(f"{run_id} {run.get('name')} not started yet: {result}")
                self.store.update(run_id, error=f"not started yet: {result}")
            return False
        status = read_status(self.ws, run_id)
        set_state(self.store, run_id, protocol.STARTING, launcher=self.launcher.name, handle=result,
                  gpus=launch.devices, started=time.time(), attempt=status.get("attempt", 1), error=None, where=None)
        log.info(f"{run_id} {run.get('name')} launched on {launch.devices or 'cpu'}: "
                 f"{self.launcher.describe(result)}")
        return True

    def _disk_too_small(self, run: dict, spec: dict) -> str | None:
        """Why a run that would write more than the workspace's free space waits, or None."""
        kind = kinds.all_kinds().get(run["kind"])
        need = kind.artifact_bytes(spec) if kind and kind.artifact_bytes else None
        free = protocol.free_bytes(self.ws.root)
        if need is None or free is None or need <= free:
            return None
        return (f"not started yet: its output needs ~{protocol.fmt_bytes(need)} and {self.ws.root} has "
                f"{protocol.fmt_bytes(free)} free; free space (or make fewer images)")

    # -- main loop ------------------------------------------------------------
    def serve(self) -> int:
        lock = FileLock(str(self.ws.supervisor_lock))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return 0  # another supervisor owns this workspace
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        protocol.write_text_atomic(self.ws.root / PID_FILE, str(os.getpid()))
        log.info(f"supervisor {os.getpid()} up; gpus {self.gpus or 'none (cpu)'}")
        try:
            while not self.stopping:
                try:
                    busy = self.tick()
                except Exception:  # a bad run must not stop the queue for everyone
                    log.exception("error in supervisor pass")
                    busy = True
                if not busy:
                    # Re-check under the index lock and let go of the supervisor
                    # lock while holding it: a submit that lands after this
                    # check finds the lock free and starts a new supervisor.
                    with self.store.locked():
                        if not self.tick():
                            lock.release()
                            blocked = len(self.store.list(state=protocol.BLOCKED))
                            log.info("nothing can run" + (f"; {blocked} run(s) blocked behind runs that "
                                      "did not finish (resume or retry those)" if blocked else "")
                                      + "; supervisor exits")
                            return 0
                time.sleep(self.config.poll_seconds)
        finally:
            if lock.is_locked:
                lock.release()
        log.info("supervisor stopped by SIGTERM; runs keep going")
        return 0

    def _stop(self, *_):
        self.stopping = True



def is_running(ws: Workspace) -> bool:
    lock = FileLock(str(ws.supervisor_lock))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


def ensure_supervisor(ws: Workspace) -> bool:
    """Start a detached supervisor unless one runs. Returns True if one was started."""
    if is_running(ws):
        return False
    ws.ensure()
    # The log rotates (logging); what a crash prints before logging is set up goes here.
    with open(ws.root / CRASH_FILE, "ab") as out:
        subprocess.Popen([sys.executable, "-m", "synthgap_tui.supervisor", "--workspace", str(ws.root)],
                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                         start_new_session=True, close_fds=True)
    return True


def stop_supervisor(ws: Workspace, timeout: float = 15.0) -> bool:
    """SIGTERM to the workspace's supervisor (its runs keep going). True if one was stopped."""
    if not is_running(ws):
        return False
    try:
        proc = psutil.Process(int((ws.root / PID_FILE).read_text()))
        if "synthgap_tui.supervisor" not in " ".join(proc.cmdline()):
            raise psutil.NoSuchProcess(proc.pid)
        proc.terminate()
    except (OSError, ValueError, psutil.Error):
        raise UserError(f"a supervisor holds {ws.supervisor_lock} but its process is not known "
                        f"(no {PID_FILE}); stop it by hand") from None
    deadline = time.time() + timeout
    while is_running(ws):
        if time.time() > deadline:
            raise UserError(f"the supervisor (pid {proc.pid}) did not stop within {timeout:.0f}s")
        time.sleep(0.1)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SynthGap supervisor (started by submit and the app)")
    parser.add_argument("--workspace", required=True)
    args = parser.parse_args(argv)
    ws = Workspace.at(args.workspace)
    handler = logging.handlers.RotatingFileHandler(ws.supervisor_log, maxBytes=LOG_BYTES, backupCount=3)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return Supervisor(ws).serve()


if __name__ == "__main__":
    sys.exit(main())
