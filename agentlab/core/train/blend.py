"""Exact blends of PEFT LoRA adapters (``agentlab evolve blend``, the crossover of ``evolve run``) and distances
between adapters in weight space (``evolve run``'s novelty).

A LoRA adapter changes each target module's weight by ``delta W = s * B @ A`` (``s = alpha / r``, or
``alpha / sqrt(r)`` with rsLoRA). The blend of parents 1..n with real weights ``w_i`` (negative allowed) is

    delta W = sum_i w_i * s_i * B_i @ A_i

per module. Averaging the A matrices and the B matrices separately is not this: ``(a A1 + b A2)(a B1 + b B2)``
carries the cross terms ``B1 A2`` and ``B2 A1``. :func:`blend_adapters` (method ``"exact"``) stacks the factors,
``B = [w_1 s_1 B_1, ..., w_n s_n B_n]`` (out x R) and ``A = [A_1; ...; A_n]`` (R x in), so ``B @ A`` is the sum above
without materialising it; QR on each side (``B = Qb Rb``, ``A^T = Qa Ra``) and an SVD of the small core ``Rb Ra^T``
(at most R x R) give the best rank-r factors (Eckart-Young): ``B' = Qb U_r sqrt(S_r)``, ``A' = sqrt(S_r) V_r^T Qa^T``.
With ``r >= R`` (the default: the sum of the parents' ranks) the child is exact up to rounding; with a smaller r the
relative Frobenius error is ``sqrt(discarded energy)``, where the discarded energy is the sum of the dropped singular
values squared over the total, reported per module and overall. Ranks, alphas and rsLoRA may differ between parents.

``method="linear"`` is the seed's blend, kept for comparison and documented as NOT exact: ``A = sum_i w_i A_i`` and
``B = sum_i w_i s_i B_i`` (equal ranks only), so ``B @ A`` carries the cross terms.

Parents must be LoRA adapters on the same base model (``base_model_name_or_path``) with the same set of adapted
modules: a module present in only some parents is refused (naming it), not taken as zero, since that usually means
the adapters were trained for different targets. DoRA, ``alpha_pattern`` and extra saved modules
(``modules_to_save``, embedding LoRA) are refused. Work is done in float64 on the CPU; the child is saved in the
parents' dtype as a plain PEFT folder, atomically, with ``lineage.json`` beside its config.

torch and safetensors are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentlab.core.errors import InputError, missing_package
from agentlab.core.files import check_replace, ordinary_modes, rename_into_place
from agentlab.core.models.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS, check_lora_rank, read_lora
from agentlab.core.models.builtin import canonical_base

if TYPE_CHECKING:
    import torch

LINEAGE = "lineage.json"
METHODS = ("exact", "linear")
FLOAT32_MAX = 3.4028234663852886e38  # the largest finite float32
EXACT_TOLERANCE = 1e-9  # discarded energy (a share of the sum's) below which a truncated blend is still exact
_A, _B = ".lora_A.weight", ".lora_B.weight"


class NotFiniteChild(InputError):
    """The blended child overflows its dtype (a huge weight, ``--scale`` or ``--mut-std``): nothing was written
    (exit 2). ``tensor``: the first factor that is not finite; ``dtype``: the child's (``float32``); ``child``: the
    folder not written. A caller with its own knobs (``evolve run``'s config fields) catches it by type and says its
    own next step; the message and hint are `evolve blend`'s."""

    def __init__(self, tensor: str, dtype: str, child: Path):
        self.tensor, self.dtype, self.child = tensor, dtype, child
        super().__init__(f"the child's {tensor} is not finite in {dtype}: nothing written to {child}",
                         hint="give smaller weights (or a smaller --mut-std, --scale)")


@dataclass
class Parent:
    """One parent adapter as read from disk: its config and, per module key, (A, B, scaling) in float64."""

    path: Path
    config: dict[str, Any]
    modules: dict[str, tuple[torch.Tensor, torch.Tensor, float]]
    dtype: torch.dtype


@dataclass
class BlendResult:
    """What :func:`blend_adapters` wrote: the child folder and the numbers that ``lineage.json`` also records."""

    child: Path
    method: str
    rank: int
    lora_alpha: float
    weights: list[float]
    discarded_energy: float
    module_energy: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    mutated: bool = False

    @property
    def inexact(self) -> list[str]:
        """Why the child is not the weighted sum of the parents' deltas (empty: it is, up to rounding)."""
        if self.method != "exact":
            why = [f"the {self.method} blend"]
        else:
            why = ["truncated to this rank"] if self.discarded_energy > EXACT_TOLERANCE else []
        return why + (["mutated"] if self.mutated else [])

    @property
    def exact(self) -> bool:
        """Whether the child is the weighted sum of the parents' deltas (up to rounding): the exact method, kept at a
        rank that drops nothing, with no mutation noise."""
        return not self.inexact

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; the linear blend's energies (undefined: it is not a truncation of the exact sum) are None."""
        svd = self.method == "exact"
        worst = max(self.module_energy.items(), key=lambda kv: kv[1], default=(None, 0.0)) if svd else (None, None)
        return {"child": str(self.child), "method": self.method, "exact": self.exact, "rank": self.rank,
                "lora_alpha": self.lora_alpha, "weights": self.weights, "mutated": self.mutated,
                "discarded_energy": self.discarded_energy if svd else None, "modules": len(self.module_energy),
                "worst_module": worst[0], "worst_module_energy": worst[1], "seconds": self.seconds}


def read_parent(path: str | Path) -> Parent:
    """Read a PEFT LoRA adapter folder; ``InputError`` (exit 2) for anything that is not one or cannot be blended."""
    import torch

    path = Path(path)
    config = read_lora(path, "blended")
    check_lora_rank(path, config)  # r or target_modules disagreeing with the weights: export and eval refuse it too
    if config.get("use_dora"):
        raise InputError(f"{path}: a DoRA adapter; only plain LoRA adapters can be blended",
                         hint="train it again as a plain LoRA (`agentlab train-persona` trains one), or use it "
                         "unblended (PEFT's merge_and_unload merges it into its base model)")
    if config.get("alpha_pattern"):
        raise InputError(f"{path}: per-module alphas (alpha_pattern) cannot be blended yet")
    tensors = _load_weights(path)
    alpha = float(config.get("lora_alpha") or config.get("r") or 8)
    rslora = bool(config.get("use_rslora"))
    modules: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = {}
    for key in sorted(tensors):
        if key.endswith(_A):
            module = key[: -len(_A)]
            b = tensors.get(module + _B)
            if b is None:
                raise InputError(f"{path}: {module} has lora_A but no lora_B")
            a = tensors[key]
            if a.ndim != 2 or b.ndim != 2 or b.shape[1] != a.shape[0]:
                raise InputError(f"{path}: {module}: lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)} do not fit "
                                 "(only linear LoRA layers can be blended)")
            r = a.shape[0]
            scaling = alpha / math.sqrt(r) if rslora else alpha / r
            modules[module] = (a.to(torch.float64), b.to(torch.float64), scaling)
        elif not key.endswith(_B):
            raise InputError(f"{path}: holds '{key}', which is not a linear LoRA factor; adapters with "
                             "modules_to_save, embedding LoRA or DoRA cannot be blended")
        elif key[: -len(_B)] + _A not in tensors:
            raise InputError(f"{path}: {key[: -len(_B)]} has lora_B but no lora_A")
    if not modules:
        raise InputError(f"{path}: the adapter holds no LoRA weights")
    dtype = next(iter(tensors.values())).dtype
    return Parent(path, config, modules, dtype)


def blend_adapters(parents: list[str | Path], weights: list[float], child: str | Path, *, method: str = "exact",
                   rank: int | None = None, lora_alpha: float | None = None, mut: float = 0.0,
                   mut_std: float = 0.01, seed: int = 0, force: bool = False) -> BlendResult:
    """Blend ``parents`` with ``weights`` into the new PEFT adapter folder ``child``; see the module docstring.

    - ``rank``: the child's r (default: the sum of the parents' ranks, which makes the exact blend exact; larger
      ranks are zero-padded). ``method="linear"`` needs parents of one rank and uses it.
    - ``lora_alpha``: the child's alpha (default r, scaling 1); the scale is folded into B, so delta W is the same.
    - ``mut``, ``mut_std``: each element of the child's A and B factors gets N(0, mut_std^2) noise with probability
      ``mut`` (a torch generator seeded by ``seed``), after the blend.
    - ``child`` is written into a temporary folder beside it and renamed into place; an existing ``child`` is
      refused unless ``force`` (then replaced). ``lineage.json`` records parents, weights, method, mutation, seed,
      rank and discarded energy.
    - One parent is allowed: the child is it times its weight, mutated (the GA's child when its tournament finds no
      second parent); `agentlab evolve blend` refuses one, as there it was a plain copy recorded as a blend.
    """
    try:
        import torch
    except ImportError as exc:
        raise missing_package(exc) or exc from None
    start = time.perf_counter()
    child = Path(child)
    if method not in METHODS:
        raise InputError(f"unknown blend method '{method}'", hint=f"use one of: {', '.join(METHODS)}")
    if len(parents) < 1:
        raise InputError("no parent adapters given", hint="give two or more adapter folders")
    if len(weights) != len(parents):
        raise InputError(f"{len(weights)} weights for {len(parents)} parents", hint="give one weight per parent")
    if not all(math.isfinite(w) for w in weights):
        raise InputError(f"weights must be finite numbers (got {weights})", hint="give each parent a finite weight")
    if not 0.0 <= mut <= 1.0:
        raise InputError(f"mutation probability {mut} is not in [0, 1]", hint="give a probability from 0 to 1")
    if mut_std < 0 or not mut_std <= FLOAT32_MAX:  # nan and inf too; the child's factors are float32 or narrower
        raise InputError(f"mutation std {mut_std} must be a finite number >= 0 (float32: at most {FLOAT32_MAX:.4g})",
                         hint="give 0 or more (0.01 is the default)")
    if lora_alpha is not None and not (math.isfinite(lora_alpha) and lora_alpha > 0):
        raise InputError(f"child lora_alpha {lora_alpha} must be > 0")
    _check_child(child, parents, force)
    read = [read_parent(p) for p in parents]
    check_compatible(read)
    ranks = [next(iter(p.modules.values()))[0].shape[0] for p in read]
    module_ranks = {m: [p.modules[m][0].shape[0] for p in read] for m in read[0].modules}
    if method == "linear":
        uneven = {m: rs for m, rs in module_ranks.items() if len(set(rs)) > 1}
        if uneven:
            m, rs = next(iter(uneven.items()))
            raise InputError(f"the linear blend needs parents of one rank; {m} has ranks {rs}",
                             hint="use --method exact, which blends any ranks")
        if rank is not None and rank != ranks[0]:
            raise InputError(f"the linear blend keeps the parents' rank {ranks[0]}; --rank {rank} is not possible",
                             hint="drop --rank, or use --method exact")
        r = ranks[0]
    else:
        r = rank if rank is not None else max(sum(rs) for rs in module_ranks.values())
    if r < 1:
        raise InputError(f"rank {r} must be >= 1", hint="give a rank of 1 or more, or none for the exact blend")
    alpha = float(lora_alpha) if lora_alpha is not None else float(r)
    fold = r / alpha  # child scaling is alpha / r; B is multiplied by its inverse
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    discarded: dict[str, float] = {}
    total_sq = dropped_sq = 0.0
    for module in sorted(read[0].modules):
        factors = [(p.modules[module][0], p.modules[module][1] * (w * p.modules[module][2]))
                   for p, w in zip(read, weights, strict=True)]
        if method == "exact":
            a, b, kept, dropped = _exact(factors, r)
        else:
            a = sum((w * f[0] for w, f in zip(weights, factors, strict=True)), torch.zeros_like(factors[0][0]))
            b = sum((f[1] for f in factors), torch.zeros_like(factors[0][1]))
            kept, dropped = float("nan"), 0.0
        b = b * fold
        if mut > 0 and mut_std > 0:
            a, b = _mutate(a, mut, mut_std, gen), _mutate(b, mut, mut_std, gen)
        out[module + _A], out[module + _B] = a, b
        if method == "exact":
            discarded[module] = dropped / (kept + dropped) if kept + dropped > 0 else 0.0
            total_sq += kept + dropped
            dropped_sq += dropped
        else:
            discarded[module] = float("nan")
    energy = dropped_sq / total_sq if method == "exact" and total_sq > 0 else (0.0 if method == "exact" else
                                                                                   float("nan"))
    result = BlendResult(child, method, r, alpha, [float(w) for w in weights], energy, discarded, 0.0,
                         mutated=mut > 0 and mut_std > 0)
    return _save_child(result, read, out, force, start, {
        "parent_alphas": [p.config.get("lora_alpha") for p in read],
        "parent_rslora": [bool(p.config.get("use_rslora")) for p in read],
        # exact: the child is the weighted sum of the parents' deltas, no more (a lower rank drops part of it,
        # mutation adds noise to it)
        "weights": result.weights, "method": method, "exact": result.exact,
        "rank": r, "lora_alpha": alpha, "mutation": {"p": mut, "std": mut_std}, "seed": seed})


def ties_merge(parents: list[str | Path], child: str | Path, *, density: float = 0.2, scale: float = 1.0,
               rank: int | None = None, force: bool = False) -> BlendResult:
    """TIES-merging (Yadav et al. 2023) of LoRA adapters into the new PEFT adapter folder ``child``.

    Per module, each parent's dense ``delta W_i = s_i B_i A_i`` is trimmed to its ``density`` share of largest
    magnitudes; each element's sign is elected by the sum of the trimmed values; the values that agree with it are
    averaged (the disjoint mean) and the result times ``scale`` is the merged delta. The merged delta is dense, so
    the child is its best rank-``rank`` approximation (SVD; default: the sum of the parents' ranks), with the
    discarded energy recorded as for the exact blend. Materialises each module's out x in delta (fine for the
    attention and MLP matrices of small models)."""
    try:
        import torch
    except ImportError as exc:
        raise missing_package(exc) or exc from None
    start = time.perf_counter()
    child = Path(child)
    if not 0.0 < density <= 1.0:
        raise InputError(f"TIES density {density} must be in (0, 1]")
    if not math.isfinite(scale):
        raise InputError(f"TIES scale {scale} must be a finite number")
    if not parents:
        raise InputError("no parent adapters given", hint="give two or more adapter folders")
    _check_child(child, parents, force)
    read = [read_parent(p) for p in parents]
    check_compatible(read)
    ranks = [next(iter(p.modules.values()))[0].shape[0] for p in read]
    r = rank if rank is not None else sum(ranks)
    if r < 1:
        raise InputError(f"rank {r} must be >= 1", hint="give a rank of 1 or more, or none for the exact blend")
    out: dict[str, torch.Tensor] = {}
    discarded: dict[str, float] = {}
    total_sq = dropped_sq = 0.0
    for module in sorted(read[0].modules):
        deltas = torch.stack([b @ a * sc for a, b, sc in (p.modules[module] for p in read)])  # n x out x in
        flat = deltas.reshape(len(read), -1)
        keep = max(1, math.ceil(density * flat.shape[1]))
        threshold = flat.abs().kthvalue(flat.shape[1] - keep + 1, dim=1, keepdim=True).values
        trimmed = torch.where(flat.abs() >= threshold, flat, torch.zeros_like(flat))
        sign = torch.sign(trimmed.sum(dim=0))
        agree = (torch.sign(trimmed) == sign) & (trimmed != 0)
        count = agree.sum(dim=0).clamp(min=1)
        merged = ((trimmed * agree).sum(dim=0) / count * scale).reshape(deltas.shape[1:])
        u, sv, vh = torch.linalg.svd(merged, full_matrices=False)
        k = min(r, sv.shape[0])
        root = sv[:k].sqrt()
        new_b = torch.zeros(merged.shape[0], r, dtype=merged.dtype)
        new_a = torch.zeros(r, merged.shape[1], dtype=merged.dtype)
        new_b[:, :k] = u[:, :k] * root
        new_a[:k] = root[:, None] * vh[:k]
        out[module + _A], out[module + _B] = new_a, new_b
        sq = sv.square()
        kept, dropped = float(sq[:k].sum()), float(sq[k:].sum())
        discarded[module] = dropped / (kept + dropped) if kept + dropped > 0 else 0.0
        total_sq += kept + dropped
        dropped_sq += dropped
    energy = dropped_sq / total_sq if total_sq > 0 else 0.0
    result = BlendResult(child, "ties", r, float(r), [scale] * len(read), energy, discarded, 0.0)
    return _save_child(result, read, out, force, start, {
        "method": "ties", "exact": False, "density": density, "scale": scale, "rank": r, "lora_alpha": float(r)})


def _save_child(result: BlendResult, read: list[Parent], tensors: dict[str, torch.Tensor], force: bool,
                start: float, lineage: dict[str, Any]) -> BlendResult:
    """Write ``result``'s child folder (the parents' dtype when they share one, else float32) with its lineage: the
    method's own fields plus the parents, their ranks, the discarded energy and the base model."""
    import torch

    dtype = read[0].dtype if all(p.dtype == read[0].dtype for p in read) else torch.float32
    config = _child_config(read, result.rank, result.lora_alpha)
    lineage = {"parents": [str(p.path.absolute()) for p in read],
               "parent_ranks": [next(iter(p.modules.values()))[0].shape[0] for p in read], **lineage,
               "discarded_energy": _json_number(result.discarded_energy),
               "module_discarded_energy": {m: _json_number(e) for m, e in result.module_energy.items()},
               "base_model_name_or_path": config.get("base_model_name_or_path")}
    tensors = {k: v.to(dtype).contiguous() for k, v in tensors.items()}
    bad = next((k for k, v in tensors.items() if not bool(torch.isfinite(v).all())), None)
    if bad is not None:  # a huge --mut-std, weight or --scale: the adapter would load and break every answer
        raise NotFiniteChild(bad, str(dtype).removeprefix("torch."), result.child)
    _write_child(result.child, config, tensors, lineage, force)
    result.seconds = time.perf_counter() - start
    return result


def _exact(factors: list[tuple[torch.Tensor, torch.Tensor]], r: int) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """Best rank-r factors of sum_i B_i @ A_i (A_i: r_i x in, B_i: out x r_i, scales already in B) -> (A', B', kept
    energy, dropped energy), never forming the out x in product."""
    import torch

    a = torch.cat([f[0] for f in factors], dim=0)  # R x in
    b = torch.cat([f[1] for f in factors], dim=1)  # out x R
    qb, rb = torch.linalg.qr(b)  # out x kb, kb x R
    qa, ra = torch.linalg.qr(a.T)  # in x ka, ka x R
    u, s, vh = torch.linalg.svd(rb @ ra.T)  # core kb x ka
    k = min(r, s.shape[0])
    root = s[:k].sqrt()
    new_b = torch.zeros(b.shape[0], r, dtype=b.dtype)
    new_a = torch.zeros(r, a.shape[1], dtype=a.dtype)
    new_b[:, :k] = qb @ (u[:, :k] * root)
    new_a[:k] = (root[:, None] * vh[:k]) @ qa.T
    sq = s.square()
    return new_a, new_b, float(sq[:k].sum()), float(sq[k:].sum())


def _mutate(t: torch.Tensor, p: float, std: float, gen: torch.Generator) -> torch.Tensor:
    import torch

    mask = torch.rand(t.shape, generator=gen, dtype=t.dtype) < p
    return t + mask * torch.randn(t.shape, generator=gen, dtype=t.dtype) * std


def check_compatible(parents: list[Parent]) -> None:
    first = parents[0]
    base = first.config.get("base_model_name_or_path")
    for p in parents[1:]:
        other = p.config.get("base_model_name_or_path")
        if canonical_base(other) != canonical_base(base):  # a built-in named by its name or its upstream hub id
            if not base or not other:  # as export says it
                unnamed, named, name = (first, p, other) if not base else (p, first, base)
                raise InputError(f"{unnamed.path}: {ADAPTER_CONFIG} names no base model (base_model_name_or_path), "
                                 f"but {named.path}'s is '{name}'",
                                 hint=f"if it was trained on that model, set base_model_name_or_path in "
                                 f"{unnamed.path / ADAPTER_CONFIG}; blend only adapters trained on the same base model")
            raise InputError(f"{p.path}: base model '{other}' differs from {first.path}'s '{base}'",
                             hint="blend only adapters trained on the same base model")
        only_first = sorted(set(first.modules) - set(p.modules))
        only_p = sorted(set(p.modules) - set(first.modules))
        if only_first or only_p:
            where, module = (first.path, only_first[0]) if only_first else (p.path, only_p[0])
            raise InputError(f"{p.path} and {first.path} adapt different modules ({module} only in {where}; "
                             f"{len(only_first) + len(only_p)} differ)",
                             hint="blend adapters with the same target_modules")
        for m, (a, b, _) in p.modules.items():
            a0, b0, _ = first.modules[m]
            if a.shape[1] != a0.shape[1] or b.shape[0] != b0.shape[0]:
                raise InputError(f"{p.path}: {m} is {b.shape[0]}x{a.shape[1]}, {first.path}'s is "
                                 f"{b0.shape[0]}x{a0.shape[1]}", hint="blend adapters on the same base model")


def _child_config(parents: list[Parent], r: int, alpha: float) -> dict[str, Any]:
    config = dict(parents[0].config)
    targets = [p.config.get("target_modules") for p in parents]
    if any(t != targets[0] for t in targets):
        config["target_modules"] = sorted({m.rsplit(".", 1)[-1] for m in parents[0].modules})
    alpha_out: float | int = int(alpha) if float(alpha).is_integer() else alpha
    config.update(r=r, lora_alpha=alpha_out, use_rslora=False, use_dora=False, rank_pattern={}, alpha_pattern={},
                  inference_mode=True)
    return config


def _check_child(child: Path, parents: list[str | Path], force: bool) -> None:
    resolved = child.resolve()
    for p in parents:
        if Path(p).resolve() == resolved:
            raise InputError(f"{child}: the child would replace its parent {p}", hint="give the child a new folder")
    check_replace(child, force, ADAPTER_CONFIG, "an adapter folder", flag="--child")


def _write_child(child: Path, config: dict[str, Any], tensors: dict[str, torch.Tensor], lineage: dict[str, Any],
                 force: bool) -> None:
    from safetensors.torch import save_file

    try:
        child.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{child.parent}: cannot create the folder ({exc.strerror or exc})") from None
    tmp = Path(tempfile.mkdtemp(dir=child.parent, prefix=f".{child.name}.", suffix=".tmp"))
    try:
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS[0]), metadata={"format": "pt"})
        (tmp / LINEAGE).write_text(json.dumps(lineage, indent=2) + "\n")
        ordinary_modes(tmp)  # mkdtemp and safetensors make theirs private; the adapter folder is an ordinary one
        _check_child(child, [], force)  # it may have appeared while we worked
        rename_into_place(tmp, child)  # an old child is deleted only once the new one is in its place
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    import torch

    file = path / ADAPTER_WEIGHTS[0]
    try:
        if file.is_file():
            from safetensors.torch import load_file

            return load_file(str(file))
        file = path / ADAPTER_WEIGHTS[1]
        if file.is_file():
            return torch.load(file, map_location="cpu", weights_only=True)
    except ImportError:
        raise
    except Exception as exc:  # safetensors and torch raise many types for a damaged file
        raise InputError(f"{file}: cannot read the adapter weights ({' '.join(str(exc).split())[:200]})",
                         hint="the file is damaged or cut short (an interrupted copy, download or save): train, copy "
                         "or download the adapter again") from None
    raise InputError(f"{path}: not a PEFT adapter folder (no {' or '.join(ADAPTER_WEIGHTS)})",
                     hint="the adapter's weights are missing; save or train it again")


def _json_number(x: float) -> float | None:
    return None if math.isnan(x) else x


def dense_delta(path: str | Path) -> dict[str, torch.Tensor]:
    """Each module's ``s * B @ A`` of the adapter at ``path`` in float64 (for tests and benchmarks; materialises it)."""
    return {m: b @ a * s for m, (a, b, s) in read_parent(path).modules.items()}


def delta_norms(a: Parent, b: Parent) -> tuple[float, float, float]:
    """``(||dW_a||, ||dW_b||, ||dW_a - dW_b||)``, Frobenius over every module, from the factors alone: each term is a
    trace of r x r products (``<B1 A1, B2 A2> = tr((B1^T B2)(A2 A1^T))``), so nothing of size out x in is built."""
    import torch

    if set(a.modules) != set(b.modules):
        only = sorted(set(a.modules) ^ set(b.modules))[0]
        raise InputError(f"{a.path} and {b.path} adapt different modules (e.g. {only})")

    def inner(x: tuple[torch.Tensor, torch.Tensor, float], y: tuple[torch.Tensor, torch.Tensor, float]) -> float:
        (ax, bx, sx), (ay, by, sy) = x, y
        return float(sx * sy * torch.trace((bx.T @ by) @ (ay @ ax.T)))

    aa = bb = ab = 0.0
    for module, x in a.modules.items():
        y = b.modules[module]
        aa += inner(x, x)
        bb += inner(y, y)
        ab += inner(x, y)
    return math.sqrt(max(aa, 0.0)), math.sqrt(max(bb, 0.0)), math.sqrt(max(aa + bb - 2 * ab, 0.0))


def delta_distance(a: Parent, b: Parent) -> float:
    """``||dW_a - dW_b|| / (||dW_a|| + ||dW_b||)``: 0 for the same delta, 1 for opposite ones, ~0.7 for unrelated."""
    na, nb, d = delta_norms(a, b)
    return d / (na + nb) if na + nb > 0 else 0.0
