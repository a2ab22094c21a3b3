"""What each command's run folder says, as tables and series the pages draw: plain functions, no Streamlit.

Every function reads a run that may still be running (a file not written yet is an empty table) and never writes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agentlab.core.config import load_yaml
from agentlab.core.errors import AgentlabError
from agentlab.core.runs import read_events
from agentlab.pipeline.sessions import read_record
from agentlab.ui.runs import read_jsonl


def json_file(path: Path) -> Any:
    """A JSON file of the run, or None when it is missing or not (yet) whole JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def run_config(path: Path) -> dict[str, Any]:
    """config.yaml of the run as a dict ({} when missing or not YAML, or when its aliases would expand it past
    what a config holds: ``load_yaml``'s check, before any view walks it)."""
    file = path / "config.yaml"
    try:
        return _dict(load_yaml(file.read_text(encoding="utf-8"), str(file)))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, AgentlabError):
        return {}


def _events(path: Path, kind: str | None) -> list[dict[str, Any]]:
    return list(read_events(path, kind))


# --------------------------------------------------------------------------- a running run, in one line or three


def progress(command: str, path: Path) -> list[str]:
    """How far a (running) run is, from its events and config: trial k/N, epoch, best so far; step, loss; ..."""
    cfg = run_config(path)
    try:
        return _PROGRESS.get(command, _generic)(path, cfg)
    except (KeyError, TypeError, ValueError, AttributeError):
        return _generic(path, cfg)


def _generic(path: Path, cfg: dict[str, Any]) -> list[str]:
    events = read_jsonl(path / "events.jsonl")
    return [f"{len(events)} events; last: {events[-1].get('kind')}"] if events else ["no events yet"]


def _nas_progress(path: Path, cfg: dict[str, Any]) -> list[str]:
    trials = _events(path, "trial")
    metric = nas_metric(path)
    total = _dict(cfg.get("search")).get("max_iterations", "?")
    done = len(_dict(json_file(path / "agent_state.json")).get("runs") or trials)
    lines = [f"trial {min(done + 1, total) if isinstance(total, int) else done + 1}/{total}"]
    current = [e for e in _events(path, "epoch") if e.get("trial") == done]  # the trial being trained now
    if current:  # the forecaster's epochs (a command's own step lines are no events)
        lines.append(f"run_{done:04d}: epoch {current[-1]['epoch']}, val MSE {current[-1]['val_mse']:.4f}")
    finished = [t for t in trials if t.get("state") == "complete" and isinstance(t.get("value"), (int, float))]
    if finished:  # the best in the search's direction: a command maximising val_acc has its highest value best
        best = (max if metric.direction == "maximize" else min)(finished, key=lambda t: t["value"])
        lines.append(f"best so far: {metric.label} {best['value']:.4g} ({best.get('run_id')}; {metric.better})"
                     if metric.own else f"best so far: val MSE {best['value']:.4f} ({best.get('run_id')})")
    return lines


def _persona_logs(path: Path) -> list[dict[str, Any]]:
    """The train_log events with a loss, the last of each step: a resume trains the steps after its checkpoint again
    and logs them again (after a ``resume`` event), and the second time is the one the adapter keeps."""
    last: dict[Any, dict[str, Any]] = {}
    for event in _events(path, "train_log"):
        if "loss" in event:
            last.pop(event.get("step"), None)  # in the order of the run that counts
            last[event.get("step")] = event
    return list(last.values())


def _persona_progress(path: Path, cfg: dict[str, Any]) -> list[str]:
    logs = _persona_logs(path)
    if not logs:
        return ["loading the model and the data"]
    last = logs[-1]
    return [f"step {last['step']}/{last.get('max_steps', '?')}, loss {last['loss']:.4f}",
            f"lowest loss so far: {min(e['loss'] for e in logs):.4f}"]


def _debate_progress(path: Path, cfg: dict[str, Any]) -> list[str]:
    rounds = _events(path, "round")
    lines = [f"round {len(rounds)}/{int(cfg.get('rounds', 0)) + 1} done"]
    if rounds:
        lines.append(f"last vote: {_dict(rounds[-1].get('votes')).get('winner')} "
                     f"(agreement {rounds[-1].get('agreement', 0):.0%})")
    return lines


def _eval_progress(path: Path, cfg: dict[str, Any]) -> list[str]:
    questions = _events(path, "question")
    correct = sum(bool(q.get("correct")) for q in questions)
    return [f"{len(questions)} questions scored; the debate got {correct} right"]


def _evolve_progress(path: Path, cfg: dict[str, Any]) -> list[str]:
    scored = _events(path, "scored")
    lines = [f"individual {len(scored)}/{_evolve_total(cfg)} scored"]
    if scored:
        best = max((s for s in scored if isinstance(s.get("task"), (int, float))), key=lambda s: s["task"],
                   default=None)
        lines.append(f"generation {scored[-1].get('generation')}" + (
            f"; best {_evolve_task(cfg)} so far {best['task']:.3f} ({best['id']})" if best else ""))
    return lines


def _evolve_total(cfg: dict[str, Any]) -> int:
    """Every individual an evolve run scores, as its CLI counts them (``evolve.run.total_trials``, which the UI may
    not import: commands never import each other): the seeds, the search's children and each baseline's, whose
    ``scored`` events count too (without them the count ran past the total, 51/32 on the defaults)."""
    seeds, population, generations = len(cfg["seeds"]), cfg["population"], cfg["generations"]
    search, elite = cfg.get("search", "cmaes"), cfg.get("elite", 2)
    children = max(0, population - seeds) + generations * (population - elite)
    baselines = [b for b in dict.fromkeys(cfg.get("baselines") or []) if b != search]
    return (seeds + (1 if search == "uniform" else children)
            + sum(1 if b == "uniform" else cfg.get("baseline_budget", 6) for b in baselines))


def _evolve_task(cfg: dict[str, Any]) -> str:
    """What an evolve run's task score is (``task.score``, or its lm-eval task's first metric): a log-likelihood
    around -4 read as "best task accuracy" was taken for a broken run."""
    task = _dict(cfg.get("task"))
    if task.get("harness"):
        return f"task score ({task['harness']})"
    return {"accuracy": "task accuracy", "loglik": "task log-likelihood"}.get(str(task.get("score")), "task score")


def _compress_progress(path: Path, cfg: dict[str, Any]) -> list[str]:
    done = _events(path, "experiment")
    total = _dict(cfg.get("search")).get("max_iterations", cfg.get("max_iterations", "?"))  # or a run from before
    lines = [f"experiment {max(len(done) - 1, 0)}/{total} done (and the base model)"]
    best = _dict(json_file(path / "best.json"))
    if best.get("label"):
        lines.append(f"best so far: {best['label']}")
    return lines


def _pipeline_progress(path: Path, cfg: dict[str, Any]) -> list[str]:
    stages = _dict(cfg.get("base_pipeline")).get("stages") or []
    done = _events(path, "stage")
    last = f"; last: {done[-1].get('stage')}" if done else ""
    return [f"stage {len(done)}/{len(stages)} done{last}"]


def _bench_progress(path: Path, cfg: dict[str, Any]) -> list[str]:
    calls = _events(path, "llm_call")
    return [f"{len(calls)} requests so far"]


_PROGRESS = {"nas": _nas_progress, "train-persona": _persona_progress, "debate": _debate_progress,
             "debate-eval": _eval_progress, "evolve": _evolve_progress, "compress": _compress_progress,
             "pipeline": _pipeline_progress, "llm-bench": _bench_progress}


# --------------------------------------------------------------------------- nas


@dataclass(frozen=True)
class NasMetric:
    """What a nas run searched: the forecaster's validation MSE (``val_mse``, lower is better), or the metric of the
    user's own command (the ``objective:`` section of its config.yaml; results.json's when the config is gone) under
    its own name and in its own direction. ``key``: the field of a trial record; ``label``: the column and the
    series it is shown as."""

    key: str
    label: str
    direction: str
    own: bool

    @property
    def better(self) -> str:
        return "higher is better" if self.direction == "maximize" else "lower is better"


FORECASTER = NasMetric("val_mse", "val MSE", "minimize", own=False)
# the other columns of the trials table and its curves: a command's metric of one of these names is `metric NAME`
_NAS_COLUMNS = ("run", "trial", "planner", "state", "decision", "changes", "reason", "best so far", "step")


def nas_metric(path: Path) -> NasMetric:
    """The metric and direction of the nas run at ``path``: its command objective's, else the forecaster's."""
    objective = _dict(run_config(path).get("objective"))
    results = {} if objective else _dict(json_file(path / "results.json"))
    own = objective or (results if isinstance(results.get("objective"), dict) else {})
    metric = own.get("metric") if own else None
    if not isinstance(metric, str) or not metric:
        return FORECASTER
    label = f"metric {metric}" if metric in _NAS_COLUMNS else metric
    return NasMetric(metric, label, "maximize" if own.get("direction") == "maximize" else "minimize", own=True)


def nas_trials(path: Path, metric: NasMetric | None = None) -> list[dict[str, Any]]:
    """One row per trial: agent_state.json (rewritten after each trial), else the trial events. The searched metric
    is a column under its own name (``val MSE``, or a command's ``val_acc``); test MSE, size and epochs are the
    forecaster's alone."""
    metric = metric or nas_metric(path)
    runs = _dict(json_file(path / "agent_state.json")).get("runs")
    if not isinstance(runs, list):
        runs = [{**e, "trial": e.get("number"), **_dict(e.get("metrics"))} for e in _events(path, "trial")]
    rows = []
    for r in map(_dict, runs):
        changes = ", ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in _dict(r.get("changes")).items())
        forecaster = {} if metric.own else {"test MSE": r.get("test_mse"), "params": r.get("n_params"),
                                            "epochs": r.get("epochs")}
        rows.append({"run": r.get("run_id"), "trial": r.get("trial"), "planner": r.get("planner"),
                     metric.label: r.get(metric.key), **forecaster, "state": r.get("state"),
                     "decision": ("accepted" if r.get("accepted") else "rejected") if "accepted" in r else None,
                     "changes": changes or "-", "reason": r.get("reason")})
    return rows


def agent_timeline(path: Path) -> list[dict[str, Any]]:
    """The agent planner's steps, one row each (time, step, tool, arguments, result), the guard's trials and the
    approvals among them: events.jsonl's agent_* events."""
    rows: list[dict[str, Any]] = []
    for e in _events(path, None):
        kind = str(e.get("kind", ""))
        ts = e.get("ts")
        when = time.strftime("%H:%M:%S", time.localtime(ts)) if isinstance(ts, (int, float)) else ""
        if kind == "agent_step":
            rows.append({"time": when, "step": e.get("step"), "tool": e.get("tool"), "arguments": e.get("arguments"),
                         "result": "", "tokens": e.get("tokens"), "seconds": e.get("seconds")})
        elif kind in ("agent_tool", "agent_observe") and rows and not rows[-1]["result"]:
            rows[-1]["result"] = e.get("summary")
        elif kind == "agent_default":
            rows.append({"time": when, "step": None, "tool": "(candidate 0)", "arguments": e.get("why"),
                         "result": "", "tokens": None, "seconds": None})
        elif kind == "agent_approval":
            edit = ", ".join(f"{k}={v}" for k, v in (e.get("changes") or {}).items())
            rows.append({"time": when, "step": None, "tool": "(approval)",
                         "arguments": "; ".join(filter(None, [edit, e.get("note")])), "result": e.get("answer"),
                         "tokens": None, "seconds": None})
        elif kind == "plan" and e.get("origin") == "guard":
            rows.append({"time": when, "step": None, "tool": "(guard)", "arguments": "; ".join(e.get("notes") or []),
                         "result": "", "tokens": None, "seconds": None})
    # a cell with nothing to show is a dash, not "None" (and one type per column: text)
    return [{k: "-" if v is None or v == "" else str(v) for k, v in row.items()} for row in rows]


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def nas_curve(rows: list[dict[str, Any]], metric: NasMetric = FORECASTER) -> list[dict[str, Any]]:
    """The metric per trial and the best so far in its direction (the highest, for a metric to maximise): the
    optimisation history as a series; empty while no trial has a value."""
    curve: list[dict[str, Any]] = []
    best = None
    for row in rows:
        value = row.get(metric.label)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not isinstance(row.get("trial"), int):
            continue
        best = value if best is None else max(best, value) if metric.direction == "maximize" else min(best, value)
        curve.append({"trial": row["trial"], metric.label: value, "best so far": best})
    return curve


def nas_learning_curve(path: Path, run_id: str, metric: NasMetric = FORECASTER) -> list[dict[str, Any]]:
    """One trial's learning curve from trials/<run>/history.json: the forecaster's epochs (train loss, val MSE), or
    the step lines a command printed (step, its metric)."""
    history = json_file(path / "trials" / run_id / "history.json")
    if not isinstance(history, list):
        return []
    if metric.own:
        return [{"step": h.get("step"), metric.label: h.get(metric.key)} for h in history if isinstance(h, dict)]
    return [{"epoch": h.get("epoch"), "train loss": h.get("train_loss"), "val MSE": h.get("val_mse")}
            for h in history if isinstance(h, dict)]


# --------------------------------------------------------------------------- debate


def debate_rounds(path: Path) -> list[dict[str, Any]]:
    """The transcript by round: ``{round, turns: [transcript records], votes: [{answer, weight, count, voters}],
    winner, agreement}``; the votes come from results.json, or from the round events while the debate runs."""
    per_round = {r.get("round"): r for r in _dict(json_file(path / "results.json")).get("per_round") or []
                 if isinstance(r, dict)}
    events = {e.get("round"): e for e in _events(path, "round")}
    rounds: dict[int, list[dict[str, Any]]] = {}
    for turn in read_jsonl(path / "transcript.jsonl"):
        if isinstance(turn.get("round"), int):
            rounds.setdefault(turn["round"], []).append(turn)
    out = []
    for number in sorted(rounds):
        vote = _dict(_dict(per_round.get(number)).get("vote")) or _dict(_dict(events.get(number)).get("votes"))
        agreement = _dict(per_round.get(number)).get("agreement", _dict(events.get(number)).get("agreement"))
        votes = [{"answer": v.get("text") or v.get("answer"), "weight": v.get("weight"), "count": v.get("count"),
                  "voters": ", ".join(v.get("voters") or [])} for v in vote.get("votes") or [] if isinstance(v, dict)]
        out.append({"round": number, "turns": rounds[number], "votes": votes, "winner": vote.get("text"),
                    "agreement": agreement})
    return out


# --------------------------------------------------------------------------- evolve


def evolve_lineage(path: Path) -> dict[str, Any]:
    """``{"dot": Graphviz text of the lineage (edges: blend weights), "curve": best / mean fitness per generation,
    "individuals": table rows, "best": id}`` from results.json."""
    results = _dict(json_file(path / "results.json"))
    individuals = _dict(results.get("individuals"))
    best = _dict(results.get("best")).get("id")
    fitness = {m.get("id"): m.get("fitness") for g in results.get("history") or [] if isinstance(g, dict)
               for m in g.get("members") or [] if isinstance(m, dict)}
    lines = ["digraph lineage {", "  rankdir=LR;", '  node [shape=box, style="rounded,filled", fillcolor=white, '
             'fontname="Helvetica", fontsize=10];']
    rows = []
    for name, ind in individuals.items():
        ind = _dict(ind)
        task, score = ind.get("task"), fitness.get(name)
        label = f"{_dot(name)}\\ngen {ind.get('generation')}"
        label += f", task {task:.2f}" if isinstance(task, float) else ""
        colour = "gold" if name == best else "lightblue" if ind.get("origin") == "seed" else "white"
        lines.append(f'  "{_dot(name)}" [label="{label}", fillcolor={colour}];')
        for parent, weight in zip(ind.get("parents") or [], ind.get("weights") or [], strict=False):
            lines.append(f'  "{_dot(parent)}" -> "{_dot(name)}" [label="{weight:.2f}", fontsize=9];')
        rows.append({"id": name, "generation": ind.get("generation"), "origin": ind.get("origin"),
                     "parents": ", ".join(ind.get("parents") or []), "task": task, "coop": ind.get("coop"),
                     "fitness": score, "state": ind.get("state")})
    lines.append("}")
    curve = [{"generation": g.get("generation"), "best fitness": _dict(g.get("best")).get("fitness"),
              "mean fitness": _dict(g.get("mean")).get("fitness")} for g in results.get("history") or []
             if isinstance(g, dict)]
    return {"dot": "\n".join(lines) if individuals else "", "curve": curve, "individuals": rows, "best": best}


def _dot(text: Any) -> str:
    return str(text).replace("\\", "\\\\").replace('"', '\\"')


# --------------------------------------------------------------------------- compress


def compress_points(path: Path) -> list[dict[str, Any]]:
    """Every experiment with its measurements and whether it is on the Pareto front (results.json's ``front``)."""
    results = _dict(json_file(path / "results.json"))
    front = set(results.get("front") or [])
    records = results.get("experiments")
    if not isinstance(records, list):  # still running: experiments.jsonl holds the finished ones
        records = read_jsonl(path / "experiments.jsonl")
    rows = []
    for e in records:
        derived, metrics = _dict(e.get("derived")), _dict(e.get("metrics"))
        rows.append({"index": e.get("index"), "label": e.get("label"), "state": e.get("state"),
                     "speedup": derived.get("speedup"), "perplexity": metrics.get("perplexity"),
                     "accuracy": metrics.get("accuracy"), "size (MB)": metrics.get("size_mb"),
                     "feasible": e.get("feasible"),
                     "set": "base" if e.get("index") == 0 else "Pareto front" if e.get("index") in front else "other"})
    return rows


# --------------------------------------------------------------------------- llm-bench


# results.json's output_tokens_per_s: the median over requests of one request's decode speed (its output tokens over
# its time after the first token); a level's throughput_tokens_per_s: every output token of the level over its wall
# time (report.md's "By concurrency" table names it so too). Two numbers: two names.
PER_REQUEST_SPEED = "tokens/s per request (p50)"
THROUGHPUT = "throughput tokens/s"


def bench_rows(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(one row per model, one row per model and concurrency level): availability, TTFT and latency percentiles in
    ms, the decode speed of one request (``PER_REQUEST_SPEED``) and, per level, the throughput of all its requests
    together (``THROUGHPUT``)."""
    models = [m for m in _dict(json_file(path / "results.json")).get("models") or [] if isinstance(m, dict)]

    def ms(value: Any) -> float | None:
        return round(value * 1000, 1) if isinstance(value, (int, float)) else None

    def timing(m: dict[str, Any]) -> dict[str, Any]:
        ttft, lat = _dict(m.get("ttft_s")), _dict(m.get("latency_s"))
        return {"TTFT p50 (ms)": ms(ttft.get("p50")), "p50 (ms)": ms(lat.get("p50")), "p90 (ms)": ms(lat.get("p90")),
                "p99 (ms)": ms(lat.get("p99")), PER_REQUEST_SPEED: m.get("output_tokens_per_s")}

    table = [{"model": m.get("name"), "available": "yes" if m.get("available") else f"no: {m.get('error_kind')}",
              "ok": f"{m.get('ok')}/{m.get('requests')}", **timing(m)} for m in models]
    levels = [{"model": m.get("name"), "concurrency": lv.get("concurrency"),
               "ok": f"{lv.get('ok')}/{lv.get('requests')}", **timing(lv), "requests/s": lv.get("requests_per_s"),
               THROUGHPUT: lv.get("throughput_tokens_per_s")}
              for m in models for lv in m.get("levels") or [] if isinstance(lv, dict)]
    return table, levels


# --------------------------------------------------------------------------- pipeline, train-persona


def pipeline_steps(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The session's stages (name, type, models, tokens, seconds, output), and what is wrong with the files they
    come from, a line each naming the file as the History page and `agentlab pipeline history` do: a step file that
    is not UTF-8, not whole JSON or not an object (no row of its own), ``steps`` that is no folder."""
    folder = path / "steps"
    if folder.exists() and not folder.is_dir():
        return [], [f"{folder}: not a folder (the session's step files, steps/NN-STAGE.json, go in it)"]
    rows, problems = [], []
    for file in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            step = read_record(file)
        except AgentlabError as exc:
            problems.append(exc.message)
            continue
        agg = _dict(step.get("aggregation")).get("kind")
        rows.append({"#": step.get("index"), "stage": step.get("stage"),
                     "type": f"{step.get('type')}" + (f" ({agg})" if agg else ""),
                     "models": ", ".join(str(o.get("model")) for o in step.get("outputs") or [] if isinstance(o, dict)),
                     "tokens in/out": f"{step.get('prompt_tokens')}/{step.get('completion_tokens')}",
                     "seconds": "reused" if step.get("reused") else step.get("seconds"),
                     "output": step.get("output")})
    return rows, problems


def persona_loss(path: Path) -> list[dict[str, Any]]:
    """Training loss per logged step."""
    return [{"step": e.get("step"), "loss": e.get("loss")} for e in _persona_logs(path)]
