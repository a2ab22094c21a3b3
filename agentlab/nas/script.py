"""The command's script, read without running it: which file it is (``script_of``), the project's modules it
imports (``project_imports``), its argparse, click, typer, tyro, fire, jsonargparse or LightningCLI options
(``argparse_options``), which ``{args}`` gives the way the parser takes them (a switch bare, ``--flag``, not
``--flag=true``), and a Hydra app's config files (``hydra_configs``)."""

from __future__ import annotations

import ast
import shlex
from pathlib import Path
from typing import Any, NamedTuple


def python_source(path: Path) -> str:
    """A Python file's text as Python decodes it: UTF-8, past a byte order mark, or the encoding its first two lines
    declare (PEP 263). ``SyntaxError`` or ``UnicodeDecodeError`` when Python could not read it either."""
    import tokenize

    with tokenize.open(path) as handle:
        return handle.read()


def resolved(path: Path) -> Path | None:
    """``path`` with its links resolved (``Path.resolve``, a link that leads nowhere followed as far as it goes);
    None for a link loop, or a path the system cannot follow."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a link loop
        return None


def inside(root: Path, path: Path) -> bool:
    """Whether ``path``, links resolved, lies in ``root`` (itself resolved)."""
    real = resolved(path)
    return real is not None and real.is_relative_to(root)


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
            tree = ast.parse(python_source(path))
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


HYDRA_FILES = 20  # a Hydra config folder's files listed at most (the primary config first)


def hydra_app(script: str, cwd: Path) -> tuple[Path, str] | None:
    """The config folder a Hydra app names in ``script`` (``@hydra.main(config_path="conf", config_name="config")``,
    or ``hydra.initialize(config_path=...)``, relative to the script's folder as Hydra reads it) and its primary
    config's file name (``config.yaml``; "" when the call names none); None when the script names no folder inside
    ``cwd``. Read from the source: nothing is run."""
    root = cwd.resolve()
    path = root / script
    try:
        tree = ast.parse(python_source(path))
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
        return None
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and (isinstance(node.func, ast.Attribute) and isinstance(
                node.func.value, ast.Name) and node.func.value.id == "hydra" and node.func.attr in (
                    "main", "initialize"))):
            continue
        keywords = {k.arg: k.value for k in node.keywords if k.arg}
        folder, name = keywords.get("config_path"), keywords.get("config_name")
        if not (isinstance(folder, ast.Constant) and isinstance(folder.value, str)):
            continue
        base = path.parent / folder.value
        if not base.is_dir() or not inside(root, base):
            continue
        if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
            return base.resolve(), ""
        return base.resolve(), name.value if name.value.endswith(".yaml") else f"{name.value}.yaml"
    return None


def hydra_configs(script: str, cwd: Path, limit: int | None = HYDRA_FILES) -> list[str]:
    """The YAML files of a Hydra app's config folder (``hydra_app``), relative to ``cwd``: the primary config
    first, then the groups' files, sorted, ``limit`` at most. Empty when the script names none, or only folders
    outside the project."""
    app = hydra_app(script, cwd)
    return [] if app is None else config_files(app, cwd, limit)


def config_files(app: tuple[Path, str], cwd: Path, limit: int | None = HYDRA_FILES) -> list[str]:
    """``hydra_configs`` of a Hydra app already found (``hydra_app``)."""
    root, (base, first) = cwd.resolve(), app
    files = sorted((f for f in base.rglob("*") if f.suffix in (".yaml", ".yml") and f.is_file()
                    and not any(part.startswith(".") for part in f.relative_to(base).parts) and inside(root, f)),
                   key=lambda f: (f.relative_to(base).as_posix() != first, str(f)))
    return [f.resolve().relative_to(root).as_posix() for f in files][:limit]


# argparse actions whose option takes no value: the value true gives the option bare, false leaves it out (for
# BooleanOptionalAction, ``--no-<name>``; a store_false's dest is the inverse: false gives the option); an option of
# several values (nargs) is given them as words of their own
_SWITCHES = {"store_true": "store", "store_false": "store_false", "store_const": "store", "append_const": "store",
             "BooleanOptionalAction": "optional"}


class ArgOption(NamedTuple):
    """One argparse option: as argparse takes it (``--batch-size``), its kind (``argparse_options``), its
    default when the source gives it as a literal (``(0.01,)``; a switch's ``(False,)``), else None, and what a
    value of it must be, as the source says it literally (``_accepts``): ``type`` ``int`` / ``float`` (argparse's
    and click's ``type=int``, a typer parameter's ``int`` annotation) and its ``choices`` (``choices=[...]``,
    ``click.Choice``, a typer ``Enum`` or ``Literal``), else None (not checked)."""

    option: str
    kind: str
    default: tuple[Any] | None
    type: str | None = None
    choices: tuple[Any, ...] | None = None
    repeats: bool = False  # argparse's action="append" / "extend": each time given adds to the list


def argparse_options(files: list[Path], words: list[str] | None = None) -> dict[str, ArgOption]:
    """The options of the ``add_argument`` calls (argparse), ``click.option`` decorators and typer commands'
    parameters (``_typer_options``) in ``files`` (Python sources), by the names a param may have: the long option
    without its dashes (``--use-bias`` is ``use-bias``) and the dest (``use_bias``, or ``dest=``; click's own
    identifier) -> an ``ArgOption``: the option as the parser takes it, its kind, ``value`` (``--lr=0.1``),
    ``store`` (store_true / store_const, click's ``is_flag``: given bare or left out; a store_false's long option
    name too), ``store_false`` (a store_false's dest, the inverse: false gives the option bare), ``optional``
    (``argparse.BooleanOptionalAction``, click's ``--flag/--no-flag``: ``--no-<name>`` when false), ``list``
    (``nargs``: ``--sizes 64 32``) or ``python`` (python-fire: ``--name=<Python literal>``, ``_fire_options``), and
    its literal default. A name declared twice in different ways is left out (with different defaults: kept, its
    default unknown). A function or dataclass given to typer, fire or tyro is read in the file that calls it, or,
    when that file imports it (``from config import TrainConfig``), in the others. A click or typer app of several
    commands, one of which the command's ``words`` name (``python cli.py train {args}``), is read for that one alone
    (``_commands``). Files that cannot be read or parsed are skipped: nothing is run."""
    found: dict[str, ArgOption] = {}
    clashes: set[str] = set()
    trees = []
    for path in files:
        try:
            trees.append(ast.parse(python_source(path)))
        except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
            continue
    libs = ("typer", "fire", "tyro", "jsonargparse")
    entries = [{lib: _entries(tree, lib) for lib in libs} for tree in trees]
    defined = [_defined(tree) for tree in trees]
    classes = {n.name: n for tree in trees for n in ast.walk(tree) if isinstance(n, ast.ClassDef)}
    enums = {name: members for name, node in classes.items() if (members := _enum_members(node))}
    commands = [_commands(tree) for tree in trees]
    chosen = set(words or [])
    if not any(names & chosen for there in commands for names in there.values()):
        chosen = set()  # no command named (a single one): every command's options are read
    for at, tree in enumerate(trees):
        # what a module gives to typer / fire / tyro is read here when defined here and given here, or given by a
        # module that does not define it (imported from here)
        given = {lib: {name: prefix for other, there in enumerate(entries) for name, prefix in there[lib].items()
                       if (other == at or name not in defined[other]) and name in defined[at]} for lib in libs}
        others = [f for f, names in commands[at].items() if chosen and not names & chosen]
        skipped = {id(d) for f in others for d in f.decorator_list}  # the click options of those commands
        reads = [read for node in ast.walk(tree) if isinstance(node, ast.Call) and id(node) not in skipped
                 for read in _call_options(node)] + _typer_options(
            tree, set(given["typer"]), others, enums) + _fire_options(tree, set(given["fire"])) + _tyro_options(
            tree, set(given["tyro"])) + _jsonargparse_options(tree, given["jsonargparse"], classes)
        for read in reads:
            if read is None:
                continue
            for key in read.names:
                default, rule = read.default, (read.type, read.choices)
                if key in found and found[key][:2] != (read.option, read.kind):
                    clashes.add(key)
                elif key in found:  # declared twice alike: a default or rule that differs is unknown
                    default = default if found[key].default == default else None
                    rule = rule if found[key][3:5] == rule else (None, None)
                found[key] = ArgOption(read.option, read.kind, default, *rule, read.repeats)
    return {key: value for key, value in found.items() if key not in clashes}


class Read(NamedTuple):
    """One option as a reader found it: the option, its kind, its names, its default and what it accepts
    (``ArgOption``)."""

    option: str
    kind: str
    names: set[str]
    default: tuple[Any] | None
    type: str | None = None
    choices: tuple[Any, ...] | None = None
    repeats: bool = False


def _call_options(node: ast.Call) -> list[Read | None]:
    """The options an ``add_argument`` call or a ``click.option`` decorator declares."""
    argparse: list[Read | None] = list(_argparse_option(node))
    return argparse or [_click_option(node)]


def _argparse_option(node: ast.Call) -> list[Read]:
    """An ``add_argument("--x", ...)`` call read (``argparse_options``); none for another call, a positional, a
    name built at run time, or an action ``{args}`` does not give (count, help, version, a custom one). A
    store_false switch is two: its dest's value is the switch's inverse (``--no-shuffle``, dest ``shuffle``: true
    leaves the option out, as argparse's default), its long option's name the switch itself (``no-shuffle`` true
    gives it)."""
    read = _argparse_read(node)
    if read is None or read[1] != "store_false":
        return [read] if read is not None else []
    option, kind, names, default = read[:4]
    named = next((k.value for k in node.keywords if k.arg == "dest"), None)
    dest = named.value if isinstance(named, ast.Constant) and isinstance(named.value, str) else \
        option.lstrip("-").replace("-", "_")
    out: list[Read] = [Read(option, kind, {dest}, default)]
    if names - {dest}:
        flipped = (not default[0],) if default is not None and isinstance(default[0], bool) else None
        out.append(Read(option, "store", names - {dest}, flipped))
    return out


def _argparse_read(node: ast.Call) -> Read | None:
    if not (isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument"):
        return None
    options = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)
               and a.value.startswith("-")]
    longs = [o for o in options if o.startswith("--")]
    if not options or len(options) != len(node.args):
        return None
    keywords = {k.arg: k.value for k in node.keywords if k.arg}
    action = keywords.get("action")
    name = action.value if isinstance(action, ast.Constant) else action.attr if isinstance(
        action, ast.Attribute) else action.id if isinstance(action, ast.Name) else None
    if name is not None and name not in _SWITCHES and name not in ("store", "append", "extend"):
        return None
    kind = _SWITCHES.get(name, "value") if isinstance(name, str) else "value"
    nargs = keywords.get("nargs")
    if kind == "value" and isinstance(nargs, ast.Constant) and (nargs.value in ("+", "*") or (
            isinstance(nargs.value, int) and not isinstance(nargs.value, bool) and nargs.value >= 1)):
        kind = "list"
    option = (longs or options)[0]
    dest = keywords.get("dest")
    names = _names(longs, option, dest.value if isinstance(dest, ast.Constant) and isinstance(dest.value, str)
                   else None)
    return Read(option, kind, names, _default(keywords.get("default"), name, keywords.get("type")),
                *(_accepts(keywords) if kind == "value" else (None, None)), repeats=name in ("append", "extend"))


def _accepts(keywords: dict[str, ast.expr]) -> tuple[str | None, tuple[Any, ...] | None]:
    """What an argparse or click option taking one value accepts, from its call's ``keywords`` as the source says
    them literally: ``type=int`` / ``float`` (else None) and ``choices=[...]`` or click's
    ``type=click.Choice([...])`` (its choices as text; else None). Choices compared to what the option makes of a
    value (``type=str.lower``, ``case_sensitive=False``) are not checked: None."""
    kind = keywords.get("type")
    type_name = kind.id if isinstance(kind, ast.Name) and kind.id in ("int", "float") else None
    listed, text = keywords.get("choices"), False
    if isinstance(kind, ast.Call) and _called(kind.func) == "Choice" and kind.args:
        listed, text = kind.args[0], True  # click: type=click.Choice(["adam", "sgd"]), matched as text
    try:
        choices = tuple(ast.literal_eval(listed)) if listed is not None else None
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        choices = None
    if choices is not None and text:
        choices = tuple(str(choice) for choice in choices)
    # type=str.lower: what it makes of the value is unknown here
    loose = kind is not None and type_name is None and not text and not (isinstance(kind, ast.Name)
                                                                         and kind.id == "str")
    # click.Choice([...], case_sensitive=False), or ([...], False)
    flags = [k.value for k in kind.keywords if k.arg == "case_sensitive"] + kind.args[1:2] if isinstance(
        kind, ast.Call) else []
    if loose or any(isinstance(flag, ast.Constant) and flag.value is False for flag in flags):
        choices = None
    return type_name, choices


def _click_option(node: ast.Call) -> Read | None:
    """A ``@click.option("--x", ...)`` (or ``option`` imported from click) read like ``_argparse_option``:
    ``is_flag`` a switch, ``--flag/--no-flag`` one given ``--no-flag`` when false, ``nargs`` over 1 a list; None
    for ``multiple`` or ``count`` (repeated options, which ``{args}`` does not write)."""
    func = node.func
    if not ((isinstance(func, ast.Attribute) and func.attr == "option" and isinstance(func.value, ast.Name)
             and func.value.id == "click") or (isinstance(func, ast.Name) and func.id == "option")):
        return None
    decls = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    if not decls or len(decls) != len(node.args):
        return None
    keywords = {k.arg: k.value for k in node.keywords if k.arg}
    if any(isinstance(keywords.get(k), ast.Constant) and getattr(keywords[k], "value", False)
           for k in ("multiple", "count")):
        return None
    slashed = [d.split("/") for d in decls if "/" in d]
    if any(len(pair) != 2 or pair[1] != "--no-" + pair[0].lstrip("-") for pair in slashed):
        return None  # `--shout/--quiet`: {args} writes `--no-<name>` for false, which this option is not
    options = [o for d in decls if d.startswith("-") for o in d.split("/")[:1]]
    identifier = [d for d in decls if d.isidentifier()]
    if not options:
        return None
    longs = [o for o in options if o.startswith("--")]
    flag = isinstance(keywords.get("is_flag"), ast.Constant) and getattr(keywords["is_flag"], "value", False)
    nargs = keywords.get("nargs")
    kind = "optional" if slashed else "store" if flag else "list" if isinstance(nargs, ast.Constant) and isinstance(
        nargs.value, int) and not isinstance(nargs.value, bool) and nargs.value > 1 else "value"
    option = max(longs or options, key=len)  # click names the parameter after its longest option
    names = _names(longs, option, identifier[0] if identifier else None)
    # a click flag, plain or on/off, given no default is false: argparse's store_true
    default = _default(keywords.get("default"), "store_true" if kind in ("store", "optional") else None,
                       keywords.get("type"))
    return Read(option, kind, names, default, *(_accepts(keywords) if kind == "value" else (None, None)))


def _entries(tree: ast.Module, lib: str) -> dict[str, str]:
    """The names a module importing ``lib`` gives it to run, each with the prefix of its options: ``typer.run(main)``
    or ``app.command()(main)``, ``fire.Fire(main)``, ``tyro.cli(Config)`` (``config.Config``: ``Config``),
    jsonargparse's ``CLI(main)`` / ``auto_cli(main)`` (no prefix) and Lightning's ``LightningCLI(Model, Data)``
    (``model.`` and ``data.``; lightning.pytorch.cli, pytorch_lightning.cli: the call's name is enough)."""
    names: dict[str, str] = {}
    if lib == "jsonargparse":
        for n in ast.walk(tree):
            if isinstance(n, ast.Call) and _called(n.func) == "LightningCLI":
                given = {**dict(zip(("model.", "data."), n.args[:2], strict=False)), **{
                    "model." if k.arg == "model_class" else "data.": k.value for k in n.keywords
                    if k.arg in ("model_class", "datamodule_class")}}
                names.update({name: prefix for prefix, node in given.items() if (name := _called(node))})
    if not _imports(tree, lib):
        return names
    for n in ast.walk(tree):
        if not (isinstance(n, ast.Call) and n.args):
            continue
        calls = {"typer": _called(n.func) == "run" or isinstance(n.func, ast.Call) and _called(n.func.func) in (
            "command", "callback"), "fire": _called(n.func) == "Fire", "tyro": _called(n.func) == "cli",
            "jsonargparse": _called(n.func) in ("CLI", "auto_cli")}[lib]
        name = _called(n.args[0])
        if calls and name is not None:
            names[name] = ""
    return names


def _commands(tree: ast.Module) -> dict[ast.FunctionDef | ast.AsyncFunctionDef, set[str]]:
    """The commands of a click group or typer app in a module (functions decorated ``@x.command()``) -> the names
    that call them: the one the decorator gives, else the function's, underscores as dashes (click and typer both).
    ``argparse_options`` reads those the command's words name, when they name one (``train`` of ``python cli.py
    train {args}``: its options, not ``evaluate``'s), else all of them."""
    named: dict[ast.FunctionDef | ast.AsyncFunctionDef, set[str]] = {}
    for f in ast.walk(tree):
        if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for d in f.decorator_list:
                if isinstance(d, ast.Call) and _called(d.func) == "command":
                    given = [a.value for a in d.args[:1] if isinstance(a, ast.Constant) and isinstance(a.value, str)]
                    given += [k.value.value for k in d.keywords if k.arg == "name" and isinstance(k.value, ast.Constant)
                              and isinstance(k.value.value, str)]
                    named[f] = set(given) or {f.name, f.name.replace("_", "-")}
    return named


def _defined(tree: ast.Module) -> set[str]:
    """The functions and classes a module defines (at any depth)."""
    return {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}


def _fire_options(tree: ast.Module, given: set[str]) -> list[Read | None]:
    """The options of a function of ``given`` (``fire.Fire(main)`` in a module importing python-fire): each
    parameter with a default is ``--name`` (``--name=value``), of the kind ``python``: fire reads a value as a Python
    literal, so ``{args}`` writes one (``--use_bn=False``, ``--optimizer='adam'``; ``false`` would be the string
    "false", which is true)."""
    return [Read(f"--{arg.arg}", "python", {arg.arg, arg.arg.replace("_", "-")},
                 _default(default, None, arg.annotation))
            for function in ast.walk(tree) if isinstance(function, ast.FunctionDef) and function.name in given
            for arg, default in _parameters(function.args, positional_only=False) if default is not None]


def _tyro_options(tree: ast.Module, given: set[str]) -> list[Read | None]:
    """The options of a function or dataclass of ``given`` (``tyro.cli(Config)``, ``_entries``): each parameter
    or field is ``--name`` with dashes (tyro takes the underscores too); a bool ``--name`` / ``--no-name``, a list
    or tuple its values as words (``--hidden-sizes 64 32``), anything else ``--name=value``; its default the
    literal one (a parameter without one is a required option, its default unknown). Nested configs are not read."""
    fields: list[tuple[str, ast.expr | None, ast.expr | None]] = []  # name, annotation, default
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name in given:
            fields += [(a.arg, a.annotation, d) for a, d in _parameters(node.args, positional_only=False)]
        elif isinstance(node, ast.ClassDef) and node.name in given:
            fields += [(f.target.id, f.annotation, f.value) for f in node.body
                       if isinstance(f, ast.AnnAssign) and isinstance(f.target, ast.Name)]
    reads: list[Read | None] = []
    for name, written, default in fields:
        kind = _unwrap_optional(written)
        if isinstance(default, ast.Call):
            default = next((k.value for k in default.keywords if k.arg == "default"), None) if _called(
                default.func) == "field" else None  # field(default=3); default_factory: unknown
        many = isinstance(kind, ast.Subscript) and _called(kind.value) in ("list", "List", "tuple", "Tuple",
                                                                            "Sequence")
        switch = isinstance(kind, ast.Name) and kind.id == "bool"
        option = "--" + name.replace("_", "-")
        reads.append(Read(option, "list" if many else "optional" if switch else "value", {name, option[2:]},
                          _default(default, None, kind) if default is not None else None, *_annotated(written)))
    return reads


def _jsonargparse_options(tree: ast.Module, given: dict[str, str],
                          classes: dict[str, ast.ClassDef]) -> list[Read | None]:
    """The options of a function or class of ``given`` (``_entries``: jsonargparse's ``CLI(main)``, Lightning's
    ``LightningCLI(Model, Data)``): each parameter of the function, or of the class's ``__init__`` (a class without
    one: its first base's among the project's ``classes``), is ``--<prefix><name>`` as written
    (``--model.learning_rate``), given ``--name=value``, which jsonargparse parses as YAML (``true``, ``[64,32]``);
    its default the literal one (none: unknown). Of ``CLI(main)``, a parameter without a default is a positional
    argument, not read."""
    reads: list[Read | None] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name in given:
            params = _parameters(node.args, positional_only=False)
        elif isinstance(node, ast.ClassDef) and node.name in given:
            cls, seen = node, {node.name}
            while _init(cls) is None and cls.bases and (base := _called(cls.bases[0])) in classes and base not in seen:
                cls = classes[base]
                seen.add(base)
            init = _init(cls)
            # not self: positional-only, it is already left out (`def __init__(self, /, lr=0.1)`)
            params = [] if init is None else _parameters(init.args, positional_only=False)[
                0 if init.args.posonlyargs else 1:]
        else:
            continue
        prefix = given[node.name]
        reads += [Read(f"--{prefix}{arg.arg}", "value", {prefix + arg.arg},
                       _default(default, None, _unwrap_optional(arg.annotation)) if default is not None else None,
                       *_annotated(arg.annotation))
                  for arg, default in params if prefix or default is not None]
    return reads


def _init(node: ast.ClassDef) -> ast.FunctionDef | None:
    """A class's own ``__init__``."""
    return next((f for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "__init__"), None)


def _imports(tree: ast.Module, module: str) -> bool:
    """Whether the module imports ``module`` (``import x`` or ``from x import ...``)."""
    return any(isinstance(n, ast.Import) and any(a.name == module for a in n.names)
               or isinstance(n, ast.ImportFrom) and n.module == module for n in ast.walk(tree))


def _unwrap_optional(kind: ast.expr | None) -> ast.expr | None:
    """``int | None`` and ``Optional[int]`` as ``int``."""
    if isinstance(kind, ast.BinOp) and isinstance(kind.op, ast.BitOr) and isinstance(kind.right, ast.Constant) \
            and kind.right.value is None:
        return kind.left
    if isinstance(kind, ast.Subscript) and _called(kind.value) == "Optional":
        return kind.slice
    return kind


def _typer_options(tree: ast.Module, given: set[str], others: list[ast.FunctionDef | ast.AsyncFunctionDef],
                   enums: dict[str, dict[str, Any]]) -> list[Read | None]:
    """The options of a typer app's commands (functions decorated ``@app.command()`` / ``@app.callback()`` in a module
    importing typer, or of ``given``: ``typer.run(main)``, ``app.command()(main)``), read like ``_click_option``: a
    parameter with a default, plain (``lr: float = 0.01`` is ``--lr``), ``typer.Option(0.01, "--learning-rate")`` or
    ``Annotated[float, typer.Option("--learning-rate")] = 0.01``; a bool is ``--x/--no-x`` (``--no-x`` when false)
    unless named without a slash (a flag, given bare or left out). None for an argument, a list (a repeated option)
    or an on/off pair not named ``--no-<name>``. The commands of ``others`` (not named: ``_commands``) are not read.
    An ``int`` / ``float`` annotation is the value's type, an Enum of the project's (``enums``, ``_enum_members``)
    or a ``Literal[...]`` its choices; an Enum member as default (``Optim.adam``) is its value."""
    decorated = _imports(tree, "typer")
    commands = [f for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) and f not in
                others and (
        f.name in given or decorated and any(isinstance(d, ast.Call) and _called(d.func) in ("command", "callback")
                                             for d in f.decorator_list))]
    return [_typer_option(arg, default, enums) for function in commands
            for arg, default in _parameters(function.args)]


def _enum_members(node: ast.ClassDef) -> dict[str, Any]:
    """An Enum class's members and their literal values (``class Optim(str, Enum): adam = "adam"``); empty for
    another class, or when a value is not a literal (``auto()``: what typer takes is unknown here)."""
    if not any(_called(base) in ("Enum", "StrEnum", "IntEnum") for base in node.bases):
        return {}
    members: dict[str, Any] = {}
    for item in node.body:
        if isinstance(item, ast.Assign) and len(item.targets) == 1 and isinstance(item.targets[0], ast.Name):
            try:
                members[item.targets[0].id] = ast.literal_eval(item.value)
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                return {}
    return members


def _parameters(args: ast.arguments, positional_only: bool = True) -> list[tuple[ast.arg, ast.expr | None]]:
    """A function's parameters, each with its default (None when it has none); ``*args`` and ``**kwargs`` left
    out, and the positional-only ones too unless ``positional_only``."""
    positional = args.posonlyargs + args.args
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    kept = list(zip(positional, defaults, strict=True))[0 if positional_only else len(args.posonlyargs):]
    return kept + list(zip(args.kwonlyargs, args.kw_defaults, strict=True))


def _typer_option(arg: ast.arg, default: ast.expr | None, enums: dict[str, dict[str, Any]]) -> Read | None:
    """One typer command's parameter read (``_typer_options``)."""
    kind, marker = arg.annotation, None
    if isinstance(kind, ast.Subscript) and _called(kind.value) == "Annotated" and isinstance(kind.slice, ast.Tuple):
        kind, *extra = kind.slice.elts
        marker = next((e for e in extra if isinstance(e, ast.Call) and _called(e.func) in ("Option", "Argument")),
                      None)
        decls = marker.args if marker is not None else []
    elif isinstance(default, ast.Call) and _called(default.func) in ("Option", "Argument"):
        marker, decls = default, default.args[1:]
        keyword = [k.value for k in default.keywords if k.arg == "default"]
        default = default.args[0] if default.args else keyword[0] if keyword else None
    else:
        decls = []
    if isinstance(marker, ast.Call) and _called(marker.func) == "Argument" or (default is None and marker is None):
        return None  # typer's arguments: a parameter with neither a default nor an Option is one
    written, kind = kind, _unwrap_optional(kind)
    if isinstance(kind, ast.Subscript) and _called(kind.value) != "Literal" or not all(
            isinstance(d, ast.Constant) and isinstance(d.value, str) for d in decls):
        return None  # `list[int]`: typer repeats the option (`--size 8 --size 4`), which {args} does not write
    words = [d.value for d in decls if isinstance(d, ast.Constant) and isinstance(d.value, str)]
    if any(len(w.split("/")) != 2 or w.split("/")[1] != "--no-" + w.split("/")[0].lstrip("-")
           for w in words if "/" in w):
        return None  # `--accept/--reject`
    options = [o for w in words if w.startswith("-") for o in w.split("/")[:1]] or [
        "--" + arg.arg.replace("_", "-")]
    switch = isinstance(kind, ast.Name) and kind.id == "bool"
    on_off = switch and (not words or any("/" in w for w in words))
    literal = _default(default, None, kind) if default is not None else None
    members = enums.get(kind.id, {}) if isinstance(kind, ast.Name) else {}
    if members and isinstance(default, ast.Attribute) and _called(default.value) in enums \
            and default.attr in members:
        literal = (members[default.attr],)  # `opt: Optim = Optim.adam`: typer's default is "adam"
    number, choices = _annotated(written)
    if written is kind:  # typer takes an Enum's values
        choices = choices or tuple(map(str, members.values())) or None
    if isinstance(marker, ast.Call) and any(k.arg in ("parser", "click_type") for k in marker.keywords):
        number = choices = None  # typer.Option(parser=parse_size): what it takes is the parser's (`--size=64k`)
    if isinstance(marker, ast.Call) and any(k.arg == "case_sensitive" for k in marker.keywords):
        choices = None  # typer.Option(case_sensitive=False): compared to what typer makes of the value
    return Read(max(options, key=len), "optional" if on_off else "store" if switch else "value",
                _names([o for o in options if o.startswith("--")], max(options, key=len), arg.arg),
                None if literal == (Ellipsis,) else literal,  # `typer.Option(...)`: required, no default
                number, choices)


def _annotated(kind: ast.expr | None) -> tuple[str | None, tuple[str, ...] | None]:
    """What a parameter's annotation says a value must be (``ArgOption``): ``int`` / ``float``, or the choices of
    a ``Literal[...]`` as text; else None (``Optional[int]`` too: how the parser takes a null is its own)."""
    if isinstance(kind, ast.Name) and kind.id in ("int", "float"):
        return kind.id, None
    if isinstance(kind, ast.Subscript) and _called(kind.value) == "Literal":
        try:
            listed = ast.literal_eval(kind.slice)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            return None, None
        return None, tuple(map(str, listed if isinstance(listed, tuple) else (listed,)))
    return None, None


def _called(func: ast.expr) -> str | None:
    """The name a call or subscript goes by: ``typer.Option`` and ``Option`` are ``Option``."""
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None


def _names(longs: list[str], option: str, dest: str | None) -> set[str]:
    """The names a param may give an option by: each long option without its dashes, and the parser's own name for
    it (``dest``; else the option's, ``--batch-size`` -> ``batch_size``)."""
    return {o.lstrip("-") for o in longs} | {dest or option.lstrip("-").replace("-", "_")}


def _default(node: ast.expr | None, action: object, kind: ast.expr | None) -> tuple[Any] | None:
    """An option's default as argparse gives it, when the source says it literally: ``default=0.01`` (a string
    default through ``type=int`` / ``float``, as argparse converts it); none given: a store_true's False, a
    store_false's True, a BooleanOptionalAction's None (left out); else None (unknown)."""
    if node is None:
        return {"store_true": (False,), "store_false": (True,), "BooleanOptionalAction": (None,)}.get(str(action))
    try:
        value = ast.literal_eval(node)
        convert = {"int": int, "float": float}.get(kind.id if isinstance(kind, ast.Name) else "")
        if isinstance(value, tuple):  # `default=(64, 32)`: the list a params file and the space hold
            value = list(value)
        return (convert(value) if convert is not None and isinstance(value, str) else value,)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
