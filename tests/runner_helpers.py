"""Run directories for runner tests."""

import json
import subprocess
import time
from pathlib import Path
from typing import Callable

from runners import protocol

# A ResNet-18 at a quarter of its width: the layer numbering is torchvision's, the steps are cheap.
TINY = {"arch": "resnet18", "small_input": True, "image_size": 32, "local_size": 16, "local_crops": 2,
        "batch_size": 4, "workers": 0, "log_every": 1, "warmup_epochs": 0, "epochs": 1, "amp": False,
        "width": 16}


def make_run(root: Path, name: str, **spec) -> Path:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    (run_dir / "spec.json").write_text(json.dumps({"id": name, "name": name, "kind": "train", **spec}))
    return run_dir


def events(run_dir: Path) -> list[dict]:
    return protocol.read_events(run_dir / "events.jsonl")


def final(run_dir: Path) -> dict:
    return [e for e in events(run_dir) if e["type"] in protocol.FINAL_EVENTS][-1]


def run_in_process(runner, run_dir: Path, *extra: str) -> int:
    """``runner.main`` on ``run_dir`` with the command line the supervisor gives it."""
    return runner.main(runner.get_args_parser().parse_args(["--run-dir", str(run_dir), *extra]))


def failed_error(runner, run_dir: Path) -> str:
    """Run ``runner`` on ``run_dir``, which must fail: the error of its final event."""
    assert run_in_process(runner, run_dir) == 1
    ev = final(run_dir)
    assert ev["type"] == "failed"
    return ev["error"]


def start_until(module: str, run_dir: Path, ready: Callable[[list[dict]], bool], env: dict,
                timeout: float = 120) -> subprocess.Popen:
    """``python -m MODULE`` on ``run_dir`` in a process of its own, once ``ready(events)`` holds."""
    from conftest import PYTHON

    proc = subprocess.Popen([PYTHON, "-m", module, "--run-dir", str(run_dir)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while not ready(events(run_dir)):
        assert time.time() < deadline and proc.poll() is None, f"{module} ended or stalled before it was ready"
        time.sleep(0.02)
    return proc
