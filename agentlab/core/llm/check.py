"""Whether a configured model can be used at all, checked before a command relies on it (nas's and compress's
``--planner llm`` / ``agent``), without loading it or spending a token.

A local model (``llama_cpp``, ``hf``) must resolve to a file or folder (a path, a built-in name, a cached hub id):
a name that does not exist is a config error, found in milliseconds. An HTTP model (``openai``) needs its API key
set, and its server must answer a quick ``GET {base_url}/models`` (any HTTP status counts: the server is there; a
connection error or a timeout does not). A ``scripted`` model is always usable.
"""

from __future__ import annotations

from agentlab.core.config import getenv
from agentlab.core.errors import MissingPackage
from agentlab.core.llm.config import (
    HFProviderConfig,
    LlamaCppProviderConfig,
    LLMConfig,
    OpenAIProviderConfig,
)
from agentlab.core.models.builtin import ModelFileError
from agentlab.core.models.modelref import ModelNotFound, resolve_model

PROBE_S = 3.0  # an HTTP server that does not answer a model listing within this is unreachable for our purposes


def local_problem(llm: LLMConfig, name: str) -> str | None:
    """Why model ``name`` (a local model of ``llm``) cannot be loaded, or None (also for HTTP / scripted models)."""
    mcfg = llm.models[name]
    pcfg = llm.providers[mcfg.provider]
    if not isinstance(pcfg, LlamaCppProviderConfig | HFProviderConfig):
        return None
    try:
        if isinstance(pcfg, LlamaCppProviderConfig):
            resolve_model(mcfg.model, base=pcfg.models_directory, formats=["gguf"], hub=False,
                          user=f"the llama_cpp provider '{mcfg.provider}'")
        else:
            resolve_model(mcfg.model, base=pcfg.models_directory, user=f"the hf provider '{mcfg.provider}'")
    except (ModelNotFound, MissingPackage, ModelFileError) as exc:
        return exc.message
    return None


def http_problem(llm: LLMConfig, name: str, timeout_s: float = PROBE_S) -> str | None:
    """Why model ``name`` (an HTTP model of ``llm``) cannot be asked: its key unset, its server unreachable; or None
    (also for local and scripted models)."""
    mcfg = llm.models[name]
    pcfg = llm.providers[mcfg.provider]
    if not isinstance(pcfg, OpenAIProviderConfig):
        return None
    key = getenv(pcfg.api_key_env) if pcfg.api_key_env else None
    if pcfg.api_key_env and not key:
        return f"{pcfg.api_key_env} is not set"
    import httpx

    headers = {**pcfg.headers, **({"Authorization": f"Bearer {key}"} if key else {})}
    url = pcfg.base_url.rstrip("/") + "/models"
    try:
        httpx.get(url, headers=headers, timeout=min(timeout_s, llm.timeout_s))
    except httpx.HTTPError as exc:
        return f"{pcfg.base_url} does not answer ({type(exc).__name__}{': ' + str(exc) if str(exc) else ''})"
    return None
