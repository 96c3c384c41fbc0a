"""Training throughput: leuktui's engine against a reference loop written the way the lab's
report does it, same model, same synthetic data, same process.

Reference: a Dataset that opens each image with PIL and applies torchvision transforms per item
(ToTensor, Resize, random flips, RandomRotation, Normalize) in a DataLoader, fp32, NCHW; it is
timed with 0 and with N loader workers and the faster counts.
Engine: images decoded once into the uint8 cache (timed separately: a one-off per dataset), then
whole batches augmented on the device, channels-last, and the default precision: bf16 autocast on
CUDA and on CPUs with native bf16 (AMX / AVX512-BF16). It is also timed in fp32.

    .venv/bin/python bench/train_throughput.py                   # CPU: ResNet18 at 128 px
    .venv/bin/python bench/train_throughput.py --size 450 --batch-size 128 --steps 60   # GPU

Prints images/s for both and the ratio engine / reference.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.config import RunConfig  # noqa: E402
from engine.datasets import load_split  # noqa: E402
from engine.device import make_precision  # noqa: E402
from engine.loop import TrainState, loss_function, train_one_epoch  # noqa: E402
from engine.models import build_model  # noqa: E402
from engine.pipeline import BatchTransform, Preprocess, batch_indices, decode_images  # noqa: E402
from engine.synth import make_dataset  # noqa: E402


class ReportDataset(Dataset):
    """The lab report's LeukemiaLoader: open with PIL, transform per item."""

    def __init__(self, paths, labels, size):
        self.paths, self.labels = paths, labels
        self.transform = transforms.Compose([
            transforms.ToTensor(),
            transforms.Resize((size, size)),
            transforms.RandomHorizontalFlip(),
            transforms.RandomVerticalFlip(),
            transforms.RandomRotation(degrees=20),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ])

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        image = Image.open(self.paths[index])
        return self.transform(image), self.labels[index]


def reference_throughput(paths, labels, args, device, workers) -> float:
    torch.manual_seed(0)
    model = build_model("resnet18", 1).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = torch.nn.BCEWithLogitsLoss()
    loader = DataLoader(ReportDataset(paths, labels, args.size), batch_size=args.batch_size, shuffle=True,
                        num_workers=workers, drop_last=True, persistent_workers=workers > 0)
    model.train()
    seen, started = 0, None
    step = 0
    while step < args.warmup + args.steps:
        for x, y in loader:
            if step == args.warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                started, seen = time.perf_counter(), 0
            x, y = x.to(device), y.to(device).float()
            loss = criterion(model(x)[:, 0], y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss.item()  # the report logs every step's loss
            seen += len(y)
            step += 1
            if step >= args.warmup + args.steps:
                break
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - started)


def engine_throughput(samples, labels, args, device, amp: str = "auto", compiled: bool = False) -> tuple[float, float, str]:
    config = RunConfig.from_dict({"image_size": args.size, "batch_size": args.batch_size, "workers": os.cpu_count() or 1, "amp": amp})
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        images = decode_images(samples, Preprocess.from_config(config), cache_dir=Path(cache), workers=config.workers)
        images = np.asarray(images)
        decode_seconds = time.perf_counter() - started
    torch.manual_seed(0)
    model = build_model(args.model, 1).to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    net = torch.compile(model) if compiled else model
    precision = make_precision(device, amp)
    generator = torch.Generator().manual_seed(0)
    transform = BatchTransform.for_training(config)
    loss_fn = loss_function(config)
    state = TrainState()

    def epoch_of(steps: int) -> dict:
        batches = batch_indices(labels, args.batch_size, generator, shuffle=True)
        while len(batches) < steps:
            batches += batch_indices(labels, args.batch_size, generator, shuffle=True)
        batches = [b for b in batches if len(b) == args.batch_size][:steps]
        return train_one_epoch(net, optimizer, loss_fn, images, labels, batches, transform, generator, device, precision, state)

    epoch_of(args.warmup)
    timed = epoch_of(args.steps)
    return timed["images"] / timed["seconds"], decode_seconds, precision.name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="training image side")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--images", type=int, default=512, help="synthetic 450x450 images to train on")
    parser.add_argument("--steps", type=int, default=24, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--ref-workers", type=int, default=os.cpu_count() or 1, help="DataLoader workers for the reference")
    parser.add_argument("--model", default="resnet18", help="resnet18|resnet50|resnet152 (the engine's; the reference is always ResNet18)")
    parser.add_argument("--compile", action="store_true", help="also time the engine with torch.compile")
    parser.add_argument("--engine-only", action="store_true", help="skip the reference loop (the GPU check times the engine alone)")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"{platform.processor() or platform.machine()} x{os.cpu_count()}"
    print(f"device: {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"{args.model}, {args.size} px, batch {args.batch_size}, {args.steps} timed steps after {args.warmup} warm-up")

    with tempfile.TemporaryDirectory() as tmp:
        root = make_dataset(Path(tmp) / "cells", n_train=args.images, n_valid=2, n_test=2, size=450, seed=0, workers=os.cpu_count() or 1)
        split = load_split(root, "train")
        paths = [str(s.path) for s in split.samples]
        labels = np.asarray(split.labels, dtype=np.int64)

        reference = {}
        if not args.engine_only:
            for workers in sorted({0, args.ref_workers}):
                reference[workers] = reference_throughput(paths, labels, args, device, workers)
                print(f"reference (PIL + torchvision per item, {workers} workers): {reference[workers]:8.1f} img/s")
            fp32, _, _ = engine_throughput(split.samples, labels, args, device, amp="off")
            print(f"engine, fp32 (cache + batch augment, channels-last): {fp32:8.1f} img/s")
        engine, decode_seconds, precision = engine_throughput(split.samples, labels, args, device)
        print(f"engine, {precision} autocast (the default):           {engine:8.1f} img/s  "
              f"(one-off decode of {len(paths)} images: {decode_seconds:.1f} s)")
        if args.compile:
            compiled, _, _ = engine_throughput(split.samples, labels, args, device, compiled=True)
            print(f"engine, {precision} autocast, torch.compile:         {compiled:8.1f} img/s")
    if reference:
        best_reference = max(reference.values())
        print(f"ratio engine / best reference: {engine / best_reference:.2f}x (fp32 engine: {fp32 / best_reference:.2f}x)")


if __name__ == "__main__":
    main()
