"""A transformers ``TrainerCallback`` that reports training to agentlab's :class:`~agentlab.core.progress.Progress`
and hands every log entry and checkpoint to the command (events.jsonl, metrics).

This module imports transformers at the top: import it lazily (``agentlab.core.train`` does).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentlab.core.models.device import quiet_imports
from agentlab.core.progress import NullProgress, Progress, ProgressTask

quiet_imports()  # transformers' trainer imports bitsandbytes

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments  # noqa: E402


class ProgressCallback(TrainerCallback):
    """Training progress for agentlab: one progress task (``step k/N, loss, tokens/s``), and plain functions per
    log entry and per checkpoint.

    ``progress``: where the bar goes (the CLI's rich progress; None draws nothing). ``on_log(entry)`` gets every
    entry the trainer logs (``loss``, ``learning_rate``, ``grad_norm``, ``mean_token_accuracy``, ``num_tokens``,
    ...; at the end ``train_runtime`` and ``train_loss``) with ``step``, ``max_steps``, ``epoch``, ``elapsed_s`` and
    ``tokens_per_s`` (input tokens per second since the previous entry) added. ``on_save(path, step)`` gets each
    checkpoint folder after it is written. Only the main process reports (``accelerate launch`` runs one per GPU).
    A resumed run starts the bar at the checkpoint's step. Tokens are counted by the trainer's
    ``include_num_input_tokens_seen`` (``build_sft_trainer`` turns it on).
    """

    def __init__(self, progress: Progress | None = None, *, description: str = "training",
                 on_log: Callable[[dict[str, Any]], None] | None = None,
                 on_save: Callable[[str, int], None] | None = None):
        self.progress = progress or NullProgress()
        self.description = description
        self.on_log_entry = on_log
        self.on_save_checkpoint = on_save
        self.task: ProgressTask | None = None
        self.loss: float | None = None
        self.tokens_per_s: float | None = None
        self._start = self._last_time = 0.0
        self._start_tokens = self._last_tokens = 0
        self._start_step = 0

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        self._start = self._last_time = time.perf_counter()
        self._start_tokens = self._last_tokens = state.num_input_tokens_seen
        self._start_step = state.global_step
        self.task = self.progress.task(self._line(state), total=state.max_steps)
        self.task.update(completed=state.global_step)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        if self.task is None or not state.is_world_process_zero:
            return
        elapsed = time.perf_counter() - self._start
        if elapsed > 0 and state.num_input_tokens_seen > self._start_tokens:
            self.tokens_per_s = (state.num_input_tokens_seen - self._start_tokens) / elapsed
        self.task.update(completed=state.global_step, description=self._line(state))

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        loss = logs.get("loss")
        if isinstance(loss, (int, float)) and math.isfinite(loss):
            self.loss = float(loss)
        now, tokens = time.perf_counter(), state.num_input_tokens_seen
        span = now - self._last_time
        entry: dict[str, Any] = {"step": state.global_step, "max_steps": state.max_steps, "epoch": state.epoch,
                                 **logs, "elapsed_s": round(now - self._start, 3)}
        if span > 0 and tokens > self._last_tokens:
            entry["tokens_per_s"] = round((tokens - self._last_tokens) / span, 1)
        self._last_time, self._last_tokens = now, tokens
        if self.on_log_entry is not None:
            self.on_log_entry(entry)
        if self.task is not None:
            self.task.update(description=self._line(state))

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                **kwargs: Any) -> None:
        if self.on_save_checkpoint is not None and state.is_world_process_zero:
            folder = Path(args.output_dir or ".") / f"checkpoint-{state.global_step}"
            self.on_save_checkpoint(str(folder), state.global_step)

    def _line(self, state: TrainerState) -> str:
        parts = [f"{self.description}: step {state.global_step}/{state.max_steps}"]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.4g}")
        if self.tokens_per_s is not None:
            parts.append(f"{self.tokens_per_s:,.0f} tok/s")
        return ", ".join(parts)
