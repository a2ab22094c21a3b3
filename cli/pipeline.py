"""`agentlab pipeline`: run multi-stage multi-model pipelines, list and show sessions, rerun from a stage."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from .common import JsonOpt, LLMOpt, NoLogPromptsOpt, OutOpt, SetOpt, VerboseOpt, console, print_json, safe_text
from .runner import CommandSpec, Invocation, run_command

if TYPE_CHECKING:
    from agentlab.pipeline.load import Loaded
    from agentlab.pipeline.run import PipelineResult

app = typer.Typer(help="Multi-stage pipelines over local GGUF and routed HTTP models.\n\nSingle and multi "
                  "stages with aggregation, resource checks, session history and re-runs.", no_args_is_help=True)

ModelsOpt = Annotated[Path | None, typer.Option("--models", help="Models file. Default: configs/models.yaml; "
                                                "without it the built-in models, by their names.",
                                                show_default=False, dir_okay=False)]
PipelineOpt = Annotated[Path | None, typer.Option("-c", "--config", "--pipeline", help="Pipeline file. Default: "
                                                  "configs/pipeline.yaml "
                                                  "(none when only --stage is given).", show_default=False,
                                                  dir_okay=False)]
StageOpt = Annotated[list[str] | None, typer.Option(
    "--stage", help="Ad-hoc stage after the file's: NAME=MODEL, or NAME=M1,M2,M3:AGG[:AGGREGATOR] with AGG concat, "
    "vote or synthesis (repeatable; each reads the previous stage).", show_default=False, metavar="SPEC")]
InputOpt = Annotated[str | None, typer.Option("--input", "-i", help="The pipeline input text.", show_default=False)]
RerunInputOpt = Annotated[str | None, typer.Option(
    "--input", "-i", help="The input text. Default: the parent session's input; a different input is refused while "
    "a stage is reused (--from after the first stage).", show_default=False)]
InputFileOpt = Annotated[Path | None, typer.Option("--input-file", help="Read the input from a file.",
                                                   show_default=False, dir_okay=False)]


def _input(text: str | None, file: Path | None, required: bool = True) -> str | None:
    from agentlab.core.errors import UsageError
    from agentlab.core.files import read_text

    if text is not None and file is not None:
        raise UsageError("--input and --input-file both given", hint="pass one")
    if file is not None:
        text = read_text(file, "--input-file", pipes=True)
        if not text.strip():
            said = "holds only whitespace" if text else "is empty"
            raise UsageError(f"--input-file {file}: the file {said}", hint="write the pipeline's input into it")
        return text
    if text is None and required:
        raise UsageError("no input", hint='pass --input "TEXT" or --input-file FILE')
    if text is not None and not text.strip():
        raise UsageError("--input: the input is empty", hint='pass the text the pipeline answers: --input "TEXT"')
    return text


def _execute(loaded: Loaded, out: Path | None, json_: bool, verbose: int, log_prompts: bool, first_line: str = "",
             **inputs: Any) -> None:
    """Run ``loaded`` into a new session folder (``out``, else one under runs/pipeline); ``first_line``: a line printed
    once the --out folder is known to be free (no line before an exit-2 refusal of it)."""
    from agentlab.core.runs import opened_count, opened_run
    from agentlab.pipeline.run import run_session

    if out is not None:
        _check_out(out)
    if first_line and not json_:
        console.print(first_line)
    before = opened_count()
    try:
        run_command(CommandSpec("pipeline", None, run_session, load=lambda sets: loaded, save_config=False,
                                prepare=lambda _: inputs, resumable=False, summary=_summary,
                                to_json=lambda result: result.summary()),
                    Invocation(out=out, log_prompts=log_prompts, json_=json_, verbose=verbose))
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the session (recorded `interrupted`) and the stage to go on from
        raise _interrupted(opened_run() if opened_count() > before else None) from None


def _check_out(out: Path) -> None:
    """Refuse (exit 2) an --out folder that is taken, as every command does; when it holds a pipeline session with
    no final answer (interrupted, failed: the same command run again after Ctrl-C), the hint is how to continue that
    session, as its interrupt line and `show` say, not only to choose another --out."""
    from agentlab.core.errors import AgentlabError, RunDirError
    from agentlab.core.runs import check_out_folder, is_live, run_info
    from agentlab.pipeline.sessions import load_session

    try:
        check_out_folder("pipeline", out, resumable=False)
    except RunDirError as exc:
        try:
            run_info(out, "pipeline")
            data = load_session(out)
        except (AgentlabError, OSError):  # another command's run, other files, a damaged session: as it said
            raise exc from None
        if data["final"] is None and not is_live(out):
            exc.hint = f"it holds session {out.name}, which stopped without an answer: {_advice(data)}; or choose " \
                "another --out for a new session"
        raise exc from None


def _interrupted(folder: Path | None) -> Exception:
    """What Ctrl-C says (exit 130): the real session (by a name or path that works from here), the stage it stopped
    at and the rerun that goes on, as `show` says it (``sessions.continue_hint``): from that stage, or, with no stage
    finished, the whole session (the command again would find its --out folder taken)."""
    from agentlab.core.errors import AgentlabError
    from agentlab.pipeline.sessions import continue_hint, rerun_lacks, session_ref, unfinished_stage

    stage = unfinished_stage(folder) if folder is not None and folder.is_dir() else None
    if folder is None or stage is None or rerun_lacks(folder):  # no session folder yet, or none a rerun can read
        error = AgentlabError("interrupted" + (f" (session {folder.name})" if folder is not None else ""),
                              hint="nothing to continue: run the command again" + (
                                  " (with a new --out folder, if you gave one)" if folder is not None else ""))
    else:
        error = AgentlabError(f"interrupted at stage '{stage}' of session {folder.name}",
                              hint=continue_hint(session_ref(folder), stage, any((folder / "steps").glob("*.json"))))
    error.exit_code = 130
    return error


def _summary(result: PipelineResult, path: Path) -> None:
    _stage_table(result.summary()["stages"])
    console.print(f"[bold]final answer[/] ({path / 'final.txt'}):")
    typer.echo(safe_text(result.final, stdout=True), color=True)  # stdout: `... > answer.txt` keeps only the answer


def _stage_table(stages: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title="stages", title_justify="left", pad_edge=False)
    for column in ("#", "stage", "type", "models", "tokens in/out", "seconds"):
        table.add_column(column, no_wrap=column != "models", justify="right" if column in ("#", "seconds") else
                         "left")
    for s in stages:
        kind = s["type"] + (f" ({s['aggregation']})" if s.get("aggregation") else "")
        # "reused" goes in the seconds cell: an extra column would be squeezed away on an 80-column terminal.
        table.add_row(str(s["index"]), safe_text(s["name"]), safe_text(kind), safe_text(", ".join(s["models"])),
                      f"{s['prompt_tokens']}/{s['completion_tokens']}",
                      "[dim]reused[/]" if s["reused"] else f"{s['seconds']:.2f}")
    console.print(table)


@app.command("run")
def run_cmd(
    models: ModelsOpt = None,
    pipeline: PipelineOpt = None,
    input_: InputOpt = None,
    input_file: InputFileOpt = None,
    stage: StageOpt = None,
    llm: LLMOpt = None,
    set_: SetOpt = None,
    out: OutOpt = None,
    no_log_prompts: NoLogPromptsOpt = False,
    json_: JsonOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Run a pipeline on one input: stages in dependency order, the models of a multi stage concurrently, memory
    checked before any local model loads. --set edits the pipeline file
    (e.g. base_pipeline.stages.0.params.temperature=0.2). Writes a session folder under runs/pipeline/ (steps, final
    answer)."""
    from agentlab.pipeline.load import prepare

    text = _input(input_, input_file)
    _execute(prepare(models, pipeline, sets=set_, stages=stage, llm_path=llm), out, json_, verbose,
             not no_log_prompts, input_text=text)


@app.command("rerun")
def rerun_cmd(
    session: Annotated[str, typer.Argument(help="Session: folder name, unique prefix, or path.")],
    from_: Annotated[str | None, typer.Option(
        "--from", help="First stage to run again; earlier stages reuse the parent's outputs. Default: the first stage.",
        show_default=False)] = None,
    set_: SetOpt = None,
    models: Annotated[Path | None, typer.Option(
        "--models", help="Models file to run on (a model fixed after a failure). Default: the session's saved "
        "models.yaml. A model of a reused stage must be defined as the session ran it.", show_default=False,
        dir_okay=False)] = None,
    input_: RerunInputOpt = None,
    input_file: InputFileOpt = None,
    llm: LLMOpt = None,
    out: OutOpt = None,
    no_log_prompts: NoLogPromptsOpt = False,
    json_: JsonOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Run a session again as a child session: the parent's saved configs (or --models FILE) with --set applied
    (e.g. base_pipeline.stages.1.params.temperature=0.2), its outputs reused before --from. A --set that changes a
    reused stage, a --models file that defines a reused stage's model otherwise, or an --input other than the
    parent's while a stage is reused, is refused. The parent is not modified."""
    from agentlab.core.runs import is_live
    from agentlab.pipeline.sessions import find_session, prepare_rerun

    parent = find_session(session)
    rerun = prepare_rerun(parent, from_, sets=set_, input_text=_input(input_, input_file, required=False),
                          llm_path=llm, models_path=models)
    if is_live(parent):  # its finished stages are final (a step file is written once, whole); the rest is not
        console.print(f"[yellow]warning:[/] session {safe_text(parent.name)} is still running: its outputs may not "
                      "be final yet (the stages it has finished are)")
    first_line = f"rerun of {rerun.parent_id} from stage '{rerun.from_stage}'" + (
        f" (reusing {', '.join(rerun.reuse)})" if rerun.reuse else "")
    _execute(rerun.loaded, out, json_, verbose, not no_log_prompts, first_line=first_line, input_text=rerun.input_text,
             reuse=rerun.reuse, parent_run_id=rerun.parent_id)


@app.command("history")
def history_cmd(
    tree: Annotated[bool, typer.Option("--tree", help="Nest reruns under their parent session.")] = False,
    json_: JsonOpt = False,
) -> None:
    """List pipeline sessions: id (a rerun's parent under it), status, input, final answer. A session whose files
    cannot be read is listed with the bad file marked (status `damaged`: `show` refuses it; a bad or missing step
    file, an empty or bad session.json or results.json), and what is wrong with it under the list."""
    from agentlab.pipeline.sessions import list_sessions, session_tree, sessions_root

    sessions = list_sessions()
    if json_:
        print_json(sessions)
        return
    if not sessions:
        console.print(f"no pipeline sessions under {safe_text(sessions_root())}/ (start one with `agentlab pipeline "
                      "run`)")
        return
    if tree:
        from rich.tree import Tree

        roots, children = session_tree(sessions)
        top = Tree(f"sessions under {safe_text(sessions_root())}/")

        def add(node: Any, s: dict[str, Any]) -> None:
            branch = node.add(_line(s))
            for child in children.get(s["id"], []):
                add(branch, child)

        for s in roots:
            add(top, s)
        console.print(top, soft_wrap=False)  # long lines wrap under their branch instead of being cut off
    else:
        _history_table(sessions, f"sessions under {safe_text(sessions_root())}/")
    for s in sessions:
        for problem in s["problems"].values():
            console.print(f"[red]unreadable:[/] {safe_text(problem)}")


# The default session id, <YYYYmmdd-HHMMSS>-<name>, is its start time: no need to show the time again.
_STAMPED = re.compile(r"^\d{8}-\d{6}(-|$)")


def _history_table(sessions: list[dict[str, Any]], title: str) -> None:
    """One row per session, readable at 80 columns: ids whole (show and rerun take them) with a rerun's parent, and
    the start time of an id that does not carry it, on lines under it; input and final answer on one line each, cut
    with … to the width left."""
    from rich.table import Table

    table = Table(title=title, title_justify="left", pad_edge=False)
    table.add_column("id", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for column in ("input", "final"):
        table.add_column(column, no_wrap=True, overflow="ellipsis", ratio=1)
    for s in sessions:
        ident = [safe_text(s["id"])]
        if s["parent"]:
            ident.append(f"[dim]↳ {safe_text(s['parent'])}[/]")
        if s["started"] and not _STAMPED.match(s["id"]):
            ident.append(f"[dim]{safe_text(s['started'][:16].replace('T', ' '))}[/]")
        table.add_row("\n".join(ident), _state(s), _cell(s, "input", "session.json"),
                      _cell(s, "final", "results.json"))
    # Too wide for the terminal: id and status keep their width and input / final share what is left (rich would
    # otherwise shrink every column alike, cutting the ids).
    table.expand = console.measure(table, options=console.options.update_width(10_000)).maximum > console.width
    console.print(table)


def _state(s: dict[str, Any]) -> str:
    """The status of a listed session, coloured (`damaged`: a session file that cannot be read or is missing, which
    `show` refuses; the file is named under the list)."""
    from agentlab.pipeline.sessions import shown_status

    return _status(shown_status(s))


def _cell(s: dict[str, Any], key: str, file: str) -> str:
    """The input or final answer of a listed session on one line, cut to 60 characters with … (``--json`` has them
    whole), or the mark of the unreadable file it comes from."""
    return f"[red]? {file}[/]" if file in s["problems"] else safe_text(_head(s[key]) or "-")


def _head(text: str | None, width: int = 60) -> str:
    if not text:
        return ""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _status(status: str | None) -> str:
    color = {"completed": "green", "failed": "red", "running": "yellow", "interrupted": "yellow",
             "damaged": "red", "? run.json": "red"}.get(status or "")
    return f"[{color}]{status}[/]" if color else safe_text(status)


def _line(s: dict[str, Any]) -> str:
    origin = f" from {safe_text(s['from_stage'])}" if s.get("parent") and s.get("from_stage") else ""
    return (f"[bold]{safe_text(s['id'])}[/] {_state(s)}{origin}  {_cell(s, 'input', 'session.json')} -> "
            f"{_cell(s, 'final', 'results.json')}")


def _fallback_for(call: dict[str, Any]) -> str | None:
    """The model a call asked, when a fallback answered for it; else None."""
    asked = call.get("asked")
    return asked if asked and asked != call["model"] else None


def _who(call: dict[str, Any]) -> str:
    """The model that answered a call, and the one asked when a fallback answered for it."""
    asked = _fallback_for(call)
    return f"[cyan]{safe_text(call['model'])}[/]" + (f" [dim](fallback for {safe_text(asked)})[/]" if asked else "")


@app.command("show")
def show_cmd(
    session: Annotated[str, typer.Argument(help="Session: folder name, unique prefix, or path.")],
    json_: JsonOpt = False,
) -> None:
    """Print a session's stages (input, output, tokens, time) and its final answer (stdout); a session with none
    (failed, interrupted, running) says why and how to continue it, exit 1."""
    from agentlab.pipeline.sessions import find_session, load_session

    data = load_session(find_session(session))
    if json_:
        print_json(data)  # exit 0: a session with no final answer has `final: null` and, failed, `failed_stage`
        return
    parent = f", rerun of {safe_text(data['parent'])} from {safe_text(data['from_stage'])}" if data["parent"] else ""
    console.print(f"[bold]{safe_text(data['id'])}[/] ({_status(data['status'])}{parent}) started "
                  f"{safe_text(data['started'])}")
    console.print(f"[bold]input:[/] {safe_text(data['input'])}")
    for step in data["steps"]:
        models = ", ".join(o["model"] for o in step["outputs"])
        agg = (step.get("aggregation") or {}).get("kind")
        console.rule(safe_text(f"{step['index']:02d} {step['stage']} [{step['type']}{'/' + agg if agg else ''}: "
                            f"{models}] {step['prompt_tokens']}/{step['completion_tokens']} tok, "
                            f"{step['seconds']:.2f}s" + (" (reused)" if step["reused"] else "")))
        console.print(f"[dim]input:[/] {safe_text(step['input'])}")
        if step["type"] == "multi":
            for o in step["outputs"]:
                console.print(f"{_who(o)} ({o['completion_tokens']} tok, {o['seconds']:.2f}s): {safe_text(o['text'])}")
        elif step["outputs"] and _fallback_for(step["outputs"][0]):
            console.print(f"[dim]answered by[/] {_who(step['outputs'][0])}")
        call = (step.get("aggregation") or {}).get("call")
        if call:  # synthesis: the aggregator's call, most of a stage's time on a larger model
            console.print(f"[dim]synthesised by[/] {_who(call)} ({call['completion_tokens']} tok, "
                          f"{call['seconds']:.2f}s)")
        if agg == "vote":
            tally = ", ".join(f"{v['count']}x {v['answer']!r}" for v in step["aggregation"].get("votes", []))
            console.print(f"[dim]votes:[/] {safe_text(tally)}")
        console.print(f"[green]output:[/] {safe_text(step['output'])}")
    console.rule()
    if data["final"] is None:
        _no_answer(data)
    console.print("[bold]final answer:[/]")
    typer.echo(safe_text(data["final"], stdout=True), color=True)


def _no_rerun_hint(lacks: list[str]) -> str:
    return (f"it cannot be rerun: its folder has no {' or '.join(lacks)} (the session stopped before saving "
            f"{'it' if len(lacks) == 1 else 'them'}); start a new session with `agentlab pipeline run`")


def _advice(data: dict[str, Any]) -> str:
    """How to continue a session with no final answer, as `show` says it (naming the session as `session_ref` does:
    by a path when its name does not find it from here): a failed stage's fix, the rerun that goes on from where it
    stopped, or, for a folder without the saved configs a rerun reads, which are missing."""
    from agentlab.pipeline.serving import failed_hint
    from agentlab.pipeline.sessions import continue_hint, rerun_lacks, session_ref

    ref = session_ref(data["path"])  # the folder name under runs/pipeline, else a path that works from here
    if lacks := rerun_lacks(data["path"]):
        return _no_rerun_hint(lacks)
    failed = data["failed_stage"]
    if failed:
        return failed_hint(ref, failed["name"], failed.get("position"), kept=bool(data["steps"]),
                           routed=bool(failed.get("routed")))
    return continue_hint(ref, data["continue_from"], bool(data["steps"]))


def _no_answer(data: dict[str, Any]) -> NoReturn:
    """A session with no final answer: why (the stage that failed and its error, as `run` said it), how to continue
    it (``_advice``); exit 1; stdout stays empty (`show ID > answer.txt` writes no answer)."""
    failed, stage, status = data["failed_stage"], data["continue_from"], data["status"]
    if failed:
        console.print(f"[bold red]failed:[/] {safe_text(failed['error'])}")
        console.print(f"[yellow]hint:[/] {safe_text(_advice(data))}")
        raise typer.Exit(1)
    state = {"running": "is still running", "interrupted": "was interrupted"}.get(status or "", safe_text(status))
    at = f" at stage '{safe_text(stage)}'" if stage and status in ("running", "interrupted") else ""
    error = f": {safe_text(data['error'])}" if status == "failed" and data["error"] else ""
    console.print(f"[bold]no final answer[/]: the session {state}{at}{error}")
    if status != "running":  # a running session is its owner's to finish: no advice
        console.print(f"[yellow]hint:[/] {safe_text(_advice(data))}")
    raise typer.Exit(1)
