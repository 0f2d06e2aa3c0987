"""Runs as Slurm jobs, submitted with submitit from the login node.

The supervisor keeps the queue, the dependencies and the index as with
local processes; each ready run becomes one job (name ``sg-<run id>``)
running the same runner module under ``slurm_job.RunnerJob``, and the ready
members of a sweep that ask for the same resources become one job array
(name ``sg-a-<key>``, one sbatch, ``[slurm] array_parallelism`` at a time,
split at the cluster's MaxArraySize), each task still its own run: own
folder, events, cancel, requeue and resume. The workspace is on the shared
filesystem, so events, checkpoints and results are read as they are locally.

Job states come from one ``squeue`` call per supervisor pass for all
active jobs and array tasks: submitit's own state lookup asks ``sacct``, which fails
without Slurm accounting. A job that left the queue ended; what the run
says (its final event, and ``slurm-job.json`` the job wrapper writes)
tells how.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import subprocess
import time
from pathlib import Path

from runners import protocol
from runners.kinds.base import SLURM_OPTIONS
from synthgap_tui.launchers import Launch, Launcher, LaunchError, Poll
from synthgap_tui.launchers.slurm_job import read_state

# Slurm job states after which the job will not run again.
ENDED = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                   "DEADLINE", "SPECIAL_EXIT", "REVOKED"})
DEFAULTS = {"time": 24 * 60, "signal_delay_s": 120, "max_requeues": 3}
JOB_PREFIX = "sg-"
ARRAY_PREFIX = JOB_PREFIX + "a-"  # + the array's key: its folder under the workspace's ARRAYS_DIR
ARRAYS_DIR = "slurm-arrays"  # per array: submitit's files and members.json (task index -> run id)
MEMBERS_FILE = "members.json"
DEFAULT_MAX_ARRAY_SIZE = 1001  # Slurm's, when `scontrol show config` does not say
REQUEUE_WINDOW_S = 120  # how long after a job asked for its requeue an ended state is not believed
# Our option names -> submitit's SlurmExecutor parameters (sbatch options).
_SUBMITIT = {"partition": "partition", "account": "account", "qos": "qos", "time": "time",
             "gpus_per_node": "gpus_per_node", "cpus_per_task": "cpus_per_task", "mem": "mem",
             "constraint": "constraint", "signal_delay_s": "signal_delay_s", "setup": "setup",
             "sbatch": "additional_parameters", "exclude": "exclude", "array_parallelism": "array_parallelism"}
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


def executor_for(launch: Launch, folder: Path | None = None, job_name: str | None = None):
    """submitit's executor for one run (its sbatch options), or for an array of runs like it
    (``folder`` and ``job_name`` the array's), and the merged options."""
    import submitit

    opts = {**DEFAULTS, **launch.options}
    params = {_SUBMITIT[k]: v for k, v in opts.items() if k in _SUBMITIT}
    params["time"] = _minutes(opts["time"])
    # The run's own `gpus` is its request unless [slurm] / its slurm table say; 0 asks for none.
    params["gpus_per_node"] = opts.get("gpus_per_node", launch.gpus) or None
    executor = submitit.SlurmExecutor(folder=folder or launch.run_dir / "slurm", max_num_timeout=opts["max_requeues"])
    executor.update_parameters(job_name=job_name or f"{JOB_PREFIX}{launch.run_id}", nodes=launch.nodes,
                               ntasks_per_node=1, stderr_to_stdout=True,
                               **{k: v for k, v in params.items() if v is not None})
    return executor, opts


class SlurmLauncher(Launcher):
    name = "slurm"
    schedules = True
    max_nodes = None

    def __init__(self) -> None:
        self.calls = 0  # Slurm client commands run (bench/slurm.py: calls per pass)
        self.submissions = 0  # sbatch calls (bench/slurm.py)
        self._adoptable: dict[str, dict] | None = None
        self._max_array: int | None = None

    def _slurm(self, *args: str) -> subprocess.CompletedProcess:
        self.calls += 1
        try:
            return subprocess.run(list(args), capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            return subprocess.CompletedProcess(list(args), 1, "", str(e))

    # -- submit ----------------------------------------------------------------
    def _live_jobs_by_run(self, workspace: Path) -> dict[str, dict]:
        """Jobs and array tasks a supervisor submitted before it was killed, by run id
        (asked once): what the handle would have said."""
        if self._adoptable is None:
            out = self._slurm("squeue", "--noheader", "--me", "--array", "--format=%i|%j|%T")
            if out.returncode != 0:
                raise LaunchError(f"Slurm is unreachable ({_first_line(out)}); the run stays queued")
            self._adoptable = {}
            for line in out.stdout.splitlines():
                job_id, name, state = (line.split("|") + ["", ""])[:3]
                if state in ENDED or not name.startswith(JOB_PREFIX):
                    continue
                task = re.fullmatch(r"\d+_(\d+)", job_id)  # not a folded range such as 12_[3-9]
                if name.startswith(ARRAY_PREFIX) and task:
                    folder = workspace / ARRAYS_DIR / name[len(ARRAY_PREFIX):]
                    members = protocol.read_json(folder / MEMBERS_FILE, []) or []
                    if int(task.group(1)) < len(members):
                        self._adoptable[members[int(task.group(1))]] = {"job_id": job_id,
                                                                        "slurm_folder": str(folder)}
                elif not name.startswith(ARRAY_PREFIX):
                    self._adoptable[name[len(JOB_PREFIX):]] = {"job_id": job_id}
        return self._adoptable

    def max_array_size(self) -> int:
        """Tasks one array may hold: the cluster's MaxArraySize (asked once)."""
        if self._max_array is None:
            res = self._slurm("scontrol", "show", "config")
            found = re.search(r"^MaxArraySize\s*=\s*(\d+)", res.stdout, re.M) if res.returncode == 0 else None
            self._max_array = int(found.group(1)) if found else DEFAULT_MAX_ARRAY_SIZE
        return self._max_array

    def launch(self, launch: Launch) -> dict:
        result = self.launch_many([launch])[launch.run_id]
        if isinstance(result, LaunchError):
            raise result
        return result

    def launch_many(self, launches: list[Launch]) -> dict[str, dict | LaunchError]:
        if not launches:
            return {}
        out: dict[str, dict | LaunchError] = {}
        try:
            adoptable = self._live_jobs_by_run(_workspace(launches[0]))
        except LaunchError as e:
            return {launch.run_id: e for launch in launches}
        groups: dict[tuple, list[Launch]] = {}
        for launch in launches:
            adopted = adoptable.pop(launch.run_id, None)
            if adopted:  # already in Slurm's queue: never submit a run twice
                out[launch.run_id] = {**_handle(launch), **adopted, "adopted": True}
            else:
                groups.setdefault(_array_key(launch), []).append(launch)
        refused: LaunchError | None = None
        for key, members in groups.items():
            size = self.max_array_size() if key[0] is not None else 1
            for start in range(0, len(members), size):
                chunk = members[start:start + size]
                if refused is not None:  # sbatch failed: the rest waits for the next pass
                    out.update((launch.run_id, refused) for launch in chunk)
                    continue
                out.update(self._submit(chunk[0]) if len(chunk) == 1 else self._submit_array(chunk))
                refused = next((r for r in out.values() if isinstance(r, LaunchError)), None)
        return out

    def _submit(self, launch: Launch) -> dict[str, dict | LaunchError]:
        executor, opts = executor_for(launch)
        jobs = self._sbatch(lambda: [executor.submit(_job(launch, opts))])
        if isinstance(jobs, LaunchError):
            return {launch.run_id: jobs}
        return {launch.run_id: {**_handle(launch), "job_id": jobs[0].job_id}}

    def _submit_array(self, chunk: list[Launch]) -> dict[str, dict | LaunchError]:
        key = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        folder = _workspace(chunk[0]) / ARRAYS_DIR / key
        try:
            folder.mkdir(parents=True)
            # Before sbatch: a supervisor killed right after it finds its tasks' runs here.
            protocol.write_json_atomic(folder / MEMBERS_FILE, [launch.run_id for launch in chunk])
        except OSError as e:
            error = LaunchError(f"cannot prepare the job array: {protocol.os_error_message(e, folder)}")
            return {launch.run_id: error for launch in chunk}
        executor, opts = executor_for(chunk[0], folder=folder, job_name=f"{ARRAY_PREFIX}{key}")
        jobs = self._sbatch(lambda: executor.submit_array([_job(launch, opts) for launch in chunk]))
        if isinstance(jobs, LaunchError):
            return {launch.run_id: jobs for launch in chunk}
        return {launch.run_id: {**_handle(launch), "job_id": job.job_id, "slurm_folder": str(folder)}
                for launch, job in zip(chunk, jobs)}

    def _sbatch(self, submit):
        """One sbatch (through submitit): its jobs, or the LaunchError saying why not."""
        try:
            return submit()
        except Exception as e:  # sbatch's error, whatever submitit wraps it in
            detail = getattr(e, "output", None) or getattr(e, "stderr", None) or str(e)
            detail = detail.decode() if isinstance(detail, bytes) else str(detail)
            return LaunchError(f"sbatch failed: {detail.strip().splitlines()[-1] if detail.strip() else e}")
        finally:
            self.calls += 1
            self.submissions += 1

    # -- watch -----------------------------------------------------------------
    def alive(self, handles: dict[str, dict]) -> dict[str, Poll]:
        jobs = {run_id: h["job_id"] for run_id, h in handles.items() if h.get("job_id")}
        out = {run_id: Poll(False, None, {"problem": "no Slurm job id recorded"})
               for run_id in handles if run_id not in jobs}
        if not jobs:
            return out
        # --array: one line per array task (pending tasks are otherwise folded into A_[0-19]).
        res = self._slurm("squeue", "--noheader", "--array", "--states=all", "--format=%i|%T|%N|%r",
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

    def usage(self, handle: dict) -> str | None:
        if not handle.get("job_id"):
            return None
        from synthgap_tui.launchers import slurm_accounting

        self.calls += 1
        return slurm_accounting.describe(slurm_accounting.usage(handle["job_id"]))

    def job_output(self, handle: dict, run_dir: Path) -> Path | None:
        # An array task's output is in its array's folder, named by the task's job id (A_T).
        if handle.get("slurm_folder"):
            outputs = Path(handle["slurm_folder"]).glob(f"{handle['job_id']}_*_log.out")
        else:
            outputs = (run_dir / "slurm").glob("*_log.out")
        return max(outputs, key=lambda p: p.stat().st_mtime, default=None)


def unused_arrays(workspace: Path, run_ids: set[str]) -> list[Path]:
    """Array folders none of whose runs is left in the index (``gc``): the task logs and
    submitit's files go with the last of their runs, as a run's own ``slurm/`` does."""
    base = workspace / ARRAYS_DIR
    if not base.is_dir():
        return []
    return sorted(folder for folder in base.iterdir() if folder.is_dir() and
                  not set(protocol.read_json(folder / MEMBERS_FILE, []) or []) & run_ids)


def _workspace(launch: Launch) -> Path:
    return launch.run_dir.parent.parent  # <workspace>/runs/<id>


def _handle(launch: Launch) -> dict:
    return {"job_id": None, "run_dir": str(launch.run_dir), "submitted_from": socket.gethostname()}


def _job(launch: Launch, opts: dict):
    from synthgap_tui.launchers.slurm_job import RunnerJob

    env = {k: v for k, v in launch.env.items() if k in ("PYTHONUNBUFFERED", "SYNTHGAP_KINDS", "PYTHONPATH",
                                                         "SYNTHGAP_CODE")}
    return RunnerJob(launch.command, env, str(launch.run_dir), nproc=launch.nproc, max_requeues=opts["max_requeues"])


def _array_key(launch: Launch) -> tuple:
    """Runs with equal keys may share a job array: one group (a sweep), the same sbatch
    options and the same shape. Runs of no group get keys of their own."""
    if launch.group is None:
        return (None, launch.run_id)
    return (launch.group, launch.nodes, launch.nproc, launch.gpus, json.dumps(launch.options, sort_keys=True))


def _requeuing(wrapper: dict, window_s: float = REQUEUE_WINDOW_S) -> bool:
    asked = wrapper.get("requeued_at") or 0
    return asked > (wrapper.get("started") or 0) and time.time() - asked < window_s


def _first_line(res: subprocess.CompletedProcess) -> str:
    text = (res.stderr or res.stdout or "").strip()
    return text.splitlines()[-1] if text else f"exit code {res.returncode}"
