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
        f"{tmp_path / 'llm.yaml'}:9: models.a.params.max_tokenz: not a generation param the {kind} provider reads "
        "(did you mean max_tokens?); known: temperature, max_tokens"), info.value.message


def test_an_http_models_other_params_go_to_its_server(tmp_path: Path) -> None:
    (tmp_path / "llm.yaml").write_text(ROUTING.replace("PROVIDER", "api").replace("max_tokenz", "logit_bias"))
    assert load_config(tmp_path / "llm.yaml", LLMConfig).models["a"].params == {"temperature": 0.0, "logit_bias": 5}
