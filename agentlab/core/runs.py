"""Run folders: one per command invocation, resumable, with atomically written state.

```
runs/<command>/<YYYYmmdd-HHMMSS>-<name>/
  config.yaml    resolved config, secrets redacted; re-runnable as is
  run.json       command, argv (null from Python), entry, versions, git sha, seed, started/ended, status
                 running|completed|failed|interrupted
  events.jsonl   one JSON object per step / trial / LLM call, appended and flushed
  results.json   final machine-readable summary
  report.md      the human summary, with the plots it links
```
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from agentlab.core import entry, files
from agentlab.core.config import (
    REDACTED,
    RUN_NAME_HINT,
    Flag,
    absolute_paths,
    dump_yaml,
    load_config,
    read_config,
    redact,
    run_name_problem,
    scrub_text,
    secret_values,
)
from agentlab.core.errors import (
    AgentlabError,
    ConfigError,
    InputError,
    RunDirError,
    UsageError,
    shell_word,
    storage_error,
)

if TYPE_CHECKING:
    from agentlab.core.progress import Progress

log = logging.getLogger(__name__)

DEFAULT_RUNS_ROOT = Path("runs")
RUNNING, COMPLETED, FAILED, INTERRUPTED = "running", "completed", "failed", "interrupted"
# The option that names a command's exact run folder, where it is not --out (train-persona's --out is its adapter).
OUT_FLAG = {"train-persona": "--run-dir"}
LOCK_FILE = "run.lock"
LLM_FILE = "llm.yaml"  # the routing config (--llm) the run used, secrets redacted: --resume reuses it
# run.json is written with this much trailing whitespace (valid JSON), so that when the disk is full its final
# status can still be written over it in place, in the blocks it already has.
RUN_JSON_RESERVE = 1024
# What a run folder holds before its command has done anything: a folder with nothing else never started.
_STUB_FILES = frozenset({"config.yaml", "run.json", LOCK_FILE})
_opened: list[Path] = []  # the run folders this process created or resumed, in order (opened_run)


def opened_run() -> Path | None:
    """The run folder this process created or resumed last, or None when it opened none (Ctrl-C before the folder
    existed: there is nothing to resume)."""
    return _opened[-1] if _opened else None


def opened_count() -> int:
    """How many run folders this process has opened (a caller compares it before and after a command)."""
    return len(_opened)


def joined_run(path: str | Path) -> None:
    """A run folder another process opened and this one works in (a follower rank of a multi-process launch)."""
    _opened.append(Path(path))


def check_out_folder(command: str, out: str | Path, *, resumable: bool = True) -> Path:
    """``out`` as a new run folder of ``command``: a ``RunDirError`` (exit 2) for a file or a folder that holds
    files, named by the command's option (``OUT_FLAG``); also checked by a dry run, which creates nothing."""
    path, flag = Path(out), OUT_FLAG.get(command, "--out")
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{flag} {path}: is a file, not a folder", hint=f"choose a folder path for {flag}")
    above = next((p for p in path.absolute().parents if p.exists()), None)  # where the folders would be made
    if above is not None and not above.is_dir():  # a dry run passed it, the run then failed "Not a directory"
        raise RunDirError(f"{flag} {path}: cannot create the run folder: {above} is a file", hint=f"choose a folder "
                          f"path for {flag}")
    if path.is_dir() and any(path.iterdir()):
        try:  # a run of this command; other files, or another command's run, are no run for --resume to continue
            run = resumable and run_info(path, command) is not None
        except Exception:  # no run.json, one of another command, or a damaged one
            run = False
        hint = (f"pass --resume {shell_word(path)} to continue that run, or choose another {flag}" if run else
                f"choose another {flag}, or drop {flag} for a new folder under runs/")
        raise RunDirError(f"{flag} {path}: folder exists and is not empty", hint=hint)
    return path


# --------------------------------------------------------------------------- interrupts


_interrupt_reason: list[str] = []  # why the next KeyboardInterrupt comes, when it cannot say so itself


def interrupted_by(reason: str | None) -> None:
    """Say why the next KeyboardInterrupt comes when it is a plain one raised for another cause (a SIGINT sent from
    a thread whose output's reader went away): the run it stops records ``reason``, not Ctrl-C's. None: forget it
    (a new command starts)."""
    _interrupt_reason[:] = [reason] if reason else []


def caused_by_interrupt(exc: BaseException | None) -> bool:
    """Whether ``exc`` was raised while a Ctrl-C / SIGTERM was being handled (a storage write that the interrupt
    broke, say): the user stopped the run; the error is its consequence, not a failure to report."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__context__
    return False


# --------------------------------------------------------------------------- atomic file writes


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write via a temp file in the same folder + fsync + rename: a reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:  # named by the file asked for, never by a temporary name the user never gave
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            files.ordinary_mode(tmp, replacing=path)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename in (None, tmp):  # a write through the descriptor names no
            raise OSError(exc.errno, exc.strerror, str(path)) from exc       # file; a failed rename the temporary
        raise


# the files durable_append wrote last, by path: (device, inode, size) as it left them, its last line whole
_appended: dict[str, tuple[int, int, int]] = {}


def durable_append(path: str | Path, text: str, *, sync: bool = True) -> None:
    """Append ``text`` (whole JSONL lines) and fsync: what a run's state file gains survives a kill or a power cut;
    a reader drops at most a torn last line. A write the disk refuses (full) is cut back off, so no torn line is
    left behind, and the error raised. A file that ends mid-line (a kill tore its last line) gets a newline first,
    so the next line is whole (it was glued onto the torn one, and a reader dropped both); its last byte is read
    only when the file is not as this process left it (the first append, or someone else wrote it), not on every
    append."""
    data = memoryview(text.encode("utf-8"))
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        stat = os.fstat(fd)
        size, key = stat.st_size, str(path)
        if size and _appended.get(key) != (stat.st_dev, stat.st_ino, size) and _last_byte(path) not in (b"\n", None):
            data = memoryview(b"\n" + bytes(data))
        try:
            while data:
                data = data[os.write(fd, data):]
            if sync:
                os.fsync(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        if text.endswith("\n"):
            end = os.lseek(fd, 0, os.SEEK_CUR)  # our write's end: another writer's bytes since are not vouched for
            _appended[key] = (stat.st_dev, stat.st_ino, end)
    finally:
        os.close(fd)


def _last_byte(path: str | Path) -> bytes | None:
    """The last byte of the file ``path`` (None: empty or unreadable, a write-only file say)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) or None
    except OSError:
        return None


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def save_figure(fig: Any, path: str | Path, **kwargs: Any) -> Path:
    """``fig.savefig`` into memory, then an atomic write: a full disk leaves the previous plot, never half a PNG."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png", **kwargs)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def _overwrite_in_place(path: Path, data: bytes) -> bool:
    """Write ``data`` over ``path``'s own bytes, padded with spaces to its size, when it fits: no new block is needed,
    so it works on a full disk. Not atomic; used only when the atomic write could not get space."""
    try:
        size = path.stat().st_size
        if len(data) > size:
            return False
        with open(path, "r+b") as handle:
            handle.write(data + b" " * (size - len(data)))
            handle.flush()
            os.fsync(handle.fileno())
    except OSError:
        return False
    return True


def read_json(path: str | Path) -> Any:
    """A run folder's JSON state file; ``RunDirError`` (exit 2) when it is missing, unreadable or not JSON."""
    path = Path(path)
    if not path.exists():
        raise RunDirError(f"{path}: not found", hint="is this a run folder? see `ls runs/`")
    try:
        return files.read_json(path, "run-folder file")
    except InputError as exc:
        raise RunDirError(exc.message, hint="this run folder's state is damaged; start a new run, or restore the "
                          "file from a backup") from None


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


def live_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSONL file a live run may be appending to: a torn or bad line (a crash mid-write) and
    a line that is not an object are skipped; nothing when there is no file."""
    path = Path(path)
    if not path.is_file():
        return
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                yield record


def jsonl_lines(path: Path) -> list[tuple[int, Any]]:
    """``(line number, JSON value)`` of each non-blank line of a run's JSONL file that a resume trusts (a debate's
    transcript.jsonl, questions.jsonl), the value None where the line is none: a torn last line of a kill mid-write
    (half a JSON object, a UTF-8 character cut short) or stray bytes. Line by line, so one bad line costs only itself;
    empty when there is no file."""
    if not path.is_file():
        return []
    lines: list[tuple[int, Any]] = []
    for number, raw in enumerate(path.read_bytes().split(b"\n"), 1):
        if raw.strip():
            try:
                lines.append((number, json.loads(raw.decode("utf-8"))))
            except (UnicodeDecodeError, json.JSONDecodeError):
                lines.append((number, None))
    return lines


def read_events(folder: str | Path, kind: str | None = None) -> Iterator[dict[str, Any]]:
    """Replay a run folder's events.jsonl (``live_jsonl``), only ``kind``'s events when given."""
    return (e for e in live_jsonl(Path(folder) / "events.jsonl") if kind is None or e.get("kind") == kind)


def runs_root(root: str | Path | None = None) -> Path:
    """Where run folders go: ``root``, else $AGENTLAB_RUNS, else ./runs."""
    return Path(root or os.environ.get("AGENTLAB_RUNS") or DEFAULT_RUNS_ROOT)


def _owner() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": now_iso()}


def now_iso() -> str:
    return datetime.now(UTC).astimezone().isoformat(timespec="seconds")


# --------------------------------------------------------------------------- provenance


@functools.cache  # one `git` subprocess per process, not per run folder (a pipeline makes many)
def _git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@functools.cache  # fixed for the life of the process; each lookup parses package metadata (docs/design/measurements.md)
def _versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in ("agentlab", "torch", "transformers", "peft", "trl", "optuna", "llama-cpp-python", "httpx"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def _started_by(scrub: Callable[[str], str]) -> dict[str, Any]:
    """How the run was started, for run.json: ``argv``, the agentlab command line, and ``entry`` "cli" within
    ``entry.command_line``; else it was started from Python (``run_nas_optimization``, ``run_in_folder``, ...): ``argv``
    null, ``entry`` "python", and the host process's own arguments as ``process_argv`` (``["pipe.py"]``, ``["-c"]``
    for ``python -c``), which were recorded as ``argv``, the run's command, and are not."""
    argv = entry.current()
    if argv is not None:
        return {"argv": [scrub(a) for a in argv], "entry": "cli"}
    return {"argv": None, "entry": "python", "process_argv": [scrub(a) for a in sys.argv]}


# --------------------------------------------------------------------------- ownership: one live process per run


def _lock(path: Path) -> int | None:
    """An exclusive ``flock`` on ``path/run.lock``: the open descriptor, or None when another process holds it.

    The kernel drops the lock when its process dies, however it dies (SIGKILL included), so a lock that can be taken
    means no live process owns the run. Filesystems without flock (some network mounts) get no protection: warned.
    """
    import fcntl

    fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except OSError as exc:
        if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            os.close(fd)
            raise
        log.warning("%s: file locks are not supported here; a second process could resume this run", path)
    return fd


def is_live(path: str | Path) -> bool:
    """Whether a live process owns the run folder ``path`` now (it holds the run's lock)."""
    lock = Path(path) / LOCK_FILE
    if not lock.is_file():
        return False
    fd = _lock(Path(path))
    if fd is None:
        return True
    os.close(fd)
    return False


def run_status(path: str | Path, info: dict[str, Any] | None = None) -> str:
    """The status of a run folder as it really is: ``running`` in run.json whose owner died is ``interrupted``."""
    info = read_json(Path(path) / "run.json") if info is None else info
    status = str(info.get("status", "unknown"))
    return INTERRUPTED if status == RUNNING and not is_live(path) else status


# run names (runs/NAME/, run.json's command) that are a subcommand on the command line
_COMMAND_WORDS = {"debate-eval": "debate eval"}


def command_words(name: str) -> str:
    """How a run name is typed after ``agentlab``: ``debate eval`` for ``debate-eval``; the name itself else."""
    return _COMMAND_WORDS.get(name, name)


def run_info(path: str | Path, command: str | None = None) -> dict[str, Any]:
    """run.json of the run folder ``path``; ``RunDirError`` (exit 2) when it is not a run folder (of ``command``)."""
    path = Path(path)
    if not path.exists():
        raise RunDirError(f"{path}: no such run folder", hint="pass the folder printed by the first run (see runs/)")
    if not (path / "run.json").is_file():
        raise RunDirError(f"{path}: not a run folder (no run.json)", hint="pass the folder printed by the first run")
    info: dict[str, Any] = read_json(path / "run.json")
    if command is not None and info.get("command") != command:
        raise RunDirError(f"{path}: is a run of '{info.get('command')}', not of '{command}'",
                          hint=f"give a run folder of `agentlab {command_words(command)}` (`agentlab "
                          f"{command_words(str(info.get('command')))} -h` says "
                          "whether and how this one continues)")
    return info


def did_work(path: str | Path) -> bool:
    """Whether the run wrote anything besides its config and run.json (a run that never started did not)."""
    return any(p.name not in _STUB_FILES for p in Path(path).iterdir())


def _stale_running(data: bytes) -> dict[str, Any] | None:
    """run.json's content ``data`` when it says ``running`` (read by the process that holds the run's lock now: its
    owner died), else None."""
    try:
        info = json.loads(data)
    except ValueError:
        return None
    return info if isinstance(info, dict) and info.get("status") == RUNNING else None


def _still_running(path: str | Path, info: dict[str, Any]) -> RunDirError:
    owner = info.get("owner") or {}
    who = (f"process {owner.get('pid')} on {owner.get('host')} (since {owner.get('since')})" if owner else
           "another process")
    return RunDirError(f"{path}: is still running in {who}",
                       hint="wait for it to finish, or stop it (Ctrl-C / kill PID) and resume then")


# --------------------------------------------------------------------------- the run folder


def new_run_path(command: str, name: str | None = None, root: str | Path | None = None) -> Path:
    """Where a new run of ``command`` goes: ``<root>/<command>/<YYYYmmdd-HHMMSS>-<name>`` (``-2``, ``-3``... after
    it when that folder exists already). ``RunDirError`` (exit 2) for a name that cannot be part of a folder name."""
    problem = run_name_problem(name) if name is not None else None
    if problem is not None:
        raise RunDirError(f"run name {name!r}: not usable in a folder name: {problem}", hint=RUN_NAME_HINT)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = runs_root(root) / command
    path = base / f"{stamp}-{name or command}"
    suffix = 1
    while path.exists():  # two runs in the same second
        suffix += 1
        path = base / f"{stamp}-{name or command}-{suffix}"
    return path


class RunDir:
    """A run folder. Create with ``RunDir.create`` / ``RunDir.resume`` or, from the CLI, ``RunDir.open``.

    The process that creates or resumes a run owns it (an exclusive lock on ``run.lock``) until ``finish``: a second
    process cannot resume a run that is still going, and a run whose owner died shows as ``interrupted``.
    Used as a context manager it records the outcome: ``completed`` on normal exit, ``interrupted`` on Ctrl-C or
    SIGTERM (or when the command set ``stopped_by`` after catching one itself), ``failed`` (with the error) on any
    other exception, which is re-raised. A failure before the command wrote anything leaves no trace: a resumed run
    gets its previous run.json and config.yaml back, and a new run
    stopped by bad input (exit code 2) is removed, so a bare ``--resume`` never finds a run that never started.
    """

    def __init__(self, path: Path, command: str, rerun: str | None = None):
        self.path = path
        self.command = command
        self.rerun = rerun
        self._lock = threading.Lock()
        self._events_file: str | None = None
        self._secrets: list[str] = []
        self._lock_fd: int | None = None
        self._stub = False  # made by this object: its files go again if bad input stops it before any work
        self._created = False  # the folder itself too
        self._before: dict[str, bytes | None] | None = None  # a resumed run's files as they were
        self._worked = False
        self._scratch: list[str] = []  # the command's own files in a new folder: they go with the stub (scratch)
        self._known = secret_values()  # read once: scrub runs on every event
        self.log_prompts = True  # llm_calls.jsonl: every LLM call's messages and reply (--no-log-prompts: off)
        # Set by a command that catches Ctrl-C / SIGTERM itself and returns its results (serve): the signal's name;
        # the run is then recorded as interrupted, not completed.
        self.stopped_by: str | None = None
        self.failed: str | None = None  # the command's result is a failure (exit 1): recorded failed, with this

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
        resumable: bool = True,
        rerun: str | None = None,
    ) -> RunDir:
        """A new run folder: ``out`` exactly, or ``<root>/<command>/<timestamp>-<name>``.

        ``resumable``: whether the command has ``--resume`` (the hint for an occupied ``--out`` suggests it only then).
        ``rerun``: the arguments after ``agentlab`` that re-run config.yaml, written as its first line; ``{config}``
        and ``{run}`` stand for the file and the folder (default ``COMMAND -c {config}``).
        """
        if out is not None:
            path = check_out_folder(command, out, resumable=resumable)
        else:
            path = new_run_path(command, name, root)
        existed = path.is_dir()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunDirError(f"{path}: cannot create the run folder: {exc.strerror or exc}",
                              hint="choose a writable place with --out, or set AGENTLAB_RUNS") from None
        run = cls(path, command, rerun)
        run._lock_fd = _lock(path)
        if run._lock_fd is None:  # two starts given the same --out, both past check_out_folder: the other has it
            raise RunDirError(f"--out {path}: another process is starting a run in this folder",
                              hint="give each run its own --out")
        run._created = not existed
        run._stub = True
        try:  # a Ctrl-C before run.json is written (git's sha takes a moment) leaves no half-made folder that
            # refused the same --out next time ("folder exists and is not empty")
            if out is not None:
                _note_outside(command, path, root)
            run._secrets = list(secrets or [])
            if config is not None:
                run.save_config(config)
            run._write_run_json({
                "command": command,
                **_started_by(run.scrub),
                "versions": _versions(),
                "git_sha": _git_sha(),
                "seed": seed,
                "started": now_iso(),
                "ended": None,
                "status": RUNNING,
                "owner": _owner(),
                "resumed": [],
            })
        except BaseException:
            run._remove_stub()
            raise
        log.info("run folder: %s", path)
        _opened.append(path)
        return run

    @classmethod
    def resume(cls, path: str | Path, command: str | None = None, secrets: list[str] | None = None,
               rerun: str | None = None) -> RunDir:
        """Reopen an existing run folder, owning it; its status goes back to ``running`` and the resume is recorded.

        Refused (``RunDirError``, exit 2) when the folder is not a run of ``command`` or a live process still runs it.
        """
        path = Path(path)
        info = run_info(path, command)
        run = cls(path, info.get("command", command or "unknown"), rerun)
        run._lock_fd = _lock(path)
        if run._lock_fd is None:
            raise _still_running(path, info)
        run._secrets = list(secrets or [])
        run._before = {name: (path / name).read_bytes() if (path / name).is_file() else None
                       for name in ("run.json", "config.yaml")}
        previous = info.get("status")
        if previous == RUNNING:  # we hold the lock now, so its last owner died without a word
            previous = INTERRUPTED
        # the error of the stop it resumes from moves into that record: run.json's error is this run's own
        stop = {"previous_error": info.pop("error")} if info.get("error") else {}
        info.setdefault("resumed", []).append({"at": now_iso(), "previous_status": previous, **stop})
        info.update(status=RUNNING, ended=None, owner=_owner())
        run._write_run_json(info)
        _opened.append(path)
        return run

    @classmethod
    def latest(cls, command: str, root: str | Path | None = None) -> Path:
        """The newest run of ``command`` that did some work (for a bare ``--resume``). ``RunDirError`` (exit 2) when
        there is none, or when a live process owns it: a bare ``--resume`` while the latest run goes on resumed an
        older one, silently (a finished run, say)."""
        base = runs_root(root) / command
        candidates = [p for p in base.glob("*") if (p / "run.json").is_file()] if base.is_dir() else []
        candidates += [p for p in _outside(command, root) if (p / "run.json").is_file() and p not in candidates]
        candidates.sort(key=_started)
        for path in reversed(candidates):
            if did_work(path):
                if is_live(path):
                    error = _still_running(path, read_json(path / "run.json"))
                    error.hint = ("wait for it, or stop it and resume then; to resume another run, name it: "
                                  "--resume DIR")
                    raise error
                return path
        skipped = f" ({len(candidates)} that never started or are still running)" if candidates else ""
        raise RunDirError(f"no '{command}' run to resume under {base}{skipped}",
                          hint=f"start one first, or pass the run folder: --resume {base}/<folder>")

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
        resumable: bool = True,
        rerun: str | None = None,
    ) -> RunDir:
        """The CLI's entry: ``--resume [DIR]`` reopens (the latest run when DIR is empty) and saves ``config`` as the
        run's config from now on; otherwise a new folder is created."""
        if resume is not None and resume is not False:
            target = cls.latest(command) if resume is True or str(resume) == "" else Path(resume)
            run = cls.resume(target, command, secrets=secrets, rerun=rerun)
            if config is not None:
                run.save_config(config)
            return run
        return cls.create(command, config, out=out, name=name, seed=seed, secrets=secrets, resumable=resumable,
                          rerun=rerun)

    # ------------------------------------------------------------------ context manager: status on exit

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        full = storage_error(exc, where=str(self.path)) if exc is not None else None
        if exc_type is not None and self.will_undo(exc):
            self._undo(exc)
            return
        if exc_type is None and self.stopped_by:
            self.finish(INTERRUPTED, error=f"interrupted ({self.stopped_by})")
        elif exc_type is None and self.failed:
            self.finish(FAILED, error=self.scrub(self.failed))
        elif exc_type is None:
            self.finish(COMPLETED)
        elif issubclass(exc_type, KeyboardInterrupt) or caused_by_interrupt(exc):
            # a stop with its own reason (the agent's --approve waiting for `agentlab ui`), else Ctrl-C / SIGTERM
            said = _interrupt_reason.pop() if _interrupt_reason else ""
            self.finish(INTERRUPTED, error=str(getattr(exc, "reason", "") or said or "interrupted (Ctrl-C or SIGTERM)"))
        elif full is not None:  # the disk, not the run: --resume continues once there is space again
            self.finish(INTERRUPTED, error=self.scrub(full.message))
        elif isinstance(exc, AgentlabError):  # said to the user as its message: the class is the code's word
            self.finish(FAILED, error=self.scrub(exc.message))
        else:
            self.finish(FAILED, error=f"{exc_type.__name__}: {self.scrub(str(exc))}")

    @property
    def recorded(self) -> bool:
        """Whether the command recorded anything in the run (an event, results, an LLM call) or said it changed the
        run's state (``mark_worked``): a failure from now on is recorded in run.json, never undone."""
        return self._worked

    @property
    def created(self) -> bool:
        """Whether this object made the run folder itself: a new run that bad input stops removes it; an empty
        ``--out`` folder the user made stays (``will_undo``: only the run's own files go)."""
        return self._created

    def will_undo(self, exc: BaseException | None) -> bool:
        """Whether leaving the run with ``exc`` leaves no trace of it (the context manager's exit): nothing recorded
        yet, not a full disk, and a resumed run (its run.json and config.yaml go back as they were) or a new run that
        bad input stopped (``AgentlabError`` with exit code 2: its files go, and its folder when ``created``)."""
        if exc is None or self._worked or storage_error(exc, where=str(self.path)) is not None:
            return False
        return self._before is not None or (self._stub and isinstance(exc, AgentlabError) and exc.exit_code == 2)

    def _undo(self, exc: BaseException | None) -> bool:
        """Leave no trace of a run that failed before writing anything (``will_undo``): a resumed run's files as they
        were (a run.json that said ``running``, its owner dead, says ``interrupted``); a new run removed when bad
        input stopped it (exit code 2). True when undone."""
        if not self.will_undo(exc):
            return False
        if self._before is not None:
            for name, data in self._before.items():
                if data is None:
                    with contextlib.suppress(FileNotFoundError):
                        self.file(name).unlink()
                elif name == "run.json" and (info := _stale_running(data)) is not None:
                    info["status"] = INTERRUPTED  # its owner died (we held its lock): said so, not a dead pid
                    self._write_run_json(info)
                else:
                    atomic_write_bytes(self.file(name), data)
            self.release()
            return True
        if self._stub:  # bad input (exit code 2): will_undo
            self._remove_stub()
            return True
        return False

    def _remove_stub(self) -> None:
        """A new run's own files gone (run.json, config.yaml, the lock, its scratch), and its folder when it made it
        (an empty --out folder the user made stays)."""
        self.release()
        for name in (*_STUB_FILES, *self._scratch):
            path = self.file(name)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        if self._created:
            with contextlib.suppress(OSError):
                self.path.rmdir()

    def mark_worked(self) -> None:
        """The command is about to change the run's state outside its own files (a resume re-queues the trial a
        stop left running, or adds one, in the study): from now on a failure or Ctrl-C is recorded in run.json
        (``resumed``, the status), not undone as a resume that did nothing."""
        self._worked = True

    def scratch(self, *parts: str) -> Path:
        """``file(*parts)``, marked as the command's own (a file or folder it makes before its first event: evolve's
        population.db, task.jsonl, the first children): a new run that bad input stops (exit 2) before it records
        anything removes it with its run.json and config.yaml, so the folder it made goes too. Such a folder was left
        holding these alone, and neither ``--resume`` (no run.json) nor ``--out`` (not empty) took it. Nothing
        changes for a resumed run or one that recorded work."""
        name = str(Path(*parts))
        if name not in self._scratch:
            self._scratch.append(name)
        return self.file(*parts)

    def release(self) -> None:
        """Give up ownership (``finish`` does this); another process may resume the run afterwards."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # ------------------------------------------------------------------ files

    def file(self, *parts: str) -> Path:
        return self.path.joinpath(*parts)

    def scrub(self, text: str) -> str:
        """Remove every registered secret, the value of every secret environment variable and URL credentials."""
        return scrub_text(text, self._secrets, self._known)

    def add_secret(self, value: str | None) -> None:
        if value and value not in self._secrets:
            self._secrets.append(value)

    def save_config(self, config: BaseModel | dict[str, Any]) -> None:
        """config.yaml: the resolved config with secrets redacted and relative paths made absolute, so it re-runs as
        it is from any directory."""
        if isinstance(config, BaseModel):
            config = absolute_paths(config).model_dump(mode="json")
        path = self.file("config.yaml")
        # The first line names the command, as every config in configs/ does: `agentlab config validate` reads it.
        # quoted for the shell: a folder with a space (or a quote) gave a line that does not paste
        rerun = (self.rerun or f"{self.command} -c {{config}}").format(config=shell_word(path.absolute()),
                                                                        run=shell_word(self.path.absolute()))
        header = f"# agentlab {rerun}\n"
        atomic_write_text(path, header + dump_yaml(redact(config, self._secrets)))

    def save_llm_config(self, llm: BaseModel) -> None:
        """llm.yaml: the routing config the run uses (--llm), as config.yaml is written (secrets redacted, paths
        absolute; a key read from the environment comes back as ``${NAME}``), so ``--resume`` asks the same models
        unless it is given --llm again (``routing_config``)."""
        data = absolute_paths(llm).model_dump(mode="json")
        header = "# the routing config (--llm) of this run, secrets redacted; --resume reuses it\n"
        atomic_write_text(self.file(LLM_FILE), header + dump_yaml(redact(data, self._secrets)))

    def write_json(self, name: str, data: Any) -> Path:
        self._worked = True
        path = self.file(name)
        atomic_write_text(path, self.scrub(json.dumps(data, indent=2, default=_json_default)) + "\n")
        return path

    def read_json(self, name: str, default: Any = None) -> Any:
        path = self.file(name)
        return read_json(path) if path.is_file() else default

    def write_text(self, name: str, text: str) -> Path:
        self._worked = True
        path = self.file(name)
        atomic_write_text(path, self.scrub(text))
        return path

    def save_results(self, results: Any) -> Path:
        return self.write_json("results.json", results)

    def save_report(self, markdown: str) -> Path:
        return self.write_text("report.md", markdown)

    def event(self, kind: str, **data: Any) -> None:
        """Append one event to events.jsonl and flush it, so a crash loses at most the event being written."""
        self._worked = True
        record = {"ts": round(time.time(), 3), "kind": kind, **data}
        line = self.scrub(json.dumps(record, default=_json_default)) + "\n"
        path = self._events_file
        if path is None:  # joined once: a gateway writes an event per request
            path = self._events_file = str(self.file("events.jsonl"))
        with self._lock:
            durable_append(path, line, sync=False)

    def llm_call(self, record: dict[str, Any]) -> None:
        """Append one LLM call (messages sent, params, reply, tokens, outcome) to llm_calls.jsonl, secrets scrubbed;
        nothing when ``log_prompts`` is off. The router calls this for every attempt (``Router.for_run``)."""
        if not self.log_prompts:
            return
        self._worked = True
        line = self.scrub(json.dumps({"ts": round(time.time(), 3), **record}, default=_json_default)) + "\n"
        with self._lock:
            durable_append(self.file("llm_calls.jsonl"), line, sync=False)

    def events(self, kind: str | None = None) -> Iterator[dict[str, Any]]:
        """Replay events.jsonl (a torn last line from a crash is skipped)."""
        return read_events(self.path, kind)

    # ------------------------------------------------------------------ status

    @property
    def info(self) -> dict[str, Any]:
        return read_json(self.file("run.json"))

    @property
    def status(self) -> str:
        """run.json's status, except that a ``running`` run whose owner died is ``interrupted``."""
        return run_status(self.path, self.info)

    def update_info(self, **fields: Any) -> None:
        with self._lock:
            info = self.info
            info.update(fields)
            self._write_run_json(info)

    def finish(self, status: str, error: str | None = None) -> None:
        """Record how the run ended and give up ownership. A run.json that cannot be written (the disk failed) is
        logged, not raised: the lock goes anyway, and a ``running`` run with no owner reads as ``interrupted``."""
        fields: dict[str, Any] = {"status": status, "ended": now_iso()}
        if error:
            fields["error"] = error[:400]  # within run.json's reserve
        try:
            self.update_info(**fields)
        except (OSError, AgentlabError) as exc:
            log.warning("%s: could not record status %s: %s", self.file("run.json"), status, exc)
        finally:
            self.release()

    def _write_run_json(self, info: dict[str, Any]) -> None:
        path = self.file("run.json")
        data = (json.dumps(info, indent=2, default=_json_default) + "\n").encode("utf-8")
        try:
            atomic_write_bytes(path, data + b" " * RUN_JSON_RESERVE + b"\n")
        except OSError as exc:
            if storage_error(exc) is None or not _overwrite_in_place(path, data):
                raise

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"


# --------------------------------------------------------------------------- running a command in its folder


OUTSIDE = "runs-outside.tsv"  # in agentlab's cache: runs root <tab> command <tab> --out folder, one run a line
OUTSIDE_KEEP = 500


def _outside_file() -> Path:
    from agentlab.core.files import cache_dir

    return cache_dir() / OUTSIDE


def _note_outside(command: str, path: Path, root: str | Path | None) -> None:
    """Remember a run made with --out (in agentlab's cache, never in the user's folder), so a bare --resume from the
    same runs root finds it; one short line appended."""
    import fcntl

    line = f"{runs_root(root).resolve()}\t{command}\t{path.resolve()}"
    with contextlib.suppress(OSError, UnicodeDecodeError):
        file = _outside_file()
        file.parent.mkdir(parents=True, exist_ok=True)
        # one writer at a time: two runs started at once each read, added its line and wrote, and one line was lost
        fd = os.open(file.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            with contextlib.suppress(OSError):  # a filesystem without flock: written unlocked, as before
                fcntl.flock(fd, fcntl.LOCK_EX)
            old = file.read_text(encoding="utf-8").splitlines() if file.is_file() else []
            # runs whose folder is gone are dropped, and the newest OUTSIDE_KEEP kept: the file stays small
            kept = [x for x in old if x.count("\t") == 2 and Path(x.split("\t")[2]).is_dir()][-OUTSIDE_KEEP:]
            atomic_write_text(file, "\n".join([*kept, line]) + "\n")
        finally:
            os.close(fd)  # and with it the lock


def _outside(command: str, root: str | Path | None) -> list[Path]:
    """The --out folders of ``command``'s runs started with this runs root."""
    try:
        text = _outside_file().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    here = str(runs_root(root).resolve())
    rows = [line.split("\t") for line in text.splitlines()]
    mine = dict.fromkeys(r[2] for r in rows if len(r) == 3 and r[0] == here and r[1] == command)
    return [Path(p) for p in mine]


def _started(path: Path) -> tuple[str, int]:
    """A run's start time (run.json, to the second), then when its run.json was last written: the order a bare
    --resume picks the latest by, wherever the run folder is."""
    try:
        started = str(json.loads((path / "run.json").read_text(encoding="utf-8")).get("started") or "")
        written = (path / "run.json").stat().st_ctime_ns
    except (OSError, ValueError, AttributeError):
        started, written = "", 0
    return started, written


def resume_target(command: str, resume: str | Path | None, *, config: str | Path | None = None,
                  out: str | Path | None = None, option: str = "--resume") -> Path | None:
    """The run folder that ``--resume [DIR]`` names (``""``: the latest run that started), or None for a new run.

    A resumed run reads its own config.yaml, so a config file or ``--out`` beside it is a usage error, and a folder
    without it a ``RunDirError`` (``option``: how the caller spells the resume, ``"resume="`` for a Python API).
    """
    if resume is None:
        return None
    if config is not None:
        raise UsageError("--resume and -c/--config both given",
                         hint="a resumed run reads its own config.yaml; change values with --set KEY=VALUE")
    if out is not None:
        raise UsageError("--resume and --out both given", hint="--resume DIR names the folder to continue")
    if str(resume) == "":
        folder = RunDir.latest(command)
    else:
        info = run_info(resume, command)  # before its config.yaml is read: "not a run folder", not "no config.yaml"
        if is_live(resume):  # and before its inputs are loaded: no point preparing data for a refusal
            raise _still_running(resume, info)
        folder = Path(resume)
    if not (folder / "config.yaml").is_file():  # not load_config's hint to leave a -c option out
        raise RunDirError(f"{folder / 'config.yaml'} is missing: the run folder is incomplete",
                          hint=f"restore it from a copy, or start a new run (without {option})")
    try:  # empty, not YAML, no mapping: load_config's hints are for a user's -c file, not the run's own
        read_config(folder / "config.yaml", optional=False)
    except (ConfigError, InputError) as exc:
        raise RunDirError(f"{exc.message}; the run folder is damaged",
                          hint=f"restore it from a copy, or start a new run (without {option})") from None
    return folder


def routing_config(llm: Any, folder: str | Path | None, overrides: Iterable[Any] = ()) -> Any:
    """The routing config a call asks: ``llm`` (--llm) when given; resumed (``folder``) without it, the one the run
    used (its llm.yaml, ``RunDir.save_llm_config``) unless ``--set llm=`` names another (compress's config field);
    else None (the command's default). ``load_llm_config`` refuses a saved one holding a ``***``."""
    named = [o.key if isinstance(o, Flag) else str(o).split("=", 1)[0].strip() for o in overrides]
    if llm is not None or folder is None or "llm" in named:
        return llm
    path = Path(folder) / LLM_FILE
    return path if path.is_file() else None


@dataclass(frozen=True)
class FolderOptions:
    """How ``run_in_folder`` writes the run folder.

    ``save_config``: write ``cfg`` as config.yaml (False when ``run`` writes its own); ``resumable``: whether the
    command has --resume, and ``rerun``: the arguments after ``agentlab`` that re-run it (both ``RunDir.create``);
    ``log_prompts``: keep every LLM call's messages and reply in llm_calls.jsonl.
    """

    save_config: bool = True
    resumable: bool = True
    rerun: str | None = None
    log_prompts: bool = True


def resume_changes(folder: Path, cfg: BaseModel, command: str) -> list[str]:
    """What ``cfg`` changes from the settings of the run in ``folder`` (its config.yaml), as ``key old -> new``, other
    than what its config model lets a resume change: ``RESUME_MAY_CHANGE``, dotted keys (a key stands for what lies
    under it), or a dict of them by command, and a data file at a new path with the content the run started on
    (``moved_data``). Empty when the model declares none (the command's own resume decides); secrets are compared as
    config.yaml holds them (redacted)."""
    may = _may_change(cfg, command)
    if may is None:
        return []
    return settings_changes(folder, cfg, (*may, *((DATA_KEY,) if moved_data(folder, cfg) is not None else ())))


def settings_changes(folder: Path, cfg: BaseModel, may: Iterable[str] = ()) -> list[str]:
    """What ``cfg`` changes from the run's config.yaml in ``folder``, as ``key old -> new``, other than the keys
    ``may`` (a key stands for what lies under it); secrets are compared as config.yaml holds them (redacted)."""
    saved, asked = (_as_saved(c) for c in (load_config(folder / "config.yaml", type(cfg)), cfg))
    return [f"{key} {said_setting(saved.get(key))} -> {said_setting(asked.get(key))}"
            for key in sorted(saved.keys() | asked.keys())
            if saved.get(key) != asked.get(key) and REDACTED not in (saved.get(key), asked.get(key))
            and not _under(key, may)]


def shared_settings(cfg: BaseModel, command: str, *, own: Iterable[str] = ()) -> dict[str, str]:
    """What every worker of a shared study must have as its first worker had, ``{key: value as said}``: every setting
    but those a resume may change and the worker's ``own`` (its storage, say), redacted and with paths absolute, as
    config.yaml holds them (``settings_changes`` compares a resume's the same way)."""
    skip = (*(_may_change(cfg, command) or ()), *own)
    return {key: brief_setting(value) for key, value in _as_saved(cfg).items()
            if REDACTED not in str(value) and not _under(key, skip)}


def _as_saved(cfg: BaseModel) -> dict[str, Any]:
    """``cfg``'s settings flat (``{"a.b": value}``) as config.yaml holds them: paths absolute, secrets redacted."""
    return flat_settings(redact(absolute_paths(cfg).model_dump(mode="json")))


def _under(key: str, keys: Iterable[str]) -> bool:
    """Whether the dotted ``key`` is one of ``keys`` or lies under one (a key stands for what lies under it)."""
    return any(key == k or key.startswith(k + ".") for k in keys)


def said_setting(value: Any) -> str:
    """A setting as a resume refusal says it: unset (None, YAML's null) in words, else ``brief_setting``."""
    return "(not set)" if value is None else brief_setting(value)


def brief_setting(value: Any) -> str:
    """A setting as a resume refusal names it: a scalar as Python writes it (``'What is 1 plus 2?'``), a list or
    mapping as compact JSON without the keys left at null or empty (debate's agents: ``[{"adapter": "/x/a"}]``, not
    every field of each)."""
    def pruned(item: Any) -> Any:
        if isinstance(item, dict):
            return {k: pruned(v) for k, v in item.items() if v not in (None, {}, [])}
        return [pruned(v) for v in item] if isinstance(item, list) else item

    return json.dumps(pruned(value), ensure_ascii=False) if isinstance(value, (list, dict)) else repr(value)


def check_resume_settings(folder: Path, cfg: BaseModel, command: str) -> None:
    """Refuse (``UsageError``, nothing written) a resume of the run in ``folder`` that changes what its finished work
    was done with (``resume_changes``)."""
    changed = resume_changes(folder, cfg, command)
    if changed:
        may = _may_change(cfg, command)
        raise UsageError(f"{folder}: this resume changes what the run's finished work was done with "
                         f"({'; '.join(changed)}); nothing was written",
                         hint="resume without changing them, or start a new run with the new settings"
                         + ("" if not may else f" (a resume may change {', '.join(may)})" if len(may) <= 8 else
                            f" (what a {command} resume may change: docs/concepts/run-folders.md, Resume)")
                         + _new_data_hint(folder, cfg, changed))


def _new_data_hint(folder: Path, cfg: BaseModel, changed: list[str]) -> str:
    """What a refused resume's hint adds when its ``DATA_KEY`` changed (``moved_data`` did not take it): why the file
    at the new path was not taken as the run's data."""
    if not any(c.startswith(f"{DATA_KEY} ") for c in changed):
        return ""
    taken = f"; a new {DATA_KEY} is taken when its file holds the data the run started on (the sha256 the run records)"
    recorded = data_sha256(folder)
    if recorded is None:
        return f"{taken}, which this run does not record (made before agentlab recorded it): put the file back at " \
            "its path"
    now = _sha256_of(_as_saved(cfg).get(DATA_KEY))
    return f"{taken}: this one holds other data (sha256 {recorded[:12]}... -> " \
        f"{now[:12] + '...' if now else 'unreadable'})"


DATA_KEY = "data.path"  # the setting that names a run's data file (its first ``data`` event holds its sha256)


def data_sha256(folder: Path) -> str | None:
    """The sha256 of the data file the run in ``folder`` started on: its first ``data`` event's (each start and
    resume appends one); None when it has none (killed before it had one, or made before its command recorded it)."""
    return next((e.get("sha256") for e in read_events(folder, "data") if e.get("sha256")), None)


def _sha256_of(path: Any) -> str | None:
    try:
        return files.file_sha256(path) if isinstance(path, str) else None
    except OSError:
        return None


def moved_data(folder: Path, cfg: BaseModel) -> str | None:
    """The path the run in ``folder`` read its data file at (config.yaml's ``DATA_KEY``, absolute) when ``cfg`` names
    another path whose file holds the data the run started on (``data_sha256``): a run folder copied to another
    machine, its data elsewhere; the resume reads it there and keeps the new path as the run's config. Else None: the
    same path, no data file, no sha256 recorded, or other content (``check_resume_settings`` refuses the new path)."""
    try:
        kept = _as_saved(load_config(folder / "config.yaml", type(cfg))).get(DATA_KEY)
    except (OSError, ValueError, AgentlabError):
        return None
    now = _as_saved(cfg).get(DATA_KEY)
    if not isinstance(kept, str) or not isinstance(now, str) or now == kept \
            or (recorded := data_sha256(folder)) is None:
        return None
    return kept if _sha256_of(now) == recorded else None


def say_moved_data(kept: str, now: str | Path) -> None:
    """The one line a resume says when it reads the run's data file at the new path ``now``, which holds the data the
    run started on at ``kept`` (``moved_data``): the run keeps the new path (its config.yaml)."""
    log.warning("%s %s holds the data the run started on at %s (the same sha256): the resume reads it there, and the "
                "run keeps the new path", DATA_KEY, Path(now).absolute(), kept)


def check_data_unchanged(folder: Path, path: str | Path, key: str = DATA_KEY) -> bool:
    """Refuse (``UsageError``, nothing written) a resume of the run in ``folder`` whose data file ``path`` (the
    setting ``key``) no longer holds what the run started on: the same path with other content would mix two data
    sets in one run, as a new path with other content would (which ``check_resume_settings`` refuses). The run's
    first ``data`` event holds the file's sha256 (``data_sha256``). Returns whether the run recorded one: a run killed
    before it had one, or made before its command recorded it, has nothing to compare (False). A missing or
    unreadable file is left to the data check."""
    recorded = data_sha256(folder)
    if recorded is None:
        return False
    try:
        now = files.file_sha256(path)
    except OSError:
        return True
    if recorded != now:
        raise UsageError(f"{folder}: this resume changes what the run's finished work was done with (the content "
                         f"of {key} {path}: sha256 {recorded[:12]}... -> {now[:12]}...); nothing was written",
                         hint="put the file back as the run started on it, or start a new run on the new data")
    return True


def _may_change(cfg: BaseModel, command: str) -> tuple[str, ...] | None:
    may = getattr(type(cfg), "RESUME_MAY_CHANGE", None)
    return may.get(command) if isinstance(may, dict) else may


def flat_settings(data: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as ``{"a.b": value}``."""
    if isinstance(data, dict) and data:
        return {k: v for key, value in data.items() for k, v in flat_settings(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): data}


def run_in_folder(command: str, cfg: BaseModel, run: Callable[..., Any], *, inputs: dict[str, Any] | None = None,
                  out: str | Path | None = None, resume: Path | None = None, options: FolderOptions = FolderOptions(),
                  progress: Progress | None = None, announce: Callable[[str], None] | None = None,
                  on_open: Callable[[RunDir], None] | None = None) -> tuple[Any, Path]:
    """Open the run folder (new, or ``resume``), call ``run(cfg, run_dir, progress=, announce=, **inputs)`` in it,
    record the outcome, and return ``(result, folder)``. Callers validate ``cfg`` and ``inputs`` first.

    ``options``: how the folder is written (``FolderOptions``: save_config, resumable, rerun, log_prompts);
    ``on_open(run_dir)`` runs once the folder exists.
    """
    if resume is not None:
        check_resume_settings(resume, cfg, command)
    name = getattr(cfg, "name", None)
    seed = next((s for s in (getattr(cfg, "seed", None), getattr(getattr(cfg, "search", None), "seed", None))
                 if isinstance(s, int)), None)
    with RunDir.open(command, cfg if options.save_config else None, out=out, resume=resume, name=name, seed=seed,
                     resumable=options.resumable, rerun=options.rerun) as run_dir:
        run_dir.log_prompts = options.log_prompts
        if on_open is not None:
            on_open(run_dir)
        try:
            return run(cfg, run_dir, progress=progress, announce=announce, **(inputs or {})), run_dir.path
        except Exception as exc:
            full = storage_error(exc, where=str(run_dir.path))  # a full disk: one line naming the path, exit 1
            if full is None or full is exc:
                raise
            raise full from exc
