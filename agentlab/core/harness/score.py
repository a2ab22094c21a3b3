"""All of a harness evaluation in one call, for the commands that score with an lm-eval task instead of their own
scorers (``train-persona --eval``, ``evolve`` and ``compress`` with ``task: {harness: NAME}``): load the model once
with its adapters, probe each adapter, score the base and every adapter on the same items, check that each adapter
changed its per-sample log-likelihoods, and pair each adapter's per-item scores with the base's."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentlab.core.errors import InputError
from agentlab.core.harness.evaluate import (
    Paired,
    Score,
    Settings,
    _env_info_once,
    check_applied,
    evaluate_row,
    logliks_of,
    paired,
    per_item,
    quiet_bars,
    scores,
)
from agentlab.core.harness.lm import BASE, HarnessModel, check_probe, load_harness_model
from agentlab.core.harness.tasks import load_tasks, task_manager


@dataclass
class HarnessScores:
    """Each row's (``base``, then each adapter's) metrics and samples, the probe, and the paired differences."""

    tasks: list[str]
    rows: dict[str, list[Score]] = field(default_factory=dict)
    samples: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)  # lm-eval's results dict of each row
    probe: dict[str, float] = field(default_factory=dict)
    applied: dict[str, dict[str, float]] = field(default_factory=dict)  # largest per-sample loglik change, per task
    paired: dict[str, list[Paired]] = field(default_factory=dict)

    def main(self, row: str, task: str | None = None) -> Score:
        """The first metric lm-eval reports for ``task`` (default: the first task) on ``row``."""
        for score in self.rows[row]:
            if task is None or score.task == task:
                return score
        raise KeyError(f"no score of {task or 'any task'} for {row}")

    def per_item(self, row: str) -> list[float]:
        """The per-item values of each task's first metric on ``row``, task after task, in item order."""
        firsts: dict[str, Score] = {}
        for score in self.rows[row]:
            firsts.setdefault(score.task, score)
        out: list[float] = []
        for task, score in firsts.items():
            values = per_item(self.samples[row].get(task, []), score.metric, score.filter)
            out += [values[k] for k in sorted(values, key=lambda k: (isinstance(k, str), k))]
        return out

    def mean(self, row: str) -> float:
        """The mean over the row's tasks of each task's first metric (one number for a fitness or an accuracy)."""
        firsts: dict[str, float] = {}
        for score in self.rows[row]:
            firsts.setdefault(score.task, score.value)
        return sum(firsts.values()) / len(firsts) if firsts else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {"tasks": self.tasks, "rows": {r: [s.to_dict() for s in v] for r, v in self.rows.items()},
                "probe": self.probe, "applied": self.applied,
                "paired": {r: [p.to_dict() for p in v] for r, v in self.paired.items()}}


@dataclass(frozen=True)
class ScoreModelsSettings:
    """How :func:`score_models` loads the model, probes each adapter and asks lm-eval (the same for every row)."""

    include: Sequence[str | Path] = ()  # folders of your own task YAMLs
    limit: int | None = None  # the first N items of each task (None: all)
    num_fewshot: int | None = None  # few-shot examples per prompt (None: each task's own)
    chat_template: bool | str = "auto"  # wrap prompts in the chat template; auto: when the tokenizer has one
    device: str = "auto"  # device, dtype, batch_size: the model's load (unused for a HarnessModel already loaded)
    dtype: str = "auto"
    batch_size: int = 8
    probe: str = "What is 7 times 8?"  # each adapter must change the base's logits on it by min_change or more
    min_change: float = 1e-4
    # score the model without adapters too (needed for the applied check and the paired differences; without it,
    # adapters are probed only)
    base: bool = True
    # score these item indices of every task instead of the first limit (an InputError when a task has fewer)
    items: Sequence[int] | None = None


def score_models(model: str | HarnessModel, adapters: Mapping[str, str | Path] | None, tasks: Sequence[str], *,
                 settings: ScoreModelsSettings | None = None, on_row: Callable[[str], None] | None = None
                 ) -> HarnessScores:
    """Score ``model`` (a model reference, or a :class:`HarnessModel` already loaded) and each of ``adapters``
    (name -> PEFT folder) on the lm-eval ``tasks``, as ``settings`` says (default: :class:`ScoreModelsSettings`'s
    defaults); ``on_row(row)`` is told each row before it is scored. Raises ``InputError`` for an unknown task,
    missing data or an adapter that changes nothing on the probe, ``AgentlabError`` for an adapter whose per-sample
    log-likelihoods equal the base's."""
    s = settings or ScoreModelsSettings()
    manager = task_manager(s.include, names=tasks)
    loaded = load_tasks(manager, tasks)
    chosen_items = None
    limit = s.limit
    if s.items is not None:
        chosen = sorted(set(s.items))
        for name, task in loaded["tasks"].items():
            if chosen and chosen[-1] >= len(task.eval_docs):
                raise InputError(f"task '{name}' has {len(task.eval_docs)} items; {chosen[-1] + 1} are needed",
                                 hint="ask for fewer items, or give a task with more")
        chosen_items, limit = {name: chosen for name in loaded["tasks"]}, None
    hm = model if isinstance(model, HarnessModel) else load_harness_model(
        model, adapters, device=s.device, dtype=s.dtype, batch_size=s.batch_size)
    names = list(adapters or {}) if not isinstance(model, HarnessModel) else list(hm.adapters)
    out = HarnessScores(list(tasks))
    out.probe = hm.probe(s.probe)
    check_probe(out.probe, s.min_change, hm.adapters)
    asked = Settings(limit=limit, num_fewshot=s.num_fewshot, chat_template=hm.uses_chat_template(s.chat_template),
                     samples=chosen_items)
    logliks = {}
    for row, adapter in ([(BASE, None)] if s.base else []) + [(n, n) for n in names]:
        if on_row is not None:
            on_row(row)
        results, samples = evaluate_row(hm, adapter, tasks, manager, asked)
        out.results[row], out.samples[row], out.rows[row] = results, samples, scores(results)
        if s.base:
            logliks[row] = logliks_of(hm, samples, adapter)
    if s.base:
        for name in names:
            out.applied[name] = check_applied(name, logliks[BASE], logliks[name])
            out.paired[name] = paired(out.samples[BASE], out.samples[name], out.rows[BASE])
    return out


def score_lm(lm: Any, tasks: Sequence[str], *, include: Sequence[str | Path] = (), limit: int | None = None,
             chat_template: bool = True) -> HarnessScores:
    """One row: any lm-eval ``LM`` (a compressed model wrapped by :func:`~agentlab.core.harness.lm.wrap_model`'s
    ``.lm``, a GGUF's :func:`~agentlab.core.harness.llamacpp.llama_lm`) on ``tasks``."""
    from lm_eval import simple_evaluate

    manager = task_manager(include, names=tasks)
    load_tasks(manager, tasks)
    _env_info_once()
    with quiet_bars():
        out = simple_evaluate(model=lm, tasks=list(tasks), task_manager=manager, limit=limit,
                              apply_chat_template=chat_template, log_samples=True)
    if out is None:
        raise InputError("lm-eval returned no results")
    scored = HarnessScores(list(tasks))
    scored.samples[BASE] = out.pop("samples", {})
    scored.results[BASE], scored.rows[BASE] = out, scores(out)
    return scored
