"""Student architectures and the paper's layer numbering (standard library only).

Layer 1 is the stem (conv1, bn1, relu, maxpool), layers 2..L-1 the residual
blocks in order, layer L global pooling plus classifier. ResNet-50 has 18.
"""

from __future__ import annotations

BLOCKS = {
    "resnet18": (2, 2, 2, 2),
    "resnet34": (3, 4, 6, 3),
    "resnet50": (3, 4, 6, 3),
}
ARCHS = tuple(BLOCKS)


def num_layers(arch: str) -> int:
    return 1 + sum(BLOCKS[arch]) + 1
