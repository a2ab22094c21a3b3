"""The task YAMLs of a user's ``--include-path`` folders, read before lm-eval indexes them: what lm-eval would skip
without a word or fail on deep inside (a task named like a bundled one: ``tasks._bundled_replaced``).

lm-eval's task index skips a YAML it cannot read (not UTF-8, broken YAML, empty), so its task is then "not known";
it takes a key of the wrong type (``test_split: [1, 2]``) and fails when the task is built ("unhashable type:
'list'", "'>' not supported between instances of 'str' and 'int'") or ignores it; a task name that is a number
breaks the index itself. :func:`scan` reads each YAML once with lm-eval's own reader and returns a :class:`Problem`
per file that has one, so that ``tasks.load_tasks`` names the file, the key and what it must be when the task is
asked for.

lm_eval and yaml are imported inside the functions.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentlab.core.errors import InputError, one_line

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    """A task YAML that cannot be used as it is."""

    path: Path
    task: str | None  # the task it names (read from its text when it is not readable YAML); None: not known
    why: str  # what is wrong, e.g. "not UTF-8 text (byte 161)", "test_split is [1, 2], not text (a split name)"
    key: str | None = None  # the key at fault (None: lm-eval cannot read the file, its index skips it)
    hint: str | None = None  # the next step, when the key's type is not what is wrong

    @property
    def skipped(self) -> bool:
        return self.key is None


def _text(value: Any) -> bool:
    return isinstance(value, str)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _function(value: Any) -> bool:  # `!function FILE.NAME`: a path string when read unresolved, a function resolved
    return isinstance(value, str) or callable(value)


def _metrics(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) and m.get("metric") is not None for m in value)


OUTPUT_TYPES = ("loglikelihood", "loglikelihood_rolling", "generate_until", "multiple_choice")
_TEXT = "text"
# What each key of lm-eval's task config (its TaskConfig, 0.4) holds in a YAML, as lm-eval reads it: what it must be,
# and the test. An empty key (null) is lm-eval's default and always fine; a key not listed is not checked here.
KEY_TYPES: dict[str, tuple[str, Callable[[Any], bool]]] = {
    **dict.fromkeys(("task", "task_alias", "dataset_path", "dataset_name", "use_prompt", "description",
                     "target_delimiter", "fewshot_delimiter", "gen_prefix", "doc_to_decontamination_query"),
                    (_TEXT, _text)),
    **dict.fromkeys(("training_split", "validation_split", "test_split", "fewshot_split"),
                    ("text (a split name of the data)", _text)),
    **dict.fromkeys(("dataset_kwargs", "generation_kwargs", "fewshot_config", "metadata"),
                    ("a mapping (key: value lines)", lambda v: isinstance(v, dict))),
    **dict.fromkeys(("unsafe_code", "should_decontaminate"), ("true or false", lambda v: isinstance(v, bool))),
    **dict.fromkeys(("process_docs", "process_results", "custom_dataset"), ("!function FILE.FUNCTION", _function)),
    "tag": ("text or a list of text", lambda v: _text(v) or isinstance(v, list) and all(map(_text, v))),
    "doc_to_text": ("text (a template or field name), a number or !function",
                    lambda v: _text(v) or _whole(v) or callable(v)),
    "doc_to_target": ("text (a template or field name), a number, a list or !function",
                      lambda v: _text(v) or _whole(v) or isinstance(v, list) or callable(v)),
    "doc_to_choice": ("text (a template or field name), a list, a mapping or !function",
                      lambda v: _text(v) or isinstance(v, list | dict) or callable(v)),
    "num_fewshot": ("a whole number, 0 or more", lambda v: _whole(v) and v >= 0),
    "repeats": ("a whole number, 1 or more", lambda v: _whole(v) and v >= 1),
    "output_type": (" or ".join(OUTPUT_TYPES), lambda v: v in OUTPUT_TYPES),
    "metric_list": ("a list of mappings, each with a metric key (- metric: acc)", _metrics),
    "filter_list": ("text or a list of filters", lambda v: _text(v) or isinstance(v, list)),
}
_NAMED_TASK = re.compile(r"^task:[ \t]*['\"]?([^'\"\s#]+)", re.M)


def scan(roots: Sequence[Path]) -> list[Problem]:
    """A :class:`Problem` for each task YAML under ``roots`` that lm-eval cannot read (each also a warning, since
    lm-eval's index skips it without a word) or whose keys have the wrong type. A name lm-eval's index is built on
    (``task`` of a task, ``group``, ``tag``) of the wrong type is an ``InputError`` at once: lm-eval's index fails on
    it ("'<' not supported between instances of 'int' and 'str'") whichever task is asked for."""
    try:
        from lm_eval.tasks._yaml_loader import load_yaml  # lm-eval's own reader (private: absent, nothing is read)
    except ImportError:
        return []
    problems = []
    for path in yaml_files(roots):
        try:
            cfg = load_yaml(path, resolve_func=False, recursive=True)
        except Exception as exc:  # what lm-eval's index skips: any error reading or parsing the file
            problem = Problem(path, _named_task(path), _unreadable(path, exc))
            log.warning("%s: skipped, not a readable task YAML (%s)", path, problem.why)
            problems.append(problem)
            continue
        _check_names(path, cfg)
        task = cfg.get("task")
        if not isinstance(task, str) or "class" in cfg:  # a group, a template to include, or a Python task class
            continue
        for key, (what, fits) in KEY_TYPES.items():
            value = cfg.get(key)
            if value is not None and not fits(value):
                problems.append(Problem(path, task, f"{key} is {_brief(value)}, not {what}", key))
                break
    return problems


def yaml_files(roots: Sequence[Path]) -> list[Path]:
    """The task YAMLs of ``roots``, as lm-eval's index finds them (not under a hidden folder or ``__pycache__``)."""
    out = []
    for root in roots:
        for path in sorted(root.glob("**/*.yaml")):
            if any(part.startswith(".") or part == "__pycache__" for part in path.relative_to(root).parts[:-1]):
                continue  # what lm-eval's index skips too (.ipynb_checkpoints, __pycache__)
            out.append(path)
    return out


def _check_names(path: Path, cfg: dict[str, Any]) -> None:
    names = [("task", cfg.get("task"), "text (the task's name), or a group's list of tasks",
              lambda v: _text(v) or isinstance(v, list)),
             ("group", cfg.get("group"), "text (the group's name)", _text),
             ("tag", cfg.get("tag"), KEY_TYPES["tag"][0], KEY_TYPES["tag"][1])]
    for key, value, what, fits in names:
        if value is not None and not fits(value):
            raise InputError(f"{path}: {key} is {_brief(value)}, not {what}",
                             hint=f"fix {key} in that YAML (quote a name that YAML reads as a number: {key}: \"7\"); "
                             "lm-eval indexes every YAML of the --include-path folders, so one such name stops all")


def _brief(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _named_task(path: Path) -> str | None:
    """The task name a YAML's text gives on a ``task:`` line, read without YAML (the file is not readable YAML)."""
    try:
        found = _NAMED_TASK.search(path.read_bytes().decode("utf-8", errors="replace"))
    except OSError:
        return None
    return found.group(1) if found else None


def _unreadable(path: Path, exc: Exception) -> str:
    """Why lm-eval cannot read the YAML ``path``, in a few words."""
    import yaml

    try:
        data = path.read_bytes()
    except OSError as error:
        return f"cannot be read: {error.strerror or one_line(error)}"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        return f"not UTF-8 text (byte {error.start})"
    if not data.strip() or all(not line.strip() or line.lstrip().startswith(b"#") for line in data.splitlines()):
        return "empty: no task keys"
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        where = "" if Path(str(mark.name)) == path else f" of {mark.name}"
        return f"not valid YAML: {exc.problem} at line {mark.line + 1}, column {mark.column + 1}{where}"
    if isinstance(exc, ValueError) and str(exc).startswith("Expected YAML dict"):
        return "not a mapping of task keys (task: NAME, dataset_path: ..., ...)"
    return " ".join(str(exc).split())[:160] or type(exc).__name__
