"""The `agentlab serve` config: where the gateway listens, who may call it, its limits; the routing config it serves
comes from ``llm`` (``--llm FILE``).

Every field has a flag of the same meaning (``--host``, ``--port``, ``--api-key-env``, ``--otlp-endpoint``, ...), so
``configs/serve.yaml`` is optional; ``agentlab serve --llm configs/llm.yaml`` is the whole set-up.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator

from agentlab.core.config import StrictModel, shown_env_name
from agentlab.core.llm.config import RoutingRef

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def unset_env(name: str, keys: str = "KEY") -> tuple[str, str]:
    """What to say of ``name``, a variable name that names no set variable: (the problem, the hint). ``name`` is
    printed only when it reads as a conventional variable name (:func:`~agentlab.core.config.shown_env_name`, the
    rule `--set *_env=` labels follow too), else only its length: it may be the key itself."""
    if shown_env_name(name):
        return f"names {name}, which is not set (or empty)", f"export {name}={keys} or put it in .env"
    return (f"names no set variable (a value of {len(name)} characters: if that is the key itself, put it in an "
            "environment variable and name the variable)", f"export NAME={keys} or put it in .env, then name the "
            "variable NAME, never the key itself")


def env_name_problem(value: str) -> str | None:
    """Why ``value`` cannot be an environment variable's name (None when it can), never printing it."""
    if _ENV_NAME.match(value):
        return None
    return (f"a value of {len(value)} characters is not an environment variable name: name the variable holding "
            "the key, never the key itself")


class ServeConfig(StrictModel):
    llm: RoutingRef | None = Field(None, description="routing config served (providers, models, routes) or a "
                                   "built-in model's name (its default route); empty: configs/llm.yaml when "
                                   "present, else every built-in model installed through llama.cpp (default: the "
                                   "first of qwen2.5-coder-0.5b, qwen2.5-coder-1.5b, smollm2-135m)")
    host: str = Field("127.0.0.1", min_length=1, description="address to bind; 127.0.0.1 keeps the gateway on this "
                      "machine (0.0.0.0: every interface; set api_key_env then)")
    port: int = Field(8000, ge=0, le=65535, description="TCP port; 0 picks a free one (printed at start)")
    api_key_env: str | None = Field(None, description="name of the environment variable (or .env entry) holding "
                                    "the client keys, comma-separated; clients send one as `Authorization: Bearer "
                                    "KEY`; empty: no client key is asked for")
    keys_file: Path | None = Field(None, description="client keys with names, rate limits, budgets and allowed "
                                   "routes (YAML; serve/keys.py shows the format); the file names each key's "
                                   "variable or SHA-256, never a key; with api_key_env both sets of keys work")
    max_request_bytes: int = Field(1_000_000, ge=1024, description="largest request body accepted (413 above)")
    body_timeout_s: float = Field(30.0, gt=0, description="a request's whole body must arrive within this many "
                                  "seconds of its headers (408 after): a client that never finishes its body "
                                  "holds no connection or request slot longer")
    max_tokens: int = Field(4096, ge=1, description="largest max_tokens a request may ask for (400 above); a "
                            "request without one gets the model's own max_tokens or the backend's default")
    max_messages: int = Field(256, ge=1, description="most messages in one request (400 above)")
    adapters_as_models: bool = Field(True, description="serve each adapter of an hf provider as a model of its "
                                     "own name (the provider's first model without an `adapter` param answers "
                                     "with it), the way vLLM serves multi-LoRA; concurrent requests for different "
                                     "adapters are generated in one batch")
    max_stored_responses: int = Field(1000, ge=0, description="/v1/responses: the conversations of this many "
                                      "responses are kept in memory (least recently used dropped first), so a "
                                      "follow-up can name previous_response_id; 0 keeps none (store: false is "
                                      "always honoured)")
    max_repairs: int = Field(2, ge=0, description="response_format: invalid JSON is sent back to the model with the "
                             "errors at most this many times before the next model of the route is asked")
    otlp_endpoint: str | None = Field(None, description="OpenTelemetry: export a span per request and per model "
                                      "attempt to this OTLP/HTTP endpoint (e.g. http://127.0.0.1:4318/v1/traces); "
                                      "needs the extra `trace`")
    trace_content: bool = Field(False, description="OpenTelemetry: put prompts and replies in the spans (off: "
                                "metadata only)")
    log_calls: bool = Field(True, description="events.jsonl gets one line per model attempt (model, outcome, tokens, "
                            "timing; never prompts): ~300 bytes each, so turn it off for a busy long-running gateway "
                            "(/metrics keeps the counts)")
    graceful_shutdown_s: float = Field(10.0, ge=0, description="on Ctrl-C / SIGTERM, how long requests in flight "
                                       "may finish before they are cancelled")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and (problem := env_name_problem(value)):
            raise ValueError(problem)
        return value

    @field_validator("host")
    @classmethod
    def _address_only(cls, value: str) -> str:
        match = re.match(r"^(?:[a-zA-Z]+://)?(\[[0-9a-fA-F:.]+\]|[^:/\[\]]+)(?::(\d+))?/?$", value)
        if match and value != match.group(1):  # a URL, or an address with its port (127.0.0.1:8000)
            port = f" and the port in --port or port: ({match.group(2)})" if match.group(2) else ""
            raise ValueError(f"'{value}' is not an address alone: give the address ({match.group(1).strip('[]')})"
                             f"{port}")
        return value

    @field_validator("otlp_endpoint")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"'{value}' is not an http(s) URL, e.g. http://127.0.0.1:4318/v1/traces")
        return value
