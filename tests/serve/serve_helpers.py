"""Helpers of the serve tests."""

from __future__ import annotations

from typing import Any

UPSTREAM_KEY = "sk-upstream-0123456789abcdef-SECRET"


def upstream_llm(base_url: str, models: list[str], routes: dict[str, Any] | None = None,
                 **settings: Any) -> dict[str, Any]:
    """A routing config of ``models`` (named as the upstream's model ids) on the loopback upstream at ``base_url``."""
    return {"providers": {"up": {"kind": "openai", "base_url": base_url, "api_key_env": "UPSTREAM_KEY"}},
            "models": {m: {"provider": "up", "model": m} for m in models},
            "routes": routes or {}, "timeout_s": 10, "retries": 1, **settings}
