"""`agentlab models check` and `config validate` of a models file: what a given option or a value that cannot work
says, exit 2, before any table (a new user's pass: --llm ignored, empty names, /dev/null "not found", n_ctx 1e24)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentlab.cli import main


def one_line(capsys: pytest.CaptureFixture) -> str:
    return " ".join(capsys.readouterr().err.split())


def test_llm_given_for_a_models_file_with_no_routed_model_is_refused(in_tmp: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    """Exit 0 with --llm nosuch.yaml never looked at: refused, as `pipeline run` refuses it."""
    Path("models.yaml").write_text("models:\n  a: {file: nowhere/a.gguf, required_for_base: false}\n")
    assert main(["models", "check", "models.yaml", "--llm", "nosuch.yaml"]) == 2
    said = one_line(capsys)
    assert "error: --llm nosuch.yaml: no model of models.yaml is routed, so no routing config is read" in said
    assert "hint: drop --llm" in said


def test_an_empty_llm_is_refused_as_empty(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """`--llm ''` was "error: .: is a directory, expected a config file"."""
    Path("models.yaml").write_text("models:\n  a: {routed: m}\n")
    assert main(["models", "check", "models.yaml", "--llm", ""]) == 2
    said = one_line(capsys)
    assert "Invalid value for '--llm': empty; give the routing config file" in said and "'.'" not in said


@pytest.mark.parametrize("entry, field", [('{file: ""}', "models.a.file"), ('{routed: ""}', "models.a.routed")])
def test_an_empty_model_source_is_refused_by_validate(entry: str, field: str, in_tmp: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    Path("models.yaml").write_text(f"# agentlab models check FILE\nmodels:\n  a: {entry}\n")
    assert main(["config", "validate", "models.yaml"]) == 2
    assert f"error: models.yaml:3: {field}: String should have at least 1 character" in one_line(capsys)


def test_an_empty_models_directory_is_refused_by_validate(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    Path("models.yaml").write_text('# agentlab models check FILE\nmodels_directory: ""\nmodels:\n  a: {file: a.gguf}\n')
    assert main(["config", "validate", "models.yaml"]) == 2
    assert "error: models.yaml:2: models_directory: String should have at least 1 character" in one_line(capsys)


def test_a_context_window_past_any_model_is_refused_by_validate(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """`n_ctx: 10**24` passed validate, then `models check` said "needs 9775161743164061696.0 GiB"."""
    Path("models.yaml").write_text("# agentlab models check FILE\nmodels:\n"
                                   "  a: {file: a.gguf, overrides: {n_ctx: 1000000000000000000000000}}\n")
    assert main(["config", "validate", "models.yaml"]) == 2
    assert "models.yaml:3: models.a.overrides.n_ctx: Input should be less than or equal to 16777216" in \
        one_line(capsys)
    Path("models.yaml").write_text("models:\n  a: {file: a.gguf}\ndefaults: {n_batch: 100000000000}\n")
    assert main(["models", "check", "models.yaml"]) == 2
    assert "models.yaml:3: defaults.n_batch: Input should be less than or equal to" in one_line(capsys)


def test_a_device_given_as_the_models_file_is_named_as_one(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """`models check /dev/null` said "models file not found", where `config validate` says what it is."""
    assert main(["models", "check", "/dev/null"]) == 2
    said = one_line(capsys)
    assert "error: /dev/null: is a device, not a regular file" in said and "not found" not in said
    assert main(["models", "check", "nosuch.yaml"]) == 2
    assert "nosuch.yaml: models file not found" in one_line(capsys)
