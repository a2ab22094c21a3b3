"""Shared fixtures: every test runs in its own folder so run folders and .env files never leak between tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """cwd = a fresh temp folder; runs/ goes there too."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AGENTLAB_RUNS", str(tmp_path / "runs"))
    return tmp_path


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTLAB_DEBUG", raising=False)
    os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny Llama-style chat model for the whole session: {"hf": folder, "gguf": folder/model.gguf (f32)}.

    Read-only by convention: tests that change files copy them first.
    """
    from agentlab.core.train.tiny import make_tiny

    return make_tiny(tmp_path_factory.mktemp("tiny-model"), seed=0)
