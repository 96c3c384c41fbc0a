"""Which GPUs this host has: ``$LEUKTUI_GPUS``, else NVML, else ``nvidia-smi -L``."""

from __future__ import annotations

import os
import shutil
import subprocess

from db.errors import UserError


def detect_gpus() -> list[int]:
    """GPU indices: ``$LEUKTUI_GPUS`` (e.g. ``0,1``; empty for none), else NVML, else nvidia-smi."""
    override = os.environ.get("LEUKTUI_GPUS")
    if override is not None:
        try:
            gpus = [int(part) for part in override.split(",") if part.strip()]
        except ValueError:
            raise UserError(f"LEUKTUI_GPUS={override!r}: expected GPU indices such as 0,1 (or empty for none)") from None
        if any(gpu < 0 for gpu in gpus):
            raise UserError(f"LEUKTUI_GPUS={override!r}: GPU indices are 0 or more")
        return gpus
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return list(range(pynvml.nvmlDeviceGetCount()))
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no NVML library, no driver: fall through to nvidia-smi
        pass
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10).stdout
            return [i for i, line in enumerate(line for line in listing.splitlines() if line.startswith("GPU "))]
        except (OSError, subprocess.SubprocessError):
            pass
    return []
