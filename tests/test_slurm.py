"""The Slurm launcher against a real one-node cluster (slurm-wlm + munge, started
here by a fixture and stopped by pid): dependencies, cancel, time-limit
requeue with resume, supervisor adoption, the controller going away."""

import json
import os
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import torch

import slurm_cluster
from conftest import PYTHON, subprocess_env
from imagegen import make_dataset
from runner_helpers import events, final
from supervised import FAKE, env_for, fake_log, spec_text, states, wait_for
from runners import protocol
from synthgap_tui.store import RunStore

MAX_ARRAY_SIZE = 20  # the test cluster's (Slurm's default is 1001): a 20-member sweep fits in one array
# One cluster for the whole module: under xdist its tests share one worker (--dist loadgroup).
pytestmark = [pytest.mark.skipif(bool(slurm_cluster.available()), reason=slurm_cluster.available() or ""),
              pytest.mark.xdist_group("slurm")]
# (.ci/run installs slurm-wlm and munge and runs as root, so CI never skips these.)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = slurm_cluster.Cluster(tmp_path_factory.mktemp("slurm"), max_array_size=MAX_ARRAY_SIZE).start()
    os.environ.update(c.env)  # every slurm command of this process and its children
    yield c
    c.stop()


def make_ws(tmp_path: Path, runner=None, **slurm) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    runner = runner or f'["{PYTHON}", "{FAKE}"]'
    import tomlkit

    # The test cluster has no GPUs (no GRES): jobs ask for none, whatever a run's gpus says.
    options = tomlkit.dumps({"slurm": {"time": 10, "signal_delay_s": 30, "gpus_per_node": 0, **slurm}})
    (ws / "config.toml").write_text(f'[supervisor]\nlauncher = "slurm"\npoll_seconds = 0.2\ngrace_seconds = 10\n\n'
                                    f"[runners]\ntrain = {runner}\ngenerate = {runner}\n\n{options}")
    for split in ("train", "val"):
        (tmp_path / "data" / split).mkdir(parents=True, exist_ok=True)
    return ws


def cli(ws, *args, env=None):
    return subprocess.run([PYTHON, "-m", "synthgap_tui.cli", "-w", str(ws), *args], capture_output=True, text=True,
                          env=subprocess_env(**(env or {})))


def submit(ws: Path, tmp_path: Path, runs: str, step_s=0.2) -> tuple[dict, Path]:
    spec = tmp_path / "spec.toml"
    spec.write_text(spec_text(runs))
    log = tmp_path / "fake.log"
    env = env_for(log, step_s=step_s)
    out = cli(ws, "submit", str(spec), env=env)
    assert out.returncode == 0, out.stderr
    return env, log


def status(ws: Path, run_id: str) -> dict:
    return protocol.read_json(ws / "runs" / run_id / "status.json", {}) or {}


def supervisors(ws: Path) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"]) if "synthgap_tui.supervisor" in " ".join(
        p.info["cmdline"] or []) and str(ws) in " ".join(p.info["cmdline"] or [])]


CHAIN = """
[runs.gen]
kind = "generate"
model = "org/model"

[runs.pretrain]
kind = "train"
train = "gen"
eval = "real"
epochs = 3
"""


def test_a_dependent_pair_runs_in_order_as_slurm_jobs(cluster, tmp_path):
    ws = make_ws(tmp_path)
    _, log = submit(ws, tmp_path, CHAIN)
    wait_for(lambda: set(states(ws).values()) == {"finished"}, timeout=120, what="both finished")
    assert [(e[0], e[1]) for e in fake_log(log)] == [("start", "gen"), ("end", "gen"), ("start", "pretrain"),
                                                     ("end", "pretrain")]
    runs = {r["name"]: r for r in RunStore(ws).list()}
    gen, pretrain = status(ws, runs["gen"]["id"]), status(ws, runs["pretrain"]["id"])
    assert gen["launcher"] == "slurm" and gen["handle"]["job_id"] != pretrain["handle"]["job_id"]
    assert pretrain["where"]["node"] == cluster.node and pretrain["where"]["state"] == "COMPLETED"
    assert protocol.read_json(ws / "runs" / runs["pretrain"]["id"] / "spec.json")["train_dir"].endswith(
        f"{runs['gen']['id']}/data/train")
    shown = cli(ws, "show", "pretrain")
    assert f"Slurm job {pretrain['handle']['job_id']}" in shown.stdout or "job" in shown.stdout
    listed = cli(ws, "ls", "--columns", "name,where")  # whatever width the terminal (or COLUMNS) has
    assert f"{pretrain['handle']['job_id']}@{cluster.node}" in listed.stdout


def test_cancel_reaches_the_runner_through_slurm_and_it_checkpoints(cluster, tmp_path):
    ws = make_ws(tmp_path)
    env, log = submit(ws, tmp_path, '[runs.t]\nkind = "train"\ntrain = "real"\neval = "real"\nepochs = 200\n')
    store = RunStore(ws)
    run_id = store.list()[0]["id"]
    wait_for(lambda: (store.get(run_id).get("progress") or 0) > 0.02, timeout=60, what="running")
    out = cli(ws, "cancel", run_id, env=env)
    assert out.returncode == 0 and "SIGTERM sent" in out.stdout, out.stdout + out.stderr
    wait_for(lambda: store.get(run_id)["state"] == "cancelled", timeout=60, what="cancelled")
    assert final(ws / "runs" / run_id)["type"] == "cancelled"  # the runner's own ending, not a kill
    assert (ws / "runs" / run_id / "checkpoints" / "state.json").exists()
    assert fake_log(log)[-1][-1] == "cancelled"


def test_a_queued_job_is_cancelled_without_waiting(cluster, tmp_path):
    ws = make_ws(tmp_path, sbatch={"begin": "now+1hour"})  # stays PENDING
    env, _ = submit(ws, tmp_path, '[runs.t]\nkind = "train"\ntrain = "real"\neval = "real"\nepochs = 5\n')
    store = RunStore(ws)
    run_id = store.list()[0]["id"]
    wait_for(lambda: (status(ws, run_id).get("where") or {}).get("state") == "PENDING", timeout=60,
             what="pending in Slurm")
    assert cli(ws, "cancel", run_id, env=env).returncode == 0
    wait_for(lambda: store.get(run_id)["state"] == "cancelled", timeout=30, what="cancelled")


def test_killed_supervisor_adopts_its_jobs_and_submits_nothing_twice(cluster, tmp_path):
    ws = make_ws(tmp_path)
    env, log = submit(ws, tmp_path, '[runs.t]\nkind = "train"\ntrain = "real"\neval = "real"\nepochs = 15\n'
                                    '[runs.t.sweep]\nseed = [1, 2, 3]\n')
    wait_for(lambda: list(states(ws).values()).count("running") == 3, timeout=60, what="three running")
    (sup,) = supervisors(ws)
    sup.kill()
    sup.wait(5)
    assert cli(ws, "supervisor", "start", env=env).returncode == 0
    wait_for(lambda: set(states(ws).values()) == {"finished"}, timeout=120, what="all finished")
    assert sorted(e[1] for e in fake_log(log) if e[0] == "start") == ["t@seed=1", "t@seed=2", "t@seed=3"]


def test_a_job_whose_id_never_reached_status_json_is_adopted_not_resubmitted(cluster, tmp_path):
    """The crash window between sbatch and writing status.json: a restarted
    supervisor finds the job by its name and adopts it."""
    from synthgap_tui.launchers import Launch
    from synthgap_tui.launchers.slurm import SlurmLauncher

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    launch = Launch(run_id="adopt00001", command=[PYTHON, str(FAKE), "--run-dir", str(run_dir)], nproc=1, env={},
                    run_dir=run_dir, devices=[], options={"time": 5, "sbatch": {"begin": "now+1hour"}}, gpus=0)
    first = SlurmLauncher().launch(launch)
    second = SlurmLauncher().launch(launch)  # a new supervisor process
    try:
        assert second["job_id"] == first["job_id"] and second.get("adopted")
        listed = subprocess.run(["squeue", "--noheader", "--name=sg-adopt00001", "--format=%i"],
                                capture_output=True, text=True, check=True).stdout.split()
        assert listed == [first["job_id"]]
    finally:
        subprocess.run(["scancel", first["job_id"]])


def test_warning_signal_requeues_and_resumes_to_the_same_weights(cluster, tmp_path):
    data = make_dataset(tmp_path / "data", classes=3, train_per_class=6, val_per_class=3)
    ws = make_ws(tmp_path, runner=f'["{PYTHON}", "-m", "runners.train"]')
    spec = tmp_path / "t.toml"
    body = ('arch = "resnet18"\nsmall_input = true\nwidth = 8\nimage_size = 32\nlocal_size = 16\nlocal_crops = 0\n'
            'workers = 0\nwarmup_epochs = 0\nreport_last = 1\nbatch_size = 2\nepochs = 3\n'
            'augment = "pytorch-example"\nseed = 7\ndeterministic = true\ngpus = 0\n')
    spec.write_text(f'[experiment]\nname = "requeue"\n[datasets]\nreal = {{ path = "{data}" }}\n'
                    f'[runs.straight]\nkind = "train"\ntrain = "real"\neval = "real"\n{body}'
                    f'[runs.cut]\nkind = "train"\ntrain = "real"\neval = "real"\n{body}')
    out = cli(ws, "submit", str(spec), env={"OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    store = RunStore(ws)
    cut = next(r["id"] for r in store.list() if r["name"] == "cut")
    cut_dir = ws / "runs" / cut
    wait_for(lambda: any(e["type"] == "train_step" and e["step"] >= 2 for e in events(cut_dir)), timeout=120,
             what="cut training")
    job = status(ws, cut)["handle"]["job_id"]
    # What Slurm sends signal_delay_s before the time limit (and on preemption).
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    wait_for(lambda: set(states(ws).values()) == {"finished"}, timeout=240, what="both finished")
    ev = events(cut_dir)
    assert [e["type"] for e in ev if e["type"] in protocol.FINAL_EVENTS] == ["cancelled", "done"]
    assert [e.get("resumed") for e in ev if e["type"] == "start"] == [False, True]
    assert status(ws, cut)["where"]["requeues"] == 1 and status(ws, cut)["handle"]["job_id"] == job
    straight = next(r["id"] for r in store.list() if r["name"] == "straight")
    a = torch.load(ws / "runs" / straight / "checkpoints" / "model.pt", weights_only=True)
    b = torch.load(cut_dir / "checkpoints" / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_controller_going_away_loses_nothing(cluster, tmp_path):
    ws = make_ws(tmp_path)
    env, log = submit(ws, tmp_path, '[runs.a]\nkind = "train"\ntrain = "real"\neval = "real"\nepochs = 80\n'
                                    '[runs.b]\nkind = "train"\ntrain = "real"\neval = "real"\nepochs = 3\n'
                                    'depends_on = ["a"]\n')
    store = RunStore(ws)
    wait_for(lambda: states(ws)["a"] == "running", timeout=60, what="a running")
    cluster.stop_controller()
    try:
        a = next(r["id"] for r in store.list() if r["name"] == "a")
        wait_for(lambda: "unreachable" in str((status(ws, a).get("where") or {}).get("problem")), timeout=30,
                 what="a calm message")
        late = tmp_path / "late.toml"  # a run that becomes ready while Slurm cannot take it
        late.write_text(spec_text('[runs.c]\nkind = "train"\ntrain = "real"\neval = "real"\nepochs = 3\n', "late"))
        assert cli(ws, "submit", str(late), env=env).returncode == 0
        c = wait_for(lambda: [r for r in store.list() if r["name"] == "c" and r.get("error")], timeout=30,
                     what="c's reason")[0]
        assert c["state"] == "queued" and c["error"].startswith("not started yet: ")
        time.sleep(2)  # nothing may be declared lost, or submitted, meanwhile
        assert states(ws) == {"a": "running", "b": "queued", "c": "queued"}
        log_text = (ws / "supervisor.log").read_text()
        assert "Slurm unreachable" in log_text and "Traceback" not in log_text
    finally:
        cluster.start_controller()
    wait_for(lambda: set(states(ws).values()) == {"finished"}, timeout=120, what="all finished after")
    starts = [e[1] for e in fake_log(log) if e[0] == "start"]
    assert sorted(starts) == ["a", "b", "c"] and starts.index("a") < starts.index("b")
    assert all(not r.get("error") for r in store.list())


def test_a_run_s_own_slurm_table_caps_its_requeues(cluster, tmp_path):
    ws = make_ws(tmp_path)  # config.toml allows requeues; this run's spec allows none
    env, log = submit(ws, tmp_path, '[runs.t]\nkind = "train"\ntrain = "real"\neval = "real"\nepochs = 200\n'
                                    'slurm = { max_requeues = 0, time = "0:20:00" }\n')
    store = RunStore(ws)
    run_id = store.list()[0]["id"]
    wait_for(lambda: (store.get(run_id).get("progress") or 0) > 0.02, timeout=60, what="running")
    assert "#SBATCH --time=20" in next((ws / "runs" / run_id / "slurm").glob("*_submission.sh")).read_text()
    subprocess.run(["scancel", "--signal=USR2", status(ws, run_id)["handle"]["job_id"]], check=True)
    wait_for(lambda: store.get(run_id)["state"] == "failed", timeout=60, what="failed")
    assert "after 0 requeue(s) (max_requeues = 0)" in store.get(run_id)["error"]
    assert final(ws / "runs" / run_id)["type"] == "cancelled"  # it saved a checkpoint on the way out
    assert (ws / "runs" / run_id / "checkpoints" / "state.json").exists()


def test_a_sweep_becomes_one_job_array_whose_members_cancel_requeue_and_retry_alone(cluster, tmp_path):
    ws = make_ws(tmp_path, array_parallelism=8)  # what the 2-CPU test cluster runs at once (OverSubscribe=FORCE:4)
    notes = [(f"fail-once-{i}" if i in (3, 17) else f"ok{i}") for i in range(20)]
    # A member runs 28 steps of 0.25 s: long enough to cancel or requeue one mid-run.
    env, log = submit(ws, tmp_path, '[runs.s]\nkind = "train"\ntrain = "real"\neval = "real"\nepochs = 28\n'
                                    f'[runs.s.sweep]\nnotes = {notes!r}\n'.replace("'", '"'), step_s=0.25)
    store = RunStore(ws)
    runs = {r["name"]: r["id"] for r in store.list()}
    wait_for(lambda: all(status(ws, i).get("handle", {}).get("job_id") for i in runs.values()), timeout=60,
             what="every member submitted")
    jobs = {name: status(ws, i)["handle"]["job_id"] for name, i in runs.items()}
    arrays = {j.split("_")[0] for j in jobs.values()}
    assert len(arrays) == 1 and sorted(int(j.split("_")[1]) for j in jobs.values()) == list(range(20)), jobs
    (script,) = [p.read_text() for p in (ws / "slurm-arrays").glob("*/*_submission.sh")]  # one sbatch
    assert "#SBATCH --array=0-19%8" in script

    # One member cancelled, one requeued at its warning signal: the others do not notice.
    cancelled, requeued = runs["s@notes=ok0"], runs["s@notes=ok1"]
    wait_for(lambda: store.get(requeued)["state"] == "running" and store.get(cancelled)["state"] == "running"
             and (store.get(requeued).get("progress") or 0) > 0.05, timeout=90, what="two members running")
    # scancel --signal returns only once the job's steps answer (seconds, when they end on it): not waited for.
    warning = subprocess.Popen(["scancel", "--signal=USR2", jobs["s@notes=ok1"]])
    assert cli(ws, "cancel", cancelled, env=env).returncode == 0
    from synthgap_tui.launchers.slurm_job import read_state

    wait_for(lambda: read_state(ws / "runs" / requeued).get("requeued_at"), timeout=60, what="the requeue")
    warning.kill()  # scancel would go on signalling the requeued task
    wait_for(lambda: not set(states(ws).values()) & {"queued", "starting", "running"}, timeout=240,
             what="every member ended")
    ended = states(ws)
    assert ended["s@notes=ok0"] == "cancelled"
    assert ended["s@notes=fail-once-3"] == ended["s@notes=fail-once-17"] == "failed"
    assert list(ended.values()).count("finished") == 17
    assert status(ws, requeued)["where"]["requeues"] >= 1
    assert [e.get("resumed") for e in events(ws / "runs" / requeued) if e["type"] == "start"][:2] == [False, True]
    assert all(status(ws, i)["where"]["requeues"] == 0 for name, i in runs.items() if name != "s@notes=ok1")
    job_log = cli(ws, "logs", runs["s@notes=ok5"], "--job", env=env)
    assert job_log.returncode == 0, job_log.stderr
    assert str(ws / "slurm-arrays") in cli(ws, "show", runs["s@notes=ok5"], "--all", env=env).stdout
    # The test cluster keeps no accounting: show says so, once, instead of efficiencies.
    shown = cli(ws, "show", runs["s@notes=ok5"], env=env).stdout
    assert shown.count("Slurm accounting is not available here (") == 1, shown

    # Only the failed members go again, as one array of two.
    out = cli(ws, "retry", "--failed", "test", "--json", env=env)
    assert out.returncode == 0, out.stderr
    failed = {r["id"] for r in json.loads(out.stdout)}
    assert failed == {i for name, i in runs.items() if ended[name] == "failed"}
    wait_for(lambda: list(states(ws).values()).count("finished") == 19, timeout=120, what="the retried finished")
    again = {status(ws, i)["handle"]["job_id"] for i in failed}
    assert len({j.split("_")[0] for j in again}) == 1 and not {j.split("_")[0] for j in again} & arrays
    assert states(ws)["s@notes=ok0"] == "cancelled"  # not retried


def test_arrays_split_at_max_array_size_and_their_tasks_are_adopted_when_ids_were_never_recorded(cluster, tmp_path):
    """25 members, MaxArraySize 20: arrays of 20 and 5; a second launcher (a restarted
    supervisor) finds every task by its array's members.json and submits nothing."""
    from synthgap_tui.launchers import Launch
    from synthgap_tui.launchers.slurm import SlurmLauncher

    launches = []
    for i in range(25):
        run_dir = tmp_path / "ws" / "runs" / f"adopt{i:05d}"
        run_dir.mkdir(parents=True)
        launches.append(Launch(run_id=f"adopt{i:05d}", command=[PYTHON, str(FAKE), "--run-dir", str(run_dir)],
                               nproc=1, env={}, run_dir=run_dir, devices=[], group="e/sweep",
                               options={"time": 5, "sbatch": {"begin": "now+1hour"}}, gpus=0))
    launcher = SlurmLauncher()
    first = launcher.launch_many(launches)
    arrays = sorted({h["job_id"].split("_")[0] for h in first.values()})
    try:
        assert launcher.submissions == 2
        assert sorted(sum(h["job_id"].startswith(a + "_") for h in first.values()) for a in arrays) == [5, 20]
        again = SlurmLauncher()
        second = again.launch_many(launches)  # a new supervisor process
        assert [second[x.run_id]["job_id"] for x in launches] == [first[x.run_id]["job_id"] for x in launches]
        assert all(second[x.run_id].get("adopted") for x in launches) and again.submissions == 0
    finally:
        subprocess.run(["scancel", *arrays])
