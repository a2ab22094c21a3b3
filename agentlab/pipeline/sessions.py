"""Sessions: every pipeline run is a run folder under runs/pipeline/; a rerun is a child folder naming its parent.

A session is found by folder name, a unique prefix of it, or a path. Nothing here writes to an existing session:
a rerun reads the parent's saved configs and step files and runs into a new folder.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from agentlab.core.config import load_config, set_label
from agentlab.core.errors import AgentlabError, InputError, UsageError
from agentlab.core.files import json_error, read_text
from agentlab.core.runs import is_live, run_status, runs_root
from agentlab.pipeline.config import (
    ModelEntry,
    ModelsConfig,
    PipelineConfig,
    StageConfig,
    execution_order,
    pipeline_checked,
)
from agentlab.pipeline.load import (
    Loaded,
    check_defines_models,
    check_used_models,
    load_models,
    load_routed,
    used_models,
)

COMMAND = "pipeline"
DAMAGED = "damaged"  # the status of a listed session with a file that `show` cannot read


# --------------------------------------------------------------------------- the session files, as read back
# What history / show / rerun read from a session folder. Extra keys are fine (older or newer runs); a wrong type is
# an InputError naming the file and field, never a TypeError deep in the printing code.


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class _RunInfo(_Record):
    started: str | None = None
    status: str | None = None
    error: str | None = None


class _FailedStage(_Record):
    name: str
    index: int
    position: int | None = None  # older sessions: not recorded
    error: str


class _SessionInfo(_Record):
    input: str | None = None
    pipeline: str | None = None
    parent_run_id: str | None = None
    from_stage: str | None = None
    failed_stage: _FailedStage | None = None


class _Results(_Record):
    final: str | None = None
    stages: list[Any] = []


class _Output(_Record):
    model: str
    text: str
    completion_tokens: int
    seconds: float


class _Vote(_Record):
    answer: str
    count: int


class _Aggregation(_Record):
    kind: str
    votes: list[_Vote] = []


class _Step(_Record):
    index: int
    stage: str
    type: str
    input: str
    output: str
    outputs: list[_Output]
    aggregation: _Aggregation | None = None
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    reused: bool


def read_record(path: Path, shape: type[_Record] = _Record) -> dict[str, Any]:
    """A session file as the dict it holds, checked against the fields the session commands read.

    Raises ``InputError`` (exit 2) with one line naming the file and what is wrong: not UTF-8, not JSON, not an object,
    or a field of the wrong type.
    """
    try:
        data = json.loads(read_text(path, "session file"))
    except InputError as exc:
        raise InputError(exc.message) from None  # one line: the hint is about hand-written files
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: invalid JSON: {json_error(exc)}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(data).__name__}")
    try:
        shape.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        what = {"missing": "missing", "model_type": "expected a JSON object",
                "dict_type": "expected a JSON object"}.get(first["type"], first["msg"])
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise InputError(f"{path}: {where}: {what}{more}") from None
    return data


def missing_file(file: Path, why: str = "") -> InputError:
    """The error of a file a session folder should hold but does not (``why``: what says it should)."""
    return InputError(f"{file}: missing{why}: the session folder is incomplete or damaged")


def missing_steps(path: Path, results: dict[str, Any]) -> dict[str, InputError]:
    """The step files results.json lists (each stage's ``step_file``) that are not there: name -> the error."""
    errors = {}
    for stage in results.get("stages", []):
        if not isinstance(stage, dict):
            continue
        name, index, step_file = stage.get("name"), stage.get("index"), stage.get("step_file")
        if not isinstance(step_file, str) and isinstance(index, int) and isinstance(name, str):
            step_file = f"steps/{index:02d}-{name}.json"  # older sessions: as run.py names it
        if isinstance(step_file, str) and not (path / step_file).exists():
            errors[step_file] = missing_file(path / step_file, f" (results.json lists stage {str(name)!r})")
    return errors


def sessions_root(root: str | Path | None = None) -> Path:
    """runs/pipeline (or $AGENTLAB_RUNS/pipeline)."""
    return runs_root(root) / COMMAND


def session_ref(path: str | Path, root: str | Path | None = None) -> str:
    """How a command line run from the current folder names the session at ``path`` (the hints of `show`, `run` and
    Ctrl-C): its folder name when `find_session` finds it by that name (it is under runs/pipeline), else its path as
    given, quoted for the shell. A session under another folder's runs/pipeline, or written with ``--out`` somewhere
    else, is not found by its name from here."""
    path = Path(path)
    try:
        if (sessions_root(root) / path.name).resolve() == path.resolve():
            return path.name
    except OSError:
        pass
    return shlex.quote(str(path))


class _Reader:
    """Reads the files of one session; ``lenient``: a bad file is recorded in ``problems`` and read as absent."""

    def __init__(self, path: Path, lenient: bool):
        self.path, self.lenient = path, lenient
        self.problems: dict[str, str] = {}

    def read(self, name: str, shape: type[_Record], required: bool = False) -> dict[str, Any]:
        file = self.path / name
        if not required and not file.exists():
            return {}
        try:
            if not file.exists():
                raise missing_file(file)
            return read_record(file, shape)
        except InputError as exc:
            if not self.lenient:
                raise
            self.problems[name] = exc.message
            return {}


def _summary(path: Path, reader: _Reader) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    info = reader.read("run.json", _RunInfo, required=True)
    # A session refused at the memory check by agentlab 0.1.0, or stopped before session.json was written (or live in
    # that moment), has run.json alone; one that got results, or completed, should hold session.json.
    needed = (path / "results.json").exists() or info.get("status") == "completed"
    session = reader.read("session.json", _SessionInfo, required=needed)
    results = reader.read("results.json", _Results)
    summary = {"id": path.name, "path": str(path), "started": info.get("started"), "status": run_status(path, info),
               "pipeline": session.get("pipeline"), "parent": session.get("parent_run_id"),
               "from_stage": session.get("from_stage"), "input": session.get("input"),
               "final": results.get("final"), "stages": len(results.get("stages", [])) or None,
               "error": info.get("error"), "problems": reader.problems}
    return summary, session, results


def session_summary(path: Path, *, lenient: bool = False) -> dict[str, Any]:
    """id, time, status, input and final answer (whole: `history` cuts them to fit its table), parent, stage count
    of one run folder (missing parts are None).

    A session file that cannot be read raises ``InputError``; with ``lenient`` it counts as missing and
    ``problems`` maps its name (``run.json``, ``session.json``, ``results.json``) to what is wrong with it.
    """
    return _summary(path, _Reader(path, lenient))[0]


def list_sessions(root: str | Path | None = None) -> list[dict[str, Any]]:
    """Every session, oldest first; a session with unreadable files (its step files included: what `show` reads) is
    listed with its ``problems`` and the status ``damaged`` (`show` refuses it, whatever run.json says: a session file
    that is empty, not JSON or of the wrong shape, a missing step file, or a missing session.json it should hold):
    the status `history` prints, in its table and in ``--json`` alike."""
    base = sessions_root(root)
    folders = sorted(p for p in base.iterdir() if (p / "run.json").is_file()) if base.is_dir() else []
    listed = []
    for path in folders:
        reader = _Reader(path, lenient=True)
        summary, _, results = _summary(path, reader)
        for step in sorted((path / "steps").glob("*.json")):
            reader.read(f"steps/{step.name}", _Step)
        for name, error in missing_steps(path, results).items():
            reader.problems[name] = error.message
        if reader.problems:  # `show` reads every one of these files, and refuses the session over any of them
            summary["status"] = DAMAGED
        listed.append(summary)
    return listed


def shown_status(session: dict[str, Any]) -> str:
    """The status `history` and the ui show for a session ``list_sessions`` gave: ``? run.json`` when its run.json
    cannot be read, else its status (``damaged`` included)."""
    return "? run.json" if "run.json" in session["problems"] else str(session["status"])


def session_tree(sessions: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """(roots, parent id -> children): a session whose parent is gone counts as a root."""
    ids = {s["id"] for s in sessions}
    children: dict[str, list[dict[str, Any]]] = {}
    roots = []
    for s in sessions:
        if s["parent"] in ids:
            children.setdefault(s["parent"], []).append(s)
        else:
            roots.append(s)
    return roots, children


def find_session(ref: str, root: str | Path | None = None) -> Path:
    """A session folder from a path, a folder name, or a unique prefix of a folder name."""
    if not ref.strip():  # "" is a prefix of every name ("'' matches 10 sessions"), and Path("") the current folder
        raise UsageError(f"the session name is empty ({ref!r}): name a session by its folder name, a unique prefix "
                         "of it, or its path", hint="list them with `agentlab pipeline history`")
    as_path = Path(ref)
    if (as_path / "run.json").is_file():
        from agentlab.core.runs import run_info

        run_info(as_path, "pipeline")  # another command's run folder is no session (exit 2, named)
        return as_path
    base = sessions_root(root)
    folders = sorted(p for p in base.iterdir() if (p / "run.json").is_file()) if base.is_dir() else []
    exact = [p for p in folders if p.name == ref]
    matches = exact or [p for p in folders if p.name.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        for folder in (base / ref, as_path):
            if _looks_like_session(folder, base):  # a session without its run.json is damaged, not absent
                raise InputError(f"{folder}: not a readable session (run.json missing): the folder is incomplete or "
                                 "damaged", hint="start a new session with `agentlab pipeline run`")
        raise UsageError(f"no pipeline session '{ref}' under {base}",
                         hint="list them with `agentlab pipeline history`")
    raise UsageError(f"'{ref}' matches {len(matches)} sessions: {', '.join(p.name for p in matches[:5])}",
                     hint="give more of the name")


def _looks_like_session(folder: Path, base: Path) -> bool:
    """Whether ``folder``, which has no run.json, is a session's: a folder right under ``base`` (runs/pipeline), or
    one holding a session's session.json, steps/ or results.json (not any folder: `show models`)."""
    try:
        return folder.is_dir() and (folder.resolve().parent == base.resolve() or any(
            (folder / name).exists() for name in ("session.json", "steps", "results.json")))
    except OSError:
        return False


def load_steps(path: Path, stages: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """The step records of a session (those of ``stages`` alone when given: a rerun reads only what it reuses), in
    run order; ``InputError`` naming a step file that cannot be read."""
    folder = path / "steps"
    wanted = None if stages is None else set(stages)
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    return [read_record(f, _Step) for f in files if wanted is None or f.stem.partition("-")[2] in wanted]


def load_session(path: Path) -> dict[str, Any]:
    """Everything `pipeline show` prints: the summary, the step records, the final answer. ``InputError`` (one line,
    naming the file) when any of the session's files cannot be read."""
    try:
        summary, session, results = _summary(path, _Reader(path, lenient=False))
        for error in missing_steps(path, results).values():
            raise error
        steps = load_steps(path)
    except InputError as exc:
        if exc.hint is None:
            exc.hint = damaged_hint(path, exc)
        raise
    final = results.get("final")
    return {**summary, "input": session.get("input"), "final": final, "results": results, "steps": steps,
            "failed_stage": session.get("failed_stage"),
            "continue_from": None if final is not None else unfinished_stage(path, [s["stage"] for s in steps])}


def damaged_hint(path: Path, error: InputError) -> str:
    """What to do about the session ``path`` that ``error`` (its message opens with the file's path) says is
    damaged: a bad or missing step file is made again by a rerun from its stage (the stages before it are kept), when
    the session holds what a rerun reads; else a new session."""
    new = "start a new session with `agentlab pipeline run`"
    steps = f"{path / 'steps'}{os.sep}"
    name = error.message[len(steps):].partition(":")[0] if error.message.startswith(steps) else ""
    stage = Path(name).stem.partition("-")[2]
    if stage and not rerun_lacks(path):
        return (f"the session folder is damaged: run stage '{stage}' and those after it again with `agentlab "
                f"pipeline rerun {session_ref(path)} --from {stage}`, or {new}")
    return f"the session folder is damaged (a file was changed, cut short or removed): {new}"


def unfinished_stage(path: Path, finished: Iterable[str] | None = None) -> str | None:
    """The stage a rerun continues an unfinished session from: the first stage in run order (the session's
    config.yaml) not in ``finished`` (default: the stages with a step file); None when config.yaml cannot be read or
    every stage finished."""
    try:
        pipeline = load_config(path / "config.yaml", PipelineConfig, schema="pipeline")
        names = [s.name for s in execution_order(pipeline.base_pipeline.stages)]
    except (AgentlabError, ValueError):
        return None
    done = set(finished if finished is not None else (f.stem.partition("-")[2] for f in path.glob("steps/*.json")))
    return next((n for n in names if n not in done), None)


def continue_hint(ref: str, stage: str | None, finished: bool) -> str:
    """How to go on with a session that stopped (failed, interrupted) before ``stage``, said by `show` and Ctrl-C;
    ``ref`` names the session as ``session_ref`` does, ``finished``: whether any stage finished (kept for a rerun
    from ``stage``). With none, a rerun of the whole session: the command again would find its --out folder taken."""
    rerun = f"agentlab pipeline rerun {ref}"
    if stage and finished:
        return f"the finished stages are kept: continue with `{rerun} --from {stage}`"
    return (f"no stage finished: run it again (`{rerun}` reads its saved config and models; other models: add "
            "--models FILE)")


@dataclass
class Rerun:
    loaded: Loaded
    reuse: dict[str, dict[str, Any]]
    input_text: str
    parent_id: str
    from_stage: str


def rerun_lacks(folder: str | Path) -> list[str]:
    """The saved files a rerun reads (config.yaml, or pipeline.yaml of older sessions, and models.yaml) that the
    session ``folder`` lacks: a session stopped before it wrote them (run.json alone) cannot be rerun."""
    folder = Path(folder)
    lacks = [] if (folder / "config.yaml").is_file() or (folder / "pipeline.yaml").is_file() else ["config.yaml"]
    return lacks + ([] if (folder / "models.yaml").is_file() else ["models.yaml"])


def prepare_rerun(parent: Path, from_stage: str | None, *, sets: Iterable[str] | None = None,
                  input_text: str | None = None, llm_path: str | Path | None = None,
                  models_path: str | Path | None = None) -> Rerun:
    """The parent's saved configs with ``sets`` applied; its step records for the stages before ``from_stage``
    (default: the first stage, i.e. run everything again); the parent's input unless ``input_text`` is given;
    ``models_path``: a models file to run on instead of the parent's models.yaml (a model fixed after a failure).

    A reused stage keeps the parent's output, which answered the parent's input under the parent's config of that
    stage, on the parent's models. So a ``set`` that changes a stage before ``from_stage``, a ``models_path`` that
    lacks a model of the pipeline or defines a model of a reused stage otherwise than the parent's models.yaml, and
    an ``input_text`` other than the parent's input while any stage is reused, are refused (``UsageError``, exit 2,
    before anything is written): the child session would record a config, a model or an input its outputs did not
    come from.
    """
    saved_models = parent / "models.yaml"
    # config.yaml is the pipeline (sessions made before it was called so: pipeline.yaml)
    pipeline_file = parent / "config.yaml" if (parent / "config.yaml").is_file() else parent / "pipeline.yaml"
    if lacks := rerun_lacks(parent):
        raise InputError(f"{parent / lacks[0]}: missing: the session folder is incomplete or damaged",
                         hint="a rerun reads the session's config.yaml and models.yaml as `pipeline run` wrote "
                         "them; start a new session with `agentlab pipeline run`")
    saved = load_models(saved_models)
    models = saved if models_path is None else load_models(models_path)
    if models_path is not None:
        check_defines_models(models, Path(models_path))
    sets = list(sets or [])
    # checked against the parent's models too: a model FILE lacks is named below, as FILE's, not as config.yaml's
    known = {**saved.models, **models.models}
    pipeline = load_config(pipeline_file, pipeline_checked(known), sets, schema="pipeline")
    order = execution_order(pipeline.base_pipeline.stages)
    names = [s.name for s in order]
    from_stage = from_stage or names[0]
    if from_stage not in names:
        raise UsageError(f"--from {from_stage}: no such stage", hint=f"stages in run order: {', '.join(names)}")
    start = names.index(from_stage)
    if sets and start:  # first: a --set may point a reused stage at a model only --models FILE has
        _check_sets_keep(pipeline_file, known, sets, names[:start], from_stage)
    if models_path is not None:
        _check_models_keep(Path(models_path), saved, models, order, start, parent)
    parent_steps = {s["stage"]: s for s in load_steps(parent, names[:start])}
    missing = [n for n in names[:start] if n not in parent_steps]
    if missing and is_live(parent):  # its owner is still at them: their outputs are not final yet
        raise UsageError(f"session {parent.name} is still running and has not finished stage(s) {', '.join(missing)} "
                         f"before --from {from_stage}: their outputs are not final yet",
                         hint=f"wait for it to finish, or rerun from a stage it has not finished (--from {missing[0]})")
    if missing:
        raise UsageError(f"the parent session has no output for stage(s) {', '.join(missing)}",
                         hint=f"rerun from an earlier stage, e.g. --from {missing[0]}")
    reuse = {n: parent_steps[n] for n in names[:start]}
    used = used_models(order[start:])
    saved_llm = parent / "llm.yaml"
    routed = load_routed(llm_path or (saved_llm if saved_llm.is_file() else None), models, used)
    check_used_models(saved_models if models_path is None else Path(models_path), models, used, routed)
    saved_input = _Reader(parent, lenient=False).read("session.json", _SessionInfo, required=True).get("input") if (
        input_text is None or reuse) else None
    if reuse and input_text is not None and saved_input is not None and input_text.strip() != saved_input.strip():
        reused = ", ".join(reuse)
        raise UsageError(f"the given input differs from the input of session {parent.name}, but stage(s) {reused} "
                         f"before --from {from_stage} would reuse its outputs, which answer that input",
                         hint=f"rerun from the first stage to answer the new input (--from {names[0]}, or no --from), "
                         "or leave --input out")
    if input_text is None:
        input_text = saved_input
        if input_text is None:
            raise UsageError(f"{parent / 'session.json'}: the parent session has no saved input",
                             hint='pass --input "TEXT" or --input-file FILE')
    return Rerun(Loaded(models, pipeline, routed, saved_models if models_path is None else Path(models_path)), reuse,
                 input_text, parent.name, from_stage)


def _definition(models: ModelsConfig, name: str) -> dict[str, Any]:
    """What a model answers with: its routed name, or its file (resolved) and backend; and its settings (load
    settings and params, ``defaults`` and ``overrides`` merged)."""
    entry = models.models[name]
    source: dict[str, Any] = {"routed": entry.routed} if entry.routed is not None else {
        "file": str((models.path(name) or Path()).resolve()), "backend": models.backend(name)}
    return {**source, "settings": models.settings(name).model_dump(mode="json")}


def _check_models_keep(models_path: Path, saved: ModelsConfig, models: ModelsConfig, order: list[StageConfig],
                       start: int, parent: Path) -> None:
    """Refuse (``UsageError``) a ``--models`` file that lacks a model of the pipeline (the child's config.yaml names
    it), or defines a model of a stage before ``start`` (reused: its output came from the parent's definition, in
    the parent's models.yaml) otherwise."""
    saved_file = parent / "models.yaml"
    for stage in order:
        for name in sorted(used_models([stage])):
            if name not in models.models:
                raise UsageError(f"--models {models_path}: no model '{name}', which stage '{stage.name}' of session "
                                 f"{parent.name} uses", hint=f"add it to {models_path} (as the session ran it: "
                                 f"models.{name} in {saved_file})")
    reused = order[:start]
    for stage in reused:
        for name in sorted(used_models([stage])):
            if name not in saved.models or _definition(models, name) != _definition(saved, name):
                raise UsageError(f"--models {models_path}: model '{name}' differs from session {parent.name}'s, and "
                                 f"stage '{stage.name}', reused before --from {order[start].name}, ran on it: a "
                                 "reused stage keeps the parent's output", hint=f"rerun from that stage to run it on "
                                 f"the new model (--from {stage.name}), or define models.{name} as the session ran it "
                                 f"(in {saved_file})")


def _check_sets_keep(pipeline_file: Path, known: dict[str, ModelEntry], sets: list[str], reused: list[str],
                     from_stage: str) -> None:
    """Refuse (``UsageError``) ``sets`` that change a ``reused`` stage: its output is the parent's, made under the
    parent's config of it, so the change would be recorded in the child's config.yaml without having run. Each stage
    is compared whole (model, prompt, params, fallbacks, ...) before and after the sets; the message names the
    changed stages and, where one alone changes them, the --set."""
    checked = pipeline_checked(known)

    def changed(overrides: list[str]) -> list[str]:
        edited = {s.name: s for s in load_config(pipeline_file, checked, overrides, schema="pipeline")
                  .base_pipeline.stages}
        return [n for n in reused if edited[n].model_dump(mode="json") != saved.get(n)]

    saved = {s.name: s.model_dump(mode="json")
             for s in load_config(pipeline_file, checked, schema="pipeline").base_pipeline.stages}
    stages = changed(sets)
    if not stages:
        return
    culprits = []
    for one in sets:
        try:
            if changed([one]):
                culprits.append(one)
        except (AgentlabError, KeyError):  # valid only with the other sets, or renames a stage: not named alone
            continue
    what = ", ".join(set_label(c) for c in culprits) if culprits else "--set"
    names = ("stages " if len(stages) > 1 else "stage ") + ", ".join(f"'{n}'" for n in stages)
    raise UsageError(f"{what}: changes {names}, reused from the parent session (before --from {from_stage}): a reused "
                     "stage keeps the parent's output, so the change would not run",
                     hint=f"rerun from {'the first of them' if len(stages) > 1 else 'that stage'} to run the change "
                     f"(--from {stages[0]}), or leave the --set out")
