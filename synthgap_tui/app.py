"""The Textual app. ``create_app`` is the one factory the CLI and the tests use."""

from __future__ import annotations

from textual.app import App

from synthgap_tui.gpu import NvmlMonitor
from synthgap_tui.screens.runs import RunsScreen
from synthgap_tui.store import RunStore
from synthgap_tui.workspace import Workspace


class SynthGapApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "SynthGap"

    def __init__(self, workspace: Workspace, gpu_monitor: NvmlMonitor | None = None) -> None:
        super().__init__()
        self.workspace = workspace.ensure()
        self.store = RunStore(workspace)
        self.gpu_monitor = gpu_monitor or NvmlMonitor()
        self.sub_title = str(workspace.root)

    def on_mount(self) -> None:
        self.push_screen(RunsScreen())


def create_app(workspace: Workspace, gpu_monitor: NvmlMonitor | None = None) -> SynthGapApp:
    return SynthGapApp(workspace, gpu_monitor=gpu_monitor)
