"""Each local model's own tool-call format: how its prompt lists the tools, how earlier calls and results read in the
history, which text is a call, and the shape the grammar constrains an answer to.

Local models (llama.cpp, transformers) have no tool API: they write calls as text, each family in the form it was
trained on. Two formats are known:

- ``smollm2``: SmolLM2's (its model card's tool prompt): one ``<tool_call>[...]</tool_call>`` block holding a JSON list
  of ``{"name", "arguments"}`` objects; "no tool fits" is the empty list, and free text is allowed only after tool
  results (offered free text on a fresh question, SmolLM2-135M writes prose about functions instead of calling one).
- ``qwen``: Qwen2.5's (and the Hermes templates'): one block per call,
  ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``, blocks separated by a newline; a model that
  needs no tool answers in plain text. Qwen's chat template renders the tools (``# Tools ... <tools>...</tools>``)
  and the history (assistant ``tool_calls``, ``tool`` messages as ``<tool_response>``) itself, so the messages reach
  it as structures, not as text.

Which format a model uses is decided in one place, ``format_for``: the model param ``tool_format``, else the built-in
model table's entry, else its chat template (a template that writes ``<tool_call>`` blocks around one call is
``qwen``), else ``smollm2`` (whose prompt agentlab writes itself, for templates that know no tools). Parsing is
lenient where the grammar is off (``tool_grammar: false``): a ``qwen`` reply of bare or fenced JSON naming a call is
read as that call (Qwen2.5-Coder answers so without a grammar).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from agentlab.core.llm.tools import (  # _loads, _parts_text: the history's JSON arguments and text, read alike
    ARRAY_MAX_ITEMS,
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    _loads,
    _parts_text,
    close_repeats,
    new_call_id,
    parse_tagged,
    render_tool_messages,
    tool_prompt,
    wants_calls,
    without_tools,
)
from agentlab.core.llm.types import GenParams, Messages, ToolCall

__all__ = ["ToolFormat", "FORMATS", "format_for", "detect_format", "FORMAT_NAMES", "allowed_names"]

# Qwen2.5's own tool prompt (its chat template's words), for a model given the qwen format whose template does not
# render tools itself.
_QWEN_PROMPT = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function "
    "signatures within <tools></tools> XML tags:\n<tools>{tools}\n</tools>\n\nFor each function call, return a json "
    "object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{{\"name\": "
    "<function-name>, \"arguments\": <args-json-object>}}\n</tool_call>")
_BLOCK = re.compile(re.escape(TOOL_CALL_OPEN) + r"\s*(.*?)\s*(?:" + re.escape(TOOL_CALL_CLOSE) + r"|$)", re.DOTALL)
_FENCE = re.compile(r"^```[a-zA-Z]*\s*(.*?)\s*```$", re.DOTALL)


@dataclass(frozen=True)
class ToolFormat:
    """One model family's tool-call text (see the module's doc). ``per_call``: one block per call (else one block
    holding a JSON list); ``open`` / ``close``: a block's delimiters as the grammar writes them; ``separator``:
    between blocks; ``text_anytime``: under ``tool_choice: auto`` a plain-text answer is allowed on a fresh question
    (else only after tool results, and "no call" is an empty list); ``text_excludes``: what a plain-text answer may
    not start with under the grammar (Qwen2.5-Coder writes a call it means as bare JSON when text is allowed, and
    then repeats it: the grammar sends an answer that starts with ``{`` into a block)."""

    name: str
    per_call: bool
    open: str
    close: str
    separator: str
    text_anytime: bool
    # characters a free-text answer may not start with (a call's first character), as a grammar's class escapes them
    text_excludes: str = "<"

    def prompt(self, tools: list[dict[str, Any]]) -> str:
        """The system prompt listing ``tools`` (OpenAI's ``{"type": "function", "function": ...}`` objects), for a
        template that does not render tools itself."""
        if not self.per_call:
            return tool_prompt(tools)
        functions = "".join("\n" + json.dumps(t, ensure_ascii=False) for t in tools)
        return _QWEN_PROMPT.format(tools=functions)

    def calls_text(self, calls: list[dict[str, Any]]) -> str:
        """An assistant's calls (``{"name", "arguments"}`` with arguments as objects) as the model writes them."""
        if not self.per_call:
            return TOOL_CALL_OPEN + json.dumps(calls, ensure_ascii=False) + TOOL_CALL_CLOSE
        return self.separator.join(self.open + json.dumps(c, ensure_ascii=False) + self.close for c in calls)

    def result_text(self, text: str) -> str:
        """A tool's result as the model reads it in a user (or tool) turn."""
        if self.per_call:
            return f"<tool_response>\n{text}\n</tool_response>"
        return f"<tool_response>{text}</tool_response>"

    def parse(self, text: str, names: Collection[str] | None = None) -> tuple[str, list[ToolCall]]:
        """(the text outside calls, the calls): see the module's doc. ``names``: the tools a call may name on this
        request (``allowed_names``); the lenient reading of the ``qwen`` format (a call outside a block) takes only
        calls of these, and none when no call is allowed."""
        if not self.per_call:
            return parse_tagged(text)
        return parse_blocks(text, names)

    def close_repeats(self, text: str, names: Collection[str] | None = None) -> str | None:
        """When the answer so far repeats a call it already made (greedy decoding loops on its first call), the
        answer cut after its distinct calls; else None. ``names`` as for ``parse``: calls outside blocks count only
        when they name one of them."""
        if not self.per_call:
            return close_repeats(text)
        seen: list[Any] = []
        for start, _, call in _call_objects(text, names):
            if call in seen:
                block = text.rfind(TOOL_CALL_OPEN, 0, start)
                cut = block if block >= 0 and not text[block + len(TOOL_CALL_OPEN):start].strip() else start
                return text[:cut].rstrip()
            seen.append(call)
        return None

    def render(self, messages: Messages, params: GenParams, *, template_tools: bool) -> tuple[Messages, bool]:
        """(``messages`` as this model's chat template takes them, whether the template gets ``tools``): a template
        that renders tools gets the history as structures (``qwen``) or as this format's text (``smollm2``, whose
        template knows no tool roles); any other template gets this format's tool prompt in the system message and
        the history as text (results in a ``user`` turn)."""
        if not self.per_call:  # SmolLM2's rendering, as tools.render_tool_messages has always done it
            if template_tools:
                return render_tool_messages(messages, without_tools(params), roles=("tool",)), wants_calls(params)
            return render_tool_messages(messages, params), False
        if template_tools:
            return template_messages(messages), wants_calls(params)
        out: Messages = []
        for message in messages:
            role, content = message.get("role"), message.get("content")
            text = content if isinstance(content, str) else "" if content is None else _parts_text(content)
            if role == "assistant" and message.get("tool_calls"):
                calls = [{"name": (c.get("function") or {}).get("name"),
                          "arguments": _loads((c.get("function") or {}).get("arguments"))}
                         for c in message["tool_calls"] if isinstance(c, dict)]
                out.append({"role": "assistant", "content": (text + "\n" if text else "") + self.calls_text(calls)})
            elif role == "tool":
                out.append({"role": "user", "content": self.result_text(text)})
            else:
                out.append({"role": role, "content": text})
        if wants_calls(params):  # Qwen's template puts the tools after the system text
            prompt = self.prompt(list(params.tools or []))
            if out and out[0]["role"] == "system":
                out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + prompt}
            else:
                out.insert(0, {"role": "system", "content": prompt})
        return out, False

    def grammar_counts(self, calls: dict[str, Any]) -> tuple[int, int]:
        """(fewest, most) calls a constrained answer holds, from ``tools.calls_schema``."""
        return int(calls.get("minItems") or 0), int(calls.get("maxItems") or ARRAY_MAX_ITEMS)


FORMATS: dict[str, ToolFormat] = {
    "smollm2": ToolFormat("smollm2", per_call=False, open=TOOL_CALL_OPEN, close=TOOL_CALL_CLOSE, separator="",
                          text_anytime=False),
    "qwen": ToolFormat("qwen", per_call=True, open=TOOL_CALL_OPEN + "\n", close="\n" + TOOL_CALL_CLOSE,
                       separator="\n", text_anytime=True, text_excludes="<{"),
}
FORMAT_NAMES = tuple(FORMATS)


def detect_format(template: str | None) -> str:
    """The format a chat template writes: ``qwen`` when it renders tools and wraps each call in ``<tool_call>``
    (Qwen2.5's and Hermes' templates), else ``smollm2``."""
    if template and "tools" in template and TOOL_CALL_OPEN in template and "tool_call" in template.replace(
            TOOL_CALL_OPEN, ""):
        return "qwen"
    return "smollm2"


def format_for(template: str | None, param: Any = None, builtin: str | None = None) -> ToolFormat:
    """The one place a local model's format is chosen: the model param ``tool_format`` (``param``), else the built-in
    table's (``builtin``), else ``detect_format(template)``."""
    for name in (param, builtin):
        if isinstance(name, str) and name:
            if name not in FORMATS:
                raise ValueError(f"unknown tool_format '{name}' (known: {', '.join(FORMATS)})")
            return FORMATS[name]
    return FORMATS[detect_format(template)]


def _as_calls(data: Any) -> list[ToolCall] | None:
    items = data if isinstance(data, list) else [data]
    if not items or not all(isinstance(i, dict) and isinstance(i.get("name"), str) and (
            "arguments" in i or "parameters" in i) for i in items):
        return None
    out = []
    for item in items:
        args = item.get("arguments", item.get("parameters", {}))
        out.append(ToolCall(new_call_id(), item["name"],
                            args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)))
    return out


_CALL_KEYS = frozenset(("name", "arguments", "parameters"))


def allowed_names(params: GenParams) -> frozenset[str] | None:
    """The tools a call may name on this request (after the gate), or None when no call is allowed."""
    if not wants_calls(params):
        return None
    return frozenset(str((t.get("function") or {}).get("name")) for t in params.tools or [] if isinstance(t, dict))


def _known_call(data: Any, names: Collection[str]) -> bool:
    """A call object outside any block: only the keys of a call, naming one of the request's tools."""
    return isinstance(data, dict) and set(data) <= _CALL_KEYS and data.get("name") in names and (
        "arguments" in data or "parameters" in data)


def _call_objects(text: str, names: Collection[str] | None) -> list[tuple[int, int, dict[str, Any]]]:
    """The call objects of ``text`` in order, (start, end, call): the one right after each ``<tool_call>``, and with
    ``names`` every other JSON object that is a call of one of them (``_known_call``)."""
    out: list[tuple[int, int, dict[str, Any]]] = []
    decoder, pos = json.JSONDecoder(), 0
    while (start := text.find("{", pos)) >= 0:
        try:
            data, end = decoder.raw_decode(text, start)
        except ValueError:
            pos = start + 1
            continue
        opener = text.rfind(TOOL_CALL_OPEN, 0, start)
        in_block = opener >= 0 and not text[opener + len(TOOL_CALL_OPEN):start].strip()
        if isinstance(data, dict) and (in_block and _as_calls(data) is not None or
                                       names is not None and _known_call(data, names)):
            out.append((start, end, data))
            pos = end
        else:
            pos = start + 1
    return out


def parse_blocks(text: str, names: Collection[str] | None = None) -> tuple[str, list[ToolCall]]:
    """The ``qwen`` format read back: each ``<tool_call>`` block holds one call (or a list of calls); a block that
    does not parse stays text. With ``names`` (the request's tools), a reply with no block that is one JSON call of
    one of them (or a list), bare or in a ```` ``` ```` fence, is that call; else the distinct calls of them written
    anywhere in its text are its calls, and the rest of the text stays."""
    calls: list[ToolCall] = []
    kept: list[str] = []
    last = 0
    for match in _BLOCK.finditer(text):
        try:
            found = _as_calls(json.loads(match.group(1)))
        except ValueError:
            found = None
        if found is None:
            continue
        kept.append(text[last:match.start()])
        last = match.end()
        calls += found
    if calls:
        kept.append(text[last:])
        return "".join(kept).strip(), calls
    if not names:
        return text, []
    body = text.strip()
    fenced = _FENCE.match(body)
    try:
        data = json.loads(fenced.group(1) if fenced else body) if body[:1] in "[{`" else None
    except ValueError:
        data = None
    items = data if isinstance(data, list) else [data]
    if data is not None and items and all(_known_call(i, names) for i in items):
        return "", _as_calls(data) or []
    # A call written outside any block, inside text (after a "(", in a fence after a sentence, repeated line after
    # line): Qwen2.5-Coder-0.5B does this after a tool result. Its distinct calls are the answer; the router
    # validates them (and a repeat of an answered call is dropped there for the small and medium profiles).
    bare: list[dict[str, Any]] = []
    rest, last = [], 0
    for start, end, call in _call_objects(text, names):
        rest.append(text[last:start])
        last = end
        if call not in bare:
            bare.append(call)
    rest.append(text[last:])
    return ("".join(rest).strip(), _as_calls(bare) or []) if bare else (text, [])


def template_messages(messages: Messages) -> Messages:
    """``messages`` as a chat template that renders tools takes them: assistant ``tool_calls`` with their arguments
    as objects (Qwen's template writes them with ``tojson``), every content a string."""
    out: Messages = []
    for message in messages:
        copy = dict(message)
        content = copy.get("content")
        copy["content"] = "" if content is None else content if isinstance(content, str) else _parts_text(content)
        if copy.get("tool_calls"):
            copy["tool_calls"] = [{**c, "function": {**c.get("function", {}), "arguments": _loads(
                (c.get("function") or {}).get("arguments"))}} for c in copy["tool_calls"] if isinstance(c, dict)]
        out.append(copy)
    return out
