"""Several processes, one run: `accelerate launch` / `torchrun` start one process per GPU, and all of them must
train in the same run folder while only the main one writes it.

The launchers set ``RANK`` and ``WORLD_SIZE``. The main process (rank 0) does what a single process does: checks
the input, opens (or resumes) the run folder, then :func:`share`\\ s ``(config, folder)`` with the others; each
other process waits for that, trains on its shard in the same folder through a :class:`FollowerRun` (which writes
nothing), and leaves the events, checkpoints, adapter and report to the main one. If the main process stops before
it has a folder, it shares ``None`` and the others exit quietly: the main process has printed the error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def world_size() -> int:
    """How many processes train together (1 unless started by ``accelerate launch`` / ``torchrun``)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def rank() -> int:
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def is_main() -> bool:
    return rank() == 0


def share(value: Any = None) -> Any:
    """The main process's ``value``, in every process (a collective: every process must call it once).

    The process group is set up through accelerate's ``PartialState`` (NCCL on CUDA, gloo on CPUs), the same one the
    trainer uses afterwards. With one process, ``value`` comes straight back."""
    if world_size() == 1:
        return value
    import torch.distributed as torch_dist
    from accelerate import PartialState

    state = PartialState()
    box = [value if state.is_main_process else None]
    device = state.device if state.device.type == "cuda" else None
    torch_dist.broadcast_object_list(box, src=0, device=device)
    return box[0]


def leave() -> None:
    """Every process stops here together and closes the process group (a collective). Without it, a process that
    exits while another is still reading the last broadcast can die with SIGABRT instead of its own exit code."""
    if world_size() == 1:
        return
    import torch.distributed as torch_dist

    if torch_dist.is_initialized():
        torch_dist.barrier()
        torch_dist.destroy_process_group()


class FollowerRun:
    """The run folder as a non-main process sees it: paths inside it, and nothing written."""

    log_prompts = False

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def file(self, *parts: str) -> Path:
        return self.path.joinpath(*parts)

    def event(self, kind: str, **data: Any) -> None:
        return None

    def llm_call(self, record: dict[str, Any]) -> None:
        return None

    def write_json(self, name: str, data: Any) -> Path:
        return self.file(name)

    def write_text(self, name: str, text: str) -> Path:
        return self.file(name)

    def save_results(self, results: Any) -> Path:
        return self.file("results.json")

    def save_report(self, markdown: str) -> Path:
        return self.file("report.md")
