"""The LLM planner and the hybrid evaluator of `agentlab nas` against a scripted loopback OpenAI-compatible server,
through a real routing config: the LLM's choice among TPE's candidates runs with its reasoning, always choosing
candidate 0 is the TPE search, no answer runs candidate 0, the contribution is reported, the evaluator is asked only
inside the noise band, and `--planner auto` chooses llm or tpe (with the reason)."""

from __future__ import annotations

import json
import math
import shutil
import socket
import sys
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

REPO = Path(__file__).resolve().parents[2]

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


def choice(index: int, reasoning: str = "try it") -> str:
    return json.dumps({"choice": index, "reasoning": reasoning})


ASKED = {**TINY, "search": {**TINY["search"], "llm_share": 1.0, "llm_adapt": False}}


def test_the_llm_chooses_among_tpe_candidates_with_its_reasoning(in_tmp: Path, srv: ScriptedServer) -> None:
    srv.default(PLANNER, Reply(text=choice(1, "a wider model should fit the daily cycle")))
    out = in_tmp / "r"
    results = run_nas_optimization(max_iterations=5, config=ASKED, out=out,
                                   llm=LLMConfig.model_validate(routing(srv.base_url)))
    runs = json.loads((out / "agent_state.json").read_text())["runs"]
    assert [r["planner"] for r in runs] == ["base"] + ["llm"] * 4
    # TPE's three random warm-up trials are the sampler's; then the LLM is asked and its pick runs
    assert [r["origin"] for r in runs[1:]] == ["classical"] * 2 + ["picked"] * 2
    assert [r["choice"] for r in runs[1:]] == [0, 0, 1, 1] and [r["candidates"] for r in runs[1:]] == [1, 1, 4, 4]
    assert srv.count(PLANNER) == 2  # --planner llm: no probe, one request per trial asked, no re-asks
    request = srv.requests[0]
    system, user = (m["content"] for m in request["messages"])
    assert "JSON schema" not in system  # the format in one line, the schema only as response_format
    lines = user.splitlines()
    assert lines[0] == "Goal: the lowest val_mse. Trials left: 2."
    assert lines[1].startswith("Best config so far: run_00")
    assert "Trials, best first (changes to the best config):" in lines
    assert [line[:3] for line in lines if line[:1].isdigit() and line[1:3] == ": "] == ["0: ", "1: ", "2: ", "3: "]
    schema = request["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["choice"]["enum"] == [0, 1, 2, 3] and schema["required"] == ["choice", "reasoning"]
    assert schema["properties"]["reasoning"]["maxLength"] == 160
    assert 0 < request["max_tokens"] <= 400  # bounded by the schema
    block = results["llm_contribution"]
    assert block["model"] == PLANNER and block["warmup_trials"] == 2 and block["trials"] == 2
    assert block["asked"] == 2 and block["differed"] == 2
    assert block["no_answer"] == 0 and block["llm_share"] == 1.0 and "best_val_mse" in block["without_llm_picks"]
    report = (out / "report.md").read_text()
    assert "## LLM contribution" in report and "a wider model should fit the daily cycle" in report
    assert "its pick differed from candidate 0 on 2 (100%)" in report
    # the trial table credits the sampler's warm-up trials to it, not to the LLM (they read "llm")
    planners = [row.split(" | ")[1] for row in report.splitlines() if row.startswith("| run_0")]
    assert planners == ["base", "tpe (warm-up)", "tpe (warm-up)", "llm", "llm"], planners
    assert events(out, "plan")[-1]["origin"] == "picked"
    calls = events(out, "llm_call")  # the planner's calls are recorded in the run like every LLM call
    assert calls and all(c["outcome"] == "ok" and c["route"] == "planner" for c in calls)
    memory = json.loads((in_tmp / "runs" / "nas" / "llm_picks.json").read_text())["models"][PLANNER]
    assert list(memory) == [str(out.resolve())]  # the warm-up trials count in neither arm
    assert memory[str(out.resolve())]["classical"] == [0, 0] and memory[str(out.resolve())]["llm"][1] == 2


def test_always_candidate_0_is_the_tpe_search(in_tmp: Path, srv: ScriptedServer) -> None:
    srv.default(PLANNER, Reply(text=choice(0, "the optimizer knows")))
    llm = LLMConfig.model_validate(routing(srv.base_url))
    chosen = run_nas_optimization(max_iterations=5, config=ASKED, out=in_tmp / "llm", llm=llm)
    tpe = run_nas_optimization(max_iterations=5, config={**TINY, "search": {**TINY["search"], "planner": "tpe"}},
                               out=in_tmp / "tpe")
    params = [[r["params"] for r in json.loads((in_tmp / name / "agent_state.json").read_text())["runs"]]
              for name in ("llm", "tpe")]
    assert params[0] == params[1] and srv.count(PLANNER) == 2
    assert chosen["llm_contribution"]["chosen_by_llm"] == 2 and chosen["llm_contribution"]["differed"] == 0
    assert tpe["llm_contribution"] is None


def test_no_answer_runs_candidate_0_and_is_recorded(in_tmp: Path, srv: ScriptedServer) -> None:
    srv.default(PLANNER, Reply(text='{"choice": 7, "reasoning": "out of range"}'))
    out = in_tmp / "r"
    results = run_nas_optimization(max_iterations=5, config=ASKED, out=out,
                                   llm=LLMConfig.model_validate(routing(srv.base_url)))
    assert srv.count(PLANNER) == 2  # no re-ask
    runs = json.loads((out / "agent_state.json").read_text())["runs"]
    assert [r["origin"] for r in runs[3:]] == ["no answer"] * 2 and [r["choice"] for r in runs[3:]] == [0, 0]
    assert all(r["planner"] == "llm" for r in runs[1:])  # never called a fallback
    assert events(out, "plan")[-1]["notes"][0].startswith("no answer from the planner LLM: invalid_output")
    assert results["llm_contribution"]["no_answer"] == 2
    assert "without an answer: candidate 0 ran" in (out / "report.md").read_text()


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
        return "OK" if "Reply with OK." in texts(body) else choice(0, "wider")

    srv.default(PLANNER, Reply(fn=planner))
    srv.default(JUDGE, Reply(text=json.dumps({"accept": False, "reason": "the curve is noisier"})))
    (in_tmp / "tiny.yaml").write_text(yaml.safe_dump({**TINY, "search": {**TINY["search"], "planner": "auto"}}))
    (in_tmp / "llm.yaml").write_text(yaml.safe_dump(routing(srv.base_url, evaluator=True)))
    out = in_tmp / "r"
    assert main(["nas", "-c", "tiny.yaml", "--llm", "llm.yaml", "--max-iterations", "2", "--out", str(out),
                 "--set", "search.min_delta=1000"]) == 0  # every finite result is inside this band
    assert f"planner: llm via route 'planner' ({PLANNER})" in capsys.readouterr().err
    assert srv.count(PLANNER) == 1  # the probe; trial 1 is one of TPE's warm-up trials
    trial = json.loads((out / "agent_state.json").read_text())["runs"][1]
    assert trial["planner"] == "llm" and trial["origin"] == "classical"
    assert trial["decided_by"] == "llm" and trial["accepted"] is False
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
    with choose_planner(cfg, llm) as session:
        assert session.line == "planner: tpe (planner model unavailable: OPENROUTER_API_KEY not set)"
        assert session.planner.name == "tpe" and session.evaluator is None and srv.count(PLANNER) == 0

    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-test")
    with choose_planner(cfg, llm) as session:
        assert session.planner.name == "llm" and session.line.startswith("planner: llm via route 'planner'")
        assert srv.count(PLANNER) == 1


def test_a_dry_runs_auto_planner_is_the_runs_and_sends_nothing(in_tmp: Path, srv: ScriptedServer,
                                                                capsys: pytest.CaptureFixture,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """configs/llm.yaml with no API key set: the dry run said "planner": "llm" (the route lists models) where the run
    uses tpe, offline. A model the run would probe: the dry run sends no request and says the answer decides."""
    (in_tmp / "configs").mkdir()
    shutil.copy(REPO / "configs" / "llm.yaml", in_tmp / "configs" / "llm.yaml")
    for key in ("OPENROUTER_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    tiny = ["--set", "data.synthetic_steps=400", "--set", "search.planner=auto"]
    assert main(["nas", *tiny, "--json", "--dry-run"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["planner"] == "tpe"
    assert report["planner_line"] == "planner: tpe (no planner model configured; offline)"
    # the same file with the key set, or a routing file whose model needs none: the run would ask the model first
    (in_tmp / "llm.yaml").write_text(yaml.safe_dump(routing(srv.base_url)))
    assert main(["nas", *tiny, "--llm", "llm.yaml", "--dry-run"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert (f"planner: auto (llm via route 'planner' ({PLANNER}) if the planner model answers the run's first "
            "request, else tpe)") in err, err
    assert srv.count(PLANNER) == 0 and not (in_tmp / "runs").exists()
    # a search of the user's own command says the same
    (in_tmp / "train.py").write_text("print('loss: 1')\n")
    (in_tmp / "own.yaml").write_text(yaml.safe_dump({
        "objective": {"command": f"{sys.executable} train.py", "metric": "loss", "params": {"lr": 0.1}},
        "search": {"space": {"lr": {"low": 0.01, "high": 1.0}}}}))
    assert main(["nas", "-c", "own.yaml", "--json", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["planner"] == "tpe"
    assert srv.count(PLANNER) == 0
