"""Results as the papers show them: tables of mean ± std, sweep plots, curves.

Pure functions over run records, specs and epoch histories, shared by the
compare screen, the run screen and ``synthgap export``. matplotlib is
imported only when a figure is written.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from runners import kinds, protocol
from runners.kinds import Metric
from synthgap_tui.specs import SWEEP_SEP, current_name
from synthgap_tui.workspace import Workspace

# Sweep keys that get the paper's least-squares fit top-1 = a·ln(x) + b, and
# what x is: Mind the Gap (Fig. 3, f(x) = -2.23 log(x) + 85.61) takes x as the
# reduction factor of the real data (2, 4, 8, 16), i.e. 1 / fraction. These
# keys read better on a log axis too.
FIT_AXES = {"fraction": ("the reduction factor 1/fraction", lambda fraction: 1 / fraction)}
# The Unmet Promise, Fig. 2: CLIP adaptation against the number of adaptation
# images (a run's `train_images` result) where the data's fraction is swept.
IMAGES = "train_images"
LOG_KEYS = {*FIT_AXES, IMAGES}
AXIS_LABELS = {"freeze_layers": "layers transferred and frozen (N)", "fraction": "fraction of real training data",
               IMAGES: "adaptation images"}
# What a sweep plots: the metric's label (the summary's KEY_mean, or KEY).
SWEEP_METRICS = {"top1": "top-1 accuracy (%)", "linear_probe_top1": "linear-probe top-1 (%)"}


@dataclass(frozen=True)
class Fit:
    a: float
    b: float
    key: str  # the swept key; x is FIT_AXES[key] of its value

    def at(self, value: float) -> float:
        return self.a * math.log(FIT_AXES[self.key][1](value)) + self.b

    def __str__(self) -> str:
        return f"top-1 = {self.a:.2f}·ln(x) {'-' if self.b < 0 else '+'} {abs(self.b):.2f}, x = {FIT_AXES[self.key][0]}"


@dataclass
class RunData:
    record: dict
    spec: dict
    epochs: list[dict] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.record.get("name", self.record["id"])

    @property
    def kind(self) -> str:
        return self.record.get("kind", "")

    @property
    def base(self) -> str:
        return current_name(self.name).split(SWEEP_SEP, 1)[0]

    @property
    def summary(self) -> dict:
        return self.record.get("summary") or {}


def load_runs(ws: Workspace, records: list[dict]) -> list[RunData]:
    """Spec and epoch history of each run (reads files: call from a worker)."""
    out = []
    for r in records:
        spec = protocol.read_json(ws.run_file(r["id"], protocol.SPEC_FILE), {}) or {}
        epochs = [e for e in protocol.read_events(ws.events_path(r["id"])) if e["type"] == protocol.EPOCH]
        out.append(RunData(r, spec, _last_attempt(epochs)))
    return out


def _last_attempt(epochs: list[dict]) -> list[dict]:
    """A resumed run may repeat epochs: keep the latest record of each."""
    by_epoch = {}
    for e in epochs:
        by_epoch[e.get("epoch")] = e
    return [by_epoch[k] for k in sorted(by_epoch, key=lambda k: (k is None, k))]


def fmt_pm(mean, std, digits: int = 1) -> str:
    if mean is None:
        return "-"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std is not None else f"{mean:.{digits}f}"


def _metrics(runs: list[RunData]) -> tuple[list[str], list[Metric]]:
    """The kinds among these runs that report metrics, and their metrics in order
    (those that no run has a value for left out: no linear probe for a ResNet)."""
    present = list(dict.fromkeys(r.kind for r in runs if r.kind in kinds.all_kinds()))
    with_metrics = [k for k in present if kinds.get(k).metrics]
    metrics = list({m.label: m for k in with_metrics for m in kinds.get(k).metrics}.values())
    reported = [m for m in metrics if any(m in kinds.get(r.kind).metrics and m.value(r.summary)[0] is not None
                                          for r in runs if r.kind in with_metrics)]
    return with_metrics, reported


def results_table(runs: list[RunData], ids: bool = False) -> tuple[list[str], list[list[str]]]:
    """Header and rows shaped like the papers' tables: one row per run (by name; with
    ``ids``, its id beside it, for files read later), mean ± std over the last epochs
    of each metric its kind declares (a Kind column when the runs are of several kinds)."""
    shown, metrics = _metrics(runs)
    header = ["Run"] + (["Id"] if ids else []) + (["Kind"] if len(shown) > 1 else []) + [m.label for m in metrics]
    rows = []
    for r in runs:
        if r.kind not in shown:
            continue
        own = set(kinds.get(r.kind).metrics)
        cells = [fmt_pm(*m.value(r.summary), m.digits) if m in own else "" for m in metrics]
        rows.append([r.name] + ([r.record["id"]] if ids else []) + ([r.kind] if len(shown) > 1 else []) + cells)
    return header, rows


def results_numbers(runs: list[RunData]) -> tuple[list[str], list[list]]:
    """The same results as numbers for scripts: mean and std in columns of their
    own, one column per swept parameter."""
    shown, metrics = _metrics(runs)
    swept = list(dict.fromkeys(k for r in runs for k in (r.spec.get("sweep") or {})))
    header = ["run", "id", "kind", "experiment", "tags", "note", *swept]
    for m in metrics:
        header += [f"{m.key}_mean", f"{m.key}_std"]
    rows = []
    for r in runs:
        if r.kind not in shown:
            continue
        own = set(kinds.get(r.kind).metrics)
        row = [r.name, r.record["id"], r.kind, r.record.get("experiment", ""), " ".join(r.record.get("tags") or []),
               r.record.get("note") or ""] + [(r.spec.get("sweep") or {}).get(k, "") for k in swept]
        for m in metrics:
            mean, std = m.value(r.summary) if m in own else (None, None)
            row += ["" if mean is None else mean, "" if std is None else std]
        rows.append(row)
    return header, rows


def to_csv(header: list[str], rows: list[list[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf).writerows([header, *rows])
    return buf.getvalue()


def to_markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


@dataclass
class Sweep:
    """A metric (top-1 by default) against one swept value, per series, with the
    runs that sweep nothing as baselines. Runs that differ only by their seed are
    one point: the mean, with the std over the seeds as its error bar."""

    key: str
    series: dict[str, list[tuple[float, float, float]]]  # base name -> [(x, mean, std)]
    baselines: dict[str, float]  # run name -> its value
    fits: dict[str, Fit]  # base name -> its fit
    metric: str = "top1"

    @property
    def log_x(self) -> bool:
        return self.key in LOG_KEYS


def sweep_keys(runs: list[RunData]) -> list[str]:
    """Swept keys among these runs, most common first (freeze_layers wins ties), the
    number of adaptation images first for CLIP adaptation runs; never the seed."""
    counts: dict[str, int] = {}
    for r in runs:
        for key in (r.spec.get("sweep") or {}):
            if key != "seed":
                counts[key] = counts.get(key, 0) + 1
        if "fraction" in (r.spec.get("sweep") or {}) and _adaptation(r):
            counts[IMAGES] = counts.get(IMAGES, 0) + 1
    return sorted(counts, key=lambda k: (k != IMAGES, -counts[k], k != "freeze_layers", k))


def _adaptation(r: RunData) -> bool:
    return r.summary.get("linear_probe_top1") is not None and r.summary.get(IMAGES) is not None


def metric_value(summary: dict, metric: str) -> tuple[float | None, float]:
    """A run's value of a sweep metric and its own spread (over its last epochs)."""
    if summary.get(f"{metric}_mean") is not None:
        return summary[f"{metric}_mean"], summary.get(f"{metric}_std") or 0.0
    value = summary.get(metric)
    return (value, 0.0) if isinstance(value, (int, float)) and not isinstance(value, bool) else (None, 0.0)


def sweep_metrics(runs: list[RunData]) -> list[str]:
    """The sweep metrics these runs report (top-1 always)."""
    return ["top1"] + [m for m in SWEEP_METRICS if m != "top1" and any(metric_value(r.summary, m)[0] is not None
                                                                        for r in runs)]


def find_sweep(runs: list[RunData], key: str | None = None, metric: str = "top1") -> Sweep | None:
    """``metric`` against a swept key (by default the most common: freeze_layers for
    the layer-freeze figure, fraction for data reduction, the adaptation images
    for CLIP adaptation). Runs without a sweep are the baselines; runs swept over
    other keys are left out."""
    keys = sweep_keys(runs)
    if not keys:
        return None
    key = key if key in keys else keys[0]
    groups: dict[tuple[str, float], list[tuple[float, float]]] = {}
    baselines = {}
    for r in runs:
        value, spread = metric_value(r.summary, metric)
        sweep = {k: v for k, v in (r.spec.get("sweep") or {}).items() if k != "seed"}
        x = r.summary.get(IMAGES) if key == IMAGES and "fraction" in sweep else sweep.get(key)
        if value is None:
            continue
        if isinstance(x, (int, float)) and not isinstance(x, bool):
            others = ",".join(f"{k}={v}" for k, v in sweep.items() if k != key and not (key == IMAGES and k == "fraction"))
            groups.setdefault((f"{r.base}{SWEEP_SEP}{others}" if others else r.base, float(x)), []).append(
                (value, spread))
        elif not r.spec.get("sweep"):
            baselines[r.name] = value
    series: dict[str, list] = {}
    for (name, x), values in groups.items():
        means = [v for v, _ in values]
        std = statistics.stdev(means) if len(means) > 1 else values[0][1]  # over seeds, else the run's own
        series.setdefault(name, []).append((x, statistics.fmean(means), std))
    for points in series.values():
        points.sort()
    fits = {}
    if key in FIT_AXES and metric == "top1":
        for name, points in series.items():
            fit = log_fit([FIT_AXES[key][1](p[0]) for p in points if p[0] > 0], [p[1] for p in points if p[0] > 0])
            if fit:
                fits[name] = Fit(*fit, key=key)
    return Sweep(key, series, baselines, fits, metric)


def sweep_table(sweeps: list[Sweep]) -> tuple[list[str], list[list[str]]]:
    """The sweep figure's numbers: one row per series and x, a column per metric."""
    header = ["Series", AXIS_LABELS.get(sweeps[0].key, sweeps[0].key)] + [SWEEP_METRICS[s.metric] for s in sweeps]
    cells: dict[tuple[str, float | None], list[str]] = {}  # x None: a baseline
    for i, sweep in enumerate(sweeps):
        for name, points in sweep.series.items():
            for x, mean, std in points:
                cells.setdefault((name, x), [""] * len(sweeps))[i] = fmt_pm(mean, std)
        for name, value in sweep.baselines.items():
            cells.setdefault((name, None), [""] * len(sweeps))[i] = fmt_pm(value, None)
    order = sorted(cells, key=lambda k: (k[0], k[1] is not None, k[1] or 0.0))
    return header, [[name, "" if x is None else f"{x:g}", *cells[name, x]] for name, x in order]


def log_fit(xs: list[float], ys: list[float]) -> tuple[float, float] | None:
    """Least squares y = a * log(x) + b (natural log)."""
    pts = [(math.log(x), y) for x, y in zip(xs, ys) if x > 0]
    if len(pts) < 2 or len({p[0] for p in pts}) < 2:
        return None
    a, b = statistics.linear_regression([p[0] for p in pts], [p[1] for p in pts])
    return a, b


def downsample(xs: list[float], ys: list[float], width: int) -> tuple[list[float], list[float]]:
    """At most ``width`` points: the lowest and the highest point of each bucket,
    in their order, so a loss spike stays visible (a mean would flatten it)."""
    n = len(xs)
    if n <= width or width < 2:
        return list(xs), list(ys)
    buckets = width // 2
    keep: list[int] = []
    for b in range(buckets):
        lo, hi = b * n // buckets, (b + 1) * n // buckets
        if hi > lo:
            span = range(lo, hi)
            keep += sorted({min(span, key=ys.__getitem__), max(span, key=ys.__getitem__)})
    return [xs[i] for i in keep], [ys[i] for i in keep]


# -- figures (matplotlib, Agg) ------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# Series beyond ten stay apart: ten colours, then another marker and line style per round.
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
LINESTYLES = ("-", "--", "-.", ":")
BASELINE_STYLES = ((0, (1, 1)), "--", "-.", ":", (0, (5, 1, 1, 1)))  # baselines: grey, each its own dash


def series_style(i: int) -> dict:
    """Colour, marker and line style of the i-th series: no two alike for 28 series."""
    return {"color": f"C{i % 10}", "marker": MARKERS[(i // 10) % len(MARKERS)],
            "linestyle": LINESTYLES[(i // 10) % len(LINESTYLES)]}


def _legend(ax) -> None:
    """Beside the axes, not over the data, at any figure size."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)


def sweep_figure(sweeps: list[Sweep], title: str):
    """One panel per metric (The Unmet Promise's Fig. 2 has zero-shot and linear probe):
    series with error bars, fits dashed, baselines (an off-the-shelf model) dotted."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(sweeps), figsize=(6.4 * len(sweeps), 4.2), dpi=120, squeeze=False)
    for ax, sweep in zip(axes[0], sweeps):
        for i, (name, points) in enumerate(sweep.series.items()):
            xs, ys, ss = zip(*points)
            style = series_style(i)
            ax.errorbar(xs, ys, yerr=ss, capsize=3, label=name, **style)
            if name in sweep.fits:
                fit = sweep.fits[name]
                grid = [min(xs) * (max(xs) / min(xs)) ** (i / 50) for i in range(51)]
                ax.plot(grid, [fit.at(x) for x in grid], linestyle=(0, (4, 2)), color=style["color"], alpha=0.7,
                        label=f"{name}: {fit}")
        for j, (name, value) in enumerate(sweep.baselines.items()):
            ax.axhline(value, linestyle=BASELINE_STYLES[j % len(BASELINE_STYLES)],
                       color=str(0.2 + 0.5 * (j % 3) / 2), label=f"{name} ({value:.1f})")
        if sweep.log_x:
            ax.set_xscale("log")
        ax.set_xlabel(AXIS_LABELS.get(sweep.key, sweep.key))
        ax.set_ylabel(SWEEP_METRICS[sweep.metric])
        ax.set_title(title if len(sweeps) == 1 else f"{title}: {SWEEP_METRICS[sweep.metric]}")
        ax.grid(alpha=0.3)
        _legend(ax)
    fig.tight_layout()
    return fig


def curves_figure(runs: list[RunData], metric: str = "top1", title: str = ""):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    drawn = [r for r in runs if any(e.get(metric) is not None for e in r.epochs)]
    for i, r in enumerate(drawn):
        pts = [(e["epoch"], e[metric]) for e in r.epochs if e.get(metric) is not None]
        style = series_style(i)
        if len(pts) > 1:  # a single epoch (an off-the-shelf model) is a marker, not an invisible line
            style["marker"] = None
        ax.plot(*zip(*pts), label=r.name, **style)
    ax.set_xlabel("epoch")
    ax.set_ylabel({"top1": "top-1 accuracy (%)", "top5": "top-5 accuracy (%)"}.get(metric, metric))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    _legend(ax)
    fig.tight_layout()
    return fig


def export(runs: list[RunData], out_dir: Path, title: str) -> list[Path]:
    """CSV and Markdown tables, PNG and SVG figures of these runs into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("results.csv", to_csv(*results_numbers(runs))),
                       ("results.md", to_markdown(*results_table(runs, ids=True)))):
        (out_dir / name).write_text(text)
        written.append(out_dir / name)
    fields = list(dict.fromkeys(k for r in runs for e in r.epochs for k in e if k not in ("t", "type", "epoch")))
    curve_rows = [[r.name, e["epoch"], *(e.get(k) for k in fields)] for r in runs for e in r.epochs]
    (out_dir / "epochs.csv").write_text(to_csv(["run", "epoch", *fields], curve_rows))
    written.append(out_dir / "epochs.csv")
    figures = {"curves": curves_figure(runs, "top1", title)}
    sweeps = [sw for sw in (find_sweep(runs, metric=m) for m in sweep_metrics(runs)) if sw and sw.series]
    if sweeps:
        figures["sweep"] = sweep_figure(sweeps, title)
        table = sweep_table(sweeps)
        for name, text in (("sweep.csv", to_csv(*table)), ("sweep.md", to_markdown(*table))):
            (out_dir / name).write_text(text)
            written.append(out_dir / name)
    plt = _pyplot()
    for stem, fig in figures.items():
        for ext in ("png", "svg"):
            path = out_dir / f"{stem}.{ext}"
            fig.savefig(path, bbox_inches="tight")  # the legend sits beside the axes
            written.append(path)
        plt.close(fig)
    return written
