"""Bad input to `agentlab debate` stopped with one line and exit 2 before anything runs: a round count past the
bound, a task line with a key the task format has not, a difficulty make-task does not know; and `debate eval`
saying when it debates the configured visibility beside `eval.visibilities`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from agentlab.cli import main
from agentlab.core.debate.task import load_task, make_task, write_task
from agentlab.core.errors import InputError
from agentlab.debate.config import MAX_ROUNDS, DebateConfig
from agentlab.testing.server import Reply, ScriptedServer

REPO = Path(__file__).resolve().parents[2]
AGENTS = "agents=[{model: persona_a}, {model: persona_b}]"


def routed(in_tmp: Path, srv: ScriptedServer) -> None:
    (in_tmp / "llm.yaml").write_text(
        f"providers:\n  vllm: {{kind: openai, base_url: '{srv.base_url}'}}\nmodels:\n"
        + "".join(f"  persona_{x}: {{provider: vllm, model: persona_{x}}}\n" for x in "ab"))
    for x in "ab":
        srv.default(f"persona_{x}", Reply(text="2."))


def one_line(capsys: pytest.CaptureFixture) -> str:
    return " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize("command", [["debate", "--topic", "What is 3 times 4?"],
                                     ["debate", "eval", "--task", "task.jsonl"]])
@pytest.mark.parametrize("where", ["config", "option"])
def test_a_billion_rounds_is_refused_naming_rounds(command: list[str], where: str, in_tmp: Path, srv: ScriptedServer,
                                                   capsys: pytest.CaptureFixture) -> None:
    """Each round's prompt holds every earlier one, so a billion rounds is a mistake: refused before any call."""
    routed(in_tmp, srv)
    (in_tmp / "task.jsonl").write_text('{"question": "What is 1+1?", "answer": "2"}\n')
    (in_tmp / "d.yaml").write_text("rounds: 1000000000\n")
    given = ["-c", "d.yaml"] if where == "config" else ["--rounds", "1000000000"]
    assert main([*command, "--llm", "llm.yaml", "--set", AGENTS, "--rule", "last_round", *given]) == 2
    err = one_line(capsys)
    shown = "d.yaml:1: rounds:" if where == "config" else "--rounds 1000000000: rounds:"
    assert f"error: {shown} Input should be less than or equal to {MAX_ROUNDS}" in err, err
    assert err.count("error:") == 1 and "Traceback" not in err
    assert not (in_tmp / "runs").exists() and srv.count("persona_a") == 0


def test_rounds_is_bounded_and_the_bound_itself_is_accepted() -> None:
    """(Fails fast without the bound, where the CLI test above would start a billion-round debate.)"""
    with pytest.raises(ValidationError, match="rounds"):
        DebateConfig(rounds=MAX_ROUNDS + 1)
    assert DebateConfig(rounds=MAX_ROUNDS).debate_rounds == MAX_ROUNDS
    assert 10 <= MAX_ROUNDS <= 100  # room for any real debate, far below a runaway one


@pytest.mark.parametrize("line, says", [
    ('{"question": "1+1?", "answr": "2"}',
     '"answer" must be a number or non-empty text (there is "answr": did you mean "answer"?)'),
    ('{"questoin": "1+1?", "answer": "2"}',
     '"question" must be non-empty text (there is "questoin": did you mean "question"?)'),
])
def test_a_task_line_with_a_misspelt_field_says_which_key_it_was(line: str, says: str, tmp_path: Path) -> None:
    """A misspelt field read as a missing one, without the key that was there."""
    path = tmp_path / "task.jsonl"
    path.write_text('{"question": "2+2?", "answer": "4"}\n' + line + "\n")
    with pytest.raises(InputError) as caught:
        load_task(path)
    assert str(caught.value) == f"{path}:2: {says}"


def test_a_task_line_with_a_misspelt_field_exits_2_through_the_cli(in_tmp: Path, srv: ScriptedServer,
                                                                     capsys: pytest.CaptureFixture) -> None:
    routed(in_tmp, srv)
    (in_tmp / "task.jsonl").write_text('{"question": "1+1?", "answr": 2}\n')
    assert main(["debate", "eval", "--task", "task.jsonl", "--llm", "llm.yaml", "--set", AGENTS]) == 2
    err = one_line(capsys)
    assert 'error: task.jsonl:1: "answer" must be' in err and 'did you mean "answer"' in err, err
    assert "Traceback" not in err and not (in_tmp / "runs").exists() and srv.count("persona_a") == 0


def test_a_task_line_may_carry_keys_of_its_own(tmp_path: Path) -> None:
    """An id, a source, evolve's mixed tasks' "skill": a line's own metadata, read beside question and answer (the
    shipped mixed task was refused when every other key was)."""
    from agentlab.core.skills import mixed_file

    path = tmp_path / "task.jsonl"
    path.write_text('{"question": "1+1?", "answer": 2, "id": "q7", "skill": "arithmetic"}\n')
    assert [(q.question, q.answer) for q in load_task(path)] == [("1+1?", "2")]
    assert load_task(mixed_file("fitness"))


def test_shipped_and_made_task_files_still_load(tmp_path: Path) -> None:
    """make-task's files, and the bundled lm-eval tasks (their multiple-choice `choices` and `gold` read beside)."""
    for difficulty in ("easy", "medium", "hard"):
        path = tmp_path / f"{difficulty}.jsonl"
        write_task(path, make_task(5, difficulty))
        assert len(load_task(path)) == 5
    bundled = sorted((REPO / "agentlab" / "core" / "harness" / "bundled").glob("*.jsonl"))
    assert bundled
    for path in bundled:
        first = json.loads(path.read_text().splitlines()[0])
        question = load_task(path)[0]
        assert (question.question, question.answer) == (first["question"], str(first["answer"]))


def test_make_task_difficulty_is_a_choice(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["debate", "make-task", "--difficulty", "insane", "--out", "t.jsonl"]) == 2
    err = one_line(capsys)
    assert "error: Invalid value for '--difficulty': 'insane' is not one of 'easy', 'medium', 'hard'." in err, err
    assert "hint: usage: agentlab debate make-task" in err and not (in_tmp / "t.jsonl").exists()
    assert main(["debate", "make-task", "--help"]) == 0
    assert "<easy|medium|hard>" in capsys.readouterr().out
    reference = (REPO / "docs" / "reference" / "cli.md").read_text()
    assert "`--difficulty <easy|medium|hard>`" in reference


@pytest.mark.parametrize("listed, says", [(["answer"], True), (["answer", "full"], False)])
def test_eval_says_when_it_adds_the_configured_visibility(listed: list[str], says: bool, in_tmp: Path,
                                                          srv: ScriptedServer,
                                                          capsys: pytest.CaptureFixture) -> None:
    """`debate eval` debates under eval.visibilities and the configured visibility (full) when not listed: the
    default row is its; the console says so, and only then."""
    routed(in_tmp, srv)
    (in_tmp / "task.jsonl").write_text('{"question": "What is 1+1?", "answer": "2"}\n')
    assert main(["debate", "eval", "--task", "task.jsonl", "--llm", "llm.yaml", "--set", AGENTS, "--rounds", "1",
                 "--rule", "last_round", "--set", f"eval.visibilities=[{', '.join(listed)}]"]) == 0
    err = one_line(capsys)
    assert ("visibility full debated too" in err and "not in eval.visibilities (answer)" in err) == says, err
    (run,) = (in_tmp / "runs" / "debate-eval").iterdir()
    results = json.loads((run / "results.json").read_text())
    assert sorted(results["visibilities"]) == ["answer", "full"]
    assert results["default"] == "rule last_round [full]"


def test_make_task_out_must_name_a_file(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """`--out ''` said "file '' is a directory" (``Path('')`` is the current folder): it is empty, as
    `eval tasks --export ''` says."""
    (in_tmp / "folder").mkdir()
    for out, says in (("", "'--out': empty; give a file path, e.g. --out task.jsonl"),
                      ("folder", "'--out': file 'folder' is a directory")):
        assert main(["debate", "make-task", "--n", "5", "--out", out]) == 2
        err = one_line(capsys)
        assert f"error: Invalid value for {says}" in err and "internal error" not in err, err
    assert sorted(p.name for p in in_tmp.iterdir()) == ["folder"]
    assert main(["debate", "make-task", "--n", "5", "--out", "t.jsonl"]) == 0
    assert len((in_tmp / "t.jsonl").read_text().splitlines()) == 5
