"""Constrained decoding libraries for the transformers provider's tool calls: llguidance, xgrammar, outlines-core.

Each library constrains the same generations through the same logits processor (``agentlab.core.llm.grammar``'s
``GrammarMask``; only the per-row matcher differs) to the same language: ``<tool_call>`` + a JSON list of calls
following ``tools.calls_schema`` + ``</tool_call>``, for two tools, one of them with a nested object, an enum, a
bounded integer (an enum after ``calls_schema``), a bounded string and an array of enums; ``tool_choice:
required`` and ``parallel_tool_calls: false`` (exactly one call).

Models: random-weight Llama-style models built here (no hub): ``tiny`` is agentlab's tiny test model (a 512-token
BPE, ``core/train/tiny.py``); ``smollm2`` is a model of the same size with SmolLM2-135M's tokenizer (49,152 tokens,
taken from the built-in GGUF through transformers' GGUF loading, as ``core/models`` converts it), so the mask covers a
real vocabulary. Random weights write long, arbitrary values: that is the point, every path of the grammar gets used.

Per library and model it prints:

- ``setup_s``: building the library's view of the tokenizer (once per model and process);
- ``compile_ms``: building the tool-call grammar into a matcher (the first one, with its caches cold);
- ``request_ms``: a matcher for one more request (what every request pays);
- ``mask_ms_per_token``: the processor's time per generated token (feed the sampled token, fill the mask, apply it);
- ``valid``: generations whose text parses (``tools.parse_tagged``) into calls that validate (``tools.call_problem``)
  out of ``--n`` seeded samples at temperature 1 (those cut at ``--max-tokens`` count as failures and are shown);
- ``tok_s``: generated tokens per second, constrained (prompt included, as a request pays it). The unconstrained
  baseline is measured in the same run, paired: right after each constrained generation the same prompt and seed
  generate as many tokens without the processor (eos suppressed until then), so both sides pay the same prefill and
  the same number of decoding steps under the same machine load. ``ratio`` = constrained / unconstrained tokens per
  second (1.0: no cost).

The last line, ``ratio: X``, is that ratio for the library the hf provider uses (llguidance) on ``smollm2``.
torch runs on one thread (the models are tiny; a shared machine).

    python benchmarks/constrained_decoding.py --n 50
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agentlab.core.llm.grammar import JSON_FORMAT, LLGuidanceMatcher, grammar_mask, ll_tokenizer, tool_lark
from agentlab.core.llm.tools import (
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    call_problem,
    calls_schema,
    parse_tagged,
    render_tool_messages,
)
from agentlab.core.llm.types import Completion, GenParams
from agentlab.core.models.convert import gguf_to_hf
from agentlab.core.models.modelref import resolve_model
from agentlab.core.train.tiny import make_tiny_model

LIBRARIES = ("llguidance", "xgrammar", "outlines")
MODELS = ("tiny", "smollm2")

TOOLS = [
    {"type": "function", "function": {
        "name": "get_forecast", "description": "The weather forecast for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "minLength": 1, "maxLength": 12},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
                "options": {
                    "type": "object",
                    "properties": {
                        "hourly": {"type": "boolean"},
                        "fields": {"type": "array", "items": {"enum": ["temp", "rain", "wind"]}, "minItems": 1,
                                   "maxItems": 3},
                    },
                    "required": ["hourly", "fields"], "additionalProperties": False,
                },
            },
            "required": ["city", "unit", "days", "options"], "additionalProperties": False,
        }}},
    {"type": "function", "function": {
        "name": "get_time", "description": "The time in a time zone.",
        "parameters": {"type": "object", "properties": {"zone": {"enum": ["UTC", "CET", "PST"]}},
                       "required": ["zone"], "additionalProperties": False}}},
]
PARAMS = GenParams(tools=TOOLS, tool_choice="required", parallel_tool_calls=False)
MESSAGES = [{"role": "user", "content": "What will the weather be in Paris for the next three days?"}]


# ---------------------------------------------------------------------- models


def build_model(kind: str, folder: Path) -> tuple[Any, Any, list[int]]:
    """(model, tokenizer, eos ids): a random-weight Llama with the ``kind`` tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if kind == "tiny":
        path = make_tiny_model(folder / "tiny", seed=0, max_position_embeddings=2048)  # the tool prompt: 1,100 tokens
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        tokenizer = AutoTokenizer.from_pretrained(path)
        gen = model.generation_config.eos_token_id
        return model, tokenizer, list(gen if isinstance(gen, list) else [gen])
    tokenizer = AutoTokenizer.from_pretrained(gguf_to_hf(resolve_model("smollm2-135m").path))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=128, max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).float().eval()
    with torch.no_grad():  # O(1) logits, so sampling is far from uniform (as a trained model's is)
        for name, param in model.named_parameters():
            if not name.endswith("norm.weight"):
                param.normal_(0, 1 / param.shape[-1] ** 0.5)
    return model, tokenizer, [tokenizer.eos_token_id]


# ---------------------------------------------------------------------- the libraries, as RowMatchers


class Library:
    name = ""

    def setup(self, tokenizer: Any, n_vocab: int, eos: list[int]) -> None:
        raise NotImplementedError

    def compile(self, calls: dict[str, Any]) -> None:
        raise NotImplementedError

    def matcher(self) -> Any:
        raise NotImplementedError


class LLGuidance(Library):
    name = "llguidance"

    def setup(self, tokenizer: Any, n_vocab: int, eos: list[int]) -> None:
        self.tok = ll_tokenizer(tokenizer, n_vocab, eos)

    def compile(self, calls: dict[str, Any]) -> None:
        self.lark = tool_lark(calls, free_text=False)
        self.matcher()  # llguidance builds lazily: the first matcher and its first mask are the compile

    def matcher(self) -> Any:
        import torch

        m = LLGuidanceMatcher(self.tok, self.lark)
        m.fill(torch.empty((1, (self.tok.vocab_size + 31) // 32), dtype=torch.int32), 0)
        return m


class _XgrMatcher:
    def __init__(self, xgr: Any, compiled: Any):
        self.m = xgr.GrammarMatcher(compiled)

    def consume(self, token: int) -> bool:
        return bool(self.m.accept_token(token))

    def fill(self, bitmask: Any, row: int) -> None:
        self.m.fill_next_token_bitmask(bitmask, row)


class XGrammar(Library):
    name = "xgrammar"

    def setup(self, tokenizer: Any, n_vocab: int, eos: list[int]) -> None:
        import xgrammar as xgr

        self.xgr = xgr
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=n_vocab, stop_token_ids=eos)
        self.compiler = xgr.GrammarCompiler(info, max_threads=1)

    def compile(self, calls: dict[str, Any]) -> None:
        xgr = self.xgr
        body = xgr.Grammar.from_json_schema(json.dumps(calls), any_whitespace=False,
                                            separators=(JSON_FORMAT["item_separator"], JSON_FORMAT["key_separator"]))
        grammar = xgr.Grammar.concat(xgr.Grammar.from_ebnf(f'root ::= "{TOOL_CALL_OPEN}"'), body,
                                     xgr.Grammar.from_ebnf(f'root ::= "{TOOL_CALL_CLOSE}"'))
        self.compiled = self.compiler.compile_grammar(grammar)

    def matcher(self) -> Any:
        return _XgrMatcher(self.xgr, self.compiled)


class _OutlinesMatcher:
    def __init__(self, guide: Any):
        self.guide = guide

    def consume(self, token: int) -> bool:
        try:
            self.guide.advance(token)
        except ValueError:
            return False
        return True

    def fill(self, bitmask: Any, row: int) -> None:
        v = bitmask[row]
        self.guide.write_mask_into(v.data_ptr(), v.numel(), v.element_size())


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: the character a byte-level BPE token uses -> the byte it stands for."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


class Outlines(Library):
    name = "outlines"

    def setup(self, tokenizer: Any, n_vocab: int, eos: list[int]) -> None:
        import outlines_core

        self.oc = outlines_core
        decoder = _byte_decoder()
        special = set(tokenizer.all_special_ids)
        vocab: dict[bytes, list[int]] = {}
        for token, i in tokenizer.get_vocab().items():
            if i in special or i in eos:
                continue
            if all(c in decoder for c in token):  # byte-level BPE (both models here)
                vocab.setdefault(bytes(decoder[c] for c in token), []).append(i)
        self.vocab = outlines_core.Vocabulary(eos[0], vocab)

    def compile(self, calls: dict[str, Any]) -> None:
        from outlines_core.json_schema import build_regex_from_schema

        regex = build_regex_from_schema(json.dumps(calls), r"[ ]?")
        self.index = self.oc.Index(re.escape(TOOL_CALL_OPEN) + regex + re.escape(TOOL_CALL_CLOSE), self.vocab)

    def matcher(self) -> Any:
        return _OutlinesMatcher(self.oc.Guide(self.index))


LIBRARY_CLASSES = {"llguidance": LLGuidance, "xgrammar": XGrammar, "outlines": Outlines}


# ---------------------------------------------------------------------- measurement


class Timed:
    """A logits processor wrapped with a clock."""

    def __init__(self, inner: Any):
        self.inner, self.seconds, self.calls = inner, 0.0, 0

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        start = time.perf_counter()
        out = self.inner(input_ids, scores)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return out


def generate(model: Any, eos: list[int], prompt: list[int], seed: int, max_tokens: int,
             processor: Any | None, min_tokens: int = 0) -> tuple[list[int], float]:
    import torch
    from transformers import LogitsProcessorList

    ids = torch.tensor([prompt])
    torch.manual_seed(seed)
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0,
                             top_k=0, max_new_tokens=max_tokens, min_new_tokens=min_tokens, eos_token_id=eos,
                             pad_token_id=eos[0],
                             logits_processor=LogitsProcessorList([processor] if processor else []))
    return out[0, len(prompt):].tolist(), time.perf_counter() - start


def run_model(kind: str, libraries: list[str], n: int, max_tokens: int, folder: Path) -> dict[str, dict[str, Any]]:
    model, tokenizer, eos = build_model(kind, folder)
    n_vocab = model.config.vocab_size
    prompt = tokenizer.apply_chat_template(render_tool_messages(MESSAGES, PARAMS), add_generation_prompt=True,
                                           tokenize=True, return_dict=False)
    calls = calls_schema(PARAMS)
    assert calls is not None
    generate(model, eos, prompt, 0, 4, None)  # warm-up
    print(f"{kind}: vocab {n_vocab}, prompt {len(prompt)} tokens", flush=True)
    results: dict[str, dict[str, Any]] = {}
    for name in libraries:
        lib = LIBRARY_CLASSES[name]()
        start = time.perf_counter()
        lib.setup(tokenizer, n_vocab, eos)
        setup_s = time.perf_counter() - start
        start = time.perf_counter()
        lib.compile(calls)
        compile_ms = (time.perf_counter() - start) * 1000
        valid, cut, tokens, seconds, free_s, mask_s, request_s, steps, bad = 0, 0, 0, 0.0, 0.0, 0.0, 0.0, 0, ""
        for seed in range(n):
            start = time.perf_counter()
            matcher = lib.matcher()
            request_s += time.perf_counter() - start
            timed = Timed(grammar_mask([matcher], frozenset(eos)))
            new, took = generate(model, eos, prompt, seed, max_tokens, timed)
            _, free = generate(model, eos, prompt, seed, len(new), None, min_tokens=len(new))
            tokens, seconds, free_s = tokens + len(new), seconds + took, free_s + free
            mask_s, steps = mask_s + timed.seconds, steps + timed.calls
            text = tokenizer.decode(new, skip_special_tokens=True)
            rest, parsed = parse_tagged(text)
            problem = call_problem(Completion(text=rest, model=kind, tool_calls=parsed), PARAMS)
            ended = bool(new) and new[-1] in eos
            if not ended:
                cut += 1
            elif parsed and problem is None and not rest:
                valid += 1
            elif not bad:
                bad = f"{text[:400]!r}: {problem}"
        rate, free_rate = tokens / seconds, tokens / free_s
        results[name] = {"setup_s": setup_s, "compile_ms": compile_ms, "request_ms": request_s / n * 1000,
                         "mask_ms_per_token": mask_s / steps * 1000, "valid": valid, "cut": cut, "n": n,
                         "tokens": tokens, "tok_s": rate, "ratio": rate / free_rate}
        r = results[name]
        print(f"  {name:<10} setup_s {setup_s:.2f}  compile_ms {compile_ms:.1f}  request_ms {r['request_ms']:.2f}  "
              f"mask_ms_per_token {r['mask_ms_per_token']:.3f}  valid {valid}/{n} (cut at max_tokens: {cut})  "
              f"tokens {tokens}  tok_s {rate:.0f} (unconstrained {free_rate:.0f})  ratio {r['ratio']:.3f}", flush=True)
        if bad:
            print(f"    first invalid: {bad}", flush=True)
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=50, help="seeded generations per library and model")
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--libraries", default=",".join(LIBRARIES))
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    libraries = [x for x in args.libraries.split(",") if x]
    unknown = [x for x in libraries if x not in LIBRARY_CLASSES]
    if unknown:
        sys.exit(f"error: unknown library {unknown[0]}: choose from {', '.join(LIBRARIES)}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in [x for x in args.models.split(",") if x]:
            results[kind] = run_model(kind, libraries, args.n, args.max_tokens, Path(tmp))
    last = results.get("smollm2", {}).get("llguidance") or next(iter(next(iter(results.values())).values()))
    print(f"ratio: {last['ratio']:.3f}")


if __name__ == "__main__":
    main()
