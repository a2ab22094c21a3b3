"""report.md and the latency chart of an llm-bench run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from agentlab.core.errors import pip_install, shell_word
from agentlab.core.runs import save_figure

log = logging.getLogger(__name__)


def best_model(models: list[dict[str, Any]]) -> str | None:
    """The available model with the lowest median latency (the one to put first in a `fastest` route)."""
    ranked = [m for m in models if m["available"] and m["latency_s"]["p50"] is not None]
    return min(ranked, key=lambda m: m["latency_s"]["p50"])["name"] if ranked else None


def route_summary(route: list[dict[str, Any]]) -> dict[str, Any]:
    """Who answered the routed requests, how many failed (every model of the route did) and the time they took, how
    many answered ones needed a fallback, and the time those fallbacks cost before the answers (a failed request's
    ``fallback_time_s`` is null: it has no answer, all its time was lost)."""
    answered: dict[str, int] = {}
    for r in route:
        if r["model"]:
            answered[r["model"]] = answered.get(r["model"], 0) + 1
    return {"answered_by": ", ".join(f"{k} x{v}" for k, v in answered.items()) or "none",
            "requests": len(route), "failed": sum(1 for r in route if not r["model"]),
            "failed_s": sum(r["latency_s"] for r in route if not r["model"]),
            "with_fallback": sum(1 for r in route if r["model"] and r["fallbacks"]),
            "lost_s": sum(r["fallback_time_s"] or 0.0 for r in route if r["model"])}


def route_line(s: dict[str, Any]) -> str:
    """The route's outcome in one sentence (console and report)."""
    failed = (f"; {s['failed']}/{s['requests']} failed (every model of the route, {s['failed_s']:.3f} s spent on "
              "them)" if s["failed"] else "")
    return (f"answered by {s['answered_by']}{failed}; {s['with_fallback']}/{s['requests']} answered after a "
            f"fallback, {s['lost_s']:.3f} s lost to fallbacks before their answers")


def _why(model: dict[str, Any]) -> str:
    """The error cell: the kind, and for a model that is unavailable the error in words and its hint (a table
    cell's text)."""
    why = model["error_kind"] or ""
    if not model["available"] and model.get("error"):
        why += ": " + str(model["error"])
        if model.get("hint"):
            why += f" (hint: {model['hint']})"
    return why.replace("|", "\\|")


def _quoted(text: str, limit: int = 80) -> str:
    """A prompt in a sentence of report.md: one line, cut at ``limit``, in a code span."""
    flat = " ".join(text.split())
    flat = flat if len(flat) <= limit else flat[:limit - 3] + "..."
    flat = flat.replace("`", "'")
    return f"`{flat}`"


def _fmt(value: float | None, scale: float = 1000.0, unit: str = "ms") -> str:
    return "-" if value is None else f"{value * scale:.0f} {unit}" if scale != 1 else f"{value:.1f}"


MIN_DECODE_MS = 1.0  # the least time after the first token a decode speed is taken over (run.MIN_DECODE_S)
ESTIMATED = ("`~`: estimated: the server sent no token counts (`usage`), so each stream chunk counted as one output "
             "token (a server that sends several tokens a chunk reads slower than it is), and an answer sent whole "
             "as one token per four characters")


def _tokens(value: float | None, estimated: bool) -> str:
    """A tokens/s cell: ``~`` before one from estimated token counts (``tokens_estimated``)."""
    return "-" if value is None else f"{'~' if estimated else ''}{value:.1f}"


def save_chart(models: list[dict[str, Any]], path: Path) -> Path | None:
    """Horizontal bars of TTFT and latency p50/p90 per available model (no TTFT bars when no model was streamed:
    ``--no-stream`` drew an empty series). None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no chart (%s)", pip_install("plot"))
        return None
    rows = [m for m in models if m["available"]]
    if not rows:
        return None
    series = [(label, key, q) for label, key, q in (("TTFT p50", "ttft_s", "p50"), ("latency p50", "latency_s", "p50"),
                                                   ("latency p90", "latency_s", "p90"))
              if any(m[key][q] is not None for m in rows)]
    if not series:
        return None
    height = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(8, 1.6 + 0.7 * len(rows)), layout="constrained")
    for k, (label, key, q) in enumerate(series):
        values = [(m[key][q] or 0.0) * 1000 for m in rows]
        ax.barh([i + k * height for i in range(len(rows))], values, height=height, label=label)
    # each name at the middle of its group of bars (it sat on the second bar of two)
    ax.set_yticks([i + (len(series) - 1) * height / 2 for i in range(len(rows))], [m["name"] for m in rows])
    ax.invert_yaxis()
    ax.set_xlabel("milliseconds")
    ax.set_title("llm-bench: time to first token and total latency" if series[0][1] == "ttft_s"
                 else "llm-bench: total latency (not streamed: no time to first token)")
    # under the plot: inside it (lower right), it covered the ends of the longest bars
    fig.legend(loc="outside lower center", ncol=len(series), frameon=False)
    ax.grid(axis="x", alpha=0.3)
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


def measure_again(config: str | Path | None = None, rerun: str | None = None, *, demo: bool | None = None) -> str:
    """What to do after a stopped measurement (or instead of ``--resume``): llm-bench repeats a run, never continues
    it. The one text of Ctrl-C's line, the hidden ``--resume``'s hint and an interrupted report.md; ``config``: the
    run folder's config.yaml when known, else ``RUN/config.yaml`` with RUN explained; ``rerun``: the command line
    after ``agentlab`` that repeats this run when it is not ``-c`` its config.yaml (a --demo run's, with its
    options: its config names the port of a demo server that is gone); ``demo``: False for a run known not to be a
    --demo run (no advice for one), None when unknown."""
    if rerun is not None:
        return f"measure again with `agentlab {rerun}`"
    if config is None:
        return ("measure again with `agentlab llm-bench -c RUN/config.yaml` (RUN: the run folder, whose results.json "
                "and report.md hold the models measured so far; a --demo run: `agentlab llm-bench --demo` with the "
                "run's options)")
    again = f"measure again with `agentlab llm-bench -c {shell_word(config)}`"
    return again if demo is False else again + " (a --demo run: `agentlab llm-bench --demo` with the run's options)"


def after_stop(folder: Path | None) -> str:
    """The advice after a stopped ``llm-bench`` (Ctrl-C's line, the ui's runs list; ``cli.commands.continue_with``):
    with its run ``folder``, the command line that repeats it, as its config.yaml's first line says it (a --demo
    run's with its options: a bare ``llm-bench --demo`` lost them); without one, that nothing was measured (it named
    a RUN that was never made)."""
    if folder is None:
        return "before a run folder was made: nothing was measured; run the command again"
    config = folder / "config.yaml"
    try:
        with config.open(encoding="utf-8") as file:
            first = file.readline().strip()
    except (OSError, UnicodeDecodeError):
        first = ""
    if first.startswith("# agentlab llm-bench"):
        return f"measure again with `{first.removeprefix('# ')}`"
    return measure_again(config)


def render_report(results: dict[str, Any], run_path: Path, *, planned: int | None = None,
                  rerun: str | None = None) -> str:
    """report.md of ``results``. ``planned``: written while the run goes on (the model count it measures; no chart
    yet); ``rerun``: the run folder's ``RunDir.rerun``, a --demo run's command line (None: ``-c`` its config.yaml)."""
    models = results["models"]
    # the chart when the run has stopped (finished, Ctrl-C), not after every model: matplotlib took about a second
    chart = save_chart(models, run_path / "latency.png") if planned is None else None
    lines = ["# llm-bench", ""]
    config = run_path / "config.yaml"
    # a --demo run's own command line (its braces escaped for str.format: a --prompt holding "{config}" is text);
    # any other run's config.yaml holds its options, named as its first line and the terminal name it (absolute)
    again = measure_again(config.absolute(), rerun.format(config=config, run=run_path) if rerun is not None else None,
                          demo=False)
    if results.get("interrupted") and planned is not None:
        lines += [f"**Incomplete**: the {len(models)} of {planned} model(s) measured so far; the run is still going, "
                  f"or was stopped before the rest (run.json's status says which); {again}.", ""]
    elif results.get("interrupted"):
        lines += [f"**Interrupted**: the {len(models)} model(s) measured before the stop (not the one being measured, "
                  f"nor the route); {again}.", ""]
    available = results.get("available", [])
    lines.append(f"Working models: {', '.join(available) if available else 'none'}. "
                 f"Fastest (p50 latency): {results.get('fastest') or '-'}.")
    prompt = results["settings"].get("prompt")
    lines += ["", "Every request sends the same prompt" + (f" ({_quoted(prompt)})" if prompt else "")
              + ", so a server's prompt cache is warm for all of them; a model given the tool-calling probe first "
              "gets one warm-up request after it, not counted. Latency is the whole request's; decode tokens/s is "
              "the median per request of the output tokens after the first over the time after the first token."]
    if any(m["available"] and not m.get("stream", True) for m in models):
        lines += ["", "Not streamed (`--no-stream`, or `stream: false` on the model): no time to first token, so TTFT "
                  "and decode tokens/s are `-`."]
    lines += ["", "| model | available | error | ok/requests | TTFT p50 | TTFT p90 | latency p50 | latency p90 | "
              "latency p99 | decode tokens/s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for m in models:
        lines.append(
            f"| {m['name']} | {'yes' if m['available'] else 'no'} | {_why(m)} "
            f"| {m['ok']}/{m['requests']} "
            f"| {_fmt(m['ttft_s']['p50'])} | {_fmt(m['ttft_s']['p90'])} | {_fmt(m['latency_s']['p50'])} "
            f"| {_fmt(m['latency_s']['p90'])} | {_fmt(m['latency_s']['p99'])} "
            f"| {_tokens(m['output_tokens_per_s'], m.get('tokens_estimated', False))} |")
    if any(m["available"] and m.get("stream", True) and m["ttft_s"]["p50"] is None for m in models):
        lines += ["", "Asked for a stream but answered whole (a server or proxy that ignores `stream: true`): no time "
                  "to first token, so TTFT and decode tokens/s are `-`."]
    if any(m["available"] and m["ttft_s"]["p50"] is not None and m["output_tokens_per_s"] is None for m in models):
        lines += ["", "Decode tokens/s `-` with a TTFT: every answer was one token, or came in one piece (under "
                  f"{MIN_DECODE_MS:g} ms after its first token), too fast to time."]
    if any(m.get("tokens_estimated") or any(lv.get("tokens_estimated") for lv in m.get("levels", []))
           for m in models):
        lines += ["", ESTIMATED + "."]
    if chart is not None:
        lines += ["", f"![latency]({chart.name})"]
    probed = [m for m in models if m.get("tool_call")]
    if not results["settings"].get("tools", True):
        lines += ["", "## Tool calling", "", "Not probed (`bench.tools: false`, as `--demo` sets it: the demo models "
                  "answer with text only)."]
    if probed:
        lines += ["", "## Tool calling", "", "One request per working model offering one tool with "
                  "`tool_choice: required`, sent once (no repair).", "",
                  "| model | called a tool | valid call | latency | problem |", "|---|---|---|---|---|"]
        for m in probed:
            tc = m["tool_call"]
            valid = "-" if tc["valid"] is None else ("yes" if tc["valid"] else "no")
            problem = tc["problem"] or ""
            if tc["error_kind"]:  # the request failed: its kind, the error in words and the hint
                problem = ": ".join(filter(None, (tc["error_kind"], tc.get("error"))))
                problem += f" (hint: {tc['hint']})" if tc.get("hint") else ""
            problem = problem.replace("|", "\\|")
            lines.append(f"| {m['name']} | {'yes' if tc['called'] else 'no'} | {valid} | {_fmt(tc['latency_s'])} "
                         f"| {problem} |")
    stats = results.get("router_stats") or {}
    quality = {name: st for name, st in stats.items() if st.get("calls")}
    if quality:
        lines += ["", "## Answer quality", "", "Per model over this run's calls: replies that failed structured-output "
                  "validation, replies whose tool calls failed validation, and for best_of_n routes the answers shown "
                  "to the judge and those it picked.", "",
                  "| model | calls | invalid outputs | invalid tool calls | judged | judge wins |",
                  "|---|---|---|---|---|---|"]
        for name, st in quality.items():
            lines.append(f"| {name} | {st['calls']} | {st.get('invalid_outputs', 0)} | "
                         f"{st.get('invalid_tool_calls', 0)} | {st.get('judged', 0)} | {st.get('judge_wins', 0)} |")
    level_rows = [(m["name"], lv) for m in models for lv in m.get("levels", [])]
    if level_rows:
        lines += ["", "## By concurrency", "",
                  "| model | concurrency | ok | latency p50 | requests/s | throughput tokens/s |",
                  "|---|---|---|---|---|---|"]
        for name, lv in level_rows:
            throughput = lv["throughput_tokens_per_s"]
            lines.append(f"| {name} | {lv['concurrency']} | {lv['ok']}/{lv['requests']} | "
                         f"{_fmt(lv['latency_s']['p50'])} | {lv['requests_per_s']} | "
                         f"{'~' if lv.get('tokens_estimated') and throughput is not None else ''}{throughput} |")
    if "route" in results:
        summary = route_summary(results["route"])
        line = route_line(summary)  # str.capitalize would lower-case the model names after its first letter
        lines += ["", f"## Route `{results['settings']['route']}`", "", line[:1].upper() + line[1:] + ".", ""]
    return "\n".join(lines) + "\n"
