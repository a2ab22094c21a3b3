"""The agent runtime (LangGraph): ``runtime``."""
