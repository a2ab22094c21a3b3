"""Prompt reuse on a loaded local model: what an agent's step costs against the cost of its new tokens.

An agent's conversation grows by a few tokens a step behind a long stable head (the system prompt and the tools,
rendered first by the model's chat template). llama-cpp-python keeps the KV cache of the last request and evaluates
only the tokens after the longest common prefix, so a step should cost about its new tokens. This script drives one
built-in model through the llama_cpp provider with a conversation shaped like the nas agent's (a system prompt, 12
tools with full descriptions, then per step a tool call and its result), ``--steps`` steps, and times each step twice
in the same invocation: with reuse (as agentlab runs) and with the cache dropped before each step (``reset``: the
whole prompt evaluated, as a server without prefix caching would).

The cost of a step's new tokens is measured on the same model first: prompt tokens per second on a cold prompt of
the same length and generated tokens per second. Printed per step: prompt tokens, new prompt tokens (beyond the
previous request), generated tokens, seconds with reuse, seconds without, and the new tokens' cost; then the
ratios. Target: a step costs at most 1.5x its new tokens' cost (``ratio: X`` is the median of seconds with reuse /
the new tokens' cost over the steps after the first).

``--displaced``: the same conversation, with an unrelated request on the same model after each step (shaped like the
``evaluator`` route the nas agent asks between trials: a system prompt of about 600 tokens and a question), each step
timed twice in the same invocation: with the provider's ``prompt_states`` (the default 2: the KV cache the other
request displaced is kept and put back) and with ``prompt_states: 0`` (only the last request's cache). Printed per
step: the agent step's seconds and cached prompt tokens, both ways; ``ratio: X`` is the median over the steps after
the first of the seconds without states over the seconds with them.

    python benchmarks/prompt_reuse.py --model qwen2.5-coder-0.5b --steps 6
    python benchmarks/prompt_reuse.py --model qwen2.5-coder-0.5b --steps 6 --displaced
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

from agentlab.core.llm import GenParams, LLMConfig
from agentlab.core.llm.providers.llama_cpp import LlamaCppProvider

TOOL_WORDS = ("the finished trials, best first, and what the good ones share; each line is a trial's id, its "
              "validation loss, its changes against the base config and who proposed it")


def tools(n: int = 12) -> list[dict[str, Any]]:
    """``n`` tools shaped like the agent's: a description and a small schema each."""
    return [{"type": "function", "function": {
        "name": f"tool_{i}", "description": f"tool {i}: {TOOL_WORDS}",
        "parameters": {"type": "object", "properties": {
            "top": {"type": "integer", "minimum": 1, "maximum": 20, "description": "how many to show"},
            "reason": {"type": "string", "maxLength": 120, "description": "why, in a sentence"}},
            "required": ["top"], "additionalProperties": False}}} for i in range(n)]


def step_messages(steps: int) -> list[dict[str, Any]]:
    """The conversation after ``steps`` steps: each a call of ``tool_{k}`` and its result."""
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You plan a search over a training script's hyperparameters, one trial at a "
                                      "time, within a fixed budget. Every fact comes from the tools."},
        {"role": "user", "content": "The search starts from the base config: val_loss 1.014 (lr 0.01, batch 32, "
                                    "hidden 64, dropout 0.1). Plan, then run the first trial."}]
    for k in range(steps):
        messages.append({"role": "assistant", "content": None, "tool_calls": [{
            "id": f"c{k}", "type": "function", "function": {"name": f"tool_{k % 12}", "arguments": '{"top": 5}'}}]})
        messages.append({"role": "tool", "tool_call_id": f"c{k}", "content": "; ".join(
            f"trial {k}.{j}: val_loss {1 - 0.01 * j:.3f} (lr {0.01 * (j + 1):.2f}, hidden {32 * (j + 1)})"
            for j in range(4))})
    return messages


def evaluator_messages(step: int) -> list[dict[str, Any]]:
    """A request of another conversation on the same model: the evaluator route's, judging trial ``step``."""
    return [{"role": "system", "content": "You judge whether a trial's result is a real improvement or noise. "
                                          + "Each trial reports its validation loss and its settings. " * 40},
            {"role": "user", "content": f"Trial {step}: val_loss {1 - 0.01 * step:.3f} against the best 0.990. "
                                        "Real or noise? One word."}]


async def displaced(args: argparse.Namespace) -> None:
    """The agent's steps with another conversation's request after each: prompt_states on (2) and off (0)."""
    from agentlab.core.llm.providers.llama_cpp import SNAPSHOT_MIN, loaded_models, unload_all

    params = GenParams(tools=tools(), tool_choice="required", parallel_tool_calls=False, temperature=0.0,
                       max_tokens=args.max_tokens, extra={"tool_gate": False})
    judge = GenParams(temperature=0.0, max_tokens=8)
    rows: dict[int, list[tuple[float, int, int]]] = {}
    for states in (2, 0):
        unload_all()  # each setting from a freshly loaded model: nothing cached, no snapshot
        cfg = LLMConfig.model_validate({"providers": {"local": {
            "kind": "llama_cpp", "n_ctx": 8192, "n_threads": args.threads, "prompt_states": states}},
            "models": {"m": {"provider": "local", "model": args.model}}})
        provider = LlamaCppProvider("local", cfg.providers["local"])  # type: ignore[arg-type]
        await asyncio.to_thread(provider.load, args.model)
        for step in range(args.steps):
            start = time.perf_counter()
            done = await provider.generate(args.model, step_messages(step), params, 600)
            rows.setdefault(step, []).append((time.perf_counter() - start, done.usage.cached_tokens,
                                              done.usage.prompt_tokens))
            other = await provider.generate(args.model, evaluator_messages(step), judge, 600)
            assert other.usage.prompt_tokens > SNAPSHOT_MIN, "the other request must be long enough to displace"
        assert (len(loaded_models()[0].snapshots) > 0) == (states > 0)
    print(f"{args.model}: n_threads {args.threads or 'default'}; after each agent step a request of another "
          f"conversation ({other.usage.prompt_tokens} prompt tokens)\n")
    print("| step | prompt tokens | s, prompt_states 2 | cached | s, prompt_states 0 | cached |")
    print("|---|---|---|---|---|---|")
    ratios = []
    for step, ((kept, kept_cached, prompt), (lost, lost_cached, _)) in rows.items():
        print(f"| {step} | {prompt} | {kept:.2f} | {kept_cached} | {lost:.2f} | {lost_cached} |")
        if step:
            ratios.append(lost / kept)
    print(f"\nsteps after the first: seconds with prompt_states 0 / with 2 median {statistics.median(ratios):.2f}x "
          f"(range {min(ratios):.2f}-{max(ratios):.2f})")
    print(json.dumps({"model": args.model, "threads": args.threads, "displaced": True,
                      "rows": {step: [[round(t, 3), c, p] for t, c, p in r] for step, r in rows.items()}}))
    print(f"ratio: {statistics.median(ratios):.3f}")


async def main_async(args: argparse.Namespace) -> None:
    if args.displaced:
        await displaced(args)
        return
    cfg = LLMConfig.model_validate({"providers": {"local": {"kind": "llama_cpp", "n_ctx": 8192,
                                                            "n_threads": args.threads}},
                                    "models": {"m": {"provider": "local", "model": args.model}}})
    provider = LlamaCppProvider("local", cfg.providers["local"])  # type: ignore[arg-type]
    loaded = await asyncio.to_thread(provider.load, args.model)
    params = GenParams(tools=tools(), tool_choice="required", parallel_tool_calls=False, temperature=0.0,
                       max_tokens=args.max_tokens, extra={"tool_gate": False})

    def cold() -> None:  # nothing cached: no live KV cache, and no snapshot of one (prompt_states) to put back
        loaded.snapshots.clear()
        loaded.llm.reset()

    async def ask(messages: list[dict[str, Any]], reuse: bool) -> tuple[float, Any]:
        if not reuse:
            cold()
        start = time.perf_counter()
        done = await provider.generate(args.model, messages, params, 600)
        return time.perf_counter() - start, done

    # the cost of tokens on this model: a cold prompt (no cache) and its generation
    cold()
    first = step_messages(args.steps)
    seconds, done = await ask(first, reuse=False)
    gen_start = time.perf_counter()
    plain = await provider.generate(args.model, [{"role": "user", "content": "Count from 1 to 60 in words."}],
                                    GenParams(temperature=0.0, max_tokens=96), 600)
    gen_rate = plain.usage.completion_tokens / (time.perf_counter() - gen_start)
    prompt_rate = done.usage.prompt_tokens / max(seconds - done.usage.completion_tokens / gen_rate, 1e-6)
    print(f"{args.model}: n_threads {args.threads or 'default'}; prompt {prompt_rate:.0f} tok/s (cold, "
          f"{done.usage.prompt_tokens} tokens), generation {gen_rate:.1f} tok/s\n")
    print("| step | prompt tokens | new prompt tokens | generated | s with reuse | s without | new tokens' cost s |")
    print("|---|---|---|---|---|---|---|")
    ratios, gains = [], []
    cold()
    previous = 0
    for step in range(args.steps):
        messages = step_messages(step)
        with_reuse, done = await ask(messages, reuse=True)
        without, _ = await ask(messages, reuse=False)
        await ask(messages, reuse=True)  # the cache back as the agent leaves it (the last request: this one)
        new = max(done.usage.prompt_tokens - previous, 0) if step else done.usage.prompt_tokens
        cost = new / prompt_rate + done.usage.completion_tokens / gen_rate
        previous = done.usage.prompt_tokens + done.usage.completion_tokens
        print(f"| {step} | {done.usage.prompt_tokens} | {new} | {done.usage.completion_tokens} | {with_reuse:.2f} | "
              f"{without:.2f} | {cost:.2f} |")
        if step:
            ratios.append(with_reuse / cost)
            gains.append(without / with_reuse)
    print(f"\nsteps after the first: seconds with reuse / new tokens' cost median {statistics.median(ratios):.2f} "
          f"(range {min(ratios):.2f}-{max(ratios):.2f}); without reuse / with reuse median "
          f"{statistics.median(gains):.2f}x")
    print(json.dumps({"model": args.model, "threads": args.threads, "prompt_tok_s": round(prompt_rate, 1),
                      "gen_tok_s": round(gen_rate, 1), "ratios": [round(r, 3) for r in ratios],
                      "speedups": [round(g, 3) for g in gains]}))
    print(f"ratio: {statistics.median(ratios):.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--displaced", action="store_true", help="another conversation's request after each step: "
                    "prompt_states 2 against 0")
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
