"""Structured output: a pydantic model -> JSON schema -> the model's reply -> a validated object.

Models wrap JSON in code fences or prose often enough that extraction is lenient (the outermost ``{...}``, preferring
a fenced block), while validation is strict. An invalid reply is shown back to the same model with the errors, a
bounded number of times, before the route moves on to its next model.

The router calls :func:`structured_on_chain` with the function that tries one model (``TryModel``) and a hook that
counts invalid replies; this module never imports the router.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import replace

from pydantic import BaseModel, ValidationError

from agentlab.core.llm.results import Attempt, CallState, ModelT, StructuredResult, TryModel
from agentlab.core.llm.types import GenParams, Messages

_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)```", re.DOTALL)
_MAX_ERROR_CHARS = 1500  # keep repair prompts short: a few field errors say all the model needs


class InvalidOutput(ValueError):
    """The reply holds no JSON object, or one that does not validate; the message lists the problems."""


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


def parse_reply(text: str, schema: type[ModelT]) -> ModelT:
    """Extract and validate; raises ``InvalidOutput`` with a compact list of errors."""
    raw = extract_json(text)
    try:
        return schema.model_validate_json(raw)
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


def with_instruction(messages: Messages, schema: type[BaseModel]) -> Messages:
    """``messages`` with a JSON-only instruction in the system message (merged into an existing one, since some chat
    templates accept a single system message only)."""
    instruction = ("Answer only with one JSON object that matches this JSON schema; no prose, no code fences.\n"
                   f"JSON schema: {json.dumps(schema.model_json_schema(), separators=(',', ':'))}")
    if messages and messages[0].get("role") == "system":
        first = {**messages[0], "content": f"{messages[0].get('content', '')}\n\n{instruction}"}
        return [first, *messages[1:]]
    return [{"role": "system", "content": instruction}, *messages]


def repair_messages(convo: Messages, reply: str, problem: str) -> Messages:
    """The conversation extended with the invalid reply and the request to fix it."""
    fix = f"Your answer was invalid: {problem}. Reply with corrected JSON only."
    return [*convo, {"role": "assistant", "content": reply}, {"role": "user", "content": fix}]


async def structured_on_chain(try_model: TryModel, call: CallState, chain: list[str], messages: Messages,
                              schema: type[ModelT], params: GenParams, max_repairs: int, *,
                              on_invalid: Callable[[str], None]) -> StructuredResult[ModelT]:
    """Ask each model of ``chain`` in turn until one returns a valid ``schema`` object (with repairs).

    ``try_model`` sends one request (with retries); ``on_invalid(name)`` is told of every reply of ``name`` that fails
    validation (the router counts them in the model's stats).
    """
    params = replace(params, json_schema=schema_param(schema))
    base = with_instruction(messages, schema)
    for name in chain:
        convo, repairs = base, 0
        while True:
            completion = await try_model(call, name, convo, params)
            if completion is None:
                break  # transport failure after retries: the attempts say why
            try:
                value = parse_reply(completion.text, schema)
            except InvalidOutput as exc:
                on_invalid(name)
                if repairs >= max_repairs:
                    call.attempts.append(Attempt(name, "invalid_output", 0.0, str(exc)))
                    break
                repairs += 1
                convo = repair_messages(convo, completion.text, str(exc))
                continue
            return StructuredResult(value, call.result(completion, name), repairs)
    raise call.failed()
