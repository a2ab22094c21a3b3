"""The OpenAI chat-completions wire format: a request body -> what the router needs, and the router's answer -> the
JSON (or SSE chunks) that OpenAI clients parse.

Checks are strict where a silent misreading would hurt (a wrong type, ``n > 1``, tools, images: a 400 that says so)
and lenient where clients differ harmlessly (``user``, ``store`` and other fields of OpenAI's API that change nothing
here are accepted). A field OpenAI's API does not document for the endpoint (a typo such as ``max_token``) is a 400
naming it, as OpenAI answers, never ignored (``check_fields``). Errors are OpenAI-shaped (``{"error": {"message",
"type", "code", "param"}}``) so every SDK raises its usual exception with our message.
"""

from __future__ import annotations

import codecs
import difflib
import json
import math
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from agentlab.core.errors import LLMError
from agentlab.core.llm.scoring import RawRequest
from agentlab.core.llm.tools import FUNCTION_FIELDS, TOOL_CALL_OPEN, check_tools
from agentlab.core.llm.types import GenParams, Messages, ToolCall, Usage

__all__ = ["ApiError", "ChatRequest", "parse_chat", "parse_completion", "completion_body", "text_completion_body",
           "chunk", "error_body", "load_body", "before_cut_call", "check_fields", "check_unused_fields"]

_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}
# Fields that would change the answer's meaning and that this gateway cannot honour: refused, never ignored.
# (The legacy `functions` / `function_call` are refused: `tools` / `tool_choice` are served.)
# Each: what it asks for, and the one thing to do instead.
_REFUSED = {"functions": ("legacy function calling", "send 'tools' instead"),
            "function_call": ("legacy function calling", "send 'tool_choice' (with 'tools') instead"),
            "audio": ("audio output", "drop it: answers are text"),
            "prediction": ("predicted outputs", "drop it")}
# Every top-level field OpenAI's API documents for the endpoint (the `openai` SDK's CompletionCreateParams, with
# `stream`): served, refused or accepted as changing nothing here, each above or in its parser; any other is refused.
CHAT_FIELDS = frozenset({
    "messages", "model", "audio", "frequency_penalty", "function_call", "functions", "logit_bias", "logprobs",
    "max_completion_tokens", "max_tokens", "metadata", "modalities", "moderation", "n", "parallel_tool_calls",
    "prediction", "presence_penalty", "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention",
    "reasoning_effort", "response_format", "safety_identifier", "seed", "service_tier", "stop", "store", "stream",
    "stream_options", "temperature", "tool_choice", "tools", "top_logprobs", "top_p", "user", "verbosity",
    "web_search_options"})
COMPLETION_FIELDS = frozenset({
    "model", "prompt", "best_of", "echo", "frequency_penalty", "logit_bias", "logprobs", "max_tokens", "n",
    "presence_penalty", "seed", "stop", "stream", "stream_options", "suffix", "temperature", "top_p", "user"})
# `stream_options`' fields (OpenAI's ChatCompletionStreamOptionsParam); include_obfuscation changes nothing here.
STREAM_OPTIONS_FIELDS = frozenset({"include_usage", "include_obfuscation"})
# Sampling fields passed on to the backends that understand them (GenParams.extra).
_EXTRA_NUMBERS = {"presence_penalty": (-2.0, 2.0), "frequency_penalty": (-2.0, 2.0)}


class ApiError(Exception):
    """A request the gateway answers with an HTTP error: status, OpenAI error type/code, message, offending field."""

    def __init__(self, status: int, message: str, code: str, *, param: str | None = None,
                 etype: str | None = None, headers: dict[str, str] | None = None, kind: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.etype = etype or ("invalid_request_error" if status < 500 else "api_error")
        self.headers = headers or {}
        self.kind = kind or code  # the metrics label

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.etype, self.code, self.param)


def error_body(message: str, etype: str, code: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": etype, "code": code, "param": param}}


@dataclass
class ChatRequest:
    model: str
    messages: Messages
    params: GenParams
    stream: bool = False
    include_usage: bool = False
    schema: dict[str, Any] | None = None  # response_format json_schema / json_object: the JSON schema to follow
    schema_name: str = "output"
    extra: dict[str, Any] = field(default_factory=dict)
    # the body's field that set params.max_tokens (max_tokens, max_completion_tokens; /v1/responses:
    # max_output_tokens), None when the client set no limit: the field a reply cut there names (a 400, raise it)
    limit_field: str | None = None
    # Set by the gateway from the request around the body: the routing rule's metadata, the cache's tenant and
    # opt-out (Cache-Control: no-cache), the client key (keys.KeyState) and its budget reservation (keys.Ticket).
    metadata: dict[str, Any] | None = None
    tenant: str = ""
    use_cache: bool = True
    key: Any = None
    ticket: Any = None


def _bad(message: str, param: str | None = None, code: str = "invalid_request") -> ApiError:
    return ApiError(400, message, code, param=param, kind="bad_request")


# A body's text with a lone UTF-16 surrogate: a \uD800-\uDFFF escape, or one encoded as UTF-8 (which json.loads
# decodes with 'surrogatepass'). A hit may be a surrogate pair (one character, fine) or an escaped backslash: only a
# hit has its strings checked (`check_values`).
_SURROGATE_BYTES = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class _NotFinite(Exception):
    """A NaN or Infinity in a request body (Python's json reads them; JSON has neither)."""


def _not_finite(text: str) -> float:
    raise _NotFinite(text)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999
        raise _NotFinite(text)
    return value


_DECODER = json.JSONDecoder(parse_constant=_not_finite, parse_float=_finite)


def load_body(body: bytes | bytearray) -> Any:
    """A request body as JSON, its values checked (``check_values``): ``ApiError`` (400) when it is not JSON, and
    one naming the field for text that is not Unicode or a number that is not finite."""
    # UTF-8 only, as the docs say (json.loads would read UTF-16 and UTF-32 too); a UTF-8 BOM is skipped
    start = 3 if body[:3] == codecs.BOM_UTF8 else 0
    encoding = json.detect_encoding(body)
    if encoding not in ("utf-8", "utf-8-sig"):
        raise ApiError(400, _not_utf8(body, encoding), "invalid_json", kind="bad_request")
    try:
        try:  # json.loads' own steps, with a decoder built once (json.loads(hooks) builds one per call)
            data = _DECODER.decode(_utf8(body, start))
        except _NotFinite:
            data, checked = json.loads(_utf8(body, start)), True  # NaN and Infinity read: check_values names them
        else:
            checked = (b"\\u" in body or b"\xed" in body) and _SURROGATE_BYTES.search(body) is not None
    except RecursionError:  # valid JSON, but nested deeper than Python's parser recurses
        raise _bad("the request body is nested too deep to read (about a thousand levels or more of lists or "
                   "objects); no OpenAI request needs that: send a flatter body") from None
    except ValueError as exc:
        # valid JSON too, but an integer longer than Python converts (a guard against slow conversions); the
        # parser's own errors are JSONDecodeError, and bytes that are not text UnicodeDecodeError
        if not isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError)) and "digits" in str(exc):
            raise _bad(f"a number in the request body is too long: integers may have at most "
                       f"{sys.get_int_max_str_digits()} digits here; send a shorter number") from None
        raise ApiError(400, _unreadable(body, exc), "invalid_json", kind="bad_request") from None
    if checked:
        check_values(data)
    return data


def _utf8(body: bytes | bytearray, start: int) -> str:
    """``body`` from ``start`` as UTF-8 text (lone surrogates kept for ``check_values`` to name); an error's offsets
    are the body's own, counted from its first byte."""
    try:
        return body[start:].decode("utf-8", "surrogatepass") if start else body.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError as exc:
        raise UnicodeDecodeError(exc.encoding, bytes(body), exc.start + start, exc.end + start, exc.reason) from None


def _not_utf8(body: bytes | bytearray, encoding: str) -> str:
    """Why a body whose first bytes read as UTF-16 or UTF-32 (a BOM of theirs, or NUL bytes: no JSON in UTF-8 has
    one) is refused, at the first byte no UTF-8 JSON holds."""
    at = 0 if body[:1] in (b"\xff", b"\xfe") else body.find(0)
    return (f"the request body is not UTF-8 text: it reads as {encoding.upper()} (its first bytes say so: the byte "
            f"0x{body[at]:02x} at offset {at} is in no UTF-8 JSON); send the JSON encoded as UTF-8")


def _unreadable(body: bytes | bytearray, exc: ValueError) -> str:
    """Why ``body`` is not JSON, where: bytes that are not UTF-8 text (Latin-1, say) at their offset, or JSON's own
    error (``Expecting value: line 1 column 39 (char 38)``)."""
    if isinstance(exc, UnicodeDecodeError):
        return (f"the request body is not UTF-8 text: the byte 0x{body[exc.start]:02x} at offset {exc.start} "
                f"starts no valid character ({exc.reason}); send the JSON encoded as UTF-8")
    if not body.strip():
        return "the request body is empty, not JSON: send a JSON object"
    return f"the request body is not JSON: {exc}; send a JSON object"


def check_values(body: Any) -> None:
    """The one check of a request's values wherever they are (messages, input, tools, metadata, ...): every string
    and key is Unicode text (a lone UTF-16 surrogate, such as a JSON ``"\\ud800"``, is not: no model, tokenizer or
    upstream can take it), every number finite (Python's json reads ``NaN`` and ``Infinity``; JSON has neither).
    ``ApiError`` (400) names the first such field, as ``messages[0].content``."""
    stack: list[tuple[str, Any]] = [("", body)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            found = _SURROGATE.search(value)
            if found is not None:
                raise _surrogate(path, found.group(), found.start())
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise _bad(f"{_field(path)} is not a finite number ({json.dumps(value)}): send a finite number "
                           "(JSON has no NaN or Infinity)", path or None)
        elif isinstance(value, dict):
            items = []
            for key, item in value.items():
                found = _SURROGATE.search(key)
                if found is not None:
                    raise _surrogate(path, found.group(), found.start(), key=True)
                items.append((f"{path}.{key}" if path else key, item))
            stack += reversed(items)  # the first bad field in the body's order is the one named
        elif isinstance(value, list):
            stack += reversed([(f"{path}[{i}]", item) for i, item in enumerate(value)])


def _field(path: str) -> str:
    return f"'{path[:200]}'" if path else "the request body"


def _surrogate(path: str, char: str, at: int, key: bool = False) -> ApiError:
    where = f"a key of {_field(path)}" if key else _field(path)
    return _bad(f"{where} is not valid Unicode text: it holds a lone UTF-16 surrogate (\\u{ord(char):04x} at "
                f"character {at}); send the text as UTF-8, or a character above U+FFFF as a surrogate pair (high "
                "then low)", path or None)


def check_fields(body: dict[str, Any], known: Collection[str], endpoint: str, where: str = "") -> None:
    """``ApiError`` (400, ``param`` the field) for a top-level field of ``body`` outside ``known`` (the fields OpenAI's
    API documents for ``endpoint``), as OpenAI answers one: a typo (``max_token``) or another endpoint's field
    (``max_tokens`` on /v1/responses) was ignored, a 200 that silently did not do what was asked. ``where``: the path
    of ``body`` when it is a nested object (``stream_options``, ``tools[0].function``), named with the field."""
    unknown = [key for key in body if key not in known]
    if not unknown:
        return
    key = unknown[0]
    path = f"{where}.{key}" if where else key
    close = difflib.get_close_matches(key, sorted(known), n=1)
    others = f" (and {', '.join(repr(k[:60]) for k in unknown[1:4])}{', ...' if len(unknown) > 4 else ''})" \
        if len(unknown) > 1 else ""
    takes = f"'{where}' takes only {', '.join(sorted(known))}" if where else \
        f"{endpoint} takes only the fields OpenAI's API documents for it"
    raise _bad(f"unrecognized request argument supplied: '{path[:100]}'"
               + (f" (did you mean '{close[0]}'?)" if close else "") + others + f"; {takes}: fix the name or drop "
               "the field", path[:200], code="unknown_parameter")


def check_unused_fields(body: dict[str, Any]) -> None:
    """The fields OpenAI's API documents that change nothing here (chat completions and Responses), type-checked as
    OpenAI checks them: accepted, but ``"user": 5`` or ``"metadata": "x"`` is a 400 naming the field, never dropped
    or echoed as sent. ``metadata`` is an object of strings (what routing by task reads)."""
    for key in ("user", "service_tier", "prompt_cache_key", "safety_identifier"):
        value = body.get(key)
        if value is not None and not isinstance(value, str):
            raise _bad(f"'{key}' must be a string, got {json.dumps(value)[:40]}", key)
    store = body.get("store")
    if store is not None and not isinstance(store, bool):
        raise _bad(f"'store' must be true or false, got {json.dumps(store)[:40]}", "store")
    metadata = body.get("metadata")
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise _bad(f"'metadata' must be an object of strings, such as {{\"task\": \"code\"}}, got "
                   f"{json.dumps(metadata)[:40]}", "metadata")
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise _bad(f"'metadata.{key[:60]}' must be a string (metadata is an object of strings), got "
                       f"{json.dumps(value)[:40]}", f"metadata.{key[:200]}")


def _number(body: dict[str, Any], key: str, low: float, high: float | None = None) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(f"'{key}' must be a number, got {json.dumps(value)[:40]}", key)
    if not math.isfinite(value) or value < low or (high is not None and value > high):  # NaN passes < and >
        shown = f"{value:g}" if math.isfinite(value) else json.dumps(value)  # NaN, Infinity as the body wrote them
        raise _bad(f"'{key}' must be between {low:g} and {high:g}, got {shown}" if high is not None
                   else f"'{key}' must be a finite number of at least {low:g}, got {shown}", key)
    return float(value)


def _integer(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"'{key}' must be an integer, got {json.dumps(value)[:40]}", key)
    return value


def _content(message: dict[str, Any], index: int) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if content is None and message.get("role") == "assistant":
        return ""
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise _bad(f"messages[{index}].content: {part_problem(part, ('text',))}", f"messages[{index}].content")
            parts.append(part["text"])
        return "".join(parts)
    raise _bad(f"messages[{index}].content must be a string or a list of text parts", f"messages[{index}].content")


def part_problem(part: Any, kinds: tuple[str, ...]) -> str:
    """Why a content ``part`` is not served where text parts of ``kinds`` are: not an object, no type, another type,
    or text that is not a string (each said as what it is: a part with no type was "a 'None' part")."""
    if not isinstance(part, dict):
        return f"each part must be an object such as {{\"type\": \"{kinds[0]}\", \"text\": ...}}, got a " \
            f"{type(part).__name__}"
    kind = part.get("type")
    if kind is None:
        return f"a part has no 'type': send {{\"type\": \"{kinds[0]}\", \"text\": ...}}"
    if kind not in kinds:
        shown = f"'{kind[:40]}'" if isinstance(kind, str) else json.dumps(kind)[:40]
        return f"only text parts ({', '.join(kinds)}) are served, got a {shown} part"
    if "text" not in part:
        return f"a '{kind}' part needs 'text' (a string)"
    return f"a '{kind}' part's 'text' must be a string, got {json.dumps(part['text'])[:40]}"


def _messages(body: dict[str, Any], max_messages: int) -> Messages:
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise _bad("'messages' must be a non-empty list of {role, content} objects", "messages")
    if len(raw) > max_messages:
        raise _bad(f"'messages' has {len(raw)} messages; this gateway accepts at most {max_messages}", "messages")
    out: Messages = []
    called: set[str] = set()  # the ids of the calls the conversation's assistant messages made
    for i, message in enumerate(raw):
        if not isinstance(message, dict):
            raise _bad(f"messages[{i}] must be an object with role and content", f"messages[{i}]")
        role = message.get("role")
        if role not in _ROLES:
            raise _bad(f"messages[{i}].role must be one of system, developer, user, assistant, tool; got "
                       f"{json.dumps(role)[:40]}", f"messages[{i}].role")
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise _bad(f"messages[{i}]: a tool message needs 'tool_call_id' (the id of the call it answers)",
                           f"messages[{i}].tool_call_id")
            if call_id not in called:  # as OpenAI's API: a result must answer a call the conversation holds
                raise _bad(f"messages[{i}]: a tool message must answer a call of an earlier assistant message's "
                           f"tool_calls; no call has the id {json.dumps(call_id)[:60]}",
                           f"messages[{i}].tool_call_id")
            out.append({"role": "tool", "tool_call_id": call_id, "content": _content(message, i)})
        elif role == "assistant" and message.get("tool_calls"):
            out.append({"role": "assistant", "content": _content(message, i) or None,
                        "tool_calls": _tool_calls(message["tool_calls"], i)})
            called.update(call["id"] for call in out[-1]["tool_calls"])
        else:
            out.append({"role": _ROLES[role], "content": _content(message, i)})
    return out


def _tool_calls(raw: Any, index: int) -> list[dict[str, Any]]:
    """An assistant message's ``tool_calls``, checked and normalised to OpenAI's shape (arguments as JSON text)."""
    where = f"messages[{index}].tool_calls"
    if not isinstance(raw, list):
        raise _bad(f"{where} must be a list of calls", where)
    out = []
    for j, call in enumerate(raw):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(call.get("id"), str) or not isinstance(fn.get("name"), str):
            raise _bad(f"{where}[{j}] must be {{\"id\": str, \"type\": \"function\", \"function\": {{\"name\": "
                       "str, \"arguments\": str}}", f"{where}[{j}]")
        args = fn.get("arguments", "{}")
        if not isinstance(args, str):
            raise _bad(f"{where}[{j}].function.arguments must be a string (the arguments as JSON text), got "
                       f"{json.dumps(args)[:40]}", f"{where}[{j}]")
        out.append({"id": call["id"], "type": "function", "function": {"name": fn["name"], "arguments": args}})
    return out


def _tools(body: dict[str, Any]) -> tuple[list[dict[str, Any]] | None, Any, bool | None]:
    """``tools``, ``tool_choice`` and ``parallel_tool_calls``, checked (each tool's parameters a valid JSON schema,
    a named tool_choice one of the tools)."""
    tools, choice, parallel = body.get("tools"), body.get("tool_choice"), body.get("parallel_tool_calls")
    if tools is not None and not isinstance(tools, list):
        raise _bad("'tools' must be a list of {type: function, function: {name, description, parameters}}", "tools")
    if parallel is not None and not isinstance(parallel, bool):
        raise _bad("'parallel_tool_calls' must be true or false", "parallel_tool_calls")
    if not tools:
        if choice not in (None, "none", "auto"):
            raise _bad("'tool_choice' needs 'tools'", "tool_choice")
        return None, None, None
    for i, tool in enumerate(tools):  # a typo (`parameter`) was a tool without parameters: named as top-level ones
        if isinstance(tool, dict) and isinstance(tool.get("function"), dict):
            check_fields(tool["function"], FUNCTION_FIELDS, "", where=f"tools[{i}].function")
    try:
        check_tools(tools, choice)
    except LLMError as exc:  # the param is the field the message names (tools[1].function.name), as OpenAI's
        named = _TOOL_PATH.match(exc.message)
        raise _bad(exc.message, "tool_choice" if exc.message.startswith("tool_choice") else
                   named.group() if named else "tools") from None
    return tools, choice, parallel


_TOOL_PATH = re.compile(r"tools\[\d+\](?:\.function(?:\.\w+)?)?")  # the field a message of check_tools begins with


def given(value: Any) -> str:
    """A JSON value of the wrong type, said as what it is: `a string "json"`."""
    kind = {str: "a string", list: "a list", bool: "a boolean", int: "a number", float: "a number"}
    return f"{kind.get(type(value), 'null')} {json.dumps(value)[:40]}"


_MAX_STOP = 4  # stop sequences a request may give, as at OpenAI


def _stop(body: dict[str, Any]) -> list[str] | None:
    stop = body.get("stop")
    if stop is None:
        return None
    if isinstance(stop, str):
        return [stop] if stop else None
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        if len(stop) > _MAX_STOP:  # OpenAI's limit: more were served, and the same request failed there
            raise _bad(f"'stop' has {len(stop)} sequences; at most {_MAX_STOP} are allowed (OpenAI's limit): send "
                       "fewer", "stop")
        return [s for s in stop if s] or None
    raise _bad(f"'stop' must be a string or a list of at most {_MAX_STOP} strings", "stop")


def _response_format(body: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    fmt = body.get("response_format")
    if fmt is None:
        return None, "output"
    if not isinstance(fmt, dict):  # "json" was told as a wrong 'response_format.type', a field it does not have
        raise _bad("'response_format' must be an object such as {\"type\": \"json_object\"} or {\"type\": "
                   f"\"json_schema\", \"json_schema\": {{...}}}}, got {given(fmt)}", "response_format")
    if fmt.get("type") not in ("text", "json_object", "json_schema"):
        got = json.dumps(fmt["type"])[:40] if "type" in fmt else "none"
        raise _bad(f"'response_format.type' must be text, json_object or json_schema, got {got}",
                   "response_format.type")
    if fmt["type"] == "text":
        return None, "output"
    if fmt["type"] == "json_object":
        return {"type": "object"}, "object"
    spec = fmt.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
        raise _bad("'response_format.json_schema.schema' must be a JSON schema object",
                   "response_format.json_schema.schema")
    schema = spec["schema"]
    if schema.get("type", "object") != "object":
        raise _bad("'response_format.json_schema.schema' must describe an object (type: object at the top)",
                   "response_format.json_schema.schema")
    name = spec.get("name")
    return schema, name if isinstance(name, str) and name else "output"


def parse_chat(body: Any, *, max_tokens_limit: int, max_messages: int) -> ChatRequest:
    """Check an OpenAI chat-completions body and turn it into a ``ChatRequest``; ``ApiError`` (400) names the field."""
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    check_fields(body, CHAT_FIELDS, "/v1/chat/completions")
    check_unused_fields(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("'model' must name a route or a model (GET /v1/models lists them)", "model")
    for key, (what, instead) in _REFUSED.items():
        if body.get(key):
            raise _bad(f"'{key}': {what} is not served by this gateway; {instead}", key,
                       code="unsupported_parameter")
    n = _integer(body, "n")
    if n is not None and n != 1:
        raise _bad("'n' must be 1: one choice per request (send several requests, or use a best_of_n route)", "n",
                   code="unsupported_parameter")
    # each changes the answer: refused, not ignored (web_search_options: {} is how OpenAI turns the search on);
    # reasoning_effort and verbosity reach no backend, as /v1/responses' reasoning and text.verbosity
    for key in ("logprobs", "top_logprobs", "logit_bias", "web_search_options", "reasoning_effort", "verbosity"):
        if body.get(key) or (key == "web_search_options" and body.get(key) is not None):
            raise _bad(f"'{key}' is not served by this gateway", key, code="unsupported_parameter")
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise _bad("'stream' must be true or false", "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _bad("'stream_options' must be an object such as {\"include_usage\": true}", "stream_options")
    check_fields(options or {}, STREAM_OPTIONS_FIELDS, "", where="stream_options")
    for key in sorted(STREAM_OPTIONS_FIELDS):
        if (options or {}).get(key) is not None and not isinstance((options or {})[key], bool):
            raise _bad(f"'stream_options.{key}' must be true or false", f"stream_options.{key}")
    include_usage = (options or {}).get("include_usage")
    stream_options_need_stream(body)
    max_tokens, limit_field = None, None
    for key in ("max_tokens", "max_completion_tokens"):  # both checked; max_completion_tokens wins
        given = _integer(body, key)
        if given is not None and not 1 <= given <= max_tokens_limit:
            raise _bad(f"'{key}' must be between 1 and {max_tokens_limit} (this gateway's limit), got {given}", key,
                       code="max_tokens_too_large" if given > max_tokens_limit else "invalid_request")
        if given is not None:
            max_tokens, limit_field = given, key
    extra: dict[str, Any] = {}
    for name, (low, high) in _EXTRA_NUMBERS.items():
        value = _number(body, name, low, high)
        if value is not None:
            extra[name] = value
    tools, tool_choice, parallel = _tools(body)
    params = GenParams(temperature=_number(body, "temperature", 0.0, 2.0), max_tokens=max_tokens,
                       top_p=_number(body, "top_p", 0.0, 1.0), stop=_stop(body), seed=_integer(body, "seed"),
                       tools=tools, tool_choice=tool_choice, parallel_tool_calls=parallel, extra=extra)
    schema, name = _response_format(body)
    if schema is not None and tools:
        raise _bad("'response_format' with 'tools' is not served: ask for one or the other", "response_format",
                   code="unsupported_parameter")
    return ChatRequest(model, _messages(body, max_messages), params, bool(stream), bool(include_usage), schema, name,
                       limit_field=limit_field)


def stream_options_need_stream(body: dict[str, Any]) -> None:
    """``stream_options`` is for a stream only: OpenAI answers it without ``stream: true`` with this 400."""
    if body.get("stream_options") is not None and body.get("stream") is not True:
        raise _bad("'stream_options' is only allowed when 'stream' is true: send \"stream\": true, or drop "
                   "'stream_options'", "stream_options")


def _prompts(body: dict[str, Any], max_prompts: int) -> list[list[int] | str]:
    """``prompt`` as OpenAI takes it: a string, a list of strings, a list of token ids, or a list of those lists."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in prompt):
            return [list(prompt)]
        if all(isinstance(p, str) for p in prompt):
            out: list[list[int] | str] = list(prompt)
        elif all(isinstance(p, list) and p and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0
                                                       for t in p) for p in prompt):
            out = [list(p) for p in prompt]
        else:
            out = []
        if out:
            if len(out) > max_prompts:
                raise _bad(f"'prompt' has {len(out)} prompts; this gateway accepts at most {max_prompts} per request",
                           "prompt")
            return out
    raise _bad("'prompt' must be a string, a list of strings, a list of token ids or a list of such lists", "prompt")


def parse_completion(body: Any, *, max_tokens_limit: int, max_prompts: int) -> tuple[str, Any]:
    """Check a legacy ``/v1/completions`` body: ``(model, RawRequest)``; ``ApiError`` (400) names the field.
    ``echo`` and ``logprobs`` (0-20) are served; ``max_tokens`` may be 0 (score the prompt only, with echo)."""
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    check_fields(body, COMPLETION_FIELDS, "/v1/completions")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("'model' must name a model (GET /v1/models lists them)", "model")
    for key, given in (("suffix", body.get("suffix")), ("best_of", body.get("best_of") not in (None, 1)),
                       ("logit_bias", body.get("logit_bias"))):
        if given:
            raise _bad(f"'{key}' is not served by this gateway", key, code="unsupported_parameter")
    for key in ("presence_penalty", "frequency_penalty"):  # the raw path has none (0, no penalty, is served)
        if _number(body, key, -2.0, 2.0):
            raise _bad(f"'{key}' is not served on /v1/completions", key, code="unsupported_parameter")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _bad("'stream' must be true or false", "stream")
    if stream:
        raise _bad("'stream' is not served on /v1/completions (use /v1/chat/completions to stream)", "stream",
                   code="unsupported_parameter")
    if body.get("stream_options") is not None:  # no stream here at all: "send stream: true" would be refused
        raise _bad("'stream_options' is not served on /v1/completions (no streaming there)", "stream_options",
                   code="unsupported_parameter")
    n = _integer(body, "n")
    if n is not None and n != 1:
        raise _bad("'n' must be 1: one choice per prompt", "n", code="unsupported_parameter")
    max_tokens = _integer(body, "max_tokens")
    max_tokens = 16 if max_tokens is None else max_tokens
    if not 0 <= max_tokens <= max_tokens_limit:
        raise _bad(f"'max_tokens' must be between 0 and {max_tokens_limit} (this gateway's limit), got {max_tokens}",
                   "max_tokens")
    logprobs = body.get("logprobs")
    if logprobs is not None and (isinstance(logprobs, bool) or not isinstance(logprobs, int) or not 0 <= logprobs
                                 <= 20):
        raise _bad("'logprobs' must be an integer from 0 to 20 (the likeliest tokens listed at each position)",
                   "logprobs")
    echo = body.get("echo", False)
    if not isinstance(echo, bool):
        raise _bad("'echo' must be true or false", "echo")
    if max_tokens == 0 and not echo:
        raise _bad("'max_tokens' 0 asks for nothing: set echo to score the prompt", "max_tokens")
    temperature = _number(body, "temperature", 0.0, 2.0)
    return model, RawRequest(prompts=_prompts(body, max_prompts), max_tokens=max_tokens, temperature=temperature,
                             top_p=_number(body, "top_p", 0.0, 1.0), stop=_stop(body) or [],
                             seed=_integer(body, "seed"), echo=echo, logprobs=logprobs)


def text_completion_body(model: str, choices: list[Any]) -> dict[str, Any]:
    """A ``text_completion`` object of ``core/llm/scoring.py`` ``RawChoice``s."""
    prompt = sum(c.prompt_tokens for c in choices)
    completion = sum(c.completion_tokens for c in choices)
    return {
        "id": "cmpl-" + uuid.uuid4().hex[:24], "object": "text_completion", "created": int(time.time()),
        "model": model,
        "choices": [{"index": i, "text": c.text, "logprobs": c.logprobs, "finish_reason": c.finish_reason}
                    for i, c in enumerate(choices)],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }


def new_id() -> str:
    return "chatcmpl-" + os.urandom(12).hex()  # as random as uuid4's 24 hex digits, without building a UUID


def finish_of(finish: str | None, calls: list[ToolCall]) -> str:
    """The ``finish_reason`` sent: ``tool_calls`` when the answer calls tools (unless it was cut at the limit)."""
    if calls and finish != "length":
        return "tool_calls"
    return finish or "stop"


# A call written as bare JSON (a list of calls, or in a ```json fence): its opening, up to the name it calls (group 2,
# group 3 its closing quote: none when the text ends inside the name); and a text cut at the start of one.
_CALL_START = re.compile(r'(?:```(?:json)?\s*)?(\[\s*)?\{\s*"name"\s*:\s*"([^"]*)(")?')
_CALL_HEAD = re.compile(r'(```(?:json)?\s*)?(?:\[\s*)?\{\s*(?:"(\w*)(?:"\s*:?\s*)?)?\Z')


def before_cut_call(text: str, names: Collection[str]) -> str:
    """The text of an answer to a request with tools (``names``: theirs) that max_tokens cut, without the call it
    was writing.

    A local model writes its calls as text, in its own format: ``<tool_call>`` blocks (SmolLM2, Qwen), or a JSON
    call bare or in a `````json`` fence (Qwen2.5-Coder outside a block). A call the limit cut does not parse, so it
    stayed in the text: from ``<tool_call>``, or from a ``{"name": "<one of the tools>"`` that does not close (with
    the fence or ``[`` before it), to the end; or the text ends inside the start of one (``<tool_c``, ``{"na``, a
    fenced ``{``). JSON of the answer itself (``[{"name": "Alice", ...``, no tool's name) stays. The client gets the
    text before it and ``finish_reason: length`` (Responses: ``incomplete``), never the model's raw call format.
    (OpenAI's API sends such a call with its arguments cut short: not JSON, and not to be run.)"""
    at = text.find(TOOL_CALL_OPEN)
    if at < 0:  # cut inside the opening tag itself
        at = next((len(text) - n for n in range(len(TOOL_CALL_OPEN) - 1, 0, -1)
                   if text.endswith(TOOL_CALL_OPEN[:n])), -1)
    if at < 0:
        decoder = json.JSONDecoder()
        for found in _CALL_START.finditer(text):
            name = found.group(2)
            if not (name in names if found.group(3) else any(n.startswith(name) for n in names)):
                continue
            try:
                decoder.raw_decode(text, found.start(1) if found.group(1) else text.index("{", found.start()))
            except ValueError:
                at = found.start()
                break
    if at < 0:
        head = _CALL_HEAD.search(text)
        if head is not None and (head.group(1) or not text[:head.start()].strip() or (
                head.group(2) is not None and "name".startswith(head.group(2)))):
            at = head.start()
    return text if at < 0 else text[:at].rstrip()


def usage_body(usage: Usage) -> dict[str, Any]:
    """OpenAI's ``usage``; the prompt tokens the model read from its cache as ``prompt_tokens_details.cached_tokens``
    (a local model's KV cache of the prefix it shares with its last request) when there were any."""
    body: dict[str, Any] = {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
                            "total_tokens": usage.total_tokens}
    if usage.cached_tokens:
        body["prompt_tokens_details"] = {"cached_tokens": usage.cached_tokens}
    return body


def completion_body(ident: str, model: str, text: str, finish: str | None, usage: Usage, meta: dict[str, Any],
                    calls: list[ToolCall] | None = None) -> dict[str, Any]:
    """A ``chat.completion`` object; ``model`` is the model that answered, ``meta`` goes under ``agentlab``. With
    ``calls``, the message carries ``tool_calls`` (and ``content`` is null when there is no text), as OpenAI sends."""
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message = {"role": "assistant", "content": text or None, "tool_calls": [c.to_openai() for c in calls]}
    return {
        "id": ident, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_of(finish, calls or []),
                     "logprobs": None}],
        "usage": usage_body(usage),
        "agentlab": meta,
    }


def chunk(ident: str, created: int, model: str, delta: dict[str, Any] | None, finish: str | None = None,
          usage: dict[str, int] | None = None, meta: dict[str, Any] | None = None) -> bytes:
    """One SSE event of a ``chat.completion.chunk``."""
    data: dict[str, Any] = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                            "choices": [] if delta is None else [{"index": 0, "delta": delta,
                                                                  "finish_reason": finish, "logprobs": None}]}
    if usage is not None:
        data["usage"] = usage
    if meta is not None:
        data["agentlab"] = meta
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


def content_chunks(ident: str, created: int, model: str) -> Callable[[str], bytes]:
    """``chunk(ident, created, model, {"content": piece})`` for one stream, byte for byte, from a prefix and suffix
    built once: the per-piece cost of a streamed answer is one ``json.dumps`` of the piece, not of the whole event."""
    marker = os.urandom(16).hex()  # a placeholder no model name or id contains
    head, _, tail = chunk(ident, created, model, {"content": marker}).partition(f'"{marker}"'.encode())
    dumps = json.dumps

    def content(piece: str) -> bytes:
        return head + dumps(piece).encode() + tail

    return content


def call_deltas(calls: list[ToolCall]) -> list[dict[str, Any]]:
    """A stream's ``delta.tool_calls`` items for whole calls, as OpenAI sends them: per call, one item with its
    index, id, type and name (arguments empty), then one with its arguments."""
    out: list[dict[str, Any]] = []
    for index, call in enumerate(calls):
        out.append({"index": index, "id": call.id, "type": "function",
                    "function": {"name": call.name, "arguments": ""}})
        out.append({"index": index, "function": {"arguments": call.arguments}})
    return out


DONE = b"data: [DONE]\n\n"
