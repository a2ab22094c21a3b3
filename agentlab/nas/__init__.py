"""agentlab nas: LLM-planned architecture search for an Informer time-series forecaster.

Importing this package is light (no torch): the model and trainer load when a search runs.
"""

from agentlab.nas.config import NASConfig
from agentlab.nas.run import run, run_nas_optimization

__all__ = ["NASConfig", "run", "run_nas_optimization"]
