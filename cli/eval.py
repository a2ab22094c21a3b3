"""`agentlab eval`: lm-evaluation-harness on a model and its adapters; `eval tasks`: the bundled tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from .common import (
    ConfigOpt,
    JsonOpt,
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

app = typer.Typer(help="Score a model and its adapters on lm-evaluation-harness tasks, offline.\n\n"
                  "With no subcommand it evaluates; `tasks` lists the bundled tasks (or exports them for lm-eval's "
                  "own CLI).")


def _split(values: list[str] | None) -> list[str] | None:
    """Repeated options and comma-separated lists alike: --tasks a,b --tasks c."""
    if not values:
        return None
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def _adapter_path(value: str) -> Path:
    return nonempty_path(value, "a PEFT adapter folder")


@app.callback(invoke_without_command=True)
def eval_command(
    ctx: typer.Context,
    model: Annotated[str | None, opt("--model", help="The model: smollm2-135m (default, built in), a transformers "
                                      "folder, a GGUF file or a cached hub id; with --base-url a served name.")] = None,
    adapter: Annotated[list[Path] | None, typer.Option(
        "--adapter", help="A PEFT adapter folder on the model, scored as its own row beside the base (repeatable).",
        show_default=False, parser=_adapter_path)] = None,
    tasks: Annotated[list[str] | None, opt("--tasks", help="lm-eval task, group or tag names, comma-separated or "
                                            "repeated (default agentlab_arithmetic_mc; `agentlab eval tasks` lists "
                                            "the bundled ones).")] = None,
    include_path: Annotated[list[Path] | None, typer.Option(
        "--include-path", help="A folder of your own lm-eval task YAMLs (repeatable); relative data_files are read "
        "next to each YAML.", show_default=False, parser=nonempty_path)] = None,
    limit: Annotated[int | None, opt("--limit", help="Score only the first N items of each task.")] = None,
    num_fewshot: Annotated[int | None, opt("--num-fewshot", help="Few-shot examples per prompt (default: each "
                                            "task's own).")] = None,
    batch_size: Annotated[int | None, opt("--batch-size", help="Requests per forward pass (default 8).")] = None,
    base_url: Annotated[str | None, opt("--base-url", help="Score models an OpenAI-compatible server serves "
                                         "(agentlab serve, vLLM): http://HOST:PORT/v1.")] = None,
    backend: Annotated[str | None, opt("--backend", help="lm-eval (default). lighteval is refused with the reason "
                                        "and the peer script that runs it (docs/commands/eval.md#lighteval).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    out: OutOpt = None,
    resume: ResumeOpt = None,
    json_: JsonOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Score a model and each of its PEFT adapters on lm-evaluation-harness tasks, offline: the model loads once,
    lm-eval's HF backend gets the PEFT model itself, and each adapter must change the logits on a probe before it
    is scored and its per-sample log-likelihoods after. Writes lm-eval's results and samples per row, and report.md
    with the models x tasks table, each adapter minus the base (paired) and a plot; --resume keeps finished rows."""
    if ctx.invoked_subcommand is not None:
        return
    from agentlab.eval.config import EvalConfig
    from agentlab.eval.run import check_resume, prepare, run

    options = flags(("--model", "model", model), ("--adapter", "adapters", [str(a) for a in adapter or []] or None),
                    ("--tasks", "tasks", _split(tasks)), ("--include-path", "include_path",
                                                          [str(p) for p in include_path or []] or None),
                    ("--limit", "limit", limit), ("--num-fewshot", "num_fewshot", num_fewshot),
                    ("--batch-size", "batch_size", batch_size), ("--base-url", "base_url", base_url),
                    ("--backend", "backend", backend))
    run_command(CommandSpec("eval", EvalConfig, run, prepare=prepare, check_resume=check_resume, summary=_summary),
                Invocation(config=config, sets=[*(set_ or []), *options], out=out, resume=resume, json_=json_,
                           verbose=verbose))


def _summary(results: dict[str, Any], path: Path) -> None:
    from rich.table import Table

    columns: list[tuple[str, str, str]] = []
    for scores in results["rows"].values():
        for s in scores:
            if (s["task"], s["metric"], s["filter"]) not in columns:
                columns.append((s["task"], s["metric"], s["filter"]))
    table = Table(title="lm-evaluation-harness", title_justify="left", pad_edge=False)
    table.add_column("model", no_wrap=True)
    for task, metric, filt in columns:
        table.add_column(safe_text(f"{task}\n{metric}" + ("" if filt == "none" else f" ({filt})")), justify="right")
    for row, scores in results["rows"].items():
        by = {(s["task"], s["metric"], s["filter"]): s for s in scores}
        cells = []
        for column in columns:
            s = by.get(column)
            cells.append("-" if s is None else f"{s['value']:.3f}" + (f" ± {s['stderr']:.3f}" if s["stderr"]
                                                                       is not None else ""))
        table.add_row(safe_text(row), *cells)
    console.print(table)
    for name, comparisons in results["paired"].items():
        for p in comparisons:
            stderr = f" ± {p['stderr']:.3f}" if p["stderr"] is not None else ""
            console.print(safe_text(f"{name} - base on {p['task']} {p['metric']}: {p['diff']:+.3f}{stderr} "
                                    f"(paired, {p['n']} items)"))
    console.print(f"report: {safe_text(path / 'report.md')}")


@app.command("tasks")
def tasks_cmd(
    include_path: Annotated[list[Path] | None, typer.Option(
        "--include-path", help="Also list the tasks of this folder (repeatable).", show_default=False,
        parser=nonempty_path)] = None,
    export: Annotated[Path | None, typer.Option(
        "--export", help="Write the bundled task YAMLs (only those: not --include-path's) into this folder with "
        "absolute data paths, for lm-eval's own CLI (lm_eval --include_path DIR).", show_default=False,
        parser=nonempty_path, metavar="<path>")] = None,
    force: Annotated[bool, typer.Option("--force", help="With --export: write into a folder that is not "
                                        "empty.")] = False,
    json_: JsonOpt = False,
) -> None:
    """List the bundled lm-eval tasks (and those of --include-path folders) with their tags; --export writes the
    bundled YAMLs for lm-eval's own CLI, which resolves relative data paths against the working directory."""
    from agentlab.core.errors import UsageError
    from agentlab.core.harness.tasks import export_tasks, list_tasks

    if force and export is None:  # --force only lets --export write into a folder that is not empty
        raise UsageError("--force applies only with --export (it lets the export write into a folder that is not "
                         "empty)", hint="add --export DIR, or drop --force")
    if export is not None and include_path:  # the export copies the bundled tasks only
        raise UsageError("--export writes the bundled task YAMLs only, not the tasks of --include-path "
                         f"{', '.join(str(p) for p in include_path)}",
                         hint="drop --include-path to export the bundled tasks; your own YAMLs go to lm-eval as they "
                         "are (lm_eval --include_path DIR, run where their relative data_files resolve: lm-eval reads "
                         "them against the working directory)")
    if export is not None:
        written = export_tasks(export, force=force)
        if json_:
            print_json({"folder": str(export), "files": [str(p) for p in written]})
        else:
            console.print(f"{len(written)} files in {safe_text(export)}; run lm-eval's own CLI on them with "
                          f"--include_path {safe_text(export)}")
        return
    infos = list_tasks(include_path or [])
    if json_:
        print_json([i.to_dict() for i in infos])
        return
    from rich.table import Table

    table = Table(title="lm-eval tasks", title_justify="left", pad_edge=False)
    for column in ("name", "kind", "type"):
        table.add_column(column, no_wrap=True)
    table.add_column("what", overflow="fold")
    for i in infos:
        table.add_row(safe_text(i.name), i.kind, safe_text(i.output_type or "-"), safe_text(i.description))
    console.print(table)
