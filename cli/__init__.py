"""The shell face of agentlab: a Typer app with one small module per subcommand.

Only this package imports typer and rich's console; the library returns data, logs, and raises AgentlabError.
Subcommand modules import their command package lazily so `agentlab --help` stays fast and never imports torch.
"""

from __future__ import annotations

import gc
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any, cast

import typer
import typer.core
from rich.markup import escape

from agentlab import __version__
from agentlab.cli.commands import COMMANDS, RESUME_ADVICE, continue_with, register
from agentlab.core.entry import command_line

# The order of `agentlab --help`: the README's (the jobs, then the LLM tools, then the helpers); a command left out
# comes last, in the order of the table in commands.py.
HELP_ORDER = ("nas", "compress", "train-persona", "debate", "evolve", "eval", "pipeline", "llm-bench", "serve", "ui",
              "models", "config")


class _TableOrder(typer.core.TyperGroup):
    """Lists the commands in ``HELP_ORDER`` (Typer puts groups after single commands, which sent `nas`, the main job,
    to the middle of `agentlab --help` once it gained `nas predict`)."""

    def list_commands(self, ctx: Any) -> list[str]:
        names = [*HELP_ORDER, *(c.name for c in COMMANDS if c.name not in HELP_ORDER)]
        order = {name: i for i, name in enumerate(names)}
        return sorted(super().list_commands(ctx), key=lambda name: order.get(name, len(order)))

    # stdout's reader gone (`config show nas | head -0`): exit 141, not click's exit 1 (its EPIPE handler sits in
    # main, around these two: --help, --version and every command's output)
    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        from .common import stdout_closed_is_reader_gone

        with stdout_closed_is_reader_gone():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: Any) -> Any:
        from .common import stdout_closed_is_reader_gone

        with stdout_closed_is_reader_gone():
            return super().invoke(ctx)


app = typer.Typer(
    name="agentlab",
    cls=_TableOrder,
    help="LLM-driven ML experiments from the shell. Each command reads YAML and writes a run folder under runs/.\n\n"
         "New here: `agentlab nas --max-iterations 3` runs a short search offline; docs/getting-started.md runs "
         "every command once.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)
register(app)  # every command comes from the one table in commands.py


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"agentlab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version_callback, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """LLM-driven ML experiments from the shell."""


def _expand_bare_resume(argv: list[str]) -> list[str]:
    """`--resume` may stand alone (latest run) or take a folder; click options cannot, so give it an empty value."""
    out: list[str] = []
    for index, arg in enumerate(argv):
        out.append(arg)
        if arg == "--resume":
            following = argv[index + 1] if index + 1 < len(argv) else None
            if following is None or following.startswith("-"):
                out.append("")
    return out


def _resume_value(args: list[str]) -> str | None:
    """The folder of ``--resume DIR`` / ``--resume=DIR`` in ``args`` ("" for a bare --resume: the latest run), None
    without --resume."""
    for index, arg in enumerate(args):
        if arg == "--resume":
            return args[index + 1] if index + 1 < len(args) else ""
        if arg.startswith("--resume="):
            return arg.removeprefix("--resume=")
    return None


# commands that write no run folder: a file name that is not UTF-8 (a Latin-1 one) is read as Linux allows
_READ_ONLY = ("config", "models", "ui")
# their subcommands that write files all the same: a model folder named so failed as an internal error
# (UnicodeEncodeError) once the model was built
_WRITES = {"models": ("make-tiny", "export-hf")}


def _checks_utf8(name: str, sub: str) -> bool:
    """Whether the arguments of ``agentlab NAME SUB`` must be UTF-8 text (see :func:`_not_utf8`)."""
    return name not in _READ_ONLY or sub in _WRITES.get(name, ())


def _makes_run_folder(name: str, sub: str) -> bool:
    """Whether ``agentlab NAME SUB`` keeps its arguments in a run folder (the table's ``no_run_folder``)."""
    command = next((c for c in COMMANDS if c.name == name), None)
    return name not in _READ_ONLY and not (command is not None and sub and sub in command.no_run_folder)


def _parameter_at(args: list[str], index: int) -> str | None:
    """The name of the command's positional parameter that ``args[index]`` fills (``OUT`` of ``models make-tiny
    OUT``: the parameter's name in upper case, as usage lines write it); None where the command line does not parse
    far enough to tell."""
    try:
        command: Any = typer.main.get_command(app)
        ctx = command.make_context("agentlab", list(args), resilient_parsing=True)
        while hasattr(command, "resolve_command"):  # a group: on to its subcommand
            protected = getattr(ctx, "_protected_args", None)  # click 8.2; 8.1 names it without the underscore
            rest = [*(getattr(ctx, "protected_args", []) if protected is None else protected), *ctx.args]
            if not rest:
                return None
            name, command, rest = command.resolve_command(ctx, rest)
            if command is None:
                return None
            ctx = command.make_context(name, rest, parent=ctx, resilient_parsing=True)
    except Exception:  # a command line click refuses: its own error says more once the command runs
        return None
    for param in command.params:
        if param.param_type_name != "argument":
            continue
        value = ctx.params.get(param.name)
        values = value if isinstance(value, list | tuple) else [value]
        if any(v is not None and str(v) in (args[index], str(Path(args[index]))) for v in values):
            return str(param.metavar or (param.name or "").upper())
    return None


def _not_utf8(args: list[str], run_folder: bool = True) -> tuple[str, str] | None:
    """A command-line argument holding a byte that is not UTF-8 (Python keeps it as a lone surrogate,
    ``$(printf 'caf\\xe9')``), as one line naming the option: run folders record their arguments (a topic, an input,
    the --out path) as UTF-8 text, and writing one failed as an internal error after the folder was made.
    ``run_folder``: whether the command makes one (the hint says why UTF-8 only where that is the reason)."""
    for index, arg in enumerate(args):
        bad = re.search("[\udc80-\udcff]", arg)
        if bad is None:
            continue
        option, equals, value = arg.partition("=")
        if arg.startswith("--") and equals and bad.start() > len(option):  # --out=VALUE
            where, at = option, bad.start() - len(option) - 1
        elif (name := _parameter_at(args, index)) is not None:  # before the option ahead of it: --force OUT
            where, at = name, bad.start()
        elif index and args[index - 1].startswith("-") and "=" not in args[index - 1]:
            where, at = args[index - 1], bad.start()
        else:
            where, at = f"argument {index + 1}", bad.start()
        convert = "text in another encoding converts with `iconv -f latin1 -t utf-8`"
        return (f"{where}: not UTF-8 text (byte 0x{ord(bad.group()) - 0xdc00:02x} at character {at + 1})",
                f"agentlab keeps its arguments in the run folder as UTF-8 text: give this one in UTF-8 ({convert})"
                if run_folder else f"give this one in UTF-8 ({convert}; a file or folder named otherwise can be "
                "renamed with `mv`)")
    return None


def _usage_error(exc: Any) -> tuple[str, str]:
    """A click usage error (a missing argument, an unknown option, a bad value) as agentlab's other errors read:
    one line, and a hint with the command's usage and its help (click's own print is a box over several lines)."""
    message = exc.format_message().replace("Value error, ", "")  # a pydantic validator's words, said once
    errors = getattr(exc.__cause__, "errors", None)  # typer checks an option's min/max with pydantic
    if callable(errors):
        from agentlab.core.config import nan_bound_message

        first = next(iter(errors()), None)
        said = nan_bound_message(first) if first is not None else None
        if first is not None and said is not None:  # `--mut nan`: "should be less than or equal to 1"
            message = message.replace(str(first["msg"]), said)  # named a bound it does not break
    said = getattr(getattr(exc, "param", None), "help", None)
    if type(exc).__name__ == "MissingParameter" and said:  # `config show`: the argument's help names which to give
        message = f"{message.rstrip('.')}: {said}"
    ctx = getattr(exc, "ctx", None)
    if ctx is None:
        return message, "see `agentlab -h`"
    return message, f"usage: {ctx.get_usage().removeprefix('Usage: ')}; see `{ctx.command_path} -h`"


def _sigterm_to_interrupt(signum: int, frame: object) -> None:
    # Run folders record `interrupted` for KeyboardInterrupt; treat `kill` the same as Ctrl-C.
    raise KeyboardInterrupt


def keep_interrupts() -> None:
    """A Ctrl-C (or SIGTERM) whose KeyboardInterrupt lands inside a finalizer (a weakref callback, ``__del__``)
    is swallowed by Python ("Exception ignored in: ...") and the run went on to its end, exit 0: such an interrupt
    is delivered again, so it stops the run where it runs now."""
    previous = sys.unraisablehook
    if getattr(previous, "keeps_interrupts", False):  # main() called again in one process
        return

    def hook(unraisable: Any) -> None:
        if isinstance(unraisable.exc_value, KeyboardInterrupt):  # sent again from a thread a moment later: the
            # handler runs in the main thread at its next step, outside the finalizer (sent from here, it would run
            # here, inside it, and be swallowed again)
            import threading
            import time

            def again() -> None:
                time.sleep(0.01)
                os.kill(os.getpid(), signal.SIGINT)

            threading.Thread(target=again, name="agentlab-interrupt", daemon=True).start()
            return
        previous(unraisable)

    hook.keeps_interrupts = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def main(argv: list[str] | None = None) -> int:
    """Console-script entry: runs the app and turns errors into one line, a hint and an exit code.

    Any exception is one line (the traceback only with AGENTLAB_DEBUG=1): an ``AgentlabError`` with its own exit
    code, a missing optional package with the extra that installs it (exit 2), anything else as an internal error
    (exit 1) with the way to see and report the traceback. A command whose output's reader went away (``| head``)
    exits 141, as one killed by SIGPIPE (``common.ReaderGone``).
    """
    from .common import ReaderGone, console

    console.reader_gone = False
    if (runs := sys.modules.get("agentlab.core.runs")) is not None:  # not imported for --help: too slow
        runs.interrupted_by(None)
    try:
        code = _main(argv)
    except ReaderGone:  # the reader left while an error or the interruption was being said
        code = 141
    return 141 if console.reader_gone else code


def _main(argv: list[str] | None) -> int:
    from agentlab.core.errors import AgentlabError, missing_package, shell_word, storage_error

    from .common import console, safe_text

    debug = os.environ.get("AGENTLAB_DEBUG") == "1"

    def scrub(text: str) -> str:
        """A key or a URL's password as given never reaches the console; a .env that cannot be read (the error
        may be about it) leaves the URL credentials scrubbed."""
        from agentlab.core.config import scrub_text

        try:
            return scrub_text(text)
        except AgentlabError:
            return scrub_text(text, known={})

    def fail(message: str, hint: str | None, code: int) -> int:
        if debug and sys.exc_info()[0] is not None:  # a refusal before the command ran has no traceback to show
            console.print_exception()
        console.print(f"[bold red]error:[/] {safe_text(scrub(message))}", soft_wrap=True)
        if hint:
            console.print(f"[yellow]hint:[/] {safe_text(scrub(hint))}", soft_wrap=True)
        return code

    given = list(sys.argv[1:] if argv is None else argv)
    args = _expand_bare_resume(given)
    name = next((a for a in args if not a.startswith("-")), "")
    # a group's subcommand comes right after its name (`train-persona export ...`)
    sub = args[args.index(name) + 1] if name and args.index(name) + 1 < len(args) else ""
    undecodable = _not_utf8(args, _makes_run_folder(name, sub)) if _checks_utf8(name, sub) else None
    if undecodable is not None:
        return fail(*undecodable, 2)
    runs = sys.modules.get("agentlab.core.runs")  # not imported for --help: too slow to import here
    before = runs.opened_count() if runs is not None else 0

    def this_run() -> Path | None:
        """The run folder this call opened (None: none): what Ctrl-C's line and a full disk's speak of."""
        from agentlab.core.runs import opened_count, opened_run

        return opened_run() if opened_count() != before else None

    def interrupted() -> str:
        """What Ctrl-C printed: how to continue, the run folder named when this call opened one. Nothing in the
        other processes of a ``torchrun`` / ``accelerate launch`` (``RANK`` > 0): the main one says it once."""
        from agentlab.core.train.dist import is_main, world_size

        if world_size() > 1 and not is_main():
            return ""
        folder = this_run()
        advice = continue_with(name, sub, folder)  # here, not at start: a command's own advice may import its package
        command = next((c for c in COMMANDS if c.name == name), None)
        # a command's own advice as a text (pipeline's "the finished stages are kept") speaks of the run folder it
        # made: with none made, what every command says (a function of the folder knows it made none)
        no_folder = folder is None and bool(advice) and command is not None and advice == command.continue_with
        if advice != RESUME_ADVICE and not no_folder:
            return "[yellow]interrupted[/]" + (f"; {escape(advice)}" if advice else "")
        if folder is None:
            resuming = _resume_value(args)
            if resuming is not None:  # stopped before the run was opened (imports, checks): it is as it was
                again = f" {escape(safe_text(shell_word(resuming)))}" if resuming else ""
                return ("[yellow]interrupted[/] before the run was resumed (left as it was); continue with "
                        f"--resume{again}")
            return "[yellow]interrupted[/] before a run folder was made: nothing to resume; run the command again"
        return f"[yellow]interrupted[/]; continue with --resume {escape(safe_text(shell_word(folder)))}"
    signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
    keep_interrupts()
    from agentlab.core.models.device import quiet_imports  # logger levels only: every subcommand, with or without -v

    quiet_imports()
    try:
        # Non-standalone: typer returns Exit codes (130 for Ctrl-C) and raises usage errors for us to print. The runs
        # it opens record this command line as theirs (run.json's argv), not whatever process called main.
        with command_line(["agentlab", *given]):  # as typed (a bare --resume without the "" it is read with)
            result = app(args=args, prog_name="agentlab", standalone_mode=False)
        if result == 130 and (said := interrupted()):  # typer turns a KeyboardInterrupt (Ctrl-C, or SIGTERM
            console.print(said)  # above) into Exit(130) and returns it
        return result if isinstance(result, int) else 0
    except AgentlabError as exc:
        return fail(exc.message, exc.hint, exc.exit_code)
    except typer.Exit as exc:
        return exc.exit_code
    except typer.TyperException as exc:  # click's usage errors (vendored by typer): exit code 2
        if type(exc).__name__ == "NoArgsIsHelpError":  # a group without its subcommand: the help is printed already
            return exc.exit_code
        message, hint = _usage_error(cast(Any, exc))
        return fail(message, hint, exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        if said := interrupted():
            console.print(said)
        return 130
    except ImportError as exc:
        missing = missing_package(exc)
        if missing is None:
            return fail(f"internal error: {type(exc).__name__}: {exc}", _REPORT, 1)
        return fail(missing.message, missing.hint, missing.exit_code)
    except OSError as exc:  # the disk or the system, not a bug: a full disk, a folder we may not write
        full = storage_error(exc, run=this_run() is not None)
        if full is not None:
            return fail(full.message, full.hint, full.exit_code)
        where = f"{exc.filename}: " if exc.filename else ""
        return fail(f"{where}{exc.strerror or exc}", "check the path, the free disk space and the permissions", 1)
    except Exception as exc:  # a bug: one line, not a traceback (AGENTLAB_DEBUG=1 shows it)
        from agentlab.core.runs import caused_by_interrupt

        if caused_by_interrupt(exc):  # raised while a Ctrl-C / SIGTERM was handled: the run was interrupted
            if debug:
                console.print_exception()
            if said := interrupted():
                console.print(said)
            return 130
        full = storage_error(exc, run=this_run() is not None)  # a full disk under a library (SQLite): no bug
        if full is not None:
            return fail(full.message, full.hint, full.exit_code)
        return fail(f"internal error: {type(exc).__name__}: {exc}", _REPORT, 1)


_REPORT = "run again with AGENTLAB_DEBUG=1 for the traceback, and report it with the command you ran"


def run() -> None:
    code = main()
    try:  # what is left in stdout's buffer, while an error can still be told from a reader gone
        sys.stdout.flush()
    except OSError as exc:
        from .common import stdout_reader_gone, to_devnull

        if not stdout_reader_gone(exc):
            raise
        to_devnull()
        code = 141
    _exit_at_once_on_signal(code)
    # the interpreter's last garbage collection walks every object of ~2,000 modules (torch's among them): 1-2.5 s
    # after the last line was said. Frozen objects are skipped by it; module teardown and atexit (MLflow,
    # OpenTelemetry) still run, and agentlab's own files are written and closed by now.
    gc.freeze()
    sys.exit(code)


def _exit_at_once_on_signal(code: int) -> None:
    """From here on a Ctrl-C or SIGTERM ends the process at once with the exit code already decided (the interrupted
    one, 130, when that is what it was). Python's shutdown joins worker threads, a llama.cpp model's among them, which
    ends its step first: a second Ctrl-C there raised in the join, and the shutdown freed the model under the running
    thread (a segmentation fault, exit 139, after "interrupted" had been said). agentlab's own files are written by
    now; an exit at once skips the atexit handlers (an OpenTelemetry or MLflow flush still pending)."""
    def leave(signum: int, frame: Any) -> None:
        os._exit(code if code else 128 + signum)

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # the reader went away, or the stream was closed
            pass
    signal.signal(signal.SIGINT, leave)
    signal.signal(signal.SIGTERM, leave)
