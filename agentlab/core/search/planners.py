"""Planners propose the next trial's parameters from a ``PlanContext`` whose ``Domain`` (``TrialDomain``: the search
loop's, nas; ``compress.planners.ExperimentDomain``) says how the sampler draws and what the LLM is shown: a
classical sampler alone (``OptunaPlanner``), or the LLM choosing among the sampler's K candidates, candidate 0
exactly the sampler's own, on a bounded and earned share of the trials (``ChooserPlanner``, ``share``). Why a
chooser: docs/commands/nas.md; prompts and schemas: ``prompts``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from agentlab.core.errors import AgentlabError, LLMError
from agentlab.core.search import share as S
from agentlab.core.search.kinds import KINDS
from agentlab.core.search.prompts import (
    choice_messages,
    choice_model,
    format_changes,
    good_trials_summary,
    own_messages,
    plan_model,
)
from agentlab.core.search.records import TrialRecord, best_of
from agentlab.core.search.space import SearchSpace

if TYPE_CHECKING:
    from agentlab.core.llm.router import Router

log = logging.getLogger(__name__)
MAX_RESAMPLES = 30


class NoProposal(AgentlabError):
    """Every point the planner can reach was tried: the search stops with this message as its reason."""


@dataclass
class Proposal:
    params: dict[str, Any]
    changes: dict[str, Any]
    planner: str
    reasoning: str = ""
    notes: list[str] = field(default_factory=list)
    origin: str = ""  # the llm planner's trials: classical | kept | picked | own | no answer (``share``)
    choice: int | None = None  # the llm planner's trials: the index of the candidate that ran
    candidates: int = 0  # the llm planner's trials: how many candidates there were
    warmup: bool = False  # one of the sampler's warm-up trials: outside the share and the bandit
    extra: dict[str, Any] = field(default_factory=dict)  # what the command keeps with the trial's plan (compress:
    # the experiment); under "optuna", the sampler's own attributes (NSGA-II's generation), kept as system attrs


class Domain(Protocol):
    """What a planner needs to know about one search: how its sampler draws, what counts as a better trial, what
    the LLM is shown. ``TrialDomain`` is the search loop's (nas: trials over a ``SearchSpace``, one objective);
    ``compress.planners.ExperimentDomain`` is compress's (experiments, several objectives, the Pareto front). The
    planners (``OptunaPlanner``, ``ChooserPlanner``) are the same for both."""

    def draw(self, kind: str, k: int) -> list[Proposal]:
        """Up to ``k`` distinct, valid, untried candidates of the ``kind`` sampler; candidate 0 is exactly what the
        sampler alone would run. Raises when there is none."""
        ...

    def steps(self, planner: str) -> list[S.Step]:
        """The ``planner``'s trials after the warm-up as bandit steps (``share``)."""
        ...

    def warmup(self) -> bool:
        """Whether the next trial is one of the sampler's random warm-up trials."""
        ...

    def request(self, candidates: list[dict[str, Any]], budget_left: int, history: int) -> ChoiceRequest:
        """What the chooser is shown (``history``: how many finished trials at most)."""
        ...

    def own(self, chooser: Chooser, candidates: list[dict[str, Any]], history: int) -> tuple[dict[str, Any] | None,
                                                                                             str]:
        """A candidate the LLM proposes itself (its params), or None and why not ("" when the chooser cannot)."""
        ...

    def changes(self, params: dict[str, Any]) -> dict[str, Any]:
        """What ``params`` changes against the search's best (the trial's ``changes``)."""
        ...

    def lead(self, changes: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        """``changes`` of the base config as a trial's params, or None and why not (outside the space, breaking a
        constraint, already run): a warm start's lead (``WarmStart``)."""
        ...


@dataclass
class PlanContext:
    """What a planner may look at: the search (``domain``), the trials left, and the search's seed (the LLM
    planner's bandit draws)."""

    domain: Domain
    budget_left: int
    seed: int = 0


@dataclass
class Row:
    """A counted, finished trial (nas) or experiment (compress) as a planner's report reads it."""

    origin: str  # the llm planner's and the agent's: who chose it (``share``, ``agent.AGENT_ORIGINS``)
    choice: Any  # the candidate's index, when there were candidates
    planner: str  # the planner that proposed it (``base``, ``leads``, ``naive``, ``tpe``, ``llm``, ``agent``, ...)
    warmup: bool = False  # one of the sampler's warm-up trials
    variant: str = ""  # what it ran besides its params (nas: its code version; ``TrialRecord.variant``)


@dataclass
class SearchResults:
    """A finished search as its planner reports on it (``Planner.report``), in the command's terms: its ``rows``;
    ``score(keep)``: the search's figure (nas: the best value of its metric; compress: the feasible hypervolume, the
    name in ``what``) over the rows ``keep(origin, choice, planner)`` keeps; ``steps(name)``: the ``name``
    planner's bandit steps (``share``); ``without_llm()``: the figures without the LLM chooser's picks, under the
    command's names."""

    rows: list[Row]
    score: Callable[[Callable[[str, Any, str], bool]], float | None]
    steps: Callable[[str], list[S.Step]]
    without_llm: Callable[[], dict[str, Any] | None]
    higher_is_better: bool = False
    what: str = "best"


class Planner(Protocol):
    """Proposes the next trial from what the search knows (``OptunaPlanner``, ``ChooserPlanner``,
    ``agent.AgentPlanner``; the table of planner kinds is ``kinds.KINDS``), says what it did in results.json's terms
    when the search ends (``report``: e.g. ``{"llm_contribution": ...}``, ``{"agent": ...}``, or nothing), and
    closes what it holds."""

    name: str

    def propose(self, ctx: PlanContext) -> Proposal: ...

    def report(self, results: SearchResults) -> dict[str, Any]: ...

    def close(self) -> None: ...


def trial_key(params: dict[str, Any], variant: str = "") -> str:
    """A trial's identity: its params, and its variant when it has one (``TrialRecord.variant``)."""
    return params_key(params) + (f"#{variant}" if variant else "")


def params_key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def diff(params: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if reference.get(k) != v}


class Wrapper:
    """A planner that runs some trials of its own and hands the rest to ``inner`` (``WarmStart``, nas's
    ``NaiveFirst``): the report and the closing are the wrapped planner's."""

    def __init__(self, planner: Planner):
        self.inner = planner
        self.name = getattr(planner, "name", "planner")

    def propose(self, ctx: PlanContext) -> Proposal:
        return self.inner.propose(ctx)

    def report(self, results: SearchResults) -> dict[str, Any]:
        return self.inner.report(results)

    def close(self) -> None:
        self.inner.close()


class WarmStart(Wrapper):
    """Knowledge as a warm start for any planner: right after the base config each of ``leads`` (changes of the
    base config, and where the lead comes from) runs once, in order, unless the domain refuses it (``Domain.lead``);
    then every trial is the wrapped planner's. Stateless (it reads the finished trials), so ``--resume`` and other
    workers skip what ran."""

    def __init__(self, planner: Planner, leads: list[tuple[dict[str, Any], str]]):
        super().__init__(planner)
        self.leads = leads

    def propose(self, ctx: PlanContext) -> Proposal:
        if ctx.budget_left > 0:
            for changes, why in self.leads:
                params, _ = ctx.domain.lead(changes)
                if params is not None:
                    return Proposal(params, ctx.domain.changes(params), "leads", f"warm start: {why}")
        return self.inner.propose(ctx)


class OptunaPlanner:
    """A classical sampler alone (a ``sampler`` kind of ``kinds.KINDS``): its candidate 0 runs."""

    def __init__(self, kind: str):
        if kind not in KINDS or KINDS[kind].family != "sampler":
            raise ValueError(f"unknown optuna planner {kind!r}")
        self.name = kind

    def propose(self, ctx: PlanContext) -> Proposal:
        proposal = ctx.domain.draw(self.name, 1)[0]
        proposal.planner = self.name
        return proposal

    def report(self, results: SearchResults) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- the search loop's domain


@dataclass
class TrialDomain:
    """The search loop's trials over a ``SearchSpace`` and one objective (nas). ``candidate(kind,
    judge, explore=, tries=)`` is the search's kept sampler's next point that ``judge`` passes, or None (the search
    loop's ``_candidate``)."""

    space: SearchSpace
    base_params: dict[str, Any]
    incumbent: dict[str, Any]
    records: list[TrialRecord]
    best: TrialRecord | None
    metric: str
    check: Callable[[dict[str, Any]], list[str]]
    candidate: Callable[..., dict[str, Any] | None]  # (kind, judge, explore=, tries=) -> params or None
    tried: set[str] = field(default_factory=set)
    direction: str = "minimize"  # of ``metric``
    seed: int = 0  # the search's seed (the chooser's request seed)
    startup: int = 0  # TPE's random warm-up trials
    variant: str = ""  # what the next trial runs besides its params: the incumbent's (nas: its code version)

    def sample(self, kind: str) -> Proposal:
        """The sampler's proposal; draws that break a constraint (e.g. n_heads not dividing d_model) or repeat a
        trial are redrawn, each one told to the sampler as a bad trial (``study.KeptSampler``)."""
        broken = 0

        def judge(params: dict[str, Any]) -> str | None:
            nonlocal broken
            if self.check(params):
                broken += 1
                return "infeasible"
            return "repeat" if trial_key(params, self.variant) in self.tried else None

        params = self.candidate(kind, judge, tries=MAX_RESAMPLES)
        if params is None and broken < MAX_RESAMPLES:  # some draws were trials run already: the space is used up
            raise NoProposal(f"every configuration of the search space was tried ({kind}: none untried and valid)")
        if params is None:
            raise LLMError(f"{kind}: no valid, untried parameters in {MAX_RESAMPLES} draws", "invalid_output",
                           hint="widen the search space or relax its constraints")
        note = [f"{broken} draws broke constraints and were redrawn"] if broken else []
        return Proposal(params, self.changes(params), kind, notes=note)

    def draw(self, kind: str, k: int) -> list[Proposal]:
        """Up to ``k`` distinct, valid, untried candidates. Candidate 0 is exactly ``OptunaPlanner(kind)``'s proposal
        (``sample``); the others come from a second sampler of the same kind on the same trials (``candidate(...,
        explore=True)``: the first sampler's draws stay what they would be alone), then from random draws when it
        keeps repeating itself."""
        out = [self.sample(kind)]
        seen = {params_key(out[0].params)} | self.tried

        def judge(params: dict[str, Any]) -> str | None:
            return "infeasible" if self.check(params) else "repeat" if params_key(params) in seen else None

        for _ in range(1, k):
            params = self.candidate(kind, judge, explore=True, tries=MAX_RESAMPLES // 3)
            if params is None:
                params = self.candidate("random", judge, explore=True, tries=MAX_RESAMPLES // 3)
            if params is None:
                break  # the space is nearly exhausted: fewer candidates
            out.append(Proposal(params, self.changes(params), kind))
            seen.add(params_key(params))
        return out

    def changes(self, params: dict[str, Any]) -> dict[str, Any]:
        return diff(params, self.incumbent)

    def config(self, changes: Any, base: dict[str, Any] | None = None, *, taken: Iterable[dict[str, Any]] = ()
               ) -> tuple[dict[str, Any] | None, str]:
        """``changes`` of ``base`` (default: the incumbent) as a trial's params, or None and why not: a key or value
        outside the space, a key inactive for the result, a broken constraint, no change, or the params of a trial
        tried already or of ``taken``. The one check of a lead, the LLM's own candidate and the agent's config."""
        clean, errors = self.space.validate(changes)
        if not clean and not errors:
            errors = ["changes is empty"]
        params = self.space.complete({**(self.incumbent if base is None else base), **clean})
        errors = errors or self.space.inactive(clean, params) or self.check(params)
        if not errors and trial_key(params, self.variant) in self.tried | {trial_key(p, self.variant) for p in taken}:
            errors = ["the same as a trial run already or proposed: change something else"]
        return (None, "; ".join(errors)) if errors else (params, "")

    def lead(self, changes: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        return self.config(changes, self.base_params, taken=[r.params for r in self.records
                                                             if r.state != "interrupted" and r.variant == self.variant])

    def steps(self, planner: str) -> list[S.Step]:
        return trial_steps(self.records, planner, self.direction == "maximize")

    def warmup(self) -> bool:
        return sum(1 for r in self.records if r.state in ("complete", "pruned")) < self.startup

    def ranked(self) -> tuple[list[TrialRecord], list[str]]:
        """The complete and pruned trials with a finite value, best first, and what the good ones share."""
        maximize = self.direction == "maximize"
        scored = sorted((r for r in self.records if r.state in ("complete", "pruned") and r.finite),
                        key=lambda r: (-r.value if maximize else r.value, r.number))  # type: ignore[operator]
        complete = [(r.params, float(r.value)) for r in scored if r.state == "complete"]  # type: ignore[arg-type]
        return scored, good_trials_summary(complete, list(self.space.params), maximize)

    def _state(self, history: int) -> tuple[str, list[str], list[str], dict[str, Any]]:
        """The incumbent line, the history lines (best first), the good-trials summary, the shown incumbent."""
        shown = self.space.rounded(self.incumbent)
        scored, summary = self.ranked()
        lines = [f"{self.metric} {r.value:.4g}" + (" (pruned)" if r.state == "pruned" else "") + ": "
                 + format_changes(diff(self.space.rounded(r.params), shown)) for r in scored[:history]]
        best = self.best
        where = f"{best.run_id}, {self.metric} {best.value:.4g}" if best is not None and best.value is not None \
            else "the base config"
        return f"{where}: {format_changes(shown)}", lines, summary, shown

    def _goal(self) -> str:
        return f"the {'highest' if self.direction == 'maximize' else 'lowest'} {self.metric}"

    def request(self, candidates: list[dict[str, Any]], budget_left: int, history: int) -> ChoiceRequest:
        incumbent, lines, summary, shown = self._state(history)
        messages = choice_messages(goal=self._goal(), budget_left=budget_left, incumbent=incumbent, history=lines,
                                   summary=summary, metric=self.metric, maximize=self.direction == "maximize",
                                   candidates=[diff(self.space.rounded(c), shown) for c in candidates])
        done = [r for r in self.records if r.state == "complete" and r.finite]
        return ChoiceRequest(messages, candidates, [(r.params, [float(r.value)]) for r in done],  # type: ignore
                             [self.direction], self.space.distributions, seed=self.seed * 7919 + len(self.records))

    def own(self, chooser: Chooser, candidates: list[dict[str, Any]], history: int) -> tuple[dict[str, Any] | None,
                                                                                             str]:
        """The LLM's own candidate aimed at a score 5% better than the best (LLAMBO), or None and why not."""
        best = self.best.value if self.best is not None and self.best.value is not None else None
        if best is None or not hasattr(chooser, "own"):
            return None, ""
        target = best + (1 if self.direction == "maximize" else -1) * 0.05 * abs(best)
        incumbent, lines, summary, _ = self._state(history)
        values = self.space.offered(self.incumbent)
        messages = own_messages(goal=self._goal(), target=f"{self.metric} {target:.4g}", incumbent=incumbent,
                                history=lines, summary=summary, values=values)
        try:
            changes, _ = chooser.own(messages, values)
        except LLMError as exc:
            return None, f"no own candidate: {exc.kind}: {_why(exc)}"
        params, why = self.config(changes, taken=candidates)
        return (params, "") if params is not None else (None, f"own candidate dropped: {why}")


def trial_results(records: list[TrialRecord], maximize: bool,
                  without_llm: Callable[[TrialRecord | None], dict[str, Any]]) -> SearchResults:
    """``SearchResults`` of the search loop's trials (nas): the best value with and without what a planner chose;
    ``without_llm(best)`` names the best trial without the LLM chooser's picks in the command's terms. With every
    trial the best is the search's own (its incumbent); with some left out it is a counterfactual: the best of every
    other finished trial but a diverged one, accepted or not (``best_of(incumbent=False)``), since a trial the
    evaluator turned down because a left-out trial was better would have been accepted without it."""
    done = [r for r in records if r.state != "running" and r.counted]
    direction = "maximize" if maximize else "minimize"

    def score(keep: Callable[[str, Any, str], bool]) -> float | None:
        kept = [r for r in done if keep(r.origin, r.choice, r.planner)]
        best = best_of(kept, direction, incumbent=len(kept) == len(done))
        return float(best.value) if best is not None and best.value is not None else None

    def without() -> dict[str, Any]:
        kept = [r for r in records if r.origin not in S.LLM_ORIGINS]
        return without_llm(best_of(kept, direction, incumbent=False))

    return SearchResults([Row(r.origin, r.choice, r.planner, r.warmup, r.variant) for r in done], score,
                         lambda name: trial_steps(records, name, maximize), without, higher_is_better=maximize)


def trial_steps(records: list[TrialRecord], name: str, maximize: bool) -> list[S.Step]:
    """The ``name`` planner's trials after the warm-up as bandit steps: a step improved when the trial was accepted
    and beat every earlier accepted trial."""
    done = [r for r in records if r.state != "running" and r.counted]
    values = [r.value if r.state == "complete" and r.accepted and r.finite else None for r in done]
    return [S.Step(r.origin or "classical", improved, gain)
            for r, (improved, gain) in zip(done, S.improvements(values, maximize), strict=True)
            if r.planner == name and not r.warmup]


# --------------------------------------------------------------------------- the LLM as a chooser


@dataclass
class ChoiceRequest:
    """What a chooser is given: the prompt (an LLM reads it), and the same state as data (a scripted chooser
    reads that): candidates and finished trials as full params, their scores, the objectives' directions, and a
    seed for its own randomness."""

    messages: list[dict[str, str]]
    candidates: list[dict[str, Any]]
    history: list[tuple[dict[str, Any], list[float]]]
    directions: list[str]
    distributions: Callable[[dict[str, Any]], dict[str, Any]]
    seed: int = 0


@dataclass
class Choice:
    index: int | None  # None: no answer
    reasoning: str = ""
    note: str = ""
    said: bool = False  # the chooser already logged why there is no answer (once, not at every trial)


class Chooser(Protocol):
    """Picks one candidate (``LLMChooser``; the benchmarks' placebo and surrogate choosers). ``name`` keys the
    record of its picks (``share.PickMemory``)."""

    name: str

    def choose(self, request: ChoiceRequest) -> Choice: ...


def _why(exc: LLMError) -> str:
    """An LLM failure in a line: a failed route's message names only the outcomes, so add the last attempt's reason
    (a reply cut at max_tokens, a timeout, ...)."""
    attempts = getattr(exc, "attempts", None)
    if attempts and attempts[-1][2] and attempts[-1][2] not in exc.message:
        return f"{exc.message}: {attempts[-1][2]}"
    return exc.message


PERMANENT = frozenset({"auth", "not_found"})  # an LLM failure no retry changes: a refused key, no such model


def _permanent(exc: LLMError) -> bool:
    """Whether every model of the route failed for a reason no later call changes: each one tried answered no such
    model or a refused key at least once (an open circuit alone may close after its cooldown)."""
    attempts = getattr(exc, "attempts", None) or [("", exc.kind, "")]
    models = {model for model, _, _ in attempts}
    return all(any(m == model and kind in PERMANENT for m, kind, _ in attempts) for model in models)


class LLMChooser:
    """Asks the router's ``route`` for ``{"choice", "reasoning"}`` under a schema whose ``choice`` is an enum of the
    candidates' indices: one request, no repair round (an invalid or missing answer is no answer)."""

    def __init__(self, router: Router, route: str = "planner"):
        self.router, self.route = router, route
        chain = router.route(route)[1]
        self.name = chain[0] if chain else route
        self.gone: str | None = None  # why the route cannot answer at all (no such model, a refused key)

    def choose(self, request: ChoiceRequest) -> Choice:
        if self.gone is not None:
            return Choice(None, note=self.gone, said=True)
        try:
            answer = self.structured(request.messages, choice_model(len(request.candidates)))
        except LLMError as exc:
            note = f"no answer from the planner LLM: {exc.kind}: {_why(exc)}"
            if _permanent(exc):  # asking again gets the same answer: the rest of the search is the sampler's
                self.gone = f"{note} (not asked again: a failure no retry changes)"
                log.warning("the planner LLM cannot answer (%s: %s): it is not asked again, the sampler's "
                            "candidate 0 runs for the rest of the search", exc.kind, _why(exc))
                return Choice(None, note=self.gone, said=True)
            return Choice(None, note=note)
        return Choice(answer.choice, answer.reasoning)

    def structured(self, messages: list[dict[str, str]], schema: Any, show_schema: bool = False) -> Any:
        """One structured answer (the validated object), no repair round; raises ``LLMError`` when there is none."""
        return self.router.structured_sync(messages, schema, route=self.route, max_repairs=0,
                                           show_schema=show_schema).value

    def own(self, messages: list[dict[str, str]], values: dict[str, list[Any]]) -> tuple[dict[str, Any], str]:
        """A plan of the model's own under ``plan_model(values)``; raises ``LLMError`` when it gives none."""
        if self.gone is not None:
            raise LLMError(self.gone, "unavailable")
        plan = self.structured(messages, plan_model(values))
        return dict(plan.changes), plan.reasoning


class ChooserPlanner:
    """The ``llm`` planner: the sampler's K candidates, the LLM's choice among them (see the module docstring), on
    any ``Domain`` (nas's trials, compress's experiments).

    ``share`` bounds the picks other than candidate 0 and ``adapt`` lets a bandit earn them (``share``);
    ``memory``/``search_id`` keep the record of this chooser's picks across searches; ``own_candidate`` adds a
    candidate the LLM proposes itself; ``warm_start`` shows the sampler's random warm-up trials to the LLM too
    (outside the share); ``history``: finished trials shown; ``sampler``: the classical sampler (candidate 0)."""

    name = "llm"

    def __init__(self, chooser: Chooser, *, candidates: int = 4, share: float = 0.3, adapt: bool = True,
                 memory: S.PickMemory | None = None, search_id: str = "", own_candidate: bool = False,
                 warm_start: bool = False, history: int = 10, sampler: str = "tpe"):
        self.chooser, self.k, self.share, self.adapt = chooser, candidates, share, adapt
        self.memory, self.search_id = memory, search_id
        self.own_candidate, self.warm_start, self.history, self.sampler = own_candidate, warm_start, history, sampler
        self.prior = memory.prior(chooser.name, exclude=search_id) if memory is not None else None

    def propose(self, ctx: PlanContext) -> Proposal:
        domain = ctx.domain
        steps = domain.steps(self.name)
        if self.memory is not None:
            self.memory.record(self.chooser.name, self.search_id, S.tally(steps))
        warmup = domain.warmup()
        if warmup and not self.warm_start:  # only candidate 0 is drawn when the LLM is not asked
            return self._run(ctx, domain.draw(self.sampler, 1), 0, "classical",
                             notes=["a warm-up trial of the sampler"], warmup=True)
        if not warmup:
            open_, why = S.open_to_llm(self.share, steps, len(steps) + ctx.budget_left, ctx.seed, self.prior,
                                       self.adapt)
            if not open_:
                return self._run(ctx, domain.draw(self.sampler, 1), 0, "classical", notes=[why])
        candidates = domain.draw(self.sampler, self.k)
        if len(candidates) < 2 and not self.own_candidate:
            return self._run(ctx, candidates, 0, "classical", notes=["one candidate only: not shown to the LLM"],
                             warmup=warmup)
        return self._ask(ctx, candidates, warmup)

    def _run(self, ctx: PlanContext, candidates: list[Proposal], index: int, origin: str, reasoning: str = "",
             notes: list[str] | None = None, warmup: bool = False) -> Proposal:
        chosen = candidates[index]
        return Proposal(chosen.params, ctx.domain.changes(chosen.params), self.name, reasoning, notes=notes or [],
                        origin=origin, choice=index, candidates=len(candidates), warmup=warmup,
                        extra=dict(chosen.extra))

    def _ask(self, ctx: PlanContext, candidates: list[Proposal], warmup: bool) -> Proposal:
        domain = ctx.domain
        notes: list[str] = []
        own_index = None
        if self.own_candidate and not warmup:
            own, note = domain.own(self.chooser, [c.params for c in candidates], self.history)
            notes += [note] if note else []
            if own is not None:
                candidates = [*candidates, Proposal(own, domain.changes(own), self.name)]
                own_index = len(candidates) - 1
        if len(candidates) < 2:
            return self._run(ctx, candidates, 0, "classical", notes=[*notes, "one candidate only"])
        request = domain.request([c.params for c in candidates], ctx.budget_left, self.history)
        choice = self.chooser.choose(request)
        if choice.index is None or not 0 <= choice.index < len(candidates):
            note = choice.note or f"no answer: choice {choice.index} is not a candidate"
            if not choice.said:
                log.warning("LLM planner: %s; candidate 0 runs", note)
            return self._run(ctx, candidates, 0, "no answer", notes=[*notes, note], warmup=warmup)
        origin = "kept" if choice.index == 0 else "own" if choice.index == own_index else "picked"
        return self._run(ctx, candidates, choice.index, origin, choice.reasoning, notes, warmup=warmup)

    def report(self, results: SearchResults) -> dict[str, Any]:
        """results.json's ``llm_contribution``."""
        warmup = sum(1 for r in results.rows if r.planner == self.name and r.warmup)
        return {"llm_contribution": self.contribution(results.steps(self.name), warmup, results.without_llm())}

    def close(self) -> None:
        pass

    def contribution(self, steps: list[S.Step], warmup: int = 0,
                     without_llm: dict[str, Any] | None = None) -> dict[str, Any]:
        """results.json's ``llm_contribution`` (``share.contribution``) from the search's bandit ``steps`` (the
        domain's, after the search) and its ``warmup`` trials; the counts go to the pick memory."""
        if self.memory is not None:
            self.memory.record(self.chooser.name, self.search_id, S.tally(steps))
        return S.contribution(steps, model=self.chooser.name, candidates=self.k, share=self.share, warmup=warmup,
                              without_llm=without_llm)
