"""What `agentlab nas` logs to MLflow (``--mlflow``): one child run per trial, the search's result on the parent.

Trials are logged from the study, the search's one source of truth, after each trial: every finished trial of this
run folder that the parent has no child run for yet. So a resumed search logs nothing twice, and a trial that ended
just before a crash (study written, MLflow not yet) is logged on the resume. Trials of other workers sharing the
storage are theirs to log; a trial interrupted and planned again (not counted) is not logged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentlab.core.search.records import A_PLAN, TrialRecord, best_of
from agentlab.core.tracking import FAILED, NullTracker, Tracker

if TYPE_CHECKING:
    from optuna import Study

_TRIAL_METRICS = ("test_mse", "test_mae", "n_params", "epochs", "seconds")


def log_trials(tracker: Tracker | NullTracker, study: Study, records: list[TrialRecord], run_path: Path) -> None:
    """A child run for each finished trial of this run folder not logged yet, and the running best on the parent."""
    if not tracker.enabled:
        return
    todo = [r for r in records if r.state != "running" and r.counted and not tracker.logged(r.run_id)]
    if not todo:
        return
    mine = _own_trials(study, run_path)
    for record in todo:
        if record.number in mine:
            _log_trial(tracker, record, run_path)
            best = best_of([r for r in records if r.number <= record.number])
            tracker.log_metrics({"trial_val_mse": record.value, "best_val_mse": best.value if best else None},
                                step=record.number)


def _own_trials(study: Study, run_path: Path) -> set[int]:
    """Trials planned by this run folder (their plan names it): the others belong to workers sharing the storage."""
    here = run_path.resolve()
    return {t.number for t in study.get_trials(deepcopy=False)
            if Path(t.user_attrs.get(A_PLAN, {}).get("run_dir") or "/").resolve() == here}


def _decision(record: TrialRecord) -> str:
    if record.state in ("pruned", "failed"):
        return record.state
    return "accepted" if record.accepted else "rejected"


def _log_trial(tracker: Tracker | NullTracker, record: TrialRecord, run_path: Path) -> None:
    tags = {"state": record.state, "decision": _decision(record), "reason": record.reason,
            "decided_by": record.decided_by, "planner": record.planner, "origin": record.origin,
            "reasoning": record.reasoning, "changes": json.dumps(record.changes) if record.changes else ""}
    with tracker.run(record.run_id, key=record.run_id, params=record.params,
                     tags={k: v for k, v in tags.items() if v not in ("", None)}) as child:
        child.log_metrics({"val_mse": record.value, "accepted": bool(record.accepted),
                           **{k: record.metrics.get(k) for k in _TRIAL_METRICS}})
        folder = run_path / "trials" / record.run_id
        for entry in _epochs(folder, record):
            child.log_metrics({f"epoch_{k}": v for k, v in entry.items() if k != "epoch"}, step=int(entry["epoch"]))
        child.log_artifact(folder / "config_used.yaml")
        child.log_artifact(folder / "learning_curve.png")
        if record.state == "failed":
            child.end(FAILED)


def _epochs(folder: Path, record: TrialRecord) -> list[dict[str, Any]]:
    """Each epoch's train loss, validation MSE and learning rate from the trial's history.json; without it (a trial
    that failed before), the validation MSEs reported to the pruner."""
    try:
        history = json.loads((folder / "history.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        history = None
    if isinstance(history, list) and all(isinstance(e, dict) and "epoch" in e for e in history):
        return [{k: e.get(k) for k in ("epoch", "train_loss", "val_mse", "lr")} for e in history]
    return [{"epoch": epoch, "val_mse": value} for epoch, value in sorted(record.intermediate.items())]


def log_results(tracker: Tracker | NullTracker, results: dict[str, Any], run_path: Path) -> None:
    """The best trial, the ensemble's metrics and members, the gain over the base config and the stop reason on the
    parent, with report.md, results.json, agent_state.json and the report's plots as artifacts. (``best_val_mse`` is
    the per-trial series ``log_trials`` wrote: its last step is the result.)"""
    best, base, gain = results["best"] or {}, results["base"] or {}, results["gain"]
    tracker.log_metrics({"best_test_mse": best.get("test_mse"), "best_test_mae": best.get("test_mae"),
                         "best_n_params": best.get("n_params"), "base_val_mse": base.get("val_mse"),
                         "gain_val_mse": gain.get("val_mse"), "gain_test_mse": gain.get("test_mse"),
                         "trials": results["trials"]})
    ensemble = results.get("ensemble")
    if ensemble:  # the final model
        tracker.log_metrics({f"ensemble_{k}": ensemble[k] for k in ("val_mse", "val_mae", "test_mse", "test_mae")})
        tracker.set_tags({"ensemble_members": json.dumps({m["run_id"]: round(m["weight"], 4)
                                                          for m in ensemble["members"]})})
    tracker.set_tags({"best_run_id": best.get("run_id"), "best_params": json.dumps(best.get("params")),
                      "stop_reason": results["stop_reason"], "planner": results["planner"]})
    for name in ("report.md", "results.json", "agent_state.json", *sorted(p.name for p in run_path.glob("*.png"))):
        tracker.log_artifact(run_path / name)
