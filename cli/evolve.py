"""`agentlab evolve`: `run` breeds LoRA adapters (exact blends, mutation, fitness = task + cooperation in a debate +
novelty); `worker` adds a scoring process to a run through its population store; `blend` is one exact blend."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .common import (
    ConfigOpt,
    JsonOpt,
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
    from agentlab.core.config import Flag

app = typer.Typer(help="Evolutionary search over LoRA adapters, and exact adapter blends.\n\n"
                  "`run` breeds a population from seed adapters (exact blends, "
                  "mutation, scored on a task, in a debate and by novelty); `blend` blends parents into one child.",
                  no_args_is_help=True)


def _not_empty(value: str | None) -> str | None:
    """``--out ""`` was taken as the current folder (Path("") is "."): refused as ``--store ""`` is."""
    if value is not None and not value.strip():
        raise typer.BadParameter("empty; leave it out for a new folder under runs/evolve/, or give a folder path")
    return value


def _child_not_empty(value: str | None) -> str | None:
    """``--child ""`` was the current folder (Path("") is "."): "--child .: is the current folder or holds it"."""
    if value is not None and not value.strip():
        raise typer.BadParameter("empty; give the child adapter folder to write, e.g. --child adapters/child")
    return value


@app.command("run")
def run_cmd(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    seeds: Annotated[list[Path] | None, opt("--seeds", help="A seed adapter folder (repeatable). Default: the "
                                             "config's seeds, else adapters/skill_arithmetic, _geography, _units "
                                             "(else adapters/persona_a, _b, _c) under the current directory.")] = None,
    task: Annotated[Path | None, opt("--task", help="JSONL task file, one {\"question\", \"answer\"} per line, "
                                      "split into fitness, validation and test questions. Default: the shipped "
                                      "mixed task of the three seed skills.")] = None,
    search: Annotated[str | None, opt("--search", help="cmaes (default), ga, random, uniform, "
                                       "task_arithmetic or ties.")] = None,
    generations: Annotated[int | None, opt("--generations", help="Generations bred after gen_0 (default 4).")] = None,
    population: Annotated[int | None, opt("--population", help="Individuals per generation (default 8).")] = None,
    workers: Annotated[int | None, opt("--workers", help="Scoring processes on this machine (default 1; each "
                                        "loads the base model).")] = None,
    store: Annotated[str | None, opt("--store", help="Population store shared with workers elsewhere: an "
                                      "Optuna storage URL or journal file (default: population.db in the run "
                                      "folder).")] = None,
    base_model: Annotated[str | None, opt("--base-model", help="The seeds' base model (default smollm2-135m, "
                                           "built in).")] = None,
    out: Annotated[str | None, typer.Option("--out", help="Exact run folder to create (default: a new folder "
                                             "<timestamp>-<name> under runs/evolve/).", show_default=False,
                                             callback=_not_empty, metavar="DIRECTORY")] = None,
    resume: ResumeOpt = None,
    json_: JsonOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Evolve LoRA adapters: search blend weights over the seeds (CMA-ES by default; or the genetic algorithm:
    tournament selection, exact blends, mutation; random; uniform; task arithmetic; TIES), then run the merge
    baselines at a small budget each. Every individual must change the base model's logits on a probe, then is
    scored once: the per-token log-likelihood of the gold answers of held-out questions (greedy accuracy beside
    it), optionally cooperation in the seeds' debate and novelty. The best validation score picks the final child;
    report.md's headline compares it with every seed and baseline on a test split (95% intervals). Writes
    adapters/, results.json and report.md; --resume never scores a finished individual again."""
    from agentlab.evolve.config import EvolveConfig
    from agentlab.evolve.run import check_resume, prepare, run

    sets: list[str | Flag] = [*(set_ or []), *flags(("--seeds", "seeds", [str(p) for p in seeds] if seeds else None),
                                  ("--task", "task.file", task), ("--search", "search", search),
                                  ("--generations", "generations", generations),
                                  ("--population", "population", population), ("--workers", "workers", workers),
                                  ("--store", "store", store), ("--base-model", "base_model", base_model))]
    run_command(CommandSpec("evolve", EvolveConfig, run, prepare=lambda cfg: prepare(cfg, resuming=resume is not None),
                            rerun="evolve run -c {config}",
                            check_resume=check_resume, summary=_summary),
                Invocation(config=config, sets=sets, out=Path(out) if out is not None else None, resume=resume,
                           json_=json_, verbose=verbose))


def _summary(results: dict[str, Any], path: Path) -> None:
    from agentlab.evolve.report import console_lines

    for line in console_lines(results):
        console.print(safe_text(line))
    n, now, seconds = len(results["individuals"]), results.get("scored_this_session"), results["seconds"]
    session = results.get("session_seconds", seconds)  # seconds: the whole run's (a run from before: the session's)
    took = (f" in {seconds:.0f} s" if now is None or now >= n else
            f" in {seconds:.0f} s, none scored in this session" if now == 0 else
            f", {now} scored in this session's {session:.0f} s ({seconds:.0f} s in all)")
    console.print(f"{n} individuals{took}; report: {safe_text(path / 'report.md')}")


@app.command("worker")
def worker_cmd(
    store: Annotated[str, typer.Option("--store", help="The run's population store (the run's `store`): its "
                                       "population.db as an sqlite:/// URL, a PostgreSQL/MySQL URL or a journal "
                                       "file.")],
    batch: Annotated[int, typer.Option("--batch", min=1, help="Individuals scored together.")] = 2,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the run to create the population and "
                                       "keep polling for new generations until the run finishes (default), or stop "
                                       "when nothing waits (a store without a population: an error).")] = True,
    verbose: VerboseOpt = 0,
) -> None:
    """Score individuals of a running `evolve run` from its population store. On another machine: the adapter
    folders must be reachable at the same paths (a shared disk) and the store a database both reach."""
    from agentlab.evolve.population import await_population, open_population
    from agentlab.evolve.worker import serve, stopped

    from .runner import setup_logging

    setup_logging(verbose)

    def say(line: str) -> None:
        console.print(safe_text(line))

    try:
        pop = await_population(store, say) if wait else open_population(store, None, create=False)
    except KeyboardInterrupt:  # the CLI's own line is about run folders, which a worker never makes
        raise stopped(store, None, []) from None
    done = serve(pop, batch=batch, wait=wait, announce=say)
    console.print(f"scored {done} individuals")



def _parent_path(value: str) -> Path:
    """``--parents ""`` was the current folder (Path("") is "."): ".: not a PEFT adapter folder"."""
    return nonempty_path(value, "a parent adapter folder, e.g. --parents adapters/a adapters/b")


@app.command("blend", context_settings={"allow_extra_args": True})
def blend(
    ctx: typer.Context,
    parents: Annotated[list[Path], typer.Option("--parents", help="The parent adapter folders, at least 2: "
                                                "`--parents A B C` (or --parents repeated).", show_default=False,
                                                parser=_parent_path)],
    child_: Annotated[str, typer.Option("--child", help="The child adapter folder to write (must not exist).",
                                        show_default=False, callback=_child_not_empty, metavar="PATH")],
    alpha: Annotated[float | None, opt("--alpha", help="Two parents only: weight a for the first, 1-a for the "
                                        "second.")] = None,
    weights: Annotated[str | None, opt("--weights", help="One weight per parent, comma-separated, e.g. "
                                        "0.5,0.3,0.2 (negative allowed). Default: equal weights.")] = None,
    rank: Annotated[int | None, typer.Option("--rank", min=1, show_default=False, help="The child's LoRA rank "
                                             "(default: the sum of the parents' ranks, which makes the blend "
                                             "exact; a larger rank is capped to it).")] = None,
    method: Annotated[str, typer.Option("--method", help="exact (QR + SVD of the stacked factors) or linear (the "
                                        "per-matrix average of A and of B: NOT exact, for comparison).")] = "exact",
    mut: Annotated[float, typer.Option("--mut", min=0.0, max=1.0, help="Mutation: probability that an element of "
                                       "the child's A/B gets Gaussian noise.")] = 0.0,
    mut_std: Annotated[float, typer.Option("--mut-std", min=0.0, help="Mutation: the noise's standard "
                                           "deviation.")] = 0.01,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the mutation noise.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing child adapter folder (a folder of "
                                        "other files, or the current one, is refused).")] = False,
    json_: JsonOpt = False,
) -> None:
    """Blend LoRA adapters on delta W = sum_i w_i * scale_i * B_i A_i, exactly (no cross terms), into a PEFT adapter
    folder with lineage.json. Parents must share the base model and the adapted modules; ranks, alphas and rsLoRA
    may differ."""
    from agentlab.core.errors import UsageError

    child = Path(child_)
    extra = list(ctx.args)
    unknown = [a for a in extra if a.startswith("-")]
    if unknown:
        raise UsageError(f"no such option: {unknown[0]}", hint="see `agentlab evolve blend --help`")
    try:  # `--parents A B`: B is an extra argument, which no parser saw
        folders: list[str | Path] = [*parents, *map(_parent_path, extra)]
    except typer.BadParameter as exc:
        exc.param_hint = "'--parents'"
        raise
    if len(folders) < 2:  # was a copy of the parent (times its weight), recorded in lineage.json as a blend, exit 0
        raise UsageError(f"--parents: a blend needs at least 2 parents (got 1: {folders[0]})",
                         hint="give another parent; to copy an adapter, copy its folder")
    if alpha is not None and weights is not None:
        raise UsageError("--alpha and --weights exclude each other",
                         hint="--alpha a for two parents, --weights for any number")
    if alpha is not None:
        if len(folders) != 2:
            raise UsageError(f"--alpha needs exactly 2 parents (got {len(folders)})",
                             hint="give one weight per parent with --weights, e.g. --weights 0.5,0.3,0.2")
        ws = [alpha, 1.0 - alpha]
    elif weights is not None:
        try:
            ws = [float(w) for w in weights.split(",") if w.strip()]
        except ValueError:
            raise UsageError(f"--weights: '{weights}' is not a comma-separated list of numbers",
                             hint="give one number per parent, e.g. --weights 0.5,-0.3,0.8") from None
        if len(ws) != len(folders):
            raise UsageError(f"--weights: {len(ws)} weights for {len(folders)} parents",
                             hint="give one weight per parent, in the order of --parents")
        if not any(ws):
            raise UsageError("--weights: every weight is 0: the child would change nothing",
                             hint="give at least one parent a weight other than 0")
    else:
        ws = [1.0 / len(folders)] * len(folders)
    if method not in ("exact", "linear"):
        raise UsageError(f"--method: unknown method '{method}'", hint="use exact or linear")
    from agentlab.core.config import absolute_path
    from agentlab.core.train.blend import blend_adapters, check_compatible, read_parent

    _check_writable(child)
    if rank is not None and method == "exact":
        # above the parents' total rank the blend is already exact: a larger rank would only pad the child with zero
        # rows (a rank-1000 child of two rank-16 parents took 8 MB and was reported as "exact; rank 1000")
        read = [read_parent(p) for p in folders]
        check_compatible(read)
        total = max(sum(p.modules[m][0].shape[0] for p in read) for m in read[0].modules)
        if rank > total:
            console.print(f"--rank {rank} is above the parents' total rank {total}: the child has rank {total}, "
                          "which is exact already (a larger rank would only add zeros)")
            rank = total
    with console.status(f"blending {len(folders)} adapters into {safe_text(child)}"):
        result = blend_adapters(folders, ws, child, method=method, rank=rank, mut=mut, mut_std=mut_std, seed=seed,
                                force=force)
    data = {**result.to_dict(), "child": str(absolute_path(child))}  # as lineage.json names the parents: absolute
    if json_:
        print_json(data)
        return
    energy = "n/a (linear blend, not exact)" if method == "linear" else f"{result.discarded_energy:.3g}"
    what = "exact" if result.exact else f"not exact: {' and '.join(result.inexact)}"
    console.print(f"[bold]child[/]: {safe_text(data['child'])} ({what}; rank {result.rank}, "
                  f"weights {', '.join(f'{w:g}' for w in ws)})")
    console.print(f"discarded energy {energy} over {data['modules']} modules; {result.seconds:.2f} s")


def _check_writable(child: Path) -> None:
    """--child's folder can be written (``UsageError``, exit 2, before the blend): the blend writes into a temporary
    folder beside the child, and a parent that cannot hold it (``/proc``, read-only) was an exit-1 error naming that
    temporary file (``cannot_write``)."""
    from agentlab.core.errors import UsageError
    from agentlab.core.files import cannot_write

    unwritable = cannot_write(child.parent)
    if unwritable is not None:
        raise UsageError(f"--child {child}: cannot write in {unwritable[0]} ({unwritable[1]})",
                         hint="give --child a folder you can write to")
