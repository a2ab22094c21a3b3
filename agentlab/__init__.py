"""agentlab: LLM-driven ML experiments from the shell."""

__version__ = "0.1.0"
