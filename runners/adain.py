"""AdaIN style transfer (Huang & Belongie, 2017), the network of Stylized-ImageNet.

The encoder is a normalised VGG-19 up to relu4_1 and the decoder its mirror,
laid out as ``nn.Sequential`` so the published weight files (a state dict
of the full normalised VGG-19, ``vgg_normalised.pth``, and ``decoder.pth``)
load as they are. AdaIN itself: the content features, normalised per
channel, take the style features' per-channel mean and std.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# VGG-19 up to relu4_1: channels per 3x3 conv, "M" a 2x2 max-pool.
_ENCODER = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512)
# The decoder mirrors it from 512 channels back to RGB, "U" a 2x nearest upsampling.
_DECODER = (256, "U", 256, 256, 256, 128, "U", 128, 64, "U", 64, 3)
EPS = 1e-5


def _conv(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.ReflectionPad2d(1), nn.Conv2d(c_in, c_out, 3)]


def encoder() -> nn.Sequential:
    # The leading 1x1 conv is the published model's input normalisation (from 0..1 RGB).
    layers: list[nn.Module] = [nn.Conv2d(3, 3, 1)]
    c = 3
    for item in _ENCODER:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
        else:
            layers += [*_conv(c, item), nn.ReLU()]
            c = item
    return nn.Sequential(*layers)


def decoder() -> nn.Sequential:
    layers: list[nn.Module] = []
    c = 512
    for i, item in enumerate(_DECODER):
        if item == "U":
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            continue
        layers += _conv(c, item)
        if i < len(_DECODER) - 1:
            layers.append(nn.ReLU())
        c = item
    return nn.Sequential(*layers)


def mean_std(feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and std of (N, C, H, W) features."""
    flat = feat.flatten(2)
    return flat.mean(2)[..., None, None], (flat.var(2) + EPS).sqrt()[..., None, None]


def adain(content: torch.Tensor, style_mean: torch.Tensor, style_std: torch.Tensor) -> torch.Tensor:
    c_mean, c_std = mean_std(content)
    return (content - c_mean) / c_std * style_std + style_mean


def blend(content: torch.Tensor, style_mean: torch.Tensor, style_std: torch.Tensor, alpha: float) -> torch.Tensor:
    """Stylized-ImageNet's alpha: 1 = the style's statistics, 0 = the content features unchanged."""
    if alpha == 0:
        return content
    return alpha * adain(content, style_mean, style_std) + (1 - alpha) * content


def _fold(w: torch.Tensor, dim: int, odd: int) -> torch.Tensor:
    """Merge a 3-tap kernel axis into the 2 taps that one phase of a 2x upsampled map sees:
    output 2y reads upsampled pixels 2y-1, 2y, 2y+1, which are inputs y-1, y, y; output
    2y+1 reads inputs y, y, y+1."""
    a, b, c = w.unbind(dim)
    return torch.stack((a, b + c) if odd == 0 else (a + b, c), dim)


class UpsampleConv(nn.Module):
    """``Upsample(2, nearest) -> ReflectionPad2d(1) -> conv`` (3x3) as four 2x2 convolutions at
    the input's resolution, one per output phase: the same function with 4 multiply-adds per
    output and weight pair where the upsampled form spends 9."""

    PHASES = ((0, 0), (0, 1), (1, 0), (1, 1))

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        w = conv.weight.detach()
        self.weights = nn.ParameterList([nn.Parameter(_fold(_fold(w, 2, a), 3, b), requires_grad=False)
                                         for a, b in self.PHASES])
        self.bias = nn.Parameter(conv.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        # Reflecting the upsampled map by one pixel repeats its edge: replicate padding of x.
        xp = F.pad(x, (1, 1, 1, 1), mode="replicate")
        ys = [F.conv2d(xp[:, :, a:a + h + 1, b:b + w + 1], weight, self.bias)
              for (a, b), weight in zip(self.PHASES, self.weights)]
        k = ys[0].shape[1]
        out = torch.empty((n, k, 2 * h, 2 * w), dtype=ys[0].dtype, device=x.device, memory_format=torch.channels_last)
        phases = out.permute(0, 2, 3, 1).view(n, h, 2, w, 2, k)
        for (a, b), y in zip(self.PHASES, ys):
            phases[:, :, a, :, b].copy_(y.permute(0, 2, 3, 1))
        return out


def for_inference(seq: nn.Sequential) -> nn.Sequential:
    """``seq`` computing the same, faster: upsampling convolutions at the input's resolution
    and ReLUs in place. The published layout stays what weight files load into."""
    mods, layers, i = list(seq), [], 0
    while i < len(mods):
        m = mods[i]
        if isinstance(m, nn.Upsample):  # Upsample, ReflectionPad2d, Conv2d
            layers.append(UpsampleConv(mods[i + 2]))
            i += 3
            continue
        layers.append(nn.ReLU(inplace=True) if isinstance(m, nn.ReLU) else m)
        i += 1
    return nn.Sequential(*layers).eval()


class Stylizer(nn.Module):
    def __init__(self, enc: nn.Sequential, dec: nn.Sequential):
        super().__init__()
        self.encoder, self.decoder = enc.eval(), dec.eval()

    @classmethod
    def from_files(cls, vgg_path: str | Path, decoder_path: str | Path) -> "Stylizer":
        """The published files: the full normalised VGG-19 (only the layers up to
        relu4_1 are used) and the decoder."""
        enc, dec = encoder(), decoder()
        vgg = _state(vgg_path, "vgg")
        wanted = enc.state_dict().keys()
        missing = [k for k in wanted if k not in vgg]
        if missing:
            raise ValueError(f"{vgg_path} is not a normalised VGG-19 in the AdaIN format (no {missing[0]})")
        enc.load_state_dict({k: vgg[k] for k in wanted})
        try:
            dec.load_state_dict(_state(decoder_path, "decoder"))
        except RuntimeError as e:
            raise ValueError(f"{decoder_path} is not an AdaIN decoder: {str(e).splitlines()[0]}") from None
        return cls(enc, dec)

    def for_inference(self) -> "Stylizer":
        return Stylizer(for_inference(self.encoder), for_inference(self.decoder))

    @torch.no_grad()
    def style_stats(self, styles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return mean_std(self.encoder(styles))

    @torch.no_grad()
    def forward(self, content: torch.Tensor, style_mean: torch.Tensor, style_std: torch.Tensor,
                alpha: float = 1.0) -> torch.Tensor:
        return self.decoder(blend(self.encoder(content), style_mean, style_std, alpha))


def _state(path: str | Path, what: str) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"the AdaIN {what} weights {path} do not exist") from None
    except Exception as e:  # a truncated or foreign file
        raise ValueError(f"{path} could not be read as {what} weights: {e}") from None
    return state.get("state_dict", state) if isinstance(state, dict) else state
