"""Run directories for runner tests."""

import json
from pathlib import Path

from runners import protocol

TINY = {"arch": "resnet18", "small_input": True, "image_size": 32, "local_size": 16, "local_crops": 2,
        "batch_size": 4, "workers": 0, "log_every": 1, "warmup_epochs": 0, "epochs": 1, "amp": False}


def make_run(root: Path, name: str, **spec) -> Path:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    (run_dir / "spec.json").write_text(json.dumps({"id": name, "name": name, "kind": "train", **spec}))
    return run_dir


def events(run_dir: Path) -> list[dict]:
    return protocol.read_events(run_dir / "events.jsonl")


def final(run_dir: Path) -> dict:
    return [e for e in events(run_dir) if e["type"] in protocol.FINAL_EVENTS][-1]
