"""`agentlab nas` on the user's own training code: the ``objective`` section's command as the search's objective.

What differs from the built-in forecaster, in one place: the checks before a run (the command can start, the space
is the params'), the search space over the user's param names, the objective (``nas.command``), and the
summary and report under the metric's own name. The search itself (planners, study, resume) is nas's.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentlab.core.errors import ConfigError, UsageError, missing_package
from agentlab.core.llm.config import LLMConfig, load_llm_config
from agentlab.core.runs import RunDir, read_events
from agentlab.core.search.agent import agent_story, agent_summary
from agentlab.core.search.planners import diff
from agentlab.core.search.records import (
    TrialRecord,
    planner_label,
    planner_name,
    reason_line,
    run_id,
    state_counts,
)
from agentlab.core.search.session import llm_source, require_planner_model
from agentlab.core.search.space import SearchSpace, lookup
from agentlab.core.tracking import check_tracking
from agentlab.nas.code_agent import change_of
from agentlab.nas.code_change import CodeRules, CodeTrials
from agentlab.nas.command import (
    OVERRIDES,
    CommandObjective,
    better,
    check_option_values,
    flat_values,
    merged_base,
    warn_once,
)
from agentlab.nas.config import CommandObjectiveConfig, NASConfig, check_warm_start
from agentlab.nas.config_file import ConfigFile
from agentlab.nas.hydra import check_group_choices
from agentlab.nas.report import SAMPLER, llm_section, one_line, plot_importances, ran_line, short
from agentlab.nas.script import resolved
from agentlab.nas.workspace import Workspaces

if TYPE_CHECKING:
    from agentlab.core.search.loop import SearchOutcome


def objective_of(cfg: NASConfig) -> CommandObjectiveConfig:
    assert cfg.objective is not None, "a command objective's function called without one"
    return cfg.objective


def refuse_empty_objective(config_file: str | Path) -> None:
    """``objective:`` written with no value (its keys commented out, say) would run the built-in forecaster, which
    nobody who wrote the key meant: refused, naming the line."""
    import yaml

    try:
        text = Path(config_file).read_text(encoding="utf-8")
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return  # load_config has read this file already: nothing new to say
    if isinstance(data, dict) and "objective" in data and data["objective"] is None:
        match = re.search(r"^objective\s*:", text, re.MULTILINE)
        line = text.count("\n", 0, match.start()) + 1 if match else 1
        raise ConfigError(f"{config_file}:{line}: objective: is empty (the built-in forecaster would run instead)",
                          hint="give its keys: command, metric, params (`agentlab config show nas` lists them), or "
                          "remove the line to search the built-in forecaster")


def resolve_cwd(cfg: NASConfig, config_file: str | Path | None) -> None:
    """Set ``objective.cwd`` to an absolute folder: the YAML file's folder when empty, a relative one taken from
    there (the current folder when there is no file). config.yaml then records it, so ``--resume`` runs the
    command where the first run did, wherever it is started from."""
    objective = objective_of(cfg)
    home = Path(config_file).resolve().parent if config_file is not None else Path.cwd()
    cwd = objective.cwd if objective.cwd is not None else Path(".")
    objective.cwd = Path(cwd if cwd.is_absolute() else (home / cwd).resolve())
    if not objective.cwd.is_dir():  # before objective.config, which is read from there
        raise UsageError(f"objective.cwd: {objective.cwd} is not a folder", hint="give the project's folder")
    if objective.config is not None:
        # any link in the path followed: one leading out of the project is refused naming the path as typed
        given = Path(os.path.normpath(objective.cwd / objective.config))  # an absolute one as it is
        real = resolved(objective.cwd / objective.config)
        if real is None:
            raise ConfigError(f"objective.config: {given} is a link loop", hint="point the link at the config file")
        if not objective.config.is_absolute():  # kept absolute for --resume
            objective.config = real
        if given.is_relative_to(os.path.normpath(objective.cwd)) and not real.is_relative_to(objective.cwd.resolve()):
            how = "is a link to" if given.is_symlink() else "leads through a linked folder to"
            raise ConfigError(f"objective.config: {given} {how} {real}, outside the project folder {objective.cwd}",
                              hint="copy the file into the project: each trial's workspace holds a copy of the "
                              "project's files, and a trial's values are never written into a file outside it")


def config_file(cfg: NASConfig) -> ConfigFile | None:
    """The project's own config file (objective.config), read; None without one."""
    objective = objective_of(cfg)
    if objective.config is None:
        return None
    path = objective.config if objective.config.is_absolute() else (objective.cwd or Path.cwd()) / objective.config
    kept = objective._kept_config  # a resume after the user edited the file: its copy as the search started
    found = ConfigFile.load(path) if kept is None else replace(ConfigFile.load(kept), path=path)
    try:
        found.path.resolve().relative_to((objective.cwd or Path.cwd()).resolve())
    except ValueError:
        raise ConfigError(f"objective.config: {path} is outside the project folder {objective.cwd}",
                          hint="give a file inside objective.cwd: each trial's workspace holds a copy of it") from None
    return found


def command_space(cfg: NASConfig) -> SearchSpace:
    """The search space over the user's param names, the base values read from objective.params (and the config
    file)."""
    keys = list(cfg.search.space)
    for spec in cfg.search.space.values():
        keys += [k for k in spec.when or {} if k not in keys]
    objective = objective_of(cfg)
    params = merged_base(objective, config_file(cfg), objective.cwd or Path.cwd(), keys)
    return SearchSpace(cfg.search.space, base=flat_values(params, keys))


def command_objective(cfg: NASConfig, run_dir: RunDir | None) -> CommandObjective:
    """The objective; without a run folder (a check before it exists) there are no workspaces, and trial folders
    would go to a temp path."""
    objective = objective_of(cfg)
    root = run_dir.path if run_dir is not None else Path(".")
    cwd = objective.cwd or Path.cwd()
    spaces = None
    if run_dir is not None:
        spaces = Workspaces(cwd, run_dir.path / "workspaces", run_dir.path.name, objective.workspace,
                            objective.keep_failed, exclude=[run_dir.path], config=objective.config)
    code = None
    if objective.editable or objective.protected is not None:
        code = CodeTrials(CodeRules(objective.editable, objective.protected))
    return CommandObjective(objective, cwd=cwd, trial_dir=lambda number: root / "trials" / run_id(number),
                            space_keys=tuple(cfg.search.space), config=config_file(cfg), workspaces=spaces, code=code)


_FIELD = re.compile(r"(objective|search)\.(\S+?): ")  # an error about a config key names it first


def prepare_command(cfg: NASConfig, llm: LLMConfig | str | Path | None = None,
                    config_file: str | Path | None = None, scripted: bool = False,
                    where: Callable[[tuple[str | int, ...]], str | None] | None = None) -> dict[str, Any]:
    """nas's ``prepare`` for a command objective: ``--planner llm`` / ``agent`` have a planner model (unless
    ``scripted``: a scripted chooser or agent model stands in), the command can start, the base params lie in the
    space, the tracking URI works. No data is read. ``where(key path)``: where a key was given (``config_where``):
    an error about a key the config gave (``search.space.lrr: not a key of objective.params``) is placed there, as
    the config's own errors are (``nas.yaml:9: search.space.lrr: ...``)."""
    try:
        return _prepare_command(cfg, llm, config_file, scripted, where)
    except (ConfigError, UsageError) as exc:
        match = _FIELD.match(exc.message)
        if where is None or match is None:
            raise
        section, rest = match.groups()  # a searched key is one key, dots and all (a Hydra group's model.lr)
        loc = ("search", "space", rest[6:]) if section == "search" and rest.startswith("space.") \
            else (section, *rest.split("."))
        at = where(loc)
        if at is None:
            raise
        raise type(exc)(f"{at}: {exc.message}", hint=exc.hint) from None


def _prepare_command(cfg: NASConfig, llm: LLMConfig | str | Path | None, config_file: str | Path | None,
                     scripted: bool, where: Callable[[tuple[str | int, ...]], str | None] | None = None
                     ) -> dict[str, Any]:
    try:
        import optuna  # noqa: F401  (the search's store)
    except ImportError as exc:
        raise missing_package(exc) or exc from None
    llm_cfg = llm if isinstance(llm, LLMConfig) else load_llm_config(llm)
    require_planner_model(llm_cfg, cfg.search.planner, scripted=scripted, source=llm_source(llm))
    resolve_cwd(cfg, config_file)
    command = command_objective(cfg, None)
    command.validate()
    objective = objective_of(cfg)
    Workspaces(objective.cwd or Path.cwd(), Path("."), "check", objective.workspace,
               config=objective.config).check()
    if objective.editable:
        CodeRules(objective.editable, objective.protected).check_project(Path(objective.cwd or Path.cwd()))
    check_group_choices(objective.command, Path(objective.cwd or Path.cwd()), cfg.search.space)
    check_option_values(objective.command, Path(objective.cwd or Path.cwd()), cfg.search.space)
    space = command_space(cfg)
    base = space.complete(space.base)
    if command.config is not None:  # a value of the project's config file: the file and line named, not the space
        for key in space.active(base):
            problem = space.params[key].check(base[key]) if key in space.params else None
            if problem and command.config.lookup(key)[0] and not lookup(command.own_params, key)[0]:
                raise ConfigError(f"{command.config.path}:{command.config.line_of(key)}: {key} = {base[key]!r}: "
                                  f"{problem} (search.space.{key})", hint="fix the value in the file (trial 0 "
                                  "runs it as it is), or search.space's entry for it")
    check_int_values(command, space, base)
    space.check_base(base)
    check_warm_start(cfg, space, where)  # placed at the entry (or its key), not at `search:`
    check_tracking(cfg.mlflow)
    return {"llm": llm_cfg, "data": None}


def check_int_values(command: CommandObjective, space: SearchSpace, base: dict[str, Any]) -> None:
    """A range of floats for a key the project's config file (or the Hydra app's composed config) holds as an int
    (not a bool): a warning before any trial, since every trial writes a float where the script may need an int
    (``range(2.37)``: TypeError). Not refused, as ``check_option_values`` refuses one for an argparse ``type=int``
    option: a file's ``weight_decay = 0`` declares no type, and a float setting written as 0 is common. A key
    objective.params gives is the user's own choice and not checked."""
    for key in space.active(base):
        spec, value = space.params.get(key), base.get(key)
        if spec is None or spec.low is None or spec.high is None or spec.kind != "float" \
                or isinstance(value, bool) or not isinstance(value, int) or lookup(command.own_params, key)[0]:
            continue  # a range (low and high given: no choices) of floats, for an int value
        if command.config is not None and command.config.lookup(key)[0]:
            held, fix = f"{command.config.path.name}:{command.config.line_of(key)} holds it as an int", "the file"
        elif OVERRIDES in command.command:
            held, fix = "the Hydra app's config holds it as an int", "the app's config file"
        else:
            continue
        low, high = math.ceil(spec.low), math.floor(spec.high)
        warn_once(f"search.space.{key}: a range of floats ({spec.low}..{spec.high}), but {held} ({key} = "
                  f"{value!r}): each trial writes a float there; if it must be an int, give int bounds "
                  f"({{low: {low}, high: {max(low, high)}}}) or choices; if it takes floats, write {float(value)!r} "
                  f"in {fix} to silence this")


def objective_line(cfg: NASConfig) -> str:
    objective = objective_of(cfg)
    return (f"objective: {objective.direction} {objective.metric} ({better(objective.direction)}) of "
            f"`{objective.command}` in {objective.cwd}"
            + (f", {objective.timeout_s:g} s per trial at most" if objective.timeout_s else ""))


def dry_run_command(cfg: NASConfig, planner: str, planner_line: str) -> dict[str, Any]:
    """A command objective's dry run; ``planner`` and its line as the run would say them (``session.dry_run_line``:
    auto as the run decides it, up to its probe)."""
    objective = objective_of(cfg)
    base = command_space(cfg).base  # trial 0: the params, the config file's values, the script's own defaults
    shown = ", ".join(f"{key}={_short(base.get(key))}" for key in cfg.search.space)
    return {"config": "ok", "objective": objective.model_dump(mode="json"), "planner": planner,
            "planner_line": planner_line, "search_space": list(cfg.search.space),
            "base": {key: base.get(key) for key in cfg.search.space},
            "max_iterations": cfg.search.max_iterations,
            # the objective's line is the CLI's first line already (as the data line is for the forecaster)
            "message": f"config ok; search space: {', '.join(cfg.search.space)}; planner {planner}\n"
                       + f"{planner_line}\n"
                       + f"trial 0 (the base): {shown}\ndry run: nothing run, no run folder written"}


def who(record: TrialRecord) -> str:
    """Who chose the trial, as the console says it (``planner_label``)."""
    return planner_label({"planner": record.planner, "origin": record.origin, "warmup": record.warmup,
                          "choice": record.choice}, SAMPLER)


def _changes(record: TrialRecord, params: dict[str, Any]) -> str:
    """What a trial changed: the code change it ran (the agent's reason), then its params that differ."""
    change = change_of(record)
    said = [f"code: {one_line(change.reason, 60)}"] if change is not None else []
    return ", ".join([*said, *(f"{k}={_short(v)}" for k, v in params.items())])


def trial_line(record: TrialRecord, metric: str, base: dict[str, Any] | None = None) -> str:
    """The console's line for a finished trial: what differs from the base params (``base``; else from the best
    when it was planned), the metric, the seconds, or why it failed."""
    changed = diff(record.params, base) if base is not None else record.changes
    changes = _changes(record, changed) or "base params"
    seconds = record.metrics.get("seconds", record.seconds)
    took = f", {seconds:.1f} s" if isinstance(seconds, (int, float)) else ""
    if record.state == "failed":
        why = reason_line(record.reason).removeprefix("failed: ")
        return f"{record.run_id} ({who(record)}) {changes}: failed{took}: {why}"
    return f"{record.run_id} ({who(record)}) {changes}: {metric} {_short(record.value)} ({record.state}{took})"


def _short(value: Any) -> str:
    """The metric and params as the console and report show them: 4 significant digits."""
    return short(value, digits=4)


def plot_curves(records: list[TrialRecord], best: TrialRecord | None, metric: str, run_path: Path) -> Path | None:
    """``learning_curves.png``: every trial's step lines (its ``history.json``), the best trial's drawn bold; None
    when no trial printed any (or matplotlib is missing)."""
    import json as _json

    curves = []
    for r in records:
        try:
            history = _json.loads((run_path / "trials" / r.run_id / "history.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        points = [(h["step"], h[metric]) for h in history if isinstance(h, dict) and metric in h and "step" in h]
        if points:
            curves.append((r, points))
    if not curves:
        return None
    try:
        from agentlab.nas.report import _pyplot, save_figure

        plt = _pyplot()
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for r, points in curves:
        mine = best is not None and r.run_id == best.run_id
        ax.plot(*zip(*points, strict=True), color="C3" if mine else "0.6", linewidth=2.2 if mine else 0.8,
                alpha=1.0 if mine else 0.6, label=f"{r.run_id} (best)" if mine else None, zorder=3 if mine else 1)
    ax.set_xlabel("epoch / step (the script's step lines)")
    ax.set_ylabel(metric)
    ax.set_title(f"learning curves of {len(curves)} trial(s)")
    if best is not None and any(r.run_id == best.run_id for r, _ in curves):
        ax.legend()
    fig.tight_layout()
    path = run_path / "learning_curves.png"
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def _change(base: float, best: float) -> str:
    """The metric's own relative change, signed as the number moved (as the forecaster's summary says it)."""
    return f"{(best - base) / abs(base):+.1%}" if base else "n/a"


def _other_metrics(record: TrialRecord, metric: str) -> dict[str, Any]:
    """The numbers a trial reported besides the searched metric (test_mse, accuracy, ...)."""
    return {k: v for k, v in record.metrics.items() if k not in ("value", "seconds", "step", metric)
            and isinstance(v, (int, float)) and not isinstance(v, bool)}


def _brief(record: TrialRecord | None, metric: str) -> dict[str, Any] | None:
    if record is None:
        return None
    return {"run_id": record.run_id, metric: record.value, "params": record.params, "planner": record.planner,
            "origin": record.origin, "warmup": record.warmup, "choice": record.choice,
            "metrics": {k: v for k, v in record.metrics.items() if k != "value"}}


def without_llm(metric: str) -> Callable[[TrialRecord | None], dict[str, Any]]:
    """``llm_contribution``'s counterfactual for a command objective: the best without the LLM's picks under the
    metric's name."""
    return lambda best: {f"best_{metric}": best.value if best else None}


def summarise_command(cfg: NASConfig, outcome: SearchOutcome, planner_line: str,
                      contribution: dict[str, Any] | None = None,
                      agent: dict[str, Any] | None = None) -> dict[str, Any]:
    """results.json of a command objective: best and base trials under the metric's own name, the relative gain
    (positive: better, whichever the direction), the trial states; the LLM chooser's ``llm_contribution`` and the
    agent's block when they ran."""
    objective = objective_of(cfg)
    metric, best, base = objective.metric, outcome.best, outcome.base
    gain = None
    if best is not None and base is not None and base.value and best.value is not None:
        sign = 1.0 if objective.direction == "maximize" else -1.0
        gain = sign * (best.value - base.value) / abs(base.value)
    return {"objective": objective.model_dump(mode="json"), "metric": metric, "direction": objective.direction,
            "best": _brief(best, metric), "base": _brief(base, metric), "gain": {metric: gain},
            "trials": len(outcome.records), "states": state_counts(outcome.records), "ran_here": outcome.ran_here,
            "shared": cfg.search.storage is not None, "stop_reason": outcome.stop_reason, "planner": planner_line,
            **({"llm_contribution": contribution} if contribution is not None else {}),
            **({"agent": agent} if agent is not None else {})}


def command_summary_lines(results: dict[str, Any]) -> list[str]:
    """The console summary of a command objective's search."""
    metric, best, base = results["metric"], results["best"], results["base"]
    lines = [f"best trial {best['run_id']}: {metric} {_short(best[metric])} ({planner_label(best, SAMPLER)})"]
    gain = results["gain"].get(metric)
    if base is not None and base["run_id"] == best["run_id"]:
        lines.append("no trial beat the base params")
    elif base is not None and gain is not None:
        lines.append(f"best vs the base params ({base['run_id']}): {metric} {_short(base[metric])} -> "
                     f"{_short(best[metric])} ({_change(base[metric], best[metric])}, "
                     f"{better(results['direction'])})")
    changed = best["params"] if base is None else diff(best["params"], base["params"])
    lines.append("best params: " + (", ".join(f"{k}={_short(v)}" for k, v in changed.items()) or "the base params"))
    states, total = results.get("states") or {}, results.get("trials")
    if states.get("failed"):
        lines.append(f"{states['failed']} of {total} trials failed: their reasons are in report.md's table, their "
                     "output in trials/<run>/")
    llm = results.get("llm_contribution") or {}
    if llm.get("no_answer"):
        lines.append(f"the planner LLM gave no answer {llm['no_answer']} of {llm['asked']} times (the sampler's "
                     "candidate 0 ran): each trial's notes in report.md say why")
    agent = agent_summary(results.get("agent"))
    if agent:
        lines.append(agent)
    lines += [line] if (line := ran_line(results)) else []
    return lines


def render_command_report(cfg: NASConfig, outcome: SearchOutcome, results: dict[str, Any], run_path: Path,
                          study: Any) -> str:
    """report.md of a command objective: the best trial, its params against the base, every trial."""
    metric = results["metric"]
    best, base = outcome.best, outcome.base
    lines = ["# agentlab nas: your own training code", "", f"Command: `{objective_of(cfg).command}` "
             f"({results['direction']} {metric}, {better(results['direction'])}).", "",
             f"Best: **{best.run_id}**: {metric} {_short(best.value)}." if best is not None else
             "Best: none: no trial succeeded (each one's reason is in the table below, its output in its folder "
             "under trials/)."]
    if base is not None:
        lines.append(f"Base params ({base.run_id}): {metric} {_short(base.value)}.")
    lines += [f"{results['planner']}. Stopped: {results['stop_reason']}. Trials: {results['trials']} "
              f"({', '.join(f'{v} {k}' for k, v in results['states'].items())}).", ""]
    if results.get("workspace"):
        lines += [f"Workspaces: {results['workspace'].removeprefix('workspaces: ')}.", ""]
    for warning in results.get("warnings") or []:
        lines += [f"**Warning:** {warning}.", ""]
    base_params = base.params if base else {}
    if best is not None:
        lines += ["## Best params vs base", "", "| key | base | best |", "|---|---|---|"]
        changed = diff(best.params, base_params)
        lines += [f"| {k} | {_short(base_params.get(k))} | **{_short(v)}** |" for k, v in changed.items()] or [
            "| (none) | | |"]
        others = _other_metrics(best, metric)
        if others:
            lines += ["", "Every metric the best trial reported: " + ", ".join(
                f"{k} {_short(v)}" for k, v in others.items()) + "."]
        files = results.get("best_files") or {}
        if files:
            lines += ["", f"`best/` holds the best trial's {', '.join(f'`{f}`' for f in files.get('files', []))}"
                      + ("; `best.patch` is its change to your config files: `agentlab nas apply "
                         f"{run_path}` writes it (or `git apply best.patch` in the project; outside git "
                         "`patch -p1 < best.patch`)" if files.get("patch")
                         else "") + "."]
            if files.get("not_written"):
                lines += ["", "Overrides with no place in the Hydra app's config files (keep passing them): "
                          + "; ".join(files["not_written"]) + "."]
    importances = plot_importances(study, run_path / "param_importances.png")
    if importances is not None:
        lines += ["", f"![parameter importances]({importances.relative_to(run_path)})"]
    curves = plot_curves(outcome.records, best, metric, run_path)
    if curves is not None:
        lines += ["", f"![learning curves]({curves.relative_to(run_path)})"]
    lines += ["", "## Trials", "", "Changes are against the base params (trial 0).", "",
              f"| run | planner | changes | {metric} | other metrics | seconds | state | decision |",
              "|---|---|---|---|---|---|---|---|"]
    for r in outcome.records:
        changes = _changes(r, diff(r.params, base_params)).replace("|", "/") or "-"
        reason = r.reason
        decision = ("accepted" if r.accepted else "rejected" if r.accepted is False else "") + (
            f": {reason}" if reason else "")
        decision = " ".join(decision.split()).replace("|", "/")
        reported = ", ".join(f"{k} {_short(v)}" for k, v in _other_metrics(r, metric).items()) or "-"
        value = "-" if r.value is None else _short(r.value)  # a failed trial has none
        lines.append(f"| {r.run_id} | {planner_name(r, SAMPLER)} | {changes} | {value} | {reported} | "
                     f"{_short(r.metrics.get('seconds', r.seconds))} | {r.state} | {decision} |")
    lines += llm_section(outcome.records, results.get("llm_contribution"), metric)
    lines += agent_story(results.get("agent"), list(read_events(run_path)) if results.get("agent") else [])
    return "\n".join(lines) + "\n"
