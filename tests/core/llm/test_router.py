"""The router over ScriptedProvider: fallback chains, retries, Retry-After, deadline, circuit breaker, strategies,
structured output, events, stats and the sync API.

No pytest-asyncio: each test drives its coroutine with ``asyncio.run`` (or uses the router's sync API).
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pydantic import BaseModel, Field

from agentlab.core.errors import AllModelsFailed, LLMError
from agentlab.core.llm import GenParams, LLMConfig, Router, ScriptedProvider, build_provider
from agentlab.core.llm.config import ScriptedProviderConfig
from agentlab.core.llm.structured import (
    UNBOUNDED_MAX_TOKENS,
    CutOff,
    InvalidOutput,
    extract_json,
    max_output_chars,
    parse_reply,
    schema_max_tokens,
)
from agentlab.core.runs import RunDir

T = TypeVar("T")
ASK = [{"role": "user", "content": "what is two plus two"}]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def err(kind: str, **kw: Any) -> LLMError:
    return LLMError(f"scripted {kind}", kind, **kw)


def make_router(providers: dict[str, ScriptedProvider], route: dict[str, Any] | None = None, *,
                events: list[tuple[str, dict[str, Any]]] | None = None, rng: random.Random | None = None,
                **settings: Any) -> Router:
    """One model per provider, both named like the provider; the model id is ``<name>-id``."""
    config = LLMConfig.model_validate({
        "providers": {name: {"kind": "scripted"} for name in providers},
        "models": {name: {"provider": name, "model": f"{name}-id"} for name in providers},
        "routes": {"default": route or {"primary": list(providers)}},
        **settings,
    })
    on_event = (lambda kind, **data: events.append((kind, data))) if events is not None else None
    return Router(config, dict(providers), on_event, rng=rng)


def sp(name: str, *replies: Any, latency_s: float = 0.0) -> ScriptedProvider:
    return ScriptedProvider(name, replies=list(replies) or [f"answer from {name}"], latency_s=latency_s)


# --------------------------------------------------------------------------- fallback and retries


def test_fallback_order_follows_roles_not_model_order() -> None:
    # Models are declared in reverse; the chain must still be primary -> duplicate -> reserve -> fallback.
    providers = {"f": sp("f"), "r": sp("r", err("server_error")), "d": sp("d", err("timeout")),
                 "p": sp("p", err("connection"))}
    router = make_router(providers, {"primary": ["p"], "duplicate": ["d"], "reserve": ["r"], "fallback": ["f"]},
                         retries=0)
    result = run(router.generate(ASK))
    assert result.model == "f" and result.text == "answer from f"
    assert [(a.model, a.outcome) for a in result.attempts] == [
        ("p", "connection"), ("d", "timeout"), ("r", "server_error"), ("f", "ok")]
    assert result.fallbacks == 3
    assert result.fallback_time_s >= 0
    assert providers["f"].calls[0].model == "f-id"


def test_retryable_errors_are_retried_then_fall_back() -> None:
    p, d = sp("p", err("server_error")), sp("d")
    router = make_router({"p": p, "d": d}, {"primary": ["p"], "fallback": ["d"]}, retries=2)
    result = run(router.generate(ASK))
    assert len(p.calls) == 3  # first try + 2 retries
    assert result.model == "d" and result.fallbacks == 1
    assert [a.outcome for a in result.attempts] == ["server_error"] * 3 + ["ok"]


def test_retry_succeeds_on_same_model() -> None:
    p = sp("p").queue(err("stream_cut"), err("empty"))
    router = make_router({"p": p, "d": sp("d")}, {"primary": ["p"], "fallback": ["d"]}, retries=2)
    result = run(router.generate(ASK))
    assert result.model == "p" and len(p.calls) == 3 and result.fallbacks == 0


@pytest.mark.parametrize("kind", ["auth", "not_found", "bad_request"])
def test_non_retryable_errors_skip_without_retry(kind: str) -> None:
    p, d = sp("p", err(kind, status=401)), sp("d")
    router = make_router({"p": p, "d": d}, {"primary": ["p"], "reserve": ["d"]}, retries=3)
    result = run(router.generate(ASK))
    assert len(p.calls) == 1 and result.model == "d"


def test_retry_after_is_honoured() -> None:
    p = sp("p").queue(err("rate_limited", retry_after=0.3))
    d = sp("d")
    router = make_router({"p": p, "d": d}, {"primary": ["p"], "fallback": ["d"]}, retries=1, max_retry_after_s=1)
    start = time.perf_counter()
    result = run(router.generate(ASK))
    elapsed = time.perf_counter() - start
    assert result.model == "p" and len(p.calls) == 2 and not d.calls
    assert elapsed >= 0.3 and result.fallback_time_s >= 0.29


def test_too_long_retry_after_moves_on() -> None:
    p = sp("p").queue(err("rate_limited", retry_after=5.0))
    d = sp("d")
    router = make_router({"p": p, "d": d}, {"primary": ["p"], "fallback": ["d"]}, retries=3, max_retry_after_s=1)
    start = time.perf_counter()
    result = run(router.generate(ASK))
    assert time.perf_counter() - start < 1.0
    assert result.model == "d" and len(p.calls) == 1


def test_deadline_bounds_the_whole_call() -> None:
    p, d = sp("p", latency_s=3.0), sp("d", latency_s=3.0)
    router = make_router({"p": p, "d": d}, {"primary": ["p"], "fallback": ["d"]}, timeout_s=10, deadline_s=0.3)
    start = time.perf_counter()
    with pytest.raises(AllModelsFailed) as info:
        run(router.generate(ASK))
    elapsed = time.perf_counter() - start
    assert 0.25 <= elapsed < 1.0
    assert info.value.kind == "deadline"
    assert info.value.attempts[0][:2] == ("p", "timeout")
    assert not d.calls  # no time was left for the fallback


def test_params_from_model_config_merge_under_request() -> None:
    p = sp("p")
    config = LLMConfig.model_validate({
        "providers": {"p": {"kind": "scripted"}},
        "models": {"p": {"provider": "p", "model": "p-id", "params": {"temperature": 0.2, "max_tokens": 5,
                                                                       "top_k": 40}}},
    })
    router = Router(config, {"p": p})
    run(router.generate(ASK, params=GenParams(max_tokens=50)))
    sent = p.calls[0].params
    assert (sent.temperature, sent.max_tokens, sent.extra) == (0.2, 50, {"top_k": 40})


def test_empty_route_fails_clearly() -> None:
    router = Router(LLMConfig(), {})
    with pytest.raises(AllModelsFailed) as info:
        run(router.generate(ASK))
    assert info.value.kind == "unavailable"


# --------------------------------------------------------------------------- circuit breaker


def test_circuit_breaker_opens_skips_and_half_opens() -> None:
    p, d = sp("p", err("server_error")), sp("d")
    router = make_router({"p": p, "d": d}, {"primary": ["p"], "fallback": ["d"]}, retries=0,
                         circuit_breaker={"failures": 2, "cooldown_s": 0.2})
    for _ in range(2):
        assert run(router.generate(ASK)).model == "d"
    assert len(p.calls) == 2 and router.stats()["p"]["breaker"] == "open"
    skipped = run(router.generate(ASK))
    assert len(p.calls) == 2  # no request sent while open
    assert [(a.model, a.outcome) for a in skipped.attempts] == [("p", "circuit_open"), ("d", "ok")]
    time.sleep(0.25)
    p.queue("p is back")  # the half-open trial succeeds and closes the breaker
    result = run(router.generate(ASK))
    assert result.model == "p" and len(p.calls) == 3
    assert router.stats()["p"]["breaker"] == "closed"


def test_failed_half_open_trial_reopens() -> None:
    p, d = sp("p", err("timeout")), sp("d")
    router = make_router({"p": p, "d": d}, {"primary": ["p"], "fallback": ["d"]}, retries=0,
                         circuit_breaker={"failures": 1, "cooldown_s": 0.2})
    run(router.generate(ASK))
    time.sleep(0.25)
    run(router.generate(ASK))  # the trial fails
    assert len(p.calls) == 2 and router.stats()["p"]["breaker"] == "open"
    run(router.generate(ASK))
    assert len(p.calls) == 2


def test_breaker_on_a_lone_primary_fails_fast() -> None:
    p = sp("p", err("connection"))
    router = make_router({"p": p}, {"primary": ["p"]}, retries=0, circuit_breaker={"failures": 1, "cooldown_s": 30})
    with pytest.raises(AllModelsFailed) as first:
        run(router.generate(ASK))
    assert first.value.kind == "connection"
    with pytest.raises(AllModelsFailed) as second:
        run(router.generate(ASK))
    assert second.value.kind == "circuit_open" and len(p.calls) == 1


def test_the_requests_own_faults_do_not_open_the_breaker() -> None:
    """Three prompts too long for the model opened its breaker, so every other client got circuit_open: a request's
    own fault (context_length) says nothing of the model's health."""
    p = sp("p", err("context_length"), err("context_length"), err("context_length"), "fine")
    router = make_router({"p": p}, {"primary": ["p"]}, retries=0, circuit_breaker={"failures": 2, "cooldown_s": 30})
    for kind in ("context_length",) * 3:
        with pytest.raises(AllModelsFailed) as failed:
            run(router.generate(ASK))
        assert failed.value.kind == kind
    assert router.stats()["p"]["breaker"] == "closed" and run(router.generate(ASK)).model == "p"


# --------------------------------------------------------------------------- fastest


def test_fastest_tries_unmeasured_first_then_prefers_fastest() -> None:
    providers = {"a": sp("a", latency_s=0.08), "b": sp("b", latency_s=0.0), "c": sp("c", latency_s=0.04)}
    router = make_router(providers, {"primary": ["a", "b", "c"], "strategy": "fastest"}, explore=0.0)
    models = [run(router.generate(ASK)).model for _ in range(5)]
    assert models == ["a", "b", "c", "b", "b"]
    stats = router.stats()
    assert stats["b"]["ewma_latency_s"] < stats["c"]["ewma_latency_s"] < stats["a"]["ewma_latency_s"]


def test_fastest_falls_back_in_latency_order() -> None:
    providers = {"a": sp("a", latency_s=0.03), "b": sp("b"), "c": sp("c", latency_s=0.01)}
    router = make_router(providers, {"primary": ["a", "b", "c"], "strategy": "fastest"}, explore=0.0, retries=0)
    for _ in range(3):
        run(router.generate(ASK))
    providers["b"].queue(err("server_error"))
    result = run(router.generate(ASK))
    assert [a.model for a in result.attempts] == ["b", "c"]


def test_fastest_explores_with_seeded_rng() -> None:
    providers = {"a": sp("a", latency_s=0.01), "b": sp("b"), "c": sp("c", latency_s=0.005)}
    router = make_router(providers, {"primary": ["a", "b", "c"], "strategy": "fastest"}, explore=0.5,
                         rng=random.Random(7))
    for _ in range(3):
        run(router.generate(ASK))  # measure everyone
    models = [run(router.generate(ASK)).model for _ in range(30)]
    assert models.count("b") >= 10  # the best is still the usual pick
    assert set(models) - {"b"}  # but not the only one


# --------------------------------------------------------------------------- best_of_n


def best_router(a: ScriptedProvider, b: ScriptedProvider, judge: ScriptedProvider) -> Router:
    return make_router({"a": a, "b": b, "j": judge},
                       {"primary": ["a", "b"], "duplicate": ["j"], "strategy": "best_of_n", "n": 2})


def test_best_of_n_runs_concurrently_and_returns_the_judges_pick() -> None:
    a, b = sp("a", "answer A", latency_s=0.3), sp("b", "answer B", latency_s=0.3)
    judge = sp("j", '{"best": 2, "reason": "B is more precise"}')
    router = best_router(a, b, judge)
    start = time.perf_counter()
    result = run(router.generate(ASK))
    assert time.perf_counter() - start < 0.5  # max of the two latencies, not their sum
    assert result.model == "b" and result.text == "answer B"
    assert result.judge_reason == "B is more precise"
    assert [(c.model, c.text) for c in result.candidates or []] == [("a", "answer A"), ("b", "answer B")]
    prompt = judge.calls[0].messages[-1]["content"]
    assert "answer A" in prompt and "answer B" in prompt and "two plus two" in prompt
    assert judge.calls[0].params.json_schema is not None


def test_best_of_n_judge_failure_keeps_first_answer() -> None:
    a, b, judge = sp("a", "answer A"), sp("b", "answer B"), sp("j", "I like both")
    result = run(best_router(a, b, judge).generate(ASK))
    assert result.model == "a" and "failed" in (result.judge_reason or "")
    assert len(judge.calls) == 2  # one repair round before giving up


def test_best_of_n_out_of_range_pick_is_repaired() -> None:
    a, b = sp("a", "answer A"), sp("b", "answer B")
    judge = sp("j").queue('{"best": 7, "reason": "x"}', '{"best": 1, "reason": "A is right"}')
    result = run(best_router(a, b, judge).generate(ASK))
    assert result.model == "a" and result.judge_reason == "A is right"


def test_best_of_n_tolerates_failed_candidates() -> None:
    a, b, judge = sp("a", err("auth")), sp("b", "answer B"), sp("j")
    result = run(best_router(a, b, judge).generate(ASK))
    assert result.model == "b" and not judge.calls and result.fallbacks == 1


# --------------------------------------------------------------------------- structured output


class Plan(BaseModel):
    lr: float
    layers: int


def test_structured_repair_round() -> None:
    p = sp("p").queue('{"lr": "fast"}', '{"lr": 0.01, "layers": 2}')
    router = make_router({"p": p})
    result = run(router.structured(ASK, Plan))
    assert result.value == Plan(lr=0.01, layers=2) and result.repairs == 1
    first, second = p.calls
    assert first.params.json_schema and first.params.json_schema["name"] == "Plan"
    assert first.messages[0]["role"] == "system" and "JSON schema" in first.messages[0]["content"]
    assert second.messages[-2] == {"role": "assistant", "content": '{"lr": "fast"}'}
    assert second.messages[-1]["content"].startswith("Your answer was invalid: ")
    assert "layers" in second.messages[-1]["content"]
    assert router.stats()["p"]["invalid_outputs"] == 1


def test_structured_falls_back_after_max_repairs() -> None:
    p, d = sp("p", "no JSON here"), sp("d", '{"lr": 0.1, "layers": 1}')
    router = make_router({"p": p, "d": d}, {"primary": ["p"], "fallback": ["d"]})
    result = run(router.structured(ASK, Plan, max_repairs=2))
    assert len(p.calls) == 3 and result.completion.model == "d" and result.repairs == 0
    assert ("p", "invalid_output") in [(a.model, a.outcome) for a in result.completion.attempts]


def test_structured_all_invalid_raises_invalid_output() -> None:
    router = make_router({"p": sp("p", "{not json}")})
    with pytest.raises(AllModelsFailed) as info:
        run(router.structured(ASK, Plan, max_repairs=1))
    assert info.value.kind == "invalid_output"


def test_structured_extracts_fenced_json_with_prose() -> None:
    reply = 'Sure! Here it is:\n```json\n{"lr": 0.1, "layers": 3}\n```\nHope {this} helps.'
    result = run(make_router({"p": sp("p", reply)}).structured(ASK, Plan))
    assert result.value == Plan(lr=0.1, layers=3) and result.repairs == 0


def test_extract_json() -> None:
    assert extract_json('prefix {"a": {"b": 1}} suffix') == '{"a": {"b": 1}}'
    assert extract_json('```\n{"a": 1}\n```') == '{"a": 1}'
    with pytest.raises(InvalidOutput):
        extract_json("nothing here")


def test_structured_system_instruction_merges_into_existing_system_message() -> None:
    p = sp("p", '{"lr": 1, "layers": 1}')
    run(make_router({"p": p}).structured([{"role": "system", "content": "You plan."}, *ASK], Plan))
    sent = p.calls[0].messages
    assert [m["role"] for m in sent] == ["system", "user"] and sent[0]["content"].startswith("You plan.")


class Bounded(BaseModel):
    size: int
    note: str = Field(json_schema_extra={"maxLength": 40})


class Free(BaseModel):
    note: str


def test_structured_sends_a_bounded_max_tokens() -> None:
    bound = schema_max_tokens(Bounded)
    assert 40 < bound < 120 and schema_max_tokens(Free) == UNBOUNDED_MAX_TOKENS  # a free-form string has no bound
    config = LLMConfig.model_validate({
        "providers": {"p": {"kind": "scripted"}},
        "models": {"free": {"provider": "p", "model": "free"},
                   "capped": {"provider": "p", "model": "capped", "params": {"max_tokens": 16}}},
        "routes": {"free": {"primary": ["free"]}, "capped": {"primary": ["capped"]}},
    })
    p = sp("p", '{"size": 1, "note": "n"}', '{"size": 1, "note": "n"}', '{"size": 1, "note": "n"}', '{"note": "n"}')
    router = Router(config, {"p": p})
    run(router.structured(ASK, Bounded, route="free"))
    run(router.structured(ASK, Bounded, route="capped"))
    run(router.structured(ASK, Bounded, route="capped", params=GenParams(max_tokens=500)))
    run(router.structured(ASK, Free, route="free"))
    # the schema's bound; the model's own lower max_tokens; the caller's explicit one; the default for no bound
    assert [c.params.max_tokens for c in p.calls] == [bound, 16, 500, UNBOUNDED_MAX_TOKENS]


def test_max_output_chars_follows_the_grammar() -> None:
    closed = {"type": "object", "properties": {"a": {"enum": ["xy", 10]}, "b": {"type": "boolean"},
                                               "c": {"type": "array", "items": {"const": 1}, "maxItems": 2}},
              "additionalProperties": False}
    longest = '{ "a": "xy", "b": false, "c": [1, 1] }'
    assert len(longest) <= max_output_chars(closed) <= len(longest) + 12
    assert max_output_chars({"$defs": {"X": closed}, "anyOf": [{"$ref": "#/$defs/X"}, {"type": "null"}]}) == \
        max_output_chars(closed)
    for unbounded in ({"type": "string"}, {"type": "object"}, {"type": "object", "properties": {},
                      "additionalProperties": True}, {"type": "array", "items": {"type": "integer"}}):
        assert max_output_chars(unbounded) is None


def test_reply_cut_at_max_tokens_is_reported_as_cut() -> None:
    with pytest.raises(CutOff, match=r"cut off at max_tokens \(after 12 tokens\)"):
        parse_reply('{"lr": 0.01, "lay', Plan, finish_reason="length", max_tokens=12)
    with pytest.raises(InvalidOutput, match="no JSON object found"):  # the same text, ended by the model itself
        parse_reply('{"lr": 0.01, "lay', Plan, finish_reason="stop")
    assert parse_reply('{"lr": 0.01, "layers": 2}', Plan, finish_reason="length") == Plan(lr=0.01, layers=2)


# --------------------------------------------------------------------------- events, stats, secrets


def test_events_one_per_attempt_and_never_the_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    key = "sk-test-CANARY-9f8e7d6c5b4a"
    monkeypatch.setenv("AGENTLAB_TEST_KEY", key)
    run_dir = RunDir.create("test", out=tmp_path / "run")
    # A misbehaving backend that echoes the key in its error text: the router must still not record it.
    p = sp("p").queue(LLMError(f"rejected key {key}", "server_error"))
    config = LLMConfig.model_validate({
        "providers": {"p": {"kind": "scripted"}}, "models": {"p": {"provider": "p", "model": "p-id"}}})
    router = Router(config, {"p": p}, run_dir.event, secrets=[key])
    result = run(router.generate([{"role": "user", "content": "a secret prompt"}]))
    events = list(run_dir.events("llm_call"))
    assert len(events) == len(result.attempts) == 2
    assert [e["outcome"] for e in events] == ["server_error", "ok"]
    assert events[1]["model"] == "p" and events[1]["provider_model"] == "p-id" and events[1]["attempt"] == 2
    assert events[1]["prompt_tokens"] == 3 and events[1]["completion_tokens"] == 3
    text = (tmp_path / "run" / "events.jsonl").read_text()
    assert key not in text and "a secret prompt" not in text
    assert key not in json.dumps([e for e in events])


def test_stats_count_calls_errors_tokens() -> None:
    p = sp("p", "one two three").queue(err("timeout"))
    router = make_router({"p": p}, retries=1)
    run(router.generate(ASK))
    run(router.generate(ASK))
    stats = router.stats()["p"]
    assert (stats["calls"], stats["successes"], stats["errors"]) == (3, 2, {"timeout": 1})
    assert (stats["tokens_in"], stats["tokens_out"]) == (10, 6)  # 5 prompt words, 3 reply words
    assert stats["p50_latency_s"] is not None and stats["breaker"] == "closed"


def test_build_provider_scripted_and_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    provider = build_provider("s", ScriptedProviderConfig(replies=["x"], latency_s=0.0))
    assert isinstance(provider, ScriptedProvider) and provider.name == "s" and provider.replies == ["x"]


def test_a_scripted_providers_script_answers_every_call_and_stays_out_of_files() -> None:
    def script(model: str, messages: Any, params: GenParams) -> str:
        return f"{model} heard {len(messages)}"

    cfg = LLMConfig.model_validate({"providers": {"p": ScriptedProviderConfig(replies=["unused"], script=script)},
                                    "models": {"m": {"provider": "p", "model": "m-id"}},
                                    "routes": {"default": {"primary": ["m"]}}})
    router = Router.for_run(cfg)
    try:
        assert router.generate_sync(ASK).completion.text == "m-id heard 1"
    finally:
        router.close()
    assert "script" not in cfg.model_dump()["providers"]["p"]  # a run folder's llm.yaml never holds it
    with pytest.raises(ValueError, match="a Python callable"):  # a file cannot name one
        LLMConfig.model_validate({"providers": {"p": {"kind": "scripted", "script": "mymodule:reply"}}})
    with pytest.raises(ValueError, match="an instance, not a class"):
        ScriptedProviderConfig(script=ScriptedProvider)


# --------------------------------------------------------------------------- call_model, sync API


def test_call_model_streams_and_does_not_retry() -> None:
    p = sp("p", "alpha beta gamma")
    router = make_router({"p": p}, retries=3)
    completion = run(router.call_model("p", ASK, stream=True))
    assert completion.text == "alpha beta gamma" and completion.ttft_s is not None
    p.queue(err("server_error"))
    with pytest.raises(LLMError) as info:
        run(router.call_model("p", ASK))
    assert info.value.kind == "server_error" and len(p.calls) == 2
    with pytest.raises(LLMError) as unknown:
        run(router.call_model("nope", ASK))
    assert unknown.value.kind == "not_found"


def test_sync_api_uses_one_background_loop() -> None:
    loops: list[int] = []

    def reply(model: str, messages: Any, params: Any) -> str:
        loops.append(id(asyncio.get_running_loop()))
        return '{"lr": 0.5, "layers": 4}'

    p = sp("p", reply)
    with make_router({"p": p}) as router:
        assert router.generate_sync(ASK).text == '{"lr": 0.5, "layers": 4}'
        assert router.structured_sync(ASK, Plan).value.layers == 4
        threads = [threading.Thread(target=router.generate_sync, args=(ASK,)) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(set(loops)) == 1 and len(loops) == 5
    assert p.closed


def test_messages_that_are_no_list_of_dicts_are_a_usage_error() -> None:
    """`generate_sync("hi")` raised `ValueError: dictionary update sequence element #0 has length 1` from deep in the
    provider; the router's entries (generate, structured, call_model) say what messages must be."""
    from agentlab.core.errors import UsageError

    p = sp("p")
    with make_router({"p": p}) as router:
        for messages, got in [("hi", "got str"), (["hi"], "got a list holding a str")]:
            with pytest.raises(UsageError, match=r"messages must be a list of \{'role', 'content'\} dicts, " + got):
                router.generate_sync(messages)  # type: ignore[arg-type]
        with pytest.raises(UsageError, match="messages must be a list"):
            router.structured_sync("hi", Plan)  # type: ignore[arg-type]
        with pytest.raises(UsageError, match="messages must be a list"):
            run(router.call_model("p", "hi"))  # type: ignore[arg-type]
        assert router.generate_sync(ASK).text == "answer from p"
    assert len(p.calls) == 1  # nothing reached the provider but the good request


def test_aclose_closes_providers() -> None:
    p = sp("p")

    async def main() -> None:
        async with make_router({"p": p}) as router:
            await router.generate(ASK)

    run(main())
    assert p.closed
