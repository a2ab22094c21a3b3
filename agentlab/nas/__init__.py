"""agentlab nas: LLM-planned architecture search for an Informer time-series forecaster.

Importing this package is light (no torch): the model and trainer load when a search runs. Without the ``ml`` extra
(numpy, optuna) the config schema still loads, so ``agentlab config show nas`` works on a bare install; ``run``
then raises the missing package's ImportError, which the CLI turns into one line naming the extra.
"""

import importlib
from typing import Any

from agentlab.nas.config import NASConfig

try:
    from agentlab.nas.run import run, run_nas_optimization
except ImportError:

    def __getattr__(name: str) -> Any:
        if name in ("run", "run_nas_optimization"):
            return getattr(importlib.import_module("agentlab.nas.run"), name)  # raises the ImportError again
        raise AttributeError(f"module 'agentlab.nas' has no attribute {name!r}")


__all__ = ["NASConfig", "run", "run_nas_optimization"]
