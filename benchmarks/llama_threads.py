"""llama.cpp threads on this machine: prompt and generation speed of a built-in model at each ``n_threads``, on a
quiet machine and beside a busy process (one core kept busy by a spinning process, as when a trial trains next to
the agent).

Per setting, ``--rounds`` rounds alternate the thread counts (the order shifts each round); each round evaluates a
prompt of about ``--prompt-tokens`` tokens from an empty cache and generates ``--gen-tokens`` tokens greedily, and the
best round counts. Printed: a table of prompt and generation tokens/s per load and thread count, and ``ratio:`` the
generation speed of 1 thread / 2 threads under load (above 1: one thread is the faster choice there).

    python benchmarks/llama_threads.py --model qwen2.5-coder-0.5b
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import time
from collections.abc import Iterator
from typing import Any

from agentlab.core.models.builtin import builtin_path


def spin() -> None:
    while True:
        pass


@contextlib.contextmanager
def load(busy: bool) -> Iterator[None]:
    """One core kept busy by a spinning process while inside (nothing when ``busy`` is false)."""
    proc = multiprocessing.Process(target=spin, daemon=True) if busy else None
    if proc is not None:
        proc.start()
        time.sleep(0.5)
    try:
        yield
    finally:
        if proc is not None:
            proc.terminate()
            proc.join()


def measure(llm: Any, prompt: list[int], gen_tokens: int) -> tuple[float, float]:
    """(prompt tokens/s, generated tokens/s) for one evaluation from an empty cache."""
    llm.reset()
    start = time.perf_counter()
    llm.eval(prompt)
    prompt_s = time.perf_counter() - start
    start = time.perf_counter()
    made = 0
    for token in llm.generate([], temp=0.0, reset=False):
        made += 1
        if made >= gen_tokens or token == llm.token_eos():
            break
    return len(prompt) / prompt_s, made / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--gen-tokens", type=int, default=64)
    args = ap.parse_args()
    import llama_cpp

    threads = [int(t) for t in args.threads.split(",")]
    path = str(builtin_path(args.model))
    models = {t: llama_cpp.Llama(model_path=path, n_ctx=2048, n_threads=t, n_batch=512, verbose=False)
              for t in threads}
    text = "The quick brown fox jumps over the lazy dog while the search tunes a model. " * 200
    prompt = models[threads[0]].tokenize(text.encode())[:args.prompt_tokens]
    best: dict[tuple[bool, int], tuple[float, float]] = {}
    for busy in (False, True):
        with load(busy):
            for r in range(args.rounds):
                for t in threads[r % len(threads):] + threads[:r % len(threads)]:
                    pp, tg = measure(models[t], prompt, args.gen_tokens)
                    old = best.get((busy, t), (0.0, 0.0))
                    best[(busy, t)] = (max(old[0], pp), max(old[1], tg))
    print(f"{args.model}: {len(prompt)} prompt tokens, {args.gen_tokens} generated, best of {args.rounds} rounds\n")
    print("| machine | n_threads | prompt tok/s | generation tok/s |")
    print("|---|---|---|---|")
    for (busy, t), (pp, tg) in sorted(best.items()):
        print(f"| {'one core busy' if busy else 'quiet'} | {t} | {pp:.0f} | {tg:.1f} |")
    if 1 in threads and 2 in threads:
        print(f"ratio: {best[(True, 1)][1] / best[(True, 2)][1]:.3f}")


if __name__ == "__main__":
    main()
