"""compress's side of the ``agent`` planner (``core.search.agent``): its experiments as the agent sees them
(``ExperimentView``) and its tools, every result computed in code: ``measure_base`` (the base model's measured
figures), ``pareto_front`` (the feasible front so far), ``workspace`` (what each technique did to this model in
earlier runs, from the workspace). The system prompt carries the knowledge base: the techniques, what each costs
and buys, with the figures measured on this machine where the workspace has them.

An experiment is "a new best" for the guard when it grows the hypervolume of the feasible experiments (the same
rule the llm planner's bandit uses), so the guard hands the search to NSGA-II when the agent's experiments stop
growing the front."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentlab.compress.config import Experiment
from agentlab.compress.planners import ExperimentDomain, _dominated_by, _experiment, front_gains
from agentlab.compress.report import fmt
from agentlab.compress.space import experiment_key, to_experiment, to_params
from agentlab.compress.workspace import Workspace
from agentlab.core.agent.runtime import AgentModel, Tool
from agentlab.core.agent.subagent import SubAgent
from agentlab.core.search.agent import AgentKit, Done
from agentlab.core.search.planners import PlanContext, params_key
from agentlab.core.search.prompts import plan_schema

SHOWN = ("speedup", "accuracy", "perplexity", "size", "compression")

TECHNIQUES = """Techniques (what each costs and buys):
- prune magnitude / wanda (sparsity 0.3-0.7, unstructured or 2:4): zeros weights; on CPU no speedup by itself, accuracy
  drops with sparsity (wanda keeps more than magnitude); 2:4 is the pattern GPUs accelerate.
- prune structured (mlp_keep, drop_layers): removes channels or whole layers: real speedup and smaller size, the
  largest accuracy damage; recovery (lora or distill, 20-50 steps) wins part of it back.
- quantize int8 (weight_only, dynamic, torch_dynamic_int8): about 2-4x smaller; speed depends on the kernel.
- quantize gguf (q8_0, q4_k_m, ...): llama.cpp's formats: much smaller and usually the fastest on CPU.
- recover lora / distill: training steps after pruning: costs minutes, buys back accuracy."""


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
        derived = record.get("derived") or {}
        figures = ", ".join(f"{k} {fmt(v)}" for k, v in derived.items() if k in SHOWN)
        where = " (on the feasible front)" if on_front else "" if record.get("feasible") else \
            f" (breaks {', '.join(record.get('broken') or ['a constraint'])})"
        return f"{record.get('label')}: {figures}{where}"

    def done(self) -> list[Done]:
        records = self.d.records
        gains = front_gains(self.d.goal, records)
        ranks = _dominated_by(self.d.goal, records[1:]) if len(records) > 1 else []
        out = []
        for i, (record, gain) in enumerate(zip(records, gains, strict=True)):
            if i == 0:
                continue  # the base model: the reference, not an experiment
            on_front = ranks[i - 1] == 0 and bool(record.get("feasible"))
            out.append(Done(self._key(record), str(record.get("label")), str(record.get("planner", "")),
                            str(record.get("origin", "")), gain > 1e-12,
                            self._text(record, on_front) + (" - it grew the front" if gain > 1e-12 else "")))
        return out

    def _ranked(self) -> list[tuple[dict[str, Any], int]]:
        """The finished experiments with how many feasible ones dominate each (0 and feasible: on the front)."""
        done = [r for r in self.d.records[1:] if r.get("state") == "done"]
        return list(zip(done, _dominated_by(self.d.goal, done), strict=True))

    def front(self) -> list[str]:
        return [self._text(r, True) for r, rank in self._ranked() if rank == 0 and r.get("feasible")]

    def best_line(self) -> str:
        front = self.front()
        return ("the feasible front: " + "; ".join(front[:4])) if front else "no feasible experiment yet"

    def describe(self, params: dict[str, Any]) -> str:
        return self.d.experiment(params).label()

    def history(self, top: int) -> str:
        ranked = sorted(self._ranked(), key=lambda pair: (pair[1], pair[0]["index"]))
        lines = [self._text(r, rank == 0 and bool(r.get("feasible"))) for r, rank in ranked[:top]]
        return "\n".join(lines) or "no finished experiment yet"

    def changes_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = plan_schema(self.d.space.describe())["properties"]["changes"]
        return schema

    def config(self, changes: Any) -> tuple[dict[str, Any] | None, str]:
        if not isinstance(changes, dict) or not changes:
            return None, "changes must name the experiment's settings (prune, quantize, ...)"
        space = self.d.space.choices
        wrong = [f"{k}: not a setting (settings: {', '.join(space)})" if k not in space else f"{k}: one of {space[k]}"
                 for k, v in changes.items() if k not in space or v not in space[k]]
        if wrong:
            return None, "; ".join(wrong)[:400]
        params = {k: v[0] for k, v in space.items()} | changes
        exp = to_experiment(params)
        if exp is None:
            return None, "these settings make no experiment (nothing pruned or quantized, or a prune removing nothing)"
        if experiment_key(exp) in self.d.tried:
            return None, f"{exp.label()} was run already: change something else"
        params = to_params(exp, self.d.space)
        self.d.experiments[params_key(params)] = exp
        return params, ""


def measured_techniques(workspace: Workspace, model_hash: str) -> str:
    """Per technique, what it did to this model in earlier runs on this machine (the workspace): median speedup and
    accuracy / perplexity change against the base measurement."""
    by: dict[str, list[dict[str, Any]]] = {}
    base = next((r for r in workspace.experiments(model_hash) if r.get("experiment") is None), None)
    base_metrics = (base or {}).get("metrics") or {}
    for r in workspace.experiments(model_hash):
        exp = r.get("experiment")
        if not exp or r.get("state", "done") != "done":
            continue
        parts = [k for k in ("prune", "quantize") if exp.get(k)]
        name = " + ".join(f"{k} {exp[k].get('method')}" for k in parts) + (" + recover" if exp.get("recover") else "")
        by.setdefault(name, []).append(r.get("metrics") or {})
    if not by or not base_metrics:
        return ""
    lines = []
    for name, rows in sorted(by.items()):
        speed = [m["decode_tps"] / base_metrics["decode_tps"] for m in rows
                 if m.get("decode_tps") and base_metrics.get("decode_tps")]
        acc = [m["accuracy"] - base_metrics["accuracy"] for m in rows
               if m.get("accuracy") is not None and base_metrics.get("accuracy") is not None]
        lines.append(f"- {name}: {len(rows)} run(s)"
                     + (f", speed x{statistics.median(speed):.2f}" if speed else "")
                     + (f", accuracy {statistics.median(acc):+.3f}" if acc else ""))
    return "Measured on this machine for this model (the workspace):\n" + "\n".join(lines)


def damage(domain: ExperimentDomain, workspace: Workspace, model_hash: str, method: str) -> str:
    """What prunes of ``method`` did to this model so far (this run, and earlier runs in the workspace): accuracy
    and perplexity against the base measurement, by recovery and its steps, with the minutes each took."""
    base = (domain.records[0].get("metrics") or {}) if domain.records else {}
    rows: dict[str, list[dict[str, Any]]] = {}
    seen: set[str] = set()
    for r in [*domain.records[1:], *workspace.experiments(model_hash)]:
        exp = r.get("experiment") or {}
        prune = exp.get("prune") or {}
        if prune.get("method") != method or r.get("state", "done") != "done":
            continue
        key = json.dumps(exp, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        recover = exp.get("recover") or {}
        name = f"{recover.get('method', 'none')}" + (f" {recover.get('steps')} steps" if recover else "")
        rows.setdefault(name, []).append(r)
    if not rows or not base:
        return f"no {method} prune measured on this model yet"
    lines = [f"{method} prunes measured on this model (base accuracy {fmt(base.get('accuracy'))}, perplexity "
             f"{fmt(base.get('perplexity'))}):"]
    for name, group in sorted(rows.items()):
        metrics = [g.get("metrics") or {} for g in group]
        acc = [m["accuracy"] for m in metrics if m.get("accuracy") is not None]
        ppl = [m["perplexity"] for m in metrics if m.get("perplexity") is not None]
        secs = [float(g["seconds"]) for g in group if isinstance(g.get("seconds"), (int, float))]
        lines.append(f"- recovery {name}: {len(group)} run(s)"
                     + (f", accuracy {statistics.median(acc):.3f}" if acc else "")
                     + (f", perplexity {statistics.median(ppl):.4g}" if ppl else "")
                     + (f", {statistics.median(secs) / 60:.1f} min each" if secs else ""))
    return "\n".join(lines)


RECOVERY_SYSTEM = ("You are the recovery sub-agent of a model compression search. Pruning damages a model; a short "
                   "training run (lora: low-rank adapters on the pruned model; distill: the base model teaches it) "
                   "wins part of the damage back at a cost in minutes. Given the measured damage, choose the "
                   "recovery and its steps. Answer with the answer tool.")


def recovery(domain: ExperimentDomain, workspace: Workspace, model_hash: str, model: AgentModel,
             changes: dict[str, Any], on_event: Callable[..., None] | None = None) -> str:
    """The recovery sub-agent's advice for prune ``changes``: the recovery it chose (validated against the space)
    and the settings to run with it."""
    prune = changes.get("prune", "none")
    if prune == "none":
        return "no prune in these settings: nothing to recover"
    choices = domain.space.choices
    schema = {"type": "object", "properties": {
        "recover": {"type": "string", "enum": list(choices["recover"])},
        "recover_steps": {"type": "integer", "enum": list(choices["recover_steps"])},
        "reason": {"type": "string", "maxLength": 120, "pattern": "^[ !#-\\[\\]-~]{0,120}$"}},
        "required": ["recover", "recover_steps", "reason"], "additionalProperties": False}
    agent = SubAgent("recovery", RECOVERY_SYSTEM, schema, model, on_event=on_event)
    facts = (f"prune settings: {json.dumps(changes, sort_keys=True)}\n"
             f"{damage(domain, workspace, model_hash, str(prune))}")
    answer, problem = agent.ask(facts)
    if answer is None:
        return f"the recovery sub-agent gave no answer ({problem}); without advice, lora 50 steps is the usual"
    settings = {**changes, "recover": answer["recover"], "recover_steps": answer["recover_steps"]}
    return (f"recovery sub-agent: {answer['recover']}, {answer['recover_steps']} steps ({answer.get('reason', '')}). "
            f"To run it: try_experiment with changes {json.dumps(settings, sort_keys=True)}")


def compress_kit(domain_goal: str, base_metrics: Callable[[], dict[str, Any]], workspace: Workspace,
                 model_hash: str, on_event: Callable[..., None] | None = None) -> AgentKit:
    """The agent's kit for compress; ``base_metrics()``: the base model's measurement (taken before the agent's
    first step)."""
    measured = measured_techniques(workspace, model_hash)

    def base_line() -> str:
        metrics = base_metrics()
        return ", ".join(f"{k} {fmt(metrics.get(k))}" for k in ("perplexity", "accuracy", "decode_tps", "size_mb"))

    def tools(ctx: PlanContext, model: AgentModel) -> list[Tool]:
        domain = ctx.domain
        assert isinstance(domain, ExperimentDomain)
        view = ExperimentView(domain)
        settings = view.changes_schema()
        return [
            Tool("recovery", "ask the recovery sub-agent which recovery (none, lora, distill) and how many steps "
                 "suit these prune settings, given the damage measured so far",
                 {"type": "object", "properties": {"changes": settings}, "required": ["changes"],
                  "additionalProperties": False},
                 lambda args: recovery(domain, workspace, model_hash, model, args.get("changes") or {},
                                       on_event)),
            Tool("measure_base", "the base model's measured figures", {"type": "object", "properties": {}},
                 lambda args: f"base model: {base_line()}"),
            Tool("pareto_front", "the feasible experiments no other beats on every objective",
                 {"type": "object", "properties": {}},
                 lambda args: "\n".join(view.front()) or "no feasible experiment yet"),
            Tool("workspace", "what each technique did to this model in earlier runs on this machine",
                 {"type": "object", "properties": {}}, lambda args: measured or "no earlier runs of this model"),
        ]

    return AgentKit(what=f"a model compression search; the goal: {domain_goal}",
                    facts=lambda: "\n".join(x for x in (f"base model: {base_line()}", TECHNIQUES, measured) if x),
                    tools=tools, view=lambda domain: ExperimentView(domain),
                    actions=("run_experiment", "try_experiment"),
                    knowledge=Path(workspace.root) / "agent_knowledge.json", signature=model_hash[:16])


__all__ = ["ExperimentView", "compress_kit", "measured_techniques", "Experiment"]
