"""Raw-prompt completions with per-token log-probabilities on the local backends: what OpenAI's legacy
``/v1/completions`` returns with ``echo`` and ``logprobs``, and what log-likelihood evaluation (lm-evaluation-harness's
``local-completions`` backend, multiple-choice tasks) needs from a served model.

- :func:`hf_prompt_logprobs`: one forward of a batch of token-id prompts through a transformers causal LM (a
  ``PeftModel`` as the caller set it): each token's log-probability given the tokens before it, and the ``top``
  most likely tokens at each position.
- :func:`llama_prompt_logprobs`: the same on a llama-cpp-python ``Llama`` created without ``logits_all``: the
  prompt's first tokens are evaluated as one batch, then each later token alone, reading the logits the context
  keeps for its last token (llama.cpp keeps only the last row unless ``logits_all``).

The first token of a prompt has no log-probability (None), as in OpenAI's format. torch and numpy are imported inside
the functions.
"""

from __future__ import annotations

import copy
import inspect
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TokenScores:
    """Per-token scores of one prompt (and of the tokens generated after it, when any)."""

    tokens: list[int]
    logprobs: list[float | None]  # log P(token_i | tokens before it); None for the first
    top: list[dict[int, float] | None] = field(default_factory=list)  # the ``top`` likeliest tokens at each position
    after: dict[int, float] = field(default_factory=dict)  # the likeliest tokens after the last one


def _top(row: Any, k: int) -> dict[int, float]:
    """The ``k`` largest entries of a log-probability row (torch or numpy), id -> value."""
    if k <= 0:
        return {}
    if hasattr(row, "topk"):
        values, ids = row.topk(k)
        return {int(i): float(v) for i, v in zip(ids.tolist(), values.tolist(), strict=True)}
    import numpy as np

    ids = np.argpartition(-row, k - 1)[:k]
    ids = ids[np.argsort(-row[ids])]
    return {int(i): float(row[i]) for i in ids}


def hf_prompt_logprobs(model: Any, prompts: Sequence[Sequence[int]], *, top: int = 1, pad_id: int = 0
                       ) -> list[TokenScores]:
    """Each prompt's per-token log-probabilities from one right-padded forward of ``model`` (no gradient)."""
    import torch

    if not prompts:
        return []
    width = max(len(p) for p in prompts)
    device = next(model.parameters()).device
    ids = torch.tensor([list(p) + [pad_id] * (width - len(p)) for p in prompts], device=device)
    mask = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in prompts], device=device)
    with torch.inference_mode():
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
    logp = torch.log_softmax(logits, dim=-1)
    out = []
    for row, prompt in enumerate(prompts):
        n = len(prompt)
        scores = TokenScores(list(prompt), [None], [None], _top(logp[row, n - 1], max(top, 1)))
        if n > 1:
            targets = ids[row, 1:n]
            picked = logp[row, : n - 1].gather(1, targets[:, None])[:, 0]
            scores.logprobs += [float(x) for x in picked.tolist()]
            scores.top += [_top(logp[row, i], top) for i in range(n - 1)]
        out.append(scores)
    return out


def llama_prompt_logprobs(llm: Any, prompt: Sequence[int], *, top: int = 1, first: int = 1) -> TokenScores:
    """The prompt's per-token log-probabilities on a llama-cpp-python ``Llama`` (the caller holds its lock), and the
    ``top`` likeliest tokens after the whole prompt (``after``). Positions before ``first`` get no score (None):
    their logits are not read, so the tokens up to ``first`` go through as one batch (a shared context, say)."""
    import llama_cpp
    import numpy as np

    tokens = list(prompt)
    if not tokens:
        return TokenScores([], [], [])
    llm.reset()
    first = max(1, min(first, len(tokens)))
    if first > 1:
        llm.eval(tokens[: first - 1])
    scores = TokenScores(tokens, [None] * first, [None] * first)
    for i in range(first - 1, len(tokens)):
        llm.eval([tokens[i]])
        # llama-cpp-python keeps no logits without logits_all: read the context's own row for the last token
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),))
        logits = logits.astype(np.float64)
        logp = logits - (np.log(np.sum(np.exp(logits - logits.max()))) + logits.max())
        if i + 1 < len(tokens):
            scores.logprobs.append(float(logp[tokens[i + 1]]))
            scores.top.append(_top(logp, top))
        else:
            scores.after = _top(logp, max(top, 1))
    return scores


def chat_prompt_ids(tokenizer: Any, question: str) -> list[int]:
    """The token ids of ``question`` as one user turn, ready for the assistant's reply (the chat template when the
    tokenizer has one, else the plain text)."""
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                            tokenize=True, return_dict=False)
        return list(ids)
    return list(tokenizer(question, add_special_tokens=True).input_ids)


def answer_logliks(model: Any, tokenizer: Any, pairs: Sequence[tuple[str, str]], *, batch: int = 16,
                   share_prefix: bool = True) -> list[tuple[float, int]]:
    """For each ``(question, answer)``: the summed log-probability of the answer's tokens after the chat prompt of
    the question, and how many tokens the answer has (one forward per batch, no generation). Divide the first by
    the second for the per-token log-likelihood, comparable across answers of different lengths.

    The prompts' common first tokens (the chat template's system turn: 23 of SmolLM2's ~37 prompt tokens) go through
    the model once; each batch continues from their key/value cache (``share_prefix``; the same numbers as one full
    forward per prompt, to float rounding). Only the answers' positions are normalised over the vocabulary."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    encoded = [(chat_prompt_ids(tokenizer, q), list(tokenizer(a, add_special_tokens=False).input_ids) or [pad])
               for q, a in pairs]
    if not encoded:
        return []
    prompts = [p for p, _ in encoded]
    device = next(model.parameters()).device
    # the prompts' common first tokens (commonprefix works on any sequences), less one: each prompt keeps a token
    # to predict its answer from
    shared = min(len(os.path.commonprefix(prompts)), min(map(len, prompts)) - 1) if share_prefix else 0
    cache = _prefix_cache(model, prompts[0][:shared], device) if shared >= 2 else None
    if cache is None:
        shared = 0
    cache_arg = _cache_arg(model) if cache is not None else ""  # looked up once, not per batch
    out: list[tuple[float, int]] = []
    for begin in range(0, len(encoded), batch):
        chunk = encoded[begin:begin + batch]
        rows = [p[shared:] + a for p, a in chunk]
        width = max(len(r) for r in rows)
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
        mask = torch.tensor([[1] * (shared + len(r)) + [0] * (width - len(r)) for r in rows], device=device)
        kwargs: dict[str, Any] = {}
        if cache is not None:
            past = copy.deepcopy(cache)  # the forward appends to it: every batch starts from the prefix alone
            past.batch_repeat_interleave(len(rows))
            kwargs.update({cache_arg: past, "use_cache": True})
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask, **kwargs).logits
        for row, (prompt, answer) in enumerate(chunk):
            first = len(prompt) - shared  # the answer's first position in the row
            logp = logits[row, first - 1:first - 1 + len(answer)].float().log_softmax(-1)
            picked = logp.gather(1, ids[row, first:first + len(answer), None])[:, 0]
            out.append((float(picked.sum()), len(answer)))
    return out


def _prefix_cache(model: Any, prefix: list[int], device: Any) -> Any:
    """The key/value cache of one forward of ``prefix``, or None when the model's cache cannot be repeated over a
    batch (then every prompt runs whole)."""
    import torch

    with torch.inference_mode():
        out = model(input_ids=torch.tensor([prefix], device=device), use_cache=True)
    cache = out["cache"] if "cache" in out else out.get("past_key_values")
    return cache if hasattr(cache, "batch_repeat_interleave") else None


def _cache_arg(model: Any) -> str:
    """The name of the key/value cache argument of ``model``'s forward: ``cache`` since transformers 5.2x renamed
    it (``past_key_values`` warns there, on every forward, until 5.40), ``past_key_values`` before."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft model passes it through
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


# ------------------------------------------------------------------------- /v1/completions on a local model


@dataclass
class RawRequest:
    """One ``/v1/completions`` request as the local backends take it."""

    prompts: list[list[int] | str]
    max_tokens: int = 16  # 0: score the prompt only (with echo)
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    echo: bool = False
    logprobs: int | None = None  # None: no log-probabilities; k: the k likeliest tokens at each position too


@dataclass
class RawChoice:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    logprobs: dict[str, Any] | None = None  # OpenAI's {tokens, token_logprobs, top_logprobs, text_offset}


def _cut_at_stop(text: str, stops: Sequence[str]) -> int | None:
    cuts = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(cuts) if cuts else None


def _keep(decode: Any, new: list[int], chars: int) -> list[int]:
    """The fewest of ``new`` tokens whose text reaches ``chars`` characters (a stop string cut the rest)."""
    for j in range(len(new) + 1):
        if len(decode(new[:j])) >= chars:
            return new[:j]
    return new


def openai_logprobs(scores: TokenScores, piece: Any, start: int, offset: int) -> dict[str, Any]:
    """OpenAI's legacy ``logprobs`` object for the tokens of ``scores`` from index ``start``; ``piece(id)`` is a
    token's text, ``offset`` the character offset of the first one."""
    tokens = [piece(t) for t in scores.tokens[start:]]
    tops: list[dict[str, float] | None] = []
    for top in scores.top[start:]:
        if top is None:
            tops.append(None)
            continue
        named: dict[str, float] = {}
        for token, value in top.items():
            text = piece(token)
            named[text] = max(value, named.get(text, value))
        tops.append(named)
    offsets = []
    for token in tokens:
        offsets.append(offset)
        offset += len(token)
    return {"tokens": tokens, "token_logprobs": scores.logprobs[start:], "top_logprobs": tops,
            "text_offset": offsets}


def _choice(prompt_ids: list[int], new: list[int], finish: str, request: RawRequest, scores: TokenScores | None,
            decode: Any, piece: Any, prompt_text: str | None, cut: int | None = None) -> RawChoice:
    text = decode(new)[:cut]  # a stop string ends the text where it starts
    shown = prompt_text if prompt_text is not None else decode(prompt_ids)
    logprobs = None
    if scores is not None:
        start = 0 if request.echo else len(prompt_ids)
        logprobs = openai_logprobs(scores, piece, start, 0 if request.echo else len(shown))
    return RawChoice((shown if request.echo else "") + text, finish, len(prompt_ids), len(new), logprobs)


def check_token_ids(prompt: list[int], n_vocab: int) -> None:
    """Raise ``ValueError`` for an empty prompt or a token id the model's vocabulary does not have (a client's list
    of ids: llama.cpp fails the whole decode and torch the embedding lookup, neither saying which id)."""
    if not prompt:
        raise ValueError("a prompt has no tokens")
    bad = next((t for t in prompt if not 0 <= t < n_vocab), None)
    if bad is not None:
        raise ValueError(f"token id {bad} is not in the model's vocabulary (ids 0 to {n_vocab - 1})")


def complete_hf(model: Any, tokenizer: Any, request: RawRequest, *, eos_ids: Sequence[int], pad_id: int,
                n_ctx: int | None = None) -> list[RawChoice]:
    """``request`` on a transformers model as the caller set it up (adapter, lock, no gradient). A greedy request
    for at most one token is one batched forward; otherwise each prompt generates, then prompt and reply are scored
    in one forward when log-probabilities are asked for."""
    import torch

    def decode(ids: list[int]) -> str:
        return str(tokenizer.decode(ids, skip_special_tokens=False))

    def piece(token: int) -> str:
        return decode([token])

    ids = [list(p) if not isinstance(p, str) else list(tokenizer(p).input_ids) for p in request.prompts]
    n_vocab = int(model.get_input_embeddings().weight.shape[0])
    for prompt in ids:
        check_token_ids(prompt, n_vocab)
        if n_ctx is not None and len(prompt) + request.max_tokens > n_ctx:
            raise ValueError(f"a prompt of {len(prompt)} tokens and max_tokens {request.max_tokens} do not fit the "
                             f"context of {n_ctx}")
    top = request.logprobs or 0
    greedy = not request.temperature
    out = []
    if greedy and request.max_tokens <= 1:
        for prompt, scored in zip(ids, hf_prompt_logprobs(model, ids, top=max(top, 1), pad_id=pad_id), strict=True):
            after = scored.after
            new = [max(after, key=lambda t: after[t])] if request.max_tokens else []
            if new:
                scored.tokens.append(new[0])
                scored.logprobs.append(after[new[0]])
                scored.top.append(after)
            scored.top = [dict(list(t.items())[:top]) if t is not None else None for t in scored.top]
            finish = "stop" if new and new[0] in eos_ids else "length"
            out.append(_choice(prompt, new, finish, request, scored if request.logprobs is not None else None,
                               decode, piece, None))
        return out
    for prompt, raw in zip(ids, request.prompts, strict=True):
        kwargs: dict[str, Any] = {"do_sample": not greedy}
        if not greedy:
            kwargs["temperature"] = float(request.temperature or 1.0)
            if request.top_p is not None:
                kwargs["top_p"] = request.top_p
            if request.seed is not None:
                torch.manual_seed(request.seed)
        new = []
        if request.max_tokens:
            tensor = torch.tensor([prompt], device=next(model.parameters()).device)
            generated = model.generate(input_ids=tensor, attention_mask=torch.ones_like(tensor),
                                       max_new_tokens=request.max_tokens, pad_token_id=pad_id,
                                       eos_token_id=list(eos_ids), **kwargs)
            new = generated[0, len(prompt):].tolist()
        finish = "stop" if new and new[-1] in eos_ids else "length"
        cut = _cut_at_stop(decode(new), request.stop)
        if cut is not None:
            new, finish = _keep(decode, new, cut), "stop"
        scores: TokenScores | None = None
        if request.logprobs is not None:
            scores = hf_prompt_logprobs(model, [prompt + new], top=max(top, 1), pad_id=pad_id)[0]
            scores.top = [dict(list(t.items())[:top]) if t is not None else None for t in scores.top]
        out.append(_choice(prompt, new, finish, request, scores, decode, piece, raw if isinstance(raw, str) else None,
                           cut))
    return out


def complete_llama(llm: Any, request: RawRequest) -> list[RawChoice]:
    """``request`` on a llama-cpp-python ``Llama`` (the caller holds its lock): each prompt generates through
    llama.cpp's own sampler, then prompt and reply are scored token by token when log-probabilities are asked."""

    def decode(ids: list[int]) -> str:
        return bytes(llm.detokenize(ids)).decode("utf-8", errors="replace")

    def piece(token: int) -> str:
        return decode([token])

    eos = llm.token_eos()
    top = request.logprobs or 0
    out = []
    prompts = [list(raw) if not isinstance(raw, str) else list(llm.tokenize(raw.encode("utf-8"), add_bos=True,
                                                                          special=True)) for raw in request.prompts]
    for prompt in prompts:  # every prompt checked before any generates
        check_token_ids(prompt, llm.n_vocab())
        if len(prompt) + request.max_tokens > llm.n_ctx():
            raise ValueError(f"a prompt of {len(prompt)} tokens and max_tokens {request.max_tokens} do not fit the "
                             f"context of {llm.n_ctx()}")
    for prompt, raw in zip(prompts, request.prompts, strict=True):
        new: list[int] = []
        finish = "length"
        if request.max_tokens:
            llm.reset()
            if request.seed is not None:
                llm.set_seed(request.seed)
            for token in llm.generate(prompt, temp=float(request.temperature or 0.0), top_p=request.top_p or 1.0,
                                      reset=True):
                if token == eos:
                    finish = "stop"
                    break
                new.append(token)
                if len(new) >= request.max_tokens:
                    break
        cut = _cut_at_stop(decode(new), request.stop)
        if cut is not None:
            new, finish = _keep(decode, new, cut), "stop"
        scores: TokenScores | None = None
        if request.logprobs is not None:
            scores = llama_prompt_logprobs(llm, prompt + new, top=max(top, 1))
            scores.top = [dict(list(t.items())[:top]) if t is not None else None for t in scores.top]
        out.append(_choice(prompt, new, finish, request, scores, decode, piece, raw if isinstance(raw, str) else None,
                           cut))
    return out
