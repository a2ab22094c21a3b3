"""The lean HTTP/1.1 client under the OpenAI provider (``providers/http1.py``), on raw loopback servers: what the
provider's own tests (run on both transports) do not show: connection reuse, a stale keep-alive connection, the
pool's limit, a request given up closing its connection, chunked and gzip bodies, when httpx is used instead."""

from __future__ import annotations

import asyncio
import gzip
import json
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from agentlab.core.llm.providers import http1
from agentlab.core.llm.providers.http1 import Http1Pool
from agentlab.core.llm.providers.openai import OpenAIProvider
from agentlab.core.llm.types import GenParams

PAUSE = b"<pause>"
ANSWER = json.dumps({"choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]})
MESSAGES = [{"role": "user", "content": "hello"}]


def ok(body: bytes = ANSWER.encode(), extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (
        len(body), extra, body)


class Server:
    """A keep-alive HTTP/1.1 server: ``answer(n)`` gives the raw response to the n-th request of a connection
    (None: close the connection without answering). Counts connections and requests."""

    def __init__(self, answer: Callable[[int], bytes | None], delay_s: float = 0.0,
                 close_idle_after_s: float | None = None, after: bytes = b"", tls: ssl.SSLContext | None = None
                 ) -> None:
        self.answer, self.delay_s, self.tls = answer, delay_s, tls
        self.close_idle_after_s, self.after = close_idle_after_s, after
        self.connections = 0
        self.requests = 0
        self.active = 0
        self.peak = 0
        self.heads: list[bytes] = []
        self.base_url = ""

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.tls)
        port = self._server.sockets[0].getsockname()[1]
        # TLS: the name its test certificate is for
        self.base_url = f"https://localhost:{port}/v1" if self.tls else f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        n = 0
        try:
            while True:
                if self.close_idle_after_s is not None and n:
                    try:
                        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.close_idle_after_s)
                    except TimeoutError:
                        break  # the keep-alive ran out
                else:
                    head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                await reader.readexactly(length)
                self.requests += 1
                self.active += 1
                self.peak = max(self.peak, self.active)
                try:
                    if self.delay_s:
                        await asyncio.sleep(self.delay_s)
                    data = self.answer(n)
                finally:
                    self.active -= 1
                n += 1
                if data is None:
                    break
                for i, piece in enumerate(data.split(PAUSE)):  # PAUSE: the pieces arrive in separate reads
                    if i:
                        await asyncio.sleep(0.05)
                    writer.write(piece)
                    await writer.drain()
                if b"\r\nConnection: close\r\n" in data.split(b"\r\n\r\n", 1)[0] + b"\r\n":
                    await asyncio.sleep(0.2)  # as the response said, the connection ends; the client must not wait
                    break
                if self.after:
                    await asyncio.sleep(0.02)
                    writer.write(self.after)  # bytes nobody asked for, on the idle connection
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):  # SSLError: a client refused our cert
            pass
        finally:
            writer.close()


def run(main: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(main())


async def generate(provider: OpenAIProvider, timeout_s: float = 5.0) -> str:
    return (await provider.generate("m", MESSAGES, GenParams(), timeout_s)).text


def test_the_lean_client_serves_plain_http_and_https_without_a_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert http1.usable_for("http://127.0.0.1:8000/v1") and http1.usable_for("https://api.example.com/v1")
    assert not http1.usable_for("http://user:pw@127.0.0.1:8000/v1")  # basic auth in the URL: httpx sends it
    assert not http1.usable_for("http://127.0.0.1:99999/v1")  # bad port: httpx reports it
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert not http1.usable_for("https://api.example.com/v1")  # the proxy applies: httpx honours it
    monkeypatch.setenv("NO_PROXY", "api.example.com")
    assert http1.usable_for("https://api.example.com/v1")
    assert OpenAIProvider("p", "https://other.example.com/v1")._lean is False


def test_sequential_requests_reuse_one_connection() -> None:
    async def main() -> tuple[list[str], int, int]:
        async with Server(lambda n: ok()) as server:
            provider = OpenAIProvider("p", server.base_url)
            assert provider._lean
            texts = [await generate(provider) for _ in range(5)]
            await provider.aclose()
            return texts, server.connections, server.requests

    texts, connections, requests = run(main)
    assert texts == ["hi"] * 5 and (connections, requests) == (1, 5)


def test_an_idle_connection_the_server_closed_is_not_used() -> None:
    """A keep-alive that ran out on the server's side (it closed the idle connection): the next request goes out on
    a new connection, and nothing fails."""
    async def main() -> tuple[list[str], int, int]:
        async with Server(lambda n: ok() if n == 0 else None, close_idle_after_s=0.02) as server:
            provider = OpenAIProvider("p", server.base_url)
            texts = []
            for _ in range(3):
                texts.append(await generate(provider))
                await asyncio.sleep(0.1)  # the server closes the idle connection meanwhile
            await provider.aclose()
            return texts, server.connections, server.requests

    texts, connections, requests = run(main)
    assert texts == ["hi"] * 3 and (connections, requests) == (3, 3)


def test_a_request_the_server_took_and_dropped_is_not_sent_again() -> None:
    """The server read the request on a reused connection and closed it without an answer: a connection error (as
    with httpx), never a second POST the upstream might also generate and bill."""
    from agentlab.core.errors import LLMError

    async def main() -> tuple[str, LLMError, int]:
        async with Server(lambda n: ok() if n == 0 else None) as server:
            provider = OpenAIProvider("p", server.base_url)
            first = await generate(provider)
            with pytest.raises(LLMError) as info:
                await generate(provider)
            await provider.aclose()
            return first, info.value, server.requests

    first, err, requests = run(main)
    assert first == "hi" and err.kind == "connection" and requests == 2


def test_a_fresh_connection_closed_without_an_answer_is_a_connection_error_not_retried() -> None:
    from agentlab.core.errors import LLMError

    async def main() -> tuple[LLMError, int]:
        async with Server(lambda n: None) as server:
            provider = OpenAIProvider("p", server.base_url)
            with pytest.raises(LLMError) as info:
                await generate(provider)
            await provider.aclose()
            return info.value, server.requests

    err, requests = run(main)
    assert err.kind == "connection" and requests == 1


def test_the_pool_holds_at_most_max_connections_and_queues_the_rest() -> None:
    async def main() -> tuple[list[str], int, int]:
        async with Server(lambda n: ok(), delay_s=0.05) as server:
            provider = OpenAIProvider("p", server.base_url, max_connections=3)
            texts = await asyncio.gather(*(generate(provider) for _ in range(12)))
            await provider.aclose()
            return texts, server.connections, server.peak

    texts, connections, peak = run(main)
    assert texts == ["hi"] * 12 and connections == 3 and peak == 3


def test_a_request_given_up_mid_answer_closes_its_connection() -> None:
    from agentlab.core.errors import LLMError

    slow = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{"

    async def main() -> tuple[str, list[str], int]:
        answers = iter([slow, ok()])
        async with Server(lambda n: next(answers)) as server:
            provider = OpenAIProvider("p", server.base_url)
            with pytest.raises(LLMError) as info:
                await generate(provider, timeout_s=0.3)  # the body never completes
            after = [await generate(provider)]
            await provider.aclose()
            return info.value.kind, after, server.connections

    kind, after, connections = run(main)
    # the half-read connection is not reused: the next request gets its answer on a new one
    assert kind == "timeout" and after == ["hi"] and connections == 2


def test_chunked_and_gzip_bodies() -> None:
    body = ANSWER.encode()
    chunked = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 7]), body[i:i + 7]) for i in range(0, len(body), 7))
               + b"0\r\n\r\n")
    zipped = ok(gzip.compress(body), b"Content-Encoding: gzip\r\n")

    async def main() -> list[str]:
        answers = iter([chunked, zipped, ok()])
        async with Server(lambda n: next(answers)) as server:
            provider = OpenAIProvider("p", server.base_url)
            texts = [await generate(provider) for _ in range(3)]
            await provider.aclose()
            return texts

    assert run(main) == ["hi"] * 3


def test_an_unknown_content_encoding_is_malformed() -> None:
    from agentlab.core.errors import LLMError

    async def main() -> LLMError:
        async with Server(lambda n: ok(b"xx", b"Content-Encoding: br\r\n")) as server:
            provider = OpenAIProvider("p", server.base_url)
            with pytest.raises(LLMError) as info:
                await generate(provider)
            await provider.aclose()
            return info.value

    err = run(main)
    assert err.kind == "malformed" and "Content-Encoding" in str(err)


def test_the_pool_never_shows_its_headers() -> None:
    pool = Http1Pool("http://127.0.0.1:9/v1", {"Authorization": "Bearer sk-secret-123456"}, 4)
    assert "sk-secret" not in repr(pool) and "sk-secret" not in str(vars(pool).get("host"))


def test_https_with_a_verified_certificate(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """TLS as hosted APIs use it: the server's certificate is verified against the provider's trust store."""
    import shutil
    import subprocess

    from agentlab.core.errors import LLMError
    from agentlab.core.llm.providers import openai as openai_provider

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)

    async def main() -> str | LLMError:
        async with Server(lambda n: ok(), tls=server_ctx) as server:
            provider = OpenAIProvider("p", server.base_url)
            assert provider._lean
            try:
                await generate(provider)  # the second request reuses the TLS connection
                return await generate(provider)
            except LLMError as exc:
                return exc
            finally:
                await provider.aclose()

    client_ctx = ssl.create_default_context(cafile=str(cert))
    monkeypatch.setattr(openai_provider, "_ssl_context", lambda: client_ctx)
    assert run(main) == "hi"
    monkeypatch.setattr(openai_provider, "_ssl_context", lambda: ssl.create_default_context())  # not trusted
    err = run(main)
    assert isinstance(err, LLMError) and err.kind == "connection" and "CERTIFICATE_VERIFY_FAILED" in str(err)


def test_an_informational_response_is_skipped() -> None:
    """103 Early Hints (or 100 Continue) before the answer: the answer is what counts, and the connection stays in
    step for the next request."""
    def answer(n: int) -> bytes:
        return b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n" + PAUSE + ok(
            json.dumps({"choices": [{"message": {"content": f"answer {n}"}}]}).encode())

    async def main() -> tuple[list[str], int]:
        async with Server(answer) as server:
            provider = OpenAIProvider("p", server.base_url)
            texts = [await generate(provider) for _ in range(2)]
            await provider.aclose()
            return texts, server.connections

    assert run(main) == (["answer 0", "answer 1"], 1)


def test_a_freed_connection_goes_to_the_longest_waiter() -> None:
    """max_connections=1: a request that waits is served next, not after every later request of a busier caller."""
    async def main() -> int:
        async with Server(lambda n: ok(), delay_s=0.01) as server:
            provider = OpenAIProvider("p", server.base_url, max_connections=1)
            done: list[str] = []

            async def busy() -> None:
                for _ in range(30):
                    await generate(provider)
                    done.append("busy")

            async def late() -> None:
                await asyncio.sleep(0.03)
                await generate(provider)
                done.append("late")

            await asyncio.gather(busy(), late())
            await provider.aclose()
            return done.index("late")

    assert run(main) <= 6  # it waited for one or two of the busy caller's requests, not for all 30


def test_a_large_body_and_a_close_delimited_one() -> None:
    big = json.dumps({"choices": [{"message": {"content": "x" * (3 << 20)}}]}).encode()  # over the 1 MiB mark
    close_delimited = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
                       + ANSWER.encode())

    async def main() -> tuple[int, str, int]:
        answers = iter([ok(big), close_delimited, ok(extra=b"Connection: close\r\n"), ok()])
        async with Server(lambda n: next(answers)) as server:
            provider = OpenAIProvider("p", server.base_url)
            size = len(await generate(provider))
            text = await generate(provider)  # the server closes after it: the next request opens a new connection
            await generate(provider)  # Connection: close with a length: not reused, though still open a while
            await generate(provider)
            await provider.aclose()
            return size, text, server.connections

    assert run(main) == (3 << 20, "hi", 3)


def test_a_consumer_that_reads_late_gets_the_whole_large_body() -> None:
    """Reading pauses past 1 MiB waiting to be read and resumes as it is read."""
    body = b"y" * (4 << 20)

    async def main() -> int:
        async with Server(lambda n: ok(body)) as server:
            pool = Http1Pool(server.base_url, {}, 2)
            response = await pool.post("/v1/chat/completions", b"{}")
            await asyncio.sleep(0.3)  # the body arrives meanwhile, and nobody reads it
            async with asyncio.timeout(5):
                data = await response.aread()
            await response.aclose()
            await pool.aclose()
            return len(data)

    assert run(main) == 4 << 20


def test_a_close_delimited_body_cut_by_a_reset_is_a_connection_error() -> None:
    import socket
    import struct

    from agentlab.core.errors import LLMError

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + ANSWER.encode()[:20])
        await writer.drain()
        await asyncio.sleep(0.05)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
        writer.transport.abort()

    async def main() -> LLMError:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        provider = OpenAIProvider("p", f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1")
        try:
            with pytest.raises(LLMError) as info:
                await generate(provider)
        finally:
            await provider.aclose()
            server.close()
        return info.value

    err = run(main)
    assert err.kind == "connection" and "reset" in str(err).lower()


def test_bytes_on_an_idle_connection_do_not_spoil_the_next_request() -> None:
    async def main() -> tuple[list[str], int]:
        async with Server(lambda n: ok(), after=b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n") as server:
            provider = OpenAIProvider("p", server.base_url)
            texts = []
            for _ in range(2):
                texts.append(await generate(provider))
                await asyncio.sleep(0.1)
            await provider.aclose()
            return texts, server.connections

    assert run(main) == (["hi", "hi"], 2)


def test_request_headers_on_the_wire_configured_ones_win_once() -> None:
    async def main() -> bytes:
        async with Server(lambda n: ok()) as server:
            provider = OpenAIProvider("p", server.base_url, api_key="sk-wire-123456",
                                      headers={"User-Agent": "mine/1.0", "X-Title": "agentlab"})
            await generate(provider)
            await provider.aclose()
            return server.heads[0].lower()

    head = run(main)
    assert head.startswith(b"post /v1/chat/completions http/1.1\r\n")
    assert head.count(b"user-agent:") == 1 and b"user-agent: mine/1.0\r\n" in head
    assert b"authorization: bearer sk-wire-123456\r\n" in head and b"x-title: agentlab\r\n" in head
    assert head.count(b"host:") == 1 and head.count(b"content-type:") == 1 and b"content-length: " in head
