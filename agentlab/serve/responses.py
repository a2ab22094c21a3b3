"""OpenAI's Responses API wire format (``POST /v1/responses``): a request body -> the same ``ChatRequest`` the chat
endpoint routes, and the router's answer -> a ``response`` object or its SSE events, in the shapes of the official
``openai`` SDK (``openai/types/responses/``).

What is mapped: ``input`` (a string, or a list of message items with string content or ``input_text`` parts,
earlier ``message`` / ``function_call`` output items, ``function_call_output`` items), ``instructions`` (a system
message, not carried over to a follow-up, as OpenAI does), function ``tools`` (Responses' flat shape) and
``tool_choice``, ``parallel_tool_calls``, ``max_output_tokens``, ``temperature``, ``top_p``, ``text.format``
(``json_schema`` / ``json_object`` through the structured path), ``previous_response_id`` and ``store``.
Fields that would change the answer and cannot be honoured (built-in tools, ``reasoning``, ``include``,
``background``, ``conversation``, ``prompt``, ``truncation: auto``, images, files) are a 400 naming the field.

``ResponseStore`` keeps the conversation of each stored response (its input and output messages, without the
instructions) in a bounded LRU, so a follow-up naming ``previous_response_id`` continues it.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agentlab.core.llm.tools import FUNCTION_FIELDS
from agentlab.core.llm.types import Message, Messages, ToolCall, Usage
from agentlab.serve.protocol import (
    ApiError,
    ChatRequest,
    check_fields,
    check_unused_fields,
    given,
    parse_chat,
    part_problem,
    stream_options_need_stream,
)

__all__ = ["ResponsesRequest", "ResponseStore", "parse_responses", "response_body", "ResponseEvents"]

_ROLES = {"user": "user", "system": "system", "developer": "system", "assistant": "assistant"}
# Request fields that would change the answer and that this gateway cannot honour: refused when set.
_REFUSED = {"reasoning": "reasoning settings", "include": "extra output data ('include')",
            "background": "background responses", "conversation": "server-side conversations (send "
            "previous_response_id or the whole input)", "prompt": "stored prompt templates",
            "top_logprobs": "log-probabilities", "max_tool_calls": "a cap on built-in tool calls"}
# Every top-level field OpenAI's API documents for /v1/responses (the `openai` SDK's ResponseCreateParams, with
# `stream`): mapped, refused or accepted as changing nothing here; any other (chat's `max_tokens`) is refused.
RESPONSES_FIELDS = frozenset({
    "model", "input", "background", "context_management", "conversation", "include", "instructions",
    "max_output_tokens", "max_tool_calls", "metadata", "moderation", "parallel_tool_calls", "previous_response_id",
    "prompt", "prompt_cache_key", "prompt_cache_options", "prompt_cache_retention", "reasoning", "safety_identifier",
    "service_tier", "store", "stream", "stream_options", "temperature", "text", "tool_choice", "tools",
    "top_logprobs", "top_p", "truncation", "user"})
# A function tool's fields in the Responses API's flat shape (the `openai` SDK's FunctionToolParam: chat's
# FUNCTION_FIELDS beside `type`, and the fields checked by _tool_extras); others refused.
_TOOL_FIELDS = FUNCTION_FIELDS | {"type", "defer_loading", "allowed_callers", "output_schema"}


@dataclass
class ResponsesRequest:
    chat: ChatRequest  # what the router is asked: instructions, history and input as chat messages
    conversation: Messages  # history + input without the instructions: stored with the answer for a follow-up
    echo: dict[str, Any] = field(default_factory=dict)  # request fields the response object repeats
    store: bool = True


class ResponseStore:
    """The conversations of the last ``size`` stored responses, by response id (least recently used goes first)."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict[str, Messages] = OrderedDict()

    def get(self, ident: str) -> Messages | None:
        found = self._items.get(ident)
        if found is not None:
            self._items.move_to_end(ident)
        return found

    def put(self, ident: str, conversation: Messages) -> None:
        if self.size <= 0:
            return
        self._items[ident] = conversation
        self._items.move_to_end(ident)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


def _bad(message: str, param: str | None = None, code: str = "invalid_request") -> ApiError:
    return ApiError(400, message, code, param=param, kind="bad_request")


def _text(content: Any, where: str, kinds: tuple[str, ...]) -> str:
    """A message item's content: a string, or a list of text parts of ``kinds`` (input_text / output_text)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") not in kinds or not isinstance(part.get("text"), str):
                raise _bad(f"{where}.content[{j}]: {part_problem(part, kinds)}", f"{where}.content")
            parts.append(part["text"])
        return "".join(parts)
    raise _bad(f"{where}.content must be a string or a list of input_text parts", f"{where}.content")


def _input_items(raw: Any, called: set[str]) -> Messages:
    """``input`` as chat messages: function_call items join the assistant message before them (one message with
    text and calls, as chat completions has it). ``called``: the ids of the calls made before (the stored
    conversation's); a function_call_output must answer one of them or of the input's own."""
    if isinstance(raw, str):
        return [{"role": "user", "content": raw}]
    if not isinstance(raw, list) or not raw:
        raise _bad("'input' must be a string or a non-empty list of items", "input")
    out: Messages = []
    for i, item in enumerate(raw):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise _bad(f"{where} must be an object (a message, function_call or function_call_output item)", where)
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in _ROLES:
                raise _bad(f"{where}.role must be user, system, developer or assistant; got {json.dumps(role)[:40]}",
                           f"{where}.role")
            kinds = ("output_text", "input_text") if role == "assistant" else ("input_text",)
            out.append({"role": _ROLES[role], "content": _text(item.get("content"), where, kinds)})
        elif kind == "function_call":
            call_id, name, args = item.get("call_id"), item.get("name"), item.get("arguments", "{}")
            if not (isinstance(call_id, str) and call_id and isinstance(name, str) and isinstance(args, str)):
                raise _bad(f"{where}: a function_call item needs call_id, name and arguments (JSON text)", where)
            call = {"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}
            called.add(call_id)
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
                last["content"] = last.get("content") or None
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            call_id, output = item.get("call_id"), item.get("output")
            if not isinstance(call_id, str) or not call_id:
                raise _bad(f"{where}: a function_call_output item needs the call_id of the call it answers",
                           f"{where}.call_id")
            if call_id not in called:
                raise _bad(f"{where}: a function_call_output must answer a function_call of the input or of the "
                           f"previous response; no call has the call_id {json.dumps(call_id)[:60]}",
                           f"{where}.call_id")
            content = output if isinstance(output, str) else _text(output, where, ("input_text",))
            out.append({"role": "tool", "tool_call_id": call_id, "content": content})
        else:
            raise _bad(f"{where}: '{kind}' items are not served by this gateway (message, function_call and "
                       "function_call_output are)", f"{where}.type", code="unsupported_parameter")
    return out


def _tool_extras(tool: dict[str, Any], where: str) -> None:
    """A function tool's fields that chat completions has no place for: accepted at what changes nothing here, a 400
    naming the field where its value asks what this gateway cannot do (it has no tool search nor code calling
    tools, and does not show the model a tool's output schema)."""
    defer = tool.get("defer_loading")
    if defer is not None and not isinstance(defer, bool):
        raise _bad(f"'{where}.defer_loading' must be true or false", f"{where}.defer_loading")
    if defer:
        raise _bad(f"'{where}.defer_loading': deferred tools (loaded by a tool search) are not served by this "
                   "gateway: every tool is given to the model; drop the field", f"{where}.defer_loading",
                   code="unsupported_parameter")
    callers = tool.get("allowed_callers")
    if callers is not None and (not isinstance(callers, list)
                                or any(c not in ("direct", "programmatic") for c in callers)):
        raise _bad(f"'{where}.allowed_callers' must be a list of 'direct' and 'programmatic'",
                   f"{where}.allowed_callers")
    if callers is not None and "direct" not in callers:
        raise _bad(f"'{where}.allowed_callers': a tool the model may not call directly is not served by this "
                   "gateway (it runs no code that calls tools): include 'direct' or drop the field",
                   f"{where}.allowed_callers", code="unsupported_parameter")
    schema = tool.get("output_schema")
    if schema is not None and not isinstance(schema, dict):
        raise _bad(f"'{where}.output_schema' must be a JSON schema object", f"{where}.output_schema")
    if schema is not None:
        raise _bad(f"'{where}.output_schema': a function's output schema is not shown to the model by this "
                   "gateway: describe the output in 'description' instead", f"{where}.output_schema",
                   code="unsupported_parameter")


def _tools(body: dict[str, Any]) -> tuple[list[dict[str, Any]] | None, Any]:
    """Responses' flat function tools and tool_choice in chat completions' shapes; built-in tools are refused."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    chat_tools = None
    if tools is not None:
        if not isinstance(tools, list):
            raise _bad("'tools' must be a list of {type: function, name, description, parameters}", "tools")
        chat_tools = []
        for i, tool in enumerate(tools):
            kind = tool.get("type") if isinstance(tool, dict) else None
            if kind != "function":
                raise _bad(f"tools[{i}]: the tool type '{str(kind)[:40]}' is not served by this gateway: only "
                           "function tools (built-in tools such as web_search or file_search run on OpenAI's side)",
                           f"tools[{i}].type", code="unsupported_parameter")
            if "function" in tool and "name" not in tool:  # chat completions' shape: it had no name, said as such
                raise _bad(f"tools[{i}]: the Responses API takes function tools flat, {{\"type\": \"function\", "
                           "\"name\": ..., \"description\": ..., \"parameters\": {...}}, not chat completions' "
                           "{\"type\": \"function\", \"function\": {...}}: move the function's fields up a level",
                           f"tools[{i}].function")
            check_fields(tool, _TOOL_FIELDS, "", where=f"tools[{i}]")  # a typo (`parameter`): no parameters
            _tool_extras(tool, f"tools[{i}]")
            fn = {k: tool[k] for k in ("name", "description", "parameters") if tool.get(k) is not None}
            chat_tools.append({"type": "function", "function": fn})
    if isinstance(choice, dict):
        if choice.get("type") != "function" or not isinstance(choice.get("name"), str):
            raise _bad(f"'tool_choice' {json.dumps(choice)[:80]} is not served: use auto, none, required or "
                       "{\"type\": \"function\", \"name\": ...}", "tool_choice", code="unsupported_parameter")
        choice = {"type": "function", "function": {"name": choice["name"]}}
    return chat_tools, choice


def _text_format(body: dict[str, Any]) -> dict[str, Any] | None:
    """``text.format`` as chat completions' ``response_format``; other ``text`` settings are refused."""
    text = body.get("text")
    if text is None:
        return None
    if not isinstance(text, dict):
        raise _bad("'text' must be an object such as {\"format\": {\"type\": \"text\"}}", "text")
    if text.get("verbosity") is not None:
        raise _bad("'text.verbosity' is not served by this gateway", "text.verbosity", code="unsupported_parameter")
    fmt = text.get("format")
    if fmt is None or (isinstance(fmt, dict) and fmt.get("type") == "text"):
        return None
    if not isinstance(fmt, dict):  # "json" was told as a wrong 'text.format.type', a field it does not have
        raise _bad("'text.format' must be an object such as {\"type\": \"json_object\"} or {\"type\": "
                   f"\"json_schema\", \"name\": ..., \"schema\": {{...}}}}, got {given(fmt)}", "text.format")
    if fmt.get("type") not in ("json_object", "json_schema"):
        got = json.dumps(fmt["type"])[:40] if "type" in fmt else "none"
        raise _bad(f"'text.format.type' must be text, json_object or json_schema, got {got}", "text.format.type")
    if fmt["type"] == "json_object":
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {"name": fmt.get("name"), "schema": fmt.get("schema")}}


# chat completions' paths in a field or message (at its start or after a quote) -> the Responses API's: text.format
# holds json_schema's fields itself, and a tool's fields are flat (tools[1].function.name -> tools[1].name)
_CHAT_PATHS = [(re.compile(r"(^|')response_format\.json_schema\."), r"\1text.format."),
               (re.compile(r"(^|')response_format\b"), r"\1text.format"),
               (re.compile(r"(^|')(tools\[\d+\])\.function\b"), r"\1\2")]


def _responses_path(text: str) -> str:
    for chat, responses in _CHAT_PATHS:
        text = chat.sub(responses, text)
    return text


def parse_responses(body: Any, *, max_tokens_limit: int, max_messages: int,
                    history: Callable[[str], Messages | None]) -> ResponsesRequest:
    """Check a Responses API body and turn it into a ``ResponsesRequest``; ``ApiError`` (400) names the field.
    ``history(id)`` is the stored conversation of an earlier response (None: unknown)."""
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    check_fields(body, RESPONSES_FIELDS, "/v1/responses")
    for key, what in _REFUSED.items():
        if body.get(key):
            raise _bad(f"'{key}': {what} is not served by this gateway", key, code="unsupported_parameter")
    if body.get("truncation") not in (None, "disabled"):
        raise _bad("'truncation' must be 'disabled' here: a prompt too long for the model is refused, never cut",
                   "truncation", code="unsupported_parameter")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise _bad("'instructions' must be a string", "instructions")
    check_unused_fields(body)  # store, metadata, user, ... of the right type
    store = body.get("store", True)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _bad("'stream_options' must be an object such as {\"include_obfuscation\": false}", "stream_options")
    check_fields(options or {}, ("include_obfuscation",), "", where="stream_options")
    obfuscation = (options or {}).get("include_obfuscation")
    if obfuscation is not None and not isinstance(obfuscation, bool):
        raise _bad("'stream_options.include_obfuscation' must be true or false", "stream_options.include_obfuscation")
    stream_options_need_stream(body)  # as OpenAI answers, and chat completions here
    previous = body.get("previous_response_id")
    past: Messages = []
    if previous is not None and not isinstance(previous, str):  # was "Previous response with id 5 not found"
        raise _bad(f"'previous_response_id' must be a string (an earlier response's id, resp_...), got "
                   f"{json.dumps(previous)[:40]}", "previous_response_id")
    if previous is not None:
        found = history(previous)
        if found is None:
            raise _bad(f"Previous response with id {json.dumps(previous)[:80]} not found (this gateway keeps the "
                       "last responses stored in memory, not those made with store: false)", "previous_response_id",
                       code="previous_response_not_found")
        past = found
    called = {call["id"] for message in past for call in message.get("tool_calls") or []}
    conversation = [*past, *_input_items(body.get("input"), called)]
    messages = ([{"role": "system", "content": instructions}] if instructions else []) + conversation
    tools, choice = _tools(body)
    chat_body: dict[str, Any] = {
        "model": body.get("model"), "messages": messages, "stream": body.get("stream", False),
        "temperature": body.get("temperature"), "top_p": body.get("top_p"), "tools": tools, "tool_choice": choice,
        "parallel_tool_calls": body.get("parallel_tool_calls"), "response_format": _text_format(body)}
    if body.get("max_output_tokens") is not None:
        chat_body["max_completion_tokens"] = body["max_output_tokens"]
    try:
        chat = parse_chat(chat_body, max_tokens_limit=max_tokens_limit, max_messages=max_messages)
    except ApiError as exc:  # name the Responses field, not the chat one it was checked as
        exc.param = {"max_completion_tokens": "max_output_tokens", "messages": "input"}.get(exc.param or "",
                                                                                          exc.param)
        exc.message = exc.message.replace("'max_completion_tokens'", "'max_output_tokens'").replace(
            "'messages'", "'input'")
        if exc.param is not None:
            exc.param = _responses_path(exc.param)
        exc.message = _responses_path(exc.message)
        raise
    if chat.limit_field is not None:
        chat.limit_field = "max_output_tokens"
    echo = {"instructions": instructions, "max_output_tokens": body.get("max_output_tokens"),
            "previous_response_id": previous, "temperature": chat.params.temperature, "top_p": chat.params.top_p,
            "tools": body.get("tools") or [], "tool_choice": body.get("tool_choice") or "auto",
            "parallel_tool_calls": body.get("parallel_tool_calls") is not False, "store": store is not False,
            "text": {"format": (body.get("text") or {}).get("format") or {"type": "text"}},
            "metadata": body.get("metadata") or {}, "user": body.get("user")}
    return ResponsesRequest(chat, conversation, echo, store is not False)


def new_response_id() -> str:
    return "resp_" + uuid.uuid4().hex


def _message_item(ident: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if status != "in_progress" \
        else []
    return {"id": ident, "type": "message", "status": status, "role": "assistant", "content": content}


def _call_item(call: ToolCall, status: str = "completed") -> dict[str, Any]:
    return {"id": "fc_" + uuid.uuid4().hex, "type": "function_call", "status": status, "call_id": call.id,
            "name": call.name, "arguments": call.arguments if status == "completed" else ""}


def output_items(text: str, calls: list[ToolCall], incomplete: bool) -> list[dict[str, Any]]:
    """The ``output`` list: a message with the text (when there is text, or nothing else), then one function_call
    item per call."""
    items = []
    if text or not calls:
        items.append(_message_item("msg_" + uuid.uuid4().hex, text, "incomplete" if incomplete else "completed"))
    items += [_call_item(call) for call in calls]
    return items


def answer_message(text: str, calls: list[ToolCall]) -> Message:
    """The answer as a chat message, the way it is stored for a follow-up."""
    if calls:
        return {"role": "assistant", "content": text or None, "tool_calls": [c.to_openai() for c in calls]}
    return {"role": "assistant", "content": text}


def response_body(ident: str, created: int, req: ResponsesRequest, output: list[dict[str, Any]] | None,
                  finish: str | None = None, usage: Usage | None = None,
                  meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ``response`` object: ``output`` None is one in progress (a stream's first events)."""
    incomplete = finish == "length"
    status = "in_progress" if output is None else "incomplete" if incomplete else "completed"
    body: dict[str, Any] = {
        "id": ident, "object": "response", "created_at": created, "status": status,
        "completed_at": int(time.time()) if status != "in_progress" else None, "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "model": req.chat.model, "output": output or [], "reasoning": {"effort": None, "summary": None},
        "truncation": "disabled", "user": None, **req.echo,
        "usage": None if usage is None else {
            "input_tokens": usage.prompt_tokens,
            "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": 0},
            "output_tokens": usage.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.total_tokens},
    }
    if meta is not None:
        body["agentlab"] = meta
    return body


class ResponseEvents:
    """The SSE events of one streamed response, numbered in order (``sequence_number``)."""

    def __init__(self, ident: str, created: int, req: ResponsesRequest):
        self.ident, self.created, self.req = ident, created, req
        self.seq = 0
        self.msg_id = "msg_" + uuid.uuid4().hex
        self.text = ""
        self.opened = False  # the message item and its text part were announced
        self.output: list[dict[str, Any]] = []

    def event(self, kind: str, **data: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.seq, **data}
        self.seq += 1
        return f"event: {kind}\ndata: ".encode() + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"

    def start(self) -> list[bytes]:
        body = response_body(self.ident, self.created, self.req, None)
        return [self.event("response.created", response=body), self.event("response.in_progress", response=body)]

    def delta(self, piece: str) -> list[bytes]:
        out = self._open() if not self.opened else []
        self.text += piece
        out.append(self.event("response.output_text.delta", item_id=self.msg_id, output_index=0, content_index=0,
                              delta=piece, logprobs=[]))
        return out

    def _open(self) -> list[bytes]:
        self.opened = True
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        return [self.event("response.output_item.added", output_index=0,
                           item=_message_item(self.msg_id, "", "in_progress")),
                self.event("response.content_part.added", item_id=self.msg_id, output_index=0, content_index=0,
                           part=part)]

    def finish(self, text: str, calls: list[ToolCall], finish: str | None, usage: Usage,
               meta: dict[str, Any]) -> list[bytes]:
        """The rest of the answer (text not streamed yet, each call), the items' done events, then
        ``response.completed`` (``response.incomplete`` when cut at max_output_tokens)."""
        out: list[bytes] = []
        incomplete = finish == "length"
        output: list[dict[str, Any]] = []
        if text or not calls or self.opened:
            rest = text[len(self.text):]
            if rest:
                out += self.delta(rest)
            elif not self.opened:
                out += self._open()
            item = _message_item(self.msg_id, text, "incomplete" if incomplete else "completed")
            part = item["content"][0]
            out += [self.event("response.output_text.done", item_id=self.msg_id, output_index=0, content_index=0,
                               text=text, logprobs=[]),
                    self.event("response.content_part.done", item_id=self.msg_id, output_index=0, content_index=0,
                               part=part),
                    self.event("response.output_item.done", output_index=0, item=item)]
            output.append(item)
        for call in calls:
            index = len(output)
            item = _call_item(call, "in_progress")
            out.append(self.event("response.output_item.added", output_index=index, item=item))
            out.append(self.event("response.function_call_arguments.delta", item_id=item["id"], output_index=index,
                                  delta=call.arguments))
            out.append(self.event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                                  name=call.name, arguments=call.arguments))
            item = {**item, "status": "completed", "arguments": call.arguments}
            out.append(self.event("response.output_item.done", output_index=index, item=item))
            output.append(item)
        body = response_body(self.ident, self.created, self.req, output, finish, usage, meta)
        out.append(self.event("response.incomplete" if incomplete else "response.completed", response=body))
        self.output = output
        return out

    def error(self, body: dict[str, Any]) -> bytes:
        """An ``error`` event: the fields flat (as the API reference documents ``ResponseErrorEvent``) and nested
        under ``error`` (as the live API sends them, which makes the SDK raise ``APIError``)."""
        err = body["error"]
        return self.event("error", code=err.get("code"), message=err.get("message"), param=err.get("param"),
                          error=err)
