"""Supervised fine-tuning on chat data: one flat builder over TRL's ``SFTTrainer`` / ``SFTConfig``.

:func:`build_sft_trainer` turns a model, a tokenizer, chat data and one :class:`SFTSettings` (the training
hyperparameters, as TRL's ``SFTTrainer(args=SFTConfig(...))``) into a ready trainer and a :class:`LossSummary` (which
tokens carry the loss, for the run's report). Choices it makes, and why:

- Loss on assistant tokens only by default: TRL's ``assistant_only_loss`` with a chat template that marks assistant
  output (``core/train/chat.py`` supplies one for ChatML templates such as SmolLM2's). The tokenizer keeps its own
  template; the marked one is used only to tokenize the training data.
- Packing (optional) is TRL's best-fit-decreasing packing, which turns on padding-free batches: each batch is one
  row holding whole conversations, with ``position_ids`` restarting at 0 for each. transformers derives the sequence
  boundaries from those positions: FlashAttention-2/3 (``attn_implementation="flash_attention_2"``, CUDA) runs its
  variable-length kernel on them, and sdpa / eager (CPU, and CUDA without flash-attn) get a block-diagonal causal
  mask. Either way no conversation attends to another, and the first token of each conversation is not predicted
  from the previous one. With sdpa the masked attention spans the whole row, so packing pays most with flash-attn.
- No progress bars or printed log dicts from transformers: progress goes through :class:`ProgressCallback`.
- Mixed precision follows the model: bfloat16 / float16 weights (or a 4-bit model's compute dtype) train with
  that autocast; float32 weights train in float32. A model on the CPU trains on the CPU even where CUDA exists.
- Checkpoints every ``save_steps`` (adapter, optimizer, scheduler, RNG, trainer state);
  ``resume_training(trainer, last_checkpoint(output_dir))`` continues from the last complete one (and trains
  nothing when that one already holds the whole budget, where ``trainer.train`` would take one step more). Ctrl-C
  or SIGTERM during ``resume_training`` saves one more at the end of the step in progress before training stops.

This module imports transformers, trl and datasets at the top: import it lazily (``agentlab.core.train`` does).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agentlab.core.errors import ConfigError, InputError
from agentlab.core.models.device import quiet_imports, quiet_library_warnings
from agentlab.core.train.callbacks import StopOnSignal
from agentlab.core.train.chat import training_chat_template
from agentlab.core.train.model import check_target_modules

quiet_imports()  # trl imports peft, which imports bitsandbytes

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import PrinterCallback, TrainerCallback  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

log = logging.getLogger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class LossSummary:
    """Which tokens of the prepared training data carry the loss.

    ``examples``: conversations given; ``sequences``: training rows after preparation (packed rows with packing;
    conversations left without a loss token by truncation are dropped); ``tokens``: tokens in those rows;
    ``loss_tokens``: tokens whose label is not ignored (-100); ``template``: where the assistant-marking chat
    template came from (see ``core/train/chat.py``), empty when every token carries loss; ``preview``: the start of
    the first row with its loss tokens inside ``[[...]]``.
    """

    assistant_only: bool
    template: str
    examples: int
    sequences: int
    tokens: int
    loss_tokens: int
    packing: bool
    preview: str

    def describe(self) -> str:
        """One line for a report: how many tokens carry loss and why."""
        share = self.loss_tokens / self.tokens if self.tokens else 0.0
        what = f"assistant tokens only ({self.template})" if self.assistant_only else "every token"
        if self.packing:
            rows = f", packed into {self.sequences} rows"
        elif self.sequences < self.examples:
            rows = f" ({self.examples - self.sequences} left out: no loss token within max_length)"
        else:
            rows = ""
        return (f"loss on {self.loss_tokens} of {self.tokens} tokens ({share:.1%}): {what}; "
                f"{self.examples} conversations{rows}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SFTSettings:
    """The training hyperparameters of :func:`build_sft_trainer` (what :func:`sft_config` turns into an ``SFTConfig``).

    ``assistant_only_loss``: labels of system / user tokens (and of the generation prompt) are -100; the assistant's
    content and its end-of-turn token carry loss. ``packing``: see the module docstring; needs ``max_length``, the
    length of a packed row. ``max_length``: longer conversations are cut at the end. ``epochs`` (fractions allowed)
    unless ``max_steps`` > 0. ``batch_size`` is per device; ``grad_accum`` micro-batches make one optimizer step.
    ``warmup``: linear warm-up steps, or a fraction (< 1) of all steps. ``save_steps``: checkpoint every so many
    steps (None: none), keeping the last ``save_total_limit``. ``eval_steps``: evaluate the eval dataset every so
    many steps (default: every epoch). ``report_to``: transformers' integrations (``mlflow``, ...). ``sft_args``: any
    other ``SFTConfig`` field, by name.
    """

    assistant_only_loss: bool = True
    packing: bool = False
    max_length: int | None = 1024
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 4
    grad_accum: int = 1
    learning_rate: float = 2e-4
    lr_scheduler: str = "linear"
    warmup: float = 0.0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    logging_steps: int = 1
    save_steps: int | None = None
    save_total_limit: int | None = 2
    eval_steps: int | None = None
    seed: int = 0
    gradient_checkpointing: bool = False
    report_to: str | list[str] = "none"
    sft_args: Mapping[str, Any] = field(default_factory=dict)


def build_sft_trainer(
    *,
    model: Any,
    tokenizer: Any,
    train_dataset: Dataset | Sequence[Mapping[str, Any]],
    output_dir: str | Path,
    settings: SFTSettings | None = None,
    eval_dataset: Dataset | Sequence[Mapping[str, Any]] | None = None,
    peft_config: Any = None,
    chat_template: str | Path | None = None,
    callbacks: Sequence[TrainerCallback] = (),
) -> tuple[SFTTrainer, LossSummary]:
    """A TRL ``SFTTrainer`` for chat data, and the :class:`LossSummary` of its prepared training data.

    ``model``/``tokenizer``: from :func:`~agentlab.core.models.load.load_causal_lm` (any device, dtype, 4-bit).
    ``train_dataset``/``eval_dataset``: a ``datasets.Dataset`` or a list of ``{"messages": [{"role", "content"},
    ...]}`` rows. ``settings``: the training hyperparameters (loss on assistant tokens only, packing, max_length,
    epochs / steps, batch size, learning rate and schedule, checkpoints, evaluation, seed, integrations, other
    ``SFTConfig`` fields): an :class:`SFTSettings`; None: its defaults. ``peft_config``: a LoRA config
    (:func:`~agentlab.core.train.model.lora_config`) to wrap ``model`` in; None trains ``model`` as it is (e.g. a
    ``PeftModel`` loaded with trainable adapters). ``chat_template``: a marked template (file or text) to use instead
    of the one found for the tokenizer. ``callbacks``: e.g. a :class:`ProgressCallback`.

    Raises ``ConfigError`` for settings that cannot work together and when assistant turns cannot be marked,
    ``InputError`` for an empty dataset or a conversation without an assistant message.
    """
    if settings is None:
        settings = SFTSettings()
    if settings.packing and settings.max_length is None:
        raise ConfigError("packing needs max_length (the length of a packed row)", hint="set max_length, or packing: "
                          "false")
    assistant_only_loss = settings.assistant_only_loss
    train = _as_dataset(train_dataset, "train", assistant_only_loss)
    evaluation = _as_dataset(eval_dataset, "eval", assistant_only_loss) if eval_dataset is not None else None
    if peft_config is None and _is_4bit(model) and not hasattr(model, "peft_config"):
        raise ConfigError("a 4-bit model trains through adapters only, and no LoRA config was given",
                          hint="pass peft_config=lora_config(...), or load the model without load_in_4bit")
    if peft_config is not None:
        check_target_modules(model, getattr(peft_config, "target_modules", None))
    marked = training_chat_template(tokenizer, chat_template) if assistant_only_loss else None
    args = sft_config(model=model, settings=settings, output_dir=output_dir, has_eval=evaluation is not None)
    original = tokenizer.chat_template
    try:
        with _quiet_datasets(), quiet_library_warnings():
            if marked is not None:
                # TRL tokenizes with the tokenizer's template when it is marked; the marked copy is used for the
                # data only, so the tokenizer saved with the adapter keeps its own template.
                tokenizer.chat_template = marked.template
            trainer = SFTTrainer(model=model, args=args, train_dataset=train, eval_dataset=evaluation,
                                 processing_class=tokenizer, peft_config=peft_config,
                                 callbacks=[_StepsAsAsked(), *callbacks])
    finally:
        tokenizer.chat_template = original
    if marked is not None:
        trainer.chat_template = marked.template  # what TRL tokenizes datasets passed to evaluate() later with
    trainer.remove_callback(PrinterCallback)  # prints every log dict to stdout, which --json keeps for itself
    summary = loss_summary(trainer.train_dataset, tokenizer, examples=len(train), packing=settings.packing,
                           template=marked.describe() if marked is not None else "")
    log.info("%s", summary.describe())
    if summary.loss_tokens == 0:  # every conversation cut before its answer: TRL's sampler would fail on 0 rows
        raise InputError(f"no conversation keeps an assistant token within max_length {settings.max_length}: "
                         f"{summary.examples - summary.sequences} of {summary.examples} were left out, nothing "
                         f"would be learned", hint="raise data.max_length, or shorten the conversations' prompts")
    return trainer, summary


def sft_config(*, model: Any, settings: SFTSettings, output_dir: str | Path, has_eval: bool) -> SFTConfig:
    """The ``SFTConfig`` :func:`build_sft_trainer` uses (the fields of ``settings``; evaluation when ``has_eval``;
    precision and device from ``model``)."""
    param = next(model.parameters())
    on_gpu = param.device.type == "cuda"
    compute = _compute_dtype(model)
    if compute == torch.float16 and not on_gpu:
        raise ConfigError("float16 mixed precision trains on CUDA only, and the model is on the CPU",
                          hint="load it with dtype float32 (or bfloat16) for CPU training")
    s = settings
    config: dict[str, Any] = {
        "output_dir": str(output_dir), "assistant_only_loss": s.assistant_only_loss, "packing": s.packing,
        "packing_strategy": "bfd", "max_length": s.max_length, "num_train_epochs": s.epochs,
        "max_steps": s.max_steps, "per_device_train_batch_size": s.batch_size,
        "per_device_eval_batch_size": s.batch_size, "gradient_accumulation_steps": s.grad_accum,
        "learning_rate": s.learning_rate, "lr_scheduler_type": s.lr_scheduler, "warmup_steps": s.warmup,
        "weight_decay": s.weight_decay, "max_grad_norm": s.max_grad_norm, "logging_steps": s.logging_steps,
        "save_strategy": "steps" if s.save_steps else "no", "save_steps": s.save_steps or 500,
        "save_total_limit": s.save_total_limit,
        "eval_strategy": ("steps" if s.eval_steps else "epoch") if has_eval else "no", "eval_steps": s.eval_steps,
        "seed": s.seed, **_checkpointing(s.gradient_checkpointing),
        "bf16": compute == torch.bfloat16, "fp16": compute == torch.float16, "use_cpu": not on_gpu,
        "dataloader_pin_memory": on_gpu, "report_to": s.report_to, "disable_tqdm": True,
        # Under DDP every trainable weight (the LoRA ones) gets a gradient each step: no search for unused ones.
        "ddp_find_unused_parameters": False,
        # Padding-free rows have no attention mask; then every position is a real token.
        "include_num_input_tokens_seen": "all" if s.packing else "non_padding",
    }
    unknown = sorted(set(s.sft_args) - set(SFTConfig.__dataclass_fields__))
    if unknown:
        raise ConfigError(f"unknown SFTConfig settings: {', '.join(unknown)}",
                          hint="see the fields of trl.SFTConfig / transformers.TrainingArguments")
    config.update(s.sft_args)
    return SFTConfig(**config)


def _checkpointing(enabled: bool) -> dict[str, Any]:
    """Activation (gradient) checkpointing settings under the name this transformers reads (5.23 renamed them to
    ``activation_checkpointing*`` and warns about the old names, which TRL's config sets by default)."""
    kwargs = {"use_reentrant": False} if enabled else None
    if "activation_checkpointing" in SFTConfig.__dataclass_fields__:
        return {"activation_checkpointing": enabled, "activation_checkpointing_kwargs": kwargs}
    return {"gradient_checkpointing": enabled, "gradient_checkpointing_kwargs": kwargs}


def _compute_dtype(model: Any) -> torch.dtype:
    """The dtype the model computes in: a 4-bit model's compute dtype, else its floating weights' dtype."""
    quant = getattr(getattr(model, "config", None), "quantization_config", None)
    key = "bnb_4bit_compute_dtype"
    compute = quant.get(key) if isinstance(quant, dict) else getattr(quant, key, None)
    if isinstance(compute, str):
        compute = getattr(torch, compute, None)
    if isinstance(compute, torch.dtype):
        return compute
    for param in model.parameters():
        if param.is_floating_point() and param.dtype != torch.float32:
            return param.dtype
    return torch.float32


def loss_summary(dataset: Dataset, tokenizer: Any, *, examples: int, packing: bool, template: str) -> LossSummary:
    """Count tokens and loss tokens (label != -100) of a prepared dataset (``input_ids`` and ``labels`` columns)."""
    tokens = loss_tokens = 0
    for labels in dataset["labels"]:
        tokens += len(labels)
        loss_tokens += sum(1 for label in labels if label != -100)
    preview = _preview(dataset[0]["input_ids"], dataset[0]["labels"], tokenizer) if len(dataset) else ""
    return LossSummary(assistant_only=bool(template), template=template, examples=examples, sequences=len(dataset),
                       tokens=tokens, loss_tokens=loss_tokens, packing=packing, preview=preview)


def _preview(ids: list[int], labels: list[int], tokenizer: Any, limit: int = 600) -> str:
    parts: list[str] = []
    run: list[int] = []
    inside = False
    for token, label in [*zip(ids, labels, strict=False), (None, None)]:
        now = label is not None and label != -100
        if (now != inside or token is None) and run:
            text = tokenizer.decode(run)
            parts.append(f"[[{text}]]" if inside else text)
            run = []
        if token is not None:
            run.append(token)
        inside = now
    text = "".join(parts)
    return text if len(text) <= limit else text[:limit] + " ..."


def _is_4bit(model: Any) -> bool:
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def _as_dataset(data: Dataset | Sequence[Mapping[str, Any]], name: str, assistant_only: bool) -> Dataset:
    """A ``datasets.Dataset`` of chat rows; with ``assistant_only``, every row must hold an assistant message (TRL
    would stop with an internal error on the first that has none)."""
    if isinstance(data, Dataset):
        ds = data
    else:
        rows = [dict(row) for row in data]
        ds = Dataset.from_list(rows) if rows else Dataset.from_dict({})
    if len(ds) == 0:
        raise InputError(f"the {name} dataset is empty", hint="give at least one conversation")
    if "messages" not in ds.column_names:
        raise InputError(f"the {name} dataset has no 'messages' column (columns: {', '.join(ds.column_names)})",
                         hint='give rows like {"messages": [{"role": "user", "content": ...}, ...]}')
    if assistant_only:
        for i, messages in enumerate(ds["messages"]):
            if not any(isinstance(m, Mapping) and m.get("role") == "assistant" for m in messages or []):
                raise InputError(f"{name} conversation {i + 1} has no assistant message, so nothing of it could "
                                 "carry the loss", hint="drop it, or give it the assistant's answer")
    return ds


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """No `datasets` progress bars (tokenizing, packing) on the user's terminal."""
    from datasets.utils import logging as ds_logging

    enabled = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            ds_logging.enable_progress_bar()


class _StepsAsAsked(TrainerCallback):
    """A resumed run saves and logs at the steps its arguments ask (``--resume --set train.save_steps=5``): the
    Trainer reloads its state from the checkpoint, whose save/logging/eval steps then won over the new ones (it only
    warned), so config.yaml said 5 and checkpoints kept coming every 2 steps."""

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        state.compute_steps(args, state.max_steps)  # the Trainer's own reading of the arguments (a ratio < 1 too)


class _BudgetSpent(Exception):
    """The checkpoint a trainer resumes from already holds its whole budget (``_StopWhenSpent``)."""


class _StopWhenSpent(TrainerCallback):
    """Stops ``Trainer.train`` before its first step when the state it resumed holds the whole budget: Trainer
    checks ``max_steps`` only after each step, so it would otherwise train (and checkpoint) one step past it."""

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.max_steps > 0 and state.global_step >= state.max_steps:
            raise _BudgetSpent


def resume_training(trainer: Any, checkpoint: str | None, *,
                    announce: Callable[[str], None] | None = None) -> Any | None:
    """``trainer.train(resume_from_checkpoint=checkpoint)`` (its ``TrainOutput``), or None, without a step, when
    ``checkpoint`` already holds the whole budget (``max_steps``, or the steps of the epochs asked): a run killed
    after its last checkpoint but before it saved what it trained. Then ``trainer.state`` is the checkpoint's and
    ``trainer.model`` holds the checkpoint's weights, loaded as for training, ready to be saved.

    Ctrl-C or SIGTERM while it trains ends the step in progress, saves a checkpoint of it and stops training; the
    signal is then delivered again (KeyboardInterrupt for Ctrl-C) instead of returning (:class:`StopOnSignal`;
    ``announce`` gets its line saying so); a second one stops at once."""
    guard, stop = _StopWhenSpent(), StopOnSignal(announce)
    trainer.add_callback(guard)
    trainer.add_callback(stop)
    with stop.handling(trainer.args):
        try:
            return trainer.train(resume_from_checkpoint=checkpoint)
        except _BudgetSpent:
            return None
        finally:
            trainer.remove_callback(guard)
            trainer.remove_callback(stop)


def last_checkpoint(output_dir: str | Path) -> str | None:
    """The newest complete checkpoint folder of a trainer's ``output_dir`` (None when there is none).

    transformers writes ``trainer_state.json`` last, so a checkpoint whose save was cut short (a killed run) has
    none, or an unreadable one, and is passed over for the one before it.
    """
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    found = sorted(((int(m.group(1)), p) for p in folder.iterdir()
                    if p.is_dir() and (m := _CHECKPOINT.match(p.name))), reverse=True)
    for _, path in found:
        try:
            json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        return str(path)
    return None
