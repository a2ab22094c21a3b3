"""Run folders: one per command invocation, resumable, with atomically written state.

```
runs/<command>/<YYYYmmdd-HHMMSS>-<name>/
  config.yaml    resolved config, secrets redacted; re-runnable as is
  run.json       command, argv, versions, git sha, seed, started/ended, status running|completed|failed|interrupted
  events.jsonl   one JSON object per step / trial / LLM call, appended and flushed
  results.json   final machine-readable summary
  report.md      the human summary, with the plots it links
```
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agentlab.core.config import dump_yaml, redact
from agentlab.core.errors import RunDirError

log = logging.getLogger(__name__)

DEFAULT_RUNS_ROOT = Path("runs")
RUNNING, COMPLETED, FAILED, INTERRUPTED = "running", "completed", "failed", "interrupted"


# --------------------------------------------------------------------------- atomic file writes


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write via a temp file in the same folder + fsync + rename: a reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunDirError(f"{path}: not found", hint="is this a run folder? see `ls runs/`") from None
    except json.JSONDecodeError as exc:
        raise RunDirError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None


def _json_default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    return str(value)


def now_iso() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


# --------------------------------------------------------------------------- provenance


@functools.cache  # one `git` subprocess per process, not per run folder (a pipeline makes many)
def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@functools.cache  # fixed for the life of the process; each lookup parses package metadata (~5 ms)
def _versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in ("agentlab", "torch", "transformers", "peft", "trl", "optuna", "llama-cpp-python", "httpx"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


# --------------------------------------------------------------------------- the run folder


class RunDir:
    """A run folder. Create with ``RunDir.create`` / ``RunDir.resume`` or, from the CLI, ``RunDir.open``.

    Used as a context manager it records the outcome: ``completed`` on normal exit, ``interrupted`` on Ctrl-C or
    SIGTERM, ``failed`` (with the error) on any other exception, which is re-raised.
    """

    def __init__(self, path: Path, command: str):
        self.path = path
        self.command = command
        self._lock = threading.Lock()
        self._secrets: list[str] = []

    # ------------------------------------------------------------------ creation

    @classmethod
    def create(
        cls,
        command: str,
        config: BaseModel | dict[str, Any] | None = None,
        *,
        out: str | Path | None = None,
        root: str | Path | None = None,
        name: str | None = None,
        seed: int | None = None,
        secrets: list[str] | None = None,
    ) -> RunDir:
        """A new run folder: ``out`` exactly, or ``<root>/<command>/<timestamp>-<name>``."""
        if out is not None:
            path = Path(out)
            if path.exists() and any(path.iterdir()):
                raise RunDirError(f"{path}: folder exists and is not empty",
                                  hint=f"pass --resume {path} to continue that run, or choose another --out")
        else:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            # mypy infers environ.get's default type from the `or` (None included): str | Path here.
            base = Path(root or os.environ.get("AGENTLAB_RUNS", DEFAULT_RUNS_ROOT)) / command  # type: ignore[arg-type]
            path = base / f"{stamp}-{name or command}"
            suffix = 1
            while path.exists():  # two runs in the same second
                suffix += 1
                path = base / f"{stamp}-{name or command}-{suffix}"
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirError(f"{path}: cannot create run folder: {exc.strerror}") from None
        run = cls(path, command)
        run._secrets = list(secrets or [])
        if config is not None:
            run.save_config(config)
        run._write_run_json({
            "command": command,
            "argv": [run.scrub(a) for a in sys.argv],
            "versions": _versions(),
            "git_sha": _git_sha(),
            "seed": seed,
            "started": now_iso(),
            "ended": None,
            "status": RUNNING,
            "resumed": [],
        })
        log.info("run folder: %s", path)
        return run

    @classmethod
    def resume(cls, path: str | Path, command: str | None = None, secrets: list[str] | None = None) -> RunDir:
        """Reopen an existing run folder; its status goes back to ``running`` and the resume time is recorded."""
        path = Path(path)
        info_path = path / "run.json"
        if not info_path.is_file():
            raise RunDirError(f"{path}: not a run folder (no run.json)",
                              hint="pass the folder printed by the first run")
        info = read_json(info_path)
        if command is not None and info.get("command") != command:
            raise RunDirError(f"{path}: is a '{info.get('command')}' run, not '{command}'",
                              hint=f"resume it with `agentlab {info.get('command')} --resume {path}`")
        run = cls(path, info.get("command", command or "unknown"))
        run._secrets = list(secrets or [])
        info.setdefault("resumed", []).append({"at": now_iso(), "previous_status": info.get("status")})
        info["status"], info["ended"] = RUNNING, None
        run._write_run_json(info)
        return run

    @classmethod
    def latest(cls, command: str, root: str | Path | None = None) -> Path:
        """The newest run folder of a command (for a bare ``--resume``)."""
        # mypy infers environ.get's default type from the `or` (None included): str | Path here.
        base = Path(root or os.environ.get("AGENTLAB_RUNS", DEFAULT_RUNS_ROOT)) / command  # type: ignore[arg-type]
        candidates = sorted(p for p in base.glob("*") if (p / "run.json").is_file()) if base.is_dir() else []
        if not candidates:
            raise RunDirError(f"no '{command}' run to resume under {base}",
                              hint="start one first, or pass the run folder: --resume runs/<command>/<folder>")
        return candidates[-1]

    @classmethod
    def open(
        cls,
        command: str,
        config: BaseModel | dict[str, Any] | None = None,
        *,
        out: str | Path | None = None,
        resume: str | Path | bool | None = None,
        name: str | None = None,
        seed: int | None = None,
        secrets: list[str] | None = None,
    ) -> RunDir:
        """The CLI's entry: ``--resume [DIR]`` reopens (the latest run when DIR is empty), otherwise creates."""
        if resume:
            target = cls.latest(command) if resume is True or str(resume) == "" else Path(resume)
            return cls.resume(target, command, secrets=secrets)
        return cls.create(command, config, out=out, name=name, seed=seed, secrets=secrets)

    # ------------------------------------------------------------------ context manager: status on exit

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc_type is None:
            self.finish(COMPLETED)
        elif issubclass(exc_type, KeyboardInterrupt):
            self.finish(INTERRUPTED, error="interrupted (Ctrl-C or SIGTERM)")
        else:
            self.finish(FAILED, error=f"{exc_type.__name__}: {self.scrub(str(exc))}")

    # ------------------------------------------------------------------ files

    def file(self, *parts: str) -> Path:
        return self.path.joinpath(*parts)

    def scrub(self, text: str) -> str:
        """Remove every registered secret value from a text."""
        for secret in self._secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    def add_secret(self, value: str | None) -> None:
        if value and value not in self._secrets:
            self._secrets.append(value)

    def save_config(self, config: BaseModel | dict[str, Any]) -> None:
        data = config.model_dump(mode="json") if isinstance(config, BaseModel) else config
        atomic_write_text(self.file("config.yaml"), dump_yaml(redact(data, self._secrets)))

    def write_json(self, name: str, data: Any) -> Path:
        path = self.file(name)
        atomic_write_text(path, self.scrub(json.dumps(data, indent=2, default=_json_default)) + "\n")
        return path

    def read_json(self, name: str, default: Any = None) -> Any:
        path = self.file(name)
        return read_json(path) if path.is_file() else default

    def write_text(self, name: str, text: str) -> Path:
        path = self.file(name)
        atomic_write_text(path, self.scrub(text))
        return path

    def save_results(self, results: Any) -> Path:
        return self.write_json("results.json", results)

    def save_report(self, markdown: str) -> Path:
        return self.write_text("report.md", markdown)

    def event(self, kind: str, **data: Any) -> None:
        """Append one event to events.jsonl and flush it, so a crash loses at most the event being written."""
        record = {"ts": round(time.time(), 3), "kind": kind, **data}
        line = self.scrub(json.dumps(record, default=_json_default)) + "\n"
        with self._lock, open(self.file("events.jsonl"), "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()

    def events(self, kind: str | None = None) -> Iterator[dict[str, Any]]:
        """Replay events.jsonl (a torn last line from a crash is skipped)."""
        path = self.file("events.jsonl")
        if not path.is_file():
            return
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if kind is None or record.get("kind") == kind:
                    yield record

    # ------------------------------------------------------------------ status

    @property
    def info(self) -> dict[str, Any]:
        return read_json(self.file("run.json"))

    @property
    def status(self) -> str:
        return self.info.get("status", "unknown")

    def update_info(self, **fields: Any) -> None:
        with self._lock:
            info = self.info
            info.update(fields)
            self._write_run_json(info)

    def finish(self, status: str, error: str | None = None) -> None:
        fields: dict[str, Any] = {"status": status, "ended": now_iso()}
        if error:
            fields["error"] = error
        self.update_info(**fields)

    def _write_run_json(self, info: dict[str, Any]) -> None:
        atomic_write_json(self.file("run.json"), info)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"
