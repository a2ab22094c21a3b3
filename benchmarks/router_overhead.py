"""What does the router cost? The same requests through ``Router.generate`` and through a bare ``httpx.AsyncClient``.

A scripted OpenAI-compatible server runs in its own process on 127.0.0.1. The bare side splits its connections over
httpx clients of 4 as the provider does. Both clients send ``--requests`` chat
completions at ``--concurrency``; the runs alternate (bare, router, bare, router, ...) so drift on a noisy machine hits
both alike, and the best round of each is compared. The last line is ``ratio: X`` with
X = router throughput / bare throughput (target >= 0.9).

    python benchmarks/router_overhead.py --requests 2000 --concurrency 64
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time

import httpx

from agentlab.core.llm.config import LLMConfig
from agentlab.core.llm.router import Router
from agentlab.core.llm.types import GenParams
from agentlab.testing.server import spawn_server_process

MODEL = "bench-model"
MESSAGES = [{"role": "user", "content": "Say ok."}]


async def _drive(call, requests: int, concurrency: int) -> tuple[float, float]:
    """Run ``requests`` calls with ``concurrency`` workers; returns (requests per second, p50 latency in seconds)."""
    latencies: list[float] = []
    counter = iter(range(requests))

    async def worker() -> None:
        for _ in counter:
            start = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    assert len(latencies) == requests
    return requests / wall, statistics.median(latencies)


async def bare_round(base_url: str, requests: int, concurrency: int) -> tuple[float, float]:
    # The pool split over clients of 4 connections as the provider splits it (httpcore's pool costs CPU quadratic in
    # its connections): the ratio is what routing costs, not what one big pool costs.
    shards = max(1, concurrency // 4)
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)
    clients = [httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) for _ in range(shards)]
    turn = iter(range(10**9))
    async with contextlib.AsyncExitStack() as stack:
        for client in clients:
            await stack.enter_async_context(client)
        body = {"model": MODEL, "messages": MESSAGES, "max_tokens": 16}

        async def call() -> str:
            response = await clients[next(turn) % shards].post("/chat/completions", json=body)
            response.raise_for_status()
            text = response.json()["choices"][0]["message"]["content"]
            if not text:
                raise RuntimeError("empty reply")
            return text

        await _drive(call, concurrency, concurrency)  # warm the connection pool
        return await _drive(call, requests, concurrency)


async def router_round(base_url: str, requests: int, concurrency: int) -> tuple[float, float]:
    config = LLMConfig.model_validate({
        "providers": {"loop": {"kind": "openai", "base_url": base_url, "max_connections": concurrency}},
        "models": {"m": {"provider": "loop", "model": MODEL}},
        "routes": {"default": {"primary": ["m"]}},
        "timeout_s": 30,
    })
    router = Router.from_config(config)
    params = GenParams(max_tokens=16)
    try:
        async def call() -> str:
            return (await router.generate(MESSAGES, route="default", params=params)).completion.text

        await _drive(call, concurrency, concurrency)
        return await _drive(call, requests, concurrency)
    finally:
        await router.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of each client")
    args = parser.parse_args()

    proc, base_url = spawn_server_process({"defaults": {MODEL: {"text": "ok"}}})
    try:
        bare: list[tuple[float, float]] = []
        routed: list[tuple[float, float]] = []
        for round_no in range(args.rounds):
            bare.append(asyncio.run(bare_round(base_url, args.requests, args.concurrency)))
            routed.append(asyncio.run(router_round(base_url, args.requests, args.concurrency)))
            print(f"round {round_no + 1}: bare {bare[-1][0]:8.1f} req/s p50 {bare[-1][1] * 1000:6.1f} ms | "
                  f"router {routed[-1][0]:8.1f} req/s p50 {routed[-1][1] * 1000:6.1f} ms", flush=True)
    finally:
        proc.kill()
        proc.wait()
    best_bare, best_router = max(bare), max(routed)
    print(f"\n{args.requests} requests at concurrency {args.concurrency}, best of {args.rounds} rounds each")
    print(f"{'':8}{'req/s':>10}{'p50 ms':>10}")
    print(f"{'bare':8}{best_bare[0]:10.1f}{best_bare[1] * 1000:10.2f}")
    print(f"{'router':8}{best_router[0]:10.1f}{best_router[1] * 1000:10.2f}")
    print(f"ratio: {best_router[0] / best_bare[0]:.3f}")


if __name__ == "__main__":
    main()
