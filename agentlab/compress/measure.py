"""Measurements of a model under compression, on the backend it will run on: perplexity on held-out text, prefill
and decode speed, size on disk, parameters, peak resident memory; the evaluation text that ships with agentlab.
The llama.cpp side (GGUF perplexity, latency, quantization) is in :mod:`agentlab.compress.gguf`, energy in
:mod:`agentlab.compress.energy`.

Perplexity uses the sliding window of the transformers docs ("Perplexity of fixed-length models"): windows of
``context`` tokens starting every ``stride`` (< ``context``) tokens; each window scores only the tokens no earlier
window scored, so every token after the first is scored exactly once, with at least ``context - stride`` tokens of
left context after the first window.

torch, transformers and psutil are imported inside the functions.
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentlab.core.errors import AgentlabError, InputError
from agentlab.core.files import read_text

# Chapters I-III of Alice's Adventures in Wonderland (public domain; source in data/README.md).
EVAL_TEXT = Path(__file__).with_name("data") / "eval.txt"


@dataclass(frozen=True)
class Perplexity:
    ppl: float
    nll: float  # mean negative log-likelihood per scored token (nats)
    tokens: int  # tokens scored
    context: int
    stride: int


def windows(n: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """``(begin, end, first)`` per window over ``n`` tokens: the window is ``[begin, end)`` and it scores the tokens
    ``first .. end - 1`` (each token after the first exactly once)."""
    if context < 2 or not 1 <= stride < context:
        raise InputError(f"perplexity: context {context} and stride {stride}: need context >= 2 and "
                         "1 <= stride < context (windows must overlap, or the first token of each goes unscored)")
    out, prev_end = [], 1
    for begin in range(0, n, stride):
        end = min(begin + context, n)
        if end > prev_end:
            out.append((begin, end, max(prev_end, begin + 1)))
            prev_end = end
        if end == n:
            break
    return out


def perplexity_hf(model: Any, tokenizer: Any, text: str, *, context: int = 512, stride: int = 256,
                  max_tokens: int | None = None, batch: int = 4,
                  on_step: Callable[[int, int], None] | None = None) -> Perplexity:
    """Perplexity of a transformers causal LM on ``text`` (no special tokens added), by sliding window.

    Windows of the same length run ``batch`` at a time (no padding: every full window has ``context`` tokens), and
    the head computes logits only for the positions a window scores (``logits_to_keep``): the same numbers as one
    window at a time with every logit, up to float rounding. ``on_step(done, total)`` is told after each batch,
    in windows."""
    import torch

    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids[0]
    if max_tokens is not None:
        ids = ids[:max_tokens]
    if len(ids) < 2:
        raise InputError("perplexity: the text has fewer than 2 tokens", hint="give a longer evaluation text")
    device = next(model.parameters()).device
    spans = windows(len(ids), context, stride)
    nll, count, done = 0.0, 0, 0
    with torch.inference_mode():
        for group in _same_length_groups(spans, max(1, batch)):
            keep = max(end - first for _, end, first in group) + 1  # the scored positions' logits, and the last
            rows = torch.stack([ids[begin:end] for begin, end, _ in group]).to(device)
            logits = _logits(model, rows, keep)[:, :-1]
            for row, (_, end, first) in enumerate(group):
                n = end - first  # tokens first .. end - 1, predicted by the last n kept positions
                logp = torch.log_softmax(logits[row, -n:].float(), dim=-1)
                scored = logp.gather(1, rows[row, -n:, None])[:, 0]
                nll -= float(scored.sum())
                count += n
            done += len(group)
            if on_step is not None:
                on_step(done, len(spans))
    mean = nll / count
    return Perplexity(math.exp(mean), mean, count, context, stride)


def _same_length_groups(spans: list[tuple[int, int, int]], batch: int) -> list[list[tuple[int, int, int]]]:
    """Consecutive windows of equal length, at most ``batch`` per group."""
    groups: list[list[tuple[int, int, int]]] = []
    for span in spans:
        last = groups[-1] if groups else None
        if last is not None and len(last) < batch and last[0][1] - last[0][0] == span[1] - span[0]:
            last.append(span)
        else:
            groups.append([span])
    return groups


def _logits(model: Any, rows: Any, keep: int) -> Any:
    """The logits of the last ``keep`` positions (all of them from a model whose forward has no ``logits_to_keep``,
    e.g. an older architecture or a wrapper)."""
    try:
        out = model(input_ids=rows, logits_to_keep=keep).logits
    except TypeError:
        out = model(input_ids=rows).logits
    return out[:, -keep:]


# ----------------------------------------------------------------------------------------------------- latency


@dataclass(frozen=True)
class Latency:
    """Prefill and decode speed of one model on one backend; the rates are medians (p50) over ``repeats`` timed runs
    after ``warmup`` untimed ones. Prefill: ``prompt_tokens`` / time to the first new token. Decode:
    ``new_tokens - 1`` / time from the first to the last new token (greedy, exactly ``new_tokens`` tokens)."""

    backend: str  # "transformers" or "llama.cpp"
    device: str
    threads: int
    prompt_tokens: int
    new_tokens: int
    repeats: int
    warmup: int
    prefill_tps: float
    decode_tps: float
    prefill_s: tuple[float, ...]  # each timed run: seconds to the first new token
    decode_s: tuple[float, ...]  # each timed run: seconds from the first to the last new token


def check_latency_args(prompt_tokens: int, new_tokens: int, repeats: int, warmup: int) -> None:
    """``InputError`` for counts that cannot give a rate (decode needs two new tokens to time one step)."""
    if prompt_tokens < 1 or new_tokens < 2 or repeats < 1 or warmup < 0:
        raise InputError(f"latency: prompt_tokens {prompt_tokens}, new_tokens {new_tokens}, repeats {repeats}, "
                         f"warmup {warmup}: need prompt_tokens >= 1, new_tokens >= 2, repeats >= 1, warmup >= 0",
                         hint="decode speed is timed between the first and the last new token, so it needs two")


def prompt_ids(ids: list[int], prompt_tokens: int) -> list[int]:
    """The first ``prompt_tokens`` ids of the evaluation text, the text repeated if it is shorter: the same fixed
    prompt for every model that shares a tokenizer."""
    if not ids:
        raise InputError("latency: the prompt text has no tokens", hint="give a non-empty text")
    return (ids * (prompt_tokens // len(ids) + 1))[:prompt_tokens]


def summarize_latency(runs: list[tuple[float, float]], *, backend: str, device: str, threads: int,
                      prompt_tokens: int, new_tokens: int, warmup: int) -> Latency:
    """A :class:`Latency` from every run's ``(seconds to first token, seconds of decode)``, the ``warmup`` first
    ones left out."""
    prefill = [t for t, _ in runs[warmup:]]
    decode = [t for _, t in runs[warmup:]]
    return Latency(backend, device, threads, prompt_tokens, new_tokens, len(prefill), warmup,
                   prompt_tokens / statistics.median(prefill), (new_tokens - 1) / statistics.median(decode),
                   tuple(prefill), tuple(decode))


def latency_hf(model: Any, tokenizer: Any, *, prompt_tokens: int = 128, new_tokens: int = 32, repeats: int = 5,
               warmup: int = 1, text: str | None = None,
               on_step: Callable[[int, int], None] | None = None) -> Latency:
    """Prefill and decode speed of a transformers causal LM with ``generate`` (greedy, KV cache, batch 1, end of text
    suppressed until ``new_tokens``), on the prompt made of the first ``prompt_tokens`` tokens of ``text`` (default:
    :func:`default_eval_text`). New tokens are time-stamped as ``generate`` streams them, so the split between prompt
    and decode needs no second run. ``on_step(done, total)`` is told after each run, warm-up included."""
    import torch
    from transformers import GenerationConfig

    check_latency_args(prompt_tokens, new_tokens, repeats, warmup)
    text = default_eval_text() if text is None else text
    ids = prompt_ids(tokenizer(text, add_special_tokens=False).input_ids, prompt_tokens)
    device = next(model.parameters()).device
    input_ids = torch.tensor([ids], device=device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = GenerationConfig(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                              eos_token_id=model.generation_config.eos_token_id, pad_token_id=pad)
    runs = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            clock = _TokenClock()
            model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                           generation_config=config, streamer=clock)
            stamps = clock.stamps[1:]  # the new tokens'
            if len(stamps) != new_tokens:
                raise AgentlabError(f"latency: generate made {len(stamps)} tokens, asked for {new_tokens}")
            runs.append((stamps[0] - clock.start, stamps[-1] - stamps[0]))
            if on_step is not None:
                on_step(i + 1, warmup + repeats)
    return summarize_latency(runs, backend="transformers", device=str(device), threads=torch.get_num_threads(),
                             prompt_tokens=prompt_tokens, new_tokens=new_tokens, warmup=warmup)


class _TokenClock:
    """A ``generate`` streamer that time-stamps each ``put``: the prompt, then each new token. ``put`` receives CPU
    tensors, so on CUDA each stamp follows the device's work."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.stamps: list[float] = []

    def put(self, value: Any) -> None:
        self.stamps.append(time.perf_counter())

    def end(self) -> None:
        pass


# ----------------------------------------------------------------------------------------------- progress


def phase_eta(tick: Callable[[str], None], phase: str) -> Callable[[int, int], None]:
    """An ``on_step(done, total)`` for one measurement phase that tells ``tick`` the phase, its count and its ETA
    (the time left at the pace so far), e.g. ``perplexity 12/31 windows, ETA 0:24``."""
    start = time.perf_counter()
    tick(phase)

    def on_step(done: int, total: int) -> None:
        left = (time.perf_counter() - start) / max(done, 1) * (total - done)
        tick(f"{phase} {done}/{total}, ETA {int(left) // 60}:{int(left) % 60:02d}")

    return on_step


# ----------------------------------------------------------------------------------------------- size, memory


def param_count(model: Any, *, nonzero: bool = False) -> int:
    """Parameters of a torch model (tied weights once); ``nonzero``: only the entries that are not exactly zero,
    which is what unstructured pruning changes (the tensors keep their shapes)."""
    import torch

    with torch.no_grad():
        return sum(int(torch.count_nonzero(p)) if nonzero else p.numel() for p in model.parameters())


@dataclass
class PeakMemory:
    """Resident memory (RSS) of this process around a block: ``before`` at entry, ``peak`` the highest seen inside,
    ``delta`` = peak - before (>= 0), ``method`` how the peak was found (``VmHWM``: the kernel's own high-water mark,
    reset at entry, so short spikes count; ``sampled``: psutil every ``interval_s``, which can miss a spike shorter
    than that). RSS counts pages touched, including a memory-mapped model file's pages once read (llama.cpp maps
    its GGUF), and not memory the allocator reserved but never touched; memory freed before the block and reused
    inside it does not show as growth. GPU memory is not RSS (see torch.cuda.max_memory_allocated)."""

    before: int = 0
    peak: int = 0
    interval_s: float = 0.005
    method: str = "sampled"

    @property
    def delta(self) -> int:
        return max(0, self.peak - self.before)


_hwm_lock = threading.Lock()
_hwm_busy = False  # a block owns the kernel's high-water mark (a reset by a nested block would lose its peak)


@contextmanager
def peak_rss(interval_s: float = 0.005) -> Iterator[PeakMemory]:
    """Measure the peak resident memory of this process over the ``with`` block (see :class:`PeakMemory`), filled
    when the block ends: RSS sampled on a thread, and on Linux the kernel's high-water mark of the outermost block."""
    import psutil

    global _hwm_busy
    proc = psutil.Process()
    mem = PeakMemory(interval_s=interval_s)
    with _hwm_lock:
        use_hwm = not _hwm_busy and _reset_hwm()
        _hwm_busy = _hwm_busy or use_hwm
    mem.before = mem.peak = proc.memory_info().rss
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(interval_s):
            mem.peak = max(mem.peak, proc.memory_info().rss)

    thread = threading.Thread(target=sample, name="peak-rss", daemon=True)
    thread.start()
    try:
        yield mem
    finally:
        stop.set()
        thread.join()
        mem.peak = max(mem.peak, proc.memory_info().rss)
        if use_hwm:
            mem.peak, mem.method = max(mem.peak, _read_hwm()), "VmHWM"
            with _hwm_lock:
                _hwm_busy = False


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux >= 4.0: ``5`` to clear_refs); False where that is
    not possible (another OS, a locked-down /proc)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _read_hwm() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


# --------------------------------------------------------------------------------------------------- texts


def default_eval_text() -> str:
    """The evaluation and calibration text that ships with agentlab (:data:`EVAL_TEXT`, about 33 KB of public-domain
    English prose, see data/README.md): a fixed text, so numbers from different runs compare."""
    return read_text(EVAL_TEXT, "default evaluation text")


def read_text_file(path: str | Path, what: str = "evaluation text") -> str:
    """The UTF-8 text of a user's evaluation file (``InputError`` naming the file for a missing, binary, non-UTF-8
    or empty one)."""
    text = read_text(path, what)
    if not text.strip():
        raise InputError(f"{path}: the {what} is empty", hint="give a file with some English text (a few KB or more)")
    return text
