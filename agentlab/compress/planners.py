"""Who proposes the next compression experiment: ``random`` (a baseline), ``nsga2`` / ``tpe`` (Optuna samplers) and
``llm`` (the ``planner`` route of --llm, with NSGA-II as its fallback).

Every planner is a pure function of the seed, the iteration and the finished experiments: the samplers ask an
in-memory copy of the run's Optuna study (``core.search.study.scratch_study``), which holds one finished trial per
finished experiment, so a resumed run proposes what the killed one would have, and a study shared through
``--storage`` lets the samplers learn from earlier runs too. An experiment already in the run (or in the shared
study) is never proposed again.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import Field

from agentlab.compress.config import Experiment
from agentlab.compress.objective import Goal
from agentlab.compress.space import Space, experiment_key, to_experiment, to_params
from agentlab.core.config import StrictModel
from agentlab.core.errors import AgentlabError

if TYPE_CHECKING:
    from agentlab.core.llm.router import Router

log = logging.getLogger(__name__)
KEY_ATTR = "agentlab:experiment"  # trial user attribute: the experiment's key (``space.experiment_key``)
TRIES = 300  # samples drawn before a planner says the space has no untried experiment left


class NoProposal(AgentlabError):
    """Every experiment the planner can reach was tried."""


@dataclass
class Context:
    goal: Goal
    space: Space
    seed: int
    iteration: int
    records: list[dict[str, Any]]  # finished records of this run, the base model first
    trials: list[Any]  # the study's trials: one per finished experiment of this run (and of runs sharing the study)
    notes: str = ""

    @property
    def tried(self) -> set[str]:
        keys = {experiment_key(_experiment(r)) for r in self.records}
        return keys | {t.user_attrs[KEY_ATTR] for t in self.trials if KEY_ATTR in t.user_attrs}


@dataclass
class Proposal:
    experiment: Experiment
    planner: str
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # kept in the record (the sampler's generation)


def _experiment(record: dict[str, Any]) -> Experiment | None:
    data = record.get("experiment")
    return Experiment.model_validate(data) if data is not None else None


def propose(kind: str, ctx: Context, router: Router | None = None) -> Proposal:
    if kind == "random":
        return propose_random(ctx)
    if kind == "llm" and router is not None:
        return propose_llm(ctx, router)
    return propose_optuna(ctx, kind if kind in ("nsga2", "tpe") else "nsga2")


def propose_random(ctx: Context) -> Proposal:
    rng = random.Random(ctx.seed * 100_003 + ctx.iteration)
    tried = ctx.tried
    for _ in range(TRIES):
        exp = to_experiment(ctx.space.sample(rng))
        if exp is not None and experiment_key(exp) not in tried:
            return Proposal(exp, "random")
    raise NoProposal("random: no untried experiment found in the space")


# --------------------------------------------------------------------------- Optuna


def record_trial(record: dict[str, Any], goal: Goal, space: Space, user_attrs: dict[str, Any] | None = None) -> Any:
    """A finished experiment as a finished trial: COMPLETE with the goal's objective values and the constraint
    violation, or FAIL when it failed."""
    from agentlab.core.search.study import finished_trial

    exp = _experiment(record)
    assert exp is not None, "the base model is no point of the space"
    values = [record.get("derived", {}).get(o.metric) for o in goal.objectives]
    ok = record.get("state") == "done" and all(v is not None for v in values)
    return finished_trial(to_params(exp, space), space.distributions(), values if ok else None,
                          violation=float(record.get("violation") or 0.0) if ok else None,
                          user_attrs={KEY_ATTR: experiment_key(exp), "label": record.get("label"),
                                      **(user_attrs or {})},
                          system_attrs=_sampler_attrs(record))


def _study(ctx: Context, kind: str) -> Any:
    from agentlab.core.search.study import make_sampler, scratch_study

    dists = ctx.space.distributions()
    history = [t for t in ctx.trials if t.distributions == dists]  # a study shared with another space: skip those
    population = max(4, min(10, len(ctx.records)))
    sampler = make_sampler("tpe" if kind == "tpe" else "nsga2", ctx.seed * 7919 + ctx.iteration, startup=4,
                           population=population)
    return scratch_study(history, [o.direction for o in ctx.goal.objectives], sampler)


def _sampler_attrs(record: dict[str, Any]) -> dict[str, Any]:
    """The sampler's own attributes of the trial that proposed ``record`` (NSGA-II's generation), without the
    constraint, which ``create_trial(constraints=...)`` sets from the record (given twice, optuna warns)."""
    return {k: v for k, v in (record.get("optuna") or {}).items() if not k.startswith("constraints")}


def propose_optuna(ctx: Context, kind: str) -> Proposal:
    from optuna.trial import TrialState

    study = _study(ctx, kind)
    dists, tried = ctx.space.distributions(), ctx.tried
    for _ in range(TRIES):
        trial = study.ask(dists)
        exp = to_experiment(trial.params)
        if exp is not None and experiment_key(exp) not in tried:
            attrs = study.get_trials(deepcopy=False)[-1].system_attrs  # a Trial has no system_attrs of its own
            generation = {k: v for k, v in attrs.items() if k.endswith(":generation")}
            return Proposal(exp, kind, extra={"optuna": generation} if generation else {})
        study.tell(trial, state=TrialState.FAIL)  # invalid or repeated: the sampler moves on
    raise NoProposal(f"{kind}: no untried experiment found in the space")


# --------------------------------------------------------------------------- LLM


class LLMPlan(StrictModel):
    reasoning: str = Field(max_length=400, description="why this experiment, in one or two sentences")
    experiment: Experiment = Field(description="the experiment to run next")


def llm_messages(ctx: Context) -> list[dict[str, str]]:
    from agentlab.compress.report import fmt

    base = ctx.records[0].get("metrics", {}) if ctx.records else {}
    lines = [f"- {r['label']}: " + ", ".join(f"{k} {fmt(v)}" for k, v in r.get("derived", {}).items()
                                             if k in ("speedup", "accuracy", "perplexity", "size", "compression"))
             + ("" if r.get("feasible") else " (breaks a constraint)") for r in ctx.records[1:]
             if r.get("state") == "done"]
    system = ("You plan model compression experiments on a causal language model. Reply with JSON only: one "
              "experiment (optional prune, recover after prune, quantize) that was not tried yet.")
    user = "\n".join([
        f"Goal: {ctx.goal.describe()}",
        "Choices: " + "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in ctx.space.choices.items()),
        "Base model: " + ", ".join(f"{k} {fmt(base.get(k))}" for k in ("perplexity", "accuracy", "decode_tps",
                                                                       "size_mb")),
        "Tried so far:", *(lines or ["- nothing yet"]),
        *(["Notes from earlier runs:", ctx.notes[-2000:]] if ctx.notes.strip() else []),
        "Propose the next experiment."])
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def propose_llm(ctx: Context, router: Router) -> Proposal:
    """The LLM's plan; NSGA-II for this iteration (with the reason in the note) when it fails or repeats."""
    why = ""
    try:
        plan = router.structured_sync(llm_messages(ctx), LLMPlan, route="planner").value
        exp = plan.experiment
        if experiment_key(exp) in ctx.tried:
            why = f"the LLM proposed an experiment already tried ({exp.label()})"
        elif exp.quantize is not None and exp.quantize.method not in ctx.space.choices["quantize"]:
            why = f"the LLM proposed {exp.quantize.method}, which cannot run here"
        else:
            return Proposal(exp, "llm", note=plan.reasoning)
    except AgentlabError as exc:
        why = f"planner LLM failed: {exc.message}"
    log.warning("%s; using nsga2 for this iteration", why)
    fallback = propose_optuna(ctx, "nsga2")
    fallback.planner, fallback.note = "llm->nsga2", why
    return fallback
