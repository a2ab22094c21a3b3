"""`agentlab serve`: the router as an OpenAI-compatible gateway that any framework can point its base_url at."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from agentlab.core.models.builtin import BUILTIN_MODELS_SERVED

from .common import LLM_HELP, ConfigOpt, JsonOpt, OutOpt, SetOpt, VerboseOpt, console, llm_path, opt, safe_text
from .runner import CommandSpec, Invocation, flags, run_command

# serve's own default without configs/llm.yaml (serve/run.py builtin_llm_config): every built-in model installed
ServeLLMOpt = Annotated[Path | None, typer.Option(
    "--llm", help=f"{LLM_HELP}, else every built-in model installed, each under its own name, with `default` on the "
    f"first of {', '.join(BUILTIN_MODELS_SERVED)} installed.", show_default=False,
    metavar="FILE|MODEL", parser=llm_path)]


def serve(
    config: ConfigOpt = None,
    llm: ServeLLMOpt = None,
    set_: SetOpt = None,
    host: Annotated[str | None, opt("--host", help="Address to bind (default 127.0.0.1: this machine only; "
                                    "0.0.0.0: every interface, then set --api-key-env).")] = None,
    port: Annotated[int | None, opt("--port", help="TCP port (default 8000; 0: any free port).")] = None,
    api_key_env: Annotated[str | None, opt("--api-key-env", help="Ask clients for a key: NAME of the environment "
                                           "variable (or .env entry) holding the keys, comma-separated; clients "
                                           "send `Authorization: Bearer KEY` (401 without).")] = None,
    keys: Annotated[Path | None, opt("--keys", help="Client keys with names, rate limits, budgets and allowed "
                                     "routes (YAML naming each key's variable or SHA-256; see docs/commands/"
                                     "serve.md).")] = None,
    otlp_endpoint: Annotated[str | None, opt("--otlp-endpoint", help="Export OpenTelemetry spans (one per request "
                                             "and per model attempt) to this OTLP/HTTP URL (extra `trace`).")] = None,
    log_prompts: Annotated[bool, typer.Option("--log-prompts", help="Keep every request's messages and reply in "
                                              "the run folder's llm_calls.jsonl (off: a gateway sees other "
                                              "people's prompts; events.jsonl still has model, tokens, timing).")
                           ] = False,
    out: OutOpt = None,
    json_: JsonOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Serve the routing config as an OpenAI-compatible API, with fallbacks and metrics.

    Serves --llm as an OpenAI-compatible API: POST /v1/chat/completions (streaming or not, tool calls;
    response_format json_schema through the router's structured output), /v1/responses, /v1/completions,
    /v1/embeddings, GET /v1/models, /health, /metrics (Prometheus). A request's `model` names a route (its
    fallbacks and strategy apply) or a model (that model only); hf adapters are served as models of their own name
    and batched together. Point any OpenAI client at http://HOST:PORT/v1. Ctrl-C stops (exit 130) and writes
    results.json and report.md to the run folder."""
    from agentlab.core.errors import UsageError
    from agentlab.serve import ServeConfig, prepare, run
    from agentlab.serve.config import env_name_problem

    if api_key_env is not None and (problem := env_name_problem(api_key_env)):  # said here: the flag's own error
        raise UsageError(f"--api-key-env: {problem}", hint="export NAME=KEY (several: comma-separated) or put it "
                         "in .env, then give --api-key-env NAME")  # would repeat the value, maybe the key itself
    options = flags(("--llm", "llm", llm), ("--host", "host", host), ("--port", "port", port),
                    ("--api-key-env", "api_key_env", api_key_env), ("--keys", "keys_file", keys),
                    ("--otlp-endpoint", "otlp_endpoint", otlp_endpoint))
    run_command(CommandSpec("serve", ServeConfig, run, prepare=prepare, resumable=False, summary=_summary,
                            exit_code=lambda results: 130 if results.get("stopped_by") else 0),
                Invocation(config=config, sets=[*(set_ or []), *options], out=out, log_prompts=log_prompts,
                           json_=json_, verbose=verbose))


def _summary(results: dict[str, Any], path: Path) -> None:
    from agentlab.core.files import counted

    console.print(f"stopped ({results.get('stopped_by') or 'done'}): {counted(results['requests'], 'request')}, "
                  f"{results['answered']} answered, {results['failed']} failed, "
                  f"{counted(results['fallbacks'], 'fallback')}")
    for row in results["by_route_model"]:
        console.print(safe_text(f"  {row['route']} -> {row['model']}: {row['requests']}"))
    console.print(f"report: {safe_text(path / 'report.md')}")
