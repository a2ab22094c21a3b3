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
_RAW = ("perplexity", "accuracy", "prefill_tps", "decode_tps", "size_mb", "memory_mb", "params", "nonzero_params",
        "energy_kwh", "co2e_kg")


def _key(record: dict[str, Any]) -> str:
    return f"exp_{record['index']:03d}"


def log_experiments(tracker: Tracker | NullTracker, records: list[dict[str, Any]]) -> None:
    if not tracker.enabled:
        return
    for record in records:
        if tracker.logged(_key(record)):
            continue
        tags = {"label": record["label"], "state": record.get("state"), "planner": record.get("planner"),
                "reused": record.get("reused"), "feasible": record.get("feasible"),
                "energy_mode": (record.get("metrics") or {}).get("energy_mode"), "note": record.get("note") or None}
        with tracker.run(record["label"], key=_key(record), params=record.get("experiment") or {"base": True},
                         tags={k: v for k, v in tags.items() if v is not None}) as child:
            metrics = record.get("metrics") or {}
            child.log_metrics({**{k: metrics.get(k) for k in _RAW},
                               **{f"derived_{k}": v for k, v in (record.get("derived") or {}).items()},
                               "violation": record.get("violation")})


def log_results(tracker: Tracker | NullTracker, results: dict[str, Any], run_path: Path) -> None:
    if not tracker.enabled:
        return
    rec = results["recommended"]
    tracker.log_metrics({"experiments": results["counts"]["experiments"], "reused": results["counts"]["reused"],
                         "co2e_kg": results["energy"]["co2e_kg"], "energy_kwh": results["energy"]["energy_kwh"],
                         **{f"best_{k}": v for k, v in ((rec.get("best") or {}).get("derived") or {}).items()}})
    tracker.set_tags({"recommended": rec.get("label"), "feasible": rec.get("feasible"),
                      "stop_reason": results["stop_reason"], "goal": results["goal"],
                      "recommended_experiment": json.dumps(rec.get("experiment"))})
    for name in ("report.md", "results.json", "best.json", "pareto.png"):
        if (run_path / name).is_file():
            tracker.log_artifact(run_path / name)
