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
from synthgap_tui.workspace import Workspace

# Sweep keys that get the paper's least-squares fit top-1 = a·ln(x) + b, and
# what x is: Mind the Gap (Fig. 3, f(x) = -2.23 log(x) + 85.61) takes x as the
# reduction factor of the real data (2, 4, 8, 16), i.e. 1 / fraction. These
# keys read better on a log axis too.
FIT_AXES = {"fraction": ("the reduction factor 1/fraction", lambda fraction: 1 / fraction)}
LOG_KEYS = set(FIT_AXES)


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
        return self.name.split("[", 1)[0]

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
    """The kinds among these runs that report metrics, and their metrics in order."""
    present = list(dict.fromkeys(r.kind for r in runs if r.kind in kinds.all_kinds()))
    with_metrics = [k for k in present if kinds.get(k).metrics]
    metrics = list({m.label: m for k in with_metrics for m in kinds.get(k).metrics}.values())
    return with_metrics, metrics


def results_table(runs: list[RunData]) -> tuple[list[str], list[list[str]]]:
    """Header and rows shaped like the papers' tables: one row per run, mean ± std
    over the last epochs of each metric its kind declares (a Kind column when
    the runs are of several kinds)."""
    shown, metrics = _metrics(runs)
    header = ["Experiment"] + (["Kind"] if len(shown) > 1 else []) + [m.label for m in metrics]
    rows = []
    for r in runs:
        if r.kind not in shown:
            continue
        own = set(kinds.get(r.kind).metrics)
        cells = [fmt_pm(*m.value(r.summary), m.digits) if m in own else "" for m in metrics]
        rows.append([r.name] + ([r.kind] if len(shown) > 1 else []) + cells)
    return header, rows


def results_numbers(runs: list[RunData]) -> tuple[list[str], list[list]]:
    """The same results as numbers for scripts: mean and std in columns of their
    own, one column per swept parameter."""
    shown, metrics = _metrics(runs)
    swept = list(dict.fromkeys(k for r in runs for k in (r.spec.get("sweep") or {})))
    header = ["run", "kind", "experiment", "tags", "note", *swept]
    for m in metrics:
        header += [f"{m.key}_mean", f"{m.key}_std"]
    rows = []
    for r in runs:
        if r.kind not in shown:
            continue
        own = set(kinds.get(r.kind).metrics)
        row = [r.name, r.kind, r.record.get("experiment", ""), " ".join(r.record.get("tags") or []),
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
    """top-1 against one swept value, per series, with the other runs as baselines."""

    key: str
    series: dict[str, list[tuple[float, float, float]]]  # base name -> [(x, top1 mean, std)]
    baselines: dict[str, float]  # run name -> top-1 mean
    fits: dict[str, Fit]  # base name -> its fit

    @property
    def log_x(self) -> bool:
        return self.key in LOG_KEYS


def sweep_keys(runs: list[RunData]) -> list[str]:
    """Swept keys among these runs, most common first (freeze_layers wins ties)."""
    counts: dict[str, int] = {}
    for r in runs:
        for key in (r.spec.get("sweep") or {}):
            counts[key] = counts.get(key, 0) + 1
    return sorted(counts, key=lambda k: (-counts[k], k != "freeze_layers", k))


def find_sweep(runs: list[RunData], key: str | None = None) -> Sweep | None:
    """top-1 against a swept key (by default the most common: freeze_layers for the
    layer-freeze figure, fraction for data reduction, …). Runs without a sweep
    are the baselines; runs swept over other keys are left out."""
    keys = sweep_keys(runs)
    if not keys:
        return None
    key = key if key in keys else keys[0]
    series: dict[str, list] = {}
    baselines = {}
    for r in runs:
        top1 = r.summary.get("top1_mean")
        sweep = r.spec.get("sweep") or {}
        if top1 is None:
            continue
        if isinstance(sweep.get(key), (int, float)):
            series.setdefault(r.base, []).append((float(sweep[key]), top1, r.summary.get("top1_std") or 0.0))
        elif not sweep:
            baselines[r.name] = top1
    for points in series.values():
        points.sort()
    fits = {}
    if key in FIT_AXES:
        for name, points in series.items():
            fit = log_fit([FIT_AXES[key][1](p[0]) for p in points if p[0] > 0], [p[1] for p in points if p[0] > 0])
            if fit:
                fits[name] = Fit(*fit, key=key)
    return Sweep(key, series, baselines, fits)


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


def sweep_figure(sweep: Sweep, title: str):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for name, points in sweep.series.items():
        xs, ys, ss = zip(*points)
        ax.errorbar(xs, ys, yerr=ss, marker="o", capsize=3, label=name)
        if name in sweep.fits:
            fit = sweep.fits[name]
            grid = [min(xs) * (max(xs) / min(xs)) ** (i / 50) for i in range(51)]
            ax.plot(grid, [fit.at(x) for x in grid], "--", alpha=0.7, label=f"{name}: {fit}")
    for name, top1 in sweep.baselines.items():
        ax.axhline(top1, linestyle=":", label=name)
    if sweep.log_x:
        ax.set_xscale("log")
    ax.set_xlabel({"freeze_layers": "layers transferred and frozen (N)",
                   "fraction": "fraction of real training data"}.get(sweep.key, sweep.key))
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def curves_figure(runs: list[RunData], metric: str = "top1", title: str = ""):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for r in runs:
        pts = [(e["epoch"], e[metric]) for e in r.epochs if e.get(metric) is not None]
        if pts:
            ax.plot(*zip(*pts), label=r.name)
    ax.set_xlabel("epoch")
    ax.set_ylabel({"top1": "top-1 accuracy (%)", "top5": "top-5 accuracy (%)"}.get(metric, metric))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if runs:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def export(runs: list[RunData], out_dir: Path, title: str) -> list[Path]:
    """CSV and Markdown tables, PNG and SVG figures of these runs into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in (("results.csv", to_csv(*results_numbers(runs))), ("results.md", to_markdown(*results_table(runs)))):
        (out_dir / name).write_text(text)
        written.append(out_dir / name)
    fields = list(dict.fromkeys(k for r in runs for e in r.epochs for k in e if k not in ("t", "type", "epoch")))
    curve_rows = [[r.name, e["epoch"], *(e.get(k) for k in fields)] for r in runs for e in r.epochs]
    (out_dir / "epochs.csv").write_text(to_csv(["run", "epoch", *fields], curve_rows))
    written.append(out_dir / "epochs.csv")
    figures = {"curves": curves_figure(runs, "top1", title)}
    sweep = find_sweep(runs)
    if sweep and sweep.series:
        figures["sweep"] = sweep_figure(sweep, title)
    plt = _pyplot()
    for stem, fig in figures.items():
        for ext in ("png", "svg"):
            path = out_dir / f"{stem}.{ext}"
            fig.savefig(path)
            written.append(path)
        plt.close(fig)
    return written
