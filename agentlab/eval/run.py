"""`agentlab eval`: lm-evaluation-harness on a model and its adapters, offline, each adapter really applied.

The model loads once (:mod:`agentlab.core.harness.lm`); lm-eval's HF backend gets the ``PeftModel`` itself and the
adapters are switched in place between rows. Before any folder exists, the tasks are loaded (a task whose data is
not on disk stops here, exit 2) and each adapter must change the logits on a probe (one that changes nothing stops
here too). Each row is one ``lm_eval.simple_evaluate`` call on the same items; after scoring, each adapter's
per-sample log-likelihoods must differ from the base's (else the run fails: those numbers would be the base's).

Run folder (``runs/eval/<timestamp>-<name>/``)::

    config.yaml, run.json, events.jsonl   as every command (events: probe, one ``row`` per model row scored)
    lm-eval/<row>/results.json            lm-eval's own results of the row (``base``, then each adapter by name)
    lm-eval/<row>/samples_<task>.jsonl    lm-eval's per-item samples (prompt, replies, log-likelihoods, metrics)
    results.json, report.md, scores.png   the models x tasks table, each adapter minus the base (paired), the plot

``--resume`` keeps the rows whose ``results.json`` exists and scores the others (and, saying so, a row whose
``samples_<task>.jsonl`` are missing or emptied since); a row scored with other settings (``--limit``, ``--tasks``,
...) or a damaged file stops it (exit 2).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentlab.core.config import absolute_path, absolute_paths, load_config
from agentlab.core.errors import UsageError
from agentlab.core.harness import (
    BASE,
    Settings,
    check_applied,
    check_probe,
    load_harness_model,
    load_tasks,
    paired,
    scores,
    task_manager,
)
from agentlab.core.harness.evaluate import load_row, missing_samples, save_row
from agentlab.core.models.adapters import read_scored
from agentlab.core.progress import NullProgress, Progress
from agentlab.core.runs import RunDir, read_events, run_in_folder
from agentlab.eval.checks import check_loaded, check_yamls
from agentlab.eval.config import EvalConfig
from agentlab.eval.prepared import Prepared
from agentlab.eval.report import render_report, scores_plot
from agentlab.eval.served import prepare_served

if TYPE_CHECKING:

    pass

log = logging.getLogger(__name__)
LM_EVAL = "lm-eval"


def row_names(adapters: list[Path]) -> dict[str, Path]:
    """Each adapter's row name: its folder's name, made unique (and never ``base``)."""
    out: dict[str, Path] = {}
    for path in adapters:
        name = Path(path).name or "adapter"
        unique, n = name, 2
        while unique in out or unique == BASE:
            unique, n = f"{name}-{n}", n + 1
        out[unique] = Path(path)
    return out


# Why `--backend lighteval` is refused, and what to run instead (docs/commands/eval.md#lighteval has the evidence).
LIGHTEVAL_REFUSAL = ("--backend lighteval: LightEval is not installed with agentlab (not one of its dependencies), "
                     "and LightEval 0.13.0 runs offline only with its task registry patched and xxhash<4")
LIGHTEVAL_NEXT = ("score the same items with LightEval beside lm-eval in LightEval's own venv: "
                  "python benchmarks/peers/lighteval_vs_lmeval.py --model DIR (benchmarks/peers/lighteval/README.md)")


def prepare(cfg: EvalConfig, *, load_model: bool = True) -> dict[str, Any]:
    """Everything checked before a run folder exists (exit 2 on bad input): the tasks and their data, the adapter
    folders, the model (loaded once, with every adapter), and the probe of each adapter."""
    if cfg.backend == "lighteval":
        raise UsageError(LIGHTEVAL_REFUSAL, hint=LIGHTEVAL_NEXT)
    manager = task_manager(cfg.include_path, names=cfg.tasks)
    check_yamls(manager, cfg.tasks)
    check_loaded(manager, load_tasks(manager, cfg.tasks), cfg.num_fewshot)
    if cfg.base_url is not None:
        return {"prepared": prepare_served(cfg, manager)}
    adapters = row_names(cfg.adapters)
    read_scored(adapters.values())
    prepared = Prepared({BASE: None, **{name: name for name in adapters}}, manager, adapters)
    if load_model:
        prepared.harness = load_harness_model(cfg.model, adapters, device=cfg.device, dtype=cfg.dtype,
                                              batch_size=cfg.batch_size)
        prepared.probe = prepared.harness.probe(cfg.probe)
        check_probe(prepared.probe, cfg.min_logit_change, adapters)
        prepared.chat_template = prepared.harness.uses_chat_template(cfg.chat_template)
    return {"prepared": prepared}


def run(cfg: EvalConfig, run_dir: RunDir, *, prepared: Prepared | None = None, progress: Progress | None = None,
        announce: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Score every row (resuming the finished ones), check each adapter was applied, write the report; returns
    results.json's content."""
    prepared = prepared or prepare(cfg)["prepared"]
    announce = announce or log.info
    progress = progress or NullProgress()
    backend = prepared.served if prepared.served is not None else prepared.harness
    assert backend is not None, "prepare loads the local model or the served backend"
    if prepared.probe:
        run_dir.event("probe", changes=prepared.probe)
        announce("probe: " + ", ".join(f"{n} changes the logits by up to {c:.3g}" for n, c in prepared.probe.items()))
    settings = Settings(limit=cfg.limit, num_fewshot=cfg.num_fewshot, chat_template=prepared.chat_template,
                        bootstrap_iters=cfg.bootstrap_iters, seed=cfg.seed)
    bar = progress.task("eval", total=len(prepared.rows))
    table, samples, logliks, seconds = {}, {}, {}, {}
    asked = {row: row_settings(cfg, prepared.adapters.get(row)) for row in prepared.rows}
    # every finished row checked before any is scored: a refusal never follows new scoring
    kept = {row: _kept_row(run_dir.file(LM_EVAL, row), asked[row], announce) for row in prepared.rows}
    for row, adapter in prepared.rows.items():
        folder = run_dir.file(LM_EVAL, row)
        done = kept[row]
        if done is not None:
            announce(f"{row}: scored earlier, kept")
            results, samples[row] = done
            kept_seconds = _kept_seconds(results, run_dir, row)
            if kept_seconds is not None:
                seconds[row] = kept_seconds
        else:
            bar.update(description=f"{row}: {', '.join(cfg.tasks)}")
            start = time.perf_counter()
            results, samples[row] = backend.evaluate(adapter, cfg.tasks, prepared.manager, settings)
            seconds[row] = round(time.perf_counter() - start, 2)
            save_row(folder, {**results, SETTINGS_KEY: asked[row], SECONDS_KEY: seconds[row]}, samples[row])
            run_dir.event("row", row=row, adapter=adapter, seconds=seconds[row],
                          scores=[s.to_dict() for s in scores(results)])
        table[row] = scores(results)
        if done is None:  # each row's scores as it ends, not only in the table at the end
            announce(f"{row} ({seconds[row]:.1f} s): " + ", ".join(
                f"{s.key} {s.value:.3f}" + ("" if s.stderr is None else f" ± {s.stderr:.3f}") for s in table[row]))
        logliks[row] = backend.logliks(samples[row], adapter)
        bar.advance()
    applied = {name: check_applied(name, logliks[BASE], logliks[name]) for name in prepared.rows if name != BASE}
    comparisons = {name: paired(samples[BASE], samples[name], table[BASE]) for name in applied}
    out = {
        "model": cfg.model, "tasks": cfg.tasks, "limit": cfg.limit, "num_fewshot": cfg.num_fewshot,
        "chat_template": prepared.chat_template, "adapters": {n: str(p) for n, p in prepared.adapters.items()},
        "rows": {row: [s.to_dict() for s in table[row]] for row in prepared.rows},
        "probe": prepared.probe, "applied": applied,
        "paired": {name: [p.to_dict() for p in c] for name, c in comparisons.items()},
        "seconds": seconds, "lm_eval_version": _lm_eval_version(),
    }
    plot = scores_plot(out, run_dir.file("scores.png"))
    run_dir.save_results(out)
    run_dir.save_report(render_report(cfg, out, plot is not None))
    return out


# The settings a row was scored with, kept in its results.json: a resumed run keeps a row only when they are the
# same (``--resume --limit 5`` on rows scored at 10 would mix two tables under one limit).
SETTINGS_KEY = "agentlab_settings"


# How long a row took to score, kept beside its settings: results.json's "seconds" has every row's, kept ones too.
SECONDS_KEY = "agentlab_seconds"


def _kept_seconds(results: dict[str, Any], run_dir: RunDir, row: str) -> float | None:
    """The seconds a kept row took when it was scored: its results.json's, else (a row saved before they were kept
    there) its last ``row`` event's; None when neither has them."""
    saved = results.get(SECONDS_KEY)
    if isinstance(saved, int | float) and not isinstance(saved, bool):
        return float(saved)
    found = None
    for event in read_events(run_dir.path, "row"):
        if event.get("row") == row and isinstance(event.get("seconds"), int | float):
            found = float(event["seconds"])
    return found


def row_settings(cfg: EvalConfig, adapter: Path | None) -> dict[str, Any]:
    """What decides a row's scores: the model, the adapter and the fingerprint of its weights (evolve's of its seeds:
    a folder trained again in place is another adapter), the tasks and where they come from, the items, the weights'
    device and dtype. Paths as the run's config.yaml holds them (absolute), which a resume reads."""
    return {"model": absolute_paths(cfg).model, "adapter": None if adapter is None else str(absolute_path(adapter)),
            WEIGHTS_KEY: None if adapter is None or cfg.base_url is not None else _fingerprint(adapter),
            "tasks": list(cfg.tasks), "include_path": [str(absolute_path(p)) for p in cfg.include_path],
            "limit": cfg.limit,
            "num_fewshot": cfg.num_fewshot, "chat_template": cfg.chat_template, "seed": cfg.seed,
            "base_url": cfg.base_url, "device": cfg.device, "dtype": cfg.dtype}


# The row's adapter_weights: the fingerprint of the adapter's weights it was scored with (a row saved before they were
# kept has none, and is compared without it).
WEIGHTS_KEY = "adapter_weights"


def _fingerprint(adapter: Path) -> str | None:
    from agentlab.core.models.adapters import adapter_fingerprint

    return adapter_fingerprint(Path(adapter))


def check_resume(cfg: EvalConfig, folder: Path) -> None:
    """A resume of the run in ``folder`` refused (``UsageError``) before the model loads when a finished row was
    scored with other settings than ``cfg``'s, its saved files are damaged, or ``cfg``'s adapters leave out one of
    the run's (a finished row, or one not scored yet: ``--adapter`` names the whole list, so a resume naming one
    adapter would end the run "completed" without the others); the run is left as it was."""
    if cfg.base_url is not None:  # served rows go by the adapters' served names
        rows: dict[str, Path | None] = {BASE: None, **{Path(a).name: None for a in cfg.adapters}}
    else:
        rows = {BASE: None, **row_names(cfg.adapters)}
    for row, adapter in rows.items():
        _kept_row(folder / LM_EVAL / row, row_settings(cfg, adapter))
    dropped = sorted(d.name for d in (folder / LM_EVAL).glob("*") if d.name not in rows
                     and (d / "results.json").is_file())
    hint = ("a resume may add adapters, not drop them: pass every adapter of the run (--adapter A --adapter B ...), "
            "or start a new run for another set")
    if dropped:  # a resume's --adapter replaces the list: a finished row would vanish from the report
        raise UsageError(f"{folder}: this resume's adapters leave out the finished row(s) {', '.join(dropped)}",
                         hint=hint)
    # one not scored yet would vanish too: the run would end "completed" with config.yaml rewritten without it

    def adapter_names(c: EvalConfig) -> list[str]:  # served adapters are names; local ones folders, kept absolute
        return [a.name if c.base_url is not None else str(absolute_path(a)) for a in c.adapters]

    asked = set(adapter_names(cfg))
    left_out = [a for a in adapter_names(load_config(folder / "config.yaml", EvalConfig)) if a not in asked]
    if left_out:
        raise UsageError(f"{folder}: this resume's adapters leave out {', '.join(left_out)} of the run's adapters "
                         "(not scored yet): the run would end without them", hint=hint)


def _kept_row(folder: Path, asked: dict[str, Any], announce: Callable[[str], None] | None = None
              ) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]] | None:
    """A finished row of a resumed run, or None when it has no results.json yet, or when its samples no longer cover
    its tasks (a samples file deleted or emptied: kept, the row would drop out of the applied check and the paired
    comparison; it is scored again, ``announce`` told why). A damaged file, or a row scored with other settings than
    these, is a usage error naming the file (the row is never silently re-used)."""
    try:
        done = load_row(folder)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"{folder}: a saved row cannot be read ({type(exc).__name__}: {str(exc)[:120]})",
                         hint=f"delete the folder {folder} and run --resume again to score that row anew") from None
    if done is None:
        return None
    saved = done[0].get(SETTINGS_KEY) if isinstance(done[0], dict) else None
    if not (isinstance(saved, dict) and isinstance(done[0].get("results"), dict) and done[0]["results"]):
        raise UsageError(f"{folder / 'results.json'}: not a row this agentlab can keep (lm-eval's results with the "
                         f"settings that scored them, {SETTINGS_KEY}; an older agentlab saved none)",
                         hint=f"delete the folder {folder} and run --resume again to score that row anew")
    model = saved.get("model")
    if isinstance(model, str) and not Path(model).is_absolute():  # a row saved before models were kept absolute
        saved = {**saved, "model": absolute_paths(EvalConfig(model=model, base_url=saved.get("base_url"))).model}
    changed = [f"{key} {saved[key]!r} -> {asked[key]!r}" for key in asked
               if key in saved and saved[key] != asked[key] and key != WEIGHTS_KEY]
    old, now = saved.get(WEIGHTS_KEY), asked[WEIGHTS_KEY]
    if not changed and None not in (old, now) and old != now:
        raise UsageError(f"{folder.parent.parent}: the row {folder.name} was scored with other weights of the adapter "
                         f"{asked['adapter']} (changed on disk since: the fingerprint of its weights "
                         f"{str(old)[:12]} -> {str(now)[:12]})",
                         hint="put back the adapter the row was scored with, or delete the folder "
                         f"{folder} and run --resume again to score that row anew")
    if changed:
        raise UsageError(f"{folder.parent.parent}: the row {folder.name} was scored with other settings than this "
                         f"resume asks ({'; '.join(changed)})",
                         hint="resume without changing them, or start a new run with the new settings")
    missing = missing_samples(*done)
    if missing:
        if announce is not None:
            announce(f"{folder.name}: scored earlier, but its samples are missing or incomplete "
                     f"({', '.join(f'samples_{task}.jsonl' for task in missing)} in {folder}): scored again")
        return None
    return done


def _lm_eval_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lm_eval")
    except PackageNotFoundError:
        return None


def run_eval(model: str = "smollm2-135m", tasks: list[str] | None = None, adapters: list[str | Path] | None = None,
             *, out: str | Path | None = None, **settings: Any) -> dict[str, Any]:
    """One call for notebooks: ``agentlab eval`` on ``model`` and ``adapters``, into a new run folder (or ``out``);
    ``settings`` are other :class:`EvalConfig` fields (``limit=20``, ``include_path=["my_tasks"]``, ...). Returns
    results.json's content. A bad value is a ``ConfigError`` naming the field, as the command's options give."""
    given = {"model": model, "adapters": adapters or [], **({"tasks": tasks} if tasks else {}), **settings}
    cfg = load_config(None, EvalConfig, base=given, schema="eval")
    result, _ = run_in_folder("eval", cfg, run, inputs=prepare(cfg), out=out)
    return result
