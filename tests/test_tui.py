"""The app driven with Pilot: every screen, the GPU panel on fake NVML, and the main flow."""

import asyncio
import time

import pytest

from fakes import FakeNvml
from supervised import make_workspace
from synthgap_tui.app import create_app
from synthgap_tui.gpu import NvmlMonitor
from synthgap_tui.screens.compare import CompareScreen
from synthgap_tui.screens.compose import ComposeScreen
from synthgap_tui.screens.confirm import ConfirmScreen
from synthgap_tui.screens.run_detail import RunScreen
from synthgap_tui.screens.runs import RunsScreen
from synthgap_tui.store import RunStore
from synthgap_tui.workspace import Workspace
from tui_fixtures import build_workspace


async def wait_until(pilot, predicate, timeout=30.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if found := predicate():
            return found
        await pilot.pause(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def fixture_ws(tmp_path):
    return build_workspace(tmp_path / "ws")


def app_for(ws, gpus=0, **kw):
    return create_app(ws, gpu_monitor=NvmlMonitor(FakeNvml(count=gpus, **kw)), start_supervisor=False)


def test_runs_screen_filters_sorts_and_marks(fixture_ws):
    async def go():
        app = app_for(fixture_ws)
        async with app.run_test(size=(100, 30)) as pilot:
            screen = app.screen
            await wait_until(pilot, lambda: screen.query_one("#runs").row_count == 13, what="13 rows")
            await pilot.press("slash", *"state:failed")
            await wait_until(pilot, lambda: screen.query_one("#runs").row_count == 1, what="filter")
            await pilot.press("escape")
            await wait_until(pilot, lambda: screen.query_one("#runs").row_count == 13, what="cleared")
            await pilot.press("slash", *"freeze_layers", "enter")
            await wait_until(pilot, lambda: screen.query_one("#runs").row_count == 5, what="5 rows")
            await pilot.press("space", "down", "space")
            assert len(screen.marked) == 2
            await pilot.press("k")  # cancelling several runs asks first
            assert isinstance(app.screen, ConfirmScreen) and "Cancel 2 runs?" in app.screen.title_text
            await pilot.press("escape")
            assert app.screen is screen
            await pilot.press("s")
            assert screen.sort_index == 6  # from experiment (5) to the next column
    asyncio.run(go())


def test_run_screen_shows_history_of_a_finished_run(fixture_ws):
    async def go():
        app = app_for(fixture_ws)
        run = next(r for r in RunStore(fixture_ws).list() if r["name"] == "real-only")
        async with app.run_test(size=(100, 30)) as pilot:
            from runners import protocol

            protocol.write_json_atomic(fixture_ws.run_file(run["id"], "provenance.json"),
                                       {"python": "3.11.7", "libraries": {"torch": "2.14.1"}, "spec": {}})
            app.open_run(run["id"])
            await wait_until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.history.epochs,
                             what="epochs loaded")
            await wait_until(pilot, lambda: "libraries.torch" in str(app.screen.query_one("#run-provenance").render()),
                             what="provenance shown")
            screen = app.screen
            assert len(screen.history.epochs) == 6 and len(screen.history.series("train_step", "step", "loss")[1]) == 30
            # The train kind's charts (runners/kinds/train.py): loss first, accuracy per epoch second.
            assert screen.query_one("#chart-0").series["loss"][1][-1] == 2.0 - 0.1 * 5 - 0.01 * 4
            assert screen.query_one("#chart-1").series["top-1"][1][-1] == 87.8
            assert screen.query_one("#epochs").row_count == 6
            # Any numeric field of the epoch events can be charted: f cycles through them.
            assert screen.epoch_field == "top1"
            await pilot.press("f")
            assert screen.epoch_field == "top5"
            assert screen.query_one("#chart-epoch-field").series["top5"][1][-1] == 100.0
            await pilot.press("R")  # retry asks first, naming the run; escape keeps it as it is
            assert isinstance(app.screen, ConfirmScreen) and run["name"] in app.screen.body
            await pilot.press("n")  # n is not an answer: it means Note below
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("escape")
            assert app.screen is screen and RunStore(fixture_ws).get(run["id"])["state"] == "finished"
            await pilot.press("escape")
            assert isinstance(app.screen, RunsScreen)
    asyncio.run(go())


def test_compare_screen_finds_the_layer_freeze_sweep_and_baselines(fixture_ws):
    async def go():
        app = app_for(fixture_ws)
        async with app.run_test(size=(100, 30)) as pilot:
            ids = [r["id"] for r in RunStore(fixture_ws).list(experiment="layer-freeze")]
            app.push_screen(CompareScreen(ids, "layer-freeze"))
            await wait_until(pilot, lambda: app.screen.data, what="runs loaded")
            chart = app.screen.query_one("#chart-sweep")
            assert chart.xlabel == "freeze_layers"
            assert chart.series["freeze"][0] == [4.0, 8.0, 12.0, 16.0, 17.0]
            assert set(chart.hlines) == {"real-only", "synth-only"}
            assert app.screen.query_one("#compare-table").row_count == 7
            diff = app.screen.query_one("#compare-diff")  # what the runs' specs differ in
            keys = [str(diff.get_row_at(i)[0]) for i in range(diff.row_count)]
            assert "spec.freeze_layers" in keys and "spec.name" in keys and "spec.kind" not in keys
    asyncio.run(go())


def test_compare_screen_shows_figure_2_and_switches_to_the_linear_probe(tmp_path):
    from tui_fixtures import build_adaptation_workspace

    ws = build_adaptation_workspace(tmp_path / "ws")

    async def go():
        app = app_for(ws)
        async with app.run_test(size=(100, 40)) as pilot:
            app.push_screen(CompareScreen([r["id"] for r in RunStore(ws).list()], "unmet"))
            await wait_until(pilot, lambda: app.screen.data, what="runs loaded")
            chart = app.screen.query_one("#chart-sweep")
            assert chart.xlabel == "train_images" and chart.title.startswith("top-1")
            assert chart.series["adapt-retrieved"] == ([100.0, 200.0], [66.0, 71.0])  # means over 3 seeds
            assert set(chart.hlines) == {"off-the-shelf"}
            assert chart.log_x
            chart.render()
            chart.render()  # again, as any refresh does: plotext logs a log-x figure's data in place
            table = app.screen.query_one("#sweep-table")
            rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
            assert ["adapt-synthetic", "200", "61.0 ± 1.0", "72.0 ± 2.0"] in rows
            await pilot.press("m")
            assert chart.title.startswith("linear-probe")
            assert chart.series["adapt-retrieved"][1] == [82.0, 82.0] and chart.hlines == {"off-the-shelf": 70}
    asyncio.run(go())


def test_compose_screen_validates_inline(fixture_ws):
    async def go():
        app = app_for(fixture_ws)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("c")
            assert isinstance(app.screen, ComposeScreen)
            editor = app.screen.query_one("#compose-editor")
            editor.load_text('[experiment]\nname = "x"\n[runs.a]\nkind = "trian"\n')
            await wait_until(pilot, lambda: app.screen.problems and "trian" in app.screen.problems[0],
                             what="error shown")
            editor.load_text('[experiment]\nname = "x"\n[runs.g]  # the guidance ablation\nkind = "generate"\n'
                             '# FITYMI uses 2.0\n[runs.g.sweep]\nguidance_scale = [1.0, 2.0]\n')
            await wait_until(pilot, lambda: not app.screen.problems, what="valid")
            assert app.screen.query_one("#compose-runs").row_count == 2
            assert "GPU hours" in str(app.screen.query_one("#compose-estimate").render())
            screen = app.screen
            screen.query_one("#compose-runs").focus()
            await wait_until(pilot, lambda: screen.query("#field-steps"), what="form for run g")
            field = screen.query_one("#field-steps")
            field.value = "0"
            field.focus()
            await pilot.press("enter")  # the form writes the TOML; validation marks the field
            await wait_until(pilot, lambda: screen.query_one("#field-steps").has_class("-invalid"), what="invalid")
            assert "steps = 0" in editor.text
            assert "field 'steps'" in screen.query_one("#field-steps").tooltip
            field = screen.query_one("#field-steps")
            field.value = "25"
            field.focus()
            await pilot.press("enter")
            await wait_until(pilot, lambda: not screen.problems, what="valid again")
            assert "steps = 25" in editor.text
            # The form edits keep the user's comments.
            assert "[runs.g]  # the guidance ablation" in editor.text and "# FITYMI uses 2.0" in editor.text
            editor.focus()
            await pilot.press("escape")  # unsaved edits: leaving asks first
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("escape")
            assert app.screen is screen
            await pilot.press("ctrl+s")
            assert list(fixture_ws.specs_dir.glob("*.toml"))
            await pilot.press("escape")  # saved: leaves at once
            assert isinstance(app.screen, RunsScreen)
    asyncio.run(go())


@pytest.mark.parametrize("nvml, rows, notice", [
    (FakeNvml(count=0), 0, "No GPUs found"),
    (FakeNvml(count=1), 1, ""),
    (FakeNvml(count=8), 8, ""),
    (FakeNvml(fail_init=True), 0, "GPU monitoring unavailable"),
    (FakeNvml(count=2, fail_count=True), 0, "GPU is lost"),
])
def test_gpu_panel_with_fake_nvml(fixture_ws, nvml, rows, notice):
    async def go():
        app = create_app(fixture_ws, gpu_monitor=NvmlMonitor(nvml), start_supervisor=False)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("g")
            panel = app.screen.query_one("#gpu-panel")
            await wait_until(pilot, lambda: "RAM" in str(panel.query_one("#gpu-host").render()), what="sample")
            assert panel.display
            assert panel.query_one("#gpu-table").row_count == rows
            assert notice in str(panel.query_one("#gpu-notice").render())
    asyncio.run(go())


def test_runs_on_other_nodes_show_their_job_and_reported_gpu_memory(tmp_path):
    ws = Workspace(tmp_path / "ws").ensure()
    RunStore(ws).create({"name": "far", "kind": "train", "state": "running", "gpu_memory": 2 * 1024**3,
                         "where": {"job": "812", "node": "node3", "state": "RUNNING"}})

    async def go():
        app = app_for(ws)
        async with app.run_test(size=(120, 30)) as pilot:
            runs = app.screen
            await wait_until(pilot, lambda: runs.query_one("#runs").row_count == 1, what="1 row")
            assert str(runs.query_one("#runs").get_row_at(0)[6]) == "812@node3"
            await pilot.press("g")
            panel = runs.query_one("#gpu-panel")
            await wait_until(pilot, lambda: "far on node3: 2.0 GiB" in str(panel.query_one("#gpu-elsewhere").render()),
                             what="the run's own memory report")
    asyncio.run(go())


def test_main_flow_compose_submit_watch_compare_export(tmp_path):
    ws_root = make_workspace(tmp_path, cpu_slots=3)
    import os

    os.environ["FAKE_STEP_S"] = "0.15"
    data = tmp_path / "data"
    preset = (__import__("synthgap_tui.presets", fromlist=["x"]).PRESET_DIR / "mtg-data-reduction.toml").read_text()
    text = preset.replace("/data/imagenet100", str(data))

    async def go():
        app = create_app(Workspace(ws_root), gpu_monitor=NvmlMonitor(FakeNvml(count=0)))
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("c")
            compose = app.screen
            compose.query_one("#compose-editor").load_text(text)
            await wait_until(pilot, lambda: compose.exp is not None and not compose.problems, what="valid preset")
            assert len(compose.exp.runs) == 12
            await pilot.press("ctrl+g")
            await wait_until(pilot, lambda: isinstance(app.screen, RunsScreen), what="back on runs")
            runs = app.screen
            await wait_until(pilot, lambda: runs.query_one("#runs").row_count == 12, what="12 runs listed")
            assert {r["state"] for r in runs.runs.values()} <= {"queued", "starting", "running", "finished"}
            store = RunStore(ws_root)
            await wait_until(pilot, lambda: store.list(state="running", kind="train"), what="a train run running")
            running = store.list(state="running", kind="train")[0]["id"]
            app.open_run(running)
            detail = app.screen
            await wait_until(pilot, lambda: detail.history.progress, what="progress streamed")
            first = detail.history.progress["done"]
            await wait_until(pilot, lambda: detail.history.progress["done"] > first or detail.history.final,
                             what="progress moved")
            assert detail.query_one("#run-progress").progress > 0
            assert detail.query_one("#chart-1").series["top-1"][0]
            await wait_until(pilot, lambda: {r["state"] for r in store.list()} == {"finished"}, timeout=90,
                             what="all finished")
            await pilot.press("escape")
            await pilot.press("slash", *"reduced", "enter")
            await pilot.press("x")
            compare = app.screen
            assert isinstance(compare, CompareScreen)
            await wait_until(pilot, lambda: compare.data, what="compare loaded")
            assert compare.query_one("#chart-sweep").xlabel == "fraction"
            await pilot.press("e")
            # sweep.svg is the last file the export writes.
            await wait_until(pilot, lambda: list((ws_root / "exports").glob("*/sweep.svg")), what="export")
            out = next((ws_root / "exports").glob("*/"))
            names = {p.name for p in out.iterdir()}
            assert {"results.csv", "results.md", "epochs.csv", "curves.png", "curves.svg", "sweep.png",
                    "sweep.svg"} <= names
            assert "reduced@fraction=0.5" in (out / "results.md").read_text()
    try:
        asyncio.run(go())
    finally:
        os.environ.pop("FAKE_STEP_S", None)


def test_a_truncated_index_gets_a_calm_notice_and_a_rebuild(fixture_ws):
    from synthgap_tui.screens.index_problem import IndexProblemScreen

    async def go():
        app = app_for(fixture_ws)
        async with app.run_test(size=(100, 30)) as pilot:
            runs = app.screen
            await wait_until(pilot, lambda: runs.query_one("#runs").row_count == 13, what="13 rows")
            index = fixture_ws.index_path
            index.write_bytes(index.read_bytes()[:200])  # truncated while the app is open
            await wait_until(pilot, lambda: isinstance(app.screen, IndexProblemScreen), what="the notice")
            assert app.is_running and "synthgap db rebuild" in str(app.screen.message)
            await pilot.press("r")
            await wait_until(pilot, lambda: isinstance(app.screen, RunsScreen) and not app.index_notice_shown,
                             what="the app reading the rebuilt index")
            assert len(RunStore(fixture_ws).list()) == 13
            index.write_text("{")  # broken again: the notice comes back once
            await wait_until(pilot, lambda: isinstance(app.screen, IndexProblemScreen), what="the notice again")
            await pilot.press("escape")
            await pilot.pause(2.5)  # the runs screen keeps polling the broken index
            assert isinstance(app.screen, RunsScreen) and app.is_running
            RunStore(fixture_ws).rebuild()  # fixed from another terminal
            await wait_until(pilot, lambda: not app.index_notice_shown, what="the app reading again")
            assert runs.query_one("#runs").row_count == 13
    asyncio.run(go())


def test_palette_commands_rebuild_the_index_and_stop_the_supervisor(fixture_ws):
    async def go():
        app = app_for(fixture_ws)
        async with app.run_test(size=(100, 30)) as pilot:
            titles = [c.title for c in app.get_system_commands(app.screen)]
            assert {"Rebuild the run index", "Stop the supervisor"} <= set(titles)
            fixture_ws.index_path.unlink()
            app.rebuild_index()
            # Not the file's existence: the runs screen's next read creates an empty index at once.
            await wait_until(pilot, lambda: any("index rebuilt from 13" in n.message for n in app._notifications),
                             what="index rebuilt")
            assert len(RunStore(fixture_ws).list()) == 13
            app.stop_supervisor()
            await wait_until(pilot, lambda: any("not running" in n.message for n in app._notifications),
                             what="told the supervisor was not running")
    asyncio.run(go())


def test_the_palette_prunes_the_workspace_as_gc_does(fixture_ws):
    from runners import protocol

    store = RunStore(fixture_ws)
    finished = store.list(state="finished")[0]["id"]
    epoch = fixture_ws.run_dir(finished) / "checkpoints" / "epoch_002.pt"
    epoch.parent.mkdir(exist_ok=True)
    epoch.write_bytes(b"x" * 4096)
    for _ in range(2):
        store.rebuild(keep_backups=3)
    with open(fixture_ws.config_path, "a") as f:
        f.write("\n[store]\nkeep_backups = 1\n")
    oldest = store.backups()[0]
    snapshot = fixture_ws.root / "code" / "0123abcd"
    snapshot.mkdir(parents=True)
    array = fixture_ws.root / "slurm-arrays" / "dead"
    array.mkdir(parents=True)
    protocol.write_json_atomic(array / "members.json", ["removed001"])

    async def go():
        app = app_for(fixture_ws)
        async with app.run_test(size=(100, 30)) as pilot:
            command = {c.title: c for c in app.get_system_commands(app.screen)}["Prune the workspace"]
            command.callback()
            await wait_until(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="asked first")
            assert ("1 checkpoint file(s) of 1 finished run(s) and 1 old index copies and 1 code snapshots no run "
                    "needs and 1 job array folders of removed runs") in app.screen.body
            await pilot.press("y")
            await wait_until(pilot, lambda: any("freed" in n.message for n in app._notifications), what="freed")
            assert not epoch.exists() and not oldest.exists() and not snapshot.exists() and not array.exists()
            assert store.backups() and len(store.list()) == 13
    asyncio.run(go())


def test_the_app_says_when_run_folders_are_missing_from_the_index(fixture_ws):
    fixture_ws.index_path.unlink()  # lost: the app's first read creates an empty one

    async def go():
        app = app_for(fixture_ws)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_until(pilot, lambda: any("13 run folder(s)" in n.message and "Rebuild the run index" in
                                                n.message for n in app._notifications), what="the notice")
    asyncio.run(go())


def test_tags_and_a_note_from_the_app(fixture_ws):
    from synthgap_tui.screens.prompt import PromptScreen

    async def go():
        app = app_for(fixture_ws)
        async with app.run_test(size=(100, 30)) as pilot:
            runs = app.screen
            await wait_until(pilot, lambda: runs.query_one("#runs").row_count == 13, what="13 rows")
            await pilot.press("t")
            assert isinstance(app.screen, PromptScreen)
            await pilot.press(*"+keep", "enter")
            target = runs.selected_run_id()
            await wait_until(pilot, lambda: RunStore(fixture_ws).get(target).get("tags") == ["keep"], what="tagged")
            await pilot.press("n")
            await pilot.press(*"lr too high", "ctrl+s")
            await wait_until(pilot, lambda: RunStore(fixture_ws).get(target).get("note") == "lr too high",
                             what="note saved")
            await pilot.press("slash", *"tag:keep", "enter")
            await wait_until(pilot, lambda: runs.query_one("#runs").row_count == 1, what="filtered by tag")
            app.open_run(target)
            await wait_until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.query("#run-title") and
                             "lr too high" in str(app.screen.query_one("#run-title").render()), what="note shown")
            assert "#keep" in str(app.screen.query_one("#run-title").render())
    asyncio.run(go())


def test_the_header_warns_when_the_workspace_is_low_on_space(fixture_ws):
    (fixture_ws.root / "config.toml").write_text("[store]\nmin_free_gb = 1e9\n")

    async def go():
        app = app_for(fixture_ws)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_until(pilot, lambda: "⚠ only" in app.sub_title, what="the low-space warning")
            assert app.sub_title.startswith(str(fixture_ws.root)) and app.sub_title.endswith(" free")

    asyncio.run(go())


def test_f1_shows_the_keys_of_the_screen_and_hides_them_again(fixture_ws):
    async def go():
        app = app_for(fixture_ws)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            await pilot.press("f1")
            await wait_until(pilot, lambda: bool(app.screen.query("HelpPanel")), what="the key panel")
            await pilot.press("f1")
            await wait_until(pilot, lambda: not app.screen.query("HelpPanel"), what="the key panel to go")

    asyncio.run(go())


def test_footers_fit_80_columns_and_list_enter(fixture_ws):
    from textual.widgets import Footer

    async def go():
        app = app_for(fixture_ws)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            for _ in range(2):  # the runs screen, then a run's
                def laid_out():  # the footer recomposes when bindings change: wait for the last one
                    keys = list(app.screen.query_one(Footer).query("FooterKey"))
                    open("/tmp/dbg.txt", "w").write(app.export_screenshot())
                    return keys and all(k.region.width > 0 for k in keys) and keys

                keys = await wait_until(pilot, laid_out, what="the footer laid out")
                assert all(k.region.right <= 80 for k in keys), [(k.key_display, k.region) for k in keys]
                if _ == 0:
                    assert any(k.key_display == "⏎" for k in keys)
                    await pilot.press("enter")
                    await wait_until(pilot, lambda: type(app.screen).__name__ == "RunScreen", what="the run screen")

    asyncio.run(go())


def test_the_gpu_hour_estimate_says_when_it_has_no_gpu_measurements():
    from synthgap_tui.screens.compose import estimate_hours
    from synthgap_tui.specs import parse_spec

    exp = parse_spec('[experiment]\nname = "e"\n[datasets]\nreal = "/tmp"\n'
                     '[runs.a]\nkind = "train"\narch = "resnet18"\ntrain = "real"\neval = "real"\nepochs = 10\n')
    cpu = {"kind": "train", "started": 1.0, "ended": 101.0, "gpus": [],
           "summary": {"epochs": 1, "config": {"arch": "resnet18"}}}
    gpu = {**cpu, "ended": 11.0, "gpus": [0]}
    assert estimate_hours(exp, [cpu]).startswith("no GPU measurements yet: ≈ 0.28 hours")
    assert estimate_hours(exp, [cpu, gpu]).startswith("≈ 0.03 GPU hours") and "1 finished GPU runs" in \
        estimate_hours(exp, [cpu, gpu])
    assert "no finished runs" in estimate_hours(exp, [])


def test_dialogs_are_centred(fixture_ws):
    async def go():
        app = app_for(fixture_ws)
        async with app.run_test(size=(100, 30)) as pilot:
            runs = app.screen
            await wait_until(pilot, lambda: runs.query_one("#runs").row_count == 13, what="13 rows")
            for key in ("t", "R"):  # a prompt and a confirmation
                await pilot.press(key)
                await wait_until(pilot, lambda: app.screen is not runs, what="the dialog")
                await pilot.pause()
                box = app.screen.query_one(".confirm").region
                assert abs(box.x - (100 - box.right)) <= 1 and abs(box.y - (30 - box.bottom)) <= 1, box
                await pilot.press("escape")
                await wait_until(pilot, lambda: app.screen is runs, what="the dialog to close")

    asyncio.run(go())


def test_the_epoch_chart_opens_on_top1_or_loss_and_one_point_gets_room():
    from synthgap_tui.screens.run_detail import default_epoch_field
    from synthgap_tui.widgets.charts import padded_limits

    epochs = [{"epoch": e, "stage": 0, "images_per_s": 10.0 + e, "top1": 50.0 + e} for e in range(3)]
    assert default_epoch_field(epochs, ["stage", "images_per_s", "top1"]) == "top1"
    assert default_epoch_field(epochs, ["stage", "images_per_s"]) == "images_per_s"  # not the constant stage
    assert padded_limits([("top1", [0.0], [61.0])]) == ((-1.0, 1.0), (61.0 - 3.05, 61.0 + 3.05))
    assert padded_limits([("top1", [0.0, 1.0], [60.0, 61.0])]) is None


def test_readme_s_key_table_is_the_bindings():
    from synthgap_tui import keyref, readme

    text = readme.README.read_text()
    assert readme.section(text, keyref.BEGIN, keyref.END) == keyref.markdown(), \
        "README's key table is stale: python -m synthgap_tui.keyref --write"


def test_the_runs_table_follows_other_writers_changes_in_place(tmp_path):
    """The screen reads only what changed: an update, a new run and a removal made by
    another process's store all show, and a large index is drawn before it is read whole."""
    from synthgap_tui.screens import runs as runs_screen

    ws = Workspace(tmp_path / "ws").ensure()
    store = RunStore(ws)
    ids = store.create_many([{"name": f"r{i:03d}", "kind": "train", "state": "finished", "experiment": "e"}
                             for i in range(runs_screen.PREVIEW_ROWS + 50)])

    async def go():
        app = app_for(ws)
        async with app.run_test(size=(100, 30)) as pilot:
            screen = app.screen
            table = screen.query_one("#runs")
            await wait_until(pilot, lambda: not screen.partial and table.row_count == len(ids), what="every run")
            assert str(table.get_row_at(0)[0]) == "r000"
            other = RunStore(ws)
            other.update(ids[0], state="failed")
            new = other.create({"name": "r-new", "kind": "train", "state": "queued", "experiment": "e"})
            other.delete_many([ids[1]])
            await wait_until(pilot, lambda: table.row_count == len(ids) and table.rows[-1] == new, what="changes")
            assert str(table.get_row_at(0)[1]) == "failed" and ids[1] not in table.rows
            await pilot.press("slash", *"state:failed", "enter")
            await wait_until(pilot, lambda: table.rows == [ids[0]], what="filtered")

    asyncio.run(go())


def test_a_large_index_is_drawn_from_its_first_rows_before_it_is_read_whole(tmp_path, monkeypatch):
    from synthgap_tui.screens import runs as runs_screen
    from synthgap_tui.store import RunStore as Store

    ws = Workspace(tmp_path / "ws").ensure()
    Store(ws).create_many([{"name": f"r{i:03d}", "state": "finished", "experiment": "e"}
                           for i in range(runs_screen.PREVIEW_ROWS + 50)])
    release = __import__("threading").Event()
    real_changes = Store.changes

    def slow_changes(self, since):  # reading the whole index takes long: the preview shows meanwhile
        release.wait(30)
        return real_changes(self, since)

    monkeypatch.setattr(Store, "changes", slow_changes)

    async def go():
        app = app_for(ws)
        async with app.run_test(size=(100, 30)) as pilot:
            screen = app.screen
            table = screen.query_one("#runs")
            await wait_until(pilot, lambda: table.row_count == runs_screen.PREVIEW_ROWS, what="the first rows")
            assert screen.partial and "reading 250 runs" in str(screen.query_one("#runs-summary").render())
            release.set()
            await wait_until(pilot, lambda: table.row_count == runs_screen.PREVIEW_ROWS + 50, what="every run")

    asyncio.run(go())


def test_the_run_screen_shows_the_scheduler_s_accounting_once(tmp_path, monkeypatch):
    from runners import protocol
    from synthgap_tui import launchers

    ws = Workspace(tmp_path / "ws").ensure()
    run_id = RunStore(ws).create({"name": "far", "kind": "train", "state": "finished", "launcher": "slurm"})
    ws.run_dir(run_id).mkdir(parents=True)
    protocol.write_json_atomic(ws.run_dir(run_id) / protocol.STATUS_FILE,
                               {"state": "finished", "launcher": "slurm", "handle": {"job_id": "812_3"}})
    asked = []
    slurm = launchers.get("slurm")
    monkeypatch.setattr(slurm, "usage", lambda handle: asked.append(handle["job_id"]) or
                        "Slurm job 812_3 (COMPLETED): 0:10:00 elapsed, CPU efficiency 75%")

    async def go():
        app = app_for(ws)
        async with app.run_test(size=(120, 30)) as pilot:
            app.open_run(run_id)
            await wait_until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.query("#run-title") and
                             "CPU efficiency 75%" in str(app.screen.query_one("#run-title").render()),
                             what="the job's accounting")
            time.sleep(0.01)
            protocol.write_json_atomic(ws.run_dir(run_id) / protocol.STATUS_FILE,  # re-read, unchanged job
                                       {"state": "finished", "launcher": "slurm", "handle": {"job_id": "812_3"},
                                        "where": {"node": "n1"}})
            await pilot.pause(1.5)  # the screen polls its files: accounting is asked once, not every read
            assert asked == ["812_3"]

    asyncio.run(go())


def test_the_log_tab_shows_the_output_of_the_run_s_slurm_job(tmp_path, monkeypatch):
    """An array task's output is in its array's folder, named by its job id; the screen
    finds it once the job has written it, as `logs --job` does."""
    from runners import protocol
    from synthgap_tui import launchers

    monkeypatch.setattr(launchers.get("slurm"), "usage", lambda handle: None)
    monkeypatch.setattr("synthgap_tui.screens.run_detail.JOB_LOOKUP_S", 0.2)
    ws = Workspace(tmp_path / "ws").ensure()
    run_id = RunStore(ws).create({"name": "far", "kind": "train", "state": "running", "launcher": "slurm"})
    ws.run_dir(run_id).mkdir(parents=True)
    folder = ws.root / "slurm-arrays" / "k"
    folder.mkdir(parents=True)
    (folder / "812_2_0_log.out").write_text("another task's output\n")
    protocol.write_json_atomic(ws.run_dir(run_id) / protocol.STATUS_FILE,
                               {"state": "running", "launcher": "slurm",
                                "handle": {"job_id": "812_3", "slurm_folder": str(folder)}})
    (ws.run_dir(run_id) / protocol.STDOUT_FILE).write_text("epoch 1: loss 0.9\n")

    async def go():
        app = app_for(ws)
        async with app.run_test(size=(120, 30)) as pilot:
            app.open_run(run_id)
            await wait_until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.query("#run-log"),
                             what="the run screen")
            log = app.screen.query_one("#run-log")
            await wait_until(pilot, lambda: "epoch 1: loss 0.9" in log.lines, what="stdout.log")
            assert not any("own output" in line for line in log.lines)  # the task has not written yet
            (folder / "812_3_0_log.out").write_text("submitit INFO: starting\nslurmstepd: error: oom-kill\n")
            await wait_until(pilot, lambda: "slurmstepd: error: oom-kill" in log.lines, what="the job's output")
            assert "── the job's own output (812_3_0_log.out) ──" in log.lines
            assert "epoch 1: loss 0.9" in log.lines and "another task's output" not in log.lines

    asyncio.run(go())


def test_the_palette_retries_the_failed_runs_of_the_experiment_under_the_cursor(fixture_ws, monkeypatch):
    async def go():
        app = app_for(fixture_ws)
        async with app.run_test(size=(100, 30)) as pilot:
            runs = app.screen
            await wait_until(pilot, lambda: runs.query_one("#runs").row_count == 13, what="13 rows")
            assert runs.runs[runs.selected_run_id()]["experiment"] == "data reduction"
            commands = {c.title: c for c in app.get_system_commands(runs)}
            command = commands["Retry the failed runs of data reduction"]
            asked = []
            monkeypatch.setattr(app, "confirm_lifecycle", lambda action, ids: asked.append((action, ids)))
            command.callback()
            failed = [r["id"] for r in RunStore(fixture_ws).list(experiment="data reduction", state="failed")]
            assert asked == [("retry", failed)] and failed

    asyncio.run(go())


def test_an_older_workspace_s_json_index_is_moved_in_and_the_app_says_so(tmp_path):
    import json as _json

    from synthgap_tui.workspace import new_run_id

    ws = Workspace(tmp_path / "ws").ensure()
    run_id = new_run_id()
    (ws.root / "runs.json").write_text(_json.dumps({"meta": {"schema": 1, "token": "x"}, "runs": {
        str(int(run_id, 36)): {"id": run_id, "name": "old", "state": "finished", "created": 1.0}}}))

    async def go():
        app = app_for(ws)
        async with app.run_test(size=(100, 30)) as pilot:
            await wait_until(pilot, lambda: app.screen.query_one("#runs").row_count == 1, what="the old run")
            await wait_until(pilot, lambda: any("Moved the run index (1 runs)" in n.message
                                                for n in app._notifications), what="the message")

    asyncio.run(go())


def test_a_running_run_s_clock_is_repainted_every_second_and_only_its_row(tmp_path):
    ws = Workspace(tmp_path / "ws").ensure()
    store = RunStore(ws)
    store.create_many([{"name": f"done{i}", "state": "finished"} for i in range(5)])
    live = store.create({"name": "live", "state": "running", "started": time.time() - 5})

    async def go():
        app = app_for(ws)
        async with app.run_test(size=(100, 30)) as pilot:
            table = app.screen.query_one("#runs")
            await wait_until(pilot, lambda: table.row_count == 6, what="6 rows")
            repainted = []
            table.refresh_line = lambda y: repainted.append(y)
            await pilot.pause(2.5)
            assert repainted and set(repainted) == {1 + table.rows.index(live)}  # below the header line

    asyncio.run(go())
