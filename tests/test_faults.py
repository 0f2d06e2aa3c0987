"""Rare faults that must lose nothing: a full disk (a real small tmpfs, and ENOSPC
injected into a runner's writes), `db rebuild` killed at every step, unreadable
evaluation images, a launcher that cannot be asked."""

import contextlib
import errno
import json
import subprocess
from pathlib import Path

import pytest
import torch

from imagegen import make_dataset
from runner_helpers import TINY, events, final, make_run, run_in_process
from runners import protocol, train
from synthgap_tui.store import RunStore
from synthgap_tui.workspace import Workspace
from test_cli import run_cli


@contextlib.contextmanager
def small_filesystem(path: Path, size: str = "8m"):
    """A real tmpfs of ``size`` (root only: the test is skipped elsewhere)."""
    path.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> Path:
    """Take every free byte of ``path``'s filesystem; delete the file to free them."""
    filler = path / "filler"
    with open(filler, "wb", buffering=0) as f:
        for chunk in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while f.write(b"\0" * chunk):
                    pass
    return filler


def finished_runs(ws: Workspace, n: int) -> list[str]:
    store = RunStore(ws)
    ids = []
    for i in range(n):
        state = "queued" if i == n - 1 else "finished"
        run_id = store.create({"name": f"r{i}", "kind": "train", "state": state, "experiment": "e"})
        d = ws.run_dir(run_id)
        d.mkdir(parents=True)
        protocol.write_json_atomic(d / protocol.SPEC_FILE, {"id": run_id, "name": f"r{i}", "kind": "train",
                                                            "experiment": "e"})
        protocol.write_json_atomic(d / protocol.STATUS_FILE, {"state": state})
        ids.append(run_id)
    return ids


def test_every_command_on_a_full_disk_says_one_line_and_loses_nothing(tmp_path):
    with small_filesystem(tmp_path / "fs") as fs:
        ws = Workspace(fs / "ws").ensure()
        ids = finished_runs(ws, 4)
        filler = fill(fs)
        commands = [("tag", ids[0], "+good"), ("note", ids[1], "a note"), ("cancel", ids[3]),
                    ("rm", ids[2], "--yes"), ("retry", ids[0]), ("archive", ids[1]), ("db", "rebuild")]
        for command in commands:
            out = run_cli(*command, ws=ws.root)
            lines = out.stderr.strip().splitlines()
            assert out.returncode == 1, (command, out.stdout, out.stderr)
            assert len(lines) == 1 and "Traceback" not in out.stderr, (command, out.stderr)
            assert "no space left on device in " in lines[0] and " free)" in lines[0], (command, lines[0])
            # Nothing lost: the index parses and lists every run, every run folder is where it was.
            assert sorted(r["id"] for r in RunStore(ws).list()) == sorted(ids), command
            assert all((ws.run_dir(i) / protocol.SPEC_FILE).is_file() for i in ids), command
            assert not list((ws.root / ".trash").glob("*")) if (ws.root / ".trash").exists() else True
        assert {r["id"]: r["state"] for r in RunStore(ws).list()}[ids[3]] == "queued"
        filler.unlink()  # space freed: the same commands go through
        for command in commands[:4]:
            out = run_cli(*command, ws=ws.root)
            assert out.returncode == 0, (command, out.stderr)
        runs = {r["id"]: r for r in RunStore(ws).list()}
        assert ids[2] not in runs and runs[ids[0]]["tags"] == ["good"] and runs[ids[3]]["state"] == "cancelled"


def test_rm_puts_the_folders_back_when_the_index_cannot_be_written(tmp_path, monkeypatch):
    from synthgap_tui import cleanup
    from synthgap_tui.errors import StoreError

    ws = Workspace(tmp_path / "ws").ensure()
    ids = finished_runs(ws, 3)
    store = RunStore(ws)

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    plan = cleanup.plan_removal(store, ids[:2])
    monkeypatch.setattr(store, "delete_many", full)
    with pytest.raises(OSError):
        cleanup.remove(store, plan)
    assert all(ws.run_dir(i).is_dir() for i in ids) and not list((ws.root / ".trash").iterdir())
    assert len(RunStore(ws).list()) == 3
    monkeypatch.undo()
    monkeypatch.setattr("synthgap_tui.store.os.fsync", full)
    with pytest.raises(StoreError, match="no space left on device"):
        RunStore(ws).rebuild()
    monkeypatch.undo()
    assert len(RunStore(ws).list()) == 3 and RunStore(ws).backups() == []


@pytest.mark.parametrize("step, damaged", [("rebuild:scanned", False), ("rebuild:backed-up", False),
                                           ("rebuild:written", False), ("rebuild:backed-up", True),
                                           ("publish:runs.sqlite", True), ("rebuild:written", True)])
def test_db_rebuild_killed_at_any_step_leaves_an_index_with_every_run(tmp_path, step, damaged):
    ws = Workspace(tmp_path / "ws").ensure()
    ids = finished_runs(ws, 5)
    RunStore(ws).rebuild()  # an index and one backup to start from
    if damaged:  # a damaged index is replaced by a new file, not refilled
        ws.index_path.write_bytes(b"\x00damaged" * 1000)
    out = run_cli("db", "rebuild", ws=ws.root, env={protocol.FAULT_ENV: step})
    assert out.returncode == -9, (out.stdout, out.stderr)  # it was killed there
    assert ws.index_path.is_file()
    if damaged and step != "rebuild:written":
        assert run_cli("ls", ws=ws.root).returncode == 1  # still the damaged one: it says so
    else:
        assert sorted(r["id"] for r in RunStore(ws).list()) == sorted(ids)
    again = run_cli("db", "rebuild", ws=ws.root)  # the next command understands what it finds
    assert again.returncode == 0 and len(RunStore(ws).list()) == 5


def test_doctor_says_when_run_folders_are_missing_from_the_index(tmp_path):
    """A lost index comes back empty at the next command: doctor counts the folders it lost."""
    from synthgap_tui.doctor import index_check

    ws = Workspace(tmp_path / "ws").ensure()
    finished_runs(ws, 2)
    ws.index_path.unlink()
    check = index_check(ws)
    assert check.level == "WARN" and "no index at" in check.message and "2 run folder(s)" in check.message
    assert run_cli("ls", ws=ws.root).returncode == 0  # creates an empty index
    check = index_check(ws)
    assert check.level == "WARN" and "0 runs in" in check.message and "2 run folder(s)" in check.message
    assert "db rebuild" in check.message
    assert run_cli("db", "rebuild", ws=ws.root).returncode == 0
    check = index_check(ws)
    assert check.level == "OK" and "2 runs in" in check.message


def test_rebuild_backups_have_unique_names_and_the_newest_are_kept(tmp_path):
    ws = Workspace(tmp_path / "ws").ensure()
    finished = finished_runs(ws, 2)[0]
    store = RunStore(ws)
    for _ in range(4):  # within one second: names must not collide
        store.rebuild(keep_backups=3)
    assert len(store.backups()) == 3 and len({p.name for p in store.backups()}) == 3
    (ws.root / "config.toml").write_text("[store]\nkeep_backups = 1\n")
    (ws.run_dir(finished) / "checkpoints").mkdir()
    (ws.run_dir(finished) / "checkpoints" / "epoch_001.pt").write_bytes(b"x")
    assert run_cli("gc", finished, "--yes", ws=ws.root).returncode == 0
    assert not (ws.run_dir(finished) / "checkpoints" / "epoch_001.pt").exists()
    assert len(store.backups()) == 3  # gc of named runs prunes only their checkpoints
    out = run_cli("gc", "--yes", "--json", ws=ws.root)
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)["index_backups"]) == 2 and len(store.backups()) == 1


def test_a_training_run_on_a_full_disk_fails_clearly_and_resumes_from_its_last_checkpoint(tmp_path, monkeypatch):
    data = make_dataset(tmp_path / "data", classes=2, train_per_class=6, val_per_class=2)
    spec = {**TINY, "epochs": 3, "train_dir": str(data / "train"), "eval_dir": str(data / "val")}
    d = make_run(tmp_path, "full", **spec)
    publish = protocol.publish
    saves = []

    def full_at_the_second_checkpoint(tmp, path):
        if Path(path).name == train.LAST:
            saves.append(path)
            if len(saves) == 2:  # the checkpoint's bytes went to the temp file; then the disk is full
                raise OSError(errno.ENOSPC, "No space left on device")
        return publish(tmp, path)

    monkeypatch.setattr(protocol, "publish", full_at_the_second_checkpoint)
    assert run_in_process(train, d) == protocol.NO_SPACE_EXIT
    error = final(d)["error"]
    assert error.startswith(f"no space left on device in {d / 'checkpoints'} (") and "synthgap resume" in error
    kept = torch.load(d / "checkpoints" / train.LAST, weights_only=True)
    assert kept["epoch"] == 1  # the last good checkpoint, whole
    monkeypatch.undo()  # space freed
    assert run_in_process(train, d, "--resume") == 0, final(d)
    assert [e["epoch"] for e in events(d) if e["type"] == "epoch"] == [0, 1, 1, 2]


def test_the_supervisor_reads_exit_28_as_a_full_disk_and_a_final_event_as_the_end(tmp_path):
    from synthgap_tui import launchers
    from synthgap_tui.supervisor import Config, Supervisor

    ws = Workspace(tmp_path / "ws").ensure()
    ids = finished_runs(ws, 2)
    store = RunStore(ws)
    for run_id in ids:
        store.update(run_id, state="running")
    with protocol.EventWriter(ws.events_path(ids[1])) as w:
        w.emit(protocol.START)
        w.emit(protocol.DONE, summary={"top1_mean": 50.0})

    from synthgap_tui.launchers.local import LocalLauncher

    class Unreachable(LocalLauncher):
        def alive(self, handles):
            return {i: launchers.Poll(True, None, {"job": "1", "state": "UNKNOWN", "problem": "Slurm unreachable"})
                    if i == ids[1] else launchers.Poll(False, protocol.NO_SPACE_EXIT) for i in handles}

    sup = Supervisor(ws, Config(gpus=[]))
    sup.launcher = Unreachable()
    sup.tick()
    runs = {r["id"]: r for r in store.list()}
    assert runs[ids[0]]["state"] == "failed" and runs[ids[0]]["error"].startswith("no space left on device in ")
    assert runs[ids[1]]["state"] == "finished"  # its own final event ends it, Slurm or not


def test_unreadable_evaluation_images_are_counted_named_and_not_scored(tmp_path):
    data = make_dataset(tmp_path / "data", classes=2, train_per_class=6, val_per_class=4)
    clean = tmp_path / "clean"
    subprocess.run(["cp", "-r", str(data), str(clean)], check=True)
    val = sorted((data / "val").rglob("*.jpg"))
    (val[0].parent / "zero.png").write_bytes(b"")
    (val[-1].parent / "truncated.jpg").write_bytes(val[-1].read_bytes()[:200])
    spec = {**TINY, "epochs": 1, "train_dir": str(data / "train"), "eval_skip_limit": 0.5}
    broken = make_run(tmp_path, "broken", **spec, eval_dir=str(data / "val"))
    reference = make_run(tmp_path, "reference", **spec, eval_dir=str(clean / "val"))
    for d in (broken, reference):
        assert run_in_process(train, d) == 0, final(d)
    s, r = final(broken)["summary"], final(reference)["summary"]
    assert s["eval_skipped"] == 2 and s["eval_images"] == 8 and r["eval_skipped"] == 0
    assert s["top1_mean"] == r["top1_mean"]  # over exactly the readable images
    logs = " ".join(e["message"] for e in events(broken) if e["type"] == "log")
    assert "zero.png" in logs and "truncated.jpg" in logs
    strict = make_run(tmp_path, "strict", **{**spec, "eval_skip_limit": 0.1}, eval_dir=str(data / "val"))
    assert run_in_process(train, strict) == 1
    assert "2 of 10 images are unreadable" in final(strict)["error"]


def test_doctor_and_the_supervisor_say_when_the_disk_is_too_small(tmp_path, monkeypatch):
    from synthgap_tui.supervisor import Config, Supervisor

    ws = Workspace(tmp_path / "ws").ensure()
    (ws.root / "config.toml").write_text("[store]\nmin_free_gb = 1e9\n")
    out = run_cli("doctor", ws=ws.root)
    assert "WARN" in out.stdout and "below [store] min_free_gb" in out.stdout
    store = RunStore(ws)
    run_id = store.create({"name": "gen", "kind": "generate", "state": "queued"})
    ws.run_dir(run_id).mkdir(parents=True)
    protocol.write_json_atomic(ws.run_dir(run_id) / protocol.SPEC_FILE,
                               {"id": run_id, "name": "gen", "kind": "generate", "classes": "imagenet",
                                "images_per_class": 10**6, "width": 512, "height": 512})
    protocol.write_json_atomic(ws.run_dir(run_id) / protocol.STATUS_FILE, {"state": "queued"})
    Supervisor(ws, Config(gpus=[])).tick()
    run = store.get(run_id)
    assert run["state"] == "queued" and run["error"].startswith("not started yet: its output needs ~")


def test_the_runs_table_shows_the_launcher_s_problem_not_unknown():
    from synthgap_tui.formatting import fmt_gpus

    run = {"where": {"job": "812", "state": "UNKNOWN", "problem": "Slurm unreachable (timeout); states unknown, "
                     "retrying"}}
    assert fmt_gpus(run) == "812 slurm unreachable"
    assert fmt_gpus({"where": {"job": "812", "state": "RUNNING", "node": "n3"}}) == "812@n3"
