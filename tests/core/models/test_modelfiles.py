"""The checks of a transformers folder's config.json made before a model loads (``core.models.modelfiles``)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("transformers")

from agentlab.core.errors import AgentlabError  # noqa: E402
from agentlab.core.models.modelfiles import _check_model_type  # noqa: E402


def test_a_config_without_model_type_is_left_to_the_load(tmp_path: Path) -> None:
    """transformers matches some folders without model_type by their name: such a folder was refused ("model_type
    is missing") before transformers was asked."""
    _check_model_type(tmp_path / "config.json", {"architectures": ["LlamaForCausalLM"]})
    _check_model_type(tmp_path / "config.json", {"model_type": "llama"})


@pytest.mark.parametrize("model_type, said", [
    ("llamaXX", '"llamaXX" is not a model type transformers '), (None, "null is not a model type transformers "),
    (["llama"], '["llama"] is not a model type transformers ')])
def test_a_model_type_given_but_unknown_is_refused(tmp_path: Path, model_type: object, said: str) -> None:
    with pytest.raises(AgentlabError) as caught:
        _check_model_type(tmp_path / "config.json", {"model_type": model_type})
    assert caught.value.message.startswith(f"{tmp_path / 'config.json'}: model_type {said}")
