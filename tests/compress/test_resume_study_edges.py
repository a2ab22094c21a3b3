"""`compress --resume` at the edges of its study: a study file of 0 bytes is refused before anything opens it (the
folder left as it was), and a resume stopped after it changed the study keeps its record in run.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("codecarbon")
pytest.importorskip("optuna")

from agentlab.cli import main  # noqa: E402

SMALL = ["measure.context=32", "measure.stride=16", "measure.max_eval_tokens=160", "measure.prompt_tokens=8",
         "measure.new_tokens=4", "measure.repeats=1", "task_questions=3"]


@pytest.fixture(scope="module")
def finished(tiny_model: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run: the base model and one experiment."""
    folder = tmp_path_factory.mktemp("compress-done")
    sets = [x for s in SMALL for x in ("--set", s)]
    assert main(["compress", "--model", str(tiny_model["hf"]), "--objective", "maximize speedup with <2% accuracy "
                 "loss", "--max-iterations", "1", "--planner", "random", "--set", f"workspace={folder / 'ws'}",
                 *sets, "--out", str(folder / "R")]) == 0
    return folder / "R"


def files(run: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != "run.lock"}


def test_a_resume_whose_study_file_is_empty_is_refused_before_anything_opens_it(
        in_tmp: Path, finished: Path, capsys: Any) -> None:
    """A 0-byte study.db: the resume made a new Optuna database of it, then refused (exit 2), the folder changed."""
    run = in_tmp / "R"
    shutil.copytree(finished, run)
    (run / "study.db").write_bytes(b"")
    before = files(run)
    capsys.readouterr()
    assert main(["compress", "--resume", str(run), "--max-iterations", "2"]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'study.db'}: the study of {run} is empty (0 bytes) (it holds its base model and 1 finished" in err
    assert "Traceback" not in err
    assert files(run) == before and (run / "study.db").stat().st_size == 0


def test_a_resume_stopped_after_it_changed_the_study_keeps_its_record(
        in_tmp: Path, finished: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C once the resume had added a trial to the study but before its first event: run.json was put back as
    it was (no `resumed` entry), as for a resume that did nothing."""
    import optuna

    from agentlab.compress.run import CompressObjective

    run = in_tmp / "R"
    shutil.copytree(finished, run)
    trials = len(optuna.load_study(study_name="compress", storage=f"sqlite:///{run / 'study.db'}").trials)

    def stopped(*a: Any, **k: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(CompressObjective, "run", stopped)
    assert main(["compress", "--resume", str(run), "--max-iterations", "2"]) != 0
    assert len(optuna.load_study(study_name="compress", storage=f"sqlite:///{run / 'study.db'}").trials) > trials
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "interrupted"
    assert [r["previous_status"] for r in info["resumed"]] == ["completed"]
