"""Structured output: a pydantic model -> JSON schema -> the model's reply -> a validated object.

Models wrap JSON in code fences or prose often enough that extraction is lenient (the outermost ``{...}``, preferring
a fenced block), while validation is strict. An invalid reply is shown back to the same model with the errors, a
bounded number of times, before the route moves on to its next model.

Every structured call is bounded: unless the caller sets ``max_tokens``, it is the schema's own bound
(:func:`schema_max_tokens`: the longest JSON text a grammar built from the schema allows, for schemas whose strings
carry ``maxLength`` and whose numbers and objects are closed), capped by the model's configured ``max_tokens``. A
reply cut at ``max_tokens`` (``finish_reason == "length"``) is reported as cut, and the repair prompt says so.

The router calls :func:`structured_on_chain` with the function that tries one model (``TryModel``) and a hook that
counts invalid replies; this module never imports the router.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from pydantic import BaseModel, ValidationError

from agentlab.core.llm.results import Attempt, CallState, ModelT, StructuredResult, TryModel
from agentlab.core.llm.types import GenParams, Messages

_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)```", re.DOTALL)
_MAX_ERROR_CHARS = 1500  # keep repair prompts short: a few field errors say all the model needs
_MAX_CUT_ECHO = 300  # how much of a reply cut at max_tokens is shown back to the model with the repair request
# max_tokens of a structured call whose schema has no bound (a free-form string or object): enough for any sensible
# JSON answer, and a runaway reply ends in bounded time.
UNBOUNDED_MAX_TOKENS = 1024
# llama.cpp's JSON grammar allows at most 16 digits in an integral, fraction or exponent part.
_NUMBER_CHARS = {"integer": 17, "number": 1 + 16 + 1 + 16 + 2 + 16}


class InvalidOutput(ValueError):
    """The reply holds no JSON object, or one that does not validate; the message lists the problems."""


class CutOff(InvalidOutput):
    """The reply stopped at the token limit (``after`` tokens, when known) before its JSON object was complete."""

    PREFIX = "the reply was cut off at max_tokens"  # how its message (an attempt's) starts: the gateway tells it so

    def __init__(self, after: int | None = None):
        self.where = f"at max_tokens (after {after} tokens)" if after else "at max_tokens"
        super().__init__(f"the reply was cut off {self.where} before its JSON object was complete")


def extract_json(text: str) -> str:
    """The JSON object in a reply: inside a fenced block if there is one, else the outermost ``{...}``."""
    for block in _FENCE.findall(text):
        if "{" in block:
            text = block
            break
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        raise InvalidOutput("no JSON object found in the reply")
    return text[start : end + 1]


def parse_reply(text: str, schema: type[ModelT], finish_reason: str | None = None,
                max_tokens: int | None = None) -> ModelT:
    """Extract and validate; raises ``InvalidOutput`` with a compact list of errors. A reply that does not parse and
    stopped at the token limit (``finish_reason == "length"``) is reported as cut off, not as malformed."""
    try:
        raw = extract_json(text)
        return _validate(raw, schema)
    except InvalidOutput:
        if finish_reason == "length":
            raise CutOff(max_tokens) from None
        raise


def _validate(raw: str, schema: type[ModelT]) -> ModelT:
    try:
        try:
            return schema.model_validate_json(raw)
        except ValidationError as exc:
            # A raw control character inside a string (llama.cpp's JSON grammar lets a small model write one) is
            # the only JSON fault forgiven: the text is read as Python's lenient parser reads it.
            if not any(e["type"] == "json_invalid" and "control character" in e["msg"] for e in exc.errors()):
                raise
            try:
                loose = json.loads(raw, strict=False)
            except ValueError:
                raise exc from None
            return schema.model_validate(loose)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            problems.append(f"{where}: {err['msg']}")
        raise InvalidOutput("; ".join(problems)[:_MAX_ERROR_CHARS]) from None


def schema_param(schema: type[BaseModel]) -> dict[str, object]:
    """``GenParams.json_schema`` for ``schema``: backends that support it constrain decoding with it.

    Not ``strict``: OpenAI's strict mode rejects (HTTP 400) any schema without ``additionalProperties: false`` and
    with optional fields, which ordinary pydantic models have; our own validation is the strict part.
    """
    return {"name": schema.__name__, "schema": schema.model_json_schema(), "strict": False}


def max_output_chars(schema: dict[str, Any], defs: dict[str, Any] | None = None) -> int | None:
    """The longest JSON text (in characters, an escaped character counted once) that a grammar built from ``schema``
    allows, or None when it has no bound (a string without ``maxLength``, a free-form object, an array without
    ``maxItems``). Whitespace counts as llama.cpp's grammar allows it: one optional space after each token."""
    defs = schema.get("$defs", defs or {})
    if "$ref" in schema:
        return max_output_chars(defs.get(schema["$ref"].rsplit("/", 1)[-1], {}), defs)
    if "const" in schema:
        return len(json.dumps(schema["const"])) + 1
    if "enum" in schema:
        return max(len(json.dumps(v)) for v in schema["enum"]) + 1 if schema["enum"] else 1
    alternatives = schema.get("anyOf") or schema.get("oneOf")
    if alternatives:
        sizes = [max_output_chars(alt, defs) for alt in alternatives]
        return None if None in sizes else max(s for s in sizes if s is not None)
    kind = schema.get("type")
    if kind == "string":
        return schema["maxLength"] + 3 if "maxLength" in schema else None
    if kind in _NUMBER_CHARS:
        return _NUMBER_CHARS[kind] + 1
    if kind in ("boolean", "null"):
        return 6
    if kind == "array":
        item = max_output_chars(schema.get("items") or {}, defs)
        return None if item is None or "maxItems" not in schema else 2 + schema["maxItems"] * (item + 2) + 1
    if kind in (None, "object") and "properties" in schema and schema.get("additionalProperties") in (None, False):
        total = 3
        for name, sub in schema["properties"].items():
            size = max_output_chars(sub, defs)
            if size is None:
                return None
            total += len(json.dumps(name)) + 3 + size + 2
        return total
    return None


def schema_max_tokens(schema: type[BaseModel]) -> int:
    """``max_tokens`` for a structured call of ``schema``: the schema's bound in characters (a token holds at least
    one, so a grammar-complete answer always fits), or ``UNBOUNDED_MAX_TOKENS`` for an unbounded schema."""
    chars = max_output_chars(schema.model_json_schema())
    return chars if chars is not None else UNBOUNDED_MAX_TOKENS


def bounded(params: GenParams, model_max_tokens: int | None, schema_tokens: int) -> GenParams:
    """``params`` with a ``max_tokens``: the caller's own when set, else the schema's bound, lowered to the model's
    configured ``max_tokens`` when that is smaller."""
    if params.max_tokens is not None:
        return params
    limit = schema_tokens if model_max_tokens is None else min(schema_tokens, model_max_tokens)
    return replace(params, max_tokens=limit)


def with_instruction(messages: Messages, schema: type[BaseModel], show_schema: bool = True) -> Messages:
    """``messages`` with a JSON-only instruction in the system message (merged into an existing one, since some chat
    templates accept a single system message only). Without ``show_schema`` the schema itself is left out of the
    prompt (the caller describes the format in fewer tokens; grammar-constrained backends enforce it anyway)."""
    instruction = "Answer only with one JSON object" + (
        f" that matches this JSON schema; no prose, no code fences.\nJSON schema: "
        f"{json.dumps(schema.model_json_schema(), separators=(',', ':'))}" if show_schema
        else "; no prose, no code fences.")
    if messages and messages[0].get("role") == "system":
        first = {**messages[0], "content": f"{messages[0].get('content', '')}\n\n{instruction}"}
        return [first, *messages[1:]]
    return [{"role": "system", "content": instruction}, *messages]


def repair_messages(convo: Messages, reply: str, problem: InvalidOutput | str) -> Messages:
    """The conversation extended with the invalid reply and the request to fix it."""
    if isinstance(problem, CutOff):
        # Only the start of a cut reply goes back: the model needs to see what it began, and a reply that ran to the
        # limit would otherwise fill a small model's context with the repeat.
        reply = reply[:_MAX_CUT_ECHO] + (" ..." if len(reply) > _MAX_CUT_ECHO else "")
        fix = (f"Your answer was cut off {problem.where} before its JSON object was complete. Reply with a shorter "
               "JSON object only, with brief free text, so that it ends within the limit.")
    else:
        fix = f"Your answer was invalid: {problem}. Reply with corrected JSON only."
    return [*convo, {"role": "assistant", "content": reply}, {"role": "user", "content": fix}]


async def structured_on_chain(try_model: TryModel, call: CallState, chain: list[str], messages: Messages,
                              schema: type[ModelT], params: GenParams, max_repairs: int, *,
                              on_invalid: Callable[[str], None], show_schema: bool = True,
                              model_max_tokens: Callable[[str], int | None] | None = None) -> StructuredResult[ModelT]:
    """Ask each model of ``chain`` in turn until one returns a valid ``schema`` object (with repairs).

    ``try_model`` sends one request (with retries); ``on_invalid(name)`` is told of every reply of ``name`` that fails
    validation (the router counts them in the model's stats); ``show_schema``: see :func:`with_instruction`;
    ``model_max_tokens(name)``: the model's configured ``max_tokens``, which lowers the schema's bound
    (:func:`bounded`).
    """
    params = replace(params, json_schema=schema_param(schema))
    schema_tokens = schema_max_tokens(schema)
    base = with_instruction(messages, schema, show_schema)
    for name in chain:
        convo, repairs = base, 0
        sent = bounded(params, model_max_tokens(name) if model_max_tokens else None, schema_tokens)
        while True:
            completion = await try_model(call, name, convo, sent)
            if completion is None:
                break  # transport failure after retries: the attempts say why
            try:
                value = parse_reply(completion.text, schema, completion.finish_reason,
                                    completion.usage.completion_tokens or sent.max_tokens)
            except InvalidOutput as exc:
                on_invalid(name)
                if repairs >= max_repairs:
                    call.attempts.append(Attempt(name, "invalid_output", 0.0, str(exc)))
                    break
                repairs += 1
                convo = repair_messages(convo, completion.text, exc)
                continue
            return StructuredResult(value, call.result(completion, name), repairs)
    raise call.failed()

