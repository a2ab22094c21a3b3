"""`agentlab nas`: LLM-planned architecture search for a forecaster (Informer and five modern families); resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

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
    run_command("nas", NASConfig, nas_run, config=config, sets=[*(set_ or []), *options], out=out, resume=resume,
                prepare=lambda cfg: prepare(cfg, llm), dry_run=nas_dry_run if dry_run else None,
                log_prompts=not no_log_prompts, json_=json_, verbose=verbose, summary=_print_summary,
                otlp_endpoint=otlp_endpoint)


def _print_summary(results: dict, path: Path) -> None:
    best, base, gain = results["best"], results["base"], results["gain"]
    console.print(f"[bold]best trial {best['run_id']}[/]: val MSE {best['val_mse']:.4f}, test MSE "
                  f"{best['test_mse']:.4f}, test MAE {best['test_mae']:.4f}, {best['n_params']:,} params "
                  f"({best['planner']}); {best.get('family', 'informer')}, lookback {best.get('seq_len')}")
    literature = results.get("literature") or {}
    fair = [r for r in literature.get("rows", []) if r["protocol"] == "fair"]
    if fair:
        beaten = sum(1 for r in fair if best["test_mse"] < r["mse"])
        top = min(fair, key=lambda r: r["mse"])
        console.print(f"published ({literature['dataset']}, horizon {literature['horizon']}, every test window): "
                      f"lower test MSE than {beaten} of {len(fair)}; the best, {top['model']}, has {top['mse']:.3f}")
    if base is not None and gain["val_mse"] is not None:
        test_gain = f", test MSE {gain['test_mse']:+.1%}" if gain["test_mse"] is not None else ""
        console.print(f"gain over the base config ({base['run_id']}, val MSE {base['val_mse']:.4f}): "
                      f"val MSE {gain['val_mse']:+.1%}{test_gain}")
    changed = {k: v for k, v in best["params"].items() if base is None or base["params"].get(k) != v}
    console.print("best changes: " + (", ".join(f"{k}={v}" for k, v in changed.items()) or "none (base is best)"))
    console.print(f"stopped: {results['stop_reason']}; report: {path / 'report.md'}")
