"""The compress agent's ``query_experiments`` and ``best_config`` tools: the experiments measured so far, filtered and
sorted in code, from the MLflow store with ``--mlflow`` (every `agentlab compress` run's children), else from this
run and the workspace's experiments on this model under the same measurement set-up. Every row has the same shape:
label, source, experiment, feasible (None: not known), and the goal's ``FIGURES`` against the base model.
"""

from __future__ import annotations

import json
from typing import Any

from agentlab.compress.objective import METRICS, Goal
from agentlab.compress.report import FIGURES, fmt
from agentlab.compress.scoring import derive
from agentlab.compress.tracking import MLFLOW_EXPERIMENT
from agentlab.compress.workspace import Workspace
from agentlab.core.errors import AgentlabError

TECHNIQUES = ("any", "prune magnitude", "prune wanda", "prune structured", "recover lora", "recover distill",
              "quantize gguf", "quantize int8", "quantize none")


def _row(label: str, source: str, experiment: dict[str, Any] | None, feasible: Any,
         derived: dict[str, Any]) -> dict[str, Any]:
    return {"label": label, "source": source, "experiment": experiment,
            "feasible": None if feasible is None else bool(feasible),
            **{k: derived.get(k) for k in FIGURES}}


def local_rows(records: list[dict[str, Any]], workspace: Workspace, model_hash: str,
               context: dict[str, Any] | None) -> list[dict[str, Any]]:
    """This run's finished experiments, then the workspace's on this model measured the same way (``context``),
    scored against this run's base model; each experiment once."""
    if not records:
        return []
    base = records[0].get("metrics") or {}
    rows, seen = [], set()
    for r in records[1:]:
        if r.get("state") == "done" and r.get("experiment"):
            seen.add(json.dumps(r["experiment"], sort_keys=True))
            rows.append(_row(str(r.get("label")), f"this run #{r.get('index')}", r["experiment"], r.get("feasible"),
                             r.get("derived") or {}))
    for r in workspace.experiments(model_hash):
        exp = r.get("experiment")
        key = json.dumps(exp, sort_keys=True)
        if not exp or key in seen or (context and r.get("context") != context):
            continue
        seen.add(key)
        rows.append(_row(str(r.get("label")), "workspace", exp, None, derive(r.get("metrics") or {}, base)))
    return rows


def _unflatten(params: dict[str, str]) -> dict[str, Any] | None:
    """A child run's params (``prune.method`` ...) back to the experiment (values parsed as JSON where they are)."""
    if params.get("base") == "true":
        return None
    out: dict[str, Any] = {}
    for key, value in params.items():
        try:
            parsed: Any = json.loads(value)
        except ValueError:
            parsed = value
        if parsed is None:  # a step the experiment does not have (the tracker writes None as JSON's null)
            continue
        node = out
        *path, last = key.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = parsed
    return out or None


def mlflow_rows(uri: str) -> list[dict[str, Any]]:
    """The finished experiments logged to the MLflow tracking store ``uri`` (child runs with a ``label`` tag)."""
    from agentlab.core.tracking import import_mlflow

    mlflow = import_mlflow()
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    try:
        found = client.get_experiment_by_name(MLFLOW_EXPERIMENT)
        if found is None:
            return []
        runs = client.search_runs([found.experiment_id], filter_string="tags.state = 'done'", max_results=1000)
    except Exception as exc:  # the store is the user's: any failure is a line the agent reads
        raise AgentlabError(f"the MLflow store {uri} could not be read: {str(exc).splitlines()[0][:200]}") from exc
    rows = []
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        if "label" not in tags or tags.get("label") == "base model":
            continue
        derived = {k: metrics.get(f"derived_{k}") for k in FIGURES}
        feasible = {"true": True, "false": False}.get(tags.get("feasible", ""))
        rows.append(_row(tags["label"], f"mlflow {run.info.run_id[:8]}", _unflatten(dict(run.data.params)),
                         feasible, derived))
    return rows


def technique_of(experiment: dict[str, Any] | None, technique: str) -> bool:
    """Whether the experiment uses ``technique`` (one of ``TECHNIQUES``)."""
    if technique == "any":
        return True
    if experiment is None:
        return False
    step, method = technique.split(" ", 1)
    found = experiment.get(step) or {}
    if method == "none":
        return not found
    got = str(found.get("method", ""))
    return got.startswith(method) if method == "int8" else got == method


def _describe(row: dict[str, Any]) -> str:
    figures = ", ".join(f"{k} {fmt(row[k])}" for k in FIGURES if row.get(k) is not None)
    status = "" if row["feasible"] is None else " (meets the constraints)" if row["feasible"] else \
        " (breaks a constraint)"
    return f"{row['label']} [{row['source']}]: {figures}{status}"


def query_experiments(rows: list[dict[str, Any]], technique: str, sort_by: str, goal: Goal, top: int) -> str:
    if technique not in TECHNIQUES or sort_by not in FIGURES:
        raise AgentlabError(f"query_experiments: technique one of {', '.join(TECHNIQUES)}; sort_by one of "
                            f"{', '.join(FIGURES)}")
    chosen = [r for r in rows if technique_of(r["experiment"], technique) and r.get(sort_by) is not None]
    if not chosen:
        return f"no measured experiment with {technique} and a {sort_by} figure"
    chosen.sort(key=lambda r: float(r[sort_by]), reverse=_direction(goal, sort_by) == "maximize")
    top = max(1, min(int(top), 10))
    return f"{len(chosen)} experiment(s), best {sort_by} first:\n" + "\n".join(_describe(r) for r in chosen[:top])


def _direction(goal: Goal, metric: str) -> str:
    """The goal's direction for ``metric``, else the metric's own (``objective.METRICS``)."""
    return next((str(o.direction) for o in goal.objectives if o.metric == metric), METRICS.get(metric, "maximize"))


def best_config(rows: list[dict[str, Any]], metric: str, goal: Goal) -> str:
    if metric not in FIGURES:
        raise AgentlabError(f"best_config: metric one of {', '.join(FIGURES)}")
    chosen = [r for r in rows if r.get(metric) is not None and r["feasible"] is not False]
    if not chosen:
        return f"no measured experiment with a {metric} figure that meets the constraints"
    pick = (max if _direction(goal, metric) == "maximize" else min)(chosen, key=lambda r: float(r[metric]))
    return (f"best {metric} (not breaking a constraint): {_describe(pick)}; its settings: "
            f"{json.dumps(pick['experiment'], sort_keys=True)}")


__all__ = ["TECHNIQUES", "best_config", "local_rows", "mlflow_rows", "query_experiments", "technique_of"]
