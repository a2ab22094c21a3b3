"""Planners propose the next trial's parameters: Optuna's TPE or random sampling, or an LLM shown TPE's candidate.

Published comparisons (e.g. LLAMBO, "Large Language Models to Enhance Bayesian Optimization", ICLR 2024) find LLM
planners alone lose track of the search state; the LLM planner here therefore sees the optimizer's next suggestion
and may take, adapt or reject it. Every plan is validated against the search space and the command's own constraints;
an invalid plan is re-asked with the errors, and still-invalid plans fall back to TPE for that iteration.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from agentlab.core.errors import LLMError
from agentlab.core.search.records import TrialRecord
from agentlab.core.search.space import SearchSpace

if TYPE_CHECKING:
    from agentlab.core.llm.router import Router

log = logging.getLogger(__name__)
MAX_RESAMPLES = 30


@dataclass
class Proposal:
    params: dict[str, Any]
    changes: dict[str, Any]
    planner: str
    reasoning: str = ""
    expected_effect: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class PlanContext:
    """What a planner may look at. ``candidate(kind)`` samples Optuna's next suggestion without committing it."""

    space: SearchSpace
    base_params: dict[str, Any]
    incumbent: dict[str, Any]
    records: list[TrialRecord]
    best: TrialRecord | None
    budget_left: int
    metric: str
    check: Callable[[dict[str, Any]], list[str]]
    candidate: Callable[..., dict[str, Any]]  # (kind, attempt, infeasible draws) -> params
    tried: set[str] = field(default_factory=set)


def params_key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def diff(params: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if reference.get(k) != v}


class OptunaPlanner:
    """TPE or random sampling; draws that break a constraint (e.g. n_heads not dividing d_model) are redrawn."""

    def __init__(self, kind: str):
        if kind not in ("tpe", "random"):
            raise ValueError(f"unknown optuna planner {kind!r}")
        self.name = kind

    def propose(self, ctx: PlanContext) -> Proposal:
        infeasible: list[dict[str, Any]] = []
        for attempt in range(MAX_RESAMPLES):
            params = ctx.candidate(self.name, attempt, infeasible)
            if ctx.check(params):
                infeasible.append(params)
            elif params_key(params) not in ctx.tried:
                note = [f"{len(infeasible)} draws broke constraints and were redrawn"] if infeasible else []
                return Proposal(params, diff(params, ctx.incumbent), self.name, notes=note)
        raise LLMError(f"{self.name}: no valid, untried parameters in {MAX_RESAMPLES} draws", "invalid_output",
                       hint="widen the search space or relax its constraints")


class Plan(BaseModel):
    """The typed plan an LLM planner must return."""

    reasoning: str = Field(description="why these changes, given the history")
    changes: dict[str, Any] = Field(description="dotted search-space keys -> new values, relative to the incumbent")
    expected_effect: str = Field("", description="what should happen to the metric")


SYSTEM_PROMPT = (
    "You are the planner of a hyperparameter and architecture search. Each turn you propose the next trial as changes "
    "to the incumbent (best accepted) configuration. Only use keys of the search space, respect every bound and "
    "choice, and do not repeat a configuration that was already tried. The optimizer's own suggestion is given as a "
    "candidate: take it, adapt it, or ignore it. Answer with JSON only: "
    '{"reasoning": "...", "changes": {"key": value}, "expected_effect": "..."}.'
)


class LLMPlanner:
    """Plans through the router's planner route; invalid plans are re-asked, then TPE takes over for the iteration."""

    name = "llm"

    def __init__(self, router: Router, route: str = "planner", retries: int = 2, history: int = 5,
                 fallback: OptunaPlanner | None = None):
        self.router, self.route, self.retries, self.history = router, route, retries, history
        self.fallback = fallback or OptunaPlanner("tpe")

    def _prompt(self, ctx: PlanContext, candidate: dict[str, Any]) -> str:
        best = ctx.best
        payload = {
            "metric": f"{ctx.metric} (lower is better)",
            "base_config": ctx.base_params,
            "incumbent": ctx.incumbent,
            "search_space": ctx.space.describe(),
            "best_run": best.summary() | {"params": best.params} if best else None,
            "recent_runs": [r.summary() for r in ctx.records[-self.history:]],
            "budget_left": ctx.budget_left,
            "optimizer_candidate": diff(candidate, ctx.incumbent),
        }
        return "State of the search:\n" + json.dumps(payload, indent=1, default=str)

    def _check(self, ctx: PlanContext, plan: Plan) -> tuple[dict[str, Any], list[str]]:
        changes, errors = ctx.space.validate(plan.changes)
        params = {**ctx.incumbent, **changes}
        if not errors:
            errors += ctx.check(params)
        if not errors and not changes:
            errors.append("no change proposed: change at least one key")
        if not errors and params_key(params) in ctx.tried:
            errors.append("this exact configuration was already tried: propose a different one")
        return params, errors

    def propose(self, ctx: PlanContext) -> Proposal:
        candidate = ctx.candidate("tpe", 0)
        messages = [{"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": self._prompt(ctx, candidate)}]
        notes: list[str] = []
        for attempt in range(self.retries + 1):
            try:
                result = self.router.structured_sync(messages, Plan, route=self.route)
            except LLMError as exc:
                notes.append(f"planner LLM failed: {exc.kind}: {exc.message}")
                break
            plan: Plan = result.value
            params, errors = self._check(ctx, plan)
            if not errors:
                return Proposal(params, diff(params, ctx.incumbent), "llm", plan.reasoning, plan.expected_effect,
                                notes)
            notes.append(f"plan {attempt + 1} rejected: " + "; ".join(errors))
            messages += [{"role": "assistant", "content": plan.model_dump_json()},
                         {"role": "user", "content": "Your plan was rejected: " + "; ".join(errors)
                          + ". Propose a corrected plan as JSON only."}]
        proposal = self.fallback.propose(ctx)
        proposal.planner = "tpe (llm fallback)"
        proposal.notes = notes + ["no valid LLM plan: this iteration uses tpe"] + proposal.notes
        log.warning("LLM planner gave no valid plan (%s); using tpe for this iteration", notes[-1] if notes else "")
        return proposal
