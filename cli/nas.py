"""`agentlab nas`: LLM-planned architecture search for an Informer forecaster; resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from .common import (
    ConfigOpt,
    DryRunOpt,
    JsonOpt,
    LLMOpt,
    OutOpt,
    ResumeOpt,
    SetOpt,
    VerboseOpt,
    console,
    print_json,
    rich_progress,
)


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
    planner: Annotated[Literal["auto", "llm", "tpe", "random"] | None, typer.Option(
        show_default=False, help="auto (default): llm when a planner model is configured and reachable, else tpe.")
    ] = None,
    data: Annotated[Path | None, typer.Option(show_default=False, dir_okay=False,
                                              help="ETT-format CSV (date column + numeric columns). Default: a "
                                              "built-in synthetic series.")] = None,
    storage: Annotated[str | None, typer.Option(show_default=False,
                                                help="Optuna storage shared by several workers: sqlite:///f.db, "
                                                "an RDB URL, or a journal file path.")] = None,
    out: OutOpt = None,
    resume: ResumeOpt = None,
    dry_run: DryRunOpt = False,
    json_: JsonOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Search Informer configs: a planner proposes changes, each trial trains and is judged by rules (an LLM only
    inside the noise band), state is saved after every trial. Runs offline on built-in synthetic data by default."""
    from agentlab.core.config import load_config
    from agentlab.core.llm.config import load_llm_config
    from agentlab.core.runs import RunDir
    from agentlab.nas.config import NASConfig

    from .common import setup_logging

    setup_logging(verbose)
    sets = list(set_ or [])
    for key, value in (("search.max_iterations", max_iterations), ("search.time_budget_s", time_budget),
                       ("search.patience", patience), ("search.target", target), ("search.planner", planner),
                       ("data.path", data), ("search.storage", storage)):
        if value is not None:
            sets.append(f"{key}={value}")
    resume_dir = None
    if resume is not None:
        resume_dir = RunDir.latest("nas") if resume == "" else Path(resume)
        cfg = load_config(resume_dir / "config.yaml", NASConfig, sets)
    else:
        cfg = load_config(config, NASConfig, sets)
    llm_cfg = load_llm_config(llm)
    if dry_run:
        _dry_run(cfg)
        return
    with RunDir.open("nas", cfg, out=out, resume=resume_dir, name=cfg.name, seed=cfg.search.seed) as run_dir:
        run_dir.save_config(cfg)
        console.print(f"run folder: {run_dir.path}")
        with rich_progress(enabled=not json_) as progress:
            from agentlab.nas.run import run

            results = run(cfg, run_dir, llm=llm_cfg, progress=progress,
                          announce=lambda line: console.print(f"[cyan]{line}[/]"))
    if json_:
        print_json(results)
        return
    _print_summary(results, run_dir.path)


def _dry_run(cfg: object) -> None:
    from agentlab.nas.train import prepare_data, spec_from_config

    prepared = prepare_data(cfg)
    spec = spec_from_config(cfg, prepared)
    console.print(f"[green]config ok[/]; data: {len(prepared.train)} train / {len(prepared.val)} val / "
                  f"{len(prepared.test)} test windows, {prepared.enc_in} channels ({prepared.split} split)")
    console.print(f"base model: d_model {spec.d_model}, heads {spec.n_heads}, layers {spec.e_layers}+{spec.d_layers}, "
                  f"attn {spec.attn}; search space: {', '.join(cfg.search.space)}")
    console.print("dry run: nothing trained, no run folder written")


def _print_summary(results: dict, path: Path) -> None:
    best, base, gain = results["best"], results["base"], results["gain"]
    console.print(f"[bold]best trial {best['run_id']}[/]: val MSE {best['val_mse']:.4f}, test MSE "
                  f"{best['test_mse']:.4f}, test MAE {best['test_mae']:.4f}, {best['n_params']:,} params "
                  f"({best['planner']})")
    if base is not None and gain["val_mse"] is not None:
        test_gain = f", test MSE {gain['test_mse']:+.1%}" if gain["test_mse"] is not None else ""
        console.print(f"gain over the base config ({base['run_id']}, val MSE {base['val_mse']:.4f}): "
                      f"val MSE {gain['val_mse']:+.1%}{test_gain}")
    changed = {k: v for k, v in best["params"].items() if base is None or base["params"].get(k) != v}
    console.print("best changes: " + (", ".join(f"{k}={v}" for k, v in changed.items()) or "none (base is best)"))
    console.print(f"stopped: {results['stop_reason']}; report: {path / 'report.md'}")
