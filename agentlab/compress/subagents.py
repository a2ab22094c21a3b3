"""compress's recovery sub-agents ``lora`` and ``distill`` (``ToolSubAgent``s, reached through the main agent's
``task`` tool), for the prune the main agent hands over: ``estimate`` and ``compare`` read what such recoveries did
to this model (this run and the workspace), ``configure`` validates the experiment, which is the answer. The
sub-agent advises; the main agent spends the budget.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from typing import Any

from agentlab.compress.planners import ExperimentDomain
from agentlab.compress.report import fmt
from agentlab.compress.workspace import Workspace
from agentlab.core.agent.runtime import AgentModel, Tool, arguments
from agentlab.core.agent.subagent import ToolSubAgent
from agentlab.core.errors import AgentlabError

METHODS = {
    "lora": "low-rank adapters trained on the calibration text after the prune, merged into the weights",
    "distill": "the base model teaches the pruned one (logit distillation on the calibration text)",
}


def system_prompt(method: str) -> str:
    return (f"You are the {method} sub-agent of a model compression search. {method}: {METHODS[method]}. It wins "
            "back part of a prune's damage at a cost in minutes. Use estimate and compare (figures measured on this "
            "model), then call configure with the steps to run. One tool call per step.")


def measured(domain: ExperimentDomain, workspace: Workspace, model_hash: str, prune: str, method: str,
             steps: int) -> dict[str, Any]:
    """Medians over the finished experiments of this run and the workspace (each once) with a ``prune`` prune and
    this recovery (``steps`` 0: none): runs, accuracy, perplexity, minutes."""
    group, seen = [], set()
    for r in [*domain.records[1:], *workspace.experiments(model_hash)]:
        exp = r.get("experiment") or {}
        key = json.dumps(exp, sort_keys=True)
        if (exp.get("prune") or {}).get("method") != prune or r.get("state", "done") != "done" or key in seen:
            continue
        seen.add(key)
        recover = exp.get("recover")
        if (steps == 0 and recover is None) or (steps and recover and recover.get("method") == method
                                                and recover.get("steps") == steps):
            group.append(r)
    metrics = [g.get("metrics") or {} for g in group]
    acc = [m["accuracy"] for m in metrics if m.get("accuracy") is not None]
    ppl = [m["perplexity"] for m in metrics if m.get("perplexity") is not None]
    secs = [float(g["seconds"]) for g in group if isinstance(g.get("seconds"), (int, float))]
    return {"runs": len(group), "accuracy": statistics.median(acc) if acc else None,
            "perplexity": statistics.median(ppl) if ppl else None,
            "minutes": statistics.median(secs) / 60 if secs else None}


def _line(what: str, m: dict[str, Any]) -> str:
    if not m["runs"]:
        return f"{what}: not measured on this model yet"
    return (f"{what}: {m['runs']} run(s), accuracy {fmt(m['accuracy'])}, perplexity {fmt(m['perplexity'])}"
            + (f", {m['minutes']:.1f} min each" if m["minutes"] is not None else ""))


def recovery_tools(method: str, domain: ExperimentDomain, workspace: Workspace, model_hash: str,
                   changes: dict[str, Any]) -> list[Tool]:
    """The ``method`` sub-agent's tools for the prune ``changes`` (see the module docstring)."""
    prune = str(changes.get("prune"))
    offered = [int(s) for s in domain.space.choices["recover_steps"]]
    base = (domain.records[0].get("metrics") or {}) if domain.records else {}

    def name(steps: int) -> str:
        return f"{prune} prune + {method} {steps} steps" if steps else f"{prune} prune without recovery"

    def estimate(args: dict[str, Any]) -> str:
        steps = int(args["steps"])
        lines = [_line(name(steps), measured(domain, workspace, model_hash, prune, method, steps)),
                 _line(name(0), measured(domain, workspace, model_hash, prune, method, 0)),
                 f"base model: accuracy {fmt(base.get('accuracy'))}, perplexity {fmt(base.get('perplexity'))}"]
        return "\n".join(lines)

    def compare(args: dict[str, Any]) -> str:
        a, b = int(args["steps_a"]), int(args["steps_b"])
        ma, mb = (measured(domain, workspace, model_hash, prune, method, s) for s in (a, b))
        lines = [_line(name(a), ma), _line(name(b), mb)]
        if ma["runs"] and mb["runs"] and ma["accuracy"] is not None and mb["accuracy"] is not None:
            lines.append(f"difference ({b} minus {a} steps): accuracy {mb['accuracy'] - ma['accuracy']:+.3f}"
                         + (f", perplexity {mb['perplexity'] - ma['perplexity']:+.4g}"
                            if ma["perplexity"] is not None and mb["perplexity"] is not None else ""))
        else:
            lines.append("no difference measured yet: one of them has not run on this model")
        return "\n".join(lines)

    def configure(args: dict[str, Any]) -> str:
        settings = {**changes, "recover": method, "recover_steps": int(args["steps"])}
        params, error = domain.lead(settings)
        if params is None:
            raise AgentlabError(f"configure: {error}")
        label = domain.experiment(params).label()
        return (f"{method} sub-agent: {label}. To run it: try_experiment with changes "
                f"{json.dumps(settings, sort_keys=True)}")

    steps_prop = {"type": "integer", "enum": offered}
    with_none = {"type": "integer", "enum": [0, *offered]}
    return [
        Tool("estimate", f"what {method} recovery with these steps did to this model so far, against no recovery",
             arguments({"steps": steps_prop}), estimate),
        Tool("compare", "two step counts side by side (0: no recovery), from the measurements",
             arguments({"steps_a": with_none, "steps_b": with_none}), compare),
        Tool("configure", f"the experiment to run: this prune with {method} recovery of these steps (your answer)",
             arguments({"steps": steps_prop}), configure),
    ]


def task(domain: ExperimentDomain, workspace: Workspace, model_hash: str, model: AgentModel, args: dict[str, Any],
         on_event: Callable[..., None] | None = None) -> str:
    """The main agent's ``task`` tool: hand the recovery of a prune to the ``lora`` or ``distill`` sub-agent; its
    answer, or why there is none and what to do without it."""
    method = str(args.get("subagent"))
    if method not in METHODS:
        raise AgentlabError(f"task: subagent {method!r} is not one of {', '.join(METHODS)}")
    changes = dict(args.get("changes") or {})
    changes.pop("recover", None)
    changes.pop("recover_steps", None)
    if changes.get("prune", "none") == "none":
        return "no prune in these settings: nothing to recover"
    if method not in domain.space.choices.get("recover", []):
        return f"{method} recovery is not in this search's space"
    agent = ToolSubAgent(method, system_prompt(method), recovery_tools(method, domain, workspace, model_hash, changes),
                         "configure", model, on_event=on_event)
    steps = ", ".join(str(s) for s in domain.space.choices["recover_steps"])
    run = agent.ask(f"prune settings: {json.dumps(changes, sort_keys=True)}; steps offered: {steps}")
    if run.answer is None:
        return (f"the {method} sub-agent gave no answer ({run.problem}); without advice, run the prune with "
                f"{method} and the most steps offered")
    return run.answer


__all__ = ["METHODS", "measured", "recovery_tools", "system_prompt", "task"]
