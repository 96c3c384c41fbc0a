"""A network of a few kilobytes for the tests of processes rather than of learning: the scheduler's
concurrency, a study's pruning, cancel and resume, Slurm's jobs, DDP's ranks. It trains, validates,
checkpoints and resumes through the same plug-in path a user's ``package.module:callable`` takes,
its epochs a small fraction of a ResNet18's at the tests' 16 px (a ResNet18 checkpoint with Adam's
state is about 130 MB), so those tests spend the CPU on what they check. The tests of learning, of
Grad-CAM, of a checkpoint under a kill and of the app's own flow keep ResNet18.

``tests/conftest.py`` puts this folder on the ``PYTHONPATH`` of every process a test starts and
allows this module in ``$LEUKTUI_MODELS``, as a user allows their own."""

from __future__ import annotations

from torch import nn


def tiny(num_classes: int = 1) -> nn.Module:
    """Two strided 3x3 convolutions with BatchNorm (so train and eval modes differ, as a ResNet's
    do), a global average and a linear head: 1,433 parameters."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(inplace=True),
        nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, num_classes),
    )
