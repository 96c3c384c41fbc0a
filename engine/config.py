"""The run configuration: one typed, validated object shared by the CLI, the DB and the worker.

Importing this module never imports torch: the app and the light CLI commands use it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from db.errors import UserError
from db.vocabulary import BEST_METRICS, EVAL_MODE_KEYS, eval_mode

MODEL_NAMES = ("resnet18", "resnet50", "resnet152")
TORCHVISION_DEPTHS = (18, 34, 50, 101, 152)
LOSSES = ("bce", "ce")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "plateau", "cosine")
AMP_MODES = ("auto", "bf16", "fp16", "off")

_USER_MODEL = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_TORCHVISION_MODEL = re.compile(r"^torchvision:resnet(\d+)$")
_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+|mps)$")


class ConfigError(UserError):
    """A config value a user gave is not acceptable; ``field`` names it."""

    def __init__(self, field_name: str, message: str):
        super().__init__(f"{field_name}: {message}")
        self.field = field_name
        self.message = message


def _choice(*choices: str) -> dict[str, Any]:
    return {"choices": choices}


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides what a run computes, plus where its data lives.

    Field metadata carries the help text and the allowed values, so the CLI flags, the form and
    the validation all come from this one definition.
    """

    data_dir: str = field(default="data/demo", metadata={"help": "dataset root (train.csv, valid.csv, test CSVs or fold_*/)"})
    test_csv: str | None = field(default=None, metadata={"help": "test CSV for predictions (default: the one matching the model depth)"})
    model: str = field(default="resnet18", metadata={"help": "resnet18|resnet50|resnet152, torchvision:resnetN or package.module:callable"})
    pretrained: str | None = field(default=None, metadata={"help": "local file with a torchvision-style ResNet state dict (default: none, trained from scratch)"})
    loss: str = field(default="bce", metadata={"help": "bce: one logit, ce: two logits", **_choice(*LOSSES)})
    image_size: int = field(default=128, metadata={"help": "side in pixels the images are resized to", "min": 16, "max": 1024})
    batch_size: int = field(default=32, metadata={"help": "images per training step (BatchNorm needs 2 or more)", "min": 2, "max": 4096})
    epochs: int = field(default=10, metadata={"help": "training epochs", "min": 1, "max": 10000})
    optimizer: str = field(default="adam", metadata={"help": "optimizer", **_choice(*OPTIMIZERS)})
    lr: float = field(default=1e-3, metadata={"help": "learning rate", "min": 0.0, "max": 10.0, "exclusive_min": True})
    weight_decay: float = field(default=0.0, metadata={"help": "weight decay", "min": 0.0, "max": 1.0})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum", "min": 0.0, "max": 1.0})
    scheduler: str = field(default="none", metadata={"help": "learning-rate schedule", **_choice(*SCHEDULERS)})
    hflip: bool = field(default=True, metadata={"help": "random horizontal flips"})
    vflip: bool = field(default=True, metadata={"help": "random vertical flips"})
    rotation: float = field(default=20.0, metadata={"help": "random rotation range in degrees (0 = off)", "min": 0.0, "max": 180.0})
    hist_eq: bool = field(default=False, metadata={"help": "gray scale + histogram equalization"})
    center_crop: bool = field(default=False, metadata={"help": "keep the central 384/450 of each resized image (the lab's crop, at any image size)"})
    crop_to_cell: bool = field(default=False, metadata={"help": "crop to the bounding box of the cell"})
    eval_mode: str = field(default="single", metadata={"help": "validation views: single, five-crop or ten-crop (the flag is also --tta; none is single)",
                                                       "aliases": ("tta",), **_choice(*EVAL_MODE_KEYS)})
    balance: bool = field(default=False, metadata={"help": "class-balanced sampling"})
    early_stop: int = field(default=0, metadata={"help": "stop after N epochs without improvement (0 = off)", "min": 0, "max": 10000})
    best_metric: str = field(default="val_acc", metadata={"help": "metric that picks the best checkpoint", **_choice(*BEST_METRICS)})
    fit_on: str = field(default="train", metadata={"help": "train: validate every epoch on valid.csv; train+valid: the final fit, "
                                                           "trained on both with no validation score", **_choice("train", "train+valid")})
    ema: float = field(default=0.0, metadata={"help": "decay of an exponential moving average of the weights (e.g. 0.999; 0 = off): "
                                                      "validation, checkpoints and predictions use the averaged model", "min": 0.0, "max": 0.99999})
    seed: int = field(default=0, metadata={"help": "random seed", "min": 0, "max": 2**31 - 1})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    amp: str = field(default="auto", metadata={"help": "mixed precision (auto: bf16 on GPUs and CPUs that support it, else fp16 on GPUs, fp32 on CPUs)", **_choice(*AMP_MODES)})
    channels_last: bool = field(default=True, metadata={"help": "channels-last memory format"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model"})
    workers: int = field(default=2, metadata={"help": "threads decoding images into the cache", "min": 0, "max": 64})
    nproc: int = field(default=1, metadata={"help": "training processes per node (DDP through torchrun, one GPU each; gloo on a CPU)",
                                            "min": 1, "max": 64})
    nodes: int = field(default=1, metadata={"help": "nodes for one run (Slurm only; nproc processes on each)", "min": 1, "max": 64})
    sync_bn: bool = field(default=False, metadata={"help": "with nproc > 1: SyncBatchNorm, batch statistics over every process"})

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def not_a_field(cls, name: str, among: Sequence[str] | None = None) -> str:
        """What a flag says of a name that is no config field: the nearest one, and the list."""
        known = sorted(among if among is not None else cls.field_names())
        close = difflib.get_close_matches(name, known, n=1)
        return f"{name!r} is not a config field{f' (did you mean {close[0]}?)' if close else ''}; the fields: {', '.join(known)}"

    @classmethod
    def coerce(cls, name: str, raw: Any) -> Any:
        """``raw`` as field ``name``'s type (a flag's text as a number, a boolean), unchecked against
        the other fields."""
        return _coerce(next(f for f in dataclasses.fields(cls) if f.name == name), raw)

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, base: RunConfig | None = None) -> RunConfig:
        """Build a validated config from loosely typed values (strings from flags or a form)."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        current = dataclasses.asdict(base or cls())
        for key, raw in values.items():
            if key not in known:
                raise ConfigError(key, f"unknown field (known: {', '.join(known)})")
            current[key] = _coerce(known[key], raw)
        if isinstance(current["eval_mode"], str):  # one spelling of the views: "none" is the single view
            with contextlib.suppress(ValueError):
                current["eval_mode"] = eval_mode(current["eval_mode"]).key
        config = cls(**current)
        config.validate()
        return config

    def replace(self, **changes: Any) -> RunConfig:
        return RunConfig.from_dict(changes, base=self)

    # -- validation -----------------------------------------------------------------------

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            meta = f.metadata
            if "choices" in meta and value not in meta["choices"]:
                raise ConfigError(f.name, f"{value!r} is not one of {', '.join(meta['choices'])}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f.name, f"{value!r} is not a finite number")
            if "min" in meta and value is not None:
                low, high = meta["min"], meta["max"]
                too_low = value <= low if meta.get("exclusive_min") else value < low
                if too_low or value > high:
                    bracket = "(" if meta.get("exclusive_min") else "["
                    raise ConfigError(f.name, f"{value!r} is outside {bracket}{low}, {high}]")
        if self.final_fit and self.early_stop:
            raise ConfigError("early_stop", "a final fit (fit_on=train+valid) has no validation to stop on; use 0")
        if self.final_fit and self.best_metric != "val_acc":
            raise ConfigError("best_metric", "a final fit (fit_on=train+valid) has no validation to pick a best epoch by")
        check_model_name(self.model)
        if not _DEVICE.match(self.device):
            raise ConfigError("device", f"{self.device!r} is not one of auto, cpu, cuda, cuda:N")
        if not self.data_dir:
            raise ConfigError("data_dir", "must name a dataset folder")

    # -- derived values -------------------------------------------------------------------

    @property
    def final_fit(self) -> bool:
        """Trained on train + valid: no validation, so no best epoch and no validation score."""
        return self.fit_on == "train+valid"

    @property
    def world_size(self) -> int:
        """Training processes in all (DDP when above 1)."""
        return self.nproc * self.nodes

    @property
    def num_outputs(self) -> int:
        return 1 if self.loss == "bce" else 2

    @property
    def model_depth(self) -> int | None:
        """The ResNet depth the model name implies (picks the default test CSV), if any."""
        return model_depth(self.model)

    @property
    def input_size(self) -> int:
        """Side of the images the network sees after preprocessing."""
        return center_crop_size(self.image_size) if self.center_crop else self.image_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def config_hash(self) -> str:
        """Stable hash of what the run computes; the same config always hashes the same. A field
        added after runs were recorded is left out at its default, so their hashes still match."""
        values = {k: v for k, v in self.to_dict().items() if not (k in LATER_FIELDS and v == LATER_FIELDS[k])}
        return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]

    def with_absolute_paths(self, cwd: Path | None = None) -> RunConfig:
        """Resolve relative file paths so a worker started elsewhere finds the same files."""
        base = cwd or Path.cwd()
        changes: dict[str, Any] = {"data_dir": str((base / self.data_dir).resolve())}
        if self.pretrained:
            changes["pretrained"] = str((base / self.pretrained).resolve())
        if self.test_csv and not Path(self.test_csv).is_absolute():
            candidate = base / self.test_csv
            if candidate.exists():
                changes["test_csv"] = str(candidate.resolve())
        return self.replace(**changes)


# Fields added after runs were recorded, with the default that means "as before".
LATER_FIELDS: dict[str, Any] = {"ema": 0.0, "fit_on": "train", "nproc": 1, "nodes": 1, "sync_bn": False}

CENTER_CROP_FRACTION = 384 / 450


def model_depth(model: str) -> int | None:
    """The ResNet depth a model name implies (``resnet50``, ``torchvision:resnet50``: 50), if any."""
    match = re.search(r"resnet(\d+)$", str(model))
    return int(match.group(1)) if match else None


def center_crop_size(size: int) -> int:
    """The lab's centre crop (384 of 450 pixels) scaled to another image size."""
    return max(1, round(size * CENTER_CROP_FRACTION))


def check_model_name(name: str) -> None:
    if name in MODEL_NAMES:
        return
    match = _TORCHVISION_MODEL.match(name)
    if match:
        if int(match.group(1)) not in TORCHVISION_DEPTHS:
            depths = "|".join(str(d) for d in TORCHVISION_DEPTHS)
            raise ConfigError("model", f"{name!r}: torchvision ResNets are resnet{depths}")
        return
    if _USER_MODEL.match(name) and not name.startswith("torchvision:"):
        return
    raise ConfigError(
        "model",
        f"{name!r} is not one of {', '.join(MODEL_NAMES)}, torchvision:resnetN or package.module:callable",
    )


MODELS_ENTRY_POINTS = "leuktui.models"
MODELS_VARIABLE = "LEUKTUI_MODELS"


def models_allow_file() -> Path:
    """The user's own list of plug-in networks that may run: one ``module`` or ``module:callable`` a line."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "leuktui" / "models.txt"


def check_model_allowed(name: str) -> None:
    """A plug-in network (``package.module:callable``) imports and runs code, so it must come from
    a source the user running it controls, never from a run config alone (a shared database's
    row is anyone's in the lab): a ``leuktui.models`` entry point of an installed package, or a
    line of ``$LEUKTUI_MODELS`` (comma-separated) or of ``~/.config/leuktui/models.txt``."""
    if name in MODEL_NAMES or name.startswith("torchvision:"):
        return
    module = name.split(":", 1)[0]
    allowed = {item.strip() for item in os.environ.get(MODELS_VARIABLE, "").split(",") if item.strip()}
    with contextlib.suppress(OSError, UnicodeDecodeError):
        allowed |= {line.split("#", 1)[0].strip() for line in models_allow_file().read_text().splitlines()} - {""}
    if name in allowed or module in allowed:
        return
    from importlib.metadata import entry_points

    if any(point.value.replace(" ", "") == name for point in entry_points(group=MODELS_ENTRY_POINTS)):
        return
    raise ConfigError(
        "model",
        f"{name!r} runs code from {module!r}, which you have not allowed: list {module!r} in ${MODELS_VARIABLE} "
        f"or {models_allow_file()}, or install it as a {MODELS_ENTRY_POINTS} entry point",
    )


_TRUE = {"1", "true", "yes", "on", "y"}
_FALSE = {"0", "false", "no", "off", "n"}


def _coerce(f: dataclasses.Field, raw: Any) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    optional = "None" in kind
    if raw is None or (optional and isinstance(raw, str) and raw.strip().lower() in {"", "none"}):
        if optional:
            return None
        raise ConfigError(f.name, "a value is required")
    try:
        if kind.startswith("bool"):
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ConfigError(f.name, f"{raw!r} is not a boolean (true/false)")
        if kind.startswith("int"):
            if isinstance(raw, bool):
                raise ValueError
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError
            return int(str(raw).strip()) if isinstance(raw, str) else int(raw)
        if kind.startswith("float"):
            if isinstance(raw, bool):
                raise ValueError
            return float(raw)
        return str(raw).strip()
    except ConfigError:
        raise
    except ValueError:
        expected = "an integer" if kind.startswith("int") else "a number"
        raise ConfigError(f.name, f"{raw!r} is not {expected}") from None
