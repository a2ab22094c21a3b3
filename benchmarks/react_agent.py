"""LangGraph's prebuilt ReAct agent on a built-in model (``--model``: SmolLM2-135M by default, the Qwen2.5-Coder
models; llama.cpp): does a tool task finish?

A question set written for this benchmark (``QUESTIONS``: 30 one-tool questions over 6 tools, 10 two-step questions
whose first result feeds the second call, 10 questions that need no tool) is put to
``langgraph.prebuilt.create_react_agent`` with the 6 tools, recursion limit ``--recursion-limit``, on

- ``inproc``: agentlab's LangChain chat model (``AgentlabChatModel``) over a router on the built-in model;
- ``served``: ``ChatOpenAI`` pointed at ``agentlab serve`` (the gateway, in this process) on the same model;

each with the model's ``small`` profile (the default for a local model: the tool gate, answered calls not repeated)
and ``full`` (none of it: the baseline, measured in the same invocation). The final answer is checked in code:
a one-tool or two-step question is right when the agent ended with an answer that contains the tools' result
(digits compared without separators); a no-tool question when it ended with a text answer and called no tool. Per
question: the agent's model steps and tokens. Temperature 0 (greedy; ``--seeds`` > 1 samples at temperature 0.7,
one run per seed, each kept). The last lines give, per group, each profile's accuracy, and ``ratio:`` one-tool
accuracy of the first profile / the last.

    python benchmarks/react_agent.py --paths inproc,served --profiles small,full
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

WEATHER = {"paris": "sunny, 21 C", "london": "rain, 14 C", "tokyo": "cloudy, 18 C", "cairo": "clear, 33 C",
           "oslo": "snow, -3 C", "lima": "fog, 16 C"}
POPULATION = {"paris": 2102650, "london": 8866180, "tokyo": 13960236, "cairo": 10230350, "oslo": 709037,
              "lima": 10092000}
CAPITAL = {"france": "Paris", "england": "London", "japan": "Tokyo", "egypt": "Cairo", "norway": "Oslo",
           "peru": "Lima"}


def multiply(a: float, b: float) -> float:
    """Multiply two numbers a and b."""
    return a * b


def add(a: float, b: float) -> float:
    """Add two numbers a and b."""
    return a + b


def get_weather(city: str) -> str:
    """Get the current weather in a city."""
    return WEATHER.get(city.strip().lower(), "unknown city")


def get_population(city: str) -> int | str:
    """Get the number of people who live in a city."""
    return POPULATION.get(city.strip().lower(), "unknown city")


def km_to_miles(km: float) -> float:
    """Convert a distance in kilometres to miles."""
    return round(km * 0.621371, 2)


def get_capital(country: str) -> str:
    """Get the capital city of a country."""
    return CAPITAL.get(country.strip().lower(), "unknown country")


TOOLS: list[Callable[..., Any]] = [multiply, add, get_weather, get_population, km_to_miles, get_capital]


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


# (group, question, expected): expected is the text the final answer must contain (None for no-tool questions).
QUESTIONS: list[tuple[str, str, str | None]] = [
    *[("one_tool", f"Multiply {a} by {b}.", _num(a * b)) for a, b in [(23, 19), (12, 7), (45, 3), (8, 125), (16, 16)]],
    *[("one_tool", f"Add {a} and {b}.", _num(a + b)) for a, b in [(234, 589), (1200, 345), (77, 88), (999, 1),
                                                                  (3050, 4075)]],
    *[("one_tool", f"What is the weather in {c}?", WEATHER[c.lower()].split(",")[0])
      for c in ["Paris", "London", "Tokyo", "Cairo", "Oslo"]],
    *[("one_tool", f"What is the population of {c}?", str(POPULATION[c.lower()]))
      for c in ["Paris", "London", "Tokyo", "Cairo", "Lima"]],
    *[("one_tool", f"Convert {k} km to miles.", _num(km_to_miles(k))) for k in [5, 42, 100, 13, 250]],
    *[("one_tool", f"What is the capital of {c}? Use the get_capital tool.", CAPITAL[c.lower()])
      for c in ["Norway", "Peru", "Egypt", "Japan", "England"]],
    *[("two_step", f"Multiply {a} by {b}, then add {c} to the result.", _num(a * b + c))
      for a, b, c in [(6, 7, 8), (12, 12, 100), (9, 11, 1), (25, 4, 50), (13, 3, 7)]],
    *[("two_step", f"Find the capital of {c}, then get the population of that city.", str(POPULATION[
        CAPITAL[c.lower()].lower()])) for c in ["France", "Japan", "Egypt", "Norway", "Peru"]],
    *[("no_tool", q, None) for q in [
        "Who wrote Hamlet?", "Say hello in French.", "What colour is the sky on a clear day?",
        "Name a fruit that is yellow.", "Tell me a short joke.", "What is the opposite of hot?",
        "How many legs does a spider have?", "Write one sentence about dogs.", "What language is spoken in Brazil?",
        "Give me a synonym for happy."]],
]


MODEL = ["smollm2-135m"]  # --model


def llm_config(profile: str, temperature: float, max_tokens: int) -> dict[str, Any]:
    return {"providers": {"local": {"kind": "llama_cpp", "n_ctx": 4096, "seed": 0}},
            "models": {"smol": {"provider": "local", "model": MODEL[0], "profile": profile,
                                "params": {"temperature": temperature, "max_tokens": max_tokens}}},
            "routes": {"default": {"primary": ["smol"]}}, "timeout_s": 600, "retries": 0}


def right(group: str, expected: str | None, answer: str, calls: int, finished: bool) -> bool:
    if group == "no_tool":
        return finished and calls == 0 and bool(answer.strip())
    assert expected is not None
    if not finished:
        return False
    digits = re.sub(r"(?<=\d)[,\s](?=\d{3})", "", answer)
    return expected.lower() in digits.lower()


STEP_LIMIT = "Sorry, need more steps to process this request."


def ask(agent: Any, question: str, limit: int) -> dict[str, Any]:
    from langchain_core.messages import AIMessage, HumanMessage
    from langgraph.errors import GraphRecursionError

    start = time.perf_counter()
    try:
        out = agent.invoke({"messages": [HumanMessage(question)]}, {"recursion_limit": limit})
        messages, finished = out["messages"], True
    except GraphRecursionError:
        messages, finished = [], False
    ais = [m for m in messages if isinstance(m, AIMessage)]
    last = ais[-1] if ais else None
    # at its step limit LangGraph's prebuilt agent answers this itself instead of raising
    finished = finished and last is not None and not last.tool_calls and last.content != STEP_LIMIT
    return {"answer": str(last.content) if last is not None and finished else "", "finished": finished,
            "steps": len(ais), "calls": sum(len(m.tool_calls) for m in ais),
            "tokens": sum(m.usage_metadata["total_tokens"] if m.usage_metadata else 0 for m in ais),
            "tools": [c["name"] for m in ais for c in m.tool_calls], "seconds": time.perf_counter() - start}


def run_path(path: str, profile: str, seed: int | None, args: argparse.Namespace,
             questions: list[tuple[str, str, str | None]], done: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from langgraph.prebuilt import create_react_agent

    from agentlab.core.llm import LLMConfig, Router
    from agentlab.integrations.langchain import AgentlabChatModel

    temperature = 0.0 if seed is None else 0.7
    cfg = LLMConfig.model_validate(llm_config(profile, temperature, args.max_tokens))
    results = []
    gateway, router = None, None
    try:
        if path == "inproc":
            router = Router.from_config(cfg)
            model: Any = AgentlabChatModel(router=router, seed=seed)
        else:
            from langchain_openai import ChatOpenAI

            from agentlab.serve import Gateway, ServeConfig

            gateway = Gateway(ServeConfig(port=0), cfg, None).start()
            model = ChatOpenAI(base_url=gateway.base_url, api_key="unused", model="default", max_retries=0,
                               timeout=600, seed=seed)
        agent = create_react_agent(model, TOOLS)
        for group, question, expected in questions:
            r = ask(agent, question, args.recursion_limit)
            r.update(group=group, question=question, expected=expected, path=path, profile=profile, seed=seed,
                     correct=right(group, expected, r["answer"], r["calls"], r["finished"]))
            results.append(r)
            if args.out:  # every answer kept as it comes: an interrupted run loses nothing
                args.out.write_text(json.dumps(done + results, indent=1), encoding="utf-8")
            print(f"  {path}/{profile}/seed {seed}: {'ok ' if r['correct'] else 'BAD'} {question[:50]!r} -> "
                  f"{r['answer'][:60]!r} tools={r['tools']} steps={r['steps']} {r['seconds']:.1f}s", flush=True)
    finally:
        if router is not None:
            router.close()
        if gateway is not None:
            gateway.stop()
    return results


def table(results: list[dict[str, Any]]) -> list[str]:
    lines = ["| path | profile | group | questions | accuracy (per seed) | finished | steps/q | tokens/q | s/q |",
             "|---|---|---|---|---|---|---|---|---|"]
    keys = sorted({(r["path"], r["profile"], r["group"]) for r in results},
                  key=lambda k: (k[0], k[1], ["one_tool", "two_step", "no_tool"].index(k[2])))
    for path, profile, group in keys:
        rows = [r for r in results if (r["path"], r["profile"], r["group"]) == (path, profile, group)]
        seeds = sorted({r["seed"] for r in rows}, key=lambda s: -1 if s is None else s)
        accs = [statistics.mean(r["correct"] for r in rows if r["seed"] == s) for s in seeds]
        spread = f" (min {min(accs):.2f}, max {max(accs):.2f})" if len(accs) > 1 else ""
        n = len(rows) // len(seeds)
        lines.append(f"| {path} | {profile} | {group} | {n} | {statistics.mean(accs):.2f}{spread} | "
                     f"{statistics.mean(r['finished'] for r in rows):.2f} | "
                     f"{statistics.mean(r['steps'] for r in rows):.1f} | "
                     f"{statistics.mean(r['tokens'] for r in rows):.0f} | "
                     f"{statistics.mean(r['seconds'] for r in rows):.1f} |")
    return lines


def probe(questions: list[tuple[str, str, str | None]]) -> list[str]:
    """Call or text, decided in code against decided by the model: per group, the share of questions the word gate
    (``tools.tool_gate``) lets through to a call, and the built-in model's probability of opening a call at the
    first token (``<``, the first token of ``<tool_call>``) under the tool prompt, as llama.cpp's lazy grammars
    decide. A rule by the model is only worth having if its probabilities separate the groups."""
    import numpy as np
    from langchain_core.utils.function_calling import convert_to_openai_tool

    from agentlab.core.llm import GenParams, LLMConfig, Router
    from agentlab.core.llm.tools import TOOL_CALL_OPEN, render_tool_messages, tool_gate

    tools = [convert_to_openai_tool(t) for t in TOOLS]
    params = GenParams(tools=tools, tool_choice="auto")
    with Router.from_config(LLMConfig.model_validate(llm_config("small", 0.0, 8))) as router:
        loaded = router.providers["local"].load(MODEL[0])  # type: ignore[attr-defined]
        llm = loaded.llm
        first = llm.tokenize(TOOL_CALL_OPEN.encode(), add_bos=False, special=True)[0]
        by_group: dict[str, list[tuple[bool, float]]] = {}
        for group, question, _ in questions:
            ask_ = [{"role": "user", "content": question}]
            through = tool_gate(ask_, params).tool_choice != "none"
            prompt = loaded.formatter(messages=render_tool_messages(ask_, params)).prompt
            llm.reset()
            llm.eval(llm.tokenize(prompt.encode(), add_bos=False, special=True))
            logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).astype(np.float64)
            p = np.exp(logits - logits.max())
            by_group.setdefault(group, []).append((through, float(p[first] / p.sum())))
    lines = ["| group | questions | word gate lets through | P(open a call) min | median | max |",
             "|---|---|---|---|---|---|"]
    for group, rows in by_group.items():
        ps = sorted(p for _, p in rows)
        lines.append(f"| {group} | {len(rows)} | {sum(t for t, _ in rows) / len(rows):.2f} | {ps[0]:.4f} | "
                     f"{statistics.median(ps):.4f} | {ps[-1]:.4f} |")
    return lines


def spaced(items: list[Any], n: int) -> list[Any]:
    """``n`` items evenly spaced over ``items`` (all when ``n`` is 0 or covers them)."""
    if n <= 0 or n >= len(items):
        return items
    return [items[i * len(items) // n] for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--paths", default="inproc,served", help="inproc, served")
    ap.add_argument("--model", default="smollm2-135m", help="the built-in model (smollm2-135m, qwen2.5-coder-0.5b, "
                    "qwen2.5-coder-1.5b) or a GGUF path")
    ap.add_argument("--profiles", default="small,full", help="small (SmolLM2's default), medium (the Qwen models'), "
                    "full (the baseline)")
    ap.add_argument("--groups", default="one_tool,two_step,no_tool")
    ap.add_argument("--limit", type=int, default=0, help="N questions of each group, evenly spaced over it (so every "
                    "tool is asked; 0: all)")
    ap.add_argument("--seeds", type=int, default=1, help="1: greedy; N > 1: N seeds at temperature 0.7")
    ap.add_argument("--recursion-limit", type=int, default=8, help="LangGraph's step limit (the issue's: 8)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--out", type=Path, default=None, help="write every question's record here (JSON)")
    ap.add_argument("--probe", action="store_true", help="only the call-or-text probe: the word gate against the "
                    "model's first-token probability of opening a call, per group (no agent runs)")
    args = ap.parse_args()
    MODEL[0] = args.model
    groups = args.groups.split(",")
    questions = [q for g in groups for q in spaced([x for x in QUESTIONS if x[0] == g], args.limit)]
    if args.probe:
        print("\n".join(probe(questions)))
        return
    seeds: list[int | None] = [None] if args.seeds <= 1 else list(range(args.seeds))
    print(f"LangGraph create_react_agent, 6 tools, recursion limit {args.recursion_limit}, {args.model} "
          f"(llama.cpp), {len(questions)} questions, seeds {seeds}", flush=True)
    results: list[dict[str, Any]] = []
    for path in args.paths.split(","):
        for profile in args.profiles.split(","):
            for seed in seeds:
                results += run_path(path, profile, seed, args, questions, results)
    print("\n" + "\n".join(table(results)))
    for path in args.paths.split(","):
        for group in groups:
            acc = {p: statistics.mean(r["correct"] for r in results if (r["path"], r["group"], r["profile"]) ==
                                      (path, group, p)) for p in args.profiles.split(",")
                   if any((r["path"], r["group"], r["profile"]) == (path, group, p) for r in results)}
            if len(acc) > 1:
                print(f"{path} {group}: " + " / ".join(f"{p} {a:.2f}" for p, a in acc.items()))
    profiles = args.profiles.split(",")
    one = {p: [r["correct"] for r in results if r["group"] == "one_tool" and r["profile"] == p]
           for p in (profiles[0], profiles[-1])}
    if len(profiles) > 1 and one[profiles[0]] and one[profiles[-1]]:
        first, last = statistics.mean(one[profiles[0]]), statistics.mean(one[profiles[-1]])
        print(f"ratio: {first / last:.3f}" if last else f"ratio: inf (one-tool {profiles[0]} {first:.2f}, "
              f"{profiles[-1]} 0)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
