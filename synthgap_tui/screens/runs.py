"""The home screen: every run of the workspace, filtered as you type, updated in place."""

from __future__ import annotations

import time

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static

from synthgap_tui import formatting as fm
from runners.protocol import ACTIVE_STATES
from synthgap_tui.formatting import STATE_STYLE
from synthgap_tui.runfilter import FilterError, RunFilter
from synthgap_tui.widgets.gpu_panel import GpuPanel
from synthgap_tui.widgets.runs_table import RunsTable
from synthgap_tui.store import creation_order

COLUMNS = (
    # key, title, width, cell, sort key. Fixed widths: DataTable then need not
    # measure every cell of thousands of rows. The first five fit in 80 columns.
    ("name", "name", 30, lambda r, now: Text(r.get("name", r["id"])), lambda r: r.get("name", "")),
    ("state", "state", 9, lambda r, now: Text(r["state"], style=STATE_STYLE.get(r["state"], "")),
     lambda r: r["state"]),
    ("progress", "prog", 4, lambda r, now: fm.fmt_progress(r), lambda r: r.get("progress") or 0),
    ("top1", "top-1", 9, lambda r, now: fm.fmt_top1(r), lambda r: fm.top1_of(r) or -1),
    ("kind", "kind", 8, lambda r, now: r.get("kind", "-"), lambda r: r.get("kind", "")),
    ("experiment", "experiment", 16, lambda r, now: Text(r.get("experiment", "-")), lambda r: r.get("experiment", "")),
    ("gpu", "where", 10, lambda r, now: fm.fmt_gpus(r), lambda r: fm.fmt_gpus(r)),
    ("started", "started", 11, lambda r, now: fm.fmt_time(r.get("started")), lambda r: r.get("started") or 0),
    ("duration", "time", 6, lambda r, now: fm.fmt_duration(fm.run_duration(r, now)),
     lambda r: fm.run_duration(r) or 0),
)
# Shown on demand (u): sizing every run folder is disk work, done in a worker.
DISK_COLUMN = ("disk", "disk", 9, lambda r, now: fm.fmt_bytes(r.get("disk_bytes")), lambda r: r.get("disk_bytes") or 0)


class RunsLoaded(Message):
    """The index's runs, or None when nothing changed since the last load."""

    def __init__(self, runs: list[dict] | None) -> None:
        super().__init__()
        self.runs = runs


class DiskUseMeasured(Message):
    def __init__(self, sizes: dict[str, int]) -> None:
        super().__init__()
        self.sizes = sizes


class RunsScreen(Screen):
    BINDINGS = [
        # The footer fits 80 columns with the everyday keys; F1 lists every one.
        Binding("slash", "focus_filter", "Filter"),
        Binding("escape", "clear_filter", "Clear", show=False),
        Binding("s", "cycle_sort", "Sort", show=False),
        Binding("space", "toggle_mark", "Mark", show=False),
        Binding("c", "app.compose_experiment", "Compose"),
        Binding("x", "app.compare_selected", "Compare"),
        Binding("g", "app.toggle_gpu_panel", "GPUs", show=False),
        Binding("k", "cancel_run", "Cancel"),
        Binding("r", "resume_run", "Resume", show=False),
        Binding("R", "retry_run", "Retry", show=False),
        Binding("t", "tag_runs", "Tag", show=False),
        Binding("n", "note_run", "Note", show=False),
        Binding("a", "archive_runs", "Archive", show=False),
        Binding("delete", "remove_runs", "Delete", show=False),
        Binding("u", "toggle_disk_use", "Disk use", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.runs: dict[str, dict] = {}
        self.shown: dict[str, list] = {}  # cells on screen, per run id
        self._last_loaded: list[dict] | None = None
        self.marked: set[str] = set()
        self.filter = RunFilter()
        self.filter_error: str | None = None
        self.columns = list(COLUMNS)
        self.disk_use: dict[str, int] | None = None  # run id -> bytes, while the disk column shows
        self.sort_index = [c[0] for c in COLUMNS].index("experiment")  # runs of one experiment stay together
        self.sort_reverse = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="filter: words, state:running, kind:train, tag:baseline, freeze_layers>=8, top1>70",
                    id="filter")
        yield RunsTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield GpuPanel(id="gpu-panel")
        yield Static("", id="runs-summary")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for key, title, width, *_ in COLUMNS:
            table.add_column(title, key=key, width=width)
        table.focus()
        self.refresh_runs()
        self.set_interval(1.0, self.refresh_runs)

    def refresh_runs(self) -> None:
        if self.is_active:  # a screen on top (run, compare) has the CPU to itself
            self.load_runs()

    @work(thread=True, exclusive=True, group="runs-load")
    def load_runs(self) -> None:
        # Reading the index parses JSON only when the file changed; an unchanged
        # list only needs the clocks of active runs to tick.
        runs = self.app.store_call(self.app.store.list)
        if runs is None:
            return
        self.post_message(RunsLoaded(runs if runs != self._last_loaded else None))
        self._last_loaded = runs

    def on_runs_loaded(self, message: RunsLoaded) -> None:
        if message.runs is None:
            self.render_table(only_active=True)
            return
        self.runs = {r["id"]: r for r in message.runs}
        self.render_table()

    def on_screen_resume(self) -> None:
        self.load_runs()

    def visible_runs(self) -> list[dict]:
        key = self.columns[self.sort_index][4]
        runs = [r for r in self.runs.values() if self.filter.matches(r)]
        runs.sort(key=creation_order)
        runs.sort(key=key, reverse=self.sort_reverse)
        return runs

    def render_table(self, only_active: bool = False) -> None:
        table = self.query_one(DataTable)
        now = time.time()
        if only_active:
            for r in self.runs.values():
                if r["state"] in ACTIVE_STATES and r["id"] in self.shown:
                    self._update_row(table, r, now)
            return
        wanted = self.visible_runs()
        order = [r["id"] for r in wanted]
        current = [str(k.value) for k in table.rows]
        if current != order:
            cursor_key = current[table.cursor_row] if current and table.cursor_row < len(current) else None
            table.clear()
            self.shown = {}
            for r in wanted:
                cells = self._cells(r, now)
                self.shown[r["id"]] = cells
                table.add_row(*cells, key=r["id"])
            if cursor_key in order:
                table.move_cursor(row=order.index(cursor_key))
        else:
            for r in wanted:
                self._update_row(table, r, now)
        states: dict[str, int] = {}
        for r in self.runs.values():
            states[r["state"]] = states.get(r["state"], 0) + 1
        counts = "  ".join(f"{n} {s}" for s, n in sorted(states.items()))
        marked = f"  |  {len(self.marked)} marked" if self.marked else ""
        empty = "" if self.runs else "No runs yet: press c to compose an experiment, or run `synthgap demo`."
        problem = f"filter: {self.filter_error}" if self.filter_error else ""
        unknown = self.filter.unknown_keys(list(self.runs.values())) if self.filter.expressions and not wanted else []
        problem = problem or (f"no run has a field {', '.join(unknown)}" if unknown else "")
        self.query_one("#runs-summary", Static).update(Text(
            empty or problem or f"{len(wanted)} of {len(self.runs)} runs  |  {counts}{marked}",
            style="bold red" if problem else ""))

    def _update_row(self, table: DataTable, run: dict, now: float) -> None:
        """Update only the cells that changed since the last render."""
        cells = self._cells(run, now)
        old = self.shown.get(run["id"])
        for i, (key, cell) in enumerate(zip((c[0] for c in self.columns), cells)):
            if old is None or old[i] != cell:
                table.update_cell(run["id"], key, cell)
        self.shown[run["id"]] = cells

    def _cells(self, run: dict, now: float) -> list:
        # Names are Text, not str: "freeze@freeze_layers=3" is not markup.
        if self.disk_use is not None:
            run = {**run, "disk_bytes": self.disk_use.get(run["id"])}
        cells = [fn(run, now) for _, _, _, fn, _ in self.columns]
        if run["id"] in self.marked:
            cells[0] = Text("● " + cells[0].plain, style="bold")
        return cells

    @on(DataTable.RowSelected, "#runs")
    def row_selected(self, event: DataTable.RowSelected) -> None:
        self.app.open_run(str(event.row_key.value))

    def toggle_gpu_panel(self) -> None:
        panel = self.query_one(GpuPanel)
        panel.display = not panel.display

    def targets(self) -> list[str]:
        current = self.selected_run_id()
        return sorted(self.marked) or ([current] if current else [])

    def action_cancel_run(self) -> None:
        self.app.confirm_lifecycle("cancel", self.targets())

    def action_resume_run(self) -> None:
        self.app.confirm_lifecycle("resume", self.targets())

    def action_retry_run(self) -> None:
        self.app.confirm_lifecycle("retry", self.targets())

    def action_archive_runs(self) -> None:
        targets = self.targets()
        # All archived already: the key brings them back.
        self.app.archive_runs(targets, archived=not all(self.runs.get(t, {}).get("archived") for t in targets))

    def action_remove_runs(self) -> None:
        self.app.remove_runs(self.targets())

    def action_toggle_disk_use(self) -> None:
        if self.disk_use is None:
            self.notify("measuring run folders…", timeout=1.5)
            self.measure_disk_use()
            return
        self.disk_use = None
        self.columns = list(COLUMNS)
        self.sort_index = min(self.sort_index, len(COLUMNS) - 1)
        self.query_one(DataTable).remove_column("disk")
        self._redraw()

    @work(thread=True, exclusive=True, group="disk-use")
    def measure_disk_use(self) -> None:
        from synthgap_tui.cleanup import run_disk_use

        self.post_message(DiskUseMeasured(run_disk_use(self.app.store, list(self.runs))))

    def on_disk_use_measured(self, message: DiskUseMeasured) -> None:
        if self.disk_use is None:
            self.query_one(DataTable).add_column(DISK_COLUMN[1], key=DISK_COLUMN[0], width=DISK_COLUMN[2])
            self.columns = [*COLUMNS, DISK_COLUMN]
        self.disk_use = message.sizes
        total = sum(message.sizes.values())
        self.notify(f"{fm.fmt_bytes(total)} in {len(message.sizes)} run folders (u hides the column)", timeout=4)
        self._redraw()

    def _redraw(self) -> None:
        """Rebuild every row (columns changed)."""
        self.query_one(DataTable).clear()
        self.shown = {}
        self.render_table()

    def action_tag_runs(self) -> None:
        self.app.annotate("tag", self.targets())

    def action_note_run(self) -> None:
        targets = self.targets()
        note = (self.runs.get(targets[0]) or {}).get("note") or "" if len(targets) == 1 else ""
        self.app.annotate("note", targets, note)

    @on(Input.Changed, "#filter")
    def filter_changed(self, event: Input.Changed) -> None:
        # A half-typed expression ("top1>") keeps the last good filter and says why.
        try:
            self.filter, self.filter_error = RunFilter.parse(event.value), None
        except FilterError as e:
            self.filter_error = str(e)
        event.input.set_class(self.filter_error is not None, "-invalid")
        self.render_table()

    @on(Input.Submitted, "#filter")
    def filter_submitted(self) -> None:
        self.query_one(DataTable).focus()

    @on(DataTable.HeaderSelected)
    def header_selected(self, event: DataTable.HeaderSelected) -> None:
        index = [c[0] for c in self.columns].index(str(event.column_key.value))
        self.sort_reverse = not self.sort_reverse if index == self.sort_index else False
        self.sort_index = index
        self.render_table()

    def selected_run_id(self) -> str | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def action_focus_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_clear_filter(self) -> None:
        self.query_one("#filter", Input).value = ""
        self.query_one(DataTable).focus()

    def action_cycle_sort(self) -> None:
        self.sort_index = (self.sort_index + 1) % len(self.columns)
        self.sort_reverse = False
        self.notify(f"sorted by {self.columns[self.sort_index][1]}", timeout=1.5)
        self.render_table()

    def action_toggle_mark(self) -> None:
        run_id = self.selected_run_id()
        if run_id:
            self.marked.symmetric_difference_update({run_id})
            self.render_table()
