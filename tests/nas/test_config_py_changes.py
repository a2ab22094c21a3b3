"""objective.config as a Python module: a statement after the assignment a trial's value is written into that
deletes or changes a searched key in place is refused before trial 0; one at a negative index of another value is
taken; the module is parsed once, not once per key."""

from __future__ import annotations

import ast
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentlab.cli import main
from agentlab.nas.config_file import ConfigFile, ConfigFileError

PYTHON = shlex.quote(sys.executable)
HEAD = "training = {'lr': 0.1, 'opt': {'lr': 0.1}, 'sizes': [64, 32], 'epochs': 3}\nLR = 0.1\nSIZES = [8, 4]\n"


@pytest.mark.parametrize(
    ("tail", "key"),
    [
        ("training[-1] = 0.5\n", "training.lr"),
        ("training['sizes'][-1] = 16\n", "training.lr"),
        ("training['opt'][-1] = 16\n", "training.lr"),
        ("training[+2] = 1\n", "training.opt.lr"),
        ("SIZES[-1] = 2\n", "LR"),
        ("del training['epochs']\n", "training.lr"),
        ("training.update(epochs=4)\n", "training.lr"),
        ("training['opt'].update({'momentum': 0.9})\n", "training.opt.lr"),
        ("training.pop('epochs')\n", "training.lr"),
        ("training['sizes'].append(16)\n", "training.lr"),
        ("setattr(training, 'epochs', 4)\n", "training.lr"),
        ("training.setdefault('lr', 1)\n", "training.lr"),  # the key is there: setdefault leaves it
        ("x = training.get('lr')\ny = training.copy()\ny.update(lr=2)\n", "training.lr"),
        ("def f():\n    del training['lr']\n", "training.lr"),  # a function's body is its own
    ],
)
def test_a_statement_that_leaves_a_searched_key_alone_is_taken(in_tmp: Path, tail: str, key: str) -> None:
    """`training[-1] = 0.5` was refused as a key that is not a constant: -1 is one, and not `lr`."""
    (in_tmp / "config.py").write_text(HEAD + tail)
    config = ConfigFile.load(in_tmp / "config.py")
    config.require([key])
    config.check_writable([key])


@pytest.mark.parametrize(
    ("tail", "key", "said"),
    [
        (
            "del training['lr']\n",
            "training.lr",
            "config.py:4: training.lr is deleted; a trial's value at line 1 would be removed "
            "(search.space.training.lr)",
        ),
        (
            "del training\n",
            "training.opt.lr",
            "config.py:4: training is deleted; a trial's value of training.opt.lr at line 1 would be removed",
        ),
        (
            "if True:\n    del LR\n",
            "LR",
            "config.py:5: LR is deleted inside an if block (line 4); a trial's value at line 2 would be removed",
        ),
        (
            "training.update(lr=0.5)\n",
            "training.lr",
            "config.py:4: training.lr is changed by .update(); a trial's value "
            "at line 1 would be overridden (search.space.training.lr)",
        ),
        (
            "training.update({'epochs': 1, 'opt': {}})\n",
            "training.opt.lr",
            "config.py:4: training.opt is changed by "
            ".update(); a trial's value of training.opt.lr at line 1 would be overridden",
        ),
        ("training['opt'].update(lr=0.5)\n", "training.opt.lr", "config.py:4: training.opt.lr is changed by .update()"),
        (
            "training.update(other)\n",
            "training.lr",
            "config.py:4: training[...] is changed by .update() at a key that is "
            "not a constant: it cannot be told whether it overrides a trial's value of training.lr at line 1",
        ),
        ("training.update(**other)\n", "training.lr", "config.py:4: training[...] is changed by .update() at a key"),
        (
            "training['lr'] += 1\n",
            "training.lr",
            "config.py:4: training.lr is assigned again; a trial's value at line 1 would be overridden",
        ),
        ("setattr(training, 'lr', 0.5)\n", "training.lr", "config.py:4: training.lr is changed by setattr()"),
        (
            "delattr(training, 'lr')\n",
            "training.lr",
            "config.py:4: training.lr is deleted by delattr(); a trial's value at line 1 would be removed",
        ),
        ("x = training['opt'].pop('lr')\n", "training.opt.lr", "config.py:4: training.opt.lr is deleted by .pop()"),
        ("training.__setitem__('lr', 2)\n", "training.lr", "config.py:4: training.lr is changed by .__setitem__()"),
        (
            "training.clear()\n",
            "training.lr",
            "config.py:4: training is changed by .clear(); a trial's value of "
            "training.lr at line 1 would be overridden",
        ),
        ("training['sizes'].append(16)\n", "training.sizes", "config.py:4: training.sizes is changed by .append()"),
        ("SIZES.extend([2])\n", "SIZES", "config.py:4: SIZES is changed by .extend(); a trial's value at line 3"),
        ("SIZES[-1] = 2\n", "SIZES", "config.py:4: SIZES.-1 is assigned again; a trial's value of SIZES at line 3"),
        (
            "for k in ['lr']:\n    training.pop(k)\n",
            "training.lr",
            "config.py:5: training[...] is deleted by .pop() "
            "inside a for block (line 4) at a key that is not a constant: it cannot be told whether it removes a "
            "trial's value of training.lr at line 1",
        ),
    ],
)
def test_a_searched_key_deleted_or_changed_in_place_is_refused(in_tmp: Path, tail: str, key: str, said: str) -> None:
    """`del CFG["lr"]`, `CFG.update(lr=0.5)`, `setattr(...)` after `CFG = {...}` were taken: every trial ran on the
    value the statement left, not the one written."""
    (in_tmp / "config.py").write_text(HEAD + tail)
    config = ConfigFile.load(in_tmp / "config.py")
    with pytest.raises(ConfigFileError, match=re.escape(said)):
        config.require([key])


def test_a_change_in_place_stops_the_search_with_one_line(in_tmp: Path, capsys: Any) -> None:
    (in_tmp / "config.py").write_text("CFG = {'lr': 0.1}\nCFG.update(lr=0.5)\n")
    (in_tmp / "train.py").write_text("import config\nprint(f'loss: {config.CFG[\"lr\"]}')\n")
    (in_tmp / "nas.yaml").write_text(
        yaml.safe_dump(
            {
                "objective": {"command": f"{PYTHON} train.py", "config": "config.py", "metric": "loss"},
                "search": {"planner": "random", "space": {"CFG.lr": {"low": 0.001, "high": 0.1}}},
            }
        )
    )
    assert main(["nas", "-c", "nas.yaml", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    flat = " ".join(err.split())
    assert (
        "config.py:2: CFG.lr is changed by .update(); a trial's value at line 1 would be overridden "
        "(search.space.CFG.lr)"
    ) in flat
    assert "remove the change at line 2, or write the value it sets at line 1" in flat


def test_the_module_is_parsed_once_for_all_keys(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`require` parsed config.py again for each key it was given (and `render` for each key written)."""
    (in_tmp / "config.py").write_text("A = 1\nB = 2\nC = {'x': 3, 'y': 4}\nD = 'd'\n")
    parsed = []
    real = ast.parse

    def counted(*args: Any, **kwargs: Any) -> Any:
        parsed.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(ast, "parse", counted)
    config = ConfigFile.load(in_tmp / "config.py")
    keys = ["A", "B", "C.x", "C.y", "D"]
    config.require(keys)
    config.require(keys)
    assert len(parsed) == 1
    text = config.render({"A": 5, "C.y": 6})  # the text written is read back once to check it
    assert "A = 5" in text and "'y': 6" in text
    assert len(parsed) == 2 and parsed[1] == text
