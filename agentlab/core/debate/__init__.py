"""The multi-agent debate shared by `agentlab debate` and `agentlab evolve` (which scores a child by what it adds to
a debate): the protocol of Du et al. (prompts, tolerant parsing), the agents and one answer per call, the rounds on
a LangGraph graph (``graph.py``), and the question files. Commands do not import each other, so what both need lives
here."""
