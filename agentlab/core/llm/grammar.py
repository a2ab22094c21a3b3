"""Constrained decoding for in-process transformers models: llguidance grammars applied to the logits of each row.

A tool-call grammar (``tool_lark``) accepts exactly what ``tools.parse_tagged`` reads back and ``tools.call_problem``
accepts, in the model's tool format (``core/llm/tool_formats.py``: SmolLM2's ``<tool_call>`` + a JSON list following
``tools.calls_schema`` + ``</tool_call>``, or Qwen's block per call), and with ``free_text`` a plain answer (one that
does not start with the format's ``text_excludes``: ``<``, and ``{`` for Qwen's) instead. It is the Lark form of
the llama.cpp provider's GBNF grammar (``llama_cpp.tool_grammar_text``); both come from the same
``tools.tool_constraint``.

``GrammarMask`` is a transformers logits processor for a left-padded batch whose rows may each have their own
grammar or none: before each step it feeds every constrained row's last sampled token to that row's matcher, then
sets the logits of the tokens the grammar forbids to -inf. Once a row's grammar is complete only its end-of-sequence
tokens stay allowed, so the row ends as soon as the call is closed. The matchers follow a small protocol
(``RowMatcher``) so the benchmark (``benchmarks/constrained_decoding.py``) runs xgrammar and outlines-core through the
same processor.

llguidance (chosen by that benchmark; docs/benchmarks/constrained_decoding.md) is imported inside the functions
that use it, like torch and transformers.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from agentlab.core.errors import LLMError, MissingPackage, missing_package
from agentlab.core.llm.tool_formats import FORMATS, ToolFormat

__all__ = ["tool_lark", "check_grammar", "LLGuidanceMatcher", "RowMatcher", "ll_tokenizer", "grammar_mask",
           "JSON_FORMAT"]

log = logging.getLogger(__name__)

# The JSON that a constrained call is written in: one line, ", " and ": " as json.dumps writes them (flexible
# whitespace lets a weak model pad a call with spaces until max_tokens).
JSON_FORMAT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def tool_lark(calls: dict[str, Any], free_text: bool, fmt: ToolFormat = FORMATS["smollm2"]) -> str:
    """The Lark grammar (llguidance's dialect) of the calls ``calls`` (``tools.calls_schema``) allows, in the model's
    format ``fmt`` (SmolLM2's ``<tool_call>`` + a JSON list + ``</tool_call>``, or Qwen's block per call); with
    ``free_text`` a plain answer that does not start with one of ``fmt.text_excludes`` is allowed instead (the same
    language as the llama.cpp provider's GBNF)."""
    alternatives = " | text" if free_text else ""
    if not fmt.per_call:
        schema = {**calls, "x-guidance": JSON_FORMAT}
        lark = f"start: {json.dumps(fmt.open)} calls {json.dumps(fmt.close)}{alternatives}\n"
        lark += "calls: %json " + json.dumps(schema, ensure_ascii=False) + "\n"
    else:
        low, high = fmt.grammar_counts(calls)
        more = f" ({json.dumps(fmt.separator)} call){{{max(low - 1, 0)},{high - 1}}}" if high > 1 else ""
        lark = f"start: calls{alternatives}\ncalls: call{more}\n"
        lark += f"call: {json.dumps(fmt.open)} one {json.dumps(fmt.close)}\n"
        lark += "one: %json " + json.dumps({**calls["items"], "x-guidance": JSON_FORMAT}, ensure_ascii=False) + "\n"
    if free_text:
        lark += f"text: /[^{fmt.text_excludes}][\\s\\S]*/\n"
    return lark


def _llguidance() -> Any:
    try:
        import llguidance
        import llguidance.hf
    except ImportError as exc:
        raise (missing_package(exc) or exc) from None
    return llguidance


_CHECKED: dict[str, str] = {}
_CHECK_LOCK = threading.Lock()


def check_grammar(lark: str, model: str) -> None:
    """Raise ``LLMError("bad_request")`` when llguidance cannot build ``lark`` (a schema feature it does not
    support), so a request fails alone before it joins a batch; results are cached per grammar. A missing llguidance
    is an ``unavailable`` model (a router falls back) whose hint installs it."""
    try:
        llguidance = _llguidance()
    except MissingPackage as exc:
        raise LLMError(f"{model}: constrained tool calls need the package 'llguidance', which is not installed",
                       "unavailable", model=model,
                       hint=f"{exc.hint}, or set the model param tool_grammar: false") from None
    with _CHECK_LOCK:
        error = _CHECKED.get(lark)
    if error is None:
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(lark)
        error = messages[0] if is_error and messages else ""
        with _CHECK_LOCK:
            _CHECKED[lark] = error
    if error:
        raise LLMError(f"{model}: the tools' schemas cannot be turned into a grammar ({error})"[:400], "bad_request",
                       model=model, hint="simplify the tool's parameters schema, or set the model param "
                       "tool_grammar: false to read calls from free text")


def ll_tokenizer(tokenizer: Any, n_vocab: int, eos_ids: list[int]) -> Any:
    """llguidance's view of a transformers (fast) tokenizer over ``n_vocab`` logits (the model's output size, which
    may exceed the tokenizer's), ending at any of ``eos_ids``. About a second for a 50k vocabulary: cache it."""
    return _llguidance().hf.from_tokenizer(tokenizer, n_vocab=n_vocab, eos_token=list(eos_ids))


class RowMatcher(Protocol):
    """One row's grammar state, as ``GrammarMask`` drives it."""

    def consume(self, token: int) -> bool:
        """Advance by a sampled token; False when the grammar rejects it."""

    def fill(self, bitmask: Any, row: int) -> None:
        """Write the allowed next tokens into ``bitmask[row]`` (int32 words, bit ``i % 32`` of word ``i // 32``)."""


class LLGuidanceMatcher:
    """A ``RowMatcher`` on an ``llguidance.LLMatcher``."""

    def __init__(self, tokenizer: Any, lark: str):
        llguidance = _llguidance()
        self.matcher = llguidance.LLMatcher(tokenizer, lark, log_level=0)
        if self.matcher.is_error():
            raise ValueError(self.matcher.get_error())

    def consume(self, token: int) -> bool:
        return bool(self.matcher.consume_token(token))

    def fill(self, bitmask: Any, row: int) -> None:
        v = bitmask[row]
        self.matcher.unsafe_compute_mask_ptr(v.data_ptr(), v.numel() * v.element_size())


def grammar_mask(matchers: Sequence[RowMatcher | None], eos_ids: frozenset[int]) -> Any:
    """A ``GrammarMask`` logits processor for a batch: ``matchers[i]`` constrains row ``i`` (None: that row is free)."""
    return _mask_class()(matchers, eos_ids)


@functools.cache
def _mask_class() -> type:
    """Built on first use so that importing this module does not import torch or transformers."""
    import torch
    from transformers import LogitsProcessor

    shifts = torch.arange(32, dtype=torch.int32)

    class GrammarMask(LogitsProcessor):
        """Masks each constrained row's logits to the tokens its grammar allows next (see the module's doc)."""

        def __init__(self, matchers: Sequence[RowMatcher | None], eos_ids: frozenset[int]):
            self.matchers: list[RowMatcher | None] = list(matchers)
            self.eos_ids = eos_ids
            self.steps = 0
            self.bitmask: Any = None

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            rows = [i for i, m in enumerate(self.matchers) if m is not None]
            if self.steps:
                last = input_ids[:, -1].tolist()
                for i in rows:
                    # a row that ended (eos, stop string, max_tokens) gets padding from now on: its grammar is done
                    matcher = self.matchers[i]
                    if last[i] in self.eos_ids or matcher is None or not matcher.consume(last[i]):
                        self.matchers[i] = None
                rows = [i for i in rows if self.matchers[i] is not None]
            self.steps += 1
            if not rows:
                return scores
            vocab = scores.shape[-1]
            if self.bitmask is None:
                self.bitmask = torch.empty((len(self.matchers), (vocab + 31) // 32), dtype=torch.int32)
            for i in rows:
                matcher = self.matchers[i]
                assert matcher is not None
                matcher.fill(self.bitmask, i)
            words = self.bitmask[rows].to(scores.device)
            allowed = ((words.unsqueeze(-1) >> shifts.to(scores.device)) & 1).bool().flatten(1)[:, :vocab]
            # a grammar that allows nothing (an internal error) leaves its row free rather than all -inf (NaN draws)
            empty = ~allowed.any(dim=1)
            if bool(empty.any()):
                for j in empty.nonzero().flatten().tolist():
                    log.warning("the grammar of row %d allows no token: the row continues unconstrained", rows[j])
                    self.matchers[rows[j]] = None
                allowed[empty] = True
            index = torch.tensor(rows, device=scores.device)
            scores[index] = scores[index].masked_fill(~allowed, float("-inf"))
            return scores

    return GrammarMask
