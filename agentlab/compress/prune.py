"""Pruning a transformers causal LM in place: magnitude and Wanda (unstructured or N:M), and structured pruning that
really shrinks the model (MLP channels, whole decoder layers, whole key/value groups of attention heads).

Only the linear layers of the decoder blocks are pruned: embeddings and the output head are shared by every token
and are what a pruned model still needs to read and write its vocabulary. Unstructured and N:M pruning zero
weights (the shapes stay, so the sparsity shows in size only after a sparse format or a compressor);
:func:`structured_prune` removes rows, columns and layers, so every backend runs the smaller model.

Models: Llama-style decoders whose blocks are ``model.model.layers`` (Llama / SmolLM2, Qwen2, Mistral): attention
``q/k/v/o_proj``, MLP ``gate/up/down_proj``. torch is imported inside the functions.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentlab.compress.measure import param_count
from agentlab.core.errors import InputError

if TYPE_CHECKING:
    import torch

_NM = re.compile(r"^(\d+):(\d+)$")


@dataclass(frozen=True)
class Sparsity:
    """Zeros among the weights of the decoder blocks' linear layers (what the pruning functions prune)."""

    sparsity: float  # zeros / weights over all those layers
    zeros: int
    weights: int
    per_layer: dict[str, float]  # module name -> its fraction of zeros


def sparsity_of(model: Any) -> Sparsity:
    """The fraction of zero weights in the decoder blocks' linear layers, overall and per layer."""
    zeros = total = 0
    per_layer: dict[str, float] = {}
    for name, lin in decoder_linears(model).items():
        z, n = int((lin.weight == 0).sum()), lin.weight.numel()
        zeros, total = zeros + z, total + n
        per_layer[name] = z / n
    return Sparsity(zeros / total if total else 0.0, zeros, total, per_layer)


def decoder_blocks(model: Any) -> Any:
    """The ``nn.ModuleList`` of decoder blocks (``model.model.layers``); ``InputError`` for other layouts and for
    models with unmerged LoRA layers (whose ``lora_A`` / ``lora_B`` are linear layers too)."""
    import torch

    layers = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise InputError(f"pruning expects a transformers causal LM with its decoder blocks at model.model.layers "
                         f"(Llama, Qwen2, Mistral), not {type(model).__name__}",
                         hint="load the model with load_causal_lm (no adapters), or merge adapters first")
    if any("lora_" in name for name, _ in layers.named_modules()):
        raise InputError("the model has LoRA layers that are not merged into its weights",
                         hint="merge them first: model = model.merge_and_unload()")
    return layers


def decoder_linears(model: Any) -> dict[str, Any]:
    """Every ``nn.Linear`` inside the decoder blocks, by full module name (``model.layers.3.mlp.up_proj``)."""
    import torch

    return {f"model.layers.{i}.{name}": mod for i, block in enumerate(decoder_blocks(model))
            for name, mod in block.named_modules() if isinstance(mod, torch.nn.Linear)}


def parse_pattern(pattern: str, sparsity: float | None) -> tuple[int, int] | None:
    """``None`` for ``unstructured`` (then ``sparsity`` must be in [0, 1)), ``(n, m)`` for ``"n:m"`` (keep n of
    every m consecutive input weights; ``sparsity`` must be None or 1 - n/m, so a caller never gets another
    sparsity than the one it asked for)."""
    if pattern == "unstructured":
        if sparsity is None or not 0 <= sparsity < 1:
            raise InputError(f"unstructured pruning: sparsity {sparsity} must be a fraction in [0, 1)",
                             hint="e.g. sparsity 0.5 zeroes half of each layer's weights")
        return None
    match = _NM.match(pattern)
    if not match or not 0 < int(match.group(1)) < int(match.group(2)):
        raise InputError(f"unknown pruning pattern {pattern!r}", hint="use unstructured, or n:m such as 2:4")
    n, m = int(match.group(1)), int(match.group(2))
    if sparsity is not None and not math.isclose(sparsity, 1 - n / m):
        raise InputError(f"pattern {pattern} has sparsity {1 - n / m:g}, not {sparsity:g}",
                         hint=f"pass sparsity None (or {1 - n / m:g}) with pattern {pattern}")
    return n, m


def row_mask(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """True where a weight goes: the ``round(in_features * sparsity)`` lowest scores of each output row (Wanda's
    comparison group: each output sums its own inputs, so weights compete within the row they feed)."""
    import torch

    mask = torch.zeros_like(score, dtype=torch.bool)
    k = round(score.shape[1] * sparsity)
    if k:
        mask.scatter_(1, torch.topk(score, k, dim=1, largest=False).indices, True)
    return mask


def nm_mask(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """True where a weight goes: in each group of ``m`` consecutive input weights of a row, all but the ``n`` best
    (the layout sparse tensor cores run: 2:4 on NVIDIA Ampere and later)."""
    import torch

    rows, cols = score.shape
    if cols % m:
        raise InputError(f"{n}:{m} pruning needs in_features divisible by {m}, and a layer has {cols}",
                         hint="use unstructured pruning for this model")
    groups = score.reshape(rows, cols // m, m)
    mask = torch.zeros_like(groups, dtype=torch.bool)
    mask.scatter_(2, torch.topk(groups, m - n, dim=2, largest=False).indices, True)
    return mask.view(rows, cols)


def magnitude_prune(model: Any, sparsity: float | None, pattern: str = "unstructured") -> dict[str, Any]:
    """Zero the smallest ``|w|`` of each decoder-block linear layer: ``sparsity`` of each layer (the comparison
    group is the whole layer, the classic baseline of the Wanda paper), or ``pattern`` ``"n:m"``. The model
    changes in place; returns a report."""
    import torch

    start, nm = time.perf_counter(), parse_pattern(pattern, sparsity)
    with torch.no_grad():
        for lin in decoder_linears(model).values():
            score = lin.weight.detach().abs().float()
            # the whole layer as one row: its lowest scores go, wherever they are
            mask = nm_mask(score, *nm) if nm else row_mask(score.view(1, -1), sparsity or 0.0).view_as(score)
            lin.weight[mask] = 0
    return _report("magnitude", model, pattern, sparsity, nm, start)


def wanda_prune(model: Any, tokenizer: Any, calib_text: str, sparsity: float | None, pattern: str = "unstructured",
                n_samples: int = 32, seq_len: int = 128, seed: int = 0) -> dict[str, Any]:
    """Wanda (Sun et al. 2023, "A Simple and Effective Pruning Approach for LLMs"): a weight's score is
    ``|W_ij| * ||X_j||_2``, its magnitude times the norm of its input feature over calibration tokens, and each
    output row drops its lowest scores (``sparsity`` of the row, or ``pattern`` ``"n:m"``). Magnitude alone keeps
    small weights on inputs that carry huge activations (LLMs have a few such outlier features) and drops large
    weights on inputs that are nearly always zero; Wanda weighs them by what they contribute.

    Input norms come from one pass of ``n_samples`` chunks of ``seq_len`` tokens of ``calib_text`` through the dense
    model (all layers at once; the reference code prunes block by block and feeds the next block the pruned one's
    output, which matters little at this size and costs one pass per block). The model changes in place."""
    import torch

    start, nm = time.perf_counter(), parse_pattern(pattern, sparsity)
    linears = decoder_linears(model)
    chunks = token_chunks(tokenizer, calib_text, seq_len, n=n_samples, seed=seed)
    norms = input_norms(model, chunks, linears)
    with torch.no_grad():
        for name, lin in linears.items():
            score = lin.weight.detach().abs().float() * norms[name][None, :]
            mask = nm_mask(score, *nm) if nm else row_mask(score, sparsity or 0.0)
            lin.weight[mask] = 0
    return {**_report("wanda", model, pattern, sparsity, nm, start), "calib_samples": len(chunks),
            "calib_tokens": chunks.numel()}


def _report(method: str, model: Any, pattern: str, sparsity: float | None, nm: tuple[int, int] | None,
            start: float) -> dict[str, Any]:
    found = sparsity_of(model)
    return {"method": method, "pattern": pattern, "target_sparsity": 1 - nm[0] / nm[1] if nm else sparsity,
            "sparsity": found.sparsity, "layers": len(found.per_layer), "params": param_count(model),
            "seconds": round(time.perf_counter() - start, 3)}


def token_chunks(tokenizer: Any, text: str, seq_len: int, *, n: int | None = None, seed: int = 0) -> torch.Tensor:
    """Non-overlapping chunks of ``seq_len`` tokens of ``text`` (no special tokens), ``[chunks, seq_len]``: data for
    calibration and recovery. With ``n`` and more chunks than that, ``n`` of them drawn at random (``seed``),
    kept in text order."""
    import torch

    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids[0]
    count = len(ids) // seq_len
    if count == 0:
        raise InputError(f"the text has {len(ids)} tokens, fewer than one chunk of {seq_len}",
                         hint="give a longer text, or a smaller seq_len")
    chunks = ids[: count * seq_len].view(count, seq_len)
    if n is not None and n < count:
        pick = torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:n]
        chunks = chunks[pick.sort().values]
    return chunks


def input_norms(model: Any, chunks: torch.Tensor, modules: dict[str, Any]) -> dict[str, Any]:
    """``||X_j||_2`` per input feature ``j`` of each module in ``modules``, over every token of ``chunks`` run through
    ``model`` (forward pre-hooks; float32 sums whatever the model's dtype)."""

    sums: dict[str, torch.Tensor] = {}

    def hook(name: str) -> Any:
        def accumulate(module: Any, args: tuple[Any, ...]) -> None:
            x = args[0].detach().float()
            sq = x.pow(2).sum(dim=tuple(range(x.dim() - 1)))
            sums[name] = sums[name] + sq if name in sums else sq
        return accumulate

    run_calibration(model, chunks, [mod.register_forward_pre_hook(hook(name)) for name, mod in modules.items()])
    return {name: s.sqrt() for name, s in sums.items()}


def run_calibration(model: Any, chunks: torch.Tensor, handles: list[Any]) -> None:
    """Run ``chunks`` through ``model`` (8 at a time, no grad, no cache) for the hooks behind ``handles``, then
    remove them."""
    import torch

    device = next(model.parameters()).device
    try:
        with torch.inference_mode():
            for batch in chunks.split(8):
                model(input_ids=batch.to(device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()


# -- structured pruning: the model really gets smaller --------------------------------------------------------------

_PARTS = {"self_attn": ("q_proj", "k_proj", "v_proj", "o_proj"), "mlp": ("gate_proj", "up_proj", "down_proj")}


def structured_prune(model: Any, *, mlp_keep: float | int | None = None, drop_layers: int | list[int] | None = None,
                     heads_keep: float | int | None = None, tokenizer: Any = None, calib_text: str | None = None,
                     n_samples: int = 16, seq_len: int = 128, multiple_of: int = 1, seed: int = 0) -> dict[str, Any]:
    """Remove parts of the model in place, then fix ``model.config`` so that ``save_pretrained`` /
    ``from_pretrained`` round-trip and ``generate`` works. Returns a report with parameter counts before and after.

    - ``drop_layers``: decoder layer indices to remove, or a count: that many layers with the lowest Block
      Influence (ShortGPT, Men et al. 2024: ``1 - cos(input, output)`` of the block over calibration tokens; a block
      that hardly turns its input is the cheapest to lose). A count needs ``calib_text``.
    - ``mlp_keep``: MLP channels kept in every layer, a fraction (float) or a count (int), rounded to
      ``multiple_of`` (GGUF k-quants want rows in multiples of 256). A channel's importance is the norm of its
      ``down_proj`` column times the norm of its activation over calibration tokens (with ``calib_text``), else
      times its ``gate_proj`` and ``up_proj`` row norms.
    - ``heads_keep``: key/value groups kept in every layer (one KV head with the query heads that share it under
      GQA), a fraction or a count. Whole groups keep GQA's fixed query-per-KV ratio, which transformers assumes;
      single query heads are not removed. Importance: the ``o_proj`` column norms of the group's heads (times their
      activation norms with ``calib_text``, else times the norm of the group's ``v_proj`` rows).

    Every layer keeps the same number of channels and heads, because the config has one ``intermediate_size`` and
    one head count for all layers. Layers are dropped first, so the importance of channels and heads is measured
    on the model that remains."""
    start = time.perf_counter()
    blocks = decoder_blocks(model)
    _check_parts(blocks)
    before = _shape(model)
    calib = None
    if calib_text is not None:
        if tokenizer is None:
            raise InputError("structured_prune: calib_text without a tokenizer", hint="pass tokenizer= as well")
        calib = token_chunks(tokenizer, calib_text, seq_len, n=n_samples, seed=seed)
    report: dict[str, Any] = {"method": "structured", "importance": "activations" if calib is not None else "weights"}
    if drop_layers is not None:
        report.update(drop_decoder_layers(model, drop_layers, calib))
    if mlp_keep is not None or heads_keep is not None:
        norms = _part_norms(model, calib) if calib is not None else None
        if mlp_keep is not None:
            _prune_mlp(model, _count(mlp_keep, model.config.intermediate_size, "mlp_keep", multiple_of), norms)
        if heads_keep is not None:
            _prune_heads(model, _count(heads_keep, model.config.num_key_value_heads, "heads_keep"), norms)
    after = _shape(model)
    report.update({f"{k}_before": v for k, v in before.items()} | {f"{k}_after": v for k, v in after.items()})
    report["param_ratio"] = after["params"] / before["params"]
    report["seconds"] = round(time.perf_counter() - start, 3)
    return report


def _shape(model: Any) -> dict[str, int]:
    cfg = model.config
    return {"params": param_count(model), "layers": cfg.num_hidden_layers, "intermediate": cfg.intermediate_size,
            "heads": cfg.num_attention_heads, "kv_heads": cfg.num_key_value_heads}


def _check_parts(blocks: Any) -> None:
    import torch

    for part, names in _PARTS.items():
        for block in blocks:
            module = getattr(block, part, None)
            if not all(isinstance(getattr(module, n, None), torch.nn.Linear) for n in names):
                raise InputError(f"structured pruning knows Llama-style blocks ({part}: {', '.join(names)}), and "
                                 f"this model's blocks are {type(block).__name__}",
                                 hint="use magnitude_prune or wanda_prune, which work on any linear layers")


def _count(keep: float | int, total: int, what: str, multiple_of: int = 1) -> int:
    """How many of ``total`` to keep: a float is a fraction in (0, 1], an int a count in [1, total]."""
    if isinstance(keep, bool) or not isinstance(keep, (int, float)):
        raise InputError(f"{what}: {keep!r} is neither a fraction nor a count", hint=f"e.g. {what}=0.5")
    if isinstance(keep, float):
        if not 0 < keep <= 1:
            raise InputError(f"{what}: the fraction {keep} is not in (0, 1]", hint=f"e.g. {what}=0.5 keeps half")
        keep = max(1, round(keep * total))
    if multiple_of > 1 and total >= multiple_of:
        keep = min(total, max(multiple_of, round(keep / multiple_of) * multiple_of))
    if not 1 <= keep <= total:
        raise InputError(f"{what}: {keep} is not between 1 and {total}", hint=f"give a count up to {total}")
    return keep


def block_influence(model: Any, chunks: torch.Tensor) -> list[float]:
    """Block Influence of every decoder layer (ShortGPT): the mean over tokens of ``1 - cos(input, output)``."""
    import torch

    blocks = decoder_blocks(model)
    sums = [0.0] * len(blocks)

    def hook(i: int) -> Any:
        def measure(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            x = args[0] if args else kwargs["hidden_states"]
            y = output[0] if isinstance(output, tuple) else output
            sums[i] += float((1 - torch.nn.functional.cosine_similarity(x.float(), y.float(), dim=-1)).sum())
        return measure

    run_calibration(model, chunks, [b.register_forward_hook(hook(i), with_kwargs=True) for i, b in enumerate(blocks)])
    return [s / chunks.numel() for s in sums]


def drop_decoder_layers(model: Any, drop: int | list[int], calib: torch.Tensor | None = None) -> dict[str, Any]:
    """Remove decoder layers (indices, or a count of the lowest Block Influence on ``calib``); renumber the rest
    (the KV cache is indexed by ``layer_idx``) and update ``num_hidden_layers`` and ``layer_types``."""
    import torch

    blocks, cfg = decoder_blocks(model), model.config
    n, report = len(blocks), dict[str, Any]()
    if isinstance(drop, bool):
        raise InputError(f"drop_layers: {drop} is neither a count nor a list of layer indices", hint="e.g. [3, 4]")
    if isinstance(drop, int):
        if calib is None:
            raise InputError("drop_layers as a count picks the least important layers on calibration text",
                             hint="pass tokenizer and calib_text, or list the layer indices to drop")
        if not 0 <= drop < n:
            raise InputError(f"drop_layers: cannot drop {drop} of {n} layers", hint=f"give a count below {n}")
        influence = block_influence(model, calib)
        report["block_influence"] = [round(b, 5) for b in influence]
        gone = sorted(sorted(range(n), key=influence.__getitem__)[:drop])
    else:
        gone = sorted(set(drop))
        if any(not 0 <= i < n for i in gone) or len(gone) >= n:
            raise InputError(f"drop_layers: {list(drop)} are not distinct indices of some of the {n} layers",
                             hint=f"give indices from 0 to {n - 1}, and keep at least one layer")
    kept = [i for i in range(n) if i not in gone]
    model.model.layers = torch.nn.ModuleList([blocks[i] for i in kept])
    for new, block in enumerate(model.model.layers):
        block.self_attn.layer_idx = new
    cfg.num_hidden_layers = len(kept)
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = [cfg.layer_types[i] for i in kept]
    return {**report, "dropped_layers": gone}


def _part_norms(model: Any, calib: torch.Tensor) -> dict[str, Any]:
    """Input norms of every block's ``down_proj`` (MLP channels) and ``o_proj`` (attention head outputs)."""
    modules = {}
    for i, block in enumerate(decoder_blocks(model)):
        modules[f"{i}.mlp"], modules[f"{i}.attn"] = block.mlp.down_proj, block.self_attn.o_proj
    return input_norms(model, calib, modules)


def _prune_mlp(model: Any, keep: int, norms: dict[str, Any] | None) -> None:
    import torch

    with torch.no_grad():
        for i, block in enumerate(decoder_blocks(model)):
            mlp = block.mlp
            score = mlp.down_proj.weight.float().norm(dim=0)
            if norms is not None:
                score = score * norms[f"{i}.mlp"]
            else:
                score = score * mlp.gate_proj.weight.float().norm(dim=1) * mlp.up_proj.weight.float().norm(dim=1)
            keep_mlp_channels(mlp, torch.topk(score, keep).indices.sort().values)
    model.config.intermediate_size = keep


def keep_mlp_channels(mlp: Any, idx: torch.Tensor) -> None:
    """Keep the MLP's intermediate channels ``idx``: rows of ``gate_proj`` / ``up_proj``, columns of ``down_proj``."""
    _keep(mlp.gate_proj, idx, 0)
    _keep(mlp.up_proj, idx, 0)
    _keep(mlp.down_proj, idx, 1)
    if hasattr(mlp, "intermediate_size"):
        mlp.intermediate_size = len(idx)


def _prune_heads(model: Any, keep: int, norms: dict[str, Any] | None) -> None:
    import torch

    cfg = model.config
    kv, rep = cfg.num_key_value_heads, cfg.num_attention_heads // cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    if cfg.hidden_size % (keep * rep):
        fits = [g for g in range(1, kv + 1) if cfg.hidden_size % (g * rep) == 0]
        raise InputError(f"heads_keep: {keep} of {kv} key/value groups leaves {keep * rep} attention heads, and "
                         f"transformers' config check wants hidden_size {cfg.hidden_size} divisible by the head count",
                         hint=f"keep one of {fits} groups")
    with torch.no_grad():
        for i, block in enumerate(decoder_blocks(model)):
            attn = block.self_attn
            o = attn.o_proj.weight.float()
            if norms is not None:
                score = (o.norm(dim=0) * norms[f"{i}.attn"]).view(kv, -1).sum(dim=1)
            else:
                v = attn.v_proj.weight.float().view(kv, -1)
                score = o.view(o.shape[0], kv, -1).norm(dim=(0, 2)) * v.norm(dim=1)
            keep_kv_groups(attn, torch.topk(score, keep).indices.sort().values.tolist(), rep, head_dim)
    cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim = keep * rep, keep, head_dim


def keep_kv_groups(attn: Any, groups: list[int], rep: int, head_dim: int) -> None:
    """Keep the key/value heads ``groups`` of an attention block and the ``rep`` query heads each serves (query head
    ``g * rep + r`` reads key/value head ``g``, as transformers' ``repeat_kv`` lays them out)."""
    import torch

    q_idx = torch.cat([torch.arange(g * rep * head_dim, (g + 1) * rep * head_dim) for g in groups])
    kv_idx = torch.cat([torch.arange(g * head_dim, (g + 1) * head_dim) for g in groups])
    _keep(attn.q_proj, q_idx, 0)
    _keep(attn.k_proj, kv_idx, 0)
    _keep(attn.v_proj, kv_idx, 0)
    _keep(attn.o_proj, q_idx, 1)
    for name, value in (("num_heads", len(groups) * rep), ("num_key_value_heads", len(groups))):
        if hasattr(attn, name):
            setattr(attn, name, value)


def _keep(lin: Any, idx: torch.Tensor, dim: int) -> None:
    """Keep the output rows (``dim`` 0, with their biases) or the input columns (``dim`` 1) ``idx`` of ``lin``."""
    import torch

    idx = idx.to(lin.weight.device)
    lin.weight = torch.nn.Parameter(lin.weight.data.index_select(dim, idx), requires_grad=lin.weight.requires_grad)
    if dim == 0 and lin.bias is not None:
        lin.bias = torch.nn.Parameter(lin.bias.data[idx].clone(), requires_grad=lin.bias.requires_grad)
    lin.out_features, lin.in_features = lin.weight.shape
