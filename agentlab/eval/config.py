"""The `agentlab eval` config: the model and its adapters (each scored as its own row beside the base), the lm-eval
tasks, and how lm-eval is asked (items, few-shot, chat template, batch)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from agentlab.core.config import ModelPath, RunName, StrictModel


class EvalConfig(StrictModel):
    name: RunName = Field("eval", description="run name (folder suffix)")
    backend: Literal["lm-eval", "lighteval"] = Field("lm-eval", description="the evaluation library: lm-eval "
                                                     "(lm-evaluation-harness). lighteval is refused with the reason: "
                                                     "it is not one of agentlab's dependencies; "
                                                     "benchmarks/peers/lighteval_vs_lmeval.py scores the same items "
                                                     "with it in its own venv")
    model: Annotated[str, ModelPath(unless="base_url")] = Field(
        "smollm2-135m", description="the model: the built-in smollm2-135m, a transformers folder, a GGUF file "
        "(de-quantized once, cached) or a cached hub id; with base_url: a model or route name the server serves")
    adapters: list[Path] = Field(default_factory=list, description="PEFT adapter folders on the model, each scored "
                                 "as its own row beside the base (with base_url: served adapter names instead)")
    tasks: list[str] = Field(["agentlab_arithmetic_mc"], min_length=1, description="lm-eval task, group or tag "
                             "names: the bundled ones (`agentlab eval tasks` lists them), those of include_path, or "
                             "lm-eval's own whose data is already on disk")
    include_path: list[Path] = Field(default_factory=list, description="folders of your own lm-eval task YAML files "
                                     "(relative data_files are read next to each YAML)")
    limit: int | None = Field(None, ge=1, description="score only the first N items of each task (empty: all)")
    num_fewshot: int | None = Field(None, ge=0, description="few-shot examples per prompt (empty: each task's own, "
                                    "else 0)")
    chat_template: Literal["auto", True, False] = Field("auto", description="wrap prompts in the model's chat "
                                                        "template (lm-eval's --apply_chat_template); auto: when the "
                                                        "tokenizer has one")
    batch_size: int = Field(8, ge=1, description="requests per forward pass (lm-eval's --batch_size)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when present, else CPU")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weights' dtype: auto is bfloat16 on CUDA, float32 on CPU")
    bootstrap_iters: int = Field(100000, ge=0, description="bootstrap resamples for the stderr of metrics that are "
                                 "not means (lm-eval's default; 0: no stderr for them)")
    seed: int = Field(0, description="lm-eval's seeds: random_seed SEED, and numpy, torch and few-shot sampling "
                      "1234 + SEED (lm-eval's defaults at 0)")
    probe: str = Field("What is 7 times 8?", description="prompt on which every adapter must change the base "
                       "model's logits before it is scored")
    min_logit_change: float = Field(1e-4, gt=0, description="an adapter whose largest logit change on the probe is "
                                    "below this is an error (it changes nothing), not a score")
    base_url: str | None = Field(None, description="an OpenAI-compatible server (`agentlab serve`, vLLM, "
                                 "llama.cpp's server) at this URL, e.g. http://127.0.0.1:8000/v1: model and adapters "
                                 "are names it serves, scored through lm-eval's local-completions backend (every "
                                 "task type: it needs /v1/completions with echo and logprobs)")
    tokenizer: str | None = Field(None, description="with base_url: the tokenizer lm-eval counts tokens with (a "
                                  "model reference as for model); empty: the model's own when it names a local "
                                  "model, else the built-in's")
    api_key_env: str | None = Field(None, description="with base_url: the environment variable holding the "
                                    "server's client key")

    @field_validator("base_url")
    @classmethod
    def _url(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError(f"{url!r} is no http:// or https:// URL (e.g. http://127.0.0.1:8000/v1)")
        return url

    @field_validator("adapters", "include_path", mode="before")
    @classmethod
    def _no_empty_entry(cls, paths: object) -> object:
        # Path("") is ".", the current folder: `--include-path ''` read the folder it ran in, `--adapter ''` said
        # ".: not a PEFT adapter folder"
        if isinstance(paths, list) and any(isinstance(p, str | Path) and not str(p).strip() for p in paths):
            raise ValueError("an entry is empty (it would be read as the current folder); give a folder path")
        return paths

    @field_validator("adapters")
    @classmethod
    def _distinct(cls, adapters: list[Path]) -> list[Path]:
        seen: dict[str, Path] = {}
        for path in adapters:
            same = os.path.normpath(path)  # adapters/a/../a is adapters/a: it was scored twice, as a and a-2
            if same in seen:
                raise ValueError(f"adapter {path} is given twice"
                                 + (f" (also as {seen[same]})" if seen[same] != path else ""))
            seen[same] = path
        return adapters

    @model_validator(mode="after")
    def _served_only(self) -> EvalConfig:
        # tokenizer and api_key_env are read only for a served backend: set without base_url they would be silently
        # ignored (a local model counts tokens with its own tokenizer and needs no key)
        given = [name for name in ("tokenizer", "api_key_env") if getattr(self, name) is not None]
        if given and self.base_url is None:
            names = " and ".join(given)
            # "field: message" points the error at the first one's line (core.config), not the file's first line
            raise ValueError(f"{given[0]}: " + (f"(and {given[1]}) " if len(given) > 1 else "") + "applies only "
                             "with base_url (a served model; a local model counts tokens with its own tokenizer): add "
                             f"--base-url URL, or drop {names}")
        return self
