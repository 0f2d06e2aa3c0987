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
    """Everything the run screen plots, folded from events as they arrive."""

    def __init__(self) -> None:
        self.steps: list[float] = []
        self.loss: list[float] = []
        self.lr: list[float] = []
        self.rate: list[float] = []
        self.epochs: list[dict] = []
        self.gpu_t: list[float] = []
        self.gpu_mem: dict[int, list[float]] = {}
        self.logs: list[str] = []
        self.progress: dict = {}
        self.final: dict = {}

    def add(self, events: list[dict]) -> None:
        for e in events:
            kind = e.get("type")
            if kind == protocol.TRAIN_STEP:
                self.steps.append(e.get("step", len(self.steps)))
                self.loss.append(e.get("loss"))
                self.lr.append(e.get("lr"))
                self.rate.append(e.get("images_per_s"))
            elif kind == protocol.EPOCH:
                self.epochs = [x for x in self.epochs if x.get("epoch") != e.get("epoch")] + [e]
            elif kind == protocol.PROGRESS:
                self.progress = e
            elif kind == protocol.GPU:
                self.gpu_t.append(e["t"])
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
