"""A credential a config file reads from ``${NAME}`` is written back to a run folder as ``${NAME}`` whatever the
variable's name (``X-Token: ${MY_SECRET_HDR}`` was saved as ``***``, which a rerun refused); a literal one stays
``***``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agentlab.core.config import load_config, redact, redacted_field
from agentlab.core.llm.config import LLMConfig


def _llm(folder: Path, headers: dict[str, str], base_url: str = "http://127.0.0.1:9/v1") -> LLMConfig:
    path = folder / "llm.yaml"
    path.write_text(yaml.safe_dump({"providers": {"p": {"kind": "openai", "base_url": base_url, "headers": headers}},
                                    "models": {"m": {"provider": "p", "model": "x"}}}))
    return load_config(path, LLMConfig)


def test_a_header_read_from_any_variable_is_written_back_as_the_variable(
        in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SECRET_HDR", "hdr-value-123456")
    monkeypatch.setenv("APIM_SUB", "apim-value-123456")
    monkeypatch.setenv("URL_SIG", "sig-value-123456")
    cfg = _llm(in_tmp, {"X-Token": "${MY_SECRET_HDR}", "Ocp-Apim-Subscription-Key": "${APIM_SUB}",
                        "Authorization": "Bearer ${MY_SECRET_HDR}", "X-Auth-Key": "literal-abcdef123"},
               base_url="http://127.0.0.1:9/v1?key=${URL_SIG}")
    out = redact(cfg.model_dump(mode="json"))
    provider = out["providers"]["p"]
    assert provider["headers"] == {"X-Token": "${MY_SECRET_HDR}", "Ocp-Apim-Subscription-Key": "${APIM_SUB}",
                                   "Authorization": "Bearer ${MY_SECRET_HDR}", "X-Auth-Key": "***"}
    assert provider["base_url"] == "http://127.0.0.1:9/v1?key=${URL_SIG}"
    assert "value-123456" not in str(out)
    assert redacted_field({k: v for k, v in out.items()}) == ("providers", "p", "headers", "X-Auth-Key")

    # the saved copy reads back (the rerun's load), the literal one left out
    del provider["headers"]["X-Auth-Key"]
    (in_tmp / "saved.yaml").write_text(yaml.safe_dump(out))
    again = load_config(in_tmp / "saved.yaml", LLMConfig, refuse_redacted=True)
    assert again.providers["p"].headers["X-Token"] == "hdr-value-123456"


def test_a_variable_that_no_longer_holds_the_value_is_not_named(in_tmp: Path, monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    monkeypatch.setenv("MY_OTHER_HDR", "other-value-123456")
    cfg = _llm(in_tmp, {"X-Token": "${MY_OTHER_HDR}"})
    monkeypatch.setenv("MY_OTHER_HDR", "changed-value-123456")
    assert redact(cfg.model_dump(mode="json"))["providers"]["p"]["headers"] == {"X-Token": "***"}
