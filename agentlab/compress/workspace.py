"""The compression workspace, memory across runs (default ``runs/compress/workspace/``); every write is atomic.

- ``experiments/<key>.json``: a finished experiment and its measurements; ``key`` hashes the model's content and the
  canonical technique config, so any later run on the model reads a repeat back;
- ``notes/<model hash>.md``: knowledge notes, appended after each run;
- ``checkpoints/<key>/``: the Pareto front's compressed models (``model.gguf``, or ``model.pt`` before any int8
  quantization), the least recently used dropped beyond ``checkpoints_mb``;
- ``hashes.json``: model content hashes by path, size and modification time (why: docs/design/measurements.md).

A run keeps its workspace's absolute path in config.yaml (``workspace_root``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from agentlab.core.config import absolute_path
from agentlab.core.errors import ConfigError
from agentlab.core.runs import atomic_write_json, atomic_write_text, read_json, runs_root

CHUNK = 1 << 20


def workspace_root(configured: str | Path | None, resumed: Path | None = None) -> Path:
    """The workspace's folder, absolute, as the run keeps it in config.yaml: a resume from another folder, or the
    run's results.json read from anywhere, names the same place (a relative default split one run's workspace in
    two: the experiments before a resume from elsewhere in one, their checkpoints left behind).

    ``configured``: the config's ``workspace`` (relative to the current folder); when unset, the default
    ``runs/compress/workspace`` of the current folder (``runs_root``). ``resumed``: the run folder a resume continues.
    A run started before the workspace was kept absolute saved none; its default lay in the runs root the run folder
    was made in (``runs/compress/workspace`` beside ``runs/compress/<run>``, or beside an ``--out runs/<run>``): that
    one when it is there, whatever the current
    folder, else the current folder's default."""
    if configured is not None:
        return absolute_path(Path(configured))
    if resumed is not None:  # runs/compress/<run> (the default layout) or runs/<run> (--out): runs/compress/workspace
        parent = absolute_path(resumed).parent
        besides = [parent / "workspace"] if parent.name == "compress" else []
        for beside in [*besides, parent / "compress" / "workspace"]:
            if beside.is_dir():
                return beside
    return absolute_path(runs_root() / "compress" / "workspace")


def check_workspace(root: str | Path) -> None:
    """``ConfigError`` naming ``workspace`` when the folder cannot be made or written: it, or a folder above it, is
    a file, or the nearest existing folder is not writable. Nothing is created (a dry run checks it too); before,
    ``workspace=bin.gguf`` failed as "File exists" (exit 1) after the run folder was made."""
    path = absolute_path(Path(root))
    for above in (path, *path.parents):
        if above.is_dir():
            if not os.access(above, os.W_OK | os.X_OK):
                raise ConfigError(f"workspace: {path}: cannot write in {above}",
                                  hint="give a workspace folder you can write to (--set workspace=DIR)")
            return
        if above.exists() or above.is_symlink():
            where = f"{path} is" if above == path else f"{path}: {above} is"
            raise ConfigError(f"workspace: {where} a file, not a folder",
                              hint="give a folder for the workspace (--set workspace=DIR), or leave it out for "
                              "runs/compress/workspace")


class Workspace:
    def __init__(self, root: str | Path):
        self.root = absolute_path(Path(root))  # results.json names it absolute, readable from any folder

    # ------------------------------------------------------------------ model identity

    def model_hash(self, path: str | Path) -> str:
        """sha256 over the model's files (a file, or every file of a folder by relative path), remembered."""
        path = Path(path).resolve()
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        stamp: list[list[Any]] = [
            [str(p.relative_to(path) if path.is_dir() else p.name), p.stat().st_size, p.stat().st_mtime_ns]
            for p in files]
        known_file = self.root / "hashes.json"
        known = read_json(known_file) if known_file.is_file() else {}
        entry = known.get(str(path))
        if entry and entry.get("stamp") == stamp:
            return str(entry["sha256"])
        digest = hashlib.sha256()
        for p, (name, _, _) in zip(files, stamp, strict=True):
            digest.update(name.encode() + b"\0")
            with open(p, "rb") as handle:
                while block := handle.read(CHUNK):
                    digest.update(block)
        value = digest.hexdigest()
        known[str(path)] = {"stamp": stamp, "sha256": value}
        atomic_write_json(known_file, known)
        return value

    @staticmethod
    def key(model_hash: str, technique: dict[str, Any]) -> str:
        """The technique config hashed as canonical JSON: sorted keys, no spaces, floats as repr."""
        canonical = json.dumps(technique, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(f"{model_hash}\n{canonical}".encode()).hexdigest()[:24]

    # ------------------------------------------------------------------ experiments

    def get(self, key: str) -> dict[str, Any] | None:
        """The finished experiment ``key``; None when there is none, or it is damaged or not finished (run again)."""
        try:
            data = read_json(self.root / "experiments" / f"{key}.json")
        except Exception:  # missing, or damaged: run again, not trusted
            return None
        return data if isinstance(data, dict) and data.get("state", "done") == "done" else None

    def put(self, key: str, record: dict[str, Any]) -> None:
        atomic_write_json(self.root / "experiments" / f"{key}.json", {"key": key, **record})

    def experiments(self, model_hash: str | None = None) -> list[dict[str, Any]]:
        """Every finished experiment (``get``), of ``model_hash``'s model when given, in key order."""
        folder = self.root / "experiments"
        records = [self.get(p.stem) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
        return [r for r in records if r is not None and (model_hash is None or r.get("model_hash") == model_hash)]

    # ------------------------------------------------------------------ checkpoints

    def checkpoint_dir(self, key: str) -> Path:
        return self.root / "checkpoints" / key

    def checkpoint(self, key: str) -> Path | None:
        """The kept model of experiment ``key`` (its file), None when none is kept."""
        for name in ("model.gguf", "model.pt"):
            path = self.checkpoint_dir(key) / name
            if path.is_file():
                return path
        return None

    def drop_checkpoint(self, key: str) -> None:
        shutil.rmtree(self.checkpoint_dir(key), ignore_errors=True)

    def checkpoints_mb(self) -> dict[str, tuple[float, float]]:
        """key -> (MB on disk, last use as a modification time) of every kept checkpoint."""
        folder = self.root / "checkpoints"
        out = {}
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            files = [f for f in path.rglob("*") if f.is_file()]
            out[path.name] = (sum(f.stat().st_size for f in files) / 2**20,
                              max((f.stat().st_mtime for f in files), default=0.0))
        return out

    def keep_checkpoints(self, front: set[str], others: set[str], cap_mb: float) -> list[str]:
        """Drop the checkpoints of ``others`` (experiments off the front), then the least recently used until the
        rest fits in ``cap_mb`` (those off ``front`` first); returns the keys dropped."""
        dropped = [k for k in sorted(others - front) if self.checkpoint_dir(k).exists()]
        for key in dropped:
            self.drop_checkpoint(key)
        kept = self.checkpoints_mb()
        total = sum(mb for mb, _ in kept.values())
        for key in sorted(kept, key=lambda k: (k in front, kept[k][1])):
            if total <= cap_mb:
                break
            self.drop_checkpoint(key)
            total -= kept[key][0]
            dropped.append(key)
        return dropped

    # ------------------------------------------------------------------ knowledge notes

    def notes(self, model_hash: str) -> str:
        path = self.root / "notes" / f"{model_hash[:16]}.md"
        return path.read_text(encoding="utf-8") if path.is_file() else ""

    def add_note(self, model_hash: str, text: str) -> None:
        """Append ``text`` (a note: lines without a blank one, its first the heading ``### RUN: goal``) to the
        model's notes; a note with the same heading (the same run finished again: a resume of a finished run) is
        replaced, not repeated (the planners are shown the notes' end, which copies had filled)."""
        path = self.root / "notes" / f"{model_hash[:16]}.md"
        head = text.strip().split("\n", 1)[0]
        kept = [block for block in self.notes(model_hash).split("\n\n")
                if block.strip() and block.strip().split("\n", 1)[0] != head]
        atomic_write_text(path, "".join(block.strip() + "\n\n" for block in [*kept, text]))
