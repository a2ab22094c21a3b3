"""`agentlab llm-bench`: availability, latency and throughput of every configured model."""

from agentlab.llm_bench.run import BenchSettings, run, run_async

__all__ = ["BenchSettings", "run", "run_async"]
