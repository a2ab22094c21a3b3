"""The forecaster families besides Informer: shapes, the period, each family training past the naive forecast on a
short synthetic series, and their config (conditional keys, per-family budgets)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from agentlab.nas.config import NASConfig, apply_changes
from agentlab.nas.data import detect_period
from agentlab.nas.families import FamilySpec, build_forecaster
from agentlab.nas.informer import SpecError
from agentlab.nas.train import check_model, evaluate_baseline, prepare_data, train_trial

FAMILIES = ["linear", "sparsetsf", "cyclenet", "patchtst", "itransformer", "duet"]
SMALL = {"d_model": 16, "n_heads": 2, "e_layers": 1, "d_ff": 32}


@pytest.mark.parametrize("family,extra", [
    ("linear", {}), ("linear", {"linear_variant": "nlinear", "individual": True}),
    ("linear", {"linear_variant": "dlinear", "moving_avg": 5}), ("sparsetsf", {"seq_len": 60}),
    ("cyclenet", {}), ("cyclenet", {"cycle_backbone": "mlp"}), ("patchtst", {"revin": False}),
    ("itransformer", {}), ("duet", {}), ("duet", {"n_experts": 3, "top_k": 2, "revin": False}),
])
@pytest.mark.parametrize("c_out", [3, 1])
def test_every_family_maps_a_window_to_the_horizon(family: str, extra: dict[str, Any], c_out: int) -> None:
    torch.manual_seed(0)
    spec = FamilySpec(**{"family": family, "seq_len": 48, "pred_len": 20, "enc_in": 3, "c_out": c_out,
                         "period": 12, "patch_len": 8, "stride": 4, **SMALL, **extra})
    model = build_forecaster(spec)
    x, marks = torch.randn(5, spec.seq_len, 3), torch.randn(5, spec.seq_len, 4)
    out = model(x, marks, torch.arange(5))
    assert out.shape == (5, 20, c_out) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_channel_independent_families_forecast_each_channel_alone() -> None:
    for family in ("linear", "sparsetsf", "cyclenet", "patchtst"):
        torch.manual_seed(0)
        model = build_forecaster(FamilySpec(family=family, seq_len=48, pred_len=12, enc_in=3, c_out=3, period=12,
                                            patch_len=8, stride=4, **SMALL)).eval()
        x = torch.randn(2, 48, 3)
        changed = x.clone()
        changed[..., 0] += torch.randn(2, 48)
        before, after = model(x, None, torch.zeros(2, dtype=torch.long)), model(changed, None,
                                                                               torch.zeros(2, dtype=torch.long))
        assert torch.allclose(before[..., 1:], after[..., 1:], atol=1e-5), family


def test_cyclenet_reads_the_phase_from_the_window_index() -> None:
    torch.manual_seed(0)
    model = build_forecaster(FamilySpec(family="cyclenet", seq_len=24, pred_len=6, enc_in=2, c_out=2, period=12))
    with torch.no_grad():
        model.core.cycle.copy_(torch.randn(12, 2))
    x = torch.randn(1, 24, 2)
    same = model(x, None, torch.tensor([3])), model(x, None, torch.tensor([15]))  # a whole period apart
    other = model(x, None, torch.tensor([4]))
    assert torch.allclose(*same) and not torch.allclose(same[0], other)


def test_duet_routes_each_channel_window_masks_channels_and_forecasts_repeatably() -> None:
    torch.manual_seed(0)
    model = build_forecaster(FamilySpec(family="duet", seq_len=48, pred_len=12, enc_in=4, c_out=4, n_experts=3,
                                        top_k=2, **SMALL))
    x = torch.randn(6, 48, 4) * torch.tensor([1.0, 5.0, 0.2, 2.0])
    out = model(x)
    aux = model.aux_loss
    assert aux is not None and aux.requires_grad and aux.item() >= 0  # the router's balance joins the loss
    (out.square().mean() + aux).backward()
    assert model.core.metric.grad is not None and model.core.metric.grad.abs().sum() > 0  # the mask is learned
    model.eval()
    gates = model.core._route(x.transpose(1, 2).reshape(24, 48))
    assert ((gates > 0).sum(1) == 2).all() and torch.allclose(gates.sum(1), torch.ones(24), atol=1e-4)
    mask = model.core._mask(x.transpose(1, 2))
    assert set(mask.unique().tolist()) <= {0.0, 1.0} and (mask.diagonal(dim1=1, dim2=2) == 1).all()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))  # no sampling at evaluation: a forecast is repeatable
    with pytest.raises(SpecError, match="top_k must not exceed n_experts"):
        FamilySpec(family="duet", n_experts=2, top_k=3)
    with pytest.raises(ValidationError, match="model.top_k: must not exceed model.n_experts"):
        NASConfig.model_validate({"model": {"family": "duet", "n_experts": 1, "top_k": 2}})


def test_specs_refuse_what_cannot_work() -> None:
    with pytest.raises(SpecError, match="seq_len >= period"):
        FamilySpec(family="sparsetsf", seq_len=12, period=24)
    with pytest.raises(SpecError, match="n_heads must divide"):
        FamilySpec(family="patchtst", d_model=30, n_heads=4)
    config = NASConfig.model_validate({"data": {"seq_len": 12, "label_len": 0}, "model": {"family": "sparsetsf"}})
    assert "seq_len >= period" in check_model(config, prepare_data(config))


def test_the_period_is_the_daily_cycle_of_the_timestamps() -> None:
    start = np.datetime64("2020-01-01T00:00")
    for step, period in ((np.timedelta64(1, "h"), 24), (np.timedelta64(15, "m"), 96), (np.timedelta64(1, "D"), 7),
                         (np.timedelta64(7, "D"), 52)):
        assert detect_period(start + np.arange(50) * step) == period
    assert prepare_data(NASConfig()).period == 24  # the built-in synthetic series is hourly


def cycles_csv(folder: Path, steps: int = 900) -> Path:
    """Three hourly channels: daily cycles of their own phase and shape, a slow trend each, noise."""
    t = np.arange(steps)
    rng = np.random.default_rng(0)
    day = 2 * np.pi * t / 24
    values = np.stack([np.sin(day), 0.5 * np.sin(2 * day + 1) + np.cos(day), np.sin(day - 2) ** 2], axis=1)
    values += np.array([0.002, -0.001, 0.001]) * t[:, None] + rng.normal(0, 0.1, (steps, 3))
    dates = np.datetime64("2021-01-01T00:00") + t * np.timedelta64(1, "h")
    lines = ["date,a,b,OT", *(f"{str(d).replace('T', ' ')},{v[0]:.4f},{v[1]:.4f},{v[2]:.4f}"
                              for d, v in zip(dates, values, strict=True))]
    path = folder / "cycles.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def tiny(family: str, path: Path | None = None, **train: Any) -> NASConfig:
    return NASConfig.model_validate({
        "data": {"path": str(path) if path else None, "synthetic_steps": 900, "synthetic_channels": 3, "seq_len": 48,
                 "label_len": 0, "pred_len": 12},
        "model": {"family": family, "revin": True, "patch_len": 8, "stride": 4, **SMALL},
        "train": {"epochs": 6, "patience": 6, "batch_size": 32, "learning_rate": 0.01 if family in (
            "linear", "sparsetsf", "cyclenet") else 0.003, "lr_decay": 0.9, **train}})


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_trains_and_beats_the_naive_forecast(family: str, tmp_path: Path) -> None:
    config = tiny(family, cycles_csv(tmp_path))
    prepared = prepare_data(config)
    result = train_trial(config, prepared, None)
    naive = evaluate_baseline(prepared)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.test_mse < 0.8 * naive["test_mse"], (result.test_mse, naive)


def test_search_keys_may_be_conditional_and_are_checked() -> None:
    space = {"model.family": {"choices": ["linear", "patchtst"]},
             "model.patch_len": {"choices": [8, 16], "when": {"model.family": ["patchtst"]}}}
    assert NASConfig.model_validate({"search": {"space": space}}).search.space["model.patch_len"].when
    with pytest.raises(ValidationError, match="when: 'model.famly' is not a config key"):
        NASConfig.model_validate({"search": {"space": {"model.patch_len": {"choices": [8], "when": {
            "model.famly": ["patchtst"]}}}}})
    with pytest.raises(ValidationError, match="when.model.family: 'tst' can never be a valid family"):
        NASConfig.model_validate({"search": {"space": {"model.patch_len": {"choices": [8], "when": {
            "model.family": ["tst"]}}}}})


def test_per_family_training_comes_before_the_search_changes() -> None:
    config = NASConfig.model_validate({"train": {"epochs": 30, "learning_rate": 0.01, "per_family": {
        "patchtst": {"epochs": 8, "learning_rate": 1e-4}}}})
    assert apply_changes(config, {"model.family": "linear"}).train.epochs == 30
    trial = apply_changes(config, {"model.family": "patchtst"})
    assert (trial.train.epochs, trial.train.learning_rate) == (8, 1e-4)
    assert apply_changes(config, {"model.family": "patchtst", "train.learning_rate": 3e-4}).train.learning_rate == 3e-4
    with pytest.raises(ValidationError, match="per_family.patchtst.epoch: not a train setting"):
        NASConfig.model_validate({"train": {"per_family": {"patchtst": {"epoch": 8}}}})
    with pytest.raises(ValidationError, match="per_family.linear.batch_size"):
        NASConfig.model_validate({"train": {"per_family": {"linear": {"batch_size": 0}}}})
