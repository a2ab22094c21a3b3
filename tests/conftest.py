"""Shared fixtures: each test in its own folder (run folders and .env never leak), a tiny model, a loopback server."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import pytest

from agentlab.testing.server import ScriptedServer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """cwd = a fresh temp folder; runs/ goes there too."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AGENTLAB_RUNS", str(tmp_path / "runs"))
    return tmp_path


@pytest.fixture(scope="session")
def uv() -> str:
    """The uv that `make install` pinned (.tools/bin/uv), else one on PATH: what builds, exports and checks the lock."""
    pinned = REPO / ".tools" / "bin" / "uv"
    found = str(pinned) if pinned.exists() else shutil.which("uv")
    if found is None:
        pytest.fail("uv is not installed: `make install` puts the pinned uv in .tools/")
    return found


@pytest.fixture(scope="session")
def load_script() -> Callable[[str], ModuleType]:
    """``load_script("benchmarks/x.py")``: a script of the repository loaded as a fresh module under test (as
    ``python benchmarks/x.py`` would import it, minus running ``main``)."""

    def load(relative: str) -> ModuleType:
        path = REPO / relative
        spec = importlib.util.spec_from_file_location(f"{path.stem}_under_test", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture(scope="session")
def pid_alive() -> Callable[[int], bool]:
    """``pid_alive(pid)``: whether the process runs (a zombie, dead but not reaped, counts as gone; Linux's /proc)."""

    def alive(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state not in ("Z", "X")

    return alive


def _child_ctrl_c() -> None:
    """A child's ``preexec_fn``: SIGINT handled as from a terminal in it (a pytest-xdist worker's children inherit
    SIGINT ignored, and Python then raises no KeyboardInterrupt: a Ctrl-C test would pass without one, or fail)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def terminal_ctrl_c() -> Iterator[Callable[[], None]]:
    """Ctrl-C as from a terminal while the test runs (SIGINT raises KeyboardInterrupt here, not ignored as in a
    pytest-xdist worker); yields the ``preexec_fn`` that does the same in a child process."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield _child_ctrl_c
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTLAB_DEBUG", raising=False)
    os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _no_values_read_from_env() -> None:
    """Each test starts with no credential remembered as read from a config's ``${NAME}`` (a process-wide map: a
    literal credential of one test was written as another test's ``${NAME}``)."""
    from agentlab.core import config

    config._READ_FROM_ENV.clear()


@pytest.fixture(scope="session")
def _torch_default_threads() -> int:
    import torch

    return torch.get_num_threads()


@pytest.fixture(autouse=True)
def _torch_threads_restored(_torch_default_threads: int) -> Iterator[None]:
    """Each test starts on torch's default thread count: nas's `train.threads` and train-persona's set it for the
    whole process, and a later test of the same worker measured on another count than its subprocess had (compress's
    workspace key holds it: a killed run's resume was refused as measured otherwise)."""
    import torch

    if torch.get_num_threads() != _torch_default_threads:
        torch.set_num_threads(_torch_default_threads)
    yield


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny Llama-style chat model for the whole session: {"hf": folder, "gguf": folder/model.gguf (f32)}.

    Read-only by convention: tests that change files copy them first.
    """
    from agentlab.core.train.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny-model"), seed=0)


@pytest.fixture(scope="session")
def _mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow database, made once: creating one runs MLflow's migrations (seconds on a busy machine)."""
    import warnings

    mlflow = pytest.importorskip("mlflow")
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    with warnings.catch_warnings():  # SQLAlchemy deprecations inside MLflow's store: not ours to fix
        warnings.simplefilter("ignore")
        mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_uri(in_tmp: Path, _mlflow_db: Path) -> str:
    """``sqlite:///<test folder>/mlflow.db``: a fresh copy of the empty MLflow database, for ``--mlflow``."""
    import shutil

    shutil.copyfile(_mlflow_db, in_tmp / "mlflow.db")
    return f"sqlite:///{in_tmp / 'mlflow.db'}"


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One torch thread: the test models are tiny, and on a busy 2-core machine two threads are many times slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedServer]:
    """One scriptable loopback OpenAI-compatible server per test module; tests take ``srv``, which resets it."""
    with ScriptedServer() as s:
        yield s


class LoopbackServer(ThreadingHTTPServer):
    """A ``ThreadingHTTPServer`` on 127.0.0.1 serving from a daemon thread; ``url`` is ``http://127.0.0.1:PORT``."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def http_server() -> Iterator[Callable[[type[BaseHTTPRequestHandler]], LoopbackServer]]:
    """Starts a loopback server for a handler class (a test's fake provider, receiver or not-MLflow); every server it
    started is shut down and closed when the test ends."""
    started: list[LoopbackServer] = []

    def start(handler: type[BaseHTTPRequestHandler]) -> LoopbackServer:
        server = LoopbackServer(("127.0.0.1", 0), handler)
        started.append(server)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    yield start
    for server in started:
        server.shutdown()
        server.server_close()


@pytest.fixture
def srv(server: ScriptedServer) -> ScriptedServer:
    """The module's server with no scripts, defaults or recorded requests left from an earlier test."""
    server.reset()
    return server


@pytest.fixture
def sigkill_when(in_tmp: Path) -> Callable[[list[str], Callable[[], bool]], None]:
    """``sigkill_when(args, ready)``: run ``python -m agentlab *args`` in the test folder (runs/ there too) and
    SIGKILL it as soon as ``ready()`` holds (checked every 20 ms); the test fails when the run ends first or is not
    ready within 240 s. Its output is in kill.log."""

    def run(args: list[str], ready: Callable[[], bool]) -> None:
        env = {**os.environ, "AGENTLAB_RUNS": str(in_tmp / "runs")}
        with open(in_tmp / "kill.log", "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "agentlab", *args], cwd=in_tmp, env=env, stdout=log,
                                    stderr=subprocess.STDOUT)
            try:
                deadline = time.monotonic() + 240
                while time.monotonic() < deadline and proc.poll() is None and not ready():
                    time.sleep(0.02)
                assert proc.poll() is None, (in_tmp / "kill.log").read_text()[-2000:]
                os.kill(proc.pid, signal.SIGKILL)
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL

    return run


@pytest.fixture
def sigint_raises() -> Iterator[None]:
    """Ctrl-C raising KeyboardInterrupt, as under the CLI (pytest-xdist's workers ignore SIGINT, and a signal the
    process ignores is not held: the test's Ctrl-C went nowhere)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)
