"""transformers ``TrainerCallback`` classes: :class:`ProgressCallback` reports training to agentlab's
:class:`~agentlab.core.progress.Progress` and hands every log entry and checkpoint to the command (events.jsonl,
metrics); :class:`StopOnSignal` turns Ctrl-C / SIGTERM into a checkpoint at the end of the step in progress.

This module imports transformers at the top: import it lazily (``agentlab.core.train`` does).
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from agentlab.core.files import deferred_interrupts
from agentlab.core.models.device import quiet_imports
from agentlab.core.progress import NullProgress, Progress, ProgressTask

quiet_imports()  # transformers' trainer imports bitsandbytes

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments  # noqa: E402

log = logging.getLogger(__name__)


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

    The line names the loss of the step it shows: a step that logs moves the bar when its loss is logged (the
    trainer calls ``on_log`` after ``on_step_end``; a plain progress line printed at the step's end showed the step
    before's loss), and between logged steps (``logging_steps`` > 1) the last loss says its own step
    (``step 7/30, loss 2.1 at step 5``).
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
        self.loss_step = 0  # the step self.loss was logged at
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
        if not control.should_log:  # else on_log, which the trainer calls next, moves the bar with this step's loss
            self.task.update(completed=state.global_step, description=self._line(state))

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        loss = logs.get("loss")
        if isinstance(loss, (int, float)) and math.isfinite(loss):
            self.loss, self.loss_step = float(loss), state.global_step
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
            self.task.update(completed=state.global_step, description=self._line(state))

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                **kwargs: Any) -> None:
        if self.on_save_checkpoint is not None and state.is_world_process_zero:
            folder = Path(args.output_dir or ".") / f"checkpoint-{state.global_step}"
            self.on_save_checkpoint(str(folder), state.global_step)

    def _line(self, state: TrainerState) -> str:
        parts = [f"{self.description}: step {state.global_step}/{state.max_steps}"]
        if self.loss is not None:
            own = "" if self.loss_step == state.global_step else f" at step {self.loss_step}"
            parts.append(f"loss {self.loss:.4g}{own}")
        if self.tokens_per_s is not None:
            parts.append(f"{self.tokens_per_s:,.0f} tok/s")
        return ", ".join(parts)


class StopOnSignal(TrainerCallback):
    """Ctrl-C (SIGINT) or SIGTERM while training stops it at the end of the step in progress, with a checkpoint
    of that step (``TrainerControl.should_save`` and ``should_training_stop``), so a resume goes on from the next
    step instead of training again every step since the last scheduled checkpoint. A second signal stops at once,
    as without this callback (the handler there was before runs: KeyboardInterrupt for Ctrl-C).

    Train inside :meth:`handling`: the signals are held (``files.deferred_interrupts``) while the block runs and, once
    training stopped for one, delivered at the block's end (after an error too) to the handlers there were before
    (the CLI's ends the run ``interrupted``, exit 130). It changes nothing off the main thread, for a signal the
    process ignores, and with several processes (``accelerate launch``, ``torchrun``): each would stop at another
    step and wait for the others in the next collective, so there every process stops at once, as before.
    ``kill -9`` cannot be caught: the resume then starts from the last scheduled checkpoint.
    """

    def __init__(self, announce: Callable[[str], None] | None = None):
        self.announce = announce or log.warning
        self.caught: int | None = None  # the signal that asked for the stop

    @contextlib.contextmanager
    def handling(self, args: TrainingArguments) -> Iterator[None]:
        """Hold Ctrl-C / SIGTERM while the block trains; deliver a held one when it ends."""
        self.caught = None
        if args.world_size > 1:
            yield
            return
        with deferred_interrupts(on_first=self._caught):
            yield

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        if self.caught is not None:
            control.should_save = True
            control.should_training_stop = True

    def _caught(self, signum: int) -> None:
        self.caught = signum
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        with contextlib.suppress(RuntimeError):  # a write to the console it interrupted: reentrant, left unsaid
            self.announce(f"{name}: stopping at the end of this step, with a checkpoint to resume from "
                          f"({name} again stops at once)")
