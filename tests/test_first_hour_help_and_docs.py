"""What a new user meets in the first hour: `agentlab --help` says where to start and lists the commands in the
README's order, a group that runs on its own does not show its subcommand as required, `config show` without a name
lists the names, and the first pages (README, index, getting started, configs) say what the tool does and prints."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agentlab.cli import HELP_ORDER, main
from agentlab.cli.commands import COMMANDS, OPTIONAL_SUBCOMMAND

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _page(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def test_root_help_says_where_to_start_and_lists_commands_in_the_readmes_order(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    raw = capsys.readouterr().out
    out = " ".join(raw.replace("│", " ").split())
    assert "New here: `agentlab nas --max-iterations 3`" in out and "docs/getting-started.md" in out
    assert sorted(HELP_ORDER) == sorted(c.name for c in COMMANDS)  # a new command is placed, not left to the end
    listed = [name for name in re.findall(r"^│ ([a-z][a-z-]+) {2,}", raw, re.M) if name in HELP_ORDER]
    assert listed == list(HELP_ORDER)
    readme = re.findall(r"^\| `agentlab ([a-z-]+)` \|", _page("README.md"), re.M)
    assert readme == list(HELP_ORDER)


@pytest.mark.parametrize("group, alone", [("nas", True), ("train-persona", True), ("debate", True), ("eval", True),
                                          ("pipeline", False), ("models", False), ("evolve", False),
                                          ("config", False)])
def test_a_group_that_runs_alone_shows_its_subcommand_optional(group: str, alone: bool,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """`agentlab nas [OPTIONS] COMMAND [ARGS]...` made a subcommand look required, in `-h` and in the hint of every
    option error; the groups that need one keep click's usage."""
    usage = f"agentlab {group} [OPTIONS] {OPTIONAL_SUBCOMMAND if alone else 'COMMAND [ARGS]...'}"
    assert main([group, "--no-such-option"]) == 2
    assert f"hint: usage: {usage}; see `agentlab {group} -h`" in capsys.readouterr().err
    assert main([group, "-h"]) == 0
    assert f"Usage: {usage}" in capsys.readouterr().out
    reference = (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")
    assert f"$ {usage}\n" in reference


def test_config_show_without_a_name_lists_the_names(capsys: pytest.CaptureFixture[str]) -> None:
    """It said only "Missing argument 'command'." (`config show nosuch` lists them)."""
    from agentlab.cli.commands import schemas

    assert main(["config", "show"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Missing argument 'command'") and len(err.strip().splitlines()) == 2, err
    assert f": One of: {', '.join(schemas())}." in " ".join(err.split())  # the argument's own help, said
    assert main(["config", "show", "-h"]) == 0
    assert "config show [OPTIONS] {command}" in capsys.readouterr().out  # still required in its usage
    assert main(["config", "show", "-h"]) == 0
    assert "serve, llm." in " ".join(capsys.readouterr().out.replace("│", " ").split())


def test_the_configs_page_shows_what_validate_prints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The page showed `configs/llm.yaml:31` and `config show llm`: the file's key is on another line, and
    `config validate` reads the file as llm-bench's (its first line names that command)."""
    (tmp_path / "configs").mkdir()
    text = (ROOT / "configs" / "llm.yaml").read_text(encoding="utf-8")
    (tmp_path / "configs" / "llm.yaml").write_text(text.replace("timeout_s", "timout_s"), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert main(["config", "validate", "configs/llm.yaml"]) == 2
    said = capsys.readouterr().err.strip().splitlines()
    page = (DOCS / "concepts" / "configs.md").read_text(encoding="utf-8")
    shown = page[page.index("error: configs/llm.yaml"):].splitlines()[:2]
    assert shown == said


def test_index_lists_every_command_and_the_concepts_pages() -> None:
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    for command in COMMANDS:
        assert f"| [`{command.name}`](commands/{command.name}.md) |" in index, command.name
    nas_row = next(line for line in index.splitlines() if line.startswith("| [`nas`]"))
    assert "commands/nas-own-code.md" in nas_row  # the headline: your own training command
    nav = _page("mkdocs.yml")
    read_next = index[index.index("## Where to read next"):]
    for page in re.findall(r"(concepts/[a-z-]+\.md)", nav):
        assert f"({page})" in read_next, page
    assert "in one line" not in index  # it prints an `error:` line and a `hint:` line


def _block(text: str, after: str) -> list[str]:
    start = text.index("```bash\n", text.index(after)) + len("```bash\n")
    return text[start:text.index("```", start)].splitlines()


def test_the_first_runs_show_own_code_search_and_eval_and_agree_on_times() -> None:
    quick = _block(_page("README.md"), "## Quick start")
    first = _block((DOCS / "getting-started.md").read_text(encoding="utf-8"), "## A first run of every command")
    for lines in (quick, first):
        commands = [line.partition(" #")[0].strip() for line in lines]
        assert any(c.startswith("agentlab nas -c examples/") for c in commands)
        assert any(c.startswith("agentlab eval ") for c in commands)
    stated = re.compile(r"\(~[^)]*\)")
    times = {line.partition(" #")[0].strip(): stated.findall(line) for line in quick}
    for line in first:
        command = line.partition(" #")[0].strip()
        said = stated.findall(line)
        if said and times.get(command):
            assert said == times[command], (command, said, times[command])


def test_compress_page_allows_checkpoints_mb_0() -> None:
    from agentlab.compress.config import CompressConfig

    assert CompressConfig(checkpoints_mb=0).checkpoints_mb == 0  # 0 keeps none
    page = " ".join((DOCS / "commands" / "compress.md").read_text(encoding="utf-8").split())
    assert "so is `checkpoints_mb`" not in page and "`checkpoints_mb` is a finite number of 0 or more" in page
