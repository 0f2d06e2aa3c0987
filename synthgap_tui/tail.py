"""Following a run's files from the app: events by byte offset, the log's last lines."""

from __future__ import annotations

import os
from pathlib import Path

from runners import protocol


def tail_lines(path: Path, n: int = 200, max_bytes: int = 64 * 1024) -> list[str]:
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except FileNotFoundError:
        return []
    lines = data.decode(errors="replace").splitlines()
    return lines[-n:] if size <= max_bytes else lines[1:][-n:]


class RunHistory:
    """Everything the run screen shows, folded from events as they arrive."""

    CHARTED = (protocol.TRAIN_STEP, protocol.PROGRESS)  # event types kept whole for the charts

    def __init__(self) -> None:
        self.events: dict[str, list[dict]] = {t: [] for t in self.CHARTED}
        self.epochs: list[dict] = []
        self.gpu_mem: dict[int, list[float]] = {}
        self.logs: list[str] = []
        self.progress: dict = {}
        self.final: dict = {}

    def add(self, events: list[dict]) -> None:
        for e in events:
            kind = e.get("type")
            if kind in self.events:
                self.events[kind].append(e)
            if kind == protocol.EPOCH:
                self.epochs = [x for x in self.epochs if x.get("epoch") != e.get("epoch")] + [e]
            elif kind == protocol.PROGRESS:
                self.progress = e
            elif kind == protocol.GPU:
                for d in e.get("devices", []):
                    used = d.get("memory_reserved") or d.get("memory_used") or 0
                    self.gpu_mem.setdefault(d.get("index", 0), []).append(used / 2**30)
            elif kind == protocol.LOG:
                self.logs.append(f"[{e.get('level', 'info')}] {e.get('message', '')}")
            elif kind == protocol.START:
                self.final = {}
            elif kind in protocol.FINAL_EVENTS:
                self.final = e
                if kind == protocol.FAILED:
                    self.logs.append(f"[error] {e.get('error', '')}")

    def series(self, event: str, x: str, y: str) -> tuple[list, list]:
        """(xs, ys) of field ``y`` against ``x`` over the events of one type."""
        source = self.epochs if event == protocol.EPOCH else self.events.get(event, [])
        points = [(e.get(x, i), e[y]) for i, e in enumerate(source) if isinstance(e.get(y), (int, float))]
        return [p[0] for p in points], [p[1] for p in points]

    @property
    def rate(self) -> float | None:
        steps = self.events[protocol.TRAIN_STEP]
        return steps[-1].get("images_per_s") if steps else self.progress.get("rate")
