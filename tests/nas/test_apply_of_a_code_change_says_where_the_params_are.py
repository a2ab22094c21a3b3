"""`agentlab nas apply RUN` of a search whose best trial runs on a kept code change, its params passed on the command
line (no objective.config): it wrote the code and said nothing of the params, which live in best/command.txt alone;
now it says where they are. A search with a config file written back says nothing more."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_code_agent import config, edit, project

from agentlab.cli import main
from agentlab.nas import run_nas_optimization
from agentlab.testing.agents import ScriptAgent, scripted_llm


def test_apply_of_a_kept_change_says_where_the_best_params_are(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    folder = project(tmp_path)
    out = tmp_path / "run"
    cfg = config(folder)
    cfg["search"]["tune_every"] = 0
    run_nas_optimization(max_iterations=2, config=cfg, out=out,
                         llm=scripted_llm(ScriptAgent([edit("OFFSET = 3.0", "OFFSET = 0.5", "smaller")])))
    capsys.readouterr()
    assert main(["nas", "apply", str(out)]) == 0
    said = " ".join(capsys.readouterr().err.split())
    assert "train.py: written (from" in said and "OFFSET = 0.5" in (folder / "train.py").read_text()
    assert "not written: the best trial's params" in said
    assert "command.txt does" in said and "params.json" in said
