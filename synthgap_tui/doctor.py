"""`synthgap doctor`: one line per check, each OK, WARN or FAIL with a reason."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from typing import Iterator

from runners import protocol
from synthgap_tui.formatting import fmt_bytes
from synthgap_tui.gpu import NvmlMonitor
from synthgap_tui.workspace import Workspace, is_run_id


@dataclass(frozen=True)
class Check:
    level: str  # OK, WARN, FAIL
    name: str
    message: str


def _version(module: str) -> tuple[str | None, str | None]:
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # a broken install raises more than ImportError
        return None, f"{type(e).__name__}: {e}"
    return getattr(mod, "__version__", "?"), None


def low_space(workspace: Workspace, free: int | None = None) -> str | None:
    """A warning when the workspace's filesystem has less free space than config.toml's
    ``[store] min_free_gb`` (20 GiB: a synthetic ImageNet-100 is ~15 GiB of JPEGs)."""
    from synthgap_tui.supervisor import Config

    free = protocol.free_bytes(workspace.root) if free is None else free
    threshold = Config.load(workspace).min_free_gb * 1024**3
    if free is None or free >= threshold:
        return None
    return f"only {fmt_bytes(free)} free in {workspace.root} (below [store] min_free_gb = {threshold / 1024**3:g})"


def run_checks(workspace: Workspace, monitor: NvmlMonitor | None = None) -> Iterator[Check]:
    py = sys.version_info
    yield Check("OK" if py >= (3, 11) else "FAIL", "python",
                f"{sys.version.split()[0]} ({sys.executable})")

    version, err = _version("torch")
    if err:
        yield Check("FAIL", "torch", f"cannot import torch: {err}")
    else:
        import torch

        if torch.cuda.is_available():
            n = torch.cuda.device_count()
            bf16 = torch.cuda.is_bf16_supported()
            yield Check("OK", "torch", f"{version}, CUDA {torch.version.cuda}, {n} device(s), "
                        f"bf16 {'yes' if bf16 else 'no (falls back to fp16)'}")
        else:
            why = "CPU-only build" if torch.version.cuda is None else "no CUDA device visible"
            yield Check("WARN", "torch", f"{version}, {why}: runs will use the CPU")

    for module in ("torchvision", "diffusers", "transformers"):
        version, err = _version(module)
        yield Check("FAIL", module, f"cannot import: {err}") if err else Check("OK", module, version)
    missing = [m for m in ("tensorboard", "mlflow") if importlib.util.find_spec(m) is None]
    yield Check("WARN", "trackers", f"{' and '.join(missing)} not installed: `synthgap export --format "
                f"tensorboard|mlflow` needs pip install 'synthgap[trackers]'") if missing else \
        Check("OK", "trackers", "tensorboard and mlflow installed (export --format tensorboard|mlflow)")

    report = (monitor or NvmlMonitor()).snapshot()
    if report.error:
        yield Check("WARN", "nvml", report.error)
    elif not report.gpus:
        yield Check("WARN", "nvml", f"driver {report.driver}, no GPUs found")
    else:
        names = ", ".join(f"{g.index}: {g.name} {fmt_bytes(g.memory_total)}" for g in report.gpus)
        yield Check("OK", "nvml", f"driver {report.driver}; {names}")

    root = workspace.root
    free = protocol.free_bytes(root)
    if free is None:
        yield Check("FAIL", "disk", f"cannot read the free space of {root}")
    else:
        warning = low_space(workspace, free)
        yield Check("WARN" if warning else "OK", "disk", warning or f"{fmt_bytes(free)} free in {root}")

    yield index_check(workspace)


def unindexed_runs(workspace: Workspace, indexed: set[str]) -> list[str]:
    """Run folders in runs/ that the index does not list: a lost or replaced index."""
    try:
        names = [e.name for e in os.scandir(workspace.runs_dir) if e.is_dir() and is_run_id(e.name)]
    except FileNotFoundError:
        return []
    return sorted(set(names) - indexed)


def index_check(workspace: Workspace, hint: str = "`synthgap db rebuild` brings them back from their folders") -> Check:
    # Any command creates a missing index, empty: the run folders then say what it lost.
    if not (workspace.index_path.exists() or workspace.legacy_index_path.exists()):
        if lost := unindexed_runs(workspace, set()):
            return Check("WARN", "index", f"no index at {workspace.index_path}, but {len(lost)} run folder(s) in "
                                          f"{workspace.runs_dir}: {hint}")
        return Check("OK", "index", f"new workspace at {workspace.root}")
    from synthgap_tui.errors import StoreError
    from synthgap_tui.store import RunStore

    try:
        store = RunStore(workspace)
        n, lost = store.count(), unindexed_runs(workspace, set(store.ids()))
    except StoreError as e:
        return Check("FAIL", "index", str(e))
    if lost:
        return Check("WARN", "index", f"{n} runs in {workspace.index_path}, but {len(lost)} run folder(s) in "
                                      f"{workspace.runs_dir} are not in it: {hint}")
    return Check("OK", "index", f"{n} runs in {workspace.index_path}")
