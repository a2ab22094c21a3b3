"""In-process transformers provider: a local HF causal LM (+ PEFT LoRA adapters) with micro-batched generation.

A model's ``model`` is a local model folder (relative paths resolve against ``models_directory``, else the cwd), a
GGUF file or a built-in model name (``smollm2-135m``): a GGUF is de-quantized into a transformers folder once and
cached (``core/models/convert.py``); a hub id is read from the local hub cache, never downloaded. The
base model, its tokenizer and every configured adapter load once (see :func:`load_count`) and are shared by every open
provider (and router) that asks for the same folder, device, dtype, quantization and adapter set. The providers own
the models they use: closing a provider (``Router.aclose()`` closes its providers) releases them, and a model no open
provider uses any more is freed then (dropped from the cache and the resource registry, its memory returned).

Concurrent ``generate`` calls are gathered for up to ``batch_wait_ms`` (at most ``max_batch_size``) and generated
together, left-padded, when their sampling settings match; ``max_tokens``, ``stop`` and timeouts stay per request (each
row stops on its own); a batch also stays open while the model is busy with the previous one. A temperature of None
or 0 is greedy; otherwise sampling with ``temperature``/``top_p``, seeded by ``seed`` when given (a seed reproduces a
request sent alone; inside a batch the draws depend on its other rows). Stop strings end a row early and are cut from
the text; ``completion_tokens`` counts generated tokens, eos included, padding never. ``json_schema`` is not enforced
here: the router's structured repair loop validates and repairs the output instead.

Tool calls (``params.tools``): the model writes its own format (``core/llm/tool_formats.py``, chosen from the model
param ``tool_format``, the built-in table or the chat template) under a grammar built from the tools
(``tools.tool_constraint``, the same rules as the llama.cpp provider: ``required`` / a named tool force a call,
``parallel_tool_calls: false`` one call, ``auto`` free text where the format allows it, else an empty list or, after
tool results, free text). llguidance compiles it (``core/llm/grammar.py``) and masks each constrained row's logits
at every step, so a call always parses and validates; rows of a batch may have different grammars or none. A chat
template that mentions ``tools`` renders the tools itself; any other gets the format's tool prompt. The model param
``tool_grammar: false`` turns the grammar off (the calls are then read from free text).

A request picks an adapter with the param ``adapter`` (GenParams.extra); without one the base model answers with the
adapters disabled; an unknown adapter is a ``bad_request``. Requests for different adapters (and the base model)
share a batch, and each row goes through its own LoRA only, so a row gives what it gives alone. By default
(``mixed_lora: fused``) such a batch runs the fused multi-LoRA forward of ``core/models/multilora.py``: the adapters'
weights are stacked once at load (again after adapters are added or removed) and every LoRA layer computes every
row's delta in a few batched ops, however many adapters the batch mixes. Adapters it does not cover (DoRA, LoRA on
embeddings, ``modules_to_save``, ...), ``mixed_lora: peft``, or a model where the fused forward failed before its
first token use PEFT's mixed-adapter inference instead (``generate(..., adapter_names=[one per row])``, which loops
over the adapters in every layer), with one log line. A batch of one adapter sets it model-wide as before. PEFT's
mixing needs LoRA adapters that are not merged, not DoRA and not on layer types PEFT cannot mix
(``nn.MultiheadAttention``, parametrized weights); where PEFT refuses (at the first forward, before any token) or the
adapters are not LoRA, the model logs one line and generates one batch per adapter, one after another, from then on.
``Completion.raw["mixed"]`` says how a mixed batch ran: ``fused-concat``, ``fused-bmm``, ``peft`` or
``per-adapter``.

Device, dtype, 4-bit quantization and loading (base + adapters) come from the shared builders of ``core/models``
(``resolve_device_dtype``, ``load_causal_lm``); torch, transformers and peft are imported inside the functions that
use them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentlab.core.errors import AgentlabError, ConfigError, LLMError, MissingPackage, one_line
from agentlab.core.llm.config import HFProviderConfig, ResourceConfig
from agentlab.core.llm.grammar import LLGuidanceMatcher, check_grammar, grammar_mask, ll_tokenizer, tool_lark
from agentlab.core.llm.oom import OOM_KIND, oom_memory, oom_message
from agentlab.core.llm.resources import check_fits, estimate_hf, register_loaded, unregister_loaded
from agentlab.core.llm.scoring import complete_hf
from agentlab.core.llm.tool_formats import FORMAT_NAMES, FORMATS, ToolFormat, allowed_names, format_for
from agentlab.core.llm.tools import tool_constraint, tool_gate
from agentlab.core.llm.types import Completion, Embeddings, GenParams, Messages, StreamDelta, ToolCall, Usage
from agentlab.core.models import multilora
from agentlab.core.models.builtin import BUILTIN_MODELS, ModelFileError
from agentlab.core.models.device import dtype_name, resolve_device_dtype
from agentlab.core.models.load import load_causal_lm
from agentlab.core.models.modelref import ModelNotFound, resolve_model

__all__ = ["HFProvider", "load_count", "unload_all"]

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 256

_CACHE: dict[tuple[Any, ...], _Loaded] = {}
# The open providers that use each cached model (their tokens): a model is freed when its last holder closes.
_HOLDERS: dict[tuple[Any, ...], set[object]] = {}
_LOAD_LOCK = threading.Lock()  # one load at a time: two first requests must not both load the same model
_CACHE_LOCK = threading.Lock()  # guards _CACHE and _HOLDERS (held briefly, never during a load)
_LOADS = 0


def load_count() -> int:
    """How many times a base model was loaded in this process (tests check that the cache works)."""
    return _LOADS


def unload_all() -> None:
    """Drop every cached model, held or not (tests). Programs close their routers instead: that frees the models."""
    with _CACHE_LOCK:
        keys = list(_CACHE)
        _CACHE.clear()
        _HOLDERS.clear()
    _free(keys)


def _free(keys: list[tuple[Any, ...]]) -> None:
    """Return the memory of models just dropped from the cache: their resource-registry entries, then the objects
    (a generation still running on one keeps it alive until it ends) and CUDA's cached blocks."""
    if not keys:
        return
    for key in keys:
        unregister_loaded(key)
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


@dataclass
class _Loaded:
    """One cached model: the (possibly PEFT-wrapped) model, its tokenizer and a lock that serializes generation
    (the active adapter is model-wide state, and one forward at a time is all a device does well anyway)."""

    model: Any
    tokenizer: Any
    device: str
    adapters: tuple[str, ...]
    eos_ids: frozenset[int]
    pad_id: int
    n_ctx: int | None
    lock: threading.Lock = field(default_factory=threading.Lock)
    mixed: bool = True  # False once PEFT refused a mixed-adapter batch: then one generate per adapter
    fused: bool = True  # False once the fused multi-LoRA forward failed: then PEFT's mixed path
    stack: Any = None  # multilora.Stack of the adapters, built at load (fused) or at the first fused batch
    told: set[str] = field(default_factory=set)  # adapters already logged as not covered by the fused forward
    ll_tokenizer: Any = None  # llguidance's tokenizer, made at the first constrained request (False: failed)


@dataclass
class _Request:
    """One chat request inside a batch. ``cancelled`` is set from the event loop and read by the worker thread."""

    ids: list[int]
    max_new: int
    stops: list[str]
    deadline: float  # time.monotonic()
    adapter: str | None = None  # None: the base model
    future: asyncio.Future | None = None
    cancelled: bool = False
    new_ids: list[int] = field(default_factory=list)
    finish: str | None = None  # stop | length | timeout | cancelled
    batch_size: int = 0
    mixed: str | None = None  # how its mixed-adapter batch ran: fused-concat | fused-bmm | peft | per-adapter
    grammar: str | None = None  # the Lark grammar its output follows (tool calls), None: free
    tool_format: ToolFormat = FORMATS["smollm2"]  # how its calls are written (core/llm/tool_formats.py)
    tool_names: frozenset[str] | None = None  # the tools a call may name (after the gate); None: no call allowed


@dataclass
class _Sampling:
    """Settings that must match for requests to share a batch (the adapter need not: rows may mix adapters)."""

    do_sample: bool
    temperature: float | None
    top_p: float | None
    seed: int | None

    def key(self) -> tuple[Any, ...]:
        return (self.do_sample, self.temperature, self.top_p, self.seed)


@dataclass
class _Batch:
    requests: list[_Request] = field(default_factory=list)
    full: asyncio.Event = field(default_factory=asyncio.Event)


class HFProvider:
    """Implements the ``Provider`` protocol on in-process transformers models."""

    supports_stream = True

    def __init__(self, name: str, cfg: HFProviderConfig, resources: ResourceConfig | None = None):
        self.name = name
        self.cfg = cfg
        self.resources = resources or ResourceConfig()
        # Size of each batch generated (newest last, bounded): tests and llm-bench see whether batching happens.
        self.batch_sizes: deque[int] = deque(maxlen=10_000)
        self._open: dict[tuple[Any, ...], _Batch] = {}
        self._tasks: set[asyncio.Task] = set()
        self._gates: dict[tuple[int, int], asyncio.Lock] = {}  # (loop, model): one batch in flight at a time
        self._token = object()  # this provider in _HOLDERS
        self._closed = False

    # ------------------------------------------------------------------ Provider protocol

    async def generate(self, model: str, messages: Messages, params: GenParams, timeout_s: float) -> Completion:
        """Answer one chat request; concurrent requests with matching settings are generated as one batch."""
        start = time.perf_counter()
        deadline = time.monotonic() + timeout_s
        loaded = await self._loaded(model, timeout_s, deadline)
        sampling = self._sampling(params)
        req = self._request(loaded, model, messages, params, deadline)
        loop = asyncio.get_running_loop()
        req.future = loop.create_future()
        self._enqueue(loop, loaded, sampling, req)
        try:
            done, _ = await asyncio.wait({req.future}, timeout=max(0.0, deadline - time.monotonic()))
        except BaseException:
            req.cancelled = True  # our caller gave up: the worker drops the row at its next step
            raise
        if not done:
            req.cancelled = True
            raise _timeout(model, timeout_s)
        req.future.result()  # re-raises the batch's failure
        if req.finish == "timeout":
            raise _timeout(model, timeout_s)
        text, finish = _finish_text(loaded.tokenizer, req)
        text, finish, calls = _tool_calls(text, finish, params, req.tool_format, req.tool_names)
        return Completion(text=text, model=model, usage=Usage(len(req.ids), len(req.new_ids)),
                          latency_s=time.perf_counter() - start, finish_reason=finish,
                          raw={"batch_size": req.batch_size, "adapter": req.adapter, "mixed": req.mixed},
                          tool_calls=calls)

    async def stream(
        self, model: str, messages: Messages, params: GenParams, timeout_s: float
    ) -> AsyncIterator[StreamDelta | Completion]:
        """Stream one request (never batched) through transformers' TextIteratorStreamer; stop strings are held
        back until they can no longer start a stop string, so no delta is ever taken back."""
        start = time.perf_counter()
        deadline = time.monotonic() + timeout_s
        loaded = await self._loaded(model, timeout_s, deadline)
        sampling = self._sampling(params)
        req = self._request(loaded, model, messages, params, deadline)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        streamer = _async_streamer(loaded.tokenizer, loop, queue)
        work = loop.run_in_executor(None, _generate, loaded, [req], sampling, streamer, self._fused)

        def finished(done: asyncio.Future[list[int]]) -> None:
            # A failed generate never calls streamer.end(); a consumer that left early never awaits `work`.
            _put(loop, queue, None)
            _consume(done)

        work.add_done_callback(finished)
        holdback = max((len(s) for s in req.stops), default=1) - 1
        held, out, ttft, stopped = "", "", None, False
        try:
            while True:
                try:
                    # not wait_for: Python 3.11's returns an item that arrives with a cancel and drops the cancel
                    async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                        item = await queue.get()
                except TimeoutError:
                    raise _timeout(model, timeout_s) from None
                if item is None:
                    break
                held += item
                cut = _first_stop(held, req.stops)
                if cut is not None:
                    held, stopped = held[:cut], True
                    req.cancelled = True  # nothing after the stop string is wanted: end generation now
                    break
                if len(held) > holdback:
                    chunk, held = held[: len(held) - holdback], held[len(held) - holdback:]
                    ttft = ttft if ttft is not None else time.perf_counter() - start
                    out += chunk
                    yield StreamDelta(chunk)
            await work  # re-raises a failed generate
            if req.finish == "timeout":
                raise _timeout(model, timeout_s)
            if held:
                ttft = ttft if ttft is not None else time.perf_counter() - start
                out += held
                yield StreamDelta(held)
            finish = "stop" if stopped or req.finish in ("stop", "cancelled") else "length"
            out, finish, calls = _tool_calls(out, finish, params, req.tool_format, req.tool_names)
            yield Completion(text=out, model=model, usage=Usage(len(req.ids), len(req.new_ids)),
                             latency_s=time.perf_counter() - start, ttft_s=ttft, finish_reason=finish,
                             raw={"batch_size": 1, "adapter": req.adapter}, tool_calls=calls)
        finally:
            req.cancelled = True

    async def complete(self, model: str, request: Any, params: GenParams, timeout_s: float) -> list[Any]:
        """Raw-prompt completions with per-token log-probabilities (the gateway's ``/v1/completions``): ``request``
        is a ``core/llm/scoring.py`` ``RawRequest``, the adapter ``params.extra["adapter"]`` as for ``generate``.
        Not batched with chat requests; it holds the model's lock like a batch does."""
        deadline = time.monotonic() + timeout_s
        loaded = await self._loaded(model, timeout_s, deadline)
        adapter = params.extra.get("adapter")
        if adapter is not None and adapter not in loaded.adapters:
            raise LLMError(f"{self.name}: unknown adapter '{adapter}'", "bad_request", model=model)

        def work() -> list[Any]:
            import torch

            with loaded.lock, torch.inference_mode(), _adapter(loaded, adapter):
                return complete_hf(loaded.model, loaded.tokenizer, request, eos_ids=sorted(loaded.eos_ids),
                                   pad_id=loaded.pad_id, n_ctx=loaded.n_ctx)

        try:
            return await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, work),
                                          max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise _timeout(model, timeout_s) from None
        except ValueError as exc:  # a prompt that does not fit
            raise LLMError(f"{self.name}: {exc}", "bad_request", model=model) from exc

    async def embed(self, model: str, texts: list[str], params: GenParams, timeout_s: float,
                    dimensions: int | None = None) -> Embeddings:
        """One vector per text: the last hidden state mean-pooled over the text's tokens and L2-normalised
        (``embed_hf``), through the adapter ``params.extra["adapter"]`` when given. Holds the model's lock."""
        deadline = time.monotonic() + timeout_s
        loaded = await self._loaded(model, timeout_s, deadline)
        adapter = params.extra.get("adapter")
        if adapter is not None and adapter not in loaded.adapters:
            raise LLMError(f"{self.name}: unknown adapter '{adapter}'", "bad_request", model=model)

        def work() -> Embeddings:
            import torch

            with loaded.lock, torch.inference_mode(), _adapter(loaded, adapter):
                return embed_hf(loaded, model, texts, dimensions)

        try:
            return await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, work),
                                          max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise _timeout(model, timeout_s) from None

    async def aclose(self) -> None:
        """Cancel the open batches and release the models this provider used: one that no other open provider uses
        is freed (dropped from the cache and the resource registry, its memory returned)."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        self._release()

    def _hold(self, key: tuple[Any, ...]) -> _Loaded | None:
        """The cached model of ``key``, now held by this provider; None when it is not cached."""
        with _CACHE_LOCK:
            entry = _CACHE.get(key)
            if entry is not None:
                _HOLDERS.setdefault(key, set()).add(self._token)
            return entry

    def _release(self) -> None:
        dropped = []
        with _CACHE_LOCK:
            for key in list(_HOLDERS):
                holders = _HOLDERS[key]
                holders.discard(self._token)
                if not holders:
                    del _HOLDERS[key]
                    _CACHE.pop(key, None)
                    dropped.append(key)
        _free(dropped)

    @property
    def _fused(self) -> bool:
        return self.cfg.mixed_lora == "fused"

    # ------------------------------------------------------------------ request preparation

    def _path(self, model: str) -> Path:
        """The model's transformers folder, or the GGUF file that ``_load`` converts to one (a built-in name, a
        .gguf path); a hub id only from the local hub cache. See ``modelref.resolve_model``."""
        try:
            return resolve_model(model, base=self.cfg.models_directory, user=f"the hf provider '{self.name}'").path
        except (ModelNotFound, MissingPackage, ModelFileError) as exc:  # unavailable: a router falls back
            raise LLMError(f"{self.name}: {exc.message}", "unavailable", model=model, hint=exc.hint) from None

    def _device_dtype(self, model: str) -> tuple[str, str]:
        """The device type and dtype name this provider loads onto (``core/models/device.py`` decides)."""
        try:
            device, dtype = resolve_device_dtype(self.cfg.device, self.cfg.dtype, load_in_4bit=self.cfg.load_in_4bit,
                                                 what=f"providers.{self.name}.device")
        except ConfigError as exc:  # unavailable: a router falls back to the next model
            raise LLMError(f"{self.name}: {exc.message}", "unavailable", model=model, hint=exc.hint) from None
        return device.type, dtype_name(dtype)

    async def _loaded(self, model: str, timeout_s: float, deadline: float) -> _Loaded:
        path = self._path(model)
        device, dtype = self._device_dtype(model)
        adapters = tuple(sorted((name, str(self._adapter_path(name, folder, model)))
                                for name, folder in self.cfg.adapters.items()))
        key = (str(path), device, dtype, self.cfg.load_in_4bit, adapters)
        if self._closed:
            raise LLMError(f"{self.name}: the provider is closed", "unavailable", model=model,
                           hint="open a new router: a closed one has released its models")
        cached = self._hold(key)
        if cached is not None:
            return cached
        # Loading takes seconds to minutes, so it runs off the event loop. The request stops waiting at its deadline
        # but the load goes on and lands in the cache, held by this provider: a retry waits for it (on _LOAD_LOCK)
        # instead of restarting.
        loading = asyncio.get_running_loop().run_in_executor(None, self._load, key, model)
        try:
            return await asyncio.wait_for(asyncio.shield(loading), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            loading.add_done_callback(_consume)  # an error after we left must not be logged as "never retrieved"
            raise LLMError(f"{model}: still loading the model after {timeout_s:.3g}s", "timeout", model=model,
                           hint="retry: the load goes on in the background; or raise timeout_s") from None

    def _adapter_path(self, name: str, folder: str, model: str) -> Path:
        path = Path(folder).expanduser()
        if not (path / "adapter_config.json").is_file():
            raise LLMError(f"{self.name}: adapter '{name}' folder {path} has no adapter_config.json", "unavailable",
                           model=model, hint="train one with `agentlab train-persona`, or fix adapters in the config")
        return path.resolve()

    def _load(self, key: tuple[Any, ...], model: str) -> _Loaded:
        with _LOAD_LOCK:
            cached = self._hold(key)
            if cached is not None:
                return cached
            path, device, dtype, four_bit, adapters = key
            # Refuse a model that will not fit before any weight is read (or a GGUF converted). The KV part of the
            # estimate is one sequence at the model's full context: the dynamic cache of a batch of short chats
            # stays below it.
            estimate = estimate_hf(path, dtype=dtype, load_in_4bit=four_bit, device=device, name=model)
            check_fits([estimate], self.resources)  # ResourceError: an LLMError of kind unavailable
            start = time.perf_counter()
            try:
                entry = _load_model(path, device, dtype, four_bit, adapters, stack=self._fused)
            except AgentlabError as exc:  # unreadable weights, a failed GGUF conversion, a missing package
                raise LLMError(f"{self.name}: {exc.message}", "unavailable", model=model, hint=exc.hint) from exc
            except Exception as exc:  # torch's out-of-memory errors (CUDA, MPS, host); anything else as before
                memory = oom_memory(exc)
                if memory is None:
                    raise
                raise LLMError(oom_message(model, memory, "loading", exc), OOM_KIND, model=model,
                               hint="use dtype bfloat16, 4-bit weights, or device cpu") from exc
            register_loaded(estimate, key)
            log.info("loaded %s on %s (%s%s, %d adapters) in %.1fs", path, device, dtype, ", 4-bit" if four_bit else "",
                     len(adapters), time.perf_counter() - start)
            global _LOADS
            _LOADS += 1
            with _CACHE_LOCK:
                _CACHE[key] = entry
                _HOLDERS.setdefault(key, set()).add(self._token)
        if self._closed:  # closed while loading: released now, so a model nobody else holds goes again
            self._release()
        return entry

    @staticmethod
    def _sampling(params: GenParams) -> _Sampling:
        if not params.temperature:  # None or 0: greedy
            return _Sampling(False, None, None, None)
        return _Sampling(True, float(params.temperature), None if params.top_p is None else float(params.top_p),
                         params.seed)

    def _request(self, loaded: _Loaded, model: str, messages: Messages, params: GenParams,
                 deadline: float) -> _Request:
        adapter = params.extra.get("adapter")
        if adapter is not None and adapter not in loaded.adapters:
            known = ", ".join(loaded.adapters) or "none configured"
            raise LLMError(f"{self.name}: unknown adapter '{adapter}' (known: {known})", "bad_request", model=model,
                           hint=f"use one of the adapters of providers.{self.name}.adapters, or drop the param")
        for key in ("presence_penalty", "frequency_penalty"):  # a request's (a gateway client's): not dropped unsaid
            if params.extra.get(key):
                raise LLMError(f"{self.name}: '{key}' is not applied by the transformers backend", "bad_request",
                               model=model, hint="leave it out (0), or serve the model as GGUF through llama.cpp, "
                               "which applies it")
        extra: dict[str, Any] = {}
        params = tool_gate(messages, params)
        template = getattr(loaded.tokenizer, "chat_template", None) or ""
        try:  # the model's own tool format: the param, the built-in table, the template
            fmt = format_for(template, params.extra.get("tool_format"),
                             BUILTIN_MODELS[model].tool_format if model in BUILTIN_MODELS else None)
        except ValueError as exc:
            raise LLMError(str(exc), "bad_request", model=model,
                           hint="set the model param tool_format to one of " + ", ".join(FORMAT_NAMES)) from None
        constraint = tool_constraint(messages, params, fmt.text_anytime)
        grammar = tool_lark(*constraint, fmt) if constraint is not None else None
        if grammar is not None:
            check_grammar(grammar, model)
        if params.tools or any(m.get("role") == "tool" or m.get("tool_calls") for m in messages):
            messages, give_tools = fmt.render(messages, params, template_tools="tools" in template)
            extra = {"tools": params.tools} if give_tools else {}
        try:
            ids = loaded.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                       return_dict=False, **extra)
        except Exception as exc:  # jinja errors: a missing template, a role the template rejects
            raise LLMError(f"{self.name}: chat template failed: {exc}", "bad_request", model=model,
                           hint="the model folder needs a tokenizer chat template that accepts these roles") from exc
        max_new = params.max_tokens if params.max_tokens is not None else DEFAULT_MAX_TOKENS
        if loaded.n_ctx is not None:
            if len(ids) >= loaded.n_ctx:
                raise LLMError(f"{model}: prompt of {len(ids)} tokens does not fit the context of {loaded.n_ctx}",
                               "context_length", model=model,
                               hint="shorten the input (its context, max_position_embeddings in the model's "
                               "config.json, is fixed for an hf model), or use a model with a longer context")
            max_new = min(max_new, loaded.n_ctx - len(ids))
        return _Request(list(ids), max(1, max_new), [s for s in params.stop or [] if s], deadline, adapter,
                        grammar=grammar, tool_format=fmt, tool_names=allowed_names(params))

    # ------------------------------------------------------------------ micro-batching

    def _enqueue(self, loop: asyncio.AbstractEventLoop, loaded: _Loaded, sampling: _Sampling, req: _Request) -> None:
        """Join the open batch with the same settings, or open one; the first request schedules its run."""
        key = (id(loop), id(loaded), sampling.key())
        batch = self._open.get(key)
        if batch is None:
            batch = self._open[key] = _Batch()
            task = loop.create_task(self._run_batch(key, batch, loaded, sampling))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        batch.requests.append(req)
        if len(batch.requests) >= self.cfg.max_batch_size:
            self._open.pop(key, None)
            batch.full.set()

    async def _run_batch(self, key: tuple[Any, ...], batch: _Batch, loaded: _Loaded, sampling: _Sampling) -> None:
        try:
            if self.cfg.batch_wait_ms > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(batch.full.wait(), self.cfg.batch_wait_ms / 1000)
            else:
                await asyncio.sleep(0)  # requests gathered in the same tick still join
            loop = asyncio.get_running_loop()
            # The batch stays open while the model is busy with the previous one, so under load batches fill up
            # instead of queueing behind the model one by one.
            async with self._gates.setdefault((id(loop), id(loaded)), asyncio.Lock()):
                if self._open.get(key) is batch:
                    del self._open[key]
                live = [r for r in batch.requests if not r.cancelled]
                if live:
                    sizes = await loop.run_in_executor(None, _generate, loaded, live, sampling, None, self._fused)
                    self.batch_sizes.extend(sizes)
            for req in batch.requests:
                if req.future is not None and not req.future.done():
                    req.future.set_result(None)
        except BaseException as exc:
            memory = None if isinstance(exc, LLMError) else oom_memory(exc)
            error = exc if isinstance(exc, LLMError) else LLMError(
                oom_message(self.name, memory, "generating", exc), OOM_KIND) if memory is not None else LLMError(
                f"{self.name}: generation failed: {one_line(exc)}", "server_error")
            for req in batch.requests:
                if req.future is not None and not req.future.done():
                    req.future.set_exception(error)
                    # marked as seen: a caller that is still waiting gets it from result(); one that is gone (Ctrl-C)
                    # must not leave "Future exception was never retrieved" on the terminal
                    _consume(req.future)
            if not isinstance(exc, Exception):
                raise


# ---------------------------------------------------------------------- loading and generation (worker threads)


def _load_model(path: str, device: str, dtype: str, four_bit: bool, adapters: tuple[tuple[str, str], ...], *,
                stack: bool = False) -> _Loaded:
    """Load through the shared builder (a GGUF is converted once and cached; 4-bit; adapters), then note what
    generation needs: eos ids, the pad id and the context length. ``stack``: stack the adapters for the fused
    multi-LoRA forward now rather than at the first mixed batch."""
    model, tokenizer = load_causal_lm(path, device=device, dtype=dtype, load_in_4bit=four_bit,
                                      adapters=dict(adapters))
    gen_eos = model.generation_config.eos_token_id
    eos = set(gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else [])
    if tokenizer.eos_token_id is not None:
        eos.add(tokenizer.eos_token_id)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(eos, default=0)
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    mixed = _mixable(model)
    if adapters and not mixed:
        log.warning("the adapters of %s are not all plain LoRA: no mixed-adapter batches, one batch per adapter", path)
    loaded = _Loaded(model, tokenizer, device, tuple(name for name, _ in adapters), frozenset(eos), pad,
                     getattr(config, "max_position_embeddings", None), mixed=mixed)
    if stack and adapters:
        _fused_stack(loaded)
    return loaded


def _generate(loaded: _Loaded, reqs: list[_Request], sampling: _Sampling, streamer: Any, fused: bool = True
              ) -> list[int]:
    """Generate every request of ``reqs`` in one left-padded batch (rows may mix adapters); results go into the
    requests. Returns the size of each ``model.generate`` call made: one, or one per adapter where PEFT refused a
    mixed batch, each split further where padding would outgrow the context; none when every row had expired or been
    cancelled. ``fused``: a mixed batch goes through the fused
    multi-LoRA forward where it covers the batch's adapters, else through PEFT's ``adapter_names``."""
    import torch

    with loaded.lock, torch.inference_mode():
        now = time.monotonic()
        for req in reqs:  # waited too long for the lock (another batch was running)
            if req.deadline <= now:
                req.finish = "timeout"
        live = [r for r in reqs if r.finish is None and not r.cancelled]
        if not live:
            return []
        sizes: list[int] = []  # a call's size once it has run (a refusal in a later part keeps the earlier's rows)
        adapters = list(dict.fromkeys(r.adapter for r in live))
        if len(adapters) > 1 and fused and loaded.fused and _fused_covers(loaded, adapters):
            try:  # rows grouped by adapter: a batch of one row per adapter needs no gather
                order = multilora.row_order(loaded.stack, [r.adapter for r in live])
                _generate_rows(loaded, [live[i] for i in order], sampling, streamer, sizes, mixed="fused")
                return sizes
            except _MixedRefused as exc:
                loaded.fused = False
                log.warning("the fused multi-LoRA forward failed before the first token (%s): this model uses PEFT's "
                            "mixed-adapter path from now on", exc)
            live = [r for r in live if r.finish is None]  # what a part that ran before the refusal left
            adapters = list(dict.fromkeys(r.adapter for r in live))
        if len(adapters) > 1 and loaded.mixed:
            try:
                _generate_rows(loaded, live, sampling, streamer, sizes, mixed="peft")
                return sizes
            except _MixedRefused as exc:
                loaded.mixed = False
                log.warning("PEFT refused a mixed-adapter batch (%s): this model generates one batch per adapter "
                            "from now on", exc)
            live = [r for r in live if r.finish is None]
            adapters = list(dict.fromkeys(r.adapter for r in live))
        groups = [[r for r in live if r.adapter == a] for a in adapters]
        for group in groups:
            _generate_rows(loaded, group, sampling, streamer, sizes)
            if len(groups) > 1:
                for req in group:
                    req.mixed = "per-adapter"
        return sizes


def embed_hf(loaded: _Loaded, model: str, texts: list[str], dimensions: int | None = None,
             batch_size: int = 16) -> Embeddings:
    """Mean-pooled last hidden state (after the final norm), L2-normalised: each text tokenized as the tokenizer
    does by default (its special tokens, no chat template), right-padded in batches of ``batch_size``, padding
    masked out of the mean. Caller holds the model's lock under ``torch.inference_mode``."""
    import torch

    size = loaded.model.get_input_embeddings().embedding_dim
    if dimensions is not None and dimensions != size:
        raise LLMError(f"{model} gives {size}-dimensional embeddings and cannot shorten them ('dimensions': "
                       f"{dimensions})", "bad_request", model=model, hint=f"drop 'dimensions' or ask for {size}")
    ids = [loaded.tokenizer(text)["input_ids"] for text in texts]
    for i, row in enumerate(ids):
        if loaded.n_ctx is not None and len(row) > loaded.n_ctx:
            raise LLMError(f"{model}: input[{i}] is {len(row)} tokens; the model's context is {loaded.n_ctx}",
                           "context_length", model=model, hint="shorten the input")
    vectors: list[list[float]] = []
    for start in range(0, len(ids), batch_size):
        rows = ids[start:start + batch_size]
        width = max(len(r) for r in rows)
        input_ids = torch.tensor([r + [loaded.pad_id] * (width - len(r)) for r in rows], device=loaded.device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=loaded.device)
        hidden = loaded.model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1]
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1)
        vectors += torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().tolist()
    return Embeddings(vectors, sum(len(r) for r in ids), model)


def _fused_stack(loaded: _Loaded) -> Any:
    """The model's adapters stacked for the fused forward: built once, again after adapters were added or removed."""
    stack = multilora.current_stack(loaded.model, loaded.stack)
    if stack is not loaded.stack:
        if loaded.stack is not None:
            log.info("the adapters changed: restacked %d adapters for the fused multi-LoRA forward",
                     len(stack.adapters))
        loaded.stack = stack
    return stack


def _fused_covers(loaded: _Loaded, adapters: list[str | None]) -> bool:
    """Whether the fused forward covers every adapter of a batch; the first time one is not covered, one log line."""
    why = _fused_stack(loaded).covers(adapters)
    if why is None:
        return True
    if why not in loaded.told:
        loaded.told.add(why)
        log.warning("the fused multi-LoRA forward does not cover adapter %s: batches with it use PEFT's mixed-adapter "
                    "path", why)
    return False


class _MixedRefused(Exception):
    """PEFT (or transformers) refused ``adapter_names`` before generating a token."""


def _generate_rows(loaded: _Loaded, rows: list[_Request], sampling: _Sampling, streamer: Any, sizes: list[int], *,
                   mixed: str | None = None) -> None:
    """``model.generate`` for ``rows``: one call, or one per part of :func:`_context_parts` where the padded batch
    would outgrow the model's context. Each call's size is appended to ``sizes`` once it has run."""
    for part in _context_parts(rows, loaded.n_ctx):
        _generate_call(loaded, part, sampling, streamer, mixed=mixed)
        sizes.append(len(part))


def _context_parts(rows: list[_Request], n_ctx: int | None) -> list[list[_Request]]:
    """``rows`` split so that no call outgrows the context. Rows are left-padded to the longest prompt, and a call
    runs to its largest max_new, so a short prompt whose max_new was capped at ``n_ctx - len(prompt)`` would take a
    longer one past ``n_ctx`` (transformers' "exceeded the model's predefined maximum length"; finished rows go on
    past their last position). Each part holds the rows that fit beside its longest prompt, in their order (a fused
    batch stays grouped by adapter); the longest always fits, as ``_request`` capped its max_new."""
    parts: list[list[_Request]] = []
    while rows:
        width = max(len(r.ids) for r in rows)
        fit = [r for r in rows if n_ctx is None or width + r.max_new <= n_ctx] or rows
        parts.append(fit)
        taken = {id(r) for r in fit}
        rows = [r for r in rows if id(r) not in taken]
    return parts


def _generate_call(loaded: _Loaded, rows: list[_Request], sampling: _Sampling, streamer: Any, *,
                   mixed: str | None = None) -> None:
    """One ``model.generate`` call for ``rows``, left-padded. ``mixed``: each row through its own adapter, by the
    fused multi-LoRA forward (``fused``) or PEFT's ``adapter_names`` (``peft``); None: every row shares the first
    row's adapter, set model-wide."""
    import torch
    from transformers import LogitsProcessorList, StoppingCriteriaList

    width = max(len(r.ids) for r in rows)
    ids = torch.tensor([[loaded.pad_id] * (width - len(r.ids)) + r.ids for r in rows], device=loaded.device)
    mask = torch.tensor([[0] * (width - len(r.ids)) + [1] * len(r.ids) for r in rows], device=loaded.device)
    kwargs: dict[str, Any] = {"do_sample": sampling.do_sample}
    if sampling.do_sample:
        kwargs["temperature"] = sampling.temperature
        if sampling.top_p is not None:
            kwargs["top_p"] = sampling.top_p
        if sampling.seed is not None:
            torch.manual_seed(sampling.seed)  # seeds CUDA too; a batch's draws depend on its composition
    stop = _row_stop_class()(rows, width, loaded)
    if any(r.grammar for r in rows):
        kwargs["logits_processor"] = LogitsProcessorList([grammar_mask(_matchers(loaded, rows), loaded.eos_ids)])
    if mixed == "peft":
        kwargs["adapter_names"] = [r.adapter or "__base__" for r in rows]
    with _rows_context(loaded, rows, mixed) as how:
        try:
            out = loaded.model.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=max(r.max_new for r in rows),
                pad_token_id=loaded.pad_id, eos_token_id=sorted(loaded.eos_ids),
                stopping_criteria=StoppingCriteriaList([stop]), streamer=streamer, **kwargs)
        except BaseException as exc:
            if mixed == "peft":
                _drop_adapter_name_hooks(loaded.model)
            if mixed and stop.steps == 0 and _refusal(exc, mixed):  # before any token: the caller falls back
                raise _MixedRefused(one_line(exc)) from exc
            raise
    for i, req in enumerate(rows):
        n_new, finish = stop.done[i] or (out.shape[1] - width, "length")
        req.new_ids = out[i, width:width + n_new].tolist()
        req.finish = finish
        req.batch_size = len(rows)
        req.mixed = how


def _matchers(loaded: _Loaded, rows: list[_Request]) -> list[LLGuidanceMatcher | None]:
    """A fresh llguidance matcher per constrained row (None for a free row). The grammar was checked when the
    request came in; one llguidance still refuses with this tokenizer leaves its row free, with a log line (the
    router's validation and repair then do the work)."""
    if loaded.ll_tokenizer is None:
        config = loaded.model.config
        config = config.get_text_config() if hasattr(config, "get_text_config") else config
        try:
            loaded.ll_tokenizer = ll_tokenizer(loaded.tokenizer, config.vocab_size, sorted(loaded.eos_ids))
        except Exception as exc:  # a slow (non-Rust) tokenizer, a vocabulary llguidance cannot read
            loaded.ll_tokenizer = False
            log.warning("llguidance cannot read this model's tokenizer (%s): its tool calls are not constrained",
                        one_line(exc))
    out: list[LLGuidanceMatcher | None] = []
    for row in rows:
        matcher = None
        if row.grammar is not None and loaded.ll_tokenizer is not False:
            try:
                matcher = LLGuidanceMatcher(loaded.ll_tokenizer, row.grammar)
            except ValueError as exc:
                log.warning("llguidance refused a tool-call grammar (%s): that request is not constrained",
                            one_line(exc))
        out.append(matcher)
    return out


@contextlib.contextmanager
def _rows_context(loaded: _Loaded, rows: list[_Request], mixed: str | None) -> Iterator[str | None]:
    """The model state a generate of ``rows`` needs; yields how a mixed batch runs (None: not mixed)."""
    if mixed == "fused":
        with multilora.fused_rows(loaded.stack, [r.adapter for r in rows]) as path:
            yield f"fused-{path}"
    elif mixed == "peft":
        yield "peft"
    else:
        with _adapter(loaded, rows[0].adapter):
            yield None


def _refusal(exc: BaseException, mixed: str) -> bool:
    """Whether ``exc`` is the mixed path refusing the batch: PEFT checks ``adapter_names`` in each LoRA layer's first
    forward; the fused forward raises ``FusedError`` for a layer input it cannot split into rows."""
    if mixed == "fused":
        return isinstance(exc, multilora.FusedError)
    return isinstance(exc, ValueError | TypeError) and "adapter" in str(exc).lower()


def _drop_adapter_name_hooks(model: Any) -> None:
    """Remove the hooks that inject ``adapter_names``: peft 0.21's ``_enable_peft_forward_hooks`` removes them after
    its ``yield`` without a ``finally``, so a generate that raises leaves them on every LoRA layer."""
    for module in model.modules():
        for key, hook in list(module._forward_pre_hooks.items()):
            if getattr(getattr(hook, "func", None), "__name__", "") == "_adapter_names_pre_forward_hook":
                del module._forward_pre_hooks[key]
                module._forward_pre_hooks_with_kwargs.pop(key, None)


def _mixable(model: Any) -> bool:
    """Whether this model's adapters may be mixed in one batch: LoRA only. Other adapter types drop ``adapter_names``
    silently (``PeftModel.generate`` filters it out), so they are refused here; what LoRA itself cannot mix (DoRA,
    merged adapters, some layer types) PEFT refuses at the first forward, and ``_generate`` falls back then."""
    configs = getattr(model, "peft_config", None) or {}
    return all(getattr(c, "peft_type", None) == "LORA" for c in configs.values())


@contextlib.contextmanager
def _adapter(loaded: _Loaded, name: str | None) -> Iterator[None]:
    if not loaded.adapters:
        yield
    elif name is None:
        with loaded.model.disable_adapter():
            yield
    else:
        loaded.model.set_adapter(name, inference_mode=True)
        yield


@functools.cache
def _row_stop_class() -> type:
    """Built on first use so that importing this module does not import transformers."""
    from transformers import StoppingCriteria

    class RowStop(StoppingCriteria):
        """Per-row end of generation: eos, a stop string, the row's own max_tokens, its deadline, or cancellation.
        Records where each row ended, so padding after it is never counted or decoded."""

        def __init__(self, reqs: list[_Request], width: int, loaded: _Loaded):
            self.reqs, self.width, self.loaded = reqs, width, loaded
            self.done: list[tuple[int, str] | None] = [None] * len(reqs)
            self.steps = 0  # tokens generated so far
            longest = max((len(s) for r in reqs for s in r.stops), default=0)
            self.tail = 4 * longest + 2  # tokens to decode: every token is at least one byte

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            import torch

            self.steps += 1
            n_new = input_ids.shape[1] - self.width
            now = time.monotonic()
            last = input_ids[:, -1].tolist()
            for i, req in enumerate(self.reqs):
                if self.done[i] is None:
                    self.done[i] = self._check(i, req, input_ids, n_new, last[i], now)
            return torch.tensor([d is not None for d in self.done], device=input_ids.device)

        def _check(self, i: int, req: _Request, input_ids: Any, n_new: int, last: int,
                   now: float) -> tuple[int, str] | None:
            if last in self.loaded.eos_ids:
                return n_new, "stop"
            if req.cancelled:
                return n_new, "cancelled"
            if req.stops:
                start = max(self.width, input_ids.shape[1] - self.tail)
                text = self.loaded.tokenizer.decode(input_ids[i, start:].tolist(), skip_special_tokens=True)
                if _first_stop(text, req.stops) is not None:
                    return n_new, "stop"
            if n_new >= req.max_new:
                return n_new, "length"
            if now >= req.deadline:
                return n_new, "timeout"
            return None

    return RowStop


def _async_streamer(tokenizer: Any, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> Any:
    """A TextIteratorStreamer that hands text to an asyncio queue instead of a blocking one."""
    from transformers import TextIteratorStreamer

    class AsyncStreamer(TextIteratorStreamer):
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                _put(loop, queue, text)
            if stream_end:
                _put(loop, queue, None)

    return AsyncStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


def _put(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue, item: str | None) -> None:
    with contextlib.suppress(RuntimeError):  # the loop closed: nobody is listening any more
        loop.call_soon_threadsafe(queue.put_nowait, item)


# ---------------------------------------------------------------------- small helpers


def _first_stop(text: str, stops: list[str]) -> int | None:
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def _finish_text(tokenizer: Any, req: _Request) -> tuple[str, str]:
    text = tokenizer.decode(req.new_ids, skip_special_tokens=True)
    cut = _first_stop(text, req.stops)
    if cut is not None:
        return text[:cut], "stop"
    return text, "stop" if req.finish in ("stop", "cancelled") else "length"


def _tool_calls(text: str, finish: str, params: GenParams, fmt: ToolFormat = FORMATS["smollm2"],
               names: frozenset[str] | None = None) -> tuple[str, str, list[ToolCall]]:
    """The calls written in the model's format ``fmt`` when the request has tools (constrained by the tools' grammar
    unless ``tool_grammar: false``; the router validates them either way and repairs once)."""
    if not params.tools:
        return text, finish, []
    if finish == "length":  # cut while looping on a call: its distinct calls, the block closed
        closed = fmt.close_repeats(text, names)
        text, finish = (closed, "stop") if closed is not None else (text, finish)
    text, calls = fmt.parse(text, names)
    return text, "tool_calls" if calls and finish != "length" else finish, calls


def _consume(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


def _timeout(model: str, timeout_s: float) -> LLMError:
    return LLMError(f"{model}: no answer within {timeout_s:.3g}s", "timeout", model=model)
