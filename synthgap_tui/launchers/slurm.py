"""Runs as Slurm jobs, submitted with submitit from the login node.

The supervisor keeps the queue, the dependencies and the index as with
local processes; each ready run becomes one job (name ``sg-<run id>``)
running the same runner module under ``slurm_job.RunnerJob``. The
workspace is on the shared filesystem, so events, checkpoints and results
are read as they are locally.

Job states come from one ``squeue`` call per supervisor pass for all
active jobs: submitit's own state lookup asks ``sacct``, which fails
without Slurm accounting. A job that left the queue ended; what the run
says (its final event, and ``slurm-job.json`` the job wrapper writes)
tells how.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from runners.kinds.base import SLURM_OPTIONS
from synthgap_tui.launchers import Launch, Launcher, LaunchError, Poll
from synthgap_tui.launchers.slurm_job import read_state

# Slurm job states after which the job will not run again.
ENDED = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                   "DEADLINE", "SPECIAL_EXIT", "REVOKED"})
DEFAULTS = {"time": 24 * 60, "signal_delay_s": 120, "max_requeues": 3}
JOB_PREFIX = "sg-"
REQUEUE_WINDOW_S = 120  # how long after a job asked for its requeue an ended state is not believed
# Our option names -> submitit's SlurmExecutor parameters (sbatch options).
_SUBMITIT = {"partition": "partition", "account": "account", "qos": "qos", "time": "time",
             "gpus_per_node": "gpus_per_node", "cpus_per_task": "cpus_per_task", "mem": "mem",
             "constraint": "constraint", "signal_delay_s": "signal_delay_s", "setup": "setup",
             "sbatch": "additional_parameters", "exclude": "exclude"}
assert set(_SUBMITIT) | {"max_requeues"} == set(SLURM_OPTIONS)


def _minutes(value) -> int:
    """A Slurm time (minutes, 'M:S', 'H:M:S', 'D-H', 'D-H:M', 'D-H:M:S') -> whole minutes
    (submitit takes minutes; seconds round up)."""
    if isinstance(value, int):
        return value
    days, dash, clock = str(value).rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if dash:  # after a day count the clock starts with hours
        h, m, s = (parts + [0, 0])[:3]
    else:
        h, m, s = {1: (0, parts[0], 0), 2: (0, *parts), 3: tuple(parts)}[len(parts)]
    return int(days or 0) * 1440 + h * 60 + m + (1 if s else 0)


def executor_for(launch: Launch):
    """submitit's executor for one run (its sbatch options), and the merged options."""
    import submitit

    opts = {**DEFAULTS, **launch.options}
    params = {_SUBMITIT[k]: v for k, v in opts.items() if k in _SUBMITIT}
    params["time"] = _minutes(opts["time"])
    # The run's own `gpus` is its request unless [slurm] / its slurm table say; 0 asks for none.
    params["gpus_per_node"] = opts.get("gpus_per_node", launch.gpus) or None
    executor = submitit.SlurmExecutor(folder=launch.run_dir / "slurm", max_num_timeout=opts["max_requeues"])
    executor.update_parameters(job_name=f"{JOB_PREFIX}{launch.run_id}", nodes=launch.nodes, ntasks_per_node=1,
                               stderr_to_stdout=True, **{k: v for k, v in params.items() if v is not None})
    return executor, opts


class SlurmLauncher(Launcher):
    name = "slurm"
    schedules = True
    max_nodes = None

    def __init__(self) -> None:
        self.calls = 0  # Slurm client commands run (bench/slurm.py: calls per pass)
        self._adoptable: dict[str, str] | None = None

    def _slurm(self, *args: str) -> subprocess.CompletedProcess:
        self.calls += 1
        try:
            return subprocess.run(list(args), capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            return subprocess.CompletedProcess(list(args), 1, "", str(e))

    # -- submit ----------------------------------------------------------------
    def _live_jobs_by_run(self) -> dict[str, str]:
        """Jobs a supervisor submitted before it was killed, by run id (asked once)."""
        if self._adoptable is None:
            out = self._slurm("squeue", "--noheader", "--me", "--format=%i|%j|%T")
            if out.returncode != 0:
                raise LaunchError(f"Slurm is unreachable ({_first_line(out)}); the run stays queued")
            self._adoptable = {}
            for line in out.stdout.splitlines():
                job_id, name, state = (line.split("|") + ["", ""])[:3]
                if name.startswith(JOB_PREFIX) and state not in ENDED:
                    self._adoptable[name[len(JOB_PREFIX):]] = job_id
        return self._adoptable

    def launch(self, launch: Launch) -> dict:
        handle = {"job_id": None, "run_dir": str(launch.run_dir), "submitted_from": socket.gethostname()}
        adopted = self._live_jobs_by_run().pop(launch.run_id, None)
        if adopted:  # already in Slurm's queue: never submit a run twice
            return {**handle, "job_id": adopted, "adopted": True}
        from synthgap_tui.launchers.slurm_job import RunnerJob

        executor, opts = executor_for(launch)
        job_env = {k: v for k, v in launch.env.items()
                   if k in ("PYTHONUNBUFFERED", "SYNTHGAP_KINDS", "PYTHONPATH", "SYNTHGAP_CODE")}
        try:
            job = executor.submit(RunnerJob(launch.command, job_env, str(launch.run_dir), nproc=launch.nproc,
                                            max_requeues=opts["max_requeues"]))
        except Exception as e:  # sbatch's error, whatever submitit wraps it in
            detail = getattr(e, "output", None) or getattr(e, "stderr", None) or str(e)
            detail = detail.decode() if isinstance(detail, bytes) else str(detail)
            raise LaunchError(f"sbatch failed: {detail.strip().splitlines()[-1] if detail.strip() else e}")
        finally:
            self.calls += 1
        return {**handle, "job_id": job.job_id}

    # -- watch -----------------------------------------------------------------
    def alive(self, handles: dict[str, dict]) -> dict[str, Poll]:
        jobs = {run_id: h["job_id"] for run_id, h in handles.items() if h.get("job_id")}
        out = {run_id: Poll(False, None, {"problem": "no Slurm job id recorded"})
               for run_id in handles if run_id not in jobs}
        if not jobs:
            return out
        res = self._slurm("squeue", "--noheader", "--states=all", "--format=%i|%T|%N|%r",
                          f"--jobs={','.join(sorted(set(jobs.values())))}")
        rows: dict[str, list[str]] = {}
        if res.returncode != 0 and "Invalid job id" not in res.stderr:
            # The controller is down or slow: nothing is known, so nothing has ended.
            problem = f"Slurm unreachable ({_first_line(res)}); states unknown, retrying"
            return {**out, **{run_id: Poll(True, None, {"job": job, "state": "UNKNOWN", "problem": problem})
                              for run_id, job in jobs.items()}}
        for line in res.stdout.splitlines():
            job_id, state, node, reason = (line.split("|") + ["", "", ""])[:4]
            rows[job_id] = [state.split()[0] if state else "", node, reason]
        for run_id, job in jobs.items():
            state, node, reason = rows.get(job, ["", "", ""])
            info = {"job": job, "state": state or "GONE", "node": node or None,
                    "reason": reason if reason not in ("None", "") else None}
            if state and state not in ENDED:
                requeues = read_state(Path(handles[run_id]["run_dir"])).get("requeues") or 0
                out[run_id] = Poll(True, None, {**info, "requeues": requeues})
                continue
            wrapper = read_state(Path(handles[run_id]["run_dir"]))
            info.update(requeues=wrapper.get("requeues") or 0, node=info["node"] or wrapper.get("node"),
                        gave_up=wrapper.get("gave_up"))
            if _requeuing(wrapper):
                # The job asked to be requeued a moment ago: Slurm shows the killed attempt's
                # state until the requeue lands; the run is not over.
                out[run_id] = Poll(True, None, {**info, "state": "REQUEUED"})
                continue
            out[run_id] = Poll(False, wrapper.get("exit_code"), info)
        return out

    # -- stop ------------------------------------------------------------------
    def signal(self, handle: dict, sig: int) -> bool:
        if not handle.get("job_id"):
            return False
        import signal as signals

        res = self._slurm("scancel", "--state=RUNNING", f"--signal={signals.Signals(sig).name.removeprefix('SIG')}",
                          handle["job_id"])
        if sig == signals.SIGTERM:
            # A job still pending has no process to signal and nothing to save: cancel it.
            self._slurm("scancel", "--state=PENDING", handle["job_id"])
        return res.returncode == 0

    def kill(self, handle: dict) -> bool:
        return bool(handle.get("job_id")) and self._slurm("scancel", handle["job_id"]).returncode == 0

    def describe(self, handle: dict) -> str:
        if not handle.get("job_id"):
            return ""
        node = read_state(Path(handle["run_dir"])).get("node") if handle.get("run_dir") else None
        return f"Slurm job {handle['job_id']}" + (f" on {node}" if node else "")


def _requeuing(wrapper: dict, window_s: float = REQUEUE_WINDOW_S) -> bool:
    asked = wrapper.get("requeued_at") or 0
    return asked > (wrapper.get("started") or 0) and time.time() - asked < window_s


def _first_line(res: subprocess.CompletedProcess) -> str:
    text = (res.stderr or res.stdout or "").strip()
    return text.splitlines()[-1] if text else f"exit code {res.returncode}"
