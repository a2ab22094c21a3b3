"""`python -m agentlab`: the same as the `agentlab` command."""

from agentlab.start import run

run()
