"""Code changes as trials (issue 60): an edit of the user's editable files, checked, applied in a trial's workspace,
kept as a new version of the project when it improves the metric.

- A ``Change`` is one or more exact-text ``Edit`` s (a path, the text to replace, which must occur exactly once, and
  the new text) with a reason. ``check`` refuses one that touches a file that is not editable or is protected, whose
  old text is not there exactly once, or whose result is not valid Python (for ``.py`` files), before anything runs.
- ``CodeRules``: ``editable`` and ``protected`` glob patterns relative to the project folder (``*`` stays inside a
  folder, ``**`` crosses folders, a pattern ending in ``/`` is everything under that folder). Without ``protected``
  every file that is not editable is protected.
- A version of the code is a chain of kept change trials, read from the study: a trial's plan names the chain it
  runs on (``plan.extra.code.base``) and its own change, so a resumed run rebuilds exactly what ran, and there is no
  second state to lose. ``CodeTrials`` builds a trial's code in its fresh workspace (a worktree or a copy). In a git
  repository each kept version is also a commit on the run's branch, made with git's plumbing on a temporary index,
  so the user's tree, index and HEAD are never touched.
- ``digest`` hashes the protected files of a workspace: taken after the change is applied and again after the
  command ran, a trial whose run rewrote a protected file is refused.
"""

from __future__ import annotations

import ast
import codecs
import difflib
import hashlib
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentlab.core.errors import UsageError
from agentlab.core.files import file_sha256
from agentlab.core.runs import atomic_write_bytes, atomic_write_text

SKIP = {".git", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".ipynb_checkpoints"}
DIFF = "change.diff"  # a change trial's unified diff, in its trial folder
CODE = "code"  # the files a trial's code changed, as it ran them, in its trial folder
COMMIT = "commit.txt"  # in a kept trial's code/ folder: the commit of its version on the run's branch


def start_folder(run: Path) -> Path:
    """``<run>/code/start/``: the editable files as the search started (frozen once)."""
    return run / CODE / "start"


class ChangeError(ValueError):
    """A change that cannot be applied (checked before it runs): the agent is shown the reason, not the user."""


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
        """The files under ``root`` the agent may change: the editable ones an edit can be made to (``left_out``
        holds the others)."""
        return self.sort(root)[0]

    def left_out(self, root: Path) -> dict[str, str]:
        """The files under ``root`` the editable patterns match that no edit can be made to, and why
        (``unusable``): the agent is not offered them."""
        return self.sort(root)[1]

    def sort(self, root: Path) -> tuple[list[str], dict[str, str]]:
        """The editable files under ``root`` in one pass (each read once): those an edit can be made to, and the
        others with why (``unusable``)."""
        usable: list[str] = []
        left: dict[str, str] = {}
        for rel in _files(root, runs=False):  # an earlier run's copies are no code to offer
            if self.is_editable(rel):
                why = unusable(root / rel)
                if why is None:
                    usable.append(rel)
                else:
                    left[rel] = why
        return usable, left

    def named(self, rel: str) -> bool:
        """Whether an editable pattern names ``rel`` by its own path (no wildcard, no folder)."""
        return any(glob_regex(p).match(_posix(rel)) for p in self.editable
                   if not any(c in p for c in "*?[") and not p.endswith("/"))

    def both(self, root: Path) -> list[str]:
        """The files under ``root`` that an editable pattern naming one file (no wildcard, no folder) names and a
        protected pattern matches: a contradiction (protected wins). ``src/**`` with ``src/eval.py`` protected is how
        to say "all but the scorer", not one."""
        if self.protected is None:
            return []
        return [rel for rel in _files(root) if self.named(rel) and self.is_protected(rel)]

    def check_project(self, root: Path) -> dict[str, str]:
        """The editable patterns checked against the project at ``root`` before the search starts; ``UsageError``
        naming the first problem: a file named in both lists, a file named by its own path that no edit can be made
        to (a link, not UTF-8 text), patterns that leave nothing to change. Returns the files a wildcard matched that
        are left out (path -> why), for the console."""
        both = self.both(root)
        if both:  # protected won without a word: the agent never saw the file the config calls editable
            # "objective.editable: " first: prepare_command places it at the line (or the --set) that gave it
            raise UsageError(f"objective.editable: names {', '.join(both[:5])}"
                             + (f" (and {len(both) - 5} more)" if len(both) > 5 else "")
                             + ", which objective.protected names too",
                             hint="a file is either editable or protected: take it out of one of the two lists")
        usable, left = self.sort(root)
        for rel, why in left.items():
            if self.named(rel):
                fix = "copy the file into the project in the link's place" if why.startswith("a link") else \
                    "save it as UTF-8 text"
                raise UsageError(f"objective.editable: {rel} is {why}, so no edit can be made to it",
                                 hint=f"{fix}, or take it out of objective.editable")
        if not usable:
            raise UsageError(f"objective.editable: {self.editable} match no file the agent may change in "
                             f"{root.resolve()} (protected files, links and files that are not UTF-8 text excluded)",
                             hint="give glob patterns relative to objective.cwd, e.g. [train.py, 'model/*.py']")
        return left


def _files(root: Path, *, runs: bool = True) -> list[str]:
    """Every file under ``root`` (relative, posix), caches and ``.git`` left out; linked folders not entered.
    ``runs`` False: agentlab's run folders left out too (``_agentlab_run``: the default ``runs/`` inside the project
    holds earlier searches' copies of its code, no code to offer the agent)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP and (runs or not _agentlab_run(here / d)))
        out += [(here / n).relative_to(root).as_posix() for n in sorted(filenames)]
        out += [(here / d).relative_to(root).as_posix() for d in dirnames if (here / d).is_symlink()]
    return sorted(out)


def _agentlab_run(folder: Path) -> bool:
    """Whether ``folder`` is an agentlab run folder: its run.json names the agentlab version that wrote it (another
    tool's run.json, Sacred's say, holds a ``command`` and a ``status`` too)."""
    try:
        info = json.loads((folder / "run.json").read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and isinstance(info.get("versions"), dict) and "agentlab" in info["versions"]


def unusable(path: Path) -> str | None:
    """Why no edit can be made to the file at ``path`` (None: one can): a link (a trial's workspace holds the link,
    which an edit does not follow), a binary file or one that is not UTF-8 text (an edit is exact text, as
    ``read_project`` shows it), or one that cannot be read."""
    if path.is_symlink():
        try:
            return f"a link (to {os.readlink(path)})"
        except OSError:
            return "a link"
    if not path.is_file():
        return "not a file"
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                if b"\0" in chunk:
                    return "a binary file, not text"
                decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return "not UTF-8 text"
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    return None


def read_under(root: Path) -> Callable[[str], str | None]:
    """A file's text under ``root`` (None: no such file); ``ChangeError`` when it is not UTF-8 text."""

    def read(rel: str) -> str | None:
        file = root / rel
        if not file.is_file() or file.is_symlink():
            return None
        try:
            return file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ChangeError(f"{rel}: cannot be read as UTF-8 text ({exc})") from None

    return read


def check(change: Change, files: Path | Callable[[str], str | None], rules: CodeRules) -> dict[str, tuple[str, str]]:
    """The change applied in memory to ``files`` (a folder, or a function giving a file's text, None when there is
    no such file): ``{path: (before, after)}``; ``ChangeError`` naming the first problem (a file not editable or
    protected, missing, the old text not there exactly once, an edit or a change that changes nothing, a Python file
    that no longer parses)."""
    read = read_under(files) if isinstance(files, Path) else files
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
            text = read(edit.path)
            if text is None:
                raise ChangeError(f"{where}: no such file in the project")
            texts[edit.path] = (text, text)
        before, current = texts[edit.path]
        if not edit.old:
            raise ChangeError(f"{where}: the old text is empty; quote the exact lines to replace")
        if edit.new == edit.old:
            raise ChangeError(f"{where}: the new text is the old text, so it changes nothing; give the new text")
        count = current.count(edit.old)
        if count != 1:
            raise ChangeError(f"{where}: the old text occurs {count} times (it must occur exactly once); "
                              + ("quote more lines around it" if count else "copy it exactly from the file"))
        texts[edit.path] = (before, current.replace(edit.old, edit.new, 1))
    if all(before == after for before, after in texts.values()):  # edits that undo each other
        raise ChangeError("the edits together change nothing (the files end as they were); propose a change that "
                          "does")
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
                out[rel] = file_sha256(path)
        except OSError:
            out[rel] = "unreadable"
    return out


def rewritten(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """The protected files of ``before`` that changed or went (new files are the run's outputs, not a rewrite)."""
    return sorted(rel for rel, value in before.items() if after.get(rel) != value)


def code_of(plan: dict[str, Any] | None) -> dict[str, Any]:
    """A trial plan's code: ``{"base": [numbers of the kept change trials it runs on, oldest first], "change":
    its own change (a dict) or absent}``; ``{}`` for a trial on the project as it started."""
    code = ((plan or {}).get("extra") or {}).get("code")
    return code if isinstance(code, dict) else {}


@dataclass
class CodeTrials:
    """The workspace side of code trials: a trial's workspace gets the kept changes its plan names and then its own
    change (``change.diff`` and the changed files under ``code/`` in the trial folder); the protected files are
    hashed then and after the command, and a run that rewrote one is refused. ``plan_of(number)`` reads a trial's
    plan from the study (set once the loop exists)."""

    rules: CodeRules
    plan_of: Callable[[int], dict[str, Any]] | None = None
    skip: tuple[str, ...] = ("metrics.json",)  # file names the default protection leaves to the run (its result)

    def change_of(self, number: int) -> Change:
        assert self.plan_of is not None
        return Change.from_dict(code_of(self.plan_of(number))["change"])

    def prepare(self, number: int, cwd: Path, folder: Path) -> dict[str, str]:
        """Build trial ``number``'s code in ``cwd``; returns the protected files' digest."""
        from agentlab.core.search.loop import TrialFailed

        plan = self.plan_of(number) if self.plan_of is not None else None
        code = code_of(plan)
        touched: dict[str, None] = {}
        for n in code.get("base", []):
            change = self.change_of(n)
            try:
                apply(change, cwd, self.rules)
            except ChangeError as exc:  # the kept change applied once; the start state cannot have moved
                raise TrialFailed(f"kept change of trial {n} does not apply again: {exc}") from None
            touched.update(dict.fromkeys(change.paths()))
        if code.get("change"):
            own = Change.from_dict(code["change"])
            try:
                diff = apply(own, cwd, self.rules)
            except ChangeError as exc:
                raise TrialFailed(f"refused: {exc}") from None
            atomic_write_text(folder / DIFF, diff)
            touched.update(dict.fromkeys(own.paths()))
        for rel in touched:  # the code as it ran: commits and best.patch are made from these
            atomic_write_bytes(folder / CODE / rel, (cwd / rel).read_bytes())
        return self.digest(cwd)

    def digest(self, cwd: Path) -> dict[str, str]:
        if self.rules.protected is not None:  # named: every one of them, outputs or not
            return digest(cwd, self.rules)
        return {k: v for k, v in digest(cwd, self.rules).items() if Path(k).name not in self.skip}

    def verify(self, before: dict[str, str], cwd: Path) -> None:
        """``TrialFailed`` (refused) when the run rewrote or removed a protected file."""
        from agentlab.core.search.loop import TrialFailed

        changed = rewritten(before, self.digest(cwd))
        if changed:
            raise TrialFailed(f"refused: the run changed protected file(s) {', '.join(changed[:5])}"
                              f"{' ...' if len(changed) > 5 else ''} (objective.protected; not scored)")


def commit_version(repo: Path, branch: str, parent: str, files: dict[str, bytes], message: str) -> str:
    """A commit of ``parent``'s tree with ``files`` (paths relative to ``repo``) in it, made on a temporary index
    (the user's tree, index and HEAD are untouched); ``branch`` is moved to it. Returns the new commit."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_AUTHOR_NAME": "agentlab",
           "GIT_AUTHOR_EMAIL": "agentlab@localhost", "GIT_COMMITTER_NAME": "agentlab",
           "GIT_COMMITTER_EMAIL": "agentlab@localhost"}

    def git(*args: str, stdin: bytes | None = None, index: str | None = None) -> str:
        run_env = {**env, "GIT_INDEX_FILE": index} if index else env
        done = subprocess.run(["git", *args], cwd=repo, input=stdin, capture_output=True, env=run_env, timeout=120)
        if done.returncode != 0:
            raise UsageError(f"git {args[0]} failed in {repo}: {done.stderr.decode('utf-8', 'replace').strip()[:300]}")
        return done.stdout.decode("utf-8", "replace").strip()

    with tempfile.TemporaryDirectory() as tmp:
        index = str(Path(tmp) / "index")
        git("read-tree", parent, index=index)
        for rel, data in sorted(files.items()):
            blob = git("hash-object", "-w", "--stdin", stdin=data)
            mode = "100755" if os.access(repo / rel, os.X_OK) else "100644"
            git("update-index", "--add", "--cacheinfo", f"{mode},{blob},{rel}", index=index)
        tree = git("write-tree", index=index)
    commit = git("commit-tree", tree, "-p", parent, "-m", message)
    git("update-ref", f"refs/heads/{branch}", commit)
    return commit
