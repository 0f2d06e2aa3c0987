"""One run, live: progress and ETA, loss and lr, top-1/top-5 per epoch, images/s,
GPU memory, the log and the spec. Re-attaches by reading events from byte 0."""

from __future__ import annotations

import json
import time

from rich.markup import escape
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import (DataTable, Footer, Header, Log, ProgressBar, Static, TabbedContent, TabPane)
from textual.worker import get_current_worker

from runners import kinds, protocol
from runners.kinds import Chart
from synthgap_tui import launchers, formatting as fm
from synthgap_tui import rundiff
from synthgap_tui.annotations import FILE as ANNOTATIONS_FILE
from synthgap_tui.tail import RunHistory, tail_lines
from synthgap_tui.widgets.charts import LineChart

POLL_S = 0.5
CHART_INTERVAL_S = 1.0
JOB_LOOKUP_S = 5.0  # how often to look for the scheduler's output file of the job until it exists


def _mtime(path) -> float | None:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return None


class EventsArrived(Message):
    """A batch of new events: one message per poll, however fast the runner writes."""

    def __init__(self, events: list[dict], record: dict | None, stdout: list[str] | None,
                 provenance: dict | None = None, job_output: tuple[str, list[str]] | None = None) -> None:
        super().__init__()
        self.events, self.record, self.stdout, self.provenance = events, record, stdout, provenance
        self.job_output = job_output  # (file name, last lines) of the scheduler's output of the job


class UsageRead(Message):
    """What the scheduler's accounting says of the run's job (or why it cannot say)."""

    def __init__(self, line: str) -> None:
        super().__init__()
        self.line = line


PREFERRED_EPOCH_FIELDS = ("top1", "train_loss", "val_loss", "holdout_top1")


def default_epoch_field(epochs: list[dict], fields: list[str]) -> str:
    """The field the Epochs chart opens on: top-1 or the loss where the runner reports
    them, else the first field that changes (never a constant such as the stage)."""
    for name in PREFERRED_EPOCH_FIELDS:
        if name in fields:
            return name
    changing = [f for f in fields if len({e.get(f) for e in epochs}) > 1]
    return (changing or fields)[0]


class RunScreen(Screen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("k", "cancel_run", "Cancel"),
        Binding("r", "resume_run", "Resume"),
        Binding("R", "retry_run", "Retry", show=False),
        Binding("f", "next_epoch_field", "Field"),
        Binding("t", "tag_run", "Tag", show=False),
        Binding("n", "note_run", "Note", show=False),
        Binding("l", "clone", "Clone to composer", show=False),
        Binding("e", "export", "Export"),
    ]

    def __init__(self, run_id: str) -> None:
        super().__init__()
        self.run_id = run_id
        self.history = RunHistory()
        self.record: dict = {}
        self.spec: dict = {}
        self.pending_steps = False
        self.last_chart_draw = 0.0
        self.epoch_field: str | None = None  # charted on the Epochs tab; f picks another
        self.usage: str | None = None  # the scheduler's accounting of the job, shown under the title
        self._usage_asked: tuple | None = None  # (job, ended) it was asked for: once each, not every poll
        self.stdout: list[str] = []  # the Log tab: stdout.log's last lines, then the job's own output
        self.job_output: tuple[str, list[str]] | None = None

    def compose(self) -> ComposeResult:
        self.spec = protocol.read_json(self.app.workspace.run_file(self.run_id, protocol.SPEC_FILE), {}) or {}
        kind = kinds.all_kinds().get(self.spec.get("kind"))
        self.charts = kind.charts if kind else ()
        yield Header()
        with Vertical(id="run-head"):
            yield Static("", id="run-title")
            with Horizontal(id="run-progress-row"):
                yield ProgressBar(total=100, show_eta=False, id="run-progress")
                yield Static("", id="run-eta")
        with TabbedContent(id="run-tabs"):
            with TabPane("Live", id="tab-live"):
                for row in range(0, len(self.charts), 2):  # the kind's charts, two a row
                    with Horizontal(classes="chart-row"):
                        for i, chart in enumerate(self.charts[row:row + 2], start=row):
                            yield LineChart(chart.title, chart.x, chart.unit, id=f"chart-{i}")
                if not self.charts:
                    yield Static("This kind of run declares no charts.", classes="no-charts")
            with TabPane("Epochs", id="tab-epochs"):
                yield LineChart("", "epoch", id="chart-epoch-field")
                yield DataTable(id="epochs", cursor_type="row")
            with TabPane("Log", id="tab-log"):
                yield Log(id="run-log", max_lines=2000)
            with TabPane("Spec", id="tab-spec"):
                yield Static("", id="run-spec")
            with TabPane("Provenance", id="tab-provenance"):
                yield Static("Written by the runner when it starts.", id="run-provenance")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#run-spec", Static).update(escape(json.dumps(self.spec, indent=2)))
        self.follow()

    @work(thread=True, exclusive=True, group="run-follow")
    def follow(self) -> None:
        """Tail events.jsonl from byte 0 (the whole history), then as it grows."""
        me = get_current_worker()
        ws = self.app.workspace
        reader = protocol.EventReader(ws.events_path(self.run_id))
        stdout_path = ws.run_file(self.run_id, protocol.STDOUT_FILE)
        status_path = ws.run_file(self.run_id, protocol.STATUS_FILE)
        # The index can be large and rewritten often; this run's own small files
        # say everything the screen shows.
        base = {**(self.app.store_call(lambda: self.app.store.get(self.run_id)) or {}), **self.spec_identity()}
        provenance_path = ws.run_file(self.run_id, rundiff.PROVENANCE_FILE)
        annotations_path = ws.run_file(self.run_id, ANNOTATIONS_FILE)
        last_stdout = last_status = last_provenance = last_job = None
        current, job_path, job_of, next_lookup = base, None, None, 0.0
        while not me.is_cancelled:
            events = reader.read_new()
            record = stdout = provenance = job_output = None
            if (mtime := _mtime(provenance_path)) != last_provenance:  # written when the runner starts
                last_provenance, provenance = mtime, protocol.read_json(provenance_path)
            if (mtimes := (_mtime(status_path), _mtime(annotations_path))) != last_status:
                last_status = mtimes
                record = current = {**base, **(protocol.read_json(status_path, {}) or {}),
                                    **(protocol.read_json(annotations_path, {}) or {})}
            if (mtime := _mtime(stdout_path)) != last_stdout:
                last_stdout, stdout = mtime, tail_lines(stdout_path, 200)
            handle = current.get("handle") or {}
            if handle.get("job_id") != job_of:  # a retried run is a new job, with a file of its own
                job_of, job_path, last_job, next_lookup = handle.get("job_id"), None, None, 0.0
            if job_path is None and time.monotonic() >= next_lookup:
                next_lookup = time.monotonic() + JOB_LOOKUP_S
                job_path = launchers.get(current.get("launcher")).job_output(handle, ws.run_dir(self.run_id))
            if job_path is not None and (mtime := _mtime(job_path)) != last_job:
                last_job, job_output = mtime, (job_path.name, tail_lines(job_path, 100))
            self.post_message(EventsArrived(events, record, stdout, provenance, job_output))
            time.sleep(POLL_S)

    @work(thread=True, exclusive=True, group="run-usage")
    def ask_usage(self, launcher: str | None, handle: dict) -> None:
        line = launchers.get(launcher).usage(handle)
        if line:
            self.post_message(UsageRead(line))

    def on_usage_read(self, message: UsageRead) -> None:
        self.usage = message.line
        self.render_run(new_epochs=False, new_steps=False)

    def spec_identity(self) -> dict:
        return {k: self.spec[k] for k in ("name", "kind", "experiment") if k in self.spec}

    def on_events_arrived(self, message: EventsArrived) -> None:
        if message.record:
            self.record = message.record
            handle = self.record.get("handle") or {}
            asked = (handle.get("job_id"), self.record.get("state") in protocol.ENDED_STATES)
            if handle.get("job_id") and asked != self._usage_asked:
                self._usage_asked = asked
                self.ask_usage(self.record.get("launcher"), handle)
        if message.provenance:
            lines = [f"{k} = {rundiff.fmt(v)}" for k, v in rundiff.flatten(message.provenance).items()
                     if not k.startswith("spec.")]
            self.query_one("#run-provenance", Static).update(Text("\n".join(lines)))
        if not (message.events or message.record or message.stdout is not None or message.job_output):
            return
        self.history.add(message.events)
        self.pending_steps |= any(e["type"] in (*RunHistory.CHARTED, protocol.GPU) for e in message.events)
        new_epochs = any(e["type"] == protocol.EPOCH for e in message.events)
        # Step charts are the costly part: redraw them at most once a second.
        now = time.monotonic()
        redraw_steps = self.pending_steps and now - self.last_chart_draw >= CHART_INTERVAL_S
        if redraw_steps:
            self.pending_steps, self.last_chart_draw = False, now
        self.render_run(new_epochs=new_epochs, new_steps=redraw_steps)
        if message.stdout is not None or message.job_output:
            self.stdout = self.stdout if message.stdout is None else message.stdout
            self.job_output = message.job_output or self.job_output
            lines = self.history.logs[-50:] + ["── stdout.log ──"] + self.stdout
            if self.job_output:
                name, tail = self.job_output
                lines += [f"── the job's own output ({name}) ──"] + tail
            log = self.query_one("#run-log", Log)
            log.clear()
            log.write_lines(lines)

    def render_run(self, new_epochs: bool = True, new_steps: bool = True) -> None:
        r, h = self.record, self.history
        state = r.get("state", "…")
        title = Text("  ").join([
            Text(r.get("name", self.run_id), style="bold"), Text(self.run_id, style="dim"),
            Text(state, style=fm.STATE_STYLE.get(state, "")), Text(r.get("kind", "")),
            Text(fm.fmt_where(r)), Text(fm.fmt_duration(fm.run_duration(r)))])
        if r.get("tags"):
            title.append("  " + " ".join(f"#{t}" for t in r["tags"]), style="magenta")
        if r.get("error"):
            title.append(f"\n{r['error']}", style="red")
        if r.get("note"):
            title.append(f"\n{r['note']}", style="italic")
        if self.usage:
            title.append(f"\n{self.usage}", style="dim")
        self.query_one("#run-title", Static).update(title)
        p = h.progress
        done, total = p.get("done", 0), p.get("total") or 0
        bar = self.query_one("#run-progress", ProgressBar)
        bar.update(total=total or 100, progress=(done if total else (100 if state == protocol.FINISHED else 0)))
        eta = p.get("eta")
        rate = h.rate
        self.query_one("#run-eta", Static).update(
            f"{done}/{total} {p.get('unit', '')}  ETA {fm.fmt_duration(eta) if eta is not None and state == 'running' else '-'}"
            f"  {rate or '-'} img/s" if total else "")
        for i, chart in enumerate(self.charts):
            if (new_epochs if chart.event == protocol.EPOCH else new_steps):
                self.query_one(f"#chart-{i}", LineChart).set_series(self.chart_series(chart))
        if new_epochs:
            self.render_epochs()

    def chart_series(self, chart: Chart) -> dict:
        h = self.history
        series = {label: h.series(chart.event, chart.x, key) for key, label in chart.series}
        if chart.gpu_memory:
            xs = h.series(chart.event, chart.x, chart.series[0][0])[0] if chart.series else []
            for idx, mem in h.gpu_mem.items():
                series[f"GPU{idx} GiB"] = (xs[-len(mem):] if len(xs) >= len(mem) else list(range(len(mem))), mem)
        return series

    def epoch_fields(self) -> list[str]:
        """Numeric fields of the epoch events, in the order the runner reports them."""
        return list(dict.fromkeys(k for e in self.history.epochs for k, v in e.items() if k not in
                                  ("t", "type", "epoch") and isinstance(v, (int, float)) and not isinstance(v, bool)))

    def action_next_epoch_field(self) -> None:
        fields = self.epoch_fields()
        if fields:
            at = fields.index(self.epoch_field) + 1 if self.epoch_field in fields else 0
            self.epoch_field = fields[at % len(fields)]
            self.render_epochs()

    def render_epochs(self) -> None:
        """Every field the runner reports in its epoch events: one column each, one charted."""
        fields = self.epoch_fields()
        if fields and self.epoch_field not in fields:
            self.epoch_field = default_epoch_field(self.history.epochs, fields)
        chart = self.query_one("#chart-epoch-field", LineChart)
        if self.epoch_field:
            chart.title = f"{self.epoch_field} per epoch  (f: next field)"
            chart.set_series({self.epoch_field: self.history.series(protocol.EPOCH, "epoch", self.epoch_field)})
        table = self.query_one("#epochs", DataTable)
        keys = list(dict.fromkeys(k for e in self.history.epochs for k in e if k not in ("t", "type")))
        table.clear(columns=True)
        table.add_columns(*keys)
        for e in self.history.epochs:
            table.add_row(*(f"{e[k]:.3f}" if isinstance(e.get(k), float) else str(e.get(k, "")) for k in keys))

    def action_cancel_run(self) -> None:
        self.app.lifecycle_action("cancel", [self.run_id])

    def action_resume_run(self) -> None:
        self.app.lifecycle_action("resume", [self.run_id])

    def action_retry_run(self) -> None:
        self.app.confirm_lifecycle("retry", [self.run_id])

    def action_tag_run(self) -> None:
        self.app.annotate("tag", [self.run_id])

    def action_note_run(self) -> None:
        self.app.annotate("note", [self.run_id], self.record.get("note") or "")

    def action_clone(self) -> None:
        self.app.open_composer_for_run(self.run_id)

    def action_export(self) -> None:
        self.app.export_runs([self.run_id], title=self.record.get("name", self.run_id))

    @on(TabbedContent.TabActivated)
    def tab_changed(self) -> None:
        self.render_run()
