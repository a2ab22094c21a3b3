"""Request checks a new user's pass found loose, each as OpenAI's API answers it: bodies that are not UTF-8 (UTF-16,
UTF-32), compressed bodies, `stream_options` without a stream, more than 4 `stop` sequences, a
`previous_response_id` of the wrong type, an empty embeddings `input` string."""

from __future__ import annotations

import codecs
import gzip
import json
import re

import httpx
import pytest
from serve_helpers import UPSTREAM_KEY, upstream_llm

from agentlab.serve.embeddings import parse_embeddings
from agentlab.serve.protocol import ApiError, load_body, parse_chat, parse_completion
from agentlab.serve.responses import parse_responses
from agentlab.testing.server import Reply, ScriptedServer

ASK = [{"role": "user", "content": "Say something short."}]
BODY = {"model": "good", "messages": ASK}


@pytest.fixture
def gw(srv: ScriptedServer, gateway, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN001, ANN201
    monkeypatch.setenv("UPSTREAM_KEY", UPSTREAM_KEY)
    srv.default("good", Reply(text="the good answer"))
    return gateway(upstream_llm(srv.base_url, ["good"]))


def _chat(body: dict) -> object:
    return parse_chat(body, max_tokens_limit=64, max_messages=8)


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"])
def test_a_body_in_utf16_or_utf32_is_a_400_as_the_docs_say(codec: str) -> None:
    """json.detect_encoding read them: accepted, where serve.md says bytes that are not UTF-8 are a 400."""
    body = json.dumps(BODY).encode(codec)
    with pytest.raises(ApiError) as err:
        load_body(body)
    at = 0 if body[:1] in (b"\xff", b"\xfe") else body.find(0)
    assert err.value.status == 400 and err.value.code == "invalid_json" and err.value.param is None
    assert err.value.message.startswith(f"the request body is not UTF-8 text: it reads as {codec.upper()}")
    assert f"the byte 0x{body[at]:02x} at offset {at}" in err.value.message
    assert err.value.message.endswith("send the JSON encoded as UTF-8")


def test_a_utf8_bom_is_skipped_and_offsets_count_it() -> None:
    assert load_body(codecs.BOM_UTF8 + json.dumps(BODY).encode()) == BODY
    latin1 = codecs.BOM_UTF8 + b'{"model": "caf\xe9"}'
    with pytest.raises(ApiError, match=re.escape(f"the byte 0xe9 at offset {latin1.index(0xE9)} ")):
        load_body(latin1)  # the offset was counted after the BOM: 3 bytes short, and its byte another one
    with pytest.raises(ApiError, match=r"'temperature' is not a finite number \(NaN\)"):
        load_body(codecs.BOM_UTF8 + b'{"temperature": NaN}')


def test_a_utf16_body_is_refused_by_the_gateway(gw, srv: ScriptedServer) -> None:  # noqa: ANN001
    response = httpx.post(gw.base_url + "/chat/completions", content=json.dumps(BODY).encode("utf-16"),
                          headers={"Content-Type": "application/json"})
    error = response.json()["error"]
    assert response.status_code == 400 and error["code"] == "invalid_json" and "reads as UTF-16" in error["message"]
    assert set(error) == {"message", "type", "param", "code"} and srv.requests == []


@pytest.mark.parametrize("coding, content", [
    ("gzip", gzip.compress(json.dumps(BODY).encode())),  # was "not UTF-8 text: the byte 0x8b at offset 1"
    ("gzip", json.dumps(BODY).encode()),  # a plain body labelled gzip was answered
    ("br", json.dumps(BODY).encode()),
    ("deflate, gzip", json.dumps(BODY).encode()),
], ids=["gzip", "plain-labelled-gzip", "br", "two-codings"])
def test_a_compressed_body_is_a_415_naming_the_header(gw, srv: ScriptedServer, coding: str,  # noqa: ANN001
                                                      content: bytes) -> None:
    for path in ("/chat/completions", "/responses", "/embeddings", "/completions"):
        response = httpx.post(gw.base_url + path, content=content,
                              headers={"Content-Type": "application/json", "Content-Encoding": coding})
        error = response.json()["error"]
        assert response.status_code == 415, (path, response.text)
        assert error == {"message": f"Content-Encoding \"{coding}\" is not supported: send the request body "
                                    "uncompressed (no Content-Encoding header, or identity)",
                         "type": "invalid_request_error", "param": None, "code": "unsupported_content_encoding"}
    assert srv.requests == []


def test_identity_content_encoding_is_read_as_no_encoding(gw) -> None:  # noqa: ANN001
    for coding in ("identity", "Identity", ""):
        response = httpx.post(gw.base_url + "/chat/completions", content=json.dumps(BODY).encode(),
                              headers={"Content-Type": "application/json", "Content-Encoding": coding})
        assert response.status_code == 200, response.text


@pytest.mark.parametrize("stream", [None, False, "absent"])
def test_stream_options_without_a_stream_is_a_400(stream: object) -> None:
    """OpenAI: 400 "The 'stream_options' parameter is only allowed when 'stream' is enabled"; it was accepted."""
    extra = {} if stream == "absent" else {"stream": stream}
    says = re.escape("'stream_options' is only allowed when 'stream' is true")
    with pytest.raises(ApiError, match=says) as err:
        _chat({**BODY, **extra, "stream_options": {"include_usage": True}})
    assert err.value.param == "stream_options" and err.value.status == 400
    with pytest.raises(ApiError, match="'stream_options' is not served on /v1/completions") as err:  # no
        parse_completion({"model": "m", "prompt": "hi", **extra, "stream_options": {}}, max_tokens_limit=64,
                         max_prompts=1)  # stream there: "send stream: true" would be refused in turn
    assert err.value.param == "stream_options"
    with pytest.raises(ApiError, match=says) as err:
        parse_responses({"model": "m", "input": "hi", **extra, "stream_options": {}}, max_tokens_limit=64,
                        max_messages=8, history=lambda ident: None)
    assert err.value.param == "stream_options"
    # with a stream, or a null stream_options, it is served as before
    assert _chat({**BODY, "stream": True, "stream_options": {"include_usage": True}}).include_usage
    assert not _chat({**BODY, **extra, "stream_options": None}).stream


def test_stream_options_without_a_stream_through_the_gateway(gw, srv: ScriptedServer) -> None:  # noqa: ANN001
    response = httpx.post(gw.base_url + "/chat/completions", json={**BODY, "stream_options": {"include_usage": True}})
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] == "stream_options", error
    assert error["type"] == "invalid_request_error" and srv.requests == []


def test_more_than_four_stop_sequences_is_a_400_naming_stop() -> None:
    """OpenAI takes up to 4; 16 were served here, so a request that works here failed at OpenAI."""
    assert _chat({**BODY, "stop": ["a", "b", "c", "d"]}).params.stop == ["a", "b", "c", "d"]
    with pytest.raises(ApiError, match=re.escape("'stop' has 5 sequences; at most 4 are allowed")) as err:
        _chat({**BODY, "stop": ["a", "b", "c", "d", "e"]})
    assert err.value.param == "stop" and err.value.status == 400
    with pytest.raises(ApiError, match=re.escape("'stop' has 5 sequences")) as err:
        parse_completion({"model": "m", "prompt": "hi", "stop": list("abcde")}, max_tokens_limit=64, max_prompts=1)
    assert err.value.param == "stop"
    with pytest.raises(ApiError, match=re.escape("'stop' must be a string or a list of at most 4 strings")):
        _chat({**BODY, "stop": [1]})


@pytest.mark.parametrize("previous", [5, ["resp_1"], {"id": "resp_1"}, True])
def test_a_previous_response_id_of_the_wrong_type_is_a_type_error(previous: object) -> None:
    """It said "Previous response with id 5 not found" (code previous_response_not_found), as if 5 were an id."""
    with pytest.raises(ApiError) as err:
        parse_responses({"model": "m", "input": "hi", "previous_response_id": previous}, max_tokens_limit=64,
                        max_messages=8, history=lambda ident: None)
    assert err.value.status == 400 and err.value.param == "previous_response_id"
    assert err.value.code == "invalid_request"
    assert err.value.message == ("'previous_response_id' must be a string (an earlier response's id, resp_...), "
                                 f"got {json.dumps(previous)}")


def test_an_unknown_previous_response_id_is_still_not_found() -> None:
    with pytest.raises(ApiError, match='Previous response with id "resp_x" not found') as err:
        parse_responses({"model": "m", "input": "hi", "previous_response_id": "resp_x"}, max_tokens_limit=64,
                        max_messages=8, history=lambda ident: None)
    assert err.value.code == "previous_response_not_found"


def test_an_empty_embeddings_input_string_is_named_input() -> None:
    """A string sent as `input` was named 'input[0]', an item of a list the client never sent."""
    with pytest.raises(ApiError) as err:
        parse_embeddings({"model": "m", "input": ""})
    assert err.value.message == "'input' is empty: every input needs text" and err.value.param == "input"
    with pytest.raises(ApiError, match=re.escape("'input[1]' is empty")):  # a list's item is still named by index
        parse_embeddings({"model": "m", "input": ["a", ""]})
