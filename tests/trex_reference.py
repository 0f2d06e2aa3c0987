"""The t-ReX / DINO multi-crop as written with PIL and torchvision.transforms: the
reference that runners.multicrop is measured (bench/dataloader.py) and checked
(tests/test_multicrop.py) against.

1 global RandomResizedCrop(224, 0.25-1) + 8 local RandomResizedCrop(96, 0.05-0.25),
bicubic, flip, ColorJitter(0.4, 0.4, 0.2, 0.1) p 0.8, grayscale p 0.2, PIL
Gaussian blur sigma 0.1-2.0 (p 0.2 global, 0.5 local), solarisation p 0.2 global.
"""

import random

from PIL import ImageFilter, ImageOps
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class GaussianBlur:
    def __init__(self, p):
        self.p = p

    def __call__(self, img):
        if random.random() > self.p:
            return img
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(0.1, 2.0)))


class Solarization:
    def __init__(self, p):
        self.p = p

    def __call__(self, img):
        return ImageOps.solarize(img) if random.random() < self.p else img


def trex_multicrop(size=224, local_size=96, global_crops=1, local_crops=8, jitter=(0.4, 0.4, 0.2, 0.1)):
    """PIL image -> [global crops] + [local crops], each a normalised [3,s,s] tensor."""
    flip_and_colour = T.Compose([T.RandomHorizontalFlip(p=0.5),
                                 T.RandomApply([T.ColorJitter(*jitter)], p=0.8),
                                 T.RandomGrayscale(p=0.2)])
    normalize = T.Compose([T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    glob = T.Compose([T.RandomResizedCrop(size, scale=(0.25, 1.0), interpolation=InterpolationMode.BICUBIC),
                      flip_and_colour, GaussianBlur(0.2), Solarization(0.2), normalize])
    local = T.Compose([T.RandomResizedCrop(local_size, scale=(0.05, 0.25), interpolation=InterpolationMode.BICUBIC),
                       flip_and_colour, GaussianBlur(0.5), normalize])
    return lambda img: [glob(img) for _ in range(global_crops)] + [local(img) for _ in range(local_crops)]
