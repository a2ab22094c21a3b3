"""`agentlab compress`: the base model measured, then the experiments a planner proposes, each a trial of the run's
Optuna study on the shared search loop (``core.search.loop``): read back from the workspace or run within the carbon
budget, scored against the base and the goal. The study is the run's state (``--resume``, workers on a server). The
evaluation and calibration texts must differ (default: the two halves of the shipped text). See
docs/commands/compress.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from agentlab.compress.agent import ExperimentView, KitOptions, compress_kit, knowledge_leads
from agentlab.compress.config import CompressConfig, Experiment, HarnessTask
from agentlab.compress.energy import check_country
from agentlab.compress.evaluate import FOLDER as EVALS
from agentlab.compress.evaluate import Evaluator
from agentlab.compress.experiment import Inputs, run_experiment
from agentlab.compress.measure import default_eval_text, read_text_file
from agentlab.compress.objective import Goal
from agentlab.compress.planners import ExperimentDomain, experiment_results
from agentlab.compress.reflect import reflect
from agentlab.compress.report import fmt, outcome_line, render_report, write_plot
from agentlab.compress.scoring import (
    check,
    choose_best,
    derive,
    feasible_front,
    improves_on_base,
    objective_values,
)
from agentlab.compress.space import Space, experiment_key, to_experiment
from agentlab.compress.tracking import MLFLOW_EXPERIMENT, log_experiments, log_results
from agentlab.compress.workspace import Workspace, check_workspace, workspace_root
from agentlab.core.config import Flag, load_config, override_list
from agentlab.core.debate.task import as_questions, load_task, make_task
from agentlab.core.errors import AgentlabError, ConfigError, RunDirError, UsageError, storage_error
from agentlab.core.files import counted
from agentlab.core.harness import load_tasks, task_manager
from agentlab.core.llm.config import LLMConfig, load_llm_config
from agentlab.core.models.device import resolve_device_dtype
from agentlab.core.models.load import check_model_files, hf_model_folder
from agentlab.core.progress import NullProgress, Progress
from agentlab.core.runs import (
    RunDir,
    atomic_write_json,
    atomic_write_text,
    read_events,
    resume_target,
    run_in_folder,
    runs_root,
    shared_settings,
)
from agentlab.core.search import records as R
from agentlab.core.search.engine import store_of, url_where
from agentlab.core.search.evaluator import Decision
from agentlab.core.search.kinds import DEFAULT_SAMPLER, KINDS
from agentlab.core.search.loop import Hooks, SearchLoop, StopRules, StopSearch, TrialAborted, TrialFailed, base_failed
from agentlab.core.search.planners import PlanContext, Proposal, WarmStart, Wrapper
from agentlab.core.search.records import TrialRecord
from agentlab.core.search.session import (
    PlannerSession,
    PlannerSpec,
    llm_source,
    open_planner,
    require_planner_model,
)
from agentlab.core.search.study import await_labels, missing_study, open_study
from agentlab.core.tracking import check_tracking, open_tracker

if TYPE_CHECKING:
    from agentlab.core.tracking import NullTracker, Tracker

log = logging.getLogger(__name__)
STATE = "experiments.jsonl"  # the finished experiments, rewritten from the study after each trial
GOAL_ATTR = "agentlab:goal"  # the study's goal (Goal.describe), one per study
OLD_ATTRS = {"agentlab:record", "agentlab:experiment", "agentlab:base"}  # trials of compress's former own loop


@dataclass
class Prepared:
    """What ``prepare`` checked and loaded before any run folder exists."""

    goal: Goal
    inputs: Inputs  # ``inputs.model``: the transformers folder the experiments start from
    space: Space
    llm: LLMConfig | None = None
    chooser: Any = None  # a scripted chooser in place of the planner model (the benchmarks' placebo and surrogate)
    approver: Any = None  # answers --approve (the CLI asks in the terminal)
    leads: list[tuple[dict[str, Any], str]] = field(default_factory=list)  # warm_start: run first, any planner


# --------------------------------------------------------------------------- inputs


def default_texts() -> tuple[str, str]:
    """(evaluation, calibration): the two halves of the shipped text, cut at a paragraph break near the middle."""
    text = default_eval_text()
    cut = text.find("\n\n", len(text) // 2)
    cut = cut if cut > 0 else len(text) // 2
    return text[:cut].strip() + "\n", text[cut:].strip() + "\n"


def load_texts(cfg: CompressConfig) -> tuple[str, str]:
    if cfg.eval_text and cfg.calib_text and Path(cfg.eval_text).resolve() == Path(cfg.calib_text).resolve():
        raise UsageError(f"eval_text and calib_text are the same file ({cfg.eval_text})",
                         hint="calibrate on a different text, or leave calib_text out to use the built-in one")
    eval_default, calib_default = default_texts()
    eval_text = read_text_file(cfg.eval_text, "evaluation text") if cfg.eval_text else eval_default
    calib_text = read_text_file(cfg.calib_text, "calibration text") if cfg.calib_text else calib_default
    if eval_text.strip() == calib_text.strip():
        raise UsageError("the evaluation and calibration texts are the same text",
                         hint="calibrate on a different text: recovery would train on what it is scored on")
    tokens = int(len(eval_text.split()) * 1.3)  # about: English runs 1.3 tokens a word
    if cfg.eval_text and tokens < cfg.measure.context:
        log.warning("%s: about %s, fewer than one perplexity window (measure.context %d): every experiment's "
                    "perplexity rests on that little text; give a few KB", cfg.eval_text, counted(tokens, "token"),
                    cfg.measure.context)
    return eval_text, calib_text


def load_questions(cfg: CompressConfig) -> list[Any]:
    """Accuracy's task: its questions, or [] for an lm-eval task (its data checked now, ``_harness`` names it)."""
    if isinstance(cfg.task, HarnessTask):  # the task's data is checked now; lm-eval reads it when measuring
        load_tasks(task_manager(cfg.task.include_path, names=[cfg.task.harness]), [cfg.task.harness])
        return []
    if cfg.task is not None:
        return load_task(cfg.task, limit=cfg.task_questions)
    return as_questions(make_task(cfg.task_questions, "easy", seed=cfg.seed))


def _harness(cfg: CompressConfig) -> dict[str, Any] | None:
    """``Inputs.harness`` for an lm-eval task (None for the others)."""
    if not isinstance(cfg.task, HarnessTask):
        return None
    return {"task": cfg.task.harness, "include": [str(Path(p).resolve()) for p in cfg.task.include_path],
            "limit": cfg.task_questions, "chat_template": cfg.task.chat_template}


def _layers(model_path: Path) -> int:
    try:
        config = json.loads((model_path / "config.json").read_text(encoding="utf-8"))
        return int(config.get("num_hidden_layers") or 1)
    except (OSError, ValueError, TypeError):
        return 1


def check_model(model: str) -> Path:
    """The transformers folder the experiments start from, the user's model files checked from their headers first
    (``check_model_files``), so a damaged model stops here (exit 2, naming the file) and not after the run folder
    exists: a GGUF cut short was "transformers could not convert this GGUF (cannot reshape array ...)", exit 1."""
    check_model_files(model, user="agentlab compress")
    return hf_model_folder(model, user="agentlab compress")


def prepare(cfg: CompressConfig, llm: LLMConfig | str | Path | None = None, chooser: Any = None, *,
            dry_run: bool = False, where: Callable[[tuple[str | int, ...]], str | None] | None = None,
            llm_given: bool = False) -> dict[str, Any]:
    """Everything checked before a run folder exists (exit 2 on bad input): the goal, the texts, the task, the
    model (its files' headers: ``check_model``), the device, the planner's routing config, MLflow,
    the shared study. ``dry_run``: the study is only read (``check_search_study``), so a dry run creates no storage
    and fixes no study's goal. ``where(key path)``: where a key was given (``config_where``), for an error found
    here. ``llm_given``: the caller named the routing config (``--llm``, ``llm=``), refused for a planner that uses no
    model. Returns ``run``'s keyword argument ``prepared``."""
    kind = KINDS[cfg.search.planner]
    if llm_given and not kind.needs_model:  # it would be read, then used by nothing
        raise UsageError("--llm applies only to the planners that use a model (--planner llm or agent); "
                         f"--planner {cfg.search.planner} uses none",
                         hint="leave out --llm, or use --planner agent or --planner llm to have --llm's model plan")
    if cfg.llm is not None and not kind.needs_model:  # a config's llm: (or --set llm=) stays for another planner
        at = where(("llm",)) if where is not None else None
        said = at if at and at.startswith("--") else f"{at + ': ' if at else ''}llm: {cfg.llm}"  # --set, or file:line
        log.warning("%s is not used: --planner %s uses no model (the llm and agent planners do)", said,
                    cfg.search.planner)
    goal = cfg.goal()
    eval_text, calib_text = load_texts(cfg)
    questions = load_questions(cfg)
    # a built-in name or a GGUF is de-quantized once into a cached transformers folder (the compression starts there)
    folder = check_model(cfg.model)
    device, _ = resolve_device_dtype(cfg.device, what="device")
    check_country(cfg.measure.country)
    llm_cfg = None
    if kind.needs_model and (chooser is None or kind.family != "chooser"):
        llm_cfg = llm if isinstance(llm, LLMConfig) else load_llm_config(llm or cfg.llm)
        require_planner_model(llm_cfg, cfg.search.planner, source=llm_source(llm or cfg.llm),
                              fallback=DEFAULT_SAMPLER["compress"])
    check_tracking(cfg.mlflow)
    check_workspace(cfg.workspace or runs_root() / "compress" / "workspace")
    if cfg.search.storage is not None:  # a bad URL or a study of another goal: one line, before any folder exists
        if dry_run:
            check_search_study(cfg, goal)
        else:
            open_search_study(cfg, goal, Path.cwd())
    inputs = Inputs(model=str(folder), device=device.type, eval_text=eval_text, calib_text=calib_text,
                    questions=questions, measure=cfg.measure, seed=cfg.seed, harness=_harness(cfg))
    space = Space.build(_layers(folder), cuda=device.type == "cuda")
    leads = warm_leads(cfg, goal, space, where)
    return {"prepared": Prepared(goal, inputs, space, llm_cfg, chooser, leads=leads)}


def warm_leads(cfg: CompressConfig, goal: Goal, space: Space,
               where: Callable[[tuple[str | int, ...]], str | None] | None = None) -> list[tuple[dict[str, Any], str]]:
    """``warm_start`` as leads for ``WarmStart``: the knowledge base's (true) or the user's own experiments (a list,
    each checked against the space now: exit 2 before any folder exists, the error naming the entry's file and line
    or ``--set`` through ``where``, as a config error found at validation does)."""
    if cfg.search.warm_start is True:
        return knowledge_leads(space.choices)
    leads, empty = [], ExperimentDomain(goal, space, cfg.seed, 1, [], [])  # a search with nothing run yet
    for i, changes in enumerate(cfg.search.warm_start or []):
        _, error = empty.lead(changes)
        if error:
            at = where(("search", "warm_start", i)) if where is not None else None
            raise ConfigError(f"{at + ': ' if at else ''}search.warm_start[{i}]: {error}",
                              hint="each entry maps settings of the space (agentlab compress --dry-run lists them) "
                              "to one of their values, e.g. {quantize: gguf, gguf_type: Q8_0}")
        leads.append((dict(changes), f"search.warm_start[{i}]"))
    return leads


def study_settings(cfg: CompressConfig) -> dict[str, str]:
    """What every run of a shared study must share (``core.runs.shared_settings``): the model, the texts, the task,
    the measurement and the device; not its storage and study name, nor the goal's words (``check_goal`` compares
    the goal itself), nor the seed (runs on SQLite each measure their own base, and a seed of their own diversifies
    their planners: the docs' two runs). A run on another model joined a study on SQLite silently: its planners
    learnt from speedups over another base, and skipped the experiments the other model had run."""
    settings = shared_settings(cfg, "compress", own=("search.storage", "search.study_name", "objective",
                                                     "objectives", "constraints", "seed"))
    # as measured: `auto` on a GPU machine and on a CPU one are other set-ups (workers of one study on both)
    device, dtype = resolve_device_dtype(cfg.device, cfg.measure.dtype, what="device")
    settings["device"], settings["measure.dtype"] = repr(device.type), repr(str(dtype).removeprefix("torch."))
    return settings


def open_search_study(cfg: CompressConfig, goal: Goal, run_path: Path) -> Any:
    """The search's study in ``cfg.search.storage`` (default study.db in the run folder), one direction per
    objective."""
    study = open_study(cfg.search.storage, run_path, name=cfg.search.study_name,
                       directions=[o.direction for o in goal.objectives],
                       objectives=[o.metric for o in goal.objectives], what="search.storage",
                       settings=study_settings(cfg))
    where = f"search.storage ({url_where(cfg.search.storage)})" if cfg.search.storage else str(run_path / "study.db")
    if not store_of(study).created:  # its creator labels the goal just after open_study: a run started with it waits
        await_labels(study, [GOAL_ATTR])
    check_goal(study, goal, where)
    if study.user_attrs.get(GOAL_ATTR) is None:
        study.set_user_attr(GOAL_ATTR, goal.describe(units=False))  # as 0.1.0 wrote it: its studies resume
    return study


def check_goal(study: Any, goal: Goal, where: str) -> None:
    """``ConfigError`` for a study compress cannot continue: one an older agentlab wrote, or one of another goal
    (the constraints are the goal too: ``open_study`` checks the objectives). Only reads (a dry run's check)."""
    name = study.study_name
    if any(OLD_ATTRS & set(t.user_attrs) for t in study.get_trials(deepcopy=False)):
        raise ConfigError(f"{where}: the study {name!r} was written by an agentlab before compress ran on the search "
                          "loop (its trials keep their experiments another way)",
                          hint="start a new run, with another search.study_name when the storage is shared")
    stored, ours = study.user_attrs.get(GOAL_ATTR), goal.describe(units=False)  # without units, as 0.1.0's studies
    if stored is not None and stored != ours:
        raise ConfigError(f"{where}: the study {name!r} has the goal '{stored}', this search '{ours}'",
                          hint="give another goal another search.study_name or storage")


def check_search_study(cfg: CompressConfig, goal: Goal) -> None:
    """``search.storage`` as a dry run sees it: a bad file or an unreachable database is refused, and an existing
    study of another goal too (as ``open_study`` and ``open_search_study`` would refuse it), but nothing is created
    or written: a new storage file, a new study and its goal are left to the run (before, a dry run created the
    study and fixed its goal, so a later dry run with another goal was refused)."""
    from agentlab.core.search.study import peek_study

    storage = cfg.search.storage
    assert storage is not None
    study = peek_study(storage, cfg.search.study_name, [o.direction for o in goal.objectives],
                       [o.metric for o in goal.objectives], settings=study_settings(cfg))
    if study is not None:  # None: nothing there yet, the run creates it with this goal
        check_goal(study, goal, f"search.storage ({url_where(storage)})")


# --------------------------------------------------------------------------- the run's state


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def measure_context(inputs: Inputs) -> dict[str, Any]:
    """What besides the model and the experiment decides the numbers: part of the workspace key, so a record is
    only reused for the same measurement set-up."""
    # metrics 3: a GGUF's latency on torch's threads (2: on llama.cpp's default, half the cores; memory_mb the
    # weights plus the evaluation's RSS growth, 1: the growth alone)
    import torch

    return {"metrics": 3, "measure": inputs.measure.model_dump(), "device": inputs.device, "seed": inputs.seed,
            "threads": torch.get_num_threads(),
            "eval": _digest(inputs.eval_text), "calib": _digest(inputs.calib_text),
            "task": _digest(json.dumps([[q.question, q.answer] for q in inputs.questions]
                                       if inputs.harness is None else inputs.harness))}


# --------------------------------------------------------------------------- the run


def run(cfg: CompressConfig, run_dir: RunDir, *, prepared: Prepared | None = None, progress: Progress | None = None,
        announce: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the search in ``run_dir`` (new or resumed) and return results.json's content."""
    prepared = prepared or prepare(cfg)["prepared"]
    announce = announce or log.info
    with open_tracker(cfg.mlflow, MLFLOW_EXPERIMENT, run_dir, params=cfg.model_dump(mode="json")) as tracker:
        search = Search(cfg, run_dir, prepared, progress or NullProgress(), announce, tracker)
        return search.run()


class Search:
    """One compress search on ``core.search.loop.SearchLoop``: ``CompressObjective`` runs a trial (the base model
    or an experiment), ``ExperimentDomain`` is the planners' view; experiments.jsonl is rewritten after each trial."""

    def __init__(self, cfg: CompressConfig, run_dir: RunDir, prepared: Prepared, progress: Progress,
                 announce: Callable[[str], None], tracker: Tracker | NullTracker):
        self.cfg, self.run_dir, self.p, self.announce, self.tracker = cfg, run_dir, prepared, announce, tracker
        self.goal = prepared.goal
        self.workspace = Workspace(cfg.workspace or runs_root() / "compress" / "workspace")
        self.where = str(run_dir.path.resolve())
        self.task = progress.task("compress", total=cfg.search.max_iterations + 1)
        self.records: list[dict[str, Any]] = []  # this run's experiments (the study's, on a server), base first
        self.session: PlannerSession | None = None
        self.stop_reason = ""
        self.study: Any = None
        self.shared = False  # a study on a database server: the workers run one search, one budget
        self.own_run = False  # a study other runs share on SQLite or a journal: each run its own budget and base
        self._samplers: dict[str, Any] = {}  # the planners' samplers, kept across experiments
        self._shown: set[int] = set()  # trials whose experiment has its event in events.jsonl
        self.loop: SearchLoop | None = None

    def run(self) -> dict[str, Any]:
        self.announce(f"goal: {self.goal.describe()}")
        self.model_hash = self.workspace.model_hash(self.p.inputs.model)
        self.context = measure_context(self.p.inputs)
        self.study = open_search_study(self.cfg, self.goal, self.run_dir.path)
        self.shared = store_of(self.study).heartbeats
        self.own_run = self.cfg.search.storage is not None and not self.shared
        trials = [TrialRecord.from_frozen(t) for t in self.study.get_trials(deepcopy=False)]
        if self.shared:
            self._check_base(trials)
        self.records = self._records(trials)
        self._shown = {int(e["trial"]) for e in self.run_dir.events("experiment") if e.get("trial") is not None}
        if self._shown and not self.records:  # events.jsonl names finished experiments the study does not hold
            raise RunDirError(f"{self.run_dir.path}: its study holds none of the {len(self._shown)} measurement(s) "
                              "the run finished (events.jsonl): it is not the run's study",
                              hint="restore the run's study, or start a new run (the workspace reuses what was "
                              "measured)")
        base = next((r for r in self.records if r.get("experiment") is None and r.get("state") == "done"), None)
        if not self.shared and base is not None and base.get("key") != self._key(None):
            # a resume measured otherwise than its base (device auto now on CUDA, the model's files changed, a
            # metric's definition changed since): its experiments would not compare with the base they are scored by
            raise UsageError(f"{self.run_dir.path}: its base model was measured with another model or measurement "
                             "set-up than this resume would use (the model's content, device, texts, task, seed, "
                             "measurement, or agentlab's metrics)", hint="start a new run (the workspace reuses "
                             "what was measured the same way)")
        if self.records:
            done = sum(r.get("experiment") is not None for r in self.records)  # the base model is not one
            self.announce(f"resuming: {done} finished experiment(s) in the study"
                          + (" and the base model" if done < len(self.records) else "") + ", not run again")
        log_experiments(self.tracker, self.records)
        kit = compress_kit(self.goal.describe(), lambda: self.records[0].get("metrics") or {}, self.workspace,
                           self.model_hash, self.run_dir.event,
                           evaluator=Evaluator(self.p.inputs, self.run_dir.file(EVALS),
                                               checkpoint=self.workspace.checkpoint), space=self.p.space,
                           options=KitOptions(short=self._short_profile(), budget=self.cfg.search.max_iterations,
                                              mlflow=self.cfg.mlflow, context=self.context)) \
            if self.cfg.search.planner == "agent" else None
        spec = PlannerSpec(kind=self.cfg.search.planner, command="compress", settings=self.cfg.search,
                           llm=self.p.llm, run_dir=self.run_dir, chooser=self.p.chooser,
                           memory=self.workspace.root / "llm_picks.json",  # the record of the model's picks
                           kit=kit, approver=self.p.approver,
                           announce=self.announce)
        # the session closes the planner route's router (llm_stats.json) after the reflection, which asks it too
        with open_planner(spec) as self.session:
            self._loop()
            return self._finish()

    def _short_profile(self) -> bool:
        """Whether the planner model's profile is ``small`` (the knowledge base's short form): the `planner` route's
        first model's."""
        chain = self.p.llm.route("planner").chain() if self.p.llm is not None else []
        return self.p.llm.profile(chain[0]).short_tools if self.p.llm is not None and chain else True

    def _loop(self) -> None:
        assert self.session is not None
        planner = WarmStart(self.session.planner, self.p.leads) if self.p.leads else self.session.planner
        loop = self.loop = SearchLoop(
            study=self.study, space=self.p.space, base_params={}, objective=CompressObjective(self),  # type: ignore[arg-type]
            planner=WithExperiment(planner), evaluator=Feasibility(), seed=self.cfg.seed,
            stop=StopRules(self.cfg.search.max_iterations, free_base=True, own_run=self.own_run, base_first=True,
                           unit="experiment"),
            hooks=Hooks(on_event=lambda kind, **data: self.run_dir.event(kind, **data) if kind == "recovered" else None,
                        on_trial=self._on_trial, run_dir=self.where,
                        domain=lambda records: self._domain(records).context()))
        # the loop changes the study from its first step (a trial a stop left is queued again, a new one added): a
        # resume stopped from here on did work, and run.json keeps its record (not undone as one that did nothing)
        self.run_dir.mark_worked()
        try:
            outcome = loop.run()
        except TrialAborted as exc:  # the base model could not be measured: its trial is queued again
            raise exc.__cause__ or exc from None
        self.records = self._records(outcome.records)
        if not self.records and base_failed(loop.mine(outcome.records)):
            raise AgentlabError("the base model's measurement failed in an earlier run of this study",
                                hint="start a new run (or another search.study_name)")
        self.stop_reason = outcome.stop_reason
        if self.shared and outcome.stop_reason.kind == "max_iterations":
            self.stop_reason = self.stop_reason.rstrip(")") + " over every worker)"
        self.announce(f"stopped: {self.stop_reason}")

    def _domain(self, records: list[TrialRecord] | None = None) -> ExperimentDomain:
        """The search as the planners see it (``records``: the loop's, read just now; None: as last read), about to
        plan the experiment after those that hold budget (finished, running elsewhere, or queued again)."""
        iteration = len(self.records)
        if records is not None:
            assert self.loop is not None, "the loop asks for the domain"
            self.records = self._records(records)
            iteration = 1 + self.loop.counted(records)  # the base uses no budget
        return ExperimentDomain(self.goal, self.p.space, self.cfg.seed, iteration, self.records,
                                self.study.get_trials(deepcopy=False), self.workspace.notes(self.model_hash),
                                budget=self.cfg.search.max_iterations, samplers=self._samplers)

    # ------------------------------------------------------------------ the study's trials as records

    def _records(self, trials: list[TrialRecord]) -> list[dict[str, Any]]:
        """The finished experiments as compress's records, the base model first (none until it is measured): this
        run's trials, or every trial of the study when runs do not keep their own (``StopRules.own_run``: on a server
        every worker's), in trial order."""
        mine = [t for t in trials if not self.own_run or t.run_dir == self.where]
        base = next((t for t in mine if t.planner == "base" and t.state == "complete"), None)
        if base is None:
            return []
        out = [{**base.metrics.get("record", {}), "index": 0, "trial": base.number, "planner": "base", "note": "",
                "worker": base.worker}]
        for t in mine:
            if t.planner != "base" and (t.state == "complete" or (t.state == "failed" and t.counted)):
                out.append(self._record_of(t, len(out)))
        return out

    def _record_of(self, t: TrialRecord, index: int) -> dict[str, Any]:
        record = dict(t.metrics.get("record") or {})
        if not record:  # the objective itself failed (an error no experiment is expected to raise)
            exp = to_experiment(t.params)
            record = _failed(exp.label() if exp else "?", exp, R.reason_line(t.reason))
        extra: dict[str, Any] = {"origin": t.origin, "choice": t.choice, "candidates": t.candidates} \
            if t.origin else {}  # how the llm planner's pick came about
        if t.warmup:  # the sampler's pick, the LLM not asked: said so on the console, in experiments.jsonl and report
            extra.update(warmup=True, proposed_by=f"{t.planner}, warm-up: {DEFAULT_SAMPLER['compress']}")
        return {**record, "index": index, "trial": t.number, "planner": t.planner, "worker": t.worker,
                "note": "; ".join(n for n in [*t.notes, t.reasoning] if n), **extra}

    def _on_trial(self, trials: list[TrialRecord]) -> None:
        """After each trial: experiments.jsonl, the events of the experiments finished since, best.json, the
        front's checkpoints, MLflow, the progress bar."""
        self.records = self._records(trials)
        new = [r for r in self.records if r["trial"] not in self._shown]
        if not new:
            return
        self._write_state()
        for r in new:
            self._shown.add(r["trial"])
            self.run_dir.event("experiment", index=r["index"], label=r["label"], state=r.get("state"),
                               reused=r["reused"], planner=r["planner"], trial=r["trial"])
            self.announce(outcome_line(r))
        best = best_summary(self.goal, self.records)
        atomic_write_json(self.run_dir.file("best.json"), best)
        self.run_dir.event("best", index=best.get("index"))
        self._keep_front()
        log_experiments(self.tracker, self.records)
        self.task.update(completed=len(self.records))

    # ------------------------------------------------------------------ one experiment

    def _key(self, exp: Experiment | None) -> str:
        technique = {"experiment": exp.model_dump() if exp is not None else None, **self.context}
        return self.workspace.key(self.model_hash, technique)

    def _obtain(self, exp: Experiment | None, number: int) -> dict[str, Any]:
        """The experiment's record (the base model's: ``exp`` None): read back from the workspace, or run when the
        carbon budget allows it (``StopSearch`` when not)."""
        key = self._key(exp)
        label = exp.label() if exp is not None else "base model"
        stored = self.workspace.get(key)
        if stored is not None:
            return {"key": key, **_measured(stored), "reused": True}
        if exp is not None and (why := self._carbon_reason()):
            raise StopSearch(why)
        index = len(self.records)
        self.task.update(completed=index, description=f"[{index}] {label}; measured")  # then the count: 1/3 models
        work = self.run_dir.file("experiments", f"{number:03d}")
        try:
            keep = self.workspace.checkpoint_dir(key) if self.cfg.checkpoints_mb > 0 and exp is not None else None
            result = run_experiment(exp, self.p.inputs, work, tick=lambda step: self.task.update(
                description=f"[{index}] {label}: {step}; measured"), keep=keep)
        except (AgentlabError, RuntimeError, ValueError) as exc:
            full = storage_error(exc, where=str(work))
            if full is not None:  # the disk, not the experiment: stop; --resume runs it again
                raise full from exc
            if exp is None:  # no base measurement, nothing to compare against: the search stops with this error
                raise TrialAborted(str(exc)) from exc
            log.warning("experiment %s failed: %s", label, exc)
            return {"key": key, **_failed(label, exp, str(exc).splitlines()[0])}
        result["state"] = "done"
        self.workspace.put(key, {**result, "model_hash": self.model_hash, "model": self.cfg.model,
                                 "context": self.context})
        return {"key": key, **_measured(result), "reused": False}

    def _base_metrics(self) -> dict[str, Any]:
        """The base model's measured metrics, read from the study now (the loop plans no experiment before the base
        finished, but on a server another worker may have measured it since this one last read)."""
        records = self._records([TrialRecord.from_frozen(t) for t in self.study.get_trials(deepcopy=False)])
        if not records:
            raise TrialFailed("the base model was not measured: no experiment can be scored")
        return dict(records[0].get("metrics") or {})

    def _check_base(self, trials: list[TrialRecord]) -> None:
        """On a server every worker scores against the study's one base: it must be this model measured the same
        way (the workspace key: the model's hash and the measurement set-up)."""
        key = self._key(None)
        other = next((t for t in trials if t.planner == "base" and t.state == "complete"
                      and t.metrics.get("record", {}).get("key") != key), None)
        if other is not None:
            raise ConfigError(f"search.storage: the study {self.cfg.search.study_name!r} holds a base model measured "
                              "with another model or measurement set-up (model, device, texts, task, seed, measure)",
                              hint="give this search another search.study_name, or run it with the same settings")

    def _carbon_reason(self) -> str | None:
        """Why the next experiment must not run: it would exceed the carbon budget (None: it may run)."""
        budget = self.cfg.carbon_budget
        if budget is None or not self.records:
            return None
        spent = spent_co2e(self.records)
        costs = [r["metrics"]["co2e_kg"] for r in self.records if r.get("metrics", {}).get("co2e_kg") is not None]
        estimate = sum(costs) / len(costs) if costs else 0.0
        if spent + estimate <= budget:
            return None
        return (f"carbon budget: {spent:.3g} kg CO2e spent + about {estimate:.3g} kg for the next experiment would "
                f"exceed the budget of {budget:.3g} kg")

    def _keep_front(self) -> None:
        """The compressed models of the front the recommendation is chosen from (``feasible_front``) stay in the
        workspace's checkpoints/ (within ``checkpoints_mb``); the others of this run go."""
        done = [r for r in self.records[1:] if r.get("state") == "done" and r.get("key")]
        on = {done[i]["key"] for i in feasible_front(self.goal, done)}
        dropped = self.workspace.keep_checkpoints(on, {r["key"] for r in done}, self.cfg.checkpoints_mb)
        if dropped:
            self.run_dir.event("checkpoints", kept=sorted(on - set(dropped)), dropped=dropped)

    def _write_state(self) -> None:
        atomic_write_text(self.run_dir.file(STATE), "".join(json.dumps(r, default=str) + "\n" for r in self.records))

    # ------------------------------------------------------------------ the end

    def _model_file(self, index: int | None) -> str | None:
        """Where the recommended model is kept: a GGUF experiment's file in the run folder, else its checkpoint in
        the workspace (a GGUF file, or the pruned model before its int8 quantization, ``model.pt``); None when
        neither is (an int8-only experiment, one that left the front, ``checkpoints_mb: 0``)."""
        record = next((r for r in self.records if r["index"] == index), None) if index else None
        if record is None:
            return None
        file = ((record.get("steps") or {}).get("quantize") or {}).get("file")
        if file and (here := self.run_dir.path / "experiments" / Path(file).parent.name / Path(file).name).is_file():
            return str(here.absolute())
        kept = self.workspace.checkpoint(record["key"])  # None when none is kept
        return str(kept.absolute()) if kept is not None else None

    def _finish(self) -> dict[str, Any]:
        self._write_state()
        results = summarise(self.cfg, self.goal, self.records, self.stop_reason, str(self.workspace.root))
        results["recommended"]["model_file"] = self._model_file(results["recommended"].get("index"))
        assert self.session is not None, "the search ran with a planner"
        planner = self.session.planner
        results.update(planner.report(experiment_results(self.goal, self.records)))
        plot = write_plot(self.goal, self.records, self.run_dir.file("pareto.png"))
        results["plot"] = plot.name if plot is not None else None
        self.run_dir.save_results(results)
        self.run_dir.save_report(render_report(self.cfg, self.goal, self.records, results, list(self.run_dir.events())))
        note = knowledge_note(self.goal, self.records, results, self.run_dir.path.name)
        model = getattr(planner, "model", None)  # the agent planner's model (the registry's "agent" family)
        if model is not None and KINDS[self.cfg.search.planner].family == "agent":  # the model's own note, each
            facts = note + "\n" + "\n".join(f"- {line}" for line in ExperimentView(self._domain()).history(12)
                                             .splitlines())  # number checked against the measurements
            results["reflection"] = reflect(model, facts, self.records, self.run_dir.event)
            self.run_dir.save_results(results)
            if results["reflection"]["note"]:
                note += f"\n- the agent's note (its numbers checked): {results['reflection']['note']}"
        self.workspace.add_note(self.model_hash, note)
        log_results(self.tracker, results, self.run_dir.path)
        return results


class CompressObjective:
    """What a compress trial runs (``core.search.loop.Objective``): the experiment its plan holds (the base model
    for the base trial), read back from the workspace when this model, experiment and measurement set-up were
    measured before, scored against the base; the goal's objective values and the constraint violation go to the
    study, the record to the trial."""

    pareto = True  # several objectives and a constraint violation

    def __init__(self, search: Search):
        self.search = search

    def check(self, params: dict[str, Any]) -> list[str]:
        return []

    def run(self, number: int, params: dict[str, Any], report: Callable[[int, float], bool]) -> dict[str, Any]:
        s = self.search
        plan = store_of(s.study).get(number).user_attrs.get(R.A_PLAN, {})
        data = plan.get("extra", {}).get("experiment")
        exp = None if plan.get("planner") == "base" else \
            Experiment.model_validate(data) if data is not None else to_experiment(params)
        record = s._obtain(exp, number)
        base = record.get("metrics", {}) if exp is None else s._base_metrics()
        values = None
        if record.get("state") == "done":  # scored against the base (a failed record has its verdict: ``_failed``)
            record["derived"] = derive(record["metrics"], base)
            record["feasible"], record["violation"], record["broken"] = check(s.goal, record["derived"],
                                                                              derive(base, base))
            values = objective_values(s.goal, record["derived"])
        return {"values": values or [None], "violation": record.get("violation"),
                "record": json.loads(json.dumps(record, default=str))}


class Feasibility:
    """compress's verdict on a finished experiment (``core.search.loop.Evaluator``): kept when it meets the goal's
    constraints."""

    def decide(self, value: float | None, metrics: dict[str, Any], params: dict[str, Any], best: Any) -> Decision:
        record = metrics.get("record", {})
        if record.get("state") != "done":
            return Decision(False, f"failed: {record.get('error')}", "rule")
        if record.get("feasible"):
            return Decision(True, "meets the goal's constraints", "rule")
        return Decision(False, f"breaks {', '.join(record.get('broken') or [])}", "rule")


class WithExperiment(Wrapper):
    """The planner's proposal with the experiment its params stand for (the LLM's own one exactly as it gave it)
    in its plan, so any worker, and a resumed run, runs that experiment."""

    def propose(self, ctx: PlanContext) -> Proposal:
        proposal = self.inner.propose(ctx)
        exp = cast(ExperimentDomain, ctx.domain).experiment(proposal.params)
        proposal.extra = {**proposal.extra, "experiment": exp.model_dump(mode="json"), "key": experiment_key(exp)}
        return proposal


def _failed(label: str, exp: Experiment | None, error: str) -> dict[str, Any]:
    """The record of an experiment that failed: nothing measured, no constraint met."""
    return {"label": label, "experiment": exp.model_dump() if exp else None, "state": "failed", "error": error[:300],
            "metrics": {}, "reused": False, "derived": {}, "feasible": False, "violation": None, "broken": ["failed"]}


def _measured(result: dict[str, Any]) -> dict[str, Any]:
    keys = ("label", "experiment", "steps", "metrics", "seconds", "state")
    return {k: result.get(k, "done" if k == "state" else None) for k in keys}


# --------------------------------------------------------------------------- summaries


def spent_co2e(records: list[dict[str, Any]]) -> float:
    """kg CO2e of the experiments this run really ran (reused ones cost nothing now)."""
    return sum(r.get("metrics", {}).get("co2e_kg") or 0.0 for r in records if not r.get("reused"))


def best_summary(goal: Goal, records: list[dict[str, Any]]) -> dict[str, Any]:
    """best.json: the recommended experiment (feasible: true), else the closest one (feasible: false)."""
    done = [r for r in records[1:] if r.get("state") == "done"]
    best = choose_best(goal, done)
    base = records[0] if records else None
    if best is None:
        return {"best": None, "feasible": False, "reason": "no experiment finished yet", "goal": goal.describe(),
                "base": _brief(base)}
    return {"index": best["index"], "label": best["label"], "feasible": best["feasible"], "goal": goal.describe(),
            "broken": best["broken"], "experiment": best["experiment"], "best": _brief(best), "base": _brief(base),
            "base_feasible": bool(base and base.get("feasible")),
            # the base meets the constraints and no experiment that does is better on the goal: keep the base model
            "keep_base": bool(base and base.get("feasible")) and not improves_on_base(goal, base, done)}


def _brief(record: dict[str, Any] | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {"index": record["index"], "label": record["label"], "metrics": record.get("metrics"),
            "derived": record.get("derived"), "reused": record.get("reused")}


def summarise(cfg: CompressConfig, goal: Goal, records: list[dict[str, Any]], stop_reason: str,
              workspace: str) -> dict[str, Any]:
    done = [r for r in records if r.get("state") == "done"]
    on_front = feasible_front(goal, done)
    ran = [r for r in records if not r.get("reused") and r.get("metrics")]  # what the energy was spent on
    modes = sorted({r["metrics"].get("energy_mode", "estimated") for r in ran})
    mode = modes[0] if len(modes) == 1 else ("partly measured" if modes else "none run")
    return {
        "model": cfg.model, "objective": cfg.objective, "goal": goal.describe(), "planner": cfg.search.planner,
        "recommended": best_summary(goal, records), "base": _brief(records[0]) if records else None,
        "front": [done[i]["index"] for i in on_front],
        "experiments": [{k: r.get(k) for k in ("index", "label", "experiment", "state", "planner", "proposed_by",
                                               "origin", "choice", "candidates", "note", "reused", "feasible",
                                               "broken", "violation", "metrics", "derived", "error")}
                        for r in records],
        "counts": {"experiments": len(records) - 1, "reused": sum(bool(r.get("reused")) for r in records),
                   "ran": sum(not r.get("reused") for r in records),
                   "failed": sum(r.get("state") == "failed" for r in records)},
        "energy": {"energy_kwh": sum(r["metrics"].get("energy_kwh") or 0.0 for r in ran),
                   "co2e_kg": spent_co2e(records), "mode": mode, "modes": modes, "budget_kg": cfg.carbon_budget,
                   "experiments_run": len(ran)},
        "stop_reason": stop_reason, "workspace": workspace, "llm_contribution": None,
    }


def knowledge_note(goal: Goal, records: list[dict[str, Any]], results: dict[str, Any], run_name: str) -> str:
    """A short Markdown note for the workspace: the goal, the recommendation, what broke the constraints."""
    rec = results["recommended"]
    lines = [f"### {run_name}: {goal.describe()}"]
    if rec.get("best"):
        d = rec["best"]["derived"] or {}
        status = "meets the constraints" if rec["feasible"] else "closest; no experiment met the constraints"
        lines.append(f"- best: {rec['label']} ({status}): speedup {fmt(d.get('speedup'))}, accuracy "
                     f"{fmt(d.get('accuracy'))}, perplexity {fmt(d.get('perplexity'))}, size {fmt(d.get('size'))} MB")
    hurt = [r for r in records[1:] if r.get("state") == "done" and not r.get("feasible")]
    for r in sorted(hurt, key=lambda r: -(r.get("violation") or 0))[:3]:
        lines.append(f"- hurt: {r['label']} broke {', '.join(r['broken'])}")
    for r in records[1:]:
        if r.get("state") == "failed":
            lines.append(f"- failed: {r['label']}: {r.get('error')}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- Python API


def _sets(overrides: list[str] | None, **given: Any) -> list[Any]:
    """The Python API's settings as overrides: ``overrides``, then each keyword given (``max_iterations=3`` reaches
    search.max_iterations: CompressConfig.MOVED_KEYS)."""
    return [*override_list(overrides), *(Flag(key, key, value) for key, value in given.items() if value is not None)]


def _load(model_name: str | None, objective: str | None, carbon_budget: float | None, config: Any,
          overrides: list[str] | None, **fields: Any) -> CompressConfig:
    sets = _sets(overrides, model=model_name, objective=objective, carbon_budget=carbon_budget, **fields)
    if isinstance(config, CompressConfig | dict):
        base = config.model_dump(mode="json") if isinstance(config, CompressConfig) else config
        return load_config(None, CompressConfig, sets, base=base, schema="compress")
    return load_config(config, CompressConfig, sets, schema="compress")


def dry_run(cfg: CompressConfig, prepared: Prepared) -> dict[str, Any]:
    """What a run would do, without measuring or writing anything: the goal, the space, the warm start's leads."""
    p = prepared
    return {"config": "ok", "goal": p.goal.describe(), "planner": cfg.search.planner,
            "max_iterations": cfg.search.max_iterations, "device": p.inputs.device, "space": p.space.describe(),
            "warm_start": [c for c, _ in p.leads],
            "message": "\n".join([
                f"config ok; goal: {p.goal.describe()}; model {cfg.model} on {p.inputs.device}",
                f"planner: {cfg.search.planner}, {cfg.search.max_iterations} experiment(s) after the base model",
                "space (the settings an experiment, and warm_start's entries, choose from):",
                *(f"  {k}: {', '.join(str(v) for v in values)}" for k, values in p.space.describe().items()),
                *([f"warm start: {len(p.leads)} experiment(s) first: "
                   + "; ".join(", ".join(f"{k}={v}" for k, v in c.items()) for c, _ in p.leads)] if p.leads else []),
                "dry run: nothing measured, no run folder written"])}


def plan_compression(model_name: str | None = None, objective: str | None = None,
                     carbon_budget: float | None = None, *, config: Any = None, overrides: list[str] | None = None,
                     **fields: Any) -> dict[str, Any]:
    """Parse and validate without running: the goal, the texts, the model, and the space the planner searches."""
    cfg = _load(model_name, objective, carbon_budget, config, overrides, **fields)
    p: Prepared = prepare(cfg, dry_run=True)["prepared"]
    return {"model": cfg.model, "model_path": p.inputs.model, "goal": p.goal.describe(),
            "objectives": [o.model_dump() for o in p.goal.objectives],
            "constraints": [c.model_dump() for c in p.goal.constraints], "planner": cfg.search.planner,
            "max_iterations": cfg.search.max_iterations, "carbon_budget": cfg.carbon_budget, "device": p.inputs.device,
            "space": p.space.describe(), "eval_chars": len(p.inputs.eval_text),
            "calib_chars": len(p.inputs.calib_text), "questions": len(p.inputs.questions)}


def check_resume(cfg: CompressConfig, folder: Path) -> None:
    """A resume's study is there (``RunDirError``: a new one would run the finished experiments again and drop them
    from experiments.jsonl), and its ``max_iterations`` is at least the experiments its run already finished
    (``UsageError``: below it, the one a kill left running ran all the same and the summary said the smaller total
    was reached)."""
    try:
        records = [json.loads(line) for line in (folder / STATE).read_text(encoding="utf-8").splitlines()
                   if line.strip()]
        done: int | None = sum(1 for r in records if r.get("experiment") is not None)  # the base model is free
    except (OSError, ValueError, AttributeError):
        records, done = [], None
    measured = sum(1 for _ in read_events(folder, "experiment"))  # a kill before experiments.jsonl was written
    # a study file of 0 bytes is as gone as a missing one: opening it made a new study in it (and the refusal that
    # followed left the folder changed); refused before anything opens it
    file = missing_study(cfg.search.storage, folder, empty=True)
    if (records or measured) and file is not None:
        held = (f"its base model and {done} finished experiment(s), {STATE}" if records else
                f"the {measured} measurement(s) the run finished, events.jsonl")
        gone = "empty (0 bytes)" if Path(file).exists() else "missing"
        raise RunDirError(f"{file}: the study of {folder} is {gone} (it holds {held})",
                          hint="restore the file, or start a new run (the workspace reuses what was measured)")
    if done is not None and cfg.search.max_iterations < done:
        raise UsageError(f"--max-iterations {cfg.search.max_iterations} is below the {done} experiments {folder} "
                         "already finished (search.max_iterations is the total, not the experiments to add)",
                         hint=f"give a total of at least {done} (above it to search on), or leave it out to finish "
                         "the run's own")


def run_compression(model_name: str | None = None, objective: str | None = None, carbon_budget: float | None = None,
                    *, config: Any = None, overrides: list[str] | None = None, out: str | Path | None = None,
                    resume: str | Path | None = None, progress: Progress | None = None, chooser: Any = None,
                    llm: LLMConfig | str | Path | None = None, **fields: Any) -> dict[str, Any]:
    """Python API: run the search in a run folder (new, ``out``, or ``resume``) and return results.json's content.
    ``fields``: any other config field, e.g. ``max_iterations=3``, ``planner="random"``; ``chooser`` (with
    ``planner="llm"``): a scripted chooser in place of the planner model (``agentlab.testing.choosers``); ``llm``:
    this call's routing config, as ``--llm`` (a file or an ``LLMConfig``; when not given, a resumed run's llm.yaml,
    else the config's ``llm`` field), e.g. ``agentlab.testing.agents.scripted_llm(agent)`` for a scripted agent model
    (``planner="agent"``)."""
    resume_dir = resume_target("compress", resume, out=out, option="resume=")
    if resume_dir is not None:  # the run's own config, with this call's settings on top (checked as a resume's)
        if config is not None:
            raise UsageError("resume= and config= both given", hint="a resumed run reads its own config.yaml; give "
                             "changes as settings (max_iterations=10) or overrides")
        sets = _sets(overrides, model=model_name, objective=objective, carbon_budget=carbon_budget, **fields)
        cfg = load_config(resume_dir / "config.yaml", CompressConfig, sets, schema="compress")
        check_resume(cfg, resume_dir)
    else:
        cfg = _load(model_name, objective, carbon_budget, config, overrides, **fields)
    cfg.workspace = workspace_root(cfg.workspace, resume_dir)  # absolute in config.yaml, as the CLI keeps it
    from agentlab.core.runs import routing_config

    inputs = prepare(cfg, routing_config(llm, resume_dir, overrides or []), chooser=chooser, llm_given=llm is not None)
    results, _ = run_in_folder("compress", cfg, run, inputs=inputs, out=out, resume=resume_dir,
                               progress=progress)
    return dict(results)
