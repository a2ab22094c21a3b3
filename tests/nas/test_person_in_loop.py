"""What a new user hit with `agentlab nas --planner llm / agent` (issue 47, "the person in the loop"): a planner model
that cannot be used is refused before trial 0 (exit 2, one line naming it); --approve without a terminal is refused
unless the UI answers; --resume reuses the first run's --llm (kept without secrets) unless given --llm again; a short
llm search asks the LLM and keeps its calls in llm_calls.jsonl, as the agent's are; the agent is told the trials left
counting the one it plans; counts read as counts."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_nas_llm import PLANNER, TINY, choice, closed_port, routing

from agentlab.cli import main
from agentlab.core.llm.config import LLMConfig
from agentlab.core.search.agent import agent_summary, credit_line
from agentlab.nas import run_nas_optimization
from agentlab.testing.server import Reply, ScriptedServer

LLM_TINY = {**TINY, "search": {**TINY["search"], "planner": "llm"}}


def write(folder: Path, name: str, data: dict[str, Any]) -> str:
    (folder / name).write_text(yaml.safe_dump(data))
    return name


def calls(run: Path) -> list[dict[str, Any]]:
    path = run / "llm_calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


@pytest.mark.parametrize("planner", ["llm", "agent", "auto"])
def test_a_planner_model_that_does_not_exist_is_refused_before_trial_0(in_tmp: Path, capsys: Any,
                                                                       planner: str) -> None:
    llm = write(in_tmp, "llm.yaml", {"providers": {"local": {"kind": "llama_cpp"}},
                                     "models": {"big": {"provider": "local", "model": "smollm2-1b7"}},
                                     "routes": {"planner": {"primary": ["big"]}}})
    cfg = write(in_tmp, "tiny.yaml", LLM_TINY)
    assert main(["nas", "-c", cfg, "--llm", llm, "--planner", planner, "-n", "2"]) == 2
    err = capsys.readouterr().err
    # auto too, for a routing file the user gave: a wrong model name is the file's mistake (it ran on TPE, exit 0)
    said = "--llm llm.yaml" if planner == "auto" else f"--planner {planner}"
    assert f"{said}: the planner model 'big' cannot be loaded: model 'smollm2-1b7' not found" in err
    assert "fix models.big.model in llm.yaml" in err and "Traceback" not in err
    assert not (in_tmp / "runs").exists()  # before any run folder, not a search on candidate 0s


def test_an_unreachable_planner_server_is_refused_and_auto_still_falls_back(in_tmp: Path, capsys: Any) -> None:
    llm = write(in_tmp, "llm.yaml", routing(f"http://127.0.0.1:{closed_port()}/v1"))
    cfg = write(in_tmp, "tiny.yaml", LLM_TINY)
    assert main(["nas", "-c", cfg, "--llm", llm, "-n", "2"]) == 2
    err = capsys.readouterr().err
    assert "--planner llm: no model of the planner route can be reached" in err and PLANNER in err
    assert "does not answer" in err and "Traceback" not in err and not (in_tmp / "runs").exists()
    # auto is not refused: no usable planner model means the sampler, saying why
    assert main(["nas", "-c", cfg, "--llm", llm, "--planner", "auto", "-n", "1", "--out", "r"]) == 0


def test_approve_without_a_terminal_is_refused_unless_the_ui_answers(in_tmp: Path, srv: ScriptedServer,
                                                                      capsys: Any, monkeypatch: Any) -> None:
    from agentlab.core.agent.approval import APPROVE_UI_ENV

    llm = write(in_tmp, "llm.yaml", routing(srv.base_url))
    cfg = write(in_tmp, "tiny.yaml", LLM_TINY)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal
    monkeypatch.delenv(APPROVE_UI_ENV, raising=False)
    assert main(["nas", "-c", cfg, "--llm", llm, "--planner", "agent", "--approve", "-n", "2"]) == 2
    err = capsys.readouterr().err
    assert "--approve needs a terminal to ask in" in err and APPROVE_UI_ENV in err and "Traceback" not in err
    assert not (in_tmp / "runs").exists() and srv.count(PLANNER) == 0
    # a dry run asks nothing: a script or CI checks an --approve config without a terminal
    assert main(["nas", "-c", cfg, "--llm", llm, "--planner", "agent", "--approve", "--dry-run"]) == 0
    assert not (in_tmp / "runs").exists() and srv.count(PLANNER) == 0

    from agentlab.cli.common import approver_for

    monkeypatch.setenv(APPROVE_UI_ENV, "1")  # what `agentlab ui` sets for the runs it starts
    assert approver_for("agent", True) is not None


def test_resume_reuses_the_first_runs_llm_without_its_secrets(in_tmp: Path, srv: ScriptedServer, capsys: Any,
                                                             monkeypatch: Any) -> None:
    srv.default(PLANNER, Reply(text=choice(1)))
    monkeypatch.setenv("AGENTLAB_TEST_KEY", "sk-secret-4711-abcdef")
    cfg = write(in_tmp, "tiny.yaml", {**LLM_TINY, "search": {**LLM_TINY["search"], "llm_share": 1.0,
                                                             "llm_adapt": False}})
    llm = write(in_tmp, "llm.yaml", routing(srv.base_url, api_key_env="AGENTLAB_TEST_KEY"))
    assert main(["nas", "-c", cfg, "--llm", llm, "-n", "2", "--out", "r"]) == 0
    saved = (in_tmp / "r" / "llm.yaml").read_text()
    assert "sk-secret-4711" not in saved and "api_key_env: AGENTLAB_TEST_KEY" in saved
    (in_tmp / "llm.yaml").unlink()  # the first run's file is gone: the run folder's copy is what resumes
    capsys.readouterr()
    assert main(["nas", "--resume", "r", "-n", "5"]) == 0
    assert "routing config: the first run's (r/llm.yaml)" in capsys.readouterr().err
    asked = [c for c in calls(in_tmp / "r") if c["route"] == "planner"]
    assert asked and all(c["model"] == PLANNER and c["outcome"] == "ok" for c in asked)
    assert srv.count(PLANNER) == len(asked) >= 1
    # --llm given again wins over the saved one (here a server that is down: refused)
    other = write(in_tmp, "down.yaml", routing(f"http://127.0.0.1:{closed_port()}/v1"))
    assert main(["nas", "--resume", "r", "--llm", other, "-n", "6"]) == 2
    assert "no model of the planner route can be reached" in capsys.readouterr().err


def test_a_short_llm_search_asks_the_llm_and_keeps_its_calls(in_tmp: Path, srv: ScriptedServer) -> None:
    srv.default(PLANNER, Reply(text=choice(2, "a wider model")))
    out = in_tmp / "r"
    # the docs' example: 5 trials at the default llm_share (0.3) and adaptive share; 2 planner trials after warm-up
    results = run_nas_optimization(max_iterations=5, config=LLM_TINY, out=out,
                                   llm=LLMConfig.model_validate(routing(srv.base_url)))
    recorded = calls(out)
    assert recorded and recorded[0]["route"] == "planner" and recorded[0]["reply"] == choice(2, "a wider model")
    assert recorded[0]["messages"][-1]["content"].startswith("Goal: the lowest val_mse.")
    assert results["llm_contribution"]["asked"] >= 1


def test_the_agent_is_told_the_trials_left_counting_the_one_it_plans(in_tmp: Path, srv: ScriptedServer) -> None:
    steps = [{"name": "suggest", "arguments": {}}, {"name": "run_trial", "arguments": {"candidate": 1, "reason": "x"}}]
    srv.script(PLANNER, [Reply(tool_calls=[c]) for c in steps * 10])
    out = in_tmp / "r"
    results = run_nas_optimization(max_iterations=3, config={**TINY, "search": {**TINY["search"], "planner": "agent"}},
                                   out=out, llm=LLMConfig.model_validate(routing(srv.base_url)))
    told = [m["content"] for r in srv.requests for m in r["messages"]
            if m["role"] == "user" and " left, the one you plan now included" in str(m["content"])]
    # after trial 1 the agent plans trial 2, the last of 3: one left (it was told "0 trials left")
    assert told and told[-1].startswith("1 trial left, the one you plan now included.")
    recorded = calls(out)
    assert recorded and any(c.get("tool_calls") for c in recorded)  # the agent's calls are kept too
    assert results["agent"]["steps"] == len(recorded)


def test_the_agent_summary_counts_read_as_counts() -> None:
    block = {"model": "m", "steps": 1, "tool_calls": 1, "invalid_tool_calls": 0, "rejected_calls": 0, "defaulted": 0,
             "trials_by_agent": 1, "trials_by_guard": 0, "tokens_per_trial": 6092.7, "seconds_per_trial": 2.5,
             "improvement_from_agent_trials": None}
    line = agent_summary(block)
    assert line is not None
    assert line.startswith("agent (m): 1 step, 1 tool call (0 invalid") and "1 trial by the agent" in line
    assert "6,093 tokens and 2.5 s of the model per trial" in line
    many = agent_summary({**block, "steps": 12, "tool_calls": 2, "trials_by_agent": 3, "tokens_per_trial": 120.0})
    assert many is not None and "12 steps, 2 tool calls" in many and "3 trials by the agent" in many
    assert "120 tokens" in many


def approval_search(in_tmp: Path, srv: ScriptedServer, answers: list[dict[str, Any]], trials: int = 3
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A nas agent search with --approve answered by ``answers`` in turn (then yes); returns the actions asked
    about and the trials' params, in order."""
    from agentlab.core.config import load_config
    from agentlab.core.runs import run_in_folder
    from agentlab.nas.config import NASConfig
    from agentlab.nas.run import prepare, run

    steps = [{"name": "suggest", "arguments": {}}, {"name": "run_trial", "arguments": {"candidate": 0, "reason": "x"}}]
    srv.script(PLANNER, [Reply(tool_calls=[c]) for c in steps * 20])
    asked: list[dict[str, Any]] = []
    queue = list(answers)

    def approver(action: dict[str, Any]) -> dict[str, Any]:
        asked.append(action)
        return queue.pop(0) if queue else {"answer": "yes"}

    cfg = load_config(None, NASConfig, [f"search.max_iterations={trials}", "search.agent.approve=true"],
                      base={**TINY, "search": {**TINY["search"], "planner": "agent"}})
    inputs = {**prepare(cfg, LLMConfig.model_validate(routing(srv.base_url))), "approver": approver}
    run_in_folder("nas", cfg, run, inputs=inputs, out=in_tmp / "r")
    ran = [e["params"] for e in map(json.loads, (in_tmp / "r" / "events.jsonl").read_text().splitlines())
           if e["kind"] == "trial" and e.get("state") == "complete"]
    return asked, ran


def test_a_declined_config_is_never_proposed_again(in_tmp: Path, srv: ScriptedServer) -> None:
    asked, ran = approval_search(in_tmp, srv, [{"answer": "no", "note": "not that one"}])
    declined = asked[0]["key"]
    assert len(asked) >= 3 and all(a["key"] != declined for a in asked[1:])  # the agent kept running candidate 0
    assert declined not in {json.dumps(p, sort_keys=True) for p in ran}
    assert asked[0]["params"] not in ran and len(ran) == 3


def test_an_edit_changes_the_proposal_shown_not_the_best_config(in_tmp: Path, srv: ScriptedServer) -> None:
    asked, ran = approval_search(in_tmp, srv, [{"answer": "edit", "args": {"changes": {"model.d_model": 32},
                                                                           "reason": "edited by the user"}}], trials=2)
    shown = asked[0]["params"]
    assert ran[1] == {**shown, "model.d_model": 32}  # the proposal's learning rate and heads, the user's width
    assert ran[1]["train.learning_rate"] != ran[0]["train.learning_rate"]  # not the base (the best) config's


def test_the_console_says_how_often_the_llm_was_asked() -> None:
    from agentlab.core.search.share import contribution_lines
    from agentlab.nas.report import summary_lines

    best = {"run_id": "run_0000", "val_mse": 1.0, "test_mse": 1.0, "test_mae": 1.0, "n_params": 10,
            "planner": "base", "params": {}}
    block = {"model": "m", "candidates": 4, "llm_share": 0.3, "trials": 2, "warmup_trials": 2, "asked": 0,
             "chosen_by_llm": 0, "no_answer": 0, "differed": 0, "differed_fraction": 0.0,
             "new_bests": {"llm_picks": 0, "sampler": 0},
             "improvement": {"llm_picks": 0.0, "sampler": 0.0, "llm_fraction": 0.0}}
    lines = summary_lines({"best": best, "base": None, "llm_contribution": block})
    assert "llm planner: asked about 0 of 2 planner trials (the llm_share bound or the bandit" in lines[-1]
    assert any("The LLM was asked about none" in line for line in contribution_lines(block, "val MSE"))
    lines = summary_lines({"best": best, "base": None, "llm_contribution": {**block, "asked": 1}})
    assert lines[-1] == "llm planner: asked about 1 of 2 planner trials; its prompts and replies are in llm_calls.jsonl"


def test_a_model_never_asked_is_asked_once_before_the_bandit_weighs_it() -> None:
    from agentlab.core.search import share as S

    # 2 planner trials at llm_share 0.3, a record of the sampler's trials only (an earlier search never asked it)
    never = {"classical": [0, 2], "llm": [0, 0]}
    assert all(S.open_to_llm(0.3, [], 2, seed, never)[0] for seed in range(50))
    # asked once in this search: the bound (one pick in 2 trials) holds it back
    assert S.open_to_llm(0.3, [S.Step("picked")], 2, 0, never) == (
        False, "llm_share 0.3 used (1 of 1 trials were LLM picks)")


class _Counted:
    """A planner as agent_block reads it: the graph's counters and the model's name."""

    model = type("M", (), {"name": "m"})()

    def stats(self) -> dict[str, Any]:
        return {"steps": 4, "tool_calls": 4, "invalid_tool_calls": 0, "rejected_calls": 0, "defaulted": 1,
                "tokens": 400, "model_seconds": 2.0}


def _block(rows: list[tuple[str, Any, str, float]]) -> dict[str, Any]:
    from agentlab.core.search.agent import agent_block

    def score(keep: Any) -> float | None:
        values = [v for o, c, p, v in rows if keep(o, c, p)]
        return min(values) if values else None

    return agent_block(_Counted(), [(o, c, p) for o, c, p, _ in rows], score)  # type: ignore[arg-type]


def test_the_agent_is_credited_with_its_own_picks_only_and_the_leads_with_theirs() -> None:
    """The base config is no counterfactual: an agent that ran the sampler's candidate 0 (or gave no answer) gets
    no credit however much the best improved on the base; the warm start's leads are credited to the knowledge."""
    base = ("", None, "base", 1.0)
    same = _block([base, ("agent", 0, "agent", 0.5), ("default", 0, "agent", 0.4)])
    assert same["agent_picks"] == 0 and same["improvement_from_agent_picks"] == 0.0
    line = agent_summary(same)
    assert line is not None and "no gain is the agent's" in line and "improved" not in line

    picked = _block([base, ("", None, "leads", 0.8), ("agent", 2, "agent", 0.6), ("agent", 0, "agent", 0.7)])
    assert picked["agent_picks"] == 1 and picked["trials_from_leads"] == 1
    assert picked["best_without_agent_picks"] == 0.7 and picked["improvement_from_agent_picks"] == pytest.approx(1 / 7)
    assert picked["best_without_leads"] == 0.6 and picked["improvement_from_leads"] == 0.0
    line = agent_summary(picked)
    assert line is not None and "its 1 pick other than the sampler's candidate 0 improved the best by 14.3%" in line
    assert "the warm start's 1 lead did not improve the best" in line


def test_a_worse_best_is_worded_worse_and_picks_on_changed_code_say_what_they_leave_out() -> None:
    """"improved the best by -0.4%" for picks that left it worse; and with the code changed, the trials without the
    picks ran on the agent's code too (-0.1% for a change that took val_mse from 2414 to 0.98)."""
    from agentlab.core.search.agent import agent_block

    block = {"agent_picks": 1, "best_with_all_trials": 1.004, "best_without_agent_picks": 1.0,
             "improvement_from_agent_picks": -0.004, "trials_from_leads": 1, "improvement_from_leads": -0.01}
    line = credit_line(block)
    assert "its 1 pick other than the sampler's candidate 0 left the best 0.4% worse than the same trials" in line
    assert "the warm start's 1 lead left the best 1.0% worse" in line and "-0." not in line
    assert "leaves the changes' own effect out" not in line

    def score(keep: Any) -> float | None:
        return 0.98
    changed = agent_block(_Counted(), [("agent", None, "agent"), ("tune", None, "tpe")], score,  # type: ignore[arg-type]
                          changed_code=True)
    assert changed["picks_compared_on_changed_code"] is True
    line = credit_line({**changed, "improvement_from_agent_picks": 0.001})
    assert "; the trials without them ran on its kept code changes too, so this leaves the changes' own effect out" \
        in line


def test_picks_that_gave_the_whole_best_are_said_so() -> None:
    """compress's feasible hypervolume was 0 without the agent's picks (every feasible experiment was one): no ratio,
    and the line said its picks "did not improve the best"."""
    block = {"agent_picks": 3, "hypervolume_with_all_trials": 39.5, "hypervolume_without_agent_picks": 0.0,
             "improvement_from_agent_picks": None, "trials_from_leads": 0}
    assert credit_line(block, "experiment") == ("its 3 picks other than the sampler's candidate 0 gave the whole "
                                                "best: the same experiments without them gave none")
    assert "did not improve" in credit_line({**block, "hypervolume_with_all_trials": 0.0}, "experiment")


def test_the_agent_table_shows_the_last_trials_outcome_too() -> None:
    """The last action's result never reaches the graph (the search ends first): its row takes the trial's own
    outcome from the events, as every other row does."""
    from agentlab.core.search.agent import agent_story

    block = _block([("", None, "base", 1.0), ("agent", 1, "agent", 0.5)])
    events = [{"kind": "agent_step", "step": 1, "tool": "suggest", "arguments": "{}"},
              {"kind": "agent_tool", "summary": "candidates: ..."},
              {"kind": "agent_step", "step": 2, "tool": "run_trial", "arguments": '{"candidate": 1}'},
              {"kind": "plan", "origin": "agent"}, {"kind": "trial", "state": "complete", "value": 0.5}]
    rows = [line for line in agent_story(block, events) if line.startswith("| 2 |")]
    assert rows == ['| 2 | run_trial | {"candidate": 1} | complete 0.5 |']


def test_an_edit_that_is_not_valid_goes_back_to_the_person_with_the_reason(in_tmp: Path,
                                                                          srv: ScriptedServer) -> None:
    """The error of a refused edit is the person's to read: they are asked again about the same proposal, told
    why, and nothing ran in between (it went to the model before, and the person never saw it)."""
    from agentlab.core.agent.approval import describe

    bad = {"answer": "edit", "args": {"changes": {"model.d_model": 7}}}  # not a choice of the space
    asked, ran = approval_search(in_tmp, srv, [bad, {"answer": "yes"}], trials=2)
    assert asked[1]["key"] == asked[0]["key"] and "model.d_model" in asked[1]["refused_edit"]
    assert describe(asked[1]).startswith("your edit was not valid (") and "refused_edit" not in asked[0]
    assert ran[1] == asked[0]["params"] and len(ran) == 2
    events = [json.loads(line) for line in (in_tmp / "r" / "events.jsonl").read_text().splitlines()]
    assert [e["kind"] for e in events if e["kind"].startswith("agent_edit")] == ["agent_edit_refused"]
