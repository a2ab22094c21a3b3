"""`agentlab nas`: LLM-planned architecture search for a forecaster (Informer and five modern families); resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from .common import (
    ConfigOpt,
    DryRunOpt,
    JsonOpt,
    LLMOpt,
    MlflowOpt,
    NoLogPromptsOpt,
    OtlpOpt,
    OutOpt,
    ResumeOpt,
    SetOpt,
    StorageOpt,
    VerboseOpt,
    console,
    safe_text,
)
from .runner import flags, run_command


def nas(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    llm: LLMOpt = None,
    max_iterations: Annotated[int | None, typer.Option("--max-iterations", "-n", min=1, show_default=False,
                                                       help="Total trials of the search (default 20). Calling again "
                                                       "with --resume and a higher number continues it.")] = None,
    time_budget: Annotated[float | None, typer.Option("--time-budget", min=1, show_default=False,
                                                      help="Stop starting trials after this many seconds.")] = None,
    patience: Annotated[int | None, typer.Option(min=1, show_default=False,
                                                 help="Stop after this many trials without a new best.")] = None,
    target: Annotated[float | None, typer.Option(show_default=False,
                                                 help="Stop once the best validation MSE is at or below this.")] = None,
    planner: Annotated[Literal["auto", "llm", "tpe", "tpe_independent", "tpe_multivariate", "cmaes", "random"] | None,
                       typer.Option(show_default=False, help="auto (default): llm (choosing among TPE's candidates) "
                                    "when a planner model is configured and reachable, else tpe.")
    ] = None,
    data: Annotated[Path | None, typer.Option(show_default=False, dir_okay=False,
                                              help="ETT-format CSV (date column + numeric columns). Default: a "
                                              "built-in synthetic series.")] = None,
    storage: StorageOpt = None,
    mlflow: MlflowOpt = None,
    otlp_endpoint: OtlpOpt = None,
    out: OutOpt = None,
    resume: ResumeOpt = None,
    dry_run: DryRunOpt = False,
    no_log_prompts: NoLogPromptsOpt = False,
    json_: JsonOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Architecture search for a forecaster, planned by an LLM, TPE or random search.

    A planner proposes changes to the model config (the family: Informer, linear, SparseTSF, CycleNet, PatchTST or
    iTransformer, its settings, the lookback), each trial trains and is judged by rules (an LLM only inside the
    noise band), state is saved after every trial. Runs offline on built-in synthetic data by default."""
    from agentlab.nas import NASConfig
    from agentlab.nas import run as nas_run
    from agentlab.nas.run import dry_run as nas_dry_run
    from agentlab.nas.run import prepare

    options = flags(("--max-iterations", "search.max_iterations", max_iterations),
                    ("--time-budget", "search.time_budget_s", time_budget), ("--patience", "search.patience", patience),
                    ("--target", "search.target", target), ("--planner", "search.planner", planner),
                    ("--data", "data.path", data), ("--storage", "search.storage", storage),
                    ("--mlflow", "mlflow", mlflow))

    def prepare_and_say(cfg: NASConfig) -> dict[str, Any]:
        """prepare (the data read, data.freq resolved), then the data line and, resuming, what the folder keeps."""
        from agentlab.core.runs import resume_target
        from agentlab.nas.data import data_line
        from agentlab.nas.report import resume_line

        freq, target = cfg.data.freq, cfg.data.target
        kwargs = prepare(cfg, llm)
        if not json_:
            console.print(safe_text(data_line(kwargs["data"], freq, target)))
            folder = resume_target("nas", resume) if resume is not None else None
            kept = resume_line(folder, cfg.search.max_iterations) if folder is not None else None
            if kept:
                console.print(safe_text(kept))
        return kwargs

    run_command("nas", NASConfig, nas_run, config=config, sets=[*(set_ or []), *options], out=out, resume=resume,
                prepare=prepare_and_say, dry_run=nas_dry_run if dry_run else None,
                log_prompts=not no_log_prompts, json_=json_, verbose=verbose, summary=_print_summary,
                otlp_endpoint=otlp_endpoint)


def _print_summary(results: dict[str, Any], path: Path) -> None:
    from agentlab.nas.report import summary_lines

    for line in summary_lines(results):
        console.print(safe_text(line))
    console.print(f"stopped: {safe_text(results['stop_reason'])}; report: {safe_text(path / 'report.md')}")
