"""Scoring rows (the base model, each adapter) on lm-eval tasks through ``lm_eval.simple_evaluate``, and reading what
lm-eval returns: the metric table, per-sample log-likelihoods (the check that an adapter was applied), and paired
differences of each adapter against the base on the same items.

A row's output is lm-eval's own: ``results`` (the dict ``simple_evaluate`` returns, without the samples) and
``samples`` (task -> one record per item and filter, as ``lm_eval --log_samples`` writes them).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from agentlab.core.errors import AgentlabError
from agentlab.core.runs import atomic_write_text


class LoglikModel(Protocol):
    """What per-sample log-likelihoods need of a model: log P(target | prompt) under one adapter."""

    def loglikelihoods(self, pairs: Sequence[tuple[str, str]], adapter: str | None) -> list[float]: ...


class ScoredModel(LoglikModel, Protocol):
    """What scoring needs of a loaded model (``lm.py``'s ``HarnessModel``): lm-eval's ``lm`` over it, a block run as
    one adapter, and log-likelihoods under one."""

    lm: Any

    def active(self, adapter: str | None) -> contextlib.AbstractContextManager[None]: ...


if TYPE_CHECKING:
    from lm_eval.tasks import TaskManager

# A per-sample log-likelihood that moves less than this between base and adapter counts as unchanged.
LOGLIK_TOLERANCE = 1e-6
GENERATION_CHECK = 16  # items of a generation task whose target log-likelihood is compared (no scores come with it)


LM_EVAL_SEED = 1234  # lm-eval's default numpy, torch and few-shot seed


@dataclass(frozen=True)
class Settings:
    """What lm-eval is asked for every row (the same for all rows: comparisons are paired)."""

    limit: int | None = None
    num_fewshot: int | None = None
    chat_template: bool = False
    bootstrap_iters: int = 100000
    gen_kwargs: dict[str, Any] | None = None
    seed: int = 0
    samples: dict[str, list[int]] | None = None  # task -> the item indices to score (instead of limit)

    def seeds(self) -> dict[str, int]:
        """``simple_evaluate``'s seeds: lm-eval's numpy, torch and few-shot seeds default to 1234 whatever
        ``random_seed`` is, so seed 0 keeps lm-eval's defaults and another seed moves them all (the few-shot
        examples drawn included)."""
        moved = LM_EVAL_SEED + self.seed
        return {"random_seed": self.seed, "numpy_random_seed": moved, "torch_random_seed": moved,
                "fewshot_random_seed": moved}


def evaluate_row(hm: ScoredModel, adapter: str | None, tasks: Sequence[str], manager: TaskManager,
                 settings: Settings) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """``(results, samples)`` of ``tasks`` scored by lm-eval on ``hm`` as ``adapter`` (None: the base)."""
    from lm_eval import simple_evaluate

    _env_info_once()
    with hm.active(adapter), quiet_bars():
        out = simple_evaluate(
            model=hm.lm, tasks=list(tasks), task_manager=manager, limit=settings.limit, samples=settings.samples,
            num_fewshot=settings.num_fewshot, apply_chat_template=settings.chat_template, log_samples=True,
            bootstrap_iters=settings.bootstrap_iters, gen_kwargs=settings.gen_kwargs, **settings.seeds())
    if out is None:
        raise AgentlabError("lm-eval returned no results (not the main process)")
    samples = out.pop("samples", {})
    return out, samples


@contextlib.contextmanager
def quiet_bars() -> Iterator[None]:
    """No tqdm bars from lm-eval's request building or datasets' loading over the CLI's own progress (lm-eval's
    model bars are off already: ``AgentlabHFLM``)."""
    import functools

    import datasets
    import lm_eval.api.task as task_module

    original, shown = task_module.tqdm, datasets.is_progress_bar_enabled()
    task_module.tqdm = functools.partial(original, disable=True)
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        task_module.tqdm = original
        if shown:
            datasets.enable_progress_bars()


def _env_info_once() -> None:
    """lm-eval adds the environment (``torch.utils.collect_env``: pip and nvidia-smi in subprocesses, which take
    seconds: docs/design/measurements.md) and the git commit of the working directory to every ``simple_evaluate``'s
    results; one process has one of each, so they are collected once and copied after (and git's "not a git
    repository" stays off the terminal)."""
    import subprocess

    import lm_eval.evaluator as evaluator

    if getattr(evaluator.add_env_info, "agentlab_once", False):
        return
    original, cache = evaluator.add_env_info, {}  # type: tuple[Any, dict[str, Any]]
    commit: list[str | None] = []

    def add_env_info(storage: dict[str, Any]) -> None:
        if not cache:
            original(cache)
        storage.update(cache)

    def get_git_commit_hash() -> str | None:
        if not commit:
            try:
                commit.append(subprocess.check_output(["git", "describe", "--always"], stderr=subprocess.DEVNULL)
                              .decode().strip())
            except (subprocess.CalledProcessError, OSError):
                commit.append(None)
        return commit[0]

    add_env_info.agentlab_once = True  # type: ignore[attr-defined]
    evaluator.add_env_info = add_env_info
    evaluator.get_git_commit_hash = get_git_commit_hash


def save_row(folder: Path, results: dict[str, Any], samples: dict[str, list[dict[str, Any]]]) -> None:
    """lm-eval's files of one row: ``samples_<task>.jsonl`` first, ``results.json`` last (its presence marks the row
    done for ``--resume``), each written atomically."""
    from lm_eval.utils import handle_non_serializable

    folder.mkdir(parents=True, exist_ok=True)
    for task, rows in samples.items():
        atomic_write_text(folder / f"samples_{task}.jsonl", "".join(
            json.dumps(row, default=handle_non_serializable, ensure_ascii=False) + "\n" for row in rows))
    atomic_write_text(folder / "results.json",
                      json.dumps(results, indent=2, default=handle_non_serializable, ensure_ascii=False) + "\n")


def load_row(folder: Path) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]] | None:
    """A row saved by :func:`save_row`, or None when it is not complete. A results.json that is not a file (a
    folder), or a row folder that is a file, is an ``OSError`` as a damaged one is a ``ValueError``: taken for "not
    scored yet", the row was scored again and its save failed (exit 1) after the model loaded."""
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(20, "not a folder", str(folder))
    if not (folder / "results.json").exists():
        return None
    results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    samples = {}
    for path in sorted(folder.glob("samples_*.jsonl")):
        samples[path.stem.removeprefix("samples_")] = [json.loads(line) for line in
                                                       path.read_text(encoding="utf-8").split("\n") if line.strip()]
    return results, samples


def missing_samples(results: dict[str, Any], samples: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The tasks of a saved row whose samples are missing or fewer than the items it scored (``n-samples``' effective
    count; without it, none): a ``samples_<task>.jsonl`` deleted or emptied since. Kept, such a row would drop out of
    the applied check and the paired comparison without a word."""
    counts = results.get("n-samples")
    if isinstance(counts, dict) and counts:
        wanted = {task: n.get("effective") if isinstance(n, dict) else None for task, n in counts.items()}
    else:  # no counts: each task (not group) of the table needs some samples
        groups = set(results.get("groups") or {})
        wanted = {task: None for task in results.get("results") or {} if task not in groups}
    out = []
    for task, n in wanted.items():
        items = len(_one_filter(samples.get(task) or []))
        if items == 0 or (isinstance(n, int) and not isinstance(n, bool) and items < n):
            out.append(task)
    return out


# ------------------------------------------------------------------------------------------ the metric table


@dataclass(frozen=True)
class Score:
    task: str
    metric: str  # e.g. acc, exact_match
    filter: str  # lm-eval's filter name (none, answer, ...)
    value: float
    stderr: float | None
    higher_is_better: bool | None

    @property
    def key(self) -> str:
        return f"{self.task}/{self.metric}" + ("" if self.filter == "none" else f",{self.filter}")

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "metric": self.metric, "filter": self.filter, "value": self.value,
                "stderr": self.stderr, "higher_is_better": self.higher_is_better}


def scores(results: dict[str, Any]) -> list[Score]:
    """Every metric of every task (not groups) in lm-eval's ``results``, as ``metric,filter`` keys say."""
    out = []
    better = results.get("higher_is_better", {})
    groups = set(results.get("groups", {}))
    for task, values in results.get("results", {}).items():
        if task in groups:
            continue
        for key, value in values.items():
            metric, _, filt = key.partition(",")
            if not filt or metric.endswith("_stderr") or not _number(value):
                continue
            stderr = values.get(f"{metric}_stderr,{filt}")
            out.append(Score(task, metric, filt, float(value), float(stderr) if _number(stderr) else None,
                             better.get(task, {}).get(metric)))
    return out


def _number(value: Any) -> bool:
    try:
        return not isinstance(value, bool) and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


# ------------------------------------------------------------------------------- was the adapter applied?


def sample_logliks(sample: dict[str, Any]) -> list[float] | None:
    """The log-likelihoods of one loglikelihood / multiple-choice / rolling sample (None for a generation)."""
    values: list[float] = []

    def walk(value: Any) -> None:
        if isinstance(value, bool) or value is None:
            return
        if isinstance(value, int | float):
            values.append(float(value))
        elif isinstance(value, list | tuple):
            first = value[0] if value else None
            if len(value) == 2 and _number(first) and isinstance(value[1], bool):  # (loglik, is_greedy)
                values.append(float(first))  # type: ignore[arg-type]
            else:
                for v in value:
                    walk(v)

    resps = sample.get("resps")
    if any(isinstance(r, str) for r in _flat(resps)):
        return None
    walk(resps)
    return values or None


def _flat(value: Any) -> list[Any]:
    if isinstance(value, list | tuple):
        return [x for v in value for x in _flat(v)]
    return [value]


def _context(sample: dict[str, Any]) -> str | None:
    args = sample.get("arguments")
    if isinstance(args, dict):  # {"gen_args_0": {"arg_0": context, "arg_1": ...}}
        first = next(iter(args.values()), None)
        return first.get("arg_0") if isinstance(first, dict) else None
    if isinstance(args, list | tuple) and args:
        first = args[0]
        if isinstance(first, list | tuple) and first and isinstance(first[0], str):
            return first[0]
    return None


def logliks_of(hm: LoglikModel, samples: dict[str, list[dict[str, Any]]], adapter: str | None
               ) -> dict[str, list[float]]:
    """Per task, the per-sample log-likelihoods of a row: from lm-eval's samples for log-likelihood tasks; for
    generation tasks (whose samples carry text), log P(target | prompt) of the first items, computed now through
    ``hm.loglikelihoods(pairs, adapter)``."""
    out: dict[str, list[float]] = {}
    for task, rows in samples.items():
        firsts = _one_filter(rows)
        values = [sample_logliks(s) for s in firsts]
        if values and all(v is not None for v in values):
            out[task] = [x for v in values for x in v]  # type: ignore[union-attr]
            continue
        pairs = [(c, " " + str(s.get("target"))) for s in firsts[:GENERATION_CHECK]
                 if (c := _context(s)) is not None]
        out[task] = hm.loglikelihoods(pairs, adapter)
    return out


def _one_filter(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One sample per item: a task with several filters repeats each item once per filter."""
    seen: set[Any] = set()
    out = []
    for row in rows:
        if row.get("doc_id") not in seen:
            seen.add(row.get("doc_id"))
            out.append(row)
    return out


def check_applied(name: str, base: dict[str, list[float]], adapter: dict[str, list[float]]) -> dict[str, float]:
    """Per task, the largest change of a per-sample log-likelihood between the base and adapter ``name``;
    ``AgentlabError`` when no task's log-likelihoods moved: the adapter was not applied, and its numbers are the
    base's, not a score."""
    changes = {}
    for task, values in adapter.items():
        ref = base.get(task)
        if ref is None or len(ref) != len(values) or not values:
            continue
        changes[task] = max(abs(a - b) for a, b in zip(values, ref, strict=True))
    if not changes:  # nothing compared is no evidence the adapter was applied: never a silent pass
        raise AgentlabError(f"adapter {name}: no task's per-sample log-likelihoods could be compared with the base "
                            f"model's (adapter: {_counts(adapter)}; base: {_counts(base)}); its numbers are not "
                            "reported",
                            hint="check the samples_<task>.jsonl of both rows in the run folder's lm-eval/; "
                            "if they are complete, report this with the run folder")
    if max(changes.values()) < LOGLIK_TOLERANCE:
        raise AgentlabError(f"adapter {name} was not applied: its per-sample log-likelihoods equal the base "
                            f"model's on {', '.join(changes)}; its numbers are not reported",
                            hint="this is a bug in how the adapter reached lm-eval; report it with the run folder")
    return changes


def _counts(logliks: dict[str, list[float]]) -> str:
    return ", ".join(f"{task} {len(values)}" for task, values in logliks.items()) or "no tasks"


# -------------------------------------------------------------------------------------- paired comparisons


@dataclass(frozen=True)
class Paired:
    """An adapter minus the base on the same items: mean difference, its standard error, and the item counts."""

    task: str
    metric: str
    filter: str
    n: int
    diff: float
    stderr: float | None
    better: int  # items where the adapter scored higher
    worse: int

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "metric": self.metric, "filter": self.filter, "n": self.n, "diff": self.diff,
                "stderr": self.stderr, "better": self.better, "worse": self.worse}


def paired(base: dict[str, list[dict[str, Any]]], other: dict[str, list[dict[str, Any]]],
           metrics: Sequence[Score]) -> list[Paired]:
    """Per metric of ``metrics``, the paired difference other - base over the items both rows scored (matched by
    doc_id and filter); metrics without a number per item (corpus-level ones such as BLEU) are left out."""
    out = []
    for score in metrics:
        a = per_item(base.get(score.task, []), score.metric, score.filter)
        b = per_item(other.get(score.task, []), score.metric, score.filter)
        common = sorted(set(a) & set(b), key=str)
        if not common:
            continue
        diffs = [b[k] - a[k] for k in common]
        n = len(diffs)
        mean = sum(diffs) / n
        stderr = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1) / n) if n > 1 else None
        out.append(Paired(score.task, score.metric, score.filter, n, mean, stderr, sum(d > 0 for d in diffs),
                          sum(d < 0 for d in diffs)))
    return out


def per_item(rows: list[dict[str, Any]], metric: str, filt: str) -> dict[Any, float]:
    """doc_id -> the value of ``metric`` (under filter ``filt``) of each sample that has a number for it."""
    out = {}
    for row in rows:
        value = row.get(metric)
        if row.get("filter", "none") == filt and value is not None and _number(value):
            out[row.get("doc_id")] = float(value)
    return out
