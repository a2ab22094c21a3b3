"""The command's script, read without running it: which file it is (``script_of``), the project's modules it
imports (``project_imports``), and the argparse options that are switches (``argparse_switches``), which ``{args}``
passes bare (``--flag``) instead of ``--flag=true``."""

from __future__ import annotations

import ast
import shlex
from pathlib import Path


def inside(root: Path, path: Path) -> bool:
    """Whether ``path``, links resolved, lies in ``root`` (itself resolved)."""
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError):  # a link loop
        return False


def script_of(command: str, cwd: Path) -> str | None:
    """The command's script: the first of its arguments (the program included, ``./train.sh``) that is an existing
    file inside ``cwd``, as a path relative to it; None when there is none (``python -m package``)."""
    try:
        parts = shlex.split(command)
    except ValueError:
        return None
    root = cwd.resolve()
    if "-m" in parts[:-1]:  # python -m package.train: the module's file in the project
        module = parts[parts.index("-m") + 1]
        stem = root.joinpath(*module.split("."))
        for candidate in (stem.with_suffix(".py"), stem / "__main__.py"):
            if candidate.is_file() and inside(root, candidate):
                return candidate.resolve().relative_to(root).as_posix()
    for part in parts:
        if "{" in part or part.startswith("-"):
            continue
        path = Path(part) if Path(part).is_absolute() else cwd / part
        if path.is_file() and inside(root, path):
            return path.resolve().relative_to(root).as_posix()
    return None


def project_imports(script: str, cwd: Path, depth: int = 3) -> list[str]:
    """The project's own modules ``script`` imports, and theirs (``depth`` levels): ``import config`` is
    ``config.py`` beside the script or at the project's top, ``from model import net`` ``model/net.py`` or
    ``model/__init__.py``; relative to ``cwd``. Installed packages are not in the project and are left out."""
    root = cwd.resolve()
    seen: list[str] = []
    todo = [(script, 0)]
    while todo:
        rel, level = todo.pop(0)
        path = root / rel
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
            continue
        names: list[str] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level:  # from .utils import x; from . import model
                up = path.parent
                for _ in range(node.level - 1):
                    up = up.parent
                if up != root and root not in up.parents:
                    continue  # `from ..shared import x` above the project: not the project's
                prefix = up.relative_to(root).as_posix().replace("/", ".") if up != root else ""
                base_name = ".".join(p for p in (prefix, node.module or "") if p)
                names += ([base_name] if base_name else []) + [".".join(p for p in (base_name, a.name) if p)
                                                               for a in node.names]
        for name in names:
            for base in dict.fromkeys((path.parent, root)):
                stem = base.joinpath(*name.split("."))
                for candidate in (stem.with_suffix(".py"), stem / "__init__.py"):
                    if candidate.is_file() and inside(root, candidate):
                        found = candidate.resolve().relative_to(root).as_posix()
                        if found not in seen and found != script:
                            seen.append(found)
                            if level + 1 < depth:
                                todo.append((found, level + 1))
    return seen


# argparse actions whose option takes no value: the value true gives the option bare, false leaves it out (for
# BooleanOptionalAction, ``--no-<name>``); an option of several values (nargs) is given them as words of their own
_SWITCHES = {"store_true": "store", "store_false": "store", "BooleanOptionalAction": "optional"}


def argparse_switches(files: list[Path]) -> dict[str, str]:
    """The options of ``add_argument`` calls in ``files`` (Python sources) that do not take one ``=value``: the
    option's long name without its dashes (``--use_bias`` is ``use_bias``, ``--no-shuffle`` ``no-shuffle``) ->
    ``store`` (``store_true`` / ``store_false``), ``optional`` (``argparse.BooleanOptionalAction``) or ``list``
    (``nargs`` of ``+``, ``*`` or more than 1: ``--sizes 64 32``). Files that cannot be read or parsed are skipped:
    nothing is run."""
    found: dict[str, str] = {}
    for path in files:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "add_argument"):
                continue
            action = next((k.value for k in node.keywords if k.arg == "action"), None)
            name = action.value if isinstance(action, ast.Constant) else action.attr if isinstance(
                action, ast.Attribute) else action.id if isinstance(action, ast.Name) else None
            kind = _SWITCHES.get(name) if isinstance(name, str) else None
            nargs = next((k.value for k in node.keywords if k.arg == "nargs"), None)
            if kind is None and isinstance(nargs, ast.Constant) and (nargs.value in ("+", "*") or (
                    isinstance(nargs.value, int) and not isinstance(nargs.value, bool) and nargs.value > 1)):
                kind = "list"
            if kind is None:
                continue
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith("--"):
                    found[arg.value[2:]] = kind
    return found
