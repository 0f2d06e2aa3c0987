import os
import re
import signal
import subprocess
from pathlib import Path

import psutil

from conftest import PYTHON, subprocess_env
from supervised import env_for, fake_log, make_workspace, pid_alive, spec_text, states, wait_for
from runners import protocol
from synthgap_tui.store import RunStore
from synthgap_tui.supervisor import is_running
from synthgap_tui.workspace import Workspace

CHAIN = """
[runs.gen]
kind = "generate"
images_per_class = 3

[runs.pretrain]
kind = "train"
train = "gen"
eval = "real"
epochs = 4

[runs.freeze]
kind = "train"
init_from = "pretrain"
freeze_layers = 16
train = "real"
eval = "real"
epochs = 3
"""

TRAIN = """
[runs.t]
kind = "train"
train = "real"
eval = "real"
epochs = {epochs}
[runs.t.sweep]
seed = {seeds}
"""


def cli(ws, *args, env=None, **kw):
    return subprocess.run([PYTHON, "-m", "synthgap_tui.cli", "-w", str(ws), *args],
                          capture_output=True, text=True, env=subprocess_env(**(env or {})), **kw)


def submit(ws: Path, tmp_path: Path, runs: str, step_s=0.1) -> tuple[dict, Path]:
    """Submit ``runs`` to the fake runner; returns the environment and the fake runner's log."""
    spec = tmp_path / "spec.toml"
    spec.write_text(spec_text(runs))
    log = tmp_path / "fake.log"
    env = env_for(log, step_s=step_s)
    assert cli(ws, "submit", str(spec), env=env).returncode == 0
    return env, log


def test_dependent_runs_finish_in_order_after_the_terminal_is_gone(tmp_path):
    ws = make_workspace(tmp_path)
    spec = tmp_path / "chain.toml"
    spec.write_text(spec_text(CHAIN))
    log = tmp_path / "fake.log"
    env = subprocess_env(**env_for(log, step_s=0.3))
    # A "terminal": a shell in its own session that submits, then lingers.
    shell = subprocess.Popen(["bash", "-c", f"{PYTHON} -m synthgap_tui.cli -w {ws} submit {spec}; sleep 60"],
                             env=env, start_new_session=True, stdout=subprocess.DEVNULL)
    wait_for(lambda: len(states(ws)) == 3, what="runs queued")
    wait_for(lambda: fake_log(log), what="first run started")
    os.killpg(shell.pid, signal.SIGHUP)  # the SSH session drops
    shell.wait(timeout=30)  # a loaded machine may still be finishing the submit
    assert not any(line[0] == "end" for line in fake_log(log)), "first run ended before the hang-up"

    wait_for(lambda: set(states(ws).values()) == {"finished"}, timeout=90, what="all finished")
    events = fake_log(log)
    order = [(e[0], e[1]) for e in events]
    assert order == [("start", "gen"), ("end", "gen"), ("start", "pretrain"), ("end", "pretrain"),
                     ("start", "freeze"), ("end", "freeze")]
    run = {r["name"]: r for r in RunStore(ws).list()}
    assert run["freeze"]["summary"]["top1_mean"] == 30.0 and run["freeze"]["progress"] == 1.0
    spec_json = protocol.read_json(ws / "runs" / run["freeze"]["id"] / "spec.json")
    assert spec_json["init_from_path"].endswith(f"{run['pretrain']['id']}/checkpoints/model.pt")
    assert protocol.read_json(ws / "runs" / run["pretrain"]["id"] / "spec.json")["train_dir"] \
        .endswith(f"{run['gen']['id']}/data/train")
    wait_for(lambda: not is_running(__import__("synthgap_tui.workspace").workspace.Workspace(ws)),
             what="supervisor exits when idle")


def test_killed_runner_becomes_lost_and_resume_finishes_it(tmp_path):
    ws = make_workspace(tmp_path)
    env, log = submit(ws, tmp_path, TRAIN.format(epochs=30, seeds="[1]"))
    store = RunStore(ws)
    run_id = store.list()[0]["id"]
    wait_for(lambda: (store.get(run_id).get("progress") or 0) > 0.1, what="progress")
    status = protocol.read_json(ws / "runs" / run_id / "status.json")
    assert status["state"] == "running" and status["launcher"] == "local"  # status.json follows the run
    pid = status["handle"]["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: store.get(run_id)["state"] == "lost", what="lost")
    assert "without a final event" in store.get(run_id)["error"]

    out = cli(ws, "resume", run_id, env=env)
    assert out.returncode == 0, out.stderr
    wait_for(lambda: store.get(run_id)["state"] == "finished", timeout=60, what="finished after resume")
    starts = [e for e in fake_log(log) if e[0] == "start"]
    assert len(starts) == 2 and int(starts[1][4]) > 0  # resumed from a checkpoint, not step 0
    assert store.get(run_id)["attempt"] == 2 and store.get(run_id)["summary"]["top1_mean"] == 300.0


def test_killed_supervisor_is_replaced_and_nothing_runs_twice(tmp_path):
    ws = make_workspace(tmp_path, gpus=(0, 1))
    env, log = submit(ws, tmp_path, TRAIN.format(epochs=15, seeds="[1, 2, 3]"))
    wait_for(lambda: list(states(ws).values()).count("running") == 2, what="two running")
    sup = [p for p in psutil.process_iter(["cmdline"])
           if "synthgap_tui.supervisor" in " ".join(p.info["cmdline"] or []) and str(ws) in " ".join(p.info["cmdline"])]
    assert len(sup) == 1
    sup[0].kill()
    sup[0].wait(5)
    assert cli(ws, "supervisor", "start", env=env).returncode == 0
    wait_for(lambda: set(states(ws).values()) == {"finished"}, timeout=90, what="all finished")
    starts = [e[1] for e in fake_log(log) if e[0] == "start"]
    assert sorted(starts) == ["t@seed=1", "t@seed=2", "t@seed=3"]


def test_two_gpus_five_runs_one_run_per_gpu(tmp_path):
    ws = make_workspace(tmp_path, gpus=(0, 1))
    _, log = submit(ws, tmp_path, TRAIN.format(epochs=4, seeds="[1, 2, 3, 4, 5]"))
    wait_for(lambda: set(states(ws).values()) == {"finished"}, timeout=90, what="all finished")
    intervals = {}
    for kind, name, t, devices, *_ in fake_log(log):
        assert devices in ("[0]", "[1]"), devices  # each run sees exactly its own GPU
        intervals.setdefault(name, {"dev": devices})[kind] = float(t)
    assert len(intervals) == 5
    for dev in ("[0]", "[1]"):
        spans = sorted((v["start"], v["end"]) for v in intervals.values() if v["dev"] == dev)
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:]))
    records = RunStore(ws).list()
    assert {tuple(r["gpus"]) for r in records} <= {(0,), (1,)}


def test_cancel_queued_and_running(tmp_path):
    ws = make_workspace(tmp_path)
    env, _ = submit(ws, tmp_path, TRAIN.format(epochs=200, seeds="[1, 2]"))
    wait_for(lambda: "running" in states(ws).values(), what="one running")
    st = states(ws)
    running = next(n for n, s in st.items() if s == "running")
    queued = next(n for n, s in st.items() if s == "queued")
    assert "had not started" in cli(ws, "cancel", queued, env=env).stdout
    assert cli(ws, "cancel", running, env=env).returncode == 0
    wait_for(lambda: states(ws) == {running: "cancelled", queued: "cancelled"}, what="both cancelled")
    again = cli(ws, "cancel", running, env=env)
    assert again.returncode == 1 and "only queued or running" in again.stderr


def test_failed_run_and_retry_moves_old_attempt_aside(tmp_path):
    ws = make_workspace(tmp_path)
    env, _ = submit(ws, tmp_path, '[runs.bad]\nkind = "train"\ntrain = "real"\neval = "real"\n'
                                  'epochs = 2\nnotes = "fail"\n', step_s=0.05)
    store = RunStore(ws)
    wait_for(lambda: states(ws) == {"bad": "failed"}, what="failed")
    assert store.list()[0]["error"] == "asked to fail"
    run_id = store.list()[0]["id"]
    assert cli(ws, "retry", "bad", env=env).returncode == 0
    wait_for(lambda: store.get(run_id)["attempt"] == 2 and store.get(run_id)["state"] == "failed",
             what="failed again")
    assert (ws / "runs" / run_id / "attempts" / "1" / "events.jsonl").exists()
    logs = cli(ws, "logs", "bad", "--events", env=env)
    assert '"type":"failed"' in logs.stdout


def test_failed_upstream_blocks_dependents_until_it_is_retried(tmp_path):
    ws = make_workspace(tmp_path)
    env, log = submit(ws, tmp_path, CHAIN.replace("images_per_class = 3", 'images_per_class = 3\nnotes = "fail-once"'),
                      step_s=0.05)
    wait_for(lambda: states(ws) == {"gen": "failed", "pretrain": "blocked", "freeze": "blocked"}, what="blocked")
    runs = {r["name"]: r for r in RunStore(ws).list()}
    assert f"waits for gen ({runs['gen']['id']}), which failed" in runs["pretrain"]["error"]
    assert "waits for pretrain" in runs["freeze"]["error"] and "blocked" in runs["freeze"]["error"]
    assert protocol.read_json(ws / "runs" / runs["pretrain"]["id"] / "status.json")["state"] == "blocked"
    listing = cli(ws, "ls", env=env).stdout
    assert re.search(r"pretrain\s+blocked", listing)
    wait_for(lambda: not is_running(Workspace(ws)), what="the supervisor gives up on blocked runs")
    assert "2 run(s) blocked" in (ws / "supervisor.log").read_text()
    # Retrying the upstream run (and a name that matches nothing) unblocks the chain.
    again = cli(ws, "retry", "gen", "nope", env=env)
    assert again.returncode == 1 and "nope" in again.stderr and "queued again" in again.stdout
    wait_for(lambda: set(states(ws).values()) == {"finished"}, timeout=60, what="the chain finished")


def test_supervisor_stop_leaves_runs_going(tmp_path):
    ws = make_workspace(tmp_path)
    env, log = submit(ws, tmp_path, TRAIN.format(epochs=40, seeds="[1]"), step_s=0.1)
    store = RunStore(ws)
    wait_for(lambda: store.list(state="running"), what="running")
    pid = protocol.read_json(ws / "runs" / store.list()[0]["id"] / "status.json")["handle"]["pid"]
    out = cli(ws, "supervisor", "stop", env=env)
    assert out.returncode == 0 and "stopped" in out.stdout
    assert not is_running(Workspace(ws)) and pid_alive(pid)
    assert "supervisor was not running" in cli(ws, "supervisor", "stop", env=env).stdout
    assert cli(ws, "supervisor", "start", env=env).returncode == 0  # adopts the run
    wait_for(lambda: store.list()[0]["state"] == "finished", timeout=60, what="finished")


def test_a_queued_run_runs_the_code_of_its_submission_not_later_edits(tmp_path, monkeypatch):
    """Code that stays put: submit snapshots the runners; editing them afterwards changes
    nothing for the runs already queued; provenance names the snapshot; gc drops unused ones."""
    import json
    import shutil

    from synthgap_tui import runs as lifecycle
    from synthgap_tui import snapshots
    from synthgap_tui.specs import parse_spec
    from synthgap_tui.store import RunStore
    from synthgap_tui.supervisor import Config, Supervisor
    from synthgap_tui.workspace import Workspace

    # A copy of the runners package stands in for the checkout people edit.
    src = tmp_path / "src"
    shutil.copytree(Path(snapshots.source_files()[0]), src / "runners",
                    ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(snapshots, "source_files",
                        lambda: (src / "runners", sorted((src / "runners").rglob("*.py"))))
    ws = Workspace(tmp_path / "ws").ensure()
    (ws.root / "config.toml").write_text("[supervisor]\ngpus = []\n[runners]\nprobe = []\n")
    exp = parse_spec('[experiment]\nname = "e"\n[runs.g]\nkind = "train-generator"\n')
    store = RunStore(ws)
    (run_id,) = lifecycle.submit(exp, store)
    key = json.loads(ws.run_file(run_id, "spec.json").read_text())["code"]
    snap = snapshots.folder(ws.root, key)
    assert (snap / "runners" / "protocol.py").read_bytes() == (src / "runners" / "protocol.py").read_bytes()
    (src / "runners" / "protocol.py").write_text("raise SystemExit('edited after submit')\n")  # the user edits
    assert (snap / "runners" / "protocol.py").read_bytes() != (src / "runners" / "protocol.py").read_bytes()
    (second,) = lifecycle.submit(parse_spec('[experiment]\nname = "f"\n[runs.g]\nkind = "train-generator"\n'), store)
    assert json.loads(ws.run_file(second, "spec.json").read_text())["code"] != key  # a new snapshot for new code

    launched = {}

    from synthgap_tui.launchers import Launcher

    class Recorder:
        name, schedules, max_nodes = "local", False, 1
        launch_many = Launcher.launch_many

        def launch(self, launch):
            launched[launch.run_id] = launch.env
            return {"pid": 1}

        def alive(self, handles):
            from synthgap_tui.launchers import Poll

            return {i: Poll(True) for i in handles}

        def describe(self, handle):
            return "recorded"

    sup = Supervisor(ws, Config(gpus=[], cpu_slots=2))
    sup.launcher = Recorder()
    sup.tick()
    env = launched[run_id]
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(snap) and env["SYNTHGAP_CODE"] == key
    # The runner that env starts imports the snapshot's runners, and its provenance names it.
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import runners.protocol as p, runners.provenance as v; "
                          "print(p.__file__); print(v.capture({}, {})['code'])"],
                         env={**os.environ, **{k: env[k] for k in ("PYTHONPATH", "SYNTHGAP_CODE")}},
                         capture_output=True, text=True, cwd=ws.run_dir(run_id))
    where, recorded = out.stdout.split()
    assert where == str(snap / "runners" / "protocol.py") and recorded == key, out.stderr
    # gc keeps what unfinished runs need and drops the rest.
    store.update(run_id, state="finished")
    assert snapshots.unused(ws.root, store.list()) == [snap]
    shutil.rmtree(snap)  # gc removed it: a retry snapshots today's runners and says which
    lifecycle.requeue(store, run_id, resume=False)
    assert store.get(run_id)["code"] != key and snapshots.folder(ws.root, store.get(run_id)["code"]).is_dir()
