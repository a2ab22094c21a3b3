"""The LLM planner and the hybrid evaluator of `agentlab nas` against a scripted loopback OpenAI-compatible server,
through a real routing config: plans applied, invalid plans re-asked with the reasons, TPE fallback, the evaluator
asked only inside the noise band, and `--planner auto` choosing llm or tpe (with the reason)."""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentlab.cli import main
from agentlab.core.llm.config import LLMConfig
from agentlab.core.llm.router import Router
from agentlab.core.search.evaluator import HybridEvaluator
from agentlab.core.search.records import TrialRecord
from agentlab.nas import run_nas_optimization
from agentlab.nas.config import NASConfig
from agentlab.nas.run import choose_planner
from agentlab.testing.server import Reply, ScriptedServer

PLANNER, JUDGE = "planner-m", "judge-m"
TINY = {
    "data": {"synthetic_steps": 400, "seq_len": 24, "label_len": 12, "pred_len": 12},
    "model": {"d_model": 16, "n_heads": 2, "d_ff": 32},
    "train": {"epochs": 2, "max_train_batches": 3},
    "search": {"planner": "llm", "pruner": "none",
               "space": {"model.d_model": {"choices": [16, 32]}, "model.n_heads": {"choices": [1, 2, 3]},
                         "train.learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}}},
}


def routing(base_url: str, evaluator: bool = False, api_key_env: str | None = None) -> dict[str, Any]:
    provider: dict[str, Any] = {"kind": "openai", "base_url": base_url}
    if api_key_env:
        provider["api_key_env"] = api_key_env
    config: dict[str, Any] = {
        "providers": {"loop": provider},
        "models": {PLANNER: {"provider": "loop", "model": PLANNER}, JUDGE: {"provider": "loop", "model": JUDGE}},
        "routes": {"planner": {"primary": [PLANNER]}},
        "retries": 0, "timeout_s": 5,
    }
    if evaluator:
        config["routes"]["evaluator"] = {"primary": [JUDGE]}
    return config


def plan(changes: dict[str, Any], reasoning: str = "try it") -> str:
    return json.dumps({"changes": changes, "reasoning": reasoning})


def texts(request: dict[str, Any]) -> str:
    return "\n".join(str(m.get("content", "")) for m in request["messages"])


def requests_of(srv: ScriptedServer, model: str) -> list[dict[str, Any]]:
    return [r for r in srv.requests if r.get("model") == model]


def events(run: Path, kind: str) -> list[dict[str, Any]]:
    lines = (run / "events.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["kind"] == kind]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_valid_plan_is_applied_with_its_reasoning(in_tmp: Path, srv: ScriptedServer) -> None:
    srv.default(PLANNER, Reply(text=plan({"model.d_model": 32}, "a wider model should fit the daily cycle")))
    out = in_tmp / "r"
    run_nas_optimization(max_iterations=2, config=TINY, out=out, llm=LLMConfig.model_validate(routing(srv.base_url)))
    base, trial = json.loads((out / "agent_state.json").read_text())["runs"]
    assert base["planner"] == "base" and base["params"]["model.d_model"] == 16
    assert trial["planner"] == "llm" and trial["changes"] == {"model.d_model": 32}
    assert trial["params"] == {**base["params"], "model.d_model": 32}
    assert srv.count(PLANNER) == 1  # --planner llm: no probe, one plan
    request = srv.requests[0]
    system, user = (m["content"] for m in request["messages"])
    assert "JSON schema" not in system  # compact: the format in one line, the schema only as response_format
    lines = user.splitlines()
    assert "model.d_model | 16 | 32 | model width" in lines  # key | now | may change to | meaning
    assert "model.n_heads | 2 | 1, 3 | attention heads" in lines
    assert any(line.startswith("run_0000 (base): no change -> val_mse ") for line in lines)
    assert lines[0] == "Goal: the lowest val_mse. Trials left: 1."
    suggestion = next(line for line in lines if line.startswith("Optimizer's suggestion: "))
    schema = request["response_format"]["json_schema"]["schema"]
    changes = schema["properties"]["changes"]
    assert changes["additionalProperties"] is False and list(changes["properties"]) == list(TINY["search"]["space"])
    assert changes["properties"]["model.d_model"] == {"type": "integer", "enum": [32]}  # the current 16 left out
    rates = changes["properties"]["train.learning_rate"]["enum"]
    assert {1e-4, 2e-4, 5e-4, 2e-3, 5e-3, 1e-2} <= set(rates) and 1e-3 not in rates  # log grid, less the current
    assert all(f"{r:.4g}" in suggestion for r in rates if r not in (1e-4, 2e-4, 5e-4, 2e-3, 5e-3, 1e-2))  # TPE's
    assert schema["properties"]["reasoning"]["maxLength"] == 160
    assert 0 < request["max_tokens"] <= 400  # bounded by the schema
    report = (out / "report.md").read_text()
    assert "a wider model should fit the daily cycle" in report and "## LLM plans" in report
    assert "1 of 1 planner iterations applied an LLM plan" in report
    assert events(out, "plan")[-1]["reasoning"] == "a wider model should fit the daily cycle"
    assert events(out, "plan")[-1]["origin"] in ("own", "partial", "candidate")
    calls = events(out, "llm_call")  # the planner's calls are recorded in the run like every LLM call
    assert calls and all(c["outcome"] == "ok" and c["route"] == "planner" for c in calls)
    results = json.loads((out / "results.json").read_text())
    assert results["llm_plans"]["applied"] == 1 and results["llm_plans"]["fallback"] == 0


def test_rich_prompt_shows_the_state_as_json_and_the_schema(in_tmp: Path, srv: ScriptedServer) -> None:
    srv.default(PLANNER, Reply(text=plan({"model.d_model": 32})))
    out = in_tmp / "r"
    config = {**TINY, "search": {**TINY["search"], "planner_prompt": "rich"}}
    run_nas_optimization(max_iterations=2, config=config, out=out, llm=LLMConfig.model_validate(routing(srv.base_url)))
    system, user = (m["content"] for m in srv.requests[0]["messages"])
    assert "JSON schema: " in system and '"model.d_model":{"type":"integer","enum":[32]}' in system
    state = json.loads(user.partition("\n")[2])
    assert "optimizer_candidate" in state and state["recent_runs"][0]["run_id"] == "run_0000"
    # each key with its bounds and what it means
    assert state["search_space"]["model.n_heads"] == {"choices": [1, 2, 3],
                                                      "meaning": "attention heads; must divide d_model"}
    assert json.loads((out / "agent_state.json").read_text())["runs"][1]["planner"] == "llm"


def test_plan_that_takes_the_suggestion_is_counted(in_tmp: Path, srv: ScriptedServer) -> None:
    def take_suggestion(body: dict[str, Any]) -> str:
        line = next(x for x in body["messages"][-1]["content"].splitlines() if x.startswith("Optimizer's"))
        pairs = [p.split("=") for p in line.partition(": ")[2].split(", ")]
        return plan({k: yaml.safe_load(v) for k, v in pairs}, "the optimizer knows")

    srv.default(PLANNER, Reply(fn=take_suggestion))
    out = in_tmp / "r"
    results = run_nas_optimization(max_iterations=3, config=TINY, out=out,
                                   llm=LLMConfig.model_validate(routing(srv.base_url)))
    assert results["llm_plans"] == {"iterations": 2, "applied": 2, "fallback": 0, "took_candidate": 2, "partial": 0,
                                    "own": 0}
    assert [r["origin"] for r in json.loads((out / "agent_state.json").read_text())["runs"]] == ["", "candidate",
                                                                                                "candidate"]
    assert "2 took TPE's suggestion as it was" in (out / "report.md").read_text()


def test_invalid_plans_are_re_asked_with_reasons_then_fall_back_to_tpe(in_tmp: Path, srv: ScriptedServer) -> None:
    srv.script(PLANNER, [
        # trial 1: out of range, then breaking n_heads | d_model, then not JSON (repaired), then valid
        Reply(text=plan({"model.d_model": 999})), Reply(text=plan({"model.n_heads": 3})),
        Reply(text="Let us make the model wider."), Reply(text=plan({"model.d_model": 32}, "valid at last")),
        # trial 2: garbage on every repair -> tpe; trial 3: out of range on every re-ask -> tpe
        *[Reply(text="no idea")] * 3, *[Reply(text=plan({"model.d_model": 999}))] * 3,
    ])
    out = in_tmp / "r"
    run_nas_optimization(max_iterations=4, config=TINY, out=out, llm=LLMConfig.model_validate(routing(srv.base_url)))
    asked = requests_of(srv, PLANNER)
    assert len(asked) == 10
    assert "Your plan was rejected: model.d_model: 999 is not one of [16, 32]" in texts(asked[1])
    assert "Your plan was rejected: model.n_heads: must divide model.d_model (16 % 3 != 0)" in texts(asked[2])
    assert "Your answer was invalid: no JSON object found in the reply" in texts(asked[3])

    runs = json.loads((out / "agent_state.json").read_text())["runs"]
    assert [r["planner"] for r in runs] == ["base", "llm", "tpe (llm fallback)", "tpe (llm fallback)"]
    assert runs[1]["params"]["model.d_model"] == 32
    assert all(r["params"]["model.d_model"] % r["params"]["model.n_heads"] == 0 for r in runs)
    notes = [e["notes"] for e in events(out, "plan")]
    assert notes[1][:2] == ["plan 1 rejected: model.d_model: 999 is not one of [16, 32]",
                            "plan 2 rejected: model.n_heads: must divide model.d_model (16 % 3 != 0)"]
    assert notes[2][0].startswith("planner LLM failed: invalid_output") and \
        "no valid LLM plan: this iteration uses tpe" in notes[2]
    assert [n for n in notes[3] if n.startswith("plan ")] == [
        f"plan {i} rejected: model.d_model: 999 is not one of [16, 32]" for i in (1, 2, 3)]
    assert "no valid LLM plan: this iteration uses tpe" in notes[3]


def test_plans_cut_at_max_tokens_are_reported_as_cut(in_tmp: Path, srv: ScriptedServer) -> None:
    srv.default(PLANNER, Reply(text='{"changes": {"model.d_model": 32}, "reasoning": "because', finish_reason="length"))
    out = in_tmp / "r"
    run_nas_optimization(max_iterations=2, config=TINY, out=out, llm=LLMConfig.model_validate(routing(srv.base_url)))
    asked = requests_of(srv, PLANNER)
    assert len(asked) == 3  # the reply and two repairs, each told it was cut
    assert all(texts(r).endswith("so that it ends within the limit.") for r in asked[1:])
    assert "Your answer was cut off at max_tokens (after 5 tokens)" in texts(asked[1])
    note = events(out, "plan")[-1]["notes"][0]
    assert note.startswith("planner LLM failed: invalid_output: ") and note.endswith(
        ": the reply was cut off at max_tokens (after 5 tokens) before its JSON object was complete")
    report = (out / "report.md").read_text()
    assert "0 of 1 planner iterations applied an LLM plan" in report
    assert "**run_0001** fell back to TPE" in report and "cut off at max_tokens (after 5 tokens)" in report


def test_evaluator_model_is_asked_only_inside_the_noise_band(srv: ScriptedServer) -> None:
    def verdict(body: dict[str, Any]) -> str:
        new = json.loads(body["messages"][-1]["content"])["new"]
        return json.dumps({"accept": True, "reason": f"{new['value']} learns more steadily"})

    srv.default(JUDGE, Reply(fn=verdict))
    router = Router.from_config(LLMConfig.model_validate(routing(srv.base_url, evaluator=True)))
    try:
        evaluator = HybridEvaluator(0.05, router=router, route="evaluator", metric="val_mse")
        best = TrialRecord(number=0, state="complete", value=1.0, params={"model.d_model": 16}, accepted=True,
                           metrics={"n_params": 1000})
        clear = [evaluator.decide(1.0, {}, {}, None), evaluator.decide(0.5, {"n_params": 2000}, {}, best),
                 evaluator.decide(1.5, {"n_params": 500}, {}, best), evaluator.decide(math.nan, {}, {}, best),
                 evaluator.decide(0.9, {"diverged": True}, {}, best)]
        assert [(d.accepted, d.decided_by) for d in clear] == [(True, "rule"), (True, "rule"), (False, "rule"),
                                                               (False, "rule"), (False, "rule")]
        assert srv.count(JUDGE) == 0

        band = evaluator.decide(1.02, {"n_params": 2000}, {"model.d_model": 32}, best)
        assert band.accepted and band.decided_by == "llm"  # the model accepted the larger one: rules would not
        assert "within the noise band" in band.reason and "1.02 learns more steadily" in band.reason
        assert srv.count(JUDGE) == 1
        payload = json.loads(requests_of(srv, JUDGE)[0]["messages"][-1]["content"])
        assert payload["best"]["run_id"] == "run_0000" and payload["new"]["params"] == {"model.d_model": 32}

        srv.script(JUDGE, [Reply(status=500)])  # a failing evaluator model: the size rule decides
        fallback = evaluator.decide(0.99, {"n_params": 500}, {}, best)
        assert fallback.accepted and fallback.decided_by == "rule" and "smaller model wins" in fallback.reason
        assert srv.count(JUDGE) == 2
    finally:
        router.close()


def test_planner_auto_uses_a_live_model_and_the_evaluator_in_the_band(in_tmp: Path, srv: ScriptedServer,
                                                                     capsys: pytest.CaptureFixture) -> None:
    def planner(body: dict[str, Any]) -> str:
        return "OK" if "Reply with OK." in texts(body) else plan({"model.d_model": 32}, "wider")

    srv.default(PLANNER, Reply(fn=planner))
    srv.default(JUDGE, Reply(text=json.dumps({"accept": False, "reason": "the curve is noisier"})))
    (in_tmp / "tiny.yaml").write_text(yaml.safe_dump({**TINY, "search": {**TINY["search"], "planner": "auto"}}))
    (in_tmp / "llm.yaml").write_text(yaml.safe_dump(routing(srv.base_url, evaluator=True)))
    out = in_tmp / "r"
    assert main(["nas", "-c", "tiny.yaml", "--llm", "llm.yaml", "--max-iterations", "2", "--out", str(out),
                 "--set", "search.min_delta=1000"]) == 0  # every finite result is inside this band
    assert f"planner: llm via route 'planner' ({PLANNER})" in capsys.readouterr().err
    assert srv.count(PLANNER) == 2  # the probe, then one plan
    trial = json.loads((out / "agent_state.json").read_text())["runs"][1]
    assert trial["planner"] == "llm" and trial["decided_by"] == "llm" and trial["accepted"] is False
    assert "evaluator: the curve is noisier" in trial["reason"]
    assert srv.count(JUDGE) == 1


def test_planner_auto_falls_back_to_tpe_when_the_model_is_unreachable(in_tmp: Path) -> None:
    llm = LLMConfig.model_validate(routing(f"http://127.0.0.1:{closed_port()}/v1"))
    out = in_tmp / "r"
    results = run_nas_optimization(max_iterations=2, config={**TINY, "search": {**TINY["search"], "planner": "auto"}},
                                   out=out, llm=llm)
    line = events(out, "planner")[0]["line"]
    assert line.startswith("planner: tpe (planner model unreachable: ") and "connection" in line
    assert results["planner"] == line
    assert [r["planner"] for r in json.loads((out / "agent_state.json").read_text())["runs"]] == ["base", "tpe"]


def test_planner_auto_sends_nothing_without_the_api_key(in_tmp: Path, srv: ScriptedServer,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    srv.default(PLANNER, Reply(text="OK"))
    cfg = NASConfig.model_validate({"search": {"planner": "auto"}})
    llm = LLMConfig.model_validate(routing(srv.base_url, api_key_env="OPENROUTER_API_KEY"))
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    planner, router, line = choose_planner(cfg, llm)
    assert line == "planner: tpe (planner model unavailable: OPENROUTER_API_KEY not set)"
    assert planner.name == "tpe" and router is None and srv.count(PLANNER) == 0

    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-test")
    planner, router, line = choose_planner(cfg, llm)
    try:
        assert planner.name == "llm" and line.startswith("planner: llm via route 'planner'")
        assert srv.count(PLANNER) == 1
    finally:
        router.close()
