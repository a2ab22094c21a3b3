"""The hint of a stage no model served: a routed model that cannot be reached said "fix the model in your models
file, then `rerun ... --models FILE`" (its models file entry is only `routed: NAME`: the server or the routing
config is at fault), and "the steps before it are kept" was said of the first stage too."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import yaml
from pipeline_helpers import write_routed_models

from agentlab.cli import main
from agentlab.pipeline.serving import failed_hint


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_routed_model_points_at_its_server_and_the_routing_config(
        in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    (in_tmp / "llm.yaml").write_text(yaml.safe_dump({
        "providers": {"dead": {"kind": "openai", "base_url": f"http://127.0.0.1:{_closed_port()}/v1"}},
        "models": {"deadm": {"provider": "dead", "model": "foo"}}, "retries": 0, "timeout_s": 3}))
    write_routed_models(in_tmp, ["deadm"])
    assert main(["pipeline", "run", "--models", "models.yaml", "--llm", "llm.yaml", "--stage", "r=deadm", "-i", "hi",
                 "--out", "runs/pipeline/r9"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "model 'deadm': connection" in err
    [hint] = err.split("hint: ")[1:]
    assert hint.startswith("start the model's server, or fix its provider (base_url, key) or model in your routing "
                           "config, then `agentlab pipeline rerun r9 --from r --llm FILE`"), hint
    assert "kept" not in hint and "models file" not in hint  # r is the first stage
    assert json.loads((in_tmp / "runs" / "pipeline" / "r9" / "session.json").read_text())["failed_stage"]["routed"]
    assert main(["pipeline", "show", "r9"]) == 1  # show says the same
    assert f"hint: {hint}" in " ".join(capsys.readouterr().err.split())


def test_the_hint_says_the_steps_before_are_kept_only_when_there_are_some() -> None:
    assert failed_hint("s", "b", 1).startswith("the steps before it are kept: fix the model in your models file, "
                                               "then `agentlab pipeline rerun s --from b --models FILE`")
    assert failed_hint("s", "a", 0, kept=False).startswith("fix the model in your models file")
