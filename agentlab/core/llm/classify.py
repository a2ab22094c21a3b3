"""Routing by task: a route with ``classify`` sends each request to one of its choices (other routes).

Three rules (``ClassifyConfig.by``):

- ``keywords``: the first choice (in config order) one of whose keywords occurs in the last user message, as a
  whole word, case-insensitive;
- ``metadata``: the request's ``metadata[field]`` (the OpenAI ``metadata`` object a gateway request carries, or
  ``Router.generate(metadata=...)``) names the choice, or is one of its ``metadata`` values;
- ``model``: a small model reads the last user message and the choices' descriptions and answers with one choice's
  name (asked for as JSON with the names as an enum, so a grammar-bound local model can only answer a name).

No match, or a classifying model that fails or answers something else: the ``default`` route. The router reports
every choice as a ``route_choice`` event (route, chosen, by, reason).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from agentlab.core.errors import LLMError
from agentlab.core.llm.config import ClassifyConfig
from agentlab.core.llm.types import Completion, GenParams, Messages

__all__ = ["choose_route", "last_user_text"]

AskModel = Callable[[str, Messages, GenParams], Awaitable[Completion]]


def last_user_text(messages: Messages) -> str:
    """The text of the last user message (text parts joined), '' when there is none."""
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return ""
    return ""


_PATTERNS: dict[tuple[str, ...], re.Pattern[str]] = {}


def _pattern(keywords: list[str]) -> re.Pattern[str]:
    key = tuple(keywords)
    found = _PATTERNS.get(key)
    if found is None:
        words = "|".join(re.escape(k) for k in sorted(keywords, key=len, reverse=True))
        found = _PATTERNS[key] = re.compile(rf"(?<!\w)(?:{words})(?!\w)", re.IGNORECASE)
    return found


async def choose_route(classify: ClassifyConfig, messages: Messages, metadata: dict[str, Any] | None,
                       ask: AskModel) -> tuple[str, str]:
    """(the chosen route, why); ``ask(model, messages, params)`` calls the classifying model."""
    if classify.by == "keywords":
        text = last_user_text(messages)
        for name, choice in classify.choices.items():
            if choice.keywords:
                hit = _pattern(choice.keywords).search(text)
                if hit:
                    return name, f"keyword '{hit.group(0).lower()}'"
        return classify.default, "no keyword matched"
    if classify.by == "metadata":
        value = (metadata or {}).get(classify.field)
        if value is None:
            return classify.default, f"no metadata.{classify.field}"
        for name, choice in classify.choices.items():
            if value == name or value in choice.metadata:
                return name, f"metadata.{classify.field}={str(value)[:40]}"
        return classify.default, f"metadata.{classify.field} matched no choice"
    return await _by_model(classify, messages, ask)


async def _by_model(classify: ClassifyConfig, messages: Messages, ask: AskModel) -> tuple[str, str]:
    names = list(classify.choices)
    listing = "\n".join(f"- {n}: {c.description or n}" for n, c in classify.choices.items())
    prompt = [{"role": "system", "content": "You route requests. Answer with JSON {\"route\": NAME}, NAME one of:\n"
               + listing},
              {"role": "user", "content": last_user_text(messages)[:4000]}]
    schema = {"name": "route", "schema": {"type": "object", "properties": {"route": {"type": "string", "enum": names}},
                                          "required": ["route"], "additionalProperties": False}}
    assert classify.model is not None  # the config checks it
    try:
        reply = await ask(classify.model, prompt, GenParams(temperature=0.0, max_tokens=32, json_schema=schema))
    except LLMError as exc:
        return classify.default, f"classifier {classify.model} failed ({exc.kind})"
    try:
        picked = json.loads(reply.text).get("route")
    except (ValueError, AttributeError):
        picked = None
    if picked not in classify.choices:
        # a model without a grammar may still write the bare name
        picked = next((n for n in names if re.search(rf"(?<!\w){re.escape(n)}(?!\w)", reply.text)), None)
    if picked is None:
        return classify.default, f"classifier {classify.model} named no choice"
    return picked, f"classifier {classify.model}"
