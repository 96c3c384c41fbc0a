"""Checks a run's config against this machine before it is recorded: what can be known without
torch and in well under a second (the dataset folder, its CSVs and layout, the test CSV, the
pretrained file, the device), so a typo is refused at ``queue`` time instead of failing overnight.
The worker still checks every image when it decodes them.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.config import ConfigError, RunConfig, check_model_allowed
from engine.datasets import DatasetError, class_problem, load_split, load_test


def check_config(config: RunConfig, *, gpus: list[int] | None = None) -> None:
    """Raise ``ConfigError`` naming the field whose value cannot work here.

    ``gpus`` are the GPUs that will run it (None: do not check the device, e.g. runs that go to a
    cluster's nodes).
    """
    check_model_allowed(config.model)
    root = Path(config.data_dir)
    for name in ("train", "valid"):
        try:
            split = load_split(root, name)
        except DatasetError as exc:
            raise ConfigError("data_dir", str(exc)) from None
        if not split.samples:
            raise ConfigError("data_dir", f"{split.source}: the {name} split is empty")
        first = split.samples[0].path
        if not first.is_file():
            raise ConfigError("data_dir", f"{first}: image file is missing (first row of {split.source.name})")
        problem = class_problem(split)
        if problem:
            raise ConfigError("data_dir", problem)
    if config.test_csv:
        try:
            load_test(root, config.test_csv)
        except DatasetError as exc:
            raise ConfigError("test_csv", str(exc)) from None
    if config.pretrained:
        path = Path(config.pretrained)
        if not path.is_file():
            raise ConfigError("pretrained", f"{path}: no such file")
        if not os.access(path, os.R_OK):
            raise ConfigError("pretrained", f"{path}: not readable")
        if not looks_like_torch_file(path):
            raise ConfigError("pretrained", f"{path}: not a file torch.save wrote (neither its zip archive nor a pickle)")
    if gpus is not None and config.device == "mps" and not mps_available():
        raise ConfigError("device", "'mps' asked for, but this machine has no Apple GPU (MPS is macOS on Apple silicon)")
    if gpus is not None and config.device.startswith("cuda"):
        if not gpus:
            raise ConfigError("device", f"{config.device!r} asked for, but this machine has no CUDA device")
        index = int(config.device.split(":")[1]) if ":" in config.device else None
        if index is not None and index not in gpus:
            raise ConfigError("device", f"{config.device!r} asked for, but this machine's GPUs are {', '.join(map(str, gpus))}")


def mps_available() -> bool:
    """Whether this is a Mac with Apple silicon, where torch's MPS device can exist (asked without torch)."""
    import platform

    return platform.system() == "Darwin" and platform.machine() == "arm64"


def looks_like_torch_file(path: Path) -> bool:
    """Whether ``path`` starts as a ``torch.save`` file does: a zip archive (the format since torch
    1.6) or a pickle (the older one). The weights themselves load in the worker, with torch."""
    try:
        with path.open("rb") as file:
            head = file.read(4)
    except OSError:
        return False
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"
