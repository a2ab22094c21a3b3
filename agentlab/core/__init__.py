"""Shared core of every agentlab command: config, run folders, errors, LLM routing, training helpers."""
