"""Test and demo tools: a scriptable OpenAI-compatible loopback server (:mod:`agentlab.testing.server`).

Nothing here is imported by the library; tests, benchmarks and ``agentlab llm-bench --demo`` import it directly.
Kept empty on purpose, so ``python -m agentlab.testing.server`` runs the module without a double import.
"""
