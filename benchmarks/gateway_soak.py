"""Does `agentlab serve` hold up under load and upstream trouble? A soak on loopback only.

Processes on this machine: scripted OpenAI-compatible upstreams (``agentlab.testing.server``: ``a`` and ``b``, one
to kill, one to freeze), the gateway (``python -m agentlab serve``, a real run folder with events.jsonl and
/metrics) and this client (aiohttp). Phases:

1. direct: ``--clients`` clients, half streaming, straight at upstream ``a`` for a third of ``--seconds``: the
   baseline of p50 / p99 and requests per second;
2. sustained: the same clients through the gateway's route ``main`` (``a``, falling back to ``b``) for ``--seconds``;
   the gateway's memory (RSS) is read after a warm-up and at the end;
3. disconnects: ``--disconnects`` streams dropped by the client after their first chunk: every upstream call they
   started must be cancelled and counted (``agentlab_model_attempts_total{outcome="cancelled"}``, events.jsonl);
4. killed upstream: ``--streams`` streams open on route ``kill`` (upstream ``k``, falling back to ``b``), then ``k``
   is SIGKILLed: each open stream must end with an SSE error event (they were mid-answer: the only requests allowed
   to fail), and new requests on the route must be answered by the fallback;
5. frozen upstream: upstream ``f`` is SIGSTOPped; requests on route ``freeze`` must time out on it and be answered
   by the fallback.

Printed: requests failed (target 0 outside the killed upstream's open streams), memory growth, p50 / p99 direct and
through the gateway, the cancelled calls counted, and ``ratio: X`` = gateway requests per second / direct requests
per second in phases 1-2 (same clients, same upstream).

    python benchmarks/gateway_soak.py                     # 32 clients, 30 s
    python benchmarks/gateway_soak.py --clients 32 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from agentlab.testing.gateway import serve_process, stop_process
from agentlab.testing.server import spawn_server_process

REPLY = "ok, here is a short answer of about a dozen words for the soak."
LONG = " ".join(f"word{i}" for i in range(100))  # 100 chunks: a stream that stays open for a while
TIMEOUT_S = 4.0  # the gateway's per-request timeout: how long a frozen upstream holds a request before fallback


def upstream(models: dict[str, dict[str, Any]]) -> tuple[subprocess.Popen[str], str]:
    return spawn_server_process({"defaults": models})


def start_gateway(urls: dict[str, str], folder: Path) -> tuple[subprocess.Popen[str], str]:
    providers = {name: {"kind": "openai", "base_url": url, "max_connections": 256} for name, url in urls.items()}
    llm = {"providers": providers,
           "models": {"fast_a": {"provider": "a", "model": "fast"}, "slow_a": {"provider": "a", "model": "slow"},
                      "fast_b": {"provider": "b", "model": "fast"}, "victim": {"provider": "k", "model": "long"},
                      "icy": {"provider": "f", "model": "fast"}},
           "routes": {"main": {"primary": ["fast_a"], "fallback": ["fast_b"]},
                      "kill": {"primary": ["victim"], "fallback": ["fast_b"]},
                      "freeze": {"primary": ["icy"], "fallback": ["fast_b"]}},
           "timeout_s": TIMEOUT_S, "retries": 0}
    return serve_process(llm, folder, timeout=90, extra=("--host", "127.0.0.1"))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Tally:
    def __init__(self) -> None:
        self.plain: list[float] = []
        self.stream: list[float] = []
        self.failed: list[str] = []


async def request(client: aiohttp.ClientSession, url: str, model: str, stream: bool, text: str = REPLY) -> str | None:
    """One chat completion; None when it was answered whole, else why not."""
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "Say ok."}], "max_tokens": 256,
                            "stream": stream}
    async with client.post(url + "/chat/completions", json=body) as response:
        if response.status != 200:
            return f"HTTP {response.status}: {(await response.text())[:120]}"
        if not stream:
            data = await response.json()
            got = data["choices"][0]["message"]["content"]
            return None if got == text else f"wrong answer {got[:40]!r}"
        parts, done = [], False
        async for raw in response.content:
            line = raw.decode().strip()
            if line.startswith("event: error"):
                return "SSE error"
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: "):
                delta = (json.loads(line[6:]).get("choices") or [{}])[0].get("delta", {})
                parts.append(delta.get("content") or "")
        return None if done and "".join(parts) == text else "stream incomplete"


async def sustained(url: str, model: str, clients: int, seconds: float) -> tuple[Tally, float]:
    tally, count = Tally(), 0
    stop = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as client:

        async def worker(i: int) -> None:
            nonlocal count
            stream = i % 2 == 1  # half the clients stream
            while time.monotonic() < stop:
                start = time.perf_counter()
                try:
                    why = await request(client, url, model, stream)
                except (TimeoutError, aiohttp.ClientError) as exc:
                    why = f"{type(exc).__name__}: {exc}"
                if why is None:
                    (tally.stream if stream else tally.plain).append(time.perf_counter() - start)
                else:
                    tally.failed.append(why)
                count += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(clients)))
        return tally, count / (time.perf_counter() - start)


async def disconnects(url: str, n: int) -> int:
    """``n`` streams on the slow model, each dropped after its first chunk; returns how many got one."""
    got = 0
    body = {"model": "slow_a", "messages": [{"role": "user", "content": "Say ok."}], "stream": True}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as client:

        async def one() -> None:
            nonlocal got
            async with client.post(url + "/chat/completions", json=body) as response:
                async for raw in response.content:
                    if raw.startswith(b"data: "):
                        got += 1
                        response.close()  # the client goes away mid-answer
                        return

        await asyncio.gather(*(one() for _ in range(n)))
    return got


async def killed_streams(url: str, n: int, victim: subprocess.Popen[str]) -> tuple[int, float, list[str]]:
    """``n`` streams open on route ``kill``; once each has text, SIGKILL its upstream. Returns (streams ended by an
    SSE error, seconds from the kill to the last stream's end, what each stream ended with)."""
    opened = asyncio.Event()
    started = 0
    ends: list[str] = []
    killed_at: list[float] = []
    last_end = 0.0
    body = {"model": "kill", "messages": [{"role": "user", "content": "Say ok."}], "stream": True}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as client:

        async def one() -> None:
            nonlocal started, last_end
            end = "no [DONE]"
            async with client.post(url + "/chat/completions", json=body) as response:
                counted = False
                async for raw in response.content:
                    line = raw.decode().strip()
                    if line.startswith("data: ") and not counted:
                        counted = True
                        started += 1
                        if started == n:
                            opened.set()
                    if line.startswith("event: error"):
                        end = "SSE error"
                        break
                    if line == "data: [DONE]":
                        end = "[DONE]"
                        break
            ends.append(end)
            last_end = max(last_end, time.monotonic())

        async def kill() -> None:
            await asyncio.wait_for(opened.wait(), 30)
            victim.send_signal(signal.SIGKILL)
            killed_at.append(time.monotonic())

        await asyncio.gather(kill(), *(one() for _ in range(n)))
    return sum(e == "SSE error" for e in ends), last_end - killed_at[0], ends


async def batch(url: str, model: str, n: int) -> Tally:
    tally = Tally()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as client:

        async def one(i: int) -> None:
            start = time.perf_counter()
            try:
                why = await request(client, url, model, stream=i % 2 == 1)
            except (TimeoutError, aiohttp.ClientError) as exc:
                why = f"{type(exc).__name__}: {exc}"
            if why is None:
                (tally.stream if i % 2 else tally.plain).append(time.perf_counter() - start)
            else:
                tally.failed.append(why)

        await asyncio.gather(*(one(i) for i in range(n)))
    return tally


async def metric(url: str, name: str, labels: dict[str, str]) -> float:
    async with aiohttp.ClientSession() as client, client.get(url.rsplit("/v1", 1)[0] + "/metrics") as response:
        text = await response.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def cancelled_events(run: Path, model: str) -> int:
    path = run / "events.jsonl"
    n = 0
    for line in path.read_text().splitlines() if path.is_file() else []:
        with_json = json.loads(line) if line.strip() else {}
        if with_json.get("kind") == "llm_call" and with_json.get("outcome") == "cancelled" \
                and with_json.get("model") == model:
            n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30.0, help="the sustained phase through the gateway")
    parser.add_argument("--disconnects", type=int, default=100)
    parser.add_argument("--streams", type=int, default=20, help="streams open when the upstream is killed")
    args = parser.parse_args()

    fast = {"text": REPLY, "delay_s": 0.02, "chunk_delay_s": 0.001}
    procs: dict[str, subprocess.Popen[str]] = {}
    urls: dict[str, str] = {}
    for name, models in (("a", {"fast": fast, "slow": {"text": LONG, "chunk_delay_s": 0.1}}), ("b", {"fast": fast}),
                         ("k", {"long": {"text": LONG, "chunk_delay_s": 0.03}}), ("f", {"fast": fast})):
        procs[name], urls[name] = upstream(models)
    folder = Path(tempfile.mkdtemp(prefix="gateway-soak-"))
    gateway, url = start_gateway(urls, folder)
    failed: list[str] = []
    try:
        asyncio.run(sustained(url, "main", args.clients, 3.0))  # warm-up: pools, imports, the first allocations
        rss_start = rss_mib(gateway.pid)
        direct, direct_rps = asyncio.run(sustained(urls["a"], "fast", args.clients, max(5.0, args.seconds / 3)))
        through, gateway_rps = asyncio.run(sustained(url, "main", args.clients, args.seconds))
        rss_end = rss_mib(gateway.pid)
        failed += through.failed
        print(f"sustained: {len(through.plain) + len(through.stream) + len(through.failed)} requests through the "
              f"gateway in {args.seconds:g} s, {args.clients} clients (half streaming), {len(through.failed)} failed; "
              f"direct: {len(direct.failed)} failed", flush=True)

        before = asyncio.run(metric(url, "agentlab_model_attempts_total", {"model": "slow_a", "outcome": "cancelled"}))
        got = asyncio.run(disconnects(url, args.disconnects))
        time.sleep(1.0)
        counted = asyncio.run(metric(url, "agentlab_model_attempts_total",
                                     {"model": "slow_a", "outcome": "cancelled"})) - before
        logged = cancelled_events(folder / "run", "slow_a")
        print(f"disconnects: {args.disconnects} streams dropped after their first chunk ({got} had one); upstream "
              f"calls cancelled and counted: {counted:.0f} in /metrics, {logged} in events.jsonl", flush=True)

        errors, seconds, ends = asyncio.run(killed_streams(url, args.streams, procs["k"]))
        after_kill = asyncio.run(batch(url, "kill", 20))
        failed += after_kill.failed
        print(f"killed upstream: {args.streams} streams open, {errors} ended with an SSE error, the last "
              f"{seconds:.2f} s after the kill; then 20 requests on its route: {len(after_kill.failed)} failed "
              f"(the fallback answered)", flush=True)

        procs["f"].send_signal(signal.SIGSTOP)
        frozen = asyncio.run(batch(url, "freeze", 16))
        procs["f"].send_signal(signal.SIGCONT)
        failed += frozen.failed
        waited = frozen.plain + frozen.stream
        print(f"frozen upstream: 16 requests on its route, {len(frozen.failed)} failed, answered by the fallback in "
              f"{min(waited, default=float('nan')):.2f}-{max(waited, default=float('nan')):.2f} s (timeout "
              f"{TIMEOUT_S:g} s)", flush=True)
    finally:
        stop_process(gateway)
        for proc in procs.values():
            proc.kill()
            proc.wait()

    print(f"\n{os.cpu_count()} CPUs shared by the client, the gateway and four upstreams")
    print(f"{'':>10}{'plain p50':>11}{'plain p99':>11}{'stream p50':>12}{'stream p99':>12}{'req/s':>9}")
    for name, t, rps in (("direct", direct, direct_rps), ("gateway", through, gateway_rps)):
        print(f"{name:>10}{pct(t.plain, .5) * 1000:9.1f}ms{pct(t.plain, .99) * 1000:9.1f}ms"
              f"{pct(t.stream, .5) * 1000:10.1f}ms{pct(t.stream, .99) * 1000:10.1f}ms{rps:9.1f}")
    growth = rss_end - rss_start
    print(f"memory: gateway RSS {rss_start:.1f} MiB after warm-up, {rss_end:.1f} MiB after {args.seconds:g} s "
          f"({growth:+.1f} MiB, {growth / rss_start:+.1%})")
    print(f"cancelled upstream calls counted: {counted:.0f}/{got} (/metrics), {logged}/{got} (events.jsonl)")
    kinds = sorted(set(failed))
    print(f"requests failed: {len(failed)} (outside the {args.streams} streams open on the killed upstream, which "
          f"ended {errors} with an SSE error)" + (f"; kinds: {kinds[:5]}" if kinds else ""))
    print(f"ratio: {gateway_rps / direct_rps:.3f} (gateway requests per second / direct, {args.clients} clients)")


if __name__ == "__main__":
    main()
