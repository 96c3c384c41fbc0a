"""ResNet18/50/152 written with torchvision's parameter names, and the model factory.

``build_model`` accepts the project's own ResNets, ``torchvision:resnetN`` and a user's network
given as ``package.module:callable``; all of them train, evaluate and export the same way.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from engine.config import ConfigError, check_model_allowed, check_model_name


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (stride here, as in torchvision's "ResNet v1.5"), 1x1 expand."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: list[int],
        num_classes: int = 1000,
        zero_init_residual: bool = False,
    ):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            # Each residual branch starts as identity, which helps deep nets early in training.
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.constant_(m.bn3.weight, 0)
                elif isinstance(m, BasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)

    def _make_layer(self, block: type[BasicBlock | Bottleneck], planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers.extend(block(self.inplanes, planes) for _ in range(1, blocks))
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 1000) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes)


def resnet50(num_classes: int = 1000) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes)


def resnet152(num_classes: int = 1000) -> ResNet:
    return ResNet(Bottleneck, [3, 8, 36, 3], num_classes)


_OWN_MODELS: dict[str, Callable[[int], nn.Module]] = {
    "resnet18": resnet18,
    "resnet50": resnet50,
    "resnet152": resnet152,
}


def build_model(name: str, num_classes: int) -> nn.Module:
    """A freshly initialised network with ``num_classes`` outputs."""
    check_model_name(name)
    if name in _OWN_MODELS:
        return _OWN_MODELS[name](num_classes)
    if name.startswith("torchvision:"):
        import torchvision.models

        return getattr(torchvision.models, name.split(":", 1)[1])(weights=None, num_classes=num_classes)
    return _build_user_model(name, num_classes)


def _build_user_model(name: str, num_classes: int) -> nn.Module:
    check_model_allowed(name)  # here, in the process that would run it, whatever the config's source
    module_name, attr = name.split(":", 1)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError("model", f"cannot import {module_name!r}: {exc}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError("model", f"{module_name!r} has no callable {attr!r}")
    params = inspect.signature(factory).parameters
    accepts_classes = "num_classes" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    model = factory(num_classes=num_classes) if accepts_classes else factory()
    if not isinstance(model, nn.Module):
        raise ConfigError("model", f"{name!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def load_pretrained(model: nn.Module, path: str | Path) -> list[str]:
    """Load a torchvision-style state dict from a local file into ``model``.

    Every parameter must match by name and shape (``strict``), except a classifier head whose
    class count differs, which keeps its fresh initialisation. Returns the names left as they were.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError("pretrained", f"{path}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: the user's error, not a bug
        raise ConfigError("pretrained", f"{path}: not a readable state dict ({exc.__class__.__name__})") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    state = strip_compile_prefix(state)
    own = model.state_dict()
    skipped = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    for key in skipped:
        if not key.startswith("fc."):
            raise ConfigError("pretrained", f"{path}: {key} has shape {tuple(state[key].shape)}, the model wants {tuple(own[key].shape)}")
        state = {k: v for k, v in state.items() if k != key}
        state[key] = own[key]
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        names = ", ".join((missing + unexpected)[:4])
        raise ConfigError("pretrained", f"{path}: parameter names do not match the model ({names} ...)")
    return skipped


def strip_compile_prefix(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A state dict saved from a ``torch.compile``d model prefixes every key with ``_orig_mod.``."""
    prefix = "_orig_mod."
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}
