"""A lean keep-alive HTTP/1.1 client for the OpenAI provider's hot path: asyncio protocols and httptools' C parser.

Why not httpx here: a gateway at high concurrency spent about half of its event loop's busy time inside httpx,
httpcore and anyio (request models, the pool's bookkeeping, a cancel scope per socket operation), and its single
loop saturated well below the rate of calling the upstream directly (docs/design/measurements.md). One POST of a
JSON body and one response (a length-delimited, chunked or close-delimited body, read whole or piece by piece for
SSE) is all the provider sends, so this module does only that, over ``asyncio.Protocol`` with
``httptools.HttpResponseParser`` (uvicorn's parser; the ``serve`` extra installs it).

What it leaves to httpx (``OpenAIProvider`` keeps an httpx client for these): proxies from the environment,
credentials in the URL, redirects (never followed for the API anyway), HTTP/2, and the rare calls (``/models``,
``/embeddings``).

Responses answer to the names of ``httpx.Response`` the provider reads: ``status_code``, ``headers`` (lower-case
names), ``content``, ``aread()``, ``aiter_bytes()``, ``aclose()``. Deadlines are the caller's (``asyncio.timeout_at``
around each await); a request that does not finish (cancelled, timed out, the body not read to its end) closes its
connection instead of returning it to the pool.
"""

from __future__ import annotations

import asyncio
import logging
import select
import ssl
import zlib
from collections import deque
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

__all__ = ["BodyDecodingError", "Http1Pool", "Http1Response", "available", "usable_for"]

log = logging.getLogger(__name__)

# Reading pauses when this much body is waiting for the consumer (an SSE answer is read as it comes; this only
# bounds a consumer that stops reading).
_HIGH_WATER = 1 << 20


class BodyDecodingError(Exception):
    """The body's Content-Encoding is one this client does not decode, or the compressed body is corrupt."""


def available() -> bool:
    """httptools importable (``agentlab[serve]`` installs it)."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        return False
    return True


def usable_for(base_url: str) -> bool:
    """This client serves ``base_url``: http or https, no proxy from the environment applies, httptools present."""
    parts = urlsplit(base_url)
    try:
        parts.port  # noqa: B018  (raises on a port out of range: httpx's path reports that as a connection error)
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username is not None:
        return False  # credentials in the URL (basic auth): httpx sends them
    proxies = getproxies()
    if (proxies.get(parts.scheme) or proxies.get("all")) and not proxy_bypass(parts.hostname):
        return False  # httpx honours the proxy environment; this client does not speak to proxies
    return available()


class Http1Response:
    """One response: status and headers once they arrive, then the body (whole with ``aread``, or in pieces)."""

    __slots__ = ("status_code", "headers", "_chunks", "_size", "_done", "_error", "_waiter", "_conn", "_content",
                 "_inflate")

    def __init__(self, conn: _Connection) -> None:
        self.status_code = 0
        self.headers: dict[str, str] = {}
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._done = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._conn: _Connection | None = conn
        self._content: bytes | None = None
        self._inflate: Any = None

    # -- fed by the connection ---------------------------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size > _HIGH_WATER and self._conn is not None:
            self._conn.pause()
        self._wake()

    def _finish(self, error: BaseException | None = None) -> None:
        if not self._done:
            self._done, self._error = True, error
        self._wake()

    # -- read by the provider ----------------------------------------------------------------------------------------

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def _decode(self, data: bytes) -> bytes:
        if self._inflate is None:
            encoding = self.headers.get("content-encoding", "identity").strip().lower()
            if encoding in ("", "identity"):
                self._inflate = False
            elif encoding in ("gzip", "x-gzip", "deflate"):
                self._inflate = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header, detected
            else:
                raise BodyDecodingError(f"unsupported Content-Encoding {encoding!r}")
        if not self._inflate:
            return data
        try:
            return self._inflate.decompress(data)
        except zlib.error as exc:
            raise BodyDecodingError(f"corrupt {self.headers.get('content-encoding')} body: {exc}") from None

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body's pieces as they arrive; raises ``ConnectionError`` when the connection ends before the body."""
        while True:
            if self._chunks:
                data = b"".join(self._chunks)
                self._chunks.clear()
                self._size = 0
                if self._conn is not None:
                    self._conn.resume()
                data = self._decode(data)
                if data:
                    yield data
                continue
            if self._done:
                if self._error is not None:
                    raise self._error
                return
            await self._wait()

    async def aread(self) -> bytes:
        """The whole body (kept as ``content``)."""
        if self._content is None:
            parts = [piece async for piece in self.aiter_bytes()]
            self._content = b"".join(parts)
        return self._content

    @property
    def complete(self) -> bool:
        """The whole body has arrived and been read."""
        return self._done and not self._chunks

    @property
    def content(self) -> bytes:
        if self._content is None:
            raise RuntimeError("the body was not read: await aread() first")
        return self._content

    async def aclose(self) -> None:
        """Hand the connection back when the body was read to its end, close it otherwise."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.release(reusable=self._done and self._error is None)


class _Connection(asyncio.Protocol):
    """One keep-alive connection; a response at a time."""

    def __init__(self, pool: Http1Pool) -> None:
        import httptools

        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Http1Response | None = None
        self.closed = False
        self.keep_alive = True
        self.informational = False  # a 1xx response is being parsed: the real one follows on the same connection
        self.paused = False
        self.error_class = httptools.HttpParserError

    # -- asyncio.Protocol --------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.response is None:  # bytes on an idle connection: nothing to give them to, and the stream is off
            self.abort()
            return
        try:
            self.parser.feed_data(data)
        except self.error_class as exc:
            self._fail(ConnectionError(f"malformed HTTP response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        response = self.response
        if response is not None and not response._done:
            if exc is None and response.status_code and self._close_delimited():
                response._finish()  # a body without length or chunks ends with the connection (a clean close)
            else:
                response._finish(ConnectionError(f"the server closed the connection{f': {exc}' if exc else ''}"))
        self.pool._forget(self)

    # -- httptools callbacks -----------------------------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.response is not None:
            headers, key = self.response.headers, name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text  # repeated names join, as httpx

    def on_headers_complete(self) -> None:
        if self.response is not None:
            status = self.parser.get_status_code()
            if 100 <= status < 200:  # 100 Continue, 103 Early Hints: the final response follows
                self.informational = True
                self.response.headers.clear()
                return
            self.response.status_code = status
            self.response._wake()

    def on_body(self, body: bytes) -> None:
        if self.response is not None:
            self.response._feed(body)

    def on_message_complete(self) -> None:
        if self.informational:
            self.informational = False
            return
        self.keep_alive = self.parser.should_keep_alive()
        if self.response is not None:
            self.response._finish()

    # -- used by the pool and the response ---------------------------------------------------------------------------

    def _close_delimited(self) -> bool:
        headers = self.response.headers if self.response is not None else {}
        return "content-length" not in headers and "chunked" not in headers.get("transfer-encoding", "").lower()

    def _fail(self, error: BaseException) -> None:
        if self.response is not None:
            self.response._finish(error)
        self.abort()

    def pause(self) -> None:
        if not self.paused and self.transport is not None and not self.closed:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Close at once (a request given up: nothing it still had to send matters)."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def idle_and_open(self) -> bool:
        """Not closed, and (plain TCP) nothing to read: an idle connection with bytes waiting has an EOF from the
        server (its keep-alive ran out) that the loop has not processed yet. TLS sockets are not checked this way
        (a session ticket can wait there); their EOF shows as ``closed``."""
        if self.closed or self.transport is None or self.transport.is_closing():
            return False
        if self.pool.tls:
            return True
        sock = self.transport.get_extra_info("socket")
        try:
            return not select.select([sock], [], [], 0)[0]
        except (OSError, ValueError, TypeError):
            return False

    def release(self, reusable: bool) -> None:
        self.response = None
        self.resume()
        if reusable and self.keep_alive and not self.closed:
            self.pool._idle_put(self)
        else:
            if reusable:
                self.close()
            else:
                self.abort()
            self.pool._forget(self)


class Http1Pool:
    """Keep-alive connections to one origin (``base_url``'s scheme, host and port), at most ``max_connections``;
    past that a request waits its turn (first come, first served: a freed connection goes to the longest waiter).
    Bound to the event loop it was first used in."""

    def __init__(self, base_url: str, headers: dict[str, str], max_connections: int,
                 ssl_context: ssl.SSLContext | None = None, user_agent: str = "agentlab") -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or ""
        self.tls = parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        self.ssl_context = ssl_context if self.tls else None
        self.max_connections = max(1, max_connections)
        self.origin = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        # Defaults first, then the configured headers over them (case-insensitively), as httpx merges them; the
        # framing headers are this client's own.
        merged = {"host": ("Host", host if parts.port is None else f"{host}:{parts.port}"),
                  "accept": ("Accept", "*/*"), "accept-encoding": ("Accept-Encoding", "gzip, deflate"),
                  "connection": ("Connection", "keep-alive"), "user-agent": ("User-Agent", user_agent),
                  "content-type": ("Content-Type", "application/json")}
        for name, value in headers.items():
            if name.lower() not in ("host", "content-length", "connection", "transfer-encoding"):
                merged[name.lower()] = (name, value)
        lines = [f"{name}: {value}" for name, value in merged.values()]
        self._head_tail = ("\r\n".join(lines) + "\r\nContent-Length: ").encode("latin-1")
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        # Each waiter gets a connection (handed over) or None (a slot is free: open one).
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self._closed = False

    def __repr__(self) -> str:  # the headers (an API key among them) are never shown
        return f"Http1Pool({self.origin}, open={len(self._open)})"

    # -- connections -------------------------------------------------------------------------------------------------

    async def _connect(self) -> _Connection:
        conn = _Connection(self)
        self._open.add(conn)
        loop = asyncio.get_running_loop()
        # asyncio's own loop tries IPv6 and IPv4 side by side, as httpx (anyio) does; uvloop takes no such option
        extra: dict[str, Any] = {"happy_eyeballs_delay": 0.25} if isinstance(loop, asyncio.BaseEventLoop) else {}
        try:
            await loop.create_connection(lambda: conn, self.host, self.port, ssl=self.ssl_context,
                                         server_hostname=self.host if self.tls else None, **extra)
        except BaseException:
            self._forget(conn)
            raise
        return conn

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if conn.idle_and_open():
                return conn
            conn.abort()
            self._forget(conn)
        return None

    async def _acquire(self) -> _Connection:
        if self._closed:
            raise ConnectionError("the connection pool was closed")
        if not self._waiters:  # nobody is ahead: an idle connection, or a new one
            conn = self._take_idle()
            if conn is not None:
                return conn
            if len(self._open) < self.max_connections:
                return await self._connect()
        while True:
            waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                handed = await waiter
            except BaseException:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                    conn = waiter.result()  # our turn came as we were cancelled: pass it on
                    if conn is not None:
                        self._idle_put(conn)
                    else:
                        self._hand(None)
                raise
            if handed is not None:
                if handed.idle_and_open():
                    return handed
                handed.abort()
                self._forget(handed)  # hands the freed slot on; this waiter queues again
                continue
            if len(self._open) < self.max_connections:
                return await self._connect()

    def _hand(self, conn: _Connection | None) -> bool:
        """Give ``conn`` (or a free slot, None) to the longest waiter; False when nobody waits."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    def _idle_put(self, conn: _Connection) -> None:
        if self._closed:
            conn.close()
            self._forget(conn)
            return
        if not self._hand(conn):
            self._idle.append(conn)

    def _forget(self, conn: _Connection) -> None:
        if conn in self._open:
            self._open.discard(conn)
            self._hand(None)

    # -- requests ----------------------------------------------------------------------------------------------------

    async def post(self, path: str, body: bytes) -> Http1Response:
        """Send ``POST path`` with a JSON ``body``; returns once the status and headers are in (read the body with
        ``aread`` or ``aiter_bytes``, then ``aclose``). Never sent twice: a connection the server closed without
        an answer is a ``ConnectionError``, as with httpx (idle connections the server has closed are found and
        dropped before a request goes out on them)."""
        head = b"POST " + path.encode("latin-1") + b" HTTP/1.1\r\n" + self._head_tail + \
            str(len(body)).encode() + b"\r\n\r\n"
        conn = await self._acquire()
        response = Http1Response(conn)
        conn.response = response
        try:
            assert conn.transport is not None
            conn.transport.write(head + body if len(body) < 65536 else head)
            if len(body) >= 65536:
                conn.transport.write(body)
            while not response.status_code and not response._done:
                await response._wait()
        except BaseException:
            conn.response = None
            conn.abort()
            self._forget(conn)
            raise
        if not response.status_code:
            await response.aclose()
            assert response._error is not None
            raise response._error
        if log.isEnabledFor(logging.DEBUG):  # as httpx logs its requests (-vv shows them)
            log.debug('HTTP Request: POST %s%s "HTTP/1.1 %d"', self.origin, path, response.status_code)
        return response

    async def aclose(self) -> None:
        """Close every connection; requests still waiting for one get a ``ConnectionError``."""
        self._closed = True
        for conn in list(self._open):
            conn.abort()
        self._idle.clear()
        self._open.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionError("the connection pool was closed"))
