"""The compress agent's ``evaluate`` tool: an lm-eval task's first ``limit`` items scored on the base model or on a
finished experiment's compressed model (its workspace checkpoint, else its kept GGUF, else built again from its steps
as ``run_experiment`` built it; never an experiment's recovery training again), every figure computed in code
(accuracy with a 90% interval, the paired difference against the base on the same items). Each result is cached
atomically in ``RUN/agent_evals/<target>-<task>-<limit>-<digest>.json``. It runs in the agent's process while the
search waits: never beside an experiment.
"""

from __future__ import annotations

import gc
import hashlib
import json
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentlab.compress.config import Experiment
from agentlab.compress.experiment import Inputs, apply_steps, load_kept, make_gguf
from agentlab.compress.quantize import LOAD_TIME, quantize_model, reload_quantized
from agentlab.compress.report import fmt
from agentlab.core.errors import AgentlabError
from agentlab.core.harness.evaluate import per_item
from agentlab.core.harness.llamacpp import llama_lm
from agentlab.core.harness.lm import BASE, wrap_model
from agentlab.core.harness.score import score_lm
from agentlab.core.harness.tasks import BUNDLED, bundled_names
from agentlab.core.runs import atomic_write_json, read_json
from agentlab.core.vote import wilson_interval

LIMITS = (10, 200)  # questions per evaluate call, at least / at most
Z90 = 1.6448536269514722  # the normal quantile of a two-sided 90% interval
BOOTSTRAP = 2000  # resamples of a bootstrap interval (seeded: the same figures every time)
FOLDER = "agent_evals"


def eval_tasks(harness: dict[str, Any] | None) -> list[str]:
    """The tasks evaluate offers: the run's own lm-eval task first (when it measures with one), then the bundled
    question tasks (the persona style checks are not accuracy tasks)."""
    own = [harness["task"]] if harness else []
    return own + [n for n in bundled_names() if "_style_" not in n and n not in own]


def task_items(task: str) -> int | None:
    """How many items a bundled task has (None for another task: lm-eval knows when it loads it)."""
    import yaml

    path = BUNDLED / f"{task}.yaml"
    if not path.is_file():
        return None
    files = (yaml.safe_load(path.read_text(encoding="utf-8")).get("dataset_kwargs") or {}).get("data_files") or {}
    data = BUNDLED / str(next(iter(files.values()), ""))
    return sum(1 for line in data.read_text(encoding="utf-8").splitlines() if line.strip()) if data.is_file() else None


# --------------------------------------------------------------------------- statistics


def bootstrap(values: list[float], seed: int = 0) -> tuple[float, float]:
    """A 90% percentile bootstrap interval of the mean of ``values`` (seeded)."""
    if not values:
        return 0.0, 0.0
    rng, n = random.Random(seed), len(values)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(BOOTSTRAP))
    return means[int(0.05 * BOOTSTRAP)], means[int(0.95 * BOOTSTRAP) - 1]


def accuracy_interval(values: list[float]) -> tuple[float, float]:
    """90% interval of the mean item score: Wilson for 0/1 scores, else a bootstrap."""
    if all(v in (0.0, 1.0) for v in values):
        return wilson_interval(sum(values), len(values), Z90)
    return bootstrap(values)


def paired_difference(target: dict[str, float], base: dict[str, float]) -> dict[str, Any] | None:
    """The target minus the base on the items both scored: mean, 90% bootstrap interval, items better / worse."""
    common = sorted(set(target) & set(base), key=lambda k: (len(k), k))
    if not common:
        return None
    diffs = [target[k] - base[k] for k in common]
    low, high = bootstrap(diffs)
    return {"n": len(diffs), "diff": sum(diffs) / len(diffs), "low": low, "high": high,
            "better": sum(d > 0 for d in diffs), "worse": sum(d < 0 for d in diffs)}


# --------------------------------------------------------------------------- the evaluator


@dataclass
class Target:
    """What evaluate scores: ``id`` ("base" or the experiment's index), its label, and its experiment (None: the base
    model) with the record's steps (a kept GGUF's file)."""

    id: str
    label: str
    experiment: dict[str, Any] | None
    steps: dict[str, Any]
    key: str = ""  # its workspace key (its checkpoint's name)


class Evaluator:
    """Scores targets of one compress run on lm-eval tasks, cached in ``folder``."""

    def __init__(self, inputs: Inputs, folder: Path, checkpoint: Callable[[str], Path | None] | None = None):
        self.inputs, self.folder = inputs, folder
        self.checkpoint = checkpoint or (lambda key: None)  # an experiment's kept model by its workspace key
        self.tasks = eval_tasks(inputs.harness)

    # ------------------------------------------------------------------ the cache

    def _path(self, target: Target, task: str, limit: int) -> Path:
        what = {"experiment": target.experiment, "task": task, "limit": limit, "model": self.inputs.model,
                "harness": self.inputs.harness, "seed": self.inputs.seed, "dtype": self.inputs.measure.dtype}
        digest = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:10]
        return self.folder / f"{target.id}-{task}-{limit}-{digest}.json"

    def base_items(self, task: str) -> dict[str, float] | None:
        """The base model's per-item scores on ``task``, the largest cached evaluation of it (None: not scored)."""
        found = [read_json(path) for path in sorted(self.folder.glob(f"base-{task}-*.json"))]
        return max((f["items"] for f in found if isinstance(f, dict) and f.get("task") == task), key=len, default=None)

    def results(self, target: Target) -> list[dict[str, Any]]:
        """The cached evaluations of ``target``, with the paired difference against the base where the base was
        scored on the same items."""
        found = [read_json(path) for path in sorted(self.folder.glob(f"{target.id}-*.json"))]
        return [self._with_paired(target, f, cached=True) for f in found
                if isinstance(f, dict) and f.get("target") == target.id and f.get("experiment") == target.experiment]

    def _with_paired(self, target: Target, found: dict[str, Any], *, cached: bool) -> dict[str, Any]:
        """``found`` with ``cached`` and the paired difference against the base (None: the base is not scored)."""
        base = None if target.id == "base" else self.base_items(str(found.get("task")))
        return {**found, "cached": cached, "paired": paired_difference(found["items"], base) if base else None}

    def measured_n(self) -> int:
        """How many questions the run's own accuracy was measured on."""
        if self.inputs.harness is not None:
            return int(self.inputs.harness.get("limit") or 0) or 1
        return max(1, len(self.inputs.questions))

    # ------------------------------------------------------------------ scoring

    def evaluate(self, target: Target, task: str, limit: int) -> dict[str, Any]:
        """The result of scoring ``target`` on the first ``limit`` items of ``task`` (read back when cached):
        accuracy, its 90% interval, the item count, the seconds spent, and the paired difference with the base."""
        path = self._path(target, task, limit)
        found = read_json(path) if path.is_file() else None
        cached = isinstance(found, dict)
        if not isinstance(found, dict):
            start = time.perf_counter()
            items, metric, how = self._score(target, task, limit)
            values = list(items.values())
            if not values:
                raise AgentlabError(f"evaluate: {task} scored no item on {target.label}")
            low, high = accuracy_interval(values)
            found = {"target": target.id, "label": target.label, "experiment": target.experiment, "task": task,
                     "limit": limit, "metric": metric, "n": len(values), "accuracy": sum(values) / len(values),
                     "low": low, "high": high,
                     "model": how, "seconds": round(time.perf_counter() - start, 2), "items": items}
            atomic_write_json(path, found)
        return self._with_paired(target, found, cached=cached)

    def _score(self, target: Target, task: str, limit: int) -> tuple[dict[str, float], str, str]:
        """(doc_id -> the item's first metric, the metric's name, which model was scored)."""
        harness = self.inputs.harness or {}
        own = harness.get("task") == task
        include, chat = (harness.get("include", []), harness.get("chat_template", True)) if own else ([], True)
        work = self.folder / "work"
        lm, how, held = self._lm(target, work)
        try:
            scored = score_lm(lm, [task], include=include, limit=limit, chat_template=chat)
        except (RuntimeError, ValueError, OSError) as exc:
            raise AgentlabError(f"evaluate: scoring {target.label} on {task} failed: {str(exc).splitlines()[0]}"
                                ) from exc
        finally:
            del lm, held
            gc.collect()
            if self.inputs.device == "cuda":
                import torch

                torch.cuda.empty_cache()
            shutil.rmtree(work, ignore_errors=True)
        score = scored.main(BASE, task)
        values = per_item(scored.samples[BASE].get(task, []), score.metric, score.filter)
        return {str(k): v for k, v in values.items()}, score.metric, how

    def _lm(self, target: Target, work: Path) -> tuple[Any, str, Any]:
        """(an lm-eval LM over the target's model, how it was obtained, what must stay alive while it scores)."""
        exp = Experiment.model_validate(target.experiment) if target.experiment is not None else None
        quant = exp.quantize if exp is not None else None
        checkpoint = self.checkpoint(target.key) if target.key else None
        if checkpoint is not None:
            return self._reload(checkpoint, quant, work)
        kept = (target.steps.get("quantize") or {}).get("file")
        if quant is not None and quant.method == "gguf" and kept and Path(kept).is_file():
            return llama_lm(kept), f"the GGUF the experiment kept ({Path(kept).name})", None
        if exp is not None and exp.recover is not None:
            raise AgentlabError(
                f"experiment {target.id} ({target.label}) keeps no model: compress keeps only a GGUF experiment's "
                f"file, and building this one again means training its recovery ({exp.recover.method}, "
                f"{exp.recover.steps} steps) again, an experiment's cost. Evaluate the base, an experiment without "
                "recovery, or a GGUF experiment")
        work.mkdir(parents=True, exist_ok=True)
        try:
            model, tokenizer, _, _ = apply_steps(exp, self.inputs, work)
            if quant is not None and quant.method == "gguf":
                return llama_lm(make_gguf(model, tokenizer, quant.gguf_type, work)), "built again from its steps", None
        except (RuntimeError, ValueError, OSError) as exc:
            raise AgentlabError(f"evaluate: building {target.label} again failed: {str(exc).splitlines()[0]}"
                                ) from exc
        how = "the base model" if exp is None else "built again from its steps (seeded as the experiment was)"
        return wrap_model(model, tokenizer, batch_size=self.inputs.measure.accuracy_batch).lm, how, model

    def _reload(self, checkpoint: Path, quant: Any, work: Path) -> tuple[Any, str, Any]:
        """The model kept in the workspace's checkpoint: the GGUF as it is, the transformers one with its int8
        quantization applied again."""
        how = f"reloaded from the workspace's checkpoint ({checkpoint.parent.name[:8]})"
        if checkpoint.suffix == ".gguf":
            return llama_lm(str(checkpoint)), how, None
        from transformers import AutoTokenizer

        model = load_kept(checkpoint, self.inputs.device)
        tokenizer = AutoTokenizer.from_pretrained(self.inputs.model)
        if quant is not None and quant.method == "gguf":
            work.mkdir(parents=True, exist_ok=True)
            return llama_lm(make_gguf(model, tokenizer, quant.gguf_type, work)), how, None
        if quant is not None and quant.method in LOAD_TIME:  # bitsandbytes: applied while loading (CUDA)
            model, _ = reload_quantized(model, tokenizer, quant.method, work / "hf", self.inputs.device)
        elif quant is not None:
            quantize_model(model, quant.method)  # in place
        return wrap_model(model, tokenizer, batch_size=self.inputs.measure.accuracy_batch).lm, how, model


def describe(result: dict[str, Any]) -> str:
    """The tool's result as the agent reads it."""
    text = (f"{result['label']} on {result['task']} ({result['metric']}, {result['n']} items): accuracy "
            f"{result['accuracy']:.3f}, 90% interval [{result['low']:.3f}, {result['high']:.3f}]")
    paired = result.get("paired")
    if paired:
        verdict = ("a real drop" if paired["high"] < 0 else "a real gain" if paired["low"] > 0
                   else "not distinguishable from no change")
        text += (f"; against the base on the same {paired['n']} items: {paired['diff']:+.3f}, 90% interval "
                 f"[{paired['low']:+.3f}, {paired['high']:+.3f}] ({paired['better']} better, {paired['worse']} worse:"
                 f" {verdict})")
    elif result["target"] != "base":
        text += f"; the base is not scored on these items yet (evaluate base, {result['task']}, the same limit)"
    spent = f"cached: {result['seconds']} s when computed, 0 s now" if result.get("cached") else \
        f"{result['seconds']} s"
    return f"{text}. Model: {result['model']}. Time: {spent}."


def measured_line(record: dict[str, Any], n: int) -> str:
    """A record's measured accuracy with its 90% Wilson interval over the ``n`` questions it was measured on."""
    acc = (record.get("metrics") or {}).get("accuracy")
    if acc is None:
        return f"{record.get('label')}: no accuracy measured"
    low, high = wilson_interval(acc * n, n, Z90)
    return f"{record.get('label')}: accuracy {fmt(acc)} on {n} questions, 90% interval [{low:.3f}, {high:.3f}]"


__all__ = ["Evaluator", "Target", "accuracy_interval", "bootstrap", "describe", "eval_tasks", "measured_line",
           "paired_difference", "task_items", "LIMITS"]
