"""`synthgap demo`: the whole study on a CPU in minutes, from what assets/ ships.

Prepares a workspace (the demo's real images and its retrieval pool written
from the shipped npz, a config for CPU slots, the demo spec with the shipped
generator), submits the demo experiment unless it is already there, and opens
the app on it (or, with ``--no-tui``, waits and prints the results table).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from importlib.resources import files
from pathlib import Path

import synthgap_assets
from runners import protocol
from synthgap_tui.workspace import Workspace

DEMO_DATA = synthgap_assets.path("fashion-mnist-demo.npz")
GENERATOR = synthgap_assets.path("demo-generator")
SPEC_TEMPLATE = Path(str(files(__name__) / "demo.toml"))
EXPERIMENT = "demo"
DATASET_DIR = "datasets/fashion-mnist"
POOL_DIR = "datasets/fashion-pool"  # the retrieval pool: webdataset shards, and the classes it is captioned with
POOL_SHARD = 300

# --quick: the same experiment, cut down for a smoke test (tests/test_demo.py).
QUICK = {"images_per_class = 100": "images_per_class = 6", "batch_size = 64": "batch_size = 16", "steps = 12": "steps = 3", "epochs = 4": "epochs = 1",
         "freeze_layers = [2, 4, 6, 8, 9]": "freeze_layers = [4, 9]",
         "fraction = [1.0, 0.5, 0.25, 0.125]": "fraction = [1.0, 0.25]",
         "report_last = 2": "report_last = 1\nmax_steps_per_epoch = 3"}


class DemoError(Exception):
    pass


def _load_data():
    if not DEMO_DATA.is_file():
        raise DemoError(f"{DEMO_DATA} is missing: run `python assets/make_demo_data.py` (needs Debian's "
                        "dataset-fashion-mnist)")
    import numpy as np

    return np.load(DEMO_DATA)


def _png32(x) -> bytes:
    """The generator was trained on 28->32 bilinear resizes: real images match."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(x).resize((32, 32), Image.BILINEAR).save(buf, "PNG")
    return buf.getvalue()


def _write_whole(target: Path, fill) -> Path:
    """``fill(tmp)`` writes a folder that then appears as ``target`` at once (once: kept after)."""
    if target.is_dir():
        return target
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    fill(tmp)
    os.replace(tmp, target)
    return target


def write_real_data(ws: Workspace) -> Path:
    """The demo's real train/val ImageFolders (32x32 PNG)."""
    def fill(tmp: Path) -> None:
        data = _load_data()
        classes = [str(c) for c in data["classes"]]
        for split, xs, ys in (("train", data["train_x"], data["train_y"]), ("val", data["eval_x"], data["eval_y"])):
            for c in classes:
                (tmp / split / c).mkdir(parents=True)
            for i, (x, y) in enumerate(zip(xs, ys)):
                (tmp / split / classes[y] / f"{i:05d}.png").write_bytes(_png32(x))

    return _write_whole(ws.root / DATASET_DIR, fill)


def write_pool(ws: Workspace) -> Path:
    """The retrieval pool, as img2dataset would write it: images of the generator's own
    training data with their captions, and the classes file naming each class as its
    captions do."""
    def fill(tmp: Path) -> None:
        from runners.pool import write_shard

        data = _load_data()
        classes = [str(c) for c in data["classes"]]
        samples = [(f"{i:09d}", str(caption), _png32(x))
                   for i, (x, caption) in enumerate(zip(data["pool_x"], data["pool_captions"]))]
        for start in range(0, len(samples), POOL_SHARD):
            write_shard(tmp / f"{start // POOL_SHARD:05d}.tar", samples[start:start + POOL_SHARD], ext="png")
        names = {int(y): str(c) for y, c in zip(data["pool_y"], data["pool_captions"])}
        # Full-text search finds "Shirt" in "T-shirt/top" too; a query (the authors' class_map) says what is meant.
        queries = {"Shirt": 'shirt NOT "t-shirt"'}
        (tmp / "classes.json").write_text(json.dumps(
            [{"id": c, "name": names[y], **({"query": queries[names[y]]} if names[y] in queries else {})}
             for y, c in enumerate(classes)], indent=1))

    return _write_whole(ws.root / POOL_DIR, fill)


def write_spec(ws: Workspace, quick: bool) -> Path:
    if not (GENERATOR / "synthgap_generator.json").is_file():
        raise DemoError(f"the demo generator {GENERATOR} is missing: see assets/train-demo-generator.toml")
    pool = ws.root / POOL_DIR
    text = SPEC_TEMPLATE.read_text()
    for key, value in (("GENERATOR", GENERATOR), ("POOL", pool), ("POOL_CLASSES", pool / "classes.json")):
        text = text.replace(f'"@{key}@"', json.dumps(str(value)))
    if quick:
        for old, new in QUICK.items():
            text = text.replace(old, new)
    path = ws.root / ("demo-quick.toml" if quick else "demo.toml")
    path.write_text(text)
    return path


def write_config(ws: Workspace) -> None:
    if not ws.config_path.exists():
        ws.config_path.write_text(
            "# Written by `synthgap demo`. Two CPU runs at a time (one thread each on a 2-core machine).\n"
            "[supervisor]\ncpu_slots = 2\n")


def start(ws: Workspace, quick: bool = False) -> tuple[list[str], bool]:
    """Prepare the workspace and submit the demo unless it is already there.
    Returns the run ids of the demo experiment and whether they were just submitted."""
    from synthgap_tui import runs as lifecycle
    from synthgap_tui.specs import load_spec
    from synthgap_tui.store import RunStore
    from synthgap_tui.supervisor import ensure_supervisor

    ws.ensure()
    write_real_data(ws)
    write_pool(ws)
    write_config(ws)
    spec_path = write_spec(ws, quick)
    store = RunStore(ws)
    existing = store.list(experiment=EXPERIMENT)
    if existing:
        ensure_supervisor(ws)
        return [r["id"] for r in existing], False
    exp = load_spec(spec_path)
    ids = lifecycle.submit(exp, store, spec_text=spec_path.read_text())
    ensure_supervisor(ws)
    return ids, True


# Side by side at the top of the results: real, retrieved real and synthetic training images.
BASELINES = ("real-only", "retrieved-only", "synth-only")


def baselines_first(runs: list[dict]) -> list[dict]:
    rank = {name: i for i, name in enumerate(BASELINES)}
    return sorted(runs, key=lambda r: rank.get(r["name"], len(rank)))  # stable: the rest keep their order


def wait(ws: Workspace, ids: list[str], on_tick=None, poll: float = 2.0) -> list[dict]:
    """Until every run has ended or is blocked behind one that did not finish."""
    from synthgap_tui.store import RunStore

    store = RunStore(ws)
    while True:
        runs = [store.get(i) for i in ids]
        if on_tick:
            on_tick(runs)
        if all(r["state"] in protocol.ENDED_STATES | {protocol.BLOCKED} for r in runs):
            return runs
        time.sleep(poll)
