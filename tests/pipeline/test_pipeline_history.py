"""`pipeline history` and `show` on what is really on disk: readable at 80 columns, and never a traceback over a
session file that is not UTF-8, not JSON, or JSON of the wrong shape (history marks it and exits 0; show names it on
one line and exits 2)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pipeline_helpers import write_pipeline, write_routed_models, write_scripted_llm
from rich.cells import cell_len

from agentlab.cli import main
from agentlab.cli.common import console
from agentlab.testing.server import Reply, ScriptedServer

DAMAGED = "the session folder is damaged"  # how show's hint for a damaged session file opens
QUESTION = "What is the capital of France? Please answer in one word."
ANSWER = "Paris is the capital of France, and it has been for a long time."


def cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_and_hint(err: str) -> tuple[str, str]:
    """The error line (one line) and the hint (its words, as rich wrapped them) that an exit-2 refusal printed."""
    error, _, hint = err.partition("\nhint: ")
    assert "\n" not in error.strip(), err
    return error.strip(), " ".join(hint.split())


@pytest.fixture
def sessions(in_tmp: Path, capsys: pytest.CaptureFixture) -> list[str]:
    """Two sessions with default ids (the second a rerun of the first) and one with an --out name: their ids."""
    write_routed_models(in_tmp, ["a", "b"])
    write_scripted_llm(in_tmp, ["a", "b"], replies=[ANSWER])
    write_pipeline(in_tmp, [{"name": "ask", "model": "a"},
                            {"name": "vote", "type": "multi", "models": ["a", "b"], "aggregation": "vote"}],
                   name="pipeline")
    base = ["--models", "models.yaml", "--pipeline", "pipeline.yaml", "--llm", "llm.yaml", "--json"]
    code, out, err = cli(capsys, "pipeline", "run", *base, "--input", QUESTION)
    assert code == 0, err
    first = json.loads(out)["run_id"]
    code, out, err = cli(capsys, "pipeline", "rerun", first, "--from", "vote", "--json")
    assert code == 0, err
    second = json.loads(out)["run_id"]
    code, out, err = cli(capsys, "pipeline", "run", *base, "--input", "hi", "--out", "runs/pipeline/mine")
    assert code == 0, err
    return [first, second, "mine"]


def test_history_is_readable_at_80_columns(sessions: list[str], capsys: pytest.CaptureFixture,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "_width", 80)
    first, second, mine = sessions
    assert len(first) == 24  # <YYYYmmdd-HHMMSS>-pipeline: as long as a default id gets
    code, _, err = cli(capsys, "pipeline", "history")
    assert code == 0
    lines = err.splitlines()
    assert all(cell_len(line) <= 80 for line in lines[1:]), err  # the title, a long path, may wrap as it likes
    rows = {name: next(line for line in lines if f"│{name} " in line) for name in sessions}
    for name in (first, second):
        assert QUESTION[:15] in rows[name] and ANSWER[:15] in rows[name], err  # a useful prefix of both
    assert ANSWER[:15] in rows[mine] and "│ hi " in rows[mine]
    assert f"↳ {first}" in err  # the rerun's parent, whole
    assert "completed" in rows[first]

    code, _, err = cli(capsys, "pipeline", "history", "--tree")
    flat = " ".join(line.strip("│└├─ ") for line in err.splitlines())
    assert code == 0 and all(cell_len(line) <= 80 for line in err.splitlines()[1:])
    assert f"{QUESTION} -> {ANSWER[:40]}" in flat  # wrapped under the branch, not cut off at the edge


def test_history_shows_ids_whole_even_when_narrow(sessions: list[str], capsys: pytest.CaptureFixture,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "_width", 72)
    code, _, err = cli(capsys, "pipeline", "history")
    assert code == 0 and all(f"│{name} " in err for name in sessions)


BAD = {  # file -> (content, words of the one-line message)
    "run.json": (b"\xff\xfe{}", "not UTF-8"),
    "session.json": (b'{"input": 5}', "input: Input should be a valid string"),
    "results.json": (b"{not json", "invalid JSON"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_history_marks_an_unreadable_session_file_and_show_names_it(name: str, sessions: list[str], in_tmp: Path,
                                                                      capsys: pytest.CaptureFixture,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "_width", 120)
    first = sessions[0]
    bad = in_tmp / "runs" / "pipeline" / first / name
    content, says = BAD[name]
    bad.write_bytes(content)
    for args in ([], ["--tree"]):
        code, _, err = cli(capsys, "pipeline", "history", *args)
        assert code == 0 and "Traceback" not in err
        assert f"? {name}" in err and f"unreadable: {bad}" in err and says in err
        assert all(s in err for s in sessions[1:])  # the others as before
    code, out, _ = cli(capsys, "pipeline", "history", "--json")
    listed = {s["id"]: s for s in json.loads(out)}
    assert code == 0 and list(listed[first]["problems"]) == [name] and says in listed[first]["problems"][name]
    assert listed[sessions[1]]["problems"] == {}
    for args in ([], ["--json"]):
        code, out, err = cli(capsys, "pipeline", "show", first, *args)
        assert code == 2 and out == ""
        error, hint = error_and_hint(err)  # the file and the reason on one line, then what to do
        assert error.startswith(f"error: {bad}") and says in error and hint.startswith(DAMAGED), err


@pytest.mark.parametrize(("content", "says"), [
    (b"\x00\x01", "NUL bytes"),
    (b"[]", "expected a JSON object, got list"),
    (b'{"index": 1}', "stage: missing"),
    (None, "outputs.0: expected a JSON object"),
    (None, "seconds: Input should be a valid number"),
])
def test_show_and_rerun_of_a_session_with_a_broken_step_file(content: bytes | None, says: str, sessions: list[str],
                                                             in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    first = sessions[0]
    step = in_tmp / "runs" / "pipeline" / first / "steps" / "01-ask.json"
    if content is None:  # right JSON, one field of the wrong type
        record = json.loads(step.read_text())
        if "outputs" in says:
            record["outputs"] = ["just text"]
        else:
            record["seconds"] = "fast"
        content = json.dumps(record).encode()
    step.write_bytes(content)
    code, out, err = cli(capsys, "pipeline", "show", first)
    error, hint = error_and_hint(err)
    assert code == 2 and out == "" and error.startswith(f"error: {step}") and says in error, err
    assert hint.startswith(f"{DAMAGED}: run stage 'ask' and those after it again with `agentlab pipeline rerun "
                           f"{first} --from ask`"), err
    code, _, err = cli(capsys, "pipeline", "rerun", first, "--from", "vote")
    assert code == 2 and says in err and "Traceback" not in err
    assert cli(capsys, "pipeline", "history")[0] == 0
    # a rerun from the broken stage itself reuses nothing of it: its step file is not read (it was refused)
    code, _, err = cli(capsys, "pipeline", "rerun", first, "--from", "ask")
    assert code == 0 and says not in err, err


@pytest.mark.parametrize("name", ["config.yaml", "models.yaml"])
def test_rerun_of_a_session_missing_a_config_names_it(name: str, sessions: list[str], in_tmp: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    """It said `pipeline.yaml: config file not found` (a file no session has) with a hint about `config examples`."""
    missing = in_tmp / "runs" / "pipeline" / sessions[0] / name
    missing.unlink()
    code, out, err = cli(capsys, "pipeline", "rerun", sessions[0])
    assert code == 2 and out == "", err
    first, hint = " ".join(err.split()).split(" hint: ")
    assert first == f"error: {missing}: missing: the session folder is incomplete or damaged"
    assert "pipeline.yaml" not in err and "config examples" not in hint


def test_show_of_a_failed_session_says_why_and_how_to_continue(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """It showed no error, printed `(none: the session did not finish)` on stdout and exited 0 (so `show f >
    answer.txt` wrote that as the answer); --json had no failed_stage."""
    with ScriptedServer() as srv:
        srv.default("x", Reply(status=500))
        (in_tmp / "llm.yaml").write_text(yaml.safe_dump({
            "providers": {"http": {"kind": "openai", "base_url": srv.base_url}},
            "models": {"deadm": {"provider": "http", "model": "x", "stream": False}}, "retries": 0}))
        write_routed_models(in_tmp, ["deadm"])
        code, _, _ = cli(capsys, "pipeline", "run", "--models", "models.yaml", "--llm", "llm.yaml", "--stage",
                         "a=deadm", "-i", "hi", "--out", "runs/pipeline/f")
    assert code == 1
    code, out, err = cli(capsys, "pipeline", "show", "f")
    flat = " ".join(err.split())
    assert code == 1 and out == "", err
    assert "failed: stage 'a' could not be served: model 'deadm': server_error" in flat
    # a routed model's failure is its server's or routing config's; no stage before it was kept
    assert "in your routing config, then `agentlab pipeline rerun f --from a --llm FILE`" in flat
    assert "steps before it are kept" not in flat and "models file" not in flat and "final answer" not in flat
    assert "--set base_pipeline.stages.0.fallbacks=[MODEL]" in flat  # a's place in the file, as run said it
    code, out, _ = cli(capsys, "pipeline", "show", "f", "--json")
    data = json.loads(out)
    assert code == 0 and data["final"] is None and data["continue_from"] == "a"  # the session shown, as it is
    assert data["failed_stage"]["name"] == "a" and [a["outcome"] for a in data["failed_stage"]["serving"]] == [
        "server_error"]


def stopped_at_check(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """A two-stage pipeline (ask, check) on scripted routed models whose run is interrupted (Ctrl-C) at `check`;
    returns the run module and its real ``_run_stage``, to put back."""
    run_module = importlib.import_module("agentlab.pipeline.run")  # the module: the package exports run() as `run`
    write_routed_models(in_tmp, ["a", "b"])
    write_scripted_llm(in_tmp, ["a", "b"], replies=[ANSWER])
    write_pipeline(in_tmp, [{"name": "ask", "model": "a"}, {"name": "check", "model": "b"}])
    real = run_module._run_stage

    async def stop_at_check(server: Any, stage: Any, *args: Any) -> Any:
        if stage.name == "check":
            raise KeyboardInterrupt
        return await real(server, stage, *args)

    monkeypatch.setattr(run_module, "_run_stage", stop_at_check)
    return run_module, real


def test_ctrl_c_names_the_session_and_the_stage_to_continue_from(in_tmp: Path, capsys: pytest.CaptureFixture,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """It said `rerun SESSION --from STAGE`; show of the interrupted session says the same, exit 1."""
    run_module, real = stopped_at_check(in_tmp, monkeypatch)
    base = ["--models", "models.yaml", "--llm", "llm.yaml"]
    code, _, err = cli(capsys, "pipeline", "run", *base, "--pipeline", "pipeline.yaml", "-i", "hi", "--out",
                       "runs/pipeline/c")
    flat = " ".join(err.split())
    assert code == 130 and "interrupted at stage 'check' of session c" in flat, err
    assert "continue with `agentlab pipeline rerun c --from check`" in flat and "SESSION" not in flat
    code, out, err = cli(capsys, "pipeline", "show", "c")
    flat = " ".join(err.split())
    assert code == 1 and out == "" and "no final answer: the session was interrupted at stage 'check'" in flat
    assert "continue with `agentlab pipeline rerun c --from check`" in flat

    monkeypatch.setattr(run_module, "_run_stage", real)  # the advice, followed
    code, out, err = cli(capsys, "pipeline", "rerun", "c", "--from", "check", "--json")
    assert code == 0 and [s["reused"] for s in json.loads(out)["stages"]] == [True, False], err

    async def stop_at_once(server: Any, stage: Any, *args: Any) -> Any:
        raise KeyboardInterrupt

    # No stage finished: nothing "kept" to go on from. It said only `error: interrupted` / `hint: nothing to
    # continue: run the command again`, naming no stage or session; run again, the --out folder was taken.
    monkeypatch.setattr(run_module, "_run_stage", stop_at_once)
    code, _, err = cli(capsys, "pipeline", "run", *base, "--pipeline", "pipeline.yaml", "-i", "hi", "--out",
                       "runs/pipeline/z")
    flat = " ".join(err.split())
    assert code == 130 and "error: interrupted at stage 'ask' of session z" in flat, err
    said = flat[flat.index("hint: "):]
    assert said.startswith("hint: no stage finished: run it again (`agentlab pipeline rerun z` reads its saved"), err
    assert "stages are kept" not in flat
    code, out, err = cli(capsys, "pipeline", "show", "z")
    flat = " ".join(err.split())
    assert code == 1 and said in flat  # show says the same, word for word
    monkeypatch.setattr(run_module, "_run_stage", real)  # the advice, followed
    code, out, err = cli(capsys, "pipeline", "rerun", "z", "--json")
    assert code == 0 and [s["reused"] for s in json.loads(out)["stages"]] == [False, False], err


def test_history_marks_a_session_with_an_unreadable_step_file_damaged(sessions: list[str], in_tmp: Path,
                                                                      capsys: pytest.CaptureFixture,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """It listed the session `completed` while `show` refused it (exit 2, naming the step file)."""
    monkeypatch.setattr(console, "_width", 120)
    step = in_tmp / "runs" / "pipeline" / sessions[0] / "steps" / "02-vote.json"
    step.write_bytes(b"\xff")
    for args in ([], ["--tree"]):
        code, _, err = cli(capsys, "pipeline", "history", *args)
        row = next(line for line in err.splitlines() if sessions[0] in line and "↳" not in line)
        assert code == 0 and "damaged" in row and "completed" not in row, err
        assert f"unreadable: {step}:1: the session file is not UTF-8" in " ".join(err.split())
    code, out, _ = cli(capsys, "pipeline", "history", "--json")
    listed = {s["id"]: s for s in json.loads(out)}
    assert list(listed[sessions[0]]["problems"]) == ["steps/02-vote.json"] and listed[sessions[1]]["problems"] == {}
    # one status for the table and --json (it was `completed` in --json)
    assert listed[sessions[0]]["status"] == "damaged" and listed[sessions[1]]["status"] == "completed"
    assert cli(capsys, "pipeline", "show", sessions[0])[0] == 2


def test_an_invalid_json_step_file_is_named_with_the_whole_reason(sessions: list[str], in_tmp: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    """It said `steps/02-vote.json:1: invalid JSON: Invalid control character at` (json's message, whose place is
    left to the exception's text), in `history` and `show`."""
    step = in_tmp / "runs" / "pipeline" / sessions[0] / "steps" / "02-vote.json"
    step.write_text('{"stage": "vo\tte"}')
    says = f"{step}:1: invalid JSON: Invalid control character at column 14"
    code, _, err = cli(capsys, "pipeline", "history")
    assert code == 0 and f"unreadable: {says}" in " ".join(err.split()), err
    code, _, err = cli(capsys, "pipeline", "show", sessions[0])
    assert code == 2 and error_and_hint(err)[0] == f"error: {says}", err
    step.write_text('{"stage": }')
    code, _, err = cli(capsys, "pipeline", "show", sessions[0])
    assert code == 2 and error_and_hint(err)[0] == f"error: {step}:1: invalid JSON: Expecting value (column 11)", err


def test_history_json_has_the_whole_input_and_final_answer(sessions: list[str], capsys: pytest.CaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """--json cut the final answer to 60 characters with `…`, as the table does."""
    monkeypatch.setattr(console, "_width", 200)
    assert len(ANSWER) > 60
    code, out, _ = cli(capsys, "pipeline", "history", "--json")
    listed = {s["id"]: s for s in json.loads(out)}
    assert code == 0 and (listed[sessions[0]]["input"], listed[sessions[0]]["final"]) == (QUESTION, ANSWER)
    code, _, err = cli(capsys, "pipeline", "history")  # the table still cuts, to one line
    assert code == 0 and f"{ANSWER[:59]}…" in err and ANSWER not in err


def test_hints_name_a_session_outside_runs_pipeline_by_its_path(in_tmp: Path, capsys: pytest.CaptureFixture,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """From another folder, `show /x/runs/pipeline/c` advised `rerun c --from check`, which fails there (no session
    'c' under runs/pipeline); so did a failed `run --out` to a folder outside runs/pipeline."""
    run_module, real = stopped_at_check(in_tmp, monkeypatch)
    base = ["--models", "models.yaml", "--llm", "llm.yaml", "--pipeline", "pipeline.yaml", "-i", "hi"]
    assert cli(capsys, "pipeline", "run", *base, "--out", "runs/pipeline/c")[0] == 130
    code, _, err = cli(capsys, "pipeline", "run", *base, "--out", "elsewhere/d")
    assert code == 130 and "continue with `agentlab pipeline rerun elsewhere/d --from check`" in " ".join(err.split())
    monkeypatch.setattr(run_module, "_run_stage", real)
    code, _, err = cli(capsys, "pipeline", "show", "c")  # under runs/pipeline here: by its name, as before
    assert code == 1 and "`agentlab pipeline rerun c --from check`" in " ".join(err.split()), err

    other = in_tmp / "other"
    other.mkdir()
    monkeypatch.chdir(other)
    monkeypatch.setenv("AGENTLAB_RUNS", str(other / "runs"))
    session = in_tmp / "runs" / "pipeline" / "c"
    code, _, err = cli(capsys, "pipeline", "show", str(session))
    flat = " ".join(err.split())
    assert code == 1 and f"continue with `agentlab pipeline rerun {session} --from check`" in flat, err
    code, out, err = cli(capsys, "pipeline", "rerun", str(session), "--from", "check", "--json")  # the advice works
    assert code == 0 and json.loads(out)["parent_run_id"] == "c", err

    # a stage no model served: the failed run's hint and show's
    with ScriptedServer() as srv:
        srv.default("x", Reply(status=500))
        (other / "llm.yaml").write_text(yaml.safe_dump({
            "providers": {"http": {"kind": "openai", "base_url": srv.base_url}},
            "models": {"deadm": {"provider": "http", "model": "x", "stream": False}}, "retries": 0}))
        write_routed_models(other, ["deadm"])
        code, _, err = cli(capsys, "pipeline", "run", "--models", "models.yaml", "--llm", "llm.yaml", "--stage",
                           "a=deadm", "-i", "hi", "--out", "out/f")
    assert code == 1 and "then `agentlab pipeline rerun out/f --from a --llm FILE`" in " ".join(err.split()), err
    code, _, err = cli(capsys, "pipeline", "show", "out/f")
    assert code == 1 and "then `agentlab pipeline rerun out/f --from a --llm FILE`" in " ".join(err.split()), err


@pytest.mark.parametrize("damage", ["remove", "steps_a_file"])
def test_show_and_history_name_a_missing_step_file(damage: str, sessions: list[str], in_tmp: Path,
                                                   capsys: pytest.CaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A removed step file (or steps/ replaced by a file) was shown as a completed session without that stage, exit
    0, and listed `completed`."""
    monkeypatch.setattr(console, "_width", 120)
    folder = in_tmp / "runs" / "pipeline" / sessions[0]
    if damage == "remove":
        (folder / "steps" / "02-vote.json").unlink()
    else:
        for step in (folder / "steps").iterdir():
            step.unlink()
        (folder / "steps").rmdir()
        (folder / "steps").write_text("not a folder")
    missing = folder / "steps" / ("02-vote.json" if damage == "remove" else "01-ask.json")
    stage = "vote" if damage == "remove" else "ask"
    says = f"{missing}: missing (results.json lists stage '{stage}'): the session folder is incomplete or damaged"
    for args in ([], ["--json"]):
        code, out, err = cli(capsys, "pipeline", "show", sessions[0], *args)
        error, hint = error_and_hint(err)
        assert code == 2 and out == "" and " ".join(error.split()) == f"error: {says}", err
        assert hint.startswith(f"{DAMAGED}: run stage '{stage}' and those after it again"), err
    code, _, err = cli(capsys, "pipeline", "history")
    row = next(line for line in err.splitlines() if sessions[0] in line and "↳" not in line)
    assert code == 0 and "damaged" in row and f"unreadable: {says}" in " ".join(err.split()), err
    code, out, _ = cli(capsys, "pipeline", "history", "--json")
    listed = {s["id"]: s for s in json.loads(out)}
    assert listed[sessions[0]]["status"] == "damaged" and listed[sessions[1]]["status"] == "completed"


def test_show_of_a_session_without_run_json_says_it_is_damaged(sessions: list[str], in_tmp: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    """It said there is no such session."""
    folder = in_tmp / "runs" / "pipeline" / "mine"
    (folder / "run.json").unlink()
    says = f"error: {folder}: not a readable session (run.json missing): the folder is incomplete or damaged"
    for ref in ("mine", str(folder)):
        code, out, err = cli(capsys, "pipeline", "show", ref)
        error, hint = error_and_hint(err)
        assert code == 2 and out == "" and " ".join(error.split()) == says, err
        assert hint == "start a new session with `agentlab pipeline run`", err


def test_show_of_a_session_without_session_json_names_it(sessions: list[str], in_tmp: Path,
                                                          capsys: pytest.CaptureFixture,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """It was shown as completed with a blank input, exit 0."""
    monkeypatch.setattr(console, "_width", 120)
    missing = in_tmp / "runs" / "pipeline" / "mine" / "session.json"
    missing.unlink()
    says = f"{missing}: missing: the session folder is incomplete or damaged"
    code, out, err = cli(capsys, "pipeline", "show", "mine")
    error, hint = error_and_hint(err)
    assert code == 2 and out == "" and " ".join(error.split()) == f"error: {says}", err
    assert hint == f"{DAMAGED} (a file was changed, cut short or removed): start a new session with `agentlab " \
        "pipeline run`", err
    code, _, err = cli(capsys, "pipeline", "history")
    assert code == 0 and "? session.json" in err and f"unreadable: {says}" in " ".join(err.split()), err
    code, _, err = cli(capsys, "pipeline", "rerun", "mine")  # the same words
    assert code == 2 and " ".join(err.split()).startswith(f"error: {says}"), err


def _only_run_json(folder: Path, status: str) -> None:
    for item in sorted(folder.rglob("*"), reverse=True):
        if item.name != "run.json" or item.parent != folder:
            item.rmdir() if item.is_dir() else item.unlink()
    info = json.loads((folder / "run.json").read_text())
    (folder / "run.json").write_text(json.dumps({**info, "status": status, "error": "not enough memory"}))


def test_a_session_stopped_before_session_json_is_listed_and_shown_as_it_was(sessions: list[str], in_tmp: Path,
                                                                             capsys: pytest.CaptureFixture,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A run refused at the memory check by 0.1.0 (or stopped before session.json) has run.json alone: it was listed
    `? session.json` and `show` called it damaged (exit 2)."""
    monkeypatch.setattr(console, "_width", 120)
    _only_run_json(in_tmp / "runs" / "pipeline" / "mine", "failed")
    code, out, _ = cli(capsys, "pipeline", "history", "--json")
    listed = {s["id"]: s for s in json.loads(out)}
    assert code == 0 and listed["mine"]["status"] == "failed" and listed["mine"]["problems"] == {}
    code, _, err = cli(capsys, "pipeline", "history")
    assert code == 0 and "? session.json" not in err and "unreadable" not in err, err
    code, _, err = cli(capsys, "pipeline", "show", "mine")
    assert code == 1 and "(failed)" in err and "not enough memory" in err and "damaged" not in err, err  # as run
    code, out, err = cli(capsys, "pipeline", "show", "mine", "--json")
    assert code == 0 and json.loads(out)["status"] == "failed", err


@pytest.mark.parametrize("status", ["failed", "interrupted"])
def test_show_of_a_session_that_cannot_be_rerun_says_what_is_missing(sessions: list[str], in_tmp: Path, status: str,
                                                                     capsys: pytest.CaptureFixture,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """With run.json alone, `show` suggested `pipeline rerun mine`, which then failed: config.yaml missing."""
    monkeypatch.setattr(console, "_width", 200)
    _only_run_json(in_tmp / "runs" / "pipeline" / "mine", status)
    code, out, err = cli(capsys, "pipeline", "show", "mine")
    said = " ".join(err.split())
    assert code == 1 and out == "" and "pipeline rerun" not in said, err
    assert "hint: it cannot be rerun: its folder has no config.yaml or models.yaml (the session stopped before " \
        "saving them); start a new session with `agentlab pipeline run`" in said, err
    code, _, err = cli(capsys, "pipeline", "rerun", "mine")  # what the old hint led to
    assert code == 2 and "config.yaml: missing" in err, err


def test_show_names_the_one_saved_file_a_rerun_lacks(sessions: list[str], in_tmp: Path,
                                                     capsys: pytest.CaptureFixture,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "_width", 200)
    folder = in_tmp / "runs" / "pipeline" / "mine"
    (folder / "results.json").unlink()  # no final answer: the session stopped
    (folder / "steps" / "02-vote.json").unlink()
    info = json.loads((folder / "run.json").read_text())
    (folder / "run.json").write_text(json.dumps({**info, "status": "interrupted"}))
    code, _, err = cli(capsys, "pipeline", "show", "mine")
    assert code == 1 and "`agentlab pipeline rerun mine --from vote`" in " ".join(err.split()), err  # it can be
    (folder / "models.yaml").unlink()
    code, _, err = cli(capsys, "pipeline", "show", "mine")
    said = " ".join(err.split())
    assert code == 1 and "hint: it cannot be rerun: its folder has no models.yaml (the session stopped before " \
        "saving it)" in said and "pipeline rerun" not in said, err


def test_ctrl_c_suggests_no_rerun_of_a_session_without_its_models_yaml(sessions: list[str], in_tmp: Path) -> None:
    from agentlab.cli.pipeline import _interrupted

    folder = in_tmp / "runs" / "pipeline" / "mine"
    (folder / "steps" / "02-vote.json").unlink()
    assert "rerun mine --from vote" in str(getattr(_interrupted(folder), "hint", ""))
    (folder / "models.yaml").unlink()
    error = _interrupted(folder)
    assert "rerun" not in str(getattr(error, "hint", "")) and getattr(error, "exit_code", None) == 130


def test_a_completed_session_without_session_json_is_damaged_in_history_json(sessions: list[str], in_tmp: Path,
                                                                             capsys: pytest.CaptureFixture) -> None:
    """`show` refuses it (exit 2); `history --json` said `completed`."""
    folder = in_tmp / "runs" / "pipeline"
    (folder / "mine" / "session.json").unlink()
    _only_run_json(folder / sessions[0], "completed")  # completed: session.json is due even without results.json
    code, out, _ = cli(capsys, "pipeline", "history", "--json")
    listed = {s["id"]: s for s in json.loads(out)}
    assert code == 0 and listed["mine"]["status"] == listed[sessions[0]]["status"] == "damaged"
    assert listed[sessions[1]]["status"] == "completed"
    for ref in ("mine", sessions[0]):
        code, out, err = cli(capsys, "pipeline", "show", ref)
        assert code == 2 and "session.json: missing" in " ".join(err.split()), err


def test_show_of_a_folder_that_is_no_session_says_there_is_no_such_session(sessions: list[str], in_tmp: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    """Any folder was called a damaged session: `show models` beside a models/ folder, `show /tmp`."""
    (in_tmp / "models").mkdir()
    (in_tmp / "other" / "steps").mkdir(parents=True)  # a session elsewhere (--out) without its run.json
    for ref in ("models", str(in_tmp / "models"), str(in_tmp)):
        code, out, err = cli(capsys, "pipeline", "show", ref)
        assert code == 2 and out == "" and f"no pipeline session '{ref}'" in " ".join(err.split()), err
        assert "damaged" not in err, err
    code, _, err = cli(capsys, "pipeline", "show", "other")
    says = f"error: {Path('other')}: not a readable session (run.json missing): the folder is incomplete or damaged"
    assert code == 2 and " ".join(error_and_hint(err)[0].split()) == says, err


@pytest.mark.parametrize(("name", "content"), [
    ("session.json", b""), ("session.json", b"not json"), ("results.json", b"[]"), ("results.json", b'"Paris"'),
])
def test_history_says_damaged_whenever_show_refuses(name: str, content: bytes, sessions: list[str], in_tmp: Path,
                                                    capsys: pytest.CaptureFixture,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty or unreadable session.json, a results.json that is no JSON object: history said `completed` while
    `show` refused the session (exit 2)."""
    monkeypatch.setattr(console, "_width", 120)
    (in_tmp / "runs" / "pipeline" / "mine" / name).write_bytes(content)
    code, out, _ = cli(capsys, "pipeline", "history", "--json")
    listed = {s["id"]: s for s in json.loads(out)}
    assert code == 0 and listed["mine"]["status"] == "damaged" and list(listed["mine"]["problems"]) == [name]
    assert listed[sessions[0]]["status"] == listed[sessions[1]]["status"] == "completed"
    code, _, err = cli(capsys, "pipeline", "history")
    row = next(line for line in err.splitlines() if "│mine " in line)
    assert code == 0 and "damaged" in row and "completed" not in row, err
    code, out, err = cli(capsys, "pipeline", "show", "mine")
    assert code == 2 and out == "", err


def test_show_of_a_damaged_session_file_says_what_to_do(sessions: list[str], in_tmp: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    """`show` named the bad file and stopped there, with no `hint:` line."""
    folder = in_tmp / "runs" / "pipeline" / "mine"
    step = folder / "steps" / "02-vote.json"
    step.write_bytes(b"{cut")
    code, out, err = cli(capsys, "pipeline", "show", "mine")
    flat = " ".join(err.split())
    assert code == 2 and out == "" and flat.startswith(f"error: {step}:1: invalid JSON"), err
    hint = flat[flat.index(" hint: ") + 1:]
    assert hint == ("hint: the session folder is damaged: run stage 'vote' and those after it again with `agentlab "
                    "pipeline rerun mine --from vote`, or start a new session with `agentlab pipeline run`"), err
    code, out, err = cli(capsys, "pipeline", "rerun", "mine", "--from", "vote", "--json")  # the advice works
    assert code == 0 and json.loads(out)["parent_run_id"] == "mine", err
    step.unlink()  # missing, listed in results.json: the same advice
    code, _, err = cli(capsys, "pipeline", "show", "mine")
    assert code == 2 and "hint: the session folder is damaged: run stage 'vote'" in " ".join(err.split()), err
    (folder / "session.json").write_bytes(b"")  # no step file: a new session
    code, _, err = cli(capsys, "pipeline", "show", "mine")
    flat = " ".join(err.split())
    assert code == 2 and flat.startswith(f"error: {folder / 'session.json'}:1: invalid JSON"), err
    assert "hint: the session folder is damaged (a file was changed, cut short or removed): start a new session " \
        "with `agentlab pipeline run`" in flat and "rerun" not in flat, err


def test_the_same_run_again_after_ctrl_c_says_how_to_continue(in_tmp: Path, capsys: pytest.CaptureFixture,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The same `pipeline run ... --out` again after Ctrl-C said only `folder exists and is not empty` / `choose
    another --out`, not the rerun its interrupt line gave."""
    stopped_at_check(in_tmp, monkeypatch)
    run = ["pipeline", "run", "--models", "models.yaml", "--llm", "llm.yaml", "--pipeline", "pipeline.yaml", "-i",
           "hi", "--out", "runs/pipeline/int2"]
    code, _, err = cli(capsys, *run)
    rerun = "`agentlab pipeline rerun int2 --from check`"
    assert code == 130 and rerun in " ".join(err.split()), err
    code, out, err = cli(capsys, *run)
    flat = " ".join(err.split())
    assert code == 2 and out == "" and "error: --out runs/pipeline/int2: folder exists and is not empty" in flat, err
    assert f"hint: it holds session int2, which stopped without an answer: the finished stages are kept: continue " \
        f"with {rerun}; or choose another --out for a new session" in flat, err

    (in_tmp / "other").mkdir()  # any other folder: the hint as before
    (in_tmp / "other" / "notes.txt").write_text("x")
    code, _, err = cli(capsys, *run[:-1], "other")
    flat = " ".join(err.split())
    assert code == 2 and "hint: choose another --out" in flat and "rerun" not in flat, err


def test_rerun_of_a_running_session_warns_and_reuses_only_finished_stages(sessions: list[str], in_tmp: Path,
                                                                           capsys: pytest.CaptureFixture) -> None:
    """A rerun while the parent's owner process still ran was accepted without a word."""
    import fcntl
    import os

    folder = in_tmp / "runs" / "pipeline" / "mine"
    (folder / "results.json").unlink()
    (folder / "steps" / "02-vote.json").unlink()  # at stage vote now
    info = json.loads((folder / "run.json").read_text())
    (folder / "run.json").write_text(json.dumps({**info, "status": "running", "ended": None}))
    warning = "warning: session mine is still running: its outputs may not be final yet"
    code, _, err = cli(capsys, "pipeline", "rerun", "mine", "--from", "vote", "--json")
    assert code == 0 and warning not in " ".join(err.split()), err  # its owner is gone: interrupted, no warning
    fd = os.open(folder / "run.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the owner, alive
        code, out, err = cli(capsys, "pipeline", "rerun", "mine", "--from", "vote", "--json")
        assert code == 0 and warning in " ".join(err.split()), err
        assert [s["reused"] for s in json.loads(out)["stages"]] == [True, False]
        (folder / "steps" / "01-ask.json").unlink()  # at stage ask: its output is not final yet
        code, out, err = cli(capsys, "pipeline", "rerun", "mine", "--from", "vote")
        flat = " ".join(err.split())
        assert code == 2 and out == "", err
        assert "error: session mine is still running and has not finished stage(s) ask before --from vote: their " \
            "outputs are not final yet" in flat and "hint: wait for it to finish, or rerun from a stage it has " \
            "not finished (--from ask)" in flat, err
    finally:
        os.close(fd)


def test_rerun_says_what_it_runs_only_once_its_out_folder_is_free(sessions: list[str], in_tmp: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    """`rerun of ... from stage ...` was printed before the exit-2 refusal of a taken --out."""
    code, _, err = cli(capsys, "pipeline", "rerun", sessions[0], "--from", "vote", "--out", "runs/pipeline/mine")
    assert code == 2 and "rerun of" not in err and "folder exists and is not empty" in " ".join(err.split()), err
    code, _, err = cli(capsys, "pipeline", "rerun", sessions[0], "--from", "vote", "--out", "runs/pipeline/new")
    assert code == 0 and f"rerun of {sessions[0]} from stage 'vote' (reusing ask)" in " ".join(err.split()), err


def test_input_file_of_whitespace_and_rerun_input_help(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """A file of blanks was "the file is empty"; rerun's --input help did not say its default or when it is
    refused."""
    (in_tmp / "blank.txt").write_text("  \n\t\n")
    (in_tmp / "empty.txt").write_text("")
    for name, said in (("blank.txt", "holds only whitespace"), ("empty.txt", "is empty")):
        code, _, err = cli(capsys, "pipeline", "run", "--stage", "a=smollm2-135m", "--input-file", name)
        assert code == 2 and f"--input-file {name}: the file {said}" in " ".join(err.split()), err
    code, out, _ = cli(capsys, "pipeline", "rerun", "--help")
    flat = " ".join(out.replace("│", " ").split())
    assert code == 0 and "Default: the parent session's input; a different input is refused while a stage is " \
        "reused" in flat, out
