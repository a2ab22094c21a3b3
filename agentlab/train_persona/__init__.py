"""agentlab train-persona: persona LoRA / QLoRA adapters with TRL on a base model that works offline, and their
export to GGUF for llama.cpp.

Importing this package is light (no torch, transformers, peft or llama_cpp): they load when a run or an export
starts.
"""

from agentlab.train_persona.config import TrainPersonaConfig
from agentlab.train_persona.export import export_gguf
from agentlab.train_persona.run import prepare, run

__all__ = ["TrainPersonaConfig", "export_gguf", "prepare", "run"]
