"""What every subcommand shares: option spellings, console, progress bars, error printing.

One spelling per concept: -c/--config, --set, --llm, --out, --resume [DIR], --dry-run, --json, -v, --mlflow,
--otlp-endpoint.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import typer.core
from rich.console import Console, ConsoleDimensions

if TYPE_CHECKING:
    from rich.progress import Progress as RichBars
    from rich.progress import TaskID

    from agentlab.core.progress import Progress

class ReaderGone(KeyboardInterrupt):
    """The console's reader went away: a stop like Ctrl-C (the run recorded ``interrupted``, for --resume), said
    as what it is; the command exits 141, as a process killed by SIGPIPE does (a shell's ``pipefail`` tells it)."""

    reason = "interrupted (the output's reader went away: a closed pipe)"


class _Console(Console):
    reader_gone = False  # main() exits 141 then, whatever stopped the run
    LOG_WIDTH = 160  # a table's room when the output is a file or a pipe (rich's 80 cut its numbers to "0.342-1…")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if kwargs.get("width") is None:
            self._width = None  # COLUMNS read when printing (``size``), not frozen at import by rich's __init__

    @property
    def size(self) -> ConsoleDimensions:
        """rich's, but not 80 columns for output that is no terminal (``2> log``, CI) and no COLUMNS: a table
        printed there keeps every figure whole."""
        size = Console.size.fget(self)  # type: ignore[attr-defined]
        if self._width is None and not self.is_terminal and not self._environ.get("COLUMNS", "").isdigit():
            return ConsoleDimensions(max(size.width, self.LOG_WIDTH), size.height)
        return size

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]

    def on_broken_pipe(self) -> None:
        """Whoever read the output went away (``agentlab ... 2>&1 | head -2``): the run stops as on Ctrl-C, recorded
        ``interrupted`` so --resume continues it. rich's own exit recorded the run ``failed`` with "SystemExit: 1"
        and pointed stdout, not this console's stderr, at /dev/null. From a progress bar's refresh thread, a SIGINT
        to this process, so the run stops in the main thread."""
        import os
        import signal
        import threading

        self.quiet = self.reader_gone = True
        to_devnull(self.file)  # what else is written there (a log line) is dropped, not an error
        if threading.current_thread() is threading.main_thread():
            raise ReaderGone
        from agentlab.core.runs import interrupted_by

        interrupted_by(ReaderGone.reason)  # the KeyboardInterrupt the SIGINT raises is recorded as what it is
        os.kill(os.getpid(), signal.SIGINT)


def _flag_shows_no_type(option: typer.core.TyperOption, ctx: Any) -> str | None:
    """The type column of an option in --help: none for a flag (``--force``, ``--json``, ``-h``, ``--wait/--no-wait``)
    or a count (``-v``, ``-vv``), which take no value (Typer showed ``--force <bool>`` and ``-v <int>``, as if one
    were given); else Typer's own."""
    shown: str | None = None if option.is_flag or option.count else _typer_option_type(option, ctx)
    return shown


_typer_option_type: Any = getattr(typer.core.TyperOption, "display_type_rich", None)
if _typer_option_type is not None:  # Typer's (0.29) help hook; another Typer shows its own column, never fails here
    typer.core.TyperOption.display_type_rich = _flag_shows_no_type  # type: ignore[method-assign, assignment]


def stdout_reader_gone(exc: BaseException) -> bool:
    """Whether ``exc`` is the broken pipe of a stdout whose reader went away (``agentlab config show nas | head -0``):
    not that of another pipe (a subprocess's, a socket's), which stays what it is."""
    import errno
    import select

    if not isinstance(exc, OSError) or exc.errno != errno.EPIPE:
        return False
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no file behind stdout (a test's capture): not its pipe
        return False


def to_devnull(stream: Any = None) -> None:
    """Point ``stream`` (stdout when None) at /dev/null, its reader gone: what else is written or flushed there is
    dropped, not an error (Python's last flush of stdout at exit said "Exception ignored ... BrokenPipeError" and
    exited 120)."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, (stream or sys.stdout).fileno())
    finally:
        os.close(devnull)


@contextmanager
def stdout_closed_is_reader_gone() -> Iterator[None]:
    """A broken pipe on stdout (``--json | head -0``) is a reader gone, as on the console's stderr: exit 141, as a
    process SIGPIPE killed, not click's silent exit 1; ``ReaderGone`` (a stop like Ctrl-C) where a run folder opened
    meanwhile is still running, so the run is recorded interrupted, else ``typer.Exit(141)`` (no "interrupted" to
    say: a finished run's ``--json`` lost its reader after the run was recorded)."""
    runs = sys.modules.get("agentlab.core.runs")
    before = runs.opened_count() if runs is not None else 0
    try:
        yield
    except SystemExit as exc:  # rich's own console (Typer's --help) exits 1 on a broken pipe, stdout made /dev/null
        if exc.code != 1 or not isinstance(exc.__context__, BrokenPipeError):
            raise
        console.reader_gone = True
        raise typer.Exit(141) from None
    except OSError as exc:
        if not stdout_reader_gone(exc):
            raise
        to_devnull()
        console.reader_gone = True
        runs = sys.modules.get("agentlab.core.runs")
        if runs is not None and runs.opened_count() != before and _still_running(runs.opened_run()):
            raise ReaderGone from None
        raise typer.Exit(141) from None


def _still_running(folder: Path | None) -> bool:
    """Whether run folder ``folder``'s run.json says it is running (not yet recorded as ended)."""
    from agentlab.core import runs

    try:
        return folder is not None and runs.read_json(folder / "run.json").get("status") == runs.RUNNING
    except Exception:  # run.json missing or damaged: no run that goes on to record
        return False


# Human output goes to stderr so --json stdout stays clean; soft wrap keeps long paths and messages on one line.
# No emoji codes: model text saying ":fire:" prints as written (see safe_text).
console = _Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("-c", "--config", help="YAML config file. Without it the built-in defaults run (offline).",
                 show_default=False, dir_okay=False),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override one config value, parsed as YAML: --set key.path=value (repeatable).",
                 show_default=False, metavar="KEY=VALUE"),
]
LLM_HELP = ("LLM routing config (providers, models, routes), or a built-in model's name (qwen2.5-coder-0.5b: that "
             "model on the default route, which every route falls back to). Default: configs/llm.yaml if present")
# no dir_okay=False: a folder named like a built-in model (`models export-hf smollm2-135m --out smollm2-135m`) does
# not hide the model (core/llm/config.py routing_source); any other folder is refused there, naming it


def llm_path(value: str | Path) -> Path:
    """``--llm``'s parser: ``--llm ''`` is refused as empty (it was read as the current folder, ".: is a directory")."""
    return nonempty_path(value, "the routing config file (or a built-in model's name), or leave --llm out")


LLMOpt = Annotated[Path | None, typer.Option("--llm", help=f"{LLM_HELP}.", show_default=False,
                                             metavar="FILE|MODEL", parser=llm_path)]
ResumeLLMOpt = Annotated[  # nas and compress: --resume asks the run's own routing config again
    Path | None,
    typer.Option("--llm", help=f"{LLM_HELP}; with --resume, the one the run used (its llm.yaml).", show_default=False,
                 metavar="FILE|MODEL", parser=llm_path),
]
OutOpt = Annotated[
    Path | None,
    typer.Option("--out", help="Exact run folder to create (default: a new folder <timestamp>-<name> under "
                 "runs/<command>/).",
                 show_default=False, file_okay=False, parser=lambda value: nonempty_path(value), metavar="<dir>"),
]
AnswerOpt = Annotated[
    str | None,
    typer.Option("--answer", help="With --resume of a run stopped at an --approve question: the answer, yes, no or "
                 'JSON {"answer": "edit", "changes": {...}, "note": "..."} (a config; a code change: "edits": '
                 '[{"path", "old", "new"}, ...] for "changes"), as `agentlab ui` passes it.',
                 show_default=False),
]
ResumeOpt = Annotated[
    str | None,
    typer.Option("--resume", help="Continue a stopped run: --resume DIR, or a bare --resume for the latest run.",
                 show_default=False, metavar="[DIR]"),
]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Check the config and every input and show what would "
                                         "run; nothing is trained and no run folder is written.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the results as JSON on stdout.")]
NoLogPromptsOpt = Annotated[bool, typer.Option(
    "--no-log-prompts", help="Do not keep LLM calls' messages and replies in the run folder's llm_calls.jsonl "
    "(events.jsonl still records each call's model, tokens and timing).")]
VerboseOpt = Annotated[int, typer.Option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")]
StorageOpt = Annotated[
    str | None,
    typer.Option("--storage", help="Optuna storage of the search's study, shared by several workers or runs: "
                 "sqlite:///f.db, an RDB URL, or a journal file path. Default: study.db in the run folder.",
                 show_default=False, metavar="URL"),
]
MlflowOpt = Annotated[
    str | None,
    typer.Option("--mlflow", help="Log the run to MLflow (needs mlflow, the extra `track`): a tracking URI such as "
                 "sqlite:///mlflow.db or http://HOST:5000. Default: the config's `mlflow` (none: no tracking).",
                 show_default=False, metavar="URI"),
]

OtlpOpt = Annotated[
    str | None,
    typer.Option("--otlp-endpoint", help="Send OpenTelemetry spans of every LLM request and model attempt (models, "
                 "tokens, outcome, fallbacks; no prompt text: see the docs' concepts/tracking.md) to this OTLP "
                 "HTTP receiver (needs the extra `trace`): Jaeger http://HOST:4318, Phoenix http://HOST:6006, "
                 "Langfuse's /api/public/otel on its host.", show_default=False, metavar="URL"),
]


# C0 controls but newline and tab, DEL, C1 controls, and the Unicode bidi embeddings / overrides / isolates.
# A byte of a file name or argument that is not UTF-8 (a lone surrogate) is shown as the byte, \xe9: printing it failed.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\udc80-\udcff]")


def opt(*names: str, help: str) -> Any:
    """An option whose default is not shown in --help (the help text says the default, from the config)."""
    return typer.Option(*names, help=help, show_default=False)


def safe_text(text: object, *, stdout: bool = False) -> str:
    """Model or file text made safe to show on a terminal: every control character but newline and tab, and every
    bidi override, is shown as its Python escape (``\\x1b``, ``\\r``, ``\\x08``, ``\\u202e``) instead of moving the
    cursor, recolouring the terminal or hiding text; rich markup (``[red]``) is escaped so it prints as written.

    For ``console.print`` and rich tables by default. ``stdout=True``: the text is for a plain ``typer.echo`` on
    stdout (no markup to escape), and it is returned unchanged when stdout is not a terminal, so that
    ``> answer.txt`` keeps the model's exact text (pass ``color=True`` to echo, or click strips ANSI codes).
    """
    from rich.markup import escape

    text = "" if text is None else str(text)
    if stdout and not sys.stdout.isatty():
        return text
    shown = _UNSAFE.sub(lambda m: f"\\x{ord(m.group()) - 0xdc00:02x}" if m.group() >= "\udc80" else
                        repr(m.group())[1:-1], text)
    return shown if stdout else escape(shown)


def setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = _line_handler(timed=verbose > 0)
    handler.addFilter(_Scrub())
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler], force=True)
    # httpx logs every request at INFO: keep it for -vv only.
    logging.getLogger("httpx").setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)
    # the libraries' import-time loggers are quieted once for every subcommand, in `cli.main`


def _line_handler(timed: bool) -> logging.Handler:
    """A log record as one line like the command's own (``warning: ...``, ``error: ...``; with -v the time first),
    through the console, so progress bars stay whole. rich's own layout put a date stamp and a level column before
    each record and padded it with spaces to the console's width."""
    import time

    from rich.console import Group, RenderableType
    from rich.logging import RichHandler
    from rich.text import Text

    class LineHandler(RichHandler):
        STYLES = {"warning": "yellow", "error": "red", "critical": "red"}

        def render(self, *, record: logging.LogRecord, traceback: Any, message_renderable: Any) -> Any:
            level = record.levelname.lower()
            line = Text(time.strftime("%H:%M:%S ", time.localtime(record.created)) if timed else "", style="dim")
            line.append(f"{level}: ", style=self.STYLES.get(level, "dim"))
            line.append_text(message_renderable) if isinstance(message_renderable, Text) else \
                line.append(str(message_renderable))
            parts: list[RenderableType] = [line, traceback] if traceback is not None else [line]
            return Group(*parts) if len(parts) > 1 else line

    return LineHandler(console=console, show_path=False)


class _Scrub(logging.Filter):
    """Secrets out of every console log line, the libraries' included (httpx logs each request's URL, which may hold
    a provider's ``user:KEY@`` or ``?key=``): as run folders scrub them."""

    def __init__(self) -> None:
        super().__init__()
        from agentlab.core.config import secret_values

        self.known = secret_values()

    def filter(self, record: logging.LogRecord) -> bool:
        from agentlab.core.config import scrub_text

        try:
            message = record.getMessage()
        except Exception:  # a library's malformed call: logging's own error report, as without this filter
            return True
        scrubbed = scrub_text(message, known=self.known)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        if record.exc_info and not record.exc_text:  # a traceback's text too (an exception naming a URL with a key)
            record.exc_text = scrub_text(logging.Formatter().formatException(record.exc_info), known=self.known)
        return True


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


class _RichTask:
    def __init__(self, progress: RichBars, task_id: TaskID):
        self._progress, self._id = progress, task_id

    def advance(self, n: float = 1, description: str | None = None) -> None:
        if description is None:
            self._progress.advance(self._id, n)
        else:
            self._progress.update(self._id, advance=n, description=description)

    def update(self, *, completed: float | None = None, total: float | None = None,
               description: str | None = None) -> None:
        given = {"completed": completed, "total": total, "description": description}
        fields: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
        self._progress.update(self._id, **fields)


class RichProgress:
    """The library's ``Progress`` protocol drawn as rich progress bars on stderr."""

    def __init__(self, progress: RichBars):
        self._progress = progress  # drawn from the first task on: an error before any task prints alone

    def task(self, description: str, total: float | None = None) -> _RichTask:
        if not self._progress.live.is_started:
            self._progress.start()
        return _RichTask(self._progress, self._progress.add_task(description, total=total))

    def close(self) -> None:
        if self._progress.live.is_started:
            self._progress.stop()


class _LineTask:
    def __init__(self, lines: LineProgress, description: str, total: float | None):
        self._lines, self.description, self.total, self.completed = lines, description, total, 0.0

    def advance(self, n: float = 1, description: str | None = None) -> None:
        self.update(completed=self.completed + n, description=description)

    def update(self, *, completed: float | None = None, total: float | None = None,
               description: str | None = None) -> None:
        self.completed = self.completed if completed is None else completed
        self.total = self.total if total is None else total
        self.description = self.description if description is None else description
        self._lines.tick(self)


def _count(value: float) -> str:
    """A progress count as written: whole numbers whole (1000000, not 1e+06)."""
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"


class LineProgress:
    """Progress where stderr is no terminal (a log file, CI): a plain line of the task that moved last, at most
    one every ``every_s`` seconds, so a long run's log says where it is; nothing at the end (rich's bars printed
    their last frame there, after the summary)."""

    def __init__(self, every_s: float = 60.0):
        self.every_s, self._start = every_s, time.monotonic()
        self._last = self._start

    def task(self, description: str, total: float | None = None) -> _LineTask:
        return _LineTask(self, description, total)

    def tick(self, task: _LineTask) -> None:
        now = time.monotonic()
        if now - self._last < self.every_s:
            return
        self._last = now
        done = f" {_count(task.completed)}/{_count(task.total)} done" if task.total else ""
        elapsed = int(now - self._start)
        console.print(safe_text(f"progress: {task.description}{done} "
                                f"({elapsed // 3600}:{elapsed % 3600 // 60:02d}:{elapsed % 60:02d} elapsed)"),
                      highlight=False, soft_wrap=True)

    def close(self) -> None:
        pass


@contextmanager
def rich_progress(enabled: bool = True) -> Iterator[Progress]:
    """Progress bars while the block runs; a line now and then where stderr is no terminal (``LineProgress``); a
    no-op progress when disabled (--json)."""
    from agentlab.core.progress import NullProgress

    if not enabled:
        yield NullProgress()
        return
    if not console.is_terminal:
        yield LineProgress()
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    # elapsed, then the time left as rich estimates it from the pace so far ("-:--:--" until it can)
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("left"), TimeRemainingColumn()]
    bars = RichProgress(Progress(*columns, console=console, transient=False))
    try:
        yield bars
    finally:
        bars.close()


def approver_for(planner: str, approve: bool, answer: str | None = None, *, dry_run: bool = False,
                 example: str = '{"model.d_model": 32}') -> Any:
    """--approve's approver, or None without --approve (refused, exit 2, with another planner than the agent). The
    agent's graph stops at an interrupt before each step it wants to run; the approver's reply resumes it
    (``core.agent.approval``). ``answer`` (--answer, what `agentlab ui` passes when it resumes a run) answers the
    approval the run stopped at. Then, in a terminal, it shows the step and reads yes / no / edit; without one,
    under `agentlab ui` (``AGENTLAB_APPROVE_UI=1``), the run stops at the approval (run.json: waiting for approval)
    for the UI to answer; otherwise --approve is refused before anything runs (exit 2), except in a ``dry_run``,
    which asks nothing. ``example``: the command's own settings, for the hint of an --answer that cannot be read."""
    from agentlab.core.errors import UsageError, shell_word

    if not approve:
        if answer is not None:
            raise UsageError("--answer answers an approval of --approve", hint="resume a run started with "
                             "--planner agent --approve, or leave out --answer")
        return None
    if planner != "agent":
        raise UsageError("--approve asks before each step of the agent planner", hint="add --planner agent")
    from agentlab.core.agent import approval

    given: list[dict[str, Any]] = []
    if answer is not None:
        try:
            given.append(approval.parse_answer(answer))
        except ValueError as exc:
            raise UsageError(str(exc), hint=f'e.g. --answer yes, or --answer \'{{"answer": "edit", "changes": '
                             f'{example}}}\' (the settings --dry-run lists)') from None
    tty = sys.stdin.isatty()
    if not tty and not given and not approval.ui_answers() and not dry_run:
        # nobody could answer: refused before anything runs, not a search that waits for ever
        raise UsageError("--approve needs a terminal to ask in, and stdin is not one",
                         hint=f"run it in a terminal, or start it from `agentlab ui` (or set "
                         f"{approval.APPROVE_UI_ENV}=1 and answer with --resume RUN --answer yes), or leave out "
                         "--approve")

    def approver(action: dict[str, Any]) -> dict[str, Any]:
        lives = list(getattr(console, "_live_stack", []) or [])
        for live in lives:
            live.stop()
        try:
            console.print(safe_text(approval.describe(action)))
            if given:
                reply = given.pop()
                console.print(safe_text(f"answer given with --answer: {reply['answer']}"))
            elif tty:
                reply = _ask_terminal(action)
            else:
                run = action.get("run", ".")
                console.print(safe_text(f"{approval.WAITING}: answer on the run's page in `agentlab ui`, or "
                                        f"resume with --resume {shell_word(run)} --answer yes|no|JSON"))
                raise approval.AwaitingApproval
            console.print(safe_text(_echo(action, reply)))
            return reply
        finally:
            for live in lives:
                live.start()

    return approver


def waiting_question(run: Path | None, command: str, *, finished: bool = False) -> dict[str, Any]:
    """The --approve question ``run`` stopped at (``approval.pending``: the one the user saw), which --answer answers;
    refused (exit 2, before anything runs) when no run is resumed, the run has nothing left to run (``finished``) or
    it is not stopped at a question: the answer went to the first question the run asked next, one nobody saw."""
    from agentlab.core.agent.approval import pending
    from agentlab.core.errors import UsageError, shell_word

    if run is None:
        raise UsageError("--answer answers the --approve question a run stopped at, and no run is resumed",
                         hint=f"give --resume RUN of a run stopped at a question (agentlab {command} --resume RUN "
                         "--answer yes), or leave out --answer: a new run asks in the terminal")
    if finished:
        raise UsageError(f"--answer: {run} has nothing left to run, so no question waits for an answer",
                         hint="leave out --answer (give a higher --max-iterations to search on; it asks in the "
                         "terminal)")
    asked = pending(run)
    if asked is None:
        raise UsageError(f"--answer: {run} is not stopped at an --approve question, so the answer would go to a "
                         "question nobody has seen", hint=f"resume it without --answer, in a terminal, to be shown "
                         f"each question: agentlab {command} --resume {shell_word(run)}")
    return asked


def _echo(action: dict[str, Any], reply: dict[str, Any]) -> str:
    """What the answer does, in one line: the console says what runs (an edit: the proposal with the changes)."""
    if reply.get("answer") == "edit" and (reply.get("args") or {}).get("edits") is not None:
        return "edited: runs the change with your new text (checked first; if not valid, asked again)"
    if reply.get("answer") == "edit":
        changes = (reply.get("args") or {}).get("changes") or {}
        params = {**(action.get("params") or {}), **changes}
        return "edited: runs " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                           for k, v in params.items()) + " (checked first; if not valid, not run)"
    if reply.get("answer") == "no":
        note = reply.get("note")
        return "declined" + (f" ({note})" if note else "") + ": the agent proposes something else, never this again"
    return "approved: it runs"


def _new_texts(action: dict[str, Any]) -> list[dict[str, str]]:
    """A code change's edits with the new text of each read from the terminal (lines up to one holding only '.')."""
    from agentlab.core.agent.approval import AwaitingApproval

    edits = []
    for i, edit in enumerate((action.get("args") or {}).get("edits") or []):
        console.print(safe_text(f"edit {i} of {edit['path']}: the new text for\n{edit['old']}"))  # markup escaped
        console.print("(type it, then a line holding only '.')", markup=False)
        lines = []
        while True:
            line = sys.stdin.readline()
            if not line:
                raise AwaitingApproval
            if line.rstrip("\r\n") == ".":
                break
            lines.append(line)
        new = "".join(lines)
        if not edit["new"].endswith("\n"):
            new = new.removesuffix("\n")
        edits.append({"path": edit["path"], "old": edit["old"], "new": new})
    return edits


def _ask_terminal(action: dict[str, Any]) -> dict[str, Any]:
    """y / n / e read from the terminal (with the note, the changes or a code change's new texts asked next), asked
    again until one of them."""
    from agentlab.core.agent.approval import AwaitingApproval, make_answer, parse_changes

    while True:
        # markup off: Rich would read [y] and [e] as style tags and print "approve? es / o / dit"
        console.print("approve? [y]es / [n]o / [e]dit: ", end="", markup=False)
        line = sys.stdin.readline()
        if not line:  # the terminal closed: nobody can answer; the approval stays in the checkpoint
            raise AwaitingApproval
        answer = line.strip().lower()
        if answer in ("", "y", "yes"):
            return make_answer("yes")
        if answer in ("n", "no"):
            return make_answer("no", input("note for the agent (optional): ").strip())
        if answer in ("e", "edit") and action.get("diff") is not None:
            return make_answer("edit", edits=_new_texts(action))
        if answer in ("e", "edit"):
            return make_answer("edit", changes=parse_changes(
                input("changes (key=value, comma-separated) to this proposal: ")))
        console.print("answer y, n or e")


def nonempty_path(value: str | Path, what: str = "a folder path") -> Path:
    """A path argument as typed (``parser=`` of a typer option or argument): an empty one is refused (``Path("")`` is
    the current folder: `make-tiny ''` was refused as `.`, `list ''` listed the current folder, `eval tasks --export
    ''` wrote into it), as `agentlab ui --runs ''` is. ``what``: what to give instead."""
    if not str(value):
        raise typer.BadParameter(f"empty; give {what}")
    return Path(value)
