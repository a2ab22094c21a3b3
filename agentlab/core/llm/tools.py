"""Tool calls: checking a request's tools, validating a model's calls, and the text format of local models.

Everything is in OpenAI's shapes: a tool is ``{"type": "function", "function": {"name", "description",
"parameters"}}``, ``tool_choice`` is ``"auto"``, ``"none"``, ``"required"`` or ``{"type": "function", "function":
{"name": ...}}``, an assistant message may carry ``tool_calls`` and a ``tool`` message answers one call by its
``tool_call_id``.

Validation (``call_problem``) is what makes a call usable: its tool exists and is allowed by ``tool_choice``, its
arguments are one JSON object that validates against the tool's ``parameters`` (jsonschema), and ``required`` /
``parallel_tool_calls: false`` are honoured. The router repairs an invalid call once with ``repair_messages``.

Local models (llama.cpp, transformers) have no tool API: they write calls as text. Their format is SmolLM2's own (the
one its published chat templates write, and the one Hermes-style templates use): the tools are listed as JSON in the
system prompt and the model answers ``<tool_call>[{"name": ..., "arguments": {...}}]</tool_call>``.
``calls_schema`` is the JSON schema of that list for the request's tools, from which the providers build a grammar,
so a constrained call always parses and validates; ``parse_tagged`` turns the text back into ``ToolCall``s.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from agentlab.core.errors import LLMError, missing_package
from agentlab.core.llm.results import Attempt, CallState, TryModel
from agentlab.core.llm.types import Completion, GenParams, Messages, ToolCall

__all__ = ["check_tools", "call_problem", "cut_problem", "calls_schema", "parse_tagged", "ToolCallAssembler",
           "tool_prompt", "render_tool_messages", "repair_messages", "describe_calls", "new_call_id", "wants_calls",
           "checking_calls", "calls_from_message", "forced_name", "without_tools", "tool_constraint", "tool_gate",
           "close_repeats", "answered_calls", "answered_tools", "answer_messages", "results_messages",
           "STRING_MAX_CHARS", "ARRAY_MAX_ITEMS", "TOOL_CALL_OPEN", "TOOL_CALL_CLOSE", "bounded_schema", "LOCAL_PARAMS",
           "FUNCTION_FIELDS"]

TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"
# The fields of a tool's function definition (OpenAI's FunctionDefinition); any other is refused, never ignored.
FUNCTION_FIELDS = frozenset(("name", "description", "parameters", "strict"))
# Request params that only agentlab's local providers read (an HTTP provider leaves them out of the request).
LOCAL_PARAMS = frozenset(("tool_gate", "tool_grammar", "tool_format"))
_TAGGED = re.compile(re.escape(TOOL_CALL_OPEN) + r"(.*?)(?:" + re.escape(TOOL_CALL_CLOSE) + r"|$)", re.DOTALL)
_MAX_PROBLEM_CHARS = 1000  # a repair prompt stays short: the first errors say what the model must fix

# SmolLM2's tool-calling system prompt (from its model card), with the tools inserted as JSON.
_SMOLLM2_PROMPT = (
    "You are an expert in composing functions. You are given a question and a set of possible functions. Based on "
    "the question, you will need to make one or more function/tool calls to achieve the purpose. If none of the "
    "functions can be used, point it out and refuse to answer. If the given question lacks the parameters required "
    "by the function, also point it out.\n\nYou have access to the following tools:\n<tools>{tools}</tools>\n\n"
    "The output MUST strictly adhere to the following format, and NO other text MUST be included.\n"
    "The example format is as follows. Please make sure the parameter type is correct. If no function call is "
    "needed, please make the tool calls an empty list '[]'.\n"
    '<tool_call>[\n{{"name": "func_name1", "arguments": {{"argument1": "value1", "argument2": "value2"}}}},\n'
    "... (more tool calls as required)\n]</tool_call>")


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def _function(tool: Any, where: str) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type", "function") != "function" or not isinstance(
            tool.get("function"), dict):
        raise LLMError(f"{where} must be {{\"type\": \"function\", \"function\": {{\"name\": ..., \"parameters\": "
                       "...}}", "bad_request")
    fn: dict[str, Any] = tool["function"]
    unknown = [key for key in fn if key not in FUNCTION_FIELDS]
    if unknown:  # a typo (`parameter`) was served as a tool without parameters
        raise LLMError(f"{where}.function.{str(unknown[0])[:60]}: unrecognized field; a function takes only "
                       f"{', '.join(sorted(FUNCTION_FIELDS))}", "bad_request")
    return fn


def check_tools(tools: list[dict[str, Any]] | None, tool_choice: Any = None) -> dict[str, dict[str, Any]]:
    """Each tool's name -> its ``parameters`` schema; raises ``LLMError("bad_request")`` naming the faulty field
    (a missing name, a duplicate, a ``parameters`` that is not a valid JSON schema, a ``tool_choice`` naming an
    unknown tool)."""
    out: dict[str, dict[str, Any]] = {}
    for i, tool in enumerate(tools or []):
        fn = _function(tool, f"tools[{i}]")
        name = fn.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", name):
            raise LLMError(f"tools[{i}].function.name must be 1-64 letters, digits, _ . : or -; got "
                           f"{json.dumps(name)[:70]}", "bad_request")
        if name in out:
            raise LLMError(f"tools[{i}].function.name '{name}' is given twice", "bad_request")
        params = fn.get("parameters")
        if params is None:
            params = {"type": "object", "properties": {}}
        if not isinstance(params, dict):
            raise LLMError(f"tools[{i}].function.parameters must be a JSON schema object", "bad_request")
        _validator(params, f"tools[{i}].function.parameters")
        out[name] = params
    forced = forced_name(tool_choice)
    if tool_choice is not None and not (tool_choice in ("auto", "none", "required") or forced):
        raise LLMError("tool_choice must be auto, none, required or {\"type\": \"function\", \"function\": "
                       "{\"name\": ...}}", "bad_request")
    if forced and forced not in out:
        raise LLMError(f"tool_choice names '{forced}', which is not one of the tools", "bad_request")
    if tool_choice in ("required",) or forced:
        if not out:
            raise LLMError(f"tool_choice {json.dumps(tool_choice)} needs at least one tool", "bad_request")
    return out


def forced_name(tool_choice: Any) -> str | None:
    """The tool that a named ``tool_choice`` forces, else None."""
    if isinstance(tool_choice, dict):
        fn = tool_choice.get("function")
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            return str(fn["name"])
    return None


def wants_calls(params: GenParams) -> bool:
    """Whether the model may call a tool on this request (tools given and ``tool_choice`` is not ``none``)."""
    return bool(params.tools) and params.tool_choice != "none"


def call_problem(completion: Completion, params: GenParams) -> str | None:
    """Why ``completion``'s tool calls are not acceptable for ``params``' tools, or None when they are (or the request
    has no tools)."""
    if not params.tools:
        return None
    tools = check_tools(params.tools, params.tool_choice)
    calls, choice = completion.tool_calls, params.tool_choice
    forced = forced_name(choice)
    if choice == "none" and calls:
        return "tool_choice is none, but the reply calls " + ", ".join(c.name for c in calls)
    if (choice == "required" or forced) and not calls:
        return ("the reply calls no tool, but a tool call is required" +
                (f" (call {forced})" if forced else f"; the tools: {', '.join(tools)}"))
    if params.parallel_tool_calls is False and len(calls) > 1:
        return f"the reply makes {len(calls)} calls, but parallel_tool_calls is false: make one call"
    problems = []
    for i, call in enumerate(calls):
        if call.name not in tools:
            problems.append(f"call {i + 1}: there is no tool '{call.name}' (the tools: {', '.join(tools)})")
            continue
        if forced and call.name != forced:
            problems.append(f"call {i + 1}: tool_choice asks for '{forced}', not '{call.name}'")
            continue
        problem = _arguments_problem(call, tools[call.name])
        if problem:
            problems.append(f"call {i + 1} ({call.name}): {problem}")
    return "; ".join(problems)[:_MAX_PROBLEM_CHARS] or None


def _jsonschema() -> Any:
    """The ``jsonschema`` module (the ``serve`` extra installs it); a missing one is a one-line ``MissingPackage``."""
    try:
        import jsonschema
        import jsonschema.validators
    except ImportError as exc:
        raise (missing_package(exc) or exc) from None
    return jsonschema


# A schema's checked validator, by its JSON text: checking a schema against its meta-schema costs milliseconds, and
# the same tools come with every request of a conversation (checked twice per request behind the gateway, it was the
# gateway's main cost under load: docs/design/measurements.md).
_VALIDATORS: dict[str, Any] = {}
_MAX_VALIDATORS = 1024


def _validator(schema: dict[str, Any], where: str) -> Any:
    """The jsonschema validator of ``schema``, checked once; a schema that is not valid JSON schema is a
    ``bad_request`` naming ``where``."""
    key = json.dumps(schema, sort_keys=True, default=str)
    found = _VALIDATORS.get(key)
    if found is not None:
        return found
    jsonschema = _jsonschema()
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise LLMError(f"{where} is not a valid JSON schema: {exc.message}"[:300], "bad_request") from None
    if len(_VALIDATORS) >= _MAX_VALIDATORS:
        _VALIDATORS.clear()
    _VALIDATORS[key] = validator = cls(schema)
    return validator


def _arguments_problem(call: ToolCall, schema: dict[str, Any]) -> str | None:
    try:
        args = json.loads(call.arguments or "{}")
    except json.JSONDecodeError as exc:
        return f"the arguments are not JSON ({exc.msg} at character {exc.pos})"
    if not isinstance(args, dict):
        return "the arguments must be a JSON object"
    errors = sorted(_validator(schema, "the tool's parameters").iter_errors(args),
                    key=lambda e: list(e.absolute_path))
    if not errors:
        return None
    shown = []
    for err in errors[:5]:
        where = ".".join(str(p) for p in err.absolute_path) or "(arguments)"
        shown.append(f"{where}: {err.message[:200]}")
    return "; ".join(shown)


def calls_schema(params: GenParams) -> dict[str, Any] | None:
    """The JSON schema of the list of calls a local model may write for ``params`` (one item per allowed tool:
    ``{"name": const, "arguments": the tool's parameters}``), or None when no call is allowed. At least one call
    when one is required (``required`` or a named tool; with ``auto`` SmolLM2's prompt lets the model write an empty
    list), at most one when ``parallel_tool_calls`` is false."""
    if not wants_calls(params):
        return None
    tools = check_tools(params.tools, params.tool_choice)
    forced = forced_name(params.tool_choice)
    items = [{"type": "object", "properties": {"name": {"const": name}, "arguments": bounded_schema(schema)},
              "required": ["name", "arguments"], "additionalProperties": False}
             for name, schema in tools.items() if forced is None or name == forced]
    schema: dict[str, Any] = {"type": "array", "items": items[0] if len(items) == 1 else {"anyOf": items},
                              "minItems": 1 if params.tool_choice == "required" or forced else 0}
    if params.parallel_tool_calls is False:
        schema["maxItems"] = 1
    return schema


def tool_constraint(messages: Messages, params: GenParams,
                    text_anytime: bool = False) -> tuple[dict[str, Any], bool] | None:
    """What a local provider's grammar allows for this request: (the calls' schema, ``calls_schema``; whether a
    plain text answer is allowed instead), or None when the output is not constrained (no call allowed, or the
    model param ``tool_grammar: false``). Shared by the llama.cpp (GBNF) and transformers (llguidance) providers.

    ``required`` and a named tool ask for at least one call. ``auto`` allows an empty list (SmolLM2's "no tool
    fits"), and free text only once the last message is a tool result (the answer built from the results): offered
    free text on a fresh question, the small model writes prose about functions instead of calling one. A format
    whose model answers in text when no tool fits (``text_anytime``, Qwen's: ``core/llm/tool_formats.py``) allows
    free text under ``auto`` on every turn."""
    calls = calls_schema(params)
    if calls is None or params.extra.get("tool_grammar", True) is False:
        return None
    after_results = bool(messages) and messages[-1].get("role") == "tool"
    return calls, params.tool_choice in (None, "auto") and (after_results or text_anytime)


# Words that say nothing about what a tool does ("calculate", "get", "find" start half of BFCL's questions).
_GATE_STOP = frozenset(
    "a an the of to in on for and or is are be by with from at as that this it its into what which who how find "
    "calculate get given number value values list use using based provided specific data information".split())


# Arithmetic written as a word or a sign between numbers names the operation a tool is called after: "What is 12
# times 7?" shares no word with multiply(a, b). Each adds the operation's stem beside the words themselves.
_GATE_OPERATIONS = {"times": "multiply", "multiplied": "multiply", "plus": "add", "added": "add",
                    "minus": "subtract", "subtracted": "subtract", "divided": "divide"}
_GATE_SIGNS = ((re.compile(r"\d\s*[x×*]\s*\d"), "multiply"), (re.compile(r"\d\s*\+\s*\d"), "add"),
               (re.compile(r"\d\s+[-−]\s+\d"), "subtract"), (re.compile(r"\d\s*[/÷]\s*\d"), "divide"))


def _content_stems(text: str) -> set[str]:
    """Lower-cased words of three letters or more, camelCase and snake_case split, stop words out, each cut to its
    first five letters (a crude stem: "calculates" and "calculation" meet); an arithmetic word or sign between
    numbers adds its operation's stem (``_GATE_OPERATIONS``, ``_GATE_SIGNS``)."""
    signs = {op[:5] for pattern, op in _GATE_SIGNS if pattern.search(text)}
    text = re.sub(r"([a-z])([A-Z])", r"\1 \2", text).replace("_", " ").lower()
    words = [w for w in re.findall(r"[a-z]+", text) if len(w) > 2 and w not in _GATE_STOP]
    return {w[:5] for w in words} | {_GATE_OPERATIONS[w][:5] for w in words if w in _GATE_OPERATIONS} | signs


def _tool_stems(tool: dict[str, Any]) -> set[str]:
    fn = tool.get("function") or {}
    stems = _content_stems(str(fn.get("name") or "")) | _content_stems(str(fn.get("description") or ""))
    props = (fn.get("parameters") or {}).get("properties") or {}
    for key, prop in props.items() if isinstance(props, dict) else ():
        stems |= _content_stems(str(key))
        if isinstance(prop, dict):
            stems |= _content_stems(str(prop.get("description") or ""))
    return stems


def tool_gate(messages: Messages, params: GenParams) -> GenParams:
    """``params`` as a small local model should answer them: under ``tool_choice: auto`` on a fresh question (the
    last message is the user's), when no tool shares a content word with the user's messages (``_content_stems`` of
    the question against each tool's name, description and parameters), the request goes on as ``tool_choice:
    none``, so the model answers in text. Under the grammar SmolLM2-135M calls some tool on every question, the
    irrelevant ones included; this check, computed in code, is what keeps it from calling a weather tool about a
    triangle. On BFCL (benchmarks/tool_calls.py, docs/benchmarks/tool_calls.md, docs/design/measurements.md) it
    lets nearly all ``simple_python``, ``multiple`` and ``parallel`` questions through and stops about half of the
    ``irrelevance`` ones. When some tools share a word and others do not, only those that do are offered (the
    prompt and the grammar). The model param ``tool_gate: false`` turns it off; any other ``tool_choice`` passes."""
    if (params.tool_choice not in (None, "auto") or not params.tools or params.extra.get("tool_gate", True) is False
            or not messages or messages[-1].get("role") != "user"):
        return params
    asked: set[str] = set()
    for message in messages:
        if message.get("role") == "user":
            content = message.get("content")
            asked |= _content_stems(content if isinstance(content, str) else _parts_text(content or ""))
    kept = [tool for tool in params.tools if not isinstance(tool, dict) or asked & _tool_stems(tool)]
    if not any(isinstance(tool, dict) for tool in kept):
        return replace(params, tool_choice="none")
    # the tools that share no word with the question are left out of this request (prompt and grammar): under the
    # grammar the model writes a valid call of *some* tool, and SmolLM2 picked get_population for every
    # "Convert N km to miles." (benchmarks/react_agent.py)
    return params if len(kept) == len(params.tools) else replace(params, tools=kept)


def close_repeats(text: str) -> str | None:
    """When the last ``<tool_call>`` block of ``text`` is still open and repeats a call it already holds (greedy
    decoding under the grammar loops on its first call), the block closed after its distinct calls; else None. A
    call cut short at the end is dropped."""
    start = text.rfind(TOOL_CALL_OPEN)
    if start < 0 or TOOL_CALL_CLOSE in text[start:]:
        return None
    body = text[start + len(TOOL_CALL_OPEN):].lstrip()
    if not body.startswith("["):
        return None
    decoder, pos, calls, repeated = json.JSONDecoder(), 1, [], False
    while True:
        while pos < len(body) and body[pos] in " \t\r\n,":
            pos += 1
        try:
            call, pos = decoder.raw_decode(body, pos)
        except ValueError:
            break
        if call in calls:
            repeated = True
            break
        calls.append(call)
    if not repeated:
        return None
    return text[:start] + TOOL_CALL_OPEN + json.dumps(calls, ensure_ascii=False) + TOOL_CALL_CLOSE


def _call_key(name: str, arguments: Any) -> str:
    """A call's identity: its name and its arguments as canonical JSON (key order and spacing do not count)."""
    return json.dumps([name, _loads(arguments)], sort_keys=True, ensure_ascii=False)


def answered_calls(messages: Messages) -> set[str]:
    """The calls (``_call_key``) that an assistant message of ``messages`` made and a ``tool`` message answered."""
    answered = {m.get("tool_call_id") for m in messages if m.get("role") == "tool"}
    return {_call_key(str(fn.get("name") or ""), fn.get("arguments"))
            for m in messages if m.get("role") == "assistant"
            for c in m.get("tool_calls") or [] if isinstance(c, dict) and c.get("id") in answered
            for fn in [c.get("function") or {}]}


def answered_tools(messages: Messages) -> set[str]:
    """The tools that answered a call since the last user message (this turn's results)."""
    start = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1) + 1
    turn = messages[start:]
    answered = {m.get("tool_call_id") for m in turn if m.get("role") == "tool"}
    return {str((c.get("function") or {}).get("name") or "") for m in turn if m.get("role") == "assistant"
            for c in m.get("tool_calls") or [] if isinstance(c, dict) and c.get("id") in answered}


def results_messages(messages: Messages) -> Messages:
    """The system messages, then one user turn: the user's last question and the results of this turn's calls ("multiply
    returned: 437"), asked to be answered with them. What a capable small model answers from (``checking_calls``)."""
    start = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    question = messages[start].get("content") if start >= 0 else ""
    question = question if isinstance(question, str) else _parts_text(question or "")
    names = {str(c.get("id")): str((c.get("function") or {}).get("name") or "the tool")
             for m in messages[start + 1:] if m.get("role") == "assistant" for c in m.get("tool_calls") or []
             if isinstance(c, dict)}
    results = []
    for m in messages[start + 1:]:
        if m.get("role") == "tool":
            content = m.get("content")
            text = content if isinstance(content, str) else _parts_text(content or "")
            results.append(f"{names.get(str(m.get('tool_call_id')), 'the tool')} returned: {text}")
    if not results:  # the repeated call was answered in an earlier turn: the whole conversation, in words
        return answer_messages(messages)
    system = [dict(m) for m in messages if m.get("role") == "system"]
    body = f"{question}\n\nTool results:\n" + "\n".join(results) + "\n\nAnswer the question using these results."
    return [*system, {"role": "user", "content": body}]


def answer_messages(messages: Messages) -> Messages:
    """``messages`` as a small model answers from tool results in text: each assistant call and its results become
    one exchange in words ("I called multiply({...})." / "The result of multiply is: 437") and the user's question
    is asked again after the last result. Given the tool messages as ``<tool_response>`` blocks, SmolLM2-135M copies
    the block back, tags and all, and drops digits of a number (13960000 came back as 1396000); in words it answers
    with the result ("5 km is equal to 3.107 miles.")."""
    question = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), None)
    question = question if isinstance(question, str) else _parts_text(question or "")
    names: dict[str, str] = {}
    out: Messages = []
    for message in messages:
        role = message.get("role")
        if role == "assistant" and message.get("tool_calls"):
            said = []
            for c in message["tool_calls"]:
                fn = c.get("function") or {}
                names[str(c.get("id"))] = str(fn.get("name") or "the tool")
                said.append(f"{fn.get('name')}({json.dumps(_loads(fn.get('arguments')), ensure_ascii=False)})")
            text = message.get("content") if isinstance(message.get("content"), str) else ""
            out.append({"role": "assistant", "content": ((text or "") + " I called " + ", ".join(said) + ".").strip()})
        elif role == "tool":
            content = message.get("content")
            text = content if isinstance(content, str) else _parts_text(content or "")
            line = f"The result of {names.get(str(message.get('tool_call_id')), 'the tool')} is: {text}"
            if out and out[-1]["role"] == "user" and out[-1].get("_results"):
                out[-1]["content"] += "\n" + line
            else:
                out.append({"role": "user", "content": line, "_results": True})
        else:
            out.append(dict(message))
    if out and out[-1].get("_results") and question:
        out[-1]["content"] += f"\nUsing this result, answer: {question}"
    return [{k: v for k, v in m.items() if k != "_results"} for m in out]


def bounded_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A tool's parameters as a grammar takes them: strings and arrays bounded where the schema leaves them open
    (``STRING_MAX_CHARS``, ``ARRAY_MAX_ITEMS``), an object at the top (a schema without a type is one), integer
    ranges of under 256 values as enums (llama.cpp's JSON-schema converter ignores ``minimum`` / ``maximum``:
    measured, a random model wrote 5044444444444444 for an integer of 0-9; wider ranges get a digit rule from the
    llama.cpp provider, ``llama_cpp.json_gbnf``, and llguidance reads the bounds itself), and no annotations
    (``description``, ``title``, ...: they do not constrain, and llama.cpp's converter rejects a schema made of
    annotations alone, as BFCL's ``any`` parameters are once typed: ``{"description": "The training data."}``)."""
    out = _grammar_ready(schema)
    if "type" not in out and "properties" in out:
        return {**out, "type": "object"}
    return out


_MAX_ENUM_RANGE = 256
# The grammar's bounds where a tool's schema sets none: a JSON string holds at most STRING_MAX_CHARS characters and
# an array at most ARRAY_MAX_ITEMS items. Unbounded, a small model under the grammar can stay inside a string (it
# wrote `"]}}]</tool_call>...` inside one until max_tokens) or a list (24 of BFCL's 400 simple_python replies ran to
# max_tokens that way); bounded, the grammar closes them. A schema's own maxLength / maxItems (or an enum, const or
# pattern) wins.
STRING_MAX_CHARS = 256
ARRAY_MAX_ITEMS = 16
_ANNOTATIONS = frozenset(("description", "title", "examples", "$comment", "deprecated", "readOnly", "writeOnly"))


def _grammar_ready(schema: Any) -> Any:
    """``schema`` with bounded integer ranges as enums, open strings and arrays bounded and without annotations, at
    every depth (see ``bounded_schema``)."""
    if isinstance(schema, list):
        return [_grammar_ready(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for k, v in schema.items():
        if k in _ANNOTATIONS:
            continue
        if k in ("items", "anyOf", "oneOf", "allOf", "additionalProperties"):
            out[k] = _grammar_ready(v)
        elif k in ("properties", "$defs", "definitions") and isinstance(v, dict):
            out[k] = {n: _grammar_ready(sub) for n, sub in v.items()}
        else:
            out[k] = v
    if out.get("type") == "integer" and "enum" not in out:
        low, high = out.get("minimum"), out.get("maximum")
        above, below = out.get("exclusiveMinimum"), out.get("exclusiveMaximum")
        if isinstance(above, (int, float)) and not isinstance(above, bool):
            low = math.floor(above) + 1
        if isinstance(below, (int, float)) and not isinstance(below, bool):
            high = math.ceil(below) - 1
        if isinstance(low, (int, float)) and isinstance(high, (int, float)) and 0 <= high - low < _MAX_ENUM_RANGE:
            start = int(low) if float(low).is_integer() else int(low) + 1
            out = {k: v for k, v in out.items() if k not in ("minimum", "maximum", "exclusiveMinimum",
                                                              "exclusiveMaximum")}
            out["enum"] = list(range(start, int(high) + 1))
    kinds = out.get("type")
    kinds = set(kinds) if isinstance(kinds, list) else {kinds}
    free = not any(k in out for k in ("enum", "const", "pattern", "format"))
    if "string" in kinds and free and "maxLength" not in out:
        out["maxLength"] = max(STRING_MAX_CHARS, int(out.get("minLength") or 0))
    if "array" in kinds and free and "maxItems" not in out:
        out["maxItems"] = max(ARRAY_MAX_ITEMS, int(out.get("minItems") or 0))
    return out


def tool_prompt(tools: list[dict[str, Any]]) -> str:
    """SmolLM2's system prompt listing ``tools`` (their ``function`` objects) as JSON."""
    functions = [_function(t, "tool") for t in tools]
    return _SMOLLM2_PROMPT.format(tools=json.dumps(functions, ensure_ascii=False))


def render_tool_messages(messages: Messages, params: GenParams, *, roles: tuple[str, ...] = ()) -> Messages:
    """``messages`` as a chat template without tool support takes them: SmolLM2's tool prompt in (or as) the system
    message when a call is allowed, assistant ``tool_calls`` written as ``<tool_call>[...]</tool_call>`` text, and
    ``tool`` results as ``<tool_response>`` text in a ``user`` message (a ``tool`` message when ``"tool"`` is in
    ``roles``, the template's own roles); every content a string."""
    out: Messages = []
    for message in messages:
        role, content = message.get("role"), message.get("content")
        text = content if isinstance(content, str) else "" if content is None else _parts_text(content)
        if role == "assistant" and message.get("tool_calls"):
            calls = [{"name": c["function"]["name"], "arguments": _loads(c["function"].get("arguments"))}
                     for c in message["tool_calls"]]
            text = (text + "\n" if text else "") + TOOL_CALL_OPEN + json.dumps(calls, ensure_ascii=False) + \
                TOOL_CALL_CLOSE
            out.append({"role": "assistant", "content": text})
        elif role == "tool":
            body = f"<tool_response>{text}</tool_response>"
            out.append({"role": "tool" if "tool" in roles else "user", "content": body})
        else:
            out.append({"role": role, "content": text})
    if wants_calls(params):
        prompt = tool_prompt(params.tools or [])
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": prompt + "\n\n" + out[0]["content"]}
        else:
            out.insert(0, {"role": "system", "content": prompt})
    return out


def _parts_text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(str(p.get("text") or "") for p in content if isinstance(p, dict))
    return str(content)


def _loads(text: Any) -> Any:
    if not isinstance(text, str):
        return text if text is not None else {}
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_tagged(text: str) -> tuple[str, list[ToolCall]]:
    """(the text outside ``<tool_call>`` blocks, the calls inside them). A block holds a JSON list of
    ``{"name", "arguments"}`` objects or one such object; a block that does not parse is kept as text, so the
    router's validation reports the reply as calling no tool (and repairs it)."""
    calls: list[ToolCall] = []
    kept: list[str] = []
    last, consumed = 0, False
    for match in _TAGGED.finditer(text):
        try:
            data = json.loads(match.group(1))
        except ValueError:
            continue
        items = data if isinstance(data, list) else [data]
        if not all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in items):
            continue
        kept.append(text[last:match.start()])
        last, consumed = match.end(), True
        for item in items:
            args = item.get("arguments", item.get("parameters", {}))
            calls.append(ToolCall(new_call_id(), item["name"],
                                  args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)))
    kept.append(text[last:])
    return "".join(kept).strip() if consumed else text, calls


@dataclass
class _Partial:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ToolCallAssembler:
    """Whole calls from a stream's ``delta.tool_calls`` pieces: each piece names its call by ``index``; the first
    piece of a call brings its id and name, the following ones append to its arguments (split anywhere, even
    inside a string or an escape)."""

    def __init__(self) -> None:
        self._calls: dict[int, _Partial] = {}

    def add(self, pieces: list[dict[str, Any]]) -> None:
        for n, piece in enumerate(pieces):
            if not isinstance(piece, dict):
                continue
            index = piece.get("index", n)
            call = self._calls.setdefault(index if isinstance(index, int) else n, _Partial())
            if piece.get("id"):
                call.id = str(piece["id"])
            fn = piece.get("function") or {}
            if fn.get("name"):
                call.name += str(fn["name"])
            if fn.get("arguments"):
                call.arguments.append(str(fn["arguments"]))

    def __bool__(self) -> bool:
        return bool(self._calls)

    def calls(self) -> list[ToolCall]:
        return [ToolCall(c.id or new_call_id(), c.name, "".join(c.arguments))
                for _, c in sorted(self._calls.items())]


def calls_from_message(message: dict[str, Any]) -> list[ToolCall]:
    """The ``ToolCall``s of an OpenAI assistant message (``message.tool_calls``)."""
    out = []
    for raw in message.get("tool_calls") or []:
        if not isinstance(raw, dict):
            continue
        fn = raw.get("function") or {}
        args = fn.get("arguments")
        out.append(ToolCall(str(raw.get("id") or new_call_id()), str(fn.get("name") or ""),
                            args if isinstance(args, str) else json.dumps(args if args is not None else {})))
    return out


def repair_messages(messages: Messages, completion: Completion, problem: str) -> Messages:
    """The conversation extended with the invalid reply and the validation error, so the model can call again:
    each call is answered by a ``tool`` message carrying the error (OpenAI requires every call to be answered);
    a reply without calls gets a user message."""
    reply: dict[str, Any] = {"role": "assistant", "content": completion.text or None}
    fix = f"The tool call was invalid: {problem}. Call the tool again with arguments that match its JSON schema."
    if not completion.tool_calls:
        return [*messages, {**reply, "content": completion.text}, {"role": "user", "content": fix}]
    reply["tool_calls"] = [c.to_openai() for c in completion.tool_calls]
    answers = [{"role": "tool", "tool_call_id": c.id, "content": f"error: {fix}"} for c in completion.tool_calls]
    return [*messages, reply, *answers]


def describe_calls(completion: Completion) -> str:
    """A candidate as a judge reads it: its text, then each call as ``name(arguments)``."""
    lines = [completion.text] if completion.text else []
    lines += [f"calls {c.name}({c.arguments})" for c in completion.tool_calls]
    return "\n".join(lines)


def without_tools(params: GenParams) -> GenParams:
    return replace(params, tools=None, tool_choice=None, parallel_tool_calls=None)


def cut_problem(params: GenParams, raise_what: str = "max_tokens") -> str:
    """What a reply stopped at max_tokens before its tool call closed is, and the next step (``raise_what``)."""
    limit = f" ({params.max_tokens})" if params.max_tokens else ""
    return (f"the reply was cut at max_tokens{limit} before its tool call ended (finish_reason length): "
            f"raise {raise_what}")


def _cut(call: CallState, name: str, params: GenParams) -> None:
    """A reply cut at max_tokens before its tool call closed is that, kind ``max_tokens``, not an invalid call: a
    repair under the same limit would be cut again, so the strategy moves on to the next model."""
    call.attempts.append(Attempt(name, "max_tokens", 0.0, cut_problem(params)))


def checking_calls(try_model: TryModel, on_invalid: Callable[[str, str, str], None],
                   small: Callable[[str], str | None] | None = None) -> TryModel:
    """``try_model`` whose answers to a request with tools are validated (``call_problem``): an invalid reply is
    shown to the same model once with the validation error (``repair_messages``); a second invalid reply is an
    ``invalid_tool_call`` attempt and the strategy moves on to the next model. A reply cut at max_tokens is a
    ``max_tokens`` attempt instead, never repaired. ``on_invalid(route, model, problem)`` is told of every invalid
    reply (the router counts them).

    ``small(model)`` says whether a model's repeated calls are dropped (its profile's ``drop_repeats``) and how it
    then answers: None (not dropped), ``"words"`` or ``"results"``. Under ``tool_choice: auto`` its calls that repeat
    one already answered in the conversation (same tool, same arguments), or call again a tool that already answered
    in this turn (since the user's last message), are dropped, and when none is left it answers from the results in
    text with no tools: from the conversation put in words (``answer_messages``, ``"words"``: SmolLM2 copies
    ``<tool_response>`` blocks back) or from the question and this turn's results in one user turn
    (``results_messages``, ``"results"``: Qwen2.5-Coder-0.5B, given the words version, echoed "I called
    multiply(...)", and given the conversation as its template renders it, wrote the next call as text).
    SmolLM2-135M under the grammar calls the same tool after every result until an agent's step limit, with the same
    arguments (the weather of Paris twice) or fed its own result (23 x 19 = 437, then 437 x 19, then 8303 x 19): none
    of the LangGraph questions tried ended before this (docs/design/measurements.md). A call to another tool (the next
    step of a multi-step question) goes through; a chain through one tool twice (multiply, then multiply its
    result) is what the small profile gives up."""

    async def attempt(call: CallState, name: str, messages: Messages, params: GenParams) -> Completion | None:
        completion = await try_model(call, name, messages, params)
        if completion is None or not params.tools:
            return completion
        how = small(name) if small is not None and completion.tool_calls and params.tool_choice in (None, "auto") \
            else None
        if how is not None:
            answered, tools_done = answered_calls(messages), answered_tools(messages)
            fresh = [c for c in completion.tool_calls
                     if _call_key(c.name, c.arguments) not in answered and c.name not in tools_done]
            if not fresh:
                return await try_model(call, name, answer_messages(messages) if how == "words" else
                                       results_messages(messages), without_tools(params))
            completion = replace(completion, tool_calls=fresh)
        problem = call_problem(completion, params)
        if problem is None:
            return completion
        if completion.finish_reason == "length":
            _cut(call, name, params)
            return None
        on_invalid(call.route, name, problem)
        # the reply's attempt (this model's last), marked: ``invalid_replies`` counts it
        last = next((a for a in reversed(call.attempts) if a.model == name), None)
        if last is not None and last.ok:
            last.repaired = True
        completion = await try_model(call, name, repair_messages(messages, completion, problem), params)
        if completion is None:
            return None
        problem = call_problem(completion, params)
        if problem is None:
            return completion
        if completion.finish_reason == "length":
            _cut(call, name, params)
            return None
        on_invalid(call.route, name, problem)
        call.attempts.append(Attempt(name, "invalid_tool_call", 0.0, problem))
        return None

    return attempt
