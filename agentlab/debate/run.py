"""`agentlab debate`: agents (persona adapters on one base, or routed models) debate one question.

Run folder (``runs/debate/<timestamp>-<name>/``)::

    config.yaml, run.json, events.jsonl, llm_calls.jsonl   as every command (events: one ``round`` per round)
    transcript.jsonl   every answer: round, agent, text, parsed answer, confidence, tokens, seconds; a round's
                       answers are appended and flushed when the round finishes
    debate.sqlite      the LangGraph checkpoints of the debate's graph (``core/debate/graph.py``), saved after every
                       node: what --resume continues from (a run killed mid-round asks that round again); its table
                       ``agentlab_debate`` names the question, so a resume refuses another debate's checkpoint
    adapters.json      each adapter agent's folder and the fingerprint of its weights when the run started: a
                       resume whose adapter changed on disk since is refused (``check_adapters``)
    results.json       the votes per round, the final answer, the judge's reply, tokens
    report.md          the debate as text, the votes per round, agreement.png
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentlab.core.config import scrub_text
from agentlab.core.debate.answers import Answer, Round, all_failed, vote
from agentlab.core.debate.engine import Agent, Panel, ask
from agentlab.core.debate.graph import DebateSettings, debate_graph, saved_rounds
from agentlab.core.debate.protocol import question_kind
from agentlab.core.debate.rules import decide
from agentlab.core.errors import AgentlabError, InputError, UsageError
from agentlab.core.llm.config import load_llm_config
from agentlab.core.llm.router import Router
from agentlab.core.progress import NullProgress, Progress
from agentlab.core.runs import RunDir, atomic_write_json, atomic_write_text, durable_append, jsonl_lines, read_json
from agentlab.debate.agents import Where, build_panel, default_agents, prompt_style, warn_raised_tokens
from agentlab.debate.config import DEBATING_RULE, DEFAULT_BASE, DebateConfig
from agentlab.debate.report import agreement_plot, render_report

if TYPE_CHECKING:
    from agentlab.core.llm.types import Provider

log = logging.getLogger(__name__)
TRANSCRIPT = "transcript.jsonl"
CHECKPOINT = "debate.sqlite"
ADAPTERS = "adapters.json"
CHECK_QUESTION = "What is 2 plus 3?"
QUESTION_TABLE = "agentlab_debate"  # in debate.sqlite, beside LangGraph's tables: the question it debates


def load_panel(cfg: DebateConfig, *, batch: int = 8, where: Where | None = None) -> Panel:
    """The routing config (when an agent or the judge names a model) and the panel; the default personas, when the
    config names no agents, are written into ``cfg.agents`` so config.yaml (and a resume) names them."""
    if not cfg.agents:
        cfg.agents = default_agents()  # a warning when some are missing
    needs_llm = cfg.llm is not None or cfg.judge is not None or any(a.model is not None for a in cfg.agents)
    llm = load_llm_config(cfg.llm) if needs_llm else None
    if cfg.agents and all(a.adapter is None for a in cfg.agents) and cfg.base_model != DEFAULT_BASE:
        # only adapter agents (and the judge they default to) run on the base model: routed ones never load it
        raise UsageError(f"base_model: {cfg.base_model!r} would never be loaded: every agent is a routed model "
                         "(agents: model:), and only adapter agents run on the base model",
                         hint="drop --base-model (or base_model: in the -c file), or debate adapter agents "
                         "(--adapters DIR); a judge of the routing config is --judge NAME")
    return build_panel(cfg, llm, batch=batch, where=where)


def check_rounds(cfg: DebateConfig) -> None:
    """Debate rounds asked under rule vote, which decides on round 0 alone: a usage error (debate and its eval)."""
    if cfg.decision_rule == "vote" and cfg.rounds:
        raise UsageError(f"rounds: {cfg.rounds} debate rounds asked, but rule vote decides on round 0 alone and asks "
                         "none", hint=f"drop --rounds for the vote, or pick a rule that debates: --rule "
                         f"{DEBATING_RULE} (the best measured), last_round, all_rounds, on_disagreement")


def check_visibility(cfg: DebateConfig) -> None:
    """A visibility other than full under rule vote: nothing would show it (no debate round is asked), so `debate`
    refuses it rather than ignore it (`debate eval` debates under every visibility whatever the rule)."""
    if cfg.decision_rule == "vote" and cfg.visibility != "full":
        raise UsageError(f"visibility: {cfg.visibility!r} would never apply: rule vote decides on round 0, the "
                         "independent answers, and asks no debate round where agents see each other",
                         hint=f"drop --visibility for the vote, or pick a rule that debates: --rule {DEBATING_RULE} "
                         "(the best measured), last_round, all_rounds, on_disagreement")


def prepare(cfg: DebateConfig, *, where: Where | None = None) -> dict[str, Any]:
    """Everything checked before a run folder exists: the question, every adapter folder (a PEFT one), the base model
    and every routed name (``where``: a key's place in the config, for those errors)."""
    if not cfg.text or not cfg.text.strip():
        raise UsageError("no question to debate", hint='pass --topic "..." (or topic: in the -c file)')
    check_rounds(cfg)
    check_visibility(cfg)
    kind = question_kind(cfg.text, cfg.kind)
    if cfg.judge is not None and cfg.rounds != 0 and cfg.decision != "judge" and kind != "open":
        # the dry run (rounds 0) does ask it; a debate asks it only to decide, or to sum up an open topic
        raise UsageError(f"judge: {cfg.judge!r} would never be asked: this {kind} question is decided by the "
                         f"{cfg.decision} vote, and a judge only decides with decision judge (or sums up an open "
                         "topic)", hint="add --decision judge, or drop the judge (--judge, or judge: in the -c file)")
    panel = load_panel(cfg, where=where)
    if cfg.rounds != 0:  # the dry run asks a short question of its own
        warn_raised_tokens(cfg, panel, [kind], judge=cfg.decision == "judge" or kind == "open")
    return {"panel": panel}


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


def read_transcript(path: Path, agents: list[str]) -> tuple[list[Round], bool]:
    """The finished rounds of a transcript.jsonl: consecutive from round 0, each with every agent; and whether the file
    holds anything else (a torn line, a round cut short), which ``load_transcript`` rewrites away."""
    lines = jsonl_lines(path)
    by_round: dict[int, dict[str, Answer]] = {}
    for _, record in lines:
        if isinstance(record, dict) and isinstance(record.get("round"), int) and record.get("agent") in agents:
            by_round.setdefault(record["round"], {})[record["agent"]] = Answer.from_dict(record)
    rounds: list[Round] = []
    while len(rounds) in by_round and set(by_round[len(rounds)]) == set(agents):
        rounds.append([by_round[len(rounds)][name] for name in agents])
    return rounds, len(lines) != len(rounds) * len(agents)


def load_transcript(run_dir: RunDir, agents: list[str]) -> list[Round]:
    """The finished rounds of a run's transcript.jsonl: consecutive from round 0, each with every agent. A torn last
    line or a round cut short is dropped (the file is rewritten without it), so those answers are asked again."""
    path = run_dir.file(TRANSCRIPT)
    rounds, rest = read_transcript(path, agents)
    if rest:
        atomic_write_text(path, "".join(json.dumps({"round": k, **a.to_dict()}) + "\n"
                                        for k, answers in enumerate(rounds) for a in answers))
    return rounds


def debated_rounds(folder: Path, agents: list[str], question: str) -> int:
    """The rounds a run folder already holds: in its transcript, or in its checkpoint (a transcript cut short)."""
    rounds, _ = read_transcript(folder / TRANSCRIPT, agents)
    return max(len(rounds), len(checkpoint_rounds(folder, question, agents)))


def checkpoint_question(path: Path) -> str | None:
    """The question a debate.sqlite was written for (None: it names none, a checkpoint of an earlier agentlab)."""
    try:
        with closing(sqlite3.connect(path)) as db:
            row = db.execute(f"SELECT question FROM {QUESTION_TABLE}").fetchone()
    except sqlite3.OperationalError:  # no such table
        return None
    return str(row[0]) if row else None


def mark_checkpoint(path: Path, question: str) -> None:
    """Name the question in the run's debate.sqlite (once, before the graph first writes to it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(path)) as db, db:
        db.execute(f"CREATE TABLE IF NOT EXISTS {QUESTION_TABLE} (question TEXT NOT NULL)")
        if db.execute(f"SELECT COUNT(*) FROM {QUESTION_TABLE}").fetchone()[0] == 0:
            db.execute(f"INSERT INTO {QUESTION_TABLE} (question) VALUES (?)", (scrub_text(question),))


def _same(a: Answer, b: Answer) -> bool:
    # the transcript's lines are scrubbed of secrets (the checkpoint's are not): text, answer and error are left out
    return (a.agent, a.confidence, a.prompt_tokens, a.completion_tokens, a.seconds) == (
        b.agent, b.confidence, b.prompt_tokens, b.completion_tokens, b.seconds)


def checkpoint_rounds(folder: Path, question: str, agents: list[str]) -> list[Round]:
    """The finished rounds of a run folder's debate.sqlite, refused (``InputError`` naming it, before anything is
    written) when they are another debate's (copied in from another run folder): another question named in it, other
    agents, or rounds that differ from those of the transcript. ``saved_rounds`` names one that is no checkpoint."""
    path = folder / CHECKPOINT
    saved = asyncio.run(saved_rounds(path))
    if not path.is_file():
        return saved
    transcript, _ = read_transcript(folder / TRANSCRIPT, agents)
    asked = checkpoint_question(path)
    other = next((k for k, answers in enumerate(saved) if agents and [a.agent for a in answers] != agents), None)
    differs = next((k for k, (mine, theirs) in enumerate(zip(transcript, saved, strict=False))
                    if len(mine) != len(theirs) or not all(_same(a, b) for a, b in zip(mine, theirs, strict=True))),
                   None)
    if asked is not None and asked != scrub_text(question):  # config.yaml keeps the question scrubbed
        why = f"it holds the debate of another question ({asked!r}; this run's: {question!r})"
    elif other is not None:
        why = (f"its round {other} was answered by {', '.join(a.agent for a in saved[other]) or 'no agent'} "
               f"(this run's agents: {', '.join(agents)})")
    elif differs is not None:
        why = f"its round {differs} differs from round {differs} of {TRANSCRIPT}"
    else:
        return saved
    raise InputError(f"{path}: not this run's debate checkpoint: {why}; nothing was written",
                     hint=f"delete it ({CHECKPOINT}): --resume then continues from {TRANSCRIPT}, and only the "
                     "rounds missing from it are asked again")


def adapter_fingerprints(cfg: DebateConfig) -> dict[str, dict[str, str | None]]:
    """Each adapter agent's folder and the fingerprint of its weights (``adapter_fingerprint``: the weights file and
    the values that scale them; None when the folder holds none), by agent name."""
    from agentlab.core.models.adapters import adapter_fingerprint

    return {a.label: {"adapter": str(a.adapter), "fingerprint": adapter_fingerprint(a.adapter)}
            for a in cfg.agents if a.adapter is not None}


def record_adapters(run_dir: RunDir, cfg: DebateConfig) -> None:
    """Keep the adapters' fingerprints in the run folder (``ADAPTERS``) when the run starts (a run made before they
    were kept gets them at its first resume)."""
    if not run_dir.file(ADAPTERS).is_file():
        atomic_write_json(run_dir.file(ADAPTERS), adapter_fingerprints(cfg))


def check_adapters(cfg: DebateConfig, folder: Path) -> None:
    """Refuse (``UsageError``, nothing written) a resume whose adapter agent's weights changed on disk since the run
    started (``train-persona --force`` again, another folder copied over it): the answers it kept were given by the
    old ones, and the new rounds would mix two agents under one name."""
    if not (folder / ADAPTERS).is_file():
        return
    stored = read_json(folder / ADAPTERS)
    changed = [f"{name} ({now['adapter']}) {str(old.get('fingerprint'))[:12]} -> {str(now['fingerprint'])[:12]}"
               for name, now in adapter_fingerprints(cfg).items()
               if isinstance(old := stored.get(name), dict) and old.get("fingerprint") != now["fingerprint"]]
    if changed:
        raise UsageError(f"{folder}: an adapter changed on disk since the run started ({'; '.join(changed)}: the "
                         "fingerprint of its weights); nothing was written",
                         hint="put back the adapter the run started with (its answers so far came from it), or "
                         "start a new run (without --resume) with the new one")


def check_resume(cfg: DebateConfig, folder: Path) -> None:
    """Refuse, before anything is written, a resume that would lose finished work: fewer rounds than the run already
    debated (its results and config.yaml would drop them while its transcript kept them), or a checkpoint that
    cannot be read (``saved_rounds`` names it); or mix two agents under one name (``check_adapters``). The dry run
    (rounds 0) reads and writes nothing, so it resumes nothing: refused rather than ignore --resume."""
    if cfg.rounds == 0:
        raise UsageError(f"--resume {folder}: a dry run (--rounds 0) resumes nothing: it only asks every agent one "
                         "short question and writes nothing",
                         hint="drop --resume for the dry run, or drop --rounds 0 to continue the debate")
    check_adapters(cfg, folder)
    check_more_rounds(cfg, folder, debated_rounds(folder, [a.label for a in cfg.agents], str(cfg.text)))


def check_more_rounds(cfg: DebateConfig, folder: Path, rounds: int) -> None:
    asked = rounds - 1
    if asked > cfg.debate_rounds:
        raise UsageError(f"{folder}: already has {asked} debate rounds; --rounds can only extend it (asked: "
                         f"{cfg.debate_rounds}); nothing was written",
                         hint=f"resume with --rounds {asked} or more (or without --rounds), or start a new run "
                         "for a shorter debate")


def append_round(run_dir: RunDir, number: int, answers: Round, name: str = TRANSCRIPT) -> None:
    """Append one round's answers and flush them to disk."""
    lines = "".join(run_dir.scrub(json.dumps({"round": number, **a.to_dict()})) + "\n" for a in answers)
    durable_append(run_dir.file(name), lines)


def describe_round(number: int, answers: Round, method: str) -> str:
    t = vote(answers, method)
    shown = ", ".join(f"{a.agent}: {a.shown}"
                      + (f" ({a.confidence:.0%})" if a.confidence is not None else "") for a in answers)
    voted = len(answers) - t.no_votes  # an agreement over the votes cast says how many agents cast them
    among = f" of the {voted} of {len(answers)} agents that voted" if t.no_votes and voted else ""
    return (f"round {number}: {shown} -> {t.winner if t.winner is not None else 'no vote'} "
            f"(agreement {t.share():.0%}{among}{', tie' if t.tie else ''})")


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
    record_adapters(run_dir, cfg)
    done = load_transcript(run_dir, names)
    saved = checkpoint_rounds(run_dir.path, question, names)  # another debate's refused (by run_command, first)
    check_more_rounds(cfg, run_dir.path, max(len(done), len(saved)))  # run_command checked it before writing
    if len(saved) > len(done):  # the transcript lost rounds the checkpoint holds (cut short): written back from it
        for number in range(len(done), len(saved)):
            append_round(run_dir, number, saved[number])
        announce(f"{TRANSCRIPT}: rounds {len(done)}-{len(saved) - 1} written back from {CHECKPOINT} (the file had "
                 "been cut short)" if len(saved) - len(done) > 1 else
                 f"{TRANSCRIPT}: round {len(done)} written back from {CHECKPOINT} (the file had been cut short)")
        done = saved
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
    evented = {e.get("round") for e in run_dir.events("round")}
    before = earlier_seconds(run_dir, "round")

    def spent() -> float:
        return round(before + time.perf_counter() - start, 2)

    def finished(number: int, answers: Round) -> None:
        # A round the transcript holds but the checkpoint did not (killed between the two) comes back here once
        # more: it was written, described and counted above, and its event is recorded once.
        if number not in evented:
            t = vote(answers, cfg.decision)
            run_dir.event("round", round=number, votes=t.to_dict(), agreement=t.share(),
                          unparseable=sum(a.answer is None and a.error is None for a in answers),
                          errors=sum(a.error is not None for a in answers), seconds=spent())
            evented.add(number)
        if number < len(done):
            return
        append_round(run_dir, number, answers)
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

    mark_checkpoint(run_dir.file(CHECKPOINT), question)
    rounds, verdict = asyncio.run(main())
    results = summarise(cfg, panel, question, kind, rounds[: n_rounds + 1], verdict)
    results["seconds"] = spent()
    agreement_plot([r["agreement"] for r in results["per_round"]], run_dir.file("agreement.png"))
    run_dir.save_results(results)
    run_dir.save_report(render_report(results, rounds[: n_rounds + 1]))
    return results


def earlier_seconds(run_dir: RunDir, *kinds: str) -> float:
    """The earlier sessions' time, so results.json's seconds are every session's: each event of ``kinds`` keeps the
    run's seconds so far (a session killed mid-step loses only that step's), a finished session's results.json its
    whole."""
    kept = [e.get("seconds") for kind in kinds for e in run_dir.events(kind)]
    try:
        earlier = run_dir.read_json("results.json", {})
    except AgentlabError:  # damaged: written anew at the end
        earlier = {}
    kept.append(earlier.get("seconds") if isinstance(earlier, dict) else None)
    return max((float(s) for s in kept if isinstance(s, int | float)), default=0.0)


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
        elif t.winner is None:  # no vote to fall back on either
            final["note"] = "the judge gave no parseable answer either"
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
