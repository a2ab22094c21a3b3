"""What the search loop knows about each trial, read back from the Optuna study (the one source of truth).

Every decision is stored on the trial itself as user attributes, so any worker sharing the storage, and any resumed
run, sees the same history: planner, changes, reasoning, accepted, reason, metrics.
"""

from __future__ import annotations

import math
import os
import re
import socket
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Two trial user attributes, each one storage write (a commit on SQLite): the plan, set when the trial starts
# ({planner, changes, reasoning, worker, run_dir; origin, choice, candidates, warmup and notes where the planner gave
# them}), and the outcome, set when it ends
# ({metrics, accepted, reason, decided_by, counted; against and lead where the evaluator judged it against an
# incumbent: ``evaluator.HybridEvaluator``}).
A_PLAN, A_OUTCOME = "plan", "outcome"


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def worker_alive(worker: str | None) -> bool:
    """Whether the process behind a worker id still runs. Workers on other hosts are assumed alive."""
    if not worker or ":" not in worker:
        return False
    if not local_worker(worker):
        return True
    pid = worker.rpartition(":")[2]
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    try:  # a PID reused since (after a reboot) by a process that is no Python: that worker is gone
        command = Path(f"/proc/{int(pid)}/cmdline").read_bytes().lower()
    except OSError:  # no /proc (macOS), or not readable: the process counts as the worker
        return True
    return not command or b"python" in command or b"agentlab" in command


def local_worker(worker: str | None) -> bool:
    """Whether a worker id names a process of this host."""
    return bool(worker) and str(worker).rpartition(":")[0] == socket.gethostname()


def awaiting_retry(trials: list[Any], max_retries: int, wait_s: float = 60.0) -> set[int]:
    """Numbers of the trials failed by the heartbeat check (a FAIL without an outcome) whose retry is not queued yet:
    Optuna fails a stale trial and queues its retry in two storage writes, and in between the trial's slot is still
    taken (no worker should plan past the budget, or stop before the retry ran). Bounded by ``wait_s`` after the
    failure: a worker that died between the two writes leaves no retry."""
    from datetime import datetime

    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    now = datetime.now()
    return {t.number for t in trials
            if t.state.name == "FAIL" and not t.user_attrs.get(A_OUTCOME) and t.number not in retried
            and len(t.system_attrs.get("retry_history", [])) < max_retries and t.datetime_complete is not None
            and (now - t.datetime_complete).total_seconds() < wait_s}


def variant_of(plan: dict[str, Any]) -> str:
    """A trial plan's variant (``TrialRecord.variant``), ``""`` when it has none."""
    return str((plan.get("extra") or {}).get("variant", ""))


def run_id(number: int) -> str:
    return f"run_{number:04d}"


def _state(name: str, outcome: dict[str, Any]) -> str:
    """The trial's state as the report reads it: a FAIL that was an interruption (Ctrl-C, a dead worker, a full
    disk: not counted, planned again) is ``interrupted``, one the loop never ran (its config or the last budget slot
    taken by another worker at the same moment, the objective's refusal: not counted) ``skipped``; neither is
    ``failed``, which a report counts as the user's config failing."""
    if name == "FAIL" and not outcome:  # failed by the heartbeat check: its worker died, a retry runs it again
        return "interrupted"
    if name == "FAIL" and not outcome.get("counted", True):
        return "interrupted" if str(outcome.get("reason", "")).startswith("interrupt") else "skipped"
    return {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running"}.get(name, name.lower())


@dataclass
class TrialRecord:
    """One trial as the planner, evaluator, state file and report see it."""

    number: int
    state: str  # complete | pruned | failed | interrupted | skipped | running
    value: float | None
    params: dict[str, Any]
    planner: str = ""
    changes: dict[str, Any] = field(default_factory=dict)
    reasoning: str = ""
    origin: str = ""  # the llm planner's trials: classical | kept | picked | own | no answer (``share``)
    choice: int | None = None  # the llm planner's trials: the index of the candidate that ran
    candidates: int = 0  # the llm planner's trials: how many candidates there were
    warmup: bool = False  # one of the sampler's warm-up trials (outside the LLM's share and its bandit)
    notes: list[str] = field(default_factory=list)  # the planner's notes: why the LLM was not asked, no answer
    accepted: bool | None = None
    reason: str = ""
    decided_by: str = ""
    against: int | None = None  # the incumbent it was judged against: accepted, it takes that trial's place
    lead: dict[str, Any] = field(default_factory=dict)  # accepted: the best value seen ({run, value}), if not its own
    metrics: dict[str, Any] = field(default_factory=dict)
    worker: str = ""
    run_dir: str = ""  # the run folder of the worker that planned it
    counted: bool = True
    seconds: float | None = None
    intermediate: dict[int, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # what the command kept with the plan (``Proposal.extra``)

    @property
    def variant(self) -> str:
        """What the trial ran besides its params (nas's code version; ``""``: nothing but the params): two trials
        are the same trial when their params and variant are."""
        return variant_of({"extra": self.extra})

    @property
    def run_id(self) -> str:
        return run_id(self.number)

    @property
    def finite(self) -> bool:
        return self.value is not None and math.isfinite(self.value)

    @property
    def pending(self) -> bool:
        """Queued, running, or failed by the heartbeat check with its retry not queued yet (still counted)."""
        return self.state in ("waiting", "running") or (self.state == "interrupted" and self.counted)

    @classmethod
    def from_frozen(cls, trial: Any) -> TrialRecord:
        plan, outcome = trial.user_attrs.get(A_PLAN, {}), trial.user_attrs.get(A_OUTCOME, {})
        seconds = None
        if trial.datetime_start and trial.datetime_complete:
            seconds = (trial.datetime_complete - trial.datetime_start).total_seconds()
        values = trial.values if trial.state.name == "COMPLETE" else None  # several objectives: no one value
        value = (values[0] if values and len(values) == 1 else None) if values is not None \
            else outcome.get("metrics", {}).get("value")
        return cls(
            number=trial.number,
            state=_state(trial.state.name, outcome),
            value=value,
            params=dict(trial.params),
            planner=plan.get("planner", ""),
            changes=plan.get("changes", {}),
            reasoning=plan.get("reasoning", ""),
            origin=plan.get("origin", ""),
            choice=plan.get("choice"),
            candidates=plan.get("candidates", 0),
            warmup=plan.get("warmup", False),
            notes=list(plan.get("notes", [])),
            accepted=outcome.get("accepted"),
            reason=outcome.get("reason", "" if outcome or trial.state.name != "FAIL" else
                               "interrupted: its worker stopped (no heartbeat); not counted, retried"),
            decided_by=outcome.get("decided_by", ""),
            against=outcome.get("against"),
            lead=dict(outcome.get("lead") or {}),
            metrics=outcome.get("metrics", {}),
            worker=plan.get("worker", ""),
            run_dir=plan.get("run_dir", ""),
            counted=outcome.get("counted", bool(outcome) or trial.state.name != "FAIL"),  # no outcome: stale
            seconds=seconds,
            intermediate=dict(trial.intermediate_values),
            extra=dict(plan.get("extra") or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["run_id"] = self.run_id
        out["intermediate"] = {str(k): v for k, v in self.intermediate.items()}
        return out

    def event_fields(self) -> dict[str, Any]:
        """What a ``trial`` event of events.jsonl holds: ``to_dict`` without the intermediate values."""
        return {k: v for k, v in self.to_dict().items() if k != "intermediate"}


def best_of(records: list[TrialRecord], direction: str = "minimize", *, incumbent: bool = True
            ) -> TrialRecord | None:
    """The incumbent: the accepted finished (and counted) trial that no later accepted trial took the place of. An
    evaluator that judges a trial against the incumbent (``evaluator.HybridEvaluator``) records which one
    (``against``), and a trial it accepts, a smaller model inside the noise band included, is the new incumbent:
    the best trial of the report, results.json, ``nas predict`` and ``nas apply``. Without such records (an
    evaluator that keeps trials on their own merits, compress's and evolve's; a run made before ``against``) no trial
    takes another's place, and the incumbent is the accepted trial with the lowest value (the highest for
    ``direction="maximize"``); of several left (workers that judged against the same incumbent at once), the best
    value, the earliest of equals. ``incumbent=False``: the best value among every finished trial but a diverged
    one, accepted or not: a counterfactual's best (``records`` without some trials), where a trial turned down
    because a left-out one was better counts."""
    done = [r for r in records if r.state == "complete" and r.finite and r.counted
            and (r.accepted if incumbent else not r.metrics.get("diverged"))]
    if incumbent:
        replaced = {r.against for r in done if r.against is not None}
        done = [r for r in done if r.number not in replaced]
    sign = -1.0 if direction == "maximize" else 1.0
    return min(done, key=lambda r: (sign * r.value, r.number)) if done else None  # type: ignore[operator]


def state_counts(records: list[TrialRecord]) -> dict[str, int]:
    """results.json's ``states``: how many trials ended in each state, in the order the states first occur."""
    return dict(Counter(r.state for r in records))


def state_dict(records: list[TrialRecord], metric: str, direction: str = "minimize") -> dict[str, Any]:
    """agent_state.json: ``best_run_id`` and ``runs`` with run_id, the metric, test metrics, decision, planner, and
    ``counted`` (False for a trial interrupted or abandoned: it used no budget and was planned again)."""
    best = best_of(records, direction)
    runs = [{"run_id": r.run_id, "trial": r.number, "state": r.state, metric: r.value,
             **{k: v for k, v in r.metrics.items() if k != "value"},
             "accepted": r.accepted, "reason": r.reason, "decided_by": r.decided_by, "planner": r.planner,
             "origin": r.origin, "choice": r.choice, "candidates": r.candidates, "reasoning": r.reasoning,
             "changes": r.changes, "params": r.params, "worker": r.worker, "seconds": r.seconds,
             "counted": r.counted} for r in records]
    return {"best_run_id": best.run_id if best else None, "best_value": best.value if best else None,
            "metric": metric, "runs": runs}


# A stderr line that says what went wrong besides the last line: a traceback's exception line (at the margin, after
# the traceback's indented lines), else a line that reports an error in words (argparse's "prog: error: ...",
# Hydra's "Could not override ...", which a hint line follows), never a warning's or a metric's.
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b")
_ERROR_LINE = re.compile(r"(?i)^(?!.*warn)(.*\berror:(?!\s*[-+.\d])|(error|fatal|could not|cannot|no such)\b)")


def _telling(lines: list[str]) -> str | None:
    for i in range(len(lines) - 1, 0, -1):
        if _EXCEPTION_LINE.match(lines[i]) and lines[i - 1][:1].isspace():
            return lines[i]
    return next((line for line in reversed(lines) if _ERROR_LINE.match(line.strip())), None)


def reason_line(reason: str) -> str:
    """A failure's reason in one line (the console): its first line, with the stderr tail's header replaced by the
    tail's last line, preceded by the line that says what went wrong when that is another one (``_telling``)."""
    lines = [line for line in reason.splitlines() if line.strip()]
    if not lines:
        return ""
    head = lines[0]
    if len(lines) > 1 and "; stderr (last " in head:
        tail, last = lines[1:], lines[-1].strip()
        telling = _telling(tail)
        telling = None if telling is None or telling.strip() == last else telling.strip()
        if telling is not None and len(telling) > 160:
            telling = telling[:159] + "…"
        said = last if telling is None else f"{telling} | {last}"
        head = head[:head.index("; stderr (last ")] + "; stderr: " + said
    return head


def planner_name(row: dict[str, Any] | TrialRecord, sampler: str = "sampler") -> str:
    """The trial table's planner column (``row``: a trial record or its dict): the planner, and for the LLM
    chooser's warm-up trials that it was not asked about (candidate 0 of the ``sampler``, drawn at random while the
    sampler warms up) the sampler's, ``tpe (warm-up)``: the LLM did not choose them (the stored planner stays
    ``llm``: they are its search's warm-up)."""
    get = row.get if isinstance(row, dict) else lambda key: getattr(row, key, None)
    planner = str(get("planner") or "?")
    if planner == "llm" and get("warmup") and get("origin") == "classical":
        return f"{sampler} (warm-up)"
    return planner


def planner_label(row: dict[str, Any], sampler: str = "sampler") -> str:
    """Who chose a trial, as the console and the report name it: the planner; for an agent's trial that it did not
    choose itself what ran instead (a default, or the guard's sampler); for the LLM chooser whether the LLM was asked
    and what it answered (``share``'s origins): ``tpe (warm-up)`` (``planner_name``), ``llm: not asked``, ``llm: no
    answer``, ``llm: kept candidate 0``, ``llm: picked candidate 2``."""
    planner, origin = str(row.get("planner") or "?"), row.get("origin")
    if origin == "default":
        return f"{planner}'s default: the sampler's candidate 0"
    if origin == "guard":
        return f"{planner}'s guard: the sampler"
    if planner != "llm" or not origin:
        return planner
    if row.get("warmup") and origin == "classical":
        return planner_name(row, sampler)
    said = {"classical": "not asked", "kept": "kept candidate 0", "own": "its own config",
            "picked": f"picked candidate {row.get('choice')}"}
    return f"llm: {said.get(origin, origin)}"
