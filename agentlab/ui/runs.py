"""The run folders as the UI lists and opens them: plain functions over the files, no Streamlit, nothing written.

A run folder is any folder with a run.json, one or two levels under the runs root (``runs/<command>/<folder>``, or
``runs/<folder>`` for an ``--out`` put there). What a file cannot give (missing, not JSON, a field of the wrong type)
is left empty and named in ``problems``, so one damaged run never hides the others.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agentlab.core.agent import approval
from agentlab.core.errors import AgentlabError, shell_word
from agentlab.core.files import counted, read_json, read_text
from agentlab.core.runs import FAILED, INTERRUPTED, RUNNING, command_words, is_live, live_jsonl, run_status

PLOT_SUFFIXES = (".png", ".jpg", ".jpeg", ".svg")
DAMAGED = "damaged"  # the status of a folder whose run.json is missing or unreadable
# Every form of image Markdown has: inline ``![alt](url "title")`` (the URL maybe in <>, a title in "", '' or ()),
# by reference ``![alt][ref]``, ``![alt][]`` and ``![alt]`` (with a definition line ``[ref]: url "title"``), and an
# HTML ``<img src=...>``.
_TITLE = r"""(?:\s+(?:"[^"]*"|'[^']*'|\([^)]*\)))?"""
_URL = r"(?:<[^>\n]*>|(?:[^()\s]|\([^()\s]*\))+)"
_IMAGE = re.compile(rf"!\[(?P<alt>[^\]]*)\]\(\s*(?P<url>{_URL}){_TITLE}\s*\)"
                    rf"|<img\b[^>]*?\ssrc\s*=\s*(?:\"(?P<src>[^\"]*)\"|'(?P<src1>[^']*)'|(?P<src2>[^\s>]+))[^>]*>"
                    rf"|!\[(?P<ralt>[^\]]*)\](?:\[(?P<ref>[^\]]*)\])?", re.IGNORECASE)
_DEFINITION = re.compile(rf"^ {{0,3}}\[(?P<label>[^\]]+)\]:[ \t]*(?P<url><[^>\n]*>|\S+){_TITLE}[ \t]*$",
                         re.MULTILINE)


@dataclass
class RunRow:
    """One run folder in the list."""

    id: str  # the folder relative to the runs root (``shown``): what ?run= and the selectbox name
    path: Path
    command: str
    status: str
    started: str | None
    ended: str | None
    seconds: float | None
    result: str
    problems: dict[str, str] = field(default_factory=dict)
    error: str | None = None  # run.json's error: why a failed run stopped

    def waiting(self) -> bool:
        """Stopped at an approval of --approve (the question in the agent's checkpoint), for the UI to answer."""
        return self.status == INTERRUPTED and approval.pending(self.path) is not None

    def cells(self) -> dict[str, Any]:
        """The row of the runs table (every cell text that the table can encode)."""
        waiting = self.waiting()
        cells = {"run": self.id, "command": self.command,
                 "status": "waiting for approval" if waiting else self.status,
                 "started": (self.started or "")[:19].replace("T", " "), "duration": duration(self.seconds),
                 "result": self.result if not self.problems else f"? {', '.join(self.problems)}"}
        return {k: shown(v) for k, v in cells.items()}  # a text the table cannot encode breaks the whole table


def shown(text: str) -> str:
    """A file name as the page can show it: a byte of a name that is not UTF-8 (``caf\\xe9``, which Python reads as
    a lone surrogate that the table, the widgets and the URL cannot encode) written as ``\\xe9``. A run folder of
    such a name is listed, linked and opened by this text; its ``path`` stays the real one."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that is no escaped byte (a JSON \ud800): written as such
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _read(path: Path, problems: dict[str, str]) -> Any:
    if not path.is_file():
        return None
    try:
        return read_json(path, "run-folder file")
    except AgentlabError as exc:
        problems[path.name] = exc.message
        return None


def _time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def duration(seconds: float | None) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``; empty when unknown."""
    if seconds is None:
        return ""
    whole = int(seconds)
    if whole < 60:
        return f"{seconds:.0f} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def no_run_json(path: Path) -> str:
    """What a folder without run.json (a file of that name) is, where a run folder was expected."""
    if (path / "run.json").exists():  # a folder (or another thing) of that name: there, but not the file
        kind = "a folder" if (path / "run.json").is_dir() else "no regular file"
        return f"{path / 'run.json'}: not a file ({kind}), so the run cannot be read"
    return f"{path}: no run.json (not a run folder, or its start was cut short)"


def read_run(path: Path, root: Path) -> RunRow:
    """One run folder: run.json (command, status as it really is, times) and the key result of results.json. A
    run.json that is missing, not JSON or no object, or whose status is missing, empty or no string, makes the status
    ``damaged``."""
    problems: dict[str, str] = {}
    info = _read(path / "run.json", problems)
    info = info if isinstance(info, dict) else {}
    if "run.json" not in problems and not info:
        problems["run.json"] = (f"{path / 'run.json'}: expected a JSON object" if (path / "run.json").is_file()
                                else no_run_json(path))
    damaged = "run.json" in problems
    info = dict(info)
    given = info.get("status")
    blank = isinstance(given, str) and not given.strip()  # "" (or spaces): a status, but no run's
    fields: list[str] = [] if damaged else ["no status"] if given is None else ["status is empty"] if blank else []
    for key in ("command", "status", "started", "ended"):  # each field of the wrong type: named, left empty
        value = info.get(key)
        wrong = value is not None and not isinstance(value, str)
        if wrong or (key in ("started", "ended") and value is not None and _time(value) is None):
            fields.append(f"{key} is {value!r}, not " + ("a string" if wrong else "an ISO date and time"))
            info[key] = None
    if fields:
        problems.setdefault("run.json", f"{path / 'run.json'}: {'; '.join(fields)}")
    # a status that is missing, empty or no string (nulled above) is no status: the run cannot be read as any
    status = DAMAGED if damaged or blank or not info.get("status") else str(info["status"])
    if status == RUNNING:
        status = run_status(path, info)  # `running` whose process died is `interrupted`
    started, ended = _time(info.get("started")), _time(info.get("ended"))
    end = ended or (datetime.now(UTC) if status == RUNNING and started else None)
    seconds = (end - started).total_seconds() if started and end and started.tzinfo and end.tzinfo else None
    command = str(info.get("command") or path.parent.name)
    results = _read(path / "results.json", problems)
    if "results.json" not in problems and (path / "results.json").is_file() and not isinstance(results, dict):
        # `null` or `[1, 2]`: named, as a dict of the wrong shape is
        problems["results.json"] = (f"{path / 'results.json'}: expected a JSON object, got "
                                    f"{'null' if results is None else type(results).__name__}")
    try:
        result = key_result(command, results) if isinstance(results, dict) else ""
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        result, problems["results.json"] = "", f"{path / 'results.json'}: not the results of a '{command}' run"
    error = info.get("error")
    return RunRow(shown(str(path.relative_to(root))), path, command, status, info.get("started"), info.get("ended"),
                  seconds, result, problems, error if isinstance(error, str) else None)


# the name a run folder is made with (core.runs.new_run_path): <YYYYmmdd-HHMMSS>-<name>
_RUN_FOLDER_NAME = re.compile(r"\d{8}-\d{6}-.")


def find_runs(root: Path) -> list[Path]:
    """Every run folder under ``root`` (one or two levels down), newest start first by folder name. A folder in a
    command's folder named as a run folder is made (``runs/nas/20260102-110000-x``) without run.json is one too (a
    run whose start was cut short, or a copy that lost its run.json): listed, as damaged, not left out; another
    (compress's ``runs/compress/workspace``) is not a run."""
    if not root.is_dir():
        return []
    found = {p.parent for pattern in ("*/run.json", "*/*/run.json") for p in root.glob(pattern) if p.is_file()}
    commands = {p.parent for p in found if p.parent != root} | {root / name for name in _KEY_RESULTS}
    for folder in commands:
        if folder.is_dir() and not (folder / "run.json").is_file():  # not a run folder (--out) with subfolders
            with contextlib.suppress(OSError):
                found |= {p for p in folder.iterdir() if p.is_dir() and _RUN_FOLDER_NAME.match(p.name)}
    return sorted(found, key=lambda p: (p.name, str(p)), reverse=True)


def list_runs(root: Path) -> list[RunRow]:
    """The rows of the Runs page, the newest start first."""
    rows = [read_run(path, root) for path in find_runs(root)]
    return sorted(rows, key=lambda r: t.timestamp() if (t := _time(r.started)) else 0.0, reverse=True)


def filter_runs(rows: Iterable[RunRow], *, commands: Iterable[str] = (), statuses: Iterable[str] = (),
                text: str = "") -> list[RunRow]:
    """Rows of the given commands and statuses (empty: all) whose id or result contains ``text`` (any case)."""
    commands, statuses, needle = set(commands), set(statuses), text.strip().lower()
    return [r for r in rows if (not commands or r.command in commands) and (not statuses or r.status in statuses)
            and (not needle or needle in r.id.lower() or needle in r.result.lower())]


# the subcommand that has --resume, where it is not the command's name (`command_words`) itself
_RESUME_WORDS = {"evolve": "evolve run"}


def continue_advice(row: RunRow) -> str | None:
    """How to go on with a run that stopped before it finished (``interrupted`` or ``failed``): the command line that
    resumes its folder, or the command's own advice when it has no --resume (``cli.commands.continue_with``); None
    for a run that did not stop so, or of a command this does not know."""
    from agentlab.cli.commands import RESUME_ADVICE, continue_with

    if row.status not in (INTERRUPTED, FAILED) or row.command not in _KEY_RESULTS:
        return None
    if row.command == "pipeline":  # its session's own rerun, as `pipeline show` and its Ctrl-C say it
        from agentlab.pipeline.sessions import continue_hint, session_ref, unfinished_stage

        return continue_hint(session_ref(row.path), unfinished_stage(row.path),
                             any((row.path / "steps").glob("*.json")))
    advice = continue_with(row.command, folder=row.path)
    if advice != RESUME_ADVICE:
        return advice or f"`agentlab {command_words(row.command)}` has no --resume: run it again"
    words = _RESUME_WORDS.get(row.command, command_words(row.command))
    return f"continue it with `agentlab {words} --resume {shell_word(row.path.absolute())}`"


# --------------------------------------------------------------------------- the key result of each command


def _nas(r: dict[str, Any]) -> str:
    if "objective" in r:  # the user's own command: its metric under its own name, in its direction
        best, metric = r.get("best"), r["metric"]
        if not best:
            return f"no successful trial, {counted(r['trials'], 'trial')}"
        better = "higher" if r.get("direction") == "maximize" else "lower"
        trials = counted(r["trials"], "trial")
        return f"best {metric} {best[metric]:.4g} ({best['run_id']}; {better} is better), {trials}"
    best, ensemble = r["best"], r.get("ensemble")
    # "name" is results.json's own wording (nas.ensemble.model_name); a run from before it had none
    name = ensemble and (ensemble.get("name") or f"ensemble of {counted(len(ensemble['members']), 'member')}")
    final = (f", final model: {name} (val MSE {ensemble['val_mse']:.4f})"
             if ensemble and r.get("final_model", "ensemble") == "ensemble" else "")
    return f"best val MSE {best['val_mse']:.4f} ({best['run_id']}){final}, {counted(r['trials'], 'trial')}"


def _compress(r: dict[str, Any]) -> str:
    rec = r.get("recommended")
    if not rec:
        return f"{counted(r['counts']['experiments'], 'experiment')}, none recommended"
    chosen = next(e for e in r["experiments"] if e["index"] == rec["index"])
    feasible = "" if rec.get("feasible") else " (closest; constraints not met)"
    shown = f"{rec['label']}: speedup {chosen['derived']['speedup']:.2f}x{feasible}"
    # keep_base: the base model is the recommendation, the experiment named to compare (as report.md says)
    return f"keep the base model (closest experiment: {shown})" if rec.get("keep_base") else shown


def _debate(r: dict[str, Any]) -> str:
    answer = r["final"]["answer"]
    rounds = r.get("per_round") or []
    agreement = f", agreement {rounds[-1]['agreement']:.0%}" if rounds else ""
    return f"answer {answer if answer is not None else 'none'}{agreement}"


def _debate_eval(r: dict[str, Any]) -> str:
    best = max(r["table"], key=lambda row: row["accuracy"])
    return f"{r['questions']} questions; best {best['method']} {best['accuracy']:.3f}"


def _evolve(r: dict[str, Any]) -> str:
    best = r["best"]
    return f"best {best['id']} fitness {best['fitness']:.3f} (task {best['task']:.3f})"


def _pipeline(r: dict[str, Any]) -> str:
    failed = r.get("failed_stage")
    if r["final"] is None and isinstance(failed, dict):  # a session that stopped at a stage no model served
        return f"failed at stage {failed.get('name')}"
    final = " ".join(str(r["final"]).split())
    return f"final: {final[:60]}{'…' if len(final) > 60 else ''}"


def _bench(r: dict[str, Any]) -> str:
    return f"{len(r['available'])}/{len(r['models'])} available; fastest {r.get('fastest') or '-'}"


def _persona(r: dict[str, Any]) -> str:
    """A loss results.json holds as null (none logged, or NaN) is `-`."""
    first, final = (f"{r[k]:.3f}" if isinstance(r.get(k), (int, float)) else "-" for k in ("first_loss", "final_loss"))
    return f"loss {first} -> {final}, {counted(r['steps'], 'step')}"


def _lm_eval(r: dict[str, Any]) -> str:
    first = next(iter(r["rows"].values()))[0]
    key = (first["task"], first["metric"])
    values = {row: next(s["value"] for s in scores if (s["task"], s["metric"]) == key)
              for row, scores in r["rows"].items()}
    return f"{first['task']} {first['metric']}: " + ", ".join(f"{row} {v:.3f}" for row, v in values.items())


_KEY_RESULTS: dict[str, Callable[[dict[str, Any]], str]] = {
    "nas": _nas, "compress": _compress, "debate": _debate, "debate-eval": _debate_eval, "evolve": _evolve,
    "pipeline": _pipeline, "llm-bench": _bench, "train-persona": _persona, "eval": _lm_eval}


def key_result(command: str, results: dict[str, Any]) -> str:
    """One line that says what the run found; raises KeyError / TypeError / ValueError on results of another shape."""
    summarise = _KEY_RESULTS.get(command)
    return summarise(results) if summarise is not None else ""


# --------------------------------------------------------------------------- one run's files


def read_file_text(path: Path) -> str | None:
    """A text file of the run, or None when it is missing; ``AgentlabError`` (one line) when it is not text."""
    return read_text(path, "run-folder file") if path.is_file() else None


def _label(text: str) -> str:
    """A reference's label as Markdown matches it: any case, runs of white space as one space."""
    return " ".join(text.split()).lower()


def report_parts(path: Path) -> list[tuple[str, str]]:
    """report.md cut at its images: ``("markdown", text)`` and ``("image", file)`` in order, so the plots it links
    are shown where the report puts them. Any other image (outside the run folder, missing, a URL that model text
    may have put there), in any form Markdown has (inline with a title or not, by reference to a definition line,
    HTML's ``<img>``), becomes plain text, and a ``![`` left over (a form this reading does not take apart) is
    escaped: the browser fetches nothing the run folder does not hold."""
    text = read_file_text(path / "report.md")
    if text is None:
        return []
    defined: dict[str, str] = {}
    for definition in _DEFINITION.finditer(text):  # the first definition of a label counts
        defined.setdefault(_label(definition.group("label")), definition.group("url"))
    parts: list[tuple[str, str]] = []
    last, folder = 0, path.resolve()
    for match in _IMAGE.finditer(text):
        found = match.groupdict()
        alt = found["alt"] if found["alt"] is not None else found["ralt"]
        url = next((found[k] for k in ("url", "src", "src1", "src2") if found[k] is not None), None)
        if url is None:  # ![alt][ref], ![alt][] or ![alt]: the URL of its definition
            url = defined.get(_label(found["ref"] or found["ralt"]))
            if url is None:  # no definition: Markdown shows it as text (the `![` is escaped below)
                continue
        url = url[1:-1] if url.startswith("<") and url.endswith(">") else url
        image = (path / url).resolve()
        parts.append(("markdown", text[last:match.start()]))
        if image.is_file() and folder in image.parents:
            parts.append(("image", str(image)))
        else:
            parts.append(("markdown", f"(image {alt or ''!r}: {url})".replace("](", "] (")))
        last = match.end()
    parts.append(("markdown", text[last:]))
    return [(kind, value if kind == "image" else value.replace("![", "!\\[")) for kind, value in parts
            if kind == "image" or value.strip()]


def plots(path: Path, limit: int = 200) -> list[Path]:
    """The images in the run folder and its subfolders (trials' learning curves...), at most ``limit``."""
    found = sorted(p for p in path.rglob("*") if p.suffix.lower() in PLOT_SUFFIXES and p.is_file())
    return found[:limit]


def read_jsonl(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file that a live run may be appending to: a torn or bad line is skipped;
    ``limit``: only the last ones."""
    records = list(live_jsonl(path))
    return records[-limit:] if limit else records


def unreadable_lines(path: Path, *, settled: bool = False) -> int:
    """How many whole lines of a JSONL file are no JSON object (``read_jsonl`` skips them): a line torn by a crash
    that a later append ran into, an edit. A last line without its newline is counted only when ``settled`` (the
    run that writes the file is not running, ``_settled``): else a live run may be writing it."""
    return _scan_jsonl(path, 1, settled=settled)[1]


def _settled(folder: Path) -> bool:
    """Whether the run of ``folder`` is not running (ended, or its process gone): nothing appends to its files."""
    try:
        return run_status(folder) != RUNNING
    except (AgentlabError, OSError, ValueError, AttributeError):  # run.json missing or damaged (not a mapping):
        # whether a process still owns the folder
        return not is_live(folder)


def _json_object(line: str) -> dict[str, Any] | None:
    """A JSONL line's object (None: not JSON, or JSON that is no object): what ``_scan_jsonl`` and ``_tail_jsonl``
    keep."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def _scan_jsonl(path: Path, limit: int | None, *, settled: bool = False) -> tuple[list[dict[str, Any]], int]:
    """One read of a JSONL file a live run may be appending to: its last ``limit`` JSON objects (all with None; the
    objects ``read_jsonl`` gives) and the count of its ``unreadable_lines`` (``settled``: as there)."""
    records: deque[dict[str, Any]] = deque(maxlen=limit or None)
    bad = 0
    if not path.is_file():
        return [], bad
    with contextlib.suppress(OSError), open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            record = _json_object(line)
            if record is not None:
                records.append(record)
            elif (settled or line.endswith("\n")) and line.strip():
                bad += 1
    return list(records), bad


def event_rows(path: Path, limit: int = 500) -> list[dict[str, Any]]:
    """The last events of events.jsonl as table rows: time, kind, and the rest as compact JSON."""
    return event_table(path, limit)[0]


def event_table(path: Path, limit: int = 500) -> tuple[list[dict[str, Any]], int, bool]:
    """The Events tab from one read of the end of the run folder's events.jsonl: ``event_rows``, how many lines among
    them are unreadable (as ``unreadable_lines`` counts them), and whether the file was read whole (False: the lines
    before the oldest event shown were not read, however long the file has grown: a render reads what it shows)."""
    events, bad, whole = _tail_jsonl(path / "events.jsonl", limit, settled=_settled(path))
    rows = []
    for e in events:
        ts = e.get("ts")
        when = datetime.fromtimestamp(ts).strftime("%H:%M:%S") if isinstance(ts, (int, float)) else ""
        rest = {k: v for k, v in e.items() if k not in ("ts", "kind")}
        rows.append({"time": when, "kind": str(e.get("kind", "")), "data": json.dumps(rest, default=str)[:2000]})
    return rows, bad, whole


_BLOCK = 1 << 16  # the bytes read at a time from the end of a JSONL file


def _tail_jsonl(path: Path, limit: int, *, settled: bool = False) -> tuple[list[dict[str, Any]], int, bool]:
    """The last ``limit`` JSON objects of a JSONL file a live run may be appending to, read from its end a block at a
    time (a file of 100 MB costs what its last lines do), with the count of the unreadable lines among them (as
    ``unreadable_lines`` counts them: ``settled`` as there), and whether every line of the file was read."""
    records: list[dict[str, Any]] = []
    bad = 0
    if not path.is_file():
        return [], bad, True
    try:
        with open(path, "rb") as handle:
            start = handle.seek(0, os.SEEK_END)
            rest, last = b"", True  # rest: the start of a line cut by a block; last: the file's last line comes next
            while True:
                step = min(_BLOCK, start)
                start -= step
                handle.seek(start)
                lines = (handle.read(step) + rest).split(b"\n")
                rest = lines.pop(0) if start else b""  # cut by the block unless it is the file's first line
                for i in range(len(lines) - 1, -1, -1):
                    line = lines[i].decode("utf-8", "replace")
                    record = _json_object(line)
                    if record is not None:
                        records.append(record)
                        if len(records) == limit:
                            return records[::-1], bad, not start and not i
                    elif (settled or not last) and line.strip():  # the last line, with no newline: being written
                        bad += 1
                    last = False
                if not start:
                    return records[::-1], bad, True
    except OSError:
        return records[::-1], bad, False
