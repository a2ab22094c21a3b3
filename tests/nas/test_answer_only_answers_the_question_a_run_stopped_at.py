"""`--answer` answers the --approve question a run stopped at, the one the user saw, and nothing else: a resume of a
run that is not stopped at a question (killed before one, or finished) with --answer is refused (exit 2, nothing
run), not handed to whatever question comes first (an LLM code change approved unseen); a finished --approve run
resumed without a terminal says there is nothing left to run, not that --approve needs a terminal."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentlab.cli import main
from agentlab.core.agent import approval
from agentlab.testing.agents import ScriptAgent, scripted_llm

TRAIN = """\
import json, sys
p = json.load(open(sys.argv[1]))
OFFSET = 3.0
print(json.dumps({"loss": (p["x"] - 1) ** 2 + OFFSET}))
"""
CHANGE = ("edit_code", {"edits": [{"path": "train.py", "old": "OFFSET = 3.0", "new": "OFFSET = 0.5"}],
                        "reason": "change B"})


def scripted_cli(root: Path, monkeypatch: pytest.MonkeyPatch, calls: list[tuple[str, dict[str, Any]]],
                 **search: Any) -> list[ScriptAgent]:
    """A project (train.py editable, nas.yaml) in ``root``, the CLI's --llm FILE.script.json read as a scripted model
    playing ``calls``; the models made, one an invocation."""
    import importlib

    llm_config = importlib.import_module("agentlab.core.llm.config")
    original, made = llm_config.load_llm_config, []

    def load(path: Any = None, overrides: Any = None) -> Any:
        if path is not None and str(path).endswith(".script.json"):
            made.append(ScriptAgent(list(calls)))
            return scripted_llm(made[-1])
        return original(path, overrides)

    for name in ("agentlab.core.llm.config", "agentlab.nas.run", "agentlab.nas.own_code",
                 "agentlab.core.search.session"):  # each module's own name of it
        monkeypatch.setattr(importlib.import_module(name), "load_llm_config", load)
    monkeypatch.setenv("AGENTLAB_RUNS", str(root / "runs"))
    monkeypatch.chdir(root)
    (root / "train.py").write_text(TRAIN)
    (root / "agent.script.json").write_text("[]")
    (root / "nas.yaml").write_text(yaml.safe_dump({
        "objective": {"command": f"{sys.executable} train.py {{params}}", "metric": "loss", "params": {"x": 4.0},
                      "editable": ["train.py"]},
        "search": {"planner": "agent", "pruner": "none", "seed": 0, "space": {"x": {"low": -5.0, "high": 5.0}},
                   **search}}))
    return made


@pytest.fixture()
def scripted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project whose agent proposes a code change."""
    scripted_cli(tmp_path, monkeypatch, [CHANGE])
    return tmp_path


def finished_base_trial(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An --approve run of one trial, the base config, which ran unasked: finished, no question waiting."""
    monkeypatch.setenv(approval.APPROVE_UI_ENV, "1")  # no terminal: the UI would answer
    assert main(["nas", "-c", "nas.yaml", "--llm", "agent.script.json", "--approve", "-n", "1", "--out", "run"]) == 0
    monkeypatch.delenv(approval.APPROVE_UI_ENV)
    run = root / "run"
    assert approval.pending(run) is None and json.loads((run / "run.json").read_text())["status"] == "completed"
    return run


def test_an_answer_to_a_run_not_stopped_at_a_question_is_refused(scripted: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run = finished_base_trial(scripted, monkeypatch)
    capsys.readouterr()
    before = (run / "run.json").read_text()
    code = main(["nas", "--resume", "run", "--llm", "agent.script.json", "-n", "3", "--answer", "yes"])
    said = capsys.readouterr()
    text = " ".join((said.out + said.err).split())
    assert code == 2, text
    assert "is not stopped at an --approve question" in text and "without --answer, in a terminal" in text
    assert "approved" not in text and "change B" not in text and "Traceback" not in text
    assert (run / "run.json").read_text() == before  # nothing ran, nothing written
    assert not (run / "trials" / "run_0001").exists()


def test_a_finished_approve_run_resumed_without_a_terminal_has_nothing_to_run(
        scripted: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    run = finished_base_trial(scripted, monkeypatch)
    capsys.readouterr()
    # stdin is no terminal here; --approve is the run's, not typed
    assert main(["nas", "--resume", "run", "--llm", "agent.script.json"]) == 0
    said = capsys.readouterr()
    text = " ".join((said.out + said.err).split())
    assert "nothing left to run" in text and "needs a terminal" not in text
    code = main(["nas", "--resume", "run", "--llm", "agent.script.json", "--answer", "yes"])
    said = capsys.readouterr()
    text = " ".join((said.out + said.err).split())
    assert code == 2 and "nothing left to run" in text and "leave out --answer" in text, text
    assert not (run / "trials" / "run_0001").exists()
