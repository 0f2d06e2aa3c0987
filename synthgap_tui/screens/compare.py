"""Compare runs: curves overlaid, the sweep figure (top-1 or linear-probe accuracy
against N, the real fraction or the adaptation images, with baselines, the log
fit and seeds averaged), its numbers, and a table of mean ± std."""

from __future__ import annotations


from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static, TabbedContent, TabPane

from synthgap_tui import analysis, rundiff
from synthgap_tui.widgets.charts import LineChart


class RunsData(Message):
    def __init__(self, runs: list[analysis.RunData], differences: list[tuple[str, list]]) -> None:
        super().__init__()
        self.runs, self.differences = runs, differences


class CompareScreen(Screen):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("e", "export", "Export"),
        Binding("w", "next_sweep", "Sweep key"),
        Binding("m", "next_metric", "Metric"),
    ]

    def __init__(self, run_ids: list[str], title: str = "comparison") -> None:
        super().__init__()
        self.run_ids = run_ids
        self.title_text = title
        self.data: list[analysis.RunData] = []
        self.sweep_key: str | None = None
        self.metric = "top1"

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="compare-title")
        with TabbedContent(id="compare-tabs"):
            with TabPane("Sweep", id="tab-sweep"):
                yield LineChart("top-1 against the swept value", "", "top-1 %", id="chart-sweep")
                yield Static("", id="sweep-notes")
                yield DataTable(id="sweep-table", cursor_type="row")
            with TabPane("Curves", id="tab-curves"):
                yield LineChart("top-1 per epoch", "epoch", "top-1 %", id="chart-curves")
            with TabPane("Table", id="tab-table"):
                yield DataTable(id="compare-table", cursor_type="row")
            with TabPane("Diff", id="tab-diff"):
                yield DataTable(id="compare-diff", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, group="compare-load")
    def load(self) -> None:
        records = self.app.store_call(lambda: [r for r in map(self.app.store.get, self.run_ids) if r], [])
        ws = self.app.workspace
        self.post_message(RunsData(analysis.load_runs(ws, records),
                                   rundiff.differences([rundiff.view(ws, r["id"]) for r in records])))

    def on_runs_data(self, msg: RunsData) -> None:
        self.data = msg.runs
        diff = self.query_one("#compare-diff", DataTable)  # spec fields and provenance that differ
        diff.clear(columns=True)
        diff.add_columns("field", *(r.name for r in self.data))
        for key, values in msg.differences:
            diff.add_row(Text(key), *(Text(rundiff.fmt(v)) for v in values))
        done = sum(1 for r in self.data if r.summary.get("top1_mean") is not None)
        self.query_one("#compare-title", Static).update(
            f"{self.title_text}: {len(self.data)} runs, {done} with final results")
        self.query_one("#chart-curves", LineChart).set_series(
            {r.name: ([e["epoch"] for e in r.epochs], [e.get("top1") for e in r.epochs]) for r in self.data})
        table = self.query_one("#compare-table", DataTable)
        table.clear(columns=True)
        header, rows = analysis.results_table(self.data)
        table.add_columns(*header)
        for row in rows:
            table.add_row(*(Text(c) for c in row))
        self.render_sweep()

    def render_sweep(self) -> None:
        chart = self.query_one("#chart-sweep", LineChart)
        notes = self.query_one("#sweep-notes", Static)
        table = self.query_one("#sweep-table", DataTable)
        table.clear(columns=True)
        sweep = analysis.find_sweep(self.data, self.sweep_key, self.metric)
        if sweep is None or not sweep.series:
            chart.set_series({})
            notes.update("No sweep among these runs with final results yet.")
            return
        both = [analysis.find_sweep(self.data, sweep.key, m) for m in analysis.sweep_metrics(self.data)]
        header, rows = analysis.sweep_table(both)
        table.add_columns(*header)
        for row in rows:
            table.add_row(*(Text(c) for c in row))
        chart.title = f"{analysis.SWEEP_METRICS[sweep.metric]} against the swept value"
        chart.xlabel = sweep.key
        chart.log_x = sweep.log_x
        series = {name: ([p[0] for p in pts], [p[1] for p in pts]) for name, pts in sweep.series.items()}
        for name, fit in sweep.fits.items():
            xs = series[name][0]
            grid = [min(xs) * (max(xs) / min(xs)) ** (i / 20) for i in range(21)] if min(xs) > 0 else xs
            series[f"fit {name}"] = (grid, [fit.at(x) for x in grid])
        chart.set_series(series, hlines=sweep.baselines)
        lines = [f"baseline {n}: {v:.1f}" for n, v in sweep.baselines.items()]
        lines += [f"fit {n}: {fit}" for n, fit in sweep.fits.items()]
        others = [k for k in analysis.sweep_keys(self.data) if k != sweep.key]
        if others:
            lines.append(f"w: show {others[0]}")
        if len(both) > 1:
            lines.append("m: the other metric")
        notes.update(Text("  ·  ".join(lines)))

    def action_next_sweep(self) -> None:
        keys = analysis.sweep_keys(self.data)
        if len(keys) > 1:
            current = analysis.find_sweep(self.data, self.sweep_key)
            self.sweep_key = keys[(keys.index(current.key) + 1) % len(keys)]
            self.render_sweep()

    def action_next_metric(self) -> None:
        metrics = analysis.sweep_metrics(self.data)
        self.metric = metrics[(metrics.index(self.metric) + 1) % len(metrics)] if self.metric in metrics else "top1"
        self.render_sweep()

    def action_export(self) -> None:
        self.app.export_runs(self.run_ids, title=self.title_text)
