"""In-process GGUF models through llama-cpp-python.

A model's id (``ModelConfig.model``) is a GGUF path or a built-in model name (``smollm2-135m``). Models load once
per process and are shared by every provider and router: the cache key is the file plus everything that shapes the
context (n_ctx as llama.cpp allocates it, GPU layers, threads, batch, KV type, seed). A llama.cpp context is not
thread-safe, so each loaded model has a lock and requests to one model run one at a time, each in a worker thread so
the event loop stays free.

Before a model loads, its memory estimate is checked against the resource budget (``resources.check_fits``); a
model that does not fit is refused with ``ResourceError`` and nothing is loaded.

The prompt is rendered here with the GGUF's own chat template (the same formatter llama-cpp-python's chat handler
builds from ``tokenizer.chat_template``) and tokenized once: that gives exact prompt token counts for streams and a
context-length check before llama.cpp sees the prompt, which never silently truncates.

Tool calls (``params.tools``): the model writes its own format (``core/llm/tool_formats.py``: Qwen's one
``<tool_call>`` block per call, SmolLM2's ``<tool_call>[...]</tool_call>`` list; chosen by ``format_for`` from the
model param ``tool_format``, the built-in table or the GGUF's chat template) under a GBNF grammar built from the
tools' schemas by llama.cpp's JSON-schema converter (``_tool_grammar``): each call names one of the allowed tools and
its arguments follow that tool's schema, so a call always parses and validates. ``required`` and a named tool ask for
at least one call; under ``auto`` a format whose model answers in text when no tool fits (Qwen's) may answer in text,
and SmolLM2's writes an empty list, or free text once the last message is a tool result. A chat template that handles
tools itself (it mentions ``tools``) is given them, with the history as structures (Qwen's) or as its format's text;
any other template gets the format's tool prompt in the system message. A model param ``tool_grammar: false`` turns
the grammar off (the same prompt, the calls read from free text: the BFCL benchmark's baseline). Under ``auto``, for a
model whose profile has the gate (small, medium), a question that shares no content word with any tool is answered in
text (``tools.tool_gate``; model param ``tool_gate: false`` turns that off), and a reply that starts repeating one of
its calls is stopped there and closed after its distinct calls (``_repeat_watch``).

Prompt reuse: llama-cpp-python keeps one KV cache, the last request's, and evaluates only what follows the common
prefix. Two conversations on one model (the nas agent and the ``evaluator`` route it asks between trials; a
gateway's clients) would each evaluate their whole prompt after the other's request. Before a request that would
give up most of the live cache, the cache is kept as a snapshot (``llama_state_get_data``), and a snapshot sharing a
longer prefix with the request than the live cache does is put back first (``_switch``; ``prompt_states`` of them
per model, the least recently used dropped).
"""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from agentlab.core.errors import LLMError, MissingPackage
from agentlab.core.llm.config import EXTRA_SAMPLING, LlamaCppProviderConfig, ResourceConfig
from agentlab.core.llm.oom import OOM_KIND, oom_memory, oom_message
from agentlab.core.llm.resources import (
    QUANT_BLOCK,
    allocated_n_ctx,
    check_fits,
    estimate_gguf,
    gguf_dims,
    register_loaded,
    unregister_loaded,
)
from agentlab.core.llm.scoring import complete_llama
from agentlab.core.llm.tool_formats import FORMAT_NAMES, FORMATS, ToolFormat, allowed_names, format_for
from agentlab.core.llm.tools import bounded_schema, tool_constraint, tool_gate
from agentlab.core.llm.types import Completion, Embeddings, GenParams, Messages, StreamDelta, ToolCall, Usage
from agentlab.core.models.builtin import BUILTIN_MODELS, ModelFileError
from agentlab.core.models.modelref import ModelNotFound, resolve_model

log = logging.getLogger(__name__)
T = TypeVar("T")

# ggml_type ids (ggml.h) for the KV cache element types of LlamaCppProviderConfig.cache_type.
GGML_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 8}
# Sampling knobs a model's `params` block may add beyond GenParams; anything else in `extra` is ignored.
# How long past its deadline a call waits for a worker stuck in a step that cannot stop early (one prompt-eval
# decode) before reporting the timeout anyway; the worker still stops at its next token.
_GRACE_S = 1.0


@dataclass
class LoadedModel:
    """One llama.cpp model in the process-wide cache."""

    key: tuple[Any, ...]
    path: str
    llm: Any  # llama_cpp.Llama
    lock: threading.Lock
    formatter: Any  # a llama_chat_format ChatFormatter
    n_ctx: int
    on_token: Callable[[int], None] | None = None  # the running request's token hook (see _tap_sampling)
    # Every request to this model runs on this one long-lived thread (they are serialised by `lock` anyway).
    # asyncio's default executor belongs to an event loop, and each `asyncio.run` (a pipeline run, a sync router
    # call) would start fresh threads whose first llama.cpp calls run measurably slower (benchmarks/
    # pipeline_overhead.py; docs/design/measurements.md).
    executor: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama-cpp"))
    template_tools: bool = False  # the GGUF's chat template renders `tools` itself
    template: str = ""  # the GGUF's chat template (its tool format is read from it: core/llm/tool_formats.py)
    builtin_format: str = ""  # the built-in model table's tool format for this model, if it is one
    snapshots: list[_Snapshot] = field(default_factory=list)  # KV caches a request displaced, oldest first (_switch)

    def tool_format(self, params: GenParams) -> ToolFormat:
        """This model's tool format for a request (``tool_formats.format_for``: the param, the table, the template)."""
        try:
            return format_for(self.template, params.extra.get("tool_format"), self.builtin_format)
        except ValueError as exc:
            raise LLMError(str(exc), "bad_request", hint="set the model param tool_format to one of "
                           + ", ".join(FORMAT_NAMES)) from None


_cache: dict[tuple[Any, ...], LoadedModel] = {}
_cache_lock = threading.Lock()  # held while loading too: two first requests must not load the same model twice
_loads = 0
_warned_no_gpu = False


def load_count() -> int:
    """How many llama.cpp models this process has loaded (tests and benchmarks prove "loaded once" with it)."""
    return _loads


def loaded_models() -> list[LoadedModel]:
    with _cache_lock:
        return list(_cache.values())


def unload(path: str | Path) -> int:
    """Free every cached model loaded from ``path`` (whatever its load settings); how many were freed. A caller
    that saw a model run out of memory frees it before loading it again with smaller settings."""
    target = str(Path(path).resolve())
    with _cache_lock:
        items = [item for key, item in _cache.items() if str(Path(item.path).resolve()) == target]
        for item in items:
            del _cache[item.key]
    for item in items:
        with item.lock:
            item.llm.close()
        item.executor.shutdown(wait=False)
        unregister_loaded(item.key)
    return len(items)


def unload_all() -> None:
    """Free every cached model (tests; a long-lived process switching model sets)."""
    with _cache_lock:
        items = list(_cache.values())
        _cache.clear()
    for item in items:
        with item.lock:
            item.llm.close()
        item.executor.shutdown(wait=False)
        unregister_loaded(item.key)


class _Job:
    """One request's deadline, cancellation and context bound, checked by llama.cpp's stopping criteria after
    every sampled token."""

    def __init__(self, timeout_s: float, n_ctx: int):
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + timeout_s
        self.n_ctx = n_ctx
        self.cancelled = False
        self.timed_out = False
        self.context_full = False
        # The length of prompt + max_tokens: llama-cpp-python checks max_tokens only between complete UTF-8
        # characters, so a run of split characters went past it (usage above max_tokens, which key budgets reserve).
        self.limit: int | None = None
        self.at_max = False
        # Set for a request whose calls may repeat (see ``_repeat_watch``): called with the generated token ids.
        self.watch: Callable[[Any], bool] | None = None
        self.repeated = False

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def should_stop(self, input_ids: Any, _logits: Any = None) -> bool:
        # llama-cpp-python checks max_tokens only between complete UTF-8 characters, so a run of split characters
        # can overshoot the context it capped max_tokens to, and the next decode would fail ("failed to find a
        # memory slot"): stop when every cell is used, as a length cut.
        if len(input_ids) >= self.n_ctx:
            self.context_full = True
        if self.limit is not None and len(input_ids) >= self.limit:  # max_tokens generated: a length cut
            self.at_max = True
        if not self.timed_out and self.remaining() <= 0:
            self.timed_out = True
        if self.watch is not None and not self.repeated and self.watch(input_ids):
            self.repeated = True
        return self.cancelled or self.timed_out or self.context_full or self.at_max or self.repeated


class LlamaCppProvider:
    """Implements the ``Provider`` protocol on llama-cpp-python; see the module docstring."""

    supports_stream = True

    def __init__(self, name: str, cfg: LlamaCppProviderConfig, resources: ResourceConfig | None = None):
        self.name = name
        self.cfg = cfg
        self.resources = resources or ResourceConfig()

    # ------------------------------------------------------------------ loading

    def resolve(self, model: str) -> Path:
        """The GGUF file for a model id: a path (relative ids resolve against ``models_directory``, else the cwd) or a
        built-in model name (``smollm2-135m``); see ``modelref.resolve_model``."""
        try:
            return resolve_model(model, base=self.cfg.models_directory, formats=["gguf"], hub=False,
                                 user=f"the llama_cpp provider '{self.name}'").path
        except (ModelNotFound, MissingPackage, ModelFileError) as exc:  # unavailable: a router falls back
            raise LLMError(exc.message, "unavailable", model=model, hint=exc.hint) from None

    def _gpu_layers(self) -> int:
        """n_gpu_layers as llama.cpp will honour it: 0 on a build without GPU offload (with a warning, once)."""
        global _warned_no_gpu
        if self.cfg.n_gpu_layers == 0:
            return 0
        import llama_cpp

        if llama_cpp.llama_supports_gpu_offload():
            return self.cfg.n_gpu_layers
        if not _warned_no_gpu:
            _warned_no_gpu = True
            log.warning("n_gpu_layers=%s but this llama-cpp-python build has no GPU offload: models run on the CPU "
                        "(install a CUDA build: CMAKE_ARGS=-DGGML_CUDA=on pip install llama-cpp-python)",
                        self.cfg.n_gpu_layers)
        return 0

    def load(self, model: str) -> LoadedModel:
        """The cached model for ``model``, loading it (after the memory check) on first use. Blocking."""
        global _loads
        path = self.resolve(model)
        cfg, n_gpu_layers = self.cfg, self._gpu_layers()
        n_ctx = allocated_n_ctx(cfg.n_ctx)
        key = (str(path), n_ctx, n_gpu_layers, cfg.n_threads, cfg.n_batch, cfg.cache_type, cfg.seed)
        with _cache_lock:
            if key in _cache:
                return _cache[key]
            self._check_cache_type(model, path)
            estimate = estimate_gguf(path, n_ctx, cfg.cache_type, n_gpu_layers, name=model, n_batch=cfg.n_batch)
            check_fits([estimate], self.resources)  # raises ResourceError before anything is loaded
            llm = self._construct(model, path, n_ctx, n_gpu_layers)
            template = llm.metadata.get("tokenizer.chat_template") or ""
            loaded = LoadedModel(key, str(path), llm, threading.Lock(), _formatter(llm, model), llm.n_ctx(),
                                 template_tools="tools" in template, template=template,
                                 builtin_format=BUILTIN_MODELS[model].tool_format if model in BUILTIN_MODELS else "")
            _tap_sampling(loaded)
            _cache[key] = loaded
            _loads += 1
            register_loaded(estimate, key)
        log.info("loaded %s (%s)", path, estimate.describe())
        return loaded

    def n_ctx(self, loaded: LoadedModel) -> int:
        """The context a request may use: the configured ``n_ctx``, not the one llama.cpp allocates (padded to a
        multiple of 256, so a prompt over ``n_ctx: 32`` passed and left no room to answer), nor past the allocated."""
        return min(self.cfg.n_ctx, loaded.n_ctx)

    def _check_cache_type(self, model: str, path: Path) -> None:
        block = QUANT_BLOCK.get(self.cfg.cache_type)
        if block is None:
            return
        dims = gguf_dims(path)
        if dims["k_dim"] % block or dims["v_dim"] % block:
            raise LLMError(f"{model}: cache_type {self.cfg.cache_type} needs attention heads of a multiple of {block} "
                           f"dims, this model's are {dims['k_dim']}", "unavailable", model=model,
                           hint=f"set providers.{self.name}.cache_type to f16 (or f32)")

    def _construct(self, model: str, path: Path, n_ctx: int, n_gpu_layers: int) -> Any:
        import llama_cpp

        cfg = self.cfg
        ggml_type = GGML_TYPES[cfg.cache_type]
        try:
            return llama_cpp.Llama(
                model_path=str(path), n_ctx=n_ctx, n_batch=cfg.n_batch, n_threads=cfg.n_threads,
                n_gpu_layers=n_gpu_layers, seed=cfg.seed, type_k=ggml_type, type_v=ggml_type,
                # llama.cpp stores a quantized V cache only with flash attention; f16/f32 keep the plain path, whose
                # logits track transformers most closely.
                flash_attn=cfg.cache_type in QUANT_BLOCK, logits_all=False, verbose=False,
            )
        except Exception as exc:  # llama-cpp-python raises ValueError/RuntimeError with llama.cpp's reason lost
            memory = oom_memory(exc, offloaded=n_gpu_layers != 0)
            if memory is not None:  # a caller may retry with a smaller context or on the CPU (see core/llm/oom.py)
                raise LLMError(oom_message(model, memory, "loading", exc), OOM_KIND, model=model,
                               hint="lower n_ctx / n_batch, or n_gpu_layers") from exc
            raise LLMError(f"{model}: llama.cpp could not load {path} ({exc})", "unavailable", model=model,
                           hint="check that the file is a complete GGUF this llama-cpp-python supports; load it "
                           "with llama_cpp.Llama(path, verbose=True) to see llama.cpp's log") from exc

    @property
    def _slots(self) -> int:
        """The snapshots ``_switch`` keeps per model: ``prompt_states``, none without ``prompt_cache``."""
        return self.cfg.prompt_states if self.cfg.prompt_cache else 0

    async def preload(self, model: str) -> None:
        """Load ``model`` now (e.g. before timing it): the first request would otherwise pay for the load."""
        await asyncio.to_thread(self.load, model)

    # ------------------------------------------------------------------ requests

    def _prepare(self, loaded: LoadedModel, model: str, messages: Messages,
                 params: GenParams) -> tuple[list[int], dict[str, Any]]:
        """Render and tokenize the prompt, check it against n_ctx, and build create_completion's arguments."""
        extra: dict[str, Any] = {}
        original = messages
        fmt = loaded.tool_format(params)
        if params.tools or any(m.get("role") == "tool" or m.get("tool_calls") for m in messages):
            messages, give_tools = fmt.render(messages, params, template_tools=loaded.template_tools)
            if give_tools:
                extra = {"tools": params.tools, "tool_choice": params.tool_choice}
        try:
            rendered = loaded.formatter(messages=messages, **extra)
        except Exception as exc:  # jinja raises on roles or shapes the template rejects
            raise LLMError(f"{model}: the chat template rejected the messages ({exc})", "bad_request", model=model,
                           hint="check the message roles and their order for this model's template") from exc
        tokens = loaded.llm.tokenize(rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special,
                                     special=True)
        n_ctx = self.n_ctx(loaded)
        if len(tokens) >= n_ctx:
            raise LLMError(f"{model}: the prompt is {len(tokens)} tokens but n_ctx is {n_ctx}", "context_length",
                           model=model, hint=f"raise providers.{self.name}.n_ctx above {len(tokens)} or shorten the "
                           "input")
        if params.max_tokens is not None and len(tokens) + params.max_tokens > n_ctx:
            log.warning("%s: prompt (%d tokens) + max_tokens (%d) exceed n_ctx %d: the answer will be cut at %d "
                        "tokens", model, len(tokens), params.max_tokens, n_ctx, n_ctx - len(tokens))
        stop = list(params.stop or [])
        if rendered.stop:
            stop += [rendered.stop] if isinstance(rendered.stop, str) else list(rendered.stop)
        kwargs: dict[str, Any] = {"max_tokens": params.max_tokens, "stop": stop,
                                  "seed": params.seed if params.seed is not None else self.cfg.seed}
        if params.temperature is not None:
            kwargs["temperature"] = params.temperature
        if params.top_p is not None:
            kwargs["top_p"] = params.top_p
        kwargs.update({k: params.extra[k] for k in EXTRA_SAMPLING if k in params.extra})
        # what the grammar allows: shared with the hf provider
        constraint = tool_constraint(original, params, fmt.text_anytime)
        try:
            if constraint is not None:
                kwargs["grammar"] = _tool_grammar(*constraint, fmt)
            elif params.json_schema:
                # bounded like a tool's arguments, so a structured answer's strings and lists close before max_tokens
                kwargs["grammar"] = _grammar(bounded_schema(params.json_schema.get("schema") or {}))
            if "grammar" in kwargs:
                _check_parses(loaded.llm, kwargs["grammar"])
        except (AssertionError, ValueError, KeyError, TypeError, RuntimeError) as exc:  # the converter asserts
            what = "the tools' parameters" if constraint is not None else "response_format's schema"
            raise LLMError(f"{model}: llama.cpp cannot build a grammar from {what} ({exc})"[:300], "bad_request",
                           model=model, hint="simplify that schema (llama.cpp's JSON-schema converter supports "
                           "types, properties, items, enum, const, anyOf, pattern and $ref), or set the model param "
                           "tool_grammar: false") from None
        return tokens, kwargs

    def _run(self, loaded: LoadedModel, model: str, messages: Messages, params: GenParams, job: _Job,
             on_text: Callable[[str], None] | None = None) -> tuple[str, str | None, Usage, list[ToolCall]]:
        """Generate under the model's lock in the calling (worker) thread; returns text, finish reason, usage and
        the tool calls (read from the text when the request has tools).

        With ``on_text`` the answer is also passed on piece by piece as tokens are sampled (see ``_StreamText``);
        the pieces always add up to the returned text.
        """
        from llama_cpp import StoppingCriteriaList

        if not loaded.lock.acquire(timeout=max(job.remaining(), 0)):
            job.timed_out = True
            raise _timeout(model, job, "waiting for the model (another request holds it)")
        if job.cancelled:  # its caller left while it waited its turn: its prompt's evaluation would only delay others
            loaded.lock.release()
            raise LLMError(f"{model}: cancelled before its turn", "cancelled", model=model)
        streamer = None
        try:
            params = tool_gate(messages, params)
            tokens, kwargs = self._prepare(loaded, model, messages, params)
            fmt, names = loaded.tool_format(params), allowed_names(params)
            if params.max_tokens is not None:  # (the text's unfinished character at the cut is dropped: decoded
                job.limit = len(tokens) + params.max_tokens  # ignoring invalid bytes, as streams are too)
            if "grammar" in kwargs and params.tools and params.parallel_tool_calls is not False:
                job.watch = _repeat_watch(loaded.llm, len(tokens), fmt, names)
            if on_text is not None:
                streamer = _StreamText(loaded.llm, kwargs["stop"], on_text, job.limit or job.n_ctx)
                loaded.on_token = streamer.add_token
            seeded = params.seed is not None or not self.cfg.prompt_cache
            _switch(loaded, tokens, self._slots, restore=not seeded)
            if seeded:
                # A seeded request evaluates its whole prompt: llama-cpp-python reuses the longest cached prefix and
                # evaluates only the rest, and those logits differ in the last bits from a whole evaluation, enough
                # to change a draw at temperature 1 (measured: the same request and seed answered differently after
                # itself than after another request). Costs the prompt cache, for seeded requests only (and for
                # every request under prompt_cache: false).
                loaded.llm.reset()
            cached = _cached_prefix(loaded.llm, tokens)
            try:
                out = loaded.llm.create_completion(tokens, stopping_criteria=StoppingCriteriaList([job.should_stop]),
                                                   **kwargs)
            except Exception as exc:  # llama_decode / grammar failures surface as RuntimeError or ValueError
                memory = oom_memory(exc)
                if memory is not None:
                    raise LLMError(oom_message(model, memory, "generating", exc), OOM_KIND, model=model,
                                   hint="lower n_ctx / n_batch, or n_gpu_layers") from exc
                raise LLMError(f"{model}: llama.cpp failed while generating ({exc})", "server_error", model=model,
                               hint="retry; if it persists, load the model with verbose=True to see llama.cpp's "
                               "log") from exc
        finally:
            loaded.on_token = None
            loaded.lock.release()
        choice, usage = out["choices"][0], out["usage"]
        if job.timed_out:
            raise _timeout(model, job, f"after {usage['completion_tokens']} tokens")
        if streamer is not None and job.cancelled:  # nobody reads the rest (the client or the server went away)
            text = streamer.text
        else:
            text = choice["text"] if streamer is None else streamer.finish(choice["text"])
        finish = "length" if job.context_full or job.at_max else choice["finish_reason"]
        if job.repeated:  # the model looped on a call: its distinct calls, the block closed
            text, finish = fmt.close_repeats(text, names) or text, "stop"
        calls: list[ToolCall] = []
        if params.tools:
            text, calls = fmt.parse(text, names)
            if calls and finish != "length":
                finish = "tool_calls"
        return text, finish, Usage(usage["prompt_tokens"], usage["completion_tokens"], cached_tokens=cached), calls

    async def generate(self, model: str, messages: Messages, params: GenParams, timeout_s: float) -> Completion:
        """One completion; ``timeout_s`` bounds the request from the moment the model is loaded."""
        loaded = await asyncio.to_thread(self.load, model)
        start = time.perf_counter()
        job = _Job(timeout_s, self.n_ctx(loaded))
        try:
            work = asyncio.get_running_loop().run_in_executor(
                loaded.executor, self._run, loaded, model, messages, params, job)
            async with asyncio.timeout(timeout_s + _GRACE_S):  # not wait_for: Python 3.11's can drop a cancel
                text, finish, usage, calls = await work
        except TimeoutError:
            job.cancelled = True
            raise _timeout(model, job, "in a step llama.cpp cannot interrupt (prompt evaluation)") from None
        except asyncio.CancelledError:  # the caller gave up (Ctrl-C): stop decoding at the next token, not at the end
            job.cancelled = True
            raise
        return Completion(text=text, model=model, usage=usage, latency_s=time.perf_counter() - start,
                          finish_reason=finish, tool_calls=calls)

    async def stream(self, model: str, messages: Messages, params: GenParams,
                     timeout_s: float) -> AsyncIterator[StreamDelta | Completion]:
        """Text deltas as llama.cpp produces them (bridged from a worker thread), then the final ``Completion``."""
        loaded = await asyncio.to_thread(self.load, model)
        start = time.perf_counter()
        job = _Job(timeout_s, self.n_ctx(loaded))
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def put(kind: str, payload: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, payload))
            except RuntimeError:  # the consumer's loop is gone: stop generating for nobody
                job.cancelled = True

        def work() -> None:
            try:
                put("done", self._run(loaded, model, messages, params, job, on_text=lambda t: put("text", t)))
            except BaseException as exc:  # handed to the consumer, which raises it in its own task
                put("error", exc)

        loop.run_in_executor(loaded.executor, work)
        ttft: float | None = None
        try:
            while True:
                try:
                    # not asyncio.wait_for: Python 3.11's returns a token that arrives with a cancel and drops the
                    # cancel, and the model would generate on for a client that left
                    async with asyncio.timeout(max(job.remaining(), 0) + _GRACE_S):
                        kind, payload = await queue.get()
                except TimeoutError:
                    raise _timeout(model, job, "in a step llama.cpp cannot interrupt (prompt evaluation)") from None
                if kind == "text":
                    if ttft is None:
                        ttft = time.perf_counter() - start
                    yield StreamDelta(payload)
                elif kind == "error":
                    raise payload
                else:
                    text, finish, usage, calls = payload
                    yield Completion(text=text, model=model, usage=usage, latency_s=time.perf_counter() - start,
                                     ttft_s=ttft, finish_reason=finish, tool_calls=calls)
                    return
        finally:
            job.cancelled = True  # a consumer that stops early (or a timeout) frees the model at the next token

    async def complete(self, model: str, request: Any, params: GenParams, timeout_s: float) -> list[Any]:
        """Raw-prompt completions with per-token log-probabilities (the gateway's ``/v1/completions``): ``request``
        is a ``core/llm/scoring.py`` ``RawRequest``. Log-probabilities are read token by token (the model is loaded
        without ``logits_all``), under the model's lock."""
        try:
            return await self._locked(model, timeout_s, "completion", lambda llm: complete_llama(llm, request))
        except ValueError as exc:  # a prompt that does not fit
            raise LLMError(f"{model}: {exc}", "bad_request", model=model) from exc

    async def embed(self, model: str, texts: list[str], params: GenParams, timeout_s: float,
                    dimensions: int | None = None) -> Embeddings:
        """One vector per text from the loaded (chat) model itself: see ``embed_llama``. Runs under the model's lock
        on its worker thread, like a generation."""
        return await self._locked(model, timeout_s, "embeddings",
                                  lambda llm: embed_llama(llm, model, texts, dimensions))

    async def _locked(self, model: str, timeout_s: float, what: str, fn: Callable[[Any], T]) -> T:
        """``fn(llm)`` on the loaded model's worker thread, under its lock, within ``timeout_s``."""
        loaded = await asyncio.to_thread(self.load, model)

        def work() -> T:
            if not loaded.lock.acquire(timeout=timeout_s):
                raise LLMError(f"{model}: timed out waiting for the model", "timeout", model=model)
            try:
                # a completion or embeddings request resets the KV cache: an agent's conversation is kept first
                _switch(loaded, [], self._slots, restore=False)
                try:
                    return fn(loaded.llm)
                finally:
                    # nothing of it is reused (each evaluates its prompt whole): the next request must not keep it
                    # as a snapshot in place of a conversation's
                    loaded.llm.reset()
            finally:
                loaded.lock.release()

        try:
            return await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(loaded.executor, work),
                                          timeout_s + _GRACE_S)
        except TimeoutError:
            raise LLMError(f"{model}: no {what} within {timeout_s:.3g}s", "timeout", model=model) from None

    async def aclose(self) -> None:
        """Nothing to do: loaded models are shared by the whole process (``unload_all`` frees them)."""


def embed_llama(llm: Any, model: str, texts: list[str], dimensions: int | None = None) -> Embeddings:
    """Embeddings from a model loaded for chat (without ``embedding=True``): llama.cpp's ``llama_set_embeddings``
    turns the context's embedding output on for these decodes only, so no second copy of the model is loaded.
    A causal LM's context pools nothing (``LLAMA_POOLING_TYPE_NONE``): its per-token outputs (the last hidden
    state, after the final norm) are mean-pooled here; a GGUF that names its own pooling (an embedding model) gets
    llama.cpp's. Vectors are L2-normalised. On the test GGUF they are the vectors a second instance loaded with
    ``embedding=True`` and mean pooling gives (docs/design/measurements.md); tests/serve/test_embeddings.py checks
    that they match transformers' mean pooling of the same weights and that the next generation is unchanged.
    Caller holds the model's lock."""
    import llama_cpp

    size = llm.n_embd()
    if dimensions is not None and dimensions != size:
        raise LLMError(f"{model} gives {size}-dimensional embeddings and cannot shorten them ('dimensions': "
                       f"{dimensions})", "bad_request", model=model, hint=f"drop 'dimensions' or ask for {size}")
    limit = min(llm.n_batch, llm.n_ctx())
    for i, text in enumerate(texts):
        n = len(llm.tokenize(text.encode("utf-8")))
        if n > limit:
            raise LLMError(f"{model}: input[{i}] is {n} tokens; this model embeds at most {limit} (n_batch, n_ctx)",
                           "context_length", model=model, hint="shorten the input or raise n_batch and n_ctx")
    ctx, was = llm._ctx.ctx, llm.context_params.embeddings
    llama_cpp.llama_set_embeddings(ctx, True)
    llm.context_params.embeddings = True  # the flag Llama.embed checks
    try:
        out, total = llm.embed(texts, normalize=False, truncate=False, return_count=True)
    except (RuntimeError, ValueError) as exc:
        raise LLMError(f"{model}: llama.cpp failed while embedding ({exc})", "server_error", model=model) from exc
    finally:
        llama_cpp.llama_set_embeddings(ctx, was)
        llm.context_params.embeddings = was
    pooled = llm.pooling_type() == llama_cpp.LLAMA_POOLING_TYPE_NONE
    return Embeddings([_unit(_mean(v) if pooled else list(v)) for v in out], total, model)


def _mean(rows: list[list[float]]) -> list[float]:
    return [sum(column) / len(rows) for column in zip(*rows, strict=True)]


def _unit(vector: list[float]) -> list[float]:
    norm = sum(x * x for x in vector) ** 0.5
    return [x / norm for x in vector] if norm > 0 else list(vector)


def _repeat_watch(llm: Any, n_prompt: int, fmt: ToolFormat,
                  names: frozenset[str] | None) -> Callable[[Any], bool]:
    """Whether the calls generated so far repeat one (``fmt.close_repeats``): checked when a token closes a brace,
    so greedy decoding that loops on its first call stops there instead of running to ``max_tokens`` (it did on
    every BFCL ``parallel`` item before this check)."""
    def watch(input_ids: Any) -> bool:
        if len(input_ids) <= n_prompt or b"}" not in llm.detokenize([int(input_ids[-1])]):
            return False
        text = llm.detokenize([int(t) for t in input_ids[n_prompt:]]).decode("utf-8", "replace")
        return fmt.close_repeats(text, names) is not None

    return watch


@dataclass
class _Snapshot:
    """A KV cache a request displaced: the tokens its cells hold and llama.cpp's state of them."""

    ids: list[int]
    data: Any  # a ctypes byte array, as llama_state_get_data wrote it
    size: int


SNAPSHOT_MIN = 256  # tokens: a request that gives up fewer of the live cache (an agent's last answer) keeps none


def _switch(loaded: LoadedModel, tokens: list[int], slots: int, restore: bool = True) -> None:
    """Before ``tokens`` is evaluated: keep the live KV cache as a snapshot when the request would give up most of it
    (``SNAPSHOT_MIN`` tokens or more, and over half), and, with ``restore``, put back the snapshot sharing the
    longest prefix with ``tokens`` when it shares ``SNAPSHOT_MIN`` tokens more than the live cache does. At most
    ``slots`` snapshots are kept (the least recently used go); 0 keeps none and leaves those that another provider
    on the same model keeps. ``tokens`` empty: the request does not use the cache (it resets it)."""
    import llama_cpp

    llm = loaded.llm
    if getattr(llm, "_is_recurrent", False) or getattr(llm, "_is_hybrid", False):
        return  # their state cannot be cut at a prefix: llama-cpp-python evaluates every prompt whole
    if slots <= 0:
        return
    live_ids = llm._input_ids.tolist()
    live = llm.longest_token_prefix(live_ids, tokens)
    shared, best = max(((llm.longest_token_prefix(s.ids, tokens), s) for s in loaded.snapshots),
                       key=lambda pair: pair[0], default=(0, None))
    if not restore or best is None or shared < live + SNAPSHOT_MIN:
        best = None
    else:
        loaded.snapshots.remove(best)
    if len(live_ids) - live >= max(SNAPSHOT_MIN, len(live_ids) // 2):
        size = llama_cpp.llama_state_get_size(llm._ctx.ctx)
        data = (llama_cpp.ctypes.c_uint8 * size)()
        written = int(llama_cpp.llama_state_get_data(llm._ctx.ctx, data, size))
        if 0 < written <= size:  # 0: llama.cpp could not write its state (it logs why)
            del loaded.snapshots[:max(len(loaded.snapshots) - slots + 1, 0)]
            loaded.snapshots.append(_Snapshot(live_ids, data, written))
    if best is not None:
        if llama_cpp.llama_state_set_data(llm._ctx.ctx, best.data, best.size) != best.size:
            llm.reset()  # the state did not fit back: evaluate the prompt whole
        else:
            llm.input_ids[:len(best.ids)] = best.ids
            llm.n_tokens = len(best.ids)
            llm._requires_eval = True  # its logits are not live: the last prompt token is evaluated again


def _cached_prefix(llm: Any, tokens: list[int]) -> int:
    """The prompt tokens llama-cpp-python will take from its KV cache for ``tokens`` (llama.py's ``generate``): the
    common prefix with what the cache holds, less the one token it evaluates again when the whole prompt is cached,
    unless the cache holds exactly this prompt with live logits; none for a model whose cache cannot be cut."""
    if not llm.n_tokens or getattr(llm, "_is_recurrent", False) or getattr(llm, "_is_hybrid", False):
        return 0
    prefix = llm.longest_token_prefix(llm._input_ids.tolist(), tokens)
    if prefix == len(tokens) == llm.n_tokens and not getattr(llm, "_requires_eval", True):
        return prefix
    return min(prefix, max(len(tokens) - 1, 0))


def _timeout(model: str, job: _Job, during: str) -> LLMError:
    return LLMError(f"{model}: no answer within {job.timeout_s:.3g}s ({during})", "timeout", model=model,
                    hint="raise timeout_s, lower max_tokens, or use a smaller model")


def _formatter(llm: Any, model: str) -> Any:
    """The chat formatter llama-cpp-python's own handler would use: the GGUF's template, else its llama-2 fallback."""
    from llama_cpp import llama_chat_format

    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        log.warning("%s has no chat template in its GGUF metadata: using the llama-2 prompt format", model)
        return llama_chat_format.format_llama2
    eos, bos = llm.token_eos(), llm.token_bos()
    return llama_chat_format.Jinja2ChatFormatter(
        template=template,
        eos_token=llm._model.token_get_text(eos) if eos != -1 else "",
        bos_token=llm._model.token_get_text(bos) if bos != -1 else "",
        stop_token_ids=[eos],
    )


_grammars: OrderedDict[str, Any] = OrderedDict()  # compiled grammars, the least recently used dropped past _GRAMMARS
_GRAMMARS = 256
_grammars_lock = threading.Lock()  # requests to different models prepare their grammars at once


def _cached(key: str, build: Callable[[], Any]) -> Any:
    """``_grammars[key]``, built on a miss (a gateway sees any number of schemas: the cache is bounded)."""
    with _grammars_lock:
        grammar = _grammars.get(key)
        if grammar is not None:
            _grammars.move_to_end(key)
            return grammar
    grammar = build()
    with _grammars_lock:
        _grammars[key] = grammar
        while len(_grammars) > _GRAMMARS:
            _grammars.popitem(last=False)
    return grammar


_converter_lock = threading.Lock()  # json_gbnf swaps the converter's _build_repetition while it runs

# llama-cpp-python's JSON-schema converter (0.3.x) lets a JSON string hold raw control characters (its `char` rule
# is [^"\\]); JSON forbids them, and llama.cpp's own converter leaves them out. With the loose rule a model that
# writes a newline inside a string writes a call or an answer no JSON parser reads: SmolLM2 did, in the compress
# agent benchmark (`{"text" : "}},<newline>{ ..."}` to `note`, refused twice as "calls no tool").
_LOOSE_CHAR = r'char ::= [^"\\] |'
_STRICT_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'


def json_gbnf(schema: dict[str, Any]) -> str:
    """GBNF for ``schema`` from llama.cpp's converter, with JSON's string characters (no raw control characters) and
    integer bounds (``minimum`` / ``maximum`` and their exclusive forms) kept: the converter ignores them (its
    TODO), so each bounded integer goes through it as a placeholder constant that is then swapped for a rule of the
    digits the range allows (``int_range_gbnf``). Unbounded, SmolLM2 wrote 1000 for an integer of -999..999 in
    LangChain's standard ``test_tool_choice``."""
    from llama_cpp import llama_grammar

    ranges: list[tuple[int, int]] = []
    with _converter_lock:  # the converter reads the module's _build_repetition: ours while it runs
        default, llama_grammar._build_repetition = llama_grammar._build_repetition, _repetition
        try:
            text = llama_grammar.json_schema_to_gbnf(json.dumps(_mark_int_ranges(schema, ranges)))
        finally:
            llama_grammar._build_repetition = default
    text = text.replace(_LOOSE_CHAR, _STRICT_CHAR)
    for i, (low, high) in enumerate(ranges):
        text = text.replace(json.dumps(json.dumps(_INT_MARK.format(i))), f"int-range-{i}")
        text += f"\nint-range-{i} ::= ({int_range_gbnf(low, high)}) space"
    return text


# llama.cpp's MAX_REPETITION_THRESHOLD: a grammar's {m,n} with m above it is refused; an n above it has no end there
GBNF_MAX_REPEAT = 2000


def _repetition(item_rule: str, min_items: int, max_items: int | None, separator_rule: str | None = None,
                item_rule_is_literal: bool = False) -> str:
    """``item_rule`` repeated ``min_items`` to ``max_items`` times (None: no end), in GBNF's ``{m,n}`` form:
    llama.cpp's own converter's rule (json_schema_to_grammar.py), used in place of llama-cpp-python 0.3's (same
    signature), which nests one optional group per repetition (``(char (char ...)?)?``). llama.cpp's grammar parser
    refuses that nesting from about 1,000 levels ("number of rules ... exceeds sane defaults") and llama-cpp-python
    then crashed the process (a segfault): a string with ``maxLength`` 2000 in a tool's or response_format's schema
    was enough. A quoted literal (``item_rule_is_literal``) is repeated as a whole by ``{m,n}`` as well. A bound
    above ``GBNF_MAX_REPEAT`` is not kept by the grammar (llama.cpp lifts it); max_tokens still ends the answer."""
    low, high, item = _count(min_items), None if max_items is None else _count(max_items), item_rule
    if high is not None and high < low:  # unsatisfiable; in llama.cpp {5,3} wraps around and fills the memory
        raise ValueError(f"a repetition of at least {low} and at most {high} items or characters (a minimum above "
                         "its maximum) allows nothing")
    if high == 0:
        return ""
    if low == 0 and high == 1:
        return f"{item}?"
    if not separator_rule:
        if low == 1 and high is None:
            return f"{item}+"
        if low == 0 and high is None:
            return f"{item}*"
        if low > GBNF_MAX_REPEAT:  # llama.cpp refuses a larger {m,}: the first min_items written out
            more = _repetition(item, 0, None if high is None else high - low)
            return " ".join([item] * low + ([more] if more else []))
        return f"{item}{{{low},{'' if high is None else high}}}"
    if low == 0 and high is not None and high > GBNF_MAX_REPEAT - 8:
        high = None  # the optional group around ~2,000 rules trips llama.cpp's threshold: no end, as above 2,000
    rest = _repetition(f"({separator_rule} {item})", max(low - 1, 0), None if high is None else high - 1)
    return f"({item} {rest})?" if low == 0 else f"{item} {rest}"


def _count(value: Any) -> int:
    """A schema's minLength / maxLength / minItems / maxItems (or a pattern's bound) as an int (5.0 is 5)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (
            isinstance(value, float) and not value.is_integer()):  # Infinity and NaN too (json.loads reads them)
        raise ValueError(f"a length or item bound must be a whole number of 0 or more, got {value!r}")
    return int(value)


_INT_MARK = "agentlab-int-range-{}"
# An integer bound on one side only is closed at 16 digits on the other (the converter's own integer has at most 16).
_INT_OPEN = 10**16 - 1


def _mark_int_ranges(schema: Any, ranges: list[tuple[int, int]]) -> Any:
    """``schema`` with each bounded integer (``"type": "integer"`` with a bound and no enum or const) replaced by a
    placeholder constant; its (lowest, highest) allowed value appended to ``ranges``."""
    if isinstance(schema, list):
        return [_mark_int_ranges(s, ranges) for s in schema]
    if not isinstance(schema, dict):
        return schema
    bounds = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
    if schema.get("type") == "integer" and "enum" not in schema and "const" not in schema and any(
            isinstance(schema.get(k), (int, float)) and not isinstance(schema.get(k), bool) for k in bounds):
        low, high = -_INT_OPEN, _INT_OPEN
        for key, value in schema.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or key not in bounds:
                continue
            if key == "minimum":
                low = max(low, math.ceil(value))
            elif key == "exclusiveMinimum":
                low = max(low, math.floor(value) + 1)
            elif key == "maximum":
                high = min(high, math.floor(value))
            else:
                high = min(high, math.ceil(value) - 1)
        if low > high:
            given = {k: schema[k] for k in bounds if k in schema}
            raise ValueError(f"no integer lies in the bounds {json.dumps(given)}")
        ranges.append((low, high))
        return {"const": _INT_MARK.format(len(ranges) - 1)}
    return {k: _mark_int_ranges(v, ranges) if k not in ("enum", "const") else v for k, v in schema.items()}


def int_range_gbnf(low: int, high: int) -> str:
    """A GBNF expression matching exactly the JSON integers from ``low`` to ``high`` (no leading zeros, ``-0`` not
    written): the negative part as "-" and the range of its magnitudes, each range of magnitudes split by digit count
    and then into digit-class runs (23..419 is 2[3-9] | [3-9][0-9] | [1-3][0-9][0-9] | 4[0-1][0-9])."""
    parts: list[str] = []
    if low < 0:
        magnitudes = _positive_runs(max(1, -high), -low)
        parts.append('"-" (' + " | ".join(magnitudes) + ")")
    if high >= 0:
        parts.extend(_positive_runs(max(0, low), high))
    return " | ".join(parts)


def _positive_runs(low: int, high: int) -> list[str]:
    out: list[str] = []
    for digits in range(len(str(low)), len(str(high)) + 1):
        first = 0 if digits == 1 else 10 ** (digits - 1)
        lo, hi = max(low, first), min(high, 10**digits - 1)
        if lo <= hi:
            out.extend(" ".join(run) for run in _same_length_runs(str(lo), str(hi)))
    return out


def _same_length_runs(low: str, high: str) -> list[list[str]]:
    """Runs of GBNF items (a digit literal or a class) covering the digit strings from ``low`` to ``high``, which
    have the same length."""
    if not low:
        return [[]]
    if low == high:
        return [[f'"{d}"' for d in low]]
    if low[0] == high[0]:
        return [[f'"{low[0]}"', *run] for run in _same_length_runs(low[1:], high[1:])]
    rest = len(low) - 1
    out: list[list[str]] = []
    start, end = int(low[0]), int(high[0])
    if low[1:] != "0" * rest:
        out += [[f'"{low[0]}"', *run] for run in _same_length_runs(low[1:], "9" * rest)]
        start += 1
    tail: list[list[str]] = []
    if high[1:] != "9" * rest:
        tail = [[f'"{high[0]}"', *run] for run in _same_length_runs("0" * rest, high[1:])]
        end -= 1
    if start <= end:
        out.append([f'"{start}"' if start == end else f"[{start}-{end}]", *["[0-9]"] * rest])
    return out + tail


def _grammar(schema: dict[str, Any]) -> Any:
    """A GBNF grammar constraining output to ``schema`` (cached: converting a schema costs milliseconds)."""
    from llama_cpp import LlamaGrammar

    return _cached(json.dumps(schema, sort_keys=True),
                   lambda: LlamaGrammar.from_string(json_gbnf(schema), verbose=False))


def _check_parses(llm: Any, grammar: Any) -> None:
    """Raise ``ValueError`` unless llama.cpp's grammar parser takes ``grammar``. llama-cpp-python adds the parsed
    grammar to its sampler chain without looking: a grammar the parser refuses (one of llama.cpp's limits, such as
    its repetition threshold) crashed the process at the first sampled token. Parsed once per compiled grammar (the
    verdict kept on it), on the model's vocabulary; llama.cpp prints its reason and the grammar to stderr."""
    import llama_cpp

    verdict = getattr(grammar, "_agentlab_parses", None)
    if verdict is None:
        sampler = llama_cpp.llama_sampler_init_grammar(llm._model.vocab, grammar._grammar.encode("utf-8"),
                                                       grammar._root.encode("utf-8"))
        verdict = grammar._agentlab_parses = bool(sampler)
        if sampler:
            llama_cpp.llama_sampler_free(sampler)
    if not verdict:
        raise ValueError("llama.cpp's grammar parser refused the grammar built from it (its reason is on the "
                         "server's stderr; usually a bound or a nesting past llama.cpp's limits)")


def tool_grammar_text(calls: dict[str, Any], free_text: bool, fmt: ToolFormat = FORMATS["smollm2"]) -> str:
    """GBNF for the calls ``calls`` (``tools.calls_schema``) allows, in the model's format ``fmt``, from llama.cpp's
    own JSON-schema converter: ``smollm2``, ``<tool_call>`` + a JSON list + ``</tool_call>``; ``qwen``, one
    ``<tool_call>`` block per call (as many as the list allows). With ``free_text`` a plain text answer is allowed
    instead: one that does not start with ``<``, nor with ``{`` in Qwen's format (JSON there is a call written
    outside its block)."""
    if not fmt.per_call:
        body = re.sub(r"^root ::=", "tool-calls ::=", json_gbnf(calls), flags=re.MULTILINE)
        root = f"root ::= {json.dumps(fmt.open)} tool-calls {json.dumps(fmt.close)}"
    else:
        body = re.sub(r"^root ::=", "tool-call ::=", json_gbnf(calls["items"]), flags=re.MULTILINE)
        low, high = fmt.grammar_counts(calls)
        more = f" ({json.dumps(fmt.separator)} call){{{max(low - 1, 0)},{high - 1}}}" if high > 1 else ""
        root = f"root ::= call{more}\ncall ::= {json.dumps(fmt.open)} tool-call {json.dumps(fmt.close)}"
    if free_text:
        root = root.replace("root ::= ", "root ::= free-text | ", 1)
        root += f'\nfree-text ::= [^{fmt.text_excludes}] [^\\x00]*'
    return root + "\n" + body


def _tool_grammar(calls: dict[str, Any], free_text: bool, fmt: ToolFormat = FORMATS["smollm2"]) -> Any:
    """The compiled ``tool_grammar_text`` (cached like ``_grammar``)."""
    from llama_cpp import LlamaGrammar

    return _cached(json.dumps([calls, free_text, fmt.name], sort_keys=True),
                   lambda: LlamaGrammar.from_string(tool_grammar_text(calls, free_text, fmt), verbose=False))


def _tap_sampling(loaded: LoadedModel) -> None:
    """Pass every sampled token of the running request to ``loaded.on_token`` (streams).

    llama-cpp-python's own stream mode decodes text differently from its non-streamed path (it can drop bytes of
    characters split across tokens), so a stream's pieces would not add up to the answer. ``Llama.generate`` calls
    ``self.sample`` once per token; wrapping it on this instance lets a stream see each token the moment it exists
    while the completion itself runs the ordinary non-streamed path. The model lock makes ``on_token`` per request.
    """
    sample = loaded.llm.sample

    def tapped(*args: Any, **kwargs: Any) -> int:
        token = sample(*args, **kwargs)
        if loaded.on_token is not None:
            loaded.on_token(token)
        return token

    loaded.llm.sample = tapped


class _StreamText:
    """Turns sampled tokens into text pieces that are always a prefix of llama-cpp-python's final text.

    Mirrors its non-streamed rules: pieces are concatenated bytes, decoded as UTF-8 ignoring invalid bytes, cut at
    the first stop string, end-of-generation tokens dropped. A tail that could start a stop string is held back
    until the next token decides it.
    """

    def __init__(self, llm: Any, stops: list[str], emit: Callable[[str], None], limit: int | None = None):
        import llama_cpp

        self._llm, self._emit = llm, emit
        self._is_eog = lambda token: llama_cpp.llama_vocab_is_eog(llm._model.vocab, token)
        self._stops = [s.encode("utf-8") for s in stops if s]
        self._limit = llm.n_ctx() if limit is None else min(limit, llm.n_ctx())
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
        self._buf = b""
        self._sent = 0
        self._stopped = False
        self._first: bool | None = None  # whether the first token was BOS; None before the first token
        self.text = ""

    def add_token(self, token: int) -> None:
        if self._stopped or self._is_eog(token) or self._llm.n_tokens >= self._limit:
            return  # (a token sampled with the context full or max_tokens generated is dropped by _Job.should_stop)
        if self._first is None:
            self._first = token == self._llm.token_bos()
        self._buf += self._llm.detokenize([token])
        if self._first and self._buf:
            # llama-cpp-python drops one leading space when an answer starts with BOS (a Llama-1 habit): so do we.
            self._buf = self._buf.removeprefix(b" ")
            self._first = False
        if any(stop in self._buf for stop in self._stops):
            self._stopped = True  # llama-cpp-python cuts here; finish() sends what is left before the stop
            return
        safe = len(self._buf) - self._held()
        if safe > self._sent:
            piece = self._decoder.decode(self._buf[self._sent : safe])
            self._sent = safe
            if piece:
                self.text += piece
                self._emit(piece)

    def _held(self) -> int:
        held = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(self._buf)), held, -1):
                if self._buf.endswith(stop[:size]):
                    held = size
                    break
        return held

    def finish(self, final: str) -> str:
        """Send the rest of ``final``; returns the text the stream delivered (``final`` unless they diverged)."""
        if not final.startswith(self.text):
            log.warning("stream text diverged from llama.cpp's final text; keeping what was streamed")
            return self.text
        rest = final[len(self.text) :]
        if rest:
            self.text += rest
            self._emit(rest)
        return self.text
