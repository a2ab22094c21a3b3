"""Empty path values of `agentlab eval` (and every command's --out) are refused, not read as the current folder;
report.md says which folder each adapter row is (two folders of one name are rows a and a-2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentlab.cli import main


@pytest.mark.parametrize(("args", "said"), [
    (["eval", "--model", "M", "--include-path", ""], "Invalid value for '--include-path': empty; give a folder path"),
    (["eval", "--model", "M", "--adapter", ""], "Invalid value for '--adapter': empty; give a PEFT adapter folder"),
    (["eval", "--model", "M", "--out", ""], "Invalid value for '--out': empty; give a folder path"),
    (["nas", "--out", ""], "Invalid value for '--out': empty; give a folder path"),
    (["compress", "--out", ""], "Invalid value for '--out': empty; give a folder path"),
    (["eval", "--set", "include_path=['']"], "--set include_path=['']: include_path: an entry is empty"),
    (["eval", "--set", "adapters=['x', ' ']"], "adapters: an entry is empty"),
])
def test_an_empty_path_is_refused_not_read_as_the_current_folder(args: list[str], said: str, in_tmp: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    """`--include-path ''` read the current folder's YAMLs, `--out ''` wrote the run into it (exit 0), `--adapter ''`
    said `.: not a PEFT adapter folder`."""
    assert main(args) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert said in err and "Traceback" not in err
    assert list(in_tmp.iterdir()) == []  # no run folder, here or under runs/


def test_an_empty_entry_in_a_config_file_names_its_line(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    (in_tmp / "e.yaml").write_text("model: M\ninclude_path:\n  - ''\n")
    assert main(["eval", "-c", "e.yaml"]) == 2
    assert "e.yaml:2: include_path: an entry is empty" in " ".join(capsys.readouterr().err.split())


def test_report_names_the_folder_of_each_adapter_row() -> None:
    """Two adapter folders named tiny-a were rows tiny-a and tiny-a-2, and report.md never said which was which."""
    from agentlab.eval.config import EvalConfig
    from agentlab.eval.report import render_report
    from agentlab.eval.run import row_names

    cfg = EvalConfig.model_validate({"adapters": ["one/tiny-a", "two/tiny-a"]})
    score = [{"task": "t", "metric": "acc", "filter": "none", "value": 0.5, "stderr": 0.1}]
    results = {"rows": {"base": score, "tiny-a": score, "tiny-a-2": score}, "paired": {}, "applied": {},
               "probe": {}, "chat_template": False,  # the row -> folder map as run.py writes it to results.json
               "adapters": {row: str(path) for row, path in row_names(cfg.adapters).items()}}
    report = render_report(cfg, results, plot=False)
    assert "- tiny-a: `one/tiny-a`" in report and "- tiny-a-2: `two/tiny-a`" in report
    assert "`-2`" in report
    base_only = render_report(EvalConfig(), {**results, "rows": {"base": score}}, plot=False)
    assert "named after its folder" not in base_only
