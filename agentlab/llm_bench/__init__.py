"""`agentlab llm-bench`: availability, latency and throughput of every configured model."""

from agentlab.llm_bench.config import BenchConfig, BenchSettings
from agentlab.llm_bench.run import prepare, run, run_async

__all__ = ["BenchConfig", "BenchSettings", "prepare", "run", "run_async"]
