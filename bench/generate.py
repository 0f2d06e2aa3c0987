"""Generation throughput: the runner against a bare loop over the same tiny pipeline.

The bare loop calls the same StableDiffusionPipeline with the same batches,
prompts and per-image generators and saves each JPEG synchronously. The
runner encodes and saves in a thread pool while the next batch denoises.
Measured twice: with the real JPEG encoder, and with a deliberately slow one
(an extra 40 ms per image) that shows the overlap. Model loading is excluded
from both. Last line: ``generate speedup vs bare loop: X.XXx`` (real encoder).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from runners import generate  # noqa: E402
from tiny_sd import build_tiny_sd  # noqa: E402

N_CLASSES, PER_CLASS, BATCH, STEPS, SIZE = 4, 16, 8, 4, 64
SLOW_S = 0.04


def spec(model: Path, classes: Path) -> dict:
    return {"id": "b", "name": "b", "kind": "generate", "model": str(model), "classes": str(classes),
            "images_per_class": PER_CLASS, "batch_size": BATCH, "steps": STEPS, "width": SIZE, "height": SIZE,
            "seed": 3}


def runner_rate(root: Path, model: Path, classes: Path, tag: str) -> float:
    run_dir = root / f"runner-{tag}"
    run_dir.mkdir()
    (run_dir / "spec.json").write_text(json.dumps(spec(model, classes)))
    assert generate.main(generate.get_args_parser().parse_args(["--run-dir", str(run_dir)])) == 0
    return json.loads((run_dir / "results.json").read_text())["images_per_s"]


def bare_rate(root: Path, model: Path, classes: Path, tag: str, save) -> float:
    cfg = generate.KIND.resolve(spec(model, classes))
    items = generate.plan_items(cfg, generate.load_classes(str(classes)))
    backend = generate.load_backend(cfg, torch.device("cpu"))
    out = root / f"bare-{tag}"
    t0 = time.perf_counter()
    for k in range(0, len(items), BATCH):
        batch = items[k:k + BATCH]
        for it, img in zip(batch, backend(batch, lambda: False)):
            path = out / it.filename("jpg")
            path.parent.mkdir(parents=True, exist_ok=True)
            save(img, path, "jpg")
    return len(items) / (time.perf_counter() - t0)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = build_tiny_sd(root / "models")
        classes = root / "classes.csv"
        classes.write_text("id,name,definition\n" + "".join(f"c{i},thing {i},a thing\n" for i in range(N_CLASSES)))
        real_save = generate.save_image

        def slow_save(img, path, fmt):
            time.sleep(SLOW_S)  # stands in for a slow encoder or a slow network file system
            real_save(img, path, fmt)

        bare = bare_rate(root, model, classes, "real", real_save)
        ours = runner_rate(root, model, classes, "real")
        generate.save_image = slow_save
        try:
            bare_slow = bare_rate(root, model, classes, "slow", slow_save)
            ours_slow = runner_rate(root, model, classes, "slow")
        finally:
            generate.save_image = real_save
    print(f"{N_CLASSES * PER_CLASS} images of {SIZE}x{SIZE}, batch {BATCH}, {STEPS} steps, tiny SD pipeline, CPU")
    print(f"real encoder:  runner {ours:6.2f} img/s   bare loop {bare:6.2f} img/s")
    print(f"slow encoder (+{1000 * SLOW_S:.0f} ms/image):  runner {ours_slow:6.2f} img/s   bare loop {bare_slow:6.2f} "
          f"img/s   -> {ours_slow / bare_slow:.2f}x")
    print(f"generate speedup vs bare loop: {ours / bare:.2f}x")


if __name__ == "__main__":
    main()
