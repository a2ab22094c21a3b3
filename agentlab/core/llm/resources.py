"""Memory estimates for local models, and the check that refuses to load what does not fit.

An estimate is weights + KV cache + compute buffers, split between RAM and GPU memory. GGUF estimates mirror what
llama.cpp allocates (its n_ctx padding, its KV element sizes), so they agree with the sizes llama.cpp logs; HF
estimates come from ``config.json`` and the safetensors headers. Nothing here loads a model: ``gguf`` reads headers
only, and torch is imported only to ask CUDA for free memory when a GPU is actually involved.

Process-wide bookkeeping of what is loaded (``register_loaded``) lets a check count models other providers already
hold against a configured budget.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import sys
import threading
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentlab.core.errors import AgentlabError, LLMError
from agentlab.core.llm.config import ResourceConfig
from agentlab.core.models.modelfiles import HF_SIZE_KEYS, gguf_info, hf_config, hf_sizes, safetensors_numels

log = logging.getLogger(__name__)

GIB = 1024**3
MIB = 1024**2

# Bytes per KV element: ggml's q8_0 block is 32 int8 + one f16 scale (34 bytes), q4_0 is 32 nibbles + scale (18).
KV_BYTES_PER_ELEMENT = {"f32": 4.0, "f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
QUANT_BLOCK = {"q8_0": 32, "q4_0": 32}
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
# llama.cpp (llama_context constructor) pads the requested context to a multiple of 256 cells before sizing the KV
# cache: n_ctx 100 allocates 256 cells, 300 allocates 512. Mirroring it is what makes the KV estimate exact.
N_CTX_PAD = 256
# llama.cpp's default physical batch (n_ubatch); llama-cpp-python caps it by n_batch, and n_batch by n_ctx.
N_UBATCH = 512
# bitsandbytes NF4: half a byte per weight plus the blockwise absmax constants (~4% with double quantization).
NF4_BYTES = 0.5 * 1.04
HF_COMPUTE_FLOOR = 64 * MIB  # allocator slack and temporaries of one transformers forward pass


class ResourceError(LLMError):
    """A model (set) does not fit in the memory available. Exit code 1.

    An ``LLMError`` of kind ``unavailable`` (not retryable) so that a router moves on to the next model of a route
    instead of crashing; callers that check a whole model set up front catch it by this class.
    """

    def __init__(self, message: str, hint: str | None = None, *, model: str | None = None):
        super().__init__(message, "unavailable", model=model, hint=hint)


@dataclass
class MemoryEstimate:
    """What loading one model costs. ``gpu_share`` is the share of weights and KV cache placed on the GPU."""

    name: str
    path: str
    backend: str  # "llama_cpp" | "hf"
    device: str  # "cpu" | "cuda"
    n_ctx: int
    weights_bytes: int
    kv_bytes: int
    compute_bytes: int
    kv_type: str = "f16"
    gpu_share: float = 0.0
    # Model sizes that let check_fits re-estimate at another n_ctx (GGUF); not part of the public shape.
    dims: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.compute_bytes

    @property
    def vram_bytes(self) -> int:
        """GPU side: the offloaded share of weights and KV, plus the compute buffers when anything is offloaded."""
        if self.gpu_share <= 0:
            return 0
        return round((self.weights_bytes + self.kv_bytes) * self.gpu_share) + self.compute_bytes

    @property
    def ram_bytes(self) -> int:
        return self.total_bytes - self.vram_bytes

    def describe(self) -> str:
        """One line, e.g. ``drafter: 1.2 GiB (weights 0.9, KV 0.25 at n_ctx 4096 f16, compute 0.05)``."""
        unit, scale = _unit(self.total_bytes)
        parts = (f"weights {_num(self.weights_bytes / scale)}, KV {_num(self.kv_bytes / scale)} at n_ctx "
                 f"{self.n_ctx} {self.kv_type}, compute {_num(self.compute_bytes / scale)}")
        if self.gpu_share > 0:
            parts += f"; {self.gpu_share:.0%} on cuda"
        return f"{self.name}: {format_bytes(self.total_bytes)} ({parts})"

    def at_n_ctx(self, n_ctx: int) -> MemoryEstimate:
        """The same GGUF model at another context size (raises ValueError for estimates without GGUF dims)."""
        if self.backend != "llama_cpp" or not self.dims:
            raise ValueError(f"{self.name}: only GGUF estimates can be re-sized")
        return _gguf_estimate(self.name, self.path, self.weights_bytes, self.dims, n_ctx, self.kv_type,
                              self.dims["n_gpu_layers"], self.dims["n_batch"], self.dims["flash_attn"])


def format_bytes(n: float) -> str:
    """``1536`` -> ``1.5 KiB``; binary units, three significant digits."""
    unit, scale = _unit(n)
    return f"{int(n)} B" if scale == 1 else f"{_num(n / scale)} {unit}"


def _unit(n: float) -> tuple[str, int]:
    for unit, scale in (("GiB", GIB), ("MiB", MIB), ("KiB", 1024)):
        if abs(n) >= scale:
            return unit, scale
    return "B", 1


def _num(x: float) -> str:
    if x == 0:
        return "0"
    digits = max(0, 2 - int(math.floor(math.log10(abs(x)))))
    return f"{x:.{digits}f}"


# ---------------------------------------------------------------------------------------------------------- estimates


def allocated_n_ctx(n_ctx: int, n_ctx_train: int | None = None) -> int:
    """The context llama.cpp actually allocates for a request of ``n_ctx`` (0: the training context)."""
    if n_ctx <= 0:
        n_ctx = n_ctx_train or N_CTX_PAD
    return -(-n_ctx // N_CTX_PAD) * N_CTX_PAD


def kv_cache_bytes(n_layers: int, n_ctx: int, n_kv_heads: int | Sequence[int], k_dim: int, v_dim: int,
                   cache_type: str = "f16") -> int:
    """Bytes of a K+V cache of ``n_ctx`` cells. ``n_kv_heads`` may be per layer (models with uneven GQA)."""
    if cache_type not in KV_BYTES_PER_ELEMENT:
        raise ValueError(f"unknown KV cache type '{cache_type}' (known: {', '.join(KV_BYTES_PER_ELEMENT)})")
    heads = list(n_kv_heads) if isinstance(n_kv_heads, Sequence) else [n_kv_heads] * n_layers
    elements = sum(h for h in heads) * n_ctx * (k_dim + v_dim)
    return round(elements * KV_BYTES_PER_ELEMENT[cache_type])


def gguf_dims(path: str | Path) -> dict[str, Any]:
    """The sizes an estimate needs, from the GGUF header (:func:`modelfiles.gguf_info`, cached; no weights read)."""
    try:
        info = gguf_info(path)
    except AgentlabError as exc:
        raise ResourceError(exc.message, hint=exc.hint) from exc
    keys = ("arch", "n_layers", "n_embd", "n_head", "n_head_kv", "k_dim", "v_dim", "n_ff", "n_vocab", "n_ctx_train")
    return {key: getattr(info, key) for key in keys}


def estimate_gguf(path: str | Path, n_ctx: int, cache_type: str = "f16", n_gpu_layers: int = 0,
                  name: str | None = None, *, n_batch: int = 512, flash_attn: bool | None = None) -> MemoryEstimate:
    """Memory to load a GGUF with llama.cpp at ``n_ctx`` (padded as llama.cpp pads it).

    - weights: the file size (tensors are mmapped whole; metadata is a rounding error).
    - KV: :func:`kv_cache_bytes` over the allocated cells.
    - compute: llama.cpp's graph buffer for one micro-batch of ``n_ub = min(n_batch, n_ctx, 512)`` tokens. Without
      flash attention it is dominated by the f32 attention scores and mask, ``n_ub * n_ctx * (n_head + 1) * 4``; with
      flash attention (always on for quantized caches, which need it) by ``n_ub * n_ctx * 4``; plus activations
      ``n_ub * (2 * n_embd + 2 * n_ff) * 4`` and one row of logits. On the tiny test model this matches llama.cpp's
      reported compute buffer within a few percent; the allocator's reuse makes it an estimate, not a bound.
    - GPU split (``n_gpu_layers`` != 0): llama.cpp counts the output layer as one more layer, so
      ``n_gpu_layers / (n_layers + 1)`` of the weights go to the GPU (-1: all), the KV of offloaded layers too, and
      the compute buffer lives there as soon as anything is offloaded. Per-layer size differences are ignored.

    Not modelled: sliding-window layers (which cache fewer cells: the estimate is high) and MLA caches.
    """
    path = Path(path)
    dims = gguf_dims(path)
    if flash_attn is None:
        flash_attn = cache_type in QUANT_BLOCK
    dims.update(n_gpu_layers=n_gpu_layers, n_batch=n_batch, flash_attn=flash_attn)
    return _gguf_estimate(name or path.name, str(path), path.stat().st_size, dims, n_ctx, cache_type, n_gpu_layers,
                          n_batch, flash_attn)


def _gguf_estimate(name: str, path: str, weights: int, dims: dict[str, Any], n_ctx: int, cache_type: str,
                   n_gpu_layers: int, n_batch: int, flash_attn: bool) -> MemoryEstimate:
    cells = allocated_n_ctx(n_ctx, dims.get("n_ctx_train"))
    kv = kv_cache_bytes(dims["n_layers"], cells, dims["n_head_kv"], dims["k_dim"], dims["v_dim"], cache_type)
    n_ub = min(n_batch, cells, N_UBATCH)
    attention = n_ub * cells * 4 * (1 if flash_attn else dims["n_head"] + 1)
    compute = attention + n_ub * (2 * dims["n_embd"] + 2 * dims["n_ff"]) * 4 + dims["n_vocab"] * 4
    layers = max(dims["n_layers"], 1)
    share = 0.0 if n_gpu_layers == 0 else 1.0 if n_gpu_layers < 0 else min(1.0, n_gpu_layers / (layers + 1))
    return MemoryEstimate(name=name, path=path, backend="llama_cpp", device="cuda" if share > 0 else "cpu",
                          n_ctx=cells, weights_bytes=weights, kv_bytes=kv, compute_bytes=compute, kv_type=cache_type,
                          gpu_share=share, dims=dims)


def _config_numels(dims: dict[str, Any]) -> list[tuple[str, int]]:
    """Parameter counts of a Llama-like decoder from its sizes (:func:`_hf_dims`, defaults filled in), for folders
    without safetensors."""
    n_embd, n_layers, n_head, head_dim = dims["n_embd"], dims["n_layers"], dims["n_head"], dims["head_dim"]
    kv_dim = dims["n_head_kv"] * head_dim
    embed = dims["n_vocab"] * n_embd
    attn = n_embd * n_head * head_dim * 2 + n_embd * kv_dim * 2
    out = [("model.embed_tokens.weight", embed),
           ("model.layers.proj.weight", n_layers * (attn + 3 * n_embd * dims["n_ff"]))]
    if not dims["tied"]:
        out.append(("lm_head.weight", embed))
    return out


def _gguf_as_hf_config(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """From a GGUF header: the config.json fields an HF estimate reads (dtype float32, as the de-quantized model is
    saved; ``n_params``) and the sizes, as :func:`_hf_dims` gives them."""
    try:
        info = gguf_info(path)
    except AgentlabError as exc:
        raise ResourceError(exc.message, hint=exc.hint) from exc
    n_head_kv = max(info.n_head_kv) if isinstance(info.n_head_kv, list) else info.n_head_kv
    dims = {"n_embd": info.n_embd, "n_layers": info.n_layers, "n_head": info.n_head, "n_head_kv": n_head_kv,
            "head_dim": info.k_dim, "n_ff": info.n_ff, "n_vocab": info.n_vocab, "n_ctx_train": info.n_ctx_train,
            "tied": info.tied_embeddings}
    return {"dtype": "float32", "n_params": info.n_params}, dims


def _hf_dims(folder: Path, raw: dict[str, Any], text_config: dict[str, Any], need_vocab: bool) -> dict[str, Any]:
    """The sizes an HF estimate needs from a folder's config (:func:`hf_config`), under any spelling of their keys
    (:func:`hf_sizes`: GPT-2's n_embd, T5's d_model, ...). ``ResourceError`` naming the file and the keys when width,
    layers or heads (and, for a folder without safetensors, the vocabulary) are given under none of them: the KV cache
    and compute buffers cannot be sized without them, and transformers could not build the model either."""
    try:
        dims: dict[str, Any] = dict(hf_sizes(folder, raw, text_config))
    except AgentlabError as exc:
        raise ResourceError(exc.message, hint=exc.hint) from exc
    needed = ("n_embd", "n_layers", "n_head", "n_vocab") if need_vocab else ("n_embd", "n_layers", "n_head")
    missing = [HF_SIZE_KEYS[size] for size in needed if dims[size] is None]
    if missing:
        names = "; ".join(keys[0] + (f" (nor {', '.join(keys[1:])})" if keys[1:] else "") for keys in missing)
        raise ResourceError(f"{folder / 'config.json'}: no {names}: the memory the model needs cannot be estimated",
                            hint="save the model again with save_pretrained (its config.json then names its sizes), "
                            "or add them to config.json")
    dims["tied"] = bool(text_config.get("tie_word_embeddings", False))
    return dims


def estimate_hf(path: str | Path, dtype: str = "float32", n_ctx: int | None = None, load_in_4bit: bool = False,
                device: str = "cpu", name: str | None = None) -> MemoryEstimate:
    """Memory to load a transformers folder: parameters x bytes per ``dtype`` (with ``load_in_4bit``, the decoder
    layers' weights at NF4 ~0.52 byte, embeddings and head in ``dtype``), KV at ``n_ctx`` (default: the model's
    ``max_position_embeddings``) in ``dtype``, and compute = 64 MiB + one forward pass of activations
    ``n_ctx * (4 * n_embd + 2 * n_ff)`` in ``dtype`` (batch 1). ``path`` may be a GGUF file, which the transformers
    provider de-quantizes: its header gives the sizes. ``ResourceError`` when config.json does not give the sizes
    (:func:`_hf_dims`)."""
    folder = Path(path)
    if folder.is_file():
        raw, dims = _gguf_as_hf_config(folder)
        # The transformers provider de-quantizes a GGUF into a model of these parameters (see core/models/convert.py)
        numels = [("gguf.tensors", raw["n_params"])] if raw["n_params"] and not load_in_4bit else None
    else:
        try:
            raw, text_config = hf_config(folder)
        except AgentlabError as exc:
            raise ResourceError(exc.message, hint=exc.hint) from exc
        numels = safetensors_numels(folder)
        dims = _hf_dims(folder, raw, text_config, need_vocab=numels is None)
    dims["head_dim"] = dims["head_dim"] or dims["n_embd"] // dims["n_head"]
    dims["n_head_kv"] = dims["n_head_kv"] or dims["n_head"]
    dims["n_ff"] = dims["n_ff"] or 4 * dims["n_embd"]
    if dtype == "auto":
        dtype = str(raw.get("dtype") or raw.get("torch_dtype") or "float32")
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype '{dtype}' (known: {', '.join(DTYPE_BYTES)})")
    per = DTYPE_BYTES[dtype]
    numels = numels or _config_numels(dims)
    weights = 0.0
    for tensor, count in numels:
        quantized = load_in_4bit and ".layers." in tensor and tensor.endswith("proj.weight")
        weights += count * (NF4_BYTES if quantized else per)
    n_ctx = n_ctx or dims["n_ctx_train"] or 2048
    kv = kv_cache_bytes(dims["n_layers"], n_ctx, dims["n_head_kv"], dims["head_dim"], dims["head_dim"],
                        "f32" if per == 4 else "f16")
    compute = HF_COMPUTE_FLOOR + n_ctx * (4 * dims["n_embd"] + 2 * dims["n_ff"]) * per
    return MemoryEstimate(name=name or folder.name, path=str(folder), backend="hf", device=device, n_ctx=n_ctx,
                          weights_bytes=round(weights), kv_bytes=kv, compute_bytes=compute, kv_type=dtype,
                          gpu_share=1.0 if device == "cuda" else 0.0)


# ---------------------------------------------------------------------------------------------------------- registry

_loaded: dict[Hashable, MemoryEstimate] = {}
_loaded_lock = threading.Lock()


def register_loaded(estimate: MemoryEstimate, key: Hashable) -> None:
    """Record that ``estimate``'s model is loaded in this process under ``key`` (a provider's cache key)."""
    with _loaded_lock:
        _loaded[key] = estimate


def unregister_loaded(key: Hashable) -> None:
    with _loaded_lock:
        _loaded.pop(key, None)


def loaded_estimates() -> list[MemoryEstimate]:
    with _loaded_lock:
        return list(_loaded.values())


# ---------------------------------------------------------------------------------------------------------- checks


def free_vram_bytes() -> int | None:
    """Free memory on the current CUDA device through torch, or None without torch or CUDA."""
    if "torch" not in sys.modules and importlib.util.find_spec("torch") is None:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    free, _total = torch.cuda.mem_get_info()
    return int(free)


def available_memory(resources: ResourceConfig, *, probe_gpu: bool = True) -> dict[str, Any]:
    """``{"ram": bytes, "ram_from": "budget"|"free", "vram": bytes|None, "vram_from": "budget"|"free"|None}``.

    Budgets from ``resources`` win over measurements. ``probe_gpu=False`` skips asking CUDA (importing torch costs
    seconds), leaving ``vram`` None unless a budget is set.
    """
    import psutil

    if resources.memory_budget_gb is not None:
        ram, ram_from = int(resources.memory_budget_gb * GIB), "budget"
    else:
        ram, ram_from = int(psutil.virtual_memory().available), "free"
    vram: int | None
    vram_from: str | None
    if resources.vram_budget_gb is not None:
        vram, vram_from = int(resources.vram_budget_gb * GIB), "budget"
    else:
        vram = free_vram_bytes() if probe_gpu else None
        vram_from = "free" if vram is not None else None
    return {"ram": ram, "ram_from": ram_from, "vram": vram, "vram_from": vram_from}


def _same_model(a: MemoryEstimate, b: MemoryEstimate) -> bool:
    return (a.backend, a.path, a.n_ctx, a.kv_type, a.gpu_share) == (b.backend, b.path, b.n_ctx, b.kv_type, b.gpu_share)


def check_fits(estimates: Sequence[MemoryEstimate], resources: ResourceConfig, *,
               include_loaded: bool = True) -> dict[str, Any]:
    """Raise ``ResourceError`` unless ``estimates`` fit in ``available_memory(resources) x safety_factor``.

    RAM and GPU memory are checked separately. Models already loaded in this process count against a configured
    budget (``include_loaded``); against measured free memory they are not added again, since the OS already
    counts what they hold (llama.cpp's mmapped weights show as reclaimable cache, so that check is lenient).
    An estimate equal to a loaded model is not counted twice. Returns the available dict; with
    ``resources.check`` false nothing is checked.
    """
    needs_vram = any(e.vram_bytes for e in estimates)
    available = available_memory(resources, probe_gpu=needs_vram)
    if not resources.check:
        return available
    loaded = loaded_estimates() if include_loaded else []
    new = [e for e in estimates if not any(_same_model(e, old) for old in loaded)]
    if not new:
        return available
    sf = resources.safety_factor
    for side in ("ram", "vram"):
        limit = available[side]
        if limit is None:
            if side == "vram" and needs_vram:
                log.info("no free-GPU-memory figure (no torch with CUDA, no resources.vram_budget_gb): "
                         "GPU memory is not checked")
            continue
        counted = [e for e in loaded if available[f"{side}_from"] == "budget"]
        need = sum(_side(e, side) for e in [*new, *counted])
        if need > limit * sf:
            raise _fit_error(side, new, counted, limit, available[f"{side}_from"], sf)
    return available


def _side(e: MemoryEstimate, side: str) -> int:
    return e.ram_bytes if side == "ram" else e.vram_bytes


def _fit_error(side: str, new: list[MemoryEstimate], counted: list[MemoryEstimate], limit: int, source: str,
               sf: float) -> ResourceError:
    where = "RAM" if side == "ram" else "GPU memory"
    what = "the budget" if source == "budget" else f"the free {where}"
    need = sum(_side(e, side) for e in [*new, *counted])
    if len(new) == 1 and not counted:
        e = new[0]
        head = f"{e.name} needs {format_bytes(_side(e, side))} of {where} at n_ctx {e.n_ctx}"
    else:
        head = f"{', '.join(e.name for e in new)} need {format_bytes(need)} of {where}"
    details = "; ".join(e.describe() for e in new)
    if counted:
        details += "; already loaded: " + "; ".join(e.describe() for e in counted)
    # the usable part, then the whole it is a share of ("512 MiB may be used, 50% of the budget of 1.00 GiB")
    message = (f"{head} but only {format_bytes(limit * sf)} may be used, {sf:.0%} of {what} of {format_bytes(limit)} "
               f"({details})")
    suggestions = []
    for e in new:
        n_ctx = _largest_n_ctx([e], side, need - _side(e, side), limit * sf)
        if n_ctx is not None:  # past its training context a larger n_ctx buys nothing: that is the one to name
            train = e.dims.get("n_ctx_train")
            suggestions.append((e, train, " (its training context)") if isinstance(train, int) and 0 < train <= n_ctx
                               else (e, n_ctx, ""))
    if suggestions:
        message += "; " + ", ".join(f"{e.name} at n_ctx {n}{why} would fit" if len(new) > 1 else
                                    f"n_ctx {n}{why} would fit" for e, n, why in suggestions)
        hint = ("lower the model's n_ctx (" + ", ".join(f"{e.name}: {n}" for e, n, _ in suggestions)
                + "), free memory, or raise resources.memory_budget_gb / set resources.check: false to skip the check")
    elif len(new) > 1 and (common := _largest_n_ctx(new, side, sum(_side(e, side) for e in counted), limit * sf)):
        message += f"; every model at n_ctx {common} or less would fit together"
        hint = (f"lower n_ctx to {common} for {', '.join(e.name for e in new if e.n_ctx > common)}, load fewer "
                "models at once, free memory, or raise resources.memory_budget_gb / set resources.check: false")
    else:
        hint = ("no context size makes it fit: use a smaller model or quantization (q4_k_m), load fewer models at "
                "once, free memory, or set resources.check: false to try anyway")
    return ResourceError(message, hint=hint, model=new[0].name if len(new) == 1 else None)


def _largest_n_ctx(models: list[MemoryEstimate], side: str, fixed: int, limit: float) -> int | None:
    """The largest multiple of 256 below the largest n_ctx of ``models`` such that their GGUF models, each with its
    n_ctx capped there, fit in ``limit`` together with their other models and ``fixed`` bytes; None when even 256
    does not (or none is a GGUF model)."""
    sizable = [e for e in models if e.backend == "llama_cpp" and e.dims]
    if not sizable:
        return None
    rest = fixed + sum(_side(e, side) for e in models if not any(e is g for g in sizable))

    def fits(units: int) -> bool:
        cap = units * N_CTX_PAD
        return rest + sum(_side(e.at_n_ctx(min(e.n_ctx, cap)), side) for e in sizable) <= limit

    lo, hi = 1, max(e.n_ctx for e in sizable) // N_CTX_PAD - 1  # in units of 256 cells; the current size failed
    if hi < lo or not fits(lo):
        return None
    while lo < hi:  # memory grows with n_ctx: binary search the last size that fits
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
    return lo * N_CTX_PAD

