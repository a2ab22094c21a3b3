"""lm-evaluation-harness inside agentlab: the field's common yardstick, offline, with adapters really applied.

- :func:`task_manager`, :func:`load_tasks`, :func:`list_tasks`, :func:`export_tasks`: lm-eval tasks (the bundled
  ones in ``bundled/``, a user's ``--include-path`` folders, lm-eval's own), local data paths made absolute, a task
  whose data is not on disk one clear error (``tasks.py``); the user's task YAMLs read first, so one lm-eval would
  skip, fail on or let replace a bundled task is named (``taskfiles.py``)
- :func:`load_harness_model`, :class:`HarnessModel`: one model loaded once, lm-eval's ``HFLM`` over the ``PeftModel``
  itself, adapters switched in place, the logit probe (``lm.py``)
- :func:`evaluate_row`, :func:`scores`, :func:`check_applied`, :func:`paired`: one row through
  ``lm_eval.simple_evaluate``, its metric table, the check that an adapter changed its per-sample log-likelihoods,
  paired differences against the base (``evaluate.py``)
- :func:`score_models`, :class:`ScoreModelsSettings`: all of it in one call, for commands that score with a harness
  task (train-persona --eval, evolve, compress)

lm_eval is an optional dependency (the extra ``eval``); it, torch and transformers are imported on
first use, so ``import agentlab.core.harness`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentlab.core.harness.evaluate import (
        Paired,
        Score,
        Settings,
        check_applied,
        evaluate_row,
        logliks_of,
        paired,
        scores,
    )
    from agentlab.core.harness.lm import BASE, HarnessModel, check_probe, load_harness_model
    from agentlab.core.harness.score import HarnessScores, ScoreModelsSettings, score_models
    from agentlab.core.harness.tasks import (
        BUNDLED,
        TaskInfo,
        bundled_names,
        export_tasks,
        go_offline,
        list_tasks,
        load_tasks,
        task_manager,
    )

_EXPORTS = {
    "Paired": "evaluate", "Score": "evaluate", "Settings": "evaluate", "check_applied": "evaluate",
    "evaluate_row": "evaluate", "logliks_of": "evaluate", "paired": "evaluate", "scores": "evaluate",
    "BASE": "lm", "HarnessModel": "lm", "check_probe": "lm", "load_harness_model": "lm",
    "HarnessScores": "score", "ScoreModelsSettings": "score", "score_models": "score",
    "BUNDLED": "tasks", "TaskInfo": "tasks", "bundled_names": "tasks", "export_tasks": "tasks",
    "go_offline": "tasks", "list_tasks": "tasks", "load_tasks": "tasks", "task_manager": "tasks",
}
__all__ = ["BASE", "BUNDLED", "HarnessModel", "HarnessScores", "Paired", "Score", "ScoreModelsSettings", "Settings",
           "TaskInfo", "bundled_names", "check_applied", "check_probe", "evaluate_row", "export_tasks", "go_offline",
           "list_tasks", "load_harness_model", "load_tasks", "logliks_of", "paired", "score_models", "scores",
           "task_manager"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
