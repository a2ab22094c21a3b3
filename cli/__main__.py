from agentlab.cli import run

run()
