"""A value PyYAML fails to build with a bare ValueError (an integer of over 4,300 digits, which Python will not read;
a date with no such day) was "internal error: ValueError: Exceeds the limit (4300 digits)", exit 1: now exit 2
naming the file's line (or the --set) and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentlab.cli import main

LONG = "9" * 5000


def one_line(capsys: pytest.CaptureFixture) -> str:
    return " ".join(capsys.readouterr().err.split())


def test_a_number_too_long_in_a_file_names_its_line_and_field(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    Path("digits.yaml").write_text(f"# agentlab nas\nsearch:\n  max_iterations: {LONG}\n")
    assert main(["config", "validate", "digits.yaml"]) == 2
    said = one_line(capsys)
    assert "error: digits.yaml:3: search.max_iterations: a number too long to read (5,000 digits)" in said
    assert "internal error" not in said
    assert main(["nas", "-c", "digits.yaml", "--dry-run"]) == 2
    assert "digits.yaml:3: search.max_iterations: a number too long" in one_line(capsys)


def test_a_number_too_long_in_a_models_file(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    Path("mdig.yaml").write_text(f"models:\n  a:\n    file: a.gguf\n    overrides: {{n_ctx: {LONG}}}\n")
    assert main(["models", "check", "mdig.yaml"]) == 2
    assert "error: mdig.yaml:4: models.a.overrides.n_ctx: a number too long to read" in one_line(capsys)


def test_a_number_too_long_in_a_set_value(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    Path("nas.yaml").write_text("# agentlab nas\nname: x\n")
    assert main(["config", "validate", "nas.yaml", "--set", f"search.max_iterations={LONG}"]) == 2
    assert "error: --set search.max_iterations=...: a number too long to read" in one_line(capsys)


def test_a_date_with_no_such_day_names_its_line(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    Path("date.yaml").write_text("# agentlab nas\nname: 2024-13-45\n")
    assert main(["config", "validate", "date.yaml"]) == 2
    said = one_line(capsys)
    assert "error: date.yaml:2: name: '2024-13-45' cannot be read as YAML reads it unquoted" in said
    assert "quote it" in said
