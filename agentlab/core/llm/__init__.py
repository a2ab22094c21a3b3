"""LLM routing: providers behind one protocol, and a router with retries, fallbacks, strategies and stats.

Importing this package pulls in pydantic only; HTTP clients and local-model backends load when first built.
"""

from agentlab.core.llm.config import LLMConfig, load_llm_config
from agentlab.core.llm.providers import ScriptedProvider, build_provider
from agentlab.core.llm.results import Attempt, Candidate, RoutedCompletion, StructuredResult
from agentlab.core.llm.router import Router
from agentlab.core.llm.types import Completion, GenParams, Messages, Provider, StreamDelta, Usage

__all__ = [
    "Attempt",
    "Candidate",
    "Completion",
    "GenParams",
    "LLMConfig",
    "Messages",
    "Provider",
    "RoutedCompletion",
    "Router",
    "ScriptedProvider",
    "StreamDelta",
    "StructuredResult",
    "Usage",
    "build_provider",
    "load_llm_config",
]
