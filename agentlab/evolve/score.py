"""Scoring individuals on the real model (docs/commands/evolve.md, "Fitness"): the logit probe (an adapter that changes
nothing is an error, never a score), the task part on the fitness split and cooperation in the seeds' debate. A
batch's adapters and the seeds' load onto one base model (one ``hf`` provider), so their requests share batches.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final, TypeVar

from agentlab.core.debate.answers import Answer, vote
from agentlab.core.debate.engine import Agent, Panel, adapter_panel, ask
from agentlab.core.debate.graph import DebateSettings, debate_rounds
from agentlab.core.debate.protocol import Kind, first_prompt
from agentlab.core.debate.task import Question, is_correct
from agentlab.core.errors import AgentlabError
from agentlab.core.harness import ScoreModelsSettings, score_models
from agentlab.core.llm.router import Router
from agentlab.core.llm.scoring import answer_logliks
from agentlab.core.models.load import adapter_logit_changes, load_causal_lm, logit_changes
from agentlab.core.vote import normalise

if TYPE_CHECKING:
    from agentlab.core.llm.types import Provider

CONCURRENCY = 48  # questions in flight at once: enough to fill the provider's batches, few enough to stay in time
STYLE: Final = "plain"  # round 0 asks the question alone: the seeds were trained on it alone (personas, skills)
T = TypeVar("T")


@dataclass
class ScoreSettings:
    """What every worker needs to score an individual; stored in the population store as JSON."""

    base_model: str
    device: str
    questions: list[dict[str, Any]]  # {id, line, question, answer, kind}
    seeds: dict[str, str]  # name -> adapter folder (absolute)
    max_tokens: int
    rounds: int
    replace: str
    decision: str
    probe: str
    min_change: float
    harness: dict[str, Any] | None = None  # task.harness: {task, include, fitness, test} (item indices)
    score: str = "accuracy"  # the task part: accuracy (greedy) or loglik (mean per-token log-likelihood of the gold)
    validation: list[dict[str, Any]] = field(default_factory=list)  # what picks the final individual
    coop: bool = True  # ask the cooperation debate (its fitness weight is not 0)


def task_of(questions: list[dict[str, Any]]) -> list[tuple[Question, Kind]]:
    """Stored question dicts as ``(Question, kind)`` pairs."""
    return [(Question(q["id"], q["line"], q["question"], q["answer"]), q["kind"]) for q in questions]


def _on_panel(panel: Panel, providers: dict[str, Provider] | None,
              work: Callable[[Router, asyncio.Semaphore], Awaitable[T]]) -> T:
    """``work(router, gate)`` on a router over ``panel``; then the router is closed, which frees its models (the next
    batch loads another adapter set)."""
    async def main() -> T:
        router = Router.for_run(panel.llm, None, providers=providers)
        try:
            return await work(router, asyncio.Semaphore(CONCURRENCY))
        finally:
            await router.aclose()

    return asyncio.run(main())


def text_answer(text: str, gold: str) -> str | None:
    """A text (not numeric) answer read from a reply: the gold answer when the reply's first line names it as whole
    words ("Paris.", "It is Paris"), else that first line; None for an empty reply."""
    lines = text.strip().splitlines()
    first = normalise(lines[0]) if lines else ""
    return gold if first and is_correct(first, gold) else first or None


async def _answers(router: Router, agent: Agent, task: list[tuple[Question, Kind]], max_tokens: int,
                   gate: asyncio.Semaphore, tick: Callable[[], None]) -> list[Answer]:
    async def one(q: Question, kind: Kind) -> Answer:
        async with gate:
            messages = [{"role": "user", "content": first_prompt(q.question, kind, STYLE)}]
            answer = await ask(router, agent, messages, kind, temperature=0.0, max_tokens=max_tokens)
        if kind == "text" and answer.error is None:  # a fact (a city, a continent): the gold named on line one
            answer.answer = text_answer(answer.text, q.answer)
        tick()
        return answer

    return list(await asyncio.gather(*(one(q, kind) for q, kind in task)))


async def _debate(router: Router, panel: Panel, q: Question, kind: Kind, first: list[Answer], s: ScoreSettings,
                  gate: asyncio.Semaphore, tick: Callable[[], None]) -> tuple[str | None, int]:
    """The vote of the last round of a debate whose round 0 is ``first``; and the tokens of the rounds asked."""
    async with gate:
        settings = DebateSettings(temperature=0.0, max_tokens=s.max_tokens, style=STYLE)
        rounds = await debate_rounds(router, panel, q.question, kind, s.rounds, settings, done=[first])
    tick()
    asked = sum(a.tokens for r in rounds[1:] for a in r)
    return vote(rounds[-1], s.decision).winner, asked


def _accuracy(predicted: list[str | None], task: list[tuple[Question, Kind]]) -> float:
    return sum(is_correct(p, q.answer) for p, (q, _) in zip(predicted, task, strict=True)) / len(task)


def reference(s: ScoreSettings, *, providers: dict[str, Provider] | None = None,
              tick: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """The seeds' own debate on the fitness questions: each seed's round-0 answers (and accuracy), the seed that
    individuals replace, and the reference debate's votes and accuracy."""
    if not s.coop:  # no cooperation part: no debate to compare against
        return {"round0": {}, "accuracy": {}, "replaced": None, "debate": [], "debate_accuracy": None,
                "skipped": True}
    task = task_of(s.questions)
    panel = adapter_panel(s.base_model, s.seeds, device=s.device, batch=64)

    async def work(router: Router, gate: asyncio.Semaphore) -> tuple[dict[str, list[Answer]],
                                                                  list[tuple[str | None, int]]]:
        own = await asyncio.gather(*(_answers(router, a, task, s.max_tokens, gate, tick) for a in panel.agents))
        first = {a.name: answers for a, answers in zip(panel.agents, own, strict=True)}
        votes = await asyncio.gather(*(_debate(router, panel, q, kind, [first[a.name][i] for a in panel.agents],
                                               s, gate, tick) for i, (q, kind) in enumerate(task)))
        return first, list(votes)

    first, votes = _on_panel(panel, providers, work)
    accuracy = {name: _accuracy([a.answer for a in answers], task) for name, answers in first.items()}
    names = list(s.seeds)
    replaced = names[0] if s.replace == "first" else min(reversed(names), key=lambda n: accuracy[n])
    debate = [v for v, _ in votes]
    return {"round0": {name: [a.to_dict() for a in answers] for name, answers in first.items()},
            "accuracy": accuracy, "replaced": replaced, "debate": debate,
            "debate_accuracy": _accuracy(debate, task)}


def score_batch(s: ScoreSettings, ref: dict[str, Any], individuals: list[dict[str, Any]], *,
                providers: dict[str, Provider] | None = None, tick: Callable[[], None] = lambda: None,
                ) -> dict[str, dict[str, Any] | str]:
    """Scores of each individual (``{"id", "path"}`` dicts) by id, or the error (a string) that stopped it."""
    start = time.perf_counter()
    paths = {ind["id"]: ind["path"] for ind in individuals}
    changes, out, logliks = _probe(s, paths, {"fitness": s.questions, "validation": s.validation}
                                   if s.score == "loglik" else {})
    live = [ind for ind in individuals if ind["id"] not in out]
    if not live:
        return out
    live_paths = {ind["id"]: ind["path"] for ind in live}
    task = task_of(s.questions)
    greedy = task if s.score == "loglik" else task + task_of(s.validation)  # accuracy picks on validation answers
    # the seeds (named as in the reference) and the individuals; a seed scored as an individual is the same adapter
    panel = adapter_panel(s.base_model, {**s.seeds, **live_paths}, device=s.device, batch=64)
    agents = {a.name: a for a in panel.agents}
    seeds = list(s.seeds)
    first_ref = {name: [Answer.from_dict(a) for a in answers] for name, answers in ref["round0"].items()}

    def seats(who: str, mine: list[Answer]) -> list[tuple[Agent, list[Answer]]]:
        """The debate with ``who`` in the replaced seed's seat: each seat's agent and its round-0 answers."""
        kept = [name for name in seeds if name != ref["replaced"]]
        return [(replace(agents[who], name=who if who not in kept else f"{who} (2)"), mine) if name == ref["replaced"]
                else (agents[name], first_ref[name]) for name in seeds]

    async def work(router: Router, gate: asyncio.Semaphore) -> tuple[list[list[Answer]],
                                                                  list[list[tuple[str | None, int]]]]:
        async def coop(ind: dict[str, Any], mine: list[Answer]) -> list[tuple[str | None, int]]:
            table = seats(ind["id"], mine)
            debate = Panel(panel.llm, [agent for agent, _ in table], panel.judge, panel.judge_source)
            return list(await asyncio.gather(*(
                _debate(router, debate, q, kind, [replace(first[i], agent=agent.name) for agent, first in table],
                        s, gate, tick) for i, (q, kind) in enumerate(task))))

        own = await asyncio.gather(*(_answers(router, agents[ind["id"]], greedy, s.max_tokens, gate, tick)
                                     for ind in live))
        if not s.coop:
            return list(own), [[] for _ in live]
        votes = await asyncio.gather(*(coop(ind, mine[:len(task)]) for ind, mine in zip(live, own, strict=True)))
        return list(own), list(votes)

    own, votes = _on_panel(panel, providers, work)
    seconds = round((time.perf_counter() - start) / len(live), 2)
    # the task part from lm-eval on the fitness items
    harness = harness_scores(s, live_paths, s.harness["fitness"]) if s.harness is not None else {}
    for ind, both, debate in zip(live, own, votes, strict=True):
        mine, held = both[:len(task)], both[len(task):]
        answers = [a.answer for a in mine]
        winners = [w for w, _ in debate]
        task_acc = _accuracy(answers, task)
        coop_acc = _accuracy(winners, task) if s.coop else None
        row: dict[str, Any] = {
            "task": round(task_acc, 4), "accuracy": round(task_acc, 4),
            "coop": round(coop_acc - ref["debate_accuracy"], 4) if coop_acc is not None else 0.0,
            "coop_accuracy": round(coop_acc, 4) if coop_acc is not None else None,
            "probe_change": round(changes[ind["id"]], 5),
            "answers": [normalise(a) if a is not None else None for a in answers],
            "correct": [is_correct(a, q.answer) for a, (q, _) in zip(answers, task, strict=True)],
            "debate": winners, "replaced": ref.get("replaced"),
            "tokens": sum(a.tokens for a in both) + sum(t for _, t in debate),
            "errors": sum(a.error is not None for a in both), "seconds": seconds, "batch": len(live)}
        if s.score == "loglik":
            mine_ll = logliks[ind["id"]]
            row.update(task=_mean(mine_ll["fitness"]), loglik=mine_ll["fitness"],
                       validation=_mean(mine_ll["validation"]) if s.validation else None)
        elif s.validation:
            row["validation"] = round(_accuracy([a.answer for a in held], task_of(s.validation)), 4)
        if ind["id"] in harness:
            h = harness[ind["id"]]
            row.update(task=h["value"], answers=h["items"], correct=[v >= 1 for v in h["items"]], harness=h["scores"])
        out[ind["id"]] = row
    return out


def harness_scores(s: ScoreSettings, adapters: dict[str, str], items: list[int]) -> dict[str, dict[str, Any]]:
    """Each adapter on ``s.harness``'s lm-eval task, items ``items``: the mean of each task's first metric
    (``value``), its per-item values (``items``) and every metric lm-eval reported (``scores``)."""
    h = s.harness or {}
    scored = score_models(s.base_model, adapters, [h["task"]], settings=ScoreModelsSettings(
        include=h.get("include", []), items=items, device=s.device, probe=s.probe, min_change=s.min_change))
    return {name: {"value": round(scored.mean(name), 4), "items": scored.per_item(name),
                   "scores": [x.to_dict() for x in scored.rows[name]]} for name in adapters}


def _mean(values: list[float]) -> float:
    return round(sum(values) / len(values), 5) if values else float("nan")


def _probe(s: ScoreSettings, paths: dict[str, str], splits: dict[str, list[dict[str, Any]]]
           ) -> tuple[dict[str, float], dict[str, dict[str, Any] | str], dict[str, dict[str, list[float]]]]:
    """Each adapter's largest logit change on the probe, the error of each that changes nothing, and, for each that
    passes, the per-token log-likelihood of the gold answer of every question of each split (one model load, one
    forward per batch of questions). An adapter that does not load (or the base model under it) is no error of the
    individual's but of the process scoring it (a folder it does not reach, a model not found): an ``AgentlabError``
    naming the first such adapter, which stops the scoring (``worker.Scorer``), not a score."""
    try:
        model, tokenizer = load_causal_lm(s.base_model, device=s.device, adapters=paths)
    except AgentlabError as load_error:
        # each alone, to name the one that does not load (or to find that they load only one at a time)
        changes: dict[str, float] = {}
        for name, path in paths.items():
            try:
                changes.update(logit_changes(s.base_model, {name: path}, s.probe, device=s.device))
            except AgentlabError as exc:
                raise AgentlabError(f"cannot score {name}: {exc.message}",
                                    hint="nothing was recorded for it: make the base model and its adapter folder "
                                    "reachable here at the paths the store keeps, then resume the run (agentlab "
                                    "evolve run --resume RUN) or start the worker again") from exc
        if splits:  # each loads alone, not all together: a second load would fail again
            raise load_error
        return changes, _unchanged(s, changes), {}
    changes = adapter_logit_changes(model, tokenizer, list(paths), s.probe)
    errors = _unchanged(s, changes)
    logliks: dict[str, dict[str, list[float]]] = {}
    for name in [name for name in changes if name not in errors]:
        model.set_adapter(name)
        logliks[name] = {}
        for split, questions in splits.items():
            pairs = [(q["question"], q["answer"]) for q in questions]
            logliks[name][split] = [round(total / max(n, 1), 5) for total, n in answer_logliks(model, tokenizer, pairs)]
    del model
    return changes, errors, logliks


def _unchanged(s: ScoreSettings, changes: dict[str, float]) -> dict[str, dict[str, Any] | str]:
    """The error of each adapter whose largest logit change on the probe is below ``s.min_change``."""
    return {name: f"the adapter changes nothing: its largest logit change on the probe is {change:.3g} (below "
            f"min_logit_change {s.min_change:g})" for name, change in changes.items() if change < s.min_change}


def test_accuracy(s: ScoreSettings, questions: list[dict[str, Any]], adapters: dict[str, str], *,
                  providers: dict[str, Provider] | None = None, tick: Callable[[], None] = lambda: None,
                  ) -> dict[str, dict[str, Any]]:
    """Each adapter's greedy accuracy on ``questions`` (the test split, which selection never saw); with
    ``s.harness``, its lm-eval score on the test items instead."""
    if s.harness is not None:
        scored = harness_scores(s, adapters, s.harness["test"])
        return {name: {"correct": round(sum(r["items"]), 4), "total": len(r["items"]), "accuracy": r["value"]}
                for name, r in scored.items()}
    task = task_of(questions)
    panel = adapter_panel(s.base_model, adapters, device=s.device, batch=64)

    async def work(router: Router, gate: asyncio.Semaphore) -> list[list[Answer]]:
        return list(await asyncio.gather(*(_answers(router, a, task, s.max_tokens, gate, tick)
                                           for a in panel.agents)))

    out: dict[str, dict[str, Any]] = {}
    for agent, answers in zip(panel.agents, _on_panel(panel, providers, work), strict=True):
        items = [is_correct(a.answer, q.answer) for a, (q, _) in zip(answers, task, strict=True)]
        out[agent.name] = {"correct": sum(items), "total": len(task), "accuracy": round(sum(items) / len(task), 4),
                           "items": items}
    if s.score == "loglik":  # every adapter on the test split scored, whatever its probe
        _, _, logliks = _probe(replace(s, min_change=0.0), adapters, {"test": questions})
        for name, split in logliks.items():
            out[name]["loglik"] = _mean(split["test"])
            out[name]["loglik_items"] = split["test"]
    return out
