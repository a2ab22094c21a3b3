"""No function of agentlab's takes more than 10 parameters: settings that belong together come in one object (as
``SFTSettings``, ``Hooks``, ``CommandSpec``). Typer commands are left out: each of their parameters is one option of
the command line, and typer has no form that groups options."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 10


def typer_commands() -> set[tuple[Path, str]]:
    """``(file, name)`` of every function agentlab's typer app calls for a command or a group's callback."""
    import inspect

    from agentlab.cli import app

    found: set[tuple[Path, str]] = set()
    apps = [app]
    while apps:
        current = apps.pop()
        functions = [c.callback for c in current.registered_commands]
        functions.append(current.registered_callback.callback if current.registered_callback else None)
        apps += [g.typer_instance for g in current.registered_groups if g.typer_instance is not None]
        for function in functions:
            if function is not None:
                found.add((Path(inspect.getfile(function)).resolve(), function.__name__))
    return found


def wide_functions(files: list[Path], root: Path, skip: set[tuple[Path, str]]) -> list[str]:
    """``path:line name (n)`` of each function with more than ``LIMIT`` named parameters (``self`` / ``cls`` and
    ``*args`` / ``**kwargs`` not counted), but those in ``skip``."""
    wide = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or (path.resolve(), node.name) in skip:
                continue
            args = node.args
            names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
            n = len(names) - (1 if names[:1] in (["self"], ["cls"]) else 0)
            if n > LIMIT:
                wide.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({n})")
    return wide


def test_no_function_takes_more_than_ten_parameters() -> None:
    files = sorted(p for folder in ("agentlab", "cli") for p in (ROOT / folder).rglob("*.py")
                   if not p.is_relative_to(ROOT / "agentlab" / "cli"))  # agentlab/cli is a link to cli/
    assert len(files) > 100
    commands = typer_commands()
    assert (ROOT / "cli" / "nas.py", "nas") in commands
    assert wide_functions(files, ROOT, commands) == []


def test_the_check_finds_a_wide_function_and_skips_the_commands_given(tmp_path: Path) -> None:
    params = ", ".join(f"p{i}" for i in range(LIMIT + 1))
    source = tmp_path / "wide.py"
    source.write_text(f"def wide({params}): ...\n\n\ndef narrow(self, {params[4:]}): ...\n\n\n"
                      f"def cmd({params}): ...\n", encoding="utf-8")
    assert wide_functions([source], tmp_path, {(source.resolve(), "cmd")}) == ["wide.py:1 wide (11)"]
