"""What a trial of evolve runs (``Scorer``: the ``batch`` individuals a worker claims, scored together by
``score.score_batch``) and its workers (``agentlab evolve worker``, on this machine or any that reaches the store).
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from agentlab.core.errors import AgentlabError
from agentlab.core.process import die_with_parent
from agentlab.core.search.evaluator import Decision
from agentlab.core.search.loop import GroupPlanner, Hooks, SearchLoop, StopRules, TrialAborted, TrialFailed
from agentlab.core.search.planners import Planner
from agentlab.core.search.records import A_PLAN, TrialRecord
from agentlab.core.search.space import SearchSpace
from agentlab.evolve.population import FORMER, Population, located
from agentlab.evolve.score import ScoreSettings, score_batch

if TYPE_CHECKING:
    from agentlab.core.llm.types import Provider

log = logging.getLogger(__name__)


def individual(pop: Population, number: int) -> dict[str, Any]:
    """The individual trial ``number`` scores (its lineage, as bred; its folder as ``population.located`` finds it)."""
    ind = dict(pop.store.get(number).user_attrs[A_PLAN]["extra"]["individual"])
    return {**ind, "path": located(ind.get("path"), pop.attr("folder"), pop.attr(FORMER) or [])}


class Scorer:
    """The objective of evolve's trials: the scores of the individuals they hold (``plan.extra.individual``), the
    task score as the value."""

    def __init__(self, pop: Population, batch: int, providers: dict[str, Provider] | None = None):
        self.pop, self.batch, self.providers = pop, batch, providers
        self.settings: ScoreSettings | None = None  # read from the store at the first trial: the run stores them
        self.scoring: list[str] = []  # the last batch's individuals (``stopped``: those not recorded went back)

    def check(self, params: dict[str, Any]) -> list[str]:
        return []

    def run(self, number: int, params: dict[str, Any], report: Callable[[int, float], bool]) -> dict[str, Any]:
        out = self.run_batch([(number, params)])[0]
        if isinstance(out, BaseException):
            raise out
        return out

    def run_batch(self, items: list[tuple[int, dict[str, Any]]]) -> list[dict[str, Any] | BaseException]:
        individuals = [individual(self.pop, number) for number, _ in items]
        self.scoring = [ind["id"] for ind in individuals]
        log.info("scoring %s", ", ".join(self.scoring))
        if self.settings is None:
            self.settings = ScoreSettings(**self.pop.attr("settings"))
        try:
            scores = score_batch(self.settings, self.pop.attr("reference"), individuals, providers=self.providers)
        except AgentlabError as exc:
            # The scoring process's failure, not the individuals' (an adapter or the base model that does not load
            # here, a model not found): recorded as their score it was final, and a run of such failures once
            # finished as completed, exit 0, recommending what was scored before. The batch goes back to the queue
            # whole and the run or worker stops with this error (exit 1); a resume scores it. The individual's own
            # failure (an adapter that changes nothing) is a string in ``scores``, and final.
            raise TrialAborted(str(exc)) from exc
        out: list[dict[str, Any] | BaseException] = []
        for ind in individuals:
            result = scores[ind["id"]]
            out.append(TrialFailed(result) if isinstance(result, str) else
                       {**result, "value": result["task"], "scored_at": time.time()})
        return out


class Keep:
    """Every scored individual is kept: selection reads the fitness of the generation, not the loop's verdict."""

    def decide(self, value: float | None, metrics: dict[str, Any], params: dict[str, Any],
               best: TrialRecord | None) -> Decision:
        return Decision(True, "scored", "evolve")


def evolve_loop(pop: Population, batch: int, *, planner: GroupPlanner | None = None, max_iterations: int = 0,
                providers: dict[str, Provider] | None = None, **kwargs: Any) -> SearchLoop:
    """The search loop on the population's study: a run's (``planner`` proposing its generations) or a worker's
    (no planner: it only claims)."""
    return SearchLoop(study=pop.study, space=SearchSpace({}), base_params=None,
                      objective=Scorer(pop, batch, providers), planner=cast(Planner, planner), evaluator=Keep(),
                      stop=StopRules(max_iterations, generations=True, unit="individual"), metric="task", **kwargs)


def serve(pop: Population, *, batch: int, wait: bool, announce: Callable[[str], None] = log.info) -> int:
    """``agentlab evolve worker``: score waiting individuals until the run is finished (``wait``) or until nothing
    waits; returns how many this worker scored."""
    def scored(kind: str, **data: Any) -> None:
        if kind != "trial":
            return
        name = individual(pop, data["number"])["id"]
        metrics = data.get("metrics") or {}
        announce(f"{name}: " + (f"error: {data['reason'].removeprefix('failed: ')}" if data["state"] != "complete" else
                                f"task {metrics['task']:.3f}, coop {metrics['coop']:+.3f} "
                                f"({metrics['seconds']:.0f} s)"))

    loop = evolve_loop(pop, batch, hooks=Hooks(on_event=scored))
    try:
        return loop.drain(wait=lambda: wait and not pop.attr("finished"))
    except TrialAborted as exc:  # the scoring failed here, not an individual (Scorer): its batch is queued again
        raise exc.__cause__ or exc from None
    except KeyboardInterrupt:  # the loop gave the claimed batch back (SearchLoop._run_claimed)
        raise stopped(pop.url, pop, cast(Scorer, loop.objective).scoring) from None


def stopped(store: str, pop: Population | None, scoring: list[str]) -> AgentlabError:
    """What Ctrl-C (or SIGTERM) on `evolve worker` says, exit 130: a worker has no run folder to resume (the
    generic "nothing to resume; run the command again"), but what it was scoring (``scoring``, those of them not
    recorded) went back to the queue, for the run and its other workers; ``pop`` None: it was still waiting for the
    run to make its population."""
    if pop is None:
        message = f"interrupted while waiting for the run to create its population in {store}: nothing was claimed"
    else:
        try:
            states = pop.individuals()
        except Exception:  # the store cannot be read now: the loop gave back what it had not recorded
            states = {}
        back = [m for m in scoring if states.get(m, {}).get("state") not in ("complete", "fail")]
        message = (f"interrupted: {', '.join(back)}, which this worker was scoring, went back to the queue for the "
                   "run and its other workers" if back else "interrupted: this worker was scoring nothing")
    error = AgentlabError(message, hint=f"start a worker again to help the run: agentlab evolve worker --store {store}")
    error.exit_code = 130
    return error


def run_workers(store: str, n: int, batch: int, logs: Path, poll: Callable[[], None],
                say: Callable[[str], None], group: str = "") -> None:
    """``n`` worker processes here (``agentlab evolve worker --no-wait``), each with its share of the CPU threads and
    its own log in ``logs`` (``worker-I.GROUP.log``, GROUP the generation they score, ``gen-2``: each generation
    starts new ones, which appended to one worker-I.log, so the log a failure named held other processes' lines);
    ``poll()`` every 2 s until they have exited, and once more. A worker that failed is said with the ``error:`` line
    of its log (the CLI prints one per failure), else its log's last line."""
    threads = max(1, (os.cpu_count() or 1) // n)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = [sys.executable, "-m", "agentlab", "evolve", "worker", "--store", store, "--batch", str(batch),
               "--no-wait"]
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for i in range(n):
        name = f"worker-{i}{'.' + group if group else ''}"
        log_file = next(path for k in itertools.count(1)  # a resume's second start of a generation: .2
                        if not (path := logs / f"{name}{f'.{k}' if k > 1 else ''}.log").exists())
        with open(log_file, "a", encoding="utf-8") as handle:  # the child keeps its own descriptor; its own session:
            # a Ctrl-C reaches the run alone, which stops them once (finally), however it was stopped
            worker = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                      start_new_session=True, preexec_fn=die_with_parent(signal.SIGTERM))
            procs.append((worker, log_file))
    try:
        while any(p.poll() is None for p, _ in procs):
            time.sleep(2)
            poll()
    finally:  # the run stopped (Ctrl-C, SIGTERM, an error): its workers give their batches back (serve) and end
        running = [p for p, _ in procs if p.poll() is None]
        for p in running:
            p.terminate()
        for p in running:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
    for p, log_file in procs:
        if p.returncode:
            text = log_file.read_text(encoding="utf-8", errors="replace") if log_file.is_file() else ""
            lines = text.strip().splitlines()
            line = ([x for x in lines if x.startswith("error:")] or lines or ["no output"])[-1]
            say(f"a worker exited with {p.returncode} ({line}); its log: {log_file}; what it left is scored here")
    poll()

