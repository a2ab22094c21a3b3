"""`agentlab config show CMD` and `agentlab config validate FILE`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer

from .commands import OTHER_SCHEMAS, load_schema, schemas
from .common import SetOpt, console, safe_text, setup_logging

app = typer.Typer(help="Show the defaults of a command's config, or check a YAML file.", no_args_is_help=True)

# Which pydantic model validates each command's -c file (and `llm`, the routing config of --llm): commands.py.
CONFIG_MODELS: dict[str, str] = schemas()


def _command_of(path: Path) -> str | None:
    """Configs open with the command that runs them (`# agentlab nas -c configs/nas.yaml`): that picks the schema.
    None without such a line; ``UsageError`` for one naming no config schema (`# agentlab foo -c FILE`)."""
    from agentlab.core.errors import UsageError
    from agentlab.core.files import read_text

    head = read_text(path, "config file").splitlines()[:5]
    named = [(number, match.group(1)) for number, line in enumerate(head, 1)
             if (match := re.match(r"#\s*(?:\$\s*)?agentlab\s+([a-z][a-z-]*)", line))]
    for _, name in named:
        if name in CONFIG_MODELS:
            return name
    if named:  # a typo (`# agentlab nsa -c FILE`), a command with no config, or prose (`# agentlab config for ...`)
        number, name = named[0]
        raise UsageError(f"{path}: cannot tell which command this config is for: line {number} names '{name}', "
                         f"which has no config schema (schemas: {', '.join(CONFIG_MODELS)})",
                         hint="name the command in that line (`# agentlab nas -c FILE`), or pass --command CMD")
    return None


def _schema(command: str) -> type:
    """``load_schema`` of ``command``, with a "did you mean" for a near name (`llm_bench`, `NAS`), as other typos
    get."""
    from agentlab.core.config import close_key
    from agentlab.core.errors import UsageError

    if command not in CONFIG_MODELS:
        near = close_key(command.lower().replace("_", "-"), list(CONFIG_MODELS)) if command.strip() else None
        if near is not None:
            raise UsageError(f"no config schema for '{command}' (did you mean '{near}'?)",
                             hint=f"choose one of: {', '.join(CONFIG_MODELS)}")
    return load_schema(command)


# the commands whose config a subcommand reads, as the files in configs/ open
RUNS_IT = {"pipeline": "pipeline run --pipeline", "models": "models check", "evolve": "evolve run -c"}


def config_text(command: str) -> str:
    """What `agentlab config show COMMAND` prints: the line naming the command that reads such a file, then the
    defaults as YAML, each field with its description (``core.config.describe_model``)."""
    from agentlab.core.config import describe_model

    model = _schema(command)
    # The first line names the schema, as every file in configs/ does, so `config validate` reads the saved output.
    head = f"# agentlab {command}: the routing config that --llm FILE reads" if command in OTHER_SCHEMAS \
        else f"# agentlab {RUNS_IT.get(command, f'{command} -c')} FILE"
    return head + "\n" + describe_model(model)


@app.command("show")
def show(command: Annotated[str, typer.Argument(help=f"One of: {', '.join(CONFIG_MODELS)}.")]) -> None:
    """Print a command's default config as YAML, each field with its description."""
    typer.echo(config_text(command))  # plain: a wrapped comment would not be YAML any more


@app.command("validate")
def validate(
    file: Annotated[Path, typer.Argument(help="The YAML file to check.", dir_okay=False)],
    command: Annotated[str | None, typer.Option("--command", help=f"Schema to use, one of: {', '.join(CONFIG_MODELS)} "
                                                "(default: from the file's first line `# agentlab CMD ...`).",
                                                show_default=False)] = None,
    set_: SetOpt = None,
) -> None:
    """Check a YAML config: unknown keys, wrong types, missing env vars. Exit 2 naming file, line and field."""
    from agentlab.core.config import load_config, missing_config, read_config
    from agentlab.core.errors import UsageError

    setup_logging(0)  # a moved key's warning reads "warning: ..." as the command's own does
    if not file.exists():  # the hint -c FILE gives (`agentlab config examples .`), not only "check the path"
        raise missing_config(file, optional=False)  # FILE is no option to leave out
    if command is not None:  # given, even empty (`--command ''`): that schema or none, never the file's header
        _schema(command)
    command = command if command is not None else _command_of(file)
    # an empty file, or one that is not YAML, says so (with or without a schema), in hints that keep FILE
    read_config(file, command, optional=False)
    if command is None:
        raise UsageError(f"{file}: cannot tell which command this config is for",
                         hint=f"pass --command CMD ({', '.join(CONFIG_MODELS)}), or start the file with a line "
                         "`# agentlab CMD ...`")
    load_config(file, _schema(command), set_, schema=command)
    console.print(f"[green]ok[/] {safe_text(file)} is a valid '{safe_text(command)}' config")


def bundled_configs() -> dict[str, bytes]:
    """The example configs of the repository's configs/ folder, as installed inside the package (agentlab.configs)."""
    from importlib import resources

    folder = resources.files("agentlab.configs")
    return {item.name: item.read_bytes() for item in folder.iterdir() if item.name.endswith(".yaml")}


# what the wheel ships of examples/ (pyproject's package-data for agentlab.examples): a checkout's other files (a
# run's outputs, __pycache__) are not examples
_EXAMPLE_SUFFIXES = (".py", ".yaml", ".md")


def bundled_examples() -> dict[str, bytes]:
    """The example projects of the repository's examples/ folder (own_code, config_py, ...; the docs' `nas -c
    examples/own_code/nas.yaml`), as installed inside the package (agentlab.examples), by their path under it."""
    from importlib import resources

    found: dict[str, bytes] = {}

    def walk(folder: Any, prefix: str) -> None:
        for item in folder.iterdir():
            if item.is_dir():
                if item.name != "__pycache__":
                    walk(item, f"{prefix}{item.name}/")
            elif item.name.endswith(_EXAMPLE_SUFFIXES) and f"{prefix}{item.name}" != "__init__.py":
                found[prefix + item.name] = item.read_bytes()

    walk(resources.files("agentlab.examples"), "")
    return found


def _folder(value: str | Path) -> Path:
    """FOLDER as typed: a file is refused, and so is an empty value (it became the current folder, written into)."""
    if not str(value):
        raise typer.BadParameter("empty; give the folder to write into, or leave FOLDER out for the current folder")
    path = Path(value)
    if path.exists() and not path.is_dir():
        raise typer.BadParameter(f"Directory {str(value)!r} is a file.")
    if path.is_symlink() and not path.exists():
        raise typer.BadParameter(f"{str(value)!r} is a link to a folder that is not there; nothing was written")
    return path


def _there(path: Path) -> bool:
    """Whether something is at ``path``, a link to nothing included (``exists`` follows the link)."""
    return path.exists() or path.is_symlink()


@app.command("examples")
def examples(
    folder: Annotated[Path, typer.Argument(help="Where to create configs/ and examples/ (default: the current "
                                           "folder).", parser=_folder)] = Path("."),
) -> None:
    """Write the example configs the docs name (configs/llm.local.yaml, configs/nas.yaml, ...) into FOLDER/configs/,
    and the example projects (examples/own_code, examples/config_py, ...) into FOLDER/examples/.

    For an install from the wheel, which has no checkout: afterwards the docs' commands run as written from FOLDER.
    A file that is already there is kept as it is (and named when it differs from the bundled one).
    """
    from agentlab.core.errors import UsageError
    from agentlab.core.files import cannot_write
    from agentlab.core.runs import atomic_write_bytes

    bundled = sorted([*((f"configs/{name}", data) for name, data in bundled_configs().items()),
                      *((f"examples/{name}", data) for name, data in bundled_examples().items())])
    for name, _ in bundled:  # every target checked before the first is written: a file or folder in the way writes
        path = folder / name  # none
        for parent in reversed(path.relative_to(folder).parents[:-1]):
            if _there(folder / parent) and not (folder / parent).is_dir():  # a link to nothing too
                raise UsageError(f"{folder / parent} exists and is not a folder"
                                 + (" (a link to one that is not there)" if not (folder / parent).exists() else "")
                                 + "; nothing was written", hint="move it out of the way, or choose another FOLDER")
        if path.exists() and not path.is_file():
            raise UsageError(f"{path} exists and is not a file; nothing was written",
                             hint="move it out of the way, or choose another FOLDER")
    unwritable = cannot_write(folder) if any(not _there(folder / name) for name, _ in bundled) else None
    if unwritable is not None:  # tried, not asked (root passes os.access on /proc): it failed at the first file, exit 1
        raise UsageError(f"{folder}: cannot write in {unwritable[0]} ({unwritable[1]}); nothing was written",
                         hint="choose a FOLDER you can write to")
    written: dict[str, list[str]] = {"configs": [], "examples": []}
    same: dict[str, list[str]] = {"configs": [], "examples": []}
    kept: list[str] = []
    for name, data in bundled:
        path = folder / name
        top, _, inner = name.partition("/")
        if _there(path):  # yours: kept, a link to a file that is not there too (not replaced by a file)
            shown = inner if top == "configs" else name
            if not path.exists():
                kept.append(f"{shown} (a link to nothing)")
            else:
                (same[top] if path.read_bytes() == data else kept).append(shown)
            continue
        atomic_write_bytes(path, data)
        written[top].append(name)
    # the files already there counted as the written ones are (it said "39 already there": configs and projects)
    there = " and ".join(f"{len(same[top])} example {noun}(s)" for top, noun in (("configs", "config"),
                                                                                ("examples", "project file"))
                         if same[top])
    console.print(f"wrote {len(written['configs'])} example config(s) to {safe_text(folder / 'configs')}"
                  + (f" and {len(written['examples'])} example project file(s) to {safe_text(folder / 'examples')}"
                     if written["examples"] else "")
                  + (f"; already there as bundled: {there}" if there else "")
                  + (f"; kept yours, which differ from the bundled ones: {', '.join(kept)}" if kept else ""))
