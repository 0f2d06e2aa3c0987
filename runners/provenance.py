"""What a run ran with, captured by the runner when it starts: the code, the
libraries, the machine, the command, the spec and its seed. Written beside the
run's results (``provenance.json`` and ``pip-freeze.txt``) so a number can be
traced back, and compared between runs (``synthgap diff``)."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from email.parser import HeaderParser
from importlib import metadata
from pathlib import Path

import torch

from runners import protocol

FILE = "provenance.json"
FREEZE_FILE = "pip-freeze.txt"
LIBRARIES = ("synthgap", "torch", "torchvision", "diffusers", "transformers", "timm", "numpy", "pillow")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git(source: Path) -> dict | None:
    """Commit and dirty flag when SynthGap runs from a git checkout."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return None


def _gpus() -> list[dict]:
    if not torch.cuda.is_available():
        return []
    return [{"index": i, "name": torch.cuda.get_device_name(i),
             "capability": ".".join(map(str, torch.cuda.get_device_capability(i)))}
            for i in range(torch.cuda.device_count())]


def _driver() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
            return version.decode() if isinstance(version, bytes) else str(version)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no driver, no NVML: the field stays empty
        return None


def _freeze() -> list[str]:
    """NAME==VERSION of every installed distribution, as pip freeze lists them. Only the
    metadata headers are parsed: parsing the long descriptions after them took ~1 s a run."""
    pins = set()
    for dist in metadata.distributions():
        text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
        head = HeaderParser().parsestr(text.partition("\n\n")[0])
        if head["Name"]:
            pins.add(f"{head['Name']}=={head['Version']}")
    return sorted(pins)


def capture(spec: dict, resolved: dict) -> dict:
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "synthgap": {"version": _version("synthgap"), "git": _git(Path(__file__).resolve().parents[1])},
        "python": platform.python_version(),
        "libraries": {name: _version(name) for name in LIBRARIES},
        "cuda": torch.version.cuda, "cudnn": cudnn, "gpus": _gpus(), "driver": _driver(),
        "host": socket.gethostname(), "platform": platform.platform(),
        "command": [sys.executable, *sys.argv],
        "seed": resolved.get("seed"),
        "code": os.environ.get("SYNTHGAP_CODE"),  # the runners snapshot it ran from (synthgap_tui/snapshots.py)
        "spec": spec,
    }


def write(run_dir: Path, spec: dict, resolved: dict) -> dict:
    """provenance.json and pip-freeze.txt in the run folder, each written whole."""
    record = capture(spec, resolved)
    protocol.write_json_atomic(run_dir / FILE, record)
    protocol.write_text_atomic(run_dir / FREEZE_FILE, "\n".join(_freeze()) + "\n")
    return record
