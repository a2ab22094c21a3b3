"""`run_command`: what every command that writes a run folder does, written once.

load the config (defaults -> YAML -> --set -> flags) -> validate every input that can be checked (``prepare``) ->
RunDir (create, or resume the given / latest real run) -> progress bars -> the summary, or ``--json``.

Nothing is created on disk before the config and the inputs validate, so bad input leaves no half-made run folder,
and a bare ``--resume`` only ever finds runs that really started (``RunDir.latest``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from .common import console, print_json, rich_progress, safe_text, setup_logging

if TYPE_CHECKING:
    from pydantic import BaseModel

    from agentlab.core.config import Flag
    from agentlab.core.runs import RunDir


def flags(*items: tuple[str, str, Any]) -> list[Flag]:
    """``(option, config key, value)`` of the options that stand for config keys; options left unset are skipped."""
    from agentlab.core.config import Flag

    return [Flag(option, key, value) for option, key, value in items if value is not None]


@dataclass(frozen=True)
class CommandSpec:
    """What a command is: the same on every call of it. ``name`` is the command (``runs/NAME/``).

    ``model`` validates the ``-c`` file (or ``load(sets)`` builds the config when a command reads several files);
    ``base`` is a raw dict under the file (or a function of an ``ExitStack`` that can keep a resource, such as a
    loopback server, open for the whole run). ``prepare(cfg)`` checks and loads inputs before any folder exists and
    returns keyword arguments for ``run(cfg, run_dir, progress=..., announce=..., **kwargs)``. ``dry_run(cfg,
    **kwargs)``, when given and when it returns a dict (None: no dry run, go on), replaces the run: its dict is
    printed and no folder is written. ``save_config``: whether config.yaml is ``cfg`` (False when ``run`` writes its
    own); ``resumable``: whether the command has --resume; ``check_resume(cfg, folder)`` refuses (``UsageError``) a
    resume whose settings the run cannot continue with, before anything loads or is written; ``rerun``: the arguments
    after ``agentlab`` that re-run it (``RunDir.create``). ``summary(result, folder)`` prints the outcome,
    ``to_json(result)`` is what ``--json`` prints, and the command exits with ``exit_code(result)``; a result that
    exits 1 records the run ``failed``, with ``failure(result)`` as its error.

    ``distributed``: the command trains under ``accelerate launch`` / ``torchrun`` too. Then only the main process
    does what ``run_command`` does; it shares ``(cfg, folder)`` once the folder is open, and every other process calls
    ``run(cfg, FollowerRun(folder), ...)`` without inputs (so ``run`` must load them itself) and prints nothing
    (``agentlab.core.train.dist``).
    """

    name: str
    model: type[Any] | None
    run: Callable[..., Any]
    base: dict[str, Any] | Callable[[ExitStack], dict[str, Any] | None] | None = None
    load: Callable[[list[str | Flag]], Any] | None = None
    save_config: bool = True
    prepare: Callable[[Any], dict[str, Any]] | None = None
    dry_run: Callable[..., dict[str, Any] | None] | None = None
    resumable: bool = True
    check_resume: Callable[[Any, Path], None] | None = None
    rerun: str | None = None
    summary: Callable[[Any, Path], None] | None = None
    to_json: Callable[[Any], Any] = lambda result: result
    exit_code: Callable[[Any], int] = lambda result: 0
    failure: Callable[[Any], str] | None = None
    distributed: bool = False


@dataclass(frozen=True)
class Invocation:
    """What the user asked this time: the options of the command line that every such command reads the same way.

    ``config``: the ``-c`` file; ``sets``: the ``--set`` strings followed by the ``Flag``s of options that stand for
    config keys (``flags()``); ``out``: ``--out``, the exact run folder; ``resume``: ``--resume`` (a run folder, or
    empty for the latest); ``log_prompts``: False for ``--no-log-prompts``; ``json_``: ``--json`` (print the result
    as JSON, no progress); ``verbose``: the count of ``-v``. ``otlp_endpoint``: trace the run's LLM calls there
    (``--otlp-endpoint``), under one span ``agentlab <command>``; checked before ``prepare``, flushed when the
    command ends.
    """

    config: Path | None = None
    sets: Iterable[str | Flag] | None = None
    out: Path | None = None
    resume: str | None = None
    log_prompts: bool = True
    otlp_endpoint: str | None = None
    json_: bool = False
    verbose: int = 0


def _failing(spec: CommandSpec, run: Callable[..., Any]) -> Callable[..., Any]:
    """``run``, recording the run ``failed`` (with ``spec.failure(result)``, else the exit code) when its result
    makes the command exit 1: run.json said ``completed`` of a debate that ended without an answer, exit 1."""
    def wrapped(cfg: Any, run_dir: Any, **kwargs: Any) -> Any:
        result = run(cfg, run_dir, **kwargs)
        if spec.exit_code(result) == 1:
            run_dir.failed = spec.failure(result) if spec.failure is not None else "exit code 1"
        return result

    return wrapped


def run_command(spec: CommandSpec, asked: Invocation) -> None:
    """Run the command ``spec`` as ``asked`` end to end; raises ``typer.Exit`` when ``spec.exit_code(result)`` is
    not 0."""
    from agentlab.core.config import load_config
    from agentlab.core.runs import (
        FolderOptions,
        check_out_folder,
        check_resume_settings,
        command_words,
        resume_target,
        run_in_folder,
    )

    command, run, json_ = spec.name, spec.run, asked.json_
    setup_logging(asked.verbose)
    lead = _lead_followers(run) if spec.distributed else None
    if lead is not None and lead.follower:
        lead.follow()
        return
    if lead is not None:
        run = lead.run
    overrides = list(asked.sets or [])
    with ExitStack() as stack:
        if lead is not None:
            stack.callback(lead.release)  # a refusal below lets the other processes go
        resume_dir = (resume_target(command, asked.resume, config=asked.config, out=asked.out) if spec.resumable
                      else None)
        if asked.out is not None and resume_dir is None:  # before anything starts (a demo server, a data read, a
            check_out_folder(command, asked.out, resumable=spec.resumable)  # dry run's report); checked again later
        if spec.load is not None:
            cfg = spec.load(overrides)
        else:
            raw = spec.base(stack) if callable(spec.base) else spec.base
            assert spec.model is not None, "run_command needs `model` or `load`"
            cfg = load_config(resume_dir / "config.yaml" if resume_dir else asked.config, spec.model, overrides,
                              base=raw, schema=command_words(command).split()[0],  # `config show debate`
                              refuse_redacted=resume_dir is None)  # a *** in a new run's -c: sent as the key
        if resume_dir is not None:  # before anything loads: run_in_folder checks the settings again
            check_resume_settings(resume_dir, cfg, command)
            if spec.check_resume is not None:
                spec.check_resume(cfg, resume_dir)
        if asked.otlp_endpoint is not None:
            _trace(stack, command, asked.otlp_endpoint)
        kwargs = spec.prepare(cfg) if spec.prepare is not None else {}
        report = spec.dry_run(cfg, **kwargs) if spec.dry_run is not None else None
        if report is not None:
            message = report.pop("message", "dry run: nothing written")
            print_json(report) if json_ else console.print(message)
            return
        run = _failing(spec, run)
        options = FolderOptions(save_config=spec.save_config, resumable=spec.resumable, rerun=spec.rerun,
                                log_prompts=asked.log_prompts)
        with rich_progress(enabled=not json_) as progress:
            result, folder = run_in_folder(
                command, cfg, run, inputs=kwargs, out=asked.out, resume=resume_dir, options=options,
                progress=progress, announce=lambda line: console.print(f"[cyan]{safe_text(line)}[/]"),
                # on stderr with --json too: stdout is the JSON, and a script's user still learns where the run is
                on_open=lambda run_dir: console.print(f"run folder: {safe_text(run_dir.path)}"))
    if json_:
        print_json(spec.to_json(result))
    elif spec.summary is not None:
        spec.summary(result, folder)
    code = spec.exit_code(result)
    if code:
        raise typer.Exit(code)



def _trace(stack: ExitStack, command: str, endpoint: str) -> None:
    """Tracing on for the rest of the command: one span for the run, the parent of its LLM calls' spans."""
    from agentlab.core import tracing

    capture = os.environ.get(tracing.CAPTURE_CONTENT_ENV, "").strip().lower() in ("1", "true", "yes")
    tracing.configure_tracing(endpoint, capture_content=capture)
    stack.callback(tracing.shutdown_tracing)
    stack.enter_context(tracing.span(f"agentlab {command}", {"agentlab.command": command}))


class _Lead:
    """The main process of a multi-process launch, and what the other processes do (``CommandSpec.distributed``)."""

    def __init__(self, run: Callable[..., Any], follower: bool) -> None:
        self._run, self.follower, self._shared = run, follower, False

    def run(self, cfg: BaseModel, run_dir: RunDir, **kwargs: Any) -> Any:
        from agentlab.core.train.dist import leave, share

        share((cfg, str(run_dir.path)))
        self._shared = True
        result = self._run(cfg, run_dir, **kwargs)
        leave()
        return result

    def release(self) -> None:
        """The main process stopped before opening a folder (it printed why): let the others go."""
        from agentlab.core.train.dist import leave, share

        if not self._shared:
            self._shared = True
            share(None)
            leave()

    def follow(self) -> None:
        from agentlab.core.progress import NullProgress
        from agentlab.core.train.dist import FollowerRun, leave, share

        logging.getLogger("agentlab").setLevel(logging.ERROR)  # the main process says it all
        received = share()
        if received is None:
            leave()
            return
        cfg, folder = received
        from agentlab.core.runs import joined_run

        joined_run(folder)  # Ctrl-C names the folder the main process opened
        self._run(cfg, FollowerRun(folder), progress=NullProgress(), announce=lambda line: None)
        leave()


def _lead_followers(run: Callable[..., Any]) -> _Lead | None:
    from agentlab.core.train.dist import is_main, world_size

    return _Lead(run, follower=not is_main()) if world_size() > 1 else None
