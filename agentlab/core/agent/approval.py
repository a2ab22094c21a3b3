"""Approval through the run folder: the agent's pending action in ``approval.json`` (``{"state": "waiting",
"action": ...}``) and the answer in ``approval_answer.json`` (``{"answer": "yes" | "no" | "edit", "note": ...,
"changes": {...}}``), both written atomically. The terminal (``agentlab nas --approve``) and ``agentlab ui`` answer
the same way: whichever answers first is taken. A run without a terminal waits for the UI (or any program that
writes the answer file) only when ``AGENTLAB_APPROVE_UI=1`` says so (``agentlab ui`` sets it for the runs it starts);
otherwise the CLI refuses --approve there (exit 2): nobody would answer."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentlab.core.runs import atomic_write_json, now_iso, read_json

PENDING = "approval.json"
ANSWER = "approval_answer.json"
ANSWERS = ("yes", "no", "edit")
APPROVE_UI_ENV = "AGENTLAB_APPROVE_UI"  # 1: a run without a terminal waits for answers from `agentlab ui`


def ui_answers() -> bool:
    """Whether the answers to --approve come from `agentlab ui` (``AGENTLAB_APPROVE_UI=1``) when there is no
    terminal."""
    return os.environ.get(APPROVE_UI_ENV, "").strip().lower() in ("1", "true", "yes")


def ask(run: str | Path, action: dict[str, Any]) -> None:
    """Record ``action`` as waiting for an answer (any earlier answer file is dropped first)."""
    (Path(run) / ANSWER).unlink(missing_ok=True)
    atomic_write_json(Path(run) / PENDING, {"state": "waiting", "action": action, "asked": now_iso()})


def _read(path: Path) -> dict[str, Any]:
    """A file of the approval as a dict; empty when it is missing, being replaced or not an object."""
    if not path.is_file():
        return {}
    try:
        data = read_json(path)
    except Exception:  # a file being replaced: nothing to read this instant
        return {}
    return data if isinstance(data, dict) else {}


def pending(run: str | Path) -> dict[str, Any] | None:
    """The action waiting for an answer in ``run``, or None."""
    data = _read(Path(run) / PENDING)
    return data.get("action") if data.get("state") == "waiting" else None


def answer(run: str | Path, verdict: str, note: str = "", changes: dict[str, Any] | None = None) -> None:
    """Answer the pending action (the UI's side)."""
    if verdict not in ANSWERS:
        raise ValueError(f"answer must be one of {ANSWERS}")
    atomic_write_json(Path(run) / ANSWER, {"answer": verdict, "note": note, "changes": changes or {},
                                           "answered": now_iso()})


def read_answer(run: str | Path) -> dict[str, Any] | None:
    """The answer file as the graph takes it (``{"answer", "note", "args"}``), or None while there is none."""
    data = _read(Path(run) / ANSWER)
    if data.get("answer") not in ANSWERS:
        return None
    out: dict[str, Any] = {"answer": data["answer"], "note": str(data.get("note") or "")}
    if data["answer"] == "edit":
        out["args"] = {"changes": data.get("changes") or {}, "reason": "edited by the user"}
    return out


def close(run: str | Path, reply: dict[str, Any]) -> None:
    """Mark the approval answered (the run folder keeps the last question and its answer)."""
    path = Path(run) / PENDING
    atomic_write_json(path, {**_read(path), "state": "answered", "reply": reply, "answered": now_iso()})
    (Path(run) / ANSWER).unlink(missing_ok=True)


def wait(run: str | Path, action: dict[str, Any], terminal: Callable[[float], dict[str, Any] | None] | None = None,
         poll_s: float = 0.5) -> dict[str, Any]:
    """Ask, then wait for the answer file, or for ``terminal(timeout)`` (a reply typed within ``timeout`` seconds,
    else None) when given; returns the reply and marks the approval answered."""
    ask(run, action)
    while True:
        reply = terminal(poll_s) if terminal is not None else None
        if reply is None:
            reply = read_answer(run)
        if reply is not None:
            close(run, reply)
            return reply
        if terminal is None:
            time.sleep(poll_s)


def describe(action: dict[str, Any]) -> str:
    """The pending action in two lines: what the agent wants to run (its parameters) and why."""
    args = action.get("args", {})
    what = (f"candidate {args['candidate']}" if "candidate" in args
            else ", ".join(f"{k}={v}" for k, v in (args.get("changes") or {}).items()))
    params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in (action.get("params") or {}).items())
    refused = (f"your edit was not valid ({action['refused_edit']}): nothing ran; answer again\n"
               if action.get("refused_edit") else "")
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
