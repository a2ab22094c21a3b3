"""`agentlab llm-bench`: availability, time to first token, latency and throughput of every configured model.

Per model: one probe request decides availability (and the error kind when it fails); then ``requests`` requests at
each ``concurrency`` level, streamed when the model supports it so TTFT is real. Every request sends the same prompt
(a server's prompt cache is warm). With ``tools`` (the default), each working model also gets one tool-calling probe
(``probe_tools``): a request offering one tool with ``tool_choice: required``, sent once with no repair, and the
report says whether it answered with a call, whether the call validated against the tool's schema and its latency;
then one warm-up request, not counted (the probe's prompt displaced the bench's from a server's prompt cache, so the
first counted request was cold). With ``route`` set, the requests also go through the router, and the report says
which model answered each one and the time lost to fallbacks.

``results.json`` is a contract for scripts:
``{"models": [{"name", "available", "error_kind", "error", "hint", "requests", "ok", "ttft_s": {"p50","p90","p99"},
"latency_s": {...}, "output_tokens_per_s", "tokens_estimated", "tool_call": {"called", "valid", "problem", "latency_s",
"error_kind", "error", "hint"},
...}], "route": [{"request", "model", "fallbacks", "latency_s", "fallback_time_s", ...}]}``. ``tokens_estimated``: some
answer came without the server's token count (usage), so its output tokens are estimated: the stream's chunks
counted, or an answer sent whole at four characters a token (``Usage.reported``). A route record's ``fallbacks`` is
how many times the request moved on to another model (retries of one model not counted), answered or not;
``fallback_time_s`` the time lost before the answering model's attempt, null for a failed request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agentlab.core.config import redact
from agentlab.core.errors import LLMError, MissingPackage, UsageError
from agentlab.core.files import deferred_interrupts
from agentlab.core.llm.router import Router
from agentlab.core.llm.tools import TOOL_CALL_OPEN, call_problem, cut_problem
from agentlab.core.llm.types import Completion, GenParams
from agentlab.core.progress import NullProgress, Progress, ProgressTask
from agentlab.core.runs import RunDir
from agentlab.llm_bench.config import BenchConfig, BenchSettings
from agentlab.llm_bench.report import MIN_DECODE_MS, best_model, render_report

log = logging.getLogger(__name__)


@dataclass(slots=True)  # a level of --requests 1000000 keeps a million of them
class Sample:
    ok: bool
    latency_s: float
    ttft_s: float | None = None
    output_tokens: int = 0
    error_kind: str | None = None
    error: str | None = None  # the failure in words (the probe's is in results.json: why a model is unavailable)
    hint: str | None = None  # what to do about it (an unset API key, a server that is down), as the error gives it
    model: str | None = None
    fallbacks: int = 0
    fallback_time_s: float | None = 0.0  # None: the request failed (no answer the time was lost before)
    tokens_reported: bool = True  # False: the server sent no usage, output_tokens is an estimate (Usage.reported)


# Below this many seconds after the first token the answer came at once (one chunk, or a server that ignored
# `stream: true`): the time is the event loop's, not decoding, and tokens over it read as billions a second.
MIN_DECODE_S = MIN_DECODE_MS / 1000


def percentiles(values: list[float]) -> dict[str, float | None]:
    """p50/p90/p99 with linear interpolation between closest ranks (None when there is no sample)."""
    if not values:
        return {"p50": None, "p90": None, "p99": None}
    ordered = sorted(values)

    def pick(q: float) -> float:
        pos = (len(ordered) - 1) * q
        low = int(pos)
        high = min(low + 1, len(ordered) - 1)
        return round(ordered[low] + (ordered[high] - ordered[low]) * (pos - low), 6)

    return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99)}


def _summarise(samples: list[Sample]) -> dict[str, Any]:
    good = [s for s in samples if s.ok]
    errors: dict[str, int] = {}
    for s in samples:
        if not s.ok:
            errors[s.error_kind or "unknown"] = errors.get(s.error_kind or "unknown", 0) + 1
    # Per-request decode speed: the output tokens after the first over the time after the first token. Only for a
    # streamed answer (without a stream there is no first token's time: None, not tokens over the whole request)
    # of two tokens or more whose tokens came over MIN_DECODE_S at least (not all at once).
    speeds = [(s.output_tokens - 1) / (s.latency_s - s.ttft_s) for s in good
              if s.ttft_s is not None and s.output_tokens > 1 and s.latency_s - s.ttft_s >= MIN_DECODE_S]
    ttfts = [s.ttft_s for s in good if s.ttft_s is not None]
    return {
        "requests": len(samples),
        "ok": len(good),
        "errors": errors,
        "ttft_s": percentiles(ttfts),
        "latency_s": percentiles([s.latency_s for s in good]),
        "output_tokens_per_s": round(percentiles(speeds)["p50"] or 0.0, 3) if speeds else None,
        "tokens_estimated": any(not s.tokens_reported for s in good),
    }


async def _timed(call: Any) -> Sample:
    start = time.perf_counter()
    try:
        completion: Completion = await call
    except LLMError as exc:
        return Sample(ok=False, latency_s=time.perf_counter() - start, error_kind=exc.kind,
                      error=redact(" ".join(str(exc).split()))[:300],
                      hint=redact(" ".join(exc.hint.split()))[:300] if exc.hint else None)
    latency = completion.latency_s or time.perf_counter() - start
    # A server that ignores `stream: true` answers whole, which has no first token's time (the router leaves it
    # None); a time at or past the latency, from any provider, is none either (docs: llm-bench)
    ttft = completion.ttft_s if completion.ttft_s is not None and completion.ttft_s < latency else None
    return Sample(ok=True, latency_s=latency, ttft_s=ttft, output_tokens=completion.usage.completion_tokens,
                  model=completion.model, tokens_reported=completion.usage.reported)


async def _level(make_call: Any, requests: int, concurrency: int, task: ProgressTask) -> tuple[list[Sample], float]:
    """Run ``requests`` calls with at most ``concurrency`` in flight; returns samples (in the order they finished)
    and the wall time. ``concurrency`` workers take the next request in turn: a task per request, made up front,
    took 1.4 GB at ``--requests 1000000``."""
    samples: list[Sample] = []
    pending = iter(range(requests))  # shared: each worker takes the next index

    async def worker() -> None:
        for index in pending:
            samples.append(await make_call(index))
            task.advance()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, requests))))
    return samples, time.perf_counter() - start


# The tool-calling probe: a tool no model was trained on, a question only it answers, and a call that is required.
PROBE_TOOL = {"type": "function", "function": {
    "name": "get_parcel_status", "description": "The delivery status of a parcel, by its tracking number.",
    "parameters": {"type": "object", "properties": {"tracking_number": {"type": "string"}},
                   "required": ["tracking_number"], "additionalProperties": False}}}
PROBE_MESSAGES = [{"role": "user", "content": "Where is my parcel? The tracking number is ZX-4471."}]
# The probe's least token budget, room for its call whatever the bench's --max-tokens (docs: llm-bench).
PROBE_MIN_TOKENS = 128


async def probe_tools(router: Router, name: str, max_tokens: int) -> dict[str, Any]:
    """One tool-calling request to model ``name`` (no repair, no fallback): ``called`` (it answered with at least one
    call), ``valid`` (its calls validate against the tool's schema; None when jsonschema is missing or the request
    failed), ``problem`` (why not), ``latency_s``, and ``error_kind``, ``error`` and ``hint`` (the request failed).
    ``max_tokens``: the bench's, raised to ``PROBE_MIN_TOKENS``."""
    params = GenParams(max_tokens=max(max_tokens, PROBE_MIN_TOKENS), tools=[PROBE_TOOL], tool_choice="required")
    start = time.perf_counter()
    try:
        completion = await router.call_model(name, PROBE_MESSAGES, params)
    except LLMError as exc:
        return {"called": False, "valid": None, "problem": None, "latency_s": round(time.perf_counter() - start, 6),
                "error_kind": exc.kind, "error": redact(" ".join(str(exc).split()))[:300],
                "hint": redact(" ".join(exc.hint.split()))[:300] if exc.hint else None}
    latency = round(time.perf_counter() - start, 6)
    try:
        problem = call_problem(completion, params)
    except MissingPackage:  # jsonschema (the serve extra) validates calls
        return {"called": bool(completion.tool_calls), "valid": None, "problem": "jsonschema is not installed",
                "latency_s": latency, "error_kind": None, "error": None, "hint": None}
    if problem is not None and completion.finish_reason == "length" and (
            completion.tool_calls or TOOL_CALL_OPEN in completion.text):
        problem = cut_problem(params, "--max-tokens")  # the call was begun: the limit, not the model, stopped it
    return {"called": bool(completion.tool_calls), "valid": problem is None, "problem": problem,
            "latency_s": latency, "error_kind": None, "error": None, "hint": None}


async def bench_model(router: Router, name: str, settings: BenchSettings, stream: bool, task: ProgressTask,
                      on_event: Callable[..., None] | None = None) -> dict:
    """Probe one model, then load it at each concurrency level. ``on_event``: events.jsonl's (``RunDir.event``),
    told of the warm-up request."""
    messages = [{"role": "user", "content": settings.prompt}]
    params = GenParams(max_tokens=settings.max_tokens)

    async def call(_: int = 0) -> Sample:  # the one request every step sends: the probe, the warm-up, the levels'
        return await _timed(router.call_model(name, messages, params, stream=stream))

    probe = await call()
    task.advance()
    entry: dict[str, Any] = {"name": name, "available": probe.ok, "error_kind": probe.error_kind,
                             "error": probe.error, "hint": probe.hint, "stream": stream}
    if not probe.ok:
        task.advance(settings.requests * len(settings.concurrency) + int(settings.tools))
        entry.update(_summarise([]))
        entry["levels"] = []
        return entry

    if settings.tools:
        entry["tool_call"] = await probe_tools(router, name, settings.max_tokens)
        # The probe's prompt displaced the bench prompt from a server's prompt cache (llama.cpp): the first counted
        # request was cold, skewing its TTFT and the p90/p99. One request, not counted, warms it again.
        warm = await call()
        task.advance()
        if on_event is not None:
            on_event("bench_warm_up", model=name, counted=False, ok=warm.ok, latency_s=round(warm.latency_s, 6),
                     ttft_s=None if warm.ttft_s is None else round(warm.ttft_s, 6), error_kind=warm.error_kind)

    all_samples: list[Sample] = []
    levels = []
    for concurrency in settings.concurrency:
        samples, wall = await _level(call, settings.requests, concurrency, task)
        all_samples += samples
        summary = _summarise(samples)
        tokens = sum(s.output_tokens for s in samples if s.ok)
        levels.append({"concurrency": concurrency, **summary, "wall_s": round(wall, 4),
                       "requests_per_s": round(summary["ok"] / wall, 3) if wall else None,
                       "throughput_tokens_per_s": round(tokens / wall, 3) if wall else None})
    entry.update(_summarise(all_samples))
    entry["levels"] = levels
    return entry


async def bench_route(router: Router, route: str, settings: BenchSettings, task: ProgressTask) -> list[dict]:
    """Send every request through the router's strategy for ``route``; record who answered and the fallback cost."""
    messages = [{"role": "user", "content": settings.prompt}]
    params = GenParams(max_tokens=settings.max_tokens)
    records: list[dict] = []

    async def call(index: int) -> Sample:
        start = time.perf_counter()
        try:
            routed = await router.generate(messages, route=route, params=params)
        except LLMError as exc:
            # as for an answer, the times it moved on to another model, not its attempts (retries counted 4 on a
            # route of two models); no time "lost to fallbacks": there is no answer, all of latency_s was lost
            tried = {attempt[0] for attempt in getattr(exc, "attempts", []) if attempt[0] != "-"}  # "-": deadline
            sample = Sample(ok=False, latency_s=time.perf_counter() - start, error_kind=exc.kind,
                            fallbacks=max(len(tried) - 1, 0), fallback_time_s=None)
        else:
            sample = Sample(ok=True, latency_s=time.perf_counter() - start, model=routed.model,
                            output_tokens=routed.completion.usage.completion_tokens, fallbacks=routed.fallbacks,
                            fallback_time_s=routed.fallback_time_s)
        lost = None if sample.fallback_time_s is None else round(sample.fallback_time_s, 6)
        records.append({"request": index, "model": sample.model, "fallbacks": sample.fallbacks,
                        "latency_s": round(sample.latency_s, 6), "fallback_time_s": lost,
                        "ok": sample.ok, "error_kind": sample.error_kind})
        return sample

    for concurrency in settings.concurrency:
        await _level(call, settings.requests, concurrency, task)
    for number, record in enumerate(records):  # requests finish out of order; number them in completion order
        record["request"] = number
    return records


def prepare(cfg: BenchConfig) -> dict[str, Any]:
    """Checks before a run folder exists (the schema already checked the names in ``bench``): something to measure;
    a warning for a concurrency level above the request count, which it cannot reach."""
    _something_to_measure(cfg)
    settings = cfg.bench
    beyond = [c for c in settings.concurrency if c > settings.requests]
    if beyond:
        log.warning("bench.concurrency %s: above bench.requests (%d), so at most %d request(s) are in flight at %s; "
                    "give --requests %d or more to measure %s", ",".join(map(str, beyond)), settings.requests,
                    settings.requests, "that level" if len(beyond) == 1 else "those levels", max(beyond),
                    "it" if len(beyond) == 1 else "them")
    return {}


def _something_to_measure(cfg: BenchConfig) -> None:
    if not cfg.models:
        raise UsageError("no models configured", hint="add models to the --llm/-c config, or try --demo")


async def run_async(cfg: BenchConfig, run_dir: RunDir | None = None, progress: Progress | None = None
                    ) -> dict[str, Any]:
    """Measure ``cfg.bench`` over ``cfg``'s models and return the results dict (also written to the run folder when
    one is given)."""
    progress = progress or NullProgress()
    llm, settings = cfg, cfg.bench
    names = settings.models or list(llm.models)
    _something_to_measure(cfg)
    router = Router.for_run(llm, run_dir)
    router.cache = None  # llm-bench measures the models: an answer from the response cache would measure nothing
    results: dict[str, Any] = {"settings": settings.model_dump(mode="json"), "models": []}
    if run_dir is not None:  # from the start, results.json and report.md hold the models measured so far
        _save_so_far(results, router, run_dir, len(names))
    try:
        per_model = 1 + settings.requests * len(settings.concurrency) + int(settings.tools)
        for name in names:
            task = progress.task(f"{name}", total=per_model)
            stream = settings.stream and llm.models[name].stream
            results["models"].append(await bench_model(router, name, settings, stream, task,
                                                       run_dir.event if run_dir is not None else None))
            if run_dir is not None:  # a kill -9 (or a crash) later keeps this model
                _save_so_far(results, router, run_dir, len(names))
        if settings.route is not None:
            task = progress.task(f"route {settings.route}", total=settings.requests * len(settings.concurrency))
            results["route"] = await bench_route(router, settings.route, settings, task)
        results["router_stats"] = router.stats()
    except (asyncio.CancelledError, KeyboardInterrupt):  # Ctrl-C (asyncio.run cancels us) or SIGTERM
        if run_dir is not None:
            _save_so_far(results, router, run_dir, len(names), stopped=True)
        raise
    finally:
        await router.aclose()
    _finish(results)
    if run_dir is not None:
        with deferred_interrupts():  # a Ctrl-C now: the finished files, not the last partial ones
            run_dir.save_results(results)
            run_dir.save_report(render_report(results, run_dir.path, rerun=run_dir.rerun))
    return results


def _finish(results: dict[str, Any]) -> None:
    results["available"] = [m["name"] for m in results["models"] if m["available"]]
    results["fastest"] = best_model(results["models"])


def _partial(results: dict[str, Any], router: Router) -> dict[str, Any]:
    """``results`` as far as they go: the models measured so far, ``interrupted: true``."""
    partial = {**results, "router_stats": results.get("router_stats") or router.stats(), "interrupted": True}
    _finish(partial)
    return partial


def _save_so_far(results: dict[str, Any], router: Router, run_dir: RunDir, planned: int, *,
                 stopped: bool = False) -> None:
    """results.json and report.md of the models measured so far (``interrupted: true``, which the finished run's
    files drop; the model being measured and the route left out), each written atomically with a second Ctrl-C (or
    SIGTERM) held until both are: while the run goes on, so a kill -9 or a crash keeps them, and at a Ctrl-C
    (``stopped``). Never in the way of the run or the exit: an error here is logged and the files left as they were."""
    try:
        with deferred_interrupts():
            partial = _partial(results, router)
            run_dir.save_results(partial)
            run_dir.save_report(render_report(partial, run_dir.path, planned=None if stopped else planned,
                                              rerun=run_dir.rerun))
            if stopped:  # said before a second Ctrl-C, held until here, goes on
                log.warning("interrupted: %s and report.md hold the %d of %d model(s) measured so far",
                            run_dir.path / "results.json", len(results["models"]), planned)
    except Exception:
        log.warning("the results so far could not be written", exc_info=True)


def run(cfg: BenchConfig, run_dir: RunDir | None = None, *, progress: Progress | None = None,
        announce: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Synchronous entry for the CLI and scripts."""
    return asyncio.run(run_async(cfg, run_dir, progress))
