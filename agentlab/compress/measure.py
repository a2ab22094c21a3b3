"""Measurements of a compressed model: perplexity on held-out text (more to come: latency, size, memory, energy).

Perplexity uses the sliding window of the transformers docs ("Perplexity of fixed-length models"): windows of
``context`` tokens starting every ``stride`` (< ``context``) tokens; each window scores only the tokens no earlier
window scored, so every token after the first is scored exactly once, with at least ``context - stride`` tokens of
left context after the first window.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from agentlab.core.errors import InputError


@dataclass(frozen=True)
class Perplexity:
    ppl: float
    nll: float  # mean negative log-likelihood per scored token (nats)
    tokens: int  # tokens scored
    context: int
    stride: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def windows(n: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """``(begin, end, first)`` per window over ``n`` tokens: the window is ``[begin, end)`` and it scores the tokens
    ``first .. end - 1`` (each token after the first exactly once)."""
    if context < 2 or not 1 <= stride < context:
        raise InputError(f"perplexity: context {context} and stride {stride}: need context >= 2 and "
                         "1 <= stride < context (windows must overlap, or the first token of each goes unscored)")
    out, prev_end = [], 1
    for begin in range(0, n, stride):
        end = min(begin + context, n)
        if end > prev_end:
            out.append((begin, end, max(prev_end, begin + 1)))
            prev_end = end
        if end == n:
            break
    return out


def perplexity_hf(model: Any, tokenizer: Any, text: str, *, context: int = 512, stride: int = 256,
                  max_tokens: int | None = None) -> Perplexity:
    """Perplexity of a transformers causal LM on ``text`` (no special tokens added), by sliding window."""
    import torch

    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids[0]
    if max_tokens is not None:
        ids = ids[:max_tokens]
    if len(ids) < 2:
        raise InputError("perplexity: the text has fewer than 2 tokens", hint="give a longer evaluation text")
    device = next(model.parameters()).device
    nll, count = 0.0, 0
    with torch.inference_mode():
        for begin, end, first in windows(len(ids), context, stride):
            window = ids[begin:end].unsqueeze(0).to(device)
            logits = model(input_ids=window).logits[0, :-1].float()
            logp = torch.log_softmax(logits, dim=-1).gather(1, window[0, 1:, None])[:, 0]
            scored = logp[first - begin - 1:]
            nll -= float(scored.sum())
            count += len(scored)
    mean = nll / count
    return Perplexity(math.exp(mean), mean, count, context, stride)
