"""The gateway's response cache (Cache-Control, tenants, metrics), client keys with limits and budgets (32 concurrent
clients never overspend), the usage endpoint, routing by request metadata, and keys kept out of every record."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from serve_helpers import UPSTREAM_KEY, upstream_llm

from agentlab.core.errors import ConfigError
from agentlab.serve.keys import load_keys
from agentlab.testing.server import Reply, ScriptedServer

ASK = [{"role": "user", "content": "Say something short."}]
KEY_A = "team-a-key-0123456789-SECRET-A"
KEY_B = "team-b-key-0123456789-SECRET-B"
KEY_ADMIN = "admin-key-0123456789-SECRET-ADMIN"
KEY_HASHED = "hashed-key-0123456789-SECRET-H"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTREAM_KEY", UPSTREAM_KEY)
    monkeypatch.setenv("TEAM_A_KEY", KEY_A)
    monkeypatch.setenv("TEAM_B_KEY", KEY_B)
    monkeypatch.setenv("ADMIN_KEY", KEY_ADMIN)


def keys_file(tmp_path: Path, *entries: dict[str, Any], **top: Any) -> Path:
    path = tmp_path / "keys.yaml"
    path.write_text(json.dumps({"keys": list(entries), **top}), encoding="utf-8")
    return path


def client(gw: Any, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0)


def metrics(gw: Any, key: str = KEY_ADMIN) -> str:
    return httpx.get(gw.base_url.removesuffix("/v1") + "/metrics", headers={"Authorization": f"Bearer {key}"}).text


CACHED = {"enabled": True}


# --------------------------------------------------------------------------- cache


def test_repeated_request_is_answered_from_the_cache_unless_no_cache(srv: ScriptedServer, gateway) -> None:  # noqa: ANN001
    srv.default("good", Reply(text="the good answer"))
    gw = gateway(upstream_llm(srv.base_url, ["good"], cache=CACHED))
    c = client(gw)
    first = c.chat.completions.create(model="good", messages=ASK, temperature=0)
    again = c.chat.completions.create(model="good", messages=ASK, temperature=0)
    assert again.choices[0].message.content == first.choices[0].message.content == "the good answer"
    assert srv.count("good") == 1
    assert again.model == "good" and again.model_extra["agentlab"]["attempts"] == [
        {"model": "good", "outcome": "cache_hit"}]
    streamed = c.chat.completions.create(model="good", messages=ASK, temperature=0, stream=True)
    assert "".join(ch.choices[0].delta.content or "" for ch in streamed if ch.choices) == "the good answer"
    assert srv.count("good") == 1
    c.chat.completions.create(model="good", messages=ASK, temperature=0,
                              extra_headers={"Cache-Control": "no-cache"})
    assert srv.count("good") == 2
    c.chat.completions.create(model="good", messages=ASK, temperature=0.8)  # sampled: never cached
    c.chat.completions.create(model="good", messages=ASK, temperature=0.8)
    assert srv.count("good") == 4
    text = metrics(gw)
    assert 'agentlab_cache_lookups_total{result="hit",route="good"} 2.0' in text
    assert 'agentlab_cache_lookups_total{result="miss",route="good"} 1.0' in text


def test_tenants_never_share_cached_answers(srv: ScriptedServer, gateway, tmp_path: Path) -> None:  # noqa: ANN001
    srv.default("good", Reply(text="the good answer"))
    path = keys_file(tmp_path, {"name": "a", "key_env": "TEAM_A_KEY"}, {"name": "b", "key_env": "TEAM_B_KEY"},
                     {"name": "a2", "key_sha256": hashlib.sha256(KEY_HASHED.encode()).hexdigest(), "tenant": "a"})
    gw = gateway(upstream_llm(srv.base_url, ["good"], cache=CACHED), keys_file=path)
    client(gw, KEY_A).chat.completions.create(model="good", messages=ASK, temperature=0)
    client(gw, KEY_B).chat.completions.create(model="good", messages=ASK, temperature=0)
    assert srv.count("good") == 2  # b is another tenant: its own call
    hit = client(gw, KEY_HASHED).chat.completions.create(model="good", messages=ASK, temperature=0)
    assert srv.count("good") == 2 and hit.model_extra["agentlab"]["attempts"][0]["outcome"] == "cache_hit"


# --------------------------------------------------------------------------- keys


def test_rate_limit_is_429_with_retry_after_and_routes_are_enforced(srv: ScriptedServer, gateway,  # noqa: ANN001
                                                                    tmp_path: Path) -> None:
    srv.default("good", Reply(text="fine"))
    srv.default("other", Reply(text="fine"))
    path = keys_file(tmp_path, {"name": "a", "key_env": "TEAM_A_KEY", "rpm": 2, "routes": ["good"]})
    gw = gateway(upstream_llm(srv.base_url, ["good", "other"]), keys_file=path)
    c = client(gw, KEY_A)
    with pytest.raises(openai.PermissionDeniedError, match="key 'a' may not use 'other'"):
        c.chat.completions.create(model="other", messages=ASK)
    for _ in range(2):
        c.chat.completions.create(model="good", messages=ASK)
    with pytest.raises(openai.RateLimitError, match="2 requests per minute") as err:
        c.chat.completions.create(model="good", messages=ASK)
    assert 1 <= int(err.value.response.headers["Retry-After"]) <= 60
    assert err.value.code == "rate_limit_exceeded"
    assert 'agentlab_key_refusals_total{key="a",reason="rpm"} 1.0' in metrics(gw, KEY_A)


def test_tokens_per_minute_limit(srv: ScriptedServer, gateway, tmp_path: Path) -> None:  # noqa: ANN001
    srv.default("good", Reply(text="one two three four five six seven eight nine ten"))
    path = keys_file(tmp_path, {"name": "a", "key_env": "TEAM_A_KEY", "tpm": 20})
    gw = gateway(upstream_llm(srv.base_url, ["good"]), keys_file=path)
    c = client(gw, KEY_A)
    c.chat.completions.create(model="good", messages=ASK)  # 3 + 10 tokens
    c.chat.completions.create(model="good", messages=ASK)  # 26: over the minute's 20 from now on
    with pytest.raises(openai.RateLimitError, match="20 tokens per minute") as err:
        c.chat.completions.create(model="good", messages=ASK)
    assert "Retry-After" in err.value.response.headers


def test_32_concurrent_clients_never_overspend_a_token_budget(srv: ScriptedServer, gateway,  # noqa: ANN001
                                                              tmp_path: Path) -> None:
    words = " ".join(["word"] * 20)
    srv.default("good", Reply(text=words, delay_s=0.5))
    max_tokens = 20
    bound = len(json.dumps(ASK).encode()) + len(b"[]") + 8 + 16 + max_tokens  # what one request reserves
    budget = 5 * bound + bound // 2
    path = keys_file(tmp_path, {"name": "a", "key_env": "TEAM_A_KEY", "max_tokens": budget},
                     {"name": "ops", "key_env": "ADMIN_KEY", "admin": True})
    gw = gateway(upstream_llm(srv.base_url, ["good"]), keys_file=path)

    async def one(aclient: openai.AsyncOpenAI) -> str:
        try:
            await aclient.chat.completions.create(model="good", messages=ASK, max_tokens=max_tokens)
            return "ok"
        except openai.RateLimitError as exc:
            assert exc.code == "insufficient_quota" and "token budget" in str(exc)
            return "refused"

    async def burst() -> list[str]:
        async with openai.AsyncOpenAI(base_url=gw.base_url, api_key=KEY_A, max_retries=0) as aclient:
            return await asyncio.gather(*(one(aclient) for _ in range(32)))

    outcomes = asyncio.run(burst())
    usage = httpx.get(gw.base_url + "/keys/usage", headers={"Authorization": f"Bearer {KEY_ADMIN}"}).json()
    row = next(r for r in usage["data"] if r["name"] == "a")
    spent = row["prompt_tokens"] + row["completion_tokens"]
    assert outcomes.count("ok") >= 1 and outcomes.count("refused") >= 1
    assert row["requests"] == outcomes.count("ok") == srv.count("good")
    assert spent <= budget and row["in_flight_tokens"] == 0
    # each answer used 3 + 20 tokens: without the reservation all 32 would have passed (32 * 23 > budget)
    assert 32 * 23 > budget
    assert row["completion_tokens"] == 20 * outcomes.count("ok")


def test_a_request_larger_than_the_whole_budget_says_so_not_spent(srv: ScriptedServer, gateway,  # noqa: ANN001
                                                                   tmp_path: Path) -> None:
    """With a budget below one request's bound the 429 said "has spent its token budget: 0 of 40 used": the key had
    spent nothing, and no request of that size could ever pass."""
    srv.default("good", Reply(text="one two"))
    path = keys_file(tmp_path, {"name": "a", "key_env": "TEAM_A_KEY", "max_tokens": 40},
                     {"name": "b", "key_env": "TEAM_B_KEY", "max_cost_usd": 0.01},
                     prices={"good": {"prompt": 1000.0, "completion": 1000.0}})
    gw = gateway(upstream_llm(srv.base_url, ["good"]), keys_file=path)
    hi = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.RateLimitError) as err:
        client(gw, KEY_A).chat.completions.create(model="good", messages=hi, max_tokens=5)
    message = str(err.value)
    assert err.value.code == "insufficient_quota" and "spent" not in message
    # the bound: the messages' JSON and the tools' (37 bytes), 8 a message, 16, then max_tokens
    assert ("key 'a' cannot make this request: it may use up to 66 tokens (an upper bound of its prompt, 61, plus "
            "max_tokens 5), more than the key's whole token budget of 40 (lower max_tokens") in message
    with pytest.raises(openai.RateLimitError) as err:  # the cost budget: $0.066 at $1000 per million
        client(gw, KEY_B).chat.completions.create(model="good", messages=hi, max_tokens=5)
    assert "key 'b' cannot make this request: it may cost up to $0.0660" in str(err.value)
    assert "more than the key's whole cost budget of $0.01" in str(err.value) and "spent" not in str(err.value)
    assert srv.requests == []
    assert 'agentlab_key_refusals_total{key="a",reason="budget"} 1.0' in metrics(gw, KEY_A)


def test_completions_and_embeddings_are_admitted_and_charged_as_chat(srv: ScriptedServer,  # noqa: ANN001
                                                                     tmp_path: Path) -> None:
    """/v1/completions and /v1/embeddings skipped a key's rpm and budget and charged nothing: 200s past the limit,
    and /v1/keys/usage never counted them."""
    from agentlab.core.llm.config import LLMConfig
    from agentlab.core.llm.providers.scripted import ScriptedProvider
    from agentlab.core.llm.scoring import RawChoice
    from agentlab.serve import Gateway, ServeConfig

    class Local(ScriptedProvider):  # a local provider's raw completions, without loading a model
        async def complete(self, model: str, request: Any, params: Any, timeout_s: float) -> list[RawChoice]:
            return [RawChoice("x y", "length", 5, 2) for _ in request.prompts]

    srv.default("emb", Reply())
    llm = upstream_llm(srv.base_url, ["emb"])
    llm["providers"]["loc"] = {"kind": "scripted"}
    llm["models"]["loc"] = {"provider": "loc", "model": "loc"}
    path = keys_file(tmp_path, {"name": "a", "key_env": "TEAM_A_KEY", "rpm": 3},
                     {"name": "b", "key_env": "TEAM_B_KEY", "max_tokens": 30},
                     {"name": "ops", "key_env": "ADMIN_KEY", "admin": True})
    cfg = ServeConfig(port=0, keys_file=path)
    with Gateway(cfg, LLMConfig.model_validate(llm), providers={"loc": Local("loc")}) as gw:
        def post(what: str, key: str, **body: Any) -> httpx.Response:
            return httpx.post(f"{gw.base_url}/{what}", json=body, headers={"Authorization": f"Bearer {key}"})

        assert post("completions", KEY_A, model="loc", prompt=["hi", "there"], max_tokens=2).status_code == 200
        assert post("embeddings", KEY_A, model="emb", input=["a cat sat", "x"]).status_code == 200
        chat = client(gw, KEY_A).chat.completions.create(model="emb", messages=ASK).usage
        for what, body in (("completions", {"model": "loc", "prompt": "hi"}), ("embeddings", {"model": "emb",
                                                                                                  "input": "x"})):
            refused = post(what, KEY_A, **body)
            assert refused.status_code == 429 and "3 requests per minute" in refused.text, what
        # a budget of 30: the bound of a 40-byte input passes it, nothing is sent
        before = len(srv.requests)
        refused = post("embeddings", KEY_B, model="emb", input="x" * 40)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "insufficient_quota"
        assert len(srv.requests) == before
        usage = httpx.get(gw.base_url + "/keys/usage", headers={"Authorization": f"Bearer {KEY_ADMIN}"}).json()
    row = next(r for r in usage["data"] if r["name"] == "a")
    # completions: 2 prompts of 5 + 2 tokens; embeddings: 4 words; and the chat answer
    assert chat is not None
    assert (row["requests"], row["prompt_tokens"], row["completion_tokens"]) == (
        3, 10 + 4 + chat.prompt_tokens, 4 + chat.completion_tokens)
    assert row["refused"] == {"rpm": 2} and row["in_flight_tokens"] == 0
    assert next(r for r in usage["data"] if r["name"] == "b")["in_flight_tokens"] == 0


def _budgeted(srv: ScriptedServer, gateway: Any, tmp_path: Path, model: str) -> Any:
    """A gateway on ``model`` whose key a has a budget of 1000 tokens (ops: the admin key)."""
    path = keys_file(tmp_path, {"name": "a", "key_env": "TEAM_A_KEY", "max_tokens": 1000},
                     {"name": "ops", "key_env": "ADMIN_KEY", "admin": True})
    return gateway(upstream_llm(srv.base_url, [model]), keys_file=path)


def _stream(gw: Any, model: str) -> Any:
    """Key a's streamed request to ``model`` (a context manager)."""
    return httpx.stream("POST", gw.base_url + "/chat/completions", headers={"Authorization": f"Bearer {KEY_A}"},
                        json={"model": model, "messages": ASK, "stream": True, "max_tokens": 50})


def test_a_stream_the_client_closes_is_charged_what_was_sent(srv: ScriptedServer, gateway,  # noqa: ANN001
                                                             tmp_path: Path) -> None:
    """A budgeted key that read a streamed answer and disconnected before its end was charged nothing (its
    reservation released as for an answer that never came): a whole answer but its last token, free."""
    srv.default("good", Reply(text="a b c d e f g h i j k l m n o p", chunk_delay_s=0.2))
    gw = _budgeted(srv, gateway, tmp_path, "good")
    with _stream(gw, "good") as raw:
        texts: list[str] = []
        for line in raw.iter_lines():
            if '"content":"' in line and '"content":""' not in line:
                texts.append(line)
                if len(texts) == 3:
                    break

    def row() -> dict[str, Any]:
        usage = httpx.get(gw.base_url + "/keys/usage", headers={"Authorization": f"Bearer {KEY_ADMIN}"}).json()
        return next(r for r in usage["data"] if r["name"] == "a")

    deadline = time.monotonic() + 5
    while row()["in_flight_tokens"] and time.monotonic() < deadline:
        time.sleep(0.05)
    spent = row()
    bound = len(json.dumps(ASK).encode()) + len(b"[]") + 8 + 16  # the prompt's bound, as admission counts it
    assert spent["in_flight_tokens"] == 0 and spent["requests"] == 1
    assert spent["prompt_tokens"] == bound and 3 <= spent["completion_tokens"] < 16


def test_usage_endpoint_needs_an_admin_key_and_shows_names_only(srv: ScriptedServer, gateway,  # noqa: ANN001
                                                                tmp_path: Path) -> None:
    srv.default("good", Reply(text="one two"))
    path = keys_file(tmp_path, {"name": "a", "key_env": "TEAM_A_KEY"},
                     {"name": "ops", "key_env": "ADMIN_KEY", "admin": True},
                     prices={"good": {"prompt": 1000.0, "completion": 2000.0}})
    gw = gateway(upstream_llm(srv.base_url, ["good"]), keys_file=path)
    client(gw, KEY_A).chat.completions.create(model="good", messages=ASK)
    refused = httpx.get(gw.base_url + "/keys/usage", headers={"Authorization": f"Bearer {KEY_A}"})
    assert refused.status_code == 403 and "not an admin key" in refused.text
    body = httpx.get(gw.base_url + "/keys/usage", headers={"Authorization": f"Bearer {KEY_ADMIN}"})
    row = next(r for r in body.json()["data"] if r["name"] == "a")
    assert (row["requests"], row["prompt_tokens"], row["completion_tokens"]) == (1, 3, 2)
    assert row["cost_usd"] == pytest.approx((3 * 1000 + 2 * 2000) / 1e6)
    assert KEY_A not in body.text and KEY_ADMIN not in body.text
    assert 'agentlab_key_tokens_total{key="a",type="completion"} 2.0' in metrics(gw)


def test_cost_budget_refuses_clearly_once_spent(srv: ScriptedServer, gateway, tmp_path: Path) -> None:  # noqa: ANN001
    srv.default("good", Reply(text="one two"))
    path = keys_file(tmp_path, {"name": "a", "key_env": "TEAM_A_KEY", "max_cost_usd": 0.2},
                     prices={"good": {"prompt": 1000.0, "completion": 1000.0}}, usage_file="usage.json")
    gw = gateway(upstream_llm(srv.base_url, ["good"]), keys_file=path)
    c = client(gw, KEY_A)
    answered = 0
    with pytest.raises(openai.RateLimitError, match=r"key 'a' has spent its cost budget"):
        for _ in range(100):
            c.chat.completions.create(model="good", messages=ASK, max_tokens=50)
            answered += 1
    assert 1 <= answered < 100
    gw.stop()
    saved = json.loads((tmp_path / "usage.json").read_text())
    assert saved["a"]["requests"] == answered and saved["a"]["cost_usd"] <= 0.2


def test_keys_never_appear_in_logs_events_or_errors(srv: ScriptedServer, gateway, tmp_path: Path,  # noqa: ANN001
                                                    caplog: pytest.LogCaptureFixture) -> None:
    from agentlab.core.runs import RunDir

    srv.default("good", Reply(text="fine"))
    path = keys_file(tmp_path, {"name": "a", "key_env": "TEAM_A_KEY", "rpm": 1, "routes": ["good"]},
                     {"name": "b", "key_env": "TEAM_B_KEY", "max_tokens": 10})
    run_dir = RunDir.create("serve", out=tmp_path / "run")
    caplog.set_level(logging.DEBUG)
    gw = gateway(upstream_llm(srv.base_url, ["good"], cache=CACHED), run_dir=run_dir, keys_file=path)
    bodies = []
    for key, model in [(KEY_A, "good"), (KEY_A, "good"), (KEY_A, "default"), (KEY_B, "good"),
                       (KEY_A + "x", "good"), (KEY_B[:-1], "good")]:
        r = httpx.post(gw.base_url + "/chat/completions", json={"model": model, "messages": ASK, "temperature": 0},
                       headers={"Authorization": f"Bearer {key}"})
        bodies.append(r.text + json.dumps(dict(r.headers)))
    assert [b[:8] for b in bodies][0].startswith("{")
    gw.stop()
    written = "".join(p.read_text(errors="replace") for p in (tmp_path / "run").rglob("*") if p.is_file())
    for secret in (KEY_A, KEY_B, KEY_B[:-1]):
        for where, text in (("responses", "".join(bodies)), ("logs", caplog.text), ("run folder", written)):
            assert secret not in text, f"a client key in the {where}"
    assert "key 'a'" in "".join(bodies)  # refusals name the key by its name


def test_bad_keys_file_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_KEY", raising=False)
    path = keys_file(tmp_path, {"name": "a", "key_env": "NOT_SET_KEY"})
    with pytest.raises(ConfigError, match=r"key 'a': key_env names NOT_SET_KEY, which is not set"):
        load_keys(path, [])
    literal = keys_file(tmp_path, {"name": "a", "key_env": "sk-live-abcdef0123456789"})
    with pytest.raises(ConfigError) as err:
        load_keys(literal, [])
    assert "key_env: a value of 24 characters is not an environment variable name" in str(err.value)
    assert "sk-live-abcdef0123456789" not in str(err.value)


@pytest.mark.parametrize("pasted", ["Xq3vR9kLmN2pT7wYz4bC8dF1gH5jK6sA0eU2iO9uQ1E", "AB12CD34EF56GH78", "team_a_key"])
def test_a_key_pasted_as_key_env_is_never_printed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  pasted: str) -> None:
    """A key pasted where the variable's name goes (secrets.token_urlsafe() without a '-' is a valid name) was
    printed in the error and its hint: only a conventional variable name is printed, else its length."""
    monkeypatch.delenv(pasted, raising=False)
    with pytest.raises(ConfigError) as err:
        load_keys(keys_file(tmp_path, {"name": "a", "key_env": pasted}), [])
    said = f"{err.value.message} {err.value.hint}"
    assert pasted not in said
    assert f"key_env names no set variable (a value of {len(pasted)} characters: if that is the key itself" in said


def test_key_env_is_checked_once_per_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """KeySpec asked env_name_problem twice for a bad key_env (once to test, once for the words)."""
    import agentlab.serve.keys as keys
    from agentlab.serve.config import env_name_problem

    calls: list[str] = []
    monkeypatch.setattr(keys, "env_name_problem", lambda value: calls.append(value) or env_name_problem(value))
    with pytest.raises(ConfigError, match="key_env: a value of 24 characters is not an environment variable name"):
        load_keys(keys_file(tmp_path, {"name": "a", "key_env": "sk-live-abcdef0123456789"}), [])
    assert calls == ["sk-live-abcdef0123456789"]


@pytest.mark.parametrize("value", ["OPENAI_API_KEY", "TEAM_A_KEY", "sk-live-abcdef0123456789",
                                   "Xq3vR9kLmN2pT7wYz4bC8dF1gH5jK6sA0eU2iO9uQ1E", "AB12CD34EF56GH78", "team_a_key"])
def test_serve_and_set_labels_show_the_same_variable_names(value: str) -> None:
    """`--set llm.api_key_env=OPENAI_API_KEY` was labelled `api_key_env=...` while serve printed that name: one rule
    (core.config.shown_env_name) now decides for both."""
    from agentlab.core.config import set_label, shown_env_name
    from agentlab.serve.config import unset_env

    shown = shown_env_name(value) is not None
    assert (value in unset_env(value)[0]) is shown
    assert (set_label(f"llm.api_key_env={value}") == f"--set llm.api_key_env={value}") is shown
    assert (set_label(f"keys.0.key_env={value}") == "--set keys.0.key_env=...") is not shown
    assert shown is (value in ("OPENAI_API_KEY", "TEAM_A_KEY"))


# --------------------------------------------------------------------------- routing by task


def test_metadata_routes_a_request_and_the_choice_is_counted(srv: ScriptedServer, gateway) -> None:  # noqa: ANN001
    srv.default("big", Reply(text="from big"))
    srv.default("small", Reply(text="from small"))
    routes = {"auto": {"classify": {"by": "metadata", "default": "chat", "choices": {"code": {}}}},
              "code": {"primary": ["big"]}, "chat": {"primary": ["small"]}}
    gw = gateway(upstream_llm(srv.base_url, ["big", "small"], routes))
    c = client(gw)
    reply = c.chat.completions.create(model="auto", messages=ASK, extra_body={"metadata": {"task": "code"}})
    assert reply.choices[0].message.content == "from big" and reply.model == "auto"
    assert c.chat.completions.create(model="auto", messages=ASK).choices[0].message.content == "from small"
    assert 'agentlab_route_choices_total{chosen="code",route="auto"} 1.0' in metrics(gw)
    assert "agentlab_model_judged_total" in metrics(gw)


# --------------------------------------------------------------------------- the usage file


def test_spend_saved_within_a_second_is_written_later_not_dropped(tmp_path: Path) -> None:
    """The usage file is written at most once a second: a spend within that second was only marked, and nothing
    wrote it until the next request or a clean stop (a kill -9 then lost it)."""
    path = keys_file(tmp_path, {"name": "a", "key_env": "TEAM_A_KEY", "max_tokens": 1000},
                     usage_file="usage.json")
    ring = load_keys(path, [])[0]
    key = ring.by_name["a"]

    async def two_requests() -> dict[str, Any]:
        for _ in range(2):
            ticket = ring.admit(key, "good", ["good"], 10, 10)
            assert ticket is not None
            ring.settle(ticket, "good", 3, 2)
        assert json.loads((tmp_path / "usage.json").read_text())["a"]["requests"] == 1  # at most once a second
        await asyncio.sleep(1.3)
        return json.loads((tmp_path / "usage.json").read_text())["a"]

    assert asyncio.run(two_requests()) == {"requests": 2, "prompt_tokens": 6, "completion_tokens": 4,
                                           "cost_usd": 0.0}


def test_a_usage_file_that_is_a_folder_is_refused_at_start(tmp_path: Path) -> None:
    """A folder passed the start (only is_file() was checked); then every answer of a limited key was a 500."""
    path = keys_file(tmp_path, {"name": "a", "key_env": "TEAM_A_KEY", "rpm": 5}, usage_file="usage.json")
    (tmp_path / "usage.json").mkdir()
    with pytest.raises(ConfigError) as err:
        load_keys(path, [])
    assert str(err.value) == f"{path}:1: usage_file: {tmp_path / 'usage.json'} is a folder, not a file"
    assert err.value.hint is not None and "usage_file: keys.usage.json" in err.value.hint


@pytest.mark.parametrize(("content", "message"), [
    ('{"a": {"requests": "x"}}', 'a.requests: "x" is not a whole number >= 0'),
    ('{"a": {"requests": 2, "prompt_tokens": -1000}}', "a.prompt_tokens: -1000 is not a whole number >= 0"),
    ('{"a": {"cost_usd": -1.5}}', "a.cost_usd: -1.5 is not a number >= 0"),
    ('{"a": 3}', "a: must be an object (requests, prompt_tokens, completion_tokens, cost_usd), not a number"),
    ('["a"]', "the keys' usage file must be a JSON object of each key's spend by its name, not a list"),
])
def test_a_usage_file_of_the_wrong_shape_is_one_clear_error(tmp_path: Path, content: str, message: str) -> None:
    """A count that was not a number was an internal ValueError (exit 1), a list an AttributeError, and negative
    counts were taken: more budget."""
    path = keys_file(tmp_path, {"name": "a", "key_env": "TEAM_A_KEY", "max_tokens": 100}, usage_file="usage.json")
    (tmp_path / "usage.json").write_text(content)
    with pytest.raises(ConfigError) as err:
        load_keys(path, [])
    assert str(err.value) == f"{tmp_path / 'usage.json'}: {message}"
    assert err.value.hint == "fix or remove it (each key's spend then starts at 0)"


def test_a_usage_file_keeps_spend_and_skips_keys_no_longer_there(tmp_path: Path) -> None:
    path = keys_file(tmp_path, {"name": "a", "key_env": "TEAM_A_KEY", "max_tokens": 100}, usage_file="usage.json")
    (tmp_path / "usage.json").write_text('{"gone": [1], "a": {"requests": 2, "prompt_tokens": 7, "cost_usd": 1}}')
    row = load_keys(path, [])[0].usage()[0]
    assert (row["requests"], row["prompt_tokens"], row["completion_tokens"], row["cost_usd"]) == (2, 7, 0, 1.0)


def test_a_stream_the_upstream_cuts_is_charged_what_was_sent(srv: ScriptedServer, gateway,  # noqa: ANN001
                                                             tmp_path: Path) -> None:
    """A stream cut by the upstream after text went out (no fallback then) was charged nothing, where one the
    client closed was charged what it was sent."""
    srv.default("cut", Reply(text="one two three four five six", cut_after_chunks=3))
    gw = _budgeted(srv, gateway, tmp_path, "cut")
    with _stream(gw, "cut") as raw:
        lines = list(raw.iter_lines())
    assert any('"content":"' in line for line in lines) and any("error" in line for line in lines)
    usage = httpx.get(gw.base_url + "/keys/usage", headers={"Authorization": f"Bearer {KEY_ADMIN}"}).json()
    spent = next(r for r in usage["data"] if r["name"] == "a")
    assert spent["in_flight_tokens"] == 0 and spent["requests"] == 1 and spent["completion_tokens"] >= 1
