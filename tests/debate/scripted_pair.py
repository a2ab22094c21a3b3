"""Two scripted debate agents (a, b) that always answer 11 at 80%, for the CLI tests of tests/debate: ``scripted``
writes their routing file into a folder, ``TWO`` is the CLI's options for them."""

from __future__ import annotations

from pathlib import Path

SCRIPTED = """providers:
  s: {kind: scripted, replies: ["Answer: 11\\\\nConfidence: 80%"]}
models:
  a: {provider: s, model: a}
  b: {provider: s, model: b}
"""
TWO = ["--llm", "llm.yaml", "--set", "agents=[{model: a}, {model: b}]"]


def scripted(folder: Path) -> None:
    (folder / "llm.yaml").write_text(SCRIPTED)


def snapshot(folder: Path) -> dict[str, bytes]:
    """The files directly in a run folder, by name."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
