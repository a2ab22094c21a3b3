"""The one table of commands: it builds the Typer app, tells `agentlab config` which schema reads which YAML, and
gives the tests their list of commands. A new command is a CLI module and one line here.

``module`` is the CLI module under ``agentlab.cli``: a single command is its function of the same name, a group is
its ``app``. ``config`` is the pydantic model that validates the command's ``-c`` file (``"module:Class"``, imported
only when needed, so ``agentlab --help`` stays fast). ``resumable``: Ctrl-C says "continue with --resume".
"""

from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Command:
    name: str
    module: str
    config: str | None = None
    group: bool = False
    resumable: bool = True  # whether "continue with --resume" is the advice after Ctrl-C
    continue_with: str = ""  # the advice after Ctrl-C of a command without --resume, or where it is held:
    # "module:function" of the run folder, imported only when asked (the command's package, too slow to import for
    # --help)
    no_run_folder: tuple[str, ...] = ()  # subcommands of a group that make no run folder: Ctrl-C says only
    # "interrupted; run the command again" (not "before a run folder was made: nothing to resume")


COMMANDS: tuple[Command, ...] = (
    Command("nas", "nas", "agentlab.nas.config:NASConfig", group=True),
    Command("compress", "compress", "agentlab.compress.config:CompressConfig"),
    Command("llm-bench", "llm_bench", "agentlab.llm_bench.config:BenchConfig", resumable=False,
            continue_with="agentlab.llm_bench.report:after_stop"),
    Command("pipeline", "pipeline", "agentlab.pipeline.config:PipelineConfig", group=True, resumable=False,
            continue_with="the finished stages are kept: continue with `agentlab pipeline rerun SESSION --from STAGE` "
            "(SESSION: the run folder's name; `agentlab pipeline show SESSION` lists its finished stages)",
            no_run_folder=("show", "history")),
    Command("models", "models", "agentlab.pipeline.config:ModelsConfig", group=True, resumable=False),
    Command("train-persona", "train_persona", "agentlab.train_persona.config:TrainPersonaConfig", group=True,
            no_run_folder=("export",)),
    Command("debate", "debate", "agentlab.debate.config:DebateConfig", group=True),
    Command("evolve", "evolve", "agentlab.evolve.config:EvolveConfig", group=True, no_run_folder=("blend",)),
    Command("eval", "eval", "agentlab.eval.config:EvalConfig", group=True, no_run_folder=("tasks",)),
    Command("serve", "serve", "agentlab.serve.config:ServeConfig", resumable=False),
    Command("config", "config_cmd", group=True, resumable=False),
    Command("ui", "ui", resumable=False),
)

# Schemas of files that are not one command's -c: the routing config every --llm option reads.
OTHER_SCHEMAS: dict[str, str] = {"llm": "agentlab.core.llm.config:LLMConfig"}


def schemas() -> dict[str, str]:
    """Every name `agentlab config show/validate` knows -> its "module:Class"."""
    return {**{c.name: c.config for c in COMMANDS if c.config}, **OTHER_SCHEMAS}


RESUME_ADVICE = "continue with --resume"
AGAIN_ADVICE = "run the command again"


def continue_with(name: str, sub: str = "", folder: Path | None = None) -> str:
    """The advice after Ctrl-C of the command ``name`` (``sub``: its subcommand, for a group): ``RESUME_ADVICE``
    (the run folder is named), ``AGAIN_ADVICE`` for a subcommand that makes no run folder, its own, or none. A
    command's own advice given as ``module:function`` is that function of the run ``folder`` (None: this call made
    none)."""
    command = next((c for c in COMMANDS if c.name == name), None)
    if command is not None and sub and sub in command.no_run_folder:
        return AGAIN_ADVICE
    if command is None or command.resumable:
        return RESUME_ADVICE
    module, colon, attr = command.continue_with.partition(":")
    if colon and module.startswith("agentlab."):
        return str(getattr(importlib.import_module(module), attr)(folder))
    return command.continue_with


def load_schema(name: str) -> type:
    """The pydantic model named by ``schemas()[name]``; ``UsageError`` (exit 2) naming the known ones for another
    name."""
    known = schemas()
    if name not in known:
        from agentlab.core.errors import UsageError

        raise UsageError(f"no config schema for '{name}'", hint=f"choose one of: {', '.join(known)}")
    module, _, cls = known[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def first_sentence(text: str | None) -> str:
    """The first sentence of a help text: the one line ``agentlab --help`` shows for a command (as git and uv do)."""
    flat = " ".join((text or "").split())
    match = re.match(r"(.+?[.!?])(\s+[A-Z`(]|$)", flat)  # "Du et al. 2023" is not an end
    return (match.group(1) if match else flat).rstrip(".")


# the usage line of a group that runs without a subcommand (`agentlab nas [OPTIONS] [COMMAND] [ARGS]...`): click's
# `COMMAND [ARGS]...` made one look required, in its help and in the hint of every option error
OPTIONAL_SUBCOMMAND = "[COMMAND] [ARGS]..."


def runs_alone(typer_app: Any) -> bool:
    """Whether the Typer group ``typer_app`` runs without a subcommand (``invoke_without_command``)."""
    callback = typer_app.registered_callback
    return bool(typer_app.info.invoke_without_command or (callback and callback.invoke_without_command))


def register(app: object) -> None:
    """Add every command of the table to the Typer ``app``, each listed by the first sentence of its help."""
    for command in COMMANDS:
        module = importlib.import_module(f"agentlab.cli.{command.module}")
        if command.group:
            sub = module.app
            optional = {"subcommand_metavar": OPTIONAL_SUBCOMMAND} if runs_alone(sub) else {}
            app.add_typer(sub, name=command.name, short_help=first_sentence(sub.info.help),  # type: ignore[attr-defined]
                          **optional)
        else:
            function = getattr(module, command.module)
            app.command(command.name, short_help=first_sentence(function.__doc__))(function)  # type: ignore[attr-defined]
    _unwrap_helps(app)


_ITEM = re.compile(r"\s*(?:[-*] |\d+\. )")  # a line that starts a list item keeps its line


def unwrap(text: str) -> str:
    """A help text with its source line breaks taken out of each paragraph (typer's rich help keeps them inside
    every paragraph but the first, so a docstring wrapped at 120 columns printed as ragged lines); blank lines, list
    items and click's ``\\b`` (keep as written) paragraphs stay."""
    paragraphs = []
    for paragraph in inspect.cleandoc(text).split("\n\n"):
        if paragraph.startswith("\b"):
            paragraphs.append(paragraph)
            continue
        lines: list[str] = []
        for line in paragraph.splitlines():
            if lines and not _ITEM.match(line):
                lines[-1] = f"{lines[-1]} {line.strip()}"
            else:
                lines.append(line.rstrip())
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


def _unwrap_helps(app: Any) -> None:
    """Every command's and group's help under the Typer ``app``, unwrapped (see :func:`unwrap`)."""
    from typer.main import solve_typer_info_help

    for info in app.registered_commands:
        text = info.help if isinstance(info.help, str) else (info.callback.__doc__ if info.callback else None)
        if text:
            info.help = unwrap(text)
    for group in app.registered_groups:
        text = solve_typer_info_help(group)  # where typer would take the group's help from, in its order
        if text:
            group.help = unwrap(text)
        _unwrap_helps(group.typer_instance)
