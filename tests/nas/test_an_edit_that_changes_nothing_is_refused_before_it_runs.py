"""An edit whose new text is its old text (or edits that undo each other) changes nothing: it ran as a budget trial
with an empty change.diff. It is refused before running, as the other invalid edits are: the agent is told why, a
model step spent, no trial."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_code_agent import config, edit, project

from agentlab.nas import run_nas_optimization
from agentlab.nas.code_change import Change, ChangeError, CodeRules, Edit, check
from agentlab.testing.agents import ScriptAgent, scripted_llm


def test_an_edit_that_changes_nothing_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "train.py").write_text("lr = 0.1\nprint(lr)\n")
    rules = CodeRules(["train.py"])
    with pytest.raises(ChangeError, match=r"edit 0 \(train.py\): the new text is the old text, so it changes nothing"):
        check(Change((Edit("train.py", "lr = 0.1", "lr = 0.1"),)), root, rules)
    with pytest.raises(ChangeError, match="the edits together change nothing"):
        check(Change((Edit("train.py", "lr = 0.1", "lr = 0.2"), Edit("train.py", "lr = 0.2", "lr = 0.1"))), root,
              rules)


def test_a_change_of_nothing_costs_a_model_step_not_a_trial(tmp_path: Path) -> None:
    folder = project(tmp_path)
    cfg = config(folder)
    cfg["search"]["tune_every"] = 0
    model = ScriptAgent([edit("OFFSET = 3.0", "OFFSET = 3.0", "the same"),
                         edit("OFFSET = 3.0", "OFFSET = 0.5", "less")])
    results = run_nas_optimization(max_iterations=2, config=cfg, out=tmp_path / "run", llm=scripted_llm(model))
    assert [(r["trial"], r["reason"]) for r in results["code_changes"]] == [("run_0001", "less")]
    told = [str(m["content"]) for step in model.seen for m in step if m.get("role") == "tool"]
    assert any("not run: edit 0 (train.py): the new text is the old text" in t for t in told)
