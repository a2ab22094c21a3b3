"""compress's search as the planners of ``core.search`` see it (``ExperimentDomain``): ``random``, ``nsga2`` /
``tpe`` (Optuna samplers kept for the search, asked on a mirror of the run's study) and ``llm`` (the ``planner``
route choosing among K NSGA-II proposals, its picks other than NSGA-II's own bounded by ``llm_share``). An
experiment already in the run, or in a study it shares, is never proposed again. See
docs/commands/compress.md#planners.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from agentlab.compress.config import Experiment
from agentlab.compress.objective import Goal
from agentlab.compress.report import base_line, figures_line
from agentlab.compress.scoring import objective_values
from agentlab.compress.space import Space, experiment_key, to_experiment, to_params
from agentlab.core.config import StrictModel
from agentlab.core.errors import LLMError
from agentlab.core.search import share as S
from agentlab.core.search.pareto import dominated_counts, hypervolume
from agentlab.core.search.planners import (
    ChoiceRequest,
    Chooser,
    NoProposal,
    PlanContext,
    Proposal,
    Row,
    SearchResults,
    params_key,
)
from agentlab.core.search.prompts import ChoiceWording, choice_messages, good_trials_summary
from agentlab.core.search.records import A_OUTCOME, A_PLAN
from agentlab.core.search.study import KeptSampler, make_sampler

TRIES = 300  # draws before a sampler gives way to a random untried experiment (and before random gives up)


@dataclass
class ExperimentDomain:
    """compress's search as the planners see it (``core.search.planners.Domain``): the experiments of this run so
    far (``records``, the base model first), the study's trials (this run's, and those of runs sharing it), the
    ``iteration`` about to be planned. A candidate's params are its point of the space (``to_params``);
    ``experiment(params)`` is the experiment they stand for (the LLM's own one exactly as it gave it)."""

    goal: Goal
    space: Space
    seed: int
    iteration: int
    records: list[dict[str, Any]]  # finished records of this run, the base model first
    trials: list[Any]  # the study's trials: one per finished experiment of this run (and of runs sharing the study)
    notes: str = ""
    budget: int = 8  # experiments of the search (NSGA-II's population, the LLM's share)
    experiments: dict[str, Experiment] = field(default_factory=dict)  # params_key -> the experiment proposed
    samplers: dict[str, KeptSampler] | None = None  # the search's samplers, kept across experiments (None: new ones)

    @property
    def tried(self) -> set[str]:
        keys = {experiment_key(_experiment(r)) for r in self.records}
        # every experiment of the study (other workers' running ones, other runs' sharing it), but a claim given
        # back unrun (another worker's budget slot, Ctrl-C) is no tried experiment
        return keys | {key for t in self.trials if (key := t.user_attrs.get(A_PLAN, {}).get("extra", {}).get("key"))
                       and t.user_attrs.get(A_OUTCOME, {}).get("counted", True)}

    def context(self) -> PlanContext:
        """The planner's context for this iteration: the experiments left (this one included)."""
        return PlanContext(self, budget_left=self.budget - self.iteration + 1, seed=self.seed)

    def experiment(self, params: dict[str, Any]) -> Experiment:
        exp = self.experiments.get(params_key(params)) or to_experiment(params)
        assert exp is not None, "a proposal's params stand for an experiment"
        return exp

    def _params(self, exp: Experiment) -> dict[str, Any]:
        """``exp`` as the space's params, remembered so the loop's trial of them runs this experiment."""
        params = to_params(exp, self.space)
        self.experiments[params_key(params)] = exp
        return params

    def _proposal(self, exp: Experiment, kind: str, extra: dict[str, Any] | None = None) -> Proposal:
        return Proposal(self._params(exp), {}, kind, extra=extra or {})

    def draw(self, kind: str, k: int) -> list[Proposal]:
        if kind == "random":
            return [self._random()]
        return optuna_candidates(self, kind, k)

    def _random(self) -> Proposal:
        for exp in self.untried(random.Random(self.seed * 100_003 + self.iteration), self.tried):
            return self._proposal(exp, "random")
        raise NoProposal("random: no untried experiment found in the space")

    def untried(self, rng: random.Random, tried: set[str]) -> Iterator[Experiment]:
        """Random experiments not in ``tried`` (each added to it as it is drawn), ``TRIES`` draws at most."""
        for _ in range(TRIES):
            exp = to_experiment(self.space.sample(rng))
            if exp is not None and (key := experiment_key(exp)) not in tried:
                tried.add(key)
                yield exp

    def changes(self, params: dict[str, Any]) -> dict[str, Any]:
        return {}

    def lead(self, changes: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        """The experiment of ``changes`` (settings of the space; the others at their first choice), or None and why
        not: a setting or value the space lacks, no experiment, one run already."""
        exp, wrong = self.space.lead(changes)
        if exp is None:
            return None, wrong
        if experiment_key(exp) in self.tried:
            return None, f"{exp.label()} was run already: change something else"
        return self._params(exp), ""

    def steps(self, planner: str) -> list[S.Step]:
        return front_steps(self.goal, self.records, planner)

    def warmup(self) -> bool:
        return self.iteration - 1 < population_size(self.budget) // 2  # the first half of NSGA-II's random generation

    def request(self, candidates: list[dict[str, Any]], budget_left: int, history: int) -> ChoiceRequest:
        rows = [(to_params(exp, self.space), _points(self.goal, [r])[0])
                for r in self.records[1:] if r.get("state") == "done" and (exp := _experiment(r)) is not None]
        return ChoiceRequest(
            chooser_messages(self, [self.experiment(c) for c in candidates], budget_left, history), candidates,
            [(params, values) for params, values in rows if None not in values],  # type: ignore
            [o.direction for o in self.goal.objectives], lambda params: self.space.distributions(),
            seed=self.seed * 7919 + self.iteration)

    def own(self, chooser: Chooser, candidates: list[dict[str, Any]], history: int) -> tuple[dict[str, Any] | None,
                                                                                             str]:
        """The LLM's own experiment (opt-in), or None and why not."""
        if not hasattr(chooser, "structured"):
            return None, ""
        try:
            plan = chooser.structured(llm_messages(self), LLMPlan, show_schema=True)
        except LLMError as exc:
            return None, f"no own candidate: {exc.kind}: {exc.message}"
        exp = plan.experiment
        taken = self.tried | {experiment_key(self.experiment(c)) for c in candidates}
        if experiment_key(exp) in taken:
            return None, f"own candidate dropped: {exp.label()} is a candidate or was tried"
        if exp.quantize is not None and exp.quantize.method not in self.space.choices["quantize"]:
            return None, f"own candidate dropped: {exp.quantize.method} cannot run here"
        if params_key(to_params(exp, self.space)) in {params_key(c) for c in candidates}:
            return None, f"own candidate dropped: {exp.label()} is a candidate's point of the space"
        return self._params(exp), ""


def notes_tail(notes: str, limit: int) -> str:
    """The newest notes within ``limit`` characters, whole lines only: a cut at ``-limit`` began mid-word ("ity 1,217,
    size 0.155 MB"), a fragment the planner model read as a note."""
    tail = notes[-limit:]
    if len(notes) > limit and "\n" in tail:
        tail = tail.split("\n", 1)[1]
    return tail.strip()


def _experiment(record: dict[str, Any]) -> Experiment | None:
    data = record.get("experiment")
    return Experiment.model_validate(data) if data is not None else None


# --------------------------------------------------------------------------- Optuna


def population_size(budget: int) -> int:
    """NSGA-II's population for a search of ``budget`` experiments: half of it, 4 to 10, so it breeds at least once."""
    return max(4, min(10, budget // 2))


def optuna_candidates(ctx: ExperimentDomain, kind: str, k: int) -> list[Proposal]:
    """Up to ``k`` distinct untried experiments: the first is exactly what the ``kind`` sampler (``nsga2``,
    ``tpe``) alone runs (a random untried one when ``TRIES`` of its draws repeat experiments), the others a second
    sampler's of the same kind on the same trials (``KeptSampler``'s ``explore``: the first sampler's draws stay its
    own), then random draws when it keeps repeating itself. The sampler is the search's (``ctx.samplers``, kept
    across experiments; a new one when the domain has none), its mirror brought up to date with the study's finished
    trials first."""
    samplers = ctx.samplers if ctx.samplers is not None else {}
    sampler = samplers.get(kind)
    if sampler is None:
        # a population fixed by the budget, so NSGA-II breeds within the search (one that grew stayed random)
        population = population_size(ctx.budget)
        sampler = samplers[kind] = KeptSampler(
            lambda seed: make_sampler(kind, seed, startup=4, population=population),
            [o.direction for o in ctx.goal.objectives], ctx.seed * 7919 + ctx.iteration)
    dists, tried = ctx.space.distributions(), set(ctx.tried)
    # a study shared with another space: skip those; workers on a server: their running claims too
    sampler.sync([t for t in ctx.trials if t.distributions == dists and t.state.is_finished()])
    out: list[Proposal] = []

    def judge(params: dict[str, Any]) -> str | None:  # invalid or repeated: it moves on
        exp = to_experiment(params)
        return None if exp is not None and experiment_key(exp) not in tried else "skip"

    for asked in range(TRIES):
        params, judged, attrs = sampler.draw(dists, judge, explore=bool(out))
        if judged is None:
            exp = to_experiment(params)
            assert exp is not None
            generation = {k: v for k, v in attrs.items() if k.endswith(":generation")}
            out.append(ctx._proposal(exp, kind, {"optuna": generation} if generation else {}))
            tried.add(experiment_key(exp))
            if len(out) == k:
                return out
        elif out and asked > 3 * k:
            break
    fill = ctx.untried(random.Random(ctx.seed * 100_003 + ctx.iteration + 7), tried)
    if not out:  # the sampler keeps proposing experiments run already (TPE settles on a few): a random untried one
        exp = next(fill, None)
        if exp is None:
            raise NoProposal(f"{kind}: no untried experiment found in the space")
        out.append(ctx._proposal(exp, kind))
        out[0].notes.append(f"{kind} drew only experiments run already (or none) in {TRIES} draws: "
                            "a random untried one")
    while len(out) < k and (exp := next(fill, None)) is not None:
        out.append(ctx._proposal(exp, kind, dict(out[0].extra)))
    return out


# --------------------------------------------------------------------------- LLM


class LLMPlan(StrictModel):
    reasoning: str = Field(max_length=400, description="why this experiment, in one or two sentences")
    experiment: Experiment = Field(description="the experiment to run next")


def llm_messages(ctx: ExperimentDomain) -> list[dict[str, str]]:
    base = ctx.records[0].get("metrics", {}) if ctx.records else {}
    lines = [f"- {r['label']}: {figures_line(r.get('derived', {}))}"
             + ("" if r.get("feasible") else " (breaks a constraint)") for r in ctx.records[1:]
             if r.get("state") == "done"]
    system = ("You plan model compression experiments on a causal language model. Reply with JSON only: one "
              "experiment (optional prune, recover after prune, quantize) that was not tried yet.")
    user = "\n".join([
        f"Goal: {ctx.goal.describe()}",
        "Choices: " + "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in ctx.space.choices.items()),
        f"Base model: {base_line(base)}",
        "Tried so far:", *(lines or ["- nothing yet"]),
        *(["Notes from earlier runs:", notes_tail(ctx.notes, 2000)] if ctx.notes.strip() else []),
        "Propose the next experiment."])
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _points(goal: Goal, records: list[dict[str, Any]]) -> list[list[float | None]]:
    return [objective_values(goal, r.get("derived") or {}) for r in records]


def _usable(record: dict[str, Any]) -> bool:
    return record.get("state", "done") == "done" and bool(record.get("feasible"))


def _hypervolume(goal: Goal, records: list[dict[str, Any]], reference: list[float]) -> float:
    """The hypervolume of ``records`` against ``reference`` (one objective: how far the best lies beyond it)."""
    return hypervolume(_points(goal, records), [o.direction for o in goal.objectives], reference)


def nadir(goal: Goal, records: list[dict[str, Any]]) -> list[float] | None:
    """The worst value of each objective over the feasible experiments, the base model included: the reference
    point of the search's hypervolume (None when some objective has no value)."""
    points = _points(goal, [r for r in records if _usable(r)])
    out: list[float] = []
    for i, o in enumerate(goal.objectives):
        values = [float(v) for p in points if (v := p[i]) is not None and math.isfinite(v)]
        if not values:
            return None
        out.append(min(values) if o.direction == "maximize" else max(values))
    return out


def front_gains(goal: Goal, records: list[dict[str, Any]]) -> list[float]:
    """Per record, how much it grew the hypervolume of the feasible experiments before it (against ``nadir``; the
    first feasible one only starts it)."""
    reference = nadir(goal, records)
    gains: list[float] = []
    kept: list[dict[str, Any]] = []
    volume = 0.0
    for r in records:
        gain = 0.0
        if reference is not None and _usable(r):
            kept.append(r)
            before, volume = volume, _hypervolume(goal, kept, reference)
            gain = volume - before if len(kept) > 1 else 0.0
        gains.append(gain)
    return gains


def front_steps(goal: Goal, records: list[dict[str, Any]], planner: str = "llm") -> list[S.Step]:
    """The ``planner``'s experiments as bandit steps: improved when the experiment is feasible and grows the
    hypervolume of the feasible experiments before it (``front_gains``), ``gain`` by how much."""
    return [S.Step(r.get("origin") or "classical", gain > 1e-12, max(gain, 0.0))
            for r, gain in zip(records, front_gains(goal, records), strict=True)
            if r.get("planner") == planner and not r.get("warmup")]


def experiment_results(goal: Goal, records: list[dict[str, Any]]) -> SearchResults:
    """compress's finished search as its planner reports on it (``Planner.report``): the feasible hypervolume with
    and without what a planner chose; the llm planner's counterfactual is the hypervolume without its picks."""
    reference = nadir(goal, records)

    def score(keep: Callable[[str, Any, str], bool]) -> float | None:
        """The hypervolume of the feasible experiments that ``keep(origin, choice, planner)`` keeps, against the
        nadir of all of them (so leaving experiments out never moves the reference)."""
        if reference is None:
            return None
        return _hypervolume(goal, [r for r in records if _usable(r) and keep(
            str(r.get("origin", "")), r.get("choice"), str(r.get("planner", "")))], reference)

    def without_llm() -> dict[str, Any] | None:
        if reference is None:
            return None
        return {"hypervolume": score(lambda *_: True),
                "hypervolume_without_llm_picks": score(lambda origin, *_: origin not in S.LLM_ORIGINS),
                "reference": reference}

    rows = [Row(str(r.get("origin", "")), r.get("choice"), str(r.get("planner", "")), bool(r.get("warmup")))
            for r in records[1:]]
    return SearchResults(rows, score, lambda name: front_steps(goal, records, name), without_llm,
                         higher_is_better=True, what="hypervolume")


def _dominated_by(goal: Goal, records: list[dict[str, Any]]) -> list[int]:
    """For each record, how many feasible records dominate it (infeasible ones rank after every feasible one)."""
    usable = [_usable(r) for r in records]
    counts = dominated_counts(_points(goal, records), [o.direction for o in goal.objectives], usable)
    return [n + (0 if ok else len(records)) for n, ok in zip(counts, usable, strict=True)]


def least_dominated(goal: Goal, records: list[dict[str, Any]]) -> list[tuple[dict[str, Any], int]]:
    """``records`` with ``_dominated_by``'s counts (0: on the feasible front), least dominated first, then by index."""
    return sorted(zip(records, _dominated_by(goal, records), strict=True), key=lambda pair: (pair[1], pair[0]["index"]))


def chooser_messages(ctx: ExperimentDomain, candidates: list[Experiment], budget_left: int,
                     limit: int = 10) -> list[dict[str, str]]:
    """The chooser prompt for compress: the goal in words, the base model, the experiments so far (least
    dominated first, ``limit`` at most), what the good ones share, the candidates as experiments."""
    base = ctx.records[0].get("metrics", {}) if ctx.records else {}
    done = [r for r in ctx.records[1:] if r.get("state") == "done" and _experiment(r) is not None]
    ranked = least_dominated(ctx.goal, done)
    history = [f"{r['label']}: {figures_line(r.get('derived', {}))}"
               + (" (on the front)" if rank == 0 else "" if r.get("feasible") else " (breaks a constraint)")
               for r, rank in ranked][:limit]
    rows = [(to_params(_experiment(r), ctx.space), float(rank)) for r, rank in ranked]  # type: ignore[arg-type]
    summary = good_trials_summary(rows, list(ctx.space.choices))
    notes = ["Notes from earlier runs:", notes_tail(ctx.notes, 1000)] if ctx.notes.strip() else []
    return choice_messages(
        goal=ctx.goal.describe(), budget_left=budget_left, incumbent=base_line(base), history=history, summary=summary,
        notes=notes, candidates=[c.label() for c in candidates],
        wording=ChoiceWording(aim="advance the goal", incumbent_label="Base model",
                              history_label="Experiments so far, least dominated first",
                              candidates_label="Candidate experiments"))
