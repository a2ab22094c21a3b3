"""--approve through the graph's checkpoint: before each action the agent's graph stops at a LangGraph
``interrupt({"kind": "approve", "action": ...})`` (``harness.Approval``), kept in the run folder's ``agent.sqlite``,
and is resumed with ``Command(resume=answer)``, ``answer`` being ``{"answer": "yes" | "no" | "edit", "note": ...,
"args": {"changes": {...}}}``. No file is polled.

- In a terminal, the CLI asks and resumes at once.
- Without one, under ``agentlab ui`` (``AGENTLAB_APPROVE_UI=1``, set for the runs it starts), the approver raises
  ``AwaitingApproval``: the process stops (run.json ``interrupted``, ``waiting for approval``) with the question in the
  checkpoint; the UI reads it there (``pending``) and answers by resuming the run: ``agentlab nas --resume RUN
  --answer JSON`` (``resume_args``), whose approver gives that answer to the waiting interrupt.
- Without a terminal and without the UI, the CLI refuses --approve (exit 2): nobody would answer.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

ANSWERS = ("yes", "no", "edit")
APPROVE_UI_ENV = "AGENTLAB_APPROVE_UI"  # 1: a run without a terminal stops at each approval for `agentlab ui`
CHECKPOINT = "agent.sqlite"  # the agent's graph in the run folder (core.search.session)
THREAD = "agent"  # its thread (harness.AgentRun)
WAITING = "waiting for approval"  # run.json's error of a run stopped at an approval


class AwaitingApproval(KeyboardInterrupt):
    """The run stops at an approval nobody can answer now (no terminal): the question stays in the checkpoint and
    ``--resume --answer`` continues. A KeyboardInterrupt, so the run folder records it as a stop, not a failure."""

    reason = WAITING


def ui_answers() -> bool:
    """Whether the answers to --approve come from `agentlab ui` (``AGENTLAB_APPROVE_UI=1``) when there is no
    terminal."""
    return os.environ.get(APPROVE_UI_ENV, "").strip().lower() in ("1", "true", "yes")


def pending(run: str | Path) -> dict[str, Any] | None:
    """The action the agent's graph waits to have approved in ``run`` (read from its checkpoint), or None: no
    agent, no approval waiting, or a checkpoint that cannot be read now."""
    path = Path(run) / CHECKPOINT
    if not path.is_file():
        return None
    try:
        from langgraph.checkpoint.sqlite import SqliteSaver
    except ImportError:  # no agent extra: no agent ran here
        return None
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False) as conn:
            saved = SqliteSaver(conn).get_tuple({"configurable": {"thread_id": THREAD}})
    except sqlite3.Error:
        return None
    for _task, channel, value in (saved.pending_writes or []) if saved is not None else []:
        if channel != "__interrupt__":
            continue
        for item in value if isinstance(value, (list, tuple)) else [value]:
            payload = getattr(item, "value", None)
            if isinstance(payload, dict) and payload.get("kind") == "approve":
                return dict(payload.get("action") or {})
    return None


def make_answer(verdict: str, note: str = "", changes: dict[str, Any] | None = None,
                edits: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """The resume value of an approval: ``{"answer", "note"}``, and for an edit the changes to the proposal shown
    (a config) or its ``edits`` with new texts (a code change: each ``{"path", "old", "new"}``)."""
    if verdict not in ANSWERS:
        raise ValueError(f"answer must be one of {ANSWERS}, not {verdict!r}")
    out: dict[str, Any] = {"answer": verdict, "note": str(note or "")}
    if verdict == "edit" and edits is not None:
        out["args"] = {"edits": [dict(e) for e in edits], "reason": "edited by the user"}
    elif verdict == "edit":
        out["args"] = {"changes": dict(changes or {}), "reason": "edited by the user"}
    return out


def parse_answer(text: str) -> dict[str, Any]:
    """``--answer``'s value: ``yes``, ``no``, or JSON ``{"answer": "yes" | "no" | "edit", "note": "...", "changes":
    {...}}``, as the resume value; a ValueError names what is wrong."""
    text = text.strip()
    if text in ANSWERS:
        return make_answer(text)
    try:
        data = json.loads(text)
    except ValueError:
        raise ValueError(f"--answer {text!r}: not yes, no or a JSON object") from None
    if not isinstance(data, dict) or data.get("answer") not in ANSWERS:
        raise ValueError(f"--answer: the field 'answer' must be one of {', '.join(ANSWERS)}")
    changes = data.get("changes") or {}
    if not isinstance(changes, dict):
        raise ValueError("--answer: the field 'changes' must be an object of key: value")
    edits = data.get("edits")
    if edits is not None and (not isinstance(edits, list) or not all(
            isinstance(e, dict) and all(isinstance(e.get(k), str) for k in ("path", "old", "new")) for e in edits)):
        raise ValueError("--answer: the field 'edits' must be a list of {path, old, new} texts")
    if data["answer"] == "edit" and not changes and not edits:
        raise ValueError("--answer: an edit needs 'changes' (key: value of the proposal to change) or, for a code "
                         "change, 'edits' (path, old, new)")
    return make_answer(data["answer"], str(data.get("note") or ""), changes, edits or None)


def resume_args(command: str, run: str | Path, answer: dict[str, Any]) -> list[str]:
    """The arguments after ``agentlab`` that resume ``run`` with ``answer`` to its waiting approval (the UI's)."""
    args = answer.get("args") or {}
    flat = {"answer": answer["answer"], "note": answer.get("note", ""), "changes": args.get("changes") or {},
            **({"edits": args["edits"]} if args.get("edits") else {})}
    return [command, "--resume", str(run), "--answer", json.dumps(flat)]


def describe(action: dict[str, Any]) -> str:
    """The pending action in two lines: what the agent wants to run (its parameters) and why; a code change with its
    diff."""
    args = action.get("args", {})
    params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in (action.get("params") or {}).items())
    refused = (f"your edit was not valid ({action['refused_edit']}): nothing ran; answer again\n"
               if action.get("refused_edit") else "")
    if action.get("diff") is not None:
        return (f"{refused}the agent wants to change the code and run it with {params}\n  why: "
                f"{action.get('reason') or '-'}\n{str(action['diff']).rstrip()}")
    what = (f"candidate {args['candidate']}" if "candidate" in args
            else ", ".join(f"{k}={v}" for k, v in (args.get("changes") or {}).items()))
    return f"{refused}the agent wants to run {what}: {params}\n  why: {action.get('reason') or '-'}"


def parse_changes(text: str) -> dict[str, Any]:
    """``key=value, ...`` as a dict, each value typed as YAML reads it (``64`` an int, ``true`` a bool)."""
    import yaml

    changes: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = item.partition("=")
        try:
            changes[key.strip()] = yaml.safe_load(value.strip()) if value.strip() else value.strip()
        except yaml.YAMLError:
            changes[key.strip()] = value.strip()
    return changes
