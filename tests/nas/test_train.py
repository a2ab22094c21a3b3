"""One Informer trial: artifacts, determinism, early stopping, pruning, divergence, baseline, CSV data, CUDA."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from agentlab.core.errors import ConfigError
from agentlab.nas import train as T
from agentlab.nas.config import NASConfig
from agentlab.nas.informer import build_informer
from agentlab.nas.train import (
    ARTIFACTS,
    TrialPruned,
    evaluate_baseline,
    prepare_data,
    spec_from_config,
    train_trial,
)

TINY: dict[str, Any] = {
    "data": {"synthetic_steps": 600, "seq_len": 24, "label_len": 12, "pred_len": 12},
    "model": {"d_model": 16, "n_heads": 2, "d_ff": 32},
    # One thread: two OpenMP threads on a busy 2-core machine can be ten times slower, not faster.
    "train": {"epochs": 2, "max_train_batches": 5, "threads": 1, "device": "cpu"},
}


def tiny(**sections: dict[str, Any]) -> NASConfig:
    """TINY with per-section overrides, e.g. ``tiny(train={"epochs": 3})``."""
    data = {key: {**value, **sections.get(key, {})} for key, value in TINY.items()}
    return NASConfig.model_validate(data)


def test_windows_match_the_dataset() -> None:
    prepared = prepare_data(tiny())
    windows = T._Windows(prepared.val, torch.device("cpu"))
    starts = torch.tensor([0, 7, windows.n - 1])
    batch = windows.take(starts)
    for row, i in enumerate(starts.tolist()):
        for got, want in zip(batch, prepared.val[i], strict=True):
            assert torch.equal(got[row], want)


def test_prepare_data_loads_once_per_data_section(monkeypatch: pytest.MonkeyPatch) -> None:
    T.clear_data_cache()
    calls: list[int] = []
    real = T.load_series
    monkeypatch.setattr(T, "load_series", lambda d: calls.append(1) or real(d))
    first = prepare_data(tiny())
    assert prepare_data(tiny(train={"learning_rate": 0.01}, model={"d_model": 32})) is first
    other = prepare_data(tiny(data={"pred_len": 6}))
    assert other is not first and other.test.pred_len == 6
    assert len(calls) == 1  # a new window length re-windows the cached series, it does not reload it
    spec = spec_from_config(tiny(data={"pred_len": 6}), other)
    assert (spec.seq_len, spec.label_len, spec.pred_len, spec.enc_in, spec.c_out) == (24, 12, 6, 7, 7)
    with pytest.raises(ConfigError, match="lengths"):
        spec_from_config(tiny(), other)


def test_lr_decay_sets_the_per_epoch_schedule() -> None:
    config = tiny(train={"epochs": 3, "patience": 3, "lr_decay": 0.8}, model={"linear": "input"})
    result = train_trial(config, prepare_data(config), None)
    assert [h["lr"] for h in result.history] == pytest.approx([1e-3, 8e-4, 6.4e-4])
    assert math.isfinite(result.test_mse)


def test_trial_writes_artifacts_and_sensible_metrics(tmp_path: Path) -> None:
    config = tiny()
    epochs: list[dict[str, float]] = []
    result = train_trial(config, prepare_data(config), tmp_path / "trial", on_epoch=epochs.append)
    trial = tmp_path / "trial"
    assert sorted(p.name for p in trial.iterdir()) == sorted(ARTIFACTS)
    assert not result.diverged and result.epochs == len(result.history) == len(epochs) == 2
    assert set(epochs[0]) == {"epoch", "train_loss", "val_mse", "lr", "seconds"}
    assert [h["lr"] for h in result.history] == [1e-3, 5e-4]  # halved every epoch
    assert result.val_mse == min(h["val_mse"] for h in result.history)
    assert 0 < result.test_mse < 5 and 0 < result.test_mae < 3 and result.seconds > 0
    metrics = json.loads((trial / "metrics.json").read_text())
    assert metrics["test_mse"] == result.test_mse and metrics["n_params"] == result.n_params > 0
    assert json.loads((trial / "history.json").read_text()) == result.history
    assert NASConfig.model_validate(yaml.safe_load((trial / "config_used.yaml").read_text())) == config
    assert (trial / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from safetensors.torch import load_file

    model = build_informer(spec_from_config(config, prepare_data(config)))
    model.load_state_dict(load_file(trial / "best_model.safetensors"))  # strict: every tensor present


def test_same_seed_same_metrics() -> None:
    config = tiny()
    a, b = (train_trial(config, prepare_data(config), None) for _ in range(2))
    assert (a.val_mse, a.test_mse, a.test_mae) == (b.val_mse, b.test_mse, b.test_mae)
    c = train_trial(tiny(train={"seed": 1}), prepare_data(config), None)
    assert c.val_mse != a.val_mse


def _scripted_validation(monkeypatch: pytest.MonkeyPatch, values: list[float]) -> list[dict[str, torch.Tensor]]:
    """Make validation return ``values`` in turn; returns the weights seen at each validation."""
    states: list[dict[str, torch.Tensor]] = []
    real = T._Trainer.evaluate

    def evaluate(self: T._Trainer, windows: T._Windows) -> tuple[float, float]:
        if windows is not self.val:
            return real(self, windows)
        states.append(self.state())
        return values[len(states) - 1], 0.0

    monkeypatch.setattr(T._Trainer, "evaluate", evaluate)
    return states


def test_early_stopping_restores_the_best_epoch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    states = _scripted_validation(monkeypatch, [1.0, 0.5, 0.7, 0.6, 0.1, 0.1])
    config = tiny(train={"epochs": 6, "patience": 2})
    result = train_trial(config, prepare_data(config), tmp_path)
    assert (result.epochs, result.stop_reason, result.val_mse) == (4, "early_stopping", 0.5)
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "best_model.safetensors")
    assert all(torch.equal(saved[k], v) for k, v in states[1].items())
    assert not all(torch.equal(saved[k], v) for k, v in states[3].items())


def test_should_stop_ends_training_and_still_tests() -> None:
    config = tiny(train={"epochs": 3})
    result = train_trial(config, prepare_data(config), None, should_stop=lambda: True)
    assert (result.epochs, result.stop_reason) == (1, "should_stop")
    assert math.isfinite(result.test_mse)


def test_report_true_prunes_after_that_epoch(tmp_path: Path) -> None:
    calls: list[tuple[int, float]] = []

    def report(epoch: int, value: float) -> bool:
        calls.append((epoch, value))
        return epoch == 2

    config = tiny(train={"epochs": 4})
    with pytest.raises(TrialPruned) as info:
        train_trial(config, prepare_data(config), tmp_path, report=report)
    assert [epoch for epoch, _ in calls] == [1, 2]
    assert [h["epoch"] for h in info.value.history] == [1, 2] and info.value.epoch == 2
    assert [h["val_mse"] for h in info.value.history] == [v for _, v in calls]
    assert (tmp_path / "history.json").is_file() and not (tmp_path / "metrics.json").exists()


def test_diverging_run_returns_diverged(tmp_path: Path) -> None:
    config = tiny(train={"learning_rate": 1e6, "epochs": 3})
    result = train_trial(config, prepare_data(config), tmp_path)
    assert result.diverged and result.stop_reason == "diverged"
    assert result.val_mse == result.test_mse == math.inf
    assert json.loads((tmp_path / "metrics.json").read_text())["diverged"] is True
    assert not (tmp_path / "best_model.safetensors").exists()


def test_baseline_matches_a_direct_computation() -> None:
    prepared = prepare_data(tiny())
    errors = []
    for i in range(len(prepared.test)):
        x, y, _, _ = prepared.test[i]
        errors.append((x[-1].numpy() - y[-12:].numpy()).astype(np.float64))
    err = np.stack(errors)
    got = evaluate_baseline(prepared)
    assert got["test_mse"] == pytest.approx(float(np.mean(err**2)))
    assert got["test_mae"] == pytest.approx(float(np.mean(np.abs(err))))


def test_trained_model_beats_the_naive_baseline() -> None:
    config = tiny(data={"synthetic_steps": 1000, "seq_len": 48, "label_len": 24, "pred_len": 24},
                  train={"epochs": 3, "max_train_batches": 15, "learning_rate": 3e-3})
    prepared = prepare_data(config)
    result = train_trial(config, prepared, None)
    baseline = evaluate_baseline(prepared)
    assert result.test_mse < 0.9 * baseline["test_mse"], (result.test_mse, baseline)


def test_csv_with_other_column_names_trains(tmp_path: Path) -> None:
    steps = np.arange(500)
    dates = np.datetime64("2022-01-01T00:00") + steps * np.timedelta64(1, "h")
    load = 10 + 3 * np.sin(2 * np.pi * steps / 24)
    temp = 20 + np.cos(2 * np.pi * steps / 24)
    lines = ["date,temp,load,humidity"] + [f"{str(d).replace('T', ' ')},{t:.3f},{v:.3f},{50 + i % 5}"
                                            for i, (d, t, v) in enumerate(zip(dates, temp, load, strict=True))]
    path = tmp_path / "power.csv"
    path.write_text("\n".join(lines) + "\n")
    config = tiny(data={"path": str(path), "features": "MS", "target": "load"})
    prepared = prepare_data(config)
    assert prepared.columns[-1] == "load" and prepared.c_out == 1
    result = train_trial(config, prepared, tmp_path / "trial")
    assert not result.diverged and math.isfinite(result.test_mse)
    assert evaluate_baseline(prepared)["test_mse"] > 0


def test_cuda_requested_without_cuda_is_a_config_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available")
    config = tiny(train={"device": "cuda"})
    with pytest.raises(ConfigError, match="CUDA"):
        train_trial(config, prepare_data(config), None)


def test_a_trials_config_used_is_redacted_as_the_runs_config(tmp_path: Path) -> None:
    """A PostgreSQL URL's password reached every trial's config_used.yaml (and MLflow's copy of it) in clear."""
    url = "postgresql+psycopg://agentlab:S3cretPw_xyz@127.0.0.1:5499/nas1"
    data = tiny(train={"epochs": 1}).model_dump(mode="json")
    config = NASConfig.model_validate({**data, "search": {**data["search"], "storage": url}})
    train_trial(config, prepare_data(config), tmp_path / "trial")
    written = (tmp_path / "trial" / "config_used.yaml").read_text()
    assert "S3cretPw_xyz" not in written and "agentlab:***@127.0.0.1:5499/nas1" in written


@pytest.mark.gpu
def test_tiny_trial_on_cuda(tmp_path: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    config = tiny(train={"device": "cuda"})
    result = train_trial(config, prepare_data(config), tmp_path)
    assert result.device.startswith("cuda") and not result.diverged
    assert math.isfinite(result.test_mse) and (tmp_path / "best_model.safetensors").is_file()
    again = train_trial(config, prepare_data(config), None)
    assert again.epochs == result.epochs


@pytest.mark.parametrize("name,cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                                      ("sgd", torch.optim.SGD)])
def test_each_optimizer_is_built_as_configured(name: str, cls: type) -> None:
    config = tiny(train={"optimizer": name, "learning_rate": 0.02, "momentum": 0.5})
    trainer = T._Trainer(config, prepare_data(config), torch.device("cpu"))
    assert type(trainer.optimizer) is cls
    group = trainer.optimizer.param_groups[0]
    assert group["lr"] == 0.02 and group["weight_decay"] == 0.0  # 0 by default, for adamw too (torch's is 0.01)
    if name == "sgd":
        assert group["momentum"] == 0.5
    decayed = T._Trainer(tiny(train={"optimizer": name, "weight_decay": 0.01}), prepare_data(config),
                         torch.device("cpu"))
    assert decayed.optimizer.param_groups[0]["weight_decay"] == 0.01


def test_losses_differ_on_a_crafted_batch() -> None:
    pred, true = torch.zeros(1, 2, 1), torch.tensor([[[0.5], [3.0]]])
    assert T.build_loss("mse")(pred, true).item() == pytest.approx((0.25 + 9.0) / 2)
    assert T.build_loss("mae")(pred, true).item() == pytest.approx((0.5 + 3.0) / 2)
    # huber: squared (halved) below delta, linear above: 0.5 * 0.5**2 and 1 * (3 - 0.5 * 1)
    assert T.build_loss("huber")(pred, true).item() == pytest.approx((0.125 + 2.5) / 2)
    assert T.build_loss("huber", huber_delta=5.0)(pred, true).item() == pytest.approx((0.25 + 9.0) / 4)


@pytest.mark.parametrize("loss,function", [("mse", "mse_loss"), ("mae", "l1_loss"), ("huber", "huber_loss")])
def test_training_uses_the_configured_loss_and_validation_stays_mse(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                    loss: str, function: str) -> None:
    import torch.nn.functional as F
    from safetensors.torch import load_file

    calls = {name: 0 for name in ("mse_loss", "l1_loss", "huber_loss")}
    for name in calls:
        real = getattr(F, name)

        def spy(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> torch.Tensor:
            calls[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(F, name, spy)
    config = tiny(train={"loss": loss, "huber_delta": 0.5, "epochs": 1}, model={"attn": "full"})
    prepared = prepare_data(config)
    trainer = T._Trainer(config, prepared, torch.device("cpu"))
    batches = len(trainer.train_batches())
    result = train_trial(config, prepared, tmp_path)
    assert calls == {name: batches if name == function else 0 for name in calls}  # once a batch, never to validate
    # The reported validation metric is the MSE of the saved weights, whatever loss trained them.
    trainer.model.load_state_dict(load_file(tmp_path / "best_model.safetensors"))
    trainer.model.eval()
    with torch.no_grad():
        pred, true = trainer.forward(trainer.val.take(torch.arange(trainer.val.n)))
    assert result.val_mse == pytest.approx((pred - true).square().mean().item(), rel=1e-5)


@pytest.mark.parametrize("optimizer,loss,batch_size", [("sgd", "huber", 16), ("adamw", "mae", 64),
                                                       ("adam", "mse", 32)])
def test_short_trial_with_optimizer_loss_and_batch_size(optimizer: str, loss: str, batch_size: int) -> None:
    config = tiny(train={"optimizer": optimizer, "loss": loss, "batch_size": batch_size, "learning_rate": 0.01,
                         "max_train_batches": 3})
    result = train_trial(config, prepare_data(config), None)
    assert not result.diverged and math.isfinite(result.val_mse) and math.isfinite(result.test_mse)


def test_m_mode_target_falls_back_to_the_last_column_and_s_needs_one(tmp_path: Path) -> None:
    path = tmp_path / "no_ot.csv"
    dates = np.datetime64("2022-01-01T00:00") + np.arange(300) * np.timedelta64(1, "h")
    rows = [f"{str(d).replace('T', ' ')},{i % 5},{i % 7}\n" for i, d in enumerate(dates)]
    path.write_text("date,a,b\n" + "".join(rows))
    assert prepare_data(tiny(data={"path": str(path)})).target == "b"  # recorded in results.json as data.target
    assert prepare_data(tiny(data={"target": "x2"})).target == "x2"  # synthetic columns: x0..x5, OT
    with pytest.raises(ConfigError, match=r"the synthetic series: target column 'nope' not found \(columns: x0"):
        prepare_data(tiny(data={"target": "nope"}))  # M: a target named by hand is no fallback (it was ignored)
    with pytest.raises(ConfigError, match=r"the synthetic series: target column 'nope' not found \(columns: x0"):
        prepare_data(tiny(data={"target": "nope", "features": "MS"}))
