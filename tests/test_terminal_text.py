"""Model output and file text reach the terminal escaped: control characters (cursor moves, colours, carriage
returns, backspaces, bidi overrides) shown as `\\x1b`-style escapes and rich markup printed as written, in `pipeline
run / show / history`, `models list` and `config validate`. Files keep the raw text, and so does stdout when it is
redirected (`pipeline run ... > answer.txt`)."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from agentlab.cli import main
from agentlab.cli.common import console, safe_text

sys.path.insert(0, str(Path(__file__).parent / "pipeline"))
from pipeline_helpers import write_pipeline, write_routed_models, write_scripted_llm  # noqa: E402

NASTY = "Paris\x1b[31m red\x1b[0m\x02 \x1d\rover\x08\x07 [bold]b[/bold] \u202eevil\x9b :fire: tab\tok"
RAW = ("\x1b", "\x02", "\x1d", "\r", "\x08", "\x07", "\u202e", "\x9b")
SHOWN = ("\\x1b[31m", "\\x02", "\\x1d", "\\r", "\\x08", "\\u202e", "[bold]b[/bold]", ":fire:")


def test_safe_text_escapes_controls_and_markup_but_keeps_newlines_and_tabs() -> None:
    assert safe_text("a\x1b[2Jb\nc\td\r\x7f\x85") == "a\\x1b[2Jb\nc\td\\r\\x7f\\x85"
    assert safe_text("[red]x[/red]") == "\\[red]x\\[/red]"
    with console.capture() as captured:
        console.print(safe_text(NASTY))
    printed = captured.get()
    assert not any(c in printed for c in RAW) and all(s in printed for s in SHOWN), printed
    assert safe_text(None) == "" and safe_text(Path("a")) == "a"


def test_safe_text_for_stdout_is_raw_when_redirected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False, raising=False)
    assert safe_text(NASTY, stdout=True) == NASTY
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    shown = safe_text(NASTY, stdout=True)
    assert not any(c in shown for c in RAW) and "[bold]b[/bold]" in shown  # no markup escaping for plain echo


@pytest.fixture
def session(in_tmp: Path, capsys: pytest.CaptureFixture) -> tuple[str, str]:
    """A finished session whose every model answer is NASTY; returns (run id, stderr of the run)."""
    write_routed_models(in_tmp, ["a", "b"])
    write_scripted_llm(in_tmp, ["a", "b"], replies=[NASTY])
    write_pipeline(in_tmp, [{"name": "one", "model": "a"},
                            {"name": "two", "type": "multi", "models": ["a", "b"], "aggregation": "vote"}])
    code = main(["pipeline", "run", "--models", "models.yaml", "--pipeline", "pipeline.yaml", "--llm", "llm.yaml",
                 "--input", "[bold]capital[/bold] of France?\x1b[2J"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    run_id = next((in_tmp / "runs" / "pipeline").iterdir()).name
    # stdout is not a terminal here: the answer goes out byte for byte, as final.txt has it (ANSI codes included)
    assert captured.out == (in_tmp / "runs" / "pipeline" / run_id / "final.txt").read_bytes().decode() == NASTY + "\n"
    return run_id, captured.err


def assert_escaped(text: str) -> None:
    assert not any(c in text for c in RAW), repr(text)
    assert "\\x1b[31m" in text and "[bold]" in text and "\\x02" in text


def test_pipeline_run_show_history_escape_model_text(session: tuple[str, str], capsys: pytest.CaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    run_id, run_err = session
    assert not any(c in run_err for c in RAW)
    assert main(["pipeline", "show", run_id]) == 0
    captured = capsys.readouterr()
    assert_escaped(captured.err)
    assert "[bold]capital[/bold] of France?\\x1b[2J" in captured.err
    assert captured.out == NASTY + "\n"  # redirected stdout: raw
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True, raising=False)
    assert main(["pipeline", "show", run_id]) == 0
    assert_escaped(capsys.readouterr().out)  # a terminal on stdout: escaped too
    monkeypatch.setattr(console, "_width", 200)  # the table's layout is tested in tests/pipeline
    for args in ([], ["--tree"]):
        assert main(["pipeline", "history", *args]) == 0
        assert_escaped(capsys.readouterr().err)


def test_models_list_and_config_validate_escape_file_names(tiny_model: dict[str, Path], in_tmp: Path,
                                                           capsys: pytest.CaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "_width", 200)  # the path column must not fold
    evil = in_tmp / "models" / "t\x1b[2J[red]x"
    evil.mkdir(parents=True)
    shutil.copy(tiny_model["gguf"], evil / "model.gguf")
    assert main(["models", "list"]) == 0
    err = capsys.readouterr().err
    assert "\x1b" not in err and "t\\x1b[2J[red]x/model.gguf" in err
    assert main(["models", "list", "--json"]) == 0  # JSON keeps the real name
    assert json.loads(capsys.readouterr().out)[0]["path"] == str(Path("models") / evil.name / "model.gguf")

    config = in_tmp / "c\x1b[2J[red].yaml"
    config.write_text("# agentlab models check\nmodels: {}\n")
    assert main(["config", "validate", str(config)]) == 0
    err = capsys.readouterr().err
    assert "\x1b" not in err and "c\\x1b[2J[red].yaml is a valid" in err


def test_progress_where_stderr_is_no_terminal_is_a_line_now_and_then(monkeypatch: pytest.MonkeyPatch) -> None:
    """Piped to a log, rich's bars printed one stale frame after the run's summary (`[2] int8_dynamic: size ━━
    3/3`) and nothing while a long experiment ran: now a plain line at most every ``every_s`` seconds, none at the
    end."""
    from agentlab.cli.common import LineProgress, rich_progress

    with console.capture() as captured, rich_progress() as progress:  # captured: no terminal
        assert isinstance(progress, LineProgress)
        task = progress.task("[1] prune [bold]x[/bold]", total=3)
        task.advance()  # under a minute: nothing
    assert captured.get() == ""
    lines = LineProgress(every_s=0.0)
    with console.capture() as captured:
        task = lines.task("trial 1/4", total=10)
        task.advance(4, description="[2] nas [tpe]")  # as written: no markup, no backslash
        lines.task("tokens", total=2_000_000).update(completed=1_000_000)
        lines.close()
    assert captured.get().splitlines() == ["progress: [2] nas [tpe] 4/10 done (0:00:00 elapsed)",
                                           "progress: tokens 1000000/2000000 done (0:00:00 elapsed)"]


def test_a_credential_in_a_library_log_line_is_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx logs each request's URL at -vv: a provider's base_url with `user:KEY@` printed the key on the console
    (run folders were scrubbed, the console was not)."""
    import logging

    from agentlab.cli.common import setup_logging

    monkeypatch.setenv("UPSTREAM_API_KEY", "sk-test-ENVSECRET-0123456789")
    setup_logging(2)
    try:
        with console.capture() as captured:
            logging.getLogger("httpx").info("HTTP Request: POST %s %s",
                                            "http://user:sk-test-URLSECRET789@127.0.0.1:1/v1/chat",
                                            "key sk-test-ENVSECRET-0123456789")
        text = " ".join(captured.get().split())
        assert "http://user:***@127.0.0.1:1/v1/chat" in text and "${UPSTREAM_API_KEY}" in text
        assert "URLSECRET" not in text and "ENVSECRET" not in text
        with console.capture() as captured:  # a traceback's text too
            try:
                raise ValueError("http://user:sk-test-URLSECRET789@127.0.0.1:1/v1")
            except ValueError:
                logging.getLogger("lib").warning("failed", exc_info=True)
        assert "URLSECRET" not in captured.get() and "http://user:***@127.0.0.1:1/v1" in captured.get()
    finally:
        logging.getLogger().handlers.clear()
        logging.getLogger().setLevel(logging.WARNING)
        logging.getLogger("httpx").setLevel(logging.WARNING)


def test_a_log_record_is_one_line_like_the_commands_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """A warning came as "[12/01/26 01:39:51] WARNING  trial(s) [2] were interrupted ...", padded with spaces to the
    console's width: unlike every other line of the run."""
    import logging

    from agentlab.cli.common import setup_logging

    setup_logging(0)
    try:
        with console.capture() as captured:
            logging.getLogger("x").warning("trial(s) [2] were interrupted; they run again first")
        assert captured.get() == "warning: trial(s) [2] were interrupted; they run again first\n"
        setup_logging(1)  # -v: the time first
        with console.capture() as captured:
            logging.getLogger("x").info("loaded")
        assert re.fullmatch(r"\d\d:\d\d:\d\d info: loaded\n", captured.get())
    finally:
        logging.getLogger().handlers.clear()
        logging.getLogger().setLevel(logging.WARNING)
