"""The llama.cpp side of the measurements: perplexity and latency of a GGUF file, and an HF model quantized to GGUF
by llama.cpp's own quantizer (Q8_0, K-quants, ...), so a quantized model is measured where it will run.

Perplexity uses the same windows as :func:`agentlab.compress.measure.perplexity_hf`, on ids from llama.cpp's own
tokenizer (no BOS, no special tokens), so an f32 GGUF and its HF folder give the same number to rounding.

K-quants (q4_k_m, q5_k_m, q6_k, ...) pack rows in super-blocks of 256 values. llama.cpp quantizes a tensor whose
rows are not a multiple of 256 with a fallback type instead (q4_k -> q5_0, q5_k -> q5_1, q6_k -> q8_0; f16 when
even the 32-value blocks do not fit) and says so only on its log; :func:`gguf_tensor_types` reads back what each file
really holds, and :func:`quantize_hf_to_gguf` logs a warning naming the fallbacks.

numpy, gguf and llama_cpp are imported inside the functions.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentlab.compress.measure import (
    Latency,
    Perplexity,
    check_latency_args,
    default_eval_text,
    prompt_ids,
    summarize_latency,
    windows,
)
from agentlab.core.errors import AgentlabError, InputError, missing_package, one_line
from agentlab.core.models.gguf_export import GGUF_DTYPES, QUANT_KINDS, export_gguf, quantize_gguf
from agentlab.core.models.modelfiles import read_gguf_header

if TYPE_CHECKING:
    from llama_cpp import Llama

log = logging.getLogger(__name__)

# Quantized types whose rows must be a multiple of 256 (GGML's QK_K); the rest use 32-value blocks.
K_TYPES = frozenset({"Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"})


@contextmanager
def open_gguf(path: str | Path, *, n_ctx: int, logits_all: bool = False, n_threads: int | None = None) -> Iterator[Any]:
    """A ``llama_cpp.Llama`` on ``path`` (CPU, quiet), closed when the block ends; ``AgentlabError`` when llama.cpp
    cannot load it, ``MissingPackage`` naming the extra when llama-cpp-python is absent."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise missing_package(exc) or exc from None
    path = Path(path)
    if not path.is_file():
        raise InputError(f"GGUF file not found: {path}", hint="check the path, or export one with quantize_hf_to_gguf")
    try:
        # n_threads_batch (prefill) follows n_threads: llama-cpp-python's own default is every logical core
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_batch=min(n_ctx, 512), n_threads=n_threads,
                              n_threads_batch=n_threads, n_gpu_layers=0, logits_all=logits_all, verbose=False)
    except Exception as exc:  # llama-cpp-python raises ValueError / RuntimeError with llama.cpp's reason on stderr
        raise AgentlabError(f"llama.cpp could not load {path}: {one_line(exc)}",
                            hint="load it with llama_cpp.Llama(path, verbose=True) to see llama.cpp's log") from exc
    try:
        yield llm
    finally:
        llm.close()  # now, not in __del__ at interpreter exit, when llama.cpp's free functions may be gone


def tokenize_gguf(llm: Llama, text: str) -> list[int]:
    """``text`` as llama.cpp's tokenizer splits it, without BOS and with special-token text kept as plain text (what
    ``tokenizer(text, add_special_tokens=False)`` gives on the HF side)."""
    return list(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))


def perplexity_gguf(path: str | Path, text: str, *, context: int = 512, stride: int = 256,
                    max_tokens: int | None = None) -> Perplexity:
    """Perplexity of the GGUF model ``path`` on ``text`` with llama.cpp (CPU), by the sliding windows of
    :func:`~agentlab.compress.measure.windows`: each window is evaluated from an empty KV cache and its scored
    positions' logits are log-softmaxed here (float32, sums in float64), as ``perplexity_hf`` does with
    torch."""
    import numpy as np

    with open_gguf(path, n_ctx=context, logits_all=True) as llm:
        ids = tokenize_gguf(llm, text)[:max_tokens]
        if len(ids) < 2:
            raise InputError("perplexity: the text has fewer than 2 tokens", hint="give a longer evaluation text")
        nll, count = 0.0, 0
        for begin, end, first in windows(len(ids), context, stride):
            llm.reset()  # n_tokens = 0: eval() drops the whole KV cache before this window
            llm.eval(ids[begin:end])
            # Row j holds the logits after token begin + j, i.e. the prediction of token begin + j + 1.
            logits = llm.scores[first - begin - 1:end - begin - 1]
            targets = np.asarray(ids[first:end])
            top = logits.max(axis=1)
            logz = top + np.log(np.exp(logits - top[:, None]).sum(axis=1, dtype=np.float64))
            nll -= float((logits[np.arange(len(targets)), targets] - logz).sum(dtype=np.float64))
            count += len(targets)
    mean = nll / count
    return Perplexity(math.exp(mean), mean, count, context, stride)


def latency_gguf(path: str | Path, *, prompt_tokens: int = 128, new_tokens: int = 32, repeats: int = 5,
                 warmup: int = 1, n_threads: int | None = None, text: str | None = None) -> Latency:
    """Prefill and decode speed of the GGUF model ``path`` with llama.cpp on CPU (batch 1, greedy, exactly
    ``new_tokens`` tokens: end of text does not stop it), on the first ``prompt_tokens`` tokens of ``text`` (default:
    :func:`~agentlab.compress.measure.default_eval_text`). ``n_threads`` None is llama-cpp-python's default (half
    the cores). The model loads once, before the clock; each run starts from an empty KV cache."""
    check_latency_args(prompt_tokens, new_tokens, repeats, warmup)
    text = default_eval_text() if text is None else text
    with open_gguf(path, n_ctx=prompt_tokens + new_tokens + 1, n_threads=n_threads) as llm:
        prompt = prompt_ids(tokenize_gguf(llm, text), prompt_tokens)
        runs = []
        for _ in range(warmup + repeats):
            llm.reset()  # no prefix reuse: generate() would otherwise skip the prompt it evaluated last time
            stamps: list[float] = []
            start = time.perf_counter()
            for _ in llm.generate(prompt, top_k=1, temp=0.0, reset=True):
                stamps.append(time.perf_counter())
                if len(stamps) == new_tokens:
                    break
            runs.append((stamps[0] - start, stamps[-1] - stamps[0]))
        threads = int(llm.context_params.n_threads)
    return summarize_latency(runs, backend="llama.cpp", device="cpu", threads=threads, prompt_tokens=prompt_tokens,
                             new_tokens=new_tokens, warmup=warmup)


def gguf_tensor_types(path: str | Path) -> dict[str, int]:
    """How many tensors of each GGML type the GGUF file holds (``{"Q4_K": 60, "Q5_0": 30, "F32": 61}``): what a
    quantization really produced, fallbacks included."""
    try:
        import gguf
    except ImportError as exc:
        raise missing_package(exc) or exc from None
    return dict(Counter(gguf.GGMLQuantizationType(kind).name for _, _, kind in read_gguf_header(path).tensors))


def quantize_hf_to_gguf(hf_folder: str | Path, out_dir: str | Path, types: Iterable[str] = ("q8_0", "q5_k_m", "q4_k_m"),
                        *, base_dtype: str = "f16", tokenizer_from: str | Path | None = None) -> dict[str, Path]:
    """Export the HF model ``hf_folder`` to ``out_dir/model.<base_dtype>.gguf`` (f16 or f32) and quantize that with
    llama.cpp to ``out_dir/model.<type>.gguf`` per type (any case: "Q8_0" or "q8_0"; see
    :data:`~agentlab.core.models.gguf_export.QUANT_KINDS`). Returns ``{type: path}`` with lower-case types, the
    unquantized base first under its dtype (the reference to compare against). ``tokenizer_from``: the GGUF the
    model came from, whose tokenizer is copied as it is (see ``export_gguf``). A K-quant whose tensors fell back to
    other types is kept and logged as a warning (see the module docstring)."""
    kinds = [t.lower() for t in types]
    unknown = [k for k in kinds if k not in QUANT_KINDS and k not in GGUF_DTYPES]
    if unknown or base_dtype not in GGUF_DTYPES:
        raise InputError(f"quantization types {unknown or [base_dtype]} are not supported",
                         hint=f"use {', '.join(QUANT_KINDS)} (base_dtype: {' or '.join(GGUF_DTYPES)})")
    out = Path(out_dir)
    base = export_gguf(hf_folder, out / f"model.{base_dtype}.gguf", dtype=base_dtype, tokenizer_from=tokenizer_from)
    paths = {base_dtype: base}
    for kind in kinds:
        if kind in paths:
            continue
        if kind in GGUF_DTYPES:
            paths[kind] = export_gguf(hf_folder, out / f"model.{kind}.gguf", dtype=kind, tokenizer_from=tokenizer_from)
            continue
        paths[kind] = quantize_gguf(base, out / f"model.{kind}.gguf", kind=kind)  # on every core
        fallback = k_quant_fallbacks(kind, gguf_tensor_types(paths[kind]))
        if fallback:
            log.warning("%s: %s of the weight tensors are not K-quants (rows not a multiple of 256): %s",
                        paths[kind].name, sum(fallback.values()), fallback)
    return paths


def k_quant_fallbacks(kind: str, types: dict[str, int]) -> dict[str, int]:
    """The tensor types other than K-types in a file made as K-quant ``kind`` (empty for other kinds): the fallbacks
    of the module docstring. F32 tensors are left out: they are the norms, which llama.cpp never quantizes."""
    if "_k" not in kind:
        return {}
    return {t: n for t, n in types.items() if t not in K_TYPES and t != "F32"}
