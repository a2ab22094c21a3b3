"""OpenAIProvider over real loopback HTTP: the scripted server for OpenAI behaviour, a raw socket server for the wire.

No pytest-asyncio: each test drives its own coroutine with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from typing import Any, TypeVar

import pytest

from agentlab.core.errors import LLMError
from agentlab.core.llm.providers import openai as openai_provider
from agentlab.core.llm.providers.openai import OpenAIProvider, parse_retry_after
from agentlab.core.llm.types import Completion, GenParams, Provider, StreamDelta
from agentlab.testing.server import Reply, ScriptedServer

T = TypeVar("T")


@pytest.fixture(autouse=True, params=["lean", "httpx"])
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs on both transports: the lean HTTP/1.1 client (chat completions wherever it applies) and httpx
    (where it does not: a proxy in the environment, httptools missing)."""
    if request.param == "httpx":
        monkeypatch.setattr(openai_provider, "usable_for", lambda base_url: False)
    else:  # a proxy in the environment would quietly send both runs through httpx
        for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
            monkeypatch.delenv(name, raising=False)
        assert OpenAIProvider("t", "http://127.0.0.1:8000/v1")._lean
    return str(request.param)

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say hello to me"}]
PROMPT_TOKENS = 6  # the scripted server counts words: "be brief" + "say hello to me"
FAKE_KEY = "sk-or-v1-LEAKCANARY-0123456789abcdef"


def run(fn: Callable[[OpenAIProvider], Awaitable[T]], base_url: str, **kwargs: Any) -> T:
    """Run ``fn(provider)`` in a fresh loop with a fresh provider, closing its pool afterwards."""

    async def main() -> T:
        provider = OpenAIProvider("test", base_url, **kwargs)
        try:
            return await fn(provider)
        finally:
            await provider.aclose()

    return asyncio.run(main())


async def collect(provider: OpenAIProvider, model: str, timeout_s: float = 5.0,
                  params: GenParams | None = None) -> list[StreamDelta | Completion]:
    return [item async for item in provider.stream(model, MESSAGES, params or GenParams(), timeout_s)]


def gen_error(base_url: str, model: str, timeout_s: float = 5.0, **kwargs: Any) -> LLMError:
    with pytest.raises(LLMError) as info:
        run(lambda p: p.generate(model, MESSAGES, GenParams(), timeout_s), base_url, **kwargs)
    return info.value


def stream_error(base_url: str, model: str, timeout_s: float = 5.0, **kwargs: Any) -> LLMError:
    with pytest.raises(LLMError) as info:
        run(lambda p: collect(p, model, timeout_s), base_url, **kwargs)
    return info.value


def closed_port_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now: connect() is refused
    return f"http://127.0.0.1:{port}/v1"


# -- a raw HTTP server, for what the scripted server does not do (headers seen, SSE comments, trickled bodies) -----


class RawServer:
    """Answers every request with ``pieces`` [(delay_s, bytes), ...] then closes; records request heads."""

    def __init__(self, pieces: list[tuple[float, bytes]]) -> None:
        self.pieces = pieces
        self.heads: list[bytes] = []
        self.base_url = ""
        self._server: asyncio.base_events.Server | None = None

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.base_url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            self.heads.append(head)
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            for delay, data in self.pieces:
                if delay:
                    await asyncio.sleep(delay)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def sse_response(body: bytes) -> list[tuple[float, bytes]]:
    # Close-delimited body: EOF is a clean end, so a missing [DONE] is the only sign of a cut.
    return [(0, b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n" + body)]


# -- generate ------------------------------------------------------------------------------------------------------


def test_provider_protocol() -> None:
    provider = OpenAIProvider("x", "http://127.0.0.1:1/v1/")
    assert isinstance(provider, Provider)
    assert provider.base_url == "http://127.0.0.1:1/v1"
    assert provider.supports_stream is True


def test_generate_text_usage_latency(srv: ScriptedServer) -> None:
    srv.script("m", [Reply(text="hello there friend", delay_s=0.05, finish_reason="length")])
    out = run(lambda p: p.generate("m", MESSAGES, GenParams(), 5), srv.base_url)
    assert out.text == "hello there friend"
    assert out.model == "m"
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (PROMPT_TOKENS, 3)
    assert 0.05 <= out.latency_s < 2
    assert out.ttft_s is None
    assert out.finish_reason == "length"
    assert out.raw is not None and out.raw["object"] == "chat.completion"


def test_params_and_json_schema_in_request(srv: ScriptedServer) -> None:
    srv.default("m", Reply(text='{"a": 1}'))
    schema = {"name": "answer", "schema": {"type": "object", "properties": {"a": {"type": "integer"}}}}
    params = GenParams(temperature=0.2, max_tokens=50, top_p=0.9, stop=["\n\n"], seed=7, json_schema=schema,
                       extra={"presence_penalty": 0.5, "stream": True})
    run(lambda p: p.generate("m", MESSAGES, params, 5), srv.base_url)
    run(lambda p: p.generate("m", MESSAGES, GenParams(), 5), srv.base_url)
    full, bare = srv.requests
    assert full["messages"] == MESSAGES
    assert (full["temperature"], full["max_tokens"], full["top_p"], full["stop"], full["seed"]) == (
        0.2, 50, 0.9, ["\n\n"], 7)
    assert full["presence_penalty"] == 0.5
    assert "stream" not in full  # extra cannot turn a plain call into SSE
    # strict is off by default: OpenAI rejects strict schemas with optional fields, as plain pydantic models have
    assert full["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "answer", "schema": schema["schema"], "strict": False}}
    assert set(bare) - {"_received_at"} == {"model", "messages"}  # unset params are left to the server


def test_authorization_header_only_with_key() -> None:
    ok = b'{"choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]}'
    pieces = [(0, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
               b"Connection: close\r\n\r\n%s" % (len(ok), ok))]

    async def main() -> tuple[list[bytes], Completion]:
        async with RawServer(pieces) as raw:
            with_key = OpenAIProvider("k", raw.base_url, api_key="sk-abc", headers={"X-Title": "agentlab"})
            without = OpenAIProvider("n", raw.base_url)
            out = await with_key.generate("m", MESSAGES, GenParams(), 5)
            await without.generate("m", MESSAGES, GenParams(), 5)
            await with_key.aclose()
            await without.aclose()
            return raw.heads, out

    heads, out = asyncio.run(main())
    assert b"authorization: bearer sk-abc\r\n" in heads[0].lower()
    assert b"x-title: agentlab" in heads[0].lower()
    assert b"authorization" not in heads[1].lower()
    usage = out.usage  # no usage block: the prompt unknown, the completion estimated ("hi": 1 token), not reported
    assert (usage.prompt_tokens, usage.completion_tokens, usage.reported) == (0, 1, False)


def test_total_deadline_on_trickled_body() -> None:
    """Each byte arrives well within the timeout, the whole answer does not: only a total deadline catches that."""
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 40\r\nConnection: close\r\n\r\n"
    pieces = [(0, head)] + [(0.1, b" ")] * 40

    async def main() -> tuple[LLMError, float]:
        async with RawServer(pieces) as raw:
            provider = OpenAIProvider("t", raw.base_url)
            start = time.perf_counter()
            try:
                with pytest.raises(LLMError) as info:
                    await provider.generate("m", MESSAGES, GenParams(), 0.5)
            finally:
                await provider.aclose()
            return info.value, time.perf_counter() - start

    err, elapsed = asyncio.run(main())
    assert err.kind == "timeout"
    assert elapsed < 1.5


def test_concurrent_requests_share_the_pool(srv: ScriptedServer) -> None:
    srv.default("m", Reply(text="hi", delay_s=0.2))

    async def many(p: OpenAIProvider) -> list[Completion]:
        return await asyncio.gather(*(p.generate("m", MESSAGES, GenParams(), 5) for _ in range(32)))

    start = time.perf_counter()
    outs = run(many, srv.base_url)
    elapsed = time.perf_counter() - start
    assert [o.text for o in outs] == ["hi"] * 32
    assert elapsed < 1.5, f"32 requests of 0.2s took {elapsed:.2f}s: they did not run concurrently"


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_client_follows_the_event_loop(srv: ScriptedServer) -> None:
    """The pool is bound to a loop; a provider reused under a new loop must not hand it a stale pool."""
    srv.default("m", Reply(text="hi"))
    provider = OpenAIProvider("t", srv.base_url)
    for _ in range(2):
        assert asyncio.run(provider.generate("m", MESSAGES, GenParams(), 5)).text == "hi"
    asyncio.run(provider.aclose())  # a pool from a finished loop cannot be closed, only dropped
    gc.collect()  # its sockets warn when collected: let that happen here, under this test's filter


def test_list_models(srv: ScriptedServer) -> None:
    srv.default("b", Reply())
    srv.script("a", [Reply()])
    assert run(lambda p: p.list_models(), srv.base_url) == ["a", "b"]
    with pytest.raises(LLMError) as info:
        run(lambda p: p.list_models(), closed_port_url())
    assert info.value.kind == "connection"


# -- stream --------------------------------------------------------------------------------------------------------


def test_stream_deltas_ttft_and_usage(srv: ScriptedServer) -> None:
    text = "one two three four five"
    srv.script("m", [Reply(text=text, delay_s=0.05, chunk_delay_s=0.02)])
    items = run(lambda p: collect(p, "m"), srv.base_url)
    *deltas, final = items
    assert all(isinstance(d, StreamDelta) for d in deltas) and len(deltas) == 5
    assert "".join(d.text for d in deltas) == text  # type: ignore[union-attr]
    assert isinstance(final, Completion)
    assert final.text == text
    assert final.ttft_s is not None and 0.05 <= final.ttft_s < final.latency_s
    assert final.latency_s - final.ttft_s >= 4 * 0.02 * 0.8
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (PROMPT_TOKENS, 5)
    assert final.finish_reason == "stop"
    request = srv.requests[-1]
    assert request["stream"] is True and request["stream_options"] == {"include_usage": True}


def test_stream_sse_details_without_usage() -> None:
    """Comments, keepalives, CRLF, a role-only first delta, no usage chunk: usage falls back to the chunk count."""
    body = (b": OPENROUTER PROCESSING\r\n\r\n"
            b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\r\n\r\n'
            b'data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n'
            b": keepalive\n\n"
            b'data:{"choices":[{"delta":{"content":"lo"},"finish_reason":"stop"}]}\n\n'
            b"data: [DONE]\n\n")

    async def main() -> list[StreamDelta | Completion]:
        async with RawServer(sse_response(body)) as raw:
            provider = OpenAIProvider("t", raw.base_url)
            try:
                return await collect(provider, "m")
            finally:
                await provider.aclose()

    *deltas, final = asyncio.run(main())
    # the pieces of one read go on as one delta (the raw server sends the whole body in one write)
    assert "".join(d.text for d in deltas) == "Hello" and all(d.text for d in deltas)  # type: ignore[union-attr]
    assert isinstance(final, Completion)
    assert final.text == "Hello" and final.finish_reason == "stop"
    assert (final.usage.prompt_tokens, final.usage.completion_tokens, final.usage.reported) == (0, 2, False)


@pytest.mark.parametrize("body", [
    b'data: {"choices":[{"delta":{"content":"Hel"}}]}\n\n',  # clean EOF, no finish, no [DONE]
    b'data: {"choices":[{"delta":{"content":"Hel"},"finish_reason":"stop"}]}\n\n',  # finished but no [DONE]
], ids=["eof", "eof-after-finish"])
def test_stream_clean_eof_without_done_is_cut(body: bytes) -> None:
    async def main() -> LLMError:
        async with RawServer(sse_response(body)) as raw:
            provider = OpenAIProvider("t", raw.base_url)
            try:
                with pytest.raises(LLMError) as info:
                    await collect(provider, "m")
            finally:
                await provider.aclose()
            return info.value

    assert asyncio.run(main()).kind == "stream_cut"


def test_stream_cut_mid_way(srv: ScriptedServer) -> None:
    srv.script("m", [Reply(text="one two three four", cut_after_chunks=2)])
    seen: list[str] = []

    async def consume(p: OpenAIProvider) -> None:
        async for item in p.stream("m", MESSAGES, GenParams(), 5):
            assert isinstance(item, StreamDelta), "a cut stream must not end with a Completion"
            seen.append(item.text)

    with pytest.raises(LLMError) as info:
        run(consume, srv.base_url)
    assert info.value.kind == "stream_cut"
    assert "".join(seen) == "one two "  # the pieces before the cut (one delta a read)


def test_stream_total_deadline_spans_chunks(srv: ScriptedServer) -> None:
    """Every chunk arrives within the timeout; the stream as a whole does not."""
    srv.script("m", [Reply(text=" ".join(["w"] * 20), chunk_delay_s=0.05)])
    start = time.perf_counter()
    err = stream_error(srv.base_url, "m", timeout_s=0.3)
    assert err.kind == "timeout"
    assert time.perf_counter() - start < 1.5


def test_stream_early_break_releases(srv: ScriptedServer) -> None:
    srv.default("m", Reply(text="one two three four", chunk_delay_s=0.01))

    async def first_then_again(p: OpenAIProvider) -> str:
        gen = p.stream("m", MESSAGES, GenParams(), 5)
        async for _ in gen:
            break
        await gen.aclose()  # type: ignore[attr-defined]
        *_, final = await collect(p, "m")
        assert isinstance(final, Completion)
        return final.text

    assert run(first_then_again, srv.base_url) == "one two three four"


def test_stream_plain_json_answer_is_accepted() -> None:
    """Some servers ignore "stream": true and send one chat completion; that is an answer, not an error."""
    ok = b'{"choices": [{"message": {"content": "hi there"}, "finish_reason": "stop"}], "usage": ' \
         b'{"prompt_tokens": 3, "completion_tokens": 2}}'
    pieces = [(0, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
               b"Connection: close\r\n\r\n%s" % (len(ok), ok))]

    async def main() -> list[StreamDelta | Completion]:
        async with RawServer(pieces) as raw:
            provider = OpenAIProvider("t", raw.base_url)
            try:
                return await collect(provider, "m")
            finally:
                await provider.aclose()

    delta, final = asyncio.run(main())
    assert isinstance(delta, StreamDelta) and delta.text == "hi there"
    assert isinstance(final, Completion) and final.usage.completion_tokens == 2


# -- errors --------------------------------------------------------------------------------------------------------

STATUS_CASES = [
    (500, "server_error"),
    (502, "server_error"),
    (503, "server_error"),
    (400, "bad_request"),
    (422, "bad_request"),
    (401, "auth"),
    (403, "auth"),
]


@pytest.mark.parametrize("mode", ["generate", "stream"])
@pytest.mark.parametrize(("status", "kind"), STATUS_CASES)
def test_status_kinds(srv: ScriptedServer, mode: str, status: int, kind: str) -> None:
    srv.script("m", [Reply(status=status)])
    err = (gen_error if mode == "generate" else stream_error)(srv.base_url, "m", api_key=FAKE_KEY)
    assert (err.kind, err.status, err.model) == (kind, status, "m")
    assert f"HTTP {status}" in str(err)
    assert err.hint


@pytest.mark.parametrize("mode", ["generate", "stream"])
def test_rate_limited_retry_after(srv: ScriptedServer, mode: str) -> None:
    srv.script("m", [Reply(status=429, headers={"Retry-After": "2"})])
    err = (gen_error if mode == "generate" else stream_error)(srv.base_url, "m")
    assert (err.kind, err.status, err.retry_after) == ("rate_limited", 429, 2.0)
    assert err.retryable
    assert "rate limit reached" in str(err)  # the server's own words


def test_parse_retry_after_forms() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after({"Retry-After": "2"}) == 2.0
    assert parse_retry_after({"Retry-After": formatdate(now + 30, usegmt=True)}, now=now) == pytest.approx(30, abs=1)
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"x-ratelimit-reset": str(int((now + 10) * 1000))}, now=now) == pytest.approx(10)
    assert parse_retry_after({"x-ratelimit-reset-requests": "1m30s", "x-ratelimit-reset-tokens": "250ms"}) == 90
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None


def test_server_message_included_and_truncated(srv: ScriptedServer) -> None:
    srv.script("m", [Reply(status=500, text="upstream exploded"), Reply(status=400, text="x" * 2000)])
    assert "upstream exploded" in str(gen_error(srv.base_url, "m"))
    long = gen_error(srv.base_url, "m")
    assert long.kind == "bad_request"
    assert 300 <= len(str(long)) < 400


def test_auth_hints(srv: ScriptedServer) -> None:
    srv.default("m", Reply(status=401))
    no_key = gen_error(srv.base_url, "m")
    assert no_key.kind == "auth" and "no API key was configured" in (no_key.hint or "")
    unset_env = gen_error(srv.base_url, "m", api_key_env="OPENROUTER_API_KEY")
    assert "OPENROUTER_API_KEY is not set" in (unset_env.hint or "")
    bad_key = gen_error(srv.base_url, "m", api_key="sk-bad", api_key_env="OPENROUTER_API_KEY")
    assert "rejected the API key" in (bad_key.hint or "") and "OPENROUTER_API_KEY" in (bad_key.hint or "")


@pytest.mark.parametrize("mode", ["generate", "stream"])
def test_unknown_model_not_found(srv: ScriptedServer, mode: str) -> None:
    err = (gen_error if mode == "generate" else stream_error)(srv.base_url, "no-such-model")
    assert (err.kind, err.status) == ("not_found", 404)
    assert "no-such-model" in str(err) and not err.retryable


@pytest.mark.parametrize("mode", ["generate", "stream"])
def test_invalid_json_is_malformed(srv: ScriptedServer, mode: str) -> None:
    srv.script("m", [Reply(invalid_json=True)])
    err = (gen_error if mode == "generate" else stream_error)(srv.base_url, "m")
    assert err.kind == "malformed"


def test_no_choices_is_malformed_and_error_payload_is_mapped() -> None:
    async def answer(body: bytes) -> LLMError:
        pieces = [(0, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                   b"Connection: close\r\n\r\n%s" % (len(body), body))]
        async with RawServer(pieces) as raw:
            provider = OpenAIProvider("t", raw.base_url)
            try:
                with pytest.raises(LLMError) as info:
                    await provider.generate("m", MESSAGES, GenParams(), 5)
            finally:
                await provider.aclose()
            return info.value

    assert asyncio.run(answer(b'{"id": "x", "choices": []}')).kind == "malformed"
    err = asyncio.run(answer(b'{"error": {"message": "provider overloaded", "code": 502}}'))
    assert (err.kind, err.status) == ("server_error", 502) and "provider overloaded" in str(err)


@pytest.mark.parametrize("mode", ["generate", "stream"])
@pytest.mark.parametrize("reply", [Reply(empty=True), Reply(text="  \n ")], ids=["empty", "whitespace"])
def test_empty_answer(srv: ScriptedServer, mode: str, reply: Reply) -> None:
    srv.script("m", [reply])
    err = (gen_error if mode == "generate" else stream_error)(srv.base_url, "m")
    assert err.kind == "empty" and err.retryable


@pytest.mark.parametrize("mode", ["generate", "stream"])
def test_timeout(srv: ScriptedServer, mode: str) -> None:
    srv.script("m", [Reply(delay_s=1.0)])
    start = time.perf_counter()
    err = (gen_error if mode == "generate" else stream_error)(srv.base_url, "m", timeout_s=0.2)
    elapsed = time.perf_counter() - start
    assert err.kind == "timeout" and err.retryable
    assert "0.2s" in str(err)
    assert elapsed < 0.8


@pytest.mark.parametrize("mode", ["generate", "stream"])
def test_connection_refused(mode: str) -> None:
    err = (gen_error if mode == "generate" else stream_error)(closed_port_url(), "m")
    assert err.kind == "connection" and err.retryable
    assert err.status is None and "API key" not in (err.hint or "")
    # offline with its key's variable unset: no 401 would ever name it, so the connection error's hint does
    unset = (gen_error if mode == "generate" else stream_error)(closed_port_url(), "m", api_key_env="OPENAI_API_KEY")
    assert "and OPENAI_API_KEY, its API key, is not set" in (unset.hint or "")


def test_unsendable_requests(srv: ScriptedServer) -> None:
    """Failures before any byte is sent still come out as LLMError with a kind, never as a raw exception."""
    err = gen_error("http://127.0.0.1:99999/v1", "m")  # anyio raises an ExceptionGroup(OverflowError) here
    assert err.kind == "connection" and "port" in str(err)
    assert gen_error("localhost:8000/v1", "m").kind == "connection"  # no scheme
    nan = GenParams(temperature=float("nan"))
    for call in (lambda p: p.generate("m", MESSAGES, nan, 5), lambda p: collect(p, "m", params=nan)):
        with pytest.raises(LLMError) as info:
            run(call, srv.base_url)
        assert info.value.kind == "bad_request" and not info.value.retryable
    assert srv.requests == []


# -- the key never leaks -------------------------------------------------------------------------------------------


def test_api_key_never_leaks(srv: ScriptedServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx and httpcore included
    statuses = [Reply(status=s, headers={"Retry-After": "1"}) for s in (500, 429, 401, 403, 400)]
    generate_replies = [*statuses, Reply(invalid_json=True), Reply(empty=True), Reply(delay_s=1)]
    stream_replies = [*statuses, Reply(invalid_json=True), Reply(empty=True), Reply(text="a b c", cut_after_chunks=1),
                      Reply(delay_s=1)]
    # A server that echoes the key back in its error text must not get it into ours.
    echo = Reply(status=400, text=f"bad header Authorization: Bearer {FAKE_KEY}")
    srv.script("m", [*generate_replies, *stream_replies, echo, Reply(text="fine")])
    errors: list[LLMError] = []

    async def every_path(p: OpenAIProvider) -> str:
        for i in range(len(generate_replies)):
            with pytest.raises(LLMError) as info:
                await p.generate("m", MESSAGES, GenParams(), 0.2 if i == len(generate_replies) - 1 else 5)
            errors.append(info.value)
        for i in range(len(stream_replies)):
            with pytest.raises(LLMError) as info:
                await collect(p, "m", 0.2 if i == len(stream_replies) - 1 else 5)
            errors.append(info.value)
        for model in ("m", "nope"):  # the echo, then an unknown model
            with pytest.raises(LLMError) as info:
                await p.generate(model, MESSAGES, GenParams(), 5)
            errors.append(info.value)
        ok = await p.generate("m", MESSAGES, GenParams(), 5)
        return repr(p) + repr(ok)

    shown = run(every_path, srv.base_url, api_key=FAKE_KEY, api_key_env="OPENROUTER_API_KEY")
    refused = OpenAIProvider("t", closed_port_url(), api_key=FAKE_KEY)
    for coro in (refused.generate("m", MESSAGES, GenParams(), 5), collect(refused, "m")):
        with pytest.raises(LLMError) as info:
            asyncio.run(coro)
        errors.append(info.value)

    kinds = {e.kind for e in errors}
    assert kinds >= {"server_error", "rate_limited", "auth", "bad_request", "malformed", "empty", "stream_cut",
                     "timeout", "not_found", "connection"}
    assert len(errors) == 21
    for exc in errors:
        for text in (str(exc), repr(exc), exc.hint or "", repr(exc.__cause__), str(exc.__cause__)):
            assert FAKE_KEY not in text
    assert "***" in str(errors[-4])  # the echoed key was scrubbed
    assert FAKE_KEY not in shown + repr(refused)
    assert FAKE_KEY not in caplog.text
    assert any(r.name.startswith("agentlab") for r in caplog.records)  # our debug lines were exercised too


def test_usage_keeps_the_prompt_tokens_the_server_read_from_its_cache() -> None:
    from agentlab.core.llm.providers.openai import usage_of

    cached = usage_of({"prompt_tokens": 2006, "completion_tokens": 300,
                       "prompt_tokens_details": {"cached_tokens": 1920}})
    assert (cached.prompt_tokens, cached.completion_tokens, cached.cached_tokens) == (2006, 300, 1920)
    assert usage_of({"prompt_tokens": 5, "completion_tokens": 1, "prompt_tokens_details": None}).cached_tokens == 0
