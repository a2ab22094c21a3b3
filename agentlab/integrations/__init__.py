"""Agent frameworks over agentlab's router, in process: ``agentlab.integrations.langchain`` (a LangChain chat model,
extra ``langchain``) and ``agentlab.integrations.crewai`` (a CrewAI LLM, extra ``crewai``).

Nothing in agentlab's core or commands imports this package; each module imports its framework at the top, so
importing one without its extra raises ``MissingPackage`` naming the extra.
"""
