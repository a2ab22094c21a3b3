"""What a new user's pass found: a body never finished held its connection and in-flight slot forever; typos in
nested objects (a tool's `parameter`, `stream_options.include_usag`) ignored; fields of the wrong type
(`metadata`, `user`, `store`, `service_tier`) accepted; an interrupt while the gateway starts left no results; the
wording of a few errors; `--log-prompts` not said at start."""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest
from serve_helpers import UPSTREAM_KEY, upstream_llm

from agentlab.core.errors import LLMError
from agentlab.core.llm.config import LLMConfig
from agentlab.core.llm.providers.scripted import ScriptedProvider
from agentlab.serve import Gateway, ServeConfig
from agentlab.serve.protocol import ApiError, parse_chat
from agentlab.serve.responses import parse_responses
from agentlab.testing.server import Reply, ScriptedServer

ASK = [{"role": "user", "content": "Say something short."}]
BODY = {"model": "good", "messages": ASK}


@pytest.fixture
def gw(srv: ScriptedServer, gateway, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN001, ANN201
    monkeypatch.setenv("UPSTREAM_KEY", UPSTREAM_KEY)
    srv.default("good", Reply(text="the good answer"))
    return gateway(upstream_llm(srv.base_url, ["good"]), body_timeout_s=0.3)


def _in_flight(gw) -> float:  # noqa: ANN001
    text = httpx.get(gw.base_url.removesuffix("/v1") + "/metrics").text
    return float(next(line.split()[-1] for line in text.splitlines()
                      if line.startswith("agentlab_requests_in_flight")))


def test_a_body_never_finished_is_a_408_and_frees_its_slot(gw) -> None:  # noqa: ANN001
    """request.stream() had no time limit: a client that sent half its body held the connection and counted as in
    flight for ever."""
    body = json.dumps(BODY).encode()
    host, port = gw.base_url.removeprefix("http://").removesuffix("/v1").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body[:10])
        received = b""
        while True:  # the gateway answers and closes the connection: recv returns b"" then
            piece = sock.recv(65536)
            if not piece:
                break
            received += piece
    head, _, rest = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), received[:200]
    error = json.loads(rest)["error"]
    assert error["code"] == "request_timeout" and error["type"] == "invalid_request_error"
    assert f"10 of {len(body)} bytes came" in error["message"] and "body_timeout_s (0.3 s)" in error["message"]
    deadline = time.monotonic() + 5
    while _in_flight(gw) != 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _in_flight(gw) == 0
    ok = httpx.post(gw.base_url + "/chat/completions", json=BODY)  # a whole body is answered as before
    assert ok.status_code == 200


def _chat(body: dict) -> object:
    return parse_chat({"model": "good", "messages": ASK, **body}, max_tokens_limit=64, max_messages=8)


def _responses(body: dict) -> object:
    return parse_responses({"model": "good", "input": "hi", **body}, max_tokens_limit=64, max_messages=8,
                           history=lambda _: None)


WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}}


@pytest.mark.parametrize("parse, body, param, close", [
    (_chat, {"tools": [{"type": "function", "function": {"name": "f", "parameter": WEATHER}}]},
     "tools[0].function.parameter", "parameters"),
    (_chat, {"stream": True, "stream_options": {"include_usag": True}}, "stream_options.include_usag",
     "include_usage"),
    (_responses, {"tools": [{"type": "function", "name": "f", "parameter": WEATHER}]}, "tools[0].parameter",
     "parameters"),
    (_responses, {"stream": True, "stream_options": {"include_obfuscaton": False}},
     "stream_options.include_obfuscaton", "include_obfuscation"),
])
def test_a_typo_in_a_nested_object_is_a_400_naming_its_path(parse, body: dict, param: str, close: str) -> None:  # noqa: ANN001
    """A tool's `parameter` was served as a tool with no parameters, `include_usag` as no usage: a 200."""
    with pytest.raises(ApiError) as err:
        parse(body)
    assert err.value.status == 400 and err.value.code == "unknown_parameter" and err.value.param == param
    assert err.value.message.startswith(f"unrecognized request argument supplied: '{param}' (did you mean "
                                        f"'{close}'?)")


def test_documented_nested_fields_and_unknown_keys_in_messages_are_served() -> None:
    tool = {"type": "function", "function": {"name": "f", "description": "d", "parameters": WEATHER, "strict": True}}
    echoed = {"role": "assistant", "content": "hi", "refusal": None, "annotations": [], "audio": None,
              "reasoning_content": "..."}
    req = _chat({"tools": [tool], "stream": True, "stream_options": {"include_usage": True,
                                                                      "include_obfuscation": False},
                 "messages": [*ASK, echoed, {"role": "user", "content": "again"}]})
    assert req.include_usage and req.params.tools == [tool]  # type: ignore[attr-defined]
    _responses({"tools": [{"type": "function", "name": "f", "parameters": WEATHER, "strict": False}],
                "stream": True, "stream_options": {"include_obfuscation": True}})


def test_check_tools_refuses_an_unknown_key_of_a_function() -> None:
    """The router's own check (Python callers too): the typo was a tool without parameters."""
    from agentlab.core.errors import LLMError
    from agentlab.core.llm.tools import check_tools

    with pytest.raises(LLMError, match=r"^tools\[0\]\.function\.parameter: unrecognized field; a function takes only "
                       r"description, name, parameters, strict$"):
        check_tools([{"type": "function", "function": {"name": "f", "parameter": WEATHER}}])
    with pytest.raises(LLMError) as err:  # its shape said with balanced braces
        check_tools([{"type": "function"}])
    assert err.value.message.endswith('{"type": "function", "function": {"name": ..., "parameters": ...}}')


@pytest.mark.parametrize("body, param", [
    ({"metadata": "x"}, "metadata"), ({"metadata": {"score": 1}}, "metadata.score"), ({"user": 5}, "user"),
    ({"store": "x"}, "store"), ({"service_tier": 5}, "service_tier"), ({"prompt_cache_key": []}, "prompt_cache_key"),
])
@pytest.mark.parametrize("path", ["/chat/completions", "/responses"])
def test_a_documented_field_of_the_wrong_type_is_a_400_on_both_endpoints(gw, srv: ScriptedServer, path: str,  # noqa: ANN001
                                                                          body: dict, param: str) -> None:
    """All were a 200: chat dropped a metadata that is not an object, /v1/responses echoed it (and `user: 5` came
    back null)."""
    base = {"messages": ASK} if path == "/chat/completions" else {"input": "hi"}
    response = httpx.post(gw.base_url + path, json={"model": "good", **base, **body})
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] == param and error["code"] == "invalid_request", error
    assert error["message"].startswith(f"'{param}' must be ")
    assert srv.requests == []


def test_responses_echo_metadata_and_user(gw) -> None:  # noqa: ANN001
    response = httpx.post(gw.base_url + "/responses", json={"model": "good", "input": "hi", "user": "u1",
                                                            "metadata": {"task": "code"}, "store": False})
    assert response.status_code == 200
    assert response.json()["user"] == "u1" and response.json()["metadata"] == {"task": "code"}


@pytest.mark.parametrize("content, says", [
    ([{"type": "text", "text": 5}], "messages[0].content: a 'text' part's 'text' must be a string, got 5"),
    ([{"text": "hi"}], "messages[0].content: a part has no 'type': send {\"type\": \"text\", \"text\": ...}"),
    ([{"type": "text"}], "messages[0].content: a 'text' part needs 'text' (a string)"),
    ([{"type": "image_url", "image_url": {}}], "messages[0].content: only text parts (text) are served, got a "
     "'image_url' part"),
    (["hi"], "messages[0].content: each part must be an object such as {\"type\": \"text\", \"text\": ...}, got a "
     "str"),
])
def test_a_bad_content_part_says_what_is_wrong_with_it(content: list, says: str) -> None:
    """A text part with a number as its text said "only text parts are served, got a 'text' part"; one with no type
    "got a 'None' part"."""
    with pytest.raises(ApiError) as err:
        _chat({"messages": [{"role": "user", "content": content}]})
    assert err.value.message == says and err.value.param == "messages[0].content"
    with pytest.raises(ApiError, match=r"input\[0\]\.content\[0\]: a part has no 'type': send \{\"type\": "
                       r"\"input_text\""):
        _responses({"input": [{"role": "user", "content": [{"text": "hi"}]}]})


def test_a_chat_shaped_tool_on_responses_says_the_flat_shape() -> None:
    """It said `tools[0].function.name must be 1-64 letters`, naming a field the request has no place for."""
    with pytest.raises(ApiError) as err:
        _responses({"tools": [{"type": "function", "function": {"name": "f", "parameters": WEATHER}}]})
    assert err.value.param == "tools[0].function" and err.value.status == 400
    assert err.value.message.startswith('tools[0]: the Responses API takes function tools flat, {"type": '
                                        '"function", "name": ..., "description": ..., "parameters": {...}}, not chat '
                                        'completions\' {"type": "function", "function": {...}}')


SCRIPTED = {"providers": {"canned": {"kind": "scripted", "replies": ["hi"]}},
            "models": {"m": {"provider": "canned", "model": "m"}}, "routes": {"default": {"primary": ["m"]}}}


class _Embedder(ScriptedProvider):
    async def embed(self, model: str, texts: list[str], params: object, timeout_s: float,
                    dimensions: int | None = None) -> object:
        raise LLMError(f"{model}: input[1] is 900 tokens; this model embeds at most 512 (n_batch, n_ctx)",
                       "context_length", model=model)


def test_an_embeddings_input_too_long_is_named_as_the_param() -> None:
    """Its 400 had `param: null`; the message named input[1]."""
    gw = Gateway(ServeConfig(port=0), LLMConfig.model_validate(SCRIPTED), providers={"canned": _Embedder()}).start()
    try:
        response = httpx.post(gw.base_url + "/embeddings", json={"model": "m", "input": ["short", "long"]})
    finally:
        gw.stop()
    assert response.status_code == 400 and response.json()["error"]["param"] == "input[1]", response.text


def test_the_start_line_says_where_prompts_are_kept(tmp_path: Path) -> None:
    """--log-prompts wrote every prompt and reply to llm_calls.jsonl without a word at start."""
    from agentlab.core.runs import RunDir

    llm = LLMConfig.model_validate(SCRIPTED)
    run_dir = RunDir.create("serve", out=tmp_path / "run")
    assert run_dir.log_prompts  # as --log-prompts sets it
    line = Gateway(ServeConfig(port=0), llm, run_dir).describe()
    assert line.endswith(f"; every request's prompts and replies are written to {run_dir.path / 'llm_calls.jsonl'} "
                         "(--log-prompts); Ctrl-C stops")
    run_dir.log_prompts = False
    assert "prompts" not in Gateway(ServeConfig(port=0), llm, run_dir).describe()
    assert "prompts" not in Gateway(ServeConfig(port=0), llm).describe()


@pytest.mark.parametrize("signals", [1, 2])
def test_a_sigterm_while_the_gateway_starts_ends_the_run_as_a_stop_does(in_tmp: Path, monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture,
                                                                        signals: int) -> None:
    """A signal between the `run folder:` line and `serving on` left config.yaml, run.json and run.lock only, and
    run.json said "interrupted (Ctrl-C or SIGTERM)". One now stops the gateway as soon as it is up (results.json,
    report.md, the signal named); a second stops it at once, run.json still naming it."""
    import importlib

    from agentlab.cli import main

    serve_run = importlib.import_module("agentlab.serve.run")  # the module: agentlab.serve.run is also the function

    (in_tmp / "llm.yaml").write_text(json.dumps(SCRIPTED))
    metrics = serve_run.GatewayMetrics

    def starting() -> object:  # made while the gateway starts, after the run folder
        for _ in range(signals):
            signal.raise_signal(signal.SIGTERM)
        return metrics()

    monkeypatch.setattr(serve_run, "GatewayMetrics", starting)
    assert main(["serve", "--llm", "llm.yaml", "--port", "0", "--out", "run"]) == 130
    err = capsys.readouterr().err
    files = {p.name for p in (in_tmp / "run").iterdir()}
    info = json.loads((in_tmp / "run" / "run.json").read_text())
    assert info["status"] == "interrupted" and info["error"] == "interrupted (SIGTERM)", info
    assert "serving on" not in err
    if signals == 1:
        assert {"results.json", "report.md"} <= files
        assert json.loads((in_tmp / "run" / "results.json").read_text())["stopped_by"] == "SIGTERM"
        assert "stopped (SIGTERM): 0 requests" in err
    else:
        assert "results.json" not in files
