"""`agentlab serve`: check everything, bind the port, then serve until Ctrl-C / SIGTERM.

``prepare`` does every check before a run folder exists: the routing config and the names it serves, the client keys
(``api_key_env``), tracing, and the port (bound and listening here, so a port in use is one line, exit 2). ``run``
serves in the run folder: events.jsonl gets one ``llm_call`` line per model attempt (model, outcome, tokens, timing;
never a prompt unless --log-prompts, never a key), and on stop results.json and report.md get the request counts and
the per-model stats.

:class:`Gateway` is the same server for Python callers (tests, benchmarks, notebooks): ``with Gateway(cfg, llm) as
gw: OpenAI(base_url=gw.base_url, ...)`` serves from a background thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import ipaddress
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from agentlab.core.config import getenv
from agentlab.core.errors import ConfigError, MissingPackage, UsageError, pip_install
from agentlab.core.files import counted, deferred_interrupts
from agentlab.core.llm.check import local_problem
from agentlab.core.llm.config import DEFAULT_LLM_CONFIG, LLMConfig, load_llm_config
from agentlab.core.llm.router import Router
from agentlab.core.models.builtin import BUILTIN_MODELS_SERVED, builtin_path, is_installed
from agentlab.core.tracing import configure_tracing, shutdown_tracing
from agentlab.serve.app import _Handler, build_app
from agentlab.serve.catalog import Catalog, build_catalog
from agentlab.serve.config import ServeConfig, unset_env
from agentlab.serve.keys import load_keys
from agentlab.serve.metrics import GatewayMetrics
from agentlab.serve.report import render

if TYPE_CHECKING:
    from agentlab.core.llm.types import Provider
    from agentlab.core.progress import Progress
    from agentlab.core.runs import RunDir

__all__ = ["Gateway", "prepare", "run", "builtin_llm_config", "bind", "client_keys"]

log = logging.getLogger("agentlab.serve")

_WILDCARDS = ("0.0.0.0", "::")  # every interface (bind's --host); a client connects to 127.0.0.1 then


def builtin_llm_config(installed: list[str] | None = None) -> LLMConfig:
    """What the gateway serves with no routing config: the installed built-in models through llama.cpp, offline, each
    a model name of its own; ``default`` is the first of ``BUILTIN_MODELS_SERVED`` installed (Qwen2.5-Coder-0.5B,
    which calls tools in its own format, when the ``qwen`` extra is there)."""
    names = installed if installed is not None else [n for n in BUILTIN_MODELS_SERVED if is_installed(n)]
    return LLMConfig.model_validate({
        "providers": {"local": {"kind": "llama_cpp", "n_ctx": 8192}},
        "models": {name: {"provider": "local", "model": name, "params": {"temperature": 0.2, "max_tokens": 512},
                          } for name in names},
        "routes": {"default": {"primary": names[:1]}},
        "timeout_s": 300,
    })


def _load_llm(cfg: ServeConfig) -> LLMConfig:
    if cfg.llm is not None or DEFAULT_LLM_CONFIG.is_file():
        return load_llm_config(cfg.llm)
    import importlib.util

    # installed, not assembled: a split model is assembled (and checked) when it first loads, and one whose file
    # fails its check is that model's error alone (the router falls back), not the gateway's
    installed = [n for n in BUILTIN_MODELS_SERVED if is_installed(n)]
    if not installed:
        builtin_path(BUILTIN_MODELS_SERVED[-1])  # MissingPackage naming the install command
    if importlib.util.find_spec("llama_cpp") is None:
        raise MissingPackage("serving the built-in models needs llama-cpp-python, which is not installed",
                             hint=f"{pip_install('gguf')}, or pass --llm FILE with your models")
    return builtin_llm_config(installed)


def client_keys(env_name: str | None) -> list[str]:
    """The client keys from the variable ``env_name`` (comma-separated); none when no variable is named."""
    if env_name is None:
        return []
    keys = [k.strip() for k in (getenv(env_name) or "").split(",") if k.strip()]
    if not keys:
        problem, hint = unset_env(env_name, keys="KEY (several: comma-separated)")
        raise ConfigError(f"api_key_env {problem}", hint=f"{hint}; or drop --api-key-env to serve without client "
                          "keys")
    short = [k for k in keys if len(k) < 16]
    if short:
        raise ConfigError(f"api_key_env: a key in {env_name} has fewer than 16 characters",
                          hint="use long random keys, e.g. python -c 'import secrets; print(secrets.token_urlsafe())'")
    return keys


def _configure_tracing(cfg: ServeConfig) -> None:
    """``--otlp-endpoint``: spans of every routed request and model attempt (``core.tracing``; a missing extra or
    an endpoint that does not answer is one line, exit 2)."""
    if cfg.otlp_endpoint is None:
        return
    configure_tracing(cfg.otlp_endpoint, capture_content=cfg.trace_content)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free one); ``UsageError`` (exit 2) for a port in use, a
    host that is not this machine's, or a port that needs privileges."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError) as exc:  # UnicodeError: a name IDNA cannot encode (`not..a..host`, `.`)
        why = exc.strerror if isinstance(exc, socket.gaierror) else "not a valid host name"
        raise UsageError(f"--host {host}: not an address of this machine ({why})",
                         hint="use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)") from None
    family, kind, proto, _, address = infos[0]
    # proto IPPROTO_TCP: asyncio sets TCP_NODELAY only on accepted sockets that say so (else Nagle + delayed ACK
    # add ~40 ms to each keep-alive request)
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)  # listening now: a second server fails on this port even with SO_REUSEADDR
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(f"port {port} on {host} is already in use",
                             hint="pick another with --port (0: any free port), or stop what listens there") from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise UsageError(f"--host {host}: not an address of this machine",
                             hint="use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)") from None
        if exc.errno == errno.EACCES:
            raise UsageError(f"port {port} on {host} needs privileges", hint="use a port above 1023") from None
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                         hint="check --host (an address of this machine) and --port") from None
    return sock


def prepare(cfg: ServeConfig, llm: LLMConfig | None = None) -> dict[str, Any]:
    """Every check before a run folder exists; returns ``run``'s keyword arguments. The port is bound here, and
    tracing configured once everything else passed. ``llm``: a routing config instead of ``cfg.llm``'s."""
    import importlib.util

    for package in ("starlette", "uvicorn", "prometheus_client", "jsonschema"):
        if importlib.util.find_spec(package) is None:
            raise MissingPackage(f"agentlab serve needs the package '{package}', which is not installed",
                                 hint=pip_install("serve"))
    llm = llm if llm is not None else _load_llm(cfg)
    catalog = build_catalog(llm, cfg.adapters_as_models)
    where = cfg.llm or DEFAULT_LLM_CONFIG
    if not catalog.config.models:
        raise ConfigError(f"{where}: the routing config has no models to serve",
                          hint="add providers and models (see configs/llm.yaml), or pass --llm FILE, or a "
                          "built-in model's name (--llm qwen2.5-coder-0.5b)")
    # a local model whose file is missing: refused when no model could answer (it served a 503 to every request
    # while /health said ok), said once at start when others can (an optional local fallback beside HTTP models)
    missing = {name: problem for name in catalog.config.models
               if (problem := local_problem(catalog.config, name)) is not None}
    if missing and len(missing) == len(catalog.config.models):
        name, problem = next(iter(missing.items()))
        raise ConfigError(f"{where}: model '{name}': {problem}",
                          hint="fix the model's path in the routing config, or leave the model out")
    for name, problem in missing.items():
        log.warning("note: %s: model '%s' cannot be served (%s); its requests fall back or get a 503", where, name,
                    problem)
    keys = client_keys(cfg.api_key_env)
    load_keys(cfg.keys_file, keys, catalog.served)  # a bad keys file (or an unset key variable) is one line, exit 2
    sock = bind(cfg.host, cfg.port)
    try:
        _configure_tracing(cfg)
    except BaseException:
        sock.close()
        raise
    return {"llm": llm, "client_keys": keys, "sock": sock}


def run(cfg: ServeConfig, run_dir: RunDir | None = None, *, progress: Progress | None = None,
        announce: Callable[[str], None] | None = None, llm: LLMConfig | None = None,
        client_keys: list[str] | None = None, sock: socket.socket | None = None) -> dict[str, Any]:
    """Serve until Ctrl-C / SIGTERM; returns the results (also written to the run folder)."""
    if llm is None or sock is None:
        prepared = prepare(cfg)
        llm, client_keys, sock = prepared["llm"], prepared["client_keys"], prepared["sock"]
    say = announce or (lambda line: log.warning("%s", line))
    serving = [False]  # set once the server has run: a signal kept then is not one while starting

    def kept(signum: int) -> None:  # the first Ctrl-C / SIGTERM before the server's own handlers are set
        if not serving[0]:
            with contextlib.suppress(RuntimeError):  # a write to the console it interrupted: reentrant, left unsaid
                say("stopping as soon as the gateway is up; Ctrl-C again to stop now")

    # A Ctrl-C / SIGTERM while the gateway starts, and while it writes its results (uvicorn's own handlers take them
    # while it serves, and count as the first here: ``Server.handle_exit``): the first is kept, and the server, once
    # started, stops at once (``Server.capture_signals``), so the run folder ends as a stop while serving does, with
    # results.json, report.md and the signal in run.json. A second stops at once (the user insists), run.json still
    # naming the stop. Off the main thread (where handlers cannot be set): nothing kept.
    caught: list[int] = []
    try:
        with deferred_interrupts(on_first=kept, redeliver=False) as caught:
            gateway = Gateway(cfg, llm, run_dir, client_keys=client_keys or [], sock=sock)
            gateway.stop_signals = caught
            for note in gateway.notes():
                say(f"note: {note}")
            gateway.on_started = lambda: say(gateway.describe())
            gateway.on_stopping = say
            try:
                results = gateway.serve_forever()
            finally:
                serving[0] = True
                if cfg.otlp_endpoint is not None:  # configured in prepare: flush the spans still batched before exit
                    shutdown_tracing()
            if run_dir is not None:
                run_dir.stopped_by = results["stopped_by"]  # Ctrl-C / SIGTERM, the only way out: run.json: interrupted
                run_dir.save_results(results)
                run_dir.save_report(render(results))
    except KeyboardInterrupt:
        from agentlab.core.runs import interrupted_by

        if caught:  # a second signal: run.json names the stop (it said "Ctrl-C or SIGTERM")
            interrupted_by(f"interrupted ({signal.Signals(caught[0]).name})")
        raise
    return results


def _not_graceful_cancel(record: logging.LogRecord) -> bool:
    """A logging filter: false for uvicorn's line on cancelling requests once graceful_shutdown_s ran out."""
    return not str(record.msg).startswith("Cancel %s running task(s), timeout graceful shutdown exceeded")


@functools.cache
def _server_class() -> type:
    """uvicorn's ``Server`` (imported on first use) that records the signal that stopped it instead of raising it
    again after the graceful shutdown, as uvicorn does: the gateway stops, writes its results and exits 130 itself."""
    import uvicorn

    class Server(uvicorn.Server):
        stopped_by: str | None = None
        # called once, as shutdown begins, with the number of requests still in flight (none: not called)
        on_stop: Callable[[int], None] | None = None
        # the signals held while ``run`` starts the gateway (``core.files.deferred_interrupts``): one there, it stops
        # at once; the one that stops it is added, so that a signal while the results are written stops at once
        stop_signals: list[int]

        def __init__(self, config: Any) -> None:
            super().__init__(config)
            self.stop_signals = []

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            original: dict[int, Any] = {}
            try:  # set inside the try: a signal between the two leaves no handler of this server bound after it
                for sig in (signal.SIGINT, signal.SIGTERM):
                    original[sig] = signal.signal(sig, self.handle_exit)
                if self.stop_signals:  # stopped while starting: stop now, the run folder written as for any stop
                    self.handle_exit(self.stop_signals[0], None)
                yield
            finally:
                for which, handler in original.items():
                    signal.signal(which, handler)

        def handle_exit(self, sig: int, frame: Any) -> None:
            self.stopped_by = signal.Signals(sig).name
            if not self.stop_signals:  # the first: the next one, while the gateway closes, stops at once
                self.stop_signals.append(sig)
            super().handle_exit(sig, frame)

        async def shutdown(self, sockets: list[Any] | None = None) -> None:
            """uvicorn's shutdown, then the requests still in flight cancelled and given a moment to say so (a 503
            or a stream's error event, counted as ``shutdown``): a second Ctrl-C makes uvicorn stop waiting without
            cancelling them, and the loop closed under them (tracebacks, a stream cut without a word). uvicorn's
            `ERROR: Cancel N running task(s), timeout graceful shutdown exceeded` is left out: each answer cut
            says so in the gateway's own warning (``_Handler.shutdown_error``)."""
            in_flight = sum(1 for task in self.server_state.tasks if not task.done())
            if in_flight and self.on_stop is not None and not self.force_exit:
                self.on_stop(in_flight)  # the wait that follows is silent: say what it waits for, and how long
            uvicorn_log = logging.getLogger("uvicorn.error")
            uvicorn_log.addFilter(_not_graceful_cancel)
            try:
                await super().shutdown(sockets)
            finally:
                uvicorn_log.removeFilter(_not_graceful_cancel)
            pending = [task for task in self.server_state.tasks if not task.done()]
            for task in pending:
                task.cancel(msg="the gateway stopped")
            if pending:
                await asyncio.wait(pending, timeout=2)

    return Server


class Gateway:
    """The gateway for ``cfg`` over the routing config ``llm``: ``serve_forever()`` in the main thread (the CLI), or
    ``start()`` / ``stop()`` (a context manager) in a background thread. ``providers`` replace configured ones by
    name (tests)."""

    def __init__(self, cfg: ServeConfig, llm: LLMConfig, run_dir: RunDir | None = None, *,
                 client_keys: list[str] | None = None, sock: socket.socket | None = None,
                 providers: dict[str, Provider] | None = None, catalog: Catalog | None = None):
        self.cfg = cfg
        self.catalog = catalog or build_catalog(llm, cfg.adapters_as_models)
        self.metrics = GatewayMetrics()
        self.router = Router.for_run(self.catalog.config, run_dir, providers)
        sinks = [self.metrics.on_event] + ([run_dir.event] if run_dir is not None and cfg.log_calls else [])
        self.router.on_event = sinks[0] if len(sinks) == 1 else _fan_out(sinks)
        self.metrics.model_stats = self.router.stats
        keyring, keys = load_keys(cfg.keys_file, list(client_keys or []), self.catalog.served)
        if run_dir is not None:
            for key in keys:
                run_dir.add_secret(key)
        self.keyring = keyring
        self.handler = _Handler(cfg, self.router, self.catalog, self.metrics, keyring, [*self.router.secrets, *keys])
        self.handler.forced = lambda: bool(getattr(self._server, "force_exit", False))
        self.app = build_app(self.handler)
        self.sock = sock
        self._port: int | None = None
        self.on_started: Callable[[], None] | None = None
        # said once when a stop has requests in flight to wait for (the CLI prints it: the wait is otherwise silent)
        self.on_stopping: Callable[[str], None] | None = None
        self.started_at: float | None = None
        # the Ctrl-C / SIGTERM held while ``run`` starts the gateway: it stops at once (``Server.stop_signals``)
        self.stop_signals: list[int] = []
        # where every request's messages and reply are kept (--log-prompts), said at start: None when nowhere
        self.prompts_file: Path | None = run_dir.path / "llm_calls.jsonl" if run_dir is not None and getattr(
            run_dir, "log_prompts", False) else None
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._port is None and self.sock is not None:
            self._port = int(self.sock.getsockname()[1])  # kept: uvicorn closes the socket at shutdown
        return self._port if self._port is not None else self.cfg.port

    @property
    def everywhere(self) -> bool:
        """Whether the gateway listens on every interface (``--host 0.0.0.0`` or ``::``)."""
        return self.cfg.host in _WILDCARDS

    @property
    def loopback(self) -> bool:
        """Whether only this machine can reach the gateway: what decides the warning about serving without client
        keys. The bound address decides (``localhost`` is loopback, a name may resolve to anything)."""
        if self.everywhere:
            return False
        address = self.sock.getsockname()[0] if self.sock is not None and self.sock.fileno() >= 0 else self.cfg.host
        try:
            return ipaddress.ip_address(str(address).split("%")[0]).is_loopback
        except ValueError:  # a name, not bound yet
            return self.cfg.host == "localhost"

    @property
    def base_url(self) -> str:
        """What an OpenAI client takes as ``base_url``: on this machine's loopback when listening everywhere (the
        wildcard address is no address to connect to)."""
        host = self.cfg.host if not self.everywhere else "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/v1"

    def notes(self) -> list[str]:
        """What to say once at start besides the address: the catalog's notes, each provider whose API key variable
        is unset (its requests would fail with a connection or auth error that does not say why), and that a gateway
        other machines can reach asks no client key (the help says to set one with --host 0.0.0.0; nothing made
        sure of it)."""
        notes = list(self.catalog.notes)
        if self.handler.unset_keys:
            from agentlab.core.llm.providers.openai import unset_key_hint

            for provider, env in self.handler.unset_keys.items():
                models = [n for n, m in self.catalog.config.models.items() if m.provider == provider]
                notes.append(f"provider '{provider}': {unset_key_hint(env)}; until then its models "
                             f"({', '.join(models)}) fail (502) or fall back")
        if not self.handler.keys and not self.loopback:
            notes.append(f"--host {self.cfg.host} takes requests from other machines and no client key is asked "
                         f"for: anyone who reaches port {self.port} can use the models; set --api-key-env NAME (or "
                         "--keys FILE), or bind 127.0.0.1")
        return notes

    def describe(self) -> str:
        """The line said once the gateway serves; the URL comes first after ``serving on`` (scripts and
        ``testing.gateway`` read it there)."""
        kinds: dict[str, list[str]] = {}
        for served in self.catalog.served.values():
            kinds.setdefault(served.kind, []).append(served.name)
        names = "; ".join(f"{kind}s: {', '.join(names)}" for kind, names in kinds.items())
        where = [w for w in (f"${self.cfg.api_key_env}" if self.cfg.api_key_env else None,
                             str(self.cfg.keys_file) if self.cfg.keys_file else None) if w]
        auth = f"client keys from {' and '.join(where)}" if self.handler.keys else "no client key needed"
        if self.everywhere:
            auth = (f"from this machine; listening on every interface (--host {self.cfg.host}), so other machines "
                    f"use this machine's address, port {self.port}; {auth}")
        kept = f"; every request's prompts and replies are written to {self.prompts_file} (--log-prompts)" \
            if self.prompts_file is not None else ""
        return f"serving on {self.base_url} ({auth}); {names}{kept}; Ctrl-C stops"

    # ------------------------------------------------------------------ serving

    def _uvicorn(self) -> Any:
        import uvicorn

        if self.sock is None:
            self.sock = bind(self.cfg.host, self.cfg.port)
        _ = self.port
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off",
                                timeout_keep_alive=30, backlog=2048, server_header=False,
                                # uvicorn annotates int; it is an asyncio timeout, so a float works
                                timeout_graceful_shutdown=cast(int, self.cfg.graceful_shutdown_s))
        server = _server_class()(config)
        server.on_stop = self._stopping
        server.stop_signals = self.stop_signals
        return server

    def _stopping(self, in_flight: int) -> None:
        if self.on_stopping is not None and self.cfg.graceful_shutdown_s > 0:
            self.on_stopping(f"stopping: waiting up to {self.cfg.graceful_shutdown_s:g} s for "
                             f"{counted(in_flight, 'request')} in flight (Ctrl-C again to stop now)")

    def _new_loop(self) -> asyncio.AbstractEventLoop:
        try:
            import uvloop

            return uvloop.new_event_loop()
        except ImportError:
            return asyncio.new_event_loop()

    async def _serve(self) -> None:
        self.started_at = time.time()
        try:
            serving = asyncio.ensure_future(self._server.serve(sockets=[self.sock]))
            while not self._server.started and not serving.done():
                await asyncio.sleep(0.01)
            if self._server.started and not self._server.should_exit and self.on_started is not None:
                self.on_started()
            await serving
        finally:
            self.keyring.save()  # the keys' spend, when a usage_file keeps it
            await self.router.aclose()

    def serve_forever(self) -> dict[str, Any]:
        """Serve on this thread until a signal (or ``stop()``); returns the results."""
        self._server = self._uvicorn()
        loop = self._new_loop()
        try:
            loop.run_until_complete(self._serve())
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            if self.sock is not None:
                self.sock.close()
        return self.results()

    def results(self) -> dict[str, Any]:
        uptime = time.time() - self.started_at if self.started_at else 0.0
        return {"address": self.base_url, "uptime_s": round(uptime, 3),
                "stopped_by": getattr(self._server, "stopped_by", None), **self.metrics.summary(),
                "served": {s.name: s.kind for s in self.catalog.served.values()}, "models": self.router.stats()}

    def start(self) -> Gateway:
        """Serve from a daemon thread; returns once the port accepts connections."""
        if self._thread is not None:
            raise RuntimeError("this gateway is already started")
        self._server = self._uvicorn()
        result: dict[str, Any] = {}

        def target() -> None:
            loop = self._new_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve())
            except BaseException as exc:  # reported by start() or stop()
                result["error"] = exc
            finally:
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.close()

        self._thread = threading.Thread(target=target, name=f"agentlab-serve-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the gateway did not start: {result.get('error')!r}")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Stop serving (requests in flight get ``graceful_shutdown_s``) and close the router."""
        if self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout=self.cfg.graceful_shutdown_s + 15)
        self._thread = None
        if self.sock is not None:
            self.sock.close()

    def __enter__(self) -> Gateway:
        return self.start() if self._thread is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _fan_out(sinks: list[Callable[..., None]]) -> Callable[..., None]:
    def emit(kind: str, **fields: Any) -> None:
        for sink in sinks:
            sink(kind, **fields)

    return emit


def serve(llm: LLMConfig | str | Path | None = None, **settings: Any) -> dict[str, Any]:
    """Serve from Python until Ctrl-C, with no run folder: ``serve("configs/llm.yaml", port=8000)``."""
    cfg = ServeConfig(**settings)
    if isinstance(llm, LLMConfig):
        return run(cfg, None, **prepare(cfg, llm))
    cfg = cfg.model_copy(update={"llm": Path(llm) if llm is not None else None})
    return run(cfg, None, **prepare(cfg))
