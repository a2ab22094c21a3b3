"""The user's own config file, in its own format: read its values, write a trial's values into a copy of it.

``objective.config: FILE`` names the file a project's script already reads: JSON, YAML, TOML, or a Python module of
assignments whose values are literals, nested dicts and lists included (``config.py``, the NAS design's form). Its
values are the search's base (trial 0); a dotted key (``training.lr``) addresses a nested mapping. A trial's copy of
the file gets the trial's values and keeps everything else as the user wrote it:

- Python and YAML: only the text of each changed value is replaced, at the position the parser reports (``ast``'s
  offsets; PyYAML's node marks), so comments, order, quoting of other values and blank lines stay byte for byte.
- TOML: tomlkit, the format's style-preserving library, edits the document.
- JSON (no comments to keep): rewritten with the file's own indent.

A key the file does not hold is ``ConfigFileError`` naming the file and the nearest line, before trial 0.
"""

from __future__ import annotations

import ast
import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

from agentlab.core.errors import UsageError

FORMATS = {".json": "json", ".yaml": "yaml", ".yml": "yaml", ".toml": "toml", ".py": "python"}


class ConfigFileError(UsageError):
    """``objective.config`` cannot be read, holds no such key, or cannot take a value (exit 2)."""


def format_of(path: Path) -> str:
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise ConfigFileError(f"objective.config: {path.name}: unknown format {path.suffix or '(no suffix)'!r}",
                              hint="give a .json, .yaml, .toml or .py file (a Python module of literal "
                              "assignments)")
    return kind


BOM = "\ufeff"  # a UTF-8 byte order mark, as read into text


@dataclass(frozen=True)
class ConfigFile:
    """One config file of the user's project, read once (``load``)."""

    path: Path
    kind: str
    text: str
    values: dict[str, Any]
    encoding: str = "utf-8"  # a Python module's PEP 263 declaration (`# -*- coding: latin-1 -*-`), as Python reads it

    @classmethod
    def load(cls, path: str | Path) -> ConfigFile:
        path = Path(path)
        if path.is_dir():
            raise ConfigFileError(f"objective.config: {path} is a folder", hint="give the config file itself")
        kind = format_of(path)
        encoding = "utf-8"
        try:
            if kind == "python":
                encoding = _declared(path)
            with open(path, encoding=encoding, newline="") as handle:  # CRLF kept: the file is written back as it was
                text = handle.read()
        except FileNotFoundError:
            raise ConfigFileError(f"objective.config: {path} does not exist", hint="give the path of the project's "
                                  "config file, relative to objective.cwd") from None
        except IsADirectoryError:
            raise ConfigFileError(f"objective.config: {path} is a folder",
                                  hint="give the config file itself") from None
        except UnicodeDecodeError as exc:
            said = "UTF-8" if encoding == "utf-8" else f"{encoding} (as its coding declaration says)"
            raise ConfigFileError(f"objective.config: {path} is not {said} text ({exc.reason} at byte {exc.start})",
                                  hint="save it as UTF-8" if encoding == "utf-8" else
                                  f"save it as {encoding}, or fix its coding declaration") from None
        except OSError as exc:
            raise ConfigFileError(f"objective.config: {path} cannot be read ({exc.strerror or exc})") from None
        if kind != "python":
            return cls(path, kind, text, _READ[kind](path, text.removeprefix(BOM)), encoding)
        tree = _parse_python(path, text.removeprefix(BOM))
        found = cls(path, kind, text, _python_values(tree), encoding)
        found.__dict__["tree"] = tree  # parsed once: `tree` is not parsed again for each key required or written
        return found

    @cached_property
    def tree(self) -> ast.Module:
        """A Python module's syntax tree (of ``body``), parsed once per file."""
        return _parse_python(self.path, self.body)

    def encode(self, text: str) -> bytes:
        """``text`` (this file's, or one ``render`` made of it) as the file's bytes: in its declared encoding."""
        return text.encode(self.encoding)

    @property
    def body(self) -> str:
        """The text after its byte order mark, if it has one."""
        return self.text.removeprefix(BOM)

    def lookup(self, key: str) -> tuple[bool, Any]:
        node: Any = self.values
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return False, None
            node = node[part]
        return True, node

    def require(self, keys: list[str] | tuple[str, ...]) -> None:
        """Refuse the first key the file lacks, naming the file and the line where its parent is (or line 1), or
        one a Python module assigns again, deletes or changes in place (``CFG.update(lr=0.5)``) after the assignment
        a trial's value is written into."""
        for key in keys:
            if self.lookup(key)[0]:
                if self.kind == "python" and (again := _assigned_again(self.tree, key)):
                    self._refuse_again(key, again)
                continue
            top = key.split(".", 1)[0]
            if self.kind == "python" and top not in self.values and (unread := _unread_python(self.tree, top)):
                line, what = unread
                raise ConfigFileError(f"{self.path}:{line}: {key} cannot be searched: {what} (search.space.{key})",
                                      hint="only module-level assignments of literals (numbers, strings, lists, "
                                      "dicts) are searched: write the value as a literal, or pass it through "
                                      "{args} / {params}")
            if not self.values:
                raise ConfigFileError(f"{self.path}: holds no values (search.space.{key})",
                                      hint=f"write the project's settings into it, {key} with its current value "
                                      "among them, or name the file the script reads (objective.config)")
            parent = key.rsplit(".", 1)[0] if "." in key else ""
            line = self.line_of(parent) if parent and self.lookup(parent)[0] else 1
            raise ConfigFileError(f"{self.path}:{line}: no {key!r} here (search.space.{key})",
                                      hint="search a key the file holds (a dotted key names a nested one: "
                                      f"training.lr), or add {key} to the file with its current value")

    def _refuse_again(self, key: str, again: Again) -> None:
        """``key``'s value is set again, deleted or changed in place after the assignment a trial's value is
        written into (``_assigned_again``): the script would not read the trial's value."""
        line, what, how = again.line, again.what, again.how
        name, *rest = key.split(".")
        of = "" if what == _shown(name, rest) else f" of {key}"
        deleted = how.startswith("deleted")
        if again.told:
            raise ConfigFileError(f"{self.path}:{line}: {what} is {how}{again.where}; a trial's value{of} at line "
                                  f"{again.first} would be {'removed' if deleted else 'overridden'} "
                                  f"(search.space.{key})",
                                  hint=f"remove the {_NOUNS[how.split()[0]]} at line {line}"
                                  + ("" if deleted else f", or write the value it sets at line {again.first}")
                                  + ", so the value a trial writes is the one the script reads")
        raise ConfigFileError(f"{self.path}:{line}: {what} is {how}{again.where} at a key that is not a constant: it "
                              f"cannot be told whether it {'removes' if deleted else 'overrides'} a trial's "
                              f"value{of} at line {again.first} (search.space.{key})",
                              hint=f"write the key at line {line} as a constant (`{_subscript(key)}"
                              f"{'' if deleted else ' = ...'}`), or remove that "
                              f"{'assignment' if how == 'assigned again' else 'statement'}")

    def render(self, values: dict[str, Any]) -> str:
        """The file's text with ``values`` (dotted keys) in place of its own; the rest kept as written."""
        for key in values:
            self.require([key])
        # a value the file already holds is left as written (trial 0 runs the file as it is: `(16, 16)` stays a
        # tuple, `1` an int); JSON's text tells true from 1 and 1 from 1.0
        values = {key: value for key, value in values.items()
                  if json.dumps(_plain(value), sort_keys=True) != json.dumps(_plain(self.lookup(key)[1]),
                                                                             sort_keys=True)}
        if not values:
            return self.text
        try:
            # the writers edit the text after a byte order mark (Windows editors write one; Python, YAML and the
            # trial's script read past it), which is written back as it was
            body = self if self.body == self.text else replace(self, text=self.body)
            text = self.text[: len(self.text) - len(self.body)] + _WRITE[self.kind](body, values)
            self._verify(text, values)
            return text
        except (StopIteration, KeyError, AttributeError, TypeError) as exc:
            key = next(iter(values))
            raise ConfigFileError(f"{self.path}: cannot write {', '.join(values)} into this file ({type(exc).__name__}"
                                  f"{': ' + str(exc) if str(exc) else ''})",
                                  hint=f"write {key} as a plain value in place (not through a YAML anchor or merge "
                                  "key, not computed), or search it through {args} / {overrides}") from None

    def _verify(self, text: str, values: dict[str, Any]) -> None:
        """Read the written text back: the keys written hold their new values and every other value is as it was;
        else the file's shape is one this cannot edit (``ConfigFileError``, before anything runs on it)."""
        try:
            again = _READ[self.kind](self.path, text.removeprefix(BOM))
        except ConfigFileError as exc:
            raise ConfigFileError(f"{self.path}: writing {', '.join(values)} would break the file ({exc.message})",
                                  hint="write those values on lines of their own (not a multi-line or flow "
                                  "value), or search them through {args} / {overrides}") from None
        expected = _plain(self.values)
        for key, value in values.items():
            _set(expected, key, value)
        if _plain(again) != _plain(expected):  # dicts compare whatever the order (and a YAML map's int keys may sit
            # beside str ones, which sorting cannot order)
            raise ConfigFileError(f"{self.path}: writing {', '.join(values)} changed other values of the file, or "
                                  "not these", hint="write those values plainly, each once (no duplicate keys, "
                                  "anchors or computed values), or search them through {args} / {overrides}")

    def check_writable(self, keys: list[str] | tuple[str, ...]) -> None:
        """Each key can be written into the file (found by the parser where it is written, not only read): before
        trial 0, so a file shape this cannot edit fails there and not mid-search."""
        for key in keys:
            found, value = self.lookup(key)
            if found:
                self.render({key: _other(value)})

    def write(self, path: Path, values: dict[str, Any]) -> None:
        from agentlab.core.runs import atomic_write_bytes

        atomic_write_bytes(path, self.encode(self.render(values)))

    def line_of(self, key: str) -> int:
        """The 1-based line where ``key``'s last part is written (first match in order of the path), else 1."""
        if self.kind == "toml" and (line := _toml_line(self.body, key)) is not None:
            return line
        pos = 0
        for part in key.split("."):
            found = re.compile(rf"[\"']?\b{re.escape(part)}\b[\"']?\s*[:=]").search(self.text, pos)
            if found is None:
                return 1
            pos = found.end()
        return self.text.count("\n", 0, pos) + 1


# --------------------------------------------------------------------------- reading


def _declared(path: Path) -> str:
    """A Python file's encoding as Python reads it (PEP 263: a coding declaration in its first two lines, else
    UTF-8); a byte order mark is kept in the text (``BOM``), so it is written back."""
    import codecs
    import tokenize

    with open(path, "rb") as handle:
        try:
            encoding = tokenize.detect_encoding(handle.readline)[0]
        except SyntaxError as exc:  # an unknown encoding, or a declaration that contradicts the BOM
            raise ConfigFileError(f"objective.config: {path}: {exc.msg}", hint="fix its coding declaration, or "
                                  "save it as UTF-8 without one") from None
    return "utf-8" if encoding == "utf-8-sig" else codecs.lookup(encoding).name


def _toml_line(text: str, key: str) -> int | None:
    """The 1-based line of a TOML file where the dotted ``key`` is written, its table headers followed (``[train]``
    then ``width = 16``: train.width), or where the inline table holding it starts; None when not found so."""
    table = ""
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if header := re.match(r"\[\[?([^\]]+)\]\]?\s*(?:#.*)?$", line):
            table = _toml_key(header.group(1))
            if table == key:
                return number
        elif pair := re.match(r"([^=#\[]+?)\s*=", line):
            full = ".".join(filter(None, (table, _toml_key(pair.group(1)))))
            if full == key or key.startswith(full + "."):
                return number
    return None


def _toml_key(text: str) -> str:
    return ".".join(part.strip().strip("\"'") for part in text.split("."))


def _plain(value: Any) -> Any:
    """``value`` as JSON reads it back: keys as strings, dates and the like as their text."""
    return json.loads(json.dumps(value, default=str))


def _other(value: Any) -> Any:
    """A value of the same kind that differs from ``value`` (to try a write)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    return [value]


_FIX = "fix the file where named, or point objective.config at the file the script reads"


def _read_json(path: Path, text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigFileError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})", hint=_FIX) from None
    return _mapping(path, data)


def _read_yaml(path: Path, text: str) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigFileError(f"{path}{line}: not valid YAML ({getattr(exc, 'problem', None) or exc})",
                              hint=_FIX) from None
    return _mapping(path, data if data is not None else {})


def _read_toml(path: Path, text: str) -> dict[str, Any]:
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(f"{path}: not valid TOML ({exc})", hint=_FIX) from None


def _read_python(path: Path, text: str) -> dict[str, Any]:
    """The module's top-level assignments whose values are literals (``ast.literal_eval``); anything else (imports,
    functions, computed values) is left alone and cannot be searched."""
    return _python_values(_parse_python(path, text))


def _parse_python(path: Path, text: str) -> ast.Module:
    try:
        return ast.parse(text, filename=str(path))
    except SyntaxError as exc:
        raise ConfigFileError(f"{path}:{exc.lineno}: not valid Python ({exc.msg})", hint=_FIX) from None


def _python_values(tree: ast.Module) -> dict[str, Any]:
    """``_read_python`` of a module already parsed."""
    out: dict[str, Any] = {}
    for name, node in _assignments(tree).items():
        try:
            out[name] = _literal(node)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            continue
    return out


def _unread_python(tree: ast.Module, name: str) -> tuple[int, str] | None:
    """(line, why) when the module defines ``name`` in a way ``_read_python`` leaves out (a computed value, a
    class, a function), else None."""
    body = tree.body
    for stmt in reversed(body):
        if isinstance(stmt, ast.ClassDef | ast.FunctionDef) and stmt.name == name:
            return stmt.lineno, f"{name} is a {'class' if isinstance(stmt, ast.ClassDef) else 'function'}"
        value = _assignments(ast.Module(body=[stmt], type_ignores=[])).get(name)
        if value is not None:
            return stmt.lineno, f"{name} = {_short(ast.unparse(value))} is computed, not a literal"
    for stmt in body:
        if (line := _stores(stmt, name)) is not None and _block(stmt):
            return line, f"{name} is assigned only{_block(stmt)}, not at module level"
    return None


_BLOCKS = {ast.If: "an if", ast.For: "a for", ast.AsyncFor: "a for", ast.While: "a while", ast.With: "a with",
           ast.AsyncWith: "a with", ast.Try: "a try", ast.Match: "a match"}


def _block(stmt: ast.stmt) -> str:
    """`` inside an if block (line 3)`` for a compound statement, else empty."""
    kind = next((word for cls, word in _BLOCKS.items() if isinstance(stmt, cls)), None)
    if kind is None and type(stmt).__name__ == "TryStar":  # try/except* (3.11)
        kind = "a try"
    return f" inside {kind} block (line {stmt.lineno})" if kind else ""


def _stores(node: ast.AST, name: str) -> int | None:
    """The line of the first place in ``node`` that binds ``name`` or assigns it at a key, else None."""
    return next((line for line, _, how in _store_paths(node, name) if how == "assigned again"), None)


# a container's methods that change it in place: those that set or remove the keys of their arguments (a dict's
# `update(lr=0.5)`, `pop("lr")`), and those that change it whole (a list's `append`, a dict's `clear`); `setdefault`
# sets a key only when it is missing, and a searched key is there
_KEYED = {"update": "changed by .update()", "pop": "deleted by .pop()", "__setitem__": "changed by .__setitem__()",
          "__delitem__": "deleted by .__delitem__()"}
_WHOLE = ("append", "extend", "insert", "remove", "sort", "reverse", "clear", "popitem", "add", "discard",
          "difference_update", "intersection_update", "symmetric_difference_update", "__iadd__", "__imul__",
          "__ior__")
_NOUNS = {"assigned": "re-assignment", "deleted": "deletion", "changed": "change"}


def _store_paths(node: ast.AST, name: str) -> Iterator[tuple[int, list[str | None], str]]:
    """Each place in ``node`` (not inside a function or class body, nor a comprehension whose loop variable it is:
    their names are their own; not in an ``if __name__ == "__main__":`` block, which an import never runs) that binds
    ``name`` (``=``, ``for``, ``with ... as``, ``except ... as``, ``case``, ``import ... as``, a walrus),
    deletes it or changes it in place, with the keys it stores at and how (``assigned again``, ``deleted``,
    ``changed by .update()``): [] for ``name`` itself, ``["opt", "lr"]`` for ``name["opt"]["lr"] = ``,
    ``name.opt.lr = ``, ``del name["opt"]["lr"]``, ``name["opt"].update(lr=1)`` or ``setattr(name.opt, "lr", 1)``,
    None for a key that is not a constant (``name[k] = ``, ``name.update(other)``)."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        if node.name == name:
            yield node.lineno, [], "assigned again"
        return
    if isinstance(node, ast.Lambda) or isinstance(node, ast.AnnAssign) and node.value is None:
        return  # `LR: float` binds nothing
    if isinstance(node, ast.If) and (main := _main_guard(node.test)) is not None:
        # `if __name__ == "__main__":` runs only when the file is run as a script, never when it is imported
        for child in [node.test, *(node.orelse if main else node.body)]:
            yield from _store_paths(child, name)
        return
    if isinstance(node, ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp) and any(
            isinstance(bound, ast.Name) and bound.id == name and isinstance(bound.ctx, ast.Store)
            for generator in node.generators for bound in ast.walk(generator.target)):
        # `[lr * 2 for lr in ...]`: the loop variable is the comprehension's own, and so is every `lr` inside it (a
        # walrus cannot rebind it); only the first iterable is evaluated at module level
        yield from _store_paths(node.generators[0].iter, name)
        return
    if isinstance(node, ast.Name | ast.Subscript | ast.Attribute) and isinstance(node.ctx, ast.Store | ast.Del):
        path = _path_in(node, name)
        if path is not None:
            yield node.lineno, path, "assigned again" if isinstance(node.ctx, ast.Store) else "deleted"
            return
    if isinstance(node, ast.Call):
        yield from _call_changes(node, name)
    if isinstance(node, ast.alias) and (node.asname or node.name) == name or isinstance(
            node, ast.ExceptHandler | ast.MatchAs | ast.MatchStar) and node.name == name or isinstance(
            node, ast.MatchMapping) and node.rest == name:  # `except E as lr:` (unbound after it), `case lr:`
        yield node.lineno, [], "assigned again"
    for child in ast.iter_child_nodes(node):
        yield from _store_paths(child, name)


def _main_guard(test: ast.expr) -> bool | None:
    """True for an if's test ``__name__ == "__main__"`` (either order), False for ``!=``, else None."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq | ast.NotEq)):
        return None
    sides = (test.left, test.comparators[0])
    if any(isinstance(side, ast.Name) and side.id == "__name__" for side in sides) and any(
            isinstance(side, ast.Constant) and side.value == "__main__" for side in sides):
        return isinstance(test.ops[0], ast.Eq)
    return None


def _call_changes(call: ast.Call, name: str) -> Iterator[tuple[int, list[str | None], str]]:
    """The keys of ``name`` a call changes in place (``_store_paths``): a container's method (``_KEYED``,
    ``_WHOLE``) called on it or on a value inside it, or ``setattr`` / ``delattr`` of it."""
    func, args = call.func, call.args
    if isinstance(func, ast.Name) and func.id in ("setattr", "delattr") and len(args) >= 2:
        path = _path_in(args[0], name)
        if path is not None:
            how = "changed by setattr()" if func.id == "setattr" else "deleted by delattr()"
            yield call.lineno, [*path, _constant(args[1])], how
        return
    if not isinstance(func, ast.Attribute):
        return
    path = _path_in(func.value, name)
    if path is None:
        return
    if func.attr in _WHOLE:
        yield call.lineno, path, f"changed by .{func.attr}()"
    elif func.attr == "update":
        keys: list[str | None] = [kw.arg for kw in call.keywords]  # `**other`: None
        for arg in args:
            written = arg.keys if isinstance(arg, ast.Dict) else [None]
            keys += [None if key is None else _constant(key) for key in written]
        for key in dict.fromkeys(keys):
            yield call.lineno, [*path, key], _KEYED[func.attr]
    elif func.attr in _KEYED:  # pop(key), __setitem__(key, value), __delitem__(key); a list's pop(): its last
        yield call.lineno, [*path, _constant(args[0]) if args else None], _KEYED[func.attr]


def _path_in(node: ast.expr, name: str) -> list[str | None] | None:
    """The keys ``node`` reaches into ``name`` at (``name["opt"].lr``: ``["opt", "lr"]``; ``name``: []), None for a
    key that is not a constant; None in place of the list when ``node`` is not ``name`` or inside it."""
    path: list[str | None] = []
    while isinstance(node, ast.Subscript | ast.Attribute):
        path.insert(0, node.attr if isinstance(node, ast.Attribute) else _constant(node.slice))
        node = node.value
    return path if isinstance(node, ast.Name) and node.id == name else None


def _subscript(key: str) -> str:
    """``training["lr"]`` for ``training.lr``."""
    name, *rest = key.split(".")
    return name + "".join(f"[{json.dumps(part)}]" for part in rest)


def _shown(name: str, parts: list[str]) -> str:
    """A key as a message names it: ``training.opt.lr``, ``SIZES[-1]``, ``training["my key"]``."""
    return name + "".join(f".{part}" if part.isidentifier() else f"[{part}]" if re.fullmatch(r"-?\d+", part)
                          else f"[{json.dumps(part)}]" for part in parts)


def _constant(node: ast.expr) -> str | None:
    """A subscript's key as a searched key's part (``"lr"``, ``0``, ``-1``), or None when it is computed (``k``)."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd) and isinstance(
            node.operand, ast.Constant) and isinstance(node.operand.value, int) and not isinstance(
            node.operand.value, bool):
        return str(-node.operand.value if isinstance(node.op, ast.USub) else node.operand.value)  # `L[-1]`
    if isinstance(node, ast.Constant) and isinstance(node.value, str | int) and not isinstance(node.value, bool):
        return str(node.value)
    return None


class Again(NamedTuple):
    """A statement that sets a searched key's value again after the assignment a trial's value is written into
    (``_assigned_again``): its line, `` inside an if block (line 3)`` or empty, the line of the assignment written,
    what it sets (``training``, ``training.lr``, ``SIZES[-1]``, ``training[...]``), how (``assigned again``,
    ``deleted``, ``changed by .update()``) and whether it can be told that it sets the key."""

    line: int
    where: str
    first: int
    what: str
    how: str
    told: bool


def _assigned_again(tree: ast.Module, key: str) -> Again | None:
    """The statement, when a module-level statement after the assignment a trial's value of ``key`` is written into
    (``_assignments``' last) binds its name again, deletes it or changes it at ``key``, above it or inside it: the
    script would read that value, not the trial's. ``training["batch_size"] = `` leaves ``training.lr`` alone;
    ``training[k] = `` may not (not ``told``: it cannot be told)."""
    name, *rest = key.split(".")
    body = tree.body
    last = max((i for i, stmt in enumerate(body) if _assignments(ast.Module(body=[stmt], type_ignores=[]))
                .get(name) is not None), default=None)
    if last is None:
        return None
    for stmt in body[last + 1:]:
        for line, path, how in _store_paths(stmt, name):
            known = [part for part in itertools.takewhile(lambda part: part is not None, path) if part is not None]
            shared = min(len(known), len(rest))
            if known[:shared] != rest[:shared]:
                continue  # another key: training["batch_size"] for training.lr
            told = len(known) == len(path) or len(known) >= len(rest)
            what = _shown(name, known) + ("" if len(known) == len(path) else "[...]")
            return Again(line, _block(stmt), body[last].lineno, what, how, told)
    return None


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= 60 else text[:57] + "..."


def _literal(node: ast.expr) -> Any:
    """``ast.literal_eval``, and ``dict(key=literal, ...)`` as a dict (a common way to write a config)."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args \
            and all(kw.arg is not None for kw in node.keywords):
        return {kw.arg: _literal(kw.value) for kw in node.keywords}
    if isinstance(node, ast.Dict) and all(k is not None for k in node.keys):
        return {ast.literal_eval(k): _literal(v) for k, v in zip(node.keys, node.values, strict=True)}  # type: ignore[arg-type]
    if isinstance(node, ast.List):
        return [_literal(v) for v in node.elts]
    return ast.literal_eval(node)


def _mapping(path: Path, data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigFileError(f"{path}: the file holds a {type(data).__name__}, not a mapping of settings",
                              hint="objective.config names a file of key: value settings")
    return data


def _assignments(tree: ast.Module) -> dict[str, ast.expr]:
    """name -> value node of each top-level ``name = value`` / ``name: type = value`` (the last one wins)."""
    out: dict[str, ast.expr] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            out[stmt.targets[0].id] = stmt.value
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value is not None:
            out[stmt.target.id] = stmt.value
    return out


_READ = {"json": _read_json, "yaml": _read_yaml, "toml": _read_toml, "python": _read_python}


# --------------------------------------------------------------------------- writing


def _write_json(cfg: ConfigFile, values: dict[str, Any]) -> str:
    """Each value written in place (the rest of the file as it was: its layout, its other values' spelling); a
    file whose values cannot be found so (PyYAML reads JSON as YAML to find where they stand) is written whole,
    indented as it was."""
    data = json.loads(cfg.text)
    for key, value in values.items():
        _set(data, key, value)
    try:
        import yaml

        root, spans = yaml.compose(cfg.text.replace("\t", " ")), []  # YAML refuses tab indents; same offsets
        for key, value in values.items():
            node = _yaml_node(root, key)
            spans.append((node.start_mark.index, node.end_mark.index, json.dumps(value, ensure_ascii=False)))
        text = _splice(cfg.text, spans)
        if json.loads(text) == data:
            return text
    except (ValueError, StopIteration, AttributeError, TypeError, yaml.YAMLError):
        pass
    indent_match = re.search(r"\n([ \t]+)\S", cfg.text)
    indent = indent_match.group(1) if indent_match else None
    return json.dumps(data, indent=indent, ensure_ascii=False) + ("\n" if cfg.text.endswith("\n") else "")


def _write_toml(cfg: ConfigFile, values: dict[str, Any]) -> str:
    import tomlkit

    doc = tomlkit.parse(cfg.text)
    for key, value in values.items():
        _set(doc, key, value)
    return tomlkit.dumps(doc)


def _write_yaml(cfg: ConfigFile, values: dict[str, Any]) -> str:
    import yaml

    root = yaml.compose(cfg.text)
    shared = _shared_nodes(root)
    spans: list[tuple[int, int, str]] = []
    for key, value in values.items():
        try:
            node = _yaml_node(root, key)
        except StopIteration:  # read through a merge key (`<<: *defaults`): no node of its own to write
            raise ConfigFileError(f"{cfg.path}:{cfg.line_of(key.rsplit('.', 1)[0]) if '.' in key else 1}: {key} "
                                  "comes from a YAML merge key (<<), not written in place",
                                  hint=f"give {key.rsplit('.', 1)[0]} its own {key.rsplit('.', 1)[-1]}: line (it "
                                  "overrides the merged one) to search it") from None
        if id(node) in shared:
            raise ConfigFileError(f"{cfg.path}:{node.start_mark.line + 1}: {key} is a YAML anchor or alias (its "
                                  "value is shared with another key)", hint=f"write {key}'s value in place to "
                                  "search it")
        text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30, allow_unicode=True).strip()
        text = text.removesuffix("\n...").removesuffix("...").strip()
        start, end = node.start_mark.index, node.end_mark.index
        # a block collection or block scalar ends where the next key starts: cut at its last line of content,
        # before trailing blank lines and comments
        lines = cfg.text[start:end].split("\n")
        while len(lines) > 1 and (not lines[-1].strip() or lines[-1].lstrip().startswith("#")):
            lines.pop()
        end = start + len("\n".join(lines).rstrip(" \t\r"))
        if start == end and start > 0 and cfg.text[start - 1] == ":":
            text = " " + text  # `lr:` with no value
        spans.append((start, end, text))
    return _splice(cfg.text, spans)


def _yaml_node(root: Any, key: str) -> Any:
    """The composed YAML node of the dotted ``key`` (``StopIteration`` when a part is missing)."""
    node = root
    for part in key.split("."):
        node = next(v for k, v in node.value if k.value == part)
    return node


def _shared_nodes(root: Any) -> set[int]:
    """ids of the nodes reached more than once (an anchor and its aliases, a merge key's mapping)."""
    seen: dict[int, int] = {}

    def walk(node: Any) -> None:
        seen[id(node)] = seen.get(id(node), 0) + 1
        if seen[id(node)] > 1:
            return
        if isinstance(node.value, list):
            for item in node.value:
                for child in item if isinstance(item, tuple) else (item,):
                    walk(child)

    walk(root)
    return {key for key, count in seen.items() if count > 1}


def _write_python(cfg: ConfigFile, values: dict[str, Any]) -> str:
    tree = cfg.tree  # of the text written into (past a byte order mark: `render`)
    top = _assignments(tree)
    starts = _line_starts(cfg.text)
    spans: list[tuple[int, int, str]] = []
    for key, value in values.items():
        name, *rest = key.split(".")
        node: ast.expr = top[name]
        for part in rest:
            node = _dict_value(node, part, cfg.path, key)
        start = _offset(cfg.text, starts, node.lineno, node.col_offset)
        end = _offset(cfg.text, starts, node.end_lineno or node.lineno, node.end_col_offset or 0)
        spans.append((start, end, _python_text(value, node, cfg.text[start:end])))
    return _splice(cfg.text, spans)


def _python_text(value: Any, written: ast.expr, source: str) -> str:
    """``value`` as Python source, a string in the quotes the old value was written in, a list as a tuple where the
    old value was one (``SIZES = (16, 16)``: the space's lists stand for it)."""
    if isinstance(value, str) and source[:1] == '"' and '"' not in value and "\\" not in value:
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list) and isinstance(written, ast.Tuple):
        return repr(tuple(value))
    return repr(value)


def _dict_value(node: ast.expr, part: str, path: Path, key: str) -> ast.expr:
    if isinstance(node, ast.Dict):
        for k, v in zip(node.keys, node.values, strict=True):
            if isinstance(k, ast.Constant) and k.value == part:
                return v
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
        for kw in node.keywords:
            if kw.arg == part:
                return kw.value
    raise ConfigFileError(f"{path}:{node.lineno}: {key!r} is not a literal this file writes",
                          hint="search a key whose value is written as a literal (a number, string, list or dict)")


def _line_starts(text: str) -> list[int]:
    starts = [0]
    for match in re.finditer("\n", text):
        starts.append(match.end())
    return starts


def _offset(text: str, starts: list[int], lineno: int, col_bytes: int) -> int:
    """The character index of ``ast``'s (line, UTF-8 byte column)."""
    line_start = starts[lineno - 1]
    line = text[line_start:starts[lineno] if lineno < len(starts) else len(text)]
    return line_start + len(line.encode("utf-8")[:col_bytes].decode("utf-8", errors="ignore"))


def _splice(text: str, spans: list[tuple[int, int, str]]) -> str:
    for start, end, new in sorted(spans, reverse=True):
        text = text[:start] + new + text[end:]
    return text


def _set(data: Any, key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = data
    for part in parents:
        node = node[part]
    node[last] = value


_WRITE = {"json": _write_json, "yaml": _write_yaml, "toml": _write_toml, "python": _write_python}
