"""agentlab train-persona: persona LoRA / QLoRA adapters with TRL on a base model that works offline.

Importing this package is light (no torch): training loads when a run starts.
"""
