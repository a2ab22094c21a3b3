"""Provider construction from the routing config: one closed set of backends, chosen by ``kind``."""

from __future__ import annotations

from agentlab.core.config import getenv
from agentlab.core.errors import ConfigError
from agentlab.core.llm.config import (
    AnthropicProviderConfig,
    HFProviderConfig,
    LlamaCppProviderConfig,
    OpenAIProviderConfig,
    ProviderConfig,
    ResourceConfig,
    ScriptedProviderConfig,
)
from agentlab.core.llm.types import Provider

from .hf import HFProvider
from .llama_cpp import LlamaCppProvider
from .scripted import ScriptedProvider

__all__ = ["build_provider", "ScriptedProvider"]


def build_provider(name: str, cfg: ProviderConfig, secrets: list[str] | None = None,
                   resources: ResourceConfig | None = None) -> Provider:
    """A provider for one ``providers.<name>`` entry.

    For HTTP providers the API key is read from ``cfg.api_key_env`` (environment, then ``.env``) and appended to
    ``secrets`` so run folders can scrub it. A missing key does not fail here: the provider reports a clear auth
    error when it is called, so a config with one unusable provider still serves the others. Local providers load
    nothing here either: a model loads (once per process) on its first request, after a memory check against
    ``resources``.
    """
    if isinstance(cfg, OpenAIProviderConfig):
        # Lazy: keeps httpx out of commands that only use local or scripted models.
        from .openai import OpenAIProvider

        api_key = getenv(cfg.api_key_env) if cfg.api_key_env else None
        if api_key and secrets is not None and api_key not in secrets:
            secrets.append(api_key)
        return OpenAIProvider(name, cfg.base_url, api_key=api_key, headers=dict(cfg.headers),
                              max_connections=cfg.max_connections, api_key_env=cfg.api_key_env)
    if isinstance(cfg, AnthropicProviderConfig):
        from .anthropic import AnthropicProvider

        api_key = getenv(cfg.api_key_env) if cfg.api_key_env else None
        if api_key and secrets is not None and api_key not in secrets:
            secrets.append(api_key)
        return AnthropicProvider(name, cfg.base_url, api_key, version=cfg.version,
                                 default_max_tokens=cfg.default_max_tokens, max_connections=cfg.max_connections,
                                 headers=dict(cfg.headers), api_key_env=cfg.api_key_env)
    if isinstance(cfg, ScriptedProviderConfig):
        return ScriptedProvider(name, replies=[cfg.script] if cfg.script is not None else list(cfg.replies),
                                latency_s=cfg.latency_s)
    if isinstance(cfg, LlamaCppProviderConfig):
        return LlamaCppProvider(name, cfg, resources or ResourceConfig())
    if isinstance(cfg, HFProviderConfig):
        return HFProvider(name, cfg, resources or ResourceConfig())
    raise ConfigError(f"providers.{name}: unsupported provider kind '{getattr(cfg, 'kind', type(cfg).__name__)}'",
                      hint="use one of: openai, anthropic, llama_cpp, hf, scripted")
