"""lm-evaluation-harness tasks as agentlab meets them: the bundled ones, a user's ``--include-path`` folders, and
lm-eval's own; loaded offline, with local ``data_files`` made absolute, and one clear error for a task whose data is
not on disk.

lm-eval resolves a task's ``dataset_kwargs.data_files`` against the working directory, so a YAML that names
``data.jsonl`` beside itself works only when run from its folder. :func:`task_manager` rewrites, in lm-eval's task
index, every task YAML under the folders agentlab was given: relative local data paths become paths relative to the
YAML file (the YAML on disk is never changed). lm-eval's own task index (thousands of YAML files, slow to read:
docs/design/measurements.md) is read only when a task asked for is not among the bundled and included ones. The
included YAMLs are read first (``taskfiles.py``): one lm-eval cannot read, a key of the wrong type, or a task named
like a bundled one is one error naming the file when its task is asked for.

lm_eval and datasets are imported inside the functions.
"""

from __future__ import annotations

import difflib
import glob
import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from agentlab.core.errors import InputError, missing_package, one_line
from agentlab.core.files import cannot_write
from agentlab.core.harness.taskfiles import KEY_TYPES, Problem, scan

if TYPE_CHECKING:
    from lm_eval.tasks import TaskManager

log = logging.getLogger(__name__)

BUNDLED = Path(__file__).resolve().with_name("bundled")
# datasets' packaged builders that read local files through data_files (anything else is a hub dataset or a script)
LOCAL_BUILDERS = ("json", "csv", "parquet", "text", "arrow", "pandas", "webdataset", "imagefolder", "audiofolder")
OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
# Where each command takes the folders of the user's task YAMLs.
INCLUDE_PATH_HOW = ("eval's --include-path DIR (train-persona: --set 'eval.include_path=[DIR]', evolve: "
                    "task.include_path)")
_NO_DATA_HINT = ("agentlab never downloads at run time: give the task's data as local files (dataset_path: json with "
                 f"data_files next to its YAML, in a folder given with {INCLUDE_PATH_HOW}), or fetch the hub dataset "
                 "once with "
                 "network (python -c \"import datasets; datasets.load_dataset('NAME')\") so it is in the local cache")


@dataclass(frozen=True)
class TaskInfo:
    """One task (or group, or tag) that ``agentlab eval --tasks`` can name."""

    name: str
    kind: str  # task | group | tag
    source: str  # the YAML file, or "tag"
    output_type: str | None = None
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "source": self.source, "output_type": self.output_type,
                "description": self.description}


def go_offline() -> None:
    """The hub switches off for this process (models, datasets, tokenizers), including in modules already imported:
    nothing is downloaded, and a missing file is an error at once instead of a wait on the network."""
    import sys

    for name in OFFLINE_ENV:
        os.environ[name] = "1"
    for module, names in (("huggingface_hub.constants", ("HF_HUB_OFFLINE",)),
                          ("datasets.config", ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))):
        loaded = sys.modules.get(module)
        for name in names if loaded is not None else ():
            if hasattr(loaded, name):
                setattr(loaded, name, True)


def _import_lm_eval() -> Any:
    go_offline()
    try:
        import lm_eval.tasks
    except ImportError as exc:
        raise missing_package(exc) or exc from None
    return lm_eval.tasks


def task_manager(include: Sequence[str | Path] = (), *, names: Sequence[str] = (), defaults: bool | None = None
                 ) -> TaskManager:
    """lm-eval's ``TaskManager`` over the bundled tasks and the ``include`` folders (later folders win over earlier
    ones for the same name; a task named like a bundled one is refused by ``load_tasks``), their local data paths
    made absolute. ``defaults``: index lm-eval's own tasks too; None: only when a name of ``names`` is not found
    otherwise (nor named by a YAML of ``include`` that lm-eval cannot use: ``load_tasks`` names that file instead).
    An ``include`` folder that does not exist, or a YAML in one whose name lm-eval's index cannot take, is an
    ``InputError``. The YAMLs of ``include`` that lm-eval cannot read (a warning each) or whose keys have the wrong
    type are kept with the manager for ``load_tasks``."""
    lm_tasks = _import_lm_eval()
    roots = [BUNDLED, *(_folder(p) for p in include)]
    problems = scan(roots[1:])
    manager = lm_tasks.TaskManager(include_defaults=bool(defaults), include_path=[str(r) for r in roots])
    named = {p.task for p in problems}
    if defaults is None and any(n not in manager.task_index and not Path(n).is_file() and n not in named
                                for n in names):
        manager = lm_tasks.TaskManager(include_defaults=True, include_path=[str(r) for r in roots])
    problems += _bundled_replaced(manager)
    _absolute_data(manager, roots)
    setattr(manager, _PROBLEMS, problems)  # lm-eval's class, agentlab's attribute
    return manager


# The attribute of a TaskManager that holds the include folders' task YAML problems (Problem).
_PROBLEMS = "agentlab_problems"


def _problems(manager: Any) -> list[Problem]:
    return list(getattr(manager, _PROBLEMS, None) or [])


def _bundled_replaced(manager: TaskManager) -> list[Problem]:
    """A problem for each YAML of the ``include`` folders whose task takes a bundled task's name: lm-eval lets it
    replace the bundled task (with a log line at most), and the scores and report would then show the user's items
    under the bundled name. Refused when that name is asked for (``load_tasks``)."""
    from lm_eval.tasks._index import Kind
    from lm_eval.tasks._yaml_loader import load_yaml

    problems = []
    for name in bundled_names():  # a bundled task's YAML is named after it (taskdata.py writes them)
        entry, bundled = manager.task_index.get(name), BUNDLED / f"{name}.yaml"
        if entry is None or entry.kind != Kind.TASK or entry.yaml_path is None:
            continue
        used = Path(entry.yaml_path).resolve()
        if used.is_relative_to(BUNDLED):
            continue
        try:
            if load_yaml(bundled, resolve_func=False).get("task") != name:
                continue
        except Exception:  # the bundled YAMLs are agentlab's own: tests read every one
            continue
        problems.append(Problem(
            used, name, f"its task takes the name of the bundled task of {bundled}, which it would replace in the "
            "scores and the report", "task", hint=f"rename the task in that YAML (task: my_"
            f"{name.removeprefix('agentlab_')}); the bundled tasks' names are agentlab's own"))
    return problems


def _folder(path: str | Path) -> Path:
    folder = Path(path).expanduser()
    if not folder.is_dir():
        what = "is a file" if folder.exists() else "not found"
        raise InputError(f"--include-path {folder}: {what}", hint="give a folder of lm-eval task YAML files")
    return folder.resolve()


def _absolute_data(manager: TaskManager, roots: list[Path]) -> None:
    """Give every task entry whose YAML lies under ``roots`` a config with absolute local data paths and, where its
    few-shot examples can only come from the split it scores, ``fewshot_split`` naming that split (the entry then
    carries the config; lm-eval builds the task from it instead of reading the YAML again)."""
    from lm_eval.tasks._index import Kind
    from lm_eval.tasks._yaml_loader import load_yaml

    for entry in manager.task_index.values():
        if entry.kind != Kind.TASK or entry.yaml_path is None:
            continue
        path = Path(entry.yaml_path).resolve()
        if not any(path.is_relative_to(root) for root in roots):
            continue
        try:
            cfg = load_yaml(path, resolve_func=True)
        except Exception as exc:  # a broken YAML fails when (if) it is asked for, with lm-eval's own error
            log.debug("not rewriting %s: %s", path, exc)
            continue
        if _absolute(cfg, path.parent) | _fewshot_from_scored(cfg):
            cfg.setdefault("metadata", {})
            if isinstance(cfg["metadata"], dict):
                cfg["metadata"]["agentlab_yaml"] = str(path)
            entry.cfg, entry.yaml_path = cfg, None


def _fewshot_from_scored(cfg: dict[str, Any]) -> bool:
    """A task with no ``fewshot_split``, training or validation split, nor ``fewshot_config.samples``: lm-eval draws
    its few-shot examples from the test split, and leaves the scored item out only when ``fewshot_split`` names that
    split, so without it an item's own answer could be in its prompt. Name it; whether anything changed."""
    fewshot = cfg.get("fewshot_config")
    if cfg.get("fewshot_split") is not None or cfg.get("training_split") is not None \
            or cfg.get("validation_split") is not None or cfg.get("test_split") is None \
            or (isinstance(fewshot, dict) and fewshot.get("samples") is not None):
        return False
    cfg["fewshot_split"] = cfg["test_split"]
    return True


def _absolute(cfg: dict[str, Any], folder: Path) -> bool:
    """Make ``cfg``'s relative local data paths absolute against ``folder``; whether anything changed."""
    changed = False
    dataset = cfg.get("dataset_path")
    if isinstance(dataset, str) and dataset not in LOCAL_BUILDERS and not Path(dataset).is_absolute() \
            and (folder / dataset).exists():
        cfg["dataset_path"], changed = str(folder / dataset), True
    kwargs = cfg.get("dataset_kwargs")
    if not isinstance(kwargs, dict) or "data_files" not in kwargs:
        return changed

    def fix(value: Any) -> Any:
        if isinstance(value, str):
            return value if "://" in value or Path(value).is_absolute() else str(folder / value)
        if isinstance(value, list):
            return [fix(v) for v in value]
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        return value

    fixed = fix(kwargs["data_files"])
    if fixed != kwargs["data_files"]:
        cfg["dataset_kwargs"] = {**kwargs, "data_files": fixed}
        changed = True
    return changed


def data_files(cfg: dict[str, Any]) -> list[str]:
    """The local data files a task config names (empty for a hub dataset)."""
    kwargs = cfg.get("dataset_kwargs") or {}
    files = kwargs.get("data_files") if isinstance(kwargs, dict) else None
    out: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, list | tuple):
            for v in value:
                walk(v)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)

    walk(files)
    return [f for f in out if "://" not in f]


def load_tasks(manager: TaskManager, names: Sequence[str]) -> dict[str, Any]:
    """lm-eval's ``{"tasks", "groups", "group_map"}`` for ``names`` (tasks, groups or tags), each task's data read
    now. ``InputError`` (exit 2) for an unknown name (with the nearest names) or a task whose data is not on disk
    (naming the task, the file or dataset, and what to do)."""
    if not names:
        raise InputError("no tasks given", hint="name lm-eval tasks with --tasks (agentlab eval tasks lists them)")
    index, problems = manager.task_index, _problems(manager)
    for name in names:
        if name not in index and not Path(name).is_file():
            _unknown(name, index, problems)
        _check_files(name, index, problems=problems)
    from agentlab.core.harness.evaluate import quiet_bars  # (evaluate reads this module)

    try:
        with quiet_bars():  # datasets' "Generating test split" bar over the CLI's own lines
            return manager.load(list(names))
    except Exception as exc:  # datasets raises many types for a dataset it cannot find offline
        failing = ", ".join(names)
        if len(names) > 1:  # name the task that fails
            for name in names:
                try:
                    manager.load([name])
                except Exception:  # this is the one
                    failing = name
                    break
        entry = index.get(failing)
        local = data_files(entry.cfg) if entry is not None and entry.cfg is not None else []
        if local:  # the data is on disk (checked above): the YAML does not fit it
            cfg = entry.cfg if entry is not None and entry.cfg is not None else {}
            splits = [cfg.get(k) for k in ("test_split", "validation_split", "training_split", "fewshot_split")]
            if isinstance(exc, KeyError) and exc.args and isinstance(exc.args[0], str) and exc.args[0] in splits:
                files = (cfg.get("dataset_kwargs") or {}).get("data_files")
                named = f" (its data_files name {', '.join(map(str, files))})" if isinstance(files, dict) else ""
                raise InputError(f"task '{failing}': the split '{exc.args[0]}' its YAML reads is not in its data"
                                 f"{named}", hint="name a split of data_files in test_split, validation_split, "
                                 "training_split and fewshot_split") from exc
            template = type(exc).__name__ in ("UndefinedError", "IndexError", "KeyError")
            raise InputError(f"task '{failing}': lm-eval could not make its items from {', '.join(local)} "
                             f"({one_line(exc)})",
                             hint="the YAML's doc_to_text, doc_to_target and doc_to_choice read fields of every line "
                             "of the data: a field a line lacks reads 'NAME is undefined', a label past the choices "
                             "'list index out of range'" if template else "check the task YAML against its data: the "
                             "split names (test_split, ...), process_docs and the metrics") from exc
        raise InputError(f"task '{failing}': lm-eval could not load its data offline ({one_line(exc)})",
                         hint=_NO_DATA_HINT) from exc


def _unknown(name: str, index: Any, problems: Sequence[Problem]) -> NoReturn:
    """``InputError`` for a task name lm-eval does not know: the YAML of an ``--include-path`` folder that names it
    but cannot be used, else the nearest names and any YAML lm-eval skipped there (its task may be this one)."""
    for problem in problems:
        if problem.task == name:
            _raise(name, problem)
    close = difflib.get_close_matches(name, list(index), n=3, cutoff=0.6)
    message = f"task '{name}' is not known to lm-eval here" + (f" (nearest: {', '.join(close)})" if close else "")
    hint = ("`agentlab eval tasks` lists the bundled tasks; give the folder of your own task YAMLs with "
            f"{INCLUDE_PATH_HOW}")
    skipped = [p for p in problems if p.skipped and p.task is None]
    if skipped:
        more = f" (and {len(skipped) - 1} more YAML(s) skipped)" if len(skipped) > 1 else ""
        message += f"; {skipped[0].path} was skipped, not a readable task YAML ({skipped[0].why}){more}"
        hint = f"fix that YAML (it may be the one that defines '{name}': UTF-8 text, valid YAML, task: NAME and the " \
            "other task keys), or remove it; " + hint
    raise InputError(message, hint=hint)


def _raise(name: str, problem: Problem) -> NoReturn:
    if problem.skipped:
        raise InputError(f"task '{name}': {problem.path} is not a readable task YAML ({problem.why}); lm-eval "
                         "skips it", hint="fix the file: UTF-8 text, valid YAML, a mapping of task keys (task: NAME, "
                         "dataset_path: ..., ...)")
    raise InputError(f"task '{name}': {problem.path}: {problem.why}",
                     hint=problem.hint or f"{problem.key} takes {KEY_TYPES[str(problem.key)][0]}: fix it in "
                     "that YAML")


def _entry_yaml(entry: Any) -> Path | None:
    """The YAML file of an index entry (agentlab's rewrite keeps it in the config's metadata)."""
    metadata = entry.cfg.get("metadata") if isinstance(entry.cfg, dict) else None
    path = entry.yaml_path or (metadata.get("agentlab_yaml") if isinstance(metadata, dict) else None)
    return Path(path).resolve() if path else None


def _check_files(name: str, index: Any, seen: set[str] | None = None, *,
                 problems: Sequence[Problem] = ()) -> None:
    """Every local data file of ``name`` (and, for a group or tag, of its tasks) exists, and their YAMLs' keys have
    the types lm-eval takes (``problems``: what ``taskfiles.scan`` found)."""
    seen = seen if seen is not None else set()
    if name in seen or name not in index:
        return
    from lm_eval.tasks._index import Kind

    seen.add(name)
    entry = index[name]
    for task in sorted(entry.tags) if entry.kind == Kind.TAG else ():  # a task's own tags are not its members
        _check_files(task, index, seen, problems=problems)
    yaml = _entry_yaml(entry)
    for problem in problems:  # the entry's own YAML (another file may name the same task)
        if problem.path.resolve() == yaml if yaml is not None else problem.task == name:
            _raise(name, problem)
    cfg = entry.cfg if entry.cfg is not None else {}
    members = cfg.get("task")
    if isinstance(members, list):
        for member in members:
            member_name = member if isinstance(member, str) else member.get("task") if isinstance(member, dict) \
                else None
            if isinstance(member_name, str):
                _check_files(member_name, index, seen, problems=problems)
        return
    for file in data_files(cfg):
        found = glob.glob(file) if glob.has_magic(file) else Path(file).exists()
        if not found:
            raise InputError(f"task '{name}': its data file {file} is not on disk", hint=_NO_DATA_HINT)
        for path in ([Path(f) for f in found] if isinstance(found, list) else [Path(file)]):
            if path.suffix == ".jsonl" and path.is_file():
                _check_jsonl(name, path, _fields_read(cfg))


# The task keys whose templates read fields of each line of the data.
_TEMPLATE_KEYS = ("doc_to_text", "doc_to_target", "doc_to_choice")


# Jinja filters and tests that make a template read a missing field without failing: ``{{ hint | default('') }}``,
# ``{% if hint is defined %}`` (lm-eval's environment is strict about any other use of an undefined name).
_GUARD_FILTERS = ("default", "d")
_GUARD_TESTS = ("defined", "undefined")


def _guarded(template: Any) -> set[str]:
    """The names a parsed Jinja ``template`` passes to a ``default`` filter or tests with ``is defined`` /
    ``is undefined``: its author expects them to be absent from some data (or all of it)."""
    from jinja2 import nodes

    names: set[str] = set()
    for node in template.find_all((nodes.Filter, nodes.Test)):
        guards = _GUARD_FILTERS if isinstance(node, nodes.Filter) else _GUARD_TESTS
        if node.name in guards and isinstance(node.node, nodes.Name):
            names.add(node.node.name)
    return names


def _fields_read(cfg: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """The fields of a data line that ``cfg``'s templates read (field -> (the key that reads it, whether as a plain
    name)): a plain name is a field (lm-eval reads ``doc[name]``; a name no line has became a literal target, scored 0
    without a word), a Jinja template its variables (the template may handle a null one: ``{% if context %}``) but
    for those it guards with ``default`` or ``is defined`` (it handles a missing one too); none for a task with
    ``process_docs`` (it may make the fields)."""
    if cfg.get("process_docs") is not None:
        return {}
    import jinja2.meta
    from lm_eval.utils import env

    fields: dict[str, tuple[str, bool]] = {}
    for key in _TEMPLATE_KEYS:
        value = cfg.get(key)
        if not isinstance(value, str):
            continue
        plain = "{{" not in value and "{%" not in value
        if plain:
            names = {value} if value.isidentifier() else set()
        else:
            try:
                parsed = env.parse(value)
                names = jinja2.meta.find_undeclared_variables(parsed) - set(env.globals) - _guarded(parsed)
            except jinja2.TemplateError:  # lm-eval says what is wrong with the template
                continue
        for field in sorted(names):
            if field not in fields or plain and not fields[field][1]:
                fields[field] = (key, plain)
    return fields


def _check_jsonl(name: str, path: Path, fields: dict[str, tuple[str, bool]] | None = None) -> None:
    """A local JSON-lines data file holds one JSON object per line (``datasets`` says only "An error occurred while
    generating the dataset", or ``StopIteration`` for an empty file), each with a value for every field that
    ``fields`` (:func:`_fields_read`) reads as a plain name (``datasets`` fills a field a line lacks with null, which
    lm-eval scores or prompts as is): the file and line of the first bad one. A field only a Jinja template reads may
    be null or missing on a line (the template may test it), but not on every line: the file and the field."""
    shape = ", ".join(f"{json.dumps(field)}: ..." for field in fields or {}) or '"field": ..., ...'
    hint = f"each line of a task's .jsonl data is one JSON object ({{{shape}}}): the fields its YAML's templates read"
    try:
        lines = path.read_text(encoding="utf-8").split("\n")  # JSON strings may hold U+2028 and the like raw
    except UnicodeDecodeError:
        raise InputError(f"task '{name}': its data file {path} is not UTF-8 text", hint=hint) from None
    fields = fields or {}
    unseen = {field for field, (_, plain) in fields.items() if not plain}  # template fields no line has yet
    rows = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"task '{name}': {path}:{number}: not JSON ({exc.msg})", hint=hint) from None
        if not isinstance(row, dict):
            raise InputError(f"task '{name}': {path}:{number}: not a JSON object", hint=hint)
        for field, (key, plain) in fields.items():
            if plain and row.get(field) is None:
                what = "is null" if field in row else "is missing"
                raise InputError(f"task '{name}': {path}:{number}: the field '{field}' its YAML's {key} reads {what}",
                                 hint=_field_hint(field, key))
        unseen -= row.keys()
        rows += 1
    if not rows:
        raise InputError(f"task '{name}': its data file {path} is empty", hint=hint)
    for field in sorted(unseen):
        key = fields[field][0]
        raise InputError(f"task '{name}': {path}: no line has the field '{field}' its YAML's {key} reads",
                         hint=_field_hint(field, key))


def _field_hint(field: str, key: str) -> str:
    return f"give every line of the data a '{field}' value, or change {key} in the task YAML to the field the data has"


def bundled_names() -> list[str]:
    """The bundled task names (tasks only, no tags), sorted."""
    return sorted(p.stem for p in BUNDLED.glob("agentlab_*.yaml"))


def list_tasks(include: Sequence[str | Path] = ()) -> list[TaskInfo]:
    """The bundled tasks and those of the ``include`` folders, with their tags (lm-eval's own tasks not listed)."""
    from lm_eval.tasks._index import Kind

    manager = task_manager(include, defaults=False)
    out = []
    for name, entry in sorted(manager.task_index.items()):
        if entry.kind == Kind.TAG:
            out.append(TaskInfo(name, "tag", "tag", description=f"{len(entry.tags)} tasks: "
                                f"{', '.join(sorted(entry.tags))}"))
            continue
        cfg = entry.cfg or {}
        source = entry.yaml_path or (cfg.get("metadata") or {}).get("agentlab_yaml", "inline")
        kind = "group" if entry.kind == Kind.GROUP else "task"
        out.append(TaskInfo(name, kind, str(source), cfg.get("output_type"), _description(Path(str(source)))))
    return out


def _description(yaml: Path) -> str:
    """The comment line just above ``task:`` in a YAML (the bundled tasks say what they are there)."""
    try:
        lines = yaml.read_text(encoding="utf-8").splitlines()
    except OSError:
        return ""
    for i, line in enumerate(lines):
        if line.startswith("task:"):
            return lines[i - 1].lstrip("# ").strip() if i and lines[i - 1].startswith("#") else ""
    return ""


def export_tasks(out: str | Path, *, force: bool = False) -> list[Path]:
    """Copies of the bundled task YAMLs with absolute ``data_files`` (pointing at this installation's JSONL), and
    the style checks they name, in ``out``: for lm-eval's own CLI (``lm_eval --include_path OUT``), which resolves
    relative data paths against the working directory."""
    import yaml

    from agentlab.core.harness.taskdata import exported

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--export {out}: is a file, not a folder", hint="give a new or empty folder")
    if out.exists() and not force and any(out.iterdir()):
        raise InputError(f"--export {out}: already exists and is not empty", hint="choose another folder, or --force")
    unwritable = cannot_write(out)  # tried, not asked: root passes os.access on /proc or a read-only disk
    if unwritable is not None:
        raise InputError(f"--export {out}: cannot write in {unwritable[0]} ({unwritable[1]}); nothing was written",
                         hint="give --export a folder you can write to")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(BUNDLED.glob("agentlab_*.yaml")):
        text = path.read_text(encoding="utf-8")
        for file in sorted({f for f in data_files(yaml.safe_load(text.replace("!function", "")) or {})}):
            text = text.replace(f"test: {file}\n", f"test: {BUNDLED / file}\n")
        (out / path.name).write_text(exported(text), encoding="utf-8")  # with a header true of the copy
        written.append(out / path.name)
    shutil.copyfile(BUNDLED / "style_checks.py", out / "style_checks.py")
    written.append(out / "style_checks.py")
    return written
