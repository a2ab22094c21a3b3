"""A scriptable OpenAI-compatible HTTP server on 127.0.0.1, for tests, benchmarks and ``agentlab llm-bench --demo``.

Each model name (the request's ``"model"`` field) gets a queue of :class:`Reply` objects, consumed one per request,
and an optional default used once the queue is empty. A reply can be a normal answer, an HTTP error (with headers
such as ``Retry-After``), a slow answer (``delay_s`` before the headers, ``chunk_delay_s`` between streamed chunks),
a stream cut mid-way, a body that is not JSON, an empty answer, or tool calls (streamed as OpenAI does: each call's
id and name first, then its arguments in small pieces, several calls interleaved by index when asked). That lets the
HTTP provider, the router's retries / timeouts / fallbacks and the latency benchmark run against a real socket
instead of mocks.

Endpoints: ``POST /v1/chat/completions`` (JSON, or SSE when ``"stream": true``), ``POST /v1/embeddings`` (a
model's next reply decides the status; the vectors are ``embedding_of(text, dimensions or 8)``, deterministic, in
the ``encoding_format`` asked for), ``GET /v1/models`` (every model that has a script or a default), ``GET /health``.

A client that goes away before its answer is complete (it timed out, or a gateway in front cancelled the request)
is recorded in ``abandoned`` (the model name, once per request), so tests can check that cancellation reaches the
upstream.

Token counts are deliberately naive so tests can compute them by hand: ``prompt_tokens`` is the number of
whitespace-separated words over all message contents, ``completion_tokens`` the number of whitespace-separated
words of the reply text. Streaming sends one chunk per word, each keeping its surrounding whitespace, so joining
the deltas reproduces the text exactly.

Use it in-process (``with ScriptedServer() as srv: srv.script(...)``), or as a separate process::

    python -m agentlab.testing.server --port 0 --config replies.json

where ``replies.json`` is ``{"defaults": {"model": {reply fields}}, "scripts": {"model": [{reply fields}, ...]}}``;
the process prints ``READY http://127.0.0.1:PORT/v1`` once listening. :func:`spawn_server_process` does that for
you. ``Reply.fn`` only exists in-process.

starlette and uvicorn come from the ``dev`` extra and are imported lazily, so importing this module stays cheap.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import logging
import os
import queue
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = ["Reply", "ScriptedServer", "spawn_server_process", "demo_config", "demo_server", "DEMO_TEXT", "main",
           "embedding_of"]

log = logging.getLogger(__name__)


@dataclass
class Reply:
    """One scripted answer. For error statuses, ``text`` (when changed from ``"ok"``) becomes the error message."""

    text: str = "ok"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # before the response headers: drives client timeouts and TTFT
    chunk_delay_s: float = 0.0  # between streamed chunks
    cut_after_chunks: int | None = None  # streaming: drop the connection after N content chunks, no [DONE]
    invalid_json: bool = False  # 200 whose body (or one data: line) is not JSON
    empty: bool = False  # 200 with content ""
    finish_reason: str = "stop"  # "tool_calls" is sent instead when the reply has tool calls
    fn: Callable[[dict[str, Any]], str] | None = None  # text from the request JSON; in-process only
    # Tool calls: [{"name": str, "arguments": dict or JSON text, "id": optional}]; ids default to call_N.
    tool_calls: list[dict[str, Any]] | None = None
    args_chunk_chars: int = 5  # streaming: the arguments of a call are sent in pieces of this many characters
    interleave_calls: bool = False  # streaming: send the calls' pieces round-robin (parallel calls by index)

    def openai_calls(self) -> list[dict[str, Any]]:
        """``tool_calls`` in OpenAI's message shape."""
        out = []
        for i, call in enumerate(self.tool_calls or []):
            args = call.get("arguments", {})
            out.append({"id": call.get("id") or f"call_{i + 1}", "type": "function",
                        "function": {"name": call["name"],
                                     "arguments": args if isinstance(args, str) else json.dumps(args)}})
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reply:
        """Build a reply from JSON fields (process mode); unknown fields and ``fn`` are rejected."""
        allowed = {f.name for f in fields(cls)} - {"fn"}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown reply field(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
        return cls(**data)


# OpenAI-style (type, code, default message) per status, so clients exercise their real error parsing.
_ERRORS: dict[int, tuple[str, str, str]] = {
    400: ("invalid_request_error", "bad_request", "bad request"),
    401: ("authentication_error", "invalid_api_key", "invalid API key"),
    403: ("permission_error", "permission_denied", "permission denied"),
    404: ("invalid_request_error", "model_not_found", "model not found"),
    408: ("timeout_error", "timeout", "request timed out"),
    429: ("rate_limit_error", "rate_limit_exceeded", "rate limit reached, retry later"),
    500: ("server_error", "internal_error", "internal server error"),
    502: ("server_error", "bad_gateway", "bad gateway"),
    503: ("server_error", "service_unavailable", "service unavailable"),
}

_WORD = re.compile(r"\s*\S+\s*")


def count_words(text: str) -> int:
    """The server's token count: whitespace-separated words."""
    return len(text.split())


def split_words(text: str) -> list[str]:
    """Split into word chunks that keep their whitespace, so ``"".join(split_words(t)) == t``."""
    parts = _WORD.findall(text)
    if not parts:
        return [text] if text else []
    return parts


def _content_text(content: Any) -> str:
    # Content may be a string or a list of parts ({"type": "text", "text": ...}) in the OpenAI format.
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def prompt_tokens(body: dict[str, Any]) -> int:
    messages = body.get("messages") or []
    return sum(count_words(_content_text(m.get("content"))) for m in messages if isinstance(m, dict))


def embedding_of(text: str, dimensions: int = 8) -> list[float]:
    """The server's embedding of ``text``: ``dimensions`` numbers from its SHA-256, L2-normalised (tests compute it
    by hand)."""
    import hashlib

    raw = b"".join(hashlib.sha256(f"{text}/{i}".encode()).digest() for i in range(-(-dimensions // 32)))
    vector = [b / 127.5 - 1.0 for b in raw[:dimensions]]
    norm = sum(x * x for x in vector) ** 0.5 or 1.0
    return [x / norm for x in vector]


class _CutStream(Exception):
    """Raised inside a streaming body so uvicorn drops the connection (the only way ASGI can abort a response)."""


def _is_cut(exc: BaseException | None) -> bool:
    if isinstance(exc, _CutStream):
        return True
    # starlette may wrap it in an exception group (anyio task group around the body iterator).
    return any(_is_cut(e) for e in getattr(exc, "exceptions", ()) or ())


class _DropIntendedTracebacks(logging.Filter):
    """uvicorn logs every app exception with a traceback. A scripted cut is intended, and CancelledError only comes
    from stop() cancelling requests still in flight, so keep both out of the test logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (_is_cut(exc) or isinstance(exc, asyncio.CancelledError))


_quiet_filter = _DropIntendedTracebacks()


def _error_body(status: int, message: str | None = None) -> dict[str, Any]:
    etype, code, default = _ERRORS.get(status, ("server_error" if status >= 500 else "invalid_request_error",
                                                 f"http_{status}", f"HTTP {status}"))
    return {"error": {"message": message or default, "type": etype, "code": code}}


class ScriptedServer:
    """An OpenAI-compatible server whose answers are scripted per model; uvicorn runs in a daemon thread.

    ``keep_requests`` bounds ``requests`` (the bodies received, newest last): None keeps every one (tests inspect
    them), N keeps the last N, 0 none. A long-running upstream (benchmarks, ``python -m agentlab.testing.server``,
    which keeps 100 by default) must bound it, or its memory grows with every request. ``count(model)`` counts every
    request either way."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, keep_requests: int | None = None) -> None:
        self.host = host
        self.port = port
        self.keep_requests = keep_requests
        self.requests: list[dict[str, Any]] = []
        self._counts: dict[str, int] = {}
        self.abandoned: list[str] = []  # models of requests whose client left before the answer was complete
        self._scripts: dict[str, deque[Reply]] = {}
        self._defaults: dict[str, Reply] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._server: Any = None
        self._thread: threading.Thread | None = None

    # -- scripting -------------------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT/v1``, what an OpenAI client takes as its base URL."""
        return f"http://{self.host}:{self.port}/v1"

    def script(self, model: str, replies: list[Reply]) -> None:
        """Queue replies for ``model``, consumed in order, one per request (appends to any queued ones)."""
        with self._lock:
            self._scripts.setdefault(model, deque()).extend(replies)

    def default(self, model: str, reply: Reply) -> None:
        """The reply for ``model`` whenever its queue is empty."""
        with self._lock:
            self._defaults[model] = reply

    def count(self, model: str) -> int:
        """How many chat requests named ``model`` so far."""
        with self._lock:
            return self._counts.get(model, 0)

    def reset(self) -> None:
        """Forget scripts, defaults and recorded requests."""
        with self._lock:
            self._scripts.clear()
            self._defaults.clear()
            self.requests.clear()
            self._counts.clear()
            self.abandoned.clear()

    def _abandon(self, model: Any) -> None:
        with self._lock:
            self.abandoned.append(str(model))

    def models(self) -> list[str]:
        with self._lock:
            return sorted(set(self._scripts) | set(self._defaults))

    def _take(self, body: dict[str, Any], received_at: float) -> Reply | None:
        model = body.get("model")
        with self._lock:
            if isinstance(model, str):
                self._counts[model] = self._counts.get(model, 0) + 1
            keep = self.keep_requests
            if keep is None or keep > 0:
                self.requests.append({**body, "_received_at": received_at})
                if keep is not None and len(self.requests) > 2 * keep:  # trimmed in batches: O(1) a request
                    del self.requests[:-keep]
            pending = self._scripts.get(model) if isinstance(model, str) else None
            if pending:
                return pending.popleft()
            return self._defaults.get(model) if isinstance(model, str) else None

    # -- lifecycle -------------------------------------------------------------------------------------------------

    def start(self) -> ScriptedServer:
        """Start serving in a daemon thread; returns once the socket accepts connections."""
        import uvicorn

        if self._thread is not None:
            raise RuntimeError("ScriptedServer already started")
        # Binding here (not in uvicorn) gives us the real port before the thread starts when port=0. proto must be
        # IPPROTO_TCP: asyncio only sets TCP_NODELAY on accepted sockets that say so, and without it Nagle plus
        # delayed ACK adds ~40 ms to every keep-alive request (uvicorn writes headers and body separately).
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self._build_app(), log_level="warning", access_log=False, lifespan="off",
                                http="auto", timeout_keep_alive=30, backlog=2048)
        self._server = uvicorn.Server(config)
        logging.getLogger("uvicorn.error").addFilter(_quiet_filter)  # addFilter ignores duplicates
        self._thread = threading.Thread(target=self._run, args=(sock,), name=f"testserver-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"test server on {self.host}:{self.port} did not start")
            time.sleep(0.005)
        return self

    def _run(self, sock: socket.socket) -> None:
        # Our own loop rather than uvicorn.Server.run(): older uvicorn installs a process-wide uvloop event loop
        # policy there, which would leak into the test process.
        loop: asyncio.AbstractEventLoop
        try:
            import uvloop

            loop = uvloop.new_event_loop()
        except ImportError:
            loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._server.serve(sockets=[sock]))
        finally:
            # force_exit leaves slow scripted requests sleeping; cancel them so the loop closes without warnings.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()
            sock.close()

    def stop(self) -> None:
        """Stop serving without waiting for in-flight (possibly deliberately slow) requests; those are aborted."""
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._server.force_exit = True
        self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def wait(self) -> None:
        """Block until the server stops (process mode)."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(0.5)

    def __enter__(self) -> ScriptedServer:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- HTTP ------------------------------------------------------------------------------------------------------

    def _build_app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse, Response, StreamingResponse
        from starlette.routing import Route

        async def health(_: Request) -> Response:
            return JSONResponse({"status": "ok"})

        async def list_models(_: Request) -> Response:
            owner = "agentlab-testserver"
            data = [{"id": m, "object": "model", "created": 0, "owned_by": owner} for m in self.models()]
            return JSONResponse({"object": "list", "data": data})

        async def chat(request: Request) -> Response:
            received_at = time.monotonic()
            try:
                body = json.loads(await request.body())
            except ValueError:
                return JSONResponse(_error_body(400, "request body is not valid JSON"), status_code=400)
            if not isinstance(body, dict):
                return JSONResponse(_error_body(400, "request body must be a JSON object"), status_code=400)
            reply = self._take(body, received_at)
            if reply is None:
                return JSONResponse(_error_body(404, f"model '{body.get('model')}' not found"), status_code=404)
            if reply.delay_s > 0 and not await _wait_unless_gone(request, reply.delay_s):
                self._abandon(body.get("model"))
                return Response(status_code=499)  # the client is gone; nobody reads this
            if reply.status != 200:
                error = reply.text if reply.text != "ok" else None
                return JSONResponse(_error_body(reply.status, error), status_code=reply.status,
                                    headers=reply.headers)
            text = "" if reply.empty else (reply.fn(body) if reply.fn is not None else reply.text)
            meta: dict[str, Any] = {"id": f"chatcmpl-{next(self._ids)}", "created": int(time.time()),
                                    "model": body.get("model")}
            usage = {"prompt_tokens": prompt_tokens(body), "completion_tokens": count_words(text)}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            if body.get("stream"):
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                chunks = self._watched(_sse_chunks(reply, text, meta, usage if include_usage else None), body)
                return StreamingResponse(chunks, media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache", **reply.headers})
            if reply.invalid_json:
                return Response('{"id": "' + meta["id"] + '", "choices": [{"message": ', media_type="application/json",
                                headers=reply.headers)
            answer: dict[str, Any] = {"role": "assistant", "content": text}
            finish = reply.finish_reason
            if reply.tool_calls:
                answer = {"role": "assistant", "content": text or None, "tool_calls": reply.openai_calls()}
                finish = "tool_calls" if finish == "stop" else finish
            payload = {**meta, "object": "chat.completion", "usage": usage,
                       "choices": [{"index": 0, "message": answer, "finish_reason": finish}]}
            return JSONResponse(payload, headers=reply.headers)

        async def embeddings(request: Request) -> Response:
            try:
                body = json.loads(await request.body())
            except ValueError:
                return JSONResponse(_error_body(400, "request body is not valid JSON"), status_code=400)
            reply = self._take(body, time.monotonic()) if isinstance(body, dict) else None
            if reply is None:
                return JSONResponse(_error_body(404, f"model '{body.get('model')}' not found"), status_code=404)
            if reply.status != 200:
                return JSONResponse(_error_body(reply.status, reply.text if reply.text != "ok" else None),
                                    status_code=reply.status, headers=reply.headers)
            texts = [body["input"]] if isinstance(body.get("input"), str) else list(body.get("input") or [])
            vectors = [embedding_of(t, body.get("dimensions") or 8) for t in texts]
            data = [{"object": "embedding", "index": i, "embedding": v if body.get("encoding_format") != "base64"
                     else base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode()} for i, v in enumerate(vectors)]
            words = sum(count_words(t) for t in texts)
            return JSONResponse({"object": "list", "model": body.get("model"), "data": data,
                                 "usage": {"prompt_tokens": words, "total_tokens": words}}, headers=reply.headers)

        routes = [
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/chat/completions", chat, methods=["POST"]),
        ]
        return Starlette(routes=routes)

    async def _watched(self, chunks: AsyncIterator[str], body: dict[str, Any]) -> AsyncIterator[str]:
        """``chunks``, recording the request as abandoned when the client leaves before the last one (starlette
        cancels the streaming task on disconnect)."""
        finished = False
        try:
            async for item in chunks:
                yield item
            finished = True
        except _CutStream:
            finished = True  # a scripted cut is the server's doing, not the client's
            raise
        finally:
            if not finished:
                self._abandon(body.get("model"))


async def _wait_unless_gone(request: Request, seconds: float) -> bool:
    """Sleep ``seconds``; False as soon as the client disconnects instead (ASGI receive() says so after the body)."""

    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watch = asyncio.ensure_future(gone())
    try:
        await asyncio.wait_for(asyncio.shield(watch), seconds)
    except TimeoutError:
        return True
    finally:
        watch.cancel()
    return False


async def _sse_chunks(reply: Reply, text: str, meta: dict[str, Any],
                      usage: dict[str, int] | None) -> AsyncIterator[str]:
    """OpenAI's chunk sequence: role, one delta per word, finish_reason, optional usage, [DONE]."""

    def event(delta: dict[str, Any] | None, finish: str | None = None, with_usage: bool = False) -> str:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
        chunk: dict[str, Any] = {**meta, "object": "chat.completion.chunk", "choices": choices}
        if usage is not None:  # OpenAI sends usage: null on every chunk but the last when include_usage is on
            chunk["usage"] = usage if with_usage else None
        return f"data: {json.dumps(chunk)}\n\n"

    yield event({"role": "assistant", "content": ""})
    if reply.invalid_json:
        yield 'data: {"id": "' + meta["id"] + '", "choices": [{"delta": \n\n'
    for i, word in enumerate(split_words(text)):
        if reply.cut_after_chunks is not None and i >= reply.cut_after_chunks:
            raise _CutStream()
        if reply.chunk_delay_s > 0:
            await asyncio.sleep(reply.chunk_delay_s)
        yield event({"content": word})
    if reply.cut_after_chunks is not None:  # N >= number of words: cut before finish_reason and [DONE]
        raise _CutStream()
    finish = reply.finish_reason
    if reply.tool_calls:
        finish = "tool_calls" if finish == "stop" else finish
        for piece in _call_pieces(reply):
            if reply.chunk_delay_s > 0:
                await asyncio.sleep(reply.chunk_delay_s)
            yield event({"tool_calls": [piece]})
    yield event({}, finish)
    if usage is not None:
        yield event(None, with_usage=True)
    yield "data: [DONE]\n\n"


def _call_pieces(reply: Reply) -> list[dict[str, Any]]:
    """The ``delta.tool_calls`` items of a streamed reply: per call, one with index, id, type and name (and empty
    arguments), then its arguments ``args_chunk_chars`` at a time; interleaved across calls when asked."""
    per_call = []
    for index, call in enumerate(reply.openai_calls()):
        args = call["function"]["arguments"]
        size = max(1, reply.args_chunk_chars)
        pieces = [{"index": index, "id": call["id"], "type": "function",
                   "function": {"name": call["function"]["name"], "arguments": ""}}]
        pieces += [{"index": index, "function": {"arguments": args[i:i + size]}} for i in range(0, len(args), size)]
        per_call.append(pieces)
    if not reply.interleave_calls:
        return [p for pieces in per_call for p in pieces]
    out = []
    for row in itertools.zip_longest(*per_call):
        out += [p for p in row if p is not None]
    return out


# -- process mode ------------------------------------------------------------------------------------------------


def load_script(server: ScriptedServer, config: dict[str, Any]) -> None:
    """Apply a ``{"defaults": {...}, "scripts": {...}}`` config to ``server``."""
    unknown = set(config) - {"defaults", "scripts"}
    if unknown:
        raise ValueError(f"unknown config key(s) {sorted(unknown)}; expected 'defaults' and/or 'scripts'")
    for model, fields_ in (config.get("defaults") or {}).items():
        server.default(model, Reply.from_dict(fields_))
    for model, replies in (config.get("scripts") or {}).items():
        server.script(model, [Reply.from_dict(r) for r in replies])


def spawn_server_process(config: dict[str, Any], timeout_s: float = 20.0) -> tuple[subprocess.Popen[str], str]:
    """Run the server as ``python -m agentlab.testing.server`` with ``config``; return (process, base_url).

    The caller owns the process and must ``kill()`` / ``wait()`` it (its stdout is already closed). Raises
    RuntimeError with the child's stderr if it exits, or stays silent for ``timeout_s``, before its READY line.
    """
    fd, config_path = tempfile.mkstemp(prefix="agentlab-testserver-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(config, f)
    # stderr to a file, not a pipe: nobody drains it after start-up and a full pipe would stall the server.
    stderr_file = tempfile.TemporaryFile(mode="w+")
    cmd = [sys.executable, "-m", "agentlab.testing.server", "--port", "0", "--config", config_path]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr_file, text=True)
    lines: queue.Queue[str] = queue.Queue()
    # A reader thread keeps the wait portable (select() does not work on pipes on Windows).
    reader = threading.Thread(target=lambda: lines.put(proc.stdout.readline() if proc.stdout else ""), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                line: str | None = lines.get(timeout=0.05)
            except queue.Empty:
                line = None
            if line is not None:
                if line.startswith("READY "):
                    # The child prints nothing after READY; closing our end now spares every caller a leaked pipe.
                    if proc.stdout is not None:
                        proc.stdout.close()
                    return proc, line.split(maxsplit=1)[1].strip()
                why = f"printed {line!r} instead of READY" if line else "exited before READY"
                break
            if proc.poll() is not None:
                why = f"exited with code {proc.returncode} before READY"
                break
            if time.monotonic() > deadline:
                why = f"printed no READY line within {timeout_s:g}s"
                break
        proc.kill()
        proc.wait()
        reader.join(timeout=2)  # the dead child's EOF ends the read; closing under a blocked reader would race
        if proc.stdout is not None:
            proc.stdout.close()
        stderr_file.seek(0)
        raise RuntimeError(f"test server process {why}; stderr:\n{stderr_file.read()[-4000:]}")
    finally:
        stderr_file.close()
        os.unlink(config_path)


# -- demo --------------------------------------------------------------------------------------------------------

DEMO_TEXT = (
    "Benchmarks measure what a model does under load, not what its card promises. This demo server answers "
    "with a fixed paragraph so that time to first token, total latency and throughput can be compared across "
    "runs without any network or model download."
)


def _demo_text(body: dict[str, Any]) -> str:
    """``DEMO_TEXT``, cut to the request's ``max_tokens`` words as a real server cuts its answer."""
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
        return "".join(split_words(DEMO_TEXT)[:limit]).rstrip()
    return DEMO_TEXT


def demo_server() -> ScriptedServer:
    """A started server for ``llm-bench --demo``: ``demo-fast``, ``demo-slow``, and ``demo-dead`` (always 503)."""
    server = ScriptedServer()
    server.default("demo-fast", Reply(fn=_demo_text, delay_s=0.02, chunk_delay_s=0.002))
    server.default("demo-slow", Reply(fn=_demo_text, delay_s=0.15, chunk_delay_s=0.01))
    server.default("demo-dead", Reply(status=503))
    return server.start()


def demo_config(base_url: str) -> dict[str, Any]:
    """The routing config of ``llm-bench --demo``: the three demo models at ``base_url``, in one fallback route."""
    return {
        "providers": {"demo": {"kind": "openai", "base_url": base_url}},
        "models": {name: {"provider": "demo", "model": name} for name in ("demo-fast", "demo-slow", "demo-dead")},
        "routes": {"default": {"primary": ["demo-dead"], "reserve": ["demo-slow"], "fallback": ["demo-fast"]}},
        "timeout_s": 10,
        "retries": 0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agentlab.testing.server", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--config", help='JSON: {"defaults": {model: reply}, "scripts": {model: [reply, ...]}}')
    parser.add_argument("--keep-requests", type=int, default=100,
                        help="request bodies kept in memory (the last N; 0: none): a long run must not grow")
    args = parser.parse_args(argv)
    server = ScriptedServer(args.host, args.port, keep_requests=max(0, args.keep_requests))
    if args.config:
        with open(args.config, encoding="utf-8") as f:
            load_script(server, json.load(f))
    server.start()
    print(f"READY {server.base_url}", flush=True)
    try:
        server.wait()
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
