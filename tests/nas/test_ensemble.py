"""The final model of a search: greedy ensemble selection with replacement (Caruana et al. 2004) on validation MSE.

The selection itself against brute force on small matrices; the files each trial keeps and what the builder does
with a missing or foreign one; then real searches: on a random walk the final model is not worse on validation than
the last-value forecast, a resumed search rebuilds the ensemble from the files, and ``search.ensemble: false`` keeps
no forecasts and makes the best trial the final model."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from agentlab.cli import main
from agentlab.core.search.records import TrialRecord
from agentlab.nas import run_nas_optimization
from agentlab.nas.config import NASConfig
from agentlab.nas.data import prepare
from agentlab.nas.ensemble import (
    PRED_TEST,
    PRED_VAL,
    PREDICTIONS,
    EnsembleBuilder,
    block_mse,
    greedy_selection,
    model_name,
    residual_gram,
    save_predictions,
    shown_weights,
)
from agentlab.nas.predict import backtest, load_model
from agentlab.nas.train import load_series, train_trial

# --------------------------------------------------------------------------- the selection


def _mse_of(counts: np.ndarray, preds: np.ndarray, target: np.ndarray) -> float:
    mean = np.tensordot(counts / counts.sum(), preds, axes=1)
    return float(np.mean((mean - target) ** 2))


def test_the_gram_matrix_gives_the_mse_of_any_weighted_mean() -> None:
    rng = np.random.default_rng(0)
    target = rng.normal(size=500)
    preds = target + rng.normal(scale=[[0.5], [1.0], [0.3]], size=(3, 500))
    gram = residual_gram([p - target for p in preds])
    assert np.allclose(np.diag(gram), [np.mean((p - target) ** 2) for p in preds])
    w = np.array([0.2, 0.3, 0.5])
    assert w @ gram @ w == pytest.approx(float(np.mean((w @ preds - target) ** 2)), rel=1e-12)


def test_greedy_selection_is_brute_force_forward_selection_and_never_worse_than_the_best_single() -> None:
    rng = np.random.default_rng(1)
    for trial in range(20):
        k, n = int(rng.integers(1, 6)), 200
        target = rng.normal(size=n)
        common = rng.normal(size=n) * rng.uniform(0, 1)  # errors shared by every model
        preds = target + common + rng.normal(size=(k, n)) * rng.uniform(0.1, 2, size=(k, 1)) \
            + rng.normal(size=(k, 1)) * 0.3  # and a bias each
        residuals = preds - target
        rounds = 6
        counts, mse = greedy_selection(residual_gram(list(residuals)), rounds)
        # forward selection with replacement, done by brute force on the data
        current = np.zeros(k, dtype=int)
        best, best_counts = np.inf, None
        for _ in range(rounds):
            scores = []
            for j in range(k):
                c = current.copy()
                c[j] += 1
                scores.append(_mse_of(c, preds, target))
            current[int(np.argmin(scores))] += 1
            if min(scores) < best - 1e-12:
                best, best_counts = min(scores), current.copy()
        assert np.array_equal(counts, best_counts), trial
        assert mse == pytest.approx(best, rel=1e-9)
        assert mse == pytest.approx(_mse_of(counts, preds, target), rel=1e-9)
        assert mse <= np.min(np.mean(residuals**2, axis=1)) + 1e-12


def test_two_models_with_independent_errors_are_averaged_and_a_bad_one_is_left_out() -> None:
    rng = np.random.default_rng(2)
    target = rng.normal(size=20_000)
    a, b = target + rng.normal(size=20_000), target + rng.normal(size=20_000)
    bad = target + 3 * (a - target)  # a's errors, tripled: any share of it only hurts
    counts, mse = greedy_selection(residual_gram([a - target, b - target, bad - target]), 25)
    assert counts[2] == 0
    assert abs(counts[0] - counts[1]) <= 2
    assert mse == pytest.approx(0.5, rel=0.05)  # two independent unit errors, averaged: half the MSE


def test_a_candidate_with_an_infinite_error_is_never_picked() -> None:
    gram = np.array([[np.inf, np.inf], [np.inf, 1.0]])
    counts, mse = greedy_selection(gram, 5)
    assert counts.tolist() == [0, 1] and mse == 1.0
    with pytest.raises(ValueError):
        greedy_selection(np.zeros((0, 0)))


# --------------------------------------------------------------------------- the files and the builder


def test_a_trial_keeps_the_forecasts_its_metrics_were_measured_on() -> None:
    from agentlab.nas.train import prepare_data

    cfg = NASConfig.model_validate({"data": {"synthetic_steps": 400, "seq_len": 24, "label_len": 0, "pred_len": 6},
                                    "model": {"family": "linear"}, "train": {"epochs": 2, "max_train_batches": 3}})
    prepared = prepare_data(cfg)
    result = train_trial(cfg, prepared, None, predictions=True)
    assert result.predictions is not None and "predictions" not in result.to_dict()
    (val, val_true), (test, test_true) = result.predictions["val"], result.predictions["test"]
    assert val.shape == val_true.shape == (len(prepared.val), 6, prepared.c_out)
    assert test.shape == (len(prepared.test), 6, prepared.c_out)
    assert float(np.mean((val.astype(np.float64) - val_true) ** 2)) == pytest.approx(result.val_mse, rel=1e-5)
    assert float(np.mean((test.astype(np.float64) - test_true) ** 2)) == pytest.approx(result.test_mse, rel=1e-5)
    assert float(np.mean(np.abs(test.astype(np.float64) - test_true))) == pytest.approx(result.test_mae, rel=1e-5)
    assert train_trial(cfg, prepared, None).predictions is None


def _record(number: int, value: float, state: str = "complete", **params: Any) -> TrialRecord:
    return TrialRecord(number=number, state=state, value=value, params=params, accepted=True,
                       metrics={"test_mse": value})


def _write_trial(run: Path, number: int, pred: np.ndarray, target: np.ndarray) -> Path:
    folder = run / "trials" / f"run_{number:04d}"
    folder.mkdir(parents=True, exist_ok=True)
    save_predictions(run, folder, (pred, target), (pred[::-1].copy(), target[::-1].copy()))
    return folder


def test_a_trial_whose_forecast_file_is_gone_is_a_warning_and_counted_as_skipped(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """pred_val.npy deleted beside its predictions.json: the trial was left out with an info line nobody sees, and
    ensemble.json said "skipped": 0."""
    rng = np.random.default_rng(4)
    run = tmp_path / "run"
    target = rng.normal(size=(40, 6, 2)).astype(np.float32)
    for i in range(3):
        _write_trial(run, i, target + rng.normal(scale=0.5 + 0.1 * i, size=target.shape).astype(np.float32), target)
    (run / "trials" / "run_0001" / PRED_VAL).unlink()
    records = [_record(i, 0.25 + 0.01 * i) for i in range(3)]
    builder = EnsembleBuilder(run)
    with caplog.at_level(logging.WARNING, logger="agentlab.nas.ensemble"):
        block = builder.build(records)
        again = builder.build(records)  # built after every trial: the warning once
    assert block is not None and block == again
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("ensemble: run_0001 skipped (unreadable predictions in ")
    assert PRED_VAL in warnings[0]
    assert block["skipped"] == 1 and block["pool"] == 2
    assert "run_0001" not in {m["run_id"] for m in block["members"]}


def test_the_builder_reads_the_files_skips_missing_and_foreign_ones_and_chooses_on_validation(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(3)
    run = tmp_path / "run"
    target = rng.normal(size=(40, 6, 2)).astype(np.float32)
    preds = [target + rng.normal(scale=s, size=target.shape).astype(np.float32) for s in (0.5, 0.6, 0.7)]
    for i, p in enumerate(preds):
        _write_trial(run, i, p, target)
    assert len(list((run / "targets").glob("*.npz"))) == 1  # the targets once per run
    assert np.load(run / "trials" / "run_0000" / PRED_VAL).dtype == np.float16
    # trial 3 finished, but its files are gone; trial 4 forecast other windows (another horizon); trial 5 pruned
    other = rng.normal(size=(40, 3, 2)).astype(np.float32)
    _write_trial(run, 4, other, other)
    records = [_record(i, float(np.mean((p - target) ** 2))) for i, p in enumerate(preds)]
    records += [_record(3, 0.1), _record(4, 10.0), _record(5, 0.01, state="pruned")]
    builder = EnsembleBuilder(run)
    with caplog.at_level(logging.INFO, logger="agentlab.nas.ensemble"):
        block = builder.build(records, family=lambda r: "linear")
    assert block is not None
    said = {r.getMessage().split(" (")[0]: r.levelno for r in caplog.records}
    assert "run_0003 skipped (no predictions.json" in caplog.text
    assert "run_0004 skipped (forecasts other windows" in caplog.text
    # lost files are a warning; another horizon (a searched data.pred_len) is expected: info. Both are counted
    assert said["ensemble: run_0003 skipped"] == logging.WARNING and said["ensemble: run_0004 skipped"] == logging.INFO
    assert block["pool"] == 3 and block["skipped"] == 2
    members = {m["run_id"]: m for m in block["members"]}
    assert set(members) <= {"run_0000", "run_0001", "run_0002"} and len(members) >= 2
    assert sum(m["weight"] for m in members.values()) == pytest.approx(1.0)
    assert all(m["path"] == f"trials/{m['run_id']}" and m["family"] == "linear" for m in members.values())
    # its numbers are those of the weighted mean of the stored forecasts
    mean = sum(m["weight"] * np.load(run / m["path"] / PRED_VAL).astype(np.float64) for m in members.values())
    assert block["val_mse"] == pytest.approx(float(np.mean((mean - target) ** 2)), rel=1e-9)
    test_mean = sum(m["weight"] * np.load(run / m["path"] / PRED_TEST).astype(np.float64) for m in members.values())
    assert block["test_mse"] == pytest.approx(float(np.mean((test_mean - target[::-1]) ** 2)), rel=1e-9)
    assert block["val_mse"] < block["best_single"]["val_mse"]  # independent errors: the mean is better
    # a second build reuses the Gram entries and gives the same ensemble; a new trial only adds its row
    assert builder.build(records, family=lambda r: "linear") == block
    assert len(builder._gram) == 9
    _write_trial(run, 6, target + rng.normal(scale=0.5, size=target.shape).astype(np.float32), target)
    builder.build([*records, _record(6, 0.25)])
    assert len(builder._gram) == 16


def test_a_member_in_another_workers_run_folder_is_read_from_there(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    target = rng.normal(size=(30, 4, 1)).astype(np.float32)
    _write_trial(tmp_path / "w1", 0, target + 0.5, target)
    _write_trial(tmp_path / "w2", 1, target - 0.5, target)
    records = [_record(0, 0.25), _record(1, 0.25)]
    block = EnsembleBuilder(tmp_path / "w1").build(records, {0: str(tmp_path / "w1"), 1: str(tmp_path / "w2")})
    assert block is not None and block["pool"] == 2
    paths = {m["run_id"]: m["path"] for m in block["members"]}
    assert paths == {"run_0000": "trials/run_0000", "run_0001": str(tmp_path / "w2" / "trials" / "run_0001")}
    assert block["val_mse"] == pytest.approx(0.0, abs=1e-6)  # +0.5 and -0.5 cancel
    assert EnsembleBuilder(tmp_path / "none").build([_record(7, 1.0)]) is None


# --------------------------------------------------------------------------- real searches


def write_random_walk(path: Path, n: int = 360, seed: int = 0) -> None:
    """A daily two-channel random walk: the last value is the best forecast there is."""
    rng = np.random.default_rng(seed)
    values = np.cumsum(rng.normal(size=(n, 2)), axis=0)
    dates = np.datetime64("2020-01-01") + np.arange(n) * np.timedelta64(1, "D")
    lines = ["date,a,OT"] + [f"{d} 00:00:00,{a:.5f},{b:.5f}" for d, (a, b) in zip(dates, values, strict=True)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def greedy_val(block: dict[str, Any]) -> float:
    """The greedy ensemble's validation MSE, whether the rolling-origin guard kept it or the naive forecast."""
    selection = block.get("selection") or {}
    return selection["greedy"]["val_mse"] if selection.get("kept", "ensemble") != "ensemble" else block["val_mse"]


def walk_config(path: Path, **search: Any) -> dict[str, Any]:
    return {"data": {"path": str(path), "seq_len": 28, "label_len": 0, "pred_len": 7},
            "model": {"family": "linear", "period": 7},
            "train": {"epochs": 2, "max_train_batches": 4, "learning_rate": 0.01},
            "search": {"planner": "random", "pruner": "none",
                       "space": {"model.family": {"choices": ["linear", "patchtst", "naive_last", "naive_seasonal"]},
                                 "model.linear_variant": {"choices": ["linear", "dlinear"],
                                                          "when": {"model.family": ["linear"]}},
                                 "model.d_model": {"choices": [16, 32], "when": {"model.family": ["patchtst"]}}},
                       **search}}


def test_on_a_random_walk_the_final_model_is_not_worse_than_the_last_value_on_validation(in_tmp: Path) -> None:
    data = in_tmp / "walk.csv"
    write_random_walk(data)
    results = run_nas_optimization(max_iterations=4, config=walk_config(data), out=in_tmp / "run")
    # the naive last-value forecast on the same validation windows, measured apart from the search
    cfg = NASConfig.model_validate({**walk_config(data), "model": {"family": "naive_last"}})
    series = load_series(cfg.data)
    prepared = prepare(series, "M", 28, 7, 7, "auto")
    naive = train_trial(cfg, prepared, None).val_mse
    state = json.loads((in_tmp / "run" / "agent_state.json").read_text())["runs"]
    planners = [r["planner"] for r in state]
    assert planners[:3] == ["base", "naive", "naive"]  # the naive families right after the base
    ensemble = results["ensemble"]
    assert results["final_model"] == "ensemble"
    assert ensemble["val_mse"] <= naive * (1 + 1e-3), (ensemble, naive)  # float16 forecasts: 1e-3 of slack
    assert results["best"]["val_mse"] <= naive * (1 + 1e-9)
    members = {m["run_id"] for m in ensemble["members"]}
    naive_runs = {r["run_id"] for r in state if r["params"].get("model.family") == "naive_last"}
    assert naive_runs and members & naive_runs  # the ensemble leans on the last value
    report = (in_tmp / "run" / "report.md").read_text()
    assert "## Final model: ensemble" in report and "| naive_last |" in report


def test_resume_rebuilds_the_ensemble_from_the_files_and_ensemble_off_keeps_none(in_tmp: Path,
                                                                                capsys: pytest.CaptureFixture) -> None:
    data = in_tmp / "walk.csv"
    write_random_walk(data, seed=1)
    config = in_tmp / "walk.yaml"
    config.write_text(yaml.safe_dump(walk_config(data)))
    run = in_tmp / "RUN"
    assert main(["nas", "-c", str(config), "--max-iterations", "3", "--out", str(run)]) == 0
    first = json.loads((run / "results.json").read_text())["ensemble"]
    captured = capsys.readouterr()
    assert "final model: ensemble of" in " ".join((captured.out + captured.err).split())
    assert main(["nas", "--resume", str(run), "--max-iterations", "5"]) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["ran_here"] == 2 and results["ensemble"]["pool"] >= first["pool"]
    # the resumed process never saw the first three trials' forecasts in memory: it read them from the files
    complete = [r for r in json.loads((run / "agent_state.json").read_text())["runs"] if r["state"] == "complete"]
    assert results["ensemble"]["pool"] == len(complete) == len(list(run.glob(f"trials/*/{PREDICTIONS}")))
    # more trials: the greedy ensemble is never worse on validation (the guard may then hand over the naive forecast)
    assert greedy_val(results["ensemble"]) <= greedy_val(first) + 1e-12
    assert json.loads((run / "ensemble.json").read_text()) == results["ensemble"]

    off = in_tmp / "OFF"
    assert main(["nas", "-c", str(config), "--max-iterations", "2", "--set", "search.ensemble=false",
                 "--out", str(off)]) == 0
    results = json.loads((off / "results.json").read_text())
    assert results["ensemble"] is None and results["final_model"] == "best"
    assert not list(off.glob("trials/*/pred_*.npy")) and not (off / "targets").exists()
    assert not (off / "ensemble.json").exists()
    assert "## Final model" not in (off / "report.md").read_text()
    assert main(["nas", "predict", str(off), "--data", str(data), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "best"


def test_combinations_of_the_selection_are_exhaustive_on_a_tiny_case() -> None:
    """Two rounds over three candidates: the greedy answer is the best of the prefixes it walked."""
    gram = np.array([[1.0, 0.2, 0.9], [0.2, 1.1, 0.1], [0.9, 0.1, 1.2]])
    counts, mse = greedy_selection(gram, 2)
    walked = []
    for first in range(3):
        if gram[first, first] == min(np.diag(gram)):
            for second in range(3):
                c = np.zeros(3)
                c[first] += 1
                c[second] += 1
                walked.append((c @ gram @ c / 4, tuple(c)))
    single = min(np.diag(gram))
    best_pair = min(walked)
    assert mse == pytest.approx(min(single, best_pair[0]))
    assert counts.sum() == (2 if best_pair[0] < single else 1)


def test_a_pruned_trial_keeps_no_forecasts_and_stays_out_of_the_ensemble(in_tmp: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import optuna

    # the median pruner stops trial 3 (trained: 0 is the base, 1 and 2 the naive ones) after its first epoch
    monkeypatch.setattr(optuna.pruners.MedianPruner, "prune", lambda self, study, trial: trial.number == 3)
    data = in_tmp / "walk.csv"
    write_random_walk(data, seed=2)
    config = walk_config(data, pruner="median")
    results = run_nas_optimization(max_iterations=5, config=config, out=in_tmp / "run")
    runs = json.loads((in_tmp / "run" / "agent_state.json").read_text())["runs"]
    assert runs[3]["state"] == "pruned"
    assert not (in_tmp / "run" / "trials" / "run_0003" / PREDICTIONS).exists()
    complete = {r["run_id"] for r in runs if r["state"] == "complete"}
    assert results["ensemble"]["pool"] == len(complete) == 4
    assert {m["run_id"] for m in results["ensemble"]["members"]} <= complete


def test_an_ensemble_without_the_best_trial_that_is_worse_on_validation_is_not_the_final_model() -> None:
    from agentlab.nas.report import summary_lines
    from agentlab.nas.results import final_model

    best = _record(3, 0.50)
    block = {"members": [{"run_id": "run_0004", "weight": 1.0, "family": "linear"}], "val_mse": 0.60,
             "test_mse": 0.7, "test_mae": 0.6}
    assert final_model(block, best) == "best"  # the best trial's forecasts are missing (an older run, resumed)
    assert final_model({**block, "val_mse": 0.5004}, best) == "ensemble"  # float16 slack
    assert final_model({**block, "val_mse": 0.45}, best) == "ensemble"
    assert final_model(None, best) == "best"
    results = {"best": {"run_id": "run_0003", "val_mse": 0.5, "test_mse": 0.55, "test_mae": 0.5, "n_params": 10,
                        "planner": "tpe", "params": {}}, "base": None, "ensemble": block, "final_model": "best"}
    text = "\n".join(summary_lines(results))
    assert "ensemble (not the final model" in text and "final model: ensemble" not in text


def test_the_run_browser_shows_the_ensemble_beside_the_best_trial() -> None:
    from agentlab.ui.runs import key_result

    results = {"best": {"run_id": "run_0001", "val_mse": 0.25}, "trials": 4, "final_model": "ensemble",
               "ensemble": {"val_mse": 0.2, "members": [{}, {}], "name": "ensemble of 2 trials"}}
    assert key_result("nas", results) == ("best val MSE 0.2500 (run_0001), final model: ensemble of 2 trials (val MSE "
                                          "0.2000), 4 trials")
    assert key_result("nas", {**results, "ensemble": None}) == "best val MSE 0.2500 (run_0001), 4 trials"


def test_tpe_leaves_a_best_naive_forecast_it_cannot_vary_instead_of_redrawing_it(in_tmp: Path) -> None:
    """On a random walk the naive trial is best and has no keys of its own: TPE kept drawing it, every draw a repeat,
    and the search stopped with "no valid, untried parameters". Repeats are bad trials in the next draw's copy."""
    data = in_tmp / "walk.csv"
    write_random_walk(data, seed=3)
    config = walk_config(data, planner="tpe")
    config["search"]["space"]["train.learning_rate"] = {"low": 1e-3, "high": 1e-1, "log": True,
                                                        "when": {"model.family": ["linear", "patchtst"]}}
    results = run_nas_optimization(max_iterations=7, config=config, out=in_tmp / "run")
    runs = json.loads((in_tmp / "run" / "agent_state.json").read_text())["runs"]
    assert len(runs) == 7 and all(r["state"] == "complete" for r in runs)
    assert [r["planner"] for r in runs][3:] == ["tpe"] * 4  # past TPE's 3 warm-up trials
    assert results["best"]["family"] in ("naive_last", "naive_seasonal")


def test_a_draw_that_repeats_a_trial_is_told_to_the_sampler_and_it_moves_on() -> None:
    """A best trial with no keys of its own to vary (a naive forecast): TPE keeps drawing it until the repeats,
    told back as bad trials, teach it to leave."""
    import optuna

    from agentlab.core.search.planners import TrialDomain, params_key
    from agentlab.core.search.space import ParamSpec, SearchSpace
    from agentlab.core.search.study import KeptSampler, finished_trial

    space = SearchSpace({"model.family": ParamSpec(choices=["a", "b", "c"])}, base={"model.family": "a"})
    kept = KeptSampler(lambda s: optuna.samplers.TPESampler(seed=s, n_startup_trials=0), ["minimize"], 0)
    trials = [finished_trial({"model.family": f}, space.distributions(), [v]) for f, v in (("a", 0.1), ("b", 0.9))]
    for number, trial in enumerate(trials):
        trial.number = number
    kept.sync(trials)
    drawn: list[str] = []

    def candidate(kind: str, judge: Any, explore: bool = False, tries: int = 30) -> dict[str, Any] | None:
        for _ in range(tries):
            trial = kept.ask(space.distributions())
            params = dict(trial.params)
            drawn.append(params["model.family"])
            verdict = judge(params)
            kept.tell(trial, verdict or "run", space.distributions())
            if verdict is None:
                return params
        return None

    domain = TrialDomain(space=space, base_params={"model.family": "a"}, incumbent={"model.family": "a"},
                         records=[], best=None, metric="val_mse", check=lambda p: [], candidate=candidate,
                         tried={params_key({"model.family": f}) for f in "ab"})
    proposal = domain.sample("tpe")
    assert proposal.params == {"model.family": "c"} and drawn[-1] == "c" and len(drawn) <= 30
    assert proposal.notes == []  # repeats are not constraint breaks


def test_block_mse_cuts_the_windows_into_consecutive_origins() -> None:
    true = np.zeros((8, 2, 1))
    pred = np.concatenate([np.ones((4, 2, 1)), 3 * np.ones((4, 2, 1))])
    assert block_mse(pred, true, 2).tolist() == [1.0, 9.0]
    assert block_mse(pred, true, 4).tolist() == [1.0, 1.0, 9.0, 9.0]
    assert len(block_mse(pred[:3], true[:3], 4)) == 3  # fewer windows than origins: one block each


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_on_a_random_walk_the_final_model_is_the_naive_forecast_or_ties_it(in_tmp: Path, seed: int) -> None:
    """No naive family in the space: the naive forecasts still join as reference members, and the rolling-origin
    guard hands the final choice to the last value unless a model beats it on 6 of 8 blocks of validation windows.
    Judged on the test windows, which nothing in the search sees."""
    data = in_tmp / "walk.csv"
    write_random_walk(data, n=1500, seed=10 + seed)
    config = walk_config(data)
    config["search"]["space"]["model.family"] = {"choices": ["linear", "patchtst"]}
    config["train"]["epochs"] = 4
    results = run_nas_optimization(max_iterations=4, config=config, out=in_tmp / "run")
    assert (in_tmp / "run" / "naive" / "naive_last" / PREDICTIONS).is_file()
    naive_cfg = NASConfig.model_validate({**walk_config(data), "model": {"family": "naive_last"}})
    naive = train_trial(naive_cfg, prepare(load_series(naive_cfg.data), "M", 28, 0, 7, "auto"), None)
    ensemble = results["ensemble"]
    assert results["final_model"] == "ensemble"
    naive_only = all(m["family"] in ("naive_last", "naive_seasonal") for m in ensemble["members"])
    assert naive_only or ensemble["selection"]["against"] in ("naive_last", "naive_seasonal")
    # the naive forecasts alone, or a model that ties the last value on the test windows (float16: 1e-3 of slack)
    assert naive_only or ensemble["test_mse"] <= naive.test_mse * (1 + 1e-3), \
        (ensemble["selection"], ensemble["test_mse"], naive.test_mse)
    # whichever it is, `nas predict` forecasts with it, the reference folders included, and backtests to its figure
    model = load_model(in_tmp / "run")
    assert [m.run_id for m, _ in model.members] == [m["run_id"] for m in ensemble["members"]]
    assert backtest(model, data)["mse"] == pytest.approx(ensemble["test_mse"], rel=2e-3)


def test_the_naive_references_are_made_whatever_the_space_and_the_report_names_what_the_pool_holds(
        in_tmp: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An Informer search whose space holds the Informer's own keys (model.d_layers, as configs/nas_etth1.yaml): the
    naive references are no trials of it, so the space's "only the informer family reads it" check does not keep
    them out of the pool (it did, at INFO, while the report said they were in)."""
    data = in_tmp / "walk.csv"
    write_random_walk(data, seed=3)
    config = {"data": {"path": str(data), "seq_len": 28, "label_len": 7, "pred_len": 7},
              "model": {"family": "informer", "period": 7, "d_model": 16, "n_heads": 2, "e_layers": 1, "d_ff": 16},
              "train": {"epochs": 1, "max_train_batches": 2},
              "search": {"planner": "random", "pruner": "none", "space": {"model.d_layers": {"low": 1, "high": 2}}}}
    with caplog.at_level(logging.INFO, logger="agentlab"):
        results = run_nas_optimization(max_iterations=2, config=config, out=in_tmp / "run")
    assert "no naive_last reference" not in caplog.text
    for family in ("naive_last", "naive_seasonal"):
        assert (in_tmp / "run" / "naive" / family / PREDICTIONS).is_file()
    ensemble = results["ensemble"]
    assert ensemble["naive"] == ["naive_last", "naive_seasonal"] and ensemble["pool"] == 4
    # the block names itself in the summary's words: what the ui's runs list shows (it reads no nas module)
    assert ensemble["name"] == model_name(ensemble) and ensemble["name"].startswith(("ensemble of", "the naive"))
    assert "(the finished trials and the naive forecasts)" in (in_tmp / "run" / "report.md").read_text()


def test_a_pool_without_naive_forecasts_is_said_so() -> None:
    from agentlab.nas.report import _pool_of

    assert _pool_of({"naive": []}).startswith("the finished trials only: no naive forecast could be made")
    assert _pool_of({"naive": ["naive_last"]}) == "the finished trials and the naive forecast naive_last"
    assert _pool_of({}) == "the finished trials and the naive forecasts"  # a run made before the field


def test_naive_members_are_called_naive_forecasts_not_trials_and_weights_read_as_summing_to_one() -> None:
    """Greedy selection that kept one naive forecast said `final model: ensemble of 1 trial (naive_seasonal 1.00
    (naive_seasonal))`, while the guard's choice of the same model said `final model: the naive forecast ...`; naive
    members were counted as trials; printed weights summed to 1.01 (0.86, 0.10, 0.05)."""
    from agentlab.nas.literature import render
    from agentlab.nas.report import _ensemble_section, summary_lines

    def member(run_id: str, family: str, weight: float) -> dict[str, Any]:
        return {"run_id": run_id, "family": family, "weight": weight, "val_mse": 0.4, "test_mse": 0.5}

    best = {"run_id": "run_0001", "val_mse": 0.5, "test_mse": 0.55, "test_mae": 0.5, "n_params": 10,
            "planner": "tpe", "params": {}}
    scores = {"val_mse": 0.3, "val_mae": 0.4, "test_mse": 0.35, "test_mae": 0.45, "pool": 4, "rounds": 25,
              "selection": {"kept": "ensemble", "origins": 8, "against": None}}
    alone = {**scores, "members": [member("naive_seasonal", "naive_seasonal", 1.0)]}
    results = {"best": best, "base": None, "ensemble": alone, "final_model": "ensemble"}
    text = "\n".join(summary_lines(results))
    assert "final model: the naive forecast naive_seasonal: val MSE 0.3, test MSE 0.35" in text, text
    assert "ensemble of" not in text and "trial (naive_seasonal" not in text
    assert "## Final model: the naive forecast naive_seasonal" in "\n".join(_ensemble_section(alone, best, "ensemble"))
    # a trial of a naive family kept alone: named by its run and family
    trial = {**alone, "members": [member("run_0002", "naive_last", 1.0)]}
    assert "final model: the naive forecast run_0002 (naive_last): val MSE" in "\n".join(
        summary_lines({**results, "ensemble": trial}))
    mixed = {**scores, "members": [member("run_0001", "informer", 18 / 21),
                                   member("naive_seasonal", "naive_seasonal", 2 / 21),
                                   member("naive_last", "naive_last", 1 / 21)]}
    text = "\n".join(summary_lines({**results, "ensemble": mixed}))
    assert ("final model: ensemble of 1 trial and 2 naive forecasts (run_0001 0.86 (informer), naive_seasonal 0.09, "
            "naive_last 0.05): val MSE 0.3") in text, text
    section = "\n".join(_ensemble_section(mixed, best, "ensemble"))
    assert "## Final model: ensemble of 1 trial and 2 naive forecasts" in section
    assert "| run_0001 | informer | 0.857 |" in section and "| naive_last | naive_last | 0.048 |" in section
    table = {"dataset": "ETTh1", "horizon": 96, "rows": [{"model": "DUET", "mse": 0.352, "mae": 0.38,
                                                         "lookback": "searched", "protocol": "fair", "source": "x"}]}
    ours = {"family": "informer", "seq_len": 96, "test_mse": 0.55, "test_mae": 0.5}
    assert "| **this search: ensemble of 1 trial and 2 naive forecasts** |" in "\n".join(render(ours, table, mixed))
    guard = {**alone, "selection": {"kept": "naive_seasonal", "origins": 8, "against": "naive_seasonal", "wins": 2,
                                    "needed": 6, "greedy": {"val_mse": 0.31, "test_mse": 0.4, "members": ["run_0001"]}}}
    text = "\n".join(summary_lines({**results, "ensemble": guard, "literature": table}))
    assert "; the naive forecast naive_seasonal: lower than 1;" in text and "the the" not in text, text
    text = "\n".join(summary_lines({**results, "ensemble": mixed, "literature": table}))
    assert "; the ensemble of 1 trial and 2 naive forecasts: lower than 1;" in text, text
    two = {**scores, "members": [member("run_0001", "informer", 0.5), member("run_0003", "patchtst", 0.5)]}
    assert "final model: ensemble of 2 trials (run_0001 0.50 (informer), run_0003 0.50 (patchtst))" in "\n".join(
        summary_lines({**results, "ensemble": two}))
    for weights in ([18 / 21, 2 / 21, 1 / 21], [1 / 3] * 3, [1 / 7] * 7, [0.29, 0.71], [1.0]):
        for digits in (2, 3):
            assert sum(round(float(w) * 10 ** digits) for w in shown_weights(weights, digits)) == 10 ** digits
