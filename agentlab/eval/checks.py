"""Checks of the lm-eval tasks against what ``eval`` asks, before any run folder exists (exit 2).

lm-eval accepts a task whose ``metric_list`` names a metric it does not know (it logs "not found in the evaluate
library" and scores nothing: an empty row, exit 0), and a ``--num-fewshot`` larger than the split its few-shot
examples are drawn from (``random.sample`` fails mid-run: "Sample larger than population"). Both are the user's
input, so both are one line naming the task, its YAML and the next step. Before they load, the task YAMLs are read
for what lm-eval reports naming the data file instead of the YAML (an unknown key, a data file that is a directory).
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Any

from agentlab.core.errors import InputError, UsageError

log = logging.getLogger(__name__)


def task_yaml(manager: Any, name: str, task: Any) -> str:
    """The YAML file a loaded task came from (agentlab's index rewrite keeps it in the task's metadata)."""
    metadata = getattr(getattr(task, "config", None), "metadata", None)
    if isinstance(metadata, dict) and metadata.get("agentlab_yaml"):
        return str(metadata["agentlab_yaml"])
    entry = manager.task_index.get(name) if manager is not None else None
    path = getattr(entry, "yaml_path", None)
    return str(path) if path else "its YAML"


def check_yamls(manager: Any, names: list[str]) -> None:
    """The task YAMLs behind ``names`` (tasks, groups, tags), read before lm-eval builds them: a key lm-eval's task
    config does not know, or a data file that is a directory, is one line naming the YAML (lm-eval's own errors name
    neither: "TaskConfig.__init__() got an unexpected keyword argument", "Unable to find DATA"). A name that is not
    in the index, or a YAML that cannot be read, is left to ``load_tasks``, which says so."""
    seen: set[str] = set()
    for name in names:
        _check_yaml(manager, name, seen)


# keys lm-eval's task builder takes out of a task's config before it makes its TaskConfig (lm_eval/tasks/_factory.py)
_STRUCTURAL_KEYS = {"tag", "group", "task_list", "class"}


def _check_yaml(manager: Any, name: str, seen: set[str]) -> None:
    from lm_eval.tasks._index import Kind

    entry = manager.task_index.get(name)
    if entry is None or name in seen:
        return
    seen.add(name)
    if entry.kind == Kind.TAG:
        for member in sorted(entry.tags):
            _check_yaml(manager, member, seen)
        return
    cfg = _entry_config(entry)
    if entry.kind == Kind.GROUP:
        members = cfg.get("task")
        for member in members if isinstance(members, list) else []:
            if isinstance(member, str):
                _check_yaml(manager, member, seen)
        return
    if entry.kind != Kind.TASK or "class" in cfg:  # a Python task class takes its own config
        return
    import dataclasses

    from lm_eval.api.task import TaskConfig

    metadata = cfg.get("metadata")
    yaml = (metadata.get("agentlab_yaml") if isinstance(metadata, dict) else None) or entry.yaml_path or "its YAML"
    fields = {f.name for f in dataclasses.fields(TaskConfig)}
    unknown = sorted(str(k) for k in set(cfg) - fields - _STRUCTURAL_KEYS)
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(fields), n=3, cutoff=0.6)
        what = f"the key '{unknown[0]}' is not a task key" if len(unknown) == 1 else \
            f"the keys {', '.join(repr(k) for k in unknown)} are not task keys"
        raise InputError(f"task '{name}': {yaml}: {what} lm-eval knows"
                         + (f" (nearest to '{unknown[0]}': {', '.join(close)})" if close else ""),
                         hint=f"remove or rename {'it' if len(unknown) == 1 else 'them'}; lm-eval's task keys: "
                         f"{', '.join(sorted(fields))}")
    from agentlab.core.harness.tasks import data_files

    for file in data_files(cfg):
        if Path(file).is_dir():
            raise InputError(f"task '{name}': {yaml}: its data file {file} is a directory",
                             hint="name data files in dataset_kwargs.data_files (a .jsonl, .json, .csv or .parquet "
                             "file, or a glob such as DIR/*.jsonl)")


def _entry_config(entry: Any) -> dict[str, Any]:
    """The config of an index entry: agentlab's rewritten one, else its YAML as lm-eval reads it ({} when unreadable:
    lm-eval's own error follows when the task is loaded)."""
    if isinstance(entry.cfg, dict):
        return entry.cfg
    if not entry.yaml_path:
        return {}
    try:
        from lm_eval.tasks._yaml_loader import load_yaml

        cfg = load_yaml(entry.yaml_path, resolve_func=False)
    except Exception:  # any reading or parsing error: load_tasks reports it
        return {}
    return cfg if isinstance(cfg, dict) else {}


def check_loaded(manager: Any, loaded: dict[str, Any], num_fewshot: int | None) -> None:
    """Every loaded task's metrics are known to lm-eval, and its few-shot split has enough items for the few-shot
    setting (``num_fewshot``, else the task's own)."""
    for name, task in (loaded.get("tasks") or {}).items():
        _check_metrics(manager, name, task)
        _check_fewshot(manager, name, task, num_fewshot)


def _check_metrics(manager: Any, name: str, task: Any) -> None:
    config = task.config
    if getattr(config, "process_results", None) is not None:  # the task's own Python scores it
        return
    if not getattr(config, "metric_list", None):  # lm-eval's defaults for the output type
        return
    functions = getattr(task, "_metric_fn_list", None)  # lm-eval's metric lookup: None where it found none
    if not isinstance(functions, dict):
        return
    from lm_eval.api.registry import metric_registry

    known = sorted(metric_registry)
    for entry in config.metric_list:
        metric = entry.get("metric") if isinstance(entry, dict) else None
        if isinstance(metric, str) and metric in functions and functions[metric] is None:
            close = difflib.get_close_matches(metric, known, n=3, cutoff=0.6)
            raise InputError(f"task '{name}': {task_yaml(manager, name, task)}: metric_list names the metric "
                             f"'{metric}', which lm-eval does not know" + (f" (nearest: {', '.join(close)})"
                                                                          if close else ""),
                             hint=f"use one of lm-eval's metrics ({', '.join(known)}), or score the items with "
                             "process_results: !function FILE.FUNCTION")


def _fewshot_split(task: Any) -> str | None:
    """The split lm-eval draws ``task``'s few-shot examples from, in the order its ``fewshot_docs`` tries them (None:
    the YAML's ``fewshot_config.samples``, or no split at all)."""
    config, fewshot = task.config, task.fewshot_cfg
    if fewshot.split is not None:
        return str(fewshot.split)
    if config.fewshot_config is not None and fewshot.samples is not None:
        return None
    for has, split in ((task.has_training_docs(), config.training_split),
                       (task.has_validation_docs(), config.validation_split),
                       (task.has_test_docs(), config.test_split)):
        if has:
            return str(split)
    return None


def _fewshot_source(task: Any) -> str:
    """Where lm-eval draws ``task``'s few-shot examples from, for the error."""
    split = _fewshot_split(task)
    if split is not None:
        return f"split '{split}'"
    if task.config.fewshot_config is not None and task.fewshot_cfg.samples is not None:
        return "fewshot_config.samples"
    return "split (none)"


def _check_fewshot(manager: Any, name: str, task: Any, num_fewshot: int | None) -> None:
    shots = num_fewshot if num_fewshot is not None else task.config.num_fewshot
    if not shots or not hasattr(task, "fewshot_cfg"):  # a Python task class draws its examples its own way
        return
    sampler = getattr(task, "sampler", None)
    pool = len(sampler.fewshot_docs()) if sampler is not None else 0
    # examples drawn from the split being scored (a fewshot_split naming it, or lm-eval's fallback to it when the YAML
    # has no fewshot_split, training or validation split) can hold only the other items: lm-eval leaves the scored
    # item out when fewshot_split names it, and without it the item's own answer can land in its prompt
    drawn_from_scored = _fewshot_split(task) == task.config.test_split
    # lm-eval's own condition to leave the item out (None == None too), when it then draws one more and needs it
    one_less = drawn_from_scored or task.fewshot_cfg.split == task.config.test_split
    usable = max(pool - 1, 0) if one_less else pool
    if shots <= usable:
        if drawn_from_scored and task.fewshot_cfg.split is None:
            log.warning("task '%s': %s has no fewshot_split, so lm-eval draws its %d few-shot example(s) from split "
                        "'%s', the one it scores, without leaving the scored item out: an item's own answer can be "
                        "in its prompt (give the YAML fewshot_split: %s, and lm-eval leaves it out)", name,
                        task_yaml(manager, name, task), shots, task.config.test_split, task.config.test_split)
        return
    source = _fewshot_source(task)
    items = f"{pool} item(s)" + (", less the item being scored" if one_less else "")
    if num_fewshot is not None:
        raise UsageError(f"--num-fewshot {shots}: task '{name}' draws its few-shot examples from its {source}, "
                         f"which has {items}",
                         hint=f"the largest usable --num-fewshot for '{name}' is {usable}" if usable else
                         f"run '{name}' without few-shot examples (--num-fewshot 0), or give its YAML a "
                         "fewshot_split with examples")
    raise InputError(f"task '{name}': {task_yaml(manager, name, task)}: num_fewshot {shots} is more than its "
                     f"{source} has ({items})",
                     hint=f"lower num_fewshot in the YAML, or override it with --num-fewshot {usable} or less")
