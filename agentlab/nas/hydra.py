"""The best params of a search through Hydra's ``{overrides}``, written back into the app's own config files.

A Hydra app reads its config folder (``@hydra.main(config_path="conf", config_name="config")``); a search passes each
trial's params as overrides (``model=poly model.degree=3 train.lr=0.01``). For the best trial each searched key is
written where Hydra takes its value from, on a layout where that place is certain:

- the primary config's ``defaults`` list holds only ``group: option`` entries (``override`` / ``optional`` allowed,
  ``null`` an empty choice) and ``_self_`` last or absent (Hydra appends it last), so the primary config's own keys
  win over its groups';
- each chosen option file has no ``# @package`` line and no ``defaults`` list of its own, so its keys are in the
  group's package (``conf/model/poly.yaml``'s ``degree`` is ``model.degree``).

Then a group's choice (``model=poly``) goes into its ``defaults`` entry, a key the primary config holds (``train.lr``)
there, and a key of a group's package (``model.degree``) into the chosen option's file. Only the text of each value
changes (``config_file``'s YAML writer), so comments and layout stay. On any other layout (``_self_`` first,
``group@package`` entries, a global-package experiment file, bare config names, a primary config in a package, a
group's option chosen by what every trial got besides) nothing is written and every key is listed with the reason,
as is a key no file holds, one two files hold, ``+key`` / ``~key``, or a string Hydra's command line reads as another
type: a wrong write-back would be worse than none.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentlab.core.errors import UsageError
from agentlab.nas.command import OVERRIDES, cli_value
from agentlab.nas.config_file import ConfigFile, ConfigFileError
from agentlab.nas.script import hydra_app, script_of

_KEYWORDS = ("override", "optional")


@dataclass
class WriteBack:
    """The files to write (path relative to the project -> text), which overrides went into each, and the overrides
    left out, each as ``key=value: why``."""

    files: dict[str, str] = field(default_factory=dict)
    placed: dict[str, list[str]] = field(default_factory=dict)
    left: list[str] = field(default_factory=list)


def check_group_choices(command: str, cwd: Path, space: dict[str, Any]) -> None:
    """A searched Hydra group's choices (``model: {choices: [mlp, cnn]}``) are options of it: files of its folder in
    the app's config folder (``conf/model/cnn.yaml``); ``UsageError`` naming the first that is not, before any trial
    (each trial of it failed: Hydra could not find it). A key that is no group folder is not checked."""
    script = script_of(command, cwd) if OVERRIDES in command else None
    app = hydra_app(script, cwd) if script is not None else None
    primary = _read(app[0] / app[1]) if app is not None and app[1] else ""
    if app is None or script is None or re.search(r"ConfigStore|searchpath", _read(cwd / script) + primary):
        return  # options registered in code or found on a search path are not files of this folder
    for key, spec in space.items():
        group = app[0].joinpath(*key.split("."))
        choices = getattr(spec, "choices", None) or []
        if not group.is_dir():
            continue
        options = sorted({p.relative_to(group).with_suffix("").as_posix() for p in group.rglob("*")
                          if p.suffix in (".yaml", ".yml")})  # `resnet/50` is conf/model/resnet/50.yaml
        wrong = [c for c in choices if isinstance(c, str) and c not in options]
        if wrong:
            raise UsageError(f"search.space.{key}: {wrong[0]!r} is no option of the Hydra group {key} (no "
                             f"{group / wrong[0]}.yaml; its options: {', '.join(options) or 'none'})",
                             hint=f"choose among the group's options, or add {wrong[0]}.yaml to {group}")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""


def join(folder: str, *parts: str) -> str:
    """A path relative to the project (``config_path="."`` is the project's own folder)."""
    return posixpath.normpath(posixpath.join(folder or ".", *parts))


def write_back(base: Path, folder: str, primary: str, overrides: dict[str, Any],
               context: dict[str, Any] | None = None) -> WriteBack:
    """Where each of ``overrides`` (the best trial's searched keys -> values) is written, in the copies of the config
    files under ``base`` (``base/<folder>/<primary>``, paths relative to the project as under it). ``context``: the
    other overrides every trial got (objective.params' constants, ``key=value`` words of the command): not written,
    but a group's choice among them changes where Hydra takes values from, so then nothing is."""
    out = WriteBack()
    primary_rel = join(folder, primary)

    def refuse(why: str) -> WriteBack:
        out.files, out.placed = {}, {}
        out.left = [f"{key}={cli_value(value)}: {why}" for key, value in overrides.items()]
        return out

    try:
        main = ConfigFile.load(base / primary_rel)
        choices = _choices(main.values.get("defaults"))
    except (ConfigFileError, ValueError) as exc:
        return refuse(exc.message if isinstance(exc, ConfigFileError) else str(exc))
    if _has_package(main.text) or "/" in primary:
        return refuse(f"{primary_rel} is not in the global package (a `# @package` line, or a config in a "
                      "subfolder), so where Hydra puts its keys is not certain")
    for key, value in (context or {}).items():
        name = key.lstrip("+~")  # a group's choice, added or removed: another option's file, or none
        if _group_name(name) in choices or (name and (base / join(folder, name)).is_dir()):
            return refuse(f"every trial also got {key}={cli_value(value)}, which changes where Hydra takes values "
                          "from")
    groups = {key: value for key, value in overrides.items() if key in choices}
    chosen = {group: groups.get(group, option) for group, option in choices.items()}

    def cfg_rel(group: str) -> str:
        return join(folder, group, f"{chosen[group]}.yaml")

    files: dict[str, ConfigFile] = {}  # group -> its chosen option's file
    for group, option in chosen.items():
        if option is None:
            continue
        rel = cfg_rel(group)
        if not (base / rel).is_file():
            return refuse(f"no {rel}")
        try:
            cfg = files[group] = ConfigFile.load(base / rel)
        except ConfigFileError as exc:
            return refuse(exc.message)
        if _has_package(cfg.text) or "defaults" in cfg.values:
            return refuse(f"{rel} has a `# @package` line or a defaults list of its own, so where Hydra takes the "
                          "value from is not certain")
    loaded = {primary_rel: main, **{cfg_rel(group): cfg for group, cfg in files.items()}}
    per_file: dict[str, dict[str, tuple[str, Any]]] = {}  # file -> key in it -> (the override's key, value)
    for key, value in overrides.items():
        where = f"{key}={cli_value(value)}"
        if isinstance(value, str) and not _plain(value):
            out.left.append(f"{where}: Hydra's command line reads this string as another type (or trims it), "
                            "which a YAML file would not")
        elif key.startswith(("+", "~")):
            out.left.append(f"{where}: adds or removes a key, which no config file holds")
        elif key.split(".")[0] == "hydra" or key.startswith("hydra/"):
            out.left.append(f"{where}: a setting of Hydra itself, not of the job's config")
        elif key in groups:
            if not isinstance(value, str) or not (base / join(folder, key, f"{value}.yaml")).is_file():
                out.left.append(f"{where}: no {join(folder, key, f'{value}.yaml')}")
        elif main.lookup(key)[0]:
            per_file.setdefault(primary_rel, {})[key] = (key, value)
        else:
            holders = [(group, key[len(group) + 1:]) for group in files
                       if key.startswith(group.replace("/", ".") + ".")
                       and files[group].lookup(key[len(group) + 1:])[0]]
            if len(holders) == 1:
                group, inner = holders[0]
                per_file.setdefault(cfg_rel(group), {})[inner] = (key, value)
            elif holders:
                out.left.append(f"{where}: {' and '.join(cfg_rel(g) for g, _ in holders)} both hold it")
            elif (base / join(folder, key)).is_dir():
                out.left.append(f"{where}: the group {key} has no `- {key}: ...` entry in {primary_rel}'s defaults")
            else:
                out.left.append(f"{where}: neither {primary_rel} nor a chosen option's file holds it")
    for rel, values in per_file.items():
        said = [f"{key}={cli_value(value)}" for key, value in values.values()]
        try:
            out.files[rel] = loaded[rel].render({inner: value for inner, (_, value) in values.items()})
            out.placed[rel] = said
        except (ConfigFileError, ValueError) as exc:
            out.left += [f"{what}: {exc.message if isinstance(exc, ConfigFileError) else exc}" for what in said]
    changed = {group: option for group, option in groups.items() if isinstance(option, str)
               and (base / join(folder, group, f"{option}.yaml")).is_file()}
    if changed:
        import yaml

        try:
            out.files[primary_rel] = _set_choices(out.files.get(primary_rel, main.text), changed)
            out.placed.setdefault(primary_rel, []).extend(f"{key}={value}" for key, value in changed.items())
        except (ValueError, StopIteration, AttributeError, TypeError, yaml.YAMLError) as exc:
            out.left += [f"{key}={value}: the defaults list of {primary_rel} cannot be edited in place ({exc})"
                         for key, value in changed.items()]
    return out


def _choices(defaults: Any) -> dict[str, str | None]:
    """The primary config's defaults list as group -> option (None: ``null``); ValueError for a layout where the
    place of a value is not certain."""
    if defaults is None:
        return {}
    if not isinstance(defaults, list):
        raise ValueError("its defaults is not a list")
    found: dict[str, str | None] = {}
    only_overrides = True
    # Hydra's own settings (logging, launcher: `override hydra/...`, at the end of the list) are not the job's config
    defaults = [item for item in defaults if not (isinstance(item, dict) and len(item) == 1 and _group_name(
        str(next(iter(item)))).startswith("hydra/"))]
    for n, item in enumerate(defaults):
        if item == "_self_":
            if n != len(defaults) - 1:
                raise ValueError("_self_ is not the last entry of its defaults list, so a group may set a key after "
                                 "the primary config does")
            only_overrides = False
            continue
        if not (isinstance(item, dict) and len(item) == 1):
            raise ValueError(f"its defaults entry {item!r} is not `group: option`")
        (key, value), = item.items()
        name = _group_name(str(key))
        if "@" in name or not (value is None or isinstance(value, str)):
            raise ValueError(f"its defaults entry {item!r} is not `group: option` (a package or a list)")
        only_overrides = only_overrides and str(key).split()[0] == "override"
        found[name] = value
    if defaults and only_overrides:
        raise ValueError("its defaults list has only `override` entries and no _self_")
    return found


def _group_name(key: str) -> str:
    """``override optional /model`` -> ``model``: the keywords in either order, an absolute group's slash."""
    words = key.split()
    while len(words) > 1 and words[0] in _KEYWORDS:
        words.pop(0)
    return " ".join(words).lstrip("/")


def _set_choices(text: str, groups: dict[str, str]) -> str:
    """``text`` (the primary config) with each group's defaults entry set to its new option, in place."""
    import yaml

    original = text
    root = yaml.compose(text)
    if root is None:
        raise ValueError("the file is empty")
    defaults = next(v for k, v in root.value if k.value == "defaults")
    spans = []
    for item in defaults.value:
        if not isinstance(item, yaml.MappingNode) or len(item.value) != 1:
            continue
        key, value = item.value[0]
        name = _group_name(str(key.value))
        if name in groups and isinstance(value, yaml.ScalarNode):
            new = yaml.safe_dump(groups[name], default_flow_style=True).strip().removesuffix("...").strip()
            spans.append((value.start_mark.index, value.end_mark.index, new))
    for start, end, new in sorted(spans, reverse=True):
        if start == end and text[start - 1:start] == ":":
            new = " " + new  # `- experiment:` with no value
        text = text[:start] + new + text[end:]
    before, after = yaml.safe_load(original), yaml.safe_load(text)
    again = _choices(after.pop("defaults", None))
    before.pop("defaults", None)
    if any(again.get(group) != option for group, option in groups.items()) or after != before:
        raise ValueError("the written list reads back otherwise, or another value changed with it")
    return text


def _has_package(text: str) -> bool:
    """Whether a config file names its package (``# @package ...``): its keys are then not where its path puts
    them."""
    return re.search(r"^\s*#\s*@package\b", text, re.M) is not None


_NOT_PLAIN = re.compile(r"[-+]?(?:\d[\d_]*\.?[\d_]*(?:e[-+]?\d+)?|\.\d[\d_]*(?:e[-+]?\d+)?|inf|nan)|true|false|null",
                        re.I)


def _plain(value: str) -> bool:
    """Whether Hydra's override parser reads ``key=<value>`` as this same string: not a number, bool or null in
    any case, no outer whitespace, no quote, list or dict."""
    return bool(value) and value == value.strip() and value[0] not in "'\"[{" and not _NOT_PLAIN.fullmatch(value)
