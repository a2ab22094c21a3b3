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
        ("SIZES[-1] = 2\n", "SIZES", "config.py:4: SIZES[-1] is assigned again; a trial's value of SIZES at line 3"),
        ("training['sizes'][0] = 2\n", "training.sizes", "config.py:4: training.sizes[0] is assigned again; a trial's "
         "value of training.sizes at line 1"),
        ("training['opt']['my key'] = 2\n", "training.opt", "config.py:4: training.opt[\"my key\"] is assigned again; "
         "a trial's value of training.opt at line 1"),
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


@pytest.mark.parametrize(
    "tail",
    [
        "warmup = [LR * 2 for LR in (0.1, 1.0)]\n",
        "total = sum(LR for LR in (1, 2))\n",
        "seen = {LR for LR in (1, 2)}\n",
        "table = {LR: i for i, LR in enumerate((1, 2))}\n",
        "pairs = [(a, LR) for a in (1, 2) for LR in (3, 4) if LR]\n",
        "grid = [[LR for LR in row] for row in ((1, 2),)]\n",
        "fresh = [training.update(lr=1) for training in [{}]]\n",  # the loop variable's own update
        "copies = [training for training in [training]]\n",
        'if __name__ == "__main__":\n    LR = 1.0\n    training["lr"] = 2\n    print(LR)\n',
        "if '__main__' == __name__:\n    del LR\n    training.update(lr=0.5)\n",
        'if __name__ != "__main__":\n    pass\nelse:\n    LR = 1.0\n',
    ],
)
def test_a_comprehension_variable_or_a_main_block_leaves_the_module_value_alone(in_tmp: Path, tail: str) -> None:
    """`lr = 0.1` then `[lr * 2 for lr in ...]` was refused ("lr is assigned again") though importing the module
    leaves lr at 0.1, and so was an `if __name__ == "__main__":` block, which an import never runs."""
    (in_tmp / "config.py").write_text(HEAD + tail)
    config = ConfigFile.load(in_tmp / "config.py")
    config.require(["LR", "training.lr"])
    config.check_writable(["LR", "training.lr"])
    text = config.render({"LR": 0.5, "training.lr": 0.25})
    assert text.startswith("training = {'lr': 0.25,") and "\nLR = 0.5\n" in text


@pytest.mark.parametrize(
    ("tail", "key", "said"),
    [
        ("warmup = [(LR := x) for x in (1, 2)]\n", "LR",
         "config.py:4: LR is assigned again; a trial's value at line 2"),
        ("w = [x for x in [LR for LR in (1,)] if (LR := x)]\n", "LR", "config.py:4: LR is assigned again"),
        ("w = [0 for training['lr'] in (1, 2)]\n", "training.lr", "config.py:4: training.lr is assigned again"),
        ("w = [training for training in [training.pop('lr')]]\n", "training.lr",
         "config.py:4: training.lr is deleted by .pop()"),
        ('if __name__ == "__main__":\n    pass\nelse:\n    LR = 1.0\n', "LR",
         "config.py:7: LR is assigned again inside an if block (line 4)"),
        ('if __name__ != "__main__":\n    LR = 1.0\n', "LR", "config.py:5: LR is assigned again inside an if block"),
        ("if __name__ == 'x':\n    LR = 1.0\n", "LR", "config.py:5: LR is assigned again inside an if block"),
        ("match SIZES:\n    case LR:\n        pass\n", "LR",
         "config.py:5: LR is assigned again inside a match block (line 4); a trial's value at line 2 would be "
         "overridden"),
        ("match SIZES:\n    case [8, *LR]:\n        pass\n", "LR", "config.py:5: LR is assigned again inside a match"),
        ("match training:\n    case {'lr': 0.1, **LR}:\n        pass\n", "LR", "config.py:5: LR is assigned again"),
        ("match SIZES:\n    case [8, 4] as training:\n        pass\n", "training.lr",
         "config.py:5: training is assigned again inside a match block (line 4); a trial's value of training.lr"),
        ("try:\n    import missing\nexcept ImportError as LR:\n    pass\n", "LR",
         "config.py:6: LR is assigned again inside a try block (line 4); a trial's value at line 2"),
    ],
)
def test_a_walrus_a_case_pattern_or_an_except_name_that_binds_a_searched_name_is_refused(
        in_tmp: Path, tail: str, key: str, said: str) -> None:
    """`except E as LR:` (Python unbinds LR after it) and `case LR:` rebind the module's LR: they were taken."""
    (in_tmp / "config.py").write_text(HEAD + tail)
    config = ConfigFile.load(in_tmp / "config.py")
    with pytest.raises(ConfigFileError, match=re.escape(said)):
        config.require([key])


def test_a_value_set_only_in_a_main_block_is_not_in_the_module(in_tmp: Path) -> None:
    """An import never runs the block: the key is not in the file (it was `assigned only inside an if block`)."""
    (in_tmp / "config.py").write_text('A = 1\nif __name__ == "__main__":\n    LR = 0.1\n')
    with pytest.raises(ConfigFileError, match=re.escape("config.py:1: no 'LR' here (search.space.LR)")):
        ConfigFile.load(in_tmp / "config.py").require(["LR"])


def test_a_config_with_a_comprehension_and_a_main_block_is_searched(in_tmp: Path, capsys: Any) -> None:
    """The reviewer's file exited 2 with "lr is assigned again inside an if block"."""
    (in_tmp / "config.py").write_text('lr = 0.1\nwarmup = [lr * 2 for lr in (0.1, 1.0)]\n'
                                      'if __name__ == "__main__":\n    lr = 1.0\n    print(lr)\n')
    (in_tmp / "train.py").write_text("import config\nprint(f'loss: {config.lr}')\n")
    (in_tmp / "nas.yaml").write_text(
        yaml.safe_dump(
            {
                "objective": {"command": f"{PYTHON} train.py", "config": "config.py", "metric": "loss"},
                "search": {"planner": "random", "space": {"lr": {"low": 0.001, "high": 0.1}}},
            }
        )
    )
    assert main(["nas", "-c", "nas.yaml", "--dry-run"]) == 0, capsys.readouterr().err
