"""The best config of a search of the user's own command, back in the user's hands.

``<run>/best/`` holds the best trial's files in the user's format: the project's config file with that trial's
searched values (``best/config.py``, the edited YAML, ...; ``objective.params``' constants stay as the file has them),
``params.json`` and ``command.txt`` (the exact command line). Of the checkpoints trials wrote into their workspaces
(``<trial>/checkpoint/``) only the best trial's is kept. ``<run>/best.patch`` is the unified diff of the config file
from the user's tree as the search started to the best one (``git apply best.patch`` or ``patch -p1 < best.patch`` in
the project folder; none when the best is the tree as it was). ``agentlab nas apply`` writes the best config file
into the tree; into a file the user edited since the search started, the best values in place (``_into_edited``),
refusing when a searched value was edited too. A Hydra app searched through ``{overrides}`` gets the best trial's
overrides written into its config files (``agentlab.nas.hydra``).

The file as the search started is kept in ``<run>/base/`` with its sha256 (``base.json``), written once: a resumed
run keeps the first run's (for a Hydra app: every file of its config folder).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import shlex
import shutil
from pathlib import Path
from typing import Any, NoReturn

from agentlab.core.errors import UsageError
from agentlab.core.runs import (
    FAILED,
    INTERRUPTED,
    RUNNING,
    atomic_write_bytes,
    atomic_write_json,
    run_status,
)
from agentlab.core.search.records import TrialRecord
from agentlab.nas.code_change import CODE, COMMIT, start_folder
from agentlab.nas.config_file import ConfigFile
from agentlab.nas.workspace import repo_top

BASE_META = "base.json"

log = logging.getLogger(__name__)


def remember_base(run: Path, config: ConfigFile | None, project: Path) -> None:
    """``<run>/base/<file>`` and ``base.json``: the config file as the search starts (kept from the first run)."""
    if config is None or (run / "base" / BASE_META).is_file():
        return
    rel = config.path.resolve().relative_to(project.resolve())
    data = config.encode(config.text)  # its bytes as read (a Python module's declared encoding)
    atomic_write_bytes(run / "base" / rel, data)
    atomic_write_json(run / "base" / BASE_META, {"file": str(rel), "project": str(project.resolve()),
                                                   "sha256": _sha(data)})


def kept_config(run: Path) -> Path | None:
    """Before a search resumes: the copy of its objective.config as the search started (``<run>/base/<file>``) when
    the user's file has been edited (or removed) since, else None. The resumed trials read the copy, as they run the
    kept copy of the rest of the project (``workspace``): the trials before and after the resume run one config, and
    the edit stays the user's (``apply_best`` writes the best values into it). A warning says so."""
    meta = _base_meta(run)
    if meta is None or "file" not in meta:
        return None
    live, kept = Path(meta["project"]) / meta["file"], run / "base" / meta["file"]
    try:
        data: bytes | None = live.read_bytes()
    except OSError:
        data = None
    if data is not None and _sha(data) == meta["sha256"]:
        return None
    if not kept.is_file():
        raise UsageError(f"objective.config: {live} {'is gone' if data is None else 'has changed'} since the search "
                         f"started, and the run's copy of it as it started ({kept}) is gone too",
                         hint="restore the run folder's base/ to resume, or start a new search on the file as it is")
    log.warning("objective.config: %s %s since the search started; this search goes on with the file as it started "
                "(%s): your edit is not used by it%s", live, "is gone" if data is None else "was edited", kept,
                "" if data is None else " (`agentlab nas apply` writes the best values into the edited file when "
                "you left the searched values as they were)")
    return kept
def remember_hydra(run: Path, project: Path, script: str, cwd: Path) -> str | None:
    """``<run>/base/<the Hydra app's config files>`` and ``base.json`` (``hydra``: the folder, the primary config,
    each file's sha256) for a search through ``{overrides}``, kept from the first run; returns the primary config
    (relative to the project), None when the script is no Hydra app with a primary config."""
    from agentlab.nas.hydra import join
    from agentlab.nas.script import config_files, hydra_app

    app = hydra_app(script, cwd)
    if app is None or not app[1] or not (app[0] / app[1]).is_file():
        return None
    root = project.resolve()
    folder = join(app[0].relative_to(root).as_posix())
    if not (run / "base" / BASE_META).is_file():
        files = {}
        for rel in config_files(app, cwd, limit=None):
            path = (cwd.resolve() / rel).resolve()
            # not a run folder's copies, nor Hydra's outputs/ (a config folder that is the project's own)
            if path.is_relative_to(run.resolve()) or {"outputs", "multirun"} & set(Path(rel).parts[:-1]):
                continue
            try:
                data = path.read_bytes()
            except OSError:
                continue  # Hydra cannot read it either; an override it holds is listed as not written
            name = path.relative_to(root).as_posix()
            atomic_write_bytes(run / "base" / name, data)
            files[name] = _sha(data)
        atomic_write_json(run / "base" / BASE_META, {"project": str(root), "hydra": {
            "folder": folder, "primary": app[1], "files": files}})
    return join(folder, app[1])


def write_best(run: Path, best: TrialRecord | None, overrides: dict[str, Any] | None = None,
               fixed: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """``best/`` and ``best.patch`` from the best trial's folder; returns what was written (None: no best).
    ``overrides``: the best trial's searched keys passed as ``{overrides}``, written back into a Hydra app's config
    files; ``fixed``: the overrides every trial got besides (``hydra.write_back``'s context)."""
    target = run / "best"
    if best is None:
        return None
    trial = run / "trials" / best.run_id
    tmp = run / ".best.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    written: dict[str, Any] = {"run_id": best.run_id, "files": []}
    for name in ("command.txt", "params.json"):
        if (trial / name).is_file():
            shutil.copy2(trial / name, tmp / name)
            written["files"].append(name)
    meta = _base_meta(run)
    used = next(iter(sorted(trial.glob("config_used.*"))), None)
    patch = run / "best.patch"
    diffs: list[str] = []
    code_files = _code_files(trial)
    code = {str(rel) for rel, _ in code_files}
    if meta is not None and "hydra" in meta and overrides is not None:
        from agentlab.nas.hydra import WriteBack, write_back

        hydra = meta["hydra"]
        try:
            back = write_back(run / "base", hydra["folder"], hydra["primary"], overrides, fixed)
        except (OSError, ValueError, KeyError) as exc:  # never at the cost of results.json: said, not written
            back = WriteBack(left=[f"{key}={value}: {exc}" for key, value in overrides.items()])
        for name, text in sorted(back.files.items()):
            if name in code:  # the kept code changes' version of the file is the one the best trial ran
                back.left += [f"{what}: the kept code changes rewrote {name}" for what in back.placed.get(name, [])]
                continue
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(text.encode("utf-8"))
            written["files"].append(name)
            written.setdefault("hydra", []).append(name)
            diffs.append(_diff(run / "base" / name, tmp / name, Path(name)))
        if back.left:
            written["not_written"] = back.left
    elif meta is not None and used is not None:
        rel = Path(meta["file"])
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        try:  # the searched keys only: objective.params' constants (epochs: 1 for the search) stay as the file has them
            base = ConfigFile.load(run / "base" / rel)
            data = base.encode(base.render({key: value for key, value in best.params.items()
                                            if base.lookup(key)[0]}))
        except UsageError:  # never at the cost of results.json: the file as the trial ran it
            data = used.read_bytes()
        (tmp / rel).write_bytes(data)
        written["files"].append(str(rel))
        diffs.append(_diff(run / "base" / rel, tmp / rel, rel))
    for rel, file in code_files:  # the code the best trial ran (a kept chain of code changes)
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(file, tmp / rel)
        written["files"].append(str(rel))
        written.setdefault("code", []).append(str(rel))
        diffs.append(_diff(start_folder(run) / rel, file, rel))
    if "".join(diffs):  # the bytes of each file as they are (a Python module in its declared encoding)
        atomic_write_bytes(patch, "".join(diffs).encode("utf-8", "surrogateescape"))
        written["patch"] = str(patch)
    else:  # the best is the project as it was (trial 0): no change, no patch (`git apply` refuses an empty one)
        patch.unlink(missing_ok=True)
    if (trial / "checkpoint").is_dir():
        written["checkpoint"] = str(trial / "checkpoint")
    prune_checkpoints(run, best)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return written


def _diff(before: Path, after: Path, rel: Path) -> str:
    old = before.read_bytes().decode("utf-8", "surrogateescape") if before.is_file() else ""
    new = after.read_bytes().decode("utf-8", "surrogateescape")
    return "".join(difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True),
                                        f"a/{rel}", f"b/{rel}"))


def _code_files(trial: Path) -> list[tuple[Path, Path]]:
    """(path relative to the project, the file) of each file a trial's code changes touched, as it ran."""
    folder = trial / CODE
    if not folder.is_dir():
        return []
    return [(p.relative_to(folder), p) for p in sorted(folder.rglob("*")) if p.is_file() and p.name != COMMIT]


def prune_checkpoints(run: Path, best: TrialRecord | None) -> None:
    """Only the best trial's checkpoint is kept (after every trial, so a long search holds one, not one a trial)."""
    if best is None:
        return
    for other in (run / "trials").glob("*/checkpoint"):
        if other.parent.name != best.run_id:
            shutil.rmtree(other, ignore_errors=True)


def apply_best(run: Path) -> list[tuple[Path, str]]:
    """Write the best trial's files into the user's tree: its config file and the code files its kept changes
    touched; returns (each file, what happened). Refuses (``UsageError``, nothing written) without such files, or
    when one of the user's files has changed since the search started."""
    where = "give the folder `agentlab nas` printed as its run folder (runs/nas/<date>-<time>-nas by default)"
    if not run.exists():
        raise UsageError(f"{run}: does not exist", hint=where)
    if not (run / "run.json").is_file():
        raise UsageError(f"{run}: not a run folder (no run.json)", hint=where)
    meta = _base_meta(run)
    _refuse_forecaster_run(run, meta)
    project = Path(meta["project"]) if meta is not None else _project(run)
    todo: list[tuple[Path, Path, str]] = []  # (the user's file, the best one, the sha256 the search started from)
    written = _written(run)
    if meta is not None and "hydra" in meta:
        for rel in written.get("hydra") or []:
            if rel not in meta["hydra"].get("files", {}):
                raise UsageError(f"{run}: best/{rel} has no copy as the search started in base/",
                                 hint=f"apply the patch by hand ({by_hand(project, run)})")
            todo.append((project / rel, run / "best" / rel, meta["hydra"]["files"][rel]))
    elif meta is not None:
        todo.append((project / meta["file"], run / "best" / meta["file"], meta["sha256"]))
    start = start_folder(run)
    for rel in (written.get("code") or []):
        todo.append((project / rel, run / "best" / rel, _sha((start / rel).read_bytes())))
    if not todo and (meta is not None or any((run / "trials").glob(f"*/{CODE}"))) \
            and run_status(run) in (RUNNING, INTERRUPTED, FAILED):  # a Hydra app's or code changes: at the end
        _unfinished(run, "best/")
    if not todo and written.get("not_written"):
        raise UsageError(f"{run}: no override of the best trial has a place in the Hydra app's config files: "
                         + "; ".join(written["not_written"]),
                         hint=f"pass them as the best command line does ({run / 'best' / 'command.txt'})")
    if not todo:
        command = run / "best" / "command.txt"
        said = f": its best command line is in {command}" if command.is_file() else ""
        raise UsageError(f"{run}: this search has no file to write back (no objective.config, no Hydra app's "
                         f"config written back, no kept code change){said}", hint="copy the best params from "
                         "report.md into your project, or search with objective.config naming your config file")
    writes: list[tuple[Path, bytes, bytes, str]] = []
    config = project / meta["file"] if meta is not None and "file" in meta else None
    for target, best, sha in todo:
        if not best.is_file():
            _unfinished(run, str(best.relative_to(run)))
        try:
            current = target.read_bytes()
        except OSError as exc:
            raise UsageError(f"{target}: cannot be read ({exc.strerror or exc})",
                             hint="restore the file, or copy best/ by hand") from None
        new, said = best.read_bytes(), "written"
        if current != new and _sha(current) != sha:
            # the best is the file as the search started: writing it would undo the change (one of a value not
            # searched leaves the best values in place: nothing to write)
            if _sha(new) == sha and (target != config or _searched_edits(run, str(meta["file"]) if meta else "",
                                                                         target)):
                raise UsageError(f"{target} has changed since the search started, and the best trial's version is "
                                 "the one the search started from: nothing written",
                                 hint=f"keep your file, or copy {best} over it to go back")
            if target == config:  # the best values written into the edited file, the user's other edits kept
                new, keys = _into_edited(run, str(meta["file"]) if meta else "", target)
                said = (f"written: the best {', '.join(keys)} in place into your edited file (your other edits "
                        "kept)" if keys else "already holds the best values (your edits kept): nothing to write")
            else:
                raise UsageError(f"{target} has changed since the search started: nothing written",
                                 hint=f"apply the patch by hand ({by_hand(project, run)}) to keep your edit"
                                 + (f" (it writes {len(todo)} files)" if len(todo) > 1 else "")
                                 + f"; copying {best} over it would discard the edit")
        writes.append((target, current, new, said))
    out = []
    for target, current, new, said in writes:
        if current == new:
            out.append((target, "already the best version" if said == "written" else said))
            continue
        mode = target.stat().st_mode & 0o7777
        atomic_write_bytes(target, new)
        os.chmod(target, mode)  # the user's file keeps its permissions
        out.append((target, said))
    return out


def _unfinished(run: Path, missing: str) -> NoReturn:
    """``UsageError``: no ``missing`` (of best/) in ``run``, as the search has not finished (or had no success)."""
    status = run_status(run)
    why = {RUNNING: "the search is still running: it writes best/ at its end",
           INTERRUPTED: "the search was interrupted before its end, where it writes best/"}.get(
               status, "the search has no successful trial")
    raise UsageError(f"{run}: no {missing} ({why})", hint="wait for it to finish" if status == RUNNING else
                     f"finish the search (agentlab nas --resume {shlex.quote(str(run))}), then apply")


def _into_edited(run: Path, rel: str, target: Path) -> tuple[bytes, list[str]]:
    """The user's config file, edited since the search started, with the best trial's values written in place by
    the trials' own writer (``ConfigFile.render``: the user's other edits kept), and the keys written. A key whose
    own value the user edited too is refused (``UsageError``, nothing written), naming its line and both values:
    a patch would not apply there either (its context lines hold the edit)."""
    base, best = ConfigFile.load(run / "base" / rel), ConfigFile.load(run / "best" / rel)
    edited = ConfigFile.load(target)
    start = _leaves(base.values)
    values: dict[str, Any] = {}
    for key, value in _leaves(best.values).items():
        if key in start and _same(start[key], value):
            continue  # not searched, or the best kept the start's value
        found, now, changed = _edit_of(edited, start, key)
        if found and _same(now, value):
            continue  # the edit set the best value already
        if changed:
            was = f"{start[key]!r} -> {now!r}" if found and key in start else "removed" if not found else repr(now)
            raise UsageError(f"{target}:{edited.line_of(key) if found else 1}: {key} was edited since the search "
                             f"started ({was}), and the best trial's value is {value!r}: nothing written",
                             hint=f"set {key} to {value!r} there by hand to take the best value, or copy "
                             f"{run / 'best' / rel} over the file (discarding your edits)")
        values[key] = value
    return edited.encode(edited.render(values)), list(values)


def _searched_edits(run: Path, rel: str, target: Path) -> list[str]:
    """The searched keys (the run's search.space) whose value in the user's config file is no longer the one the
    search started from; every key when the run's config.yaml cannot say which were searched."""
    import yaml

    base, edited = ConfigFile.load(run / "base" / rel), ConfigFile.load(target)
    start = _leaves(base.values)
    try:
        keys = list(yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))["search"]["space"])
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        keys = list(start)
    return [key for key in keys if _edit_of(edited, start, key)[2]]


def _edit_of(edited: ConfigFile, start: dict[str, Any], key: str) -> tuple[bool, Any, bool]:
    """A key of the user's config file now: whether it is there, its value, and whether that differs from the
    search's start (removed, added, or another value)."""
    found, now = edited.lookup(key)
    return found, now, not found or key not in start or not _same(now, start[key])


def _leaves(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The dotted keys of a config's values (nested mappings followed; a list is one value)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        out.update(_leaves(value, name + ".") if isinstance(value, dict) and value else {name: value})
    return out


def _same(a: Any, b: Any) -> bool:
    """Two values as a file writes them (1 and 1.0, true and 1 differ)."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def left_out(run: Path) -> list[str]:
    """The best trial's Hydra overrides that have no place in the app's config files (``key=value: why``)."""
    return list(_written(run).get("not_written") or [])


def params_elsewhere(run: Path) -> str | None:
    """Where the best trial's params are when apply wrote its code and no file holds them (no objective.config, no
    Hydra app: the command took them as {args} or {params}), else None: they are in best/command.txt alone."""
    if _base_meta(run) is not None or not _written(run).get("code"):
        return None
    best = run / "best"
    return (f"not written: the best trial's params (no objective.config names a file for them); pass them as "
            f"{best / 'command.txt'} does (they are in {best / 'params.json'})")


def _refuse_forecaster_run(run: Path, meta: dict[str, Any] | None) -> None:
    """Refuse (``UsageError``, nothing written) a run that is not a search of the user's own command: a search of
    the built-in forecaster (its config.yaml has no ``objective:``) keeps no file of the user's to write back."""
    import yaml

    if meta is not None:
        return
    try:
        info = json.loads((run / "run.json").read_text(encoding="utf-8"))
        saved = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return  # _project says what is wrong with the folder
    command = info.get("command") if isinstance(info, dict) else None
    if command != "nas":
        raise UsageError(f"{run}: a run of `agentlab {command}`, not of `agentlab nas`: apply writes back the best "
                         "config of a nas search of your own training command",
                         hint="give the folder of such a search (an objective: section in its config)")
    if isinstance(saved, dict) and not saved.get("objective"):
        best = _written(run, "best").get("run_id")
        config = run / "trials" / (best if isinstance(best, str) else "<best trial>") / "config_used.yaml"
        raise UsageError(f"{run}: a search of the built-in forecaster (no objective: section): apply writes the "
                         "best config back into your project only for a search of your own training command "
                         "(objective:)", hint="forecast with its final model: agentlab nas predict "
                         f"{shlex.quote(str(run))} --data CSV; its best trial's config is {config}")


def by_hand(project: Path, run: Path) -> str:
    """How to apply ``best.patch`` in ``project`` by hand: git's way in a repository, else patch's (a command line
    to paste into a shell: the paths quoted)."""
    patch = shlex.quote(str((run / "best.patch").resolve()))
    apply = f"git apply {patch}" if repo_top(project) else f"patch -p1 < {patch}"
    return f"cd {shlex.quote(str(project))} && {apply}"


def _project(run: Path) -> Path:
    """The project folder of a search of the user's command (its saved config's objective.cwd)."""
    import yaml

    try:
        saved = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
        return Path(saved["objective"]["cwd"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{run}: its config.yaml does not name the project folder ({exc})") from None


def _written(run: Path, key: str = "best_files") -> dict[str, Any]:
    """results.json's ``best_files`` (what ``write_best`` wrote), or its block ``key``; {} when it has none."""
    try:
        block = json.loads((run / "results.json").read_text(encoding="utf-8")).get(key) or {}
    except (OSError, ValueError, AttributeError):
        return {}
    return block if isinstance(block, dict) else {}


def _base_meta(run: Path) -> dict[str, Any] | None:
    path = run / "base" / BASE_META
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _sha(text: str | bytes) -> str:
    return hashlib.sha256(text.encode("utf-8") if isinstance(text, str) else text).hexdigest()
