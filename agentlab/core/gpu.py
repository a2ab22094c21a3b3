"""GPU figures of a block of work: peak GPU memory (torch's allocator) and mean board power (NVML), or "no GPU".

``torch.cuda.max_memory_allocated`` counts what torch's tensors held at their peak (not llama.cpp's buffers, not
the CUDA context); its peak counter is reset at the block's start. Power comes from NVML through
``torch.cuda.power_draw`` (which reads it with ``pynvml``, the ``nvidia-ml-py`` package) only when that is
installed and answers: sampled every ``interval_s`` on a thread, averaged over the block. Without a CUDA device
every figure is None and the figures say "no GPU", never a zero.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

NO_GPU = "no GPU"


@dataclass
class GpuFigures:
    """What ``gpu_usage`` measured. ``device``: the GPU's name, None when there is none."""

    device: str | None = None
    peak_bytes: int | None = None
    power_w: list[float] = field(default_factory=list)
    power_note: str = ""  # why there is no power figure, when there is a GPU but none

    @property
    def mean_power_w(self) -> float | None:
        return sum(self.power_w) / len(self.power_w) if self.power_w else None

    def to_dict(self) -> dict[str, Any]:
        """``gpu`` (the device, or "no GPU"), ``gpu_memory_mb`` and ``gpu_power_w`` (None without a figure)."""
        return {"gpu": self.device or NO_GPU,
                "gpu_memory_mb": None if self.peak_bytes is None else round(self.peak_bytes / 2**20, 2),
                "gpu_power_w": None if self.mean_power_w is None else round(self.mean_power_w, 1),
                **({"gpu_power_note": self.power_note} if self.power_note else {})}

    def describe(self) -> str:
        """One line for a console or a report: "no GPU", or the peak memory and the mean power (or why none)."""
        if self.device is None:
            return NO_GPU
        memory = f"peak {self.peak_bytes / 2**20:.1f} MB allocated by torch" if self.peak_bytes is not None else ""
        power = f"{self.mean_power_w:.1f} W mean" if self.mean_power_w is not None else (
            f"power not measured ({self.power_note})" if self.power_note else "power not measured")
        return f"{self.device}: {', '.join(p for p in (memory, power) if p)}"


def describe(figures: dict[str, Any]) -> str:
    """``GpuFigures.describe`` from a ``to_dict`` (a results.json read back)."""
    if figures.get("gpu", NO_GPU) == NO_GPU:
        return NO_GPU
    memory = figures.get("gpu_memory_mb")
    return GpuFigures(figures["gpu"], None if memory is None else int(memory * 2**20),
                      [figures["gpu_power_w"]] if figures.get("gpu_power_w") is not None else [],
                      figures.get("gpu_power_note", "")).describe()


def peak_rss_bytes() -> int:
    """This process's peak resident memory since it started (the kernel's high-water mark, ``ru_maxrss``); 0 where
    the ``resource`` module is missing (Windows)."""
    try:
        import resource
    except ImportError:
        return 0
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


def _cuda() -> Any:
    """torch, when it is installed and sees a CUDA device; else None."""
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    return torch if torch.cuda.is_available() else None


@contextmanager
def gpu_usage(interval_s: float = 0.1) -> Iterator[GpuFigures]:
    """Measure the block's peak GPU memory and mean power (see the module docstring); fields are filled at exit."""
    torch = _cuda()
    figures = GpuFigures()
    if torch is None:
        yield figures
        return
    index = torch.cuda.current_device()
    figures.device = torch.cuda.get_device_name(index)
    torch.cuda.synchronize(index)
    torch.cuda.reset_peak_memory_stats(index)
    stop = threading.Event()

    def sample() -> None:
        # torch.cuda.power_draw reads NVML through pynvml (nvidia-ml-py) when it is installed, else raises.
        while True:
            try:
                figures.power_w.append(torch.cuda.power_draw(index) / 1000.0)  # milliwatts
            except ModuleNotFoundError:
                figures.power_note = "nvidia-ml-py (pynvml) is not installed"
                return
            except Exception as exc:  # NVML errors (no permission, an unsupported board), a driver not loaded
                figures.power_note = f"NVML: {' '.join(str(exc).split()) or type(exc).__name__}"
                return
            if stop.wait(interval_s):
                return

    thread = threading.Thread(target=sample, name="gpu-power", daemon=True)
    thread.start()
    try:
        yield figures
    finally:
        stop.set()
        thread.join()
        torch.cuda.synchronize(index)
        figures.peak_bytes = int(torch.cuda.max_memory_allocated(index))
