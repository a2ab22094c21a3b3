"""agentlab pipeline: multi-stage, multi-model pipelines over local GGUF / HF models and routed HTTP models.

Importing this package is light: llama_cpp, torch and jinja2 load when a run needs them.
"""

from agentlab.pipeline.config import ModelsConfig, PipelineConfig, StageConfig
from agentlab.pipeline.models import ModelStatus, build_llm_config, check_models
from agentlab.pipeline.run import PipelineResult, run, run_async

__all__ = ["ModelsConfig", "PipelineConfig", "StageConfig", "ModelStatus", "build_llm_config", "check_models",
           "PipelineResult", "run", "run_async"]
