"""The agent that changes code (issue 60), on the one search loop: a code change is a trial whose plan carries the
change, run by the command objective in a fresh workspace of the current best version (``code_change.CodeTrials``).

- ``CodeSearch`` holds what the search knows about the code: the editable files as the search started (frozen once
  in ``<run>/code/start/``), the current version (the best trial's chain of kept changes, read from the plans), the
  ``edit_code`` action's check, the commits of kept versions on the run's branch and the report's table.
- ``CodeHybrid`` wraps the planner: after each kept change the sampler runs ``search.tune_every`` trials of the
  space's params on the new version, then the agent plans again (a param trial or a change). Every proposal is
  stamped with the code it runs on (``plan.extra.code``) and its ``variant`` (the chain's change keys), so a trial
  is identified by its params and its code.
- A change is kept when the loop's evaluator accepts it (better than the best value seen by more than
  ``search.min_delta``; inside that band, a smaller model or the evaluator route's yes): it is the best trial (the
  incumbent, ``records.best_of``), and the next trials run on its chain. Anything else is recorded and dropped.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentlab.core.agent.runtime import Tool
from agentlab.core.runs import atomic_write_text
from agentlab.core.search.kinds import label
from agentlab.core.search.planners import (
    NoProposal,
    PlanContext,
    Planner,
    Proposal,
    TrialDomain,
    Wrapper,
    trial_key,
)
from agentlab.core.search.records import TrialRecord, reason_line
from agentlab.nas.code_change import (
    CODE,
    COMMIT,
    DIFF,
    Change,
    ChangeError,
    CodeRules,
    check,
    code_of,
    commit_version,
    read_under,
    start_folder,
    unified_diff,
    unusable,
)
from agentlab.nas.report import one_line

log = logging.getLogger(__name__)

EDIT_TOOL = "edit_code"
MAX_EDITS = 3
OLD_CHARS, NEW_CHARS = 500, 1000


def _code(record: TrialRecord) -> dict[str, Any]:
    """``code_of`` a trial's record (its plan's ``extra``)."""
    return code_of({"extra": record.extra})


def chain_of(record: TrialRecord | None) -> list[int]:
    """The kept changes the code of ``record`` is made of (its own change included): a trial planned on it runs
    on these."""
    if record is None:
        return []
    code = _code(record)
    return [*code.get("base", []), *([record.number] if code.get("change") else [])]


def change_of(record: TrialRecord) -> Change | None:
    code = _code(record)
    return Change.from_dict(code["change"]) if code.get("change") else None


@dataclass
class CodeSearch:
    """The code side of one search (see the module docstring). ``project``: the folder the command runs in (the
    editable patterns are relative to it); ``run``: the run folder; ``repo``/``branch``/``start_commit``: the
    workspaces' git repository, when there is one."""

    rules: CodeRules
    project: Path
    run: Path
    tune_every: int = 2
    sampler: str = "tpe"
    repo: Path | None = None
    branch: str | None = None
    start_commit: str | None = None
    _texts: dict[tuple[int, ...], dict[str, str]] = field(default_factory=dict, repr=False)

    @property
    def start(self) -> Path:
        return start_folder(self.run)

    def files(self) -> list[str]:
        """The editable files (relative to the project), as the search started."""
        base = self.start if self.start.is_dir() else self.project
        return self.rules.editable_files(base)

    def files_line(self) -> str:
        """The editable files for the console, with those the patterns match that no edit can be made to (a link,
        not UTF-8 text: ``CodeRules.left_out``), left out and said so."""
        usable, left = self.rules.sort(self.project)  # one pass over the project (each file read once)
        with contextlib.suppress(ValueError):  # a run folder inside the project: its workspaces' copies are not said
            inside = self.run.resolve().relative_to(self.project.resolve()).as_posix() + "/"
            usable = [rel for rel in usable if not rel.startswith(inside)]
            left = {rel: why for rel, why in left.items() if not rel.startswith(inside)}
        out = ", ".join(self.files() if self.start.is_dir() else usable)
        if left:
            out += " (left out: " + "; ".join(f"{rel}, {why}" for rel, why in list(left.items())[:5]) + \
                (f"; and {len(left) - 5} more" if len(left) > 5 else "") + ")"
        return out

    def line(self, metric: str, min_delta: float) -> str:
        """The console's line of what the agent may change and when a change is kept (a run's and its dry run's)."""
        return (f"code changes: the agent may change {self.files_line()}; each runs as a trial and is kept when "
                f"{metric} improves by more than {min_delta:.0%}; then {self.tune_every} {label(self.sampler)} "
                "trials tune the params on it")

    def freeze(self) -> None:
        """``<run>/code/start/``: the editable files as the search starts (a resumed run keeps the first's)."""
        if self.start.is_dir():
            return
        tmp = self.start.with_name(".start.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        for rel in self.rules.editable_files(self.project):
            target = tmp / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(self.project / rel, target)
        tmp.mkdir(parents=True, exist_ok=True)
        tmp.rename(self.start)

    # ------------------------------------------------------------------ versions

    def texts(self, chain: list[int], records: list[TrialRecord]) -> dict[str, str]:
        """The changed files' texts of the version ``chain`` (the start's texts with each kept change applied)."""
        key = tuple(chain)
        if key not in self._texts:
            texts: dict[str, str] = {}
            by_number = {r.number: r for r in records}
            for number in chain:
                change = change_of(by_number[number]) if number in by_number else None
                if change is None:
                    raise ChangeError(f"trial {number} of the code's chain holds no change")
                done = check(change, self.reader(texts), self.rules)
                texts.update({path: after for path, (_, after) in done.items()})
            self._texts[key] = texts
        return self._texts[key]

    def reader(self, texts: dict[str, str]) -> Callable[[str], str | None]:
        """A file's text in the version whose changed files are ``texts`` (else the start's); None: no such file;
        ``ChangeError`` when it cannot be read as UTF-8 text (the agent is told, no trial runs)."""
        start = read_under(self.start)

        def read(rel: str) -> str | None:
            return texts[rel] if rel in texts else start(rel)

        return read

    def variant(self, chain: list[int], records: list[TrialRecord], change: Change | None = None) -> str:
        """The code's identity beside the params: the change keys of the chain (and the trial's own change)."""
        by_number = {r.number: r for r in records}
        keys = [c.key() for n in chain if (c := change_of(by_number[n])) is not None]
        return "/".join([*keys, *([change.key()] if change else [])])

    def current(self, domain: TrialDomain) -> tuple[list[int], Callable[[str], str | None]]:
        """The current version (the best trial's chain) and a reader of its files."""
        chain = chain_of(domain.best)
        return chain, self.reader(self.texts(chain, domain.records))

    # ------------------------------------------------------------------ the edit_code action

    def tool(self) -> Tool:
        files = self.files()
        edit = {"type": "object", "properties": {
            "path": {"type": "string", "enum": files} if files else {"type": "string"},
            "old": {"type": "string", "maxLength": OLD_CHARS,
                    "description": "the exact text to replace, as the file holds it now; it must occur once"},
            "new": {"type": "string", "maxLength": NEW_CHARS, "description": "the text to put in its place"}},
                "required": ["path", "old", "new"], "additionalProperties": False}
        return Tool(EDIT_TOOL, "change the code of the best version and run it as a trial with the best params (it "
                    "counts against the budget); kept only if the metric improves",
                    {"type": "object", "properties": {
                        "edits": {"type": "array", "minItems": 1, "maxItems": MAX_EDITS, "items": edit},
                        "reason": {"type": "string", "maxLength": 200, "description": "what this should improve"}},
                     "required": ["edits", "reason"], "additionalProperties": False})

    def check_action(self, args: dict[str, Any], ctx: PlanContext) -> tuple[dict[str, Any] | None, str]:
        """The ``edit_code`` call as the loop's action (the best params, the change on the current version), or
        why not."""
        domain = ctx.domain
        assert isinstance(domain, TrialDomain)
        reason = " ".join(str(args.get("reason", "")).split())[:200]
        try:
            change = Change.from_dict({"edits": args.get("edits"), "reason": reason})
            chain, read = self.current(domain)
            texts = check(change, read, self.rules)
        except (ChangeError, OSError, UnicodeError) as exc:  # the agent is told why; no trial runs
            return None, str(exc)[:400]
        params = dict(domain.incumbent)
        variant = self.variant(chain, domain.records, change)
        key = trial_key(params, variant)
        if key in domain.tried:
            return None, "this change was run already on this version: change something else"
        return {"tool": EDIT_TOOL, "args": {"edits": [e.to_dict() for e in change.edits], "reason": reason},
                "params": params, "key": key, "reason": reason, "diff": unified_diff(texts),
                "extra": {"code": {"base": chain, "change": change.to_dict()}, "variant": variant}}, ""

    def read(self, rel: str, domain: TrialDomain) -> str | None:
        """An editable file's text in the current version (None: not an editable file)."""
        base = self.start if self.start.is_dir() else self.project  # as ``files``, for the one file asked
        if not self.rules.is_editable(rel) or unusable(base / rel) is not None:
            return None
        try:
            _, read = self.current(domain)
            return read(rel)
        except ChangeError:  # read_project reads the file itself then, and says why it cannot show it
            return None

    # ------------------------------------------------------------------ kept versions

    def commit_kept(self, records: list[TrialRecord]) -> None:
        """Each kept change (an accepted change trial) as a commit on the run's branch, once, parent first: the
        commit holds the files its code changed, as the trial ran them (``<trial>/code/``)."""
        if self.repo is None or not self.branch or not self.start_commit:
            return
        by_number = {r.number: r for r in records}
        for r in sorted(records, key=lambda r: r.number):
            change = change_of(r)
            if change is None or not (r.state == "complete" and r.accepted):
                continue
            folder = self.run / "trials" / r.run_id / CODE
            if (folder / COMMIT).is_file() or not folder.is_dir():
                continue
            base = _code(r).get("base", [])
            parent = self.start_commit
            if base:
                marker = self.run / "trials" / by_number[base[-1]].run_id / CODE / COMMIT
                if not marker.is_file():
                    continue  # its parent version is not committed (yet)
                parent = marker.read_text().strip()
            prefix = self.project.resolve().relative_to(self.repo.resolve())
            files = {(prefix / p.relative_to(folder)).as_posix(): p.read_bytes()
                     for p in sorted(folder.rglob("*")) if p.is_file() and p.name != COMMIT}
            message = f"agentlab {r.run_id}: {change.reason or 'code change'} ({r.value:.6g})"
            try:
                commit = commit_version(self.repo, self.branch, parent, files, message)
            except Exception as exc:  # the record stays; the commit is a convenience
                log.warning("could not commit %s on %s: %s", r.run_id, self.branch, exc)
                continue
            atomic_write_text(folder / COMMIT, commit + "\n")

    # ------------------------------------------------------------------ the record

    def rows(self, records: list[TrialRecord], best: TrialRecord | None) -> list[dict[str, Any]]:
        """Every change trial: its reason, diff stat, metric and fate (kept / dropped / crashed / refused)."""
        kept = set(chain_of(best))
        out = []
        for r in records:
            change = change_of(r)
            if change is None or r.state in ("running", "waiting"):
                continue
            diff_path = self.run / "trials" / r.run_id / DIFF
            added = removed = 0
            if diff_path.is_file():
                for line in diff_path.read_text(encoding="utf-8").splitlines():
                    if line.startswith("+") and not line.startswith("+++"):
                        added += 1
                    elif line.startswith("-") and not line.startswith("---"):
                        removed += 1
            if r.state == "failed":
                fate = "refused" if r.reason.removeprefix("failed: ").startswith("refused") else "crashed"
            elif r.number in kept:
                fate = "kept"
            else:
                fate = "dropped"
            out.append({"trial": r.run_id, "reason": change.reason, "files": change.paths(), "added": added,
                        "removed": removed, "value": r.value, "fate": fate, "why": r.reason})
        return out


def table(rows: list[dict[str, Any]], metric: str) -> list[str]:
    """report.md's ``## Code changes``."""
    if not rows:
        return ["", "## Code changes", "", "No code change ran: the agent proposed none, or none passed the check "
                f"(each of the agent's steps is a row of \"## The agent\" above, where a refused {EDIT_TOOL} call's "
                "result says \"not run: ...\"; a call that did not match its tool's schema is an invalid_tool_call "
                "event of events.jsonl)."]
    lines = ["", "## Code changes", "", f"| trial | change | diff | {metric} | fate |", "|---|---|---|---:|---|"]
    for row in rows:
        value = f"{row['value']:.4g}" if isinstance(row["value"], float) else "-"
        # one line: the error, not the stderr tail's header; "failed: refused: ..." said once
        why = reason_line(row["why"]).removeprefix("failed: ").removeprefix(f"{row['fate']}: ")
        fate = row["fate"] if row["fate"] in ("kept", "dropped") else f"{row['fate']}: {one_line(why, 160)}"
        change = one_line(row["reason"], 80)
        lines.append(f"| {row['trial']} | {change.replace('|', '/')} | {', '.join(row['files'])} +{row['added']} "
                     f"-{row['removed']} | {value} | {fate.replace('|', '/')} |")
    return lines


class CodeHybrid(Wrapper):
    """The planner with the sampler tuning each kept version (see the module docstring)."""

    def __init__(self, planner: Planner, code: CodeSearch):
        super().__init__(planner)
        self.code = code

    def propose(self, ctx: PlanContext) -> Proposal:
        domain = ctx.domain
        assert isinstance(domain, TrialDomain)
        chain = chain_of(domain.best)
        records = domain.records
        first = None
        if chain and self._owed(chain, records):
            with contextlib.suppress(NoProposal):  # every point of the space ran on this version: the agent plans
                first = domain.draw(self.code.sampler, 1)[0]
        if first is not None:
            proposal = Proposal(first.params, first.changes, first.planner, origin="tune", extra=dict(first.extra),
                                notes=[f"tunes the params on the kept version of {domain.best.run_id}"
                                       if domain.best else "tunes the params"])
        else:
            proposal = self.inner.propose(ctx)
        code = proposal.extra.get("code")
        if not (isinstance(code, dict) and code.get("change")):  # a param trial: on the current version
            proposal.extra = {**proposal.extra, "code": {"base": chain},
                              "variant": self.code.variant(chain, records)}
        return proposal

    def _owed(self, chain: list[int], records: list[TrialRecord]) -> bool:
        """Whether the sampler still owes trials to the last kept change (``tune_every`` after it)."""
        last = chain[-1]
        tuned = sum(1 for r in records if r.number > last and r.origin == "tune" and r.state != "interrupted"
                    and _code(r).get("base") == chain)
        return tuned < self.code.tune_every
