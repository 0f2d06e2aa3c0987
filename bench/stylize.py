"""The batched stylize runner against a one-image-at-a-time loop.

The reference is how the original Stylized-ImageNet script works: for each
content image, load it and its (randomly drawn) style image, encode both,
AdaIN, decode, save. The runner does the same work with the same AdaIN
weights (random, in the published format), images and style draw, in
batches, computing each style's statistics once, running the decoder's
upsampling convolutions at low resolution and saving in a thread. The
figure is what this CPU gives; the workload belongs on a GPU, where batching
is what pays, and no target is set for it here.
Both run here, one after the other; the runner's time is its own clock (from
its first batch), as the reference's excludes loading. Decoding stays in the
main process (``workers = 0``): on a 2-core box a loader process costs more
than it gives. Last line: ``stylize speedup: X.XXx``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import torch  # noqa: E402

from imagegen import make_image_folder  # noqa: E402
from runners import adain, stylize  # noqa: E402
from runners.data import load_rgb, scan_folder  # noqa: E402

IMAGES, CLASSES, STYLES, SIZE, BATCH = 48, 4, 8, 128, 8
FORMAT = stylize.KIND.fields["format"].default


def one_at_a_time(net: adain.Stylizer, content: Path, styles: list[str], chosen: list[int], out: Path) -> float:
    samples = scan_folder(content).samples
    start = time.perf_counter()
    for i, (path, _) in enumerate(samples):
        c = stylize.content_image(load_rgb(path), SIZE)[None]
        s = stylize.square(load_rgb(styles[chosen[i]]), SIZE)[None]
        with torch.no_grad():
            mean, std = net.style_stats(s)
            img = net(c, mean, std, 1.0)[0]
        target = out / Path(path).parent.name / f"{Path(path).stem}.{FORMAT}"
        stylize._save(img, target, FORMAT, 95)
    return time.perf_counter() - start


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        torch.manual_seed(0)
        torch.save(adain.encoder().state_dict(), tmp / "vgg.pth")
        torch.save(adain.decoder().state_dict(), tmp / "decoder.pth")
        content = make_image_folder(tmp / "content", CLASSES, IMAGES // CLASSES, size=(160, 140), seed=1)
        make_image_folder(tmp / "styles", 1, STYLES, size=(180, 150), seed=2)
        net = adain.Stylizer.from_files(tmp / "vgg.pth", tmp / "decoder.pth")
        styles = stylize.style_images(str(tmp / "styles"))
        chosen = stylize.draw_styles(IMAGES, len(styles), seed=0)

        run_dir = tmp / "run"
        run_dir.mkdir()
        (run_dir / "spec.json").write_text(json.dumps({
            "id": "bench", "name": "bench", "kind": "stylize", "source_dir": str(content),
            "styles": str(tmp / "styles"),
            "vgg": str(tmp / "vgg.pth"), "decoder": str(tmp / "decoder.pth"), "image_size": SIZE,
            "batch_size": BATCH, "workers": 0, "seed": 0}))
        start = time.perf_counter()
        code = stylize.main(stylize.get_args_parser().parse_args(["--run-dir", str(run_dir)]))
        wall = time.perf_counter() - start
        assert code == 0, (run_dir / "events.jsonl").read_text()[-500:]
        # The runner's own clock starts at its first batch: model loading and the provenance
        # record (pip freeze) are outside it, as loading is outside the reference's.
        batched = IMAGES / json.loads((run_dir / "results.json").read_text())["images_per_s"]
        reference = one_at_a_time(net, content, styles, chosen, tmp / "reference")
    print(f"{IMAGES} images at {SIZE}px, {STYLES} styles, AdaIN with random weights, CPU ({torch.get_num_threads()} "
          f"threads)")
    print(f"one at a time (Stylized-ImageNet's loop): {reference:6.2f} s ({IMAGES / reference:5.1f} images/s)")
    print(f"stylize runner (batch {BATCH}):           {batched:6.2f} s ({IMAGES / batched:5.1f} images/s; "
          f"{wall:.2f} s with start-up)")
    print(f"stylize speedup: {reference / batched:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
