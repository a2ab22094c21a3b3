"""Trial workspaces: each trial of a command objective runs in its own copy of the user's project.

- **A git repository** (the project folder lies in one): a worktree of the current commit (``git worktree add
  --detach``), the way the field's experiment agents keep parallel tries apart. Uncommitted changes of the user's
  tree (``git diff HEAD``, binary included) and its untracked, not ignored files are carried in, so a trial runs what
  the user sees; the console says so once. The run's branch ``agentlab/<run>`` marks the commit the search started
  from (the branch later code changes commit to).
- **Otherwise** a copy of the files ``objective.workspace`` names (glob patterns, relative to the project folder),
  by default every file of the project folder except run folders, ``.git``, virtual environments, caches and files
  over ``LINK_OVER`` bytes, which are symlinked instead (data sets stay where they are).

A symlink of the project that points at something the workspace holds (``config.py -> configs/exp1.py``, relative
or absolute, tracked or not) points, relative, at the same place of the workspace, so a trial reads its own copy (the
one its values are written into), never the user's file; one that points out of the project (a data set elsewhere),
or into what the workspace leaves out (``latest -> wandb/run-1``, a virtual environment, what ``objective.workspace``'s
patterns leave out), points where the user's does (absolute): ``_settle_links``, once a workspace is made.

The user's own tree is never written to: git writes only under ``.git/worktrees`` (its own bookkeeping) and the
branch ref. Workspaces live under ``<run>/workspaces/`` and go when their trial is recorded (a failed trial's stays
with ``objective.keep_failed``); ``cleanup`` removes every worktree of the run and prunes git's list, at the end of
a search and when a killed one is resumed, so ``git worktree list`` is the user's tree alone again.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from agentlab.core.errors import ConfigError, UsageError
from agentlab.core.runs import atomic_write_bytes, atomic_write_json
from agentlab.nas.script import inside, resolved

LINK_OVER = 50 * 1024 * 1024  # a file this large is linked, not copied, into a workspace
LINK_FILES = 2000  # an ignored folder of more files than this (a data set) is linked whole into a worktree
SKIP_DIRS = {".git", ".hg", ".svn", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".ipynb_checkpoints",
             "node_modules", ".tox", ".nox", "wandb", "mlruns", ".agentlab"}
GIT_TIMEOUT_S = 120
PATCH = "uncommitted.patch"  # the user's uncommitted changes as the search started (bytes, applied to each worktree)
UNTRACKED = "untracked"  # the user's untracked files as the search started, copied once
FROZEN = "project"  # a project outside git: its files as the search started (copied once; large ones linked)
RECORD = "workspace.json"  # the commit and branch the search started from: --resume uses them, wherever HEAD is

log = logging.getLogger(__name__)


def _ran_trials(run: Path) -> bool:
    """Whether the run folder ``run`` holds a trial's folder (a trial started there)."""
    trials = run / "trials"
    return trials.is_dir() and any(trials.iterdir())


def _files(folder: Path) -> list[str]:
    """The files and links under ``folder`` (relative paths; a linked folder is one entry, not followed)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        out += [str((here / d).relative_to(folder)) for d in dirnames if (here / d).is_symlink()]
        out += [str((here / name).relative_to(folder)) for name in filenames]
    return sorted(out)


class WorkspaceError(UsageError):
    """A workspace cannot be made (git fails, a pattern matches nothing): exit 2 before trial 0."""


@dataclass
class Workspaces:
    """The workspaces of one run folder's trials over the project folder ``project``."""

    project: Path
    root: Path  # <run>/workspaces
    run_name: str
    patterns: list[str] | None = None
    keep_failed: bool = False
    exclude: list[Path] = field(default_factory=list)  # folders never copied (the runs' own folder)
    config: Path | None = None  # objective.config: each trial writes its copy after the workspace is made
    repo: Path | None = None
    commit: str | None = None
    branch: str | None = None
    carried: str = ""  # what of the user's uncommitted work is carried in, for the console
    _empty: list[str] | None = field(default=None, repr=False)  # the project's empty folders (listed once)
    _loops: set[str] = field(default_factory=set, repr=False)  # link loops said on the console (once each)

    def __post_init__(self) -> None:
        # absolute: git runs in the repository's folder, and a relative path would land in the user's tree
        self.root = Path(os.path.abspath(self.root))
        self.project = Path(os.path.abspath(self.project))

    # ------------------------------------------------------------------ once per run

    def check(self) -> None:
        """Before the run folder exists (nothing written): the patterns match a file; git answers in a repository;
        ``config`` lies in no ignored folder a worktree links whole (a trial's values would go into the user's
        file)."""
        self.project = self.project.resolve()
        if self.patterns is not None:
            self._require_patterns()
            return
        top = repo_top(self.project)
        if top is not None:
            _git(top, "worktree", "list")  # a repository git cannot work with fails here, before trial 0
            folder = self._linked_config(top)
            if folder is not None:
                raise ConfigError(f"objective.config: {self.config} lies in {top / folder}, a folder git ignores "
                                  f"that holds over {LINK_FILES} files, so each trial's workspace links it to "
                                  "yours instead of copying it, and a trial's values would be written into your "
                                  "file", hint=f"move the config file out of {folder}/ and set objective.config to "
                                  "its new place")

    def _linked_config(self, top: Path) -> str | None:
        """The ignored folder of the repository ``top`` (as ``_ignored`` lists it) that holds ``config`` and that
        ``_carry`` links whole into each worktree; None when there is none."""
        real = resolved(self.config) if self.config is not None else None
        if real is None or not real.is_relative_to(top):
            return None  # no config file, or one outside the project (refused by own_code.config_file)
        if _git(top, "rev-parse", "--verify", "--quiet", "HEAD", check=False) is None:
            return None  # no commit: ``prepare`` copies the project instead
        rel = real.relative_to(top)
        return next((folder for folder in self._ignored(top, skip=[p.resolve() for p in self.exclude])
                     if rel.is_relative_to(folder) and rel != Path(folder) and _linked_whole(top / folder)), None)

    def prepare(self) -> str:
        """Find the repository (if any), record the commit and the user's uncommitted work; returns the console's
        line saying how trials get their workspace."""
        self.project = self.project.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        top = repo_top(self.project)
        if self.patterns is None and top is not None:
            self.repo = top
            head = _git(self.repo, "rev-parse", "--verify", "--quiet", "HEAD", check=False)
            if head is None:  # a repository without a commit: nothing to check out
                self.repo = None
        if self.repo is None:
            if self.patterns is not None:
                self._require_patterns()
            frozen = self.root / FROZEN
            what = "the files of objective.workspace" if self.patterns is not None else "the project's files"
            if not frozen.is_dir() and _ran_trials(self.root.parent):  # deleted (or a run from before it was kept)
                log.warning("workspaces: the copy of %s kept as the search started (%s) is gone: the trials from now "
                            "on run %s as they are now, edits since the start included", what, frozen, what)
                return (f"workspaces: each trial runs in its own copy of {what} as they are now under {self.root} "
                        "(large files linked)")
            if not frozen.is_dir():  # the first start: a resumed search runs the files as the search started
                partial = self.root / f".{FROZEN}.partial"
                shutil.rmtree(partial, ignore_errors=True)
                self._copy_project(partial)
                partial.mkdir(exist_ok=True)
                os.replace(partial, frozen)
            return (f"workspaces: each trial runs in its own copy of {what} as the search started ({frozen}; large "
                    f"files linked) under {self.root}")
        record = self.root / RECORD
        saved = _read_record(record)
        if saved:  # a resumed run: the commit and the branch it started from, whatever HEAD is now
            self.commit, self.branch = saved["commit"], saved["branch"]
            if _git(self.repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{self.branch}", check=False) is None:
                _git(self.repo, "branch", self.branch, self.commit, check=False)  # released when it last ended
        else:
            if _ran_trials(self.root.parent):  # its record deleted with the workspaces: nothing to go back to
                log.warning("workspaces: the record of the commit the search started from (%s) is gone: the trials "
                            "from now on run the current commit and your uncommitted changes as they are now", record)
            self.commit = _git(self.repo, "rev-parse", "HEAD") or ""
            with self._lock():  # two runs of one name: one gets name-2
                self.branch = self._free_branch(branch_name(self.run_name))
                _git(self.repo, "branch", self.branch, self.commit)
            diff = _git_bytes(self.repo, "diff", "HEAD", "--binary")
            atomic_write_bytes(self.root / PATCH, diff)
            frozen = self.root / UNTRACKED  # the untracked files as the search starts: every trial gets these
            for rel in self._untracked():
                self._place(self.repo / rel, frozen / rel, self.repo)
            atomic_write_json(record, {"commit": self.commit, "branch": self.branch})
        patch = self.root / PATCH
        untracked = self._frozen()
        parts = []
        if patch.is_file() and patch.stat().st_size:
            parts.append(f"your uncommitted changes ({PATCH})")
        if untracked:
            parts.append(f"{len(untracked)} untracked file(s)")
        ignored = self._ignored()
        linked = [rel for rel in ignored if _linked_whole(self.repo / rel)]
        for what, names in (("copied", [rel for rel in ignored if rel not in linked]), ("linked", linked)):
            if names:
                parts.append(f"{len(names)} ignored file(s) or folder(s) {what} ({', '.join(names[:3])}"
                             f"{', ...' if len(names) > 3 else ''})")
        self.carried = " and ".join(parts)
        return self.line()

    def line(self, gone: bool = False) -> str:
        """The workspaces of a git project in words; ``gone``: the run's branch was deleted at the end."""
        branch = f"branch {self.branch}" + (", deleted at the end: nothing was committed on it" if gone else "")
        line = f"workspaces: each trial runs in a git worktree of {(self.commit or '')[:12]} ({branch}) under "
        return line + str(self.root) + (f"; carried in: {self.carried}" if self.carried else "")

    def _require_patterns(self) -> None:
        if not self._copy_list():
            raise WorkspaceError(f"objective.workspace: {self.patterns} match no file in {self.project}",
                                 hint="give glob patterns relative to the project folder, e.g. ['*.py', 'conf/**']")

    def _free_branch(self, name: str) -> str:
        """``name``, or ``name-2``, ``name-3``, ... when another run's branch has that name already."""
        assert self.repo is not None
        candidate, n = name, 1
        while _git(self.repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{candidate}", check=False) is not None:
            n += 1
            candidate = f"{name}-{n}"
        return candidate

    # ------------------------------------------------------------------ per trial

    def path(self, number: int) -> Path:
        return self.root / f"trial_{number:04d}"

    def anchored(self, word: str) -> str:
        """A word of a trial's command line (or the value of ``--flag=value``) that is a relative path leading out
        of what a workspace holds (the repository, else the project folder) to a file or folder that exists,
        absolute (``../../data`` would name a folder beside the workspace, not the user's); so is the value of a
        Hydra-style ``key=value`` word (``data.dir=../data``, ``{overrides}``); any other as it is."""
        key, eq, value = word.partition("=")
        if not word.startswith("-") and not (eq and re.fullmatch(r"[+~]{0,2}[A-Za-z_][\w./@-]*", key)):
            key, eq, value = "", "", word
        if not value.startswith("..") or Path(value).is_absolute():
            return word
        target = Path(os.path.normpath(self.project / value))
        if inside(self.repo or self.project, target) or not target.exists():
            return word
        return f"{key}{eq}{target}"

    def cwd(self, number: int) -> Path:
        """Where the command runs in trial ``number``'s workspace: the project folder's place in it."""
        base = self.path(number)
        return base / self.project.relative_to(self.repo) if self.repo is not None else base

    def create(self, number: int) -> Path:
        """A fresh workspace for trial ``number`` (a stale one, left by a killed run, is replaced); returns the
        folder the command runs in."""
        target = self.path(number)
        self.remove(number)
        try:
            self._make(target)
        except BaseException:
            self.remove(number)  # a half-made workspace is not left registered
            raise
        return self.cwd(number)

    def _make(self, target: Path) -> None:
        if self.repo is not None:
            with self._lock():
                _git(self.repo, "worktree", "add", "--detach", "--quiet", str(target), str(self.commit))
            patch = self.root / PATCH
            if patch.is_file() and patch.stat().st_size:
                _git(target, "apply", "--binary", "--whitespace=nowarn", str(patch))
            self._copy_kept(self.root / UNTRACKED, target)  # as they were when the search started, not as now
            for rel in self._ignored():  # what the repository ignores (data, outputs): as a copy would hold it
                self._carry(self.repo / rel, target / rel)
            for rel in self._empty_dirs():  # git keeps no empty folder; a script may expect its outputs/ there
                (target / rel).mkdir(parents=True, exist_ok=True)
        else:
            target.mkdir(parents=True)
            frozen = self.root / FROZEN
            if frozen.is_dir():
                self._copy_kept(frozen, target)
            else:  # a run that started before the project was kept: the files as they are now
                self._copy_project(target)
        self._settle_links(target)

    def remove(self, number: int) -> None:
        target = self.path(number)
        if self.repo is not None:
            with self._lock():
                _git(self.repo, "worktree", "remove", "--force", "--force", str(target), check=False)
                _git(self.repo, "worktree", "prune", check=False)
        if target.exists() or target.is_symlink():
            shutil.rmtree(target, ignore_errors=True)

    def done(self, number: int, failed: bool) -> None:
        """The trial is recorded: its workspace goes (a failed one stays with ``keep_failed``, out of git's list)."""
        if failed and self.keep_failed:
            if self.repo is not None:  # keep the files, drop the worktree registration
                with self._lock():
                    gitfile = self.path(number) / ".git"
                    with contextlib.suppress(OSError):
                        gitfile.unlink()
                    _git(self.repo, "worktree", "prune", check=False)
            return
        self.remove(number)

    def cleanup(self) -> None:
        """Every worktree of this run removed from git's list (kill -9 leaves them registered) and from disk."""
        repo = repo_top(self.project)
        if repo is not None:
            with self._lock():
                for path in _registered(repo, self.root):
                    _git(repo, "worktree", "remove", "--force", "--force", str(path), check=False)
                _git(repo, "worktree", "prune", check=False)
        if self.root.is_dir():
            for folder in self.root.glob("trial_*"):
                if not self.keep_failed or (folder / ".git").exists():
                    shutil.rmtree(folder, ignore_errors=True)

    def release(self) -> str | None:
        """At the end of a search: the run's branch goes when nothing was committed on it (it still points at the
        commit the search started from), so ``git branch`` is the user's again; the commit stays in the run's
        ``workspace.json`` for a later ``--resume``, which makes the branch again. Returns the workspaces' ``line``
        saying so when it went (report.md names no branch that is gone as if it were there), else None."""
        if self.repo is None or not self.branch or not self.commit:
            return None
        with self._lock():
            at = _git(self.repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{self.branch}", check=False)
            if at != self.commit or _git(self.repo, "branch", "-D", self.branch, check=False) is None:
                return None
        return self.line(gone=True)

    # ------------------------------------------------------------------ helpers

    def _untracked(self) -> list[str]:
        assert self.repo is not None
        text = _git(self.repo, "ls-files", "--others", "--exclude-standard", "-z", strip=False, check=False) or ""
        skip = [p.resolve() for p in [self.root, *self.exclude]]
        out = []
        runs: dict[Path, bool] = {}  # folder -> whether it is an agentlab run folder
        for rel in filter(None, text.split("\0")):
            path = self._real(self.repo / rel, rel)
            if path is None or any(s == path or s in path.parents for s in skip) or _skipped_dir(Path(rel)):
                continue
            parents = [p for p in path.parents if p != self.repo and self.repo in p.parents]
            if any(runs.setdefault(p, _is_run(p)) for p in parents):
                continue  # the files of a run folder in the project (runs/nas/...): never carried into a trial
            out.append(rel)
        return out

    def _frozen(self) -> list[str]:
        """The untracked files kept when the search started (relative paths)."""
        return _files(self.root / UNTRACKED)

    def _copy_project(self, target: Path) -> None:
        """The project's files (``_copy_list``) placed under ``target``: small ones copied, large ones linked, links
        as ``_place`` says."""
        for rel in self._copy_list():
            self._place(self.project / rel, target / rel, self.project)

    def _copy_kept(self, kept: Path, target: Path) -> None:
        """What the run kept when the search started (``kept``: the untracked files, or a project outside git)
        placed under ``target``."""
        for rel in _files(kept):
            self._place(kept / rel, target / rel, kept)

    def _ignored(self, repo: Path | None = None, skip: list[Path] | None = None) -> list[str]:
        """What the repository (``repo``, by default the run's) ignores under the project folder (data, outputs), as
        git lists it (a folder whole): carried into each worktree so the script finds its data; caches, virtual
        environments, run folders, link loops and what lies in ``skip`` (by default the run's folders) left out."""
        repo = repo or self.repo
        assert repo is not None
        text = _git(repo, "ls-files", "--others", "--ignored", "--exclude-standard", "--directory", "-z",
                    strip=False, check=False) or ""
        skip = [p.resolve() for p in [self.root, *self.exclude]] if skip is None else skip
        out = []
        for rel in filter(None, text.split("\0")):
            rel = rel.rstrip("/")
            path = repo / rel
            real = self._real(path, rel)
            if real is None:
                continue
            if self.project != repo and self.project not in real.parents and real != self.project:
                continue
            if any(s == real or s in real.parents or real in s.parents for s in skip):
                continue
            if Path(rel).name in SKIP_DIRS or _skipped_dir(Path(rel)) or (path.is_dir() and _skipped(path, skip)):
                continue
            if path.is_dir() and any(_is_run(p) for p in path.glob("*/*")):
                continue  # a folder of agentlab runs (runs/)
            out.append(rel)
        return out

    def _empty_dirs(self) -> list[str]:
        """Empty folders of the project (relative to the repository), run folders and caches left out; listed once
        per run (the project is walked once, not per trial)."""
        assert self.repo is not None
        if self._empty is not None:
            return self._empty
        skip = [p.resolve() for p in [self.root, *self.exclude]]
        out = []
        for dirpath, dirnames, filenames in os.walk(self.project):
            here = Path(dirpath)
            dirnames[:] = [d for d in dirnames if not _skipped(here / d, skip)]
            if not dirnames and not filenames and here != self.project:
                out.append(str(here.relative_to(self.repo)))
        self._empty = out
        return out

    def _copy_list(self) -> list[str]:
        """The project files a copy workspace holds (relative paths)."""
        skip = [p.resolve() for p in [self.root, *self.exclude]]
        out = []
        for dirpath, dirnames, filenames in os.walk(self.project):
            here = Path(dirpath)
            linked = [d for d in dirnames if (here / d).is_symlink() and (here / d).is_dir()]
            out += [str((here / d).relative_to(self.project)) for d in linked if self.patterns is None]
            dirnames[:] = [d for d in dirnames if not _skipped(here / d, skip)]
            for name in filenames:
                rel = (here / name).relative_to(self.project)
                if self.patterns is None or any(fnmatch.fnmatch(str(rel), p) or fnmatch.fnmatch(name, p)
                                                for p in self.patterns):
                    out.append(str(rel))
        return sorted(out)

    def _carry(self, source: Path, target: Path) -> None:
        """An ignored file or folder into a worktree: small files copied (a trial's writes stay in its workspace),
        files over ``LINK_OVER`` linked, and a folder of more than ``LINK_FILES`` files (a data set) linked whole."""
        if target.exists() or target.is_symlink():
            return
        if source.is_dir() and not source.is_symlink():
            if _linked_whole(source):
                target.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(source, target)
                return
            for path in source.rglob("*"):
                if path.is_file() or path.is_symlink():
                    self._place(path, target / path.relative_to(source), self.repo or self.project)
            return
        self._place(source, target, self.repo or self.project)

    def _place(self, source: Path, target: Path, root: Path) -> None:
        """``source``, a file under ``root``, at ``target`` (the same place under the copy's top): copied, or linked
        when over ``LINK_OVER``. A link that points inside ``root`` points at the same place of the copy (relative:
        a trial reads the copy its values are written into, never the user's file; ``_settle_links`` points it at
        the user's when the workspace does not hold that place); any other where the user's does (absolute: it
        moved)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink() or not source.is_file():
            with contextlib.suppress(OSError, RuntimeError):  # RuntimeError: a link loop
                real, top = source.resolve(), root.resolve()
                inner = source.is_symlink() and real.is_relative_to(top)
                os.symlink(os.path.relpath(real, top / source.parent.relative_to(root)) if inner else real, target)
            return
        if source.stat().st_size > LINK_OVER:
            os.symlink(source, target)
        else:
            shutil.copy2(source, target)

    def _settle_links(self, target: Path) -> None:
        """The links of the new workspace ``target`` (a copy of the repository, else of the project folder) pointed
        at what the user's point at, at the workspace's copy where it holds one: one that leads nowhere here (into
        what the workspace leaves out: ``wandb/``, a virtual environment, a folder ``objective.workspace``'s patterns
        leave out; out of it by ``../``) but somewhere in the user's tree points at the user's (absolute); one that
        is absolute into the user's tree (a tracked link: git checks it out as stored) at the workspace's copy
        (relative) when the workspace holds that. ``config``, which each trial writes later, counts as held."""
        top = self.repo or self.project
        here = target.resolve()
        config = resolved(self.config) if self.config is not None else None
        held = {target / config.relative_to(top)} if config is not None and config.is_relative_to(top) else set()
        for dirpath, dirnames, filenames in os.walk(target):
            dirnames[:] = [d for d in dirnames if d != ".git"]  # linked folders are listed, never entered
            for name in [*dirnames, *filenames]:
                link = Path(dirpath) / name
                if not link.is_symlink():
                    continue
                to = os.readlink(link)
                if os.path.isabs(to):  # at the workspace's copy when it holds one (not a link back to the user's)
                    real = resolved(Path(to))
                    copy = target / real.relative_to(top) if real is not None and real.is_relative_to(top) else None
                    if copy is not None and (copy in held or (os.path.exists(copy) and inside(here, copy))):
                        _relink(link, os.path.relpath(copy, link.parent))
                    continue
                at = Path(os.path.normpath(link.parent / to))
                if at in held or (at.is_relative_to(target) and os.path.exists(link)):
                    continue
                theirs = resolved(Path(os.path.normpath(top / link.parent.relative_to(target) / to)))
                if theirs is not None and theirs.exists():  # where the user's link leads: absolute
                    _relink(link, str(theirs))

    def _real(self, path: Path, rel: str) -> Path | None:
        """``path`` (``rel`` in the repository) with its links resolved; None for a link loop, said once."""
        real = resolved(path)
        if real is None and rel not in self._loops:
            self._loops.add(rel)
            log.warning("workspaces: %s is a link loop (or a link the system cannot follow): not carried into the "
                        "trials' workspaces", rel)
        return real

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """git's worktree commands of several workers on one repository (each with its own run folder), one at a
        time: a lock file beside git's own in the repository's common git folder."""
        repo = self.repo or self.project
        common = _git(repo, "rev-parse", "--git-common-dir", check=False)
        folder = (repo / common) if common else self.root
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "agentlab-worktree.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def branch_name(run_name: str) -> str:
    """``agentlab/<run>`` made a valid git branch name (no spaces, ``..``, ``.lock`` ends or control characters)."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", run_name)
    name = re.sub(r"\.{2,}", ".", name).strip(".-") or "run"
    name = name.removesuffix(".lock")
    return f"agentlab/{name}"


def _read_record(path: Path) -> dict[str, str] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("commit") and data.get("branch") else None


def _git_bytes(cwd: Path, *args: str) -> bytes:
    """``git args`` in ``cwd``: its stdout as bytes (a diff of any encoding and line ending, unchanged)."""
    out = _run_git(cwd, args, check=True)
    assert out is not None  # check: a failure raised
    return out


def _registered(repo: Path, root: Path) -> list[Path]:
    """The worktrees git lists under ``root``."""
    text = _git(repo, "worktree", "list", "--porcelain", check=False) or ""
    root = root.resolve()
    paths = [Path(line.removeprefix("worktree ")) for line in text.splitlines() if line.startswith("worktree ")]
    return [p for p in paths if root in p.resolve().parents]


def _linked_whole(source: Path) -> bool:
    """Whether ``_carry`` links ``source``, an ignored file or folder, into a worktree rather than copying it: a
    file over ``LINK_OVER`` bytes, a folder of more than ``LINK_FILES`` files, a link."""
    if source.is_symlink() or not source.is_dir():
        return source.is_symlink() or not source.is_file() or source.stat().st_size > LINK_OVER
    return any(n > LINK_FILES for n, _ in enumerate(source.rglob("*"), 1))


def _relink(link: Path, to: str) -> None:
    """The link ``link`` pointed at ``to`` instead (replaced at once; left as it was when the system refuses)."""
    new = link.with_name(f".{link.name}.relink")
    with contextlib.suppress(OSError):
        with contextlib.suppress(FileNotFoundError):
            new.unlink()
        os.symlink(to, new)
        os.replace(new, link)


def _skipped_dir(rel: Path) -> bool:
    return any(part in SKIP_DIRS for part in rel.parts[:-1])


def _is_run(folder: Path) -> bool:
    return (folder / "run.json").is_file() and (folder / "config.yaml").is_file()


def _skipped(folder: Path, skip: list[Path]) -> bool:
    if folder.name in SKIP_DIRS or folder.is_symlink():
        return True
    if (folder / "pyvenv.cfg").is_file() or _is_run(folder):
        return True  # a virtual environment, an agentlab run folder
    resolved = folder.resolve()
    return any(s == resolved or s in resolved.parents for s in skip)


def repo_top(folder: Path) -> Path | None:
    """The top folder of the git repository holding ``folder`` (resolved), as git answers it; None outside one, or
    when ``folder`` is not a folder."""
    top = _git(folder, "rev-parse", "--show-toplevel", check=False) if folder.is_dir() else None
    return Path(top).resolve() if top is not None else None


def _git(cwd: Path, *args: str, check: bool = True, strip: bool = True) -> str | None:
    """``git args`` in ``cwd``: its stdout as text; None when it fails and ``check`` is off, else
    ``WorkspaceError``."""
    out = _run_git(cwd, args, check=check)
    if out is None:
        return None
    text = out.decode("utf-8", errors="replace")
    return text.strip() if strip else text


def _run_git(cwd: Path, args: tuple[str, ...], check: bool) -> bytes | None:
    """Run git once: stdout as bytes; on failure None, or ``WorkspaceError`` with ``check``."""
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=GIT_TIMEOUT_S,
                              env={**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"})
    except FileNotFoundError:
        if check:
            raise WorkspaceError("git is not installed, and the project is a git repository",
                                 hint="install git, or set objective.workspace to copy files instead") from None
        return None
    except (OSError, subprocess.TimeoutExpired) as exc:
        if check:
            raise WorkspaceError(f"git {args[0]} failed in {cwd}: {exc}") from None
        return None
    if done.returncode != 0:
        if check:
            raise WorkspaceError(f"git {' '.join(args[:2])} failed in {cwd}: "
                                 f"{done.stderr.decode('utf-8', 'replace').strip()[:300]}",
                                 hint="check the repository (git status), or set objective.workspace to copy "
                                 "files instead")
        return None
    return done.stdout
