"""The `agentlab llm-bench` config: a routing config (providers, models, routes) plus what to measure.

``bench`` is optional, so any routing config (``configs/llm.yaml``) is a valid llm-bench config; the run folder's
config.yaml holds both, so ``agentlab llm-bench -c runs/llm-bench/<run>/config.yaml`` repeats the same measurement.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator, model_validator

from agentlab.core.config import StrictModel
from agentlab.core.llm.config import LLMConfig

DEFAULT_PROMPT = "Explain in three sentences why the sky is blue."


class BenchSettings(StrictModel):
    models: list[str] = Field(default_factory=list, description="models to measure; empty: every configured model")
    concurrency: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 4], min_length=1,
                                   description="concurrency levels; each sends `requests` requests")
    requests: int = Field(8, ge=1, description="requests per model at each concurrency level")
    prompt: str = Field(DEFAULT_PROMPT, min_length=1, description="the prompt of every request")
    max_tokens: int = Field(64, ge=1, description="max_tokens of every request")
    route: str | None = Field(None, description="also send the requests through this route's strategy and "
                              "fallbacks, and report who answered")
    stream: bool = Field(True, description="stream answers (needed to measure the time to first token)")
    tools: bool = Field(True, description="probe tool calling: one request per working model offering one tool "
                        "with tool_choice required; the report says whether it called it, validly, and how fast")

    @field_validator("concurrency", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        # `--concurrency 1,4,16` arrives as text; YAML gives a list (or one number)
        if isinstance(value, str):  # an empty part ("1,,4") is refused as not a number, not skipped
            return [part.strip() for part in value.split(",")]
        return [value] if isinstance(value, int) else value

    @field_validator("models", "concurrency")
    @classmethod
    def _once_each(cls, value: list[Any]) -> list[Any]:
        twice = sorted({str(v) for v in value if value.count(v) > 1})
        if twice:
            raise ValueError(f"given twice: {', '.join(twice)} (each is measured once)")
        return value


class BenchConfig(LLMConfig):
    bench: BenchSettings = Field(default_factory=BenchSettings, description="what llm-bench measures")

    @model_validator(mode="after")
    def _names_exist(self) -> BenchConfig:
        unknown = [name for name in self.bench.models if name not in self.models]
        if unknown:
            raise ValueError(f"bench.models: unknown model(s) {', '.join(unknown)} (configured: "
                             f"{', '.join(self.models) or 'none'})")
        if self.bench.route is not None and not self.has_route(self.bench.route):
            raise ValueError(f"bench.route: unknown route '{self.bench.route}' (configured: "
                             f"{', '.join(self.routes) or 'none'})")
        return self
