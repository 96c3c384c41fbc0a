"""Optimizer step: the engine's optimizer (``engine.loop.build_optimizer``) against torch's default
implementation of the same optimizer, over ResNet18's parameters, in the same process.

Only the update is timed (``optimizer.step()`` after one backward pass whose gradients stay put),
so the figure is what every training step pays on top of its forward and backward passes; with a
small batch or small images it is a large share of the step.

    .venv/bin/python bench/optimizer_step.py                     # CPU, Adam, AdamW and SGD
    .venv/bin/python bench/optimizer_step.py --device cuda       # a GPU

Prints ms per step for both and the ratio default / engine.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.config import RunConfig  # noqa: E402
from engine.loop import build_optimizer  # noqa: E402
from engine.models import build_model  # noqa: E402

DEFAULTS = {
    "adam": lambda params, c: torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay),
    "adamw": lambda params, c: torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay),
    "sgd": lambda params, c: torch.optim.SGD(params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay),
}


def time_steps(optimizer: torch.optim.Optimizer, steps: int, device: str) -> float:
    for _ in range(3):  # the first steps allocate the optimizer's state
        optimizer.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    begun = time.perf_counter()
    for _ in range(steps):
        optimizer.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - begun) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()

    print(f"{args.model} on {args.device} ({platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads), {args.steps} steps each")
    for name, default in DEFAULTS.items():
        config = RunConfig.from_dict({"data_dir": ".", "model": args.model, "optimizer": name})
        figures = {}
        for label, make in (("default", lambda m, c=config, d=default: d(list(m.parameters()), c)),
                            ("engine", lambda m, c=config: build_optimizer(m, c))):
            torch.manual_seed(0)
            model = build_model(config.model, num_classes=2).to(args.device)
            model(torch.randn(4, 3, 32, 32, device=args.device)).sum().backward()
            optimizer = make(model)
            figures[label] = time_steps(optimizer, args.steps, args.device)
            fused = optimizer.defaults.get("fused")
            print(f"{name:<6} {label:<8} {figures[label]:8.1f} ms/step  (fused={fused})")
        print(f"{name:<6} ratio default / engine: {figures['default'] / figures['engine']:.1f}x")


if __name__ == "__main__":
    main()
