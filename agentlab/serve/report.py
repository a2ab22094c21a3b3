"""report.md of a serve run: what was served, how many requests, who answered, what failed."""

from __future__ import annotations

from typing import Any

from agentlab.core.files import counted


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def render(results: dict[str, Any]) -> str:
    lines = ["# agentlab serve", "",
             f"Served on {results['address']} for {results['uptime_s']:.0f} s (stopped by "
             f"{results.get('stopped_by') or 'the caller'}): {counted(results['requests'], 'request')}, "
             f"{results['answered']} answered, {results['failed']} failed, "
             f"{counted(results['fallbacks'], 'fallback')}.", ""]
    if results["by_route_model"]:
        lines += ["| asked for | answered by | requests |", "|---|---|---:|"]
        lines += [f"| {r['route']} | {r['model']} | {r['requests']} |" for r in results["by_route_model"]]
        lines.append("")
    if results["errors"]:
        lines += ["| asked for | error | requests |", "|---|---|---:|"]
        lines += [f"| {e['route']} | {e['kind']} | {e['requests']} |" for e in results["errors"]]
        lines.append("")
    # router stats: they need not add up to the requests answered above, so the table says what it counts
    lines += ["Model calls of chat and responses requests (each retry or fallback is a call, an answer from the cache "
              "none; embeddings and completions requests are counted in the tables above only):", "",
              "| model | calls | ok | errors | p50 ms | tokens in | tokens out |", "|---|---:|---:|---|---:|---:|---:|"]
    for name, s in results["models"].items():
        errors = ", ".join(f"{k} {n}" for k, n in s["errors"].items()) or "-"
        lines.append(f"| {name} | {s['calls']} | {s['successes']} | {errors} | {_ms(s['p50_latency_s'])} | "
                     f"{s['tokens_in']} | {s['tokens_out']} |")
    return "\n".join(lines) + "\n"
