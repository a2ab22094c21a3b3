"""An objective that is the user's own command: any training script, any metric, searched by every planner.

The contract, for the command's author:

- ``command`` is split like a shell line (``shlex``; no shell runs it: no pipes, ``&&`` or ``$VAR``), and ``{params}``
  in it becomes the path of ``params.json`` in the trial's own folder ``<run>/trials/run_NNNN/``. That file (written
  atomically) holds the base params updated by the trial's values; a dotted key (``optimizer.lr``) updates the nested
  dict (``{"optimizer": {"lr": ...}}``).
- The environment also holds ``AGENTLAB_TRIAL_DIR`` (the trial folder) and ``AGENTLAB_PARAMS`` (the params file).
  The command runs in ``cwd`` (the folder of the YAML file unless the config names another).
- The result is the last line of stdout that is a JSON object holding the metric key (and no ``step``), else
  ``metrics.json`` in the trial folder. Its other keys are kept with the trial. A JSON line that holds ``step`` and the
  metric is an intermediate value: the pruner sees it, and when it says stop the command is terminated (the trial is
  pruned).
- A non-zero exit, no result, a metric that is not a finite number, or a run past ``timeout_s`` is a failed trial
  whose reason holds the last lines of stderr; the search goes on. stdout and stderr are kept in the trial folder
  (``stdout.log``, ``stderr.log``).
- The command runs in its own process group, and on Linux with the parent-death signal set to SIGKILL: a timeout,
  Ctrl-C or SIGTERM of agentlab kills the whole group, and ``kill -9`` of agentlab kills the command (its own
  children are its to end: PyTorch's DataLoader workers do).

``validate()`` runs before trial 0: a program that cannot be found or run, or a searched key the base params lack,
is a ``UsageError`` (exit 2) before any trial.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentlab.core.errors import UsageError
from agentlab.core.runs import atomic_write_json
from agentlab.core.search.loop import Pruned, TrialFailed
from agentlab.core.search.space import lookup

PLACEHOLDER = "{params}"
STDERR_LINES = 10  # the lines of stderr a failed trial's reason quotes
KILL_GRACE_S = 2.0  # after SIGTERM to the group, SIGKILL follows this much later
PR_SET_PDEATHSIG = 1


def nested_params(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``base`` (a deep copy) updated by ``values``, a dotted key (``optimizer.lr``) setting a nested dict's value."""
    out = json.loads(json.dumps(base))
    for key, value in values.items():
        node = out
        *parents, last = key.split(".") if key not in out else [key]
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def flat_values(params: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """The base value of each searched key (dotted keys read through nested dicts); a missing key is left out."""
    return {key: found[1] for key in keys if (found := lookup(params, key))[0]}


class CommandObjective:
    """The ``Objective`` of ``core.search.loop`` for a command (see the module docstring for the contract).

    ``trial_dir(number)`` gives a trial's folder; ``on_line(number, text)`` (optional) sees each stdout line as it
    arrives, e.g. for a progress bar."""

    def __init__(self, command: str, metric: str, base_params: dict[str, Any], *, cwd: Path,
                 trial_dir: Callable[[int], Path], timeout_s: float | None = None, space_keys: tuple[str, ...] = (),
                 on_line: Callable[[int, str], None] | None = None):
        self.command, self.metric, self.base_params = command, metric, base_params
        self.cwd, self.trial_dir, self.timeout_s = Path(cwd), trial_dir, timeout_s
        self.space_keys, self.on_line = space_keys, on_line

    # ------------------------------------------------------------------ before any trial

    def argv(self, params_path: str = PLACEHOLDER) -> list[str]:
        try:
            parts = shlex.split(self.command)
        except ValueError as exc:
            raise UsageError(f"objective.command: cannot be split into arguments ({exc})",
                             hint="close the quotes; the command runs without a shell") from None
        return [part.replace(PLACEHOLDER, params_path) for part in parts]

    def validate(self) -> None:
        """Refuse (``UsageError``, exit 2) a command that cannot start or a searched key the base params lack."""
        parts = self.argv()
        if not parts:
            raise UsageError("objective.command: empty", hint="give the command that trains, e.g. "
                             "`python train.py --params {params}`")
        if not self.cwd.is_dir():
            raise UsageError(f"objective.cwd: {self.cwd} is not a folder", hint="give the project's folder")
        program = parts[0]
        if os.sep in program or (os.altsep and os.altsep in program):
            path = Path(program) if Path(program).is_absolute() else self.cwd / program
            if not path.is_file() or not os.access(path, os.X_OK):
                why = "does not exist" if not path.exists() else "is not an executable file"
                raise UsageError(f"objective.command: {program} {why} (looked in {self.cwd})",
                                 hint="give the path of an executable, or run a script through its interpreter "
                                 "(python train.py ...)")
        elif shutil.which(program) is None:
            raise UsageError(f"objective.command: {program!r} is not found on PATH",
                             hint="install it, activate its environment, or give its full path")
        missing = [key for key in self.space_keys if not lookup(self.base_params, key)[0]]
        if missing:
            raise UsageError(f"search.space.{missing[0]}: not a key of objective.params",
                             hint="add it to objective.params with its current value (trial 0), or remove it from "
                             "search.space")
        problems = self.check({})
        if problems:
            raise UsageError(f"objective.params: {problems[0]}", hint="give plain JSON values")

    def check(self, params: dict[str, Any]) -> list[str]:
        """Problems of a trial's params before it runs: they must make a JSON file."""
        try:
            json.dumps(nested_params(self.base_params, params), allow_nan=False)
        except (TypeError, ValueError) as exc:
            return [f"the params cannot be written as JSON: {exc}"]
        return []

    # ------------------------------------------------------------------ one trial

    def run(self, number: int, params: dict[str, Any], report: Callable[[int, float], bool]) -> dict[str, Any]:
        folder = self.trial_dir(number).absolute()  # the command runs in cwd: a relative --out would miss it
        folder.mkdir(parents=True, exist_ok=True)
        params_path = folder / "params.json"
        atomic_write_json(params_path, nested_params(self.base_params, params))
        with contextlib.suppress(FileNotFoundError):
            (folder / "metrics.json").unlink()  # a stale one must not pass for this run's result
        env = {**os.environ, "AGENTLAB_TRIAL_DIR": str(folder), "AGENTLAB_PARAMS": str(params_path)}
        start = time.monotonic()
        run = _Child(self.argv(str(params_path)), self.cwd, env, folder)
        try:
            result, code = self._follow(run, number, report, start)
        finally:
            run.stop()
        seconds = round(time.monotonic() - start, 3)
        if code != 0:
            raise TrialFailed(f"exit code {code} after {seconds:g} s" + _tail(folder / "stderr.log"))
        if result is None:
            result = self._metrics_file(folder)
        return {**self._result(result, folder), "seconds": seconds}

    def _follow(self, run: _Child, number: int, report: Callable[[int, float], bool],
                start: float) -> tuple[dict[str, Any] | None, int]:
        """Read the child's stdout until it ends: step lines go to ``report``, the last result line is kept.
        Returns (the result line or None, the exit code)."""
        result: dict[str, Any] | None = None
        deadline = start + self.timeout_s if self.timeout_s is not None else None
        while True:
            wait = 0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic()))
            try:
                line = run.lines.get(timeout=wait)
            except queue.Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    run.stop()
                    raise self._timed_out(run) from None
                continue
            if line is None:  # stdout closed: the command is ending
                break
            if self.on_line is not None:
                self.on_line(number, line)
            data = _json_object(line)
            if data is None or self.metric not in data:
                continue
            if "step" not in data:
                result = data
                continue
            value, step = data[self.metric], data["step"]
            if _number(value) and _number(step) and float(step).is_integer() and report(int(step), float(value)):
                run.stop()
                raise Pruned({"value": float(value), self.metric: float(value), "step": int(step)})
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            code = run.process.wait(timeout=left)
        except subprocess.TimeoutExpired:
            raise self._timed_out(run) from None
        return result, code

    def _timed_out(self, run: _Child) -> TrialFailed:
        return TrialFailed(f"timed out after {self.timeout_s:g} s (objective.timeout_s)"
                           + _tail(run.folder / "stderr.log"))

    def _metrics_file(self, folder: Path) -> dict[str, Any]:
        path = folder / "metrics.json"
        if not path.is_file():
            raise TrialFailed(f"no result: no stdout line is a JSON object with {self.metric!r} (and no 'step'), "
                              "and the trial folder has no metrics.json" + _tail(folder / "stderr.log"))
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise TrialFailed(f"metrics.json cannot be read: {exc}") from None
        if not isinstance(data, dict) or self.metric not in data:
            raise TrialFailed(f"metrics.json has no {self.metric!r} key" + _tail(folder / "stderr.log"))
        return data

    def _result(self, data: dict[str, Any], folder: Path) -> dict[str, Any]:
        value = data[self.metric]
        if not _number(value) or not math.isfinite(float(value)):
            raise TrialFailed(f"{self.metric} is {value!r}, not a finite number" + _tail(folder / "stderr.log"))
        kept = {k: v for k, v in data.items() if isinstance(v, (str, int, float, bool)) or v is None}
        return {**kept, "value": float(value), self.metric: float(value)}


class _Child:
    """The running command: its own process group, stdout read line by line by a thread, stderr to a file."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str], folder: Path):
        self.folder = folder
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._stderr = open(folder / "stderr.log", "wb")  # noqa: SIM115 - closed in stop()
        self._stdout_log = open(folder / "stdout.log", "wb")  # noqa: SIM115 - closed by the reader thread
        try:
            self.process = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                            stderr=self._stderr, start_new_session=True,
                                            preexec_fn=_die_with_parent())
        except OSError as exc:
            self._stderr.close()
            self._stdout_log.close()
            raise TrialFailed(f"the command could not start: {exc.strerror or exc} ({argv[0]})") from None
        self._reader = threading.Thread(target=self._read, daemon=True, name="agentlab-command-stdout")
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        try:
            for raw in self.process.stdout:
                self._stdout_log.write(raw)
                self._stdout_log.flush()
                self.lines.put(raw.decode("utf-8", errors="replace").rstrip("\r\n"))
        finally:
            self._stdout_log.close()
            self.lines.put(None)

    def stop(self) -> None:
        """End the whole process group (SIGTERM, SIGKILL after a grace period) if it still runs; close the files."""
        kill_group(self.process)
        self._reader.join(timeout=KILL_GRACE_S)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr.close()


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to ``process``'s group, then SIGKILL to what is left of it after ``KILL_GRACE_S``; reaps it."""
    pgid = process.pid  # start_new_session: the child leads its own group
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, KILL_GRACE_S)):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            break  # the group is gone (its leader exited and so did every member)
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        if not _group_alive(pgid):
            break
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=KILL_GRACE_S)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks Linux to SIGKILL the child when agentlab dies (``kill -9`` included); None
    elsewhere. libc is loaded here, before the fork: the child only makes the call."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # agentlab died before the call: nothing would send the signal
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def _json_object(line: str) -> dict[str, Any] | None:
    text = line.strip()
    if not (text.startswith("{") and text.endswith("}")):
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _tail(path: Path, lines: int = STDERR_LINES) -> str:
    """``; stderr (last N lines): ...`` from the trial's stderr.log, or empty when it has nothing."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 16_384))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    kept = [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]
    return f"; stderr (last {len(kept)} lines):\n" + "\n".join(kept) if kept else ""
