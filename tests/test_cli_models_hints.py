"""`agentlab models` as a new user meets it: every make-tiny refusal is an error line and a hint line, a positional
argument that is not UTF-8 is named as --help names it, export-hf is listed; and the outputs docs/troubleshooting.md
shows are the ones the commands print."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agentlab.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("args", "error"), [
    (["m", "--seed", "-1"], "--seed -1: out of range"),
    (["m", "--seed", "18446744073709551616"], "--seed 18446744073709551616: out of range"),
    (["afile"], "afile: is a file"),
    (["d"], "d: holds files but is not a model folder"),
    (["."], ".: is the current folder or holds it"),
    (["afile/sub"], "afile/sub: afile is a file, not a folder"),
    (["/proc/x"], "/proc/x: cannot write in /proc"),
    (["m", "--quantize", "Q9"], "--quantize: unknown kind 'Q9'"),  # as typed; Q8_0 is taken
])
def test_every_make_tiny_refusal_has_a_hint(args: list[str], error: str, in_tmp: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    """They printed one line, the next step in parentheses, no `hint:`: an error is two lines."""
    (in_tmp / "afile").write_text("x")
    (in_tmp / "d").mkdir()
    (in_tmp / "d" / "notes.txt").write_text("x")
    assert main(["models", "make-tiny", *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"error: {error}") and lines[1].startswith("hint: "), lines
    assert "(give " not in lines[0] and "; give a seed" not in lines[0]


def test_an_argument_not_utf8_is_named_by_its_parameter(in_tmp: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    """`make-tiny $(printf 'n\\xe9e')` said "argument 3"; models.md says it names OUT."""
    bad = "n\udce9e"
    assert main(["models", "make-tiny", bad]) == 2
    assert capsys.readouterr().err.startswith("error: OUT: not UTF-8 text (byte 0xe9 at character 2)")
    assert main(["models", "make-tiny", "--seed", "3", bad]) == 2
    assert capsys.readouterr().err.startswith("error: OUT: not UTF-8 text")
    assert main(["models", "make-tiny", "--force", bad]) == 2  # a flag before it: still the parameter
    assert capsys.readouterr().err.startswith("error: OUT: not UTF-8 text")
    assert main(["models", "export-hf", bad, "--out", "o"]) == 2
    assert capsys.readouterr().err.startswith("error: MODEL: not UTF-8 text")
    assert main(["nas", bad]) == 2  # no parameter there: the position, as before
    assert capsys.readouterr().err.startswith("error: argument 2: not UTF-8 text")
    assert not list(in_tmp.iterdir())


def test_export_hf_is_in_the_models_summary_and_table(capsys: pytest.CaptureFixture) -> None:
    assert main(["models", "--help"]) == 0
    assert "make-tiny, export-hf, list" in " ".join(capsys.readouterr().out.split())
    assert main(["--help"]) == 0
    assert "make-tiny, export-hf, list" in " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert "| `models export-hf MODEL --out DIR` |" in (REPO / "docs" / "commands" / "models.md").read_text()


@pytest.mark.parametrize("args", [["nas", "-c", "bad.yaml"], ["nas", "--set", "name=a/b", "--dry-run"],
                                  ["config", "validate", "my-nas.yaml"]])
def test_troubleshooting_shows_the_real_output(args: list[str], in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """The page showed `bad.yaml:3:` where its own Try-it block prints `bad.yaml:2:`, and a run-name message and
    hint the command no longer prints."""
    (in_tmp / "bad.yaml").write_text("search:\n  max_iteratons: 5\n")  # as the page's Try-it block writes it
    (in_tmp / "my-nas.yaml").write_text("a: 1\n")
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(r"error: .*\nhint: .*", err), err
    assert err in (REPO / "docs" / "troubleshooting.md").read_text(), err
