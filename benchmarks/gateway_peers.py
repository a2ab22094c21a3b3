"""`agentlab serve` next to LiteLLM's proxy, both in front of the same loopback upstream, and against the upstream
called directly.

Processes on this machine: the scripted OpenAI-compatible upstream (``python -m agentlab.testing.server``, which
keeps only its last 100 request bodies, so it does not grow over a run), ``agentlab serve`` (a real run folder with
its per-call event log on), the LiteLLM proxy (installed in its own venv, ``benchmarks/peers/.litellm-venv``, never a
project dependency; on its defaults with a master key) and this client (one pooled aiohttp session per cell, a
closed loop of ``concurrency`` workers). The upstream answers after ``--latency`` (default 50 ms); streams send one
chunk per word.

For each concurrency (1, 16, 64) and mode (plain, streaming), rounds alternate direct, agentlab, LiteLLM, so drift
on a shared machine hits all alike; every round is printed and kept. Reported per cell: requests/s (median of the
rounds, min-max), p50 / p99 latency added over direct (same round), the ratio to direct, time to first token for
streams, and each gateway's CPU time per request (user + system of its process tree over the measured requests) and
RSS after the run.

Then, in the same invocation: the response cache's hit path (agentlab with ``cache.enabled``, the same greedy request
again and again at concurrency 1) against a call to the upstream; and the cost of the new features turned on but
missing (cache on and every request a new prompt, so each is looked up, missed and stored; a client key with a rate
limit and a token budget) against the gateway with them off, at concurrency 64, plain.

    python benchmarks/gateway_peers.py                  # all cells, 2 rounds
    python benchmarks/gateway_peers.py --rounds 3 --no-litellm
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from agentlab.testing.gateway import serve_process, stop_process
from agentlab.testing.server import spawn_server_process

HERE = Path(__file__).resolve().parent
LITELLM = HERE / "peers" / ".litellm-venv" / "bin" / "litellm"
MESSAGES = [{"role": "user", "content": "Say ok."}]
REPLY = "ok, here is a short answer of about a dozen words for the benchmark."
MASTER_KEY = "sk-bench-litellm-master-0123456789"
CLIENT_KEY = "sk-bench-agentlab-client-0123456789"


def cpu_seconds(pid: int) -> float:
    proc = psutil.Process(pid)
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def own_cpu_seconds() -> float:
    """This client's CPU time alone (its children, the upstream and the gateways, are counted apart)."""
    t = psutil.Process().cpu_times()
    return t.user + t.system


def rss_mb(pid: int) -> float:
    proc = psutil.Process(pid)
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


async def _drive(client: aiohttp.ClientSession, url: str, model: str, requests: int, concurrency: int, stream: bool,
                 headers: dict[str, str], extra: dict[str, Any]) -> dict[str, Any]:
    extra = dict(extra)
    unique = extra.pop("unique", False)  # each request its own prompt: a cache on misses every time
    body = {"model": model, "messages": MESSAGES, "max_tokens": 32, **extra}
    if stream:
        body["stream"] = True
    latencies: list[float] = []
    ttfts: list[float] = []
    counter = iter(range(requests))

    async def worker() -> None:
        for n in counter:
            sent = {**body, "messages": [{"role": "user", "content": f"Say ok. ({time.time_ns()}-{n})"}]} \
                if unique else body
            start = time.perf_counter()
            async with client.post(url, json=sent, headers=headers) as response:
                if response.status != 200:
                    raise RuntimeError(f"{url}: HTTP {response.status} {(await response.text())[:300]}")
                if stream:
                    text, first = [], None
                    async for line in response.content:
                        if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                            continue
                        data = json.loads(line[6:])
                        piece = (data.get("choices") or [{}])[0].get("delta", {}).get("content")
                        if piece:
                            if first is None:
                                first = time.perf_counter() - start
                            text.append(piece)
                    answer = "".join(text)
                    ttfts.append(first if first is not None else time.perf_counter() - start)
                else:
                    answer = (await response.json())["choices"][0]["message"]["content"]
            if answer != REPLY:
                raise RuntimeError(f"{url}: wrong answer {answer[:100]!r}")
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    latencies.sort()
    return {"rps": requests / wall, "p50": statistics.median(latencies),
            "p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
            "ttft": statistics.median(ttfts) if ttfts else None}


UPSTREAM_PID: int | None = None  # the loopback upstream's process: its CPU is counted in every round


async def one_round(base_url: str, model: str, requests: int, concurrency: int, stream: bool, pid: int | None,
                    headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """One measured round; besides the gateway's CPU per request (``cpu_ms``), the CPU per request of the rest of
    the path, the same on every path: this client and the upstream (``rest_ms``), and the wall time (``wall_s``)."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as client:
        url = base_url + "/chat/completions"
        headers, extra = headers or {}, extra or {}
        await _drive(client, url, model, concurrency, concurrency, stream, headers, extra)  # open the connections
        cpu0 = cpu_seconds(pid) if pid else 0.0
        rest0 = own_cpu_seconds() + (cpu_seconds(UPSTREAM_PID) if UPSTREAM_PID else 0.0)
        wall0 = time.perf_counter()
        out = await _drive(client, url, model, requests, concurrency, stream, headers, extra)
        out["wall_s"] = time.perf_counter() - wall0
        rest = own_cpu_seconds() + (cpu_seconds(UPSTREAM_PID) if UPSTREAM_PID else 0.0) - rest0
        out["rest_ms"] = rest / requests * 1000
        if pid:
            out["cpu_ms"] = (cpu_seconds(pid) - cpu0) / requests * 1000
        return out


def start_litellm(upstream: str, model: str, folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = {"model_list": [{"model_name": model, "litellm_params": {"model": f"openai/{model}", "api_base": upstream,
                                                                       "api_key": "unused"}}]}
    (folder / "litellm.yaml").write_text(json.dumps(config), encoding="utf-8")
    env = {**os.environ, "LITELLM_MASTER_KEY": MASTER_KEY, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    log = open(folder / "litellm.log", "wb")  # noqa: SIM115 - the process owns it until it exits
    proc = subprocess.Popen([str(LITELLM), "--config", str(folder / "litellm.yaml"), "--host", "127.0.0.1",
                             "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder)
    deadline = time.monotonic() + 180
    import urllib.request

    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"litellm exited: {(folder / 'litellm.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/liveliness", timeout=1):
                return proc, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("litellm did not start within 180 s")


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):7.1f} ({min(values):.0f}-{max(values):.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=0.05, help="upstream time per request, seconds")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--requests-per-worker", type=int, default=30,
                        help="requests per cell = this x concurrency (at least 60)")
    parser.add_argument("--no-litellm", action="store_true", help="leave the peer out")
    args = parser.parse_args()

    model = f"bench-{round(args.latency * 1000)}ms"
    script = {"defaults": {model: {"text": REPLY, "delay_s": args.latency}}}
    upstream_proc, upstream = spawn_server_process(script)
    global UPSTREAM_PID
    UPSTREAM_PID = upstream_proc.pid
    folder = Path(tempfile.mkdtemp(prefix="gateway-peers-"))
    llm = {"providers": {"up": {"kind": "openai", "base_url": upstream, "max_connections": 256}},
           "models": {model: {"provider": "up", "model": model}}, "timeout_s": 60, "retries": 0}
    procs: list[subprocess.Popen[Any]] = []
    results: dict[tuple[int, bool], dict[str, list[dict[str, Any]]]] = {}
    try:
        (folder / "a").mkdir()
        agentlab_proc, agentlab = serve_process(llm, folder / "a", timeout=90)
        procs.append(agentlab_proc)
        targets: list[tuple[str, str, int | None, dict[str, str]]] = [
            ("direct", upstream, None, {}), ("agentlab", agentlab, agentlab_proc.pid, {})]
        if not args.no_litellm:
            if not LITELLM.exists():
                sys.exit(f"{LITELLM} is missing: python -m venv benchmarks/peers/.litellm-venv && "
                         "benchmarks/peers/.litellm-venv/bin/pip install 'litellm[proxy]' (or pass --no-litellm)")
            litellm_proc, litellm = start_litellm(upstream, model, folder)
            procs.append(litellm_proc)
            targets.append(("litellm", litellm, litellm_proc.pid, {"Authorization": f"Bearer {MASTER_KEY}"}))
        print(f"upstream latency {args.latency * 1000:.0f} ms; {os.cpu_count()} CPUs; load average before: "
              f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
        for concurrency in args.concurrency:
            requests = max(60, args.requests_per_worker * concurrency)
            for stream in (False, True):
                cell = results.setdefault((concurrency, stream), {name: [] for name, *_ in targets})
                for round_no in range(args.rounds):
                    line = []
                    for name, url, pid, headers in targets:
                        out = asyncio.run(one_round(url, model, requests, concurrency, stream, pid, headers))
                        cell[name].append(out)
                        line.append(f"{name} {out['rps']:7.1f} req/s p50 {out['p50'] * 1000:6.1f} ms"
                                    + (f" cpu {out['cpu_ms']:.2f} ms/req" if "cpu_ms" in out else ""))
                    print(f"c{concurrency:<3}{'stream' if stream else 'plain':7}round {round_no + 1}: "
                          + " | ".join(line), flush=True)
        rss = {name: rss_mb(pid) for name, _, pid, _ in targets if pid}
        stop_process(agentlab_proc)
        procs.remove(agentlab_proc)

        # the cache's hit path and the features' cost, on gateways of their own
        keys = folder / "keys.yaml"
        keys.write_text(json.dumps({"keys": [{"name": "bench", "key_env": "BENCH_CLIENT_KEY", "rpm": 1_000_000,
                                              "max_tokens": 10**12}]}), encoding="utf-8")
        os.environ["BENCH_CLIENT_KEY"] = CLIENT_KEY
        (folder / "off").mkdir()
        (folder / "on").mkdir()
        off_proc, off = serve_process(llm, folder / "off", timeout=90)
        procs.append(off_proc)
        on_proc, on = serve_process({**llm, "cache": {"enabled": True}}, folder / "on", timeout=90,
                                    extra=("--keys", str(keys)))
        procs.append(on_proc)
        auth = {"Authorization": f"Bearer {CLIENT_KEY}"}
        greedy: dict[str, Any] = {"temperature": 0}
        missing = {"temperature": 0, "unique": True}
        hits, calls, off_rounds, on_rounds = [], [], [], []
        for _ in range(args.rounds):
            calls.append(asyncio.run(one_round(upstream, model, 100, 1, False, None, extra=greedy)))
            hits.append(asyncio.run(one_round(on, model, 300, 1, False, on_proc.pid, auth, greedy)))
            off_rounds.append(asyncio.run(one_round(off, model, 64 * args.requests_per_worker, 64, False,
                                                    off_proc.pid, extra=missing)))
            on_rounds.append(asyncio.run(one_round(on, model, 64 * args.requests_per_worker, 64, False, on_proc.pid,
                                                   auth, missing)))
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                if proc.args[1:3] == ["-m", "agentlab"]:
                    stop_process(proc)
                else:
                    proc.terminate()
                    try:
                        proc.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        proc.kill()
        upstream_proc.kill()
        upstream_proc.wait()

    names = list(next(iter(results.values())))
    print(f"\n## upstream {args.latency * 1000:.0f} ms, {args.rounds} rounds a cell (median, min-max of rounds)\n")
    print("| cell | path | req/s | x direct | p50 added ms | p99 added ms | TTFT ms | CPU ms/req |")
    print("|---|---|---|---|---|---|---|---|")
    for (concurrency, stream), cell in results.items():
        direct = cell["direct"]
        for name in names:
            rows = cell[name]
            ratio = [r["rps"] / d["rps"] for r, d in zip(rows, direct, strict=True)]
            p50 = [(r["p50"] - d["p50"]) * 1000 for r, d in zip(rows, direct, strict=True)]
            p99 = [(r["p99"] - d["p99"]) * 1000 for r, d in zip(rows, direct, strict=True)]
            ttft = f"{statistics.median([r['ttft'] for r in rows]) * 1000:.1f}" if stream else "-"
            cpu = f"{statistics.median([r['cpu_ms'] for r in rows]):.2f}" if "cpu_ms" in rows[0] else "-"
            print(f"| c{concurrency} {'stream' if stream else 'plain'} | {name} | {spread([r['rps'] for r in rows])}"
                  f" | {statistics.median(ratio):.3f} ({min(ratio):.2f}-{max(ratio):.2f}) | "
                  + ("-" if name == "direct" else f"{statistics.median(p50):+.1f}")
                  + " | " + ("-" if name == "direct" else f"{statistics.median(p99):+.1f}")
                  + f" | {ttft} | {cpu} |")
    print("\nRSS after the cells: " + ", ".join(f"{n} {v:.0f} MB" for n, v in rss.items()))
    hit_rounds = ", ".join(f"{h['p50'] * 1000:.2f}" for h in hits)
    print(f"\ncache hit p50 {statistics.median([h['p50'] for h in hits]) * 1000:.2f} ms "
          f"(rounds: {hit_rounds}) vs upstream call p50 "
          f"{statistics.median([c['p50'] for c in calls]) * 1000:.2f} ms; cache hit CPU "
          f"{statistics.median([h['cpu_ms'] for h in hits]):.2f} ms/req")
    cost = [1 - n["rps"] / f["rps"] for n, f in zip(on_rounds, off_rounds, strict=True)]
    print(f"features on (cache on, every request a miss; a key with limits and a budget) vs off, c64 plain: off "
          f"{spread([r['rps'] for r in off_rounds])} req/s, on {spread([r['rps'] for r in on_rounds])} req/s, "
          f"cost {statistics.median(cost) * 100:+.1f}% (rounds: {', '.join(f'{c * 100:+.1f}%' for c in cost)}); "
          f"CPU off {statistics.median([r['cpu_ms'] for r in off_rounds]):.2f} on "
          f"{statistics.median([r['cpu_ms'] for r in on_rounds]):.2f} ms/req")
    # The machine's CPU as the bound: the client and the upstream cost the same on every path (rest_ms), the gateway
    # adds its own (cpu_ms); with the CPU busy (cores x wall time spent), a path can do at most
    # cores / (its CPU per request) requests a second, whatever the gateway does with its own share.
    cores = os.cpu_count() or 1
    print("\nCPU per request of the whole path (client + upstream, + the gateway), the machine's CPU in use during "
          f"the round ({cores} cores), and the throughput the CPU allows each path at most:")
    for (concurrency, stream), cell in results.items():
        for name in names:
            rows = cell[name]
            rest = statistics.median(r["rest_ms"] for r in rows)
            own = statistics.median(r["cpu_ms"] for r in rows) if "cpu_ms" in rows[0] else 0.0
            busy = statistics.median((r["rest_ms"] + r.get("cpu_ms", 0.0)) * r["rps"] / 1000 for r in rows)
            print(f"  c{concurrency} {'stream' if stream else 'plain'} {name}: client+upstream {rest:.2f} ms/req"
                  + (f" + gateway {own:.2f}" if own else "") + f" = {rest + own:.2f} ms/req; CPU in use "
                  f"{busy:.2f} of {cores} cores; CPU bound {cores / (rest + own) * 1000:.0f} req/s")
    c64 = results.get((64, False)), results.get((64, True))
    if c64[0] and c64[1]:
        plain = statistics.median(r["rps"] / d["rps"] for r, d in zip(c64[0]["agentlab"], c64[0]["direct"],
                                                                      strict=True))
        streamed = statistics.median(r["rps"] / d["rps"] for r, d in zip(c64[1]["agentlab"], c64[1]["direct"],
                                                                         strict=True))
        print(f"ratio: agentlab / direct at c64: plain {plain:.3f} (target 0.85), stream {streamed:.3f} "
              "(target 0.8)")


if __name__ == "__main__":
    main()
