"""`python -m agentlab`: the same as the `agentlab` command."""

from agentlab.cli import run

run()
