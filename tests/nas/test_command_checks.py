"""Checks of a search of the user's own command that a new user's pass found missing: an option the command gives
itself that a placeholder passes too, an empty space, a metric printed with a value that is no number, and a
conflict between objective.editable and objective.protected named where it was given."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from agentlab.cli import main
from agentlab.testing.server import spawn_server_process

ARGPARSE = """\
import argparse
p = argparse.ArgumentParser()
p.add_argument("--lr", type=float, default=0.01)
p.add_argument("--tag", action="append")
a = p.parse_args()
print(f"val_loss: {a.lr}")
"""


def project(folder: Path, command: str, space: str = "    lr: {low: 0.001, high: 0.1, log: true}\n",
            script: str = ARGPARSE, params: str = "") -> Path:
    (folder / "train.py").write_text(script)
    path = folder / "nas.yaml"
    path.write_text("# agentlab nas -c nas.yaml\nobjective:\n  command: " + command.replace("PY", sys.executable)
                    + f"\n  metric: val_loss\n{params}search:\n  space:\n{space}")
    return path


def said(capsys: pytest.CaptureFixture) -> str:
    return " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize(("command", "option", "given", "placeholder"), [
    ("PY train.py {args} --lr=3", "--lr", "--lr=3", "{args}"),
    ("PY train.py --lr 3 {args}", "--lr", "--lr 3", "{args}"),
    ("PY train.py {overrides} lr=3", "lr", "lr=3", "{overrides}"),
], ids=["args-then-flag", "flag-then-args", "hydra-overrides"])
def test_a_searched_key_the_command_also_gives_itself_is_refused_before_trial_0(
        in_tmp: Path, capsys: pytest.CaptureFixture, command: str, option: str, given: str,
        placeholder: str) -> None:
    """`python ok.py {args} --lr=3` with lr searched ran every trial as `--lr=0.0446 --lr=3`: argparse kept the last,
    every trial ran lr=3, and the search ended "no trial beat the base params", exit 0."""
    config = project(in_tmp, command, params="  params: {lr: 0.01}\n")
    assert main(["nas", "-c", str(config), "--dry-run"]) == 2
    err = said(capsys)
    assert f"{config}:3: objective.command: gives {option} itself ({given}), and {placeholder} already passes lr " \
        "(a searched key)" in err
    assert not (in_tmp / "runs").exists()


def test_an_option_given_with_a_placeholder_and_again_fixed_is_refused(in_tmp: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    config = project(in_tmp, "PY train.py --lr={lr} --lr=3", params="  params: {lr: 0.01}\n")
    assert main(["nas", "-c", str(config), "--dry-run"]) == 2
    assert f"{config}:3: objective.command: gives --lr twice (--lr={{lr}} and --lr=3)" in said(capsys)


def test_options_given_once_and_repeating_options_are_not_refused(in_tmp: Path) -> None:
    """The check reads the script's words alone: an argparse `append` option collects both, and a word that only
    looks alike (`--lr-decay`, `--lr` of the launcher before the script) is no repeat."""
    config = project(in_tmp, "PY train.py {args} --tag=fixed", params="  params: {lr: 0.01, tag: a}\n",
                     space="    lr: {low: 0.001, high: 0.1, log: true}\n    tag: {choices: [a, b]}\n")
    assert main(["nas", "-c", str(config), "--dry-run"]) == 0
    config = project(in_tmp, "PY train.py {args}", params="  params: {lr: 0.01}\n")
    assert main(["nas", "-c", str(config), "--dry-run"]) == 0
    config = project(in_tmp, "PY train.py --lr={lr}", params="  params: {lr: 0.01}\n")
    assert main(["nas", "-c", str(config), "--dry-run"]) == 0
    # a repeating option with a placeholder and a fixed value; two key=value settings of one option; a config file
    # and {params} merged by jsonargparse: each a legitimate command, refused by a first version of the check
    for command in ("PY train.py --lr={lr} --tag={lr} --tag=base", "PY train.py --lr={lr} --set lr={lr} --set e=3",
                    "PY train.py --config base.yaml --config {params}"):
        config = project(in_tmp, command, params="  params: {lr: 0.01}\n")
        assert main(["nas", "-c", str(config), "--dry-run"]) == 0, command


def test_an_empty_search_space_is_refused_naming_its_line(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """`search.space: {}` with an objective ran trial 0 alone, then "every configuration of the search space was
    tried", exit 0; --dry-run printed a blank "search space: "."""
    config = project(in_tmp, "PY train.py {args}", params="  params: {lr: 0.01}\n")
    config.write_text(config.read_text().replace("  space:\n    lr: {low: 0.001, high: 0.1, log: true}\n",
                                                  "  space: {}\n"))
    assert main(["nas", "-c", str(config), "--dry-run"]) == 2
    assert f"{config}:7: search.space: empty, nothing to search" in said(capsys)
    # the built-in forecaster's own space (its default) and an empty one of its own (one model trained) still go
    assert main(["nas", "--dry-run"]) == 0
    assert main(["nas", "--dry-run", "--set", "search.space={}"]) == 0


def test_a_metric_printed_with_a_value_that_is_no_number_says_so(in_tmp: Path, capsys: pytest.CaptureFixture) -> None:
    """`val_loss: abc` said "no result: no 'val_loss' in a stdout line ...", as if it was never printed, while
    `val_loss: nan` said "not a finite number"."""
    script = "print('starting')\nprint('val_loss: abc')\nprint('done')\n"
    config = project(in_tmp, "PY train.py {args}", script=script, params="  params: {lr: 0.01}\n")
    assert main(["nas", "-c", str(config), "-n", "1", "--out", "run"]) != 0
    assert "failed: no result: stdout line 2 gives val_loss a value that is not a number: `val_loss: abc`" \
        in said(capsys)


def test_editable_and_protected_naming_one_file_names_the_set(in_tmp: Path, capsys: pytest.CaptureFixture,
                                                             request: pytest.FixtureRequest) -> None:
    """The conflict said "objective.editable and objective.protected both name eval.py", naming no file line nor
    --set, as the other errors do."""
    config = project(in_tmp, "PY train.py {args}", params="  params: {lr: 0.01}\n")
    (in_tmp / "eval.py").write_text("print('val_loss: 0.1')\n")
    proc, base_url = spawn_server_process({"scripts": {}})  # a planner model that answers (none is asked)
    request.addfinalizer(lambda: (proc.kill(), proc.wait()))
    llm = in_tmp / "llm.yaml"
    llm.write_text(yaml.safe_dump({"providers": {"loop": {"kind": "openai", "base_url": base_url}},
                                   "models": {"m": {"provider": "loop", "model": "m"}},
                                   "routes": {"planner": {"primary": ["m"]}}}))
    args = ["nas", "-c", str(config), "--dry-run", "--llm", str(llm), "--planner", "agent", "--approve",
            "--set", "objective.protected=[eval.py]"]
    assert main([*args, "--set", "objective.editable=[eval.py]"]) == 2
    assert "error: --set objective.editable=[eval.py]: objective.editable: names eval.py, which objective.protected " \
        "names too" in said(capsys)
    config.write_text(config.read_text().replace("  metric:", "  editable: [train.py, eval.py]\n  metric:"))
    assert main(args) == 2
    assert f"error: {config}:4: objective.editable: names eval.py" in said(capsys)


def test_the_docs_yaml_block_is_the_example_file() -> None:
    """docs/commands/nas-own-code.md's "The YAML" block said it was examples/own_code/nas.yaml, and differed from it
    (metric accuracy, maximize; the file: val_loss, minimize)."""
    root = Path(__file__).resolve().parents[2]
    text = (root / "docs" / "commands" / "nas-own-code.md").read_text(encoding="utf-8")
    block = text.split("## The YAML\n\n```yaml\n", 1)[1].split("```\n", 1)[0]
    assert block == (root / "examples" / "own_code" / "nas.yaml").read_text(encoding="utf-8")
