"""YAML configs validated by pydantic, with errors that name the file, the line and the field.

Precedence: model defaults, then the YAML file, then ``--set key.path=value`` overrides (applied to the raw dict before
validation; values parsed as YAML so ``--set train.lr=1e-3`` is a float and ``--set a.b=[1,2]`` a list).
``${VAR}`` and ``${VAR:-default}`` in string values are filled from the environment, then from ``.env``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import logging
import math
import os
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin
from urllib.parse import unquote

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError, model_validator

from agentlab.core.errors import ConfigError, UsageError
from agentlab.core.files import read_text

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# Field names whose values are secrets. `*_env` fields hold the *name* of a variable and are safe to show.
_SECRET_KEY_RE = re.compile(r"(api[_-]?key|token|secret|password|authorization)$", re.IGNORECASE)
# HTTP header names (a provider's ``headers``) whose values are credentials: X-Auth-Key, Ocp-Apim-Subscription-Key,
# Cookie, Proxy-Authorization, X-Amz-Security-Token, ...
_SECRET_HEADER_RE = re.compile(r"(?:^|[-_])(?:api-?key|key|auth|authorization|cookie|token|secret|signature|"
                               r"password|passphrase|pass|credentials?|jwt)(?:[-_]|$)", re.IGNORECASE)
# A secret field whose value is only environment references and an auth scheme ("Bearer ${OPENAI_API_KEY}") is kept
# as that text: it holds no secret and reads back from the environment, where "***" would be sent as the credential
_ENV_ONLY_RE = re.compile(r"(?:(?:Bearer|Basic|Token)\s+)?(?:\$\{[A-Za-z_][A-Za-z0-9_]*\}\s*)+", re.IGNORECASE)
# Environment variables whose values are secrets wherever they end up (a URL, a header, an error message).
_SECRET_ENV_RE = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|PASS|CREDENTIALS?|AUTH)$", re.IGNORECASE)
_MIN_SECRET_LEN = 6  # shorter values ("1", "true") would scrub ordinary text; no real key is this short
# Credentials that can sit in a URL even when typed literally: user:password@ and ?key=... style parameters.
# A password runs to the authority's last "@" (where URL parsers split it): "user:pa@ss@host" hides "pa@ss".
# (?<!...): tried where a word starts (a long word before "://" was tried from each of its letters: minutes); the
# word may start with what no scheme does ("\x1b[32mhttps://", "1http://"), its scheme then further in
_URL_USERINFO_RE = re.compile(r"(?P<head>(?<![A-Za-z0-9+.-])[0-9+.-]*[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)(?P<secret>[^\s/?#]+)"
                              r"(?=@[^@\s/?#]*(?:[/?#\s]|$))")
_URL_PARAM_RE = re.compile(r"(?P<head>[?&](?:api[_-]?key|key|token|access_token|secret|password|sig|signature)=)"
                           r"(?P<secret>[^&#\s]+)", re.IGNORECASE)
REDACTED = "***"
# what redact wrote in a URL (a password, a key parameter _URL_PARAM_RE names): `?page=***` in a prompt is no secret
_REDACTED_URL_RE = re.compile(r"://[^/\s]*:\*\*\*@|[?&](?:api[_-]?key|key|token|access_token|secret|password|sig|"
                              r"signature)=\*\*\*(?:[&#\s]|$)", re.IGNORECASE)
_FIELD_MSG_RE = re.compile(r"^([A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*): (.+)$", re.DOTALL)


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, every field documents itself."""

    model_config = ConfigDict(extra="forbid", validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, data: Any) -> Any:
        """pydantic's lax mode reads YAML's ``true`` as 1 for an int or float field (``port: true`` served on port
        1): where the field takes no boolean, a boolean is given on as its word, which the field refuses (``expected
        a number, got true``, ``format_validation_error``) beside every other error of the section."""
        if not isinstance(data, dict):
            return data
        numbers = {name for name, value in data.items() if isinstance(value, bool) and name in cls.model_fields
                   and bool not in (kinds := _kinds(cls.model_fields[name].annotation)) and kinds & {int, float}
                   and Any not in kinds}
        for name in numbers:
            if str in _kinds(cls.model_fields[name].annotation):  # it would take the word as text: said here
                raise ValueError(f"{name}: expected a number, got {str(data[name]).lower()}")
        return {name: str(value).lower() if name in numbers else value for name, value in data.items()}


def _kinds(annotation: Any) -> set[Any]:
    """The types a field's annotation admits at its top level (through unions, Optional, Annotated; a Literal's
    values' types)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _kinds(get_args(annotation)[0])
    if origin in (Union, UnionType):
        return set().union(*(_kinds(arg) for arg in get_args(annotation)))
    if origin is Literal:
        return {type(arg) for arg in get_args(annotation)}
    return {annotation}


# --------------------------------------------------------------------------- environment


def load_dotenv_values(start: Path | None = None) -> dict[str, str]:
    """Values from the nearest ``.env`` (current directory first, then the config file's folder); never exported."""
    import io

    from dotenv import dotenv_values

    for folder in [Path.cwd(), *([start] if start else [])]:
        candidate = folder / ".env"
        if candidate.is_file():  # read here: a .env that is not UTF-8 is one clear error, not a traceback
            return {k: v for k, v in dotenv_values(stream=io.StringIO(read_text(candidate, ".env file"))).items()
                    if v is not None}
    return {}


def secret_values(extra_names: Iterable[str] = ()) -> dict[str, str]:
    """value -> variable name for every secret-looking variable (``*_KEY``, ``*_TOKEN``, ``*_SECRET``, ...) of the
    environment and ``.env``, and for ``extra_names`` (e.g. an ``api_key_env``), longest value first."""
    dotenv = load_dotenv_values()
    names = {n for n in [*os.environ, *dotenv] if _SECRET_ENV_RE.search(n)} | set(extra_names)
    found: dict[str, str] = {}
    for name in sorted(names):
        value = getenv(name, dotenv)
        if value and len(value) >= _MIN_SECRET_LEN and not _ENV_RE.fullmatch(value):
            found.setdefault(value, name)
    return dict(sorted(found.items(), key=lambda item: -len(item[0])))


# value -> variable name for each ${NAME} a config file read into a credential field, a header that holds one, or a
# URL (``interpolate_env``): a credential holding one is written back as ``${NAME}``, whatever the name. No file is
# read to check it (scrub_text runs in logging filters and error paths, which must not fail).
_READ_FROM_ENV: dict[str, str] = {}
# those of its values read into a credential field or header (not only a URL): secrets wherever they are written
# (`retries: ${TOK}` beside `Authorization: Bearer ${TOK}` printed the token in its error); one counts while it is in
# _READ_FROM_ENV
_CREDENTIALS_READ: set[str] = set()


def _values_read_from_env() -> dict[str, str]:
    """value -> name for the values a config's ``${NAME}`` read, longest first; not one whose variable the
    environment now sets to something else (a .env's value is taken as read)."""
    found = {value: name for value, name in list(_READ_FROM_ENV.items())
             if os.environ.get(name, value) == value}
    return dict(sorted(found.items(), key=lambda item: -len(item[0])))


def scrub_text(text: str, secrets: Iterable[str] = (), known: dict[str, str] | None = None) -> str:
    """``text`` with every secret removed: values of secret variables become ``${NAME}`` (so a snapshot still
    re-runs), other ``secrets`` and credentials in URLs (``user:PASSWORD@``, ``?key=...``) become ``***`` (a URL's
    credential a config read from ``${NAME}`` becomes ``${NAME}``, and so does a value a config read from ``${NAME}``
    into a credential field or header, wherever it stands)."""
    for value, name in (secret_values() if known is None else known).items():
        text = text.replace(value, f"${{{name}}}")
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)

    # Each pattern needs its marker in the text: most texts (a run's event lines) skip both scans.
    if "://" in text:
        text = _hide_url_secrets(_URL_USERINFO_RE, text)
    if "=" in text:
        text = _hide_url_secrets(_URL_PARAM_RE, text)
    # a credential a config read from ${NAME}, wherever else it stands (an error's "got '...'"), after the URLs: a
    # URL's longer literal that starts with it is hidden whole there
    if _CREDENTIALS_READ:
        for value, name in _values_read_from_env().items():
            if value in _CREDENTIALS_READ:
                text = text.replace(value, f"${{{name}}}")
    return text


def _hide_url_secrets(pattern: re.Pattern[str], text: str) -> str:
    """``text`` with each ``pattern`` match's secret hidden: ``${NAME}`` where a config read the value there from
    ``${NAME}``, the whole value even where it holds the pattern's stop character (``?key=ab&cd`` read from
    ``${KEY}``: the pattern sees ``ab``, and ``&cd`` would be left in sight), else ``***``."""
    read = _values_read_from_env() if _READ_FROM_ENV else {}
    out, pos = [], 0
    for match in pattern.finditer(text):
        start = match.start("secret")
        if start < pos or _ENV_RE.fullmatch(match.group("secret")):
            continue
        # the longest value read there that ends where a URL's secret can end (not a prefix of a longer literal)
        value = next((v for v in read if text.startswith(v, start) and start + len(v) >= match.end("secret")
                      and re.match(r"[&#/?@\s]|$", text[start + len(v):])), None)
        out += [text[pos:start], f"${{{read[value]}}}" if value else REDACTED]
        pos = start + len(value) if value else match.end("secret")
    return "".join(out) + text[pos:]


def getenv(name: str, dotenv: dict[str, str] | None = None) -> str | None:
    """The environment wins over ``.env``."""
    if name in os.environ:
        return os.environ[name]
    if dotenv is None:
        dotenv = load_dotenv_values()
    return dotenv.get(name)


# --------------------------------------------------------------------------- YAML with line numbers

Path_ = tuple[Any, ...]


def _line_map(text: str, file: Path | None = None, plain: dict[Path_, str] | None = None) -> dict[Path_, int]:
    """Map every key path in a YAML document to its 1-based line (the line of the key, or of the list item);
    ``plain``, when given, gets the text of each unquoted scalar value as written (``yes`` that YAML reads as true).

    Raises ``ConfigError`` for what YAML itself accepts but a config must not hold: a key given twice in one mapping
    (YAML keeps the last silently) and an alias that contains itself (an endless structure).
    """
    lines: dict[Path_, int] = {}
    where = str(file) if file is not None else "config"

    def walk(node: yaml.Node, path: Path_, parents: frozenset[int]) -> None:
        if id(node) in parents:
            raise ConfigError(f"{where}:{node.start_mark.line + 1}: {_dotted(path)}: an alias that contains itself",
                              hint="an anchor (&name) cannot be used (*name) inside its own value")
        parents = parents | {id(node)}
        if plain is not None and isinstance(node, yaml.ScalarNode) and node.style is None:
            plain[path] = node.value
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, value_node in node.value:
                key, line = key_node.value, key_node.start_mark.line + 1
                if key in seen and key != "<<":
                    raise ConfigError(f"{where}:{line}: {_dotted((*path, key))}: key given twice (also on line "
                                      f"{seen[key]})", hint="keep one of them")
                seen[key] = line
                lines[path + (key,)] = line
                walk(value_node, (*path, key), parents)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines[path + (index,)] = item.start_mark.line + 1
                walk(item, (*path, index), parents)

    root = compose_yaml(text, where)
    if root is not None:
        lines[()] = root.start_mark.line + 1
        walk(root, (), frozenset())
    return lines


# How many values the aliases (*name) of one YAML file may add as it is read. An anchor's value is one object
# wherever it is aliased, but everything after the read (the line map, ${VAR}, --set, validation) walks each use: a
# few nested anchors stand for billions of values (a "billion laughs" file), minutes of work before any error. A
# config that reuses its anchors adds hundreds.
MAX_ALIAS_VALUES = 100_000


def compose_yaml(text: str, where: str) -> yaml.Node | None:
    """The node graph of the YAML document ``text`` (PyYAML's ``compose``; ``yaml.YAMLError`` as it raises it), or
    None for an empty one; ``ConfigError`` naming ``where`` (a file) and the line where the values its aliases add
    pass ``MAX_ALIAS_VALUES``. Counted on the graph, each node once, so the check costs what the file's size does."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if root is not None:
            _check_alias_growth(root, where)
    except RecursionError:
        raise _too_deep(where) from None
    return root


def load_yaml(text: str, where: str, *, lines: bool = True, refused: re.Pattern[str] | None = None) -> Any:
    """``text`` read as ``yaml.safe_load`` reads it, from one composition checked by ``compose_yaml`` (``where``:
    the file, for its error, followed by the line unless ``lines`` is False: a ``--set`` value is one line).
    ``refused``: the tags (as written, ``!!binary``) refused by name; the others not plain are PyYAML's to build or
    refuse (default: every tag not plain is refused)."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        _check_alias_growth(root, where, lines, refused)
        try:
            return loader.construct_document(root)
        except ValueError:  # an integer of over 4,300 digits (sys.set_int_max_str_digits), a date as 2024-13-45
            raise _unreadable_value(loader, root, where, lines) from None
    except RecursionError:  # PyYAML reads nesting by recursion: [[[[... a few hundred deep
        raise _too_deep(where) from None
    finally:
        loader.dispose()


_INT_DIGITS = 4300  # Python's default limit of int(text) (sys.get_int_max_str_digits)


def _unreadable_value(loader: yaml.SafeLoader, root: yaml.Node, where: str, lines: bool) -> ConfigError:
    """The error of a plain value PyYAML failed to build with a bare ``ValueError`` (an integer too long for Python
    to read, a date with no such day), naming its line (``where`` alone when not ``lines``) and its key."""
    seen: set[int] = set()

    def walk(node: yaml.Node, path: Path_) -> tuple[Path_, yaml.Node, str] | None:
        if id(node) in seen:
            return None
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            try:
                loader.yaml_constructors[node.tag](loader, node)
            except ValueError as exc:
                return path, node, str(exc)
            except Exception:  # a tag refused elsewhere: not this error
                return None
            return None
        pairs = [(k, v, (*path, k.value)) for k, v in node.value] if isinstance(node, yaml.MappingNode) else \
            [(None, v, (*path, i)) for i, v in enumerate(node.value)] if isinstance(node, yaml.SequenceNode) else []
        for key, value, below in pairs:
            found = (walk(key, path) if key is not None else None) or walk(value, below)
            if found:
                return found
        return None

    found = walk(root, ())
    if found is None:
        return ConfigError(f"{where}: a value YAML cannot read", hint="check the values of the file")
    path, node, why = found
    at = f"{where}:{node.start_mark.line + 1}" if lines else where
    field = f"{_dotted(path)}: " if path else ""
    digits = sum(c.isdigit() for c in node.value)
    if node.tag == "tag:yaml.org,2002:int" and digits > _INT_DIGITS:
        return ConfigError(f"{at}: {field}a number too long to read ({digits:,} digits); a config's numbers have at "
                           f"most {_INT_DIGITS:,} digits", hint="write the number the setting needs")
    shown = node.value if len(node.value) <= 40 else node.value[:39] + "…"
    return ConfigError(f"{at}: {field}{shown!r} cannot be read as YAML reads it unquoted: {why}",
                       hint="fix the value, or quote it to give it as text")


def _too_deep(where: str) -> ConfigError:
    return ConfigError(f"{where}: nested too deeply to read (lists or mappings hundreds of levels inside each other)",
                       hint="a config nests a few levels; check the file is the one you meant")


# The tags a config's values may have: those YAML gives plain values (text, numbers, true/false, null, dates,
# lists, mappings, the `<<` of a merge), written or not. PyYAML's safe reader also makes bytes (!!binary), sets,
# ordered pairs (!!omap, !!pairs) and refuses others with "could not determine a constructor": no config takes them.
_PLAIN_TAGS = frozenset(f"tag:yaml.org,2002:{name}" for name in
                        ("str", "int", "float", "bool", "null", "timestamp", "seq", "map", "merge"))


# The tags PyYAML's safe reader builds into values no config takes (bytes, sets, ordered pairs), and Python's: refused
# in a --set value as in a file. Any other tag (`--set topic=!important`, a bare `=`) was always the text as typed.
_BUILT_TAG = re.compile(r"^!!(binary|set|omap|pairs|python/.*)$")


def _shown_tag(node: yaml.Node) -> str:
    return node.tag.replace("tag:yaml.org,2002:", "!!")


def _tag_refused(node: yaml.Node, at: str) -> ConfigError:
    tag = _shown_tag(node)
    if tag == "!!value" and node.value == "=":  # untagged: YAML reads a bare `=` as its !!value
        return ConfigError(f"{at}: a bare '=' is no value a config takes (YAML reads it as its !!value tag)",
                           hint='quote it to give it as text: "="')
    return ConfigError(f"{at}: the YAML tag {tag} is not supported: a config takes "
                       "plain values (text, numbers, true/false, lists, mappings)",
                       hint=f"remove the tag {tag} (quote the value to give it as text)")


def _check_alias_growth(root: yaml.Node, where: str, lines: bool = True, refused: re.Pattern[str] | None = None
                        ) -> None:
    """``ConfigError`` for a value whose tag is not one of ``_PLAIN_TAGS``, and for aliases that expand past
    ``MAX_ALIAS_VALUES`` (``where:line`` names the node, or ``where`` alone when not ``lines``)."""

    def at(node: yaml.Node) -> str:
        return f"{where}:{node.start_mark.line + 1}" if lines else where

    sizes: dict[int, int] = {}  # a node's values with every alias in it written out
    distinct = 0  # the nodes met so far, each once

    def size(node: yaml.Node) -> int:
        nonlocal distinct
        if id(node) in sizes:
            return sizes[id(node)]
        if node.tag not in _PLAIN_TAGS and (refused is None or refused.match(_shown_tag(node))):
            raise _tag_refused(node, at(node))
        sizes[id(node)] = 0  # being counted: an alias inside its own anchor is `_line_map`'s error
        distinct += 1
        children = [part for pair in node.value for part in pair] if isinstance(node, yaml.MappingNode) else \
            node.value if isinstance(node, yaml.SequenceNode) else []
        total = 1 + sum(size(child) for child in children)
        if total - distinct > MAX_ALIAS_VALUES:  # the aliases under this node alone add that many
            raise ConfigError(f"{at(node)}: the aliases (*name) here expand to more than "
                              f"{MAX_ALIAS_VALUES:,} values (anchors nested in anchors: a 'billion laughs' file), "
                              "not read",
                              hint="write the values out, or alias a value fewer times; a config needs no more")
        sizes[id(node)] = total
        return total

    size(root)


class _Source:
    """Where each value came from: a file line, or a ``--set`` override."""

    def __init__(self, path: Path | None, text: str | None):
        self.path = path
        self.plain: dict[Path_, str] = {}  # the unquoted values as the file wrote them (``_file_read_as``)
        self.lines = _line_map(text, path, self.plain) if text else {}
        self.overridden: dict[Path_, str] = {}

    def where(self, loc: Path_, *, by_value: bool = True) -> str:
        """``file:line`` or ``--set ...`` of the key at ``loc`` (or of the nearest key above it). ``by_value``: the
        error is about the key's value, which an override below it can cause: that override is named with the file's
        line (`n.yaml:8 with --set search.space.lr.low=0.5`); not for an unknown key, which its name is."""
        for cut in range(len(loc), -1, -1):
            prefix = tuple(loc[:cut])
            if prefix in self.overridden:
                return self.overridden[prefix]
            below = [origin for key, origin in self.overridden.items() if key[:cut] == prefix] \
                if cut == len(loc) > 0 else []
            if self.path is not None and prefix in self.lines and (cut > 0 or not self.overridden):
                return f"{self.path}:{self.lines[prefix]}" + (f" with {below[-1]}" if below and by_value else "")
            if below:  # a key only an override made (`--set nosuch.deep=1` makes `nosuch`)
                return below[0]
        if self.path is not None:
            return str(self.path)
        return "config"


def config_where(file: str | Path | None, sets: Sequence[str | Flag], loc: tuple[str | int, ...],
                 moved: dict[str, str] | None = None) -> str | None:
    """Where the config key ``loc`` (``("search", "warm_start", 0)``) was given, as config errors name it: the last
    ``--set`` or option that set it (or a key above or below it), else ``file:line`` of it (or of the nearest key
    above it; ``moved``, a model's ``MOVED_KEYS``: a key at its old place too), else None. For the errors found after
    validation (a warm_start entry that is no experiment of the space, a searched key the script has no option for),
    which the model's checks cannot see."""
    moved = moved or {}
    dotted = ".".join(str(part) for part in loc)
    for item in reversed(list(sets)):
        key = item.key if isinstance(item, Flag) else str(item).split("=", 1)[0].strip()
        head, _, rest = key.partition(".")
        key = moved[head] + (f".{rest}" if rest else "") if head in moved else key
        if dotted == key or dotted.startswith(key + ".") or key.startswith(dotted + "."):
            return str(item) if isinstance(item, Flag) else set_label(str(item))
    if file is None:
        return None
    try:
        lines = _line_map(Path(file).read_text(encoding="utf-8"), Path(file))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, ConfigError):
        return None
    paths = [tuple(loc)]
    for old, new in moved.items():  # the old spelling (``warm_start:`` for search.warm_start), moved when read
        place = tuple(new.split("."))
        if tuple(loc[:len(place)]) == place:
            paths.append((old, *loc[len(place):]))
    for path in paths:
        for cut in range(len(path), 0, -1):
            if path[:cut] in lines:
                return f"{file}:{lines[path[:cut]]}"
    return None


def missing_config(path: Path, optional: bool = True) -> ConfigError:
    """The error of a config file that is not there, with the next steps (``agentlab config examples .``);
    ``optional``: the file was given to an option that may be left out (-c), which the hint then offers."""
    return ConfigError(f"{path}: config file not found",
                       hint="check the path" + (", or leave that option out for the defaults" if optional else "")
                       + "; `agentlab config examples .` writes the example configs the docs name (configs/nas.yaml, "
                       "...)")


def read_config(path: Path, schema: str | None = None, optional: bool = True) -> dict[str, Any]:
    """A config file's top-level mapping, read as ``load_config`` reads it: ``ConfigError`` for a file that is not
    there, is not YAML, is empty (or only comments) or holds no mapping (``schema``: the name of its command, for
    the hint; ``optional``: as for :func:`missing_config`, whether the hints may offer to leave the file out)."""
    return _read_yaml(path, schema, optional)[0]


def _read_yaml(path: Path, schema: str | None = None, optional: bool = True) -> tuple[dict[str, Any], str]:
    show = f"`agentlab config show {schema or 'COMMAND'}`"
    if not path.exists():
        raise missing_config(path, optional)
    text = read_text(path, "config file")
    try:
        data = load_yaml(text, str(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        # the end of the file (`[unclosed`) is met past the last line: named by the last line that holds something
        last = max((i for i, line in enumerate(text.splitlines(), 1) if line.strip() and not
                    line.lstrip().startswith("#")), default=1)
        where = f"{path}:{min(mark.line + 1, last)}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        tab = "'\\t'" in problem  # PyYAML: "found character '\t' that cannot start any token"
        raise ConfigError(f"{where}: invalid YAML: {problem}",
                          hint="YAML indents with spaces, not tabs: replace the tab at that line with spaces" if tab
                          else "fix the YAML syntax at that line") from None
    if data is None:  # given on purpose and empty: a file half-written or all commented out, never the defaults
        raise ConfigError(f"{path}: the config file is empty (no keys, or only comments)",
                          hint=f"write the keys to set ({show} prints every default)"
                          + (", or give no file for the defaults" if optional else ""))
    if not isinstance(data, dict):
        root = compose_yaml(text, str(path))  # read once already: where its top-level value starts
        raise ConfigError(f"{path}:{root.start_mark.line + 1 if root is not None else 1}: the top level must be a "
                          f"mapping of keys, got {type(data).__name__}",
                          hint=f"write `key: value` lines ({show} prints every key)")
    return data, text


# --------------------------------------------------------------------------- overrides and interpolation


SET_EXAMPLE = ("KEY=VALUE, a dotted key for a nested field: e.g. --set name=trial-2 (`agentlab config show CMD` lists "
               "the keys)")


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], parsed value). Values are YAML: numbers, booleans, lists, mappings."""
    if "=" not in item:
        raise ConfigError(f"{set_label(item)}: expected key.path=value", hint=SET_EXAMPLE)
    key, _, raw = item.partition("=")
    parts = [p for p in key.strip().split(".")]
    if not all(parts):
        raise ConfigError(f"{set_label(item)}: empty key in '{key}'", hint=SET_EXAMPLE)
    try:  # read as a file's value is (aliases bounded, before any other reading of it: see ``_set_text``)
        value = load_yaml(raw, f"--set {key}=...", lines=False, refused=_BUILT_TAG) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw  # text, as it always was: no YAML, a local tag (`topic=!important`), a bare `=`
    except ConfigError:
        if set_label(item) == f"--set {item}":
            raise
        raise ConfigError(f"{set_label(item)}: the value is none a config takes (a YAML tag, aliases; not shown: it "
                          "may be a secret)", hint="quote the value to give it as text") from None
    return parts, value


@dataclass(frozen=True)
class Flag:
    """A command-line option that stands for a config key (``--max-iterations 30`` for ``search.max_iterations``).

    Unlike a ``--set`` string its value is already typed (a prompt such as ``a: b`` stays text, not YAML), and errors
    name the option as the user typed it.
    """

    option: str
    key: str
    value: Any
    typed: Any = None  # what the user typed, when the value is built from it (debate's --adapters DIR: an agent)

    def __str__(self) -> str:
        if isinstance(self.value, bool):
            return self.option
        given = self.value if self.typed is None else self.typed
        values = (given or [""]) if isinstance(given, list) else [given]  # --tasks "": nothing in it
        return " ".join(f"{self.option} {value if value != '' else repr('')}" for value in values)


def override_list(overrides: Iterable[str | Flag] | None) -> list[str | Flag]:
    """``overrides`` (``--set`` strings and ``Flag``s) as a new list; ``UsageError`` for anything else, such as one
    string where a list of them belongs (``overrides="train.epochs=1"``), which would read as one ``--set`` a
    character (``--set m: expected key.path=value``)."""
    if overrides is None:
        return []
    if isinstance(overrides, str | bytes | dict | Flag) or not isinstance(overrides, Iterable):
        shown = _set_text(overrides) if isinstance(overrides, str) else overrides
        wrong = f"got {'one string' if isinstance(overrides, str) else type(overrides).__name__}, {shown!r}"
    else:
        items = list(overrides)
        odd = [item for item in items if not isinstance(item, str | Flag)]
        if not odd:
            return items
        wrong = f"got an item of type {type(odd[0]).__name__}, {odd[0]!r}"
    raise UsageError(f"overrides: {wrong}; overrides must be a list of strings, e.g. ['train.epochs=1']",
                     hint="give each key.path=value as one item of a list: overrides=['train.epochs=1', 'seed=2']")


# A variable's name shown in an error: upper case letters, digits and underscores, a letter first, at most 40
# characters, and an underscore when 16 characters or more (a client key has at least 16). Anything else may be a key
# pasted where the variable's name goes, and is never printed (docs: serve, Client keys).
_SHOWN_NAME = re.compile(r"^(?=.{1,40}$)[A-Z][A-Z0-9_]*$")


def shown_env_name(value: object) -> str | None:
    """``value`` when it reads as a conventional environment variable's name (``OPENAI_API_KEY``), so an error may
    print it; None when it may be a key pasted where the name goes (``sk-...``, lower case, long without an
    underscore), which is never printed. The one rule of ``--set *_env=`` labels and `serve`'s key variables."""
    if isinstance(value, str) and _SHOWN_NAME.match(value) and (len(value) < 16 or "_" in value):
        return value
    return None


def _set_text(item: str) -> str:
    """``key=value`` with the value left out (``key=...``) where it may be a secret: what ``redact`` would hide (a
    credential field or header, a URL password, a secret variable's value), or the value of an ``_env`` field naming
    a secret's variable (``api_key_env``, ``key_env``) unless it reads as a variable's name (:func:`shown_env_name`):
    a key pasted there by mistake would be printed back."""
    key, eq, raw = item.partition("=")
    name = (parts := key.strip().split("."))[-1]
    base = name.removesuffix("_env")
    hide = base != name and (base == "key" or _secret_key(base, False)) and shown_env_name(raw.strip()) is None
    if eq and not hide:
        try:  # bounded: a value whose aliases expand to millions is refused, not walked
            value = load_yaml(raw, "--set", lines=False) if raw.strip() else ""
        except (yaml.YAMLError, ConfigError):
            value = raw
        hide = _redact({name: value}, [], secret_values(), parts[-2:-1] == ["headers"]) != {name: value}
    return f"{key}=..." if eq and hide else item


def set_label(item: str) -> str:
    """``--set key=value`` as errors name it; the value left out where it may be a secret (see ``_set_text``)."""
    return f"--set {_set_text(item)}"


def apply_overrides(data: dict[str, Any], overrides: Iterable[str | Flag], source: _Source | None = None
                    ) -> dict[str, Any]:
    """Apply ``--set`` overrides and ``Flag``s in order to a raw dict (in place) and return it."""
    for item in override_list(overrides):
        if isinstance(item, Flag):
            parts = item.key.split(".")
            value = str(item.value) if isinstance(item.value, Path) else item.value
            label = str(item)
        else:
            (parts, value), label = parse_override(item), set_label(item)
        parts = _existing_keys(data, parts, value)  # a key that holds dots itself (search.space.training.lr) kept whole
        node: Any = data
        for depth, part in enumerate(parts[:-1]):
            key: Any = int(part) if isinstance(node, list) and part.isdigit() else part
            if isinstance(node, dict):
                if node.get(key) is None:
                    node[key] = {}
                elif not isinstance(node[key], (dict, list)):  # `train: 5` in the file: its error, not dropped
                    where = (source or _Source(None, None)).where(tuple(parts[: depth + 1]))
                    held = ".".join(parts[: depth + 1])
                    raise ConfigError(f"{label}: {held} is {node[key]!r} ({where}), not a mapping, so it has no "
                                      f"key {parts[depth + 1]}",
                                      hint=f"set {held} itself (--set {held}=VALUE), or, where {held} is a section "
                                      "of the config, write it in the file as a mapping of its fields")
                node = node[key]
            elif isinstance(node, list) and isinstance(key, int) and key < len(node):
                node = node[key]
            elif isinstance(node, list):
                raise ConfigError(f"{label}: '{'.'.join(parts[: depth + 1])}': no such item ("
                                  f"'{'.'.join(parts[:depth])}' holds {len(node)}, numbered from 0)",
                                  hint=f"give an index from 0 to {len(node) - 1}" if node else "the list is empty")
            else:
                raise ConfigError(f"{label}: '{'.'.join(parts[: depth + 1])}' is not a mapping or list index")
        last: Any = parts[-1]
        if isinstance(node, list):
            if not (last.isdigit() and int(last) < len(node)):
                raise ConfigError(f"{label}: list index {last} out of range")
            last = int(last)
        at = tuple(int(p) if p.isdigit() else p for p in parts)
        said = source.overridden.get(at) if source is not None else None
        if isinstance(item, Flag) and said is not None and said.startswith("--set ") and not _same_setting(
                node[last] if isinstance(node, list) else node.get(last), value):
            # the flag would win silently (`--set limit=abc --limit 2`): say which one the user meant
            raise ConfigError(f"{label} and {said}: both set {'.'.join(parts)}, to different values",
                              hint=f"give {'.'.join(parts)} once")
        node[last] = value
        if source is not None:
            source.overridden[at] = label
    return data


def _same_setting(given: Any, flag: Any) -> bool:
    """A ``--set`` value (YAML-parsed: PyYAML reads ``1e-4`` as a string) and an option's typed value say the same."""
    if given == flag or str(given) == str(flag):
        return True
    try:
        return float(given) == float(flag)
    except (TypeError, ValueError):
        return False


def _existing_keys(data: Any, parts: list[str], value: Any = None) -> list[str]:
    """``parts`` regrouped so that a mapping's existing key with dots in it (``training.lr`` under search.space) is
    one part: the longest key the data holds wins at each level; the rest stays split, unless a mapping ``value``
    goes to a new key of a mapping whose keys hold dots (``--set 'search.space.train.epochs={low: 5, high: 30}'``:
    the key ``train.epochs``, not ``train`` holding ``epochs``)."""
    out: list[str] = []
    node: Any = data
    rest = list(parts)
    while rest:
        for take in range(len(rest), 1, -1):
            key = ".".join(rest[:take])
            if isinstance(node, dict) and key in node:
                break
        else:
            take = 1
            if (isinstance(value, dict) and isinstance(node, dict) and rest[0] not in node
                    and any("." in str(k) for k in node)):
                take = len(rest)
        key = ".".join(rest[:take])
        out.append(key)
        rest = rest[take:]
        node = node.get(key) if isinstance(node, dict) else None
    return out


def interpolate_env(data: Any, source: _Source, dotenv: dict[str, str], path: Path_ = ()) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string; a missing variable without default is an error."""
    if isinstance(data, dict):
        return {k: interpolate_env(v, source, dotenv, (*path, k)) for k, v in data.items()}
    if isinstance(data, list):
        return [interpolate_env(v, source, dotenv, (*path, i)) for i, v in enumerate(data)]
    if not isinstance(data, str) or "${" not in data:
        return data

    def repl(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = getenv(name, dotenv)
        if value is None:
            if default is not None:
                return default
            raise ConfigError(
                f"{source.where(path)}: {_dotted(path)}: environment variable {name} is not set",
                hint=f"export {name}=... or add it to .env, or write ${{{name}:-default}} in the config",
            )
        if len(value) >= _MIN_SECRET_LEN and not _ENV_RE.fullmatch(value) and (credential or "://" in data):
            _READ_FROM_ENV[value] = name
            if credential:
                _CREDENTIALS_READ.add(value)
        return value

    # only a credential's value (or a URL's, whose key or password scrub_text hides): a header that is no credential
    # (X-Feature: ${MODE}) does not make a literal credential of the same text ${MODE}
    credential = bool(path) and _secret_key(path[-1], len(path) > 1 and path[-2] == "headers")

    return _ENV_RE.sub(repl, data)


# --------------------------------------------------------------------------- validation errors


def close_key(typed: str, known: Sequence[str]) -> str | None:
    """The known key an unknown ``typed`` one was likely meant to be, for a "did you mean", else None: one with the
    same letters first (`lgo` for `log`: difflib rates `low` as close and takes the list's order), else difflib's."""
    same = [k for k in known if sorted(k) == sorted(typed)]
    if same:
        return same[0]
    close = difflib.get_close_matches(typed, list(known), n=1)
    return close[0] if close else None


def _dotted(loc: Path_) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _data_path(data: Any, loc: Path_) -> Path_:
    """Drop the parts of a pydantic error location that are not in the data (union tags, function names)."""
    out: list[Any] = []
    node = data
    for index, part in enumerate(loc):
        if isinstance(node, dict) and part in node:
            node = node[part]
            out.append(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
            out.append(part)
        elif index == len(loc) - 1 and isinstance(node, dict):
            out.append(part)  # a missing key at the leaf: keep it, it is the field the user must add
    return tuple(out)


def _resolve_dotted(data: Any, base: Path_, dotted: str) -> Path_:
    """``a.b.c`` as a key path under ``base``; a key may itself contain dots (``search.space.model.d_model``)."""
    node: Any = data
    for part in base:
        node = node[part] if isinstance(node, (dict, list)) else None
    parts, out = dotted.split("."), list(base)
    while parts:
        for take in range(len(parts), 0, -1):  # longest key first
            key = ".".join(parts[:take])
            if isinstance(node, dict) and key in node:
                node, parts = node[key], parts[take:]
                out.append(key)
                break
            if isinstance(node, list) and take == 1 and key.isdigit() and int(key) < len(node):
                node, parts = node[int(key)], parts[1:]
                out.append(int(key))
                break
        else:
            out.append(".".join(parts))  # not in the data (e.g. a missing field): name it whole
            break
    return tuple(out)


def _missing_parts(data: Any, path: Path_) -> int:
    node: Any = data
    for depth, part in enumerate(path):
        if isinstance(node, dict) and part in node or isinstance(node, list) and isinstance(part, int):
            node = node[part]
        else:
            return len(path) - depth
    return 0


def _field_names(model: type[BaseModel], loc: Path_) -> list[str]:
    """Known field names next to an unknown key (``loc`` is pydantic's, tags included), for a did-you-mean hint."""
    current: Any = model
    for part in loc[:-1]:
        current = _step_annotation(current, part)
        if current is None:
            return []
    current = _unwrap(current)
    fields = getattr(current, "model_fields", None)
    return list(fields) if fields else []


def _unwrap(annotation: Any) -> Any:
    """``annotation`` without ``Annotated`` and without ``| None`` (an optional section's model itself)."""
    while True:
        if get_origin(annotation) is Annotated:
            annotation = get_args(annotation)[0]
            continue
        if get_origin(annotation) in (Union, UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) == 1:
                annotation = members[0]
                continue
        return annotation


def _step_annotation(annotation: Any, part: Any) -> Any:
    """The annotation one level down: a model's field, a dict's value, a list's item, or a union's tagged member."""
    annotation = _unwrap(annotation)
    fields = getattr(annotation, "model_fields", None)
    if fields is not None:
        return fields[part].annotation if part in fields else None
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is dict:
        return args[1]
    if origin in (list, tuple, set):
        return args[0]
    if origin in (Union, UnionType):
        for raw in args:
            member = _unwrap(raw)
            kind = getattr(member, "model_fields", {}).get("kind")
            tags = [getattr(m, "tag", None) for m in get_args(raw)[1:]] if get_origin(raw) is Annotated else []
            if (kind is not None and kind.default == part) or part in tags:  # a `kind` or a pydantic Tag
                return member
    return None


def _union_tags(model: type[BaseModel], loc: Path_, key: str) -> list[str]:
    """The values of ``key`` that pick a member of the discriminated union at ``loc`` (pydantic's, as errors give
    it): a provider's ``kind`` (openai, anthropic, ...), for an error that names them."""
    current: Any = model
    for part in loc:
        current = _step_annotation(current, part)
        if current is None:
            return []
    current = _unwrap(current)
    tags: list[str] = []
    for member in get_args(current) if get_origin(current) in (Union, UnionType) else ():
        found = getattr(_unwrap(member), "model_fields", {}).get(key)
        if found is not None:
            values = get_args(found.annotation) if get_origin(found.annotation) is Literal else (found.default,)
            tags += [str(v) for v in values if isinstance(v, str) and str(v) not in tags]
    return tags


_BOUNDS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def nan_bound_message(err: Mapping[str, Any]) -> str | None:
    """What a pydantic error of a bound (``gt``, ``ge``, ``lt``, ``le``) on a NaN says, in the words of a field that
    refuses NaN outright (``allow_inf_nan=False``): NaN fails every bound, and "should be greater than 0 (got .nan)"
    named the wrong reason. None for any other error. The input may be the text a command-line option was given
    (``--lr nan``)."""
    if err.get("type") not in _BOUNDS:
        return None
    value = err.get("input")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    return "Input should be a finite number" if isinstance(value, float) and math.isnan(value) else None


def format_validation_error(exc: ValidationError, data: Any, source: _Source, model: type[BaseModel]) -> str:
    messages = []
    wrong_type: set[tuple[Any, ...]] = set()  # `float | int` refuses a word twice: said once (the first)
    for err in exc.errors():
        raw_loc = tuple(err["loc"])
        loc = _data_path(data, raw_loc)
        if err["type"] in ("float_parsing", "int_parsing", "float_type", "int_type"):
            if tuple(loc) in wrong_type:
                continue
            wrong_type.add(tuple(loc))
        msg = nan_bound_message(err) or err["msg"]
        if err["type"] in ("float_parsing", "int_parsing") and err.get("input") in ("true", "false"):
            msg, err = f"expected a number, got {err['input']}", {**err, "type": "value_error"}  # a YAML boolean
        elif err["type"] in ("tuple_type", "set_type"):  # "a valid tuple": YAML has lists alone
            msg = "Input should be a valid list, as [a, b]"
        elif err["type"] in ("model_type", "dict_type"):  # not "a valid dictionary or instance of CompressSearch"
            keys = [f"{_dotted(loc)}.{k}" for k in _field_names(model, (*raw_loc, ""))]
            msg = "Input should be a mapping" + (f" of settings ({', '.join(keys[:3])}, ...)" if len(keys) > 3 else
                                                 f" of settings ({', '.join(keys)})" if keys else ", as {key: value}")
        elif err["type"] in ("too_long", "too_short") and msg.startswith(("Tuple ", "Set ")):
            msg = "List " + msg.split(" ", 1)[1]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
            # Cross-field validators name their field as "a.b.c: message"; point at that field's line.
            match = _FIELD_MSG_RE.match(msg)
            if match:
                # Validators name fields from the top ("model.n_heads"); nested ones may be relative to their section
                # (on a tie, as `models: {a: {}}`'s "file: give exactly one of ...", the section's own field).
                found = [_resolve_dotted(data, start, match.group(1)) for start in (loc, ())]
                loc, msg = min(found, key=lambda path: _missing_parts(data, path)), match.group(2)
        if err["type"] in ("union_tag_not_found", "union_tag_invalid"):  # pydantic's words for a missing `kind:`
            key = str(err.get("ctx", {}).get("discriminator", "")).strip("'")
            if key.isidentifier():  # a field's name (a callable discriminator always finds a tag)
                tags = ", ".join(_union_tags(model, raw_loc, key))
                if err["type"] == "union_tag_not_found":
                    msg = f"missing `{key}:`" + (f" (one of: {tags})" if tags else "")
                else:
                    loc = (*loc, key)
                    given = err["input"].get(key) if isinstance(err.get("input"), dict) else err["ctx"].get("tag")
                    msg = f"unknown {key} {given!r}" + (f" (one of: {tags})" if tags else "")
        if err["type"] == "extra_forbidden":
            known = _field_names(model, raw_loc)
            near = close_key(str(loc[-1]), known) if loc else None
            close = [near] if near is not None else []
            msg = "unknown key" + (f" (did you mean '{close[0]}'?)" if close else "")
            if known and not close:
                msg += f"; known keys: {', '.join(known)}"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif err["type"] == "invalid_key" and loc:  # `1: 2`: the key is the field, as YAML wrote it
            loc = (*loc[:-1], _yaml_word(err["input"]))
            msg += f" (to give it as text, quote it: \"{loc[-1]}\")"
        elif "input" in err and err["type"] != "value_error" and err["type"] not in ("union_tag_invalid",):
            shown, text = err["input"], err["type"] == "string_type"
            said = source.overridden.get(tuple(loc), "")
            if (said.startswith("--set ") and not said.endswith("=...")
                    and err["type"] not in ("model_type", "dict_type")  # a section's error says what it holds
                    and (text or not isinstance(shown, (str, int, float, bool)))):
                msg += _read_as(said, shown, text)  # `--set name=a: b`: a mapping, `--set name=yes`: true
            elif not said and text and tuple(loc) in source.plain and not isinstance(shown, str):
                msg += _file_read_as(loc, source.plain[tuple(loc)], shown)  # `name: yes` in the file: true
            elif (isinstance(shown, (str, int, float, bool)) or shown is None) and len(repr(shown)) < 60:
                # scrubbed before repr: a secret with a quote or backslash is no longer itself once repr escapes it
                msg += f" (got {scrub_text(shown)!r})" if isinstance(shown, str) else f" (got {_yaml_word(shown)})"
        messages.append(f"{source.where(loc, by_value=err['type'] != 'extra_forbidden')}: {_dotted(loc)}: {msg}")
    return "\n".join(sorted(messages, key=lambda m: _line_of(m, source.path)))  # in the file's order, then --set


def _yaml_word(value: Any) -> str:
    """A plain value as YAML writes it (``true``, ``null``, ``12``, ``2024-01-02``), for an error's ``(got ...)``."""
    shown = yaml.dump(_redact(value, [], secret_values()), Dumper=_DUMPER, default_flow_style=True, width=1_000_000,
                      allow_unicode=True).removesuffix("\n").removesuffix("\n...").strip()
    return shown if len(shown) <= 60 else shown[:59] + "…"


def _kind(value: Any) -> str:
    return {dict: "the mapping ", list: "the list ", type(None): "", bool: ""}.get(type(value),
                                                                                  f"the {type(value).__name__} ")


def _file_read_as(loc: Path_, raw: str, value: Any) -> str:
    """What YAML made of an unquoted file value a text field refuses (``name: yes`` is true, ``name: 2024-01-02`` a
    date), as an error's note naming the quoting that gives the text (``name: "yes"``)."""
    key = "-" if isinstance(loc[-1], int) else f"{loc[-1]}:"
    return (f" (got {_kind(value)}{_yaml_word(value)}: YAML reads it unquoted; to give it as text, quote it in the "
            f"file: {key} {json.dumps(raw, ensure_ascii=False)})")


def _read_as(label: str, value: Any, text: bool) -> str:
    """What YAML made of a ``--set`` value the field refuses (``--set name=a: b`` is the mapping {a: b}), as an
    error's note; ``text``: the field takes text, which quoting the value gives (``--set 'name="a: b"'``)."""
    kind, shown = _kind(value), _yaml_word(value)
    key, _, raw = label.removeprefix("--set ").partition("=")
    quoted = json.dumps(raw.strip(), ensure_ascii=False)  # `café: b` as "café: b", not "caf\u00e9: b"
    quote = f": to give it as text, quote it: --set {shlex.quote(f'{key}={quoted}')}" if text else ""
    return f" (got {kind}{shown}; --set reads its value as YAML{quote})"


def _line_of(message: str, path: Path | None) -> float:
    """The file line an error message begins with (``FILE:12: ...``); infinity for one naming an override."""
    head = f"{path}:" if path is not None else None
    if head is None or not message.startswith(head):
        return float("inf")
    number = message[len(head):].split(":", 1)[0].split(" ", 1)[0]
    return int(number) if number.isdigit() else float("inf")


# --------------------------------------------------------------------------- public API


def load_config(
    path: str | Path | None,
    model: type[M],
    overrides: Iterable[str | Flag] | None = None,
    base: dict[str, Any] | None = None,
    schema: str | None = None,
    refuse_redacted: bool = False,
) -> M:
    """Load, interpolate, override and validate a config.

    ``path=None`` validates the model's defaults (plus overrides): every command runs without a config file.
    ``overrides``: a list of ``key.path=value`` strings (as ``--set`` takes them) and ``Flag``s.
    ``base`` is a raw dict merged under the file (used for built-in presets). ``schema``: the name `agentlab config
    show` knows the model by (``nas``, ``llm``, ...), for the hint. ``refuse_redacted``: the config is to run with
    (a new run's ``-c``, ``--llm``), so a ``***`` where a run folder's copy hid a credential is refused (it would be
    sent as the credential); a resume's own config.yaml is compared as it was saved. Raises ``ConfigError`` (exit
    code 2) whose message names file, line and field, e.g. ``configs/nas.yaml:12: model.n_heads: must divide
    model.d_model``.
    """
    if path is not None and not isinstance(path, str | os.PathLike):
        shown = repr(path) if len(repr(path)) <= 60 else repr(path)[:59] + "…"
        raise UsageError(f"config {shown}: not a config file's path (a str or Path), but a {type(path).__name__}",
                         hint="a dict of settings goes as base=: load_config(None, Model, base={...})"
                         if isinstance(path, dict) else "give the YAML file's path, or None for the defaults")
    sets = override_list(overrides)
    file = Path(path) if path is not None else None
    text = None
    moved: dict[str, str] = getattr(model, "MOVED_KEYS", {})
    data: dict[str, Any] = move_keys(copy.deepcopy(base or {}), moved, "config")  # the caller's dict left as it was
    if file is not None:
        loaded, text = _read_yaml(file, schema)
        source = _Source(file, text)  # first: it refuses duplicate keys and self-containing aliases
        data = _deep_merge(data, move_keys(loaded, moved, str(file), source.lines))
        for old, new in moved.items():  # an error in a moved key names the line the file has it on
            for where, line in list(source.lines.items()):
                if where[:1] == (old,):
                    source.lines.setdefault((*new.split("."), *where[1:]), line)
    else:
        source = _Source(None, None)
    apply_overrides(data, _moved_overrides(sets, moved), source)
    data = interpolate_env(data, source, load_dotenv_values(file.parent if file else None))
    hidden = redacted_field(data) if refuse_redacted else None
    if hidden is not None:  # a run folder's copy of a config with a literal credential: *** would be sent as it
        raise ConfigError(f"{source.where(hidden)}: {'.'.join(map(str, hidden))}: holds ***, a credential a run "
                          "folder does not keep", hint="give the config you wrote (for --llm, the routing config), "
                          "or the credential with --set KEY=VALUE; one from the environment (${NAME}, api_key_env) "
                          "is kept as the variable's name")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        found = format_validation_error(exc, data, source, model)
        other = _other_command(text, schema) if file is not None and text else None
        if other is not None:  # another command's file: its every key a line of "unknown key" says nothing
            number, words = other
            lines = found.splitlines()
            raise ConfigError(
                f"{file}: a config of `agentlab {words}` (its line {number} says so), not of `agentlab {schema}`: "
                f"{len(lines)} of its fields do not fit (the first, line {lines[0].removeprefix(f'{file}:')})",
                hint=f"give it to `agentlab {words}`, or write a config for `agentlab {schema}` (`agentlab config "
                f"show {schema}` prints one)") from None
        raise ConfigError(
            found,
            hint="fix the field(s) above" + (f"; `agentlab config show {schema}` lists every field with its meaning"
                                             if schema else ""),
        ) from None


# A routing config (`# agentlab llm-bench -c FILE`) is what every --llm reads, and llm-bench reads --llm's files.
_SAME_CONFIG = {"llm": "llm-bench", "llm-bench": "llm"}
_HEADING_RE = re.compile(r"#\s*(?:\$\s*)?agentlab\s+([a-z][a-z-]*)(\s+[a-z][a-z-]*(?=\s|$))?")


def _other_command(text: str, schema: str | None) -> tuple[int, str] | None:
    """The line number and the command words (``models check``) of the heading of a config that names another
    command than ``schema`` (configs open with the command that runs them: ``# agentlab models check FILE``), or
    None: no such heading, or one naming ``schema``, or a word that is no command with a config (prose)."""
    if schema is None:
        return None
    for number, line in enumerate(text.splitlines()[:5], 1):
        match = _HEADING_RE.match(line)
        if match is None:
            continue
        name = match.group(1)
        if name == schema or _SAME_CONFIG.get(name) == schema:
            return None
        from agentlab.cli.commands import schemas  # the table of commands; only on this error's path

        return (number, name + (match.group(2) or "")) if name in schemas() else None
    return None


def move_keys(data: dict[str, Any], moved: dict[str, str], where: str,
              lines: dict[tuple[Any, ...], int] | None = None) -> dict[str, Any]:
    """``data`` with each top-level key of ``moved`` (old name -> new dotted path, a config model's ``MOVED_KEYS``;
    ``lines``: where each key is in the file, for the error)
    moved to its new place, and a warning naming both; where the new place is set too, to the same value, the
    warning says the old one was ignored, to another value ``ConfigError``. Applied to a file, a saved run's config
    and a base before they are merged, so an override given with either name reaches the one key."""
    old = [k for k in moved if k in data]
    heads = {moved[k].split(".")[0] for k in old if "." in moved[k]}
    if not old or any(h in data and not isinstance(data[h], dict | None) for h in heads):
        return data  # `search: 3` beside old keys: validation names both, nothing is dropped
    out = {k: v for k, v in data.items() if k not in old}
    done, ignored = [], []
    for key in old:
        *parents, last = moved[key].split(".")
        node = out
        for part in parents:
            node[part] = dict(node[part]) if isinstance(node.get(part), dict) else {}
            node = node[part]
        if last in node and node[last] != data[key]:  # one of the two is a mistake: not the one dropped silently
            at = f"{where}:{lines[(key,)]}" if lines and (key,) in lines else where
            raise ConfigError(f"{at}: {key} ({data[key]!r}) and {moved[key]} ({node[last]!r}) are both given, "
                              f"with different values; {key} is the old name of {moved[key]}",
                              hint=f"remove {key} and keep the value you mean under {moved[key]}")
        if last in node:
            ignored.append(key)
        else:
            node[last] = data[key]
            done.append(key)
    if done:
        log.warning("%s: %s moved to %s; read from there this time (write %s there to silence this)", where,
                    ", ".join(done), ", ".join(moved[k] for k in done), "them" if len(done) > 1 else "it")
    if ignored:
        log.warning("%s: %s ignored: %s given too", where, ", ".join(ignored), ", ".join(moved[k] for k in ignored))
    return out


def _moved_overrides(items: list[str | Flag], moved: dict[str, str]) -> list[str | Flag]:
    """``items`` with each override of a key that moved given the key's new name, and a warning naming them, as a
    file's old key gets (``--set planner=tpe`` was moved to ``search.planner`` without a word)."""
    out = [_moved_override(item, moved) for item in items]
    _refuse_both_names(items, out)
    old = list(dict.fromkeys(item.split("=", 1)[0].strip() for item, new in zip(items, out, strict=True)
                             if isinstance(item, str) and new is not item))
    if old:
        new = [str(_moved_override(f"{key}=", moved))[:-1] for key in old]
        log.warning("--set: %s moved to %s; read from there this time (write --set %s=... to silence this)",
                    ", ".join(old), ", ".join(new), "=..., --set ".join(new))
    return out


def _refuse_both_names(items: list[str | Flag], renamed: list[str | Flag]) -> None:
    """``ConfigError`` for a moved key's old and new names both set, to different values (``--set planner=tpe --set
    search.planner=random``: the last one won silently), as a file with both is refused (``move_keys``); one name
    given twice stays last-wins."""
    def key_of(item: str | Flag) -> str:
        return item.key if isinstance(item, Flag) else item.split("=", 1)[0].strip()

    moved = {key_of(new) for item, new in zip(items, renamed, strict=True) if new is not item}
    setters: dict[str, dict[str, tuple[Any, str, bool]]] = {}  # new key -> name given -> (value, label, renamed)
    for item, new in zip(items, renamed, strict=True):
        if key_of(new) not in moved:
            continue
        if isinstance(item, Flag) and isinstance(new, Flag):
            value, label = new.value, str(item)
        elif isinstance(item, str) and isinstance(new, str) and "=" in new:
            try:
                value, label = parse_override(new)[1], set_label(item)
            except ConfigError:  # said by apply_overrides, in its turn
                continue
        else:
            continue
        given, key = key_of(item), key_of(new)
        names = setters.setdefault(key, {})
        for other, (was, said, moved_too) in names.items():
            if other != given and (moved_too or new is not item) and not _same_setting(was, value):
                raise ConfigError(f"{said} and {label}: both set {key}, to different values",
                                  hint=f"give {key} once, by its new name")
        names[given] = (value, label, new is not item)


def _moved_override(item: str | Flag, moved: dict[str, str]) -> str | Flag:
    """An override of a key that moved (``--set max_iterations=4``), given the key's new name."""
    key = item.key if isinstance(item, Flag) else item.split("=", 1)[0]
    head, _, rest = key.strip().partition(".")
    if head not in moved:
        return item
    new = moved[head] + (f".{rest}" if rest else "")
    if isinstance(item, Flag):
        return dataclasses.replace(item, key=new)
    return f"{new}={item.split('=', 1)[1]}" if "=" in item else item


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def redact(data: Any, secrets: Iterable[str] = ()) -> Any:
    """A copy with secret-looking fields replaced by ``***`` and every secret scrubbed from strings wherever it sits
    (see ``scrub_text``): the given ``secrets``, the values of secret environment variables, URL credentials."""
    return _redact(data, [s for s in secrets if s], secret_values())


def _secret_key(key: Any, headers: bool) -> bool:
    """Whether ``key``'s value is a credential (``headers``: ``key`` names an HTTP header of a provider's
    ``headers``): what ``redact`` writes as ``***`` and ``redacted_field`` looks for."""
    return isinstance(key, str) and not key.endswith("_env") and bool(
        _SECRET_KEY_RE.search(key) or (headers and _SECRET_HEADER_RE.search(key)))


def _redact(data: Any, secrets: list[str], known: dict[str, str], headers: bool = False) -> Any:
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            if value and _secret_key(key, headers):
                kept = scrub_text(value, secrets, known) if isinstance(value, str) else None
                if kept is not None and not _ENV_ONLY_RE.fullmatch(kept) and _READ_FROM_ENV:
                    # read from a ${NAME} of a config, whatever the name (X-Token: ${MY_HDR}): written back as ${NAME}
                    both = {**_values_read_from_env(), **known}
                    kept = scrub_text(value, secrets, dict(sorted(both.items(), key=lambda item: -len(item[0]))))
                out[key] = kept if kept is not None and _ENV_ONLY_RE.fullmatch(kept) else REDACTED
            else:
                out[key] = _redact(value, secrets, known, key == "headers")
        return out
    if isinstance(data, list):
        return [_redact(v, secrets, known) for v in data]
    if isinstance(data, str):
        return scrub_text(data, secrets, known)
    return data


def redacted_field(data: Any, where: tuple[str | int, ...] = (), headers: bool = False
                   ) -> tuple[str | int, ...] | None:
    """Where in ``data`` (the keys and list indexes down to it) ``redact`` first wrote ``***`` for a secret (a
    credential field or header, a URL's password or key parameter), or None: a config read back from a run folder
    with one would send ``***`` as the credential. ``***`` elsewhere (a stop string, a description) is no secret."""
    if isinstance(data, str):
        return where if _REDACTED_URL_RE.search(data) else None
    if isinstance(data, list):
        return next((f for i, v in enumerate(data) if (f := redacted_field(v, (*where, i))) is not None), None)
    for key, value in data.items() if isinstance(data, dict) else ():
        if value == REDACTED and _secret_key(key, headers):
            return (*where, key)
        found = redacted_field(value, (*where, key), key == "headers")
        if found is not None:
            return found
    return None


def absolute_paths(model: M) -> M:
    """A copy of ``model`` in which every relative ``Path`` value (nested models, lists and dicts included) is made
    absolute against the current directory: what a run folder's config.yaml needs to re-run from anywhere."""
    return _absolute(model)


def absolute_path(path: Path) -> Path:
    """``path`` as ``absolute_paths`` writes it: unchanged when absolute, else normalised against the current
    directory."""
    return path if path.is_absolute() else Path(os.path.normpath(Path.cwd() / path.expanduser()))


@dataclass(frozen=True)
class ModelPath:
    """Marks a ``str`` field that names a model: a built-in name, a hub id, or a path (``Annotated[str,
    ModelPath()]``). ``absolute_paths`` writes a relative path to a model on disk (a GGUF file, a folder with
    config.json: what ``resolve_model`` takes first) absolute, as a ``Path`` field, so a resume from another folder
    loads the same model (not one of that name there); a name is left as it is.
    ``unless``: a field of the same model which, when set, makes the value a name (``eval``'s ``base_url``)."""

    unless: str | None = None


@dataclass(frozen=True)
class FilePath:
    """Marks a ``str`` field that is a file path when it holds no ``://`` (a study's journal file beside URLs):
    ``absolute_paths`` writes it absolute, existing or not (a resume from another folder opens the same file)."""


ModelName = Annotated[str, ModelPath()]

RUN_NAME_MAX = 100  # characters: the run folder's name is <YYYYmmdd-HHMMSS>-<name>


def run_name_problem(name: str) -> str | None:
    """Why ``name`` cannot end a run folder's name (``runs/<command>/<YYYYmmdd-HHMMSS>-<name>``), None when it can:
    empty, hidden (a leading '.'), over ``RUN_NAME_MAX`` characters, a path separator, a character that is not
    printable. The one rule of run names: the schemas' ``name`` fields (``RunName``) and the folder's creation."""
    if not name:
        return "empty"
    if name.startswith("."):
        return "starts with '.' (a hidden folder)"
    if len(name) > RUN_NAME_MAX:
        return f"{len(name)} characters, more than {RUN_NAME_MAX}"
    if "/" in name or "\\" in name:
        return "holds '/' or '\\'"
    if not name.isprintable():
        return "holds a character that is not printable (a tab, a line break, a control character)"
    return None


_RUN_NAME_CHARS = "use letters, digits, '-', '_' and '.'"
# the hint of a name the run folder refuses (core.runs.new_run_path)
RUN_NAME_HINT = f"{_RUN_NAME_CHARS} (set it with --set name=NAME)"


def _run_name(value: str) -> str:
    problem = run_name_problem(value)
    if problem is not None:
        raise ValueError(f"not usable in a folder name: {problem}; {_RUN_NAME_CHARS}")
    return value


# A run's name, the suffix of its folder's name: checked when the config is, so `config validate` refuses what the
# run would (`run_name_problem`).
RunName = Annotated[str, AfterValidator(_run_name)]


def _absolute(value: Any) -> Any:
    if isinstance(value, Path):
        return absolute_path(value)
    if isinstance(value, BaseModel):
        update = {name: new for name, field in type(value).model_fields.items()
                  if (new := _model_path(value, field.metadata, old) if isinstance(old := getattr(value, name), str)
                      else _absolute(old)) is not old}
        return value.model_copy(update=update) if update else value
    if isinstance(value, list):
        items = [_absolute(v) for v in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    if isinstance(value, dict):
        mapped = {k: _absolute(v) for k, v in value.items()}
        return mapped if any(mapped[k] is not value[k] for k in value) else value
    return value


def absolute_sqlite(uri: str | None) -> str | None:
    """A relative ``sqlite:///x.db`` made absolute (a run resumed from another folder opens the same file); any
    other URI as it is."""
    if uri is None or not uri.startswith("sqlite:///") or uri.startswith("sqlite:////"):
        return uri
    path, sep, query = uri.removeprefix("sqlite:///").partition("?")
    if not path or path == ":memory:":
        return uri
    return f"sqlite:///{os.path.abspath(unquote(path))}{sep}{query}"


def _model_path(owner: BaseModel, metadata: list[Any], value: str) -> str:
    """``value`` absolute when it is an SQLite URL of a relative file (``sqlite:///study.db``: a study's storage, an
    MLflow store), a ``FilePath`` field's relative path, or a ``ModelPath`` field's relative path to a model on disk;
    else itself."""
    if value.startswith("sqlite:///"):
        return absolute_sqlite(value) or value
    path = Path(value).expanduser()
    if any(isinstance(m, FilePath) for m in metadata) and "://" not in value and not path.is_absolute():
        return str(absolute_path(path))
    marks = [m for m in metadata if isinstance(m, ModelPath)]
    if not marks or (marks[0].unless and getattr(owner, marks[0].unless, None)) or path.is_absolute():
        return value
    return str(absolute_path(path)) if _is_model(path) else value


def _is_model(path: Path) -> bool:
    """What a model reference resolves to on disk first (``core.models.modelref``): a GGUF file or a transformers
    folder (its config.json); anything else of that name leaves the name to the built-ins and the hub."""
    try:
        if path.is_dir():
            return (path / "config.json").is_file()
        with open(path, "rb") as handle:
            return handle.read(4) == b"GGUF"
    except OSError:
        return False


# libyaml's dumper when PyYAML was built with it: the same output, several times faster.
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def dump_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_DUMPER, sort_keys=False, allow_unicode=True, default_flow_style=False)


def describe_model(model: type[BaseModel], indent: int = 0) -> str:
    """Defaults as YAML with each field's description as a comment: what ``agentlab config show CMD`` prints after its
    first line, which names the command (the whole text: ``agentlab.cli.config_cmd.config_text``)."""
    pad = "  " * indent
    lines: list[str] = []
    instance_defaults = _defaults_or_none(model)
    for name, info in model.model_fields.items():
        if info.description:
            lines.append(f"{pad}# {info.description}")
        annotation = info.annotation
        if instance_defaults is not None:
            # a field whose default is None is decided when a config is read (debate's rule: vote, or keep_round0
            # with rounds): None, as a config without it says, not what the defaults resolve to
            value = None if info.default is None else instance_defaults.get(name)
        else:  # a section with required keys (shown commented out): each key's own default, or that it is required
            value = "(required)" if info.is_required() else info.get_default(call_default_factory=True)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel) and isinstance(value, dict):
            lines.append(f"{pad}{name}:")
            lines.append(describe_model(annotation, indent + 1))
        else:
            rendered = dump_yaml({name: value}).rstrip("\n")
            lines.extend(pad + line for line in rendered.splitlines())
            optional = [a for a in get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
            if value is None and get_origin(annotation) in (Union, UnionType) and len(optional) == 1:
                # an optional section off by default: its keys, commented out, so the output stays valid YAML
                lines.append(f"{pad}# {name}, as a mapping: these keys")
                inner = describe_model(optional[0], 1).splitlines()
                lines.extend(f"{pad}# {line}" for line in inner)
    return "\n".join(lines)


def _defaults_or_none(model: type[BaseModel]) -> dict[str, Any] | None:
    try:
        return model().model_dump(mode="json")
    except ValidationError:
        return None
