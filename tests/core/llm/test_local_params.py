"""A params key an in-process backend does not read is refused where the config gives it (`max_tokenz: 5` on a
llama.cpp model was dropped without a word); an HTTP provider's model passes other keys on to its server."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentlab.core.config import load_config
from agentlab.core.errors import ConfigError
from agentlab.core.llm.config import LLMConfig

ROUTING = """\
providers:
  local: {kind: llama_cpp}
  tf: {kind: hf}
  api: {kind: openai, base_url: 'http://127.0.0.1:1/v1'}
models:
  a:
    provider: PROVIDER
    model: m
    params: {temperature: 0, max_tokenz: 5}
"""


@pytest.mark.parametrize("provider", ["local", "tf"])
def test_an_unknown_param_of_a_local_model_is_refused_with_its_line(tmp_path: Path, provider: str) -> None:
    (tmp_path / "llm.yaml").write_text(ROUTING.replace("PROVIDER", provider))
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "llm.yaml", LLMConfig)
    kind = {"local": "llama_cpp", "tf": "hf"}[provider]
    assert info.value.message.startswith(
        f"{tmp_path / 'llm.yaml'}:9: models.a.params.max_tokenz: not a param {kind} reads "
        "(did you mean max_tokens?); it reads temperature, max_tokens"), info.value.message


@pytest.mark.parametrize(("provider", "params", "refused"), [
    ("local", "{parallel_tool_calls: false, tool_choice: required, top_k: 40, tool_grammar: false}", None),
    ("tf", "{parallel_tool_calls: false, adapter: a}", None),
    ("tf", "{top_k: 40}", "top_k"),  # llama.cpp's, which transformers does not read
    ("local", "{adapter: a}", "adapter")])
def test_each_backend_takes_what_it_reads(tmp_path: Path, provider: str, params: str, refused: str | None) -> None:
    """A request's own fields (tools, tool_choice, parallel_tool_calls) are read by both backends; top_k by
    llama.cpp alone, adapter by transformers alone."""
    (tmp_path / "llm.yaml").write_text(ROUTING.replace("PROVIDER", provider).replace(
        "{temperature: 0, max_tokenz: 5}", params))
    if refused is None:
        load_config(tmp_path / "llm.yaml", LLMConfig)
        return
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "llm.yaml", LLMConfig)
    assert f"models.a.params.{refused}: not a param" in info.value.message


def test_an_http_models_other_params_go_to_its_server(tmp_path: Path) -> None:
    (tmp_path / "llm.yaml").write_text(ROUTING.replace("PROVIDER", "api").replace("max_tokenz", "logit_bias"))
    assert load_config(tmp_path / "llm.yaml", LLMConfig).models["a"].params == {"temperature": 0.0, "logit_bias": 5}
