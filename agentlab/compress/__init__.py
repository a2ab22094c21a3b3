"""agentlab compress: real compression experiments on a causal LM (quantization, pruning, recovery), each measured
on the backend it will run on, planned against an objective and a carbon budget. Importing this package is light
(no torch)."""

from agentlab.compress.config import CompressConfig
from agentlab.compress.run import plan_compression, run, run_compression

__all__ = ["CompressConfig", "plan_compression", "run", "run_compression"]
