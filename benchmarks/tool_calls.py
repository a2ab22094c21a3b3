"""BFCL tool calling through agentlab's router on a built-in model (``--model``: SmolLM2 by default, the Qwen2.5-Coder
models), with and without the grammar, and the same answers through `agentlab serve`.

Data and scoring come from the Berkeley Function Calling Leaderboard's own package, ``bfcl-eval``, which is never a
project dependency: install it in a venv of its own (``python3 -m venv /work/bfcl-venv && /work/bfcl-venv/bin/pip
install --no-deps bfcl-eval``: the checker needs nothing beyond the standard library once its model table, which
imports every API client, is replaced by a one-entry table; see ``CHECKER``). This script reads the non-live
categories ``simple_python``, ``multiple``, ``parallel`` and ``irrelevance`` from that install (``--bfcl-python``
finds it) and calls ``bfcl_eval.eval_checker.ast_eval.ast_checker`` in a subprocess with that venv's python.
``irrelevance`` is scored as BFCL scores it: correct when the model makes no call. ``--categories`` may name the
unseen ``live_*`` files (``live_simple``, ``live_multiple``, ``live_parallel``, ``live_parallel_multiple``,
``live_relevance``: correct when the model makes a call, ``live_irrelevance``): they are for a report at the end,
never for tuning.

Per category and mode (``grammar``: the llama_cpp provider's GBNF grammar built from the tools; ``free``: the same
prompt, model param ``tool_grammar: false``, calls read from free text) it prints accuracy, the share of items
answered with at least one call (``called``), the share of items whose first reply validated against the tools'
schemas (``valid``), the share answered with a valid reply after the router's one repair (``answered``), completion
tokens and seconds per item. Every item is asked with ``tool_choice: auto`` (BFCL does not tell the model whether to
call; ``parallel_tool_calls: false`` in the single-call categories ``simple_python``, ``multiple`` and their live
forms), temperature 0, at most ``--max-tokens``, through ``Router.generate``: the router validates and repairs
as it does for any caller. Items: a seeded sample of ``--per-category`` per category (``--per-category 0``: all).
BFCL's function names may contain dots, which OpenAI's tool names may not: they are sent with ``_`` for ``.`` and the
checker is told so (``underscore_to_dot``, as BFCL does for OpenAI's models).

Then throughput: the grammar run's answers are replayed by a loopback upstream (``agentlab.testing.server``, one
model per item answering its recorded calls after ``--latency`` seconds) and the same requests, with their tools,
are sent by a router over HTTP straight to it (direct) and through ``python -m agentlab serve`` (a process of its
own) in front of it, ``--concurrency`` at a time; rounds alternate and the best of each counts. The last line
is ``ratio: X`` = gateway throughput / direct throughput (target >= 0.95).

    python benchmarks/tool_calls.py --per-category 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agentlab.core.errors import AllModelsFailed
from agentlab.core.llm import GenParams, LLMConfig, Router
from agentlab.core.llm.tools import tool_gate
from agentlab.testing.gateway import serve_process, stop_process
from agentlab.testing.server import spawn_server_process

CATEGORIES = ("simple_python", "multiple", "parallel", "parallel_multiple", "irrelevance")
# Unseen data: never tuned on, read only to check that the gate's rule carries over.
LIVE = ("live_simple", "live_multiple", "live_parallel", "live_parallel_multiple", "live_relevance", "live_irrelevance")
MODES = ("free", "grammar")
SERVED = "served"  # the grammar mode's model behind `agentlab serve`, asked over HTTP: accuracy through the gateway
TYPES = {"dict": "object", "float": "number", "tuple": "array"}

# Runs under bfcl-eval's venv: reads [{"category", "function", "output", "answer"}] on stdin, prints one verdict per
# item. bfcl-eval's model table (constants.model_config) imports every API client; the checker only asks it whether
# a model's tool names had "." replaced by "_", so a one-entry table stands in for it.
CHECKER = r"""
import json, sys, types
table = types.ModuleType("bfcl_eval.constants.model_config")
table.MODEL_CONFIG_MAPPING = {"agentlab": types.SimpleNamespace(underscore_to_dot=True)}
sys.modules["bfcl_eval.constants.model_config"] = table
from bfcl_eval.constants.enums import Language
from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker
out = []
for item in json.load(sys.stdin):
    try:
        r = ast_checker(item["function"], item["output"], item["answer"], Language.PYTHON, item["category"], "agentlab")
        out.append({"valid": bool(r["valid"]), "error": (r.get("error") or [""])[0][:200]})
    except Exception as exc:
        out.append({"valid": False, "error": f"checker: {exc!r}"[:200]})
json.dump(out, sys.stdout)
"""


def bfcl_data(python: str) -> Path:
    """The ``bfcl_eval/data`` folder of the install ``python`` imports."""
    code = "import bfcl_eval, os; print(os.path.join(os.path.dirname(bfcl_eval.__file__), 'data'))"
    try:
        found = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    except (OSError, subprocess.CalledProcessError) as exc:
        sys.exit(f"--bfcl-python {python}: cannot import bfcl_eval ({exc}); install it: python3 -m venv "
                 "/work/bfcl-venv && /work/bfcl-venv/bin/pip install --no-deps bfcl-eval")
    return Path(found.stdout.strip())


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_items(data: Path, category: str, n: int, seed: int) -> list[dict[str, Any]]:
    items = read_jsonl(data / f"BFCL_v4_{category}.json")
    answers_path = data / "possible_answer" / f"BFCL_v4_{category}.json"
    answers = {a["id"]: a["ground_truth"] for a in read_jsonl(answers_path)} if answers_path.is_file() else {}
    for item in items:
        item["answer"] = answers.get(item["id"], [])
        item["category"] = category
    if n and n < len(items):
        picked = random.Random(f"{seed}:{category}").sample(range(len(items)), n)
        items = [items[k] for k in sorted(picked)]  # in the file's order (live ids are not numbers: 343-133-7)
    return items


def json_schema(node: Any) -> Any:
    """BFCL's parameter schema (Gorilla types: dict, float, tuple, any) as JSON schema."""
    if isinstance(node, list):
        return [json_schema(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: json_schema(v) for k, v in node.items() if k not in ("optional",)}
    kind = node.get("type")
    if kind == "any":
        out.pop("type")
    elif isinstance(kind, str):
        out["type"] = TYPES.get(kind, kind)
    return out


def tools_of(item: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": f["name"].replace(".", "_"),
                                              "description": f.get("description", ""),
                                              "parameters": json_schema(f["parameters"])}}
            for f in item["function"]]


def request_params(item: dict[str, Any]) -> GenParams:
    """``tool_choice: auto``; one call at most in BFCL's single-call categories (``parallel_tool_calls: false``, as a
    client that wants one call says): under the grammar, greedy SmolLM2 otherwise repeats its call until max_tokens."""
    single = item["category"] in ("simple_python", "multiple", "live_simple", "live_multiple")
    return GenParams(tools=tools_of(item), tool_choice="auto", parallel_tool_calls=False if single else None)


MODEL = {"name": "smollm2-135m", "profile": None, "threads": None}  # set by --model, --profile, --threads
# with --out: every answer is appended to ``<out>.partial.jsonl`` as it comes, and a run started again with the same
# --out asks only the items not there yet (the whole categories take hours on 2 cores)
PARTIAL: dict[str, Any] = {"path": None, "done": {}, "tag": ""}  # tag: model, profile, max tokens


def load_partial(out: Path | None, tag: str) -> None:
    PARTIAL["tag"] = tag
    if out is None:
        return
    path = out.with_name(out.name + ".partial.jsonl")
    done: dict[tuple[str, str], dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill: that item is asked again
                continue
            if rec.pop("tag", None) == tag:  # answers of another model, profile or max_tokens are not reused
                done[(rec.pop("key"), rec["id"])] = rec
    PARTIAL.update(path=path, done=done)
    if done:
        print(f"resuming: {len(done)} answers already in {path}")


def ask_once(router: Router, category: str, mode: str, item: dict[str, Any], invalid: list[str]) -> dict[str, Any]:
    """``ask``, or the answer an earlier run of the same --out recorded."""
    key = f"{category}/{mode}"
    if (key, item["id"]) in PARTIAL["done"]:
        return dict(PARTIAL["done"][(key, item["id"])])
    res = ask(router, mode, item, invalid)
    if PARTIAL["path"] is not None:
        with PARTIAL["path"].open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"tag": PARTIAL["tag"], "key": key, **res}) + "\n")
    return res


def local_config(max_tokens: int) -> LLMConfig:
    return LLMConfig.model_validate(local_llm(max_tokens))


def local_llm(max_tokens: int) -> dict[str, Any]:
    params = {"temperature": 0, "max_tokens": max_tokens}
    name, profile = MODEL["name"], ({"profile": MODEL["profile"]} if MODEL["profile"] else {})
    return {
        "providers": {"local": {"kind": "llama_cpp", "n_ctx": 4096, "seed": 0, "n_threads": MODEL["threads"]}},
        "models": {"grammar": {"provider": "local", "model": name, "params": params, **profile},
                   "free": {"provider": "local", "model": name, "params": {**params, "tool_grammar": False},
                            **profile}},
        "routes": {mode: {"primary": [mode]} for mode in MODES}, "retries": 0, "timeout_s": 300}


def run_served(python: str, items: dict[str, list[dict[str, Any]]], max_tokens: int) -> dict[str, list[Any]]:
    """Every item through ``python -m agentlab serve`` over the local grammar model (its own process), asked by a
    router over HTTP with the item's tools, as any OpenAI client would: BFCL's verdict on what came back."""
    os.environ.setdefault("BENCH_UPSTREAM_KEY", "sk-bench")
    out: dict[str, list[Any]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-tool-calls-served-") as tmp:
        proc, base_url = serve_process(local_llm(max_tokens), Path(tmp), timeout=300)
        http = {"providers": {"gw": {"kind": "openai", "base_url": base_url, "api_key_env": "BENCH_UPSTREAM_KEY"}},
                "models": {SERVED: {"provider": "gw", "model": "grammar"}},
                "routes": {SERVED: {"primary": [SERVED]}}, "retries": 0, "timeout_s": 600}
        try:
            with counting_invalid(LLMConfig.model_validate(http)) as (router, invalid):
                for category, group in items.items():
                    out[category] = scored(python, router, category, SERVED, group, invalid)
        finally:
            stop_process(proc)
    return out


@contextlib.contextmanager
def counting_invalid(config: LLMConfig) -> Iterator[tuple[Router, list[str]]]:
    """A router over ``config`` and the list its ``invalid_tool_call`` events land in (``ask`` reads and clears it)."""
    invalid: list[str] = []
    with Router(config, on_event=lambda kind, **f: invalid.append(f.get("error", ""))
                if kind == "invalid_tool_call" else None) as router:
        yield router, invalid


def scored(python: str, router: Router, category: str, mode: str, group: list[dict[str, Any]],
           invalid: list[str]) -> list[dict[str, Any]]:
    """Every item of ``group`` asked in ``mode``, with BFCL's verdict in ``correct``; prints the mode's table row."""
    results = [ask_once(router, category, mode, item, invalid) for item in group]
    for res, ok in zip(results, check(python, group, results), strict=True):
        res["correct"] = ok
    print(row(category, mode, results), flush=True)
    return results


def ask(router: Router, mode: str, item: dict[str, Any], invalid: list[str]) -> dict[str, Any]:
    """One item through the router; returns its calls, text, validity, tokens and seconds."""
    before = router.stats()[mode]["tokens_out"]
    invalid.clear()
    start = time.perf_counter()
    calls: list[dict[str, Any]] = []
    text = ""
    answered = True
    try:
        rc = router.generate_sync(item["question"][0], route=mode, params=request_params(item))
        calls = [{"name": c.name, "arguments": c.args} for c in rc.completion.tool_calls]
        text = rc.completion.text
    except AllModelsFailed:
        answered = False
    # a reply cut at max_tokens is no invalid_tool_call event (its attempt is of kind max_tokens): not answered either
    return {"id": item["id"], "calls": calls, "text": text, "answered": answered,
            "valid_first": answered and not invalid, "tokens": router.stats()[mode]["tokens_out"] - before,
            "seconds": time.perf_counter() - start}


def check(python: str, items: list[dict[str, Any]], results: list[dict[str, Any]]) -> list[bool]:
    """BFCL's verdict per item: its AST checker; for the irrelevance categories no call at all, for
    ``live_relevance`` at least one (BFCL has no answer for it: any call counts)."""
    verdicts: list[bool | None] = []
    batch = []
    for item, res in zip(items, results, strict=True):
        if item["category"] in ("irrelevance", "live_irrelevance", "live_relevance"):
            verdicts.append(bool(res["calls"]) == (item["category"] == "live_relevance"))
            continue
        verdicts.append(None)
        batch.append({"category": item["category"], "function": item["function"], "answer": item["answer"],
                      "output": [{c["name"]: c["arguments"]} for c in res["calls"]]})
    if batch:
        done = subprocess.run([python, "-c", CHECKER], input=json.dumps(batch), capture_output=True, text=True,
                              check=True, timeout=600)
        checked = iter(v["valid"] for v in json.loads(done.stdout))
        verdicts = [next(checked) if v is None else v for v in verdicts]
    return [bool(v) for v in verdicts]


# --------------------------------------------------------------------------- the gateway on replayed answers


def replay_config(recorded: dict[str, dict[str, Any]], latency: float) -> dict[str, Any]:
    defaults = {}
    for item_id, res in recorded.items():
        reply: dict[str, Any] = {"delay_s": latency, "text": res["text"] or "No function fits the question."}
        if res["calls"]:
            reply = {**reply, "text": res["text"], "tool_calls": res["calls"]}
        defaults[item_id] = reply
    return {"defaults": defaults}


def http_llm(base_url: str, ids: list[str]) -> dict[str, Any]:
    """One model and one route per item (a route the config does not name would be every model in turn)."""
    return {"providers": {"up": {"kind": "openai", "base_url": base_url, "api_key_env": "BENCH_UPSTREAM_KEY"}},
            "models": {i: {"provider": "up", "model": i} for i in ids},
            "routes": {i: {"primary": [i]} for i in ids}, "retries": 0, "timeout_s": 30}


async def drive(base_url: str, items: list[dict[str, Any]], expected: dict[str, list[dict[str, Any]]], requests: int,
                concurrency: int) -> float:
    """``requests`` routed calls (items in turn, with their tools) at ``concurrency``, each checked against its
    recorded calls; returns requests per second."""
    router = Router.from_config(LLMConfig.model_validate(http_llm(base_url, [i["id"] for i in items])))
    counter = iter(range(requests))

    async def worker() -> None:
        for n in counter:
            item = items[n % len(items)]
            rc = await router.generate(item["question"][0], route=item["id"],
                                       params=request_params(item))
            got = [{"name": c.name, "arguments": c.args} for c in rc.completion.tool_calls]
            if got != expected[item["id"]]:
                raise RuntimeError(f"{item['id']}: the replayed answer came back as {got}")

    try:
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return requests / (time.perf_counter() - start)
    finally:
        await router.aclose()


def start_gateway(llm: dict[str, Any], folder: Path) -> tuple[subprocess.Popen[str], str]:
    """``python -m agentlab serve`` over ``llm`` in a process of its own (as a user runs it: it must not share this
    client's interpreter); returns the process and its base URL."""
    return serve_process(llm, folder, timeout=120)


def throughput(items: list[dict[str, Any]], recorded: dict[str, dict[str, Any]], latency: float, requests: int,
               concurrency: int, rounds: int) -> tuple[float, float]:
    os.environ.setdefault("BENCH_UPSTREAM_KEY", "sk-bench")
    expected = {i: r["calls"] for i, r in recorded.items()}
    proc, upstream = spawn_server_process(replay_config(recorded, latency))
    with tempfile.TemporaryDirectory(prefix="bench-tool-calls-") as tmp:
        gateway, base_url = start_gateway(http_llm(upstream, list(recorded)), Path(tmp))
        try:
            asyncio.run(drive(upstream, items, expected, concurrency, concurrency))  # warm both paths up
            asyncio.run(drive(base_url, items, expected, concurrency, concurrency))
            direct, through = [], []
            for _ in range(rounds):
                direct.append(asyncio.run(drive(upstream, items, expected, requests, concurrency)))
                through.append(asyncio.run(drive(base_url, items, expected, requests, concurrency)))
            return max(direct), max(through)
        finally:
            stop_process(gateway)
            proc.kill()
            proc.wait()


def gate_table(data: Path) -> list[str]:
    """Per category, every item: the share that ``tool_gate`` lets through to a call (computed in code, no model):
    for the categories that need a call, what the gate may cost; for the irrelevance ones, what it saves."""
    lines = ["| category | items | let through to a call | answered in text |", "|---|---|---|---|"]
    for category in (*CATEGORIES, *LIVE):
        items = load_items(data, category, 0, 0)
        through = sum(tool_gate(i["question"][0], request_params(i)).tool_choice != "none" for i in items)
        lines.append(f"| {category} | {len(items)} | {through / len(items):.3f} | {1 - through / len(items):.3f} |")
    return lines


def probe_parallel(data: Path, model: str, n: int, seed: int) -> None:
    """Why parallel calls fail, measured on the model itself: for ``n`` seeded ``parallel`` items, the prompt as the
    llama_cpp provider renders it (the model's own template with the item's tools), followed by BFCL's first expected
    call in the model's format; printed: the probability the model gives to ending its answer there against opening
    the next call. No grammar and no sampling: the model's own next-token distribution."""
    import math

    from llama_cpp import Llama

    from agentlab.core.llm.providers.llama_cpp import _formatter
    from agentlab.core.llm.tool_formats import FORMATS
    from agentlab.core.models.builtin import assemble

    path = assemble(model) if not model.endswith(".gguf") else Path(model)
    llm = Llama(str(path), n_ctx=4096, logits_all=True, verbose=False, n_threads=MODEL["threads"])
    formatter = _formatter(llm, model)
    fmt = FORMATS["qwen"] if "qwen" in model else FORMATS["smollm2"]
    ends = {llm.token_eos(), *(t for t in llm.tokenize(b"<|im_end|><|endoftext|>", add_bos=False, special=True))}
    print(f"\nparallel probe: {model}, {n} items; P(the answer ends) right after the first expected call")
    print("| item | calls expected | P(end) | P(another call) | most likely next |")
    print("|---|---|---|---|---|")
    shares = []
    for item in load_items(data, "parallel", n, seed):
        first = item["answer"][0]
        name, args = next(iter(first.items()))
        call = {"name": name.replace(".", "_"), "arguments": {k: v[0] for k, v in args.items() if v and v[0] != ""}}
        prompt = formatter(messages=item["question"][0], tools=tools_of(item)).prompt + fmt.calls_text([call])
        tokens = llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        llm.reset()
        llm.eval(tokens)
        logits = list(llm.scores[llm.n_tokens - 1])
        top = max(logits)
        weights = [math.exp(x - top) for x in logits]
        total = sum(weights)
        # a separator first ("\n"), then the choice: ending or a next block
        sep = llm.tokenize(fmt.separator.encode(), add_bos=False, special=True) if fmt.separator else []
        if sep:
            llm.eval(sep[:1])
            logits = list(llm.scores[llm.n_tokens - 1])
            top = max(logits)
            weights = [math.exp(x - top) for x in logits]
            total = sum(weights)
        opener = llm.tokenize(fmt.open.strip().encode(), add_bos=False, special=True)[0]
        p_end = sum(weights[t] for t in ends) / total
        p_more = weights[opener] / total
        best = max(range(len(weights)), key=weights.__getitem__)
        shares.append(p_end)
        said = llm.detokenize([best], special=True).decode("utf-8", errors="replace")
        print(f"| {item['id']} | {len(item['answer'])} | {p_end:.3f} | {p_more:.3f} | {said!r} |")
    print(f"mean P(end) after the first call: {sum(shares) / len(shares):.3f} over {len(shares)} items that each "
          "need 2 or more calls")


def row(category: str, mode: str, results: list[dict[str, Any]]) -> str:
    n = len(results)
    return (f"| {category} | {mode} | {n} | {sum(r['correct'] for r in results) / n:.2f} | "
            f"{sum(bool(r['calls']) for r in results) / n:.2f} | {sum(r['valid_first'] for r in results) / n:.2f} | "
            f"{sum(r['answered'] for r in results) / n:.2f} | {sum(r['tokens'] for r in results) / n:.1f} | "
            f"{sum(r['seconds'] for r in results) / n:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bfcl-python", default="/work/bfcl-venv/bin/python", help="a python that imports bfcl_eval")
    ap.add_argument("--per-category", type=int, default=20, help="seeded sample per category (0: all items)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--categories", default=",".join(CATEGORIES))
    ap.add_argument("--modes", default=",".join(MODES), help=f"free, grammar, {SERVED} (the grammar model behind "
                    "agentlab serve, over HTTP)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--model", default="smollm2-135m", help="the built-in model asked (smollm2-135m, "
                    "qwen2.5-coder-0.5b, qwen2.5-coder-1.5b) or a GGUF path")
    ap.add_argument("--profile", choices=("small", "medium", "full"), default=None, help="the model's profile "
                    "(default: the built-in model's own: small for SmolLM2, medium for the Qwen models)")
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: its own)")
    ap.add_argument("--latency", type=float, default=0.25, help="the replaying upstream's latency, seconds")
    ap.add_argument("--requests", type=int, default=200, help="requests per throughput round (0: no gateway)")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None, help="write every item's answer and verdict here (JSON); "
                    "answers are also appended to OUT.partial.jsonl as they come, and a run with the same --out "
                    "resumes from it")
    ap.add_argument("--replay", type=Path, default=None, help="an --out file of an earlier run with the same items: "
                    "print its table and measure the gateway on its answers, without running the model")
    ap.add_argument("--probe-parallel", type=int, default=0, metavar="N", help="only measure, on N parallel items, "
                    "the probability the model ends its answer after the first expected call (no table)")
    args = ap.parse_args()
    MODEL.update(name=args.model, profile=args.profile, threads=args.threads)
    if args.probe_parallel:
        probe_parallel(bfcl_data(args.bfcl_python), args.model, args.probe_parallel, args.seed)
        return

    data = bfcl_data(args.bfcl_python)
    categories = [c for c in args.categories.split(",") if c]
    modes = [m for m in args.modes.split(",") if m]
    items = {c: load_items(data, c, args.per_category, args.seed) for c in categories}
    print(f"BFCL v4 ({data}), seed {args.seed}, {args.per_category or 'all'} per category; {args.model} (profile "
          f"{args.profile or 'default'}) through agentlab's router, temperature 0, tool_choice auto")
    print("\ntool_gate on every item (the live_* files: unseen data, never tuned on):")
    print("\n".join(gate_table(data)) + "\n")
    rows: list[str] = []
    if not args.replay:
        load_partial(args.out, f"{args.model}|{args.profile}|{args.max_tokens}|seed {args.seed}")
    dump: dict[str, Any] = json.loads(args.replay.read_text(encoding="utf-8")) if args.replay else {}
    if not args.replay:
        with counting_invalid(local_config(args.max_tokens)) as (router, invalid):
            for category in categories:
                for mode in (m for m in modes if m != SERVED):
                    dump[f"{category}/{mode}"] = scored(args.bfcl_python, router, category, mode, items[category],
                                                       invalid)
        if SERVED in modes:
            for category, results in run_served(args.bfcl_python, items, args.max_tokens).items():
                dump[f"{category}/{SERVED}"] = results
    recorded: dict[str, dict[str, Any]] = {}
    for category in categories:
        for mode in modes:
            results = dump[f"{category}/{mode}"]
            rows.append(row(category, mode, results))
            if mode == "grammar" or "grammar" not in modes:
                recorded.update({r["id"]: r for r in results})
    print("\n| category | mode | items | accuracy | called | valid | answered | tokens/item | s/item |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    if args.out and not args.replay:
        args.out.write_text(json.dumps(dump, indent=1), encoding="utf-8")
    if args.requests <= 0:
        return
    every = [i for c in categories for i in items[c]]
    direct, gateway = throughput(every, recorded, args.latency, args.requests, args.concurrency, args.rounds)
    print(f"\nreplayed through the gateway ({len(every)} items, {args.requests} requests a round, concurrency "
          f"{args.concurrency}, upstream latency {args.latency * 1000:.0f} ms, best of {args.rounds}): direct "
          f"{direct:.1f} req/s, gateway {gateway:.1f} req/s")
    print(f"ratio: {gateway / direct:.3f}")


if __name__ == "__main__":
    main()
