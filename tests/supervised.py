"""Helpers for tests that drive the real supervisor with the fake runner."""

import os
import time
from pathlib import Path

from conftest import PYTHON, REPO
from synthgap_tui.store import RunStore

FAKE = REPO / "tests" / "fake_runner.py"


def make_workspace(tmp_path: Path, gpus=(), cpu_slots=1, grace=5.0) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    gpu_list = ", ".join(map(str, gpus))
    runner = f'["{PYTHON}", "{FAKE}"]'
    (ws / "config.toml").write_text(
        f"[supervisor]\ngpus = [{gpu_list}]\ncpu_slots = {cpu_slots}\npoll_seconds = 0.1\n"
        f"grace_seconds = {grace}\n\n[runners]\ntrain = {runner}\ngenerate = {runner}\n")
    for split in ("train", "val"):
        (tmp_path / "data" / split).mkdir(parents=True, exist_ok=True)
    return ws


def spec_text(runs: str, name="test") -> str:
    return f'[experiment]\nname = "{name}"\n\n[datasets]\nreal = {{ path = "data" }}\n\n{runs}'


def wait_for(predicate, timeout=60.0, interval=0.1, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def states(ws: Path) -> dict[str, str]:
    return {r["name"]: r["state"] for r in RunStore(ws).list()}


def fake_log(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def env_for(log: Path, step_s=0.05, **extra) -> dict:
    return {"FAKE_LOG": str(log), "FAKE_STEP_S": str(step_s), **extra}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
