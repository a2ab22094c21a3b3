"""Fused multi-LoRA forward: every row of a batch through its own LoRA adapter in a constant number of batched ops.

PEFT's mixed-adapter inference (``generate(..., adapter_names=[...])``) loops over the adapters present in every
LoRA layer; the more adapters and the faster the device, the more that loop costs. Here the adapters' weights are
stacked once (:func:`stack_adapters`): per LoRA ``Linear`` layer, ``A`` as ``[n + 1, r_max, in]`` and ``B`` (its
``scaling`` folded in, rsLoRA included) as ``[n + 1, r_max, out]``, ranks zero-padded to the layer's largest and a
last all-zero slab that stands for "no adapter here". During :func:`fused_rows` each covered layer computes
``base_layer(x)`` plus every row's delta in one of three ways, each a fixed number of ops however many adapters the
batch mixes:

- batched matmul without a gather, when the rows come grouped by adapter in stack order in groups of equal size
  (one row per adapter, say; :func:`row_order` sorts a batch so): ``x`` viewed as ``[groups, rows per group *
  tokens, in]``, one ``torch.bmm`` by the groups' ``A`` and one ``baddbmm_`` by their ``B`` into the base output.
  The cheapest at every adapter count measured, so it is taken whenever the layout allows;
- concatenate and mask (other layouts, up to :data:`CONCAT_MAX` adapters): ``((x @ A_cat^T) * mask) @ B_cat``, where
  ``A_cat`` / ``B_cat`` hold the batch's adapters' rank blocks side by side and ``mask`` keeps each row's own block;
  every row pays for every adapter's rank;
- gather + batched matmul (other layouts, more adapters): the rows gathered into adapter groups padded to the
  largest, two ``torch.bmm`` calls, the deltas gathered back (Punica's SGMV, the way S-LoRA / vLLM / LoRAX batch
  many adapters); each row pays for its own rank only, plus two gathers.

Rows without an adapter (``None`` or ``"__base__"``) get a zero delta, as does a row at a layer its adapter does not
target. Prefill and decode alike: the row index is the batch dimension of every layer input. PEFT stays the loader
and the file format: :func:`stack_adapters` reads its modules, and whatever it does not cover (DoRA and other LoRA
variants, LoRA on embeddings or other non-``Linear`` layers, ``lora_bias``, ``modules_to_save``, merged adapters,
non-LoRA adapters) is listed in ``Stack.uncovered`` so the caller can send batches with those adapters through PEFT's
own path. :func:`current_stack` restacks when adapters were added or removed since the last stack.

torch and peft are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["BASE", "CONCAT_MAX", "FusedError", "Stack", "current_stack", "fused_rows", "row_order", "stack_adapters"]

# Batches whose layout needs a gather use concatenate-and-mask up to this many adapters, gather + bmm above it:
# concat is the cheaper for few adapters, the gathered bmm for many, and the gather-free bmm beats both; the
# crossover was measured per LoRA layer and end to end (docs/design/measurements.md).
CONCAT_MAX = 6
BASE = "__base__"  # PEFT's name for "no adapter" in adapter_names; accepted here too
Mode = Literal["auto", "concat", "bmm"]


class FusedError(RuntimeError):
    """A layer input the fused forward cannot split into rows (its first dimension is not the batch)."""


@dataclass
class _Layer:
    """One covered LoRA ``Linear``: the adapters on it (stack order), their stacked weights and where they sit."""

    module: Any
    names: tuple[str, ...]
    slot: dict[str, int]  # adapter name -> index into a/b; len(names) is the all-zero slab
    a: Any  # [n + 1, r_max, in]
    b: Any  # [n + 1, r_max, out], scaling folded in
    r_max: int


@dataclass
class Stack:
    """The stacked adapters of one PeftModel: ``adapters`` (covered ones, in load order), one ``_Layer`` per covered
    LoRA layer, ``uncovered`` (adapter -> why PEFT's path must serve it) and the fingerprint it was built from."""

    model: Any
    adapters: tuple[str, ...]
    layers: list[_Layer]
    uncovered: dict[str, str]
    key: tuple[Any, ...]
    others: list[Any] = field(default_factory=list)  # tuner modules not replaced during a fused generate

    def covers(self, names: Sequence[str | None]) -> str | None:
        """None when every adapter of ``names`` (row adapters; None / ``__base__``: no adapter) is covered, else why
        not (``"'dora': DoRA"``)."""
        for name in dict.fromkeys(names):
            if name is None or name == BASE:
                continue
            if name in self.uncovered:
                return f"'{name}': {self.uncovered[name]}"
            if name not in self.adapters:
                return f"'{name}': not loaded"
        return None


def fingerprint(model: Any) -> tuple[Any, ...]:
    """What a stack depends on: the adapters' names and config objects (a new or removed adapter changes it)."""
    configs = getattr(model, "peft_config", None) or {}
    return tuple((name, id(config)) for name, config in configs.items())


def current_stack(model: Any, stack: Stack | None) -> Stack:
    """``stack`` if the model's adapters are those it was built from, else a fresh :func:`stack_adapters`."""
    if stack is not None and stack.model is model and stack.key == fingerprint(model):
        return stack
    return stack_adapters(model)


def stack_adapters(model: Any) -> Stack:
    """Stack the LoRA adapters of the PeftModel ``model`` for :func:`fused_rows` (a copy of their weights, in their
    own dtype and device; scaling folded into B). Adapters the fused forward does not cover go to ``uncovered``."""
    import torch
    from peft.tuners.lora.layer import Linear as LoraLinear
    from peft.tuners.tuners_utils import BaseTunerLayer

    configs = dict(getattr(model, "peft_config", None) or {})
    uncovered = _uncovered_by_config(configs)
    tuners = [m for m in model.modules() if isinstance(m, BaseTunerLayer) or _is_aux_wrapper(m)]
    for module in tuners:
        held = _held(module)
        if type(module) is not LoraLinear:
            for name in held:
                uncovered.setdefault(name, f"LoRA on {type(module).__name__} layers, not Linear")
            continue
        if module.merged:
            for name in configs:
                uncovered.setdefault(name, "merged into the base weights")
        for name in held:
            why = _linear_uncovered(module, name)
            if why:
                uncovered.setdefault(name, why)
    adapters = tuple(name for name in configs if name not in uncovered)
    layers, replaced = [], set()
    with torch.no_grad():
        for module in tuners:
            names = tuple(n for n in adapters if type(module) is LoraLinear and n in module.lora_A)
            if names:
                layers.append(_stack_layer(module, names))
                replaced.add(id(module))
    others = [m for m in tuners if id(m) not in replaced]
    return Stack(model, adapters, layers, uncovered, fingerprint(model), others)


def _uncovered_by_config(configs: dict[str, Any]) -> dict[str, str]:
    out = {}
    for name, config in configs.items():
        kind = str(getattr(getattr(config, "peft_type", None), "value", getattr(config, "peft_type", None)))
        if kind != "LORA":
            out[name] = f"a {kind} adapter, not LoRA"
        elif getattr(config, "use_dora", False):
            out[name] = "DoRA"
        elif getattr(config, "modules_to_save", None):
            out[name] = "modules_to_save"
        elif getattr(config, "trainable_token_indices", None):
            out[name] = "trainable tokens"
        elif getattr(config, "lora_bias", False):
            out[name] = "lora_bias"
    return out


def _is_aux_wrapper(module: Any) -> bool:
    """PEFT's wrappers of fully trained modules (``modules_to_save``, trainable tokens); ModulesToSaveWrapper only
    before peft 0.15."""
    from peft.utils import other

    return isinstance(module, getattr(other, "AuxiliaryTrainingWrapper", other.ModulesToSaveWrapper))


def _held(module: Any) -> set[str]:
    """The adapter names that have weights in this tuner module."""
    names: set[str] = set()
    for attr in getattr(module, "adapter_layer_names", ()):
        names.update(getattr(module, attr, None) or {})
    if _is_aux_wrapper(module):
        names.update(getattr(module, "modules_to_save", None) or {})
        names.update(getattr(module, "_adapters", None) or set())
    return names


def _linear_uncovered(module: Any, name: str) -> str | None:
    import torch

    if name in getattr(module, "lora_variant", {}):
        return "DoRA" if module.use_dora.get(name) else f"LoRA variant {type(module.lora_variant[name]).__name__}"
    if name not in module.lora_A:
        return f"LoRA weights on a Linear layer outside lora_A ({', '.join(sorted(_held(module)))})"
    a, b = module.lora_A[name], module.lora_B[name]
    if type(a) is not torch.nn.Linear or type(b) is not torch.nn.Linear or a.bias is not None:
        return "LoRA A/B that are not plain Linear maps"
    if b.bias is not None:
        return "lora_bias"
    return None


def _stack_layer(module: Any, names: tuple[str, ...]) -> _Layer:
    import torch

    weights = [(module.lora_A[n].weight, module.lora_B[n].weight, float(module.scaling[n])) for n in names]
    dtype = functools.reduce(torch.promote_types, [w.dtype for a, b, _ in weights for w in (a, b)])
    device = weights[0][0].device
    r_max = max(a.shape[0] for a, _, _ in weights)
    n_in, n_out = weights[0][0].shape[1], weights[0][1].shape[0]
    a_all = torch.zeros(len(names) + 1, r_max, n_in, dtype=dtype, device=device)
    b_all = torch.zeros(len(names) + 1, r_max, n_out, dtype=dtype, device=device)
    for j, (a, b, scaling) in enumerate(weights):
        a_all[j, : a.shape[0]] = a.to(dtype)
        b_all[j, : b.shape[1]] = (b.to(dtype) * scaling).t()
    return _Layer(module, names, {n: j for j, n in enumerate(names)}, a_all, b_all, r_max)


# ---------------------------------------------------------------------- the fused generate


def row_order(stack: Stack, rows: Sequence[str | None]) -> list[int]:
    """The indices of ``rows`` (row adapters) sorted by adapter in stack order, rows without one last, each group
    in its original order: a batch laid out this way with groups of equal size (one row per adapter, say) takes the
    gather-free batched matmul in :func:`fused_rows`."""
    index = {name: i for i, name in enumerate(stack.adapters)}
    return sorted(range(len(rows)), key=lambda i: index.get(rows[i] or BASE, len(index)))


@contextlib.contextmanager
def fused_rows(stack: Stack, rows: Sequence[str | None], *, mode: Mode = "auto") -> Iterator[str]:
    """Within the block, every forward of ``stack.model`` sends row ``i`` of the batch through adapter ``rows[i]``
    (None / ``__base__``: no adapter), whatever adapter is active model-wide. Yields the path taken: ``bmm`` when
    the rows come grouped by adapter in stack order in groups of equal size (:func:`row_order`; no gather needed) or
    when they mix more than :data:`CONCAT_MAX` adapters, else ``concat``; ``mode`` forces one. Raises ``ValueError``
    for an adapter the stack does not cover."""
    why = stack.covers(rows)
    if why is not None:
        raise ValueError(f"the fused multi-LoRA forward does not cover adapter {why}")
    index = {name: i for i, name in enumerate(stack.adapters)}
    ids = [-1 if r is None or r == BASE else index[r] for r in rows]
    groups = _Groups(ids)
    path = mode if mode != "auto" else "bmm" if groups.identity or len(groups.present) > CONCAT_MAX else "concat"
    device = stack.layers[0].a.device if stack.layers else None
    forwards = (_concat_forwards(stack, ids, groups.present, device) if path == "concat"
                else _bmm_forwards(stack, groups, device))
    saved = [(layer.module, layer.module.__dict__.get("forward")) for layer, _ in forwards]
    quiet = stack.model.disable_adapter() if stack.others else contextlib.nullcontext()
    try:
        with quiet:
            for layer, forward in forwards:
                layer.module.forward = forward
            yield path
    finally:
        for module, old in saved:
            if old is None:
                module.__dict__.pop("forward", None)
            else:
                module.forward = old


class _Groups:
    """The rows of a batch grouped by adapter for the batched matmul: the adapters present (stack indices, in stack
    order), then the rows without one as a group of the zero slab; each group padded to the largest. ``src``: the
    row each padded slot reads (padding repeats a group's first row and is never read back); ``dst``: the slot each
    row's delta comes from; ``identity``: both are the identity, so no gather is needed."""

    def __init__(self, ids: list[int]):
        self.rows = len(ids)
        self.present = sorted({i for i in ids if i >= 0})
        members = [[row for row, i in enumerate(ids) if i == p] for p in self.present]
        self.base = [row for row, i in enumerate(ids) if i < 0]
        if self.base:
            members.append(self.base)
        self.n = len(members)
        self.size = max(len(g) for g in members)
        self.src = [g[s] if s < len(g) else g[0] for g in members for s in range(self.size)]
        self.dst = [0] * len(ids)
        for j, g in enumerate(members):
            for s, row in enumerate(g):
                self.dst[row] = j * self.size + s
        self.identity = self.src == list(range(len(ids)))


def _slabs(layer: _Layer, slots: list[int], device: Any) -> tuple[Any, Any]:
    """The layer's A and B slabs at ``slots``: a view when they are its first ones in order, else a copy (made once
    per generate)."""
    import torch

    if slots == list(range(len(slots))):
        return layer.a[: len(slots)], layer.b[: len(slots)]
    index = torch.tensor(slots, device=device)
    return layer.a.index_select(0, index), layer.b.index_select(0, index)


def _concat_forwards(stack: Stack, ids: list[int], present: list[int], device: Any) -> list[tuple[_Layer, Any]]:
    """Per layer: its slabs of the batch's adapters side by side, and the row mask of each rank block."""
    import torch

    masks: dict[tuple[tuple[str, ...], int], Any] = {}
    out = []
    for layer in stack.layers:
        names = tuple(stack.adapters[p] for p in present if stack.adapters[p] in layer.slot)
        if not names:
            out.append((layer, functools.partial(_base_forward, layer.module.base_layer)))
            continue
        a, b = _slabs(layer, [layer.slot[n] for n in names], device)
        key = (names, layer.r_max)
        if key not in masks:
            block = {stack.adapters.index(n): j for j, n in enumerate(names)}
            mask = torch.zeros(len(ids), len(names), layer.r_max, dtype=layer.a.dtype)
            for row, i in enumerate(ids):
                if i in block:
                    mask[row, block[i]] = 1
            masks[key] = mask.view(len(ids), 1, -1).to(device)
        out.append((layer, functools.partial(_concat_forward, layer.module.base_layer, a.reshape(-1, a.shape[-1]),
                                             b.reshape(-1, b.shape[-1]), masks[key])))
    return out


def _bmm_forwards(stack: Stack, groups: _Groups, device: Any) -> list[tuple[_Layer, Any]]:
    """Per layer: the slabs of the groups' adapters in group order (the zero slab where an adapter does not target
    the layer, and for the rows without one)."""
    import torch

    src = None if groups.identity else torch.tensor(groups.src, device=device)
    dst = None if groups.identity else torch.tensor(groups.dst, device=device)
    out = []
    for layer in stack.layers:
        zero = len(layer.names)
        slots = [layer.slot.get(stack.adapters[p], zero) for p in groups.present] + ([zero] if groups.base else [])
        if all(s == zero for s in slots):
            out.append((layer, functools.partial(_base_forward, layer.module.base_layer)))
            continue
        a, b = _slabs(layer, slots, device)
        out.append((layer, functools.partial(_bmm_forward, layer.module.base_layer, a.transpose(1, 2), b, src, dst,
                                             groups.rows, groups.n)))
    return out


def _base_forward(base: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
    return base(x, *args, **kwargs)


def _concat_forward(base: Any, a: Any, b: Any, mask: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
    result = base(x, *args, **kwargs)
    if x.shape[0] != mask.shape[0]:
        raise FusedError(f"a LoRA layer input of shape {tuple(x.shape)} for a batch of {mask.shape[0]} rows")
    h = (x if x.dtype == a.dtype else x.to(a.dtype)) @ a.t()
    h.mul_(mask if h.dim() == 3 else mask.view(mask.shape[0], *([1] * (h.dim() - 2)), -1))
    return _add(result, h.reshape(-1, h.shape[-1]), b)


def _bmm_forward(base: Any, a_t: Any, b: Any, src: Any, dst: Any, rows: int, groups: int, x: Any, *args: Any,
                 **kwargs: Any) -> Any:
    import torch

    result = base(x, *args, **kwargs)
    if x.shape[0] != rows:
        raise FusedError(f"a LoRA layer input of shape {tuple(x.shape)} for a batch of {rows} rows")
    flat = (x if x.dtype == a_t.dtype else x.to(a_t.dtype)).reshape(rows, -1)
    if src is not None:
        flat = flat.index_select(0, src)
    h = torch.bmm(flat.view(groups, -1, a_t.shape[1]), a_t)  # [groups, group size * tokens, r]
    if dst is None and result.dtype == b.dtype and result.is_contiguous():  # one row per group, in row order
        result.view(groups, -1, b.shape[2]).baddbmm_(h, b)
        return result
    d = torch.bmm(h, b).view(-1, flat.shape[1] // a_t.shape[1] * b.shape[2])  # [groups * group size, tokens * out]
    if dst is not None:
        d = d.index_select(0, dst)
    if result.dtype == d.dtype:
        return result.add_(d.view(result.shape))
    return (result + d.view(result.shape)).to(result.dtype)


def _add(result: Any, h: Any, b: Any) -> Any:
    """``result + h @ b`` with ``result``'s shape and dtype: in place when the dtypes agree, else through the
    adapter's dtype first, as PEFT adds a float32 adapter's delta to a bfloat16 layer."""
    if result.dtype == b.dtype and result.is_contiguous():
        result.view(-1, b.shape[1]).addmm_(h, b)
        return result
    return (result + (h @ b).view(result.shape)).to(result.dtype)
