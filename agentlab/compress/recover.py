"""Recovering a pruned model's quality: LoRA fine-tuning on plain text, and logit distillation from a teacher (the
dense model), both keeping the pruned weights at zero. The mask is read from the model's own zero weights, so any
pruning works; after structured pruning there are none and both simply train the smaller model.

Both train through one small loop (AdamW, linear decay, gradient clipping) rather than ``build_sft_trainer``, which
takes chat rows only: recovery is causal-LM loss on every token of plain text, and distillation a loss on the
teacher's logits. LoRA settings: :func:`~agentlab.core.train.model.lora_config`. torch and peft are imported inside
the functions.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from agentlab.compress.prune import decoder_linears, sparsity_of, token_chunks
from agentlab.core.errors import InputError
from agentlab.core.files import said_at_once
from agentlab.core.models.device import quiet_imports, quiet_library_warnings, seed_everything
from agentlab.core.progress import NullProgress, Progress
from agentlab.core.train.model import lora_config

if TYPE_CHECKING:
    import torch

EVAL_CHUNKS = 8  # fixed chunks of the training text on which the loss is measured before and after
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecoverSettings:
    """How ``lora_recover`` and ``distill`` train, beside each one's learning rate (``train_loop`` reads steps,
    batch_size and seed)."""
    steps: int = 50
    seq_len: int = 128  # tokens per chunk of the text
    batch_size: int = 4
    seed: int = 0


def pruning_masks(model: Any) -> dict[str, Any]:
    """True where a decoder-block linear weight is zero, for the layers that have zeros: the pruned positions."""
    # one layer's mask at a time: after a structured prune no layer has zeros, and all masks at once cost a model
    return {name: mask for name, lin in decoder_linears(model).items() if (mask := lin.weight.detach() == 0).any()}


def apply_masks(model: Any, masks: dict[str, Any]) -> None:
    """Zero the weights under ``masks`` again (after a merge or an optimizer step moved them)."""
    import torch

    with torch.no_grad():
        for name, lin in decoder_linears(model).items():
            if name in masks:
                lin.weight.masked_fill_(masks[name], 0)


def lora_recover(model: Any, tokenizer: Any, text: str, *, settings: RecoverSettings = RecoverSettings(),
                 lr: float = 2e-4, r: int = 16, progress: Progress | None = None) -> dict[str, Any]:
    """LoRA fine-tuning of ``model`` on ``text`` (causal-LM loss on every token of ``seq_len``-token chunks), then
    the adapter merged into the weights and the pruning mask applied again, so the model stays as sparse as it was.
    ``settings``: steps, seq_len, batch_size, seed. Changes ``model`` in place; returns a report.

    The adapter (rank ``r`` on every linear layer but the head, :func:`lora_config`) trains a dense update; merging
    it would fill the pruned positions, so they are zeroed again. ``delta_pruned_share`` in the report is the share
    of the update's squared norm that fell there and was dropped (about the sparsity for an update that ignores
    the mask); ``loss_before`` / ``loss_after`` are measured on the same fixed chunks of ``text`` with the final,
    merged and masked, weights."""
    quiet_imports()  # peft imports bitsandbytes and torchao
    from peft import get_peft_model

    start, masks = time.perf_counter(), pruning_masks(model)
    chunks = token_chunks(tokenizer, text, settings.seq_len)
    before = _lm_loss(model, chunks[:EVAL_CHUNKS])
    grads, was_training = {n: p.requires_grad for n, p in model.named_parameters()}, model.training
    seed_everything(settings.seed)
    with quiet_library_warnings():
        peft_model = get_peft_model(model, lora_config(r=r, dropout=0.0))
    params = [p for p in peft_model.parameters() if p.requires_grad]
    try:
        peft_model.train()
        losses = train_loop(params, chunks, lambda batch: peft_model(input_ids=batch, labels=batch).loss, settings,
                            lr=lr, progress=progress, description="LoRA recovery")
        pruned_share = _masked_delta_share(peft_model, masks)
        peft_model.merge_and_unload()  # merges into ``model`` itself and puts its own linear layers back
    except BaseException:
        peft_model.unload()  # the model as it was, without the adapter layers
        raise
    finally:
        for name, param in model.named_parameters():
            param.requires_grad_(grads.get(name, True))
        model.train(was_training)
    apply_masks(model, masks)
    after = _lm_loss(model, chunks[:EVAL_CHUNKS])
    return {"method": "lora", "steps": settings.steps, "seq_len": settings.seq_len, "batch_size": settings.batch_size,
            "lr": lr, "r": r, "trainable_params": sum(p.numel() for p in params), **_summary(losses, before, after),
            "delta_pruned_share": pruned_share, "sparsity": sparsity_of(model).sparsity,
            "seconds": round(time.perf_counter() - start, 3)}


def distill(student: Any, teacher: Any, tokenizer: Any, text: str, *, settings: RecoverSettings = RecoverSettings(),
            lr: float = 5e-5, temperature: float = 2.0, kd_weight: float = 1.0,
            progress: Progress | None = None) -> dict[str, Any]:
    """Logit knowledge distillation (Hinton et al. 2015) of ``teacher`` into ``student`` on ``text``: the loss is
    ``kd_weight * T^2 * KL(teacher_T || student_T)`` over next-token distributions softened by ``temperature`` T,
    plus ``(1 - kd_weight)`` times the causal-LM loss. Pure logit KD (``kd_weight`` 1) is what Minitron (Muralidharan
    et al. 2024) found best for retraining pruned LLMs. Both models need the same vocabulary. ``settings``: steps,
    seq_len, batch_size, seed. Changes ``student`` in place; returns a report.

    The student trains its full decoder-block weights (embeddings and head frozen: the vocabulary is shared with the
    teacher, and they are a fifth of a small model's parameters). Full weights rather than LoRA so that the mask
    holds during training as well as after: the gradients of pruned weights are zeroed before each step (AdamW's
    state for them stays zero) and the mask is applied again after it, so the model being trained is the sparse
    model that comes out."""
    import torch

    start, masks = time.perf_counter(), pruning_masks(student)
    chunks = token_chunks(tokenizer, text, settings.seq_len)
    linears = decoder_linears(student)
    device = next(student.parameters()).device
    teacher.eval()

    def loss_fn(batch: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = teacher(input_ids=batch.to(next(teacher.parameters()).device)).logits.to(device)
        return kd_loss(student(input_ids=batch).logits, target, batch, temperature, kd_weight)

    def mask_grads() -> None:
        for name, mask in masks.items():
            if linears[name].weight.grad is not None:
                linears[name].weight.grad.masked_fill_(mask, 0)

    def eval_loss() -> float:
        with torch.no_grad():
            return float(loss_fn(chunks[:EVAL_CHUNKS].to(device)))

    grads, was_training = {n: p.requires_grad for n, p in student.named_parameters()}, student.training
    for name, param in student.named_parameters():
        param.requires_grad_(name.startswith("model.layers."))
    params = [p for p in student.parameters() if p.requires_grad]
    try:
        before = eval_loss()
        student.train()
        losses = train_loop(params, chunks, loss_fn, settings, lr=lr, progress=progress, description="distillation",
                            before_step=mask_grads, after_step=lambda: apply_masks(student, masks))
    finally:
        for name, param in student.named_parameters():
            param.requires_grad_(grads[name])
        student.train(was_training)
    return {"method": "distill", "steps": settings.steps, "seq_len": settings.seq_len,
            "batch_size": settings.batch_size, "lr": lr, "temperature": temperature, "kd_weight": kd_weight,
            "trainable_params": sum(p.numel() for p in params),
            **_summary(losses, before, eval_loss()), "sparsity": sparsity_of(student).sparsity,
            "seconds": round(time.perf_counter() - start, 3)}


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, input_ids: torch.Tensor, temperature: float,
            kd_weight: float) -> torch.Tensor:
    """``kd_weight * T^2 * KL(teacher_T || student_T)`` per token (T^2 keeps the gradient scale of the soft targets
    independent of T), plus ``(1 - kd_weight)`` times the next-token cross-entropy on ``input_ids``."""
    import torch.nn.functional as F

    if student_logits.shape[-1] != teacher_logits.shape[-1]:
        raise InputError(f"distillation: the student has {student_logits.shape[-1]} logits per token and the teacher "
                         f"{teacher_logits.shape[-1]}", hint="distil from a teacher with the student's tokenizer")
    t = temperature
    student_lp = F.log_softmax(student_logits.float().flatten(0, 1) / t, dim=-1)
    teacher_lp = F.log_softmax(teacher_logits.float().flatten(0, 1) / t, dim=-1)
    loss = F.kl_div(student_lp, teacher_lp, log_target=True, reduction="batchmean") * t * t
    if kd_weight < 1:
        ce = F.cross_entropy(student_logits[:, :-1].float().flatten(0, 1), input_ids[:, 1:].flatten())
        loss = kd_weight * loss + (1 - kd_weight) * ce
    return loss


def train_loop(params: list[Any], chunks: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor],
               settings: RecoverSettings, *, lr: float, progress: Progress | None, description: str,
               before_step: Callable[[], None] | None = None,
               after_step: Callable[[], None] | None = None) -> list[float]:
    """``steps`` AdamW steps (no weight decay, learning rate decaying linearly from ``lr`` to 0, gradients clipped
    at norm 1) on batches of ``chunks`` drawn in seeded random order, epoch after epoch, ``steps``, ``batch_size`` and
    ``seed`` from ``settings``. Returns the loss of each step. ``before_step`` runs between backward
    and the optimizer step, ``after_step`` after it."""
    import torch

    steps, batch_size, seed = settings.steps, settings.batch_size, settings.seed
    if steps < 1 or lr <= 0 or batch_size < 1:
        raise InputError(f"{description}: steps {steps}, lr {lr} and batch_size {batch_size} must be positive",
                         hint="e.g. steps 50, lr 1e-4, batch_size 4")
    device = params[0].device
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    task = (progress or NullProgress()).task(description, total=steps)
    losses: list[float] = []

    def stopping(signum: int) -> None:
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        log.warning("%s: stopping in %s's step %d/%d once torch's current call returns (it cannot be interrupted "
                    "inside one, which can take a while on a CPU); the experiment runs again on --resume", name,
                    description, len(losses) + 1, steps)

    with said_at_once(stopping):  # the KeyboardInterrupt itself comes when torch hands back: a step took 16 s
        for step, idx in zip(range(steps), _batches(len(chunks), batch_size, seed), strict=False):
            loss = loss_fn(chunks[idx].to(device))
            loss.backward()
            if before_step is not None:
                before_step()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            if after_step is not None:
                after_step()
            losses.append(float(loss.detach()))
            task.advance(description=f"{description}: step {step + 1}/{steps}, loss {losses[-1]:.4g}")
    return losses


def _batches(n: int, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
    """Index batches over ``n`` chunks: a fresh seeded permutation each epoch (batches larger than ``n`` repeat)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    order = torch.empty(0, dtype=torch.long)
    while True:
        while len(order) < batch_size:
            order = torch.cat([order, torch.randperm(n, generator=gen)])
        yield order[:batch_size]
        order = order[batch_size:]


def _lm_loss(model: Any, chunks: torch.Tensor) -> float:
    """Mean causal-LM loss of ``model`` on ``chunks`` (one batch, no grad)."""
    import torch

    with torch.no_grad():
        batch = chunks.to(next(model.parameters()).device)
        return float(model(input_ids=batch, labels=batch).loss)


def _summary(losses: list[float], before: float, after: float) -> dict[str, Any]:
    return {"loss_before": before, "loss_after": after, "first_loss": losses[0], "last_loss": losses[-1],
            "losses": [round(x, 4) for x in losses]}


def _masked_delta_share(peft_model: Any, masks: dict[str, Any]) -> float:
    """The share of the LoRA update's squared norm that falls on pruned weights (dropped when the mask returns)."""
    import torch
    from peft.tuners.lora import LoraLayer

    dropped = total = 0.0
    with torch.no_grad():
        for name, module in peft_model.named_modules():
            if not isinstance(module, LoraLayer) or "default" not in module.lora_A:
                continue
            delta = cast(Any, module).get_delta_weight("default").float()
            total += float(delta.pow(2).sum())
            mask = masks.get(name.removeprefix("base_model.model."))
            if mask is not None:
                dropped += float(delta[mask].pow(2).sum())
    return dropped / total if total else 0.0
