"""agentlab nas: LLM-planned architecture search for an Informer time-series forecaster."""
