"""A routing config header read from a variable not named like a secret (``X-Token: ${MY_SECRET_HDR}``) was saved
in the session's llm.yaml as ``***``, and `pipeline rerun SESSION` refused it (exit 2); it is kept as
``${MY_SECRET_HDR}``, so the rerun reads the variable again."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agentlab.cli import main
from agentlab.testing.server import Reply, ScriptedServer


def test_a_rerun_reads_a_header_from_a_variable_of_any_name(in_tmp: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("MY_SECRET_HDR", "hdr-value-123456")
    with ScriptedServer() as srv:
        srv.default("x", Reply(text="Paris."))
        (in_tmp / "llm.yaml").write_text(yaml.safe_dump({
            "providers": {"http": {"kind": "openai", "base_url": srv.base_url,
                                   "headers": {"X-Token": "${MY_SECRET_HDR}"}}},
            "models": {"remote": {"provider": "http", "model": "x"}}}))
        (in_tmp / "models.yaml").write_text("models: {r: {routed: remote}}\n")
        assert main(["pipeline", "run", "--models", "models.yaml", "--llm", "llm.yaml", "--stage", "a=r", "-i", "hi",
                     "--out", "runs/pipeline/s1"]) == 0
        saved = (in_tmp / "runs" / "pipeline" / "s1" / "llm.yaml").read_text()
        assert "X-Token: ${MY_SECRET_HDR}" in saved and "hdr-value-123456" not in saved
        capsys.readouterr()
        assert main(["pipeline", "rerun", "s1"]) == 0, capsys.readouterr().err
        assert len(srv.requests) == 2
