"""ResNet-50 training step with layers 1..16 frozen (N=16) against full training (N=0).

Same batch, same optimizer (SGD, momentum), one step = forward, loss, backward,
update. With N=16 the frozen prefix runs under no_grad, so autograd neither
stores its activations nor differentiates through it. Runs on the CPU here
(224x224, batch 8); on a GPU box it uses CUDA. Last line:
``freeze16 step time ratio: 0.XX`` (target <= 0.5).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from runners.layers import Student, build_resnet  # noqa: E402

BATCH, SIZE, STEPS = 8, 224, 4


def step_time(frozen: int, x: torch.Tensor, y: torch.Tensor) -> float:
    torch.manual_seed(0)
    model = Student(build_resnet("resnet50", 100), frozen=frozen).to(x.device).train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
        if x.is_cuda:
            torch.cuda.synchronize()

    step()  # warm-up
    times = []
    for _ in range(STEPS):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x = torch.randn(BATCH, 3, SIZE, SIZE, device=device)
    y = torch.randint(0, 100, (BATCH,), device=device)
    full = step_time(0, x, y)
    frozen = step_time(16, x, y)
    print(f"ResNet-50, batch {BATCH} at {SIZE}x{SIZE} on {device}, median of {STEPS} steps")
    print(f"N=0  (train all 18 layers):   {1000 * full:8.1f} ms/step")
    print(f"N=16 (train layers 17-18):    {1000 * frozen:8.1f} ms/step")
    print(f"freeze16 step time ratio: {frozen / full:.2f}")


if __name__ == "__main__":
    main()
