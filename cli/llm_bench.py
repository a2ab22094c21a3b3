"""`agentlab llm-bench`: is every configured model up, how fast does it answer, and does the fallback chain work."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any

import typer

from .common import JsonOpt, LLMOpt, NoLogPromptsOpt, OutOpt, SetOpt, VerboseOpt, console, safe_text
from .runner import CommandSpec, Invocation, flags, run_command


def _print_table(results: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title="llm-bench", title_justify="left", pad_edge=False)
    table.add_column("model", no_wrap=True)
    table.add_column("available")  # "no: server_error" wraps in 80 columns before a number is cut
    # p50/p90/p99 read as what they are: the latency of a whole request; tok/s: one request's decode speed
    for column in ("ok", "TTFT\np50", "latency\np50", "latency\np90", "latency\np99", "decode\ntok/s"):
        table.add_column(column, justify="right", no_wrap=True, min_width=len(column.split("\n")[0]))

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.0f}ms"

    for m in results["models"]:
        status = "[green]yes[/]" if m["available"] else f"[red]no: {m['error_kind']}[/]"
        table.add_row(safe_text(m["name"]), status, f"{m['ok']}/{m['requests']}", ms(m["ttft_s"]["p50"]),
                      ms(m["latency_s"]["p50"]), ms(m["latency_s"]["p90"]), ms(m["latency_s"]["p99"]),
                      "-" if m["output_tokens_per_s"] is None else
                      f"{'~' if m.get('tokens_estimated') else ''}{m['output_tokens_per_s']:.0f}")
    console.print(table)
    console.print("latency: a whole request's; decode tok/s: the median per request, output tokens after the first "
                  "over the time after the first token (`-` when not streamed)", style="dim")
    if any(m.get("tokens_estimated") for m in results["models"]):
        from agentlab.llm_bench.report import ESTIMATED

        console.print(safe_text(ESTIMATED.replace("`", "")), style="dim")
    for m in results["models"]:
        if not m["available"] and m.get("error"):
            console.print(safe_text(f"{m['name']}: {m['error']}"), style="red")  # safe_text escapes the markup
            if m.get("hint"):
                console.print(safe_text(f"  hint: {m['hint']}"))
    console.print(safe_text(f"working: {', '.join(results['available']) or 'none'}; fastest: "
                            f"{results['fastest'] or '-'}"))
    if "route" in results:
        from agentlab.llm_bench.report import route_line, route_summary

        console.print(safe_text(f"route: {route_line(route_summary(results['route']))}"))


def llm_bench(
    config: Annotated[Path | None, typer.Option(
        "-c", "--config", help="The routing config whose models are benched (as --llm). Without it: "
        "configs/llm.yaml when present, else the demo.", show_default=False, dir_okay=False)] = None,
    llm: LLMOpt = None,
    set_: SetOpt = None,
    model: Annotated[list[str] | None, typer.Option("--model", "-m", help="Only these models (repeatable).",
                                                    show_default=False, metavar="MODEL")] = None,
    concurrency: Annotated[str | None, typer.Option(help="Concurrency levels, comma-separated (default 1,4).",
                                                    show_default=False)] = None,
    requests: Annotated[int | None, typer.Option(min=1, help="Requests per model at each concurrency level "
                                                 "(default 8).", show_default=False)] = None,
    prompt: Annotated[str | None, typer.Option(help="Prompt sent with every request.", show_default=False)] = None,
    max_tokens: Annotated[int | None, typer.Option(min=1, help="max_tokens of every request (default 64).",
                                                   show_default=False)] = None,
    route: Annotated[str | None, typer.Option(help="Also send the requests through this route's strategy and "
                                              "fallbacks (each model is benched too); reports who answered.",
                                              show_default=False)] = None,
    no_stream: Annotated[bool, typer.Option("--no-stream", help="Do not stream (TTFT is then not measured).")] = False,
    demo: Annotated[bool, typer.Option("--demo", help="Bench three models on a built-in loopback server "
                                       "(fast, slow, dead): see the report without any API key.")] = False,
    out: OutOpt = None,
    no_log_prompts: NoLogPromptsOpt = False,
    json_: JsonOpt = False,
    verbose: VerboseOpt = 0,
    resume: Annotated[str | None, typer.Option("--resume", hidden=True, show_default=False)] = None,
) -> None:
    """Availability, latency and throughput of every configured model.

    Probes each model: availability (with the error kind), time to first token, latency p50/p90/p99 and output
    tokens/s at each concurrency level. Writes report.md (with a chart) and results.json; the run
    folder's config.yaml repeats the measurement (`agentlab llm-bench -c RUN/config.yaml`). Without -c / --llm it
    benches the models of configs/llm.yaml when that file exists, else the demo's."""
    from agentlab.core.errors import InputError, UsageError
    from agentlab.core.llm.config import DEFAULT_LLM_CONFIG, routing_source
    from agentlab.llm_bench import BenchConfig, prepare, run
    from agentlab.llm_bench.report import measure_again

    if resume is not None:  # hidden: it only says what to do instead (click said "No such option")
        raise UsageError("llm-bench has no --resume: a measurement is repeated, not continued",
                         hint=measure_again())
    if config is not None and llm is not None and config != llm:
        raise UsageError("-c/--config and --llm both given", hint="llm-bench reads one routing config: pass one")
    path = config or llm
    if demo and path is not None:
        raise UsageError("--demo and a routing config both given",
                         hint="--demo benches built-in loopback models; drop it to bench the models of "
                         f"{path}")
    if not demo and path is None and DEFAULT_LLM_CONFIG.exists() and not DEFAULT_LLM_CONFIG.is_file():
        raise InputError(f"{DEFAULT_LLM_CONFIG} is not a file (the routing config llm-bench reads without -c)",
                         hint=f"pass the routing config with -c, make {DEFAULT_LLM_CONFIG} a file, or try --demo")
    use_demo = demo or (path is None and not DEFAULT_LLM_CONFIG.exists())
    file, builtin = routing_source(path) if path is not None else (None, None)  # a file, or a built-in model
    options = flags(("--model", "bench.models", model), ("--concurrency", "bench.concurrency", concurrency),
                    ("--requests", "bench.requests", requests), ("--prompt", "bench.prompt", prompt),
                    ("--max-tokens", "bench.max_tokens", max_tokens), ("--route", "bench.route", route),
                    ("--no-stream", "bench.stream", False if no_stream else None))
    demo_at: list[str] = []  # the demo server's address, said once the config is valid
    # a --demo run is repeated with its own options (its config.yaml names a demo server that is gone): the
    # config.yaml's first line, report.md and Ctrl-C's line said a bare `llm-bench --demo`, which lost them
    rerun = _demo_command(set_, options) if use_demo else None

    def start_demo(stack: ExitStack) -> dict[str, Any]:
        from agentlab.testing.server import demo_config, demo_server

        demo_at.append(stack.enter_context(demo_server()).base_url)
        # the demo models answer with text only: a tool-calling probe would report each as failing it
        return {**demo_config(demo_at[0]), "bench": {"tools": False}}

    def prepare_bench(cfg: BenchConfig) -> dict[str, Any]:
        kwargs = prepare(cfg)
        if demo_at:
            console.print(f"[cyan]demo:[/] benchmarking built-in loopback models at {demo_at[0]}"
                          + ("" if cfg.bench.tools else " (they answer with text only: no tool-calling probe)"))
        return kwargs

    base = start_demo if use_demo else builtin
    run_command(CommandSpec("llm-bench", BenchConfig, run, base=base, prepare=prepare_bench,
                            resumable=False, rerun=None if rerun is None else _format_safe(rerun),
                            summary=_summary, exit_code=lambda results: 0 if results["available"] or any(
                                r["model"] for r in results.get("route", [])) else 1),
                Invocation(config=None if use_demo or builtin else file or DEFAULT_LLM_CONFIG,
                           sets=[*(set_ or []), *options], out=out, log_prompts=not no_log_prompts, json_=json_,
                           verbose=verbose))


def _demo_command(sets: list[str] | None, options: list[Any]) -> str:
    """``llm-bench --demo`` and the options of this call that shape the measurement, as one line to paste."""
    from agentlab.core.errors import shell_word

    words = ["llm-bench", "--demo"]
    for given in sets or []:
        words += ["--set", shell_word(given)]
    for option in options:
        value = option.value
        if option.option == "--no-stream":
            words.append("--no-stream")
        elif isinstance(value, list):
            for item in value:
                words += [option.option, shell_word(item)]
        else:
            words += [option.option, shell_word(value)]
    return " ".join(words)


def _format_safe(text: str) -> str:
    """``text`` as ``RunDir``'s ``rerun``, which is ``str.format``-ed: its braces kept (a --prompt with {x})."""
    return text.replace("{", "{{").replace("}", "}}")


def _summary(results: dict[str, Any], path: Path) -> None:
    _print_table(results)
    console.print(f"report: {safe_text(path / 'report.md')}")
