"""Ctrl-C / SIGTERM around `agentlab serve`'s serving: a signal kept while the gateway starts is said at once, and
a second one while the results are written (after uvicorn took the first) stops at once (it was swallowed)."""

from __future__ import annotations

import importlib
import json
import signal
from pathlib import Path

import pytest

SCRIPTED = {"providers": {"canned": {"kind": "scripted", "replies": ["hi"]}},
            "models": {"m": {"provider": "canned", "model": "m"}}, "routes": {"default": {"primary": ["m"]}}}
serve_run = importlib.import_module("agentlab.serve.run")  # the module: agentlab.serve.run is also the function


def _serve(in_tmp: Path) -> int:
    from agentlab.cli import main

    (in_tmp / "llm.yaml").write_text(json.dumps(SCRIPTED))
    return main(["serve", "--llm", "llm.yaml", "--port", "0", "--out", "run"])


def test_a_signal_kept_while_starting_is_said(in_tmp: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture) -> None:
    """Nothing was said until the gateway was up, which may take a model's loading."""
    metrics = serve_run.GatewayMetrics

    def starting() -> object:
        signal.raise_signal(signal.SIGTERM)
        return metrics()

    monkeypatch.setattr(serve_run, "GatewayMetrics", starting)
    assert _serve(in_tmp) == 130
    err = capsys.readouterr().err
    assert "stopping as soon as the gateway is up; Ctrl-C again to stop now" in err
    assert err.index("stopping as soon as") < err.index("stopped (SIGTERM): 0 requests")
    assert (in_tmp / "run" / "report.md").is_file()


def test_a_second_signal_while_the_results_are_written_stops_at_once(in_tmp: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture) -> None:
    """The first came while serving (uvicorn's handlers took it): a second during the slow cleanup was kept as a
    first, silently, and the cleanup went on."""
    describe, render = serve_run.Gateway.describe, serve_run.render

    def serving(self: object) -> str:  # said once the gateway is up: uvicorn's handlers take this one
        signal.raise_signal(signal.SIGTERM)
        return describe(self)  # type: ignore[arg-type]

    def writing(results: dict) -> str:  # after serving, results.json saved, report.md not yet
        signal.raise_signal(signal.SIGTERM)
        return render(results)

    monkeypatch.setattr(serve_run.Gateway, "describe", serving)
    monkeypatch.setattr(serve_run, "render", writing)
    assert _serve(in_tmp) == 130
    capsys.readouterr()
    files = {p.name for p in (in_tmp / "run").iterdir()}
    assert "results.json" in files and "report.md" not in files  # stopped at once, in the cleanup
    assert json.loads((in_tmp / "run" / "results.json").read_text())["stopped_by"] == "SIGTERM"
    info = json.loads((in_tmp / "run" / "run.json").read_text())
    assert info["status"] == "interrupted" and info["error"] == "interrupted (SIGTERM)", info
