"""Recovery on the session's tiny Llama: LoRA on plain text and logit distillation lower their loss, and the pruned
weights stay exactly zero (after the LoRA merge, and through every distillation step)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from agentlab.compress.prune import decoder_linears, magnitude_prune, sparsity_of, structured_prune  # noqa: E402
from agentlab.compress.recover import RecoverSettings, distill, kd_loss, lora_recover, pruning_masks  # noqa: E402
from agentlab.core.errors import InputError  # noqa: E402
from agentlab.core.models.load import load_causal_lm  # noqa: E402
from agentlab.core.train.tiny import CORPUS  # noqa: E402

TEXT = CORPUS.read_text(encoding="utf-8")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def pruned(tiny_model: dict[str, Path]) -> tuple[Any, Any, dict[str, Any]]:
    """The tiny model at 50% magnitude sparsity, its tokenizer and the dense weights before training."""
    model, tokenizer = load_causal_lm(tiny_model["hf"], device="cpu")
    magnitude_prune(model, 0.5)
    return model, tokenizer, {n: p.detach().clone() for n, p in model.named_parameters()}


def assert_masks_kept(model: Any, before: dict[str, Any]) -> None:
    for name, lin in decoder_linears(model).items():
        was_zero = before[f"{name}.weight"] == 0
        assert was_zero.float().mean() == 0.5
        assert lin.weight[was_zero].eq(0).all(), name  # pruned stays pruned
        assert lin.weight[~was_zero].ne(0).all(), name  # and nothing else got pruned


class Recorder:
    def __init__(self) -> None:
        self.advanced = 0
        self.descriptions: list[str] = []

    def task(self, description: str, total: float | None = None) -> Recorder:
        self.total = total
        return self

    def advance(self, n: float = 1, description: str | None = None) -> None:
        self.advanced += int(n)
        self.descriptions.append(description or "")

    def update(self, **kwargs: Any) -> None:
        pass


def test_lora_recovery_lowers_the_loss_and_keeps_the_mask(pruned: tuple[Any, Any, dict[str, Any]]) -> None:
    model, tokenizer, before = pruned
    progress = Recorder()
    report = lora_recover(model, tokenizer, TEXT, settings=RecoverSettings(steps=30, seq_len=64), lr=1e-2, r=8,
                          progress=progress)
    assert report["loss_after"] < report["loss_before"] - 0.3, report
    assert_masks_kept(model, before)
    assert report["sparsity"] == sparsity_of(model).sparsity == 0.5
    # The merged update was dense: about half of it fell on pruned weights and was dropped.
    assert 0.3 < report["delta_pruned_share"] < 0.7
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert any("q_proj" in n for n in changed) and not any("lora" in n for n, _ in model.named_modules())
    assert all(p.requires_grad for p in model.parameters()) and not model.training
    assert progress.total == 30 and progress.advanced == 30 and "step 30/30" in progress.descriptions[-1]
    assert report["trainable_params"] > 0 and len(report["losses"]) == 30


def test_lora_recovery_that_fails_leaves_the_model_without_adapters(pruned: tuple[Any, Any, dict[str, Any]]) -> None:
    model, tokenizer, before = pruned
    with pytest.raises(InputError):
        lora_recover(model, tokenizer, TEXT, settings=RecoverSettings(steps=0, seq_len=64))
    assert not any("lora" in n for n, _ in model.named_modules())
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_lora_recovery_of_a_structured_pruned_model(tiny_model: dict[str, Path]) -> None:
    model, tokenizer = load_causal_lm(tiny_model["hf"], device="cpu")
    structured_prune(model, mlp_keep=0.5, heads_keep=1)
    assert pruning_masks(model) == {}
    report = lora_recover(model, tokenizer, TEXT, settings=RecoverSettings(steps=10, seq_len=64), lr=1e-2, r=4)
    assert report["loss_after"] < report["loss_before"] and report["delta_pruned_share"] == 0


def test_distillation_lowers_the_kd_loss_and_keeps_the_mask_every_step(tiny_model: dict[str, Path],
                                                                      pruned: tuple[Any, Any, dict[str, Any]]) -> None:
    student, tokenizer, before = pruned
    teacher, _ = load_causal_lm(tiny_model["hf"], device="cpu")
    masks = pruning_masks(student)
    seen: list[bool] = []
    step = torch.optim.AdamW.step

    def checked_step(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = step(self, *args, **kwargs)
        # Pruned weights' gradients were zeroed, so AdamW leaves them at zero before the mask is applied again.
        seen.append(all(lin.weight[masks[n]].eq(0).all() for n, lin in decoder_linears(student).items()))
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.optim.AdamW, "step", checked_step)
        report = distill(student, teacher, tokenizer, TEXT, settings=RecoverSettings(steps=20, seq_len=64), lr=2e-3)
    assert seen == [True] * 20
    assert report["loss_after"] < 0.7 * report["loss_before"], report
    assert_masks_kept(student, before)
    assert all(p.requires_grad for p in student.parameters())
    embed = "model.embed_tokens.weight"
    assert torch.equal(student.get_parameter(embed), before[embed])  # embeddings and head are frozen
    assert report["trainable_params"] < sum(p.numel() for p in student.parameters())


def test_kd_loss_is_zero_for_the_teacher_itself_and_refuses_other_vocabularies() -> None:
    logits = torch.randn(2, 5, 11)
    ids = torch.randint(0, 11, (2, 5))
    assert float(kd_loss(logits, logits.clone(), ids, 2.0, 1.0)) == pytest.approx(0, abs=1e-6)
    assert float(kd_loss(logits, logits.clone(), ids, 2.0, 0.5)) > 0  # half the cross-entropy remains
    with pytest.raises(InputError):
        kd_loss(logits, torch.randn(2, 5, 12), ids, 2.0, 1.0)


def test_distillation_restores_requires_grad_on_failure(tiny_model: dict[str, Path]) -> None:
    student, tokenizer = load_causal_lm(tiny_model["hf"], device="cpu")
    teacher = copy.deepcopy(student)
    with pytest.raises(InputError):
        distill(student, teacher, tokenizer, TEXT, settings=RecoverSettings(steps=0, seq_len=64))
    assert all(p.requires_grad for p in student.parameters())


def test_an_experiments_recovery_tells_each_step(pruned: tuple[Any, Any, dict[str, Any]]) -> None:
    """An experiment's recovery ticks its steps with an ETA as the measurements do: it passed no progress, so a log
    showed no progress line for the whole recovery (20 minutes of LoRA on a loaded machine)."""
    from agentlab.compress.config import Experiment, MeasureSettings
    from agentlab.compress.experiment import Inputs, _recover

    model, tokenizer, _ = pruned
    inputs = Inputs(model="unused", device="cpu", eval_text=TEXT, calib_text=TEXT, questions=[],
                    measure=MeasureSettings())
    for method in ("lora", "distill"):
        exp = Experiment.model_validate({"prune": {"method": "magnitude", "sparsity": 0.5},
                                         "recover": {"method": method, "steps": 3, "lr": 1e-3}})
        ticks: list[str] = []
        if method == "distill":  # the teacher is the model loaded again: the tiny model's folder
            inputs = Inputs(model=str(model.name_or_path), device="cpu", eval_text=TEXT, calib_text=TEXT,
                            questions=[], measure=MeasureSettings())
        _recover(model, tokenizer, exp, inputs, ticks.append)
        assert ticks[0] == f"recovery ({method})" and ticks[-1].startswith(f"recovery ({method}) 3/3, ETA 0:00"), ticks
        assert len(ticks) == 4
