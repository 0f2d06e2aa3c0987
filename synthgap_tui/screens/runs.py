"""The home screen: every run of the workspace, filtered as you type, updated in place."""

from __future__ import annotations

import time
from collections import Counter
from itertools import islice

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Static

from synthgap_tui import formatting as fm
from runners.protocol import ACTIVE_STATES
from synthgap_tui.formatting import STATE_STYLE
from synthgap_tui.runfilter import FilterError, RunFilter, haystack
from synthgap_tui.widgets.gpu_panel import GpuPanel
from synthgap_tui.widgets.runs_table import RunsTable
from synthgap_tui.store import Changes

COLUMNS = (
    # key, title, width, cell, sort key. The first five fit in 80 columns.
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


PREVIEW_ROWS = 200  # drawn from the first rows read, while the rest of a large index loads


class RunsRead(Message):
    """Runs from the index: all of them (``full``), the first screenful (``preview``),
    or only those changed since the last read."""

    def __init__(self, changes: Changes, preview: bool = False, total: int = 0,
                 hay: dict[str, str] | None = None) -> None:
        super().__init__()
        self.changes, self.hay = changes, hay or {}
        self.preview = preview
        self.total = total


class ViewReady(Message):
    """The run ids that pass the filter, in the table's order."""

    def __init__(self, order: list[str], generation: int) -> None:
        super().__init__()
        self.order = order
        self.generation = generation


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
        self.runs: dict[str, dict] = {}  # every run of the index, in creation order
        self.partial = True  # until the whole index has been read once
        self.states: dict[str, int] = {}
        self.active: set[str] = set()  # runs whose clocks tick (starting, running)
        self.marked: set[str] = set()
        self.filter = RunFilter()
        self.filter_error: str | None = None
        self.columns = list(COLUMNS)
        self.disk_use: dict[str, int] | None = None  # run id -> bytes, while the disk column shows
        self.sort_index = [c[0] for c in COLUMNS].index("experiment")  # runs of one experiment stay together
        self.sort_reverse = False
        self._generation = 0  # of the view being computed; older results are dropped
        self._hay: dict[str, str] = {}  # run id -> its haystack, kept between filters
        self._reading = False  # a read of the index is under way
        self._read_rev: int | None = None  # the revision the last read reached (the reading thread's)

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="filter: words, state:running, kind:train, tag:baseline, freeze_layers>=8, top1>70",
                    id="filter")
        yield RunsTable(self._cells, id="runs")
        yield GpuPanel(id="gpu-panel")
        yield Static("", id="runs-summary")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(RunsTable)
        table.set_columns([(key, title, width) for key, title, width, *_ in self.columns])
        table.focus()
        self.refresh_runs()
        self.set_interval(1.0, self.refresh_runs)

    def refresh_runs(self) -> None:
        if self.is_active:  # a screen on top (run, compare) has the CPU to itself
            self.load_runs()
            self._tick_clocks()

    def load_runs(self) -> None:
        # One read at a time: a thread worker cannot be cancelled, and a read started
        # while another is under way would read the whole index again.
        if not self._reading:
            self._reading = True
            self._read_index()

    @work(thread=True, group="runs-load")
    def _read_index(self) -> None:
        try:
            self._read_changes()
        finally:
            self._reading = False

    def _read_changes(self) -> None:
        store = self.app.store
        if self._read_rev is None and not self.runs:
            # A large index takes a while to read whole: the first screenful comes first.
            first = self.app.store_call(lambda: list(islice(filter(self.filter.matches,
                                                                    store.iterate(by_experiment=True)), PREVIEW_ROWS)))
            total = self.app.store_call(store.count, 0)
            if first is not None and total > len(first):
                self.post_message(RunsRead(Changes(-1, True, first, []), preview=True, total=total))
        changes = self.app.store_call(lambda: store.changes(self._read_rev))
        if changes is not None:
            self._read_rev = changes.rev
            # Words are looked for in every run at each keystroke: join them here, once.
            self.post_message(RunsRead(changes, hay={r["id"]: haystack(r) for r in changes.runs}))

    def on_runs_read(self, message: RunsRead) -> None:
        changes, table = message.changes, self.query_one(RunsTable)
        if message.preview:
            if self.partial and not self.runs:
                self.runs = {r["id"]: r for r in changes.runs}
                table.set_rows(list(self.runs))
                self._summarize(total=message.total)
            return
        if changes.full:
            if self.partial and (moved := self.app.store.migration_message()):  # an older workspace, at first
                self.notify(moved, timeout=10)
            self.runs, self._hay = {r["id"]: r for r in changes.runs}, message.hay
            self.states = Counter(r["state"] for r in self.runs.values())
            self.active = {i for i, r in self.runs.items() if r["state"] in ACTIVE_STATES}
            self.partial = False
            self.update_view()
            return
        if not changes.runs and not changes.removed:
            return
        key = self.columns[self.sort_index][4]
        reorder = any(map(table.shows, changes.removed))
        self._hay.update(message.hay)
        for run_id in changes.removed:
            self._hay.pop(run_id, None)
            self.active.discard(run_id)
            old = self.runs.pop(run_id, None)
            if old:
                self.states[old["state"]] -= 1
        for run in changes.runs:
            old = self.runs.get(run["id"])
            if old is not None:
                self.states[old["state"]] -= 1
            self.runs[run["id"]] = run
            self.states[run["state"]] = self.states.get(run["state"], 0) + 1
            if run["state"] in ACTIVE_STATES:
                self.active.add(run["id"])
            else:
                self.active.discard(run["id"])
            # Only a run that enters or leaves the view, or moves in it, changes the order.
            shown = table.shows(run["id"])
            reorder = reorder or shown != self.filter.matches(run) or (shown and key(old) != key(run))
        if reorder:
            self.update_view()
        else:
            table.refresh_runs(r["id"] for r in changes.runs)
            self._summarize()

    def on_screen_resume(self) -> None:
        self.load_runs()

    def update_view(self) -> None:
        """Filter and sort every run off the UI thread; the table shows the result."""
        self._generation += 1
        key = self.columns[self.sort_index][4]
        self._compute_view(list(self.runs.values()), self.filter, key, self.sort_reverse, self._generation)

    # A description of its own: by default Textual writes the repr of every argument (all runs).
    @work(thread=True, exclusive=True, group="runs-view", description="filter and sort the runs")
    def _compute_view(self, runs: list[dict], run_filter: RunFilter, key, reverse: bool, generation: int) -> None:
        hay = self._hay
        if run_filter.words:  # each run's words are joined once, not at every keystroke
            wanted = [r for r in runs if run_filter.matches(r, hay.get(r["id"]) or
                                                             hay.setdefault(r["id"], haystack(r)))]
        else:
            wanted = [r for r in runs if run_filter.matches(r)]  # creation order: ties keep it
        wanted.sort(key=key, reverse=reverse)
        self.post_message(ViewReady([r["id"] for r in wanted], generation))

    def on_view_ready(self, message: ViewReady) -> None:
        if message.generation == self._generation:
            self.query_one(RunsTable).set_rows(message.order)
            self._summarize()

    def _tick_clocks(self) -> None:
        """Active runs' durations move every second: repaint those on screen."""
        self.query_one(RunsTable).refresh_runs(self.active)

    def _summarize(self, total: int | None = None) -> None:
        table = self.query_one(RunsTable)
        if total is not None:
            self.query_one("#runs-summary", Static).update(f"reading {total:,} runs…")
            return
        counts = "  ".join(f"{n} {s}" for s, n in sorted(self.states.items()) if n)
        marked = f"  |  {len(self.marked)} marked" if self.marked else ""
        empty = "" if self.runs else "No runs yet: press c to compose an experiment, or run `synthgap demo`."
        problem = f"filter: {self.filter_error}" if self.filter_error else ""
        if self.filter.expressions and not table.row_count and not problem:
            unknown = self.filter.unknown_keys(list(self.runs.values()))
            problem = f"no run has a field {', '.join(unknown)}" if unknown else ""
        self.query_one("#runs-summary", Static).update(Text(
            empty or problem or f"{table.row_count} of {len(self.runs)} runs  |  {counts}{marked}",
            style="bold red" if problem else ""))

    def _cells(self, run_id: str) -> list:
        # Names are Text, not str: "freeze@freeze_layers=3" is not markup.
        run = self.runs.get(run_id) or {"id": run_id, "state": "?"}
        if self.disk_use is not None:
            run = {**run, "disk_bytes": self.disk_use.get(run_id)}
        now = time.time()
        cells = [fn(run, now) for _, _, _, fn, _ in self.columns]
        if run_id in self.marked:
            cells[0] = Text("● " + cells[0].plain, style="bold")
        return cells

    @on(RunsTable.RowSelected, "#runs")
    def row_selected(self, event: RunsTable.RowSelected) -> None:
        self.app.open_run(event.run_id)

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

    def failed_of_experiment(self) -> tuple[str, list[str]] | None:
        """The experiment under the cursor and its failed runs (a sweep's failed members), if any."""
        experiment = (self.runs.get(self.selected_run_id() or "") or {}).get("experiment")
        failed = [i for i, r in self.runs.items() if r.get("experiment") == experiment and r["state"] == "failed"]
        return (experiment, failed) if experiment and failed else None

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
        self._set_columns(list(COLUMNS))

    @work(thread=True, exclusive=True, group="disk-use")
    def measure_disk_use(self) -> None:
        from synthgap_tui.cleanup import run_disk_use

        self.post_message(DiskUseMeasured(run_disk_use(self.app.store, list(self.runs))))

    def on_disk_use_measured(self, message: DiskUseMeasured) -> None:
        self.disk_use = message.sizes
        total = sum(message.sizes.values())
        self.notify(f"{fm.fmt_bytes(total)} in {len(message.sizes)} run folders (u hides the column)", timeout=4)
        self._set_columns([*COLUMNS, DISK_COLUMN])

    def _set_columns(self, columns: list) -> None:
        self.columns = columns
        self.sort_index = min(self.sort_index, len(columns) - 1)
        self.query_one(RunsTable).set_columns([(key, title, width) for key, title, width, *_ in columns])
        self.update_view()

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
        self.update_view()
        self._summarize()

    @on(Input.Submitted, "#filter")
    def filter_submitted(self) -> None:
        self.query_one(RunsTable).focus()

    @on(RunsTable.HeaderSelected)
    def header_selected(self, event: RunsTable.HeaderSelected) -> None:
        index = [c[0] for c in self.columns].index(event.column_key)
        self.sort_reverse = not self.sort_reverse if index == self.sort_index else False
        self.sort_index = index
        self.update_view()

    def selected_run_id(self) -> str | None:
        return self.query_one(RunsTable).cursor_run_id()

    def action_focus_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_clear_filter(self) -> None:
        self.query_one("#filter", Input).value = ""
        self.query_one(RunsTable).focus()

    def action_cycle_sort(self) -> None:
        self.sort_index = (self.sort_index + 1) % len(self.columns)
        self.sort_reverse = False
        self.notify(f"sorted by {self.columns[self.sort_index][1]}", timeout=1.5)
        self.update_view()

    def action_toggle_mark(self) -> None:
        run_id = self.selected_run_id()
        if run_id:
            self.marked.symmetric_difference_update({run_id})
            self.query_one(RunsTable).refresh_runs([run_id])
            self._summarize()
