"""agentlab train-persona: persona LoRA adapters on a local base model, and their export to GGUF for llama.cpp.

Importing this package is light: torch, transformers, peft and llama_cpp load inside the functions that use them.
"""

from agentlab.train_persona.export import export_gguf

__all__ = ["export_gguf"]
