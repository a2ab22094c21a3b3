"""compress's side of the ``agent`` planner (``core.search.agent``): its experiments as the agent sees them
(``ExperimentView``) and its tools (docs/commands/compress.md#planners), every result computed in code; the brief
carries the knowledge base (``compress.knowledge``). An experiment is "a new best" for the guard when it grows the
hypervolume of the feasible experiments (the llm planner's bandit's rule)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentlab.compress.evaluate import LIMITS, Z90, Evaluator, Target, describe, measured_line, task_items
from agentlab.compress.knowledge import knowledge_base, measured_costs
from agentlab.compress.planners import ExperimentDomain, _dominated_by, _experiment, front_gains, least_dominated
from agentlab.compress.queries import TECHNIQUES as QUERY_TECHNIQUES
from agentlab.compress.queries import best_config, local_rows, mlflow_rows, query_experiments
from agentlab.compress.report import FIGURES, base_line, figures_line
from agentlab.compress.space import Space, to_params
from agentlab.compress.subagents import METHODS, task
from agentlab.compress.workspace import Workspace
from agentlab.core.agent.runtime import AgentModel, Tool, arguments, profile_of
from agentlab.core.agent.subagent import SubAgent
from agentlab.core.errors import AgentlabError
from agentlab.core.search.agent import AgentKit, Done
from agentlab.core.search.planners import PlanContext, params_key
from agentlab.core.search.prompts import plan_schema


class ExperimentView:
    """compress's experiments (``ExperimentDomain``) as the agent sees them."""

    unit = "experiment"

    def __init__(self, domain: ExperimentDomain):
        self.d = domain

    def _key(self, record: dict[str, Any]) -> str:
        exp = _experiment(record)
        return params_key(to_params(exp, self.d.space)) if exp is not None else ""

    def _text(self, record: dict[str, Any], on_front: bool) -> str:
        if record.get("state") != "done":
            return f"{record.get('label')}: failed: {str(record.get('error', ''))[:200]}"
        figures = figures_line(record.get("derived") or {})
        where = " (on the feasible front)" if on_front else "" if record.get("feasible") else \
            f" (breaks {', '.join(record.get('broken') or ['a constraint'])})"
        return f"{record.get('label')}: {figures}{where}"

    def done(self) -> list[Done]:
        records = self.d.records[1:]  # the base model is the reference, not an experiment
        gains = front_gains(self.d.goal, self.d.records)[1:]
        # a count of 0 is a feasible record on the front (an infeasible one counts more than there are records)
        return [Done(self._key(record), str(record.get("label")), str(record.get("planner", "")),
                     str(record.get("origin", "")), gain > 1e-12,
                     self._text(record, rank == 0) + (" - it grew the front" if gain > 1e-12 else ""))
                for record, gain, rank in zip(records, gains, _dominated_by(self.d.goal, records), strict=True)]

    def _ranked(self) -> list[tuple[dict[str, Any], int]]:
        """The finished experiments, least dominated first (0: on the feasible front)."""
        return least_dominated(self.d.goal, [r for r in self.d.records[1:] if r.get("state") == "done"])

    def front(self) -> list[str]:
        return [self._text(r, True) for r, rank in self._ranked() if rank == 0]

    def best_line(self) -> str:
        front = self.front()
        return ("the feasible front: " + "; ".join(front[:4])) if front else "no feasible experiment yet"

    def describe(self, params: dict[str, Any]) -> str:
        return self.d.experiment(params).label()

    def history(self, top: int) -> str:
        lines = [self._text(r, rank == 0) for r, rank in self._ranked()[:top]]
        return "\n".join(lines) or "no finished experiment yet"

    def changes_schema(self, open_values: bool = False) -> dict[str, Any]:
        # compress's experiments are named settings (prune, quantize, ...): the same schema for every profile
        schema: dict[str, Any] = plan_schema(self.d.space.describe())["properties"]["changes"]
        return schema

    def config(self, changes: Any) -> tuple[dict[str, Any] | None, str]:
        if not isinstance(changes, dict) or not changes:
            return None, "changes must name the experiment's settings (prune, quantize, ...)"
        return self.d.lead(changes)


def knowledge_leads(choices: dict[str, list[Any]]) -> list[tuple[dict[str, Any], str]]:
    """The knowledge base as experiments to try, best first (``AgentKit.leads``): llama.cpp's GGUF formats of the
    whole model, nothing pruned, the least lossy first: on a CPU the fastest deployment with the least damage, so
    the experiments a compression engineer runs first; pruning has to beat them. Only the types the space offers."""
    if "gguf" not in choices.get("quantize", []):
        return []
    why = {"Q8_0": "nearly lossless", "Q5_K_M": "smaller, a little damage", "Q4_K_M": "smallest, more damage"}
    return [({"prune": "none", "quantize": "gguf", "gguf_type": t},
             f"from the knowledge base: GGUF {t} of the whole model, {why[t]}, usually the fastest on CPU")
            for t in why if t in choices.get("gguf_type", [])]


# A sub-agent's reason: printable ASCII without a double quote, at most 120 characters (the answer stays one line of
# JSON a small model cannot break).
SUBAGENT_REASON = {"type": "string", "maxLength": 120, "pattern": "^[ !#-\\[\\]-~]{0,120}$"}


def targets(domain: ExperimentDomain) -> dict[str, Target]:
    """What ``evaluate`` can score: "base" and each finished experiment, by its index."""
    out = {"base": Target("base", "base model", None, {})}
    for r in domain.records[1:]:
        if r.get("state") == "done" and r.get("experiment"):
            out[str(r["index"])] = Target(str(r["index"]), str(r.get("label")), r["experiment"], r.get("steps") or {},
                                          str(r.get("key") or ""))
    return out


def check_target(found: dict[str, Target], target: Any, tool: str) -> None:
    """A ``target`` argument that names no entry of ``targets``: an ``AgentlabError`` the agent reads."""
    if str(target) not in found:
        raise AgentlabError(f"{tool}: target {target!r} is not the base or a finished experiment "
                            f"(one of {', '.join(found)})")


def evaluate(evaluator: Evaluator, domain: ExperimentDomain, args: dict[str, Any],
             on_event: Callable[..., None] | None = None) -> str:
    """The ``evaluate`` tool: its arguments checked (a scripted or unconstrained model's too), then the evaluation
    (cached) in words; a bad argument is an ``AgentlabError`` the agent reads."""
    found = targets(domain)
    target, task, limit = args.get("target"), args.get("task"), args.get("limit")
    check_target(found, target, "evaluate")
    if task not in evaluator.tasks:
        raise AgentlabError(f"evaluate: task {task!r} is not offered (one of {', '.join(evaluator.tasks)})")
    if not isinstance(limit, int) or isinstance(limit, bool) or not LIMITS[0] <= limit <= LIMITS[1]:
        raise AgentlabError(f"evaluate: limit {limit!r} must be a whole number of questions from {LIMITS[0]} to "
                            f"{LIMITS[1]}")
    result = evaluator.evaluate(found[str(target)], str(task), limit)
    if on_event is not None:
        on_event("agent_evaluate", target=result["target"], label=result["label"], task=result["task"],
                 limit=limit, n=result["n"], metric=result["metric"], accuracy=result["accuracy"],
                 low=result["low"], high=result["high"], paired=result["paired"], cached=result["cached"],
                 seconds=0.0 if result["cached"] else result["seconds"])
    return describe(result)


EVALUATION_SYSTEM = ("You are the evaluation sub-agent of a model compression search. An accuracy measured on few "
                     "questions is noisy: a drop can be chance. Given the question, the figures measured so far with "
                     "their 90% intervals, and the items needed computed from them, choose the task and how many "
                     "questions would settle it: more questions for a small difference, a task that tests what the "
                     "compression may have broken. Answer with the answer tool.")
EVAL_LIMITS = (10, 20, 50, 100, 200)


def items_needed(diff: float | None, sd: float = 0.5) -> int:
    """Items a paired 90% interval needs so its half-width is below ``|diff|`` (``sd``: of a per-item
    difference), within ``LIMITS``."""
    if diff is None or abs(diff) < 1e-9:
        return LIMITS[1]
    return max(LIMITS[0], min(LIMITS[1], math.ceil((Z90 * sd / abs(diff)) ** 2)))


def evaluation(evaluator: Evaluator, domain: ExperimentDomain, model: AgentModel, question: str, target: str,
               on_event: Callable[..., None] | None = None) -> str:
    """The evaluation sub-agent's advice for ``question`` about ``target``: the task and the questions (validated),
    and the exact ``evaluate`` calls to make."""
    found = targets(domain)
    check_target(found, target, "evaluation")
    n = evaluator.measured_n()
    base_record = domain.records[0] if domain.records else {}
    record = next((r for r in domain.records[1:] if str(r.get("index")) == target), base_record)
    lines = [f"question: {question}", f"measured by the search on {n} questions each:",
             f"- {measured_line(base_record, n)}"]
    diff = None
    if target != "base":
        lines.append(f"- {measured_line(record, n)}")
        acc, base_acc = (record.get("metrics") or {}).get("accuracy"), (base_record.get("metrics") or {}).get(
            "accuracy")
        if acc is not None and base_acc is not None:
            diff = acc - base_acc
            lines.append(f"- difference {diff:+.3f} (not paired item by item)")
    earlier = evaluator.results(found[target]) + ([] if target == "base" else evaluator.results(found["base"]))
    sd = 0.5
    for result in earlier:
        lines.append(f"evaluated: {describe(result)}")
        paired = result.get("paired")
        if paired and paired["n"] > 1:
            diff = paired["diff"]
            sd = max(0.05, math.sqrt(max(0.0, (paired["better"] + paired["worse"]) / paired["n"] - diff ** 2)))
    lines.append(f"items needed for a paired 90% interval narrower than the difference: {items_needed(diff, sd)}"
                 + (" (no difference measured: the most offered)" if not diff else ""))
    lines.append("tasks (items): " + ", ".join(f"{t} ({task_items(t) or '?'})" for t in evaluator.tasks))
    schema = arguments({"task": {"type": "string", "enum": list(evaluator.tasks)},
                        "limit": {"type": "integer", "enum": list(EVAL_LIMITS)}, "reason": SUBAGENT_REASON})
    agent = SubAgent("evaluation", EVALUATION_SYSTEM, schema, model, on_event=on_event)
    answer, problem = agent.ask("\n".join(lines))
    if answer is None:
        return f"the evaluation sub-agent gave no answer ({problem}); without advice, {items_needed(diff, sd)} " \
               f"questions of {evaluator.tasks[0]} is what the figures call for"
    task, limit = answer["task"], answer["limit"]
    items = task_items(task)
    note = f" ({task} has {items} items: all of them)" if items is not None and limit > items else ""
    calls = [json.dumps({"target": t, "task": task, "limit": limit}) for t in dict.fromkeys([target, "base"])]
    return (f"evaluation sub-agent: {task}, {limit} questions{note} ({answer.get('reason', '')}). To settle it: "
            + " then ".join(f"evaluate {c}" for c in calls))


@dataclass(frozen=True)
class KitOptions:
    """``compress_kit``'s settings. ``query_experiments`` and ``best_config`` read the MLflow tracking URI ``mlflow``,
    or without it the run's records and the workspace, measured under ``context``."""
    short: bool = True  # the knowledge base's short form (the planner model's profile is ``small``)
    budget: int = 8  # the search's experiments (the knowledge base's success line names them)
    mlflow: str | None = None
    context: dict[str, Any] | None = None


def compress_kit(domain_goal: str, base_metrics: Callable[[], dict[str, Any]], workspace: Workspace,
                 model_hash: str, on_event: Callable[..., None] | None = None,
                 evaluator: Evaluator | None = None, space: Space | None = None, *,
                 options: KitOptions = KitOptions()) -> AgentKit:
    """The agent's kit for compress; ``base_metrics()``: the base model's measurement (taken before the agent's
    first step); ``evaluator``: the ``evaluate`` tool and the ``evaluation`` sub-agent (None: neither); ``space``:
    the experiments offered, for the knowledge base's leads (None: no leads); ``options``: the knowledge base's form
    and budget, where ``query_experiments`` and ``best_config`` read (``KitOptions``)."""
    leads = knowledge_leads(space.choices) if space is not None else []
    measured = measured_costs(workspace, model_hash)
    kb = knowledge_base(domain_goal, options.budget, workspace, model_hash, options.short)

    def tools(ctx: PlanContext, model: AgentModel) -> list[Tool]:
        domain = ctx.domain
        assert isinstance(domain, ExperimentDomain)
        view = ExperimentView(domain)
        settings = view.changes_schema()
        objective = domain.goal

        def rows() -> list[dict[str, Any]]:
            return (mlflow_rows(options.mlflow) if options.mlflow
                    else local_rows(domain.records, workspace, model_hash, options.context))

        source = "the MLflow store's compress runs" if options.mlflow else "this run and the workspace"
        out = [
            Tool("task", "hand the recovery of a prune to a sub-agent with its own tools: lora (low-rank adapters) "
                 "or distill (the base model teaches); it answers with the settings to run",
                 arguments({"subagent": {"type": "string", "enum": list(METHODS)}, "changes": settings}),
                 lambda args: task(domain, workspace, model_hash, model, args, on_event)),
            Tool("query_experiments", f"the experiments measured so far ({source}), filtered by technique, best "
                 "first by a figure",
                 arguments({"technique": {"type": "string", "enum": list(QUERY_TECHNIQUES)},
                            "sort_by": {"type": "string", "enum": list(FIGURES)},
                            "top": {"type": "integer", "minimum": 1, "maximum": 10}}, "top"),
                 lambda args: query_experiments(rows(), str(args.get("technique")), str(args.get("sort_by")),
                                                  objective, int(args.get("top") or 5))),
            Tool("best_config", f"the best measured experiment by a figure ({source}) and its settings",
                 arguments({"metric": {"type": "string", "enum": list(FIGURES)}}),
                 lambda args: best_config(rows(), str(args.get("metric")), objective)),
            Tool("measure_base", "the base model's measured figures", {"type": "object", "properties": {}},
                 lambda args: f"base model: {base_line(base_metrics())}"),
            Tool("pareto_front", "the feasible experiments no other beats on every objective",
                 {"type": "object", "properties": {}},
                 lambda args: "\n".join(view.front()) or "no feasible experiment yet"),
            Tool("workspace", "what each technique did to this model in earlier runs on this machine",
                 {"type": "object", "properties": {}}, lambda args: measured or "no earlier runs of this model"),
        ]
        if evaluator is not None:
            # a small model picks a target from the list; a model whose tools stay the same from step to step (its
            # prompt cache keeps them) names one by its form, checked in code (check_target): a list that grew with
            # each experiment changed the tools, and the cached prompt from them on, after every experiment
            target = ({"type": "string", "enum": list(targets(domain))} if profile_of(model).suggest_first else
                      {"type": "string", "pattern": "^(base|[0-9]{1,4})$",
                       "description": "base, or a finished experiment's index"})
            out += [
                Tool("evaluate", "score the base model or a finished experiment on an lm-eval task's first `limit` "
                     "questions: accuracy with a 90% interval, and against the base on the same items; not an "
                     "experiment (the budget is not used)",
                     arguments({"target": target,
                                "task": {"type": "string", "enum": list(evaluator.tasks)},
                                "limit": {"type": "integer", "minimum": LIMITS[0], "maximum": LIMITS[1]}}),
                     lambda args: evaluate(evaluator, domain, args, on_event)),
                Tool("evaluation", "ask the evaluation sub-agent which task and how many questions would settle a "
                     "question about an experiment's accuracy (is its drop real?)",
                     arguments({"question": {"type": "string", "maxLength": 160, "pattern": "^[ !#-\\[\\]-~]{0,160}$"},
                                "target": target}),
                     lambda args: evaluation(evaluator, domain, model, str(args.get("question", ""))[:300],
                                             str(args.get("target")), on_event)),
            ]
        return out

    return AgentKit(what=f"a model compression search; the goal: {domain_goal}",
                    facts=lambda: "\n\n".join((f"base model: {base_line(base_metrics())}", kb)),
                    tools=tools, view=ExperimentView,
                    actions=("run_experiment", "try_experiment"),
                    knowledge=Path(workspace.root) / "agent_knowledge.json", signature=model_hash[:16],
                    leads=lambda: leads)


__all__ = ["ExperimentView", "KitOptions", "compress_kit", "evaluate", "evaluation", "knowledge_leads", "targets"]
