"""The router's response cache (core/llm/cache.py) and routing by task (core/llm/classify.py), over scripted models."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest

from agentlab.core.llm import GenParams, LLMConfig, Router, ScriptedProvider
from agentlab.core.llm.providers.scripted import Calls

ASK = [{"role": "user", "content": "what is two plus two"}]


def counting(name: str) -> ScriptedProvider:
    counter = itertools.count(1)
    return ScriptedProvider(name, replies=[lambda model, messages, params: f"{name} answer {next(counter)}"])


def make(providers: dict[str, ScriptedProvider], routes: dict[str, Any] | None = None,
         events: list[tuple[str, dict[str, Any]]] | None = None, **settings: Any) -> Router:
    config = LLMConfig.model_validate({
        "providers": {name: {"kind": "scripted"} for name in providers},
        "models": {name: {"provider": name, "model": f"{name}-id"} for name in providers},
        "routes": routes or {"default": {"primary": list(providers)}},
        **settings,
    })
    on_event = (lambda kind, **data: events.append((kind, data))) if events is not None else None
    return Router(config, dict(providers), on_event)


GREEDY = GenParams(temperature=0.0, max_tokens=16)

# --------------------------------------------------------------------------- cache


def test_cache_is_off_by_default_every_call_reaches_the_model() -> None:
    router = make({"a": counting("a")})
    assert router.cache is None
    first = asyncio.run(router.generate(ASK, params=GREEDY)).text
    assert asyncio.run(router.generate(ASK, params=GREEDY)).text != first


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_repeated_greedy_request_is_a_hit_with_events(tmp_path: Path, backend: str) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    cache = {"enabled": True, "backend": backend, "path": str(tmp_path / "c.sqlite")}
    router = make({"a": counting("a")}, events=events, cache=cache)

    async def both() -> tuple[Any, Any]:
        return await router.generate(ASK, params=GREEDY), await router.generate(ASK, params=GREEDY)

    first, second = asyncio.run(both())
    assert second.text == first.text == "a answer 1"
    assert [(a.model, a.outcome) for a in second.attempts] == [("a", "cache_hit")]
    assert second.completion.usage.completion_tokens == first.completion.usage.completion_tokens
    assert [d["result"] for k, d in events if k == "cache"] == ["miss", "hit"]
    assert sum(1 for k, d in events if k == "llm_call") == 1
    if backend == "sqlite":  # on disk: a second router (another command) naming the same file hits
        other = make({"a": counting("a")}, cache=cache)
        assert asyncio.run(other.generate(ASK, params=GREEDY)).attempts[0].outcome == "cache_hit"


def test_key_covers_messages_params_tools_route_and_tenant() -> None:
    router = make({"a": counting("a")}, routes={"default": {"primary": ["a"]}, "other": {"primary": ["a"]}},
                  cache={"enabled": True})

    def text(*args: Any, **kw: Any) -> str:
        return asyncio.run(router.generate(*args, **kw)).text

    base = text(ASK, params=GREEDY)
    assert text(ASK, params=GREEDY) == base
    assert text([{"role": "user", "content": "what is two plus three"}], params=GREEDY) != base
    assert text(ASK, params=GenParams(temperature=0.0, max_tokens=17)) != base
    assert text(ASK, params=GenParams(temperature=0.0, max_tokens=16, stop=["."])) != base
    assert text(ASK, "other", params=GREEDY) != base
    tenant_b = text(ASK, params=GREEDY, tenant="b")
    assert tenant_b != base  # another tenant never gets the first one's answer
    assert text(ASK, params=GREEDY, tenant="b") == tenant_b
    assert text(ASK, params=GREEDY, use_cache=False) not in {base, tenant_b}  # the per-request opt-out


def twice(router: Router, params: GenParams) -> tuple[str, str]:
    return asyncio.run(router.generate(ASK, params=params)).text, asyncio.run(router.generate(ASK, params=params)).text


def test_sampled_requests_are_not_cached_unless_seeded_or_configured() -> None:
    router = make({"a": counting("a")}, cache={"enabled": True})
    hot = GenParams(temperature=0.7)
    assert asyncio.run(router.generate(ASK, params=hot)).text != asyncio.run(router.generate(ASK, params=hot)).text
    unset = GenParams()  # no temperature anywhere: the backend's default, taken as sampled
    assert asyncio.run(router.generate(ASK, params=unset)).text != asyncio.run(router.generate(ASK, params=unset)).text
    seeded = GenParams(temperature=0.7, seed=3)
    assert twice(router, seeded)[0] == twice(router, seeded)[1]
    allowed = make({"a": counting("a")}, cache={"enabled": True, "cache_sampled": True})
    assert twice(allowed, hot)[0] == twice(allowed, hot)[1]


def test_model_default_temperature_zero_makes_a_request_cacheable() -> None:
    config = LLMConfig.model_validate({
        "providers": {"a": {"kind": "scripted"}},
        "models": {"a": {"provider": "a", "model": "a-id", "params": {"temperature": 0}}},
        "cache": {"enabled": True}})
    router = Router(config, {"a": counting("a")})
    assert asyncio.run(router.generate(ASK)).text == asyncio.run(router.generate(ASK)).text


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
def test_ttl_and_size_bounds(tmp_path: Path, backend: str) -> None:
    now = [1000.0]
    router = make({"a": counting("a")}, cache={"enabled": True, "backend": backend, "ttl_s": 10,
                                                 "max_entries": 2, "path": str(tmp_path / f"{backend}.db")})
    assert router.cache is not None
    router.cache.clock = lambda: now[0]
    first = asyncio.run(router.generate(ASK, params=GREEDY)).text
    now[0] += 5
    assert asyncio.run(router.generate(ASK, params=GREEDY)).text == first
    now[0] += 6  # 11 s after it was stored: expired
    second = asyncio.run(router.generate(ASK, params=GREEDY)).text
    assert second != first
    for i in range(3):  # three more distinct requests: only two entries are kept
        now[0] += 0.1
        asyncio.run(router.generate([{"role": "user", "content": f"q{i}"}], params=GREEDY))
    assert len(router.cache) == 2
    assert asyncio.run(router.generate(ASK, params=GREEDY)).text != second  # the oldest went first


def test_stream_hit_hands_the_answer_on_and_tool_answers_are_cached() -> None:
    router = make({"a": counting("a")}, cache={"enabled": True})
    asyncio.run(router.generate(ASK, params=GREEDY, stream=True))
    pieces: list[str] = []
    hit = asyncio.run(router.generate(ASK, params=GREEDY, stream=True, on_delta=lambda m, t: pieces.append(t)))
    assert hit.attempts[0].outcome == "cache_hit" and "".join(pieces) == hit.text == "a answer 1"
    tools = [{"type": "function", "function": {"name": "add", "parameters": {
        "type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}}}]
    provider = ScriptedProvider("t", replies=[Calls([("add", {"x": 1})])])
    with_tools = make({"t": provider}, cache={"enabled": True})
    params = GenParams(temperature=0.0, tools=tools)
    asyncio.run(with_tools.generate(ASK, params=params))
    again = asyncio.run(with_tools.generate(ASK, params=params))
    assert [c.name for c in again.completion.tool_calls] == ["add"] and len(provider.calls) == 1


def test_llm_bench_path_never_reads_the_cache() -> None:
    router = make({"a": counting("a")}, cache={"enabled": True})
    asyncio.run(router.generate(ASK, params=GREEDY))
    assert asyncio.run(router.call_model("a", ASK, GREEDY)).text == "a answer 2"


# --------------------------------------------------------------------------- routing by task

ROUTES = {
    "auto": {"classify": {"by": "keywords", "default": "chat", "choices": {
        "code": {"keywords": ["python", "stack trace"]}, "math": {"keywords": ["integral", "sum"]}}}},
    "code": {"primary": ["big"]},
    "math": {"primary": ["mid"]},
    "chat": {"primary": ["small"]},
}


def test_keywords_pick_the_route_and_the_choice_is_an_event() -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    router = make({"big": counting("big"), "mid": counting("mid"), "small": counting("small")}, ROUTES, events)

    def ask(text: str) -> str:
        return asyncio.run(router.generate([{"role": "user", "content": text}], "auto")).model

    assert ask("Why does my Python script fail?") == "big"
    assert ask("here is the STACK TRACE") == "big"
    assert ask("the integral of x") == "mid"
    assert ask("summary of the day") == "small"  # 'sum' only as a whole word
    choices = [d for k, d in events if k == "route_choice"]
    assert choices[0] == {"route": "auto", "chosen": "code", "by": "keywords", "reason": "keyword 'python'"}
    assert choices[-1]["chosen"] == "chat" and choices[-1]["reason"] == "no keyword matched"


def test_metadata_rule() -> None:
    routes = {**ROUTES, "auto": {"classify": {"by": "metadata", "field": "task", "default": "chat", "choices": {
        "code": {"metadata": ["coding"]}, "math": {}}}}}
    router = make({"big": counting("big"), "mid": counting("mid"), "small": counting("small")}, routes)
    assert asyncio.run(router.generate(ASK, "auto", metadata={"task": "coding"})).model == "big"
    assert asyncio.run(router.generate(ASK, "auto", metadata={"task": "math"})).model == "mid"
    assert asyncio.run(router.generate(ASK, "auto", metadata={"task": "poetry"})).model == "small"
    assert asyncio.run(router.generate(ASK, "auto")).model == "small"


def test_small_model_rule_is_asked_with_an_enum_schema_and_falls_back_to_default() -> None:
    seen: list[GenParams] = []

    def classifier(model: str, messages: Any, params: GenParams) -> str:
        seen.append(params)
        return '{"route": "math"}' if "integral" in messages[-1]["content"] else "no idea"

    routes = {**ROUTES, "auto": {"classify": {"by": "model", "model": "judge", "default": "chat", "choices": {
        "code": {"description": "programming"}, "math": {"description": "mathematics"}}}}}
    router = make({"big": counting("big"), "mid": counting("mid"), "small": counting("small"),
                   "judge": ScriptedProvider("judge", replies=[classifier])}, routes)
    assert asyncio.run(router.generate([{"role": "user", "content": "an integral"}], "auto")).model == "mid"
    assert asyncio.run(router.generate([{"role": "user", "content": "hello"}], "auto")).model == "small"
    assert seen[0].json_schema["schema"]["properties"]["route"]["enum"] == ["code", "math"]
    assert router.stats()["judge"]["calls"] == 2


def test_classify_config_errors_name_the_field() -> None:
    from pydantic import ValidationError

    bad = {**ROUTES, "auto": {"classify": {"by": "keywords", "default": "nowhere", "choices": {
        "code": {"keywords": ["x"]}}}}}
    with pytest.raises(ValidationError, match=r"routes.auto.classify.default: unknown route 'nowhere'"):
        make({"big": counting("big"), "mid": counting("mid"), "small": counting("small")}, bad)


def test_best_of_n_judge_wins_are_quality_stats() -> None:
    providers = {"a": counting("a"), "b": counting("b"), "j": ScriptedProvider(
        "j", replies=['{"best": 2, "reason": "b is better"}'])}
    router = make(providers, {"default": {"primary": ["a", "b"], "strategy": "best_of_n", "judge": "j"}})
    result = asyncio.run(router.generate(ASK))
    assert result.model == "b"
    stats = router.stats()
    assert (stats["a"]["judged"], stats["a"]["judge_wins"]) == (1, 0)
    assert (stats["b"]["judged"], stats["b"]["judge_wins"]) == (1, 1)
