"""`agentlab debate eval`: the debate against its baselines on the same questions and the same agents.

For every question: each agent alone (its round-0 answer), the majority of the round-0 answers, self-consistency at
equal compute (the majority of agents x (rounds + 1) independent samples at ``eval.sc_temperature``, cycling over
the agents), the debate's vote after each round and every decision rule (``core/debate/rules.py``), under each
visibility of ``eval.visibilities`` and the configured ``visibility`` when that list leaves it out (round 0 is asked
once and shared; each visibility debates on from it). Rule
tokens count only the rounds the rule needs (``on_disagreement`` on a unanimous round 0: round 0 alone).
Accuracy with its 95% Wilson interval and tokens (prompt + completion) per question; an unparseable answer is
wrong. ``eval.concurrency`` questions run at once, so an in-process backend batches their requests.

Run folder (``runs/debate-eval/<timestamp>-<name>/``): ``questions.jsonl`` (one record per finished question,
appended and flushed: what ``--resume`` skips), ``adapters.json`` (the fingerprint of each adapter's weights when
the run started: a resume whose adapter changed on disk since is refused), ``results.json`` (the table; its
``seconds`` are every session's: ``earlier_seconds``), ``report.md``; run.json's ``eval_questions`` (``ASKED``): the
questions the run asks, as its last session started (a resume's ``--limit`` may not go below it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentlab.core.config import load_config
from agentlab.core.debate.answers import Answer, Round, ballots
from agentlab.core.debate.engine import Panel, judge, samples
from agentlab.core.debate.graph import DebateSettings, debate_rounds
from agentlab.core.debate.rules import RULES, decide
from agentlab.core.debate.task import Question, answer_kind, is_correct, load_task
from agentlab.core.errors import AgentlabError, InputError, UsageError
from agentlab.core.llm.router import Router
from agentlab.core.progress import NullProgress, Progress
from agentlab.core.runs import RunDir, atomic_write_text, durable_append, jsonl_lines, read_json
from agentlab.core.vote import tally, wilson_interval
from agentlab.debate.agents import Where, prompt_style, warn_raised_tokens
from agentlab.debate.config import DebateConfig
from agentlab.debate.report import render_eval
from agentlab.debate.run import (
    check_adapters,
    earlier_seconds,
    final_decision,
    load_panel,
    record_adapters,
)

if TYPE_CHECKING:
    from agentlab.core.llm.router import Router
    from agentlab.core.llm.types import Provider

log = logging.getLogger(__name__)
RECORDS = "questions.jsonl"
ASKED = "eval_questions"  # run.json: the questions the run asks, as its last session started (``check_limit``)


def prepare_eval(cfg: DebateConfig, *, where: Where | None = None) -> dict[str, Any]:
    if cfg.eval.task is None:
        raise UsageError("no task file", hint="pass --task FILE (make one with `agentlab debate make-task`)")
    if cfg.judge is not None and cfg.decision != "judge":
        raise UsageError(f"judge: {cfg.judge!r} would never be asked: `debate eval` asks a judge only with decision "
                         f"judge (this one is {cfg.decision})",
                         hint="add --decision judge, or drop the judge (--judge, or judge: in the -c file)")
    task = load_task(cfg.eval.task, cfg.eval.limit)
    panel = load_panel(cfg, batch=max(1, len(cfg.agents) or 3) * cfg.eval.concurrency, where=where)
    warn_raised_tokens(cfg, panel, {answer_kind(q, cfg.kind) for q in task}, judge=cfg.decision == "judge")
    return {"panel": panel, "task": task}


def visibilities(cfg: DebateConfig) -> list[str]:
    """The visibilities the eval debates under: ``eval.visibilities``, and the configured one."""
    shown: list[str] = list(dict.fromkeys(cfg.eval.visibilities))
    return shown if cfg.visibility in shown else [*shown, cfg.visibility]


def suffix(cfg: DebateConfig, visibility: str) -> str:
    return f" [{visibility}]" if len(visibilities(cfg)) > 1 else ""


def default_method(cfg: DebateConfig) -> str:
    """The table row of the configured rule and visibility (``"default": true`` in results.json)."""
    return rule_row(cfg, cfg.decision_rule, cfg.visibility)


async def score_question(router: Router, panel: Panel, cfg: DebateConfig, q: Question) -> dict[str, Any]:
    """Debate one question under every visibility (round 0 asked once, shared) and score every method and rule."""
    kind = answer_kind(q, cfg.kind)
    n = len(panel.agents) * (cfg.eval_rounds + 1)
    style = prompt_style(cfg, panel, kind)
    settings = DebateSettings(temperature=cfg.temperature, max_tokens=cfg.max_tokens, style=style)
    first, sc = await asyncio.gather(
        debate_rounds(router, panel, q.question, kind, 0, settings),
        samples(router, panel, q.question, kind, n, temperature=cfg.eval.sc_temperature,
                max_tokens=cfg.max_tokens, style=style))
    shown = visibilities(cfg)
    debates = await asyncio.gather(*(debate_rounds(router, panel, q.question, kind, cfg.eval_rounds,
                                                   replace(settings, visibility=v), done=first) for v in shown))
    verdicts: dict[str, list[Answer | None]] = {v: [None] * (cfg.eval_rounds + 1) for v in shown}
    if cfg.decision == "judge":
        for v, rounds in zip(shown, debates, strict=True):
            verdicts[v] = list(await asyncio.gather(*(judge(router, panel, q.question, kind, r,
                                                            max_tokens=cfg.max_tokens) for r in rounds)))
    methods = score_methods(cfg, q.answer, first[0], sc, dict(zip(shown, debates, strict=True)), verdicts)
    return {"id": q.id, "line": q.line, "question": q.question, "gold": q.answer, "kind": kind, "methods": methods,
            "rounds": {v: [[a.to_dict() for a in r] for r in rounds] for v, rounds in zip(shown, debates,
                                                                                         strict=True)},
            "self_consistency": [a.to_dict() for a in sc],
            "judge": {v: [x.to_dict() if x is not None else None for x in verdicts[v]] for v in shown}}


def rule_row(cfg: DebateConfig, rule: str, visibility: str) -> str:
    """A rule's table row: ``vote`` decides on round 0, the same under every visibility, so it has one row."""
    return "rule vote" if rule == "vote" else f"rule {rule}{suffix(cfg, visibility)}"


def score_methods(cfg: DebateConfig, gold: str, first: Round, sc: Round, debates: dict[str, list[Round]],
                  verdicts: dict[str, list[Answer | None]]) -> dict[str, dict[str, Any]]:
    """Every method's answer, correctness and tokens for one question, from its finished rounds: each agent alone,
    the round-0 majority, self-consistency, the debate's vote after each round and every rule, per visibility.
    Pure, so a finished run is scored again from its transcripts (a new rule needs no model call)."""
    methods: dict[str, dict[str, Any]] = {}

    def add(name: str, predicted: str | None, tokens: int) -> None:
        methods[name] = {"answer": predicted, "correct": is_correct(predicted, gold), "tokens": tokens}

    for answer in first:
        add(f"agent {answer.agent}", answer.answer, answer.tokens)
    add("majority of round 0", tally(ballots(first), "majority").winner, _tokens(first))
    add("self-consistency", tally(ballots(sc), "majority").winner, _tokens(sc))
    shown = list(debates)
    for v, rounds in debates.items():
        spent: list[int] = []
        for answers in rounds:
            spent.append((spent[-1] if spent else 0) + _tokens(answers))
        for k, verdict in enumerate(verdicts[v]):
            if k == 0 and v != shown[0]:
                continue  # round 0 is the same under every visibility
            name = "debate round 0" if k == 0 else f"debate round {k}{suffix(cfg, v)}"
            add(name, final_decision(cfg.decision, rounds[: k + 1], verdict)["answer"],
                spent[k] + (verdict.tokens if verdict is not None else 0))
        for rule in RULES:
            if rule == "vote" and v != shown[0]:
                continue
            decision = decide(rule, rounds, "reconcile" if cfg.decision == "judge" else cfg.decision)
            add(rule_row(cfg, rule, v), decision.winner, spent[decision.rounds_used - 1])
    return methods


def rescore(cfg: DebateConfig, record: dict[str, Any]) -> dict[str, Any]:
    """``record`` (a line of questions.jsonl) with its methods scored again from its stored transcripts."""
    try:
        debates = {v: [[Answer.from_dict(a) for a in answers] for answers in rounds]
                   for v, rounds in record["rounds"].items()}
        sc = [Answer.from_dict(a) for a in record["self_consistency"]]
        verdicts = {v: [Answer.from_dict(x) if x else None for x in record["judge"][v]] for v in debates}
        first = next(iter(debates.values()))[0]
    except (KeyError, TypeError, IndexError, StopIteration):
        return record  # not a transcript this version wrote: its stored scores stand
    return {**record, "methods": score_methods(cfg, record["gold"], first, sc, debates, verdicts)}


def _tokens(answers: Round) -> int:
    return sum(a.tokens for a in answers)


def read_records(path: Path) -> tuple[dict[int, dict[str, Any]], bool]:
    """The scored questions of a questions.jsonl by id, and whether the file holds anything else: a torn last line
    (a kill mid-write, stray bytes), which ``load_records`` rewrites away; that question is asked again. A damaged
    line before the last is no kill mid-write (every record is appended whole, and flushed): ``InputError`` naming
    it, rather than drop a scored question without a word."""
    lines = jsonl_lines(path)
    records: dict[int, dict[str, Any]] = {}
    for number, record in lines:
        if isinstance(record, dict) and isinstance(record.get("id"), int):
            records[record["id"]] = record
        elif number != lines[-1][0]:
            raise InputError(f"{path}:{number}: not a scored question (a damaged line, not the last one, which a kill "
                             "mid-write tears); nothing was written",
                             hint=f"put the line back as the run wrote it, or delete that line ({path.name}:{number}): "
                             "--resume then asks its question again")
    return records, len(records) != len(lines)


def load_records(run_dir: RunDir) -> dict[int, dict[str, Any]]:
    """``read_records``, the file rewritten (atomically) without what is no record first: a record appended after a
    torn line would join it into one invalid line, lost to every later resume."""
    path = run_dir.file(RECORDS)
    records, rest = read_records(path)
    if rest:
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records.values()))
    return records


def check_task(task: list[Question], records: dict[int, dict[str, Any]], path: Path | None) -> None:
    """Refuse a resume whose task file no longer asks what the run scored (edited in place: the same path, other
    questions): its new questions would be mixed with the old ones' scores."""
    for q in task:
        record = records.get(q.id)
        if record is None or "question" not in record or (record["question"], str(record.get("gold"))) == (
                q.question, q.answer):
            continue
        raise UsageError(f"{path}:{q.line}: the task file changed since this run scored that line (it asked "
                         f"{record.get('question')!r}, answer {record.get('gold')!r}; now {q.question!r}, answer "
                         f"{q.answer!r}); nothing was written",
                         hint="put the task file back as the run read it, or score the new one in a new run "
                         "(without --resume)")


def check_kept(cfg: DebateConfig, task: list[Question], records: dict[int, dict[str, Any]], folder: Path) -> None:
    """Refuse a resume that asks fewer questions than the run scored (a lower ``--limit``, or a task file cut short):
    its results.json and report.md would drop the scored ones that questions.jsonl keeps."""
    asked = {q.id for q in task}
    beyond = sorted(int(r.get("line") or i + 1) for i, r in records.items() if i not in asked)
    if not beyond:
        return
    lines = f"line {beyond[0]}" if len(beyond) == 1 else f"lines {beyond[0]}-{beyond[-1]}"
    needed = max(records) + 1
    limited = cfg.eval.limit is not None and cfg.eval.limit < needed
    why = f"--limit {cfg.eval.limit} would leave out" if limited else f"{cfg.eval.task} now holds {len(task)}, without"
    raise UsageError(f"{folder}: already scored {len(records)} questions; {why} {lines} of them (a resume can only "
                     "extend a run); nothing was written",
                     hint=(f"resume with --limit {needed} or more, or without --limit" if limited else
                           "put the task file back as the run read it") + "; a smaller eval is a new run (without "
                     "--resume)")


def check_limit(cfg: DebateConfig, folder: Path) -> None:
    """Refuse a resume whose ``--limit`` asks fewer questions than the run asked when it last started (``ASKED`` in
    its run.json), though it scored only a few so far: the run would be marked completed on fewer questions. Questions
    appended to the task file since are not the run's: a limit that leaves them out is no shrink. A run made before
    the count was kept has only ``check_kept``'s rule (no fewer than it scored)."""
    if cfg.eval.task is None or cfg.eval.limit is None:
        return
    asked = read_json(folder / "run.json").get(ASKED)
    if not isinstance(asked, int) or isinstance(asked, bool) or cfg.eval.limit >= asked:
        return
    saved = load_config(folder / "config.yaml", DebateConfig).eval.limit
    own = f"--limit {saved}" if saved is not None else f"no --limit (all {asked} questions of {cfg.eval.task} then)"
    raise UsageError(f"{folder}: --limit {cfg.eval.limit} would shrink the run, which asks {asked} questions "
                     f"({own}); a resume can only extend a run; nothing was written",
                     hint=f"resume without --limit (it keeps the run's {asked}), or with --limit {asked} or more; "
                     "a smaller eval is a new run (without --resume)")


def check_eval_resume(cfg: DebateConfig, folder: Path) -> None:
    """Before anything is written: the resumed run's adapters are the ones it started with (``check_adapters``), its
    task file still asks the questions it scored, and every one of them (``check_kept``), and ``--limit`` asks no
    fewer than the run's own (``check_limit``)."""
    if cfg.eval.task is None or cfg.rounds == 0:
        return
    check_adapters(cfg, folder)
    task, records = load_task(cfg.eval.task, cfg.eval.limit), read_records(folder / RECORDS)[0]
    check_task(task, records, cfg.eval.task)
    check_kept(cfg, task, records, folder)
    check_limit(cfg, folder)


def score_table(records: list[dict[str, Any]], default: str | None = None) -> list[dict[str, Any]]:
    """One row per method, in the order the methods appear: correct / total, accuracy, Wilson CI, tokens; the row
    named ``default`` (the configured rule) has ``"default": true``."""
    order: list[str] = []
    for record in records:
        order += [m for m in record["methods"] if m not in order]
    rows = []
    for method in order:
        scored = [r["methods"][method] for r in records if method in r["methods"]]
        correct, total = sum(s["correct"] for s in scored), len(scored)
        rows.append({"method": method, "correct": correct, "total": total,
                     "accuracy": round(correct / total, 4) if total else 0.0,
                     "ci": [round(x, 4) for x in wilson_interval(correct, total)],
                     "unparsed": sum(s["answer"] is None for s in scored),
                     "tokens_per_question": round(sum(s["tokens"] for s in scored) / total, 1) if total else 0.0,
                     "default": method == default})
    return rows


def run_eval(cfg: DebateConfig, run_dir: RunDir, *, panel: Panel, task: list[Question],
             providers: dict[str, Provider] | None = None, progress: Progress | None = None,
             announce: Callable[[str], None] | None = None) -> dict[str, Any]:
    progress = progress or NullProgress()
    announce = announce or log.info
    saved = read_records(run_dir.file(RECORDS))[0]  # run_command checked both already
    check_task(task, saved, cfg.eval.task)
    check_kept(cfg, task, saved, run_dir.path)
    record_adapters(run_dir, cfg)
    run_dir.update_info(**{ASKED: len(task)})  # what a later --resume --limit may not go below
    records = {k: rescore(cfg, r) for k, r in load_records(run_dir).items()}  # the current rules' scores
    todo = [q for q in task if q.id not in records]
    if records:
        announce(f"resuming: {len(records)} of {len(task)} questions already scored")
    if cfg.visibility not in cfg.eval.visibilities:
        announce(f"visibility {cfg.visibility} debated too: the configured visibility (its row is the default) is "
                 f"not in eval.visibilities ({', '.join(dict.fromkeys(cfg.eval.visibilities))})")
    bar = progress.task("questions", total=len(task))
    bar.update(completed=len(task) - len(todo))
    start, before = time.perf_counter(), earlier_seconds(run_dir, "question", "question_failed")
    failed: list[tuple[Question, list[str]]] = []

    def spent() -> float:  # every session's seconds (``earlier_seconds``): each question event keeps them so far
        return round(before + time.perf_counter() - start, 2)

    async def main() -> None:
        router = Router.for_run(panel.llm, run_dir, providers=providers)
        gate = asyncio.Semaphore(cfg.eval.concurrency)

        async def one(q: Question) -> None:
            async with gate:
                record = await score_question(router, panel, cfg, q)
            errors = failed_calls(record)
            if errors:  # a timeout or a dead route is not a wrong answer: not recorded, asked again on resume
                failed.append((q, errors))
                run_dir.event("question_failed", id=q.id, line=q.line, calls=len(errors), error=errors[0],
                              seconds=spent())
                bar.advance()
                return
            durable_append(run_dir.file(RECORDS), run_dir.scrub(json.dumps(record)) + "\n")
            records[q.id] = record
            last = default_method(cfg)
            run_dir.event("question", id=q.id, line=q.line, gold=q.answer,
                          debate=record["methods"][last]["answer"], correct=record["methods"][last]["correct"],
                          seconds=spent())
            bar.advance()

        try:
            await asyncio.gather(*(one(q) for q in todo))
        finally:
            await router.aclose()

    asyncio.run(main())
    ordered = [records[q.id] for q in task if q.id in records]
    results = {"task": str(cfg.eval.task), "questions": len(ordered), "agents": [a.name for a in panel.agents],
               "rounds": cfg.eval_rounds, "decision": cfg.decision, "rule": cfg.decision_rule,
               "visibility": cfg.visibility,
               "visibilities": visibilities(cfg), "default": default_method(cfg),
               "sc_samples": len(panel.agents) * (cfg.eval_rounds + 1),
               "sc_temperature": cfg.eval.sc_temperature, "table": score_table(ordered, default_method(cfg)),
               "seconds": spent()}
    first = ""
    if failed:
        q, error = first_failure(failed)
        first = f"line {q.line}: {error}"
        results["unscored"] = {"questions": len(failed), "of": len(task), "lines": sorted(f[0].line for f in failed),
                               "first_error": first}
    run_dir.save_results(results)
    run_dir.save_report(render_eval(results, resume=f"agentlab debate eval --resume {run_dir.path}"))
    if failed:
        raise AgentlabError(f"{len(failed)} of {len(task)} questions were not scored: a model call failed (first: "
                            f"{first}); results.json holds the {len(ordered)} scored",
                            hint=f"fix the route (see llm_calls.jsonl), then `agentlab debate eval --resume "
                                 f"{run_dir.path}` asks only those again")
    return results


def first_failure(failed: list[tuple[Question, list[str]]]) -> tuple[Question, str]:
    """The failure to name of the questions not scored (each with its calls' errors): the first in task order that
    is not only a call refused by an open circuit breaker (``circuit_open``: what the failures before it caused,
    often in a question that ended first), else the first question's first."""
    ordered = sorted(failed, key=lambda f: f[0].line)
    for q, errors in ordered:
        for error in errors:
            if not _circuit_open(error):
                return q, error
    return ordered[0][0], ordered[0][1][0]


def _circuit_open(error: str) -> bool:
    """True when every model of the failed call was refused by its open circuit breaker ("every model failed (a:
    circuit_open)"), rather than failing itself."""
    tried = re.search(r"every model failed \(([^()]*)\)", error)
    return tried is not None and all(part.endswith(": circuit_open") for part in tried.group(1).split("; "))


def failed_calls(record: dict[str, Any]) -> list[str]:
    """The errors of the model calls behind one question's record (rounds, self-consistency samples, judge)."""
    answers = [a for rounds in record["rounds"].values() for r in rounds for a in r] + record["self_consistency"]
    answers += [j for verdicts in record["judge"].values() for j in verdicts if j is not None]
    return [str(a["error"]) for a in answers if a.get("error")]
