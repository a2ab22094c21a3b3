"""The ask/tell search loop of every search (nas, compress, evolve): planner -> objective -> evaluator -> update,
on an Optuna study that is its state (docs/design/architecture.md, Search). ``max_iterations`` is a total over the
study across workers; a trial left RUNNING by a dead worker or Ctrl-C runs again once, first, and a finished trial
never runs again. Every storage access goes through ``core.search.engine``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

from agentlab.core.errors import AgentlabError, storage_error
from agentlab.core.files import deferred_interrupts
from agentlab.core.search import records as R
from agentlab.core.search.engine import store_of
from agentlab.core.search.evaluator import Decision
from agentlab.core.search.planners import (
    NoProposal,
    PlanContext,
    Planner,
    Proposal,
    TrialDomain,
    params_key,
    trial_key,
)
from agentlab.core.search.records import TrialRecord, best_of
from agentlab.core.search.space import SearchSpace
from agentlab.core.search.study import MAX_RETRIES, Direction, KeptSampler, make_sampler

log = logging.getLogger(__name__)
# Trials this process left RUNNING because the storage refused to record their end (a full disk): a later search in
# the same process (a notebook, a test) recovers them like a dead worker's. (study name, trial number).
_STRANDED: set[tuple[str, int]] = set()


class StopReason(str):
    """Why a search stopped: the message people read, and ``kind`` for code to test (``base_failed``,
    ``max_iterations``, ``time_budget``, ``target``, ``patience``, ``exhausted``: no proposal left, ``objective``:
    the objective's ``StopSearch``)."""

    kind: str

    def __new__(cls, kind: str, message: str) -> StopReason:
        reason = super().__new__(cls, message)
        reason.kind = kind
        return reason

    def __getnewargs__(self) -> tuple[str, str]:  # type: ignore[override]  # pickle and copy rebuild it from both
        return self.kind, str(self)


BASE_FAILED = StopReason("base_failed", "the base config failed")
RETRY_QUEUE_S = 60.0  # how long a trial failed by the heartbeat check holds its slot while its retry is queued


class Pruned(Exception):  # noqa: N818 - mirrors optuna.TrialPruned
    """Raised by an objective when the pruner stops its trial; ``metrics`` holds what it had measured."""

    def __init__(self, metrics: dict[str, Any] | None = None):
        super().__init__("pruned")
        self.metrics = metrics or {}


def _inside(path: str, folder: str) -> bool:
    """Whether the file ``path`` lies in ``folder``, either of them relative to the working directory or through a
    link (a run folder given as ``--out run`` holds ``run/study.db`` by its resolved path); a URL never does."""
    return "://" not in path and Path(path).resolve().is_relative_to(Path(folder).resolve())


class StopSearch(Exception):  # noqa: N818 - a trial's outcome, like Pruned
    """Raised by an objective for a trial that must not run (compress's carbon budget): the trial is given back
    uncounted and the search stops with this message as its reason."""


class TrialAborted(Exception):  # noqa: N818 - a trial's outcome, like Pruned
    """Raised by an objective, from the error that stops the whole search (compress's base model could not be
    measured): the trial goes back to the queue whole, so ``--resume`` (or another worker) runs it again, and the
    loop raises this; ``__cause__`` is the error."""


class TrialFailed(Exception):  # noqa: N818 - a trial's outcome, like Pruned
    """Raised by an objective for a trial that failed the way trials do (the user's command exited non-zero, gave
    no metric, timed out): a failed trial, counted, with this message as its reason and no traceback; the search
    goes on."""


class Evaluator(Protocol):
    """Accepts or rejects a finished trial against the incumbent, ``best`` (``records.best_of``; an accepted trial
    whose decision names the incumbent, ``Decision.against``, takes its place: ``evaluator.HybridEvaluator``)."""

    def decide(self, value: float | None, metrics: dict[str, Any], params: dict[str, Any],
               best: TrialRecord | None) -> Decision: ...


class GroupPlanner(Protocol):
    """A planner of whole groups (``StopRules.generations``: evolve's generations), asked only once the last group
    has finished; it raises ``NoProposal`` when there is none."""

    def propose_group(self, ctx: PlanContext) -> list[Proposal]: ...


class Objective(Protocol):
    """What a trial runs. An objective whose ``pareto`` attribute is True (compress's) returns several objective
    ``values`` and a constraint ``violation``; the others one ``value``, whatever else their metrics hold."""

    def check(self, params: dict[str, Any]) -> list[str]:
        """Constraint errors of a full parameter set (empty when valid)."""
        ...

    def run(self, number: int, params: dict[str, Any], report: Callable[[int, float], bool]) -> dict[str, Any]:
        """Train/evaluate one trial. Returns metrics with the objective under ``value`` (``pareto``: a list under
        ``values``, one per objective, and a constraint ``violation``, above 0 when infeasible); ``report(step,
        value)`` returns True when the trial should be pruned (then raise ``Pruned``).

        An objective that scores several trials together (evolve's: several adapters on one loaded model) also has
        ``batch`` (how many at most) and ``run_batch([(number, params), ...])``, which returns per trial its metrics
        or the exception ``run`` would have raised (``TrialFailed``)."""
        ...


@dataclass
class StopRules:
    max_iterations: int
    time_budget_s: float | None = None
    patience: int | None = None
    target: float | None = None
    free_base: bool = False  # the base trial uses no budget (compress: ``max_iterations`` experiments after it)
    own_run: bool = False  # the budget, the base and the stop rules count this run's trials only (a study that runs
    # share to learn from each other, each with its own budget); the planner still sees every trial
    base_first: bool = False  # no other trial is planned until the base finished (compress scores against it)
    generations: bool = False  # the planner proposes a group at a time (``propose_group``: evolve's generations),
    # queued as WAITING trials that this worker and any other claim (``batch`` at a time); the next group is planned
    # only once every trial of the last has finished. The planner owns the budget (it raises ``NoProposal`` when it
    # is spent); ``max_iterations`` is what the progress bar counts to
    unit: str = "trial"  # what the stop reason counts


@dataclass(frozen=True)
class Hooks:
    """What a command plugs into ``SearchLoop`` besides its objective, planner and evaluator; each optional."""
    on_event: Callable[..., None] | None = None  # ``on_event(kind, **data)``: recovered, plan, queued, trial
    on_trial: Callable[[list[TrialRecord]], None] | None = None  # the study's records, after each trial
    # the study's records, after each trial, written in one step with its end (the study's tell, on_event "trial")
    # that Ctrl-C cannot split: the run's own record of what finished (nas's agent_state.json); quick, local work only
    on_state: Callable[[list[TrialRecord]], None] | None = None
    on_queued: Callable[[list[int]], None] | None = None  # a group was queued (evolve starts its workers)
    progress: Any = None  # a ``Progress``: a task counting to ``StopRules.max_iterations``
    run_dir: str = ""  # this run's folder: the trials' ``run_dir``, which ``StopRules.own_run`` counts
    domain: Callable[[list[TrialRecord]], PlanContext] | None = None  # the planners' view (None: ``TrialDomain``)
    # the command says in its own words which of its trials go back to the queue (on_event "recovered"; evolve names
    # individuals): the loop logs no warning of its own for them, whose trial numbers name nothing a user sees
    says_recovered: bool = False


@dataclass
class SearchOutcome:
    records: list[TrialRecord]
    best: TrialRecord | None
    base: TrialRecord | None
    stop_reason: StopReason
    ran_here: int


class SearchLoop:
    """Drives one worker. ``planner`` has ``propose(PlanContext) -> Proposal``; ``objective`` is the executor."""

    def __init__(self, *, study: Any, space: SearchSpace, base_params: dict[str, Any] | None, objective: Objective,
                 planner: Planner, evaluator: Evaluator, stop: StopRules, metric: str = "value", seed: int = 0,
                 hooks: Hooks = Hooks()):
        self.study, self.space, self.base_params = study, space, base_params
        self.objective, self.planner, self.evaluator, self.stop = objective, planner, evaluator, stop
        self.metric, self.seed, self.run_dir = metric, seed, hooks.run_dir
        # the study says which way each objective goes; one objective (nas) has a best trial, several (compress's
        # Pareto search) a front, which the command's own domain reads
        self.directions: list[Direction] = ["maximize" if d.name == "MAXIMIZE" else "minimize"
                                            for d in study.directions]
        self.direction: Direction = self.directions[0]
        self.domain = hooks.domain  # the planners' view of the search (None: ``TrialDomain`` over ``space``)
        self.on_queued = hooks.on_queued or (lambda numbers: None)  # a group was queued (evolve starts its workers)
        self.on_event = hooks.on_event or (lambda kind, **data: None)
        self.says_recovered = hooks.says_recovered
        self.on_trial = hooks.on_trial or (lambda records: None)
        self.on_state = hooks.on_state or (lambda records: None)
        self.progress = hooks.progress
        self.store = store_of(study)
        self.worker = self.store.worker
        self.distributions = space.distributions()
        self.startup = max(3, min(10, stop.max_iterations // 4))  # TPE's random warm-up trials
        self._sampler_attrs: dict[str, dict[str, Any]] = {}
        self._samplers: dict[str, KeptSampler] = {}  # one per sampler kind, kept for the search
        self._frozen: list[Any] = []  # the study's trials as ``records`` last read them
        self._current: Any = None  # the trial being run, until its end is recorded
        self._noted: float | None = None  # when the generation barrier began to wait, or last said what for
        # a trial's end, from the study's tell to its event and on_state: Ctrl-C held (``_run_trial``)
        self._ending: contextlib.ExitStack | None = None
        self._holding = False  # ``_hold`` holds Ctrl-C now: a storage write inside needs no hold of its own
        if base_params is not None:  # None: no base trial (evolve's seeds are scored as its first generation)
            space.check_base(base_params)

    # ------------------------------------------------------------------ study state

    def records(self) -> list[TrialRecord]:
        trials = self._frozen = self.study.get_trials(deepcopy=False)
        records = [TrialRecord.from_frozen(t) for t in trials]
        waiting = R.awaiting_retry(trials, MAX_RETRIES, RETRY_QUEUE_S)  # its slot stays taken until the retry is queued
        for record in records:
            if record.number in waiting:
                record.counted = True
        return records

    def mine(self, records: list[TrialRecord]) -> list[TrialRecord]:
        """The trials the budget and the stop rules count: every trial of the study, or this run's (``own_run``)."""
        return [r for r in records if r.run_dir == self.run_dir] if self.stop.own_run else records

    def counted(self, records: list[TrialRecord]) -> int:
        """Trials that use budget: finished or running, except interrupted or abandoned ones (and the base, when it
        is free)."""
        return sum(1 for r in self.mine(records) if r.counted and not (self.stop.free_base and r.planner == "base"))

    def best(self, records: list[TrialRecord]) -> TrialRecord | None:
        """The best accepted trial of one objective (several: None, the command's domain reads the front)."""
        return best_of(self.mine(records), self.direction) if len(self.directions) == 1 else None

    def recover(self) -> list[int]:
        """Trials left RUNNING by dead workers (SIGKILL, power loss) or by this process on a full disk go back to
        WAITING whole: the next free worker runs each again, once, before planning anything new."""
        name = self.study.study_name
        back = self.store.recover(also=lambda t: (name, t.number) in _STRANDED)  # first: the trial stays whole
        self.store.fail_stale()  # workers on other hosts: a failed trial and a queued copy, after the grace period
        for number in back:
            _STRANDED.discard((name, number))
        if back:
            self.on_event("recovered", trials=back)
            if not self.stop.own_run:
                if not self.says_recovered:
                    log.warning("trial(s) %s were interrupted; they run again first", back)
                return back
            # runs sharing a study on SQLite or a journal each run their own trials (_claim): another run's waits
            # for that run's --resume
            runs = {n: self.store.get(n).user_attrs.get(R.A_PLAN, {}).get("run_dir") for n in back}
            if (ours := [n for n in back if runs[n] == self.run_dir]) and not self.says_recovered:
                log.warning("trial(s) %s were interrupted; they run again first", ours)
            for folder in sorted({str(runs[n]) for n in back if runs[n] != self.run_dir}):
                log.warning("trial(s) %s of %s were interrupted; they wait for that run's --resume",
                            [n for n in back if str(runs[n]) == folder],
                            "another run" if folder == "None" else f"the run {folder}")
        return back

    def _others_running(self, records: list[TrialRecord]) -> bool:
        """Whether another worker's trial is still running (the budget counts it, but if its worker dies it is
        queued again, and the report of every worker should hold its result): any worker's on a database server
        (heartbeats tell a dead one), a worker's on this host elsewhere (its process tells: ``recover``); a worker
        on another host without heartbeats could be gone for good, and is not waited for."""
        return any(r.pending and (r.state != "running" or r.worker != self.worker and (
            self.store.heartbeats or R.local_worker(r.worker))) for r in self.mine(records))

    def _claim(self) -> list[tuple[Any, Proposal]]:
        """Trials waiting to run, taken by this worker (``batch`` of them where the objective scores several
        together): a queued group's (``generations``), or one to run again (its worker died, or Ctrl-C stopped it;
        or a copy queued by the retry callback on a database server) with the same params and plan."""
        def retry_of(trial: Any) -> int | None:
            """The trial it runs again (None: a queued group's trial, run for the first time)."""
            again = trial.system_attrs.get("failed_trial")
            if again is None and trial.user_attrs.get(R.A_PLAN, {}).get("queued"):
                return None
            return trial.number if again is None else int(again)

        def mine(trial: Any) -> dict[str, Any]:
            plan = {**trial.user_attrs.get(R.A_PLAN, {}), "worker": self.worker, "run_dir": self.run_dir}
            if (again := retry_of(trial)) is not None:
                plan["retry_of"] = again
            return {R.A_PLAN: plan}

        claimed = self.store.claim(max(1, int(getattr(self.objective, "batch", 1))), attrs=mine,
                                   accept=lambda t: not self.stop.own_run
                                   or t.user_attrs.get(R.A_PLAN, {}).get("run_dir") == self.run_dir)
        out = []
        for frozen in claimed:
            plan = frozen.user_attrs.get(R.A_PLAN, {})
            failed = frozen.system_attrs.get("failed_trial")
            why = (f"retry of trial {failed}: its worker died mid-trial" if failed is not None else
                   plan.get("reasoning", "") if plan.get("queued") else
                   "run again: it was interrupted before its result was recorded")
            proposal = Proposal(dict(frozen.params), plan.get("changes", {}), plan.get("planner", "retry"), why)
            if retry_of(frozen) is not None:
                self.on_event("plan", planner=proposal.planner, changes=proposal.changes,
                              reasoning=proposal.reasoning, retry_of=frozen.number)
            out.append((self.store.trial(frozen.number), proposal))
        return out

    def drain(self, *, wait: Callable[[], bool] = lambda: False) -> int:
        """A worker that plans nothing (``agentlab evolve worker``): run the trials waiting in the study until none
        waits and ``wait()`` is False (polling while it is True); returns how many it ran."""
        ran = 0
        while True:
            self.recover()
            claimed = self._claim()
            if claimed:
                ran += sum(why is None for why in self._run_claimed(claimed, self.records()))
            elif wait():
                time.sleep(self.store.beat_s)
            else:
                return ran

    # ------------------------------------------------------------------ planning helpers

    def _kept(self, kind: str) -> KeptSampler:
        """The search's ``kind`` sampler (``study.KeptSampler``), its mirror of the study brought up to date."""
        from optuna.trial import TrialState

        sampler = self._samplers.get(kind)
        if sampler is None:
            seed = self.seed * 100_003 + len(self._frozen) * 997
            where = self.store.where or ""
            if self.store.heartbeats or (self.run_dir and where and not _inside(where, self.run_dir)):
                seed += zlib.crc32(self.worker.encode())  # workers sharing a study: each its own draws
            sampler = self._samplers[kind] = KeptSampler(
                lambda s: make_sampler(kind, s, startup=self.startup, conditional=self.space.conditional),
                self.directions, seed)
        trials = [t for t in self._frozen if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
                  and self.space.fits(t.params)]
        # Failed trials (the command failed: an exit code, no metric, NaN, a timeout) teach the sampler like the
        # draws that broke a constraint: as bad trials (Optuna's samplers skip FAIL trials, and would draw the same
        # point again).
        sampler.sync([t for t in trials if t.state != TrialState.FAIL],
                     [t for t in trials if t.state == TrialState.FAIL and t.params
                      and t.user_attrs.get(R.A_OUTCOME, {}).get("counted", True)], self.space.distributions)
        return sampler

    def _candidate(self, kind: str, judge: Callable[[dict[str, Any]], str | None], *, explore: bool = False,
                   tries: int = 30) -> dict[str, Any] | None:
        """The ``kind`` sampler's next point that ``judge`` passes (None: it returns "infeasible" or "repeat"), or
        None after ``tries`` draws; the last third of them random draws when the sampler keeps repeating itself (a
        space nearly exhausted). A conditional space is drawn define-by-run, so the point holds only the keys active
        for it. ``explore``: the extra candidates' sampler, so the first sampler's draws stay its own. Bad points
        are told to the sampler once its random warm-up is over (before, they would count as warm-up trials)."""
        from optuna.trial import TrialState

        warm = sum(1 for t in self._frozen if t.state in (TrialState.COMPLETE, TrialState.PRUNED)) >= self.startup
        fallback = tries // 3 if kind != "random" and not explore else 0
        sampler = self._kept(kind)  # its mirror brought up to date once a draw: the study does not change meanwhile
        for attempt in range(tries):
            if attempt == tries - fallback:
                sampler = self._kept("random")
            # the extra candidates' draws teach nothing: the first sampler sees only its own
            params, verdict, attrs = sampler.draw(
                None if self.space.conditional else self.distributions, judge,
                read=self.space.sample if self.space.conditional else None, told=self.space.distributions,
                explore=explore, penalize=warm and not explore)
            if verdict is None:
                if not explore:  # the sampler's own state (CMA-ES's): kept with the trial if it runs, so the
                    self._sampler_attrs[params_key(params)] = attrs  # mirror's copy of it restores it
                return params
        return None

    def _context(self, records: list[TrialRecord]) -> PlanContext:
        if self.domain is not None:
            return self.domain(records)
        best = best_of(records, self.direction)
        base = dict(self.base_params or {})
        domain = TrialDomain(
            space=self.space, base_params=base, incumbent=dict(best.params) if best else base,
            records=[r for r in records if r.state != "running"], best=best, metric=self.metric,
            check=self.objective.check, candidate=self._candidate,
            # a failed config is not run again either (the command failed on it: it would fail again)
            tried={trial_key(r.params, r.variant) for r in records
                   if r.state in ("complete", "pruned", "running", "failed")},
            direction=self.direction, seed=self.seed, startup=self.startup, variant=best.variant if best else "")
        return PlanContext(domain, budget_left=self.stop.max_iterations - self.counted(records), seed=self.seed)

    def _plan(self, records: list[TrialRecord]) -> list[Proposal]:
        """The next group (``generations``: queued together, never empty), or the one next proposal."""
        if not self.stop.generations:
            return [self._propose(records)]
        group = cast(GroupPlanner, self.planner).propose_group(self._context(records))
        if not group:
            raise NoProposal("the planner proposed nothing more")
        return group

    def _propose(self, records: list[TrialRecord]) -> Proposal:
        if self.base_params is not None and not any(r.state in ("complete", "pruned", "running")
                                                     for r in self.mine(records)):
            return Proposal(dict(self.base_params), {}, "base", "the base config, measured first as the reference")
        return self.planner.propose(self._context(records))

    # ------------------------------------------------------------------ one trial

    def _commit(self, proposal: Proposal, *, queued: bool = False) -> Any:
        """Create the trial with exactly the proposed params and its plan in one storage write, so no other worker
        ever sees it half-made: without params (the duplicate check would miss it) or without a worker id
        (``recover`` would take it for a dead worker's). ``queued``: WAITING, for whichever worker claims it."""
        from optuna.trial import TrialState

        plan: dict[str, Any] = {"planner": proposal.planner, "changes": proposal.changes,
                                "reasoning": proposal.reasoning, "worker": self.worker, "run_dir": self.run_dir}
        if queued:
            plan["queued"] = True
        if proposal.origin:
            plan.update(origin=proposal.origin, choice=proposal.choice, candidates=proposal.candidates)
        if proposal.warmup:
            plan["warmup"] = True
        if proposal.notes:
            plan["notes"] = proposal.notes[:8]  # why the LLM was not asked, or gave no answer (the report shows it)
        kept = {k: v for k, v in proposal.extra.items() if k != "optuna"}
        if kept:
            plan["extra"] = kept
        system = {**self._sampler_attrs.get(params_key(proposal.params), {}),
                  **proposal.extra.get("optuna", {})} or None
        self._sampler_attrs.clear()
        number = self.store.create(params=proposal.params, system_attrs=system, user_attrs={R.A_PLAN: plan},
                                   distributions=self.space.distributions(proposal.params),
                                   state=TrialState.WAITING if queued else None)
        return self.store.trial(number)

    def _execute(self, trial: Any, proposal: Proposal, records: list[TrialRecord],
                 done: dict[str, Any] | BaseException | None = None) -> TrialRecord:
        """Run ``trial`` and record its end; ``done``: its outcome already (a batch's), only recorded."""
        import optuna
        from optuna.trial import TrialState

        def report(step: int, value: float) -> bool:
            # the base is never pruned: it is the reference every gain is measured against
            if proposal.planner == "base" or not math.isfinite(value):
                return False
            try:
                with deferred_interrupts(), warnings.catch_warnings():  # a Ctrl-C inside the commit would break
                    warnings.simplefilter("ignore")  # the storage; a trial run again reports its steps again
                    trial.report(value, step)
                    return trial.should_prune()
            except optuna.exceptions.UpdateFinishedTrialError:  # taken for dead by another worker: see below
                return False

        start = time.perf_counter()
        try:
            if isinstance(done, BaseException):
                raise done
            if done is not None:
                metrics = done
            else:
                with self.store.beating(trial.number):  # a database server: proof of life
                    metrics = self.objective.run(trial.number, dict(proposal.params), report)
        except (KeyboardInterrupt, TrialAborted):
            self._give_back(trial)
            raise
        except StopSearch as exc:
            self._fail(trial, f"not run: {exc}", counted=False)
            raise
        except Pruned as exc:
            self._hold()
            with self._write_held():
                trial.set_user_attr(R.A_OUTCOME, {"metrics": exc.metrics, "accepted": False, "decided_by": "pruner",
                                                  "reason": f"pruned: its {self.metric} at the same step was "
                                                            "hopeless next to earlier trials"})
                self.study.tell(trial, state=TrialState.PRUNED)
            return self._record(trial)
        except TrialFailed as exc:
            self._hold()
            log.info("trial %d failed: %s", trial.number, R.reason_line(str(exc)))  # the trial line says it
            self._fail(trial, f"failed: {exc}", counted=True)
            return self._record(trial)
        except Exception as exc:
            full = storage_error(exc, where=self.run_dir or None)
            if full is not None:  # the disk, not the config: the search stops, the trial runs again on --resume
                self._interrupted(trial)
                self._current = None
                raise full from exc
            # one bad config (e.g. out of memory) must not end the search
            self._hold()
            log.warning("trial %d failed", trial.number, exc_info=True)
            self._fail(trial, f"error: {type(exc).__name__}: {exc}", counted=True)
            return self._record(trial)
        metrics.setdefault("seconds", round(time.perf_counter() - start, 3))
        value = metrics.get("value")
        pareto = getattr(self.objective, "pareto", False)
        values = metrics.get("values") if pareto else [value]
        decision = self.evaluator.decide(value, metrics, proposal.params, self.best(records))
        self._hold()
        try:
            with self._write_held():
                trial.set_user_attr(R.A_OUTCOME, {"metrics": metrics, **decision.outcome()})
                if not values or any(v is None or not math.isfinite(v) for v in values):
                    self.study.tell(trial, state=TrialState.FAIL)  # counted: it consumed budget
                else:
                    if pareto and metrics.get("violation") is not None:  # NSGA-II's constraints (> 0: infeasible)
                        trial.set_constraint("violation", float(metrics["violation"]))
                    self.study.tell(trial, values if len(self.directions) > 1 else values[0])
        except optuna.exceptions.UpdateFinishedTrialError:  # its heartbeat lagged past the grace period on a busy
            log.warning("trial %d was taken for dead by another worker (no heartbeat in time); its retry counts "
                        "instead", trial.number)  # machine: it is failed and queued again; the retry counts
        return self._record(trial)

    def _hold(self) -> None:
        """From here (the trial's end about to be told to the study) Ctrl-C and SIGTERM are held until its event and
        ``on_state`` are written (``_run_trial``): a signal in between left a trial finished in the study that
        events.jsonl, agent_state.json and the console never showed, and a resume's "kept" line counted one short."""
        if self._ending is not None and not self._holding:  # a second Ctrl-C goes through at once (a storage that
            self._ending.enter_context(deferred_interrupts(on_first=lambda sig: None))  # hangs stays stoppable)
            self._holding = True

    def _write_held(self) -> contextlib.AbstractContextManager[Any]:
        """Ctrl-C held over one storage write (inside the commit it would break the storage); nothing more inside
        ``_hold``'s, which holds it already: a block of its own there held the second Ctrl-C too."""
        return contextlib.nullcontext() if self._holding else deferred_interrupts()

    def _record(self, trial: Any) -> TrialRecord:
        """The record of ``trial`` as the storage holds it now (one read; ``study.get_trials`` would read them all)."""
        return TrialRecord.from_frozen(self.store.get(trial.number))

    # ------------------------------------------------------------------ the loop

    def _should_stop(self, records: list[TrialRecord], started: float) -> StopReason | None:
        if base_failed(self.mine(records)):  # every trial is measured against it: running more would repeat it
            return BASE_FAILED
        counted = self.counted(records)
        if counted >= self.stop.max_iterations and not self.stop.generations:  # there: the planner's
            n, unit = self.stop.max_iterations, self.stop.unit
            held = f"; the shared study holds {counted} already" if counted > n else ""  # a worker given fewer
            return StopReason("max_iterations", f"max_iterations reached ({n} {unit}{'' if n == 1 else 's'}{held})")
        if self.stop.time_budget_s is not None and time.monotonic() - started >= self.stop.time_budget_s:
            return StopReason("time_budget", f"time budget of {self.stop.time_budget_s:g} s used")
        best = self.best(records)
        target = self.stop.target
        if target is not None and best is not None and best.value is not None and (
                best.value <= target if self.direction == "minimize" else best.value >= target):
            return StopReason("target", f"target {target:g} reached by {best.run_id} ({best.value:.4g})")
        if self.stop.patience is not None and best is not None:
            since = sum(1 for r in self.mine(records) if r.number > best.number
                        and r.state in ("complete", "pruned", "failed") and r.counted)
            if since >= self.stop.patience:
                return StopReason("patience", f"no new best in {since} trial{'' if since == 1 else 's'} (patience "
                                  f"{self.stop.patience})")
        return None

    def run(self) -> SearchOutcome:
        try:
            return self._run()
        except Exception as exc:  # the study's commit on a full disk: name the database, not StorageInternalError
            full = storage_error(exc, where=self.store.where)
            if full is None:
                raise
            if self._current is not None:  # its end was not recorded (the study's commit failed)
                self._interrupted(self._current)
            if full is exc:
                raise
            raise full from exc

    def _give_back(self, trial: Any) -> None:
        """Back to WAITING: --resume runs it again first (if the storage cannot record it, the trial stays RUNNING
        and --resume recovers it)."""
        try:
            self.store.requeue(trial.number)
        except Exception:
            log.warning("could not put trial %d back in the queue", trial.number, exc_info=True)

    def _interrupted(self, trial: Any) -> None:
        """A trial the disk stopped goes back to WAITING; when the study cannot take even that, it stays RUNNING and
        the next search here recovers it."""
        try:
            if self.store.requeue(trial.number):
                return
        except Exception:  # the study is on the full disk too
            log.info("could not put trial %d back in the queue", trial.number)
        _STRANDED.add((self.study.study_name, trial.number))

    def _run(self) -> SearchOutcome:
        started = time.monotonic()
        ran = 0
        stopped: StopReason | None = None  # met while planning or running: no proposal left, the carbon budget
        task = self.progress.task("search", total=self.stop.max_iterations) if self.progress else None
        while True:
            self.recover()  # first: a dead worker's trial goes back to the queue and the _claim below takes it
            claimed = self._claim()
            if claimed:  # a queued group's, or a dead worker's trial queued again: it holds budget already
                whys = self._run_claimed(claimed, self.records())
                ran += sum(why is None for why in whys)
                stopped = next((why for why in whys if why), stopped)
                if task is not None:
                    task.update(completed=self._done(self.records()))
                continue
            records = self.records()
            if task is not None:
                task.update(completed=self._done(records))
            reason = stopped or self._should_stop(records, started)
            if reason and reason.kind not in ("base_failed", "time_budget") and (
                    self._others_running(records) or (self.stop.generations and self._unfinished(records))):
                self._waiting_note(records)
                time.sleep(self.store.beat_s)  # a trial of another worker may still die and come back to be retried
                continue  # (and every worker's report should hold its result)
            if reason:
                break
            if self.stop.base_first and self._base_pending(records):  # another worker measures it
                time.sleep(self.store.beat_s)
                continue
            if self.stop.generations and self._unfinished(records):  # the last group is still being run elsewhere
                self._waiting_note(records)
                time.sleep(self.store.beat_s)
                continue
            self._noted = None
            try:
                planned = self._plan(records)
            except NoProposal as exc:  # every point the planner can reach was tried
                stopped = StopReason("exhausted", exc.message)
                continue
            if self.stop.generations:
                numbers = [self._commit(proposal, queued=True).number for proposal in planned]
                self.on_event("queued", planner=planned[0].planner, trials=numbers)
                self.on_queued(numbers)
                continue
            proposal = planned[0]
            for note in proposal.notes:
                log.info("planner: %s", note)
            self.on_event("plan", planner=proposal.planner, changes=proposal.changes, reasoning=proposal.reasoning,
                          notes=proposal.notes, origin=proposal.origin,
                          choice=proposal.choice, candidates=proposal.candidates)
            if task is not None:
                task.update(description=f"trial {self.counted(records) + 1}/{self.stop.max_iterations} "
                                        f"[{proposal.planner}]")
            trial = self._current = self._commit(proposal)
            current = self.records()
            if self.counted(current) > self.stop.max_iterations:  # another worker took the last slot
                self._fail(trial, "budget taken by another worker", counted=False)
                continue
            if self._taken(trial, self.mine(current)):  # planned at the same moment as another worker's: it goes first
                self._fail(trial, "the same configuration was started by another worker", counted=False)
                continue
            why = self._run_trial(trial, proposal, records)
            ran, stopped = ran + (why is None), why or stopped
        records = self.records()
        self.on_state(records)
        self.on_trial(records)
        return self.outcome(records, reason, ran)

    def outcome(self, records: list[TrialRecord], reason: StopReason, ran: int) -> SearchOutcome:
        """The search's result over ``records``: its best, its base trial, why it stopped, the trials run here."""
        base = next((r for r in self.mine(records) if r.planner == "base" and r.state == "complete"), None)
        return SearchOutcome(records, self.best(records), base, reason, ran)

    def _run_claimed(self, claimed: list[tuple[Any, Proposal]], records: list[TrialRecord]) -> list[StopReason | None]:
        """Run claimed trials: one by one, or together through the objective's ``run_batch``."""
        if len(claimed) == 1 or not hasattr(self.objective, "run_batch"):
            return [self._run_trial(trial, proposal, records) for trial, proposal in claimed]
        whys: list[StopReason | None] = []
        try:
            try:
                with contextlib.ExitStack() as beats:
                    for trial, _ in claimed:
                        beats.enter_context(self.store.beating(trial.number))
                    done = self.objective.run_batch([(t.number, dict(p.params)) for t, p in claimed])
            except (KeyboardInterrupt, TrialAborted, StopSearch):
                raise
            except Exception as exc:  # what ``run`` raising it would do to one trial, to each: recorded as failed
                done = [exc] * len(claimed)
            for (trial, proposal), outcome in zip(claimed, done, strict=True):
                whys.append(self._run_trial(trial, proposal, records, outcome))
        except (KeyboardInterrupt, TrialAborted, StopSearch):
            for trial, _ in claimed[len(whys):]:
                self._give_back(trial)
            raise
        return whys

    def _run_trial(self, trial: Any, proposal: Proposal, records: list[TrialRecord],
                   done: dict[str, Any] | BaseException | None = None) -> StopReason | None:
        """Run one committed trial and tell everyone; the reason to stop when its objective refused to run it."""
        self._current = trial  # until its end is recorded (``run`` puts it back in the queue when that fails)
        try:
            with contextlib.ExitStack() as ending:  # Ctrl-C held from the study's tell to here (``_hold``)
                self._ending = ending
                try:
                    record = self._execute(trial, proposal, records, done)
                except StopSearch as exc:
                    self._current = None
                    return StopReason("objective", str(exc))
                finally:
                    self._ending = None
                self._current = None
                self.on_event("trial", **record.event_fields())
                now = self.records()
                self.on_state(now)
        finally:
            self._holding = False
        self.on_trial(now)
        return None

    def _base_pending(self, records: list[TrialRecord]) -> bool:
        """Whether the base trial is started but not finished (running, queued again, or awaiting its retry)."""
        bases = [r for r in self.mine(records) if r.planner == "base"]
        return not any(r.state == "complete" for r in bases) and any(r.pending for r in bases)

    def _done(self, records: list[TrialRecord]) -> int:
        """What the progress bar shows: the trials that used budget (a queued group's: once finished)."""
        done = self.counted(records)
        if self.stop.generations:
            done -= sum(1 for r in self.mine(records) if r.state in ("waiting", "running"))
        return min(done, self.stop.max_iterations)

    def _waiting_note(self, records: list[TrialRecord]) -> None:
        """Once a minute while a worker waits for others' trials (its budget used up, or the generation barrier):
        which trials and workers it waits for."""
        now = time.monotonic()
        if self._noted is None:  # the wait begins
            self._noted = now
        if now - self._noted < 60:
            return
        self._noted = now
        running = [r for r in self.mine(records) if r.state in ("waiting", "running")]
        log.warning("waiting for trial(s) %s of worker(s) %s (host:pid) to finish; Ctrl-C stops this worker, the "
                    "others go on (a worker on another host that died without heartbeats leaves its trial running: "
                    "start a worker there again, or move the study to a database server)",
                    [r.number for r in running][:10], sorted({r.worker for r in running if r.state == "running"})[:5])

    def _unfinished(self, records: list[TrialRecord]) -> bool:
        """Whether a trial is queued or still running (the barrier between ``generations``)."""
        return any(r.pending for r in self.mine(records))

    @staticmethod
    def _taken(trial: Any, records: list[TrialRecord]) -> bool:
        """Whether an earlier trial that finished, still runs or will run again has exactly ``trial``'s params: a
        dead worker's trial back in the queue (``waiting``), or failed by the heartbeat check with its retry not
        queued yet (``interrupted`` and still counted, ``records``). Without the last two a worker could plan the
        dead trial's params afresh while its retry waited, and both ran (seen once in the PostgreSQL stress test)."""
        plan = getattr(trial, "user_attrs", {}).get(R.A_PLAN, {})
        key = trial_key(trial.params, R.variant_of(plan))
        return any(r.number < trial.number and trial_key(r.params, r.variant) == key
                   and (r.state in ("complete", "pruned") or r.pending) for r in records)

    def _fail(self, trial: Any, reason: str, counted: bool) -> None:
        from optuna.trial import TrialState

        with self._write_held():
            trial.set_user_attr(R.A_OUTCOME, {"counted": counted, "accepted": False, "reason": reason,
                                              "decided_by": "loop"})
            self.study.tell(trial, state=TrialState.FAIL)


def base_failed(records: list[TrialRecord]) -> TrialRecord | None:
    """The base config's trial when it failed and none of it finished: the search has no reference."""
    bases = [r for r in records if r.planner == "base" and r.counted]
    if any(r.state in ("complete", "pruned", "running") for r in bases):
        return None
    return next((r for r in bases if r.state == "failed"), None)


def require_finished_trials(outcome: SearchOutcome) -> None:
    failed = base_failed(outcome.records)
    if failed is not None and outcome.best is None:
        raise AgentlabError(f"the base config ({failed.run_id}, the reference of every trial) failed: "
                            f"{R.reason_line(failed.reason).removeprefix('failed: ')}",
                            hint=f"its output is in trials/{failed.run_id}/ of the run folder; fix it, then start a "
                            "new search (a --resume of this one stops here again)")
    if outcome.best is None:
        raise AgentlabError("the search finished without a successful trial",
                            hint="see events.jsonl and each trial's folder under trials/ for the errors")
