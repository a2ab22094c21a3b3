"""A LangChain chat model over agentlab's router, for your own LangChain / LangGraph agents: ``AgentlabChatModel``.

    from langchain.agents import create_agent
    from agentlab.integrations.langchain import AgentlabChatModel
    model = AgentlabChatModel.from_config("llm.yaml", route="default")
    agent = create_agent(model, [my_tool])   # my_tool: a function or a LangChain tool

It is the same class the agent planner runs on (``agentlab.core.agent.chat``, where it is documented): one chat
model and one message converter in agentlab, exported here for users.
"""

from __future__ import annotations

from agentlab.core.agent.chat import AgentlabChatModel, to_ai_message, to_messages

__all__ = ["AgentlabChatModel", "to_messages", "to_ai_message"]
