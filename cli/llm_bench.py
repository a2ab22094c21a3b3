"""`agentlab llm-bench`: is every configured model up, how fast does it answer, and does the fallback chain work."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any

import typer

from .common import ConfigOpt, JsonOpt, LLMOpt, OutOpt, SetOpt, VerboseOpt, console, print_json, rich_progress


def _demo_config(base_url: str) -> dict[str, Any]:
    return {
        "providers": {"demo": {"kind": "openai", "base_url": base_url}},
        "models": {name: {"provider": "demo", "model": name} for name in ("demo-fast", "demo-slow", "demo-dead")},
        "routes": {"default": {"primary": ["demo-dead"], "reserve": ["demo-slow"], "fallback": ["demo-fast"]}},
        "timeout_s": 10,
        "retries": 0,
    }


def _print_table(results: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title="llm-bench", title_justify="left", pad_edge=False)
    table.add_column("model", no_wrap=True)
    table.add_column("available", no_wrap=True)
    for column in ("ok", "TTFT p50", "p50", "p90", "p99", "tok/s"):
        table.add_column(column, justify="right", no_wrap=True)

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.0f}ms"

    for m in results["models"]:
        status = "[green]yes[/]" if m["available"] else f"[red]no: {m['error_kind']}[/]"
        table.add_row(m["name"], status, f"{m['ok']}/{m['requests']}", ms(m["ttft_s"]["p50"]),
                      ms(m["latency_s"]["p50"]), ms(m["latency_s"]["p90"]), ms(m["latency_s"]["p99"]),
                      "-" if m["output_tokens_per_s"] is None else f"{m['output_tokens_per_s']:.0f}")
    console.print(table)
    console.print(f"working: {', '.join(results['available']) or 'none'}; fastest: {results['fastest'] or '-'}")
    if "route" in results:
        from agentlab.llm_bench.report import route_summary

        s = route_summary(results["route"])
        console.print(f"route: answered by {s['answered_by']}; {s['with_fallback']}/{s['requests']} needed a "
                      f"fallback, {s['lost_s']:.3f} s lost")


def llm_bench(
    config: ConfigOpt = None,
    llm: LLMOpt = None,
    set_: SetOpt = None,
    model: Annotated[list[str] | None, typer.Option("--model", "-m", help="Only these models (repeatable).",
                                                    show_default=False)] = None,
    concurrency: Annotated[str, typer.Option(help="Concurrency levels, comma-separated.")] = "1,4",
    requests: Annotated[int, typer.Option(min=1, help="Requests per model at each concurrency level.")] = 8,
    prompt: Annotated[str | None, typer.Option(help="Prompt sent with every request.", show_default=False)] = None,
    max_tokens: Annotated[int, typer.Option(min=1, help="max_tokens of every request.")] = 64,
    route: Annotated[str | None, typer.Option(help="Send requests through this route's strategy and fallbacks "
                                              "instead of to each model; reports who answered.",
                                              show_default=False)] = None,
    no_stream: Annotated[bool, typer.Option("--no-stream", help="Do not stream (TTFT is then not measured).")] = False,
    demo: Annotated[bool, typer.Option("--demo", help="Bench three models on a built-in loopback server "
                                       "(fast, slow, dead): see the report without any API key.")] = False,
    out: OutOpt = None,
    json_: JsonOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Probe every configured model: availability (with the error kind), time to first token, latency p50/p90/p99
    and output tokens/s at each concurrency level. Writes report.md (with a chart) and results.json."""
    from agentlab.core.config import load_config
    from agentlab.core.errors import UsageError
    from agentlab.core.llm.config import DEFAULT_LLM_CONFIG, LLMConfig
    from agentlab.core.runs import RunDir
    from agentlab.llm_bench import BenchSettings, run

    from .common import setup_logging

    setup_logging(verbose)
    if config is not None and llm is not None and config != llm:
        raise UsageError("-c/--config and --llm both given", hint="llm-bench reads one routing config: pass one")
    path: Path | None = config or llm
    try:
        levels = [int(x) for x in concurrency.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--concurrency {concurrency}: expected comma-separated integers, e.g. 1,4,16") from None
    if not levels or min(levels) < 1:
        raise UsageError(f"--concurrency {concurrency}: levels must be >= 1")
    with ExitStack() as stack:
        base: dict[str, Any] | None = None
        if demo or (path is None and not DEFAULT_LLM_CONFIG.is_file()):
            from agentlab.testing.server import demo_server

            server = stack.enter_context(demo_server())
            base = _demo_config(server.base_url)
            console.print(f"[cyan]demo:[/] benchmarking built-in loopback models at {server.base_url}")
        elif path is None:
            path = DEFAULT_LLM_CONFIG
        cfg = load_config(None if base is not None else path, LLMConfig, set_, base=base)
        settings = BenchSettings(models=list(model or []), concurrency=levels, requests=requests,
                                 prompt=prompt or BenchSettings.prompt, max_tokens=max_tokens, route=route,
                                 stream=not no_stream)
        run_dir = stack.enter_context(RunDir.open("llm-bench", cfg, out=out, name="bench"))
        with rich_progress(enabled=not json_) as progress:
            results = run(cfg, settings, run_dir, progress=progress)
    if json_:
        print_json(results)
    else:
        _print_table(results)
        console.print(f"report: {run_dir.path / 'report.md'}")
    if not results["available"]:
        raise typer.Exit(1)
