"""What researchers expect of a tracker: search by field, rm / archive / gc, disk use,
exports TensorBoard and MLflow read back, shell completion, --json everywhere."""

import asyncio
import json
import os
import subprocess

import pytest

from runners import protocol
from synthgap_tui import cleanup
from synthgap_tui.runfilter import FilterError, RunFilter
from synthgap_tui.store import RunStore
from synthgap_tui.workspace import Workspace
from test_cli import run_cli
from tui_fixtures import build_workspace


@pytest.fixture
def fixture_ws(tmp_path):
    return build_workspace(tmp_path / "ws")


def names(out) -> list[str]:
    assert out.returncode == 0, out.stderr
    return sorted(r["name"] for r in json.loads(out.stdout))


# -- search by hyperparameter and result ------------------------------------------
def test_field_expressions_search_parameters_and_results(fixture_ws):
    assert names(run_cli("ls", "--json", "freeze_layers>=12", ws=fixture_ws.root)) == [
        "freeze@freeze_layers=12", "freeze@freeze_layers=16", "freeze@freeze_layers=17"]
    # A default the spec did not set is a parameter too; top1 is the finished run's mean.
    assert len(names(run_cli("ls", "--json", "arch=resnet50", "kind:train", ws=fixture_ws.root))) == 12
    assert names(run_cli("ls", "--json", "top1>80", ws=fixture_ws.root)) == ["real-only"]
    assert names(run_cli("ls", "--json", "experiment~reduc", "top1<72", ws=fixture_ws.root)) == [
        "reduced@fraction=0.125"]
    assert names(run_cli("ls", "--json", "fraction!=1", "fraction<=0.5", "reduced", ws=fixture_ws.root)) == [
        "reduced@fraction=0.125", "reduced@fraction=0.25", "reduced@fraction=0.5"]
    assert names(run_cli("ls", "--json", "state:failed", "kind=generate", ws=fixture_ws.root)) == ["gen-sd14"]
    typo = run_cli("ls", "frezee_layers>3", ws=fixture_ws.root)
    assert typo.returncode == 0 and "No run has a field 'frezee_layers'" in typo.stdout


@pytest.mark.parametrize("text, message", [
    ("top1>", "no value after '>'"),
    (">70", "is not FIELD OP VALUE"),
    ("top1>=>3", "no value after '>='"),
    ("top1>high", "compares numbers and 'high' is not one"),
    ("archived:maybe", "archived: takes yes, no or all"),
])
def test_a_malformed_expression_is_a_clear_error(fixture_ws, text, message):
    with pytest.raises(FilterError, match=message):
        RunFilter.parse(text)
    out = run_cli("ls", text, ws=fixture_ws.root)
    assert out.returncode == 1 and message in out.stderr and "Traceback" not in out.stderr


def test_the_runs_screen_filters_by_expression_and_keeps_the_last_good_filter(fixture_ws):
    from test_tui import app_for, wait_until

    async def go():
        app = app_for(fixture_ws)
        async with app.run_test(size=(100, 30)) as pilot:
            runs = app.screen
            await wait_until(pilot, lambda: runs.query_one("#runs").row_count == 13, what="13 rows")
            await pilot.press("slash", *"freeze_layers>=12")
            await wait_until(pilot, lambda: runs.query_one("#runs").row_count == 3, what="3 rows")
            runs.query_one("#filter").value = "freeze_layers>=12 top1>"  # half typed: the table stays
            await pilot.pause()
            summary = str(runs.query_one("#runs-summary").render())
            assert "no value after '>'" in summary and runs.query_one("#filter").has_class("-invalid")
            assert runs.query_one("#runs").row_count == 3
            runs.query_one("#filter").value = "freeze_layers>=12 top1>49"
            await wait_until(pilot, lambda: runs.query_one("#runs").row_count == 1, what="top1>49")
            assert not runs.query_one("#filter").has_class("-invalid")
    asyncio.run(go())


# -- rm, archive, gc ---------------------------------------------------------------
def _pipeline(ws: Workspace) -> dict[str, str]:
    """gen (finished) <- train (finished), and a running run; with files of known sizes."""
    store = RunStore(ws)
    ids = {}
    for name, state, deps in (("gen", "finished", []), ("train", "finished", ["gen"]), ("live", "running", [])):
        run_id = store.create({"name": name, "kind": "train", "state": state,
                               "depends_on": [ids[d] for d in deps]})
        ids[name] = run_id
        d = ws.run_dir(run_id)
        d.mkdir(parents=True)
        protocol.write_json_atomic(d / protocol.SPEC_FILE, {"id": run_id, "name": name, "kind": "train",
                                                            "depends_on": [ids[x] for x in deps]})
        protocol.write_json_atomic(d / protocol.STATUS_FILE, {"state": state})
        (d / "data.bin").write_bytes(os.urandom(64 * 1024))
    return ids


def test_rm_refuses_active_and_depended_on_runs_then_deletes_for_good(tmp_path):
    ws = Workspace(tmp_path / "ws").ensure()
    ids = _pipeline(ws)
    live = run_cli("rm", "live", "--yes", ws=ws.root)
    assert live.returncode == 1 and "is running; cancel it first" in live.stderr
    needed = run_cli("rm", "gen", "--yes", ws=ws.root)
    assert needed.returncode == 1 and f"is needed by train ({ids['train']})" in needed.stderr
    assert ws.run_dir(ids["gen"]).is_dir() and ws.run_dir(ids["live"]).is_dir()
    asked = run_cli("rm", "gen", "train", ws=ws.root)  # not a terminal and no --yes: nothing goes
    assert asked.returncode == 1 and "pass --yes" in asked.stderr and ws.run_dir(ids["train"]).is_dir()
    (ws.root / ".trash" / "left-by-a-killed-rm").mkdir(parents=True)
    both = run_cli("rm", "gen", "train", "--yes", "--json", ws=ws.root)
    assert both.returncode == 0, both.stderr
    result = json.loads(both.stdout)
    assert sorted(result["removed"]) == sorted([ids["gen"], ids["train"]]) and result["bytes_freed"] >= 128 * 1024
    assert not ws.run_dir(ids["gen"]).exists() and not ws.run_dir(ids["train"]).exists()
    assert list((ws.root / ".trash").iterdir()) == []
    assert [r["name"] for r in RunStore(ws).list()] == ["live"]
    assert RunStore(ws).rebuild() == 1  # nothing comes back


def test_rm_force_removes_a_dependency_and_says_so_when_its_dependent_reruns(tmp_path):
    ws = Workspace(tmp_path / "ws").ensure()
    ids = _pipeline(ws)
    assert run_cli("rm", "gen", "--force", "--yes", ws=ws.root).returncode == 0
    assert RunStore(ws).get(ids["train"])["state"] == "finished"  # kept, with its results
    plan = cleanup.plan_removal(RunStore(ws), [ids["train"]])
    assert plan.refused == {} and [r["id"] for r in plan.runs] == [ids["train"]]


def test_archive_hides_runs_until_asked_and_survives_a_rebuild(fixture_ws):
    assert run_cli("archive", "real-only", "synth-only", ws=fixture_ws.root).returncode == 0
    shown = names(run_cli("ls", "--json", ws=fixture_ws.root))
    assert "real-only" not in shown and len(shown) == 11
    assert run_cli("db", "rebuild", ws=fixture_ws.root).returncode == 0
    assert names(run_cli("ls", "--json", "archived:yes", ws=fixture_ws.root)) == ["real-only", "synth-only"]
    assert len(names(run_cli("ls", "--json", "archived:all", ws=fixture_ws.root))) == 13
    assert run_cli("archive", "--undo", "real-only", ws=fixture_ws.root).returncode == 0
    assert "real-only" in names(run_cli("ls", "--json", ws=fixture_ws.root))


def _checkpointed_run(ws: Workspace, state: str = "finished") -> tuple[str, dict[str, int]]:
    """A run with the files the train runner leaves: last.pt (its last checkpoint
    event), model.pt (its artifact), epoch snapshots, an earlier attempt's checkpoint."""
    store = RunStore(ws)
    run_id = store.create({"name": f"t-{state}", "kind": "train", "state": state})
    d = ws.run_dir(run_id)
    ck = d / "checkpoints"
    (d / "attempts" / "1" / "checkpoints").mkdir(parents=True)
    ck.mkdir()
    sizes = {"checkpoints/last.pt": 40_960, "checkpoints/model.pt": 20_480, "checkpoints/epoch_002.pt": 20_480,
             "checkpoints/epoch_004.pt": 20_480, "attempts/1/checkpoints/last.pt": 40_960}
    for rel, size in sizes.items():
        (d / rel).write_bytes(os.urandom(size))
    protocol.write_json_atomic(d / protocol.SPEC_FILE, {"id": run_id, "name": f"t-{state}", "kind": "train"})
    events = [{"t": 1, "type": "checkpoint", "path": str(ck / "last.pt"), "epoch": 2},
              {"t": 2, "type": "checkpoint", "path": str(ck / "last.pt"), "epoch": 4},
              {"t": 3, "type": "artifact", "path": str(ck / "model.pt"), "kind": "model"}]
    (d / protocol.EVENTS_FILE).write_text("".join(json.dumps(e) + "\n" for e in events))
    return run_id, sizes


def test_gc_keeps_final_weights_and_last_checkpoint_and_prints_bytes_freed(tmp_path):
    ws = Workspace(tmp_path / "ws").ensure()
    run_id, sizes = _checkpointed_run(ws)
    failed_id, _ = _checkpointed_run(ws, "failed")  # may resume: untouched
    dry = json.loads(run_cli("gc", "--dry-run", "--json", ws=ws.root).stdout)
    assert dry["bytes_freed"] == 0 and ws.run_file(run_id, "checkpoints/epoch_002.pt").exists()
    out = run_cli("gc", "--yes", "--json", ws=ws.root)
    assert out.returncode == 0, out.stderr
    d = ws.run_dir(run_id)
    left = sorted(str(p.relative_to(d)) for p in d.rglob("*.pt"))
    assert left == ["checkpoints/last.pt", "checkpoints/model.pt"]
    gone = ("checkpoints/epoch_002.pt", "checkpoints/epoch_004.pt", "attempts/1/checkpoints/last.pt")
    assert json.loads(out.stdout)["bytes_freed"] == sum(sizes[k] for k in gone)
    assert len(list(ws.run_dir(failed_id).rglob("*.pt"))) == 5
    text = run_cli("gc", "--keep", "final", "--yes", ws=ws.root)
    assert "freed 40.0 KiB" in text.stdout and not (d / "checkpoints" / "last.pt").exists()
    assert (d / "checkpoints" / "model.pt").exists()
    named = run_cli("gc", failed_id, "--yes", ws=ws.root)
    assert named.returncode == 1 and "finished runs only" in named.stderr


def test_gc_follows_the_workspace_config(tmp_path):
    ws = Workspace(tmp_path / "ws").ensure()
    run_id, _ = _checkpointed_run(ws)
    ws.config_path.write_text("[gc]\nkeep_last = false\n")
    assert run_cli("gc", "--yes", ws=ws.root).returncode == 0
    assert [p.name for p in ws.run_dir(run_id).rglob("*.pt")] == ["model.pt"]


def test_disk_use_in_show_and_on_demand_in_the_runs_screen(tmp_path):
    from test_tui import app_for, wait_until

    ws = Workspace(tmp_path / "ws").ensure()
    run_id, sizes = _checkpointed_run(ws)
    shown = json.loads(run_cli("show", run_id, "--json", ws=ws.root).stdout)
    assert shown["disk_bytes"] == cleanup.disk_use(ws.run_dir(run_id)) >= sum(sizes.values())
    assert "disk 1" in run_cli("show", run_id, ws=ws.root).stdout  # ~140 KiB

    async def go():
        app = app_for(ws)
        async with app.run_test(size=(120, 30)) as pilot:
            runs = app.screen
            await wait_until(pilot, lambda: runs.query_one("#runs").row_count == 1, what="1 row")
            await pilot.press("u")
            await wait_until(pilot, lambda: "disk" in runs.query_one("#runs").columns, what="disk column")
            assert "KiB" in str(runs.query_one("#runs").get_cell(run_id, "disk"))
            await pilot.press("u")
            assert "disk" not in runs.query_one("#runs").columns
    asyncio.run(go())


def test_delete_and_archive_from_the_app(tmp_path):
    from synthgap_tui.screens.confirm import ConfirmScreen
    from test_tui import app_for, wait_until

    ws = Workspace(tmp_path / "ws").ensure()
    ids = _pipeline(ws)

    async def go():
        app = app_for(ws)
        async with app.run_test(size=(120, 30)) as pilot:
            runs = app.screen
            await wait_until(pilot, lambda: runs.query_one("#runs").row_count == 3, what="3 rows")
            runs.marked = {ids["gen"], ids["live"]}
            await pilot.press("delete")  # both refused: told why, nothing asked, nothing deleted
            await wait_until(pilot, lambda: any("nothing deleted" in n.message for n in app._notifications),
                             what="refusal")
            message = [n.message for n in app._notifications][-1]
            assert "is running; cancel it first" in message and "is needed by train" in message
            assert app.screen is runs and ws.run_dir(ids["gen"]).is_dir()
            runs.marked = {ids["gen"], ids["train"]}
            await pilot.press("delete")
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirmation")
            assert app.screen.title_text == "Delete 2 run(s)?", (app.screen.title_text, app.screen.body)
            await pilot.press("y")
            await wait_until(pilot, lambda: not ws.run_dir(ids["train"]).exists(), what="removed")
            runs.marked = set()
            await wait_until(pilot, lambda: runs.query_one("#runs").row_count == 1, what="1 row left")
            await pilot.press("a")  # archive the one left: it leaves the table
            await wait_until(pilot, lambda: runs.query_one("#runs").row_count == 0, what="archived")
            assert RunStore(ws).get(ids["live"])["archived"] is True
    asyncio.run(go())


# -- exports read back with the tools' own readers ---------------------------------------
def test_tensorboard_export_reads_back_with_tensorboard(fixture_ws, tmp_path):
    # The reader TensorBoard's own UI uses (scalars are tensors of DATA_CLASS_SCALAR).
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    def scalars(tag):
        return [(e.step, make_ndarray(e.tensor_proto).item()) for e in acc.Tensors(tag)]

    out = tmp_path / "tb"
    res = run_cli("export", "-e", "layer-freeze", "--format", "tensorboard", "--out", str(out), ws=fixture_ws.root)
    assert res.returncode == 0 and f"tensorboard --logdir {out}" in res.stdout
    run_id = RunStore(fixture_ws).resolve("real-only")
    acc = EventAccumulator(str(out / f"real-only-{run_id}"))
    acc.Reload()
    tags = set(acc.Tags()["tensors"])
    assert {"epoch/top1", "epoch/top5", "train_step/loss", "train_step/lr", "results/top1_mean"} <= tags
    assert "train_step/epoch" not in tags  # an axis, not a curve
    assert [step for step, _ in scalars("epoch/top1")] == list(range(6))
    assert [value for _, value in scalars("epoch/top1")] == pytest.approx([80, 84, 86, 87, 87.5, 87.8])
    assert len(scalars("train_step/loss")) == 30
    assert scalars("results/top1_mean")[0][1] == pytest.approx((84 + 86 + 87 + 87.5 + 87.8) / 5, rel=1e-6)
    assert len(list(out.iterdir())) == 7
    events = protocol.read_events(fixture_ws.events_path(run_id))
    wall = [e["t"] for e in events if e["type"] == "epoch"]
    assert [e.wall_time for e in acc.Tensors("epoch/top1")] == pytest.approx(wall)  # the events' own times
    # Exported again into the same place: the same steps, once each.
    again = run_cli("export", "-e", "layer-freeze", "--format", "tensorboard", "--out", str(out), ws=fixture_ws.root)
    assert again.returncode == 0
    acc = EventAccumulator(str(out / f"real-only-{run_id}"))
    acc.Reload()
    assert [step for step, _ in scalars("epoch/top1")] == list(range(6)) and len(scalars("train_step/loss")) == 30
    # The parameters reach the HParams dashboard (its plugin's own data, read back as TensorBoard reads it).
    from tensorboard.plugins.hparams import plugin_data_pb2

    member = RunStore(fixture_ws).resolve("freeze@freeze_layers=8")
    frozen = EventAccumulator(str(out / f"freeze@freeze_layers=8-{member}"))
    frozen.Reload()
    content = frozen.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["freeze_layers"].number_value == 8 and hparams["arch"].string_value == "resnet50"
    assert len(list((out / f"real-only-{run_id}").glob("events.out.tfevents.*"))) == 2  # scalars, hparams: once


def test_mlflow_export_reads_back_with_the_mlflow_client(fixture_ws, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    from mlflow.tracking import MlflowClient

    assert run_cli("tag", "real-only", "+baseline", ws=fixture_ws.root).returncode == 0
    assert run_cli("note", "real-only", "the reference", ws=fixture_ws.root).returncode == 0
    out = tmp_path / "mlruns"
    res = run_cli("export", "-e", "layer-freeze", "-f", "mlflow", "--out", str(out), "--json", ws=fixture_ws.root)
    assert res.returncode == 0, res.stderr
    client = MlflowClient(tracking_uri=out.as_uri())
    experiment = client.get_experiment_by_name("layer-freeze")
    found = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert len(found) == 7
    real, frozen = found["real-only"], found["freeze@freeze_layers=8"]
    assert real.info.status == "FINISHED" and real.data.tags["tag.baseline"] == "true"
    assert real.data.tags["mlflow.note.content"] == "the reference"
    assert frozen.data.params["freeze_layers"] == "8" and frozen.data.params["arch"] == "resnet50"
    history = client.get_metric_history(real.info.run_id, "epoch.top1")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == list(
        enumerate([80, 84, 86, 87, 87.5, 87.8]))
    assert real.data.metrics["results.top1_mean"] == pytest.approx(86.46, abs=0.01)
    # Exported again: the same MLflow runs (found by their synthgap.id), no metric point twice.
    assert run_cli("tag", "real-only", "+again", ws=fixture_ws.root).returncode == 0
    res = run_cli("export", "-e", "layer-freeze", "-f", "mlflow", "--out", str(out), ws=fixture_ws.root)
    assert res.returncode == 0, res.stderr
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 7 and len(client.get_metric_history(real.info.run_id, "epoch.top1")) == 6
    assert client.get_run(real.info.run_id).data.tags["tag.again"] == "true"  # what is new arrives


# -- shell completion and --json ------------------------------------------------------------
def test_bash_completion_completes_commands_runs_and_presets(fixture_ws, tmp_path):
    script = tmp_path / "synthgap.bash"
    script.write_text(run_cli("completion", "bash").stdout)
    env = {**os.environ, "SYNTHGAP_HOME": str(fixture_ws.root)}

    def complete(*words: str) -> list[str]:
        line = " ".join(words)
        probe = (f"source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; "
                 f"COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}; _shtab_synthgap; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
        out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    assert complete("synthgap", "su") == ["submit", "supervisor"]
    assert complete("synthgap", "show", "real") == ["real-only"]
    assert "0000000007" in complete("synthgap", "rm", "00000000")
    assert complete("synthgap", "presets", "mtg-base") == ["mtg-baselines"]
    assert complete("synthgap", "kinds", "gen") == ["generate"]
    assert "--keep" in complete("synthgap", "gc", "--k")


def test_every_data_command_has_json(fixture_ws):
    note = run_cli("note", "real-only", "x", "--json", ws=fixture_ws.root)
    assert json.loads(note.stdout)["note"] == "x"
    assert json.loads(run_cli("db", "rebuild", "--json", ws=fixture_ws.root).stdout)["runs"] == 13
    assert json.loads(run_cli("supervisor", "--json", ws=fixture_ws.root).stdout)["running"] is False
    checks = json.loads(run_cli("doctor", "--json", ws=fixture_ws.root).stdout)
    assert {c["name"] for c in checks} >= {"python", "torch", "disk", "index"}


def test_gc_keeps_an_artifact_folder_inside_checkpoints(tmp_path):
    """train-generator reports checkpoints/generator/ as its artifact: all of it stays."""
    ws = Workspace(tmp_path / "ws").ensure()
    run_id, _ = _checkpointed_run(ws)
    d = ws.run_dir(run_id)
    (d / "checkpoints" / "generator").mkdir()
    for name in ("model_index.json", "unet.safetensors"):
        (d / "checkpoints" / "generator" / name).write_bytes(b"x" * 4096)
    with open(d / protocol.EVENTS_FILE, "a") as f:
        f.write(json.dumps({"t": 4, "type": "artifact", "path": str(d / "checkpoints" / "generator"),
                            "kind": "generator"}) + "\n")
    assert run_cli("gc", "--yes", ws=ws.root).returncode == 0
    assert sorted(p.name for p in (d / "checkpoints" / "generator").iterdir()) == ["model_index.json",
                                                                                   "unet.safetensors"]
