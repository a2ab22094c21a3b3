"""A task file's repeated questions: dropped before the split (a file of 20 copies of one line put that question in
the fitness, validation and test splits alike, and the report called the test split unseen), said once on stderr;
two copies with different answers refused, naming both lines; the "too few questions" check counts distinct ones;
and a run started before repeats were dropped resumes with the split it recorded. A generated task (easy, medium,
hard) draws distinct questions too, refusing splits larger than its space, and resumes likewise."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("optuna")

from evolve_config import write_config  # noqa: E402  (tests/evolve/evolve_config.py)

from agentlab.cli import main  # noqa: E402
from agentlab.core.errors import UsageError  # noqa: E402
from agentlab.evolve.config import EvolveConfig  # noqa: E402
from agentlab.evolve.run import split_task  # noqa: E402


def _task(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in rows))
    return path


def _cfg(file: Path, fitness: int = 2, validation: int = 1, test: int = 1) -> EvolveConfig:
    return EvolveConfig(task={"file": file, "fitness_questions": fitness, "validation_questions": validation,
                              "test_questions": test})


def test_repeats_are_dropped_so_no_split_holds_another_splits_question(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = [("What is 1+1?", "2")] * 3 + [(f"What is {i}+{i}?", str(2 * i)) for i in range(2, 6)]
    rows.insert(5, ("What is 1+1?", " 2. "))  # the same answer, as votes are compared
    file = _task(tmp_path / "t.jsonl", rows)
    with caplog.at_level(logging.WARNING, logger="agentlab.evolve.run"):
        splits = split_task(_cfg(file))
    asked = [q.question for split in splits for q in split]
    assert len(asked) == len(set(asked)) == 4, asked
    warned = [r.getMessage() for r in caplog.records]
    assert warned == [f"{file}: 3 repeated questions dropped (the first: line 2, a copy of line 1): each question "
                      "is in one split alone, asked once"], warned
    # a file without repeats is split as before: the same shuffle of the same rows
    plain = _task(tmp_path / "plain.jsonl", rows[3:5] + rows[6:])
    order = [q for q, _ in rows[3:5] + rows[6:]]
    random.Random(0).shuffle(order)
    assert [q.question for split in split_task(_cfg(plain)) for q in split] == order


def test_two_copies_with_different_answers_are_refused_naming_both_lines(tmp_path: Path) -> None:
    file = _task(tmp_path / "t.jsonl", [("What is 1+1?", "2"), ("What is 2+2?", "4"), ("What is 1+1?", "3"),
                                        ("What is 3+3?", "6"), ("What is 4+4?", "8")])
    with pytest.raises(UsageError) as caught:
        split_task(_cfg(file))
    assert caught.value.message == f'{file}:3: repeats the question of line 1 with another answer ("3"; line 1: "2")'


def test_too_few_questions_counts_distinct_ones(in_tmp: Path, tiny_model: dict[str, Path], seeds: dict[str, Path],
                                                capsys: Any) -> None:
    """The new user's file of 20 copies of one line ran, exit 0, every split the same question."""
    file = _task(in_tmp / "dup.jsonl", [("What is 1+1?", "2")] * 20)
    config = write_config(in_tmp, tiny_model, seeds, task={"generate": "mixed", "file": str(file)})
    assert main(["evolve", "run", "-c", str(config), "--out", str(in_tmp / "RUN")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == f"error: {file}: 1 distinct question (19 repeats dropped); the splits need 5 (3 fitness + 0 " \
        "validation + 2 test)", err
    assert err[-1].startswith("hint: ") and not (in_tmp / "RUN").exists()
    conflict = _task(in_tmp / "conflict.jsonl", [("What is 1+1?", "2"), ("What is 1+1?", "11")])
    config = write_config(in_tmp, tiny_model, seeds, task={"generate": "mixed", "file": str(conflict)})
    assert main(["evolve", "run", "-c", str(config), "--out", str(in_tmp / "RUN")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == f'error: {conflict}:2: repeats the question of line 1 with another answer ("11"; line 1: "2")'


def test_a_run_started_before_repeats_were_dropped_resumes_with_its_own_split(
        in_tmp: Path, tiny_model: dict[str, Path], seeds: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: Any) -> None:
    """Its split, recorded in the population store, holds repeats; the file, read again, has fewer distinct
    questions than the splits need: the resume scores with the recorded split, not a refusal or another split."""
    import importlib

    from agentlab.evolve.population import open_population

    evolve_run = importlib.import_module("agentlab.evolve.run")  # the module (the package's `run` is the function)

    file = _task(in_tmp / "dup.jsonl", [(f"What is {i}+{i}?", str(2 * i)) for i in range(3)] * 2)
    config = write_config(in_tmp, tiny_model, seeds, task={"generate": "mixed", "file": str(file)})
    with monkeypatch.context() as old:  # as agentlab split a task file before: every line, repeats too
        old.setattr(evolve_run, "distinct_questions", lambda path, questions: (questions, []))
        assert main(["evolve", "run", "-c", str(config), "--out", str(in_tmp / "RUN")]) == 0
    pop = open_population(None, in_tmp / "RUN", create=False)
    recorded = pop.attr("settings")["questions"], pop.attr("test")
    asked = [q["question"] for split in recorded for q in split]
    assert len(asked) == 5 and len(set(asked)) == 3  # the old split: repeats across fitness and test
    capsys.readouterr()
    assert main(["evolve", "run", "--resume", str(in_tmp / "RUN")]) == 0, capsys.readouterr().err
    assert "repeated" not in capsys.readouterr().err  # what the resume scores is not what it would drop
    pop = open_population(None, in_tmp / "RUN", create=False)
    assert (pop.attr("settings")["questions"], pop.attr("test")) == recorded


def test_a_generated_task_draws_distinct_questions_the_same_for_a_seed() -> None:
    """``make_task(162, "easy")`` repeats questions (135 distinct): about 18 of the 90 test questions were also in
    fitness or validation. The splits now hold the first 162 distinct ones of a longer draw, the same each time; a
    draw without repeats (hard) splits as before."""
    from agentlab.core.debate.task import as_questions, make_task

    for generate in ("easy", "medium", "hard"):
        cfg = EvolveConfig(task={"generate": generate})
        splits = split_task(cfg)
        asked = [q.question for split in splits for q in split]
        assert [len(split) for split in splits] == [36, 36, 90]
        assert len(set(asked)) == len(asked) == 162, generate
        assert split_task(cfg) == splits  # deterministic for a seed
        first = list(dict.fromkeys(row["question"] for row in make_task(2000, generate, 0)))[:162]
        assert asked == first  # make_task's order, its repeats skipped
    hard = EvolveConfig(task={"generate": "hard"})
    assert [q for split in split_task(hard) for q in split] == as_questions(make_task(162, "hard", 0))


def test_a_generated_task_with_too_few_distinct_questions_is_refused(
        in_tmp: Path, tiny_model: dict[str, Path], seeds: dict[str, Path], capsys: Any) -> None:
    """easy (a + b, each 0..20) has 441 distinct questions: 441 are split, 442 refused naming the setting."""
    cfg = EvolveConfig(task={"generate": "easy", "fitness_questions": 300, "validation_questions": 41,
                             "test_questions": 100})
    asked = [q.question for split in split_task(cfg) for q in split]
    assert len(set(asked)) == len(asked) == 441
    config = write_config(in_tmp, tiny_model, seeds, task={"fitness_questions": 300, "validation_questions": 42,
                                                           "test_questions": 100})
    assert main(["evolve", "run", "-c", str(config), "--out", str(in_tmp / "RUN")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "error: task.generate easy: 441 distinct questions; the splits need 442 (300 fitness + 42 " \
        "validation + 100 test)", err
    assert err[-1].startswith("hint: ") and not (in_tmp / "RUN").exists()


def test_a_generated_run_started_before_distinct_draws_resumes_with_its_own_split(
        in_tmp: Path, tiny_model: dict[str, Path], seeds: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: Any) -> None:
    """Seed 12's first 5 easy questions hold a repeat: a run split before the change recorded it across fitness and
    test; its resume scores that recorded split, not the distinct draw a new run gets."""
    import importlib

    from agentlab.core.debate.task import as_questions, make_task
    from agentlab.evolve.population import open_population

    evolve_run = importlib.import_module("agentlab.evolve.run")
    config = write_config(in_tmp, tiny_model, seeds, task={"seed": 12})
    with monkeypatch.context() as old:  # as agentlab drew a generated task before: make_task's rows, repeats too
        old.setattr(evolve_run, "generated_questions",
                    lambda t, need, resuming=False: as_questions(make_task(need, t.generate, t.seed)))
        assert main(["evolve", "run", "-c", str(config), "--out", str(in_tmp / "RUN")]) == 0
    pop = open_population(None, in_tmp / "RUN", create=False)
    recorded = pop.attr("settings")["questions"], pop.attr("test")
    asked = [q["question"] for split in recorded for q in split]
    assert len(asked) == 5 and len(set(asked)) == 4  # the old split: a repeat across the splits
    capsys.readouterr()
    assert main(["evolve", "run", "--resume", str(in_tmp / "RUN")]) == 0, capsys.readouterr().err
    pop = open_population(None, in_tmp / "RUN", create=False)
    assert (pop.attr("settings")["questions"], pop.attr("test")) == recorded
