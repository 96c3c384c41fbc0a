"""The ``LEUKTUI_*`` environment settings that hold numbers, read with their kind checked: a
value that is not a number is one line naming the variable, never a traceback."""

from __future__ import annotations

import math
import os

from db.errors import UserError


def number_setting(name: str, default: float, *, minimum: float = 0.0, whole: bool = False) -> float:
    """``$name`` as a finite number of at least ``minimum`` (an integer when ``whole``), else ``default``."""
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    kind = "a whole number" if whole else "a number"
    try:
        value = int(raw) if whole else float(raw)
    except ValueError:
        raise UserError(f"{name}={raw!r}: expected {kind} (of at least {minimum:g})") from None
    if not math.isfinite(value) or value < minimum:
        raise UserError(f"{name}={raw!r}: expected {kind} of at least {minimum:g}")
    return value


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity (``taskset``, a container's or a batch job's
    CPU set), which can be fewer than the machine has; the machine's count where there is none."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1
