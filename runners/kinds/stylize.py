"""``kind = "stylize"``: AdaIN style transfer of a dataset (runner: ``runners/stylize.py``).

Mind the Gap's Table 3 re-renders the real and the synthetic training sets
with the Stylized-ImageNet technique (paintings as styles, alpha 1.0) to
take local texture cues away. The weights are local files in the published
AdaIN format (``vgg_normalised.pth``, ``decoder.pth``).
"""

from __future__ import annotations

from runners import protocol
from runners.kinds.base import Chart, Field, Kind, Metric, Ref

F = Field
FIELDS = {
    "source": F(str, help="the ImageFolder to stylize (a dataset's train split, or a generate run)",
                ref=Ref(to="source_dir", split="train", artifact="dataset")),
    "styles": F(str, help="a folder of style images (e.g. Painter by Numbers paintings), searched recursively",
                path="dir"),
    "vgg": F(str, help="the normalised VGG-19 weights in the AdaIN format (vgg_normalised.pth)", path="file"),
    "decoder": F(str, help="the AdaIN decoder weights (decoder.pth)", path="file"),
    "alpha": F(float, 1.0, "style strength: 1 = the style's feature statistics, 0 = the content's", min=0, max=1),
    "image_size": F(int, 224, "output size: images are resized (shorter side) to 8/7 of it and centre-cropped "
                              "to it (256, then 224, as Stylized-ImageNet); styles are their largest centre "
                              "square resized to it", min=16),
    "batch_size": F(int, 16, "images stylized together", min=1),
    "workers": F(int, 4, "data loader processes decoding the images", min=0),
    "format": F(str, "png", "image file format (Stylized-ImageNet writes PNG: JPEG would add local texture "
                            "of its own)", choices=("png", "jpg")),
    "quality": F(int, 95, "JPEG quality (format = \"jpg\")", min=1, max=100),
    "amp": F(bool, True, "half precision on CUDA"),
}


def check(p: dict) -> list:
    return [] if "source" in p else [("source", "needs the images to stylize")]


KIND = Kind(
    name="stylize",
    runner="runners.stylize",
    help="re-render an ImageFolder with AdaIN style transfer (Stylized-ImageNet)",
    fields=FIELDS,
    artifacts={"dataset": "the stylized ImageFolder, data/train/"},
    metrics=(Metric("images", "Images", 0), Metric("images_per_s", "Images/s", 2)),
    charts=(Chart("images/s", protocol.PROGRESS, "done", (("rate", "img/s"),)),),
    check=check,
)
