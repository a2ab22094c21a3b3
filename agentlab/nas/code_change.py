"""Code changes as trials (issue 60): an edit of the user's editable files, checked, applied in a trial's workspace,
kept as a new version of the project when it improves the metric.

- A ``Change`` is one or more exact-text ``Edit`` s (a path, the text to replace, which must occur exactly once, and
  the new text) with a reason. ``check`` refuses one that touches a file that is not editable or is protected, whose
  old text is not there exactly once, or whose result is not valid Python (for ``.py`` files), before anything runs.
- ``CodeRules``: ``editable`` and ``protected`` glob patterns relative to the project folder (``*`` stays inside a
  folder, ``**`` crosses folders, a pattern ending in ``/`` is everything under that folder). Without ``protected``
  every file that is not editable is protected.
- ``Versions`` (``<run>/code/versions.json``): the kept changes in order; a trial's workspace gets every kept change
  re-applied (a version is the start state plus that chain, whatever the workspace is: a worktree or a copy), then
  its own change. In a git repository each kept version is also a commit on the run's branch, made with git's
  plumbing on a temporary index, so the user's tree, index and HEAD are never touched.
- ``digest`` hashes the protected files of a workspace: taken after the change is applied and again after the
  command ran, a trial whose run rewrote a protected file is refused.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentlab.core.errors import UsageError
from agentlab.core.runs import atomic_write_json

SKIP = {".git", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".ipynb_checkpoints"}
VERSIONS = "versions.json"
DIFF = "change.diff"


class ChangeError(UsageError):
    """A change that cannot be applied (checked before it runs): the agent is shown the reason."""


@dataclass(frozen=True)
class Edit:
    path: str  # relative to the project folder, with /
    old: str
    new: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "old": self.old, "new": self.new}


@dataclass(frozen=True)
class Change:
    edits: tuple[Edit, ...]
    reason: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Change:
        edits = data.get("edits")
        if not isinstance(edits, list) or not edits:
            raise ChangeError("a change needs at least one edit (path, old, new)")
        out = []
        for i, e in enumerate(edits):
            if not isinstance(e, dict) or not all(isinstance(e.get(k), str) for k in ("path", "old", "new")):
                raise ChangeError(f"edit {i}: needs path, old and new as text")
            out.append(Edit(_posix(e["path"]), e["old"], e["new"]))
        return cls(tuple(out), str(data.get("reason") or ""))

    def to_dict(self) -> dict[str, Any]:
        return {"edits": [e.to_dict() for e in self.edits], "reason": self.reason}

    def key(self) -> str:
        """The change's identity (its edits, not its reason): two trials of one change on one version are one."""
        text = json.dumps([e.to_dict() for e in self.edits], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]

    def paths(self) -> list[str]:
        return sorted({e.path for e in self.edits})


def _posix(path: str) -> str:
    return Path(path.replace("\\", "/")).as_posix().removeprefix("./")


def glob_regex(pattern: str) -> re.Pattern[str]:
    """``pattern`` as a regex over posix paths: ``**`` any folders, ``*`` and ``?`` within one name, a trailing
    ``/`` everything under that folder."""
    pattern = _posix(pattern.strip()) + ("/**" if pattern.strip().endswith("/") else "")
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


@dataclass
class CodeRules:
    editable: list[str]
    protected: list[str] | None = None
    _editable: list[re.Pattern[str]] = field(default_factory=list, repr=False)
    _protected: list[re.Pattern[str]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._editable = [glob_regex(p) for p in self.editable]
        self._protected = [glob_regex(p) for p in self.protected or []]

    def is_protected(self, rel: str) -> bool:
        rel = _posix(rel)
        if self.protected is None:
            return not any(p.match(rel) for p in self._editable)
        return any(p.match(rel) for p in self._protected)

    def is_editable(self, rel: str) -> bool:
        rel = _posix(rel)
        return any(p.match(rel) for p in self._editable) and not self.is_protected(rel)

    def editable_files(self, root: Path) -> list[str]:
        return [rel for rel in _files(root) if self.is_editable(rel)]


def _files(root: Path) -> list[str]:
    """Every file under ``root`` (relative, posix), caches and ``.git`` left out; linked folders not entered."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP)
        here = Path(dirpath)
        out += [(here / n).relative_to(root).as_posix() for n in sorted(filenames)]
        out += [(here / d).relative_to(root).as_posix() for d in dirnames if (here / d).is_symlink()]
    return sorted(out)


def check(change: Change, root: Path, rules: CodeRules) -> dict[str, tuple[str, str]]:
    """The change applied in memory to the files under ``root``: ``{path: (before, after)}``; ``ChangeError``
    naming the first problem (a file not editable or protected, missing, the old text not there exactly once, a
    Python file that no longer parses)."""
    texts: dict[str, tuple[str, str]] = {}
    for i, edit in enumerate(change.edits):
        where = f"edit {i} ({edit.path})"
        if edit.path.startswith("../") or Path(edit.path).is_absolute():
            raise ChangeError(f"{where}: outside the project")
        if rules.is_protected(edit.path):
            raise ChangeError(f"{where}: a protected file; it may not change")
        if not rules.is_editable(edit.path):
            raise ChangeError(f"{where}: not editable (objective.editable: {', '.join(rules.editable)})")
        if edit.path not in texts:
            file = root / edit.path
            if not file.is_file() or file.is_symlink():
                raise ChangeError(f"{where}: no such file in the project")
            try:
                text = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ChangeError(f"{where}: cannot be read as UTF-8 text ({exc})") from None
            texts[edit.path] = (text, text)
        before, current = texts[edit.path]
        if not edit.old:
            raise ChangeError(f"{where}: the old text is empty; quote the exact lines to replace")
        count = current.count(edit.old)
        if count != 1:
            raise ChangeError(f"{where}: the old text occurs {count} times (it must occur exactly once); "
                              + ("quote more lines around it" if count else "copy it exactly from the file"))
        texts[edit.path] = (before, current.replace(edit.old, edit.new, 1))
    for path, (_, after) in texts.items():
        if path.endswith(".py"):
            try:
                ast.parse(after, filename=path)
            except SyntaxError as exc:
                raise ChangeError(f"{path}: the changed file does not parse (line {exc.lineno}: {exc.msg})") from None
    return texts


def unified_diff(texts: dict[str, tuple[str, str]]) -> str:
    out: list[str] = []
    for path, (before, after) in sorted(texts.items()):
        out += difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                    f"a/{path}", f"b/{path}")
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in out)


def apply(change: Change, root: Path, rules: CodeRules) -> str:
    """Apply ``change`` to the files under ``root`` (checked first); returns its unified diff."""
    texts = check(change, root, rules)
    for path, (_, after) in texts.items():
        target = root / path
        mode = target.stat().st_mode
        tmp = target.with_name(f".{target.name}.agentlab.tmp")
        tmp.write_text(after, encoding="utf-8")
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    return unified_diff(texts)


def digest(root: Path, rules: CodeRules) -> dict[str, str]:
    """sha256 of each protected file under ``root`` (a link: where it points, its size and mtime)."""
    out = {}
    for rel in _files(root):
        if not rules.is_protected(rel):
            continue
        path = root / rel
        try:
            if path.is_symlink():
                st = path.stat()
                out[rel] = f"link:{os.readlink(path)}:{st.st_size}:{st.st_mtime_ns}"
            else:
                h = hashlib.sha256()
                with open(path, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        h.update(block)
                out[rel] = h.hexdigest()
        except OSError:
            out[rel] = "unreadable"
    return out


def rewritten(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """The protected files of ``before`` that changed or went (new files are the run's outputs, not a rewrite)."""
    return sorted(rel for rel, value in before.items() if after.get(rel) != value)


@dataclass
class Versions:
    """The kept changes of one run (``<run>/code/versions.json``), oldest first."""

    folder: Path
    kept: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def open(cls, folder: Path) -> Versions:
        path = folder / VERSIONS
        kept: list[dict[str, Any]] = []
        if path.is_file():
            try:
                kept = json.loads(path.read_text(encoding="utf-8"))["kept"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise UsageError(f"{path}: unreadable ({exc})", hint="restore it from the run folder's backup, "
                                 "or start a new run") from None
        return cls(folder, kept)

    @property
    def number(self) -> int:
        """The current version: 0 is the project as the search started, n after n kept changes."""
        return len(self.kept)

    def changes(self, upto: int | None = None) -> list[Change]:
        return [Change.from_dict(k["change"]) for k in self.kept[:upto]]

    def keep(self, trial: int, change: Change, value: float, commit: str | None = None) -> int:
        """Record ``change`` (trial ``trial``) as the next version; returns its number. A trial kept already
        (a resumed run records again) is not added twice."""
        if any(k["trial"] == trial for k in self.kept):
            return next(i + 1 for i, k in enumerate(self.kept) if k["trial"] == trial)
        self.kept.append({"trial": trial, "change": change.to_dict(), "value": value, "commit": commit})
        atomic_write_json(self.folder / VERSIONS, {"kept": self.kept})
        return len(self.kept)

    def build(self, root: Path, rules: CodeRules, upto: int | None = None) -> None:
        """Re-apply the kept changes (up to version ``upto``) to a fresh workspace ``root``."""
        for i, change in enumerate(self.changes(upto)):
            try:
                apply(change, root, rules)
            except ChangeError as exc:
                raise UsageError(f"version {i + 1} of the code cannot be rebuilt in {root}: {exc}",
                                 hint="the project's files changed under the run; start a new run") from None


def commit_version(repo: Path, branch: str, files: dict[str, bytes], message: str) -> str:
    """A commit on ``branch`` holding ``files`` (paths relative to ``repo``) on top of the branch's tree, made on a
    temporary index: the user's tree, index and HEAD are untouched. Returns the new commit."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_AUTHOR_NAME": "agentlab",
           "GIT_AUTHOR_EMAIL": "agentlab@localhost", "GIT_COMMITTER_NAME": "agentlab",
           "GIT_COMMITTER_EMAIL": "agentlab@localhost"}

    def git(*args: str, stdin: bytes | None = None, index: str | None = None) -> str:
        run_env = {**env, "GIT_INDEX_FILE": index} if index else env
        done = subprocess.run(["git", *args], cwd=repo, input=stdin, capture_output=True, env=run_env, timeout=120)
        if done.returncode != 0:
            raise UsageError(f"git {args[0]} failed in {repo}: {done.stderr.decode('utf-8', 'replace').strip()[:300]}")
        return done.stdout.decode("utf-8", "replace").strip()

    parent = git("rev-parse", "--verify", f"refs/heads/{branch}")
    with tempfile.TemporaryDirectory() as tmp:
        index = str(Path(tmp) / "index")
        git("read-tree", parent, index=index)
        for rel, data in sorted(files.items()):
            blob = git("hash-object", "-w", "--stdin", stdin=data)
            mode = "100755" if os.access(repo / rel, os.X_OK) else "100644"
            git("update-index", "--add", "--cacheinfo", f"{mode},{blob},{rel}", index=index)
        tree = git("write-tree", index=index)
    commit = git("commit-tree", tree, "-p", parent, "-m", message)
    git("update-ref", f"refs/heads/{branch}", commit, parent)
    return commit
