"""What does `agentlab serve` cost? The same requests to a loopback upstream directly and through the gateway.

Three processes on this machine: the scripted OpenAI-compatible upstream (``agentlab.testing.server``), the gateway
(``python -m agentlab serve``, a real run with its run folder and metrics) and this client (one pooled aiohttp
session: a load generator should cost little next to what it measures; httpx costs ~3 ms of CPU a request here,
which on 2 cores the gateway would have to share). Both paths send ``--requests`` chat completions at
``--concurrency``; rounds alternate (direct, gateway, direct, ...) so drift on a noisy machine hits both alike, and
the best round of each is compared.

The upstream answers after a simulated latency (``--latency``, default 0.25 s). A real LLM upstream takes that long
or (much) longer per request, and with that the comparison is the one a user makes: does the gateway keep up with
the requests, or does it become the bottleneck? The same comparison with zero upstream latency is printed too, so
nobody reads more into the figure than it says: there the upstream does no work at all, the three processes share
two cores, and the gateway's whole cost (a second HTTP hop, JSON both ways, routing, metrics, the run folder's
events) shows against a server that costs nothing.

The last line is ``ratio: X`` with X = gateway throughput / direct throughput at ``--latency`` (target >= 0.9).

    python benchmarks/gateway_overhead.py --requests 2000 --concurrency 64
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import aiohttp

from agentlab.testing.gateway import serve_process, stop_process
from agentlab.testing.server import spawn_server_process

MESSAGES = [{"role": "user", "content": "Say ok."}]
REPLY = "ok, here is a short answer of about a dozen words for the benchmark."


def model_name(latency: float) -> str:
    return f"bench-{int(round(latency * 1000))}ms"


async def _drive(client: aiohttp.ClientSession, url: str, model: str, requests: int, concurrency: int
                 ) -> tuple[float, float]:
    """``requests`` calls with ``concurrency`` workers; returns (requests per second, p50 latency in seconds)."""
    body = {"model": model, "messages": MESSAGES, "max_tokens": 32}
    latencies: list[float] = []
    counter = iter(range(requests))

    async def worker() -> None:
        for _ in counter:
            start = time.perf_counter()
            async with client.post(url, json=body) as response:
                data = await response.json()
            if response.status != 200 or data["choices"][0]["message"]["content"] != REPLY:
                raise RuntimeError(f"bad answer: {response.status} {str(data)[:200]}")
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    return requests / wall, statistics.median(latencies)


async def one_round(base_url: str, model: str, requests: int, concurrency: int) -> tuple[float, float]:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as client:
        url = base_url + "/chat/completions"
        await _drive(client, url, model, concurrency, concurrency)  # open the pool's connections
        return await _drive(client, url, model, requests, concurrency)


def start_gateway(upstream: str, latencies: list[float], concurrency: int, folder: Path
                  ) -> tuple[subprocess.Popen[str], str]:
    llm = {"providers": {"up": {"kind": "openai", "base_url": upstream, "max_connections": concurrency}},
           "models": {model_name(lat): {"provider": "up", "model": model_name(lat)} for lat in latencies},
           "timeout_s": 60, "retries": 0}
    return serve_process(llm, folder, timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of each path")
    parser.add_argument("--latency", type=float, default=0.25,
                        help="the upstream's simulated time per request, in seconds (the ratio's setting)")
    args = parser.parse_args()

    latencies = [args.latency] + ([0.0] if args.latency != 0 else [])
    script = {"defaults": {model_name(lat): {"text": REPLY, "delay_s": lat} for lat in latencies}}
    upstream_proc, upstream = spawn_server_process(script)
    folder = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    gateway_proc, gateway = start_gateway(upstream, latencies, args.concurrency, folder)
    results: dict[float, dict[str, tuple[float, float]]] = {}
    try:
        for lat in latencies:
            direct, through = [], []
            for round_no in range(args.rounds):
                direct.append(asyncio.run(one_round(upstream, model_name(lat), args.requests, args.concurrency)))
                through.append(asyncio.run(one_round(gateway, model_name(lat), args.requests, args.concurrency)))
                print(f"upstream latency {lat * 1000:4.0f} ms, round {round_no + 1}: direct {direct[-1][0]:7.1f} "
                      f"req/s p50 {direct[-1][1] * 1000:6.1f} ms | gateway {through[-1][0]:7.1f} req/s p50 "
                      f"{through[-1][1] * 1000:6.1f} ms", flush=True)
            results[lat] = {"direct": max(direct), "gateway": max(through)}
    finally:
        stop_process(gateway_proc)
        upstream_proc.kill()
        upstream_proc.wait()
    print(f"\n{args.requests} requests at concurrency {args.concurrency}, best of {args.rounds} rounds each; "
          f"{os.cpu_count()} CPUs shared by client, gateway and upstream")
    print(f"{'upstream latency':>18}{'direct req/s':>14}{'gateway req/s':>15}{'direct p50':>12}{'gateway p50':>13}"
          f"{'ratio':>8}")
    for lat, row in results.items():
        d, g = row["direct"], row["gateway"]
        print(f"{lat * 1000:15.0f} ms{d[0]:14.1f}{g[0]:15.1f}{d[1] * 1000:10.1f}ms{g[1] * 1000:11.1f}ms"
              f"{g[0] / d[0]:8.3f}")
    main_row = results[args.latency]
    print(f"ratio: {main_row['gateway'][0] / main_row['direct'][0]:.3f} (upstream latency {args.latency:g} s; "
          f"with zero upstream latency: "
          f"{results[0.0]['gateway'][0] / results[0.0]['direct'][0]:.3f})")


if __name__ == "__main__":
    main()
