"""Per-GPU utilisation and memory (NVML, when present), else the host's CPU and RAM."""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.widgets import Static


def _bar(fraction: float, width: int = 10) -> str:
    filled = max(0, min(width, round(fraction * width)))
    return "█" * filled + "░" * (width - filled)


class CpuSampler:
    """CPU busy fraction between two reads of /proc/stat."""

    def __init__(self) -> None:
        self._last: tuple[int, int] | None = None

    def read(self) -> float | None:
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        idle, total = fields[3] + (fields[4] if len(fields) > 4 else 0), sum(fields)
        last, self._last = self._last, (idle, total)
        if last is None or total == last[1]:
            return None
        return 1 - (idle - last[0]) / (total - last[1])


def memory() -> tuple[float, float] | None:
    """(used GiB, total GiB) from /proc/meminfo."""
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        total = int(info["MemTotal"].split()[0]) / 2**20
        available = int(info["MemAvailable"].split()[0]) / 2**20
    except (OSError, KeyError, ValueError):
        return None
    return total - available, total


def gpu_readings() -> list[tuple[int, str, float, float, float]] | None:
    """(index, name, utilisation, used GiB, total GiB) per GPU, or None without NVML."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        readings = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            util = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            readings.append((index, name if isinstance(name, str) else name.decode(), util, mem.used / 2**30, mem.total / 2**30))
        pynvml.nvmlShutdown()
        return readings
    except Exception:  # no driver or no device: show the CPU instead
        return None


class DeviceStrip(Static):
    DEFAULT_CSS = """
    DeviceStrip { height: auto; padding: 0 1; background: $boost; }
    """

    def __init__(self, **kwargs):
        super().__init__("", **kwargs)
        self.cpu = CpuSampler()

    def sample(self) -> Text:
        """Read the devices (call from a thread: NVML and /proc reads block briefly)."""
        gpus = gpu_readings()
        if gpus:
            parts = [f"GPU{i} {name[:14]} {_bar(util)} {util:4.0%}  mem {used:.1f}/{total:.0f} GiB" for i, name, util, used, total in gpus]
            return Text("   ".join(parts))
        cpu = self.cpu.read()
        mem = memory()
        text = Text("CPU ")
        text.append(_bar(cpu or 0.0) + (f" {cpu:4.0%}" if cpu is not None else "   -"))
        if mem:
            used, total = mem
            text.append(f"   RAM {_bar(used / total)} {used:.1f}/{total:.0f} GiB")
        return text
