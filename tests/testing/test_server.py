"""The scripted OpenAI-compatible server, exercised over real loopback HTTP with httpx."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from agentlab.testing.server import (
    DEMO_TEXT,
    Reply,
    ScriptedServer,
    demo_server,
    spawn_server_process,
    split_words,
)

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "say hello to me"}]


@pytest.fixture
def client(server: ScriptedServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=5) as c:
        yield c


def chat(client: httpx.Client, model: str, **extra: Any) -> httpx.Response:
    return client.post("/chat/completions", json={"model": model, "messages": MESSAGES, **extra})


def stream_events(client: httpx.Client, model: str, include_usage: bool = True) -> list[str]:
    """The raw ``data:`` payloads of one streamed completion."""
    body = {"model": model, "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": include_usage}}
    with client.stream("POST", "/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        return [line[len("data: "):] for line in resp.iter_lines() if line.startswith("data: ")]


def test_health_and_models(srv: ScriptedServer, client: httpx.Client) -> None:
    srv.default("b-model", Reply())
    srv.script("a-model", [Reply()])
    assert client.get(srv.base_url.removesuffix("/v1") + "/health").json() == {"status": "ok"}
    models = client.get("/models").json()
    assert [m["id"] for m in models["data"]] == ["a-model", "b-model"]


def test_non_stream_reply_and_usage(srv: ScriptedServer, client: httpx.Client) -> None:
    srv.default("m", Reply(text="hello there  friend", finish_reason="length"))
    data = chat(client, "m").json()
    assert data["object"] == "chat.completion"
    assert data["model"] == "m"
    assert data["choices"][0]["message"] == {"role": "assistant", "content": "hello there  friend"}
    assert data["choices"][0]["finish_reason"] == "length"
    # prompt: "be brief" (2) + "say hello to me" (4); completion: 3 words
    assert data["usage"] == {"prompt_tokens": 6, "completion_tokens": 3, "total_tokens": 9}


def test_stream_deltas_usage_and_done(srv: ScriptedServer, client: httpx.Client) -> None:
    text = "  one two\tthree\n four  "
    srv.default("m", Reply(text=text))
    events = stream_events(client, "m")
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0]["role"] == "assistant"
    assert "".join(d.get("content", "") for d in deltas) == text
    assert len([d for d in deltas if d.get("content")]) == 4
    assert [c for c in chunks if c["choices"]][-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 6, "completion_tokens": 4, "total_tokens": 10}


def test_stream_without_usage(srv: ScriptedServer, client: httpx.Client) -> None:
    srv.default("m", Reply(text="a b"))
    events = stream_events(client, "m", include_usage=False)
    assert events[-1] == "[DONE]"
    assert all("usage" not in json.loads(e) for e in events[:-1])


@pytest.mark.parametrize("text", ["", "x", " x", "x ", "a  b\n\nc", "   "])
def test_split_words_round_trips(text: str) -> None:
    assert "".join(split_words(text)) == text


def test_script_queue_in_order_then_default(srv: ScriptedServer, client: httpx.Client) -> None:
    srv.script("m", [Reply(text="first"), Reply(status=500), Reply(text="third")])
    srv.default("m", Reply(text="fallback"))
    got = [chat(client, "m") for _ in range(5)]
    assert [r.status_code for r in got] == [200, 500, 200, 200, 200]
    assert got[1].json()["error"]["type"] == "server_error"
    texts = [r.json()["choices"][0]["message"]["content"] for r in got if r.status_code == 200]
    assert texts == ["first", "third", "fallback", "fallback"]


def test_429_with_retry_after(srv: ScriptedServer, client: httpx.Client) -> None:
    srv.script("m", [Reply(status=429, headers={"Retry-After": "1"}, text="slow down")])
    resp = chat(client, "m")
    assert resp.status_code == 429
    assert resp.headers["retry-after"] == "1"
    assert resp.json() == {"error": {"message": "slow down", "type": "rate_limit_error", "code": "rate_limit_exceeded"}}


def test_unknown_model_is_404(srv: ScriptedServer, client: httpx.Client) -> None:
    resp = chat(client, "x")
    assert resp.status_code == 404
    assert resp.json() == {
        "error": {"message": "model 'x' not found", "type": "invalid_request_error", "code": "model_not_found"}
    }


def test_cut_stream_is_incomplete(srv: ScriptedServer, client: httpx.Client) -> None:
    srv.default("m", Reply(text="one two three four five", cut_after_chunks=2))
    body = {"model": "m", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    lines: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError):  # surfaces while reading the body
        with client.stream("POST", "/chat/completions", json=body) as resp:
            for line in resp.iter_lines():
                lines.append(line)
    data = [line[len("data: "):] for line in lines if line.startswith("data: ")]
    assert "[DONE]" not in data
    contents = [json.loads(d)["choices"][0]["delta"].get("content") for d in data]
    assert "".join(c for c in contents if c) == "one two "
    # the server survives the cut
    srv.default("ok", Reply())
    assert chat(client, "ok").status_code == 200


def test_invalid_json_body(srv: ScriptedServer, client: httpx.Client) -> None:
    srv.default("m", Reply(invalid_json=True))
    resp = chat(client, "m")
    assert resp.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        resp.json()
    events = stream_events(client, "m")
    with pytest.raises(json.JSONDecodeError):
        for e in events[:-1]:
            json.loads(e)


def test_empty_reply(srv: ScriptedServer, client: httpx.Client) -> None:
    srv.default("m", Reply(text="ignored", empty=True))
    data = chat(client, "m").json()
    assert data["choices"][0]["message"]["content"] == ""
    assert data["usage"]["completion_tokens"] == 0


def test_fn_computes_text_from_request(srv: ScriptedServer, client: httpx.Client) -> None:
    srv.default("echo", Reply(fn=lambda body: body["messages"][-1]["content"].upper()))
    assert chat(client, "echo").json()["choices"][0]["message"]["content"] == "SAY HELLO TO ME"


def test_delay_makes_short_timeout_fail_without_blocking_others(srv: ScriptedServer, client: httpx.Client) -> None:
    srv.default("slow", Reply(delay_s=0.8))
    srv.default("fast", Reply())
    with pytest.raises(httpx.ReadTimeout):
        client.post("/chat/completions", json={"model": "slow", "messages": MESSAGES}, timeout=0.2)
    # a slow request in flight must not hold up a fast one (sleeps are asyncio.sleep)
    slow = threading.Thread(target=lambda: chat(client, "slow"))  # httpx.Client is thread-safe
    slow.start()
    deadline = time.monotonic() + 5
    while srv.count("slow") < 2 and time.monotonic() < deadline:  # the slow request is now sleeping server-side
        time.sleep(0.005)
    assert chat(client, "fast").status_code == 200
    assert slow.is_alive()
    slow.join()


def test_requests_are_recorded(srv: ScriptedServer, client: httpx.Client) -> None:
    srv.default("m", Reply())
    before = time.monotonic()
    chat(client, "m", temperature=0.5)
    chat(client, "m")
    chat(client, "nope")
    assert srv.count("m") == 2
    assert srv.count("nope") == 1
    assert [r["model"] for r in srv.requests] == ["m", "m", "nope"]
    assert srv.requests[0]["temperature"] == 0.5
    assert srv.requests[0]["messages"] == MESSAGES
    stamps = [r["_received_at"] for r in srv.requests]
    assert before <= stamps[0] <= stamps[1] <= stamps[2] <= time.monotonic()
    srv.reset()
    assert srv.requests == [] and chat(client, "m").status_code == 404


def test_non_json_request_is_400(client: httpx.Client) -> None:
    resp = client.post("/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert resp.status_code == 400
    assert resp.json()["error"]["type"] == "invalid_request_error"


def test_demo_server() -> None:
    with demo_server() as demo:
        fast = httpx.post(demo.base_url + "/chat/completions", json={"model": "demo-fast", "messages": []})
        dead = httpx.post(demo.base_url + "/chat/completions", json={"model": "demo-dead", "messages": []})
    assert fast.json()["choices"][0]["message"]["content"] == DEMO_TEXT
    assert 30 <= len(DEMO_TEXT.split()) <= 50
    assert dead.status_code == 503


@pytest.fixture
def process_server() -> Iterator[tuple[Any, str]]:
    config = {
        "defaults": {"p": {"text": "from a process"}},
        "scripts": {"p": [{"status": 429, "headers": {"Retry-After": "2"}}]},
    }
    proc, base_url = spawn_server_process(config)
    try:
        yield proc, base_url
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_process_mode(process_server: tuple[Any, str]) -> None:
    proc, base_url = process_server
    assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v1")
    with httpx.Client(base_url=base_url, timeout=5) as c:
        first = chat(c, "p")
        assert first.status_code == 429 and first.headers["retry-after"] == "2"
        assert chat(c, "p").json()["choices"][0]["message"]["content"] == "from a process"
        assert [m["id"] for m in c.get("/models").json()["data"]] == ["p"]
    assert proc.poll() is None


def test_process_mode_reports_bad_config() -> None:
    with pytest.raises(RuntimeError, match="unknown reply field"):
        spawn_server_process({"defaults": {"p": {"txt": "typo"}}})


def test_a_bounded_server_keeps_only_the_last_requests_and_still_counts_all() -> None:
    # The benchmarks' upstream answers thousands of requests: kept bodies must not grow without bound.
    server = ScriptedServer(keep_requests=3).start()
    try:
        server.default("m", Reply(text="ok"))
        with httpx.Client(base_url=server.base_url, timeout=5) as c:
            for i in range(20):
                c.post("/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": str(i)}]})
        assert server.count("m") == 20
        assert 3 <= len(server.requests) <= 6
        assert server.requests[-1]["messages"][0]["content"] == "19"
    finally:
        server.stop()
    silent = ScriptedServer(keep_requests=0).start()
    try:
        silent.default("m", Reply(text="ok"))
        with httpx.Client(base_url=silent.base_url, timeout=5) as c:
            c.post("/chat/completions", json={"model": "m", "messages": MESSAGES})
        assert silent.requests == [] and silent.count("m") == 1
    finally:
        silent.stop()
