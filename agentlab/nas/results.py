"""results.json of a built-in forecaster search: the best and base trials, gains, families, the naive baseline, the
literature, the ensemble and the final model; the LLM planner's contribution."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentlab.core.search.records import TrialRecord, state_counts
from agentlab.nas.config import NASConfig, apply_changes
from agentlab.nas.ensemble import EnsembleBuilder, kept_naive
from agentlab.nas.literature import comparison, recognise

if TYPE_CHECKING:
    from agentlab.nas.data import PreparedData

log = logging.getLogger(__name__)


def build_ensemble(cfg: NASConfig, builder: EnsembleBuilder, records: list[TrialRecord],
                   study: Any, references: dict[str, Path] | None = None) -> dict[str, Any] | None:
    """The ensemble over the finished trials of the study (of every worker: each trial's plan names the run folder
    that holds its predictions); None when none has predictions. A failure to read or build is one log line: the
    search goes on, and the best trial stays the final model."""
    run_dirs = {t.number: str(t.user_attrs.get("plan", {}).get("run_dir") or "")
                for t in study.get_trials(deepcopy=False)}
    try:
        return builder.build(records, run_dirs, family=lambda r: r.params.get("model.family", cfg.model.family),
                             references=references)
    except (OSError, ValueError) as exc:
        log.warning("ensemble: not built (%s); the best trial is the final model", exc)
        return None


def _rel_gain(base: float | None, best: float | None) -> float | None:
    if base is None or best is None or not base:
        return None
    return (base - best) / abs(base)


def literature_for(cfg: NASConfig, prepared: PreparedData) -> dict[str, Any] | None:
    """The published results for the data at hand (an ETT file recognised by name and shape), else None."""
    dataset = recognise(cfg.data.path, prepared.n_steps, len(prepared.columns))
    return comparison(dataset, cfg.data.pred_len, cfg.data.features, prepared.split)


def forecast_without_llm(best: TrialRecord | None) -> dict[str, Any]:
    """``llm_contribution``'s counterfactual for the forecaster: the best trial without the LLM's picks."""
    return {"best_val_mse": best.value if best else None, "best_test_mse": best.metrics.get("test_mse") if best
            else None}


def summarise(cfg: NASConfig, outcome: Any, baseline: dict[str, float], planner_line: str,
              target: str | None = None, literature: dict[str, Any] | None = None,
              contribution: dict[str, Any] | None = None, ensemble: dict[str, Any] | None = None) -> dict[str, Any]:
    """results.json: best and base trials (with their family and lookback), gains, trial states, the naive baseline,
    the data used and the published results for it, the ensemble (``final_model``: ensemble when there is one, else
    best). ``target`` is the target column the data actually used (in "M" mode a CSV without ``data.target`` uses
    its last column)."""
    best, base = outcome.best, outcome.base

    def brief(r: TrialRecord | None) -> dict[str, Any] | None:
        if r is None:
            return None
        used = apply_changes(cfg, r.params)
        return {"run_id": r.run_id, "val_mse": r.value, "test_mse": r.metrics.get("test_mse"),
                "test_mae": r.metrics.get("test_mae"), "n_params": r.metrics.get("n_params"), "params": r.params,
                "planner": r.planner, "origin": r.origin, "warmup": r.warmup, "choice": r.choice,
                "family": used.model.family, "seq_len": used.data.seq_len}

    return {
        "best": brief(best), "base": brief(base),
        "gain": {"val_mse": _rel_gain(base.value if base else None, best.value),
                 "test_mse": _rel_gain(base.metrics.get("test_mse") if base else None, best.metrics.get("test_mse"))},
        "trials": len(outcome.records), "states": state_counts(outcome.records), "ran_here": outcome.ran_here,
        "shared": cfg.search.storage is not None, "stop_reason": outcome.stop_reason, "planner": planner_line,
        "llm_contribution": contribution,
        "naive_baseline": baseline,
        "data": {"path": str(cfg.data.path) if cfg.data.path else "synthetic", "features": cfg.data.features,
                 "target": target or cfg.data.target, "seq_len": cfg.data.seq_len, "label_len": cfg.data.label_len,
                 "pred_len": cfg.data.pred_len},
        "families": family_counts(cfg, outcome.records),
        "literature": literature,
        "ensemble": ensemble,
        "final_model": final_model(ensemble, best),
    }


def final_model(ensemble: dict[str, Any] | None, best: TrialRecord | None) -> str:
    """``ensemble`` when there is one and it is not worse on validation than the best trial, or when the guard kept
    the naive forecast in its place (``ensemble.selection``), else ``best``. It can
    be worse only when the best trial is not in its pool (a run resumed from before trials kept forecasts, or whose
    files went missing); 1e-3 of slack for the float16 forecasts it is measured on."""
    if ensemble is None:
        return "best"
    if kept_naive(ensemble):
        return "ensemble"  # the rolling-origin guard kept the naive forecast alone: it is the final model
    if best is not None and best.value is not None and ensemble["val_mse"] > best.value * (1 + 1e-3):
        return "best"
    return "ensemble"


def family_counts(cfg: NASConfig, records: list[TrialRecord]) -> dict[str, dict[str, Any]]:
    """Per model family: trials by state and the best validation MSE among its finished trials."""
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.state == "running" or not r.counted:
            continue
        family = r.params.get("model.family", cfg.model.family)
        entry = out.setdefault(family, {"trials": 0, "complete": 0, "pruned": 0, "failed": 0, "best_val_mse": None})
        entry["trials"] += 1
        entry[r.state if r.state in ("complete", "pruned") else "failed"] += 1
        if r.state == "complete" and r.finite and (entry["best_val_mse"] is None or r.value < entry["best_val_mse"]):
            entry["best_val_mse"] = r.value
    return out
