"""`agentlab debate`: agents (persona adapters or routed models) debate a question; `debate eval` scores the debate
against single agents and self-consistency on a task file; `debate make-task` writes Du et al.'s arithmetic task."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from .common import (
    ConfigOpt,
    JsonOpt,
    LLMOpt,
    NoLogPromptsOpt,
    OtlpOpt,
    OutOpt,
    ResumeOpt,
    SetOpt,
    VerboseOpt,
    console,
    nonempty_path,
    opt,
    print_json,
    safe_text,
)
from .runner import CommandSpec, Invocation, flags, run_command

if TYPE_CHECKING:
    from agentlab.core.debate.engine import Panel
    from agentlab.debate.config import DebateConfig

app = typer.Typer(help="Multi-agent debate between persona adapters or routed models, decided by a vote.\n\n"
                  "Du et al. 2023 debate on one base model (adapters) or routed models, decided by a "
                  "confidence-weighted vote (ReConcile) or a judge; `eval` measures it.")



RoundsOpt = Annotated[int | None, opt("--rounds", help="Debate rounds after the independent answers. Default: the "
                                       "rule's own (vote, the default rule: none; every other rule: 3; `debate "
                                       "eval`: 3). N > 0 with no --rule debates N rounds under keep_round0, the best "
                                       "debating rule measured; with --rule vote `debate` refuses it (`debate eval` "
                                       "scores every rule over the N rounds). 0: a dry run: every "
                                       "agent and the judge (`debate eval`: with --decision judge) answer one short "
                                       "question, OK/FAIL each, nothing written. At most 50: each round's prompt "
                                       "holds every earlier round.")]
BaseModelOpt = Annotated[str | None, opt("--base-model", help="Base model of the adapter agents: smollm2-135m "
                                          "(default, built in), a transformers folder, a GGUF file, a cached hub id.")]
AdaptersOpt = Annotated[list[Path] | None, opt(
    "--adapters", help="A PEFT adapter folder: one agent, named after the folder (repeatable). Default: the "
    "config's agents, else adapters/persona_a, _b, _c under the current directory.")]
DecisionOpt = Annotated[str | None, opt("--decision", help="reconcile (default: confidence-weighted vote, "
                                         "ReConcile's bins), confidence (raw confidences), majority, or judge.")]
RuleOpt = Annotated[str | None, opt("--rule", help="Which rounds decide: vote (default without --rounds: round 0's "
                                    "vote, no debate round asked; measured best on the built-in model), last_round, "
                                    "all_rounds, "
                                    "on_disagreement (debate only when round 0 is split), keep_round0 (round 0 "
                                    "unless the last round converged; default with --rounds N > 0).")]
VisibilityOpt = Annotated[str | None, opt("--visibility", help="What agents see of each other: full (default), "
                                          "answer, answer_confidence.")]
JudgeOpt = Annotated[str | None, opt("--judge", help="The judge's model or route of --llm (default: the base "
                                      "model without adapter).")]


def _options(rounds: int | None, llm: Path | None, base_model: str | None, adapters: list[Path] | None,
             decision: str | None, judge: str | None, rule: str | None = None,
             visibility: str | None = None) -> list[Any]:
    from agentlab.core.config import Flag

    # an agent of each folder; errors name the folders as typed, not the agents' dicts
    agents = [Flag("--adapters", "agents", [{"adapter": str(path)} for path in adapters],
                   [str(path) for path in adapters])] if adapters else []
    return flags(("--rounds", "rounds", rounds), ("--llm", "llm", llm), ("--base-model", "base_model", base_model),
                 ("--decision", "decision", decision), ("--judge", "judge", judge), ("--rule", "rule", rule),
                 ("--visibility", "visibility", visibility)) + agents


def _where(command: str, config: Path | None, sets: list[Any], resume: str | None
           ) -> Callable[[tuple[str | int, ...]], str | None]:
    """Where a config key was given (``file:line`` of -c FILE or of the resumed run's config.yaml, or the --set /
    option that set it), for the errors found after the config is read (an agent naming no model of --llm)."""
    from agentlab.core.config import config_where
    from agentlab.core.runs import resume_target

    def where(loc: tuple[str | int, ...]) -> str | None:
        folder = resume_target(command, resume) if resume is not None else None
        return config_where(folder / "config.yaml" if folder is not None else config, sets, loc)

    return where


@app.callback(invoke_without_command=True)
def debate(
    ctx: typer.Context,
    topic: Annotated[str | None, opt("--topic", "--question", help="The question or topic to debate.")] = None,
    rounds: RoundsOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    llm: LLMOpt = None,
    base_model: BaseModelOpt = None,
    adapters: AdaptersOpt = None,
    decision: DecisionOpt = None,
    rule: RuleOpt = None,
    visibility: VisibilityOpt = None,
    judge: JudgeOpt = None,
    out: OutOpt = None,
    resume: ResumeOpt = None,
    no_log_prompts: NoLogPromptsOpt = False,
    otlp_endpoint: OtlpOpt = None,
    json_: JsonOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Debate a question: round 0 every agent answers alone; each later round every agent sees the others' latest
    answers and revises; answers are asked concurrently (one batch in process). The final answer is a vote over
    the last round (or the judge's); open topics vote on a stance and the judge summarises. Writes transcript.jsonl,
    report.md (with agreement.png) and results.json; --resume continues from the last finished round."""
    if ctx.invoked_subcommand is not None:
        return
    from agentlab.debate.config import DebateConfig
    from agentlab.debate.run import check_resume, prepare, run

    sets = [*(set_ or []), *flags(("--topic", "topic", topic)),
            *_options(rounds, llm, base_model, adapters, decision, judge, rule, visibility)]
    run_command(CommandSpec("debate", DebateConfig, run,
                            prepare=_no_dry_out(out, partial(prepare, where=_where("debate", config, sets, resume))),
                            check_resume=check_resume,
                            dry_run=lambda cfg, **kw: _dry_run(cfg, json_, **kw), summary=_summary,
                            exit_code=lambda r: 1 if r["final"]["answer"] is None and r["errors"] else 0,
                            failure=_no_answer),
                Invocation(config=config, sets=sets, out=out, resume=resume, log_prompts=not no_log_prompts,
                           otlp_endpoint=otlp_endpoint, json_=json_, verbose=verbose))


def _no_dry_out(out: Path | None, prepare: Callable[[DebateConfig], dict[str, Any]]
                ) -> Callable[[DebateConfig], dict[str, Any]]:
    """``prepare``, once an --out given to the dry run (``--rounds 0``, which writes nothing) is refused: before any
    model loads."""
    def checked(cfg: DebateConfig) -> dict[str, Any]:
        if out is not None and cfg.rounds == 0:
            from agentlab.core.errors import UsageError

            raise UsageError("--out has no effect on a dry run (--rounds 0): it writes nothing",
                             hint="drop --out for the dry run, or drop --rounds 0 to write a run folder there")
        return prepare(cfg)

    return checked


def _no_answer(results: dict[str, Any]) -> str:
    from agentlab.debate.report import failures

    return f"no final answer: {failures(results)}"


def _dry_run(cfg: DebateConfig, json_: bool, panel: Panel, judge: bool = True, **_: Any) -> dict[str, Any] | None:
    if cfg.rounds != 0:
        return None
    from agentlab.debate.run import check

    with console.status("checking every agent answers"):
        report = check(cfg, panel, judge=judge)
    if not report["ok"]:
        message = report.pop("message")
        print_json(report) if json_ else console.print(safe_text(message))
        raise typer.Exit(1)
    report["message"] = safe_text(report["message"])
    return report


def _summary(results: dict[str, Any], path: Path) -> None:
    from agentlab.debate.report import decision_words, failures, next_step

    final = results["final"]
    answer = final["answer"]
    if answer is None:
        unparsed = results["unparseable"]
        answer = (f"none ({failures(results)}" + (f"; {unparsed} answers unparseable)" if unparsed else ")")
                  if results["errors"] else "none (no agent gave a parseable answer)")
    rule = f", rule {final['rule']}" if final.get("rule") else ""
    console.print(f"[bold]final answer[/] ({safe_text(final['method'])}{rule}): {safe_text(answer)}"
                  + (" (tie broken)" if final["tie"] else ""))
    console.print(safe_text(decision_words(final["method"], final.get("rule") or "last_round",
                                           final["answer"] is not None)), highlight=False)
    if final.get("note"):  # the judge overruled by the agents' vote: results.json and report.md say it too
        console.print(safe_text(final["note"]), highlight=False)
    if final.get("rule") == "vote" and results.get("rounds"):
        console.print("rule vote: round 0's answers decided, no debate round asked (on the built-in personas every "
                      "rule that debates scored lower); --rule last_round (or keep_round0, ...) to debate")
    if results.get("stop_reason") and final.get("rule") != "vote":  # vote's own line above says it
        console.print(f"stopped early: {safe_text(results['stop_reason'])}", highlight=False)
    if results["errors"]:
        console.print(f"next step: {safe_text(next_step(results.get('first_error')))}", highlight=False)
    if results.get("judge_reply") and results["kind"] == "open":
        console.print(f"[bold]judge[/]: {safe_text(results['judge_reply']['text'].strip())}")
    console.print(f"{results['answers']} answers, {results['unparseable']} unparseable, {results['errors']} failed; "
                  f"report: {safe_text(path / 'report.md')}")


@app.command("eval")
def eval_cmd(
    task: Annotated[Path | None, opt("--task", help="JSONL, one {\"question\": ..., \"answer\": ...} per line "
                                      "(make one with `agentlab debate make-task`).")] = None,
    concurrency: Annotated[int | None, opt("--concurrency", help="Questions debated at once; their requests "
                                            "batch together (default 8).")] = None,
    limit: Annotated[int | None, opt("--limit", help="Only the first N questions.")] = None,
    rounds: RoundsOpt = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    llm: LLMOpt = None,
    base_model: BaseModelOpt = None,
    adapters: AdaptersOpt = None,
    decision: DecisionOpt = None,
    rule: RuleOpt = None,
    visibility: VisibilityOpt = None,
    judge: JudgeOpt = None,
    out: OutOpt = None,
    resume: ResumeOpt = None,
    no_log_prompts: NoLogPromptsOpt = False,
    otlp_endpoint: OtlpOpt = None,
    json_: JsonOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Score the debate on a task: each agent alone, the majority of round 0, self-consistency at equal compute
    (agents x (rounds+1) samples at temperature 0.7), the debate after each round and every decision rule under
    every visibility (eval.visibilities, and --visibility when not among them), as accuracy with a 95% Wilson
    interval and tokens per question; unparseable answers count as wrong; the configured rule's row is marked
    default. Writes questions.jsonl, results.json and report.md under runs/debate-eval/; --resume skips the
    questions already scored."""
    from agentlab.debate.config import DebateConfig
    from agentlab.debate.evaluate import check_eval_resume, prepare_eval, run_eval

    sets = [*(set_ or []), *flags(("--task", "eval.task", task), ("--concurrency", "eval.concurrency", concurrency),
                                  ("--limit", "eval.limit", limit)),
            *_options(rounds, llm, base_model, adapters, decision, judge, rule, visibility)]
    run_command(CommandSpec("debate-eval", DebateConfig, run_eval,
                            prepare=_no_dry_out(out, partial(prepare_eval, where=_where("debate-eval", config, sets,
                                                                                        resume))),
                            check_resume=check_eval_resume,
                            dry_run=lambda cfg, **kw: _dry_run(cfg, json_, judge=cfg.decision == "judge", **kw),
                            rerun="debate eval -c {config}", summary=_eval_summary),
                Invocation(config=config, sets=sets, out=out, resume=resume, log_prompts=not no_log_prompts,
                           otlp_endpoint=otlp_endpoint, json_=json_, verbose=verbose))


def _eval_summary(results: dict[str, Any], path: Path) -> None:
    from rich.table import Table

    table = Table(title=f"debate eval: {results['questions']} questions", title_justify="left", pad_edge=False)
    for column in ("method", "correct", "accuracy", "95% CI", "unparsed", "tokens/q"):
        table.add_column(column, justify="left" if column == "method" else "right", no_wrap=True)
    for r in results["table"]:
        name = safe_text(r["method"]) + (" (default)" if r.get("default") else "")
        table.add_row(name, f"{r['correct']}/{r['total']}", f"{r['accuracy']:.3f}",
                      f"{r['ci'][0]:.3f}-{r['ci'][1]:.3f}", str(r["unparsed"]), f"{r['tokens_per_question']:.1f}")
    console.print(table)
    console.print(f"report: {safe_text(path / 'report.md')}")


def _task_file(value: str) -> Path:
    """make-task's --out: not empty (``nonempty_path``; ``Path('')`` is the current folder), and not a folder."""
    path = nonempty_path(value, "a file path, e.g. --out task.jsonl")
    if path.is_dir():
        raise typer.BadParameter(f"file {str(path)!r} is a directory; give a file path, e.g. --out task.jsonl")
    return path


# --n's bound: a debate eval asks every agent each question in every round, so even 100,000 questions is far beyond
# a run (Du et al. use 100); a typo such as 100000000 wrote for an hour, silently, gigabytes
MAX_QUESTIONS = 100_000


@app.command("make-task")
def make_task_cmd(
    out: Annotated[Path, typer.Option("--out", help="The JSONL file to write.", parser=_task_file,
                                      metavar="<file>")],
    n: Annotated[int, typer.Option("--n", min=1, max=MAX_QUESTIONS, help=(
        f"Number of questions, at most {MAX_QUESTIONS:,} (Du et al. use 100): a debate eval asks every agent each "
        "one in every round, so a bigger task is no run anyone finishes."))] = 100,
    difficulty: Annotated[Literal["easy", "medium", "hard"], typer.Option(
        "--difficulty", help="easy: a+b (0-20); medium: a+b*c (0-10); hard: Du et al.'s a+b*c+d-e*f (0-30).")
    ] = "medium",
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same questions.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing file.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Write Du et al.'s arithmetic task as JSONL ({"question", "answer"} per line) for `agentlab debate eval`."""
    from agentlab.core.debate.task import make_task, write_task

    rows = make_task(n, difficulty, seed)
    write_task(out, rows, force=force)
    if json_:
        print_json({"task": str(out), "questions": len(rows)})
    else:
        console.print(f"wrote {len(rows)} {safe_text(difficulty)} questions to {safe_text(out)}")
