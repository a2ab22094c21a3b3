"""The real `openai` SDK (sync, async, streaming) against the gateway in front of loopback upstreams: fallbacks,
a stream cut mid-way, 429 with Retry-After, structured output, limits, client keys, disconnects, metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import time

import httpx
import openai
import pytest
from serve_helpers import UPSTREAM_KEY, upstream_llm

from agentlab.testing.server import Reply, ScriptedServer

ASK = [{"role": "user", "content": "Say something short."}]
ROUTES = {"main": {"primary": ["down"], "fallback": ["good"]},
          "cutting": {"primary": ["cut"], "fallback": ["good"]},
          "early-cut": {"primary": ["cut0"], "fallback": ["good"]}}


@pytest.fixture(autouse=True)
def _upstream_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UPSTREAM_KEY", UPSTREAM_KEY)


@pytest.fixture
def gw(srv: ScriptedServer, gateway):  # noqa: ANN001, ANN201
    srv.default("good", Reply(text="the good answer"))
    srv.default("down", Reply(status=503))
    srv.default("cut", Reply(text="one two three four five six", cut_after_chunks=2))
    srv.default("cut0", Reply(text="never sent", cut_after_chunks=0))
    return gateway(upstream_llm(srv.base_url, ["good", "down", "cut", "cut0", "limited", "json"], ROUTES))


def client(gw, **kw) -> openai.OpenAI:  # noqa: ANN001
    return openai.OpenAI(base_url=gw.base_url, api_key=kw.pop("api_key", "unused"), max_retries=0, **kw)


def test_sync_sdk_falls_back_and_reports_who_answered(gw, srv: ScriptedServer) -> None:  # noqa: ANN001
    reply = client(gw).chat.completions.create(model="main", messages=ASK)
    assert reply.choices[0].message.content == "the good answer"
    # the name asked for comes back (OpenAI's API, LangChain's *_with_model_override tests); who answered: agentlab
    assert reply.model == "main" and reply.model_extra["agentlab"]["model"] == "good"
    assert reply.choices[0].finish_reason == "stop"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.total_tokens) == (3, 3, 6)
    meta = reply.model_extra["agentlab"]
    assert meta["route"] == "main" and meta["fallbacks"] == 1
    assert [a["model"] for a in meta["attempts"]] == ["down", "down", "good"]  # retries: 1, then the fallback
    assert srv.requests[-1]["messages"] == ASK and srv.requests[-1]["model"] == "good"
    # a model name asks that model only: no fallback
    with pytest.raises(openai.InternalServerError, match=r"every model failed \(down: server_error") as err:
        client(gw).chat.completions.create(model="down", messages=ASK)
    assert err.value.status_code == 502


def test_async_sdk_concurrent_requests_are_all_served(gw) -> None:  # noqa: ANN001
    async def go() -> list[str]:
        async with openai.AsyncOpenAI(base_url=gw.base_url, api_key="unused", max_retries=0) as aclient:
            replies = await asyncio.gather(*(aclient.chat.completions.create(
                model=name, messages=[{"role": "user", "content": f"question {i}"}])
                for i, name in enumerate(["main", "good", "default"] * 5)))
            return [r.choices[0].message.content for r in replies]

    assert asyncio.run(go()) == ["the good answer"] * 15


def test_streaming_sync_and_async_with_usage(gw) -> None:  # noqa: ANN001
    stream = client(gw).chat.completions.create(model="main", messages=ASK, stream=True,
                                                stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    # the upstream's three words came in one read here: pieces that arrive together go on as one chunk
    assert text == "the good answer" and len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 1
    assert {c.model for c in chunks} == {"main"}  # the name asked for; who answered: the last chunk's agentlab block
    assert chunks[-2].model_extra["agentlab"]["model"] == "good"
    assert chunks[-2].choices[0].finish_reason == "stop" and chunks[-1].usage.completion_tokens == 3

    async def go() -> str:
        async with openai.AsyncOpenAI(base_url=gw.base_url, api_key="unused", max_retries=0) as aclient:
            parts = []
            async for c in await aclient.chat.completions.create(model="early-cut", messages=ASK, stream=True):
                parts.extend(ch.delta.content or "" for ch in c.choices)
            return "".join(parts)

    # cut before its first token: the route falls back as for any failure, the client sees one whole answer
    assert asyncio.run(go()) == "the good answer"


def test_pieces_that_arrive_apart_stream_apart(gw, srv: ScriptedServer) -> None:  # noqa: ANN001
    """One chunk to the client per upstream piece when they arrive apart (pieces of one read are merged)."""
    srv.default("good", Reply(text="one two three four", chunk_delay_s=0.05))
    chunks = list(client(gw).chat.completions.create(model="good", messages=ASK, stream=True))
    assert [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content] == [
        "one ", "two ", "three ", "four"]


def test_a_stream_cut_mid_way_ends_with_an_error_not_a_short_answer(gw, srv: ScriptedServer) -> None:  # noqa: ANN001
    got = []
    with pytest.raises(openai.APIError, match="stream_cut|stream ended before"):
        for c in client(gw).chat.completions.create(model="cutting", messages=ASK, stream=True):
            got.extend(ch.delta.content or "" for ch in c.choices)
    assert "".join(got) == "one two "  # what the upstream sent before it died, and then an error
    assert srv.count("good") == 0  # no fallback once text went out: two answers would be spliced
    with httpx.stream("POST", gw.base_url + "/chat/completions", json={"model": "cutting", "messages": ASK,
                                                                       "stream": True}) as raw:
        body = raw.read().decode()
    assert raw.status_code == 200 and "event: error" in body and '"code": "stream_cut"' in body
    assert "data: [DONE]" not in body


def test_rate_limited_upstream_waits_retry_after_then_429(gw, srv: ScriptedServer) -> None:  # noqa: ANN001
    srv.script("limited", [Reply(status=429, headers={"Retry-After": "0.4"}), Reply(text="after the wait")])
    start = time.monotonic()
    reply = client(gw).chat.completions.create(model="limited", messages=ASK)
    assert reply.choices[0].message.content == "after the wait" and time.monotonic() - start >= 0.4
    # the only model keeps answering 429: the client gets a 429 (the SDK's RateLimitError)
    srv.default("limited", Reply(status=429, headers={"Retry-After": "0.05"}))
    with pytest.raises(openai.RateLimitError, match="rate_limited") as info:
        client(gw).chat.completions.create(model="limited", messages=ASK)
    assert srv.count("limited") == 4  # two tries each time (retries: 1)
    assert info.value.response.headers["retry-after"] == "1"  # the upstream's 0.05 s, in whole seconds


def test_retry_after_longer_than_allowed_falls_back(srv: ScriptedServer, gateway) -> None:  # noqa: ANN001
    srv.default("limited", Reply(status=429, headers={"Retry-After": "120"}))
    srv.default("good", Reply(text="from the fallback"))
    gw = gateway(upstream_llm(srv.base_url, ["limited", "good"], {"r": {"primary": ["limited"],
                                                                       "fallback": ["good"]}}))
    start = time.monotonic()
    raw = client(gw).chat.completions.with_raw_response.create(model="r", messages=ASK)
    reply = raw.parse()
    assert reply.model == "r" and reply.model_extra["agentlab"]["model"] == "good" and time.monotonic() - start < 5
    assert raw.headers["x-agentlab-model"] == "good" and raw.headers["x-agentlab-route"] == "r"
    assert srv.count("limited") == 1


def test_response_format_json_schema_goes_through_the_structured_path(gw, srv: ScriptedServer) -> None:  # noqa: ANN001
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "people": {"type": "integer"}},
              "required": ["city", "people"], "additionalProperties": False}
    srv.script("json", [Reply(text='{"city": "Oslo"}'), Reply(text='Sure: {"city": "Oslo", "people": 709000}')])
    fmt = {"type": "json_schema", "json_schema": {"name": "town", "schema": schema}}
    reply = client(gw).chat.completions.create(model="json", messages=ASK, response_format=fmt)
    assert json.loads(reply.choices[0].message.content) == {"city": "Oslo", "people": 709000}
    first, repair = srv.requests[-2], srv.requests[-1]
    assert first["response_format"]["json_schema"]["schema"] == schema
    assert "people" in repair["messages"][-1]["content"]  # the validation error went back to the model
    srv.script("json", [Reply(text='{"city": "Rome", "people": 2}')])
    chunks = list(client(gw).chat.completions.create(model="json", messages=ASK, response_format=fmt, stream=True))
    assert json.loads("".join(c.choices[0].delta.content or "" for c in chunks if c.choices)) == {
        "city": "Rome", "people": 2}
    with pytest.raises(openai.BadRequestError, match="invalid JSON schema"):
        client(gw).chat.completions.create(model="json", messages=ASK, response_format={
            "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "required": 3}}})


@pytest.mark.parametrize("body, status, says", [
    ({"model": "good", "messages": ASK, "max_tokens": 5000}, 400, "'max_tokens' must be between 1 and 4096"),
    ({"model": "good", "messages": ASK, "max_completion_tokens": 0}, 400, "'max_completion_tokens' must be between"),
    ({"model": "good", "messages": ASK, "n": 2}, 400, "'n' must be 1"),
    ({"model": "good", "messages": ASK, "logit_bias": {"42": 100}}, 400, "'logit_bias' is not served"),
    # refused as logprobs is, never ignored (a 200 without the log-probabilities asked for)
    ({"model": "good", "messages": ASK, "top_logprobs": 3}, 400, "'top_logprobs' is not served"),
    ({"model": "good", "messages": ASK, "web_search_options": {}}, 400, "'web_search_options' is not served"),
    # reach no model (as `reasoning` and `text.verbosity` on /v1/responses): were a 200 that ignored them
    ({"model": "good", "messages": ASK, "reasoning_effort": "low"}, 400, "'reasoning_effort' is not served"),
    ({"model": "good", "messages": ASK, "verbosity": "low"}, 400, "'verbosity' is not served"),
    # checked as `stream` is: "false" sent the usage chunk (a non-empty string is true), [] was taken as {}, and
    # max_tokens went unread when max_completion_tokens was given
    ({"model": "good", "messages": ASK, "stream": True, "stream_options": {"include_usage": "false"}}, 400,
     "'stream_options.include_usage' must be true or false"),
    ({"model": "good", "messages": ASK, "stream_options": []}, 400, "'stream_options' must be an object"),
    ({"model": "good", "messages": ASK, "max_completion_tokens": 3, "max_tokens": "abc"}, 400,
     "'max_tokens' must be an integer"),
    ({"model": "good", "messages": ASK, "max_completion_tokens": 3, "max_tokens": 5000}, 400,
     "'max_tokens' must be between 1 and 4096"),
    ({"model": "good", "messages": ASK, "tools": [{"type": "function"}]}, 400, "tools[0] must be"),
    # one thing to do (it also said "send plain chat messages")
    ({"model": "good", "messages": ASK, "functions": [{"name": "f"}]}, 400,
     "'functions': legacy function calling is not served by this gateway; send 'tools' instead"),
    ({"model": "good", "messages": [{"role": "tool", "content": "x"}]}, 400, "needs 'tool_call_id'"),
    # a result answering no call (OpenAI's API refuses it; a local model was given it and rambled)
    ({"model": "good", "messages": [*ASK, {"role": "tool", "tool_call_id": "zzz", "content": "x"}]}, 400,
     'no call has the id "zzz"'),
    ({"model": "good", "messages": []}, 400, "'messages' must be a non-empty list"),
    ({"model": "good", "messages": [{"role": "robot", "content": "x"}]}, 400, "messages[0].role must be one of"),
    ({"model": "good", "messages": ASK, "temperature": "hot"}, 400, "'temperature' must be a number"),
    ({"model": "nope", "messages": ASK}, 404, "model 'nope' is not served here"),
    ({"messages": ASK}, 400, "'model' must name a route or a model"),
    ({"model": "good", "messages": [{"role": "user", "content": "x" * 1_100_000}]}, 413, "accepts at most 1000000"),
])
def test_bad_requests_get_a_clear_4xx(gw, srv: ScriptedServer, body: dict, status: int, says: str) -> None:  # noqa: ANN001
    response = httpx.post(gw.base_url + "/chat/completions", json=body)
    assert response.status_code == status
    assert says in response.json()["error"]["message"]
    assert srv.requests == []  # nothing reached the upstream


def test_completions_fields_it_cannot_honour_or_read_are_a_400(gw, srv: ScriptedServer) -> None:  # noqa: ANN001
    """/v1/completions has no penalties (they were ignored: a 200 without them) and `stream` is typed as on chat."""
    from agentlab.serve.protocol import ApiError, parse_completion

    for field, value, says in (("presence_penalty", 0.5, "'presence_penalty' is not served on /v1/completions"),
                               ("frequency_penalty", -1, "'frequency_penalty' is not served on /v1/completions"),
                               ("frequency_penalty", "x", "'frequency_penalty' must be a number"),
                               ("stream", "false", "'stream' must be true or false")):
        with pytest.raises(ApiError, match=re.escape(says)) as err:
            parse_completion({"model": "m", "prompt": "hi", field: value}, max_tokens_limit=64, max_prompts=1)
        assert err.value.param == field and err.value.status == 400
    _, raw = parse_completion({"model": "m", "prompt": "hi", "presence_penalty": 0, "stream": False},
                              max_tokens_limit=64, max_prompts=1)  # no penalty, no stream: served
    assert raw.prompts == ["hi"]


def test_the_usage_chunk_is_sent_only_when_asked(gw) -> None:  # noqa: ANN001
    for options, usage in (({"include_usage": True}, True), ({"include_usage": False}, False), (None, False),
                           ({}, False)):
        body = {"model": "good", "messages": ASK, "stream": True, "stream_options": options}
        events = httpx.post(gw.base_url + "/chat/completions", json=body).text.split("\n\n")
        assert any('"usage"' in e for e in events) is usage, options


def test_a_body_that_is_not_json_is_400_saying_where(gw, srv: ScriptedServer) -> None:  # noqa: ANN001
    """Malformed JSON and Latin-1 text both got "the request body is not JSON (UTF-8)", with no position."""
    latin1 = json.dumps({"model": "good", "messages": [{"role": "user", "content": "caf\u00e9"}]},
                        ensure_ascii=False).encode("latin-1")
    for junk, says in ((b'{"model": "good", "messages": [}', "not JSON: Expecting value: line 1 column 32 (char 31)"),
                       (b"[1, 2", "not JSON: Expecting ',' delimiter: line 1 column 6 (char 5)"),
                       (latin1, f"not UTF-8 text: the byte 0xe9 at offset {latin1.index(0xE9)} "),
                       (b"\xff{not json", "not UTF-8 text: the byte 0xff at offset 0 "),
                       (b"", "the request body is empty, not JSON")):
        not_json = httpx.post(gw.base_url + "/chat/completions", content=junk)
        error = not_json.json()["error"]
        assert not_json.status_code == 400 and says in error["message"] and error["code"] == "invalid_json", error
    assert srv.requests == []


@pytest.mark.parametrize("path, body, param, says", [
    ("/chat/completions", {"messages": ASK, "max_token": 4}, "max_token", "(did you mean 'max_tokens'?)"),
    ("/chat/completions", {"messages": ASK, "foo": 1}, "foo", "supplied: 'foo'; /v1/chat/completions takes only"),
    # another endpoint's field: /v1/responses' is max_output_tokens
    ("/responses", {"input": "hi", "max_tokens": 4}, "max_tokens", "(did you mean 'max_output_tokens'?)"),
    ("/completions", {"prompt": "hi", "max_token": 4}, "max_token", "(did you mean 'max_tokens'?)"),
    ("/embeddings", {"input": "hi", "dimension": 4}, "dimension", "(did you mean 'dimensions'?)"),
])
def test_unknown_fields_are_a_400_naming_them(gw, srv: ScriptedServer, path: str, body: dict, param: str,  # noqa: ANN001
                                              says: str) -> None:
    """A typo or another endpoint's field was ignored: a 200 that did not do what was asked. OpenAI's API answers
    400 "Unrecognized request argument supplied"."""
    response = httpx.post(gw.base_url + path, json={"model": "good", **body})
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] == param and error["code"] == "unknown_parameter", error
    assert error["message"].startswith(f"unrecognized request argument supplied: '{param}'") and says in \
        error["message"]
    assert srv.requests == []


def test_fields_openai_documents_that_change_nothing_here_are_still_accepted(gw) -> None:  # noqa: ANN001
    from agentlab.serve.embeddings import parse_embeddings
    from agentlab.serve.protocol import parse_completion

    unused = {"user": "u1", "store": False, "service_tier": "auto", "prompt_cache_key": "k", "safety_identifier": "s",
              "modalities": ["text"], "metadata": {"a": "b"}}
    assert httpx.post(gw.base_url + "/chat/completions",
                      json={"model": "good", "messages": ASK, **unused}).status_code == 200
    assert httpx.post(gw.base_url + "/responses", json={"model": "good", "input": "hi", "user": "u1",
                                                        "service_tier": "auto", "metadata": {}}).status_code == 200
    parse_completion({"model": "m", "prompt": "hi", "user": "u1", "stream_options": None}, max_tokens_limit=64,
                     max_prompts=1)
    parse_embeddings({"model": "m", "input": "hi", "user": "u1"})


@pytest.mark.parametrize("body, says", [
    (b'{"model": "good", "messages": [], "max_tokens": ' + b"1" * 5000 + b"}", "a number in the request body is too "
     "long: integers may have at most 4300 digits"),
    (b"[" * 100_000 + b"]" * 100_000, "the request body is nested too deep to read"),
    (b"[" * 100_000, "the request body is nested too deep to read"),  # too deep to find out whether it closes
])
def test_json_too_large_for_the_parser_says_why(gw, srv: ScriptedServer, body: bytes, says: str) -> None:  # noqa: ANN001
    """Valid JSON that Python's parser refuses (an integer over its digits limit, nesting past its recursion limit)
    was answered "the request body is not JSON"."""
    response = httpx.post(gw.base_url + "/chat/completions", content=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert says in error["message"] and "not JSON" not in error["message"] and error["type"] == "invalid_request_error"
    assert srv.requests == []


def test_client_keys_wrong_or_missing_is_401(srv: ScriptedServer, gateway) -> None:  # noqa: ANN001
    srv.default("good", Reply(text="hello"))
    key = "client-key-0123456789abcdef"
    gw = gateway(upstream_llm(srv.base_url, ["good"]), client_keys=[key, "another-client-key-0123456789"])
    with pytest.raises(openai.AuthenticationError, match="wrong API key") as err:
        client(gw, api_key="client-key-0123456789abcdeX").chat.completions.create(model="good", messages=ASK)
    assert err.value.status_code == 401
    assert httpx.post(gw.base_url + "/chat/completions", json={"model": "good", "messages": ASK}).status_code == 401
    assert httpx.get(gw.base_url + "/models").status_code == 401
    assert httpx.get(gw.base_url.removesuffix("/v1") + "/metrics").status_code == 401
    assert httpx.get(gw.base_url.removesuffix("/v1") + "/health").status_code == 200  # for load balancers
    assert srv.requests == []
    assert client(gw, api_key=key).chat.completions.create(model="good", messages=ASK).choices[0].message.content \
        == "hello"
    assert [m.id for m in client(gw, api_key=key).models.list()] == ["default", "good"]


def _wait_for(check, timeout: float = 5.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return False


def test_client_disconnect_cancels_the_upstream_request(gw, srv: ScriptedServer) -> None:  # noqa: ANN001
    srv.default("good", Reply(text="slow answer", delay_s=5))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(gw.base_url + "/chat/completions", json={"model": "good", "messages": ASK}, timeout=0.5)
    assert _wait_for(lambda: srv.abandoned == ["good"])  # well before the upstream's 5 s
    srv.default("good", Reply(text="a b c d e f g h i j", chunk_delay_s=0.3))
    with httpx.stream("POST", gw.base_url + "/chat/completions",
                      json={"model": "good", "messages": ASK, "stream": True}) as raw:
        first = next(raw.iter_lines())
        assert first.startswith("data: ")
    assert _wait_for(lambda: srv.abandoned == ["good", "good"], timeout=3)
    # each cancelled upstream call is still an attempt, counted as `cancelled` (issue 39)
    root = gw.base_url.removesuffix("/v1")
    assert _wait_for(lambda: 'agentlab_model_attempts_total{model="good",outcome="cancelled"} 2.0'
                     in httpx.get(root + "/metrics").text, timeout=3)
    # and in the per-model stats (results.json's models, report.md's table): "calls 24, ok 24" left them out
    assert gw.router.stats()["good"]["errors"].get("cancelled") == 2


def test_a_client_gone_while_sending_its_body_is_a_disconnect_not_a_bug(gw, caplog: pytest.LogCaptureFixture  # noqa: ANN001
                                                                         ) -> None:
    """A client that left before its body was whole (before any disconnect watch starts) was an internal error: a
    traceback in the log, counted as internal_error."""
    for path in ("/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/completions"):
        with socket.create_connection(("127.0.0.1", gw.port)) as sock:
            sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         "Content-Length: 1000\r\n\r\n{\"model\": ".encode())
            time.sleep(0.1)  # the body's start read
    assert _wait_for(lambda: gw.handler.metrics.failed == {("-", "client_disconnected"): 4}), gw.handler.metrics.failed
    assert "Traceback" not in caplog.text and "internal error" not in caplog.text


def test_models_health_and_metrics(gw) -> None:  # noqa: ANN001
    models = {m["id"]: m["agentlab"] for m in httpx.get(gw.base_url + "/models").json()["data"]}
    assert models["main"] == {"kind": "route", "chain": ["down", "good"], "strategy": "single"}
    assert models["good"] == {"kind": "model", "chain": ["good"], "provider": "up"}
    assert client(gw).models.retrieve("main").model_extra["agentlab"]["chain"] == ["down", "good"]
    with pytest.raises(openai.NotFoundError):
        client(gw).models.retrieve("nope")
    c = client(gw)
    c.chat.completions.create(model="main", messages=ASK)
    list(c.chat.completions.create(model="main", messages=ASK, stream=True))
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="no-such-model", messages=ASK)
    root = gw.base_url.removesuffix("/v1")
    text = httpx.get(root + "/metrics").text
    assert 'agentlab_requests_total{model="good",route="main"} 2.0' in text
    assert 'agentlab_fallbacks_total{model="good",route="main"} 2.0' in text
    assert 'agentlab_request_errors_total{kind="not_found",route="-"} 2.0' in text
    assert 'agentlab_model_attempts_total{model="down",outcome="server_error"}' in text
    assert re.search(r'agentlab_request_duration_seconds_bucket\{le="\+Inf",model="good",route="main"\} 2.0', text)
    assert 'agentlab_time_to_first_token_seconds_count{model="good",route="main"} 1.0' in text
    assert 'agentlab_model_tokens_total{model="good",type="completion"} 6.0' in text
    health = httpx.get(root + "/health").json()
    assert health["status"] in ("ok", "degraded") and health["models"] == 6


def test_requests_in_flight_counts_a_stream_until_its_last_chunk(gw, srv: ScriptedServer) -> None:  # noqa: ANN001
    """``agentlab_requests_in_flight`` is documented and was never set: it read 0 under any load."""
    srv.default("good", Reply(text="one two three four five six seven eight", chunk_delay_s=0.25))
    root = gw.base_url.removesuffix("/v1")

    def gauge() -> str:
        return re.search(r"^agentlab_requests_in_flight (\S+)$", httpx.get(root + "/metrics").text, re.M).group(1)

    assert gauge() == "0.0"
    body = {"model": "good", "messages": ASK, "stream": True}
    with httpx.stream("POST", gw.base_url + "/chat/completions", json=body, timeout=30) as raw:
        lines = raw.iter_lines()
        assert next(lines).startswith("data: ")
        assert gauge() == "1.0"  # the endpoint has returned its stream; the stream goes on
        rest = list(lines)
    assert "data: [DONE]" in rest
    assert _wait_for(lambda: gauge() == "0.0")


def test_gateway_requests_are_traced_with_genai_attributes(gw, srv: ScriptedServer) -> None:  # noqa: ANN001
    """Through the gateway, one routed request is one `route` span with a child span per model attempt (GenAI
    semantic-convention attributes: model, tokens, outcome, fallback), exported to an in-memory exporter; no
    prompt text and no provider key in any span."""
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from agentlab.core import tracing

    exporter = InMemorySpanExporter()
    tracing.configure_tracing(exporter=exporter)
    try:
        reply = client(gw).chat.completions.create(model="main", messages=ASK)
        assert reply.choices[0].message.content == "the good answer"
        deadline = time.time() + 5
        while time.time() < deadline and not any(s.name == "route main" for s in exporter.get_finished_spans()):
            time.sleep(0.05)
        finished = exporter.get_finished_spans()
    finally:
        tracing.shutdown_tracing()
    request = next(s for s in finished if s.name == "route main")
    attempts = sorted((s for s in finished if s.parent is not None and s.parent.span_id == request.context.span_id),
                      key=lambda s: s.start_time)
    assert [s.attributes["gen_ai.request.model"] for s in attempts] == ["down", "down", "good"]
    assert [s.attributes["agentlab.outcome"] for s in attempts][-1] == "ok"
    assert request.attributes["agentlab.fallbacks"] == 1 and request.attributes["agentlab.model"] == "good"
    assert attempts[-1].attributes["agentlab.fallback"] is True
    good = attempts[-1].attributes
    assert good["gen_ai.operation.name"] == "chat" and good["gen_ai.response.model"] == "good"
    assert (good["gen_ai.usage.input_tokens"], good["gen_ai.usage.output_tokens"]) == (3, 3)
    assert attempts[0].attributes.get("error.type")
    text = json.dumps([dict(s.attributes or {}) for s in finished] + [[e.name for e in s.events] for s in finished],
                      default=str)
    assert "Say something short" not in text and UPSTREAM_KEY not in text


@pytest.mark.parametrize("log_calls", [True, False])
def test_log_calls_decides_the_per_attempt_lines(srv: ScriptedServer, gateway, tmp_path,  # noqa: ANN001
                                                 log_calls: bool) -> None:
    from agentlab.core.runs import RunDir

    srv.default("good", Reply(text="fine"))
    run_dir = RunDir.create("serve", out=tmp_path / "run")
    gw = gateway(upstream_llm(srv.base_url, ["good"]), run_dir=run_dir, log_calls=log_calls)
    client(gw).chat.completions.create(model="good", messages=ASK)
    events = (tmp_path / "run" / "events.jsonl")
    calls = [e for e in (events.read_text().splitlines() if events.is_file() else []) if '"llm_call"' in e]
    assert len(calls) == (1 if log_calls else 0)
    metrics = httpx.get(gw.base_url.removesuffix("/v1") + "/metrics").text  # /metrics counts either way
    assert 'agentlab_requests_total{model="good",route="good"} 1.0' in metrics


@pytest.mark.parametrize("path", ["/chat/completions", "/responses"])
def test_a_stream_the_gateway_stops_past_its_graceful_shutdown_ends_with_an_error(
        srv: ScriptedServer, gateway, path: str) -> None:  # noqa: ANN001
    """Ctrl-C mid-stream: past graceful_shutdown_s the stream was cut mid-sentence, no error event and its chunked
    body unterminated (curl exit 18), and the report blamed the client (client_disconnected)."""
    import threading

    srv.default("good", Reply(text=" ".join(["word"] * 40), chunk_delay_s=0.1))
    gw = gateway(upstream_llm(srv.base_url, ["good"]), graceful_shutdown_s=0.5)
    body = {"model": "good", "stream": True, **({"messages": ASK} if path.startswith("/chat") else {"input": "hi"})}
    with httpx.stream("POST", gw.base_url + path, json=body, timeout=10) as raw:
        lines = raw.iter_lines()
        next(lines)
        stopping = threading.Thread(target=gw.stop)
        stopping.start()
        rest = list(lines)  # read to the end: a cut chunked body raises RemoteProtocolError here
        stopping.join()
    text = "\n".join(rest)
    assert "event: error" in text and '"server_shutdown"' in text and "[DONE]" not in text
    assert gw.handler.metrics.failed == {("good", "shutdown"): 1}  # not client_disconnected


@pytest.mark.parametrize("path", ["/chat/completions", "/responses"])
def test_a_plain_request_the_gateway_stops_past_its_graceful_shutdown_is_a_json_503(
        srv: ScriptedServer, gateway, caplog: pytest.LogCaptureFixture, path: str) -> None:  # noqa: ANN001
    """Ctrl-C with a plain (not streamed) request in flight: past graceful_shutdown_s the client got a bare-text 500
    "Internal Server Error" (which the openai SDK retries), the log a traceback, and the report left it out. And
    uvicorn's own `ERROR:    Cancel 1 running task(s), timeout graceful shutdown exceeded` was printed besides the
    gateway's line for the answer cut, on this documented way to stop."""
    import logging
    import threading

    uvicorn_says: list[str] = []
    heard = logging.Handler()
    heard.emit = lambda record: uvicorn_says.append(record.getMessage())  # type: ignore[method-assign]
    srv.default("good", Reply(text="late", delay_s=5))
    gw = gateway(upstream_llm(srv.base_url, ["good"]), graceful_shutdown_s=0.5)
    said: list[str] = []
    gw.on_stopping = said.append  # `agentlab serve` prints it
    logging.getLogger("uvicorn.error").addHandler(heard)  # after the gateway: uvicorn's logging setup drops handlers
    body = {"model": "good", **({"messages": ASK} if path.startswith("/chat") else {"input": "hi"})}
    answer: list[httpx.Response] = []
    asking = threading.Thread(target=lambda: answer.append(httpx.post(gw.base_url + path, json=body, timeout=20)))
    asking.start()
    deadline = time.monotonic() + 30
    while not srv.requests and time.monotonic() < deadline:  # the request is in flight upstream
        time.sleep(0.02)
    try:
        gw.stop()
    finally:
        logging.getLogger("uvicorn.error").removeHandler(heard)
    asking.join()
    # the wait was silent: the user took it for a hang
    assert said == ["stopping: waiting up to 0.5 s for 1 request in flight (Ctrl-C again to stop now)"]
    assert answer[0].status_code == 503 and answer[0].json()["error"]["code"] == "server_shutdown"
    assert gw.handler.metrics.failed == {("good", "shutdown"): 1}
    assert "Traceback" not in caplog.text and "Exception in ASGI application" not in caplog.text
    assert "the gateway stopped before the answer ended (graceful_shutdown_s 0.5s passed)" in caplog.text
    assert not [line for line in uvicorn_says if "graceful shutdown exceeded" in line], uvicorn_says


def test_a_gateway_stopped_with_nothing_in_flight_says_no_stopping_line(srv: ScriptedServer, gateway) -> None:  # noqa: ANN001
    gw = gateway(upstream_llm(srv.base_url, ["good"]))
    said: list[str] = []
    gw.on_stopping = said.append
    gw.stop()
    assert said == []


def test_a_bad_tool_call_says_its_shape_with_balanced_braces() -> None:
    from agentlab.serve.protocol import ApiError, parse_chat

    with pytest.raises(ApiError) as err:
        parse_chat({"model": "m", "messages": [{"role": "assistant", "content": "", "tool_calls": [{"id": 1}]}]},
                   max_tokens_limit=64, max_messages=8)
    assert err.value.message.endswith('must be {"id": str, "type": "function", "function": {"name": str, '
                                      '"arguments": str}}')  # it ended `}}}`


SURROGATE = b'"\\ud800"'  # a JSON string holding a lone UTF-16 surrogate: Python's json reads it, no model can


@pytest.mark.parametrize("path, body, field", [
    ("/chat/completions", b'{"model": "good", "messages": [{"role": "user", "content": "hi"}, {"role": "user", '
     b'"content": "x \\udfff"}]}', "messages[1].content"),
    ("/chat/completions", b'{"model": "good", "stream": true, "messages": [{"role": "user", "content": "\\ud800"}]}',
     "messages[0].content"),
    ("/chat/completions", b'{"model": "good", "messages": [{"role": "user", "content": [{"type": "text", '
     b'"text": "\\ud800"}]}]}', "messages[0].content[0].text"),
    ("/responses", b'{"model": "good", "input": "\\ud800"}', "input"),
    ("/responses", b'{"model": "good", "stream": true, "input": [{"role": "user", "content": "\\udc00"}]}',
     "input[0].content"),
    ("/responses", b'{"model": "good", "input": "hi", "instructions": "\xed\xa0\x80"}', "instructions"),  # as UTF-8
    ("/embeddings", b'{"model": "good", "input": ["fine", "\\ud800"]}', "input[1]"),
    ("/completions", b'{"model": "good", "prompt": "\\ud800"}', "prompt"),
    ("/chat/completions", b'{"model": "good", "messages": [{"role": "user", "content": "hi"}], '
     b'"metadata": {"\\ud800": 1}}', "metadata"),
])
def test_text_with_a_lone_surrogate_is_a_400_naming_the_field_on_every_endpoint(
        gw, srv: ScriptedServer, path: str, body: bytes, field: str) -> None:  # noqa: ANN001
    """A lone surrogate ("\\ud800") was a 500 with a traceback (UnicodeEncodeError in llama.cpp's tokenizer, or in
    the upstream request) on chat, Responses and embeddings, streamed or not."""
    response = httpx.post(gw.base_url + path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == field and error["code"] == "invalid_request"
    assert "lone UTF-16 surrogate" in error["message"] and field in error["message"]
    assert srv.requests == []
    assert gw.handler.metrics.failed == {("-", "bad_request"): 1}
    # a surrogate pair is one character (an emoji), and an escaped backslash is text: both are served
    ok = httpx.post(gw.base_url + "/chat/completions", content=b'{"model": "good", "messages": [{"role": "user", '
                    b'"content": "\\ud83d\\ude00 \\\\ud800"}]}')
    assert ok.status_code == 200 and srv.requests[-1]["messages"][0]["content"] == "\U0001f600 \\ud800"


@pytest.mark.parametrize("path, body, field", [
    ("/chat/completions", '{"model": "good", "messages": MSGS, "temperature": NaN}', "temperature"),
    ("/chat/completions", '{"model": "good", "messages": MSGS, "top_p": NaN, "stream": true}', "top_p"),
    ("/chat/completions", '{"model": "good", "messages": MSGS, "presence_penalty": NaN}', "presence_penalty"),
    ("/chat/completions", '{"model": "good", "messages": MSGS, "frequency_penalty": -Infinity}', "frequency_penalty"),
    ("/chat/completions", '{"model": "good", "messages": MSGS, "temperature": 1e999}', "temperature"),
    ("/responses", '{"model": "good", "input": "hi", "temperature": NaN}', "temperature"),
    ("/responses", '{"model": "good", "input": "hi", "top_p": NaN, "stream": true}', "top_p"),
    ("/responses", '{"model": "good", "input": "hi", "metadata": {"score": NaN}}', "metadata.score"),
    ("/completions", '{"model": "good", "prompt": "hi", "temperature": NaN}', "temperature"),
    ("/embeddings", '{"model": "good", "input": "hi", "dimensions": Infinity}', "dimensions"),
])
def test_nan_and_infinity_are_a_400_naming_the_field(gw, srv: ScriptedServer, path: str, body: str,
                                                     field: str) -> None:  # noqa: ANN001
    """`temperature: NaN` (Python's json reads the literal) was served on chat (NaN passes every range check) and
    a 500 on /v1/responses (its echo of temperature is not JSON)."""
    response = httpx.post(gw.base_url + path, content=body.replace("MSGS", json.dumps(ASK)))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == field and f"'{field}' is not a finite number" in error["message"]
    assert srv.requests == []


def test_the_parsers_refuse_nan_numbers_themselves() -> None:
    from agentlab.serve.protocol import ApiError, parse_chat, parse_completion

    for key in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
        with pytest.raises(ApiError, match=f"'{key}' must be between .*, got NaN") as err:
            parse_chat({"model": "m", "messages": ASK, key: float("nan")}, max_tokens_limit=64, max_messages=8)
        assert err.value.param == key
    with pytest.raises(ApiError, match="'temperature' must be between 0 and 2, got NaN"):
        parse_completion({"model": "m", "prompt": "hi", "temperature": float("nan")}, max_tokens_limit=64,
                         max_prompts=1)


def test_internal_errors_are_counted_in_metrics_and_the_report(gw, srv: ScriptedServer,  # noqa: ANN001
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """A bug's 500 was in no count: not /metrics' agentlab_request_errors_total, not results.json nor report.md."""
    from agentlab.serve import app
    from agentlab.serve.report import render

    caplog.set_level(logging.ERROR, logger="agentlab.serve")

    async def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"a bug holding {UPSTREAM_KEY}")

    monkeypatch.setattr(gw.router, "generate", boom)
    monkeypatch.setattr(gw.router.providers["up"], "embed", boom)
    monkeypatch.setattr(gw.router.providers["up"], "complete", boom, raising=False)
    for path, body in [("/chat/completions", {"messages": ASK}), ("/chat/completions", {"messages": ASK,
                                                                                       "stream": True}),
                       ("/responses", {"input": "hi"}), ("/responses", {"input": "hi", "stream": True}),
                       ("/embeddings", {"input": "hi"}), ("/completions", {"prompt": "hi"})]:
        response = httpx.post(gw.base_url + path, json={"model": "good", **body})
        assert response.status_code == 500, (path, response.text)
        assert response.json()["error"]["code"] == "internal_error" and UPSTREAM_KEY not in response.text
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "agentlab.serve")
    assert logged.count("Traceback") == 6 and "RuntimeError: a bug holding ***" in logged  # scrubbed of keys
    assert UPSTREAM_KEY not in logged
    monkeypatch.undo()
    # a bug while the answer is sent: one error, not an answer too
    monkeypatch.setattr(app, "completion_body", lambda *a, **k: 1 / 0)
    assert httpx.post(gw.base_url + "/chat/completions", json={"model": "good", "messages": ASK}).status_code == 500
    monkeypatch.setattr(app, "finish_of", lambda *a, **k: 1 / 0)  # in a stream: an error event, no [DONE]
    streamed = httpx.post(gw.base_url + "/chat/completions", json={"model": "good", "messages": ASK, "stream": True})
    assert "event: error" in streamed.text and '"internal_error"' in streamed.text and "[DONE]" not in streamed.text
    metrics = httpx.get(gw.base_url.removesuffix("/v1") + "/metrics").text
    assert 'agentlab_request_errors_total{kind="internal_error",route="good"} 8.0' in metrics
    assert 'agentlab_requests_total{model="good",route="good"}' not in metrics
    results = gw.results()  # what results.json gets on stop; report.md renders it
    assert results["failed"] == 8 and results["answered"] == 0
    assert results["errors"] == [{"route": "good", "kind": "internal_error", "requests": 8}]
    assert "| good | internal_error | 8 |" in render(results)


def test_a_provider_whose_key_is_unset_is_said_at_start_and_in_its_502(monkeypatch: pytest.MonkeyPatch,
                                                                        gateway) -> None:  # noqa: ANN001
    """With the providers' key variables unset, serve started with no note and a request failed 502 on a connection
    error that did not mention the key (llm-bench said "and X, its API key, is not set")."""
    from agentlab.core.llm.providers.openai import unset_key_hint

    monkeypatch.delenv("AGENTLAB_TEST_UNSET_KEY", raising=False)
    with socket.socket() as closed:  # a port nothing listens on: offline, as an unreachable provider is
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    llm = {"providers": {"far": {"kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1",
                                 "api_key_env": "AGENTLAB_TEST_UNSET_KEY"},
                         "canned": {"kind": "scripted", "replies": ["hi"]}},
           "models": {"far-model": {"provider": "far", "model": "m"}, "canned": {"provider": "canned", "model": "c"}},
           "routes": {"both": {"primary": ["far-model"], "fallback": ["canned"]}}, "timeout_s": 5, "retries": 0}
    gw = gateway(llm)
    said = f"provider 'far': {unset_key_hint('AGENTLAB_TEST_UNSET_KEY')}"
    assert [n for n in gw.notes() if n.startswith(said)] == [f"{said}; until then its models (far-model) fail (502) "
                                                             "or fall back"]
    response = httpx.post(gw.base_url + "/chat/completions", json={"model": "far-model", "messages": ASK})
    assert response.status_code == 502 and response.json()["error"]["message"].endswith(said), response.text
    assert httpx.post(gw.base_url + "/embeddings", json={"model": "far-model", "input": "x"}).json()["error"][
        "message"].endswith(said)
    # a fallback that answers: no error to say it in; a model of a provider with its key: no hint
    assert httpx.post(gw.base_url + "/chat/completions", json={"model": "both", "messages": ASK}).status_code == 200
    monkeypatch.setenv("AGENTLAB_TEST_UNSET_KEY", "sk-set-now-0123456789")
    assert not [n for n in gateway(llm).notes() if "its API key" in n]


def test_the_report_counts_in_words_and_says_what_its_model_table_counts(gw) -> None:  # noqa: ANN001
    """report.md said "1 requests", and "31 answered" above a model table whose ok column added up to 30: an
    embeddings request is answered outside the router, whose calls that table shows."""
    from agentlab.serve.report import render

    httpx.post(gw.base_url + "/chat/completions", json={"model": "good", "messages": ASK})
    report = render(gw.results())
    assert "1 request, 1 answered, 0 failed, 0 fallbacks." in report
    assert "Model calls of chat and responses requests" in report and "embeddings and completions requests are " \
        "counted in the tables above only" in report


class _LosesOneCancel:
    """A local model's stream that lets its first cancel pass unheeded and generates on, as a llama.cpp stream does
    when the cancel lands with a token (Python 3.11's asyncio.wait_for returns that token and drops the cancel).
    ``first_s``: the wait before the first token (a model's load and prompt evaluation)."""

    supports_stream = True

    def __init__(self, first_s: float):
        import threading

        self.first_s = first_s
        self.lost = 0
        self.tokens = 0
        self.outcome: str | None = None
        self.ended = threading.Event()

    async def generate(self, model: str, messages: list, params: object, timeout_s: float) -> None:
        raise AssertionError("streamed only")

    async def stream(self, model: str, messages: list, params: object, timeout_s: float):  # noqa: ANN201
        from agentlab.core.llm.types import Completion, StreamDelta, Usage

        try:
            for i in range(150):
                try:
                    await asyncio.sleep(self.first_s if i == 0 else 0.02)
                except asyncio.CancelledError:
                    if self.lost:
                        raise
                    self.lost += 1
                self.tokens += 1
                yield StreamDelta(f"w{i} ")
            self.outcome = "finished"
            yield Completion(text="...", model=model, usage=Usage(3, self.tokens), finish_reason="length")
        finally:
            self.outcome = self.outcome or "stopped"
            self.ended.set()


@pytest.mark.parametrize("first_s", [0.02, 1.0], ids=["mid-stream", "before-the-first-token"])
def test_a_stream_whose_client_left_stops_even_when_the_model_lost_the_cancel(first_s: float) -> None:
    """Once, under load, a streamed request whose client disconnected did not stop a local generation: events.jsonl
    said ok, 800 tokens, 38 s, and the next request waited that long. The cancel was lost in the model's stream;
    the gateway cancels again on the next piece that comes for nobody."""
    from agentlab.core.llm.config import LLMConfig
    from agentlab.serve import Gateway, ServeConfig

    model = _LosesOneCancel(first_s)
    llm = LLMConfig.model_validate({"providers": {"local": {"kind": "scripted", "replies": ["x"]}},
                                    "models": {"slow": {"provider": "local", "model": "slow"}}, "routes": {},
                                    "timeout_s": 60, "retries": 0})
    with Gateway(ServeConfig(port=0), llm, providers={"local": model}) as gw:
        body = {"model": "slow", "messages": ASK, "stream": True}
        if first_s < 0.5:  # the first words read, then the client goes
            with httpx.stream("POST", gw.base_url + "/chat/completions", json=body, timeout=30) as raw:
                assert next(raw.iter_lines()).startswith("data: ")
        else:  # gone while the model is still on its prompt
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(gw.base_url + "/chat/completions", json=body, timeout=first_s / 4)
        assert model.ended.wait(30)
        assert model.lost == 1 and model.outcome == "stopped" and model.tokens < 150
        assert _wait_for(lambda: gw.router.stats()["slow"]["errors"].get("cancelled") == 1)
        assert gw.router.stats()["slow"]["successes"] == 0
