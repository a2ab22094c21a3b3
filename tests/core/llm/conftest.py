"""One scriptable loopback OpenAI-compatible server per test module, reset before each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agentlab.core.llm.testserver import ScriptedServer


@pytest.fixture(scope="module")
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        yield srv


@pytest.fixture
def srv(server: ScriptedServer) -> ScriptedServer:
    server.reset()
    return server
