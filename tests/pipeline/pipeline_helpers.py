"""Pipeline test helpers (imported by the test modules of this folder): models files over placeholder files,
pipelines from stage dicts, scripted providers, a scripted routing config for CLI runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from agentlab.core.llm.providers.scripted import ScriptedProvider


def write_models(folder: Path, names: list[str], *, touch: bool = True, extra: str = "") -> Path:
    """models.yaml with one GGUF entry per name (files are placeholders unless a test copies a real one in)."""
    (folder / "models").mkdir(exist_ok=True)
    lines = ["models_directory: models", "models:"]
    for name in names:
        lines.append(f"  {name}:")
        lines.append(f"    file: {name}.gguf")
        if touch:
            (folder / "models" / f"{name}.gguf").write_bytes(b"GGUF placeholder")
    path = folder / "models.yaml"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def write_pipeline(folder: Path, stages: list[dict[str, Any]], name: str = "test") -> Path:
    path = folder / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"name": name, "base_pipeline": {"stages": stages}}, sort_keys=False))
    return path


def echo(name: str) -> Callable[..., str]:
    """A reply that names the model and repeats the last user message: outputs show what each model was sent."""
    return lambda model, messages, params: f"[{name}] {messages[-1]['content']}"


def scripted(names: list[str], reply: Callable[[str], Any] = echo, latency_s: float = 0.0
             ) -> dict[str, ScriptedProvider]:
    """Providers for local models by their provider name (``local:<model>``)."""
    return {f"local:{n}": ScriptedProvider(n, replies=[reply(n)], latency_s=latency_s) for n in names}


def write_scripted_llm(folder: Path, names: list[str], replies: list[str] | None = None) -> Path:
    """A routing config whose models (one scripted provider) stand in for HTTP models in CLI runs."""
    llm = {"providers": {"s": {"kind": "scripted", "replies": replies or ["Paris.", "paris", "London"]}},
           "models": {name: {"provider": "s", "model": f"scripted-{name}"} for name in names}}
    path = folder / "llm.yaml"
    path.write_text(yaml.safe_dump(llm))
    return path


def write_routed_models(folder: Path, names: list[str]) -> Path:
    path = folder / "models.yaml"
    path.write_text("models:\n" + "".join(f"  {n}: {{routed: {n}}}\n" for n in names))
    return path
