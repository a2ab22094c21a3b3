"""A gateway in front of the module's loopback upstream: ``gateway(llm_dict, **serve_settings)`` starts one in a
background thread (the same server `agentlab serve` runs) and stops it after the test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agentlab.core.llm.config import LLMConfig
from agentlab.serve import Gateway, ServeConfig


@pytest.fixture
def gateway() -> Iterator[Callable[..., Gateway]]:
    started: list[Gateway] = []

    def start(llm: dict[str, Any], run_dir: Any = None, client_keys: list[str] | None = None,
              **settings: Any) -> Gateway:
        cfg = ServeConfig(port=0, **settings)
        gw = Gateway(cfg, LLMConfig.model_validate(llm), run_dir, client_keys=client_keys).start()
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()
