"""`agentlab nas`: search your own training command as it is (its config file, flags or overrides; its printed
metric), or the built-in forecaster's architecture; LLM-planned or classical; resumable. `agentlab nas apply RUN`
writes the best config back; `agentlab nas predict RUN --data CSV` forecasts with a finished forecaster search."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from agentlab.core.search.kinds import NasPlanner, describe

from .common import (
    AnswerOpt,
    ConfigOpt,
    JsonOpt,
    MlflowOpt,
    NoLogPromptsOpt,
    OtlpOpt,
    OutOpt,
    ResumeLLMOpt,
    ResumeOpt,
    SetOpt,
    StorageOpt,
    VerboseOpt,
    approver_for,
    console,
    print_json,
    safe_text,
    waiting_question,
)
from .runner import CommandSpec, Invocation, flags, run_command

app = typer.Typer(help="Search your own training command as it is, or a forecaster's architecture.\n\n"
                  "Planned by an LLM agent, an LLM chooser, TPE, CMA-ES or random search.\n\n"
                  "Your own project as it is: an `objective:` section names the command (`python train.py`), "
                  "the config file it reads (config.py, YAML, TOML, JSON) or how it takes params ({args}, "
                  "{overrides}), and the metric it prints. Each trial runs in its own git worktree or copy of the "
                  "project; your files are never written; `agentlab nas apply RUN` writes the best config back "
                  "(docs/commands/nas-own-code.md).\n\n"
                  "The built-in forecaster: a planner proposes changes to the model config (the family: Informer, "
                  "linear, SparseTSF, CycleNet, PatchTST, iTransformer or DUET, its settings, the lookback), each "
                  "trial trains and is judged by rules (an LLM only inside the noise band), state is saved after every "
                  "trial. Runs offline on built-in synthetic data by default.\n\n"
                  "`agentlab nas [OPTIONS]` runs the search; `agentlab nas predict RUN --data CSV` forecasts with "
                  "its final model.", invoke_without_command=True, no_args_is_help=False)


@app.callback(invoke_without_command=True)
def nas(
    ctx: typer.Context,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    llm: ResumeLLMOpt = None,
    max_iterations: Annotated[int | None, typer.Option("--max-iterations", "-n", min=1, show_default=False,
                                                       help="Total trials of the search (default: the config's "
                                                       "search.max_iterations, 20 unless -c sets it; resumed: the "
                                                       "run's own). Calling again with --resume and a higher number "
                                                       "continues it.")] = None,
    time_budget: Annotated[float | None, typer.Option("--time-budget", min=1, show_default=False,
                                                      help="Stop starting trials after this many seconds of this "
                                                           "invocation (a --resume gets the allowance again, as a "
                                                           "new job slot would).")] = None,
    patience: Annotated[int | None, typer.Option(min=1, show_default=False,
                                                 help="Stop after this many trials without a new best.")] = None,
    target: Annotated[float | None, typer.Option(show_default=False,
                                                 help="Stop once the best result reaches this: validation MSE at "
                                                 "or below it, or your command's metric in its direction.")] = None,
    planner: Annotated[NasPlanner | None, typer.Option(
        show_default=False, help=f"Who proposes each trial (default auto). {describe('nas')}. Each one also "
        "searches your own command (an objective: section).")] = None,
    approve: Annotated[bool, typer.Option("--approve", help="With --planner agent: stop before each trial the "
                                          "agent plans (a config, or a code change with its diff), show it and ask "
                                          "yes / no / edit. The base trial, the sampler's tuning trials after a kept "
                                          "change and the guard's trials run unasked.")] = False,
    data: Annotated[Path | None, typer.Option(show_default=False, dir_okay=False,
                                              help="ETT-format CSV (date column + numeric columns). Default: a "
                                              "built-in synthetic series.")] = None,
    storage: StorageOpt = None,
    mlflow: MlflowOpt = None,
    otlp_endpoint: OtlpOpt = None,
    out: OutOpt = None,
    resume: ResumeOpt = None,
    answer: AnswerOpt = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Check the config and every input and show what would run; nothing is trained and no run "
        "folder is written. A built-in model given with --llm is assembled into the cache first if it is not there "
        "yet (a few hundred MB, once).")] = False,
    no_log_prompts: NoLogPromptsOpt = False,
    json_: JsonOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Architecture search for a forecaster, planned by an LLM, TPE or random search.

    A planner proposes changes to the model config (the family: Informer, linear, SparseTSF, CycleNet, PatchTST or
    iTransformer, its settings, the lookback), each trial trains and is judged by rules (an LLM only inside the
    noise band), state is saved after every trial. Runs offline on built-in synthetic data by default. With an
    `objective:` section in the YAML it searches your own training command instead (docs/commands/nas-own-code.md).
    `agentlab nas predict RUN --data CSV` forecasts with the search's final model."""
    if ctx.invoked_subcommand is not None:
        return
    from agentlab.nas import NASConfig
    from agentlab.nas import run as nas_run
    from agentlab.nas.run import dry_run as nas_dry_run
    from agentlab.nas.run import prepare

    options = flags(("--max-iterations", "search.max_iterations", max_iterations),
                    ("--time-budget", "search.time_budget_s", time_budget), ("--patience", "search.patience", patience),
                    ("--target", "search.target", target), ("--planner", "search.planner", planner),
                    ("--data", "data.path", data), ("--storage", "search.storage", storage),
                    ("--mlflow", "mlflow", mlflow), ("--approve", "search.agent.approve", True if approve else None))

    resumed: list[Path] = []  # the folder a --resume continues (a bare one picks the latest): a dry run names it

    def prepare_and_say(cfg: NASConfig) -> dict[str, Any]:
        """prepare (the data read, data.freq resolved), then the data line and, resuming, the folder and what it
        keeps."""
        from agentlab.core.runs import resume_target, routing_config
        from agentlab.nas.data import data_line
        from agentlab.nas.own_code import objective_line
        from agentlab.nas.report import resume_line
        from agentlab.nas.run import nothing_to_run

        freq, target = cfg.data.freq, cfg.data.target
        folder = resume_target("nas", resume) if resume is not None else None
        resumed.extend([folder] if folder is not None else [])
        routing = routing_config(llm, folder)  # resumed: the first run's --llm
        kwargs = prepare(cfg, routing, config_file=config, resume=folder, sets=[*(set_ or []), *options])
        # nothing left to run is decided first: no question is asked then (the run's --approve needs no terminal)
        kept = nothing_to_run(cfg, folder) if folder is not None and not dry_run else None
        approver = approver_for(cfg.search.planner, cfg.search.agent.approve, answer, dry_run=dry_run) \
            if kept is None else None
        if answer is not None:  # only the question the run stopped at, the one the user saw
            _check_edit(waiting_question(folder, "nas", finished=kept is not None), answer)
        if approver is not None and not dry_run:  # a dry run asks nothing
            kwargs["approver"] = approver
        if not json_:
            console.print(safe_text(data_line(kwargs["data"], freq, target) if cfg.objective is None
                                    else objective_line(cfg)))
            if routing is not None and llm is None:
                console.print(safe_text(f"routing config: the first run's ({routing})"))
            if folder is not None:
                console.print(safe_text(resume_line(folder, cfg.search.max_iterations, cfg.search.storage,
                                                    cfg.search.study_name)))
        if folder is not None and kept is not None:
            if json_:
                print_json(kept)
            else:  # the summary as the run left it; nothing written (run.json, results, report stay as they are)
                console.print(f"nothing left to run: search.max_iterations ({cfg.search.max_iterations}) reached; "
                              "give a higher --max-iterations to search on")
                _print_summary(kept, folder)
            raise typer.Exit(0)
        return kwargs

    def dry_run_and_folder(cfg: NASConfig, **kwargs: Any) -> dict[str, Any]:
        """The dry run's report, with the run folder a --resume would continue (--json says nothing else) and the
        run's `code changes:` line after its planner's (objective.editable)."""
        said = nas_dry_run(cfg, **kwargs)
        if (line := _code_line(cfg, resumed[0] if resumed else None)) is not None:
            planner = f"{said['planner_line']}\n"
            said = {**said, "code_changes": line, "message": said["message"].replace(planner, f"{planner}{line}\n", 1)}
        return {**said, "resume": str(resumed[0]) if resumed else None}

    run_command(CommandSpec("nas", NASConfig, nas_run, prepare=prepare_and_say,
                            dry_run=dry_run_and_folder if dry_run else None, summary=_print_summary),
                Invocation(config=config, sets=[*(set_ or []), *options], out=out, resume=resume,
                           log_prompts=not no_log_prompts, otlp_endpoint=otlp_endpoint, json_=json_,
                           verbose=verbose))


def _code_line(cfg: Any, folder: Path | None) -> str | None:
    """The `code changes:` line the run says (what the agent may change: a resumed run's files as it started), for its
    dry run; None without objective.editable. Nothing is written (no run folder: the project's files are read)."""
    from agentlab.core.search.kinds import DEFAULT_SAMPLER
    from agentlab.nas.code_agent import CodeSearch
    from agentlab.nas.code_change import CodeRules
    from agentlab.nas.run import metric_of

    objective = cfg.objective
    if objective is None or not objective.editable:
        return None
    code = CodeSearch(CodeRules(objective.editable, objective.protected), Path(objective.cwd or Path.cwd()),
                      folder if folder is not None else Path(objective.cwd or Path.cwd()) / "(no run folder)",
                      tune_every=cfg.search.tune_every, sampler=DEFAULT_SAMPLER["nas"])
    return code.line(metric_of(cfg)[0], cfg.search.min_delta)


def _check_edit(asked: dict[str, Any], answer: str) -> None:
    """An --answer edit of the shape the question ``asked`` (the one the run waits at) takes (refused, exit 2,
    before anything runs): a trial of params is edited with ``changes``, a code change with ``edits``."""
    import json

    from agentlab.core.agent.approval import parse_answer
    from agentlab.core.errors import UsageError

    args = parse_answer(answer).get("args") or {}
    if not args or ("edits" in args) == (asked.get("diff") is not None):
        return
    if "edits" in args:
        first = dict(list((asked.get("params") or {"lr": 0.01}).items())[:1])
        raise UsageError("--answer: the question waiting is about a trial of params: an edit of it takes 'changes' "
                         "(its settings as key: value), not 'edits' (path, old, new: those edit a code change)",
                         hint=f"e.g. --answer '{json.dumps({'answer': 'edit', 'changes': first})}'")
    edits: list[dict[str, Any]] = (asked.get("args") or {}).get("edits") or [{}]
    path = edits[0].get("path", "train.py")
    edit = {"path": path, "old": "<the text the agent changes>", "new": "<yours>"}
    raise UsageError("--answer: the question waiting is about a code change: an edit of it takes 'edits' (a list of "
                     "path, old, new texts), not 'changes' (those edit a trial of params)",
                     hint=f"e.g. --answer '{json.dumps({'answer': 'edit', 'edits': [edit]})}', or yes, or no")


def _print_summary(results: dict[str, Any], path: Path) -> None:
    from agentlab.nas.own_code import command_summary_lines
    from agentlab.nas.report import summary_lines

    for line in (command_summary_lines(results) if "objective" in results else summary_lines(results)):
        console.print(safe_text(line))
    console.print(f"stopped: {safe_text(results['stop_reason'])}; report: {safe_text(path / 'report.md')}")


@app.command("apply")
def apply(
    run: Annotated[Path, typer.Argument(help="A finished `agentlab nas` run of your own command with "
                                        "objective.config, {overrides} to a Hydra app, or kept code changes.",
                                        show_default=False)],
) -> None:
    """Write the best trial's config file (a Hydra app's: its config files, each searched key where Hydra takes it
    from) and the code its kept changes touched (RUN/best/) into your project, in place of the files the search
    started from. A config file you edited since gets the best values written in place (your other edits kept);
    refused, with nothing written, when you edited a searched value too, or a Hydra or code file changed since
    (apply RUN/best.patch by hand then)."""
    from agentlab.nas.best import apply_best, left_out, params_elsewhere

    for target, what in apply_best(run):
        console.print(f"{safe_text(target)}: {what} (from {safe_text(run / 'best')})")
    for line in left_out(run):
        console.print(f"not written, keep passing it as an override: {safe_text(line)}")
    if (params := params_elsewhere(run)) is not None:  # code written; the params live in the command line alone
        console.print(safe_text(params))


@app.command("predict")
def predict(
    run: Annotated[Path, typer.Argument(help="A finished `agentlab nas` run folder (also one copied from another "
                                        "machine).", show_default=False)],
    data: Annotated[Path, typer.Option("--data", help="CSV with the run's columns (date + the same numeric "
                                       "columns); the forecast starts after its last row.", show_default=False)],
    out: Annotated[Path | None, typer.Option("--out", help="Forecast CSV to write, a .csv (the plot goes beside it "
                                             "as .png). Default: RUN/forecast.csv (replaced by the next forecast). "
                                             "Never the --data CSV, nor inside a run folder other than at its top.",
                                             show_default=False, dir_okay=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out forecast and its plot (only a "
                                        "forecast `nas predict` wrote).")] = False,
    backtest: Annotated[bool, typer.Option("--backtest", help="Also forecast every test window of the CSV and "
                                           "report MSE/MAE (standardised and original units) beside the run's "
                                           "recorded test MSE.")] = False,
    model: Annotated[Literal["best", "ensemble"] | None, typer.Option(
        "--model", show_default=False, help="ensemble: the run's ensemble of trials (the weighted mean of their "
        "forecasts); best: the best single trial. Default: the ensemble when the run has one, else best.")] = None,
    json_: JsonOpt = False,
) -> None:
    """Forecast the next pred_len steps after the last row of a CSV with a finished search's final model (its
    ensemble of trials when it has one, else the best trial's checkpoint; --model chooses), in the CSV's original
    units: a CSV (date + one column per forecast channel) and a plot. For the built-in forecaster only: a search
    of your own command (an objective: section) keeps no model of agentlab's to forecast with."""
    from agentlab.nas.ensemble import model_name, shown_weights
    from agentlab.nas.predict import backtest as run_backtest
    from agentlab.nas.predict import backtest_lines, forecast, load_model, output_paths, write_forecast

    final = load_model(run, model)
    target, plot = output_paths(final.run, data, out, force)  # refused before anything is computed or written
    result = forecast(final, data)
    bt = run_backtest(final, data) if backtest else None  # its window check refuses before the forecast is written
    plot = write_forecast(result, target)
    members = [(m.run_id, w) for m, w in getattr(final, "members", [])]
    if json_:
        print_json({"run_id": final.run_id, "model": "ensemble" if members else "best",
                    "members": [{"run_id": r, "weight": w} for r, w in members] or None,
                    "forecast": str(target), "plot": str(plot), "steps": len(result["dates"]),
                    "columns": list(result["columns"]), "backtest": bt, "note": result["note"]})
        return
    if result["note"]:
        console.print(f"[yellow]note:[/] {safe_text(result['note'])}")
    first, last = (str(result["dates"][i].astype("datetime64[s]")).replace("T", " ") for i in (0, -1))
    name = final.run_id
    if members:  # the words of the report and the search's summary; printed weights that sum to 1
        said = model_name(final.recorded)
        shown = ", ".join(f"{r} {w}" for (r, _), w in zip(members, shown_weights([w for _, w in members]), strict=True))
        name = said if said.startswith("the naive forecast") else f"the {said} ({shown})"
    console.print(f"forecast of {name}: {len(result['dates'])} step{'' if len(result['dates']) == 1 else 's'} "
                  f"({first} .. {last}), "
                  f"{len(result['columns'])} column(s) -> {safe_text(target)}; plot: {safe_text(plot)}")
    if bt is not None:
        for line in backtest_lines(bt):
            console.print(safe_text(line))
