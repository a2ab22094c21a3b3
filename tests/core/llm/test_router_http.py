"""The router over real loopback HTTP: OpenAIProvider against the scripted OpenAI-compatible server.

Each failure the server can produce (slow answer, 429 with Retry-After, 500, 401, a cut SSE stream, a body that is
not JSON) must lead to the right retry / fallback, and the circuit breaker must stop requests reaching the server.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

from agentlab.core.errors import AllModelsFailed
from agentlab.core.llm import LLMConfig, RoutedCompletion, Router
from agentlab.core.llm.structured import schema_max_tokens
from agentlab.core.runs import RunDir
from agentlab.testing.server import Reply, ScriptedServer

ASK = [{"role": "user", "content": "say something"}]


@pytest.fixture
def srv(srv: ScriptedServer) -> ScriptedServer:
    """The shared server (conftest), with a healthy `backup` model to fall back to."""
    srv.default("backup", Reply(text="backup answer"))
    return srv


def config(srv: ScriptedServer, primary: list[str], **settings: Any) -> LLMConfig:
    """Each name is both the config model name and the server's model id; ``backup`` is the route's fallback."""
    names = [*primary, "backup"]
    return LLMConfig.model_validate({
        "providers": {"loop": {"kind": "openai", "base_url": srv.base_url, **settings.pop("provider", {})}},
        "models": {name: {"provider": "loop", "model": name} for name in names},
        "routes": {"default": {"primary": primary, "fallback": ["backup"], **settings.pop("route", {})}},
        **settings,
    })


def generate(cfg: LLMConfig, calls: int = 1, *, stream: bool = False, **kwargs: Any) -> list[RoutedCompletion]:
    """``calls`` routed calls on one router, in one event loop."""

    async def main() -> list[RoutedCompletion]:
        async with Router.from_config(cfg, **kwargs) as router:
            return [await router.generate(ASK, stream=stream) for _ in range(calls)]

    return asyncio.run(main())


def outcomes(result: RoutedCompletion) -> list[tuple[str, str]]:
    return [(a.model, a.outcome) for a in result.attempts]


def test_timeout_falls_back(srv: ScriptedServer) -> None:
    srv.default("slow", Reply(delay_s=2.0))
    start = time.perf_counter()
    (result,) = generate(config(srv, ["slow"], timeout_s=0.3, retries=0))
    assert time.perf_counter() - start < 1.5
    assert outcomes(result) == [("slow", "timeout"), ("backup", "ok")] and result.text == "backup answer"
    assert result.fallback_time_s >= 0.25


def test_deadline_over_http(srv: ScriptedServer) -> None:
    srv.default("slow", Reply(delay_s=2.0))
    start = time.perf_counter()
    with pytest.raises(AllModelsFailed) as info:
        generate(config(srv, ["slow"], timeout_s=5, deadline_s=0.3))
    assert time.perf_counter() - start < 1.5
    assert info.value.kind == "deadline" and srv.count("backup") == 0


def test_429_retry_after_is_honoured(srv: ScriptedServer) -> None:
    srv.script("busy", [Reply(status=429, headers={"Retry-After": "0.3"})])
    srv.default("busy", Reply(text="after the wait"))
    start = time.perf_counter()
    (result,) = generate(config(srv, ["busy"], retries=1))
    assert time.perf_counter() - start >= 0.3
    assert outcomes(result) == [("busy", "rate_limited"), ("busy", "ok")] and result.text == "after the wait"
    assert srv.count("busy") == 2


def test_429_with_long_retry_after_moves_on(srv: ScriptedServer) -> None:
    srv.default("busy", Reply(status=429, headers={"Retry-After": "30"}))
    start = time.perf_counter()
    (result,) = generate(config(srv, ["busy"], retries=2, max_retry_after_s=1))
    assert time.perf_counter() - start < 1.0
    assert outcomes(result) == [("busy", "rate_limited"), ("backup", "ok")] and srv.count("busy") == 1


def test_500_is_retried_then_falls_back(srv: ScriptedServer) -> None:
    srv.default("broken", Reply(status=500))
    (result,) = generate(config(srv, ["broken"], retries=1))
    assert outcomes(result) == [("broken", "server_error")] * 2 + [("backup", "ok")]
    assert srv.count("broken") == 2


def test_401_skips_without_retry(srv: ScriptedServer) -> None:
    srv.default("locked", Reply(status=401))
    (result,) = generate(config(srv, ["locked"], retries=3))
    assert outcomes(result) == [("locked", "auth"), ("backup", "ok")] and srv.count("locked") == 1


def test_cut_stream_is_retried_then_falls_back(srv: ScriptedServer) -> None:
    srv.default("flaky", Reply(text="one two three four", cut_after_chunks=2))
    (result,) = generate(config(srv, ["flaky"], retries=1), stream=True)
    assert outcomes(result) == [("flaky", "stream_cut")] * 2 + [("backup", "ok")]
    assert result.text == "backup answer" and result.completion.ttft_s is not None


def test_stream_recovers_on_retry(srv: ScriptedServer) -> None:
    srv.script("flaky", [Reply(text="one two three", cut_after_chunks=1)])
    srv.default("flaky", Reply(text="one two three"))
    (result,) = generate(config(srv, ["flaky"], retries=1), stream=True)
    assert outcomes(result) == [("flaky", "stream_cut"), ("flaky", "ok")] and result.text == "one two three"


def test_invalid_json_is_malformed_and_falls_back(srv: ScriptedServer) -> None:
    srv.default("garbled", Reply(invalid_json=True))
    (result,) = generate(config(srv, ["garbled"], retries=1))
    assert outcomes(result) == [("garbled", "malformed")] * 2 + [("backup", "ok")]


def test_an_upstreams_context_length_exceeded_does_not_open_the_breaker(srv: ScriptedServer) -> None:
    """An upstream's 400 `context_length_exceeded` is the prompt's fault (kind context_length): three such prompts
    opened the breaker, and every other client's request got circuit_open."""
    srv.default("long", Reply(status=400, text="context_length_exceeded: this model's maximum context length is 8"))
    cfg = config(srv, ["long"], retries=0, circuit_breaker={"failures": 2, "cooldown_s": 30}, route={"fallback": []})

    async def main() -> dict[str, Any]:
        async with Router.from_config(cfg) as router:
            for _ in range(3):
                with pytest.raises(AllModelsFailed) as failed:
                    await router.generate(ASK)
                assert failed.value.kind == "context_length"
            return router.stats()["long"]

    assert asyncio.run(main())["breaker"] == "closed" and srv.count("long") == 3


@pytest.mark.parametrize("status, opens", [(400, False), (422, False), (402, True)])
def test_an_upstreams_refusal_of_the_request_does_not_open_the_breaker(srv: ScriptedServer, status: int,
                                                                        opens: bool) -> None:
    """Three malformed requests from one client (upstream 400) opened the breaker, and every other client's request
    got circuit_open for cooldown_s; a 402 (no credit) fails every request and still counts."""
    srv.default("m", Reply(status=status, text="invalid_request_error"))
    cfg = config(srv, ["m"], retries=0, circuit_breaker={"failures": 2, "cooldown_s": 30}, route={"fallback": []})

    async def main() -> dict[str, Any]:
        async with Router.from_config(cfg) as router:
            for _ in range(3):
                with pytest.raises(AllModelsFailed):
                    await router.generate(ASK)
            return router.stats()["m"]

    assert asyncio.run(main())["breaker"] == ("open" if opens else "closed")
    assert srv.count("m") == (2 if opens else 3)


def test_circuit_breaker_stops_requests(srv: ScriptedServer) -> None:
    srv.default("down", Reply(status=503))
    cfg = config(srv, ["down"], retries=0, circuit_breaker={"failures": 2, "cooldown_s": 0.3})

    async def main() -> list[RoutedCompletion]:
        async with Router.from_config(cfg) as router:
            results = [await router.generate(ASK) for _ in range(4)]
            assert srv.count("down") == 2  # the 3rd and 4th calls never reached the server
            await asyncio.sleep(0.35)
            srv.default("down", Reply(text="up again"))
            results.append(await router.generate(ASK))
            assert router.stats()["down"]["breaker"] == "closed"
            return results

    results = asyncio.run(main())
    assert outcomes(results[2]) == [("down", "circuit_open"), ("backup", "ok")]
    assert results[-1].model == "down" and srv.count("down") == 3


class Verdict(BaseModel):
    label: str
    score: float


def test_structured_over_http_sends_schema_and_repairs(srv: ScriptedServer) -> None:
    srv.script("m", [Reply(text='{"label": "good"}'), Reply(text='```json\n{"label": "good", "score": 0.9}\n```')])

    async def main() -> Any:
        async with Router.from_config(config(srv, ["m"])) as router:
            return await router.structured(ASK, Verdict)

    result = asyncio.run(main())
    assert result.value == Verdict(label="good", score=0.9) and result.repairs == 1
    first = srv.requests[0]
    assert first["response_format"]["json_schema"]["name"] == "Verdict"
    assert srv.requests[1]["messages"][-1]["content"].startswith("Your answer was invalid")


class Label(BaseModel):
    label: str = Field(json_schema_extra={"maxLength": 30})
    score: float


def test_structured_reply_cut_at_max_tokens_is_reported_as_cut(srv: ScriptedServer) -> None:
    cut = '{"label": "a label that goes on and'
    srv.script("m", [Reply(text=cut, finish_reason="length"), Reply(text='{"label": "short", "score": 1}')])

    async def main() -> Any:
        async with Router.from_config(config(srv, ["m"])) as router:
            return await router.structured(ASK, Label)

    result = asyncio.run(main())
    assert result.value == Label(label="short", score=1) and result.repairs == 1
    first, second = srv.requests[:2]
    assert first["max_tokens"] == schema_max_tokens(Label)
    assert first["response_format"]["json_schema"]["name"] == "Label"
    repair = second["messages"][-1]["content"]
    assert repair.startswith("Your answer was cut off at max_tokens (after 7 tokens) before its JSON object was "
                             "complete. Reply with a shorter JSON object")
    assert "no JSON object" not in repair and second["messages"][-2] == {"role": "assistant", "content": cut}

    srv.script("m", [Reply(text=cut, finish_reason="length")] * 2)

    async def once() -> Any:
        async with Router.from_config(config(srv, ["m"], route={"fallback": []})) as router:
            return await router.structured(ASK, Label, max_repairs=1)

    with pytest.raises(AllModelsFailed) as info:
        asyncio.run(once())
    assert info.value.attempts[-1] == ("m", "invalid_output", "the reply was cut off at max_tokens (after 7 tokens) "
                                       "before its JSON object was complete")


def test_best_of_n_over_http_is_concurrent(srv: ScriptedServer) -> None:
    srv.default("a", Reply(text="answer A", delay_s=0.4))
    srv.default("b", Reply(text="answer B", delay_s=0.4))
    srv.default("judge", Reply(text='{"best": 1, "reason": "A is right"}'))
    cfg = LLMConfig.model_validate({
        "providers": {"loop": {"kind": "openai", "base_url": srv.base_url}},
        "models": {name: {"provider": "loop", "model": name} for name in ("a", "b", "judge")},
        "routes": {"default": {"primary": ["a", "b"], "strategy": "best_of_n", "judge": "judge"}},
    })
    start = time.perf_counter()
    (result,) = generate(cfg)
    assert time.perf_counter() - start < 0.75  # one delay, not two
    assert result.model == "a" and result.judge_reason == "A is right"


def test_events_and_secrets_never_hold_the_key(srv: ScriptedServer, monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    key = "sk-or-v1-ROUTERCANARY-0123456789"
    monkeypatch.setenv("ROUTER_TEST_KEY", key)
    srv.default("locked", Reply(status=401))
    cfg = config(srv, ["locked"], provider={"api_key_env": "ROUTER_TEST_KEY"})
    run_dir = RunDir.create("test", out=tmp_path / "run")
    secrets: list[str] = []
    (result,) = generate(cfg, on_event=run_dir.event, secrets=secrets)
    assert secrets == [key]
    events = list(run_dir.events("llm_call"))
    assert [(e["model"], e["outcome"]) for e in events] == [("locked", "auth"), ("backup", "ok")]
    assert events[1]["prompt_tokens"] == 2 and events[1]["completion_tokens"] == 2
    assert key not in (tmp_path / "run" / "events.jsonl").read_text()
    assert key not in repr(result) and "say something" not in (tmp_path / "run" / "events.jsonl").read_text()
