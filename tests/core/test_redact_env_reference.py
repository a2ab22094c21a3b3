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


def test_a_non_credential_value_read_from_a_variable_names_no_credential(
        in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only a credential's (or a URL's) value is remembered: a literal credential equal to a plain header read from
    ``${MODE_WORD}`` stays ``***`` (it was written as ``${MODE_WORD}``, a rerun then sent whatever MODE_WORD held)."""
    monkeypatch.setenv("MODE_WORD", "enabled-mode")
    cfg = _llm(in_tmp, {"X-Feature": "${MODE_WORD}", "X-Auth-Mode": "enabled-mode"})
    assert redact(cfg.model_dump(mode="json"))["providers"]["p"]["headers"] == {"X-Feature": "enabled-mode",
                                                                              "X-Auth-Mode": "***"}


def test_scrubbing_reads_no_file(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """scrub_text runs in logging filters and error paths: a .env made unreadable after the config was read (not
    UTF-8) made it raise; the value read is taken as read."""
    from agentlab.core.config import scrub_text

    (in_tmp / ".env").write_text("DOTENV_HDR=dotenv-value-123456\n")
    _llm(in_tmp, {"X-Token": "${DOTENV_HDR}"})
    (in_tmp / ".env").write_bytes(b"DOTENV_HDR=\xff\xfe\n")
    assert scrub_text("http://u:dotenv-value-123456@h/v1", known={}) == "http://u:${DOTENV_HDR}@h/v1"


def test_a_url_credential_holding_its_own_stop_character_is_hidden_whole(
        in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A password with "@" or a key with "&" read from ``${NAME}`` left its tail in sight ("user:***@ss-tail-2@db",
    "?key=***&tail-secret-1"): the whole value is now written back as ``${NAME}``."""
    from agentlab.core.config import scrub_text

    monkeypatch.setenv("DB_WORD", "pa@ss-tail-2")
    monkeypatch.setenv("URL_WORD", "abc&tail-secret-1")
    monkeypatch.setenv("HDR_WORD", "abcdef-123")
    cfg = _llm(in_tmp, {"X-Token": "${HDR_WORD}"},
               base_url="http://user:${DB_WORD}@127.0.0.1:9/v1?key=${URL_WORD}&page=2")
    out = redact(cfg.model_dump(mode="json"))
    assert out["providers"]["p"]["base_url"] == "http://user:${DB_WORD}@127.0.0.1:9/v1?key=${URL_WORD}&page=2"
    said = scrub_text(f"cannot reach {cfg.providers['p'].base_url} now", known={})
    assert "tail" not in said and said.endswith("?key=${URL_WORD}&page=2 now")
    # a value read for one credential is not taken for a longer literal that starts with it
    assert scrub_text("http://h/v1?key=abcdef-123456&page=2", known={}) == "http://h/v1?key=***&page=2"


def test_a_literal_url_password_with_an_at_sign_is_hidden_to_the_host() -> None:
    from agentlab.core.config import scrub_text

    assert scrub_text("https://user:pa@ss-word@host:1/x http://u:pw1234@h/v", known={}) == \
        "https://user:***@host:1/x http://u:***@h/v"
    # a word that starts with what no scheme does (a log line's colour code, a digit): its URL's password is hidden
    for text in ["\x1b[32mhttps://u:hunter2pw@h/x", "1http://u:hunter2pw@h/", "0redis://:hunter2pw@h:6379",
                 "é-http://u:hunter2pw@h", "git+https://u:hunter2pw@h/"]:
        assert "hunter2pw" not in scrub_text(text, known={}), text


def test_a_credential_read_from_any_variable_is_hidden_wherever_it_is_written(
        in_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """``Authorization: Bearer ${TOK}`` beside ``retries: ${TOK}``: the error of retries printed the token ("got
    'sk-ENVSECRET7'"), TOK being no secret-looking name; it is written as ``${TOK}`` now. A value read only into a URL
    keeps its URL-only hiding."""
    from agentlab.cli import main
    from agentlab.core.config import scrub_text

    monkeypatch.setenv("TOK", "sk-ENVSECRET7")
    monkeypatch.setenv("URL_ONLY", "url-only-value-1")
    (in_tmp / "s7.yaml").write_text("# agentlab llm\nproviders:\n  p:\n    kind: openai\n"
                                    "    base_url: http://u:${URL_ONLY}@127.0.0.1:9/v1\n"
                                    "    headers: {Authorization: \"Bearer ${TOK}\"}\nretries: ${TOK}\n")
    assert main(["config", "validate", "s7.yaml"]) == 2
    err = capsys.readouterr().err
    assert "sk-ENVSECRET7" not in err and "(got '${TOK}')" in err
    assert scrub_text("the value sk-ENVSECRET7 here", known={}) == "the value ${TOK} here"
    assert scrub_text("the word url-only-value-1 here", known={}) == "the word url-only-value-1 here"
    monkeypatch.setenv("TOK", "something-else-9")  # the variable holds another value now: not named
    assert scrub_text("sk-ENVSECRET7", known={}) == "sk-ENVSECRET7"


@pytest.mark.parametrize("value", ["sk-ENV\\SECRET7", "sk-EN'V\"SECRET7"])
def test_a_secret_with_a_backslash_or_quote_is_hidden_in_a_validation_error(
        in_tmp: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, value: str) -> None:
    """The error showed the value's repr, escaped ("got 'sk-ENV\\\\SECRET7'"), which the scrub no longer found."""
    from agentlab.cli import main

    monkeypatch.setenv("MY_API_KEY", value)
    (in_tmp / "s8.yaml").write_text("# agentlab llm\nretries: ${MY_API_KEY}\n")
    assert main(["config", "validate", "s8.yaml"]) == 2
    err = capsys.readouterr().err
    assert "SECRET7" not in err and "(got '${MY_API_KEY}')" in err, err
