"""What `agentlab compress` logs to MLflow (``--mlflow``): one child run per experiment (the base model included),
the recommendation on the parent. A child carries the experiment's index as its key, so a resumed run logs the
experiments a crash left unlogged and none twice."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentlab.core.tracking import NullTracker, Tracker

MLFLOW_EXPERIMENT = "agentlab-compress"  # the MLflow experiment `agentlab compress --mlflow` logs to
_RAW = ("perplexity", "accuracy", "prefill_tps", "decode_tps", "size_mb", "memory_mb", "rss_growth_mb", "params",
        "nonzero_params", "energy_kwh", "co2e_kg")


def log_experiments(tracker: Tracker | NullTracker, records: list[dict[str, Any]]) -> None:
    """A child run for each record not logged yet (``Tracker.run`` logs a key once; the rest get a run that logs
    nothing)."""
    if not tracker.enabled:
        return
    for record in records:
        tags = {"label": record["label"], "state": record.get("state"), "planner": record.get("planner"),
                "reused": record.get("reused"), "feasible": record.get("feasible"),
                "energy_mode": (record.get("metrics") or {}).get("energy_mode"), "note": record.get("note") or None}
        with tracker.run(record["label"], key=f"exp_{record['index']:03d}",
                         params=record.get("experiment") or {"base": True},
                         tags={k: v for k, v in tags.items() if v is not None}) as child:
            metrics = record.get("metrics") or {}
            child.log_metrics({**{k: metrics.get(k) for k in _RAW},
                               **{f"derived_{k}": v for k, v in (record.get("derived") or {}).items()},
                               "violation": record.get("violation")})


def log_results(tracker: Tracker | NullTracker, results: dict[str, Any], run_path: Path) -> None:
    """The recommendation on the parent, with the run's files as artifacts (a missing one, such as pareto.png
    without matplotlib, is skipped by ``log_artifact``); nothing without tracking (``NullTracker``)."""
    rec = results["recommended"]
    tracker.log_metrics({"experiments": results["counts"]["experiments"], "reused": results["counts"]["reused"],
                         "co2e_kg": results["energy"]["co2e_kg"], "energy_kwh": results["energy"]["energy_kwh"],
                         **{f"best_{k}": v for k, v in ((rec.get("best") or {}).get("derived") or {}).items()}})
    tracker.set_tags({"recommended": "base model" if rec.get("keep_base") else rec.get("label"),
                      "feasible": rec.get("feasible"), "stop_reason": results["stop_reason"], "goal": results["goal"],
                      "recommended_experiment": json.dumps(rec.get("experiment"))})
    for name in ("report.md", "results.json", "best.json", "pareto.png"):
        tracker.log_artifact(run_path / name)
