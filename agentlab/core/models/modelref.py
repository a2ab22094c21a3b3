"""What a model reference names on this machine: a built-in name, a GGUF file, a transformers folder, or an HF hub id
already in the local hub cache. One resolver for providers, models files and ``--base-model``.

Order: an existing path wins (relative to ``base``, e.g. a provider's ``models_directory``), then a built-in name
(:mod:`agentlab.core.models.builtin`), then a hub id (``org/name``) found in the local hub cache, then the upstream hub
id of a built-in model (``HuggingFaceTB/SmolLM2-135M-Instruct``: the built-in, which adapters trained on it name by
that id). Nothing is downloaded: a hub id that is not cached is an error that says how to fetch it once. The error
for a reference that names nothing lists every reading that was tried.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from agentlab.core.errors import InputError
from agentlab.core.models.builtin import BUILTIN_MODELS, builtin_for_upstream, builtin_path, close_builtin, is_builtin

Kind = Literal["builtin", "gguf", "hf", "hub"]
Format = Literal["gguf", "hf"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_FORMAT_NAMES = {"gguf": "a GGUF file", "hf": "a transformers model folder"}


class ModelNotFound(InputError):
    """A model reference names no model here, or one of a format the caller cannot use: exit 2."""


@dataclass(frozen=True)
class ModelRef:
    """A resolved model reference: ``path`` is the GGUF file or the transformers folder, absolute."""

    ref: str  # as given
    kind: Kind
    path: Path

    @property
    def format(self) -> Format:
        return "gguf" if self.path.is_file() else "hf"

    def describe(self) -> str:
        what = {"builtin": "built-in model", "gguf": "GGUF file", "hf": "transformers folder",
                "hub": "hub cache snapshot"}[self.kind]
        return f"{self.ref} ({what} {self.path})"


def is_gguf_file(path: Path) -> bool:
    """A file whose first bytes are GGUF's magic (the suffix alone is not trusted; a missing file is not one)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"GGUF"
    except OSError:
        return False


def resolve_model(ref: str, *, base: str | Path = ".", formats: Collection[Format] = ("gguf", "hf"),
                  hub: bool = True, user: str = "this") -> ModelRef:
    """Resolve ``ref`` (see the module docstring). ``formats``: what the caller can load (``user`` names the caller
    in the error, e.g. "the llama_cpp provider"). Raises ``ModelNotFound`` (listing what was tried) or, for a
    built-in name whose package is absent, ``MissingPackage`` naming the extra. An empty ``ref`` is refused as such
    (read as a path it was the current folder: "... or a .gguf file:  has no config.json")."""
    if not ref:
        raise ModelNotFound("the model name is empty", hint=_hint(ref, formats))
    found, tried = _find(ref, base, hub)
    if found is None:
        hint = _hint(ref, formats)
        near = close_builtin(ref) if not _as_path(ref, base).exists() else None
        if near is not None:  # `smollm2-135M`: the built-in name, misspelled
            hint = f"did you mean {near}? Or " + hint
        elif _path_like(ref) and not _as_path(ref, base).exists():  # the likely fix is the path
            hint = "check the path (no file or folder is there); or " + hint
        elif "hf" in formats and _as_path(ref, base).is_dir():  # a folder here: the model meant, not a hub id
            hint = (f"point at a save_pretrained folder (config.json and the weights) or a .gguf file: {ref} has no "
                    "config.json")
        elif _as_path(ref, base).is_file():  # `bad/empty.yaml`: a file here, not a hub id to download
            hint = f"{ref} is a file but no model: " + _hint(ref, formats, download=False)
        path = _as_path(ref, base)
        if path.is_file():  # there, but no model: not "not found" (tried[0] said it, after "a GGUF file")
            what = (f"is not a GGUF file ({path.absolute()} does not start with GGUF's magic bytes)"
                    if "gguf" in formats else f"is a file ({path.absolute()}), not a model folder")
            raise ModelNotFound(f"model '{ref}' {what}; also tried {'; '.join(tried[1:])}", hint=hint)
        raise ModelNotFound(f"model '{ref}' not found; tried {'; '.join(tried)}", hint=hint)
    if found.format not in formats:
        wanted = " or ".join(_FORMAT_NAMES[f] for f in formats)
        raise ModelNotFound(f"model '{ref}' is {_FORMAT_NAMES[found.format]} ({found.path}), but {user} needs "
                            f"{wanted}", hint=_hint(ref, formats))
    return found


def _find(ref: str, base: str | Path, hub: bool) -> tuple[ModelRef | None, list[str]]:
    tried: list[str] = []
    path = _as_path(ref, base)
    if path.is_file():
        if is_gguf_file(path):
            return ModelRef(ref, "gguf", path.resolve()), tried
        tried.append(f"a GGUF file ({path.absolute()} is a file but not GGUF)")
    elif path.is_dir():
        if (path / "config.json").is_file():
            return ModelRef(ref, "hf", path.resolve()), tried
        tried.append(f"a transformers model folder ({path.absolute()} has no config.json)")
    else:
        tried.append(f"a GGUF file or model folder ({path.absolute()}: not found)")
    if is_builtin(ref):
        return ModelRef(ref, "builtin", builtin_path(ref)), tried  # MissingPackage when not installed
    tried.append(f"a built-in name (known: {', '.join(BUILTIN_MODELS)})")
    if hub and _HUB_ID.match(ref) and not ref.endswith(".gguf"):
        folder, why = _hub_snapshot(ref)
        if folder is not None:
            return ModelRef(ref, "hub", folder), tried
        tried.append(f"an HF hub id ({why}; nothing is downloaded at run time)")
    builtin = builtin_for_upstream(ref)
    if builtin is not None:
        return ModelRef(ref, "builtin", builtin_path(builtin)), tried  # MissingPackage when not installed
    return None, tried


def _as_path(ref: str, base: str | Path) -> Path:
    path = Path(ref).expanduser()
    return path if path.is_absolute() else Path(base).expanduser() / path


def _hub_snapshot(repo_id: str) -> tuple[Path | None, str]:
    """The cached snapshot folder of ``repo_id`` (local files only), or None and why not."""
    try:
        from huggingface_hub import constants, snapshot_download
    except ImportError:
        return None, "huggingface_hub is not installed"
    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # LocalEntryNotFoundError, a malformed id, an unreadable cache: not cached, for us
        return None, f"not in the local hub cache {constants.HF_HUB_CACHE}"
    if not (folder / "config.json").is_file():
        return None, f"the cached snapshot {folder} has no config.json"
    return folder.resolve(), ""


def _path_like(ref: str) -> bool:
    """Whether ``ref`` can only be a path: a .gguf name, absolute, ``./``, ``~``, or more than one ``/`` (a hub id
    is ``org/name``, a built-in name has none)."""
    return (ref.endswith(".gguf") or ref.startswith((".", "~")) or Path(ref).is_absolute()
            or ref.replace("\\", "/").count("/") > 1)


def _hint(ref: str, formats: Collection[Format], download: bool = True) -> str:
    """What to give instead of ``ref``, for the formats the caller loads; ``download``: whether ``ref`` may be a hub
    id to fetch (not a file that is there)."""
    hint = f"use a built-in model ({', '.join(BUILTIN_MODELS)})"
    if "gguf" in formats:
        hint += ", a .gguf file"
    if "hf" in formats:
        hint += ", a save_pretrained folder"
        if download and _HUB_ID.match(ref) and not _path_like(ref):  # models/x.gguf is a file, never a hub id
            hint += f", or fetch the hub model once with `hf download {ref}`"
    return hint + "; make a tiny test model with `agentlab models make-tiny DIR`"
