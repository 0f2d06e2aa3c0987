"""SynthGap's Slurm launcher against submitit used directly, on a real local cluster.

50 no-op runs (a runner that writes its start and done events) go through
SynthGap's supervisor with launcher = "slurm" (spec -> queue -> sbatch via
submitit -> one squeue per pass -> index), and the same 50 commands are
submitted straight with submitit's executor and waited for; both wall times
are measured in the same run. Also counted: Slurm client calls per
supervisor pass while runs are active (should not grow with their number).

Then 200 sweep members handed to the Slurm launcher at once, as job arrays
(the sweep's way) and as 200 single jobs: submission wall time, sbatch calls,
and squeue calls for one watching pass (all held pending, then cancelled).

Needs root and Debian's slurm-wlm + munge (as .ci/run installs them).
Last line: ``slurm overhead: X.XXx`` (target <= 1.3x).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import slurm_cluster  # noqa: E402

N = 50
NOOP = '''
import argparse, sys
sys.path.insert(0, {root!r})
from runners.protocol import EventWriter
p = argparse.ArgumentParser(); p.add_argument("--run-dir"); p.add_argument("--resume", action="store_true")
args = p.parse_args()
ev = EventWriter(args.run_dir + "/events.jsonl")
ev.emit("start")
ev.emit("done", summary={{}})
'''


def through_synthgap(tmp: Path, noop: Path) -> tuple[float, dict[int, list[int]]]:
    from synthgap_tui import runs as lifecycle
    from synthgap_tui.specs import parse_spec
    from synthgap_tui.store import RunStore
    from synthgap_tui.supervisor import Supervisor
    from synthgap_tui.workspace import Workspace

    ws = Workspace(tmp / "ws").ensure()
    (tmp / "data" / "train").mkdir(parents=True)
    (tmp / "data" / "val").mkdir(parents=True)
    ws.config_path.write_text(f'[supervisor]\nlauncher = "slurm"\npoll_seconds = 0.2\n\n'
                              f'[slurm]\ntime = 10\ngpus_per_node = 0\n\n'  # the local cluster has no GPUs
                              f'[runners]\ntrain = ["{sys.executable}", "{noop}"]\n')
    text = (f'[experiment]\nname = "noop"\n[datasets]\nreal = {{ path = "{tmp / "data"}" }}\n'
            f'[runs.t]\nkind = "train"\ntrain = "real"\neval = "real"\n[runs.t.sweep]\nseed = {list(range(N))}\n')
    store = RunStore(ws)
    sup = Supervisor(ws)
    calls_by_active: dict[int, list[int]] = {}
    start = time.perf_counter()
    lifecycle.submit(parse_spec(text, str(tmp / "noop.toml")), store)
    while True:
        before = sup.launcher.calls
        active = len(store.list(state=["starting", "running"]))
        launched_before = len(store.list(state="queued"))
        busy = sup.tick()
        launched = launched_before - len(store.list(state="queued"))
        if active and not launched:  # a pass that only watched: its Slurm calls
            calls_by_active.setdefault(active, []).append(sup.launcher.calls - before)
        if not busy:
            break
        time.sleep(sup.config.poll_seconds)
    elapsed = time.perf_counter() - start
    states = {r["state"] for r in store.list()}
    assert states == {"finished"}, states
    return elapsed, calls_by_active


def direct_submitit(tmp: Path, noop: Path) -> float:
    import submitit

    executor = submitit.SlurmExecutor(folder=tmp / "direct")
    executor.update_parameters(time=10, nodes=1, ntasks_per_node=1)
    dirs = []
    for i in range(N):
        d = tmp / "runs" / str(i)
        d.mkdir(parents=True)
        dirs.append(d)
    start = time.perf_counter()
    jobs = [executor.submit(submitit.helpers.CommandFunction([sys.executable, str(noop), "--run-dir", str(d)]))
            for d in dirs]
    # Waiting as a script would without Slurm accounting (job.state asks sacct): for each result file.
    while not all(j.paths.result_pickle.exists() for j in jobs):
        time.sleep(0.2)
    return time.perf_counter() - start


def submissions(tmp: Path, noop: Path, as_arrays: bool, n: int = 200) -> tuple[float, int, int]:
    """Hand n sweep members to a fresh Slurm launcher: wall time, sbatch calls, squeue calls per pass."""
    import subprocess

    from synthgap_tui.launchers import Launch
    from synthgap_tui.launchers.slurm import SlurmLauncher

    launches = []
    for i in range(n):
        run_dir = tmp / "runs" / f"member{i:04d}"
        run_dir.mkdir(parents=True)
        launches.append(Launch(run_id=f"member{i:04d}", command=[sys.executable, str(noop), "--run-dir", str(run_dir)],
                               nproc=1, env={}, run_dir=run_dir, devices=[], gpus=0,
                               group="bench/sweep" if as_arrays else None,
                               options={"time": 10, "gpus_per_node": 0, "sbatch": {"begin": "now+1hour"}}))
    launcher = SlurmLauncher()
    start = time.perf_counter()
    handles = launcher.launch_many(launches)
    elapsed = time.perf_counter() - start
    submitted = launcher.submissions
    before = launcher.calls
    polls = launcher.alive(handles)
    assert all(p.running for p in polls.values()), "every member pending"
    squeue_calls = launcher.calls - before
    subprocess.run(["scancel", *{h["job_id"].split("_")[0] for h in handles.values()}], check=True)
    return elapsed, submitted, squeue_calls


def main() -> int:
    why = slurm_cluster.available()
    if why:
        print(f"bench/slurm.py needs a local cluster: {why}")
        return 1
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        cluster = slurm_cluster.Cluster(tmp / "cluster").start()
        os.environ.update(cluster.env)
        try:
            noop = tmp / "noop_runner.py"
            noop.write_text(NOOP.format(root=str(ROOT)))
            # Direct before and after ours (a cold cluster is slower): the faster is the reference.
            first = direct_submitit(tmp / "a", noop)
            ours, calls = through_synthgap(tmp, noop)
            direct = min(first, direct_submitit(tmp / "b", noop))
            arrays = submissions(tmp / "arrays", noop, as_arrays=True)
            singles = submissions(tmp / "singles", noop, as_arrays=False)
        finally:
            cluster.stop()
    print(f"{N} no-op runs on a local one-node cluster ({cluster.cpus} CPUs)")
    print(f"submitit directly:        {direct:6.1f} s (the faster of {first:.1f} s before and the run after ours)")
    print(f"through SynthGap (slurm): {ours:6.1f} s")
    for label, (wall, sbatch, squeue) in (("as job arrays", arrays), ("as single jobs", singles)):
        print(f"200 sweep members {label:15s}: submitted in {wall:5.2f} s, {sbatch:3d} sbatch call(s), "
              f"{squeue} squeue call(s) per watching pass")
    print(f"array submission speedup: {singles[0] / arrays[0]:.2f}x")
    for active in sorted({*sorted(calls)[:: max(1, len(calls) // 6)], max(calls)}):
        print(f"  Slurm calls per watching pass with {active:2d} active runs: "
              f"{statistics.mean(calls[active]):.1f} (max {max(calls[active])})")
    print(f"slurm overhead: {ours / direct:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
