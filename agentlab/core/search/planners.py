"""Planners propose the next trial's parameters: Optuna's TPE or random sampling, or an LLM shown TPE's candidate.

Published comparisons (e.g. LLAMBO, "Large Language Models to Enhance Bayesian Optimization", ICLR 2024) find LLM
planners alone lose track of the search state; the LLM planner here therefore sees the optimizer's next suggestion
and may take, adapt or reject it (each plan records which: ``Proposal.origin``). Every plan is validated against the
search space and the command's own constraints; an invalid plan is re-asked with the errors, and still-invalid plans
fall back to TPE for that iteration. Prompts and the plan's JSON schema are in ``prompts``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from agentlab.core.errors import LLMError
from agentlab.core.search.prompts import (
    REASONING_CHARS,
    PlanReply,
    compact_messages,
    format_changes,
    plan_model,
    rich_messages,
)
from agentlab.core.search.records import LLM_FALLBACK, TrialRecord
from agentlab.core.search.space import SearchSpace, same_value

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
    origin: str = ""  # LLM plans: candidate | partial | own (see ``origin``)
    suggested: dict[str, Any] | None = None  # LLM plans: the optimizer's changes shown to the model


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
    direction: str = "minimize"  # of ``metric``
    summary_metrics: tuple[str, ...] = ()  # the trial metrics besides ``metric`` an LLM planner is shown


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


PromptStyle = Literal["compact", "rich"]


def origin(changes: dict[str, Any], suggested: dict[str, Any] | None) -> str:
    """How a plan relates to the optimizer's suggestion: ``candidate`` (took it as it was), ``partial`` (took some of
    its changes), ``own`` (none of them)."""
    if not suggested:
        return "own"
    if changes.keys() == suggested.keys() and all(same_value(v, suggested[k]) for k, v in changes.items()):
        return "candidate"
    return "partial" if any(k in suggested and same_value(v, suggested[k]) for k, v in changes.items()) else "own"


def _without(values: dict[str, list[Any]], changes: dict[str, Any]) -> dict[str, list[Any]]:
    """``values`` less each value of ``changes`` (keys left with no value dropped)."""
    out = {k: [v for v in vs if not (k in changes and same_value(v, changes[k]))] for k, vs in values.items()}
    return {k: vs for k, vs in out.items() if vs}


def _why(exc: LLMError) -> str:
    """An LLM failure in a line: a failed route's message names only the outcomes, so add the last attempt's reason
    (a reply cut at max_tokens, a timeout, ...)."""
    attempts = getattr(exc, "attempts", None)
    if attempts and attempts[-1][2] and attempts[-1][2] not in exc.message:
        return f"{exc.message}: {attempts[-1][2]}"
    return exc.message


class LLMPlanner:
    """Plans through the router's planner route, shown TPE's next proposal as a suggestion (a hybrid: the LLM may
    take, adapt or ignore it). The answer follows a JSON schema derived from the space (``prompts.plan_model``), so
    grammar-constrained backends can only produce plans inside it. Invalid plans are re-asked with the errors; when
    none is valid, TPE's proposal runs for the iteration."""

    name = "llm"

    def __init__(self, router: Router, route: str = "planner", retries: int = 2, history: int = 5,
                 fallback: OptunaPlanner | None = None, prompt: PromptStyle = "compact",
                 reasoning_chars: int = REASONING_CHARS):
        self.router, self.route, self.retries, self.history = router, route, retries, history
        self.fallback = fallback or OptunaPlanner("tpe")
        self.prompt, self.reasoning_chars = prompt, reasoning_chars

    def _check(self, ctx: PlanContext, plan: PlanReply) -> tuple[dict[str, Any], list[str]]:
        changes, errors = ctx.space.validate(plan.changes)
        # A conditional space: the keys active after the change (a family switch brings its keys, at their base
        # values unless the plan sets them, and drops the old family's).
        params = ctx.space.complete({**ctx.incumbent, **changes})
        errors += ctx.space.inactive(changes, params)
        if not errors:
            errors += ctx.check(params)
        if not errors and not diff(params, ctx.incumbent):
            errors.append("no change proposed: change at least one key")
        if not errors and params_key(params) in ctx.tried:
            errors.append("this exact configuration was already tried: propose a different one")
        return params, errors

    def _suggestion(self, ctx: PlanContext) -> Proposal | None:
        """TPE's proposal for this iteration (constraints met, untried), or None when it has none."""
        try:
            return self.fallback.propose(ctx)
        except LLMError as exc:
            log.info("no optimizer suggestion for the LLM planner: %s", exc.message)
            return None

    def propose(self, ctx: PlanContext) -> Proposal:
        suggestion = self._suggestion(ctx)
        shown = ctx.space.rounded(suggestion.params) if suggestion else None
        suggested = diff(shown, ctx.incumbent) if shown else None
        values = ctx.space.offered(ctx.incumbent, [shown] if shown else [])
        schema = plan_model(values, self.reasoning_chars)
        messages = (rich_messages(ctx, suggested, self.history) if self.prompt == "rich"
                    else compact_messages(ctx, values, suggested, self.history, self.reasoning_chars))
        notes: list[str] = []
        for attempt in range(self.retries + 1):
            try:
                result = self.router.structured_sync(messages, schema, route=self.route,
                                                     show_schema=self.prompt == "rich")
            except LLMError as exc:
                notes.append(f"planner LLM failed: {exc.kind}: {_why(exc)}")
                break
            plan = result.value
            params, errors = self._check(ctx, plan)
            if not errors:
                changes = diff(params, ctx.incumbent)
                return Proposal(params, changes, "llm", plan.reasoning, notes=notes, origin=origin(changes, suggested),
                                suggested=suggested)
            notes.append(f"plan {attempt + 1} rejected: " + "; ".join(errors))
            if params_key(params) in ctx.tried:
                # A small model asked again tends to repeat itself word for word: the re-ask's schema no longer
                # offers the values of the repeated plan, so its answer must differ.
                values = _without(values, diff(params, ctx.incumbent))
                schema = plan_model(values, self.reasoning_chars)
            # Told only "rejected", a small model tends to answer the same again: name the way out that always works.
            hint = (f" (the optimizer's suggestion is still untried: {format_changes(suggested)})" if suggested
                    and params_key({**ctx.incumbent, **suggested}) not in ctx.tried else "")
            messages += [{"role": "assistant", "content": plan.model_dump_json()},
                         {"role": "user", "content": "Your plan was rejected: " + "; ".join(errors)
                          + f". Propose a corrected plan as JSON only{hint}."}]
        proposal = suggestion or self.fallback.propose(ctx)
        proposal.planner = LLM_FALLBACK
        proposal.notes = notes + ["no valid LLM plan: this iteration uses tpe"] + proposal.notes
        log.warning("LLM planner gave no valid plan (%s); using tpe for this iteration", notes[-1] if notes else "")
        return proposal
