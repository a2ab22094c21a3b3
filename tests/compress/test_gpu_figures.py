"""The GPU figures of compress and train-persona (agentlab/core/gpu.py): "no GPU" on a CPU machine, never a zero; on
a GPU, torch's peak allocation since the block began and NVML's mean power, or why there is no power figure.

The GPU path runs for real only where CUDA is (the `gpu` marker); the arithmetic and the NVML sampling are checked
here with torch.cuda (power_draw, which reads NVML, included) stood in for, since no GPU is lent to the default
test set."""

from __future__ import annotations

import time
from typing import Any

import pytest

from agentlab.core import gpu
from agentlab.core.gpu import NO_GPU, GpuFigures, gpu_usage, peak_rss_bytes


def test_on_a_cpu_machine_every_figure_says_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu, "_cuda", lambda: None)
    with gpu_usage() as figures:
        sum(range(1000))
    assert figures.to_dict() == {"gpu": NO_GPU, "gpu_memory_mb": None, "gpu_power_w": None}
    assert figures.describe() == NO_GPU and gpu.describe(figures.to_dict()) == NO_GPU
    assert peak_rss_bytes() > 10 * 2**20  # a Python process with pytest loaded


class _Cuda:
    """torch.cuda's calls that gpu_usage makes, on a pretend device whose allocator peaks at 3 MiB and whose board
    reads ``watts`` (then fails as ``error``, the way torch.cuda.power_draw does without NVML)."""

    def __init__(self, watts: list[float], error: Exception) -> None:
        self.reset = 0
        self.watts, self.error = list(watts), error

    def is_available(self) -> bool:
        return True

    def current_device(self) -> int:
        return 0

    def get_device_name(self, index: int) -> str:
        return "Pretend GPU"

    def synchronize(self, index: int) -> None:
        pass

    def reset_peak_memory_stats(self, index: int) -> None:
        self.reset += 1

    def max_memory_allocated(self, index: int) -> int:
        return 3 * 2**20

    def power_draw(self, index: int) -> int:
        if not self.watts:
            raise self.error
        return int(self.watts.pop(0) * 1000)


def _torch(cuda: _Cuda) -> Any:
    return type("Torch", (), {"cuda": cuda})()


def test_on_a_gpu_peak_memory_and_mean_power_are_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda = _Cuda([200.0, 300.0], RuntimeError("NVML_ERROR_NOT_SUPPORTED"))
    monkeypatch.setattr(gpu, "_cuda", lambda: _torch(cuda))
    with gpu_usage(interval_s=0.001) as figures:
        deadline = time.monotonic() + 10
        while len(figures.power_w) < 2 and time.monotonic() < deadline:  # both readings taken (then NVML errors)
            time.sleep(0.001)
    assert cuda.reset == 1 and figures.peak_bytes == 3 * 2**20
    assert figures.power_w == [200.0, 300.0] and figures.to_dict()["gpu_power_w"] == 250.0
    assert figures.to_dict()["gpu_memory_mb"] == 3.0 and figures.to_dict()["gpu"] == "Pretend GPU"
    assert figures.describe().startswith("Pretend GPU: peak 3.0 MB allocated by torch, 250.0 W mean")


def test_without_nvml_the_power_figure_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = ModuleNotFoundError("nvidia-ml-py does not seem to be installed or it can't be imported.")
    monkeypatch.setattr(gpu, "_cuda", lambda: _torch(_Cuda([], missing)))
    with gpu_usage() as figures:
        pass
    assert figures.to_dict()["gpu_power_w"] is None
    assert "power not measured (nvidia-ml-py (pynvml) is not installed)" in gpu.describe(figures.to_dict())
    assert GpuFigures().to_dict()["gpu"] == NO_GPU


@pytest.mark.gpu
def test_real_cuda_peak_memory() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    with gpu_usage() as figures:
        x = torch.ones(1024, 1024, device="cuda")  # 4 MiB
        del x
    assert figures.peak_bytes is not None and figures.peak_bytes >= 4 * 2**20


@pytest.mark.parametrize("reused", [False, True])
def test_each_experiments_console_line_states_memory_and_gpu_reused_or_not(reused: bool) -> None:
    """An experiment read back from the workspace printed its figures without the `memory ...; GPU: ...` part the
    docs say each experiment's line states."""
    from agentlab.compress.report import outcome_line

    record = {"index": 1, "label": "int8_dynamic", "planner": "random", "reused": reused, "state": "done",
              "feasible": True, "derived": {"speedup": 1.5, "perplexity": 12.0, "accuracy": 0.5, "size": 1.0},
              "metrics": {"memory_mb": 530.0, "gpu": NO_GPU, "gpu_memory_mb": None, "gpu_power_w": None}}
    line = outcome_line(record)
    assert line.endswith("; meets the goal; memory 530 MB; GPU: no GPU")
    assert ("reused from the workspace" in line) == reused
