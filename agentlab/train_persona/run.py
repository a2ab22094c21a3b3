"""`agentlab train-persona`: a persona LoRA (QLoRA on CUDA) on chat data, with TRL's SFTTrainer.

Run folder (``runs/train-persona/<timestamp>-<name>/``)::

    config.yaml, run.json, events.jsonl   as every command (events: one ``train_log`` per logged step, checkpoints,
                                          and ``resume``: the checkpoint a resumed session started from)
    checkpoints/checkpoint-N/             what ``--resume`` continues from (the last two are kept)
    trainer_state.json, loss.png          the trainer's log history and the loss curve
    results.json, report.md               final loss, tokens seen, tokens/s, which tokens carried loss

The adapter goes to ``out`` (default: the run folder's ``adapter/``): ``adapter_config.json`` and
``adapter_model.safetensors`` that plain PEFT loads, and a README.md card (base model, data file and its sha256,
rows, hyper-parameters, final loss, tokens seen). It is written when training ends, under a temporary name and
renamed into place, so an interrupted run never leaves a half-written adapter.

Ctrl-C or SIGTERM while training saves a checkpoint at the end of the step in progress before the run stops
(``resume_training``); a second one stops at once. A resume continues from the newest complete checkpoint, so the
steps a session killed otherwise (``kill -9``, a second Ctrl-C) took past it are trained, and logged, again:
events.jsonl then holds their ``train_log`` entries twice, the second ones after the ``resume`` event (of the entries
of one step, the last is the one the adapter holds); a resume that finds no checkpoint says it starts from step 0.
results.json describes the whole run (steps, tokens, the mean loss over every step); its seconds and tokens/s are
the last session's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentlab.core.config import absolute_paths
from agentlab.core.errors import AgentlabError, InputError, UsageError
from agentlab.core.files import cannot_write, check_replace, counted, ordinary_modes, rename_into_place, replace_problem
from agentlab.core.gpu import gpu_usage, peak_rss_bytes
from agentlab.core.harness import ScoreModelsSettings, load_tasks, score_models, task_manager
from agentlab.core.harness.evaluate import save_row
from agentlab.core.models.builtin import upstream_id
from agentlab.core.models.device import resolve_device_dtype, seed_everything, wants_4bit
from agentlab.core.models.load import load_causal_lm
from agentlab.core.progress import NullProgress, Progress
from agentlab.core.runs import (
    DATA_KEY,
    RunDir,
    check_data_unchanged,
    moved_data,
    read_events,
    run_info,
    say_moved_data,
    settings_changes,
)
from agentlab.core.tracking import NullTracker, Tracker, check_tracking, open_tracker
from agentlab.core.train.chat import training_chat_template
from agentlab.core.train.dist import FollowerRun
from agentlab.core.train.model import check_target_modules, lora_config
from agentlab.train_persona.config import TrainPersonaConfig
from agentlab.train_persona.data import (
    ChatData,
    check_base_model,
    load_chat_jsonl,
    load_tokenizer,
    measure,
    meta_model,
)
from agentlab.train_persona.report import adapter_card, eval_lines, loss_line, loss_plot, render_report

log = logging.getLogger(__name__)
CHECKPOINTS = "checkpoints"


def prepare(cfg: TrainPersonaConfig, *, resuming: bool = False, run_dir: Path | None = None) -> dict[str, Any]:
    """Everything checked before a run folder exists or a model loads: the data (every line), the output folder
    (and, given ``run_dir``, the run folder ``--run-dir`` names, that the two do not overlap), the base model
    (resolved, its files' headers checked; its tokenizer alone measures the conversations, its modules built without
    weights check a list of LoRA target modules), the device and the MLflow URI."""
    check_out_beside_run(cfg.out, run_dir)
    data = load_chat_jsonl(cfg.data.path)
    out = cfg.out
    if out is not None:
        check_out_writable(out, resuming=resuming)
    if out is not None and not resuming:  # a resume's --out: check_resume
        check_replace(out, cfg.force, "adapter_config.json", "an adapter folder", when=" when training ends")
    resolve_device_dtype(cfg.train.device, cfg.train.dtype)
    base = check_base_model(cfg.base_model)
    tokenizer = load_tokenizer(base)
    marked = training_chat_template(tokenizer).template if cfg.train.assistant_only_loss else None  # as trained
    measure(data, tokenizer, cfg.data.max_length, cfg.data.truncate, marked)
    if not isinstance(cfg.lora.target_modules, str):  # build_sft_trainer checks them again on the loaded model
        model = meta_model(base)
        if model is not None:
            check_target_modules(model, cfg.lora.target_modules)
    check_tracking(cfg.mlflow)
    if cfg.eval.tasks:  # unknown tasks or missing data stop the run before it trains
        load_tasks(task_manager(cfg.eval.include_path, names=cfg.eval.tasks), cfg.eval.tasks)
    return {"data": data}


# What a run folder holds of its own: an adapter written over one of these (or over the folder) destroys the run.
RUN_FILES = ("config.yaml", "run.json", "events.jsonl", "results.json", "report.md", "loss.png", "trainer_state.json",
             CHECKPOINTS, "lm-eval")


def check_out_beside_run(out: Path | None, run_dir: Path | None, *, given: str = "--run-dir",
                         resuming: bool = False) -> None:
    """Refuse (``UsageError``, before any model loads) an adapter folder ``out`` that is the run folder, holds it,
    or is one of the run's own files or folders: the adapter is saved by renaming its folder into place, so the run
    folder (or its checkpoints) would be moved aside and deleted, or, without ``--force``, the whole training ends in
    "appeared while training" every time. A folder inside the run folder is fine: the default is its ``adapter/``."""
    if out is None or run_dir is None:
        return
    adapter, run = Path(out).resolve(), Path(run_dir).resolve()
    if run.is_relative_to(adapter):
        what = "is the run folder" if run == adapter else "holds the run folder"
    elif adapter.parent == run and adapter.name in RUN_FILES:
        what = f"is the run folder's own {adapter.name}"
    else:
        return
    named = f"{given} {run_dir}" if given else str(run_dir)
    raise UsageError(f"--out {out}: {what} ({named}); saving the adapter there would replace the run's files; "
                     "nothing was written",
                     hint="the run cannot save its adapter there: resume it with another --out, or start a new "
                     "run" if resuming else "choose another --out (by default the adapter goes to the run folder's "
                     "adapter/), or another --run-dir")


def check_out_writable(out: Path, *, resuming: bool = False) -> None:
    """Refuse (``UsageError``, before the run folder exists or a model loads) an adapter folder whose parent cannot
    be written (``cannot_write``: ``/proc``, a read-only disk): the adapter is written beside ``out`` when training
    ends, and a run there trained for nothing and failed on that temporary folder (exit 1)."""
    unwritable = cannot_write(Path(out).absolute().parent)
    if unwritable is not None:
        raise UsageError(f"--out {out}: cannot write in {unwritable[0]} ({unwritable[1]}); nothing was written",
                         hint="resume with --out DIR in a folder you can write to (a resume may change where the "
                         "adapter goes)" if resuming else "give --out a folder you can write to")


def check_resume(cfg: TrainPersonaConfig, folder: Path) -> None:
    """Refuse (``UsageError``, nothing written) a resume whose adapter folder overlaps the run folder
    (``check_out_beside_run``: a run started so before this check existed fails the same way each time), one whose
    budget or settings its finished work cannot honour (``_check_budget``), and one whose data file no longer holds
    what the run started on: the same ``data.path`` with other content would mix two data sets in one adapter
    (``core.runs.check_data_unchanged``: the run's first ``data`` event holds the file's sha256), as a new
    ``data.path`` with other content would (``core.runs.check_resume_settings``); a data file that is gone is
    ``InputError`` asking for it back. A new ``data.path`` holding the data the run started on (``core.runs.
    moved_data``: a run folder copied to another machine, its data elsewhere) is taken, said in one line
    (``core.runs.say_moved_data``, as nas's), and the run keeps the new path in its config.yaml."""
    check_out_beside_run(cfg.out, folder, given="--resume", resuming=True)
    _check_not_diverged(folder)
    if not Path(cfg.data.path).exists():  # not "a shipped data name": a resume trains on the run's own data
        raise InputError(f"{cfg.data.path}: the chat data file this run trains on is gone; nothing was written",
                         hint="put the file back at that path (the same content) and resume again, or resume with "
                         "--data at the path it is now, or start a new run")
    kept = moved_data(folder, cfg)
    _check_budget(cfg, folder, moved=kept is not None)
    if cfg.out is not None and not _saved_at(folder, cfg.out):  # a new --out (or one the run never wrote to)
        check_replace(cfg.out, cfg.force, "adapter_config.json", "an adapter folder", when=" when training ends")
    check_data_unchanged(folder, cfg.data.path)
    if kept is not None:  # once nothing refuses the resume
        say_moved_data(kept, cfg.data.path)


def _check_not_diverged(folder: Path) -> None:
    """Refuse (``UsageError``, before the model loads) a resume of a run that diverged (``check_finite`` recorded a
    ``diverged`` event): its checkpoints hold NaN or inf weights and a resume keeps its learning rate, so it loaded
    the model, said the newest checkpoint "holds the whole budget" and failed the same way again."""
    diverged = next(read_events(folder, "diverged"), None)
    if diverged is None:
        return
    step, lr = diverged.get("step"), diverged.get("learning_rate")
    when = f" at step {step}" if isinstance(step, int) else ""
    rate = f" (learning rate {lr:g})" if isinstance(lr, (int, float)) else ""
    raise UsageError(f"{folder}: this run diverged{when}{rate}: its checkpoints hold NaN or inf weights and a resume "
                     "keeps its settings; nothing was written",
                     hint="start a new run with a lower --lr")


def _check_budget(cfg: TrainPersonaConfig, folder: Path, *, moved: bool = False) -> None:
    """Refuse (``UsageError``, before anything loads or is written) a resume whose budget falls below the work its
    newest checkpoint holds, and a resume of a finished run that changes settings it would not use.

    Below the checkpoint: Trainer cannot untrain steps, so the run saved the checkpoint's adapter (6 steps) while
    config.yaml and report.md said "at most 4". A finished run trains nothing (unless ``--eval`` asks for an
    evaluation it has not had), yet its config.yaml was rewritten with the new values (``--epochs``, ``--force``,
    ``train.save_steps``, ...), so it disagreed with the adapter and the report: no option is silently ignored."""
    from agentlab.core.train.sft import last_checkpoint  # imports transformers and trl: training follows anyway

    checkpoint = last_checkpoint(folder / CHECKPOINTS)
    if checkpoint is not None:
        step, epoch = _checkpoint_step(checkpoint), None
        with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
            epoch = float(json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))["epoch"])
        budget = (f"--max-steps {cfg.train.max_steps}" if cfg.train.max_steps and step > cfg.train.max_steps else
                  f"--epochs {cfg.train.epochs:g}" if not cfg.train.max_steps and epoch is not None
                  and epoch > cfg.train.epochs + 1e-6 else None)
        if budget is not None:
            held = f"{step} steps" + (f" ({epoch:.2f} epochs)" if epoch is not None else "")
            raise UsageError(f"{folder}: {budget} is below the {held} the run's newest checkpoint "
                             f"({Path(checkpoint).name}) already trained: steps cannot be untrained; nothing was "
                             "written",
                             hint="resume with a budget of at least that (or without the option: the run's own "
                             "budget), or start a new run with the smaller one")
    finished = _finished(cfg, folder)
    if finished is None:
        return
    evaluating = bool(cfg.eval.tasks) and "eval" not in finished
    # ``moved``: data.path names the data the run started on at a new path (``moved_data``), not a new setting
    changed = settings_changes(folder, cfg, (*(("eval", "mlflow") if evaluating else ()),
                                             *((DATA_KEY,) if moved else ())))
    if changed:
        raise UsageError(f"{folder}: this run already trained its {finished['steps']} steps and saved its adapter, so "
                         f"a resume trains nothing and would not use {'; '.join(changed)}; nothing was written",
                         hint="resume without them, with a larger --max-steps to train on"
                         + ("" if evaluating else ", with --eval TASK to score the adapter")
                         + ", or start a new run with the new settings")


def run(cfg: TrainPersonaConfig, run_dir: RunDir | FollowerRun, *, data: ChatData | None = None,
        progress: Progress | None = None, announce: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train (or continue from the run's last checkpoint), save the adapter and its card, write the report; with
    ``cfg.mlflow`` the run is an MLflow run: the config as params, each logged step's loss (learning rate, grad
    norm, tokens/s, ...) as metrics, the adapter's config and card, report and results as artifacts.

    Under ``accelerate launch`` the other processes get a ``FollowerRun`` and no ``data``: they train their shard
    in the same folder and write nothing (nor log to MLflow)."""
    if isinstance(run_dir, RunDir):  # from Python: the CLI checked this before the folder existed
        check_out_beside_run(cfg.out, run_dir.path, given="", resuming=run_dir.file(CHECKPOINTS).is_dir())
    finished = _finished(cfg, run_dir.path)
    if finished is not None:  # resumed after it ended: Trainer would take one step past the budget
        (announce or log.info)(f"this run already trained its {finished['steps']} steps; its adapter is "
                               f"{finished['adapter']}: nothing to train")
        if not (cfg.eval.tasks and "eval" not in finished) or not isinstance(run_dir, RunDir):
            # before the MLflow run is reopened: nothing is logged, nothing left RUNNING
            return {**finished, "trained_this_session": False}
        # Recorded before it starts: a stop during the evaluation then leaves the run "interrupted" with config.yaml
        # asking for it, so --resume runs it (else the resume was undone: "completed", eval.tasks back to []).
        run_dir.event("eval_requested", tasks=cfg.eval.tasks)
    tracker = (open_tracker(cfg.mlflow, "agentlab-train-persona", run_dir, params=cfg.model_dump(mode="json"))
               if isinstance(run_dir, RunDir) else NullTracker())
    with tracker:
        results = finished or _train(cfg, run_dir, tracker, data=data, progress=progress, announce=announce)
        if results and cfg.eval.tasks and isinstance(run_dir, RunDir):
            _evaluate(cfg, run_dir, results, tracker, announce or log.info)
        # what the console says of the seconds (the last training session's); not in results.json
        return {**results, "trained_this_session": finished is None}


def _finished(cfg: TrainPersonaConfig, folder: Path) -> dict[str, Any] | None:
    """The results of a run that trained its whole budget (max_steps, else epochs) and saved its adapter, when the
    run folder ``folder`` holds one (a resume of a finished run); None otherwise. Every process of a distributed run
    reads the same files, so all of them skip training alike."""
    try:
        results = json.loads((folder / "results.json").read_text(encoding="utf-8"))
        state = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
        steps, adapter = int(results["steps"]), Path(results["adapter"])
        all_steps = int(state["global_step"]) >= int(state["max_steps"])
        epochs = float(state["epoch"] or 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    # an epoch budget: Trainer's last epoch count may fall a little short of it; a larger budget is more epochs
    done = steps >= cfg.train.max_steps if cfg.train.max_steps else all_steps and epochs >= 0.9 * cfg.train.epochs
    return results if done and (adapter / "adapter_config.json").is_file() else None


def _evaluate(cfg: TrainPersonaConfig, run_dir: RunDir, results: dict[str, Any], tracker: Tracker | NullTracker,
              announce: Callable[[str], None]) -> None:
    """``--eval``: the saved adapter and its base on the lm-eval tasks, paired; lm-eval's files under lm-eval/<row>/,
    the table in results.json and report.md (and MLflow)."""
    adapter = Path(results["adapter"])
    announce(f"lm-eval: {', '.join(cfg.eval.tasks)} on {cfg.base_model} and the adapter")
    settings = ScoreModelsSettings(include=cfg.eval.include_path, limit=cfg.eval.limit,
                                   chat_template=cfg.eval.chat_template, device=cfg.train.device,
                                   dtype=cfg.train.dtype, batch_size=cfg.eval.batch_size,
                                   min_change=cfg.eval.min_logit_change)
    scored = score_models(cfg.base_model, {adapter.name: adapter}, cfg.eval.tasks, settings=settings)
    for row, lm_results in scored.results.items():
        save_row(run_dir.file("lm-eval", row), lm_results, scored.samples[row])
    lines = eval_lines(scored, adapter.name)
    results["eval"] = {**scored.to_dict(), "table": lines}
    tracker.log_metrics({f"eval_{s.task}_{s.metric}": s.value for s in scored.rows[adapter.name]},
                        step=results["steps"])
    run_dir.event("eval", **scored.to_dict())
    run_dir.save_results(results)
    report = run_dir.file("report.md").read_text(encoding="utf-8")
    run_dir.save_report(report.rstrip("\n") + "\n\n## lm-evaluation-harness\n\n" + "\n".join(lines) + "\n")


def _train(cfg: TrainPersonaConfig, run_dir: RunDir | FollowerRun, tracker: Tracker | NullTracker, *,
           data: ChatData | None, progress: Progress | None, announce: Callable[[str], None] | None) -> dict[str, Any]:
    # here: these modules import torch, transformers and trl at their top
    from agentlab.core.train.callbacks import ProgressCallback
    from agentlab.core.train.sft import SFTSettings, build_sft_trainer, last_checkpoint, resume_training

    progress = progress or NullProgress()
    announce = announce or log.info
    data = data if data is not None else prepare(cfg, resuming=True)["data"]
    stats = data.stats()
    announce(f"data: {counted(stats['conversations'], 'conversation')}, {counted(stats['turns'], 'turn')}, "
             f"{counted(stats['tokens'], 'token')} "
             f"(longest {stats['max_tokens']}), {stats['truncated']} truncated")
    four_bit = wants_4bit(cfg.train.load_in_4bit, cfg.train.device)
    if cfg.train.threads:
        import torch

        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.train.seed)
    model, tokenizer = load_causal_lm(cfg.base_model, device=cfg.train.device, dtype=cfg.train.dtype,
                                      load_in_4bit=four_bit)
    device = next(model.parameters()).device
    announce(f"base model {cfg.base_model} on {device.type}: " + ("QLoRA (4-bit NF4, double quantization)"
             if four_bit else f"LoRA, {next(model.parameters()).dtype} weights"))
    run_dir.event("data", **stats)
    logged = tracker.last_step("loss")  # a resumed run: steps past its checkpoint that MLflow already has

    def on_log(entry: dict[str, Any]) -> None:
        run_dir.event("train_log", **_json_numbers(entry))
        if logged is None or entry["step"] > logged:
            tracker.log_metrics({k: v for k, v in entry.items() if k not in ("step", "max_steps")},
                                step=entry["step"])

    callback = ProgressCallback(progress, on_log=on_log,
                                on_save=lambda path, step: run_dir.event("checkpoint", step=step, path=path))
    settings = SFTSettings(
        assistant_only_loss=cfg.train.assistant_only_loss, packing=cfg.data.packing, max_length=cfg.data.max_length,
        epochs=cfg.train.epochs, max_steps=cfg.train.max_steps or -1, batch_size=cfg.train.batch_size,
        grad_accum=cfg.train.grad_accum, learning_rate=cfg.train.learning_rate, lr_scheduler="cosine",
        warmup=cfg.train.warmup_ratio, weight_decay=cfg.train.weight_decay, logging_steps=cfg.train.logging_steps,
        save_steps=cfg.train.save_steps, seed=cfg.train.seed, gradient_checkpointing=cfg.train.gradient_checkpointing,
        # a NaN or inf loss logged as it is: Trainer's filter logged a diverged run's NaN steps as loss 0.0
        sft_args={"logging_nan_inf_filter": False})
    trainer, summary = build_sft_trainer(
        model=model, tokenizer=tokenizer, train_dataset=data.rows, output_dir=run_dir.file(CHECKPOINTS),
        peft_config=lora_config(r=cfg.lora.r, alpha=cfg.lora.alpha, dropout=cfg.lora.dropout,
                                target_modules=cfg.lora.target_modules),
        settings=settings, callbacks=[callback])
    loss_tokens = {**summary.to_dict(), "line": loss_line(summary.to_dict())}
    announce(loss_tokens["line"])
    run_dir.event("loss_tokens", **summary.to_dict())
    resume_from = last_checkpoint(run_dir.file(CHECKPOINTS))
    if resume_from is not None:
        announce(f"resuming from {Path(resume_from).name}")
        # the steps past it that an earlier session logged are trained (and logged) again: of the train_log
        # events of one step, the last is the one the adapter holds
        run_dir.event("resume", checkpoint=resume_from, step=_checkpoint_step(resume_from))
    elif _resumed(run_dir):  # stopped at once (kill -9, a second Ctrl-C) before its first checkpoint
        announce("no checkpoint yet: training starts again from step 0")
    start = time.perf_counter()
    with gpu_usage() as gpu:
        output = resume_training(trainer, resume_from, announce=announce)
    seconds = time.perf_counter() - start
    if not trainer.is_world_process_zero():
        return {}  # under `accelerate launch`, the main process writes the adapter and the run folder
    state = trainer.state
    if output is None:
        announce(f"{Path(str(resume_from)).name} holds the whole budget ({state.global_step} steps): nothing to "
                 "train, its adapter is saved")
    run_dir.write_json("trainer_state.json", {"log_history": [_json_numbers(e) for e in state.log_history],
                                              "global_step": state.global_step, "max_steps": state.max_steps,
                                              "epoch": state.epoch,
                                              "num_input_tokens_seen": state.num_input_tokens_seen})
    check_finite(trainer.model, state.log_history, cfg.train.learning_rate, record=run_dir.event)
    losses = [(e["step"], e["loss"]) for e in state.log_history if "loss" in e and "step" in e]
    out = cfg.out if cfg.out is not None else run_dir.file("adapter")
    results = _json_numbers({  # a NaN loss (an fp16 step skipped, the weights finite) as null, not bare NaN
        "adapter": str(Path(out).absolute()), "base_model": cfg.base_model, "device": device.type,
        "qlora": four_bit, "steps": state.global_step, "epochs": state.epoch, "resumed_from": resume_from,
        "first_loss": losses[0][1] if losses else None, "final_loss": losses[-1][1] if losses else None,
        "train_loss": _run_loss(output, state.log_history, resume_from, state.global_step),
        "tokens_seen": state.num_input_tokens_seen,
        "tokens_per_s": callback.tokens_per_s, "seconds": round(seconds, 2), "data": stats,
        "loss_tokens": loss_tokens, "peak_rss_mb": round(peak_rss_bytes() / 2**20, 1), **gpu.to_dict(),
    })
    announce(f"memory: peak RSS {results['peak_rss_mb']:.0f} MB; GPU: {gpu.describe()}")
    results["changes_nothing"] = changes_nothing(trainer.model)
    if results["changes_nothing"]:
        log.warning("every lora_B of the adapter is still zero after %s: the adapter changes nothing (train more "
                    "steps, --max-steps, or with a higher learning rate, --lr)", counted(state.global_step, "step"))
    _save_adapter(trainer, cfg, Path(out), results, own=_own_adapter(run_dir, Path(out)))
    loss_plot(losses, run_dir.file("loss.png"))
    run_dir.save_results(results)
    run_dir.save_report(render_report(cfg, results, summary.preview))
    _log_results(tracker, results, Path(out), run_dir)
    return results


def changes_nothing(model: Any) -> bool:
    """Whether every LoRA B factor of ``model`` is all zeros, so the adapter is still the identity PEFT starts from
    (B is zero-initialised: a first step with a warm-up's learning rate of 0 moves nothing)."""
    factors = [p for name, p in model.named_parameters() if "lora_B" in name]
    return bool(factors) and not any(bool(p.detach().any()) for p in factors)


def check_finite(model: Any, log_history: list[dict[str, Any]], learning_rate: float, *,
                 record: Callable[..., None] | None = None) -> None:
    """Fail the run (``AgentlabError``, exit 1, before the adapter is written) when a weight of the adapter is NaN or
    inf: a run that diverged (a learning rate far too high) saved such an adapter and ended "completed", and
    `export` made a GGUF of it. The message names the first logged step whose loss or grad_norm was not finite.
    ``record(kind, **data)`` (``RunDir.event``) gets a ``diverged`` event first: ``check_resume`` refuses a resume
    of the run by it (its checkpoints hold the same weights, and a resume keeps the learning rate)."""
    import torch

    broken = [name for name, p in model.named_parameters() if p.requires_grad and not bool(torch.isfinite(p).all())]
    if not broken:
        return
    total = sum(1 for _, p in model.named_parameters() if p.requires_grad)
    first = next(((e["step"], key, e[key]) for e in log_history for key in ("loss", "grad_norm")
                  if isinstance(e.get(key), float) and not math.isfinite(e[key]) and "step" in e), None)
    when = f"the logged {first[1]} was {first[2]} at step {first[0]}" if first else "no logged step said when"
    if record is not None:
        record("diverged", step=first[0] if first else None, learning_rate=learning_rate, tensors=len(broken))
    raise AgentlabError(f"training diverged: {len(broken)} of the adapter's {total} weight tensors hold NaN or inf "
                        f"({when}); no adapter was written",
                        hint=f"start a new run with a lower --lr (a resume keeps this run's, {learning_rate:g})")


def _json_numbers(entry: dict[str, Any]) -> dict[str, Any]:
    """``entry`` with its NaN and infinite floats as None: events.jsonl and trainer_state.json stay JSON that every
    reader takes (``jq`` refuses Python's bare ``NaN``)."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in entry.items()}


def _resumed(run_dir: RunDir | FollowerRun) -> bool:
    """Whether this session resumes the run (run.json records each resume)."""
    try:
        return bool(run_info(run_dir.path).get("resumed"))
    except AgentlabError:  # no readable run.json: not a run folder the CLI opened
        return False


def _checkpoint_step(checkpoint: str) -> int:
    return int(Path(checkpoint).name.rsplit("-", 1)[1])


def _run_loss(output: Any, log_history: list[dict[str, Any]], resume_from: str | None, steps: int) -> float | None:
    """The mean training loss over the whole run, as an uninterrupted run reports it (Trainer's ``training_loss``,
    the mean of every step's loss). A resumed session's ``training_loss`` covers its own steps only (None: it
    trained none); the steps before its checkpoint count with the mean of their logged losses (each entry weighted
    by the steps it covers; the trainer state the checkpoint carried logs them)."""
    if resume_from is None:
        return output.training_loss if output is not None else None
    resumed_at = _checkpoint_step(resume_from)
    weighted, covered, last = 0.0, 0, 0
    for entry in log_history:
        step = entry.get("step")
        if "loss" in entry and isinstance(step, int) and last < step <= resumed_at:
            weighted, covered, last = weighted + entry["loss"] * (step - last), covered + step - last, step
    before = weighted / covered if covered else None
    session = steps - resumed_at
    if output is None or session <= 0:
        return before
    if before is None:
        return output.training_loss
    return (before * resumed_at + output.training_loss * session) / steps


def _log_results(tracker: Tracker | NullTracker, results: dict[str, Any], out: Path,
                 run_dir: RunDir | FollowerRun) -> None:
    """The run's outcome on its MLflow run; the adapter's config and card, not its weights (see the adapter folder)."""
    # At the last step: the latest values MLflow shows are the run's totals, not the last log entry's.
    tracker.log_metrics({k: results[k] for k in ("first_loss", "final_loss", "train_loss", "tokens_seen",
                                                  "tokens_per_s", "seconds")}, step=results["steps"])
    tracker.set_tags({"adapter": results["adapter"], "device": results["device"], "qlora": results["qlora"],
                      "loss_tokens": results["loss_tokens"]["line"]})
    for name in ("adapter_config.json", "README.md"):
        tracker.log_artifact(out / name, "adapter")
    for name in ("report.md", "results.json", "loss.png", "trainer_state.json"):
        tracker.log_artifact(run_dir.file(name))


def _own_adapter(run_dir: RunDir | FollowerRun, out: Path) -> bool:
    """Whether ``out`` holds the adapter this run saved before (it is resumed to train further)."""
    return _saved_at(run_dir.path, out)


def _saved_at(folder: Path, out: Path) -> bool:
    """Whether the run in ``folder`` saved its adapter at ``out`` (its results.json names it)."""
    try:
        saved = json.loads((folder / "results.json").read_text(encoding="utf-8"))["adapter"]
        return Path(saved).resolve() == Path(out).resolve()
    except (OSError, ValueError, KeyError, TypeError, RuntimeError):
        return False


def _replaceable(out: Path, kept: Path | None = None) -> None:
    """Refuse (``UsageError``) an ``out`` that ``--force`` would replace but that is not an adapter folder: a file,
    a folder of other files, or the current folder (or one above it); ``kept``: where the new adapter waits."""
    problem = replace_problem(out, "adapter_config.json", "an adapter folder")
    if problem:
        raise UsageError(f"--out {out}: {problem}; " + (f"the adapter is in {kept}" if kept else "nothing was written"),
                         hint="--force replaces only an adapter folder: choose another --out")


def _save_adapter(trainer: Any, cfg: TrainPersonaConfig, out: Path, results: dict[str, Any], *,
                  own: bool = False) -> None:
    """The adapter and its card, written beside ``out`` and renamed into place (``--force``, or ``own``: the run's
    own earlier adapter, replaces an old one)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.model.save_pretrained(str(tmp))
    # Name the base as the user gave it (not the cache folder it was converted into), a path to a model on disk made
    # absolute (as config.yaml holds it: `export` and PEFT then find it from any folder), and a built-in by its
    # upstream hub id, which PEFT, lm-eval and vLLM can load (agentlab resolves it to the built-in offline); set after
    # saving, since PEFT would look a name that is not a folder up on the hub while saving.
    config_path = tmp / "adapter_config.json"
    adapter_config = json.loads(config_path.read_text(encoding="utf-8"))
    adapter_config["base_model_name_or_path"] = upstream_id(cfg.base_model) or absolute_paths(cfg).base_model
    config_path.write_text(json.dumps(adapter_config, indent=2) + "\n", encoding="utf-8")
    (tmp / "README.md").write_text(adapter_card(cfg, results), encoding="utf-8")
    ordinary_modes(tmp)  # safetensors writes the weights 0600; the adapter is an ordinary folder beside its card
    if out.exists():
        if not (cfg.force or own or (out.is_dir() and not any(out.iterdir()))):
            raise UsageError(f"--out {out}: appeared while training; the adapter is in {tmp}",
                             hint="move it into place yourself, or train again with --force")
        if not own:
            _replaceable(out, tmp)
    rename_into_place(tmp, out)  # an old adapter is deleted only once the new one is in its place
