"""Snapshot tests of the main screens on fixture data (pytest-textual-snapshot).

Update after an intended change with: pytest tests/test_snapshots.py --snapshot-update
"""

import os
import time

import pytest

from fakes import FakeNvml
from synthgap_tui.app import create_app
from synthgap_tui.gpu import NvmlMonitor
from synthgap_tui.screens.compare import CompareScreen
from tui_fixtures import build_workspace

SIZE = (100, 30)


@pytest.fixture(autouse=True)
def utc():
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        os.environ.pop("TZ")
    else:
        os.environ["TZ"] = old
    time.tzset()


@pytest.fixture
def app(tmp_path):
    ws = build_workspace(tmp_path / "ws")
    app = create_app(ws, gpu_monitor=NvmlMonitor(FakeNvml(count=0)), start_supervisor=False)
    app.sub_title = "~/.synthgap"  # the temp path differs between runs
    return app


async def settle(pilot, predicate=lambda: True, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline and not predicate():
        await pilot.pause(0.1)
    await pilot.pause(0.3)


def test_runs_screen(snap_compare, app):
    async def run_before(pilot):
        await settle(pilot, lambda: pilot.app.screen.query_one("#runs").row_count == 13)
    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_run_screen(snap_compare, app):
    async def run_before(pilot):
        run = next(r for r in pilot.app.store.list() if r["name"] == "real-only")
        pilot.app.open_run(run["id"])
        await settle(pilot, lambda: len(getattr(pilot.app.screen, "history").epochs) == 6)
    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_compare_screen(snap_compare, app):
    async def run_before(pilot):
        ids = [r["id"] for r in pilot.app.store.list(experiment="data reduction")]
        pilot.app.push_screen(CompareScreen(ids, "data reduction"))
        await settle(pilot, lambda: getattr(pilot.app.screen, "data", None))
    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_compose_screen(snap_compare, app):
    async def run_before(pilot):
        await pilot.press("c")
        editor = pilot.app.screen.query_one("#compose-editor")
        editor.cursor_blink = False  # a blinking cursor would make the picture depend on timing
        editor.load_text(
            '[experiment]\nname = "guidance"\n[runs.g]\nkind = "generate"\nmodel = "CompVis/stable-diffusion-v1-4"\n'
            '[runs.g.sweep]\nguidance_scale = [1.0, 2.0, 4.0]\n')
        await settle(pilot, lambda: pilot.app.screen.exp is not None)
    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
