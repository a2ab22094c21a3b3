"""Sessions through the CLI (scripted models behind `routed:` entries): run, rerun --from with --set into a child
session that leaves the parent byte-identical and does not call the reused stage's model, history --tree, show."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from pipeline_helpers import write_pipeline, write_routed_models, write_scripted_llm

from agentlab.cli import main
from agentlab.core.llm.providers.scripted import ScriptedProvider

STAGES = [
    {"name": "ask", "model": "a", "prompt": "Q: {{ input }}"},
    {"name": "vote", "type": "multi", "models": ["b", "c", "d"], "aggregation": "vote"},
    {"name": "final", "model": "b", "input_from": ["ask", "vote"], "params": {"temperature": 0.9}},
]


def cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def llm_calls(folder: Path) -> list[dict]:
    events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    return [e for e in events if e["kind"] == "llm_call"]


@pytest.fixture
def provider_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The provider model of every call that reaches a scripted provider in this process, counted at the provider
    itself (not from the event log the run writes), in the order the calls arrive."""
    calls: list[str] = []
    answer = ScriptedProvider._answer

    async def counting(self: ScriptedProvider, model: str, *args: object, **kwargs: object) -> str:
        calls.append(model)
        return await answer(self, model, *args, **kwargs)

    monkeypatch.setattr(ScriptedProvider, "_answer", counting)
    return calls


@pytest.fixture
def parent(in_tmp: Path, capsys: pytest.CaptureFixture, provider_calls: list[str]) -> dict:
    write_routed_models(in_tmp, ["a", "b", "c", "d"])
    write_scripted_llm(in_tmp, ["a", "b", "c", "d"])
    write_pipeline(in_tmp, STAGES, name="cap")
    code, out, err = cli(capsys, "pipeline", "run", "--models", "models.yaml", "--pipeline", "pipeline.yaml",
                         "--llm", "llm.yaml", "--input", "capital of France?", "--json")
    assert code == 0, err
    return json.loads(out)


def test_run_writes_a_session(parent: dict, in_tmp: Path) -> None:
    folder = in_tmp / "runs" / "pipeline" / parent["run_id"]
    assert parent["parent_run_id"] is None and parent["input"] == "capital of France?"
    assert [s["name"] for s in parent["stages"]] == ["ask", "vote", "final"]
    assert (folder / "final.txt").read_text().strip() == parent["final"]
    assert [c["model"] for c in llm_calls(folder)] == ["a", "b", "c", "d", "b"]
    assert json.loads((folder / "run.json").read_text())["status"] == "completed"
    assert (folder / "llm.yaml").is_file()  # routed models: the routing config is part of the snapshot


def test_rerun_child_reuses_earlier_stages_and_leaves_parent_untouched(parent: dict, in_tmp: Path,
                                                                       capsys: pytest.CaptureFixture,
                                                                       provider_calls: list[str]) -> None:
    parent_dir = in_tmp / "runs" / "pipeline" / parent["run_id"]
    before = files(parent_dir)
    assert Counter(provider_calls) == {"scripted-a": 1, "scripted-b": 2, "scripted-c": 1, "scripted-d": 1}
    provider_calls.clear()
    code, out, err = cli(capsys, "pipeline", "rerun", parent["run_id"], "--from", "vote",
                         "--set", "base_pipeline.stages.2.params.temperature=0.2", "--json")
    assert code == 0, err
    child = json.loads(out)
    assert files(parent_dir) == before  # byte-identical, nothing added or removed
    assert child["parent_run_id"] == parent["run_id"] and child["from_stage"] == "vote"
    assert child["run_id"] != parent["run_id"] and child["input"] == parent["input"]
    child_dir = in_tmp / "runs" / "pipeline" / child["run_id"]
    assert [c["model"] for c in llm_calls(child_dir)] == ["b", "c", "d", "b"]  # stage 1's model `a` not called
    # Counted at the provider: stage 1's model got no call at all in the rerun; stages 2 and 3 were called again.
    assert Counter(provider_calls) == {"scripted-b": 2, "scripted-c": 1, "scripted-d": 1}
    assert [s["reused"] for s in child["stages"]] == [True, False, False]
    ask = json.loads((child_dir / "steps" / "01-ask.json").read_text())
    parent_ask = json.loads((parent_dir / "steps" / "01-ask.json").read_text())
    assert ask["reused"] is True and ask["reused_from"] == parent["run_id"]
    assert ask["output"] == parent_ask["output"] and ask["outputs"] == parent_ask["outputs"]
    final = json.loads((child_dir / "steps" / "03-final.json").read_text())
    assert final["outputs"][0]["params"]["temperature"] == 0.2
    assert final["input"].startswith(f"## ask\n{parent_ask['output']}")
    assert json.loads((child_dir / "session.json").read_text())["parent_run_id"] == parent["run_id"]
    assert "temperature: 0.2" in (child_dir / "config.yaml").read_text()


def test_rerun_with_new_input_and_bad_stage(parent: dict, in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, _ = cli(capsys, "pipeline", "rerun", parent["run_id"], "--input", "capital of Spain?", "--json")
    assert code == 0
    child = json.loads(out)
    assert child["input"] == "capital of Spain?" and child["from_stage"] == "ask"
    assert not any(s["reused"] for s in child["stages"])
    code, _, err = cli(capsys, "pipeline", "rerun", parent["run_id"], "--from", "nope")
    assert code == 2 and "--from nope: no such stage" in err


def test_rerun_refuses_a_set_that_changes_a_reused_stage(parent: dict, in_tmp: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    """It ran (exit 0) with `ask` reused, the parent's output, while the child's config.yaml recorded the --set on
    `ask`: a config its output did not come from."""
    root = in_tmp / "runs" / "pipeline"
    before = sorted(p.name for p in root.iterdir())
    pid = parent["run_id"]
    code, out, err = cli(capsys, "pipeline", "rerun", pid, "--from", "final",
                         "--set", "base_pipeline.stages.0.params.max_tokens=5")
    flat = " ".join(err.split())
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 2, err
    assert flat.startswith("error: --set base_pipeline.stages.0.params.max_tokens=5: changes stage 'ask', reused")
    assert "(--from ask), or leave the --set out" in flat
    # two changed stages: both named, the --set of each, the first to rerun from; the --set on `final` is fine
    code, _, err = cli(capsys, "pipeline", "rerun", pid, "--from", "final",
                       "--set", "base_pipeline.stages.2.params.temperature=0.1",
                       "--set", "base_pipeline.stages.1.aggregation=concat",
                       "--set", "base_pipeline.stages.0.system=Be brief.")
    flat = " ".join(err.split())
    assert code == 2 and "changes stages 'ask', 'vote'" in flat and "(--from ask)" in flat, err
    assert "--set base_pipeline.stages.1.aggregation=concat, --set base_pipeline.stages.0.system=Be brief.:" in flat
    assert "temperature" not in flat
    assert sorted(p.name for p in root.iterdir()) == before  # nothing written
    # a --set that leaves a reused stage as it was, or changes only stages that run, is taken
    code, out, err = cli(capsys, "pipeline", "rerun", pid, "--from", "vote", "--set", "base_pipeline.stages.0.model=a",
                         "--set", "base_pipeline.stages.1.aggregation=concat", "--json")
    assert code == 0 and [s["reused"] for s in json.loads(out)["stages"]] == [True, False, False], err


def test_rerun_refuses_a_new_input_when_stages_are_reused(parent: dict, in_tmp: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    """It ran (exit 0) with `ask` reused from the France input while the child recorded the Spain input: a final
    answer about France for a question about Spain."""
    root = in_tmp / "runs" / "pipeline"
    before = sorted(p.name for p in root.iterdir())
    pid = parent["run_id"]
    code, out, err = cli(capsys, "pipeline", "rerun", pid, "--from", "vote", "--input", "capital of Spain?")
    flat = " ".join(err.split())
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 2, err
    says = f"error: the given input differs from the input of session {pid}, but stage(s) ask before --from vote"
    assert says in flat and "would reuse its outputs, which answer that input" in flat
    assert "(--from ask, or no --from), or leave --input out" in flat
    (in_tmp / "q.txt").write_text("capital of Spain?\n")
    code, _, err = cli(capsys, "pipeline", "rerun", pid, "--from", "final", "--input-file", "q.txt")
    assert code == 2 and "stage(s) ask, vote before --from final" in " ".join(err.split()), err
    assert sorted(p.name for p in root.iterdir()) == before  # nothing written
    # the parent's own input (a file's final newline aside) reuses as before; from the first stage, any input
    (in_tmp / "q.txt").write_text("capital of France?\n")
    code, out, err = cli(capsys, "pipeline", "rerun", pid, "--from", "vote", "--input-file", "q.txt", "--json")
    assert code == 0 and [s["reused"] for s in json.loads(out)["stages"]] == [True, False, False], err
    code, out, err = cli(capsys, "pipeline", "rerun", pid, "--from", "ask", "--input", "capital of Spain?", "--json")
    assert code == 0 and json.loads(out)["input"] == "capital of Spain?", err


def test_rerun_with_models_runs_on_that_file_and_refuses_a_changed_reused_model(
        parent: dict, in_tmp: Path, capsys: pytest.CaptureFixture, provider_calls: list[str]) -> None:
    """A rerun had no --models: it ran on the session's saved models.yaml, so a model fixed in the models file
    failed again (`--set models...` is refused: --set edits the pipeline)."""
    root = in_tmp / "runs" / "pipeline"
    pid = parent["run_id"]

    def models(**routed: str) -> str:  # a models file: each of a-d routed to itself unless given
        (in_tmp / "fixed.yaml").write_text("models:\n" + "".join(
            f"  {n}: {{routed: {routed.get(n, n)}}}\n" for n in "abcd" if routed.get(n) != "-"))
        return "fixed.yaml"

    provider_calls.clear()
    code, out, err = cli(capsys, "pipeline", "rerun", pid, "--from", "vote", "--models", models(d="a"), "--json")
    assert code == 0, err
    child = json.loads(out)
    assert [s["reused"] for s in child["stages"]] == [True, False, False]
    assert Counter(provider_calls) == {"scripted-b": 2, "scripted-c": 1, "scripted-a": 1}  # d: the new definition
    assert "routed: a" in (root / child["run_id"] / "models.yaml").read_text().split("  d:")[1]  # recorded as run
    before = sorted(p.name for p in root.iterdir())
    # b ran the reused stage `vote`: a new definition of it would be recorded for an output it did not make
    code, out, err = cli(capsys, "pipeline", "rerun", pid, "--from", "final", "--models", models(b="c"))
    flat = " ".join(err.split())
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 2, err
    assert flat.startswith(f"error: --models fixed.yaml: model 'b' differs from session {pid}'s, and stage 'vote', "
                           "reused before --from final, ran on it")
    assert "(--from vote)" in flat and f"models.b as the session ran it (in {root / pid / 'models.yaml'})" in flat
    file = in_tmp / models()
    file.write_text(file.read_text().replace("{routed: a}", "{routed: a, overrides: {params: {temperature: 0.3}}}"))
    code, _, err = cli(capsys, "pipeline", "rerun", pid, "--from", "vote", "--models", "fixed.yaml")  # params count
    assert code == 2 and "model 'a' differs" in err and "stage 'ask'" in err, err
    code, _, err = cli(capsys, "pipeline", "rerun", pid, "--from", "vote", "--models", models(d="-"))
    flat = " ".join(err.split())
    assert code == 2 and f"--models fixed.yaml: no model 'd', which stage 'vote' of session {pid} uses" in flat, err
    assert "add it to fixed.yaml" in flat
    # a --set that points a reused stage at a model FILE alone has: the --set is refused, not an internal error
    (in_tmp / "fixed.yaml").write_text(models() and (in_tmp / "fixed.yaml").read_text() + "  e: {routed: a}\n")
    code, _, err = cli(capsys, "pipeline", "rerun", pid, "--from", "final", "--models", "fixed.yaml", "--set",
                       "base_pipeline.stages.0.model=e")
    assert code == 2 and "internal error" not in err and "ask" in err, err
    assert sorted(p.name for p in root.iterdir()) == before  # nothing written
    # every stage runs again: any definition is taken
    code, out, err = cli(capsys, "pipeline", "rerun", pid, "--models", models(b="c"), "--json")
    assert code == 0 and not any(s["reused"] for s in json.loads(out)["stages"]), err


def test_history_tree_and_show(parent: dict, in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    pid = parent["run_id"]
    code, out, _ = cli(capsys, "pipeline", "rerun", pid, "--from", "final", "--json")
    child_id = json.loads(out)["run_id"]
    code, out, _ = cli(capsys, "pipeline", "rerun", child_id, "--from", "final", "--json")
    grandchild_id = json.loads(out)["run_id"]

    code, out, _ = cli(capsys, "pipeline", "history", "--json")
    sessions = {s["id"]: s for s in json.loads(out)}
    assert code == 0 and set(sessions) == {pid, child_id, grandchild_id}
    assert sessions[pid]["parent"] is None and sessions[child_id]["parent"] == pid
    assert sessions[grandchild_id]["parent"] == child_id and sessions[pid]["status"] == "completed"
    assert sessions[pid]["input"] == "capital of France?" and sessions[pid]["final"]

    code, _, err = cli(capsys, "pipeline", "history", "--tree")
    lines = err.splitlines()
    where = {name: next(i for i, line in enumerate(lines) if name in line) for name in (pid, child_id, grandchild_id)}
    assert code == 0 and where[pid] < where[child_id] < where[grandchild_id]
    indent = {name: lines[i].index(name) for name, i in where.items()}
    assert indent[pid] < indent[child_id] < indent[grandchild_id]  # nested under their parents
    code, _, err = cli(capsys, "pipeline", "history")
    assert code == 0 and pid in err

    code, out, err = cli(capsys, "pipeline", "show", child_id)
    child_results = json.loads((in_tmp / "runs" / "pipeline" / child_id / "results.json").read_text())
    assert code == 0 and out.strip() == child_results["final"].strip()  # stdout: just the answer
    for text in ("ask", "vote", "final", "(reused)", f"rerun of {pid} from final", "votes:", "capital of France?"):
        assert text in err
    code, out, _ = cli(capsys, "pipeline", "show", str(in_tmp / "runs" / "pipeline" / pid), "--json")
    shown = json.loads(out)
    assert [s["stage"] for s in shown["steps"]] == ["ask", "vote", "final"] and shown["final"] == parent["final"]
    assert shown["steps"][1]["aggregation"]["kind"] == "vote"


def test_session_lookup_by_prefix(parent: dict, capsys: pytest.CaptureFixture) -> None:
    pid = parent["run_id"]
    assert cli(capsys, "pipeline", "show", pid[:-1])[0] == 0  # unique prefix
    assert cli(capsys, "pipeline", "rerun", pid, "--from", "final", "--json")[0] == 0
    code, _, err = cli(capsys, "pipeline", "show", pid[:4])
    assert code == 2 and "matches 2 sessions" in err
    code, _, err = cli(capsys, "pipeline", "show", "nothing-like-it")
    assert code == 2 and "no pipeline session" in err


def test_history_with_no_sessions(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, err = cli(capsys, "pipeline", "history", "--json")
    assert code == 0 and json.loads(out) == []
    assert cli(capsys, "pipeline", "history")[0] == 0


def test_another_commands_run_folder_is_no_session(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """`pipeline show` printed an llm-bench run as a session with no input (exit 0); `rerun` blamed its models file."""
    from agentlab.core.runs import RunDir

    RunDir.create("llm-bench", out=in_tmp / "lb1")
    for args in (["pipeline", "show", "lb1"], ["pipeline", "rerun", "lb1"]):
        assert main(args) == 2
        assert "lb1: is a run of 'llm-bench', not of 'pipeline'" in capsys.readouterr().err


def test_show_names_the_aggregator_and_a_fallback(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """`pipeline show` left out a synthesis stage's aggregator call (most of the stage's time on a larger model)."""
    write_routed_models(in_tmp, ["a", "b", "c"])
    write_scripted_llm(in_tmp, ["a", "b", "c"])
    write_pipeline(in_tmp, [{"name": "moa", "type": "multi", "models": ["a", "b"], "aggregation": "synthesis",
                             "aggregator": "c"}], name="moa")
    code, out, err = cli(capsys, "pipeline", "run", "--models", "models.yaml", "--pipeline", "pipeline.yaml",
                         "--llm", "llm.yaml", "--input", "capital of France?", "--json")
    assert code == 0, err
    code, out, err = cli(capsys, "pipeline", "show", json.loads(out)["run_id"])
    assert code == 0 and "synthesised by c (" in err
    assert "fallback for" not in err
