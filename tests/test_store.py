import json
import random
import signal
import sqlite3
import subprocess
import time

import pytest

from conftest import PYTHON, subprocess_env
from runners import protocol
from synthgap_tui.errors import RunNotFound, StoreCorrupt, StoreError
from synthgap_tui.store import RunStore
from synthgap_tui.workspace import new_run_id


def test_create_get_update_list(tmp_path):
    store = RunStore(tmp_path)
    a = store.create({"name": "a", "kind": "train"})
    b = store.create({"name": "b", "kind": "generate"})
    assert a != b
    store.update(a, state="running", progress=0.5)
    assert store.get(a)["state"] == "running" and store.get(a)["progress"] == 0.5
    assert store.get(b)["state"] == "queued"
    assert [r["id"] for r in store.list(kind="train")] == [a]
    assert {r["id"] for r in store.list(state=["queued", "running"])} == {a, b}
    assert store.get("zzzzzzzzzz") is None and store.get("not-an-id") is None
    with pytest.raises(RunNotFound):
        store.update("zzzzzzzzzz", state="x")


def test_second_store_sees_writes_of_the_first(tmp_path):
    one, two = RunStore(tmp_path), RunStore(tmp_path)
    rid = one.create({"name": "x"})
    assert two.get(rid)["name"] == "x"
    two.update(rid, state="finished")
    assert one.get(rid)["state"] == "finished"
    one.update(rid, progress=1.0)  # one's cache must not resurrect "queued"
    assert two.get(rid) == one.get(rid)
    assert one.get(rid)["state"] == "finished"


def test_resolve_by_prefix_and_name(tmp_path):
    store = RunStore(tmp_path)
    rid = store.create({"name": "pretrain-real"})
    assert store.resolve(rid) == rid
    assert store.resolve("pretrain-real") == rid
    with pytest.raises(RunNotFound, match="synthgap ls"):
        store.resolve("nope")


def test_explicit_duplicate_id_is_refused(tmp_path):
    store = RunStore(tmp_path)
    rid = new_run_id()
    store.create({"id": rid})
    with pytest.raises(StoreError, match="already"):
        store.create({"id": rid})


def test_failed_write_changes_nothing(tmp_path):
    store = RunStore(tmp_path)
    rid = store.create({"name": "x"})
    conn = store.index.connection()
    # SQLite's own "database or disk is full", without filling a disk: no page may be added.
    conn.execute(f"PRAGMA max_page_count={conn.execute('PRAGMA page_count').fetchone()[0]}")
    with pytest.raises(StoreError, match="no space left on device in .* free"):
        store.create_many([{"name": f"n{i}", "state": "running", "pad": "x" * 500} for i in range(100)])
    with pytest.raises(StoreError, match="no space left on device in .* free"):
        store.update(rid, state="running", pad="x" * 100_000)
    assert store.get(rid)["state"] == "queued" and "pad" not in store.get(rid)
    assert [r["id"] for r in RunStore(tmp_path).list()] == [rid]
    conn.execute("PRAGMA max_page_count=1073741823")
    store.update(rid, state="running")  # the same connection goes on once there is room
    assert RunStore(tmp_path).get(rid)["state"] == "running"


CHILD = r"""
import sys
from synthgap_tui.store import RunStore
store = RunStore(sys.argv[1])
rid = sys.argv[2]
i = int(sys.argv[3])
while True:
    i += 1
    if i % 7 == 0:
        new = store.create({"name": f"c{i}"})
        sys.stdout.write(f"c {new}\n"); sys.stdout.flush()
    else:
        store.update(rid, counter=i)
        sys.stdout.write(f"u {i}\n"); sys.stdout.flush()
"""


@pytest.mark.parametrize("others", [0, 100_000])
def test_sigkill_at_random_moments_loses_no_acknowledged_update(tmp_path, others):
    rng = random.Random(1234)
    store = RunStore(tmp_path)
    store.create_many([{"name": f"old{i}", "state": "finished", "experiment": f"e{i // 40}"} for i in range(others)])
    rid = store.create({"name": "target", "counter": 0})
    acked_counter, acked_created = 0, []
    for _ in range(50):
        child = subprocess.Popen([PYTHON, "-c", CHILD, str(tmp_path), rid, str(acked_counter)],
                                 stdout=subprocess.PIPE, env=subprocess_env(), text=True)
        first = child.stdout.readline()  # the child is inside its update loop
        time.sleep(rng.uniform(0, 0.06))
        child.send_signal(signal.SIGKILL)
        out = first + child.stdout.read()
        child.wait()
        for line in out.splitlines(keepends=True):
            if not line.endswith("\n"):  # killed while acknowledging
                continue
            what, value = line.split()
            if what == "u":
                acked_counter = max(acked_counter, int(value))
            else:
                acked_created.append(value)
        fresh = RunStore(tmp_path)  # loads without error after every kill
        assert fresh.get(rid)["counter"] >= acked_counter
        for created in acked_created:
            assert fresh.get(created) is not None
    assert acked_counter > 50 and acked_created
    assert len(RunStore(tmp_path).list(state="finished")) == others  # the rest of the index untouched


CONCURRENT = r"""
import sys
from synthgap_tui.store import RunStore
store = RunStore(sys.argv[1])
shared, own = sys.argv[2], sys.argv[3]
for i in range(200):
    with store.locked():
        store.update(shared, n=store.get(shared)["n"] + 1)
    store.update(own, last=i)
"""


def test_three_processes_200_updates_each_all_land(tmp_path):
    store = RunStore(tmp_path)
    shared = store.create({"name": "shared", "n": 0})
    own = [store.create({"name": f"p{k}", "last": -1}) for k in range(3)]
    procs = [subprocess.Popen([PYTHON, "-c", CONCURRENT, str(tmp_path), shared, o],
                              env=subprocess_env()) for o in own]
    assert all(p.wait(timeout=300) == 0 for p in procs)
    assert store.get(shared)["n"] == 600
    assert all(store.get(o)["last"] == 199 for o in own)


def _make_run_dir(ws, name, state):
    rid = new_run_id()
    d = ws / "runs" / rid
    d.mkdir(parents=True)
    protocol.write_json_atomic(d / "spec.json", {"id": rid, "name": name, "kind": "train",
                                                 "experiment": "exp", "created": time.time()})
    protocol.write_json_atomic(d / "status.json", {"state": state})
    with protocol.EventWriter(d / "events.jsonl") as w:
        w.emit("epoch", epoch=0, top1=50.0)
    return rid


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage", "json"])
def test_corrupt_index_points_at_rebuild_and_rebuild_restores(tmp_path, damage):
    ws = tmp_path / "ws"
    store = RunStore(ws)
    ids = []
    for i, state in enumerate(["finished", "failed", "queued"]):
        rid = _make_run_dir(ws, f"run{i}", state)
        store.create({"id": rid, "name": f"run{i}", "state": state})
        ids.append(rid)
    whole = (ws / "runs.sqlite").read_bytes()
    (ws / "runs.sqlite").write_bytes({"empty": b"", "truncated": whole[:3000], "garbage": b"\x00garbage" * 500,
                                      "json": b'{"meta": {"schema": 1}, "runs": {"1": '}[damage])

    with pytest.raises(StoreCorrupt, match="synthgap db rebuild"):
        RunStore(ws).list()
    cli = subprocess.run([PYTHON, "-m", "synthgap_tui.cli", "-w", str(ws), "ls"],
                         capture_output=True, text=True, env=subprocess_env())
    assert cli.returncode == 1
    assert "synthgap db rebuild" in cli.stderr and "Traceback" not in cli.stderr

    cli = subprocess.run([PYTHON, "-m", "synthgap_tui.cli", "-w", str(ws), "db", "rebuild"],
                         capture_output=True, text=True, env=subprocess_env())
    assert cli.returncode == 0, cli.stderr
    runs = {r["id"]: r for r in RunStore(ws).list()}
    assert sorted(runs) == sorted(ids)
    assert [runs[i]["state"] for i in ids] == ["finished", "failed", "queued"]
    assert runs[ids[0]]["top1"] == 50.0 and runs[ids[0]]["name"] == "run0"
    assert list(ws.glob("runs.sqlite.bak-*"))  # the damaged index is kept, not deleted


def test_newer_schema_is_refused_clearly(tmp_path):
    store = RunStore(tmp_path)
    store.create({"name": "x"})
    with sqlite3.connect(tmp_path / "runs.sqlite") as conn:
        conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(StoreError, match="newer SynthGap"):
        RunStore(tmp_path).list()


def test_db_rebuild_migrates_sweep_names_a_shell_would_glob(tmp_path):
    """Before, a sweep member was 'base[k=v]': bash expanded it and zsh refused it."""
    import json

    from synthgap_tui.workspace import Workspace

    ws = Workspace(tmp_path / "ws").ensure()
    store = RunStore(ws)
    run_id = store.create({"name": "freeze[freeze_layers=4,seed=0]", "state": "finished"})
    ws.run_dir(run_id).mkdir(parents=True)
    (ws.run_dir(run_id) / "spec.json").write_text(json.dumps({"id": run_id, "name": "freeze[freeze_layers=4,seed=0]"}))
    store.rebuild()
    assert store.get(run_id)["name"] == "freeze@freeze_layers=4,seed=0"
    assert json.loads((ws.run_dir(run_id) / "spec.json").read_text())["name"] == "freeze@freeze_layers=4,seed=0"
    assert store.resolve("freeze@freeze_layers=4,seed=0") == run_id


def test_a_json_index_of_an_older_version_is_moved_in_once_with_a_message(tmp_path):
    ids = [new_run_id() for _ in range(3)]
    legacy = {"meta": {"schema": 1, "token": "ab"},
              "runs": {str(int(i, 36)): {"id": i, "name": f"r{n}", "state": "finished", "created": 1.7e9 + n,
                                         "summary": {"top1_mean": 50.0 + n}} for n, i in enumerate(ids)}}
    (tmp_path / "runs.json").write_text(json.dumps(legacy))
    first = subprocess.run([PYTHON, "-m", "synthgap_tui.cli", "-w", str(tmp_path), "ls", "-q"],
                           capture_output=True, text=True, env=subprocess_env())
    assert first.returncode == 0, first.stderr
    assert first.stdout.split() == ids and "Moved the run index (3 runs)" in first.stderr
    assert not (tmp_path / "runs.json").exists() and (tmp_path / "runs.json.migrated").is_file()
    again = subprocess.run([PYTHON, "-m", "synthgap_tui.cli", "-w", str(tmp_path), "ls", "-q"],
                           capture_output=True, text=True, env=subprocess_env())
    assert again.stdout == first.stdout and again.stderr == ""
    assert RunStore(tmp_path).get(ids[2])["summary"]["top1_mean"] == 52.0


def test_changes_give_a_poller_only_what_changed_and_everything_after_a_rebuild(tmp_path):
    ws = tmp_path / "ws"
    store = RunStore(ws)
    a, b, c = (_make_run_dir(ws, n, "finished") for n in "abc")
    store.create_many([{"id": i, "name": n, "state": "finished"} for i, n in zip((a, b, c), "abc")])
    start = store.changes(None)
    assert start.full and [r["id"] for r in start.runs] == [a, b, c]
    assert store.changes(start.rev).runs == [] and store.changes(start.rev).removed == []
    subprocess.run([PYTHON, "-c", "import sys; from synthgap_tui.store import RunStore; s = RunStore(sys.argv[1]); "
                    "s.update(sys.argv[2], note='seen elsewhere'); s.delete_many([sys.argv[3]])", str(ws), b, c],
                   check=True, env=subprocess_env())
    later = store.changes(start.rev)
    assert not later.full and [r["id"] for r in later.runs] == [b] and later.runs[0]["note"] == "seen elsewhere"
    assert later.removed == [c]
    store.rebuild()
    assert store.changes(later.rev).full  # a poller cannot know what a rebuild changed: it reloads


def test_tinydb_api_reads_the_index_and_its_writes_keep_other_writers_changes(tmp_path):
    from tinydb import Query

    store = RunStore(tmp_path)
    a, b = store.create({"name": "a", "lr": 0.1}), store.create({"name": "b", "lr": 0.2})
    table = store.db.table("runs")
    assert [d["id"] for d in table.search(Query().lr > 0.15)] == [b]
    table.update({"note": "tinydb"}, Query().name == "b")
    assert store.get(b)["note"] == "tinydb"
    # TinyDB reads everything, changes its copy, writes everything: another writer
    # in between must keep its change.
    data = store.index.read()
    RunStore(tmp_path).update(a, state="running")
    data["runs"][str(int(b, 36))]["note"] = "changed by TinyDB"
    store.index.write(data)
    assert store.get(a)["state"] == "running" and store.get(b)["note"] == "changed by TinyDB"
    table.remove(Query().name == "b")
    assert [r["id"] for r in store.list()] == [a]


def test_short_ids_are_the_shortest_unique_prefixes():
    from synthgap_tui.cli.browse import short_ids

    rng = random.Random(7)
    ids = sorted({"".join(rng.choice("abc") for _ in range(10)) for _ in range(300)})
    short = short_ids(ids, ids)
    for run_id in ids:
        brute = next(n for n in range(6, 11) if not any(o != run_id and o.startswith(run_id[:n]) for o in ids))
        assert short[run_id] == run_id[:brute]
