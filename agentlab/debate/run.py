"""`agentlab debate`: agents (persona adapters on one base, or routed models) debate one question.

Run folder (``runs/debate/<timestamp>-<name>/``)::

    config.yaml, run.json, events.jsonl, llm_calls.jsonl   as every command (events: one ``round`` per round)
    transcript.jsonl   every answer: round, agent, text, parsed answer, confidence, tokens, seconds; a round's
                       answers are appended and flushed when the round finishes
    debate.sqlite      the LangGraph checkpoints of the debate's graph (``core/debate/graph.py``), saved after every
                       node: what --resume continues from (a run killed mid-round asks that round again)
    results.json       the votes per round, the final answer, the judge's reply, tokens
    report.md          the debate as text, the votes per round, agreement.png
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentlab.core.debate.answers import Answer, Round, all_failed, vote
from agentlab.core.debate.engine import Agent, Panel, ask
from agentlab.core.debate.graph import DebateSettings, debate_graph
from agentlab.core.debate.protocol import question_kind
from agentlab.core.debate.rules import decide
from agentlab.core.errors import UsageError
from agentlab.core.llm.config import load_llm_config
from agentlab.core.llm.router import Router
from agentlab.core.models.adapters import persona_adapters
from agentlab.core.progress import NullProgress, Progress
from agentlab.core.runs import RunDir, atomic_write_text, durable_append
from agentlab.debate.agents import build_panel, prompt_style
from agentlab.debate.config import DEBATING_RULE, AgentSpec, DebateConfig
from agentlab.debate.report import agreement_plot, render_report

if TYPE_CHECKING:
    from agentlab.core.llm.types import Provider

log = logging.getLogger(__name__)
TRANSCRIPT = "transcript.jsonl"
CHECKPOINT = "debate.sqlite"
CHECK_QUESTION = "What is 2 plus 3?"


def load_panel(cfg: DebateConfig, *, batch: int = 8) -> Panel:
    """The routing config (when an agent or the judge names a model) and the panel; the default personas, when the
    config names no agents, are written into ``cfg.agents`` so config.yaml (and a resume) names them."""
    if not cfg.agents:
        cfg.agents = [AgentSpec(adapter=path) for path in persona_adapters()]
    needs_llm = cfg.llm is not None or cfg.judge is not None or any(a.model is not None for a in cfg.agents)
    llm = load_llm_config(cfg.llm) if needs_llm else None
    return build_panel(cfg, llm, batch=batch)


def check_rounds(cfg: DebateConfig) -> None:
    """Debate rounds asked under rule vote, which decides on round 0 alone: a usage error (debate and its eval)."""
    if cfg.decision_rule == "vote" and cfg.rounds:
        raise UsageError(f"rounds: {cfg.rounds} debate rounds asked, but rule vote decides on round 0 alone and asks "
                         "none", hint=f"drop --rounds for the vote, or pick a rule that debates: --rule "
                         f"{DEBATING_RULE} (the best measured), last_round, all_rounds, on_disagreement")


def prepare(cfg: DebateConfig) -> dict[str, Any]:
    """Everything checked before a run folder exists: the question, every adapter folder (a PEFT one), the base model
    and every routed name."""
    if not cfg.text or not cfg.text.strip():
        raise UsageError("no question to debate", hint='pass --topic "..." (or topic: in the -c file)')
    check_rounds(cfg)
    kind = question_kind(cfg.text, cfg.kind)
    if cfg.judge is not None and cfg.rounds != 0 and cfg.decision != "judge" and kind != "open":
        # the dry run (rounds 0) does ask it; a debate asks it only to decide, or to sum up an open topic
        raise UsageError(f"judge: {cfg.judge!r} would never be asked: this {kind} question is decided by the "
                         f"{cfg.decision} vote, and a judge only decides with decision judge (or sums up an open "
                         "topic)", hint="add --decision judge, or drop the judge (--judge, or judge: in the -c file)")
    return {"panel": load_panel(cfg)}


def check(cfg: DebateConfig, panel: Panel, providers: dict[str, Provider] | None = None, *,
          judge: bool = True) -> dict[str, Any]:
    """The dry run (``--rounds 0``): every agent and (``judge``) the judge answer one short question; nothing is
    written."""
    everyone = [*panel.agents, *([Agent("judge", panel.judge, {}, False, panel.judge_source)] if judge else [])]

    async def main() -> list[Answer]:
        router = Router.for_run(panel.llm, None, providers=providers)
        try:
            messages = [{"role": "user", "content": CHECK_QUESTION}]
            return list(await asyncio.gather(*(ask(router, agent, messages, "numeric", temperature=0.0,
                                                    max_tokens=16) for agent in everyone)))
        finally:
            await router.aclose()

    replies = asyncio.run(main())
    rows = [{"agent": agent.name, "source": agent.source, "ok": reply.error is None and bool(reply.text.strip()),
             "reply": reply.text.strip()[:80], "error": reply.error, "seconds": reply.seconds}
            for agent, reply in zip(everyone, replies, strict=True)]
    lines = [f"{'OK  ' if r['ok'] else 'FAIL'} {r['agent']} ({r['source']}): "
             + (repr(r["reply"]) if r["ok"] else str(r["error"] or "empty reply")) for r in rows]
    failed = sum(not r["ok"] for r in rows)
    lines.append(f"dry run: {len(rows) - failed}/{len(rows)} answered; nothing written")
    return {"message": "\n".join(lines), "agents": rows, "ok": failed == 0}


def load_transcript(run_dir: RunDir, agents: list[str]) -> list[Round]:
    """The finished rounds of a run's transcript.jsonl: consecutive from round 0, each with every agent. A torn last
    line or a round cut short is dropped (the file is rewritten without it), so those answers are asked again."""
    path = run_dir.file(TRANSCRIPT)
    if not path.is_file():
        return []
    by_round: dict[int, dict[str, Answer]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("round"), int) and record.get("agent") in agents:
            by_round.setdefault(record["round"], {})[record["agent"]] = Answer.from_dict(record)
    rounds: list[Round] = []
    while len(rounds) in by_round and set(by_round[len(rounds)]) == set(agents):
        rounds.append([by_round[len(rounds)][name] for name in agents])
    kept = [json.dumps({"round": k, **a.to_dict()}) for k, answers in enumerate(rounds) for a in answers]
    if len(kept) != sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip()):
        atomic_write_text(path, "".join(line + "\n" for line in kept))
    return rounds


def append_round(run_dir: RunDir, number: int, answers: Round, name: str = TRANSCRIPT) -> None:
    """Append one round's answers and flush them to disk."""
    lines = "".join(run_dir.scrub(json.dumps({"round": number, **a.to_dict()})) + "\n" for a in answers)
    durable_append(run_dir.file(name), lines)


def describe_round(number: int, answers: Round, method: str) -> str:
    t = vote(answers, method)
    shown = ", ".join(f"{a.agent}: {a.shown}"
                      + (f" ({a.confidence:.0%})" if a.confidence is not None else "") for a in answers)
    return (f"round {number}: {shown} -> {t.winner if t.winner is not None else 'no vote'} "
            f"(agreement {t.share():.0%}{', tie' if t.tie else ''})")


def run(cfg: DebateConfig, run_dir: RunDir, *, panel: Panel | None = None, providers: dict[str, Provider] | None = None,
        progress: Progress | None = None, announce: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Debate ``cfg``'s question (continuing a resumed run from its last finished round), then write the results."""
    progress = progress or NullProgress()
    announce = announce or log.info
    panel = panel or prepare(cfg)["panel"]
    question = str(cfg.text)
    kind = question_kind(question, cfg.kind)
    names = [a.name for a in panel.agents]
    n_rounds, rule = cfg.debate_rounds, cfg.decision_rule
    if cfg.rule_chosen:
        announce(f"rule {rule}: {n_rounds} debate rounds asked with no --rule, so the best debating rule measured "
                 "decides (docs/benchmarks/debate_rules.md); --rule to choose another")
    done = load_transcript(run_dir, names)
    if done:
        announce(f"resuming after round {len(done) - 1}: {len(done)} of {n_rounds + 1} rounds in {TRANSCRIPT}")
    for number, answers in enumerate(done):
        announce(describe_round(number, answers, cfg.decision))
    # The bar counts debate rounds as the user gave them (--rounds 1: 1/1; round 0, the independent answers, is its
    # description until it is done); a rule that asks no debate round counts round 0 alone.
    debating = 0 if rule == "vote" else n_rounds
    task = progress.task("debate rounds" if done else "round 0: independent answers", total=max(debating, 1))
    task.update(completed=min(max(len(done) - 1, 0), debating) if debating else min(len(done), 1))
    start = time.perf_counter()

    def finished(number: int, answers: Round) -> None:
        if len(load_transcript(run_dir, names)) <= number:  # killed after writing it, before its checkpoint: once
            append_round(run_dir, number, answers)
        t = vote(answers, cfg.decision)
        run_dir.event("round", round=number, votes=t.to_dict(), agreement=t.share(),
                      unparseable=sum(a.answer is None and a.error is None for a in answers),
                      errors=sum(a.error is not None for a in answers))
        announce(describe_round(number, answers, cfg.decision))
        if number == 0 and debating:
            task.update(description="debate rounds")
        else:
            task.advance()

    async def main() -> tuple[list[Round], Answer | None]:
        router = Router.for_run(panel.llm, run_dir, providers=providers)
        try:
            settings = DebateSettings(temperature=cfg.temperature, max_tokens=cfg.max_tokens,
                                      style=prompt_style(cfg, panel, kind), visibility=cfg.visibility, rule=rule,
                                      stop_on_failure=True)
            return await debate_graph(router, panel, question, kind, n_rounds, settings, done=done, on_round=finished,
                                      ask_judge=cfg.decision == "judge" or kind == "open",
                                      checkpoint=run_dir.file(CHECKPOINT))
        finally:
            await router.aclose()

    rounds, verdict = asyncio.run(main())
    results = summarise(cfg, panel, question, kind, rounds[: n_rounds + 1], verdict)
    results["seconds"] = round(time.perf_counter() - start, 2)
    agreement_plot([r["agreement"] for r in results["per_round"]], run_dir.file("agreement.png"))
    run_dir.save_results(results)
    run_dir.save_report(render_report(results, rounds[: n_rounds + 1]))
    return results


def final_decision(method: str, rounds: list[Round], verdict: Answer | None, rule: str = "last_round"
                   ) -> dict[str, Any]:
    """The final answer: ``rule`` over the rounds (``core/debate/rules.py``) voting by ``method``, or the judge's."""
    decision = decide(rule, rounds, method)
    t = decision.tally
    final = {"answer": t.winner, "tie": t.tie, "method": t.method, "rule": rule, "rounds_used": decision.rounds_used,
             "no_votes": t.no_votes, "note": None}
    if method == "judge":
        if verdict is not None and verdict.answer is not None:
            final.update(answer=verdict.answer, tie=False, method="judge")
        else:
            final["note"] = f"the judge gave no parseable answer; the {t.method} vote (rule {rule}) decided"
    return final


def summarise(cfg: DebateConfig, panel: Panel, question: str, kind: str, rounds: list[Round],
              verdict: Answer | None) -> dict[str, Any]:
    per_round = []
    for number, answers in enumerate(rounds):
        t = vote(answers, cfg.decision)
        per_round.append({"round": number, "answers": {a.agent: a.answer for a in answers},
                          "confidences": {a.agent: a.confidence for a in answers}, "vote": t.to_dict(),
                          "agreement": round(t.share(), 4)})
    every = [a for answers in rounds for a in answers]
    return {
        "question": question, "kind": kind, "rounds": cfg.debate_rounds, "decision": cfg.decision,
        "rule": cfg.decision_rule, "rule_chosen": cfg.rule_chosen,
        "visibility": cfg.visibility, "rounds_asked": len(rounds) - 1,
        "agents": [{"name": a.name, "source": a.source, "structured": a.structured} for a in panel.agents],
        "judge": panel.judge_source, "prompt_style": prompt_style(cfg, panel, kind),
        "per_round": per_round,
        "final": final_decision(cfg.decision, rounds, verdict, cfg.decision_rule),
        "judge_reply": verdict.to_dict() if verdict is not None else None,
        "answers": len(every),
        "unparseable": sum(a.answer is None and a.error is None for a in every),
        "errors": sum(a.error is not None for a in every),
        "first_error": next((a.error for a in every if a.error is not None), None),
        "stop_reason": stop_reason(rounds, cfg.debate_rounds, cfg.decision_rule),
        "tokens": {"prompt": sum(a.prompt_tokens for a in every),
                   "completion": sum(a.completion_tokens for a in every)},
    }


def stop_reason(rounds: list[Round], asked: int, rule: str) -> str | None:
    """Why fewer rounds than asked ran (None when every round asked ran)."""
    if len(rounds) > asked or not rounds:
        return None
    if all_failed(rounds[-1]):
        return (f"every agent's call failed in round {len(rounds) - 1}, so no further round was asked "
                f"({len(rounds) - 1} of {asked} debate rounds)")
    unanimous = "round 0 was unanimous, so " if rule == "on_disagreement" else ""
    return f"{unanimous}the rule {rule} asked no debate round"


def transcript_path(folder: Path) -> Path:
    return folder / TRANSCRIPT
