"""The naive families (repeat the last value, repeat the last period): exact forecasts, no weights, a trial that
trains nothing and is validated on the same windows as every other family.

The search space cannot name them until ``model.family``'s allowed values in nas/config.py list them (that file is
being restructured elsewhere); these tests build the trial config with ``model_copy``, which skips that check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from agentlab.nas.config import NASConfig
from agentlab.nas.data import SeriesData, prepare
from agentlab.nas.families import FamilySpec, SpecError, build_forecaster
from agentlab.nas.train import evaluate_baseline, train_trial


def test_naive_forecasts_are_exact_and_weightless() -> None:
    x = torch.randn(3, 10, 2)
    last = build_forecaster(FamilySpec(family="naive_last", seq_len=10, pred_len=7, enc_in=2, c_out=2))
    assert sum(p.numel() for p in last.parameters()) == 0
    assert torch.equal(last(x), x[:, -1:].expand(3, 7, 2))
    seasonal = build_forecaster(FamilySpec(family="naive_seasonal", seq_len=10, pred_len=7, enc_in=2, c_out=1,
                                           period=3))
    want = torch.cat([x[:, -3:], x[:, -3:], x[:, -3:]], dim=1)[:, :7, -1:]
    assert torch.equal(seasonal(x), want)
    with pytest.raises(SpecError, match="naive_seasonal needs seq_len >= period"):
        FamilySpec(family="naive_seasonal", seq_len=10, pred_len=7, enc_in=2, c_out=2, period=24)


def random_walk(n: int = 600, channels: int = 2, seed: int = 0) -> SeriesData:
    rng = np.random.default_rng(seed)
    values = np.cumsum(rng.normal(size=(n, channels)), axis=0).astype(np.float32)
    dates = np.datetime64("2021-01-01T00:00:00") + np.arange(n) * np.timedelta64(1, "D")
    return SeriesData(dates, values, ["a", "OT"], "OT", "walk", "d")


def naive_config(family: str) -> NASConfig:
    cfg = NASConfig.model_validate({"data": {"seq_len": 24, "label_len": 12, "pred_len": 8},
                                    "train": {"epochs": 3, "max_train_batches": 3}})
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"family": family, "period": 7})})


@pytest.mark.parametrize("family", ["naive_last", "naive_seasonal"])
def test_a_naive_trial_trains_nothing_and_is_validated(family: str, tmp_path: Path) -> None:
    prepared = prepare(random_walk(), "M", 24, 12, 8, "ratio")
    result = train_trial(naive_config(family), prepared, tmp_path / "trial")
    assert result.epochs == 0 and result.stop_reason == "naive" and result.n_params == 0 and not result.diverged
    val = prepared.val.data.numpy()
    period = 1 if family == "naive_last" else 7
    errors = []
    for i in range(len(prepared.val)):
        x, y = val[i:i + 24], val[i + 24:i + 32]
        pred = np.concatenate([x[-period:]] * 8)[:8]
        errors.append((pred - y) ** 2)
    assert result.val_mse == pytest.approx(float(np.mean(errors)), rel=1e-5)
    if family == "naive_last":  # the same numbers as the report's naive baseline on the test windows
        assert result.test_mse == pytest.approx(evaluate_baseline(prepared)["test_mse"], rel=1e-5)
    assert (tmp_path / "trial" / "best_model.safetensors").is_file()
    assert (tmp_path / "trial" / "scaler.json").is_file()


def test_naive_first_runs_each_naive_family_once_whatever_the_code_version() -> None:
    """NaiveFirst proposes a naive family only while no trial of it ran, on any code version: after a kept code
    change (the best trial on another variant) the naive forecasts, which run no user code, are not run again."""
    from types import SimpleNamespace

    from agentlab.core.search.planners import PlanContext, Proposal, TrialDomain, trial_key
    from agentlab.core.search.space import ParamSpec, SearchSpace
    from agentlab.nas.run import NaiveFirst

    space = SearchSpace({"model.family": ParamSpec(choices=["tf", "naive_last", "naive_seasonal"]),
                         "x": ParamSpec(low=0.0, high=1.0)}, base={"model.family": "tf", "x": 0.5})
    base = space.complete(space.base)

    class Inner:
        def propose(self, ctx: PlanContext) -> Proposal:
            return Proposal({}, {}, "inner")

    def proposed(records: list[SimpleNamespace], best: SimpleNamespace) -> str:
        domain = TrialDomain(space=space, base_params=base, incumbent=best.params, records=records, best=best,
                             metric="m", check=lambda p: [], candidate=lambda *a, **k: None,
                             tried={trial_key(r.params, r.variant) for r in records}, variant=best.variant)
        return NaiveFirst(Inner()).propose(PlanContext(domain, budget_left=5)).planner

    def trial(variant: str, **changes: object) -> SimpleNamespace:
        return SimpleNamespace(params={**base, **changes}, state="complete", variant=variant)

    first = [trial("")]
    assert proposed(first, first[0]) == "naive"  # naive_last, right after the base
    ran = [*first, trial("", **{"model.family": "naive_last"}), trial("", **{"model.family": "naive_seasonal"})]
    changed = trial("chg1", x=0.7)  # a kept code change is the best trial now
    assert proposed([*ran, changed], changed) == "inner"
