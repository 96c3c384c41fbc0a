"""Where and how a run computes: the torch device, mixed precision, seeding and the environment
record. No database, no data: the loop, evaluation and prediction all start from these.
"""

from __future__ import annotations

import contextlib
import platform
import socket
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch

import engine
from engine.config import ConfigError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device", f"{name!r} asked for, but CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError("device", f"{name!r} asked for, but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


@dataclass
class Precision:
    autocast: Callable[[], contextlib.AbstractContextManager]
    scaler: torch.amp.GradScaler | None
    name: str


def cpu_has_native_bf16() -> bool:
    """True where the CPU computes bf16 in hardware (AMX or AVX512-BF16), which oneDNN uses."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as handle:
            for line in handle:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool({"amx_bf16", "avx512_bf16"} & flags)
    except OSError:
        pass
    return False


def make_precision(device: torch.device, amp: str) -> Precision:
    """Mixed precision: bf16 or fp16 autocast on CUDA (a GradScaler only for fp16); bf16 autocast
    on a CPU with native bf16 (about twice the fp32 speed there); fp32 otherwise.
    """
    if amp == "off":
        return Precision(contextlib.nullcontext, None, "fp32")
    if device.type == "cpu":
        if amp == "bf16" or (amp == "auto" and cpu_has_native_bf16()):
            return Precision(partial(torch.autocast, device_type="cpu", dtype=torch.bfloat16), None, "bf16")
        return Precision(contextlib.nullcontext, None, "fp32")
    if device.type != "cuda":
        return Precision(contextlib.nullcontext, None, "fp32")
    if amp == "auto":
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda") if amp == "fp16" else None
    return Precision(partial(torch.autocast, device_type="cuda", dtype=dtype), scaler, amp)




def environment(device: torch.device) -> dict[str, Any]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine() or "cpu")
    return {
        "host": socket.gethostname(),
        "device": str(device),
        "device_name": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "leuktui": engine.__version__,
        "cpu_threads": torch.get_num_threads(),
    }


def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator
