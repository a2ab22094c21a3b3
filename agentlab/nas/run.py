"""`agentlab nas`: LLM-planned architecture search for a forecaster on the shared ask/tell search loop.

planner (llm: the LLM chooses among TPE's candidates | tpe | random) -> executor (apply validated changes, train one
model of the trial's family) -> hybrid evaluator -> update.
State lives in the Optuna study (SQLite in the run folder by default) and is mirrored to ``agent_state.json`` after
every trial, so a killed search resumes with ``--resume`` without losing or repeating finished trials.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pydantic import ValidationError

from agentlab.core.agent.approval import AwaitingApproval
from agentlab.core.config import Flag, config_where, load_config, override_list
from agentlab.core.errors import AgentlabError, ConfigError, RunDirError, UsageError, missing_package, storage_error
from agentlab.core.files import deferred_interrupts
from agentlab.core.llm.config import LLMConfig, builtin_name, load_llm_config
from agentlab.core.models.device import resolve_device_dtype
from agentlab.core.progress import NullProgress, Progress
from agentlab.core.runs import (
    COMPLETED,
    DATA_KEY,
    LLM_FILE,
    RunDir,
    check_data_unchanged,
    data_sha256,
    moved_data,
    read_json,
    resume_target,
    routing_config,
    run_in_folder,
    run_status,
    runs_root,
    say_moved_data,
    shared_settings,
)
from agentlab.core.search.engine import store_of, url_where
from agentlab.core.search.evaluator import HybridEvaluator
from agentlab.core.search.kinds import DEFAULT_SAMPLER, KINDS, label
from agentlab.core.search.loop import (
    Hooks,
    Objective,
    Pruned,
    SearchLoop,
    StopReason,
    StopRules,
    require_finished_trials,
)
from agentlab.core.search.planners import (
    Chooser,
    PlanContext,
    Planner,
    Proposal,
    TrialDomain,
    WarmStart,
    Wrapper,
    params_key,
    trial_results,
)
from agentlab.core.search.records import TrialRecord, best_of, run_id, state_counts, state_dict
from agentlab.core.search.session import (
    PlannerSession,
    PlannerSpec,
    dry_run_line,
    llm_source,
    open_planner,
    require_planner_model,
)
from agentlab.core.search.space import SearchSpace
from agentlab.core.search.study import (
    Direction,
    await_labels,
    check_storage,
    missing_study,
    open_study,
    peek_study,
    study_records,
    unfinished_trials,
)
from agentlab.core.tracking import check_tracking, open_tracker
from agentlab.nas.agent import literature_leads, nas_kit
from agentlab.nas.best import kept_config, prune_checkpoints, remember_base, remember_hydra, write_best
from agentlab.nas.code_agent import CodeHybrid, CodeSearch, chain_of
from agentlab.nas.code_agent import table as code_table
from agentlab.nas.code_change import CodeRules
from agentlab.nas.command import CommandObjective
from agentlab.nas.config import (
    NAIVE_FAMILIES,
    NASConfig,
    apply_changes,
    check_warm_start,
    get_dotted,
    sets_over_per_family,
    space_values,
)
from agentlab.nas.ensemble import ORIGINS, PREDICTIONS, REFERENCES, EnsembleBuilder, save_predictions
from agentlab.nas.own_code import (
    command_objective,
    command_space,
    dry_run_command,
    prepare_command,
    refuse_empty_objective,
    render_command_report,
    summarise_command,
    trial_line,
    without_llm,
)
from agentlab.nas.own_code_agent import command_kit
from agentlab.nas.report import render_report
from agentlab.nas.results import build_ensemble, forecast_without_llm, literature_for, summarise
from agentlab.nas.tracking import log_results, log_trials

if TYPE_CHECKING:
    from agentlab.core.tracking import NullTracker, Tracker
    from agentlab.nas.data import PreparedData

log = logging.getLogger(__name__)
METRIC = "val_mse"
DATA_ATTR = "agentlab:data_sha256"  # study user attribute: the sha256 of the data file the study's trials read
# fewer validation windows than this: the ensemble guard's rolling origins (ORIGINS blocks) hold under 2 windows each,
# and the best trial, early stopping and the ensemble are chosen on a handful of overlapping windows
MIN_VAL_WINDOWS = 2 * ORIGINS


def search_space(cfg: NASConfig) -> SearchSpace:
    """The search space of ``cfg`` with what each key means and the base config's values (conditions, fill-ins); a
    command objective's is over its params."""
    if cfg.objective is not None:
        return command_space(cfg)
    return SearchSpace(cfg.search.space, base=space_values(cfg))


class NASObjective:
    """The executor: a plan's parameters become a validated config (YAML/pydantic only, no code) and one trial."""

    def __init__(self, base: NASConfig, prepared: PreparedData, run_dir: RunDir, progress: Progress,
                 best_value: Callable[[], float | None]):
        self.base, self.prepared, self.run_dir = base, prepared, run_dir
        self.best_value = best_value
        self.task = progress.task("trial", total=base.train.epochs)

    def check(self, params: dict[str, Any]) -> list[str]:
        try:
            config = apply_changes(self.base, params)
        except ValidationError as exc:
            return [_pydantic_message(err) for err in exc.errors()]
        from agentlab.nas.train import check_model, prepare_data  # lazy: imports torch

        prepared = self.prepared
        if config.data != self.base.data:  # windows that do not fit the series: a bad plan, not a failed trial
            try:
                prepared = prepare_data(config)
            except AgentlabError as exc:
                return [exc.message]
        problem = check_model(config, prepared)  # e.g. a lookback shorter than sparsetsf's period
        return [problem] if problem else []

    def run(self, number: int, params: dict[str, Any], report: Callable[[int, float], bool]) -> dict[str, Any]:
        from agentlab.nas.train import TrialPruned, prepare_data, train_trial  # lazy: imports torch

        config = apply_changes(self.base, params)
        # A plan may change the data section (data.seq_len, data.pred_len, ...): the windows then come from this
        # trial's config, not the base's; prepare_data caches each distinct data section, so this costs nothing
        # when the data is unchanged.
        prepared = self.prepared if config.data == self.base.data else prepare_data(config)
        best = self.best_value()
        label = f"{run_id(number)}"
        # the unit last: the bar's count (a log's "3/10 done") follows the description, so it reads "epoch 3/10",
        # not a count of trials beside the search's budget
        self.task.update(completed=0, total=config.train.epochs, description=f"{label} epoch")

        def on_epoch(entry: dict[str, float]) -> None:
            shown = f" best {best:.4f}" if best is not None else ""
            self.task.update(completed=entry["epoch"],
                             description=f"{label} val {entry['val_mse']:.4f}{shown}, epoch")
            self.run_dir.event("epoch", trial=number, **entry)

        folder = self.run_dir.file("trials", label)
        try:
            result = train_trial(config, prepared, folder, report=report, on_epoch=on_epoch,
                                 predictions=self.base.search.ensemble)
        except TrialPruned as exc:
            raise Pruned({"value": exc.val_mse, "val_mse": exc.val_mse, "epochs": exc.epoch}) from None
        if result.predictions is not None:
            save_predictions(self.run_dir.path, folder, result.predictions["val"], result.predictions["test"])
        return {"value": result.val_mse, "val_mse": result.val_mse, "test_mse": result.test_mse,
                "test_mae": result.test_mae, "n_params": result.n_params, "epochs": result.epochs,
                "diverged": result.diverged, "stop": result.stop_reason, "seconds": round(result.seconds, 3)}


def space_families(cfg: NASConfig) -> list[str]:
    """The forecaster families this search may try: ``model.family``'s choices, or the base model's family."""
    spec = cfg.search.space.get("model.family")
    return [str(f) for f in (spec.choices if spec is not None and spec.choices else [cfg.model.family])]


def warm_leads(cfg: NASConfig, prepared: PreparedData | None) -> list[tuple[dict[str, Any], str]]:
    """``search.warm_start`` as leads for ``WarmStart``: the literature's (true, the forecaster) or the user's."""
    warm = cfg.search.warm_start
    if isinstance(warm, list):  # a repeated entry once (it would be skipped, and the count would say one more)
        leads: dict[str, tuple[dict[str, Any], str]] = {}
        for i, changes in enumerate(warm):
            leads.setdefault(params_key(changes), (dict(changes), f"search.warm_start[{i}]"))
        return list(leads.values())
    if warm and prepared is not None:
        return literature_leads(cfg, prepared, space_families(cfg))
    return []


class NaiveFirst(Wrapper):
    """The planner, except that the naive families of the space (``naive_last`` and ``naive_seasonal`` among the
    choices of ``model.family``) run right after the base config, each once: they train nothing (seconds), and with
    them in the pool the best trial and the ensemble are never worse on validation than the naive forecasts, whatever
    the sampler would have drawn. Every other trial is the wrapped planner's."""

    def propose(self, ctx: PlanContext) -> Proposal:
        domain = ctx.domain
        if isinstance(domain, TrialDomain) and ctx.budget_left > 0:
            spec = domain.space.params.get("model.family")
            # run once whatever the code version: not TrialDomain.lead, which counts the best version's trials only
            seen = {params_key(r.params) for r in domain.records if r.state != "interrupted"} | domain.tried
            for family in (f for f in NAIVE_FAMILIES if spec is not None and f in (spec.choices or [])):
                params = domain.space.complete({**domain.base_params, "model.family": family})
                if params_key(params) not in seen and not domain.check(params):
                    return Proposal(params, domain.changes(params), "naive",
                                    f"the {family} forecast: trains nothing, the reference every model must beat")
        return self.inner.propose(ctx)


def _pydantic_message(err: Any) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    return msg if ":" in msg.split(" ")[0] else f"{loc}: {msg}" if loc else msg


# --------------------------------------------------------------------------- planner choice


def planner_spec(cfg: NASConfig, llm: LLMConfig | None, run_dir: RunDir | None = None,
                 chooser: Chooser | None = None, *, prepared: PreparedData | None = None,
                 approver: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
                 announce: Callable[[str], None] | None = None, code: CodeSearch | None = None) -> PlannerSpec:
    """What nas asks of ``core.search.session``: its planner kind, TPE as the classical sampler, the pick memory in
    ``<runs>/nas/llm_picks.json`` (keyed by model). ``chooser``: a scripted chooser in place of the planner model
    (the benchmarks' placebo and surrogate). The agent planner's: its tools over ``prepared`` (``nas.agent``), the
    ``approver`` of --approve. A command objective's agent works on its project
    (``nas.own_code_agent``)."""
    kit = None
    kind = cfg.search.planner
    if kind == "agent" and cfg.objective is not None:
        kit = command_kit(cfg, code)
    elif kind == "agent" and prepared is not None:
        kit = nas_kit(cfg, prepared, space_families(cfg))
    return PlannerSpec(kind=kind, command="nas", settings=cfg.search,
                       llm=llm, run_dir=run_dir, chooser=chooser, memory=runs_root() / "nas" / "llm_picks.json",
                       kit=kit, approver=approver, announce=announce)


def choose_planner(cfg: NASConfig, llm: LLMConfig | None, run_dir: RunDir | None = None,
                   chooser: Chooser | None = None, **agent: Any) -> PlannerSession:
    """The planner session (planner, line saying which planner runs and why, the router of the planner and evaluator
    routes); close it (``with``) when the search ends. ``agent``: ``planner_spec``'s agent arguments."""
    return open_planner(planner_spec(cfg, llm, run_dir, chooser, **agent), evaluator=True)


# --------------------------------------------------------------------------- the run


def make_pruner(cfg: NASConfig) -> Any:
    """The Optuna pruner ``search.pruner`` names. Every trial reports its validation MSE after each epoch (the step),
    so the multi-fidelity pruners cut across families on the same epochs. Hyperband's largest resource is the most
    epochs a trial can train (fixed, not Optuna's "auto", which reads it from whichever trial finished first: an
    early-stopped one, or another worker's, would change the brackets mid-study)."""
    import optuna

    search = cfg.search
    first = search.pruner_warmup
    if search.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=first)
    if search.pruner == "hyperband":  # a command's steps are its own: Optuna reads their range from the trials
        return optuna.pruners.HyperbandPruner(min_resource=first,
                                              max_resource="auto" if cfg.objective else cfg.max_epochs(),
                                              reduction_factor=3)
    if search.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=first, reduction_factor=3)
    return optuna.pruners.NopPruner()


def metric_of(cfg: NASConfig) -> tuple[str, Direction]:
    """The search's metric and its direction: the forecaster's validation MSE, or the command objective's."""
    if cfg.objective is not None:
        return cfg.objective.metric, cfg.objective.direction
    return METRIC, "minimize"


def _hydra_base(objective: CommandObjective, run: Path, project: Path) -> str | None:
    """A Hydra app searched through ``{overrides}`` (no objective.config): its config files as the search starts go
    to ``<run>/base/``, for the best trial's to be written back. Returns the line that says so, or why not; None
    when the command passes no ``{overrides}``."""
    from agentlab.nas.script import script_of

    if objective.config is not None or not objective.passes_overrides():
        return None
    words = objective.parts()
    named = [w for w in words if w.split("=")[0] in ("-cn", "--config-name", "-cp", "--config-path", "-cd",
                                                      "--config-dir")]
    script = script_of(objective.command, objective.cwd)
    not_back = "best config: not written back into your files ({}); the best overrides are in best/command.txt"
    if named:
        return not_back.format(f"the command chooses its config with {named[0]}")
    primary = remember_hydra(run, project, script, objective.cwd) if script is not None else None
    if primary is None:
        return not_back.format("no @hydra.main(config_path=..., config_name=...) with its config file found in "
                               f"{script or 'the command'}")
    return (f"best config: the best overrides are written into {primary} and its groups' option files under "
            f"{run / 'best'} when the search ends (`agentlab nas apply` puts them in your project)")


def _study(cfg: NASConfig, run_dir: RunDir, sha256: str = "") -> Any:
    """The search's study, checked to hold trials of this search's settings (``open_study``) and data file
    (``check_study_data``), which it records when it has none."""
    metric, direction = metric_of(cfg)
    # the run folder's own study, on the data the run started on (a resume checked it): its label takes data.path
    # when the file is read at a new path (a run folder copied to another machine, its data elsewhere)
    moved = (DATA_KEY,) if cfg.search.storage is None and sha256 and sha256 == data_sha256(run_dir.path) else ()
    study = open_study(cfg.search.storage, run_dir.path, name=cfg.search.study_name, directions=[direction],
                       objectives=[metric], pruner=make_pruner(cfg), settings=study_settings(cfg), follow=moved)
    if sha256 and cfg.search.storage is not None:  # the run folder's own study: a resume checks its events
        if not store_of(study).created:
            await_labels(study, [DATA_ATTR])  # a worker started together with the study's creator: its label first
        check_study_data(study, cfg, sha256, record=True)
    return study


def check_study_data(study: Any, cfg: NASConfig, data_sha256: str, *, record: bool = False) -> None:
    """Every worker of a shared study (``search.storage``) reads its own ``data.path``: the same path with other
    content (another machine's copy, a file changed since the study began) would rank its trials against values
    measured on other data, which ``study_settings`` (paths, not contents) cannot tell. ``ConfigError`` then, naming
    the file; a study that records no sha256 yet (new, or made before agentlab recorded it) gets this worker's when
    ``record``. Nothing to compare without a data file (the built-in series)."""
    if study is None or not data_sha256:
        return
    made = study.user_attrs.get(DATA_ATTR)
    if made is None:
        if record:
            study.set_user_attr(DATA_ATTR, data_sha256)
        return
    if made != data_sha256:
        raise ConfigError(f"search.storage: the study {study.study_name!r} in {url_where(cfg.search.storage)} was "
                          "made on other data than this search's (the content of data.path "
                          f"{Path(cfg.data.path or '').absolute()}: sha256 {made[:12]}... -> "
                          f"{data_sha256[:12]}...): its trials' values would not compare with this one's",
                          hint="give every worker the same data file, or give this search another "
                          "search.study_name or storage")


def study_settings(cfg: NASConfig) -> dict[str, str]:
    """What every worker of a shared study must share (``core.runs.shared_settings``): the data, the base config,
    the space, the objective; not its storage and study name (the same study, however it is spelled)."""
    return shared_settings(cfg, "nas", own=("search.storage", "search.study_name"))


def require_budget(folder: Path, max_iterations: int, storage: str | None = None, name: str = "nas") -> None:
    """A resume's study is there and can be read (``RunDirError``: a new one would run every finished trial again; a
    damaged one is the error the run's open would give, before the resume says anything) and its total is
    at least the trials its run already finished and the ones a stop left unfinished (``UsageError`` otherwise):
    below it, the trial a kill left running ran all the same and the summary said the smaller total was reached."""
    from agentlab.nas.report import finished_of

    # read once: the finished trials and the unfinished ones; a study there that cannot be read is the run's error
    records = study_records(storage, folder, name, check=True)  # now, before the resume says what it keeps
    done = len(finished_of(folder, records) or [])
    # a study file of 0 bytes is as gone as a missing one: opening it would make a new, empty study in it
    if done and (file := missing_study(storage, folder, empty=True)) is not None:
        gone = "empty (0 bytes)" if Path(file).exists() else "missing"
        raise RunDirError(f"{file}: the study of {folder} is {gone} (it holds the {done} trial(s) the run finished)",
                          hint="restore the file, or start a new run")
    # the study's unfinished trials each end counted (the total is the study's): this run's, which a resume runs
    # again first (its folder is under trials/), and another worker's of a shared study
    waiting = unfinished_trials(records)
    if waiting and max_iterations < done + len(waiting):
        ours = [run_id(n) for n, where in waiting.items() if _this_runs(folder, n, where)]
        others = [run_id(n) for n in waiting if run_id(n) not in ours]
        held = "; ".join([*([f"{', '.join(ours)}, which this search was running when it stopped (a resume runs it "
                             "again first)"] if ours else []),
                          *([f"{', '.join(others)}, unfinished in the study (another worker's)"] if others else [])])
        raise UsageError(f"--max-iterations {max_iterations} leaves no place for {held}; {done} finished, and each "
                         "of these counts when it ends", hint=f"give a total of at least {done + len(waiting)}")
    if max_iterations < done:
        raise UsageError(f"--max-iterations {max_iterations} is below the {done} trials {folder} already finished "
                         "(search.max_iterations is the search's total, not the trials to add)",
                         hint=f"give a total of at least {done} (--max-iterations {done + 4} runs up to 4 more), or "
                         "leave it out to finish the run's own")


def prepare(cfg: NASConfig, llm: LLMConfig | str | Path | None = None, *, scripted: bool = False,
            config_file: str | Path | None = None, resume: Path | None = None,
            sets: Sequence[str | Flag] = ()) -> dict[str, Any]:
    """Everything that can be checked before a run folder exists: the routing config, that ``--planner llm`` has a
    planner model, the base config inside the search space, the device, the data (read, split and windowed) and the
    MLflow tracking URI; for a command objective, ``own_code.prepare_command`` (``config_file``: the YAML file,
    whose folder the command runs in).
    Returns ``run``'s keyword arguments ``llm`` (``named`` when the caller named it, not the default routing nor a
    resumed run's own copy: ``LLMConfig.named``) and ``data``. ``scripted``: a scripted chooser
    stands in for the planner model (no model needed). ``resume``: the run folder a resume continues (its
    objective.config must be the file the search started from). ``sets``: the ``--set`` strings and options given,
    which an error about a key names when they set it (else the config file's line: ``config_where``); a ``train``
    key among them holds for every family, over ``train.per_family`` (``sets_over_per_family``: one warning line).
    """
    replaced = sets_over_per_family(cfg, sets)
    if replaced is not None:
        log.warning("%s", replaced)
    if resume is not None:
        require_budget(resume, cfg.search.max_iterations, cfg.search.storage, cfg.search.study_name)
    elif cfg.search.storage is not None:
        check_storage(cfg.search.storage)  # a journal file in a folder that does not exist too
    given = resume / "config.yaml" if resume is not None else config_file
    if cfg.objective is not None:
        if resume is not None:  # the file edited since the start: the trials go on with its copy as it started
            cfg.objective._kept_config = kept_config(resume)
        inputs = prepare_command(cfg, llm, config_file, scripted=scripted,
                                 where=lambda loc: config_where(given, sets, loc))
    else:
        if resume is not None:
            check_moved_data(resume, cfg)
        if resume is not None and cfg.data.path is not None and not check_data_unchanged(resume, cfg.data.path) \
                and _finished(resume):
            log.warning("%s records no sha256 of data.path %s (made before agentlab recorded it): a change to the file "
                        "since the run started cannot be told; from this resume on it is checked", resume,
                        cfg.data.path)
        inputs = _prepare_forecaster(cfg, llm, scripted=scripted, config_file=config_file,
                                     where=lambda loc: config_where(given, sets, loc))
    by_user = llm is not None and not (resume is not None and isinstance(llm, (str, Path))
                                       and Path(llm) == resume / LLM_FILE)
    if by_user and inputs["llm"] is not None:
        inputs["llm"].named = True
    if by_user and KINDS[cfg.search.planner].family == "sampler" \
            and not inputs["llm"].has_route("evaluator"):  # it would be read, then used by nothing
        named = llm_source(llm) or "the routing config"
        why = (": a built-in model's name sets only the default route, and a sampler's search asks only an "
               "'evaluator' route (the judge inside the noise band), which falls back to nothing"
               if builtin_name(named) is not None else f", and {named} defines no 'evaluator' route (the judge "
               "inside the noise band), the one a sampler's search asks")
        raise UsageError(f"--llm {named}: --planner {cfg.search.planner} uses no model{why}",
                         hint="leave out --llm, use --planner agent or --planner llm to have its model plan, "
                         "or give a routing file with an evaluator route (routes: {evaluator: {primary: [MODEL]}})")
    if resume is None and cfg.search.storage is not None:  # once cfg is as the run keeps it (objective.cwd, data.freq)
        metric, direction = metric_of(cfg)  # a shared study of another goal or other settings: refused before any
        study = peek_study(cfg.search.storage, cfg.search.study_name, [direction], [metric],  # run folder exists
                           settings=study_settings(cfg))  # (the run's open_study checks the same)
        if cfg.objective is None:
            check_study_data(study, cfg, inputs["data"].sha256)
    return inputs


def check_moved_data(folder: Path, cfg: NASConfig) -> None:
    """A resume whose data.path names another file than the run's, holding the data the run started on
    (``core.runs.moved_data``: a run folder copied to another machine, its data elsewhere), says so in one line
    (``core.runs.say_moved_data``, as train-persona's); the run keeps the new path (its config.yaml, and its own
    study's label). A run on a shared study (search.storage) is refused (``UsageError``, nothing written): every
    worker of it reads data.path as the study records it."""
    kept = moved_data(folder, cfg)
    if kept is None:
        return
    now = Path(cfg.data.path or "").absolute()
    if cfg.search.storage is not None:
        raise UsageError(f"{folder}: data.path {now} holds the data the run started on at {kept}, but the run's "
                         f"study is shared (search.storage {url_where(cfg.search.storage)}) and its workers all read "
                         "data.path as the study records it; nothing was written",
                         hint=f"put the file at {kept} and resume with data.path there")
    say_moved_data(kept, now)


def _prepare_forecaster(cfg: NASConfig, llm: LLMConfig | str | Path | None, *, scripted: bool,
                        config_file: str | Path | None,
                        where: Callable[[tuple[str | int, ...]], str | None] | None = None) -> dict[str, Any]:
    if config_file is not None:
        refuse_empty_objective(config_file)
    from agentlab.nas.train import check_model, prepare_data  # lazy: imports torch

    try:
        import optuna  # noqa: F401  (the search's store: missing, it is one line before any run folder exists)
    except ImportError as exc:
        raise missing_package(exc) or exc from None
    if cfg.search.target is not None and cfg.search.target < 0:  # an MSE: the search would never stop on it
        at = where(("search", "target")) if where is not None else None
        given = f"{at}: " if at is not None and at.startswith("--") else \
            f"{at + ': ' if at else ''}search.target {cfg.search.target:g}: "
        raise ConfigError(f"{given}the forecaster's validation MSE is never below 0, so the search would never reach "
                          "it",
                          hint="give a validation MSE of 0 or more (e.g. --target 0.3), or leave it out")
    problem = cfg.informer_space()
    if problem:  # before the data is read: a dry run says it too
        raise ConfigError(problem, hint="in the YAML (-c) or e.g. --set 'search.space={model.revin: {choices: [true, "
                          "false]}, train.learning_rate: {low: 0.0001, high: 0.01, log: true}}'")
    space = search_space(cfg)
    space.check_base({k: get_dotted(cfg, k) for k in cfg.search.space})
    check_warm_start(cfg, space, where)
    # train.device=cuda without CUDA: one error now, not a failure in every trial
    resolve_device_dtype(cfg.train.device, what="train.device")
    llm_cfg = llm if isinstance(llm, LLMConfig) else load_llm_config(llm)
    require_planner_model(llm_cfg, cfg.search.planner, scripted=scripted, source=llm_source(llm))
    prepared = prepare_data(cfg)
    cfg.data.freq = prepared.freq  # data.freq auto: config.yaml records the frequency detected from the timestamps
    problem = check_model(cfg, prepared)
    if problem:  # the base config is trial 0: one error now, not a failed reference trial
        raise ConfigError(problem, hint="change the base model or data.seq_len")
    few = few_windows_line(prepared, cfg.data.seq_len, cfg.data.pred_len)
    if few is not None:
        log.warning("%s", few)
    check_tracking(cfg.mlflow)
    return {"llm": llm_cfg, "data": prepared}


def few_windows_line(prepared: PreparedData, seq_len: int, pred_len: int) -> str | None:
    """The warning when the validation split holds fewer than ``MIN_VAL_WINDOWS`` windows, on which the best trial,
    early stopping and the ensemble would be chosen; None otherwise."""
    from agentlab.nas.data import rows_needed

    n = len(prepared.val)
    if n >= MIN_VAL_WINDOWS:
        return None
    more = ""
    if prepared.split == "ratio":  # the fixed ETT borders grow no windows with more rows
        more = f" (about {rows_needed(seq_len, pred_len, prepared.split, MIN_VAL_WINDOWS)} rows at these windows)"
    return (f"data: only {n} validation window{'' if n == 1 else 's'} ({len(prepared.train)} train / {n} val / "
            f"{len(prepared.test)} test): the best trial, early stopping and the ensemble's rolling origins are "
            f"decided on {'it' if n == 1 else 'them'}; give more rows{more}, or a shorter data.pred_len (the "
            f"lookback, data.seq_len, does not change the count), for at least {MIN_VAL_WINDOWS}")


def _finished(folder: Path) -> bool:
    from agentlab.nas.report import finished_runs

    return bool(finished_runs(folder))


def nothing_to_run(cfg: NASConfig, folder: Path) -> dict[str, Any] | None:
    """A resume with nothing left to run: its results.json (the summary to say again) when the run completed, its
    study holds ``search.max_iterations`` finished trials and none left running, its results.json and report.md are
    of these trials, and ``cfg`` (prepared) is the config the run keeps (a --set or --mlflow given now runs the
    search's ending again, as before); else None. A resume that ran nothing rewrote the results, the ensemble, the
    report and its plots (most of a minute), and recorded itself in run.json."""
    from agentlab.nas.report import finished_of

    try:  # a run folder's files as its other readers read them (RunDirError, an AgentlabError, when damaged)
        status, results = run_status(folder), read_json(folder / "results.json")
        kept = load_config(folder / "config.yaml", NASConfig, schema="nas")
    except (OSError, ValueError, AgentlabError):
        return None
    if status != COMPLETED or not isinstance(results, dict) \
            or not (folder / "report.md").is_file() or kept.model_dump(mode="json") != cfg.model_dump(mode="json"):
        return None
    records = study_records(cfg.search.storage, folder, cfg.search.study_name)
    done = finished_of(folder, records)
    if not records or done is None or len(done) < cfg.search.max_iterations or unfinished_trials(records) \
            or results.get("trials") != len(records) or results.get("states") != state_counts(records):
        return None  # a shared study's trial another host ended since, as the same count in other states too
    if not all(p.is_file() for p in _ending_files(folder, results)):
        return None
    return {**results, "ran_here": 0}  # the summary as the run left it, but none run by this call


def _ending_files(folder: Path, results: dict[str, Any]) -> list[Path]:
    """The files a search's ending wrote that a resume would write again when gone: the report's own links (its
    plots), the best trial's files and patch, the ensemble."""
    import re

    report = (folder / "report.md").read_text(encoding="utf-8", errors="replace")
    files = [folder / link for link in re.findall(r"\]\(([^)\s:#]+)\)", report)]
    best = results.get("best_files")
    if isinstance(best, dict):
        files += [folder / "best" / str(name) for name in best.get("files") or []]
        files += [folder / "best.patch"] if best.get("patch") else []
    return files + ([folder / "ensemble.json"] if results.get("ensemble") else [])


def dry_run(cfg: NASConfig, llm: LLMConfig | None = None, data: Any = None) -> dict[str, Any]:
    """What a run would do, without training or writing anything: data windows, base model, search space, and the
    planner line the run would say (no request sent: ``session.dry_run_line``)."""
    planner, planner_line = dry_run_line(planner_spec(cfg, llm))
    if cfg.objective is not None:
        return dry_run_command(cfg, planner, planner_line)
    from agentlab.nas.train import describe_model, prepare_data  # lazy: imports torch

    prepared = data if data is not None else prepare_data(cfg)
    model, line = describe_model(apply_changes(cfg, {}), prepared)
    return {
        "config": "ok",
        "data": {"path": str(cfg.data.path) if cfg.data.path else "synthetic", "train": len(prepared.train),
                 "val": len(prepared.val), "test": len(prepared.test), "channels": prepared.enc_in,
                 "split": prepared.split},
        "model": model,
        "planner": planner, "planner_line": planner_line, "search_space": list(cfg.search.space),
        "max_iterations": cfg.search.max_iterations,
        "message": (f"config ok; data: {len(prepared.train)} train / {len(prepared.val)} val / {len(prepared.test)} "
                    f"test windows, {prepared.enc_in} channels ({prepared.split} split)\n"
                    f"base model: {line}; search space: {', '.join(cfg.search.space)}\n"
                    + f"{planner_line}\n"
                    + "dry run: nothing trained, no run folder written"),
    }


def run(cfg: NASConfig, run_dir: RunDir, *, llm: LLMConfig | None = None, data: Any = None,
        progress: Progress | None = None, announce: Callable[[str], None] | None = None,
        chooser: Chooser | None = None, approver: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        ) -> dict[str, Any]:
    """Search, write agent_state.json / results.json / report.md, and return the results dict; with ``cfg.mlflow``
    each trial is an MLflow child run of the run's parent run (``agentlab.nas.tracking``).

    ``data``: the prepared data from ``prepare`` (read from ``cfg.data`` when not given). ``chooser``: a scripted
    chooser in place of the planner model (``agentlab.testing.choosers``; the planner benchmark's placebo and
    surrogate); ``approver``: answers --approve's questions (the CLI asks in the terminal).
    """
    with open_tracker(cfg.mlflow, "agentlab-nas", run_dir, params=cfg.model_dump(mode="json")) as tracker:
        return _search(cfg, run_dir, tracker, llm=llm, data=data, progress=progress, announce=announce,
                       chooser=chooser, approver=approver)


def _search(cfg: NASConfig, run_dir: RunDir, tracker: Tracker | NullTracker, *, llm: LLMConfig | None, data: Any,
            progress: Progress | None, announce: Callable[[str], None] | None,
            chooser: Chooser | None = None, approver: Callable[[dict[str, Any]], dict[str, Any]] | None = None
            ) -> dict[str, Any]:
    progress = progress or NullProgress()
    announce = announce or log.info
    metric, direction = metric_of(cfg)
    own = cfg.objective is not None  # the user's command: no data, families, ensemble or literature
    prepared = None if own else _prepared(cfg, data)
    if prepared is not None and prepared.sha256:  # the first one is the run's: a resume compares the file with it
        run_dir.event("data", path=str(cfg.data.path), sha256=prepared.sha256)
    space = search_space(cfg)
    code = code_search(cfg, run_dir)
    with choose_planner(cfg, llm, run_dir, chooser, prepared=prepared, approver=approver, announce=announce,
                        code=code) as session:
        announce(session.line)
        run_dir.event("planner", line=session.line)
        if session.evaluator is not None:
            announce("evaluator: rules, and the 'evaluator' route inside the noise band")
        evaluator = HybridEvaluator(cfg.search.min_delta, router=session.evaluator, metric=metric,
                                    direction=direction)
        study = _study(cfg, run_dir, prepared.sha256 if prepared is not None else "")
        holder: dict[str, Any] = {"best": None, "ensemble": None}
        leads = warm_leads(cfg, prepared)
        if leads:
            announce(f"warm start: {len(leads)} lead(s) run first after the base config (search.warm_start)")
        objective = _objective(cfg, prepared, run_dir, progress, lambda: holder["best"])
        spaces = objective.workspaces if isinstance(objective, CommandObjective) else None
        if spaces is not None:
            spaces.cleanup()  # worktrees a killed run left registered
        loop: SearchLoop | None = None
        finished: set[int] = set()
        stopped = False
        # from the run's branch made (spaces.prepare) on, a stop releases it: a closed pipe while the workspaces line
        # was said (a resume's ``| head``) left the branch in the user's repo with nothing committed on it
        try:
            if spaces is not None:
                holder["workspace"] = spaces.prepare()
                announce(holder["workspace"])
                words = cast(CommandObjective, objective).argv()
                moved = [f"{word} -> {new}" for word, new in zip(words, map(spaces.anchored, words), strict=True)
                         if new != word]
                if moved:
                    announce(f"paths out of the project, given absolute to each trial: {'; '.join(moved)}")
                remember_base(run_dir.path, cast(CommandObjective, objective).config, spaces.project)
                hydra = _hydra_base(cast(CommandObjective, objective), run_dir.path, spaces.project)
                if hydra is not None:
                    announce(hydra)
            planner: Planner = NaiveFirst(WarmStart(session.planner, leads))
            if code is not None:
                planner = CodeHybrid(planner, code)
                if spaces is not None:
                    code.repo, code.branch, code.start_commit = spaces.repo, spaces.branch, spaces.commit
                announce(f"code changes: the agent may change {code.files_line()}; each runs as a trial and is "
                         f"kept when {metric} improves by more than {cfg.search.min_delta:.0%}; then "
                         f"{code.tune_every} {label(code.sampler)} trials tune the params on it")
            on_state, on_trial = _on_trial(cfg, run_dir, tracker, study, holder, announce, code, prepared)
            loop = SearchLoop(study=study, space=space, base_params=space.complete(space.base),
                              objective=objective, planner=planner,
                              evaluator=evaluator,
                              metric=metric, seed=cfg.search.seed,
                              stop=StopRules(cfg.search.max_iterations, cfg.search.time_budget_s, cfg.search.patience,
                                             cfg.search.target),
                              hooks=Hooks(on_event=run_dir.event, progress=progress, run_dir=str(run_dir.path),
                                          on_state=on_state, on_trial=on_trial))
            if isinstance(objective, CommandObjective) and objective.code is not None:
                objective.code.plan_of = lambda number: loop.store.get(number).user_attrs.get("plan") or {}
            _record_unrecorded(run_dir, loop.records(), on_state)
            finished = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
            # the loop changes the study from its first step (a trial a stop left is queued again, a new one added): a
            # resume stopped from here on did work, and run.json keeps its record (not undone as one that did nothing)
            run_dir.mark_worked()
            outcome = loop.run()
        except KeyboardInterrupt as exc:
            stopped = not isinstance(exc, AwaitingApproval)  # Ctrl-C, SIGTERM; not a question waiting for the UI
            raise
        finally:
            if spaces is not None:
                spaces.cleanup()
                holder["workspace"] = spaces.release() or holder.get("workspace")
            if stopped and own and loop is not None:  # Ctrl-C: the report of what finished, on its way out
                _partial_report(cfg, loop, finished, session.line, run_dir, study, holder.get("workspace"))
        planned = session.planner.report(trial_results(outcome.records, direction == "maximize",
                                                       without_llm(metric) if own else forecast_without_llm))
    if own:  # results.json and report.md even when no trial succeeded: the failures' reasons are in them
        results = summarise_command(cfg, outcome, session.line, planned.get("llm_contribution"),
                                    planned.get("agent"))
        # the searched keys only: objective.params' constants (a short max_epochs for the search) stay as the
        # user's files hold them
        overrides = fixed = None
        if isinstance(objective, CommandObjective) and outcome.best is not None and objective.passes_overrides():
            overrides, fixed = dict(outcome.best.params), objective.fixed_overrides()
        results["best_files"] = write_best(run_dir.path, outcome.best, overrides, fixed)
        results["workspace"] = holder.get("workspace")
        if isinstance(objective, CommandObjective) and objective.ignored_params:
            results["warnings"] = [objective.ignored_params]
        if code is not None:
            results["code_changes"] = code.rows(outcome.records, outcome.best)
            results["code_version"] = {"kept": chain_of(outcome.best), "branch": code.branch}
        run_dir.save_results(results)
        report = render_command_report(cfg, outcome, results, run_dir.path, study)
        if code is not None:
            report = report.rstrip("\n") + "\n" + "\n".join(code_table(results["code_changes"], metric)) + "\n"
        run_dir.save_report(report)
        require_finished_trials(outcome)
        return results
    require_finished_trials(outcome)
    assert prepared is not None
    from agentlab.nas.train import evaluate_baseline  # lazy: imports torch

    results = summarise(cfg, outcome, evaluate_baseline(prepared), session.line, target=prepared.target,
                        literature=literature_for(cfg, prepared), contribution=planned.get("llm_contribution"),
                        ensemble=holder["ensemble"])
    if planned.get("agent") is not None:
        results["agent"] = planned["agent"]
    run_dir.save_results(results)
    run_dir.save_report(render_report(cfg, outcome, results, run_dir.path, study))
    log_results(tracker, results, run_dir.path)
    return results


def _partial_report(cfg: NASConfig, loop: SearchLoop, finished: set[int], planner_line: str, run_dir: RunDir,
                    study: Any, workspace: str | None) -> None:
    """At Ctrl-C, results.json and report.md of the trials finished so far (``partial``; stop reason
    ``interrupted``), so a stopped search's report is there; best/ waits for the search's end, and a --resume, which
    reads the study and agent_state.json only, rewrites both. Never in the way of the exit: a second Ctrl-C or an
    error here leaves them unwritten."""
    try:
        records = loop.records()
        ran = sum(1 for r in records if r.number not in finished and r.state in ("complete", "pruned", "failed"))
        why = StopReason("interrupted", "interrupted: a partial report of the trials finished so far; best/ and "
                         f"best.patch are written when the search finishes (agentlab nas --resume {run_dir.path})")
        outcome = loop.outcome(records, why, ran)
        results = {**summarise_command(cfg, outcome, planner_line), "partial": True, "workspace": workspace}
        run_dir.save_results(results)
        run_dir.save_report(render_command_report(cfg, outcome, results, run_dir.path, study))
    except Exception:
        log.warning("the partial report could not be written", exc_info=True)


def _on_trial(cfg: NASConfig, run_dir: RunDir, tracker: Tracker | NullTracker, study: Any, holder: dict[str, Any],
              announce: Callable[[str], None], code: CodeSearch | None = None,
              prepared: PreparedData | None = None
              ) -> tuple[Callable[[list[TrialRecord]], None], Callable[[list[TrialRecord]], None]]:
    """``Hooks``' ``on_state`` and ``on_trial``. ``on_state``, in one step with the trial's end (Ctrl-C held):
    agent_state.json and ``holder["best"]``; for a command objective one console line per trial finished here.
    ``on_trial``, after it: a command objective's checkpoints pruned and kept code committed; for the forecaster the
    MLflow trials and the ensemble (``holder["ensemble"]``), the naive reference forecasts of ``prepared`` in its
    pool."""
    metric, direction = metric_of(cfg)
    builder = EnsembleBuilder(run_dir.path) if cfg.search.ensemble and cfg.objective is None else None
    # finished before and recorded: not announced again (an interrupted trial, waiting to run again, is announced when
    # it ends; one a stop left unrecorded, when ``_record_unrecorded`` records it)
    unrecorded = set(_unrecorded(run_dir, [TrialRecord.from_frozen(t) for t in study.get_trials(deepcopy=False)]))
    shown = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished() and t.number not in unrecorded}

    def on_state(records: list[TrialRecord]) -> None:
        state = state_dict(records, metric, direction)
        holder["best"] = state["best_value"]
        run_dir.write_json("agent_state.json", state)
        if cfg.objective is not None:
            for r in records:
                if r.number not in shown and r.state in ("complete", "pruned", "failed"):
                    shown.add(r.number)
                    base = next((b.params for b in records if b.number == 0), None)
                    announce(trial_line(r, metric, base))

    def on_trial(records: list[TrialRecord]) -> None:
        if cfg.objective is not None:
            prune_checkpoints(run_dir.path, best_of(records, direction))
            if code is not None:
                code.commit_kept(records)
            return
        log_trials(tracker, study, records, run_dir.path)
        if builder is not None:
            holder["ensemble"] = build_ensemble(cfg, builder, records, study,
                                                naive_references(cfg, prepared, run_dir.path))
            if holder["ensemble"] is not None:
                run_dir.write_json("ensemble.json", holder["ensemble"])

    return on_state, on_trial


def _this_runs(folder: Path, number: int, where: str | None) -> bool:
    """Whether trial ``number`` of a study is run folder ``folder``'s: its trial folder is there, or its plan names
    the folder (a stop before the trial folder was made; a relative one is read from the current folder, so a resume
    from elsewhere knows such a trial by its trial folder only)."""
    return (folder / "trials" / run_id(number)).is_dir() or (
        bool(where) and Path(str(where)).resolve() == folder.resolve())


def _unrecorded(run_dir: RunDir, records: list[TrialRecord]) -> dict[int, TrialRecord]:
    """This run's trials the study holds finished whose ``trial`` event events.jsonl lacks: a run stopped (a
    SIGKILL; a Ctrl-C before agentlab held it there) between the study's record of a trial's end and its own."""
    ours = {r.number: r for r in records if r.state in ("complete", "pruned", "failed")
            and _this_runs(run_dir.path, r.number, r.run_dir)}
    if not ours:
        return {}
    told = {e.get("number") for e in run_dir.events("trial")}
    return {n: r for n, r in ours.items() if n not in told}


def _record_unrecorded(run_dir: RunDir, records: list[TrialRecord],
                       on_state: Callable[[list[TrialRecord]], None]) -> None:
    """Before a resume runs anything: a trial the last run finished but did not record (``_unrecorded``) gets its
    ``trial`` event, agent_state.json and its console line now, so the run's record holds every trial it kept."""
    missing = _unrecorded(run_dir, records)
    if not missing:
        return
    with deferred_interrupts():
        for record in sorted(missing.values(), key=lambda r: r.number):
            run_dir.event("trial", **record.event_fields())
        on_state(records)


def code_search(cfg: NASConfig, run_dir: RunDir) -> CodeSearch | None:
    """The code side of a search whose agent may change code (objective.editable), its start frozen in the run
    folder; None otherwise."""
    objective = cfg.objective
    if objective is None or not objective.editable:
        return None
    code = CodeSearch(CodeRules(objective.editable, objective.protected), Path(objective.cwd or Path.cwd()),
                      run_dir.path, tune_every=cfg.search.tune_every, sampler=DEFAULT_SAMPLER["nas"])
    code.freeze()
    return code


def _prepared(cfg: NASConfig, data: Any) -> PreparedData:
    from agentlab.nas.train import prepare_data  # lazy: imports torch

    return data if data is not None else prepare_data(cfg)


def naive_references(cfg: NASConfig, prepared: PreparedData | None, run_path: Path) -> dict[str, Path]:
    """The naive forecasts as the ensemble's reference members (``nas.ensemble``): each naive family's forecasts of
    the validation and test windows in ``<run>/naive/<family>/``, made once per run folder (no weights: seconds); a
    family the base lookback cannot hold (naive_seasonal with seq_len below the period) is left out. A reference is
    no trial of the search, so the search's own checks do not apply to it (``apply_changes(trial=False)``: the
    Informer's keys in the space or the base are not read by a naive forecast, and do not keep it out); one that
    cannot be made all the same is a warning, once per run folder, and the report names the naive forecasts the
    pool holds (``ensemble.naive``)."""
    if prepared is None:
        return {}
    from agentlab.nas.train import check_model, prepare_data, train_trial  # lazy: imports torch

    out = {}
    for family in NAIVE_FAMILIES:
        folder = run_path / REFERENCES / family
        if not (folder / PREDICTIONS).is_file():
            try:
                naive = apply_changes(cfg, {"model.family": family}, trial=False)
                data = prepare_data(naive)
            except ValidationError as exc:
                _no_reference(run_path, family, "; ".join(_pydantic_message(err) for err in exc.errors()))
                continue
            except (ValueError, AgentlabError) as exc:
                _no_reference(run_path, family, str(exc))
                continue
            if check_model(naive, data) is not None:
                continue
            try:
                result = train_trial(naive, data, folder, predictions=True)
                if result.predictions is None:
                    continue
                save_predictions(run_path, folder, result.predictions["val"], result.predictions["test"])
            except (OSError, RuntimeError, ValueError) as exc:  # the search goes on; the ensemble without it
                if storage_error(exc) is not None:  # a full disk stops the run (kept, resumable), as anywhere
                    raise
                _no_reference(run_path, family, str(exc))
                continue
        out[family] = folder
    return out


_WARNED: set[tuple[str, str]] = set()  # (run folder, family): the references already warned about


def _no_reference(run_path: Path, family: str, why: str) -> None:
    """A naive reference that cannot be made: a warning, once per run folder and family (it is tried again after
    every trial); the ensemble is built without it."""
    if (str(run_path), family) not in _WARNED:
        _WARNED.add((str(run_path), family))
        log.warning("ensemble: no %s reference forecast, the ensemble's pool goes without it (%s)", family, why)


def _objective(cfg: NASConfig, prepared: PreparedData | None, run_dir: RunDir, progress: Progress,
               best: Callable[[], float | None]) -> Objective:
    """What a trial runs: the user's command (``objective``), else the built-in forecaster on ``prepared``."""
    if cfg.objective is not None:
        objective = command_objective(cfg, run_dir)
        objective.validate()
        return objective
    assert prepared is not None
    return NASObjective(cfg, prepared, run_dir, progress, best)


def run_nas_optimization(max_iterations: int | None = None,
                         config: NASConfig | dict[str, Any] | str | Path | None = None,
                         *, out: str | Path | None = None, resume: str | Path | None = None,
                         llm: LLMConfig | str | Path | None = None, overrides: list[str] | None = None,
                         mlflow: str | None = None, progress: Progress | None = None,
                         chooser: Chooser | None = None) -> dict[str, Any]:
    """Python API: ``run_nas_optimization(max_iterations=20)`` runs the default search and returns results.json.
    ``max_iterations`` is ``--max-iterations`` (None: the config's ``search.max_iterations``, a resumed run's own),
    refused when an override sets it to another value; ``mlflow="sqlite:///mlflow.db"`` logs it to MLflow as
    ``--mlflow`` does; ``chooser`` (with ``search.planner`` llm) is a scripted chooser in place of the planner model.
    A scripted agent model (``search.planner`` agent) comes in as
    ``llm=agentlab.testing.agents.scripted_llm(agent)``."""
    sets = override_list(overrides)  # a new list: a string refused, not read a character a --set
    if max_iterations is not None:
        sets.append(Flag("max_iterations", "search.max_iterations", max_iterations))
    if mlflow is not None:
        sets.append(Flag("mlflow", "mlflow", mlflow))
    resume_dir = resume_target("nas", resume, out=out, option="resume=")
    if resume_dir is not None and config is not None:
        raise UsageError("resume= and config= both given", hint="a resumed run reads its own config.yaml; give "
                         "changes as overrides (overrides=['search.patience=5'])")
    if resume_dir is not None:
        cfg = load_config(resume_dir / "config.yaml", NASConfig, sets, schema="nas")
    elif isinstance(config, NASConfig):
        cfg = load_config(None, NASConfig, sets, base=config.model_dump(mode="json"), schema="nas")
    elif isinstance(config, dict):
        cfg = load_config(None, NASConfig, sets, base=config, schema="nas")
    else:
        cfg = load_config(config, NASConfig, sets, schema="nas")
    config_file = config if isinstance(config, (str, Path)) and resume_dir is None else None
    llm = routing_config(llm, resume_dir)  # resumed without llm=: the routing config the first run used
    inputs = {**prepare(cfg, llm, scripted=chooser is not None, config_file=config_file, resume=resume_dir,
                        sets=sets),
              "chooser": chooser}
    if resume_dir is not None and (kept := nothing_to_run(cfg, resume_dir)) is not None:
        return kept  # a resume with nothing left to run: the results as they are, nothing written
    results, _ = run_in_folder("nas", cfg, run, inputs=inputs, out=out, resume=resume_dir, progress=progress)
    return results
