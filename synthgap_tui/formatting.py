"""Plain-text renderings of run fields, shared by the CLI and the TUI."""

from __future__ import annotations

import time

from runners.protocol import fmt_bytes  # noqa: F401 - the app and the CLI format sizes from here

STATE_STYLE = {
    "queued": "dim", "blocked": "orange3", "starting": "cyan", "running": "bold cyan", "finished": "green",
    "failed": "bold red", "cancelled": "yellow", "lost": "magenta",
}


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "-"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h}h{m:02d}m"
    if m:
        return f"{m}m{s:02d}s"
    return f"{s}s"


def fmt_time(ts: float | None) -> str:
    if not ts:
        return "-"
    return time.strftime("%m-%d %H:%M", time.localtime(ts))


def run_duration(run: dict, now: float | None = None) -> float | None:
    start = run.get("started")
    if not start:
        return None
    return (run.get("ended") or now or time.time()) - start


def fmt_progress(run: dict) -> str:
    p = run.get("progress")
    return "-" if p is None else f"{100 * p:.0f}%"


def top1_of(run: dict) -> float | None:
    """Mean top-1 over the last epochs when finished, else the latest epoch's."""
    summary = run.get("summary") or {}
    if summary.get("top1_mean") is not None:
        return summary["top1_mean"]
    return run.get("top1")


def fmt_top1(run: dict) -> str:
    summary = run.get("summary") or {}
    if summary.get("top1_mean") is not None:
        std = summary.get("top1_std")
        return f"{summary['top1_mean']:.1f}" + (f"±{std:.1f}" if std is not None else "")
    top1 = run.get("top1")
    return "-" if top1 is None else f"{top1:.1f}"


def fmt_gpus(run: dict) -> str:
    """Where a run runs: its GPUs here ('0,1', 'cpu'), or its scheduler job ('812@node3', '812 pending')."""
    where = run.get("where") or {}
    if where.get("problem") and where.get("state") == "UNKNOWN":  # the scheduler did not answer: say so
        return f"{where.get('job', '?')} {where['problem'].split(' (')[0].lower()}"
    if where.get("job"):
        if where.get("node"):
            return f"{where['job']}@{where['node']}"
        return f"{where['job']} {where.get('state', '').lower()}"
    gpus = run.get("gpus")
    if gpus is None:
        return "-"
    return ",".join(str(g) for g in gpus) if gpus else "cpu"


def fmt_where(run: dict) -> str:
    """The run screen's and `show`'s longer form: 'gpu 0,1', or 'Slurm job 812 RUNNING on node3 (requeued 1x)'."""
    where = run.get("where") or {}
    if not where.get("job"):
        return f"gpu {fmt_gpus(run)}"
    text = f"job {where['job']} {where.get('state', '')}" + (f" on {where['node']}" if where.get("node") else "")
    if where.get("reason") and where.get("state") == "PENDING":
        text += f" ({where['reason']})"
    if where.get("requeues"):
        text += f", requeued {where['requeues']}x"
    return text + (f"; {where['problem']}" if where.get("problem") else "")


def fit_columns(header: list[str], rows: list[list[str]], priority: list[int], width: int,
                squeeze: int | None = None, gap: int = 2) -> tuple[list[str], list[list[str]]]:
    """The columns that fit ``width`` without breaking a word: the lowest priorities
    (larger numbers) go first, as ``docker ps`` drops them; then the ``squeeze`` column
    (a name) is cut with an ellipsis, down to 12 characters."""
    keep = list(range(len(header)))

    def widths(cols, cells):
        return [max([len(header[i])] + [len(r[i]) for r in cells]) for i in cols]

    while sum(widths(keep, rows)) + gap * (len(keep) - 1) > width:
        droppable = [i for i in keep if priority[i] > 1]
        if not droppable:
            break
        keep.remove(max(droppable, key=lambda i: (priority[i], i)))
    over = sum(widths(keep, rows)) + gap * (len(keep) - 1) - width
    if over > 0 and squeeze in keep:
        limit = max(12, widths([squeeze], rows)[0] - over)
        rows = [[c if i != squeeze or len(c) <= limit else c[:limit - 1] + "…" for i, c in enumerate(r)]
                for r in rows]
    return [header[i] for i in keep], [[r[i] for i in keep] for r in rows]
