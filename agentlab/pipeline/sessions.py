"""Sessions: every pipeline run is a run folder under runs/pipeline/; a rerun is a child folder naming its parent.

A session is found by folder name, a unique prefix of it, or a path. Nothing here writes to an existing session:
a rerun reads the parent's saved configs and step files and runs into a new folder.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentlab.core.config import load_config
from agentlab.core.errors import UsageError
from agentlab.core.runs import read_json, run_status, runs_root
from agentlab.pipeline.config import execution_order
from agentlab.pipeline.load import Loaded, check_used_models, load_models, load_routed, used_models

COMMAND = "pipeline"


def sessions_root(root: str | Path | None = None) -> Path:
    """runs/pipeline (or $AGENTLAB_RUNS/pipeline)."""
    return runs_root(root) / COMMAND


def _head(text: str | None, width: int = 60) -> str:
    if not text:
        return ""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def session_summary(path: Path) -> dict[str, Any]:
    """id, time, status, input and final heads, parent, stage count of one run folder (missing parts are None)."""
    info = read_json(path / "run.json")
    session = read_json(path / "session.json") if (path / "session.json").is_file() else {}
    results = read_json(path / "results.json") if (path / "results.json").is_file() else {}
    return {"id": path.name, "path": str(path), "started": info.get("started"), "status": run_status(path, info),
            "pipeline": session.get("pipeline"), "parent": session.get("parent_run_id"),
            "from_stage": session.get("from_stage"), "input": _head(session.get("input")),
            "final": _head(results.get("final")), "stages": len(results.get("stages", [])) or None}


def list_sessions(root: str | Path | None = None) -> list[dict[str, Any]]:
    """Every session, oldest first."""
    base = sessions_root(root)
    folders = sorted(p for p in base.iterdir() if (p / "run.json").is_file()) if base.is_dir() else []
    return [session_summary(p) for p in folders]


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
    as_path = Path(ref)
    if (as_path / "run.json").is_file():
        return as_path
    base = sessions_root(root)
    folders = sorted(p for p in base.iterdir() if (p / "run.json").is_file()) if base.is_dir() else []
    exact = [p for p in folders if p.name == ref]
    matches = exact or [p for p in folders if p.name.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UsageError(f"no pipeline session '{ref}' under {base}",
                         hint="list them with `agentlab pipeline history`")
    raise UsageError(f"'{ref}' matches {len(matches)} sessions: {', '.join(p.name for p in matches[:5])}",
                     hint="give more of the name")


def load_steps(path: Path) -> list[dict[str, Any]]:
    """The step records of a session, in run order."""
    folder = path / "steps"
    return [read_json(f) for f in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def load_session(path: Path) -> dict[str, Any]:
    """Everything `pipeline show` prints: the summary, the step records, the final answer."""
    summary = session_summary(path)
    results = read_json(path / "results.json") if (path / "results.json").is_file() else {}
    session = read_json(path / "session.json") if (path / "session.json").is_file() else {}
    return {**summary, "input": session.get("input"), "final": results.get("final"), "results": results,
            "steps": load_steps(path)}


@dataclass
class Rerun:
    loaded: Loaded
    reuse: dict[str, dict[str, Any]]
    input_text: str
    parent_id: str
    from_stage: str


def prepare_rerun(parent: Path, from_stage: str | None, *, sets: Iterable[str] | None = None,
                  input_text: str | None = None, llm_path: str | Path | None = None) -> Rerun:
    """The parent's saved configs with ``sets`` applied; its step records for the stages before ``from_stage``
    (default: the first stage, i.e. run everything again); the parent's input unless ``input_text`` is given."""
    from agentlab.pipeline.config import pipeline_checked

    models_path = parent / "models.yaml"
    models = load_models(models_path)
    # config.yaml is the pipeline (sessions made before it was called so: pipeline.yaml)
    pipeline_file = parent / "config.yaml" if (parent / "config.yaml").is_file() else parent / "pipeline.yaml"
    pipeline = load_config(pipeline_file, pipeline_checked(models.models), list(sets or []))
    order = execution_order(pipeline.base_pipeline.stages)
    names = [s.name for s in order]
    from_stage = from_stage or names[0]
    if from_stage not in names:
        raise UsageError(f"--from {from_stage}: no such stage", hint=f"stages in run order: {', '.join(names)}")
    start = names.index(from_stage)
    parent_steps = {s["stage"]: s for s in load_steps(parent)}
    missing = [n for n in names[:start] if n not in parent_steps]
    if missing:
        raise UsageError(f"the parent session has no output for stage(s) {', '.join(missing)}",
                         hint=f"rerun from an earlier stage, e.g. --from {missing[0]}")
    reuse = {n: parent_steps[n] for n in names[:start]}
    used = used_models(order[start:])
    saved_llm = parent / "llm.yaml"
    routed = load_routed(llm_path or (saved_llm if saved_llm.is_file() else None), models, used)
    check_used_models(models_path, models, used, routed)
    if input_text is None:
        session = read_json(parent / "session.json")
        input_text = session["input"]
    return Rerun(Loaded(models, pipeline, routed, models_path), reuse, input_text, parent.name, from_stage)
