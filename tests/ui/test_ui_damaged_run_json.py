"""A run.json that cannot be read as a run's record, in every way the list meets it, is `damaged` (the status the docs
and the Status filter name) and its problem is said as what it is; its Report tab says no report.md, not that one is
coming."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ui_helpers import run_folder

from agentlab.ui import runs


@pytest.mark.parametrize(("fields", "said"), [
    ({"command": 5, "status": ["x"]}, "command is 5, not a string; status is ['x'], not a string"),
    ({"status": None}, "no status"), ({"status": 7}, "status is 7, not a string"), ({"status": ""}, "status is empty"),
    ({"status": "  "}, "status is empty"), ({"status": 0}, "status is 0, not a string")])
def test_a_run_json_without_a_status_it_can_read_is_damaged(tmp_path: Path, fields: dict, said: str) -> None:
    """{"command": 5, "status": ["x"]} was status `unknown`: named nowhere in the docs, and the Status filter's
    `damaged` left it out."""
    root = tmp_path / "runs"
    path = run_folder(root, "nas", "20260102-100000-x")
    info = {k: v for k, v in json.loads((path / "run.json").read_text()).items() if k != "status"}
    (path / "run.json").write_text(json.dumps({**info, **fields}))
    (row,) = runs.list_runs(root)
    assert row.status == runs.DAMAGED
    assert row.problems["run.json"] == f"{path / 'run.json'}: {said}"
    assert runs.filter_runs([row], statuses=[runs.DAMAGED]) == [row]


def test_a_run_json_missing_its_status_is_damaged(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    path = run_folder(root, "nas", "20260102-100000-x")
    (path / "run.json").write_text(json.dumps({"command": "nas"}))
    (row,) = runs.list_runs(root)
    assert (row.status, row.problems["run.json"]) == (runs.DAMAGED, f"{path / 'run.json'}: no status")


def test_a_run_json_that_is_a_folder_is_said_to_be_no_file(tmp_path: Path) -> None:
    """It said "no run.json (not a run folder, or its start was cut short)": there is one, a folder."""
    root = tmp_path / "runs"
    path = root / "nas" / "20260102-100000-x"
    (path / "run.json").mkdir(parents=True)
    (row,) = runs.list_runs(root)
    assert row.status == runs.DAMAGED
    assert row.problems["run.json"] == f"{path / 'run.json'}: not a file (a folder), so the run cannot be read"
    assert runs.no_run_json(path) == row.problems["run.json"]  # a ?run= link to it says the same


def test_a_damaged_runs_report_tab_says_no_report_not_yet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It said "no report.md yet (the command writes it when it finishes)": no command will."""
    pytest.importorskip("streamlit")
    from agentlab.ui import render

    root = tmp_path / "runs"
    path = run_folder(root, "nas", "20260102-100000-x")
    (path / "run.json").write_text("{")
    (row,) = runs.list_runs(root)
    said: list[str] = []
    monkeypatch.setattr(render.st, "caption", lambda text, *a, **k: said.append(text))
    render._report(row)
    assert said == ["no report.md (the run folder is damaged: see the warning above)"]
