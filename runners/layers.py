"""Students and the paper's layer numbering: build, split into layers, freeze a prefix.

``Student`` wraps a torchvision ResNet so that its state dict keeps
torchvision's key names (``student.net.state_dict()``) while the forward pass
runs the frozen prefix (layers 1..N) without autograd.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet

from runners.archs import BLOCKS


class CosineClassifier(nn.Module):
    """logits = cos(feature, class weight) / tau (FITYMI / t-ReX).

    The parameter is named ``weight`` so checkpoints keep the key ``fc.weight``.
    """

    def __init__(self, in_features: int, num_classes: int, tau: float):
        super().__init__()
        self.tau = tau
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1)) / self.tau


def build_resnet(arch: str, num_classes: int, small_input: bool = False, tau: float = 0.0,
                 width: int = 64) -> resnet.ResNet:
    """A torchvision ResNet; ``width`` < 64 narrows every stage (the CPU demo's
    student) while keeping torchvision's module names and the layer numbering."""
    block = resnet.Bottleneck if arch == "resnet50" else resnet.BasicBlock
    blocks = list(BLOCKS[arch])
    net = resnet.ResNet(block, blocks, num_classes=num_classes)
    if width != 64:
        net.inplanes = width
        net.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        net.bn1 = nn.BatchNorm2d(width)
        for i, n in enumerate(blocks):
            setattr(net, f"layer{i + 1}", net._make_layer(block, width * 2**i, n, stride=1 if i == 0 else 2))
        net.fc = nn.Linear(width * 8 * block.expansion, num_classes)
        for m in net.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
    if small_input:  # CIFAR-style stem for 32x32 inputs
        net.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        net.maxpool = nn.Identity()
    if tau > 0:
        net.fc = CosineClassifier(net.fc.in_features, num_classes, tau)
    return net


def layer_groups(net: resnet.ResNet) -> list[list[tuple[str, nn.Module]]]:
    """The paper's layers as lists of (torchvision name, module), 1-based order."""
    groups = [[("conv1", net.conv1), ("bn1", net.bn1), ("relu", net.relu), ("maxpool", net.maxpool)]]
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        for i, block in enumerate(getattr(net, stage)):
            groups.append([(f"{stage}.{i}", block)])
    groups.append([("avgpool", net.avgpool), ("fc", net.fc)])
    return groups


def layer_prefixes(net: resnet.ResNet) -> list[tuple[str, ...]]:
    """State-dict key prefixes of each layer (index 0 = layer 1)."""
    return [tuple(name + "." for name, _ in group) for group in layer_groups(net)]


def layer_param_counts(net: resnet.ResNet) -> list[int]:
    return [sum(p.numel() for _, m in g for p in m.parameters()) for g in layer_groups(net)]


def build_named(arch: str, num_classes: int) -> nn.Module:
    """A randomly initialised torchvision ('torchvision:NAME') or timm ('timm:NAME')
    classifier: students outside the paper's layer numbering."""
    import difflib

    source, _, name = arch.partition(":")
    if source == "torchvision":
        from torchvision import models

        known = models.list_models(module=models)
        if name not in known:
            hint = difflib.get_close_matches(name, known, n=3)
            raise ValueError(f"arch {arch!r}: torchvision has no classification model {name!r}"
                             + (f" (did you mean {', '.join(hint)}?)" if hint else ""))
        return models.get_model(name, weights=None, num_classes=num_classes)
    import timm

    if not timm.is_model(name):
        hint = difflib.get_close_matches(name, timm.list_models(), n=3)
        raise ValueError(f"arch {arch!r}: timm has no model {name!r}" + (f" (did you mean {', '.join(hint)}?)" if hint else ""))
    return timm.create_model(name, pretrained=False, num_classes=num_classes)


def classifier_of(net: nn.Module) -> nn.Module:
    """The classification head: timm's get_classifier(), a ResNet's fc, else the last linear layer."""
    if hasattr(net, "get_classifier"):
        return net.get_classifier()
    if isinstance(net, resnet.ResNet):
        return net.fc
    return [m for m in net.modules() if isinstance(m, nn.Linear)][-1]


class Student(nn.Module):
    """A classifier whose layers 1..frozen (the paper's numbering, ResNets only)
    run under no_grad with frozen parameters; any other model runs whole."""

    def __init__(self, net: nn.Module, frozen: int = 0, frozen_bn: str = "frozen"):
        super().__init__()
        self.net = net
        self.groups = layer_groups(net) if isinstance(net, resnet.ResNet) else [[("net", net)]]
        if not 0 <= frozen < len(self.groups):
            raise ValueError(f"freeze_layers must be 0..{len(self.groups) - 1}, got {frozen}")
        self.frozen = frozen
        self.frozen_bn = frozen_bn
        for group in self.groups[:frozen]:
            for _, module in group:
                module.requires_grad_(False)

    def train(self, mode: bool = True) -> "Student":
        super().train(mode)
        if mode and self.frozen_bn == "frozen":
            # timm's freeze(): frozen layers keep their BatchNorm statistics.
            for group in self.groups[: self.frozen]:
                for _, module in group:
                    module.eval()
        return self

    def _run(self, groups, x: torch.Tensor) -> torch.Tensor:
        for group in groups:
            for name, module in group:
                x = module(x)
                if name == "avgpool":
                    x = torch.flatten(x, 1)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frozen:
            with torch.no_grad():
                x = self._run(self.groups[: self.frozen], x)
        return self._run(self.groups[self.frozen:], x)


def load_prefix(net: resnet.ResNet, state: dict, n_layers: int, reinit: bool, source: str) -> list[str]:
    """Copy layers 1..n from ``state``; layers n+1.. are re-initialised or, with
    ``reinit=False``, loaded too where shapes match. Returns the keys loaded."""
    prefixes = layer_prefixes(net)
    own = net.state_dict()
    wanted = [p for layer in prefixes[:n_layers] for p in layer]
    if not reinit:
        wanted = [p for layer in prefixes for p in layer]
    loaded = {}
    for key, value in own.items():
        if not key.startswith(tuple(wanted)):
            continue
        if key not in state:
            in_prefix = any(key.startswith(p) for layer in prefixes[:n_layers] for p in layer)
            if in_prefix:
                raise ValueError(f"{source} has no weights for {key}: is it the same architecture?")
            continue
        if state[key].shape != value.shape:
            in_prefix = any(key.startswith(p) for layer in prefixes[:n_layers] for p in layer)
            if in_prefix:
                raise ValueError(f"{source}: {key} has shape {tuple(state[key].shape)}, "
                                 f"the student expects {tuple(value.shape)}")
            continue  # e.g. a classifier for another number of classes: keep fresh
        loaded[key] = state[key]
    net.load_state_dict(loaded, strict=False)
    return sorted(loaded)


def load_state_file(path: str | Path, field: str = "init_from") -> dict:
    """A state dict from a SynthGap checkpoint or a plain torchvision weights file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{field}: no checkpoint at {path}")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return obj


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
