"""`agentlab eval`: lm-evaluation-harness on a model and its PEFT adapters, offline, each adapter really applied."""

from agentlab.eval.config import EvalConfig
from agentlab.eval.run import prepare, run, run_eval

__all__ = ["EvalConfig", "prepare", "run", "run_eval"]
