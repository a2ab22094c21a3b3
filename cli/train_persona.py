"""`agentlab train-persona`: a persona LoRA (QLoRA on CUDA) on chat JSONL; `train-persona export`: adapter -> GGUF."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from .common import (
    ConfigOpt,
    JsonOpt,
    MlflowOpt,
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

app = typer.Typer(help="Train persona LoRA adapters with TRL on chat JSONL, or export one to GGUF.\n\n"
                  "With no subcommand it trains; `export` merges an adapter into a GGUF for llama.cpp.")



@app.callback(invoke_without_command=True)
def train_persona(
    ctx: typer.Context,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    data: Annotated[Path | None, opt("--data", help="Chat JSONL, one {\"messages\": [...]} per line, or "
                                      "persona_a, persona_b, persona_c: the shipped data (default: persona_a); "
                                      "skill_arithmetic, skill_geography, skill_units: the seed skills of "
                                      "`evolve run`."),
                     ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Adapter folder to write (default: the run folder's "
                                              "adapter/). The run folder itself goes under runs/train-persona/.",
                                              show_default=False, parser=nonempty_path, metavar="<path>")] = None,
    base_model: Annotated[str | None, opt("--base-model", help="smollm2-135m (default, built in), a transformers "
                                           "folder, a GGUF file, or a cached HF hub id.")] = None,
    r: Annotated[int | None, opt("--r", help="LoRA rank (default 16).")] = None,
    epochs: Annotated[float | None, opt("--epochs", help="Passes over the data (default 3).")] = None,
    bsz: Annotated[int | None, opt("--bsz", help="Conversations per forward pass (default 4).")] = None,
    grad_accum: Annotated[int | None, opt("--grad-accum", help="Forward passes per optimizer step "
                                           "(default 4).")] = None,
    lr: Annotated[float | None, opt("--lr", help="Peak learning rate (default 1e-3).")] = None,
    max_steps: Annotated[int | None, opt("--max-steps", help="Stop after this many optimizer steps.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing adapter at --out.")] = False,
    eval_tasks: Annotated[list[str] | None, opt("--eval", help="When training ends, score the adapter against its "
                                                 "base on these lm-eval tasks (comma-separated or repeated; e.g. "
                                                 "agentlab_style_pirate).")] = None,
    run_dir: Annotated[Path | None, opt("--run-dir", help="Exact run folder to create (default: a new "
                                         "folder <timestamp>-<name> under runs/train-persona/).")] = None,
    mlflow: MlflowOpt = None,
    resume: ResumeOpt = None,
    json_: JsonOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Train a persona LoRA adapter: TRL SFT with loss on assistant tokens only, QLoRA (4-bit NF4) with CUDA, plain
    LoRA in float32 on CPU. Every line of the data is checked first; --resume continues from the last checkpoint."""
    if ctx.invoked_subcommand is not None:
        return
    from agentlab.core.errors import UsageError
    from agentlab.train_persona.config import TrainPersonaConfig
    from agentlab.train_persona.run import check_resume, prepare, run

    if resume is not None and run_dir is not None:  # the runner would name its own --out: here the adapter folder
        raise UsageError("--resume and --run-dir both given", hint="--resume DIR names the run folder to continue")

    options = flags(("--data", "data.path", data), ("--out", "out", out), ("--base-model", "base_model", base_model),
                    ("--r", "lora.r", r), ("--epochs", "train.epochs", epochs), ("--bsz", "train.batch_size", bsz),
                    ("--grad-accum", "train.grad_accum", grad_accum), ("--lr", "train.learning_rate", lr),
                    ("--max-steps", "train.max_steps", max_steps), ("--force", "force", True if force else None),
                    ("--eval", "eval.tasks", [t.strip() for v in eval_tasks or [] for t in v.split(",") if t.strip()]
                     or None), ("--mlflow", "mlflow", mlflow))
    run_command(CommandSpec("train-persona", TrainPersonaConfig, run, summary=_summary, distributed=True,
                            prepare=lambda cfg: prepare(cfg, resuming=resume is not None, run_dir=run_dir),
                            check_resume=check_resume),
                Invocation(config=config, sets=[*(set_ or []), *options], out=run_dir, resume=resume, json_=json_,
                           verbose=verbose))


def _summary(results: dict[str, Any], path: Path) -> None:
    first, final = results["first_loss"], results["final_loss"]
    loss = f"loss {first:.4f} -> {final:.4f}" if first is not None and final is not None else "no loss logged"
    console.print(f"[bold]adapter[/]: {safe_text(results['adapter'])}")
    steps = results["steps"]  # which tokens carry the loss was said before training: not repeated here
    # a resume's seconds are this session's (from its checkpoint), the steps and tokens the whole run's; a resume of
    # a finished run trained nothing: its seconds are those of the last session that trained
    took = (f", trained before this session (the last session that trained: {results['seconds']:.0f} s)"
            if results.get("trained_this_session") is False else
            f"; this session (from {Path(results['resumed_from']).name}): {results['seconds']:.0f} s"
            if results.get("resumed_from") else f" in {results['seconds']:.0f} s")
    console.print(f"{steps} step{'' if steps == 1 else 's'}, {loss}, {results['tokens_seen']:,} tokens{took}")
    scored = results.get("eval") or {}
    for adapter, comparisons in scored.get("paired", {}).items():
        base = {(s["task"], s["metric"]): s["value"] for s in scored["rows"]["base"]}
        mine = {(s["task"], s["metric"]): s["value"] for s in scored["rows"][adapter]}
        for p in comparisons:
            key = (p["task"], p["metric"])
            stderr = f" ± {p['stderr']:.3f}" if p["stderr"] is not None else ""
            console.print(safe_text(f"lm-eval {p['task']} {p['metric']}: base {base[key]:.3f}, adapter "
                                    f"{mine[key]:.3f} ({p['diff']:+.3f}{stderr} paired, {p['n']} items)"))
    console.print(f"report: {safe_text(path / 'report.md')}")


@app.command("export")
def export(
    # a str: a Path reads an empty argument as `.`, the current folder
    adapter: Annotated[str, typer.Argument(help="The adapter folder (adapter_config.json + weights).",
                                           show_default=False)],
    # a str: a Path drops the trailing / of `--gguf out/n/`, which then wrote a file named n
    gguf: Annotated[str, typer.Option("--gguf", help="The GGUF file to write, e.g. out/persona.gguf (a folder, or "
                                      "a path ending in /, is refused).", metavar="FILE")],
    quantize: Annotated[str | None, opt("--quantize", help="Write the GGUF quantized by llama.cpp: q8_0 (about "
                                         "half the f16 size).")] = None,
    base_model: Annotated[str | None, opt("--base-model", help="The base (default: the adapter's own "
                                           "base_model_name_or_path).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing GGUF.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Merge an adapter into its base and write a GGUF that llama.cpp (and `agentlab pipeline`) can run."""
    from agentlab.train_persona.export import export_gguf

    with console.status(f"exporting {adapter} to {gguf}"):
        path = export_gguf(adapter, gguf, base_model=base_model, quantize=quantize, force=force)
    if json_:
        print_json({"gguf": str(path)})
    else:
        console.print(f"[bold]gguf[/]: {safe_text(path)} ({path.stat().st_size / 2**20:.1f} MiB)")
