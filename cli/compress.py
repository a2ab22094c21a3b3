"""`agentlab compress`: plan and run real compression experiments against an objective and a carbon budget."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from agentlab.core.search.kinds import KINDS, CompressPlanner, describe

from .common import (
    AnswerOpt,
    ConfigOpt,
    DryRunOpt,
    JsonOpt,
    MlflowOpt,
    OtlpOpt,
    OutOpt,
    ResumeLLMOpt,
    ResumeOpt,
    SetOpt,
    StorageOpt,
    VerboseOpt,
    approver_for,
    console,
    safe_text,
    waiting_question,
)
from .runner import CommandSpec, Invocation, flags, run_command


def compress(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    model: Annotated[str | None, typer.Option(show_default=False, help="Model to compress: smollm2-135m (default), "
                                              "a transformers folder, a GGUF file (de-quantized once to a cached "
                                              "transformers folder) or a cached hub id.")] = None,
    objective: Annotated[str | None, typer.Option(show_default=False, help='The goal in words (default "maximize '
                                                  'speedup with <2% accuracy loss"), e.g. "minimize size, maximize '
                                                  'speedup with perplexity increase <5%".')] = None,
    carbon_budget: Annotated[float | None, typer.Option(
        "--carbon-budget", show_default=False, help="kg CO2e for the whole search (above 0; default none: no limit): "
        "stop before an experiment would exceed it.")] = None,
    max_iterations: Annotated[int | None, typer.Option("--max-iterations", "-n", min=1, show_default=False,
                                                       help="Experiments, the base model not counted (default 8)."
                                                       )] = None,
    planner: Annotated[CompressPlanner | None, typer.Option(
        show_default=False, help=f"Who proposes each experiment (default nsga2). {describe('compress')}.")] = None,
    approve: Annotated[bool, typer.Option("--approve", help="With --planner agent: stop before each experiment, "
                                          "show the agent's plan and ask yes / no / edit.")] = False,
    llm: ResumeLLMOpt = None,
    eval_text: Annotated[Path | None, typer.Option("--eval-text", show_default=False, dir_okay=False,
                                                   help="Held-out text for perplexity (default: the built-in "
                                                   "text's first half).")] = None,
    calib_text: Annotated[Path | None, typer.Option("--calib-text", show_default=False, dir_okay=False,
                                                    help="Calibration / recovery text, not the eval text (default: "
                                                    "the built-in text's second half).")] = None,
    storage: StorageOpt = None,
    mlflow: MlflowOpt = None,
    dry_run: DryRunOpt = False,
    otlp_endpoint: OtlpOpt = None,
    out: OutOpt = None,
    resume: ResumeOpt = None,
    answer: AnswerOpt = None,
    json_: JsonOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Compression experiments (pruning, recovery, quantization) planned against a goal.

    Each experiment is measured for real against the base model; agentlab keeps the Pareto front and the best result
    that meets the objective's constraints (best.json), and writes report.md. Experiments are remembered in a
    workspace across runs; --resume continues a killed run."""
    from agentlab.compress import CompressConfig
    from agentlab.compress.run import check_resume, prepare
    from agentlab.compress.run import dry_run as compress_dry_run
    from agentlab.compress.run import run as compress_run
    from agentlab.core.config import config_where

    options = flags(("--model", "model", model), ("--objective", "objective", objective),
                    ("--carbon-budget", "carbon_budget", carbon_budget),
                    ("--max-iterations", "search.max_iterations", max_iterations),
                    ("--planner", "search.planner", planner),
                    ("--eval-text", "eval_text", eval_text), ("--calib-text", "calib_text", calib_text),
                    ("--storage", "search.storage", storage), ("--mlflow", "mlflow", mlflow),
                    ("--approve", "search.agent.approve", True if approve else None))

    def prepare_all(cfg: Any) -> dict[str, Any]:
        from agentlab.compress.workspace import workspace_root
        from agentlab.core.runs import resume_target, routing_config

        approver = approver_for(cfg.search.planner, cfg.search.agent.approve, answer, dry_run=dry_run,
                                example='{"quantize": "gguf", "gguf_type": "Q8_0"}')
        folder = resume_target("compress", resume) if resume is not None else None
        if answer is not None:  # only the question the run stopped at, the one the user saw
            waiting_question(folder, "compress")
        cfg.workspace = workspace_root(cfg.workspace, folder)  # absolute in config.yaml: a resume from anywhere
        routing = routing_config(llm, folder, set_ or [])  # resumed: the first run's --llm
        file = folder / "config.yaml" if folder is not None else config
        kwargs = prepare(cfg, routing, dry_run=dry_run, llm_given=llm is not None,  # a dry run: a study only read
                         where=lambda loc: config_where(file, [*(set_ or []), *options], loc,
                                                           CompressConfig.MOVED_KEYS))
        kwargs["prepared"].approver = approver
        if routing is not None and llm is None and KINDS[cfg.search.planner].needs_model and not json_:
            console.print(safe_text(f"routing config: the first run's ({routing})"))
        return kwargs

    def run_here(cfg: Any, run_dir: Any, **kwargs: Any) -> dict[str, Any]:
        """results.json's content, and for --json the run folder (absolute) it is in."""
        return {**compress_run(cfg, run_dir, **kwargs), "run_dir": str(run_dir.path.absolute())}

    run_command(CommandSpec("compress", CompressConfig, run_here, prepare=prepare_all, check_resume=check_resume,
                            dry_run=compress_dry_run if dry_run else None, summary=_print_summary),
                Invocation(config=config, sets=[*(set_ or []), *options], out=out, resume=resume,
                           otlp_endpoint=otlp_endpoint, json_=json_, verbose=verbose))


def _print_summary(results: dict, path: Path) -> None:
    from agentlab.compress.report import fmt

    rec = results["recommended"]
    if rec.get("best") is None:
        console.print("no experiment finished: nothing to recommend")
    else:
        d, b = rec["best"]["derived"] or {}, (results["base"] or {}).get("derived") or {}
        status = "meets the constraints" if rec["feasible"] else "[yellow]closest: no experiment met the constraints[/]"
        name, figures = safe_text(rec["label"]), "  "
        if rec.get("keep_base"):  # the base model is the recommendation, the experiment shown to compare
            status = "it meets the constraints; " + (
                f"best experiment: {name}, no better on the goal" if rec["feasible"] else
                f"closest experiment: {name}, which breaks {safe_text(', '.join(rec['broken']))}")
            name, figures = "[yellow]keep the base model[/]", "  that experiment: "
        console.print(f"[bold]recommended[/]: {name} ({status})")
        console.print(f"{figures}speedup {fmt(d.get('speedup'))}x, perplexity {fmt(d.get('perplexity'))} (base "
                      f"{fmt(b.get('perplexity'))}), accuracy {fmt(d.get('accuracy'))} "
                      f"(base {fmt(b.get('accuracy'))}), "
                      f"size {fmt(d.get('size'))} MB (base {fmt(b.get('size'))} MB)")
    counts, energy = results["counts"], results["energy"]
    n = counts["experiments"]  # counts.reused counts the base model too: said with it
    console.print(f"{n} experiment{'' if n == 1 else 's'} and the base model ({counts['reused']} reused from the "
                  f"workspace, {counts['failed']} failed); "
                  f"{fmt(energy['co2e_kg'])} kg CO2e ({energy['mode']}); stopped: {safe_text(results['stop_reason'])}")
    console.print(f"report: {safe_text(path / 'report.md')}")
