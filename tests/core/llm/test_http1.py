"""The lean HTTP/1.1 client under the OpenAI provider (``providers/http1.py``), on raw loopback servers: what the
provider's own tests (run on both transports) do not show: connection reuse, a stale keep-alive connection, the
pool's limit, a request given up closing its connection, chunked and gzip bodies, when httpx is used instead."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from agentlab.core.llm.providers import http1
from agentlab.core.llm.providers.http1 import Http1Pool
from agentlab.core.llm.providers.openai import OpenAIProvider
from agentlab.core.llm.types import GenParams

ANSWER = json.dumps({"choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]})
MESSAGES = [{"role": "user", "content": "hello"}]


def ok(body: bytes = ANSWER.encode(), extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s" % (
        len(body), extra, body)


class Server:
    """A keep-alive HTTP/1.1 server: ``answer(n)`` gives the raw response to the n-th request of a connection
    (None: close the connection without answering). Counts connections and requests."""

    def __init__(self, answer: Callable[[int], bytes | None], delay_s: float = 0.0) -> None:
        self.answer, self.delay_s = answer, delay_s
        self.connections = 0
        self.requests = 0
        self.active = 0
        self.peak = 0
        self.base_url = ""

    async def __aenter__(self) -> Server:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.base_url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        n = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
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
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
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


def test_a_keep_alive_connection_the_server_dropped_is_retried_once_on_a_new_one() -> None:
    # each connection answers one request, then closes without answering the next
    async def main() -> tuple[list[str], int]:
        async with Server(lambda n: ok() if n == 0 else None) as server:
            provider = OpenAIProvider("p", server.base_url)
            texts = []
            for _ in range(3):
                texts.append(await generate(provider))
            await provider.aclose()
            return texts, server.connections

    texts, connections = run(main)
    assert texts == ["hi"] * 3 and connections == 3


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
    import ssl
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

    async def main(trusted: bool) -> tuple[str | LLMError, int]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length:"))
                    await reader.readexactly(length)
                    writer.write(ok())
                    await writer.drain()
            except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        provider = OpenAIProvider("p", f"https://localhost:{port}/v1")
        assert provider._lean
        out: list[str | LLMError] = []
        try:
            for _ in range(2):
                try:
                    out.append(await generate(provider))
                except LLMError as exc:
                    out.append(exc)
        finally:
            await provider.aclose()
            server.close()
        return out[-1], len(provider._pool._open) if provider._pool else 0

    client_ctx = ssl.create_default_context(cafile=str(cert))
    monkeypatch.setattr(openai_provider, "_ssl_context", lambda: client_ctx)
    assert run(lambda: main(True))[0] == "hi"
    monkeypatch.setattr(openai_provider, "_ssl_context", lambda: ssl.create_default_context())  # not trusted
    err, _ = run(lambda: main(False))
    assert isinstance(err, LLMError) and err.kind == "connection" and "CERTIFICATE_VERIFY_FAILED" in str(err)
