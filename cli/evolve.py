"""`agentlab evolve blend`: an exact weighted blend of PEFT LoRA adapters into a child adapter (`evolve run` is not
built yet)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import JsonOpt, console, opt, print_json, safe_text

app = typer.Typer(help="Evolve LoRA adapters: blend parents into a child (the evolution loop is not built yet).",
                  no_args_is_help=True)



@app.command("blend", context_settings={"allow_extra_args": True})
def blend(
    ctx: typer.Context,
    parents: Annotated[list[Path], opt("--parents", help="The parent adapter folders: `--parents A B C` (or "
                                        "--parents repeated).")],
    child: Annotated[Path, opt("--child", help="The child adapter folder to write (must not exist).")],
    alpha: Annotated[float | None, opt("--alpha", help="Two parents only: weight a for the first, 1-a for the "
                                        "second.")] = None,
    weights: Annotated[str | None, opt("--weights", help="One weight per parent, comma-separated, e.g. "
                                        "0.5,0.3,0.2 (negative allowed). Default: equal weights.")] = None,
    rank: Annotated[int | None, opt("--rank", help="The child's LoRA rank (default: the sum of the parents' "
                                     "ranks, which makes the blend exact).")] = None,
    method: Annotated[str, typer.Option("--method", help="exact (QR + SVD of the stacked factors) or linear (the "
                                        "per-matrix average of A and of B: NOT exact, for comparison).")] = "exact",
    mut: Annotated[float, typer.Option("--mut", help="Mutation: probability that an element of the child's A/B "
                                       "gets Gaussian noise.")] = 0.0,
    mut_std: Annotated[float, typer.Option("--mut-std", help="Mutation: the noise's standard deviation.")] = 0.01,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the mutation noise.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing child folder.")] = False,
    json_: JsonOpt = False,
) -> None:
    """Blend LoRA adapters on delta W = sum_i w_i * scale_i * B_i A_i, exactly (no cross terms), into a PEFT adapter
    folder with lineage.json. Parents must share the base model and the adapted modules; ranks, alphas and rsLoRA
    may differ."""
    from agentlab.core.errors import UsageError

    extra = list(ctx.args)
    unknown = [a for a in extra if a.startswith("-")]
    if unknown:
        raise UsageError(f"no such option: {unknown[0]}", hint="see `agentlab evolve blend --help`")
    folders = [*parents, *map(Path, extra)]
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
            raise UsageError(f"--weights: '{weights}' is not a comma-separated list of numbers") from None
        if len(ws) != len(folders):
            raise UsageError(f"--weights: {len(ws)} weights for {len(folders)} parents",
                             hint="give one weight per parent, in the order of --parents")
    else:
        ws = [1.0 / len(folders)] * len(folders)
    if method not in ("exact", "linear"):
        raise UsageError(f"--method: unknown method '{method}'", hint="use exact or linear")
    from agentlab.core.train.blend import blend_adapters

    with console.status(f"blending {len(folders)} adapters into {safe_text(child)}"):
        result = blend_adapters(folders, ws, child, method=method, rank=rank, mut=mut, mut_std=mut_std, seed=seed,
                                force=force)
    data = result.to_dict()
    if json_:
        print_json(data)
        return
    energy = "n/a (linear blend, not exact)" if method == "linear" else f"{result.discarded_energy:.3g}"
    console.print(f"[bold]child[/]: {safe_text(child)} ({method}, rank {result.rank}, "
                  f"weights {', '.join(f'{w:g}' for w in ws)})")
    console.print(f"discarded energy {energy} over {data['modules']} modules; {result.seconds:.2f} s")
