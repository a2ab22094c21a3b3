"""agentlab debate: multi-agent debate (Du et al. 2023) between persona adapters on one base model or routed models,
with ReConcile-style confidence-weighted votes, and its evaluation against single agents and self-consistency.

Importing this package is light (no torch): models load when a run starts.
"""

from agentlab.core.debate.task import load_task, make_task
from agentlab.debate.config import DebateConfig
from agentlab.debate.evaluate import prepare_eval, run_eval
from agentlab.debate.run import check, prepare, run

__all__ = ["DebateConfig", "check", "load_task", "make_task", "prepare", "prepare_eval", "run", "run_eval"]
