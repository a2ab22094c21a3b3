"""CrewAI over agentlab: a CrewAI agent with one tool completes a task through ``AgentlabCrewLLM`` over a router on a
scripted model (the model calls the tool, CrewAI runs it, the model answers from its result).

crewai is heavy (it pins its own dependency set), so this test is slow-marked and skips without it; run it in a
venv of its own: ``python3 -m venv /work/crewai-venv && /work/crewai-venv/bin/pip install crewai pytest psutil &&
/work/crewai-venv/bin/pip install --no-deps -e . && /work/crewai-venv/bin/python -m pytest -m slow
tests/integrations/test_crewai.py``."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

crewai = pytest.importorskip("crewai")

from agentlab.core.errors import LLMError  # noqa: E402
from agentlab.core.llm import LLMConfig, Router, ScriptedProvider  # noqa: E402
from agentlab.core.llm.providers.scripted import Calls  # noqa: E402
from agentlab.core.llm.types import GenParams, Messages  # noqa: E402
from agentlab.integrations.crewai import AgentlabCrewLLM  # noqa: E402

pytestmark = pytest.mark.slow
ASKED: list[str] = []


def test_a_crewai_agent_with_one_tool_completes_a_task(monkeypatch: pytest.MonkeyPatch) -> None:
    from crewai.tools import tool

    monkeypatch.setenv("CREWAI_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")

    @tool("get_weather")
    def get_weather(city: str) -> str:
        """The weather in a city."""
        ASKED.append(city)
        return json.dumps({"city": city, "temp_c": 18})

    def answer(model: str, messages: Messages, params: GenParams) -> str | Calls:
        results = [m for m in messages if m.get("role") == "tool"]
        if not results:  # first turn: the agent offered the tool; call it
            assert params.tools and params.tools[0]["function"]["name"] == "get_weather"
            return Calls([("get_weather", {"city": "Paris"})])
        return f"Final Answer: Paris is at {json.loads(results[-1]['content'])['temp_c']} C."

    good = ScriptedProvider("good", [answer])
    down = ScriptedProvider("down", [LLMError("down", "unavailable")])
    config = LLMConfig.model_validate({
        "providers": {"good": {"kind": "scripted"}, "down": {"kind": "scripted"}},
        "models": {"good": {"provider": "good", "model": "good-1"}, "down": {"provider": "down", "model": "down-1"}},
        "routes": {"default": {"primary": ["down"], "fallback": ["good"]}}, "retries": 0})
    with Router(config, {"good": good, "down": down}, rng=random.Random(0)) as router:
        llm = AgentlabCrewLLM(router=router)
        agent = crewai.Agent(role="Weather reporter", goal="Report the weather", backstory="You check the weather.",
                             llm=llm, tools=[get_weather], verbose=False, max_iter=3)
        task = crewai.Task(description="What is the weather in Paris?", expected_output="One sentence.",
                           agent=agent)
        result: Any = crewai.Crew(agents=[agent], tasks=[task], verbose=False).kickoff()
        stats = router.stats()
    assert ASKED == ["Paris"]
    assert "18 C" in str(result)
    assert stats["good"]["successes"] >= 2 and stats["down"]["calls"] >= 1  # the route fell back each time
    tool_msgs = [m for c in good.calls for m in c.messages if m.get("role") == "tool"]
    assert tool_msgs and "18" in tool_msgs[0]["content"]
