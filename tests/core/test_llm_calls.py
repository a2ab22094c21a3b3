"""Every LLM call is inspectable: its messages, params and reply land in the run folder's llm_calls.jsonl (keys
scrubbed), unless --no-log-prompts; events.jsonl keeps the metadata either way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agentlab.cli import main
from agentlab.core.llm import GenParams, LLMConfig, Router, ScriptedProvider

LLM_YAML = ("providers:\n  p: {kind: scripted, replies: ['Paris is the capital.']}\n"
            "models:\n  m: {provider: p, model: m, params: {temperature: 0.3}}\n")


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_router_reports_messages_params_and_reply() -> None:
    config = LLMConfig.model_validate({"providers": {"p": {"kind": "scripted"}},
                                       "models": {"m": {"provider": "p", "model": "m", "params": {"seed": 3}}}})
    calls: list[dict[str, Any]] = []
    router = Router(config, {"p": ScriptedProvider("p", replies=["hello"])}, on_call=calls.append)
    messages = [{"role": "user", "content": "hi"}]
    assert router.generate_sync(messages, params=GenParams(max_tokens=5)).completion.text == "hello"
    router.close()
    (call,) = calls
    assert call["messages"] == messages and call["reply"] == "hello" and call["outcome"] == "ok"
    assert call["params"] == {"max_tokens": 5, "seed": 3} and call["model"] == "m"


def test_llm_bench_keeps_prompts_and_replies_scrubbed(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-abcdef-987654")
    (in_tmp / "llm.yaml").write_text(LLM_YAML)
    assert main(["llm-bench", "-c", "llm.yaml", "--requests", "2", "--concurrency", "1", "--prompt",
                 "capital of France? (my token is tok-abcdef-987654)", "--out", "r"]) == 0
    calls = lines(in_tmp / "r" / "llm_calls.jsonl")
    assert len(calls) == 5  # the probe, the tool-calling probe, llm-bench's uncounted warm-up, two requests
    assert calls[0]["messages"][0]["content"] == "capital of France? (my token is ${MY_SERVICE_TOKEN})"
    assert calls[0]["reply"] == "Paris is the capital." and calls[0]["params"]["temperature"] == 0.3
    assert "tok-abcdef-987654" not in (in_tmp / "r" / "llm_calls.jsonl").read_text()


def test_no_log_prompts_keeps_only_the_metadata(in_tmp: Path) -> None:
    (in_tmp / "llm.yaml").write_text(LLM_YAML)
    assert main(["llm-bench", "-c", "llm.yaml", "--requests", "1", "--concurrency", "1", "--no-log-prompts",
                 "--out", "r"]) == 0
    assert not (in_tmp / "r" / "llm_calls.jsonl").exists()
    events = [e for e in lines(in_tmp / "r" / "events.jsonl") if e["kind"] == "llm_call"]
    # the probe, the tool-calling probe, llm-bench's uncounted warm-up, one request
    assert len(events) == 4 and "messages" not in events[0]


def test_pipeline_stage_calls_are_kept(in_tmp: Path) -> None:
    (in_tmp / "llm.yaml").write_text(LLM_YAML)
    (in_tmp / "models.yaml").write_text("models:\n  a: {routed: m}\n  b: {routed: m}\n")
    assert main(["pipeline", "run", "--models", "models.yaml", "--llm", "llm.yaml", "--stage", "draft=a",
                 "--stage", "both=a,b:vote", "--input", "What is the capital of France?", "--out", "s"]) == 0
    calls = lines(in_tmp / "s" / "llm_calls.jsonl")
    assert [c["model"] for c in calls[:1]] == ["a"] and sorted(c["model"] for c in calls[1:]) == ["a", "b"]
    assert calls[0]["messages"][-1]["content"] == "What is the capital of France?"
