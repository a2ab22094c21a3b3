"""The gateway itself: a Starlette app in front of one ``Router``.

``POST /v1/chat/completions`` (JSON or SSE), ``POST /v1/responses`` (OpenAI's Responses API on the same routes,
``responses.py``), ``POST /v1/embeddings`` (``embeddings.py``), ``POST /v1/completions`` (raw prompts with ``echo``
and ``logprobs``, on local models), ``GET /v1/models``, ``GET /health``, ``GET /metrics``. The request's
``model`` names a route or a model of the catalog (``catalog.py``); the answer says which model answered, the
usage, and under ``agentlab`` the route, the fallbacks and every attempt's outcome.

Streams: the router hands each piece of text on as it arrives (``Router.generate(on_delta=)``). Until the first
piece, a failing model is retried and the route falls back as for any call, and a request that no model answers
gets a plain HTTP error (the client sees a status, not a broken stream). After the first piece the response is
committed: a model that dies then ends the stream with an SSE ``error`` event and no ``[DONE]``, which OpenAI
clients raise as an error, never a silently short answer.

Tool calls: ``tools``, ``tool_choice``, ``parallel_tool_calls``, assistant ``tool_calls`` and ``tool`` messages go
through the route to every model (HTTP upstreams get them as sent; local models render them and decode under a
grammar). The router validates the calls against the tools' schemas and repairs or falls back before anything is
sent, so a request with tools streams its answer at the end: its text, then each call (id and name, then the
arguments) and ``finish_reason: "tool_calls"``.

A client that disconnects cancels its request: the router call is cancelled, which closes the upstream connection
(or stops a local generation at its next token).

The hot path is lean because the gateway is benchmarked against calling the upstream directly
(``benchmarks/gateway_overhead.py``): one pooled HTTP client per provider (the router's), no per-request logging
unless INFO is on, prompts never copied or logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from agentlab.core.config import getenv
from agentlab.core.errors import AllModelsFailed, LLMError
from agentlab.core.llm.structured import CutOff
from agentlab.core.llm.types import GenParams
from agentlab.serve.catalog import Catalog, Served
from agentlab.serve.embeddings import embeddings_body, parse_embeddings
from agentlab.serve.keys import KeyRing, KeyState, Ticket, load_keys
from agentlab.serve.metrics import GatewayMetrics
from agentlab.serve.protocol import (
    DONE,
    ApiError,
    ChatRequest,
    before_cut_call,
    call_deltas,
    chunk,
    completion_body,
    content_chunks,
    error_body,
    finish_of,
    load_body,
    new_id,
    parse_chat,
    parse_completion,
    text_completion_body,
    usage_body,
)
from agentlab.serve.responses import (
    ResponseEvents,
    ResponsesRequest,
    ResponseStore,
    answer_message,
    new_response_id,
    output_items,
    parse_responses,
    response_body,
)
from agentlab.serve.schema import schema_model

if TYPE_CHECKING:
    from starlette.requests import Request

    from agentlab.core.llm.results import RoutedCompletion
    from agentlab.core.llm.router import Router
    from agentlab.serve.config import ServeConfig

__all__ = ["build_app"]

log = logging.getLogger("agentlab.serve")

# HTTP status for a request that no model answered, by the deciding error kind.
_STATUS = {"rate_limited": 429, "timeout": 504, "deadline": 504, "bad_request": 400, "context_length": 400,
           "max_tokens": 400, "unavailable": 503, "circuit_open": 503}  # max_tokens: a call cut there (raise it)
_END = object()  # the router task finished (its result or error is on the task)


class _Handler:
    def __init__(self, cfg: ServeConfig, router: Router, catalog: Catalog, metrics: GatewayMetrics,
                 client_keys: list[str] | KeyRing, secrets: list[str]):
        self.cfg = cfg
        self.router = router
        self.catalog = catalog
        self.metrics = metrics
        self.keys = client_keys if isinstance(client_keys, KeyRing) else load_keys(None, client_keys)[0]
        self.keys.on_spend = metrics.key_spend
        self.keys.on_refuse = metrics.key_refused
        self.secrets = secrets  # provider and client keys: scrubbed from every error message sent or logged
        # providers whose API key variable is unset, by name (said at start; their models' 5xx say so too)
        self.unset_keys = unset_keys(router)
        self.store = ResponseStore(cfg.max_stored_responses)  # /v1/responses conversations, for follow-ups
        # whether the server was told to stop at once (a second Ctrl-C) rather than after graceful_shutdown_s: the
        # answers it cuts then say so (the Gateway sets it; the server is made after this handler)
        self.forced: Callable[[], bool] = lambda: False

    # ------------------------------------------------------------------ checks

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            if secret and secret in text:
                text = text.replace(secret, "***")
        return text

    def check_auth(self, request: Request) -> KeyState | None:
        """The client key of ``request`` (None when the gateway asks for none); 401 without a known one. Keys are
        looked up by their SHA-256, so the time taken does not tell how close a wrong key was."""
        if not self.keys:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        given = token.strip().encode()
        key = self.keys.find(given) if scheme.lower() == "bearer" and given else None
        if key is None:
            why = "a wrong API key" if header else "no API key (send Authorization: Bearer KEY)"
            raise ApiError(401, f"this gateway needs a client key: the request has {why}", "invalid_api_key",
                           etype="authentication_error", headers={"WWW-Authenticate": "Bearer"}, kind="auth")
        return key

    def admit(self, request: Request, req: ChatRequest, body: Any, key: KeyState | None, served: Served) -> None:
        """What the request carries besides its body: ``metadata`` (routing by task), ``Cache-Control: no-cache``
        (skip the response cache), the key's tenant, and a limited key's admission (``keys.KeyRing.admit``)."""
        metadata = body.get("metadata") if isinstance(body, dict) else None
        if isinstance(metadata, dict):
            req.metadata = metadata
        control = request.headers.get("cache-control")
        if control is not None and ("no-cache" in control or "no-store" in control):
            req.use_cache = False
        if key is None:
            return
        req.key, req.tenant = key, key.tenant
        if not key.limited:
            return
        max_tokens = req.params.max_tokens
        if max_tokens is None:
            configured = [self.router.configured_max_tokens(m) for m in served.chain]
            if configured and all(c is not None for c in configured):
                max_tokens = max(c for c in configured if c is not None)
            elif key.budgeted:  # the bound must hold: the request gets one
                max_tokens = req.params.max_tokens = self.cfg.max_tokens
            else:
                max_tokens = 0
        req.ticket = self.keys.admit(key, req.model, served.chain, _prompt_bound(req), max_tokens)

    def admit_one(self, key: KeyState | None, served: Served, model: str, inputs: list[Any],
                  max_tokens: int) -> Ticket | None:
        """A limited key's admission (``keys.KeyRing.admit``: rpm, tpm, the budget's reservation) for a request
        that one model answers (embeddings, completions): ``inputs`` its texts or token-id lists, each generating up
        to ``max_tokens``. Settled by ``charge``."""
        if key is None or not key.limited:
            return None
        # tokens <= UTF-8 bytes of a text (byte-level BPE), plus a few special tokens each; token ids count as given
        prompt_bound = sum((len(x) if isinstance(x, list) else len(x.encode())) + 8 for x in inputs)
        return self.keys.admit(key, served.name, [model], prompt_bound, max_tokens * len(inputs))

    def charge(self, key: KeyState | None, ticket: Ticket | None, model: str | None, prompt: int = 0,
               completion: int = 0) -> None:
        """Settle a client key's request: ``ticket``'s reservation replaced by what was used (``model`` None: no
        answer, the reservation released), or an unlimited key's spend counted."""
        if ticket is not None:
            self.keys.settle(ticket, model, prompt, completion)
        elif key is not None and model is not None:
            self.keys.count_request(key, model, prompt, completion)

    async def read_json(self, request: Request) -> Any:
        coding = request.headers.get("content-encoding", "").strip()
        if coding and coding.lower() != "identity":  # gzip was read as text ("byte 0x8b at offset 1")
            raise ApiError(415, f"Content-Encoding {json.dumps(coding[:40])} is not supported: send the request "
                           "body uncompressed (no Content-Encoding header, or identity)",
                           "unsupported_content_encoding", kind="bad_request")
        limit = self.cfg.max_request_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise _too_large(int(length), limit)
        from starlette.requests import ClientDisconnect

        body = bytearray()
        try:
            # a body that never ends would hold the connection and its in-flight slot forever (uvicorn has no such
            # limit): the whole body within body_timeout_s
            async with asyncio.timeout(self.cfg.body_timeout_s):
                async for part in request.stream():
                    body += part
                    if len(body) > limit:
                        raise _too_large(len(body), limit)
        except ClientDisconnect:  # gone while sending its body: before any watch of the request starts
            raise _Disconnected() from None
        except TimeoutError:
            got = f"{len(body)} of {length} bytes" if length is not None and length.isdigit() else \
                f"{len(body)} bytes"
            raise ApiError(408, f"the request body did not arrive within body_timeout_s ({self.cfg.body_timeout_s:g} "
                           f"s): {got} came; send the whole body at once", "request_timeout",
                           headers={"Connection": "close"}, kind="request_timeout") from None
        return load_body(body)  # every endpoint's text and numbers checked here, the field named

    def llm_error(self, exc: LLMError, models: list[str] | None = None, *, prompt: str = "messages",
                  limit: str | None = None) -> ApiError:
        """The HTTP error of a request no model answered; ``models``: the models tried when ``exc`` does not list
        them (a single model's call: embeddings, completions). A failure of a provider whose API key is unset says
        so, as llm-bench does (offline, no 401 would ever tell). ``prompt``: the request's field of the prompt, the
        ``param`` of a prompt too long (with OpenAI's code, ``context_length_exceeded``, which clients such as
        langchain-openai look for); ``limit``: the field that set the request's ``max_tokens`` (None: it set none),
        the ``param`` of a reply cut there, a 400 (the client's own limit, not a server fault: the SDKs do not send
        it again), a structured answer's as a tool call's."""
        status, code, kind, param = _STATUS.get(exc.kind, 502), exc.kind, exc.kind, None
        last = exc.attempts[-1] if isinstance(exc, AllModelsFailed) and exc.attempts else None
        message = exc.message
        if last is not None and last[2]:
            message += f"; last: {last[2]}"
        if exc.kind == "context_length":
            code, param = "context_length_exceeded", prompt
        elif limit is not None and exc.kind == "max_tokens":
            param = limit
            message = message.replace("raise max_tokens", f"raise {limit}")
        elif limit is not None and exc.kind == "invalid_output" and last is not None and \
                last[2].startswith(CutOff.PREFIX):
            status, code, kind, param = 400, "max_tokens", "max_tokens", limit
            message += f": raise {limit}"
        if status >= 500 and self.unset_keys:
            tried = [a[0] for a in exc.attempts] if isinstance(exc, AllModelsFailed) else models or []
            config = self.router.config.models
            providers = dict.fromkeys(config[m].provider for m in tried if m in config)
            from agentlab.core.llm.providers.openai import unset_key_hint  # httpx: an HTTP provider is there

            message += "".join(f"; provider '{p}': {unset_key_hint(self.unset_keys[p])}" for p in providers
                               if p in self.unset_keys)
        etype = "rate_limit_error" if status == 429 else "invalid_request_error" if status < 500 else "api_error"
        headers = {}
        if status == 429 and exc.retry_after:  # the upstream's own wait, rounded up to whole seconds (RFC 9110)
            headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        return ApiError(status, self.scrub(message), code, param=param, etype=etype, kind=kind, headers=headers)

    def served(self, name: str) -> Served:
        """The served name ``name``; a 404 listing the served names otherwise."""
        found = self.catalog.served.get(name)
        if found is None:
            raise ApiError(404, f"model '{name[:100]}' is not served here; GET /v1/models lists the routes and "
                           f"models ({', '.join(list(self.catalog.served)[:20])})", "model_not_found",
                           param="model", kind="not_found")
        return found

    def first_model(self, served: Served, key: KeyState | None) -> str:
        """The model answering ``served`` where one model must answer (embeddings, log-probabilities), once the
        key may use that name."""
        if key is not None and key.spec.routes and served.name not in key.spec.routes:
            raise ApiError(403, f"key '{key.name}' may not use '{served.name[:100]}' (allowed: "
                           f"{', '.join(key.spec.routes)})", "model_not_allowed", etype="permission_error",
                           kind="forbidden")
        if not served.chain:
            raise ApiError(400, f"'{served.name[:100]}' classifies requests among routes; name one of those routes",
                           "unsupported_model", param="model", kind="bad_request")
        return served.chain[0]

    # ------------------------------------------------------------------ endpoints

    async def routed(self, request: Request, what: str, parse: Callable[[Any], tuple[ChatRequest, Any]],
                     reply: Callable[[ChatRequest, Any, RoutedCompletion, str], Any],
                     events: Callable[[Any], Callable[..., AsyncIterator[bytes]]] | None = None) -> Any:
        """What the chat and Responses endpoints share: auth, ``parse(body) -> (chat request, parsed)``, the served
        name, a stream (``events(parsed)``, chat chunks by default) or the routed answer as ``reply(req, parsed, rc,
        text)`` makes it, with its metrics and log line; refusals in OpenAI's error shape, a bug a counted 500."""
        start = time.perf_counter()
        label = "-"  # the metrics route label: only served names, so junk names cannot grow the label set
        try:
            key = self.check_auth(request)
            body = await self.read_json(request)
            req, parsed = parse(body)
            served = self.served(req.model)
            label = req.model
            self.admit(request, req, body, key, served)
            if req.stream:
                return await self.stream(request, req, start, events(parsed) if events is not None else None)
            rc, text = await _until_disconnect(request, self.answer(req))
            response = reply(req, parsed, rc, text)
        except ApiError as exc:
            return self.refuse(label, exc)
        except LLMError as exc:  # from the answer: the request was parsed
            return self.refuse(label, self.llm_error(exc, prompt=_prompt_field(what), limit=req.limit_field))
        except _Disconnected:
            return self.disconnected(label)
        except asyncio.CancelledError:  # the server stopping past its graceful shutdown (a client gone: _Disconnected)
            from starlette.responses import JSONResponse

            error = self.shutdown_error(what, label)
            return JSONResponse(error.body(), status_code=error.status)
        except Exception as exc:
            return self.internal_response(label, what, exc)
        seconds = time.perf_counter() - start
        self.metrics.answered_request(label, rc.model, seconds, rc.fallbacks, tool_calls=len(rc.completion.tool_calls))
        if log.isEnabledFor(logging.INFO):
            log.info("%s %s -> %s 200 %.3fs fallbacks=%d", what, label, rc.model, seconds, rc.fallbacks)
        return response

    async def chat(self, request: Request) -> Any:
        from starlette.responses import JSONResponse

        def parse(body: Any) -> tuple[ChatRequest, None]:
            return parse_chat(body, max_tokens_limit=self.cfg.max_tokens, max_messages=self.cfg.max_messages), None

        def reply(req: ChatRequest, _: None, rc: RoutedCompletion, text: str) -> JSONResponse:
            # `model` is the name the client asked for (as OpenAI's API and LangChain expect); who answered is in the
            # x-agentlab-model header and the `agentlab` block
            body = completion_body(new_id(), req.model, text, rc.completion.finish_reason, rc.completion.usage,
                                   _meta(rc), rc.completion.tool_calls)
            return JSONResponse(body, headers={"x-agentlab-model": rc.model, "x-agentlab-route": req.model})

        return await self.routed(request, "chat", parse, reply)

    async def completions(self, request: Request) -> Any:
        """Legacy ``/v1/completions`` with ``echo`` and ``logprobs`` on a local model (hf, llama_cpp): what
        log-likelihood evaluation of a served model needs (``lm_eval --model local-completions``). A route is
        answered by its first model: scores come from one model, never from a fallback."""
        from starlette.responses import JSONResponse

        start = time.perf_counter()
        label, model = "-", ""  # model: the one asked, once known
        try:
            key = self.check_auth(request)
            name, raw = parse_completion(await self.read_json(request), max_tokens_limit=self.cfg.max_tokens,
                                         max_prompts=max(1, self.cfg.max_messages))
            served = self.catalog.served.get(name)
            if served is None:
                raise ApiError(404, f"model '{name[:100]}' is not served here; GET /v1/models lists them",
                               "model_not_found", param="model", kind="not_found")
            label = name
            model = self.first_model(served, key)
            mcfg = self.router.config.models[model]
            provider = self.router.providers[mcfg.provider]
            if not hasattr(provider, "complete"):
                raise ApiError(400, f"/v1/completions with log-probabilities is served for local models (hf, "
                               f"llama_cpp providers); '{name}' runs on provider '{mcfg.provider}'",
                               "unsupported_model", param="model", kind="bad_request")
            params = GenParams(extra={"adapter": mcfg.params["adapter"]} if "adapter" in mcfg.params else {})
            ticket = self.admit_one(key, served, model, raw.prompts, raw.max_tokens)
            try:
                choices = await _until_disconnect(request, provider.complete(mcfg.model, raw, params,
                                                                             self.router.config.timeout_s))
            except BaseException:
                self.charge(key, ticket, None)
                raise
            self.charge(key, ticket, model, sum(c.prompt_tokens for c in choices),
                        sum(c.completion_tokens for c in choices))
            response = JSONResponse(text_completion_body(name, choices), headers={"x-agentlab-model": model,
                                                                                  "x-agentlab-route": label})
        except ApiError as exc:
            return self.refuse(label, exc)
        except LLMError as exc:
            return self.refuse(label, self.llm_error(exc, [model] if model else None, prompt="prompt"))
        except _Disconnected:
            return self.disconnected(label)
        except Exception as exc:
            return self.internal_response(label, "completions", exc)
        self.metrics.answered_request(label, model, time.perf_counter() - start, 0)
        return response

    def refuse(self, label: str, exc: ApiError) -> Any:
        from starlette.responses import JSONResponse

        self.metrics.failed_request(label, exc.kind)
        level = logging.WARNING if exc.status >= 500 or exc.status == 429 else logging.INFO
        if log.isEnabledFor(level):
            log.log(level, "chat %s %d %s: %s", label, exc.status, exc.code, exc.message)
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    def internal(self, label: str, what: str, exc: BaseException) -> ApiError:
        """A bug (an exception no check expected): counted as ``internal_error``, logged with its traceback (keys
        scrubbed); the error to send, which names only the exception's type."""
        self.metrics.failed_request(label, "internal_error")
        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()
        log.error("%s %s: internal error: %s", what, label, self.scrub(trace))
        return ApiError(500, f"internal error: {type(exc).__name__} (the gateway's log has the traceback)",
                        "internal_error", etype="api_error")

    def internal_response(self, label: str, what: str, exc: BaseException) -> Any:
        from starlette.responses import JSONResponse

        return JSONResponse(self.internal(label, what, exc).body(), status_code=500)

    async def answer(self, req: ChatRequest, on_delta: Callable[[str, str], None] | None = None
                     ) -> tuple[RoutedCompletion, str]:
        """The routed answer and its text: through the structured path when the request has a schema. A client
        key's spend is settled here: its reservation released when no answer came, and a stream stopped after text
        went out (the client gone, the server stopping, the upstream cut) charged its prompt's bound plus a token a
        piece."""
        streamed: list[Any] = [None, 0]  # a client key's stream: the model sending it and the pieces handed on
        deliver = on_delta
        if on_delta is not None and req.key is not None:
            hand_on = on_delta

            def counted(model: str, text: str) -> None:
                streamed[0] = model
                streamed[1] += 1
                hand_on(model, text)

            deliver = counted
        try:
            if req.schema is not None:
                result = await self.router.structured(req.messages, schema_model(req.schema, req.schema_name),
                                                      req.model, req.params, self.cfg.max_repairs)
                rc, text = result.completion, json.dumps(result.value.root, ensure_ascii=False)
            else:
                rc = await self.router.generate(req.messages, req.model, req.params, stream=req.stream,
                                                on_delta=deliver, metadata=req.metadata, tenant=req.tenant,
                                                use_cache=req.use_cache)
                text = rc.completion.text
                if req.params.tools and rc.completion.finish_reason == "length":
                    text = before_cut_call(text, {str((t.get("function") or {}).get("name")) for t in req.params.tools})
        except BaseException:  # cancelled (the client gone, the server stopping) or failed (an upstream cut)
            if streamed[1]:  # the prompt was read and text sent; the answer's usage comes only with its end
                self.charge(req.key, req.ticket, streamed[0], _prompt_bound(req), streamed[1])
            else:
                self.charge(req.key, req.ticket, None)
            raise
        if req.key is not None:
            usage = rc.completion.usage
            spent = (0, 0) if rc.attempts and rc.attempts[0].outcome == "cache_hit" else (
                usage.prompt_tokens, usage.completion_tokens)
            self.charge(req.key, req.ticket, rc.model, *spent)
        return rc, text

    async def stream(self, request: Request, req: ChatRequest, start: float,
                     events: Callable[..., AsyncIterator[bytes]] | None = None) -> Any:
        """Start the routed answer and, once its first piece (or the whole answer) is there, stream it as
        ``events(req, task, queue, first, start)`` gives it (chat completion chunks by default). A client that
        disconnects cancels the answer's task; the events end there (see ``_EventStream``)."""
        queue: asyncio.Queue[Any] = asyncio.Queue()

        def deliver(model: str, text: str) -> None:
            if watch.gone:
                # text after the client left: the answer outlived its cancel, which it can lose (Python 3.11's
                # asyncio.wait_for returns the piece that arrived with the cancel and drops the cancel, as a local
                # model's stream waits for each token): cancel again, or the model generates on for nobody
                task.cancel()
                return
            queue.put_nowait((model, text))

        task = asyncio.ensure_future(self.answer(req, deliver))
        task.add_done_callback(lambda _: queue.put_nowait(_END))
        watch = _DisconnectWatch(request.receive, task.cancel)  # handed on to the response, which stops it
        try:
            first = await queue.get()
            if first is _END:
                if watch.gone:
                    raise _Disconnected()
                if task.exception() is not None:
                    # Nothing was sent yet: a plain HTTP error (an LLMError), or a bug for the server error handler.
                    raise task.exception()  # type: ignore[misc]
        except BaseException:
            watch.stop()
            task.cancel()
            raise
        return _EventStream((events or self.events)(req, task, queue, first, start), watch, task)

    def server_cut(self, what: str, label: str, task: asyncio.Future[Any]) -> dict[str, Any]:
        """A stream the server stopped (Ctrl-C, SIGTERM) before its answer ended, ``graceful_shutdown_s`` past or a
        second Ctrl-C: its answer cancelled, counted as ``shutdown``, and the error body its last event says (the
        stream then ends whole, without ``[DONE]``: the client must not take the text for a whole answer)."""
        task.cancel()
        return self.shutdown_error(what, label).body()

    def shutdown_error(self, what: str, label: str) -> ApiError:
        """An answer the server stopped before it ended, ``graceful_shutdown_s`` past or cut short by a second
        Ctrl-C (streamed or not): counted as ``shutdown``, logged with which, and the 503 ``server_shutdown`` error to
        send."""
        self.metrics.failed_request(label, "shutdown")
        grace = self.cfg.graceful_shutdown_s
        if self.forced():
            log.warning("%s %s: the gateway stopped before the answer ended (a second Ctrl-C stopped it at once, "
                        "without waiting the rest of graceful_shutdown_s %gs)", what, label, grace)
            return ApiError(503, "the gateway was stopped at once, before this answer ended; ask again",
                            "server_shutdown", kind="shutdown")
        log.warning("%s %s: the gateway stopped before the answer ended (graceful_shutdown_s %gs passed)", what,
                    label, grace)
        return ApiError(503, f"the gateway stopped before this answer ended (it gives answers in flight "
                        f"graceful_shutdown_s, {grace:g}s); ask again", "server_shutdown", kind="shutdown")

    def client_gone(self, what: str, label: str, task: asyncio.Future[Any]) -> None:
        """A stream's client went away: its answer is (or was just) cancelled, which stops the upstream request."""
        task.cancel()
        self.metrics.failed_request(label, "client_disconnected")
        log.info("%s %s: client disconnected mid-stream; upstream request cancelled", what, label)

    async def events(self, req: ChatRequest, task: asyncio.Future[Any], queue: asyncio.Queue[Any], first: Any,
                     start: float) -> AsyncIterator[bytes]:
        ident, created = new_id(), int(time.time())
        label, ttft, sent = req.model, None, False
        content = content_chunks(ident, created, label)
        held, cut = b"", False  # held: the last batch, when the answer ended with it: sent with the end, in one write
        try:
            async for batch, last in _batches(queue, first):
                out = b""
                if not sent:
                    ttft = time.perf_counter() - start
                    out = chunk(ident, created, label, {"role": "assistant", "content": ""})
                    sent = True
                out += b"".join([content(item[1]) for item in batch])
                if last:
                    held = out
                else:
                    yield out
            if task.cancelled():
                self.client_gone("chat", label, task)
                return
            exc = task.exception()
            if exc is not None:
                if isinstance(exc, LLMError):
                    error = self.llm_error(exc, limit=req.limit_field)
                    self.metrics.failed_request(label, error.kind)
                else:
                    error = self.internal(label, "chat", exc)
                log.warning("chat %s: stream ended by %s after text was sent: %s", label, error.code, error.message)
                yield held + b"event: error\ndata: " + json.dumps(error.body()).encode() + b"\n\n"
                return  # no [DONE]: the client must not take this for a whole answer
            rc, text = task.result()
            model, calls = rc.model, rc.completion.tool_calls
            if not sent:  # a model that does not stream, a best_of_n route, tools or a structured answer: all at once
                ttft = time.perf_counter() - start
                yield chunk(ident, created, label, {"role": "assistant", "content": None if calls and not text
                                                    else ""})
                if text or not calls:
                    yield chunk(ident, created, label, {"content": text})
            # the end in one write: the last text, the calls, the finish chunk, usage and [DONE]
            tail = [held, *(chunk(ident, created, label, {"tool_calls": [piece]}) for piece in call_deltas(calls))]
            tail.append(chunk(ident, created, label, {}, finish_of(rc.completion.finish_reason, calls),
                              meta=_meta(rc)))
            if req.include_usage:
                tail.append(chunk(ident, created, label, None, usage=usage_body(rc.completion.usage)))
            tail.append(DONE)
            yield b"".join(tail)
            seconds = time.perf_counter() - start
            self.metrics.answered_request(label, model, seconds, rc.fallbacks, ttft, tool_calls=len(calls))
            if log.isEnabledFor(logging.INFO):
                log.info("chat %s -> %s 200 stream %.3fs fallbacks=%d", label, model, seconds, rc.fallbacks)
        except asyncio.CancelledError:  # the request itself: the server stopping past its graceful shutdown
            cut = True
            yield held + b"event: error\ndata: " + json.dumps(self.server_cut("chat", label, task)).encode() + b"\n\n"
        except Exception as exc:  # a bug here: the stream ends with an error event (no [DONE]), counted
            cut = True
            task.cancel()
            yield b"event: error\ndata: " + json.dumps(self.internal(label, "chat", exc).body()).encode() + b"\n\n"
        finally:
            if not task.done() and not cut:  # closed before the end: stop the upstream request too
                self.client_gone("chat", label, task)

    async def responses(self, request: Request) -> Any:
        """``POST /v1/responses``: a Responses API request answered through the same route as a chat request
        (``responses.py`` maps the formats); the conversation is kept for a follow-up unless ``store: false``."""
        from starlette.responses import JSONResponse

        def parse(body: Any) -> tuple[ChatRequest, ResponsesRequest]:
            rreq = parse_responses(body, max_tokens_limit=self.cfg.max_tokens, max_messages=self.cfg.max_messages,
                                   history=self.store.get)
            return rreq.chat, rreq

        def reply(req: ChatRequest, rreq: ResponsesRequest, rc: RoutedCompletion, text: str) -> JSONResponse:
            calls, usage, finish = rc.completion.tool_calls, rc.completion.usage, rc.completion.finish_reason
            ident = new_response_id()
            body = response_body(ident, int(time.time()), rreq, output_items(text, calls, finish == "length"),
                                 finish, usage, _meta(rc))
            response = JSONResponse(body, headers={"x-agentlab-model": rc.model, "x-agentlab-route": req.model})
            if rreq.store:
                self.store.put(ident, [*rreq.conversation, answer_message(text, calls)])
            return response

        return await self.routed(request, "responses", parse, reply,
                                 lambda rreq: lambda *args: self.response_events(rreq, *args))

    async def response_events(self, rreq: ResponsesRequest, req: ChatRequest, task: asyncio.Future[Any],
                              queue: asyncio.Queue[Any], first: Any, start: float) -> AsyncIterator[bytes]:
        """The Responses SSE events of a streamed answer (see ``stream`` and ``events``, its chat twin)."""
        out = ResponseEvents(new_response_id(), int(time.time()), rreq)
        label, ttft, sent, cut = req.model, None, False, False
        try:
            async for batch, _ in _batches(queue, first):
                pending: list[bytes] = []
                if not sent:
                    ttft, sent = time.perf_counter() - start, True
                    pending += out.start()
                for item in batch:
                    pending += out.delta(item[1])
                yield b"".join(pending)
            if task.cancelled():
                self.client_gone("responses", label, task)
                return
            exc = task.exception()
            if exc is not None:
                if isinstance(exc, LLMError):
                    error = self.llm_error(exc, prompt="input", limit=req.limit_field)
                    self.metrics.failed_request(label, error.kind)
                else:
                    error = self.internal(label, "responses", exc)
                log.warning("responses %s: stream ended by %s after text was sent: %s", label, error.code,
                            error.message)
                yield out.error(error.body())
                return  # no response.completed: the client must not take this for a whole answer
            rc, text = task.result()
            if not sent:
                ttft = time.perf_counter() - start
                for event in out.start():
                    yield event
            calls, usage = rc.completion.tool_calls, rc.completion.usage
            for event in out.finish(text, calls, rc.completion.finish_reason, usage, _meta(rc)):
                yield event
            if rreq.store:
                self.store.put(out.ident, [*rreq.conversation, answer_message(text, calls)])
            seconds = time.perf_counter() - start
            self.metrics.answered_request(label, rc.model, seconds, rc.fallbacks, ttft, tool_calls=len(calls))
            if log.isEnabledFor(logging.INFO):
                log.info("responses %s -> %s 200 stream %.3fs fallbacks=%d", label, rc.model, seconds, rc.fallbacks)
        except asyncio.CancelledError:  # the request itself: the server stopping past its graceful shutdown
            cut = True
            yield out.error(self.server_cut("responses", label, task))
        except Exception as exc:  # a bug here: the stream ends with an error event (no response.completed), counted
            cut = True
            task.cancel()
            yield out.error(self.internal(label, "responses", exc).body())
        finally:
            if not task.done() and not cut:  # closed before the end: stop the upstream request too
                self.client_gone("responses", label, task)

    async def embeddings(self, request: Request) -> Any:
        """``POST /v1/embeddings`` on the first model of the name asked for: vectors of different models are not
        comparable, so there is no fallback. llama_cpp, hf and openai providers embed; others get a 400."""
        from starlette.responses import JSONResponse

        start = time.perf_counter()
        label, model = "-", ""  # model: the one asked, once known
        try:
            key = self.check_auth(request)
            ereq = parse_embeddings(await self.read_json(request))
            served = self.served(ereq.model)
            label = ereq.model
            model = self.first_model(served, key)
            mcfg = self.router.config.models[model]
            provider = self.router.providers[mcfg.provider]
            embed = getattr(provider, "embed", None)
            if embed is None:
                kind = self.router.config.providers[mcfg.provider].kind
                raise ApiError(400, f"model '{ereq.model[:100]}' does not support embeddings: it runs on provider "
                               f"'{mcfg.provider}' (kind {kind}); embeddings are served for llama_cpp, hf and "
                               "openai providers", "model_not_supported", param="model", kind="bad_request")
            params = GenParams(extra={"adapter": mcfg.params["adapter"]} if "adapter" in mcfg.params else {})
            ticket = self.admit_one(key, served, model, ereq.texts, 0)
            try:
                result = await _until_disconnect(request, embed(mcfg.model, ereq.texts, params,
                                                                self.router.config.timeout_s, ereq.dimensions))
            except BaseException:
                self.charge(key, ticket, None)
                raise
            self.charge(key, ticket, model, result.prompt_tokens)
            response = JSONResponse(embeddings_body(ereq.model, result, ereq.encoding),
                                    headers={"x-agentlab-model": model, "x-agentlab-route": label})
        except ApiError as exc:
            return self.refuse(label, exc)
        except LLMError as exc:
            error = self.llm_error(exc, [model] if model else None, prompt="input")
            if model and error.status == 400 and ereq.dimensions is not None and "dimensions" in exc.message:
                error.param = "dimensions"  # the model cannot give that size
            elif exc.kind == "context_length" and (too_long := re.search(r"\binput\[\d+\]", exc.message)):
                error.param = too_long.group()  # the input longer than the model embeds (providers name it so)
            return self.refuse(label, error)
        except _Disconnected:
            return self.disconnected(label)
        except Exception as exc:
            return self.internal_response(label, "embeddings", exc)
        self.metrics.answered_request(label, model, time.perf_counter() - start, 0)
        return response

    def disconnected(self, label: str) -> Any:
        from starlette.responses import Response

        self.metrics.failed_request(label, "client_disconnected")
        return Response(status_code=499)  # nobody reads it; uvicorn drops it on the closed connection

    async def models(self, request: Request) -> Any:
        from starlette.responses import JSONResponse

        try:
            self.check_auth(request)
        except ApiError as exc:
            return self.refuse("-", exc)
        name = request.path_params.get("name")
        if name is None:
            return JSONResponse({"object": "list", "data": [_model_entry(s) for s in self.catalog.served.values()]})
        if name not in self.catalog.served:
            return self.refuse("-", ApiError(404, f"model '{name[:100]}' is not served here", "model_not_found",
                                             param="model", kind="not_found"))
        return JSONResponse(_model_entry(self.catalog.served[name]))

    async def key_usage(self, request: Request) -> Any:
        """``GET /v1/keys/usage``: every key's spend, limits and refusals (names only, never a key); admin keys."""
        from starlette.responses import JSONResponse

        try:
            key = self.check_auth(request)
            if key is None:
                raise ApiError(404, "this gateway has no client keys (--keys FILE or --api-key-env)", "not_found",
                               kind="not_found")
            if not key.spec.admin:
                raise ApiError(403, f"key '{key.name}' is not an admin key (admin: true in the keys file)",
                               "permission_denied", etype="permission_error", kind="forbidden")
        except ApiError as exc:
            return self.refuse("-", exc)
        return JSONResponse({"object": "list", "data": self.keys.usage()})

    async def health(self, request: Request) -> Any:
        from starlette.responses import JSONResponse

        models = self.catalog.config.models
        open_ = [name for name in models if not self.router.available(name)]
        return JSONResponse({"status": "degraded" if open_ else "ok", "models": len(models), "circuit_open": open_})

    async def metrics_text(self, request: Request) -> Any:
        from prometheus_client import CONTENT_TYPE_LATEST
        from starlette.responses import Response

        try:
            self.check_auth(request)
        except ApiError as exc:
            return self.refuse("-", exc)
        return Response(self.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def unset_keys(router: Router) -> dict[str, str]:
    """The providers serving a model of ``router`` whose API key variable (``api_key_env``) is not set, by name: the
    variable. A provider passed in place of a configured one (tests) names no variable."""
    used = {mcfg.provider for mcfg in router.config.models.values()}
    found = {}
    for name, provider in router.providers.items():
        env = getattr(provider, "api_key_env", None)
        if name in used and env and not getenv(env):
            found[name] = env
    return found


def _model_entry(served: Served) -> dict[str, Any]:
    info: dict[str, Any] = {"kind": served.kind, "chain": served.chain}
    if served.kind == "route":
        info["strategy"] = served.strategy
    else:
        info["provider"] = served.provider
        if served.adapter:
            info["adapter"] = served.adapter
    return {"id": served.name, "object": "model", "created": 0, "owned_by": "agentlab", "agentlab": info}


def _prompt_field(what: str) -> str:
    """The field holding the prompt of a request to endpoint ``what`` (``chat``, ``responses``)."""
    return "input" if what == "responses" else "messages"


def _meta(rc: RoutedCompletion) -> dict[str, Any]:
    return {"route": rc.route, "model": rc.model, "fallbacks": rc.fallbacks,
            "attempts": [{"model": a.model, "outcome": a.outcome} for a in rc.attempts]}


def _prompt_bound(req: ChatRequest) -> int:
    """An upper bound of ``req``'s prompt tokens: tokens <= UTF-8 bytes for byte-level BPE vocabularies, plus the
    chat template's few tokens per message."""
    texts = json.dumps(req.messages, ensure_ascii=False) + json.dumps(req.params.tools or [], ensure_ascii=False)
    return len(texts.encode()) + 8 * len(req.messages) + 16


def _too_large(size: int, limit: int) -> ApiError:
    return ApiError(413, f"the request body has {size} bytes or more; this gateway accepts at most {limit} "
                    "(max_request_bytes)", "request_too_large", kind="too_large")


class _Disconnected(Exception):
    """The client closed the connection before its answer was ready."""


_SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no")]


class _DisconnectWatch:
    """Calls ``on_gone()`` once if the client disconnects, until ``stop()``: one plain task per request.

    What it replaces cost a quarter of a streamed request's CPU in the gateway: a task for the awaited work and one
    for the listener raced with ``asyncio.wait``, then Starlette's ``StreamingResponse``, which runs the body and
    another listener in an anyio task group and cancels the group at the end (anyio formats the task's repr for
    the cancel message). ``on_gone`` cancels the request's answer, so whatever waits on it ends."""

    __slots__ = ("task", "on_gone", "gone")

    def __init__(self, receive: Callable[[], Awaitable[Any]], on_gone: Callable[[], Any]) -> None:
        self.on_gone = on_gone
        self.gone = False
        self.task = asyncio.ensure_future(_disconnected(receive))
        self.task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future[None]) -> None:
        if not task.cancelled() and task.exception() is None:
            self.gone = True
            self.on_gone()

    def stop(self) -> None:
        self.task.remove_done_callback(self._done)
        self.task.cancel()


class _EventStream:
    """A streamed (SSE) response as an ASGI app, sent from the request's own task (Starlette's
    ``StreamingResponse`` without its task group: see ``_DisconnectWatch``). A disconnect cancels the answer, so the
    body's iterator ends; the server's sends after a disconnect are no-ops."""

    __slots__ = ("body", "watch", "task")

    def __init__(self, body: AsyncIterator[bytes], watch: _DisconnectWatch, task: asyncio.Future[Any]) -> None:
        self.body = body
        self.watch = watch
        self.task = task  # the answer: cancelled if this ends before it does (a server whose send raised)

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
            async for part in self.body:
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.watch.stop()
            await self.body.aclose()  # type: ignore[attr-defined]
            if not self.task.done():
                self.task.cancel()


async def _batches(queue: asyncio.Queue[Any], first: Any) -> AsyncIterator[tuple[list[Any], bool]]:
    """A stream's pieces from ``first`` on, in batches of those already queued when the last batch went out (each
    batch is one write: a write is a syscall), until ``_END``; with each batch, whether ``_END`` came right after
    it (the answer is done: the caller can send that batch with the end, in one write)."""
    item = first
    while item is not _END:
        batch = [item]
        while not queue.empty():
            item = queue.get_nowait()
            if item is _END:
                break
            batch.append(item)
        else:
            item = None
        yield batch, item is _END
        if item is None:
            item = await queue.get()


async def _until_disconnect(request: Request, awaitable: Any) -> Any:
    """Await ``awaitable`` unless the client disconnects first; then cancel it and raise ``_Disconnected``."""
    work = asyncio.ensure_future(awaitable)
    watch = _DisconnectWatch(request.receive, work.cancel)
    try:
        return await work  # cancelling this task cancels the work too
    except asyncio.CancelledError:
        if watch.gone and not asyncio.current_task().cancelling():  # type: ignore[union-attr]
            raise _Disconnected() from None
        raise
    finally:
        watch.stop()


async def _disconnected(receive: Callable[[], Awaitable[Any]]) -> None:
    while True:  # after the body, the ASGI server's receive() waits until the client disconnects
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def build_app(handler: _Handler) -> Any:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def server_error(request: Request, exc: Exception) -> Any:  # a bug outside the endpoints' own handling
        return handler.internal_response("-", request.url.path, exc)

    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        status = getattr(exc, "status_code", 404)
        return JSONResponse(error_body(f"{request.method} {request.url.path}: no such endpoint here (POST "
                                       "/v1/chat/completions, /v1/responses, /v1/embeddings, /v1/completions, GET "
                                       "/v1/models, /health, /metrics)",
                                       "invalid_request_error", "not_found" if status == 404 else "method_not_allowed"),
                            status_code=status)

    routes = [
        Route("/v1/chat/completions", handler.chat, methods=["POST"]),
        Route("/chat/completions", handler.chat, methods=["POST"]),  # clients whose base_url lacks /v1
        Route("/v1/completions", handler.completions, methods=["POST"]),
        Route("/completions", handler.completions, methods=["POST"]),
        Route("/v1/responses", handler.responses, methods=["POST"]),
        Route("/responses", handler.responses, methods=["POST"]),
        Route("/v1/embeddings", handler.embeddings, methods=["POST"]),
        Route("/embeddings", handler.embeddings, methods=["POST"]),
        Route("/v1/models", handler.models, methods=["GET"]),
        Route("/models", handler.models, methods=["GET"]),
        Route("/v1/models/{name:path}", handler.models, methods=["GET"]),
        Route("/health", handler.health, methods=["GET"]),
        Route("/metrics", handler.metrics_text, methods=["GET"]),
        Route("/v1/keys/usage", handler.key_usage, methods=["GET"]),
    ]
    app = Starlette(routes=routes, exception_handlers={Exception: server_error, 404: not_found, 405: not_found})
    in_flight = handler.metrics.in_flight

    async def counting(scope: Any, receive: Any, send: Any) -> None:
        """``agentlab_requests_in_flight``: each POST (a request to answer) from its first byte to its response's
        last, a stream's included (an endpoint returns a stream before it is sent)."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return await app(scope, receive, send)
        in_flight.inc()
        try:
            await app(scope, receive, send)
        finally:
            in_flight.dec()

    return counting
