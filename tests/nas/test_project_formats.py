"""The user's project as it is: its own config file in its own format, params the way the script takes them, results
the way it prints them."""

from __future__ import annotations

import json
import re
import shlex
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentlab.cli import main
from agentlab.core.errors import UsageError
from agentlab.core.search.loop import Pruned, TrialFailed
from agentlab.nas.command import CommandObjective, cli_value, text_metrics
from agentlab.nas.config import CommandObjectiveConfig
from agentlab.nas.config_file import ConfigFile, ConfigFileError
from agentlab.nas.script import ArgOption, argparse_options
from agentlab.nas.workspace import Workspaces

PYTHON = shlex.quote(sys.executable)

CONFIG_PY = '''\
"""Settings of train.py."""
import os

SEED = 0  # the seed
training = {
    "lr": 1e-3,   # learning rate: keep this comment
    "epochs": 5,
    "optim": {"name": "adam", "betas": [0.9, 0.999]},
}
model = dict(width=64, dropout=0.1)  # ünïcode
data_dir = os.environ.get("DATA", "data")
'''
CONFIG_YAML = ("# top comment\ntraining:\n  lr: 0.001   # lr comment\n  epochs: 5\n  name: \"adam\"\n"
               "model: {width: 64}\n")
CONFIG_TOML = "# top comment\n[training]\nlr = 0.001 # lr comment\nepochs = 5\n\n[model]\nwidth = 64\n"
CONFIG_JSON = '{\n    "training": {\n        "lr": 0.001,\n        "epochs": 5\n    },\n    "model": {"width": 64}\n}\n'
FILES = {"config.py": CONFIG_PY, "config.yaml": CONFIG_YAML, "config.toml": CONFIG_TOML, "config.json": CONFIG_JSON}


@pytest.mark.parametrize("name", list(FILES))
def test_each_format_takes_the_values_and_keeps_the_rest(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text(FILES[name], encoding="utf-8")
    cfg = ConfigFile.load(path)
    assert cfg.lookup("training.lr") == (True, 0.001) and cfg.lookup("model.width") == (True, 64)
    text = cfg.render({"training.lr": 0.005, "model.width": 128})
    out = tmp_path / ("out_" + name)
    out.write_text(text, encoding="utf-8")
    again = ConfigFile.load(out)
    assert again.lookup("training.lr") == (True, 0.005) and again.lookup("model.width") == (True, 128)
    assert again.lookup("training.epochs") == (True, 5)
    assert name == "config.json" or "comment" in text  # JSON has no comments; the others keep theirs
    # every other line byte for byte (JSON's too: it was dumped whole, `"model": {"width": 64}` over three lines)
    changed = [(a, b) for a, b in zip(FILES[name].splitlines(), text.splitlines(), strict=True) if a != b]
    assert all("lr" in a or "width" in a for a, _ in changed), changed
    assert cfg.render({}) == FILES[name]
    assert cfg.render({"training.lr": 0.001, "model.width": 64}) == FILES[name]  # the values it holds: as it is


def test_a_tab_indented_json_file_keeps_its_layout(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    text = '{\n\t"lr": 0.01,\n\t"sizes": [16,16],\n\t"name": "caf\\u00e9"\n}\n'
    path.write_text(text, encoding="utf-8")
    assert ConfigFile.load(path).render({"lr": 0.5}) == text.replace("0.01", "0.5")


def test_a_value_the_file_holds_is_left_as_written_and_a_tuple_stays_a_tuple(tmp_path: Path) -> None:
    """`SIZES = (16, 16)` was written `[16, 16]` in every trial, trial 0 included (the space's choices are lists),
    and `config.SIZES + (1,)` failed: the base config failed, and `nas apply` wrote the list into the project."""
    path = tmp_path / "config.py"
    path.write_text("LR = 1\nSIZES = (16, 16)  # a tuple\nON = True\n", encoding="utf-8")
    cfg = ConfigFile.load(path)
    assert cfg.render({"LR": 1, "SIZES": [16, 16], "ON": True}) == path.read_text()
    assert cfg.render({"LR": 1.0, "SIZES": [32, 32], "ON": 1}) == "LR = 1.0\nSIZES = (32, 32)  # a tuple\nON = 1\n"


def test_python_config_keeps_the_non_literal_lines_and_nested_dicts(tmp_path: Path) -> None:
    path = tmp_path / "config.py"
    path.write_text(CONFIG_PY, encoding="utf-8")
    cfg = ConfigFile.load(path)
    assert "data_dir" not in cfg.values and "os" not in cfg.values  # computed: not searchable, left alone
    text = cfg.render({"training.optim.name": "sgd", "SEED": 3, "model.dropout": 0.25})
    assert 'data_dir = os.environ.get("DATA", "data")' in text and "# ünïcode" in text
    assert "SEED = 3  # the seed" in text and "dropout=0.25" in text
    namespace: dict[str, Any] = {}
    exec(compile(text, "config.py", "exec"), namespace)  # noqa: S102 - the test's own file
    assert namespace["training"]["optim"] == {"name": "sgd", "betas": [0.9, 0.999]}


@pytest.mark.parametrize("name", list(FILES))
def test_a_key_the_file_lacks_is_refused_with_file_and_line(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text(FILES[name], encoding="utf-8")
    with pytest.raises(ConfigFileError) as err:
        ConfigFile.load(path).require(["training.lrr"])
    assert f"{path}:" in err.value.message and "training.lrr" in err.value.message
    assert err.value.exit_code == 2
    path.write_text("# nothing yet\n" if name != "config.json" else "{}\n", encoding="utf-8")  # said so, not "no lr"
    with pytest.raises(ConfigFileError, match=r": holds no values \(search\.space\.lr\)"):
        ConfigFile.load(path).require(["lr"])


@pytest.mark.parametrize(("name", "content", "said"), [
    ("config.py", "x = (\n", "not valid Python"), ("c.yaml", "a: [1,\n", "not valid YAML"),
    ("c.toml", "a = \n", "not valid TOML"), ("c.json", "{", "not valid JSON"), ("c.ini", "a=1", "unknown format"),
    ("c.yaml", "- 1\n- 2\n", "not a mapping"),
])
def test_bad_config_files_are_one_clear_error(tmp_path: Path, name: str, content: str, said: str) -> None:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigFileError, match=said) as err:
        ConfigFile.load(path)
    assert err.value.hint  # the next step: each syntax error had none


def test_a_config_files_value_outside_the_space_names_its_line(in_tmp: Path, capsys: Any) -> None:
    """It said "search.space does not contain the base config: lr: base value 'abc'", with "widen the space"."""
    (in_tmp / "params.toml").write_text("epochs = 3\nlr = \"abc\"\n")
    (in_tmp / "train.py").write_text("print('loss: 1')\n")
    (in_tmp / "nas.yaml").write_text(yaml.safe_dump({
        "objective": {"command": f"{PYTHON} train.py", "config": "params.toml", "metric": "loss"},
        "search": {"planner": "random", "space": {"lr": {"low": 0.001, "high": 0.1}}}}))
    assert main(["nas", "-c", "nas.yaml", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "params.toml:2: lr = 'abc': expected a number" in err and "fix the value in the file" in err


@pytest.mark.parametrize("name", list(FILES))
def test_a_range_of_floats_for_an_int_of_the_config_file_is_warned(in_tmp: Path, capsys: Any, name: str) -> None:
    """`model.width: {low: 1.0, high: 99.5}` where the file holds `width = 64` said "config ok", and every trial then
    failed on the float it wrote (TypeError), with no word before. A warning, not a refusal: a file's `x = 0` may be
    a float setting written as 0."""
    (in_tmp / name).write_text(FILES[name], encoding="utf-8")
    (in_tmp / "train.py").write_text("print('loss: 1')\n")
    space = {"training.lr": {"low": 0.0001, "high": 0.1}, "model.width": {"low": 1.0, "high": 99.5}}
    (in_tmp / "nas.yaml").write_text(yaml.safe_dump({
        "objective": {"command": f"{PYTHON} train.py", "config": name, "metric": "loss"},
        "search": {"planner": "random", "space": space}}))
    assert main(["nas", "-c", "nas.yaml", "--dry-run"]) == 0
    err = capsys.readouterr().err
    line = ConfigFile.load(in_tmp / name).line_of("model.width")
    assert f"search.space.model.width: a range of floats (1.0..99.5), but {name}:{line} holds it as an int" in err
    assert "give int bounds ({low: 1, high: 99})" in err and "Traceback" not in err
    space["model.width"] = {"low": 1, "high": 99}  # int bounds: taken
    (in_tmp / "nas.yaml").write_text(yaml.safe_dump({
        "objective": {"command": f"{PYTHON} train.py", "config": name, "metric": "loss",
                      "params": {"training.lr": 0.001}},
        "search": {"planner": "random", "space": {**space, "training.epochs": {"low": 1.0, "high": 9.0}}}}))
    assert main(["nas", "-c", "nas.yaml", "--dry-run"]) == 0  # epochs = 5: the same for every key
    err = capsys.readouterr().err
    assert "search.space.training.epochs: a range of floats" in err and "space.model.width: a range" not in err
    (in_tmp / "nas.yaml").write_text(yaml.safe_dump({
        "objective": {"command": f"{PYTHON} train.py", "config": name, "metric": "loss",
                      "params": {"model.width": 64}},  # objective.params' own value: the user's choice
        "search": {"planner": "random", "space": {"model.width": {"low": 1.0, "high": 99.5}}}}))
    assert main(["nas", "-c", "nas.yaml", "--dry-run"]) == 0
    assert "a range of floats" not in capsys.readouterr().err


def test_missing_folder_and_binary_config_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="does not exist"):
        ConfigFile.load(tmp_path / "nope.yaml")
    (tmp_path / "d.yaml").mkdir()
    with pytest.raises(ConfigFileError, match="is a folder"):
        ConfigFile.load(tmp_path / "d.yaml")
    (tmp_path / "b.yaml").write_bytes(b"\xff\xfe\x00a")
    with pytest.raises(ConfigFileError, match="not UTF-8"):
        ConfigFile.load(tmp_path / "b.yaml")


# --------------------------------------------------------------------------- params on the command line


def spec(cmd: str, metric: str = "loss", params: dict[str, Any] | None = None) -> CommandObjectiveConfig:
    """The objective section of ``cmd`` (no params unless given)."""
    return CommandObjectiveConfig(command=cmd, metric=metric, params=params or {})


def command(tmp_path: Path, cmd: str, base: dict[str, Any], body: str, metric: str = "loss",
            **kwargs: Any) -> CommandObjective:
    (tmp_path / "train.py").write_text(textwrap.dedent(body))
    return CommandObjective(spec(cmd, metric, base), cwd=tmp_path,
                            trial_dir=lambda n: tmp_path / "run" / "trials" / f"run_{n:04d}", **kwargs)


ECHO_ARGS = """\
import json, sys
print(json.dumps({"loss": 1.0, "argv": " ".join(sys.argv[1:])}))
"""


def test_args_overrides_and_single_values(tmp_path: Path) -> None:
    base = {"lr": 0.1, "model": {"width": 8}, "name": "a b", "flag": True}
    obj = command(tmp_path, f"{PYTHON} train.py {{args}}", base, ECHO_ARGS, space_keys=("lr", "model.width"))
    out = obj.run(0, {"lr": 0.01, "model.width": 16}, lambda s, v: False)
    assert out["argv"] == "--lr=0.01 --model.width=16 --name=a b --flag=true"
    obj = command(tmp_path, f"{PYTHON} train.py {{overrides}}", base, ECHO_ARGS, space_keys=("lr",))
    assert obj.run(1, {"lr": 0.5}, lambda s, v: False)["argv"] == "lr=0.5 model.width=8 name=a b flag=true"
    obj = command(tmp_path, f"{PYTHON} train.py --lr={{lr}} --w {{model.width}} {{not_a_param}}", base, ECHO_ARGS,
                  space_keys=("lr",))
    assert obj.run(2, {"lr": 0.5}, lambda s, v: False)["argv"] == "--lr=0.5 --w 8 {not_a_param}"
    assert (tmp_path / "run" / "trials" / "run_0002" / "command.txt").read_text().endswith("{not_a_param}'\n")
    assert cli_value([1, 2]) == "[1,2]" and cli_value(None) == "null"


ARGPARSE_SWITCHES = """\
import argparse, json, sys
from opts import add_more
p = argparse.ArgumentParser()
p.add_argument("--lr", type=float)
p.add_argument("--use_bias", action="store_true")
p.add_argument("--no-shuffle", dest="shuffle", action="store_false")
p.add_argument("--sizes", type=int, nargs="+")
p.add_argument("-b", "--batch-size", type=int)
p.add_argument("-v", action="count")
add_more(p)
a = p.parse_args()
seen = f"{a.use_bias} {a.shuffle} {a.amp} {a.sizes} {a.batch_size}"
print(json.dumps({"loss": 1.0, "argv": " ".join(sys.argv[1:]), "seen": seen}))
"""


def test_argparse_switches_are_given_bare_or_left_out(tmp_path: Path) -> None:
    # argparse refuses `--use_bias=true` ("ignored explicit argument 'true'"): every trial, the base one included,
    # failed on a script with a store_true flag; the switches are read from the script and the modules it imports
    (tmp_path / "opts.py").write_text("import argparse\n\ndef add_more(p):\n"
                                      "    p.add_argument('--amp', action=argparse.BooleanOptionalAction)\n")
    base = {"lr": 0.1, "use_bias": False, "no-shuffle": False, "amp": True, "sizes": [64, 32]}
    obj = command(tmp_path, f"{PYTHON} train.py {{args}}", base, ARGPARSE_SWITCHES,
                  space_keys=("use_bias", "no-shuffle", "amp", "sizes"))
    assert {k: v[:2] for k, v in obj.options.items() if v[1] != "value"} == {
        "use_bias": ("--use_bias", "store"), "no-shuffle": ("--no-shuffle", "store"),
        "shuffle": ("--no-shuffle", "store_false"), "amp": ("--amp", "optional"), "sizes": ("--sizes", "list")}
    out = obj.run(0, {"use_bias": False, "no-shuffle": False, "amp": True, "sizes": [64, 32]}, lambda s, v: False)
    assert (out["argv"], out["seen"]) == ("--lr=0.1 --amp --sizes 64 32", "False True True [64, 32] None")
    out = obj.run(1, {"use_bias": True, "no-shuffle": True, "amp": False, "sizes": [8]}, lambda s, v: False)
    assert (out["argv"], out["seen"]) == ("--lr=0.1 --use_bias --no-shuffle --no-amp --sizes 8",
                                          "True False False [8] None")
    # 0 / 1 and "true" / "false" for a switch, null leaves it out; a param named by its dest (batch_size) gets the
    # script's option (--batch-size); a count action is not an {args} option
    out = obj.run(2, {"use_bias": 1, "no-shuffle": "false", "amp": None, "sizes": [8], "batch_size": 4},
                  lambda s, v: False)
    assert (out["argv"], out["seen"]) == ("--lr=0.1 --use_bias --sizes 8 --batch-size=4", "True True None [8] 4")
    assert "v" not in obj.options
    # a store_false switch named by its dest holds the dest's value: true (argparse's default) leaves `--no-shuffle`
    # out, false gives it (it was given for true: trial 0, the script as it is, ran without shuffling)
    assert obj.options["shuffle"].default == (True,) and obj.options["no-shuffle"].default == (False,)
    for shuffle, argv, seen in ((True, "--lr=0.1", "False True None None None"),
                                (False, "--lr=0.1 --no-shuffle", "False False None None None")):
        out = obj.run(3, {"shuffle": shuffle}, lambda s, v: False)
        assert (out["argv"], out["seen"]) == (argv, seen)


ARGPARSE_DEFAULTS = """\
import argparse, json, sys
WIDTH = 32
p = argparse.ArgumentParser()
p.add_argument("--learning-rate", "--lr", dest="lr", type=float, default=0.01)
p.add_argument("--hidden-sizes", type=int, nargs="+", default=[64, 64])
p.add_argument("--use-bn", action="store_true")
p.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
p.add_argument("--seed", type=int)
p.add_argument("--width", type=int, default=WIDTH)
p.add_argument("--dropout", type=float, default="0.1")
a = p.parse_args()
print(json.dumps({"loss": a.lr, "argv": " ".join(sys.argv[1:])}))
"""


def test_argparse_defaults_are_the_base_of_a_key_the_params_leave_out(tmp_path: Path) -> None:
    """`{args}` with no objective.params: trial 0 is the script as it is, its defaults read from its source."""
    searched = ("lr", "hidden_sizes", "use_bn", "optimizer", "dropout")
    obj = command(tmp_path, f"{PYTHON} train.py {{args}}", {"optimizer": "adam"}, ARGPARSE_DEFAULTS,
                  space_keys=searched)
    assert obj.base_params == {"lr": 0.01, "hidden_sizes": [64, 64], "use_bn": False, "optimizer": "adam",
                               "dropout": 0.1}  # a string default through type=float, as argparse gives it
    obj.validate()
    out = obj.run(0, {key: obj.base_params[key] for key in searched}, lambda s, v: False)
    assert out["argv"] == "--optimizer=adam --learning-rate=0.01 --hidden-sizes 64 64 --dropout=0.1"
    for key in ("seed", "width"):  # no default, a default that is no literal: the params must say it
        obj = command(tmp_path, f"{PYTHON} train.py {{args}}", {}, ARGPARSE_DEFAULTS, space_keys=(key,))
        with pytest.raises(UsageError, match=f"search.space.{key}: not a key of objective.params, and train.py's "
                           f"--{key} has no default written as a literal \\(read from the source, not run\\)$"):
            obj.validate()
    obj = command(tmp_path, f"{PYTHON} train.py {{args}}", {}, ARGPARSE_DEFAULTS, space_keys=("depth",))
    with pytest.raises(UsageError, match="search.space.depth: not a key of objective.params, and no option of "
                       "train.py \\(argparse, click, typer, tyro, fire, jsonargparse or LightningCLI"):
        obj.validate()
    # read as Python reads it: past a byte order mark, in the encoding the file declares
    for head in (b"\xef\xbb\xbf", b"# -*- coding: latin-1 -*-\n# caf\xe9\n"):
        (tmp_path / "train.py").write_bytes(head + textwrap.dedent(ARGPARSE_DEFAULTS).encode())
        obj = CommandObjective(spec(f"{PYTHON} train.py {{args}}", "loss", {}), cwd=tmp_path,
                               trial_dir=lambda n: tmp_path / "run", space_keys=("lr",))
        assert obj.base_params == {"lr": 0.01}


ACCEPTS = """\
import argparse
p = argparse.ArgumentParser()
fit = p.add_subparsers(dest="cmd").add_parser("fit")
fit.add_argument("--opt", choices=["adam", "sgd"], default="adam")
fit.add_argument("--batch-size", type=int, default=32)
fit.add_argument("--level", type=int, choices=[1, 2, 3], default=1)
fit.add_argument("--lr", type=float, default=0.1)
fit.add_argument("--even", type=int, choices=[2, 4, 6, 8], default=2)
fit.add_argument("--act", type=str.lower, choices=["relu", "gelu"], default="relu")  # 'ReLU' is taken
a = p.parse_args()
print(f"loss {a.lr * a.batch_size:.4f}")
"""


CLICK_ACCEPTS = """\
import click


@click.group()
def cli():
    pass


@cli.command()
@click.option("--opt", type=click.Choice(["adam", "sgd"]), default="adam")
@click.option("--batch-size", type=int, default=32)
@click.option("--level", type=click.Choice([1, 2, 3]), default=1)
@click.option("--lr", type=float, default=0.1)
@click.option("--even", type=click.Choice([2, 4, 6, 8]), default=2)
@click.option("--act", type=click.Choice(["relu", "gelu"], case_sensitive=False), default="relu")
@click.option("--norm", type=click.Choice(["layer", "batch"], False), default="layer")
def fit(opt, batch_size, level, lr, even, act, norm):
    print(f"loss {lr * batch_size:.4f}")


cli()
"""


TYPER_ACCEPTS = """\
from enum import Enum
from typing import Annotated, Literal

import typer

app = typer.Typer()


class Optim(str, Enum):
    adam = "adam"
    sgd = "sgd"


class Act(str, Enum):
    relu = "relu"
    gelu = "gelu"


@app.command()
def fit(opt: Optim = Optim.adam, batch_size: int = 32, level: Literal[1, 2, 3] = 1,
        lr: Annotated[float, typer.Option("--lr")] = 0.1, even: Literal[2, 4, 6, 8] = 2,
        act: Act = typer.Option(Act.relu, case_sensitive=False)):
    print(f"loss {lr * batch_size:.4f}")


@app.command()
def other():
    pass


app()
"""


@pytest.mark.parametrize("script", [ACCEPTS, CLICK_ACCEPTS, TYPER_ACCEPTS], ids=["argparse", "click", "typer"])
def test_searched_values_the_scripts_parser_refuses_are_refused_before_trial_0(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], script: str) -> None:
    """argparse's and click's `type=int` and choices, typer's `int` annotations, Enums and Literals are read: each
    trial of such a value failed (`invalid int value`)."""
    from agentlab.cli import main

    (tmp_path / "train.py").write_text(script)
    fine = {"opt": "{choices: [adam, sgd]}", "batch_size": "{low: 8, high: 64}", "level": "{low: 1, high: 3}",
            "lr": "{low: 0.001, high: 0.1}", "even": "{low: 2, high: 8, step: 2}", "act": "{choices: [relu, GELU]}",
            **({"norm": "{choices: [layer, Batch]}"} if "--norm" in script else {})}
    wrong = {"opt": ("{choices: [adam, rmsprop]}", "'rmsprop' is not one of train.py's choices for --opt (adam, sgd)"),
             "batch_size": ("{low: 8.0, high: 64.0}", "a range of floats (8.0..64.0), but train.py reads --batch-size "
                            "as an int"),
             "level": ("{low: 1, high: 4}", "4 is not one of train.py's choices for --level (1, 2, 3)"),
             "lr": ("{choices: [0.1, fast]}", "'fast' cannot be read as float (`--lr=fast`)")}
    monkeypatch.chdir(tmp_path)
    for key in [None, *wrong]:
        space = {**fine, key: wrong[key][0]} if key else fine
        (tmp_path / "nas.yaml").write_text("objective: {command: 'python train.py fit {args}', metric: loss}\n"
                                           "search:\n  space:\n" + "".join(f"    {k}: {v}\n" for k, v in space.items()))
        assert main(["nas", "-c", "nas.yaml", "--dry-run"]) == (2 if key else 0)
        err = capsys.readouterr().err
        if key:
            assert f"search.space.{key}: {wrong[key][1]}" in " ".join(err.split()), err


CLICK_SCRIPT = """\
import json, sys
import click


@click.command()
@click.option("--learning-rate", "lr", type=float, default="0.01")
@click.option("--sizes", type=int, nargs=2, default=(64, 32))
@click.option("--use-bn", is_flag=True)
@click.option("--shuffle/--no-shuffle", default=True)
@click.option("--tag", multiple=True)
def main(lr, sizes, use_bn, shuffle, tag):
    print(json.dumps({"loss": lr, "argv": " ".join(sys.argv[1:]), "seen": f"{lr} {list(sizes)} {use_bn} {shuffle}"}))


main()
"""


def test_a_click_script_is_read_like_argparse(tmp_path: Path) -> None:
    """click's options: defaults read (trial 0), a flag given bare or left out, `--no-x` for a false on/off option,
    nargs as words; a `multiple` option is not an {args} option."""
    searched = ("lr", "sizes", "use_bn", "shuffle")
    obj = command(tmp_path, f"{PYTHON} train.py {{args}}", {}, CLICK_SCRIPT, space_keys=searched)
    assert obj.base_params == {"lr": 0.01, "sizes": [64, 32], "use_bn": False, "shuffle": True}
    assert "tag" not in obj.options
    out = obj.run(0, {key: obj.base_params[key] for key in searched}, lambda s, v: False)
    assert (out["argv"], out["seen"]) == ("--learning-rate=0.01 --sizes 64 32 --shuffle", "0.01 [64, 32] False True")
    out = obj.run(1, {"lr": 0.5, "sizes": [8, 4], "use_bn": True, "shuffle": False}, lambda s, v: False)
    assert (out["argv"], out["seen"]) == ("--learning-rate=0.5 --sizes 8 4 --use-bn --no-shuffle",
                                          "0.5 [8, 4] True False")


TYPER_SCRIPT = """\
import json, sys
from typing import Annotated, Optional

import typer

app = typer.Typer()


@app.command()
def main(lr: float = 0.01,
         hidden_size: int = typer.Option(64, "--hidden"),
         use_bn: bool = False,
         force: Annotated[bool, typer.Option("--force")] = False,
         dropout: Annotated[float, typer.Option(help="rate")] = 0.1,
         seed: Optional[int] = typer.Option(...),
         name: str = typer.Argument("x"),
         tags: list[str] = typer.Option([]),
         accept: bool = typer.Option(True, "--accept/--reject")):
    seen = f"{lr} {hidden_size} {use_bn} {force} {dropout} {seed}"
    print(json.dumps({"loss": lr, "argv": " ".join(sys.argv[1:]), "seen": seen}))


if __name__ == "__main__":
    app()
"""


def test_a_typer_commands_parameters_are_read_like_click_options(tmp_path: Path) -> None:
    """typer: a parameter with a default is an option (`use_bn` is `--use-bn/--no-use-bn`, a bool named without a
    slash a flag), its default the base; arguments, lists and `--accept/--reject` are not {args} options. Before,
    a key the params left out was refused, and `use_bn` given there was passed as `--use_bn=False`, which typer
    refuses ("No such option")."""
    searched = ("lr", "hidden_size", "use_bn", "force", "dropout")
    obj = command(tmp_path, f"{PYTHON} train.py {{args}} --seed=1", {}, TYPER_SCRIPT, space_keys=searched)
    assert obj.base_params == {"lr": 0.01, "hidden_size": 64, "use_bn": False, "force": False, "dropout": 0.1}
    assert {k: v[:2] for k, v in obj.options.items()} == {
        "lr": ("--lr", "value"), "hidden": ("--hidden", "value"), "hidden_size": ("--hidden", "value"),
        "use-bn": ("--use-bn", "optional"), "use_bn": ("--use-bn", "optional"), "force": ("--force", "store"),
        "dropout": ("--dropout", "value"), "seed": ("--seed", "value")}
    assert obj.options["seed"].default is None  # typer.Option(...): required, no default
    out = obj.run(0, {key: obj.base_params[key] for key in searched}, lambda s, v: False)
    assert (out["argv"], out["seen"]) == ("--lr=0.01 --hidden=64 --no-use-bn --dropout=0.1 --seed=1",
                                          "0.01 64 False False 0.1 1")
    out = obj.run(1, {"lr": 0.5, "hidden_size": 8, "use_bn": True, "force": True, "dropout": 0.2}, lambda s, v: False)
    assert (out["argv"], out["seen"]) == ("--lr=0.5 --hidden=8 --use-bn --force --dropout=0.2 --seed=1",
                                          "0.5 8 True True 0.2 1")
    # `typer.run(main)` makes main a command too; a module that does not import typer is not read this way
    (tmp_path / "train.py").write_text("import typer\n\ndef main(width: int = 3, fast: bool = True):\n"
                                       "    pass\n\ntyper.run(main)\n")
    assert argparse_options([tmp_path / "train.py"]) == {
        "width": ArgOption("--width", "value", (3,), "int"), "fast": ArgOption("--fast", "optional", (True,))}
    (tmp_path / "train.py").write_text("import typer\n\ndef main(width: int = 3):\n    pass\n\n"
                                       "typer.Typer().command()(main)\n")
    assert argparse_options([tmp_path / "train.py"]) == {"width": ArgOption("--width", "value", (3,), "int")}
    (tmp_path / "train.py").write_text("def main(width: int = 3):\n    pass\n\nrun(main)\n")
    assert argparse_options([tmp_path / "train.py"]) == {}


def test_a_typer_enum_default_is_its_value_and_an_option_without_a_literal_default_is_named(
        tmp_path: Path) -> None:
    """`opt: Optim = Optim.adam` starts at "adam" (it was refused as "no option of train.py gives it a literal
    default (did you mean opt?)"); an option whose default is not a literal is named as such."""
    body = ("import enum, typer\n\nclass Optim(str, enum.Enum):\n    adam = 'adam'\n    sgd = 'sgd'\n\n"
            "def main(opt: Optim = Optim.adam, width: int = len('abc')):\n    print('loss 1')\n\ntyper.run(main)\n")
    obj = command(tmp_path, f"{PYTHON} train.py {{args}}", {}, body, space_keys=("opt",))
    assert obj.base_params == {"opt": "adam"} and obj.options["opt"].choices == ("adam", "sgd")
    obj.validate()
    # a parser of its own takes what it takes (`--size=64k` for an int): not checked as an int
    parsed = body.replace("width: int = len('abc')", "size: int = typer.Option(32, parser=parse_size)")
    parsed = parsed.replace("def main", "def parse_size(text):\n    return int(text.rstrip('k')) * 1024\n\n\ndef main")
    obj = command(tmp_path, f"{PYTHON} train.py {{args}}", {"size": "32k"}, parsed, space_keys=("size",))
    assert (obj.options["size"].type, obj.options["size"].choices) == (None, None)
    obj = command(tmp_path, f"{PYTHON} train.py {{args}}", {}, body, space_keys=("width",))
    with pytest.raises(UsageError) as caught:
        obj.validate()
    assert str(caught.value) == ("search.space.width: not a key of objective.params, and train.py's --width has no "
                                 "default written as a literal (read from the source, not run)")


FIRE_SCRIPT = """\
import fire


def main(data, lr=0.01, hidden_sizes=(64, 32), use_bn=False, optimizer="sgd", *, epochs: int = 3):
    pass


if __name__ == "__main__":
    fire.Fire(main)
"""


def test_a_fire_scripts_defaults_are_read_and_its_values_written_as_python_literals(tmp_path: Path) -> None:
    """python-fire reads `--use_bn=false` as the string "false" (true) and `--optimizer=1e-3` as a float: its
    options are given Python literals. (Checked against fire 0.7.1: `--use_bn=False --optimizer='adam'
    --hidden_sizes=[8, 4]` reach main as False, "adam", [8, 4].)"""
    searched = ("lr", "hidden_sizes", "use_bn", "optimizer", "epochs")
    obj = command(tmp_path, f"{PYTHON} train.py {{args}} --data=x.csv", {}, FIRE_SCRIPT, space_keys=searched)
    assert obj.base_params == {"lr": 0.01, "hidden_sizes": [64, 32], "use_bn": False, "optimizer": "sgd",
                               "epochs": 3}
    assert "data" not in obj.options and obj.options["use-bn"] == ArgOption("--use_bn", "python", (False,))
    values = {"lr": 0.5, "hidden_sizes": [8, 4], "use_bn": False, "optimizer": "1e-3", "epochs": 2}
    assert obj.argv("p.json", values)[2:] == ["--lr=0.5", "--hidden_sizes=[8, 4]", "--use_bn=False",
                                              "--optimizer='1e-3'", "--epochs=2", "--data=x.csv"]
    (tmp_path / "train.py").write_text(FIRE_SCRIPT.replace("import fire\n", ""))  # no fire imported: not read
    assert argparse_options([tmp_path / "train.py"]) == {}
    # a positional-only parameter with a default (not an option) beside the rest; this was a ValueError
    (tmp_path / "train.py").write_text("import fire\n\n\ndef main(a=1, /, b=2, *, c=3):\n    pass\n\n\n"
                                       "fire.Fire(main)\n")
    assert argparse_options([tmp_path / "train.py"]) == {
        "b": ArgOption("--b", "python", (2,)), "c": ArgOption("--c", "python", (3,))}


TYRO_SCRIPT = """\
from dataclasses import dataclass, field
from typing import Optional

import tyro


@dataclass
class Config:
    data: str
    lr: float = 0.01
    hidden_sizes: tuple[int, ...] = (64, 32)
    use_bn: bool = False
    width: Optional[int] = field(default=8)
    tags: list[str] = field(default_factory=list)


def main(epochs: int = 3, use_amp: bool = True) -> None:
    pass


if __name__ == "__main__":
    tyro.cli(Config) if len(__import__("sys").argv) > 3 else tyro.cli(main)
"""


def test_a_tyro_configs_fields_are_read_with_dashes_switches_and_lists(tmp_path: Path) -> None:
    """tyro (a dataclass or a function given to tyro.cli): `--use-bn` / `--no-use-bn`, a tuple's values as words,
    `--lr=...`; before, `--use_bn=true` was "Unrecognized options: true". (Checked against tyro 1.0.17:
    `--no-use-bn --hidden-sizes 8 4` reach the config as False, (8, 4).)"""
    searched = ("lr", "hidden_sizes", "use_bn", "width", "epochs", "use_amp")
    obj = command(tmp_path, f"{PYTHON} train.py --data=x {{args}}", {}, TYRO_SCRIPT, space_keys=searched)
    assert obj.base_params == {"lr": 0.01, "hidden_sizes": [64, 32], "use_bn": False, "width": 8, "epochs": 3,
                               "use_amp": True}
    assert obj.options["tags"] == ArgOption("--tags", "list", None) and obj.options["data"].default is None
    # what tyro refuses (`--lr=fast`) is checked before trial 0 as for argparse; Optional[int]: not checked
    assert (obj.options["width"].type, obj.options["lr"].type, obj.options["data"].type) == (None, "float", None)
    values = {"lr": 0.5, "hidden_sizes": [8, 4], "use_bn": False, "width": 4, "epochs": 2, "use_amp": True}
    assert obj.argv("p.json", values)[2:] == ["--data=x", "--lr=0.5", "--hidden-sizes", "8", "4", "--no-use-bn",
                                              "--width=4", "--epochs=2", "--use-amp"]


def test_a_config_class_imported_from_another_module_is_read_where_it_is_defined(tmp_path: Path) -> None:
    """`tyro.cli(TrainConfig)` with the dataclass in config.py (which does not import tyro) is read there; a `main`
    of a helper module is not mistaken for the `main` the script defines and gives to typer.run."""
    (tmp_path / "config.py").write_text("from dataclasses import dataclass\n\n\n@dataclass\nclass TrainConfig:\n"
                                        "    lr: float = 0.01\n    use_bn: bool = False\n")
    (tmp_path / "helpers.py").write_text("def main(width=4):\n    pass\n")
    script = ("import tyro, typer\nfrom config import TrainConfig\nimport helpers\n\n\ndef main(depth: int = 2):\n"
              "    pass\n\n\ncfg = tyro.cli(TrainConfig)\ntyper.run(main)\n")
    obj = command(tmp_path, f"{PYTHON} train.py {{args}}", {}, script, space_keys=("lr", "use_bn", "depth"))
    assert obj.base_params == {"lr": 0.01, "use_bn": False, "depth": 2}
    assert obj.options["use_bn"] == ArgOption("--use-bn", "optional", (False,)) and "width" not in obj.options


LIGHTNING_SCRIPT = """\
import lightning as L
from lightning.pytorch.cli import LightningCLI

from data import Data


class Regressor(L.LightningModule):
    def __init__(self, depth: int, hidden: int = 16, learning_rate: float = 0.01, dropout: float | None = None,
                 sizes: tuple[int, ...] = (8, 4), use_bn: bool = False):
        super().__init__()


if __name__ == "__main__":
    LightningCLI(Regressor, datamodule_class=Data)
"""


def test_a_lightning_clis_model_and_data_options_are_read(tmp_path: Path) -> None:
    """`LightningCLI(Model, Data)` (jsonargparse): each `__init__` parameter of the model is `--model.<name>`, of
    the data module `--data.<name>` (here imported from data.py), given `--model.learning_rate=0.02`; a bool as
    `true` / `false` and a tuple as a JSON list, which jsonargparse parses. (Checked against Lightning 2.6.6 with
    jsonargparse 4.53: `fit --model.learning_rate=0.02 --model.use_bn=true --model.sizes=[8,4]` trains.) Before,
    `{args}` found none of them: "not a key of objective.params"."""
    (tmp_path / "data.py").write_text("import lightning as L\n\n\nclass Data(L.LightningDataModule):\n"
                                      "    def __init__(self, batch_size: int = 32):\n        super().__init__()\n")
    searched = ("model.learning_rate", "model.hidden", "model.use_bn", "model.sizes", "data.batch_size")
    obj = command(tmp_path, f"{PYTHON} train.py fit {{args}}", {}, LIGHTNING_SCRIPT, space_keys=searched)
    assert obj.base_params == {"model.learning_rate": 0.01, "model.hidden": 16, "model.use_bn": False,
                               "model.sizes": [8, 4], "data.batch_size": 32}
    assert obj.options["model.dropout"] == ArgOption("--model.dropout", "value", (None,))
    assert obj.options["model.depth"].default is None and "hidden" not in obj.options  # no prefix-less name
    values = {"model.learning_rate": 0.02, "model.hidden": 8, "model.use_bn": True, "model.sizes": [4],
              "data.batch_size": 8}
    assert obj.argv("p.json", values)[3:] == ["--model.learning_rate=0.02", "--model.hidden=8", "--model.use_bn=true",
                                              "--model.sizes=[4]", "--data.batch_size=8"]


def test_a_lightning_model_without_an_init_of_its_own_is_read_from_its_base(tmp_path: Path) -> None:
    """`class Child(Regressor)` adding a step only: jsonargparse reads the base's `__init__` (model.py here), and so
    does `{args}`; a positional-only `self` does not take the first parameter with it."""
    (tmp_path / "model.py").write_text("import lightning as L\n\n\nclass Regressor(L.LightningModule):\n"
                                       "    def __init__(self, /, lr: float = 0.1, width: int = 8):\n"
                                       "        super().__init__()\n")
    script = ("from lightning.pytorch.cli import LightningCLI\nfrom model import Regressor\n\n\n"
              "class Child(Regressor):\n    def validation_step(self, batch, i):\n        pass\n\n\n"
              "LightningCLI(Child)\n")
    obj = command(tmp_path, f"{PYTHON} train.py fit {{args}}", {}, script, space_keys=("model.lr", "model.width"))
    assert obj.base_params == {"model.lr": 0.1, "model.width": 8}


def test_a_jsonargparse_cli_functions_parameters_are_read(tmp_path: Path) -> None:
    """`jsonargparse.CLI(main)` / `auto_cli(main)`: each parameter with a default is `--<name>` as written
    (underscores kept); one without is a positional argument (`train.py 3`), not an option: `--depth=3` was
    "unrecognized arguments"."""
    script = ("from jsonargparse import auto_cli\n\n\ndef main(depth: int, learning_rate: float = 0.1, "
              "epochs: int = 3, name=None):\n    pass\n\n\nauto_cli(main)\n")
    obj = command(tmp_path, f"{PYTHON} train.py 3 {{args}}", {}, script, space_keys=("learning_rate", "epochs"))
    assert obj.base_params == {"learning_rate": 0.1, "epochs": 3} and "depth" not in obj.options
    assert (obj.options["epochs"].type, obj.options["name"].type) == ("int", None)
    assert obj.argv("p.json", {"learning_rate": 0.5, "epochs": 2})[3:] == ["--learning_rate=0.5", "--epochs=2"]
    # the same call without jsonargparse imported is some other `auto_cli`: nothing is read
    obj = command(tmp_path, f"{PYTHON} train.py {{args}}", {"epochs": 1}, script.replace("jsonargparse", "mycli"))
    assert obj.options == {}


def test_a_short_option_alone_gets_its_value_as_a_word_of_its_own(tmp_path: Path) -> None:
    # click reads `-l=0.5` as "=0.5" ("'=0.5' is not a valid float"); `-l 0.5` is what click and argparse both take
    script = ("import json, sys\nimport click\n\n\n@click.command()\n@click.option('-l', type=float, default=0.1)\n"
              "def main(l):\n    print(json.dumps({'loss': l, 'argv': ' '.join(sys.argv[1:])}))\n\n\nmain()\n")
    obj = command(tmp_path, f"{PYTHON} train.py {{args}}", {}, script, space_keys=("l",))
    out = obj.run(0, {"l": 0.5}, lambda s, v: False)
    assert (out["argv"], out["loss"]) == ("-l 0.5", 0.5)


CLICK_GROUP = """\
import json
import click


@click.group()
def cli():
    pass


@cli.command()
@click.option("--batch-size", type=int, default=32)
@click.option("--use-bn", is_flag=True)
def train(batch_size, use_bn):
    print(json.dumps({"loss": batch_size / 32 + use_bn}))


@cli.command("eval")
@click.option("--batch-size", type=int, default=64)
@click.option("--use-bn/--no-use-bn", default=True)
def evaluate(batch_size, use_bn):
    pass


cli()
"""


def test_the_subcommand_the_command_names_is_the_one_read(tmp_path: Path) -> None:
    """A click group's or typer app's commands may share option names with other defaults and kinds: the one the
    command names (`cli.py train`) is read alone. Before, the two defaults cancelled out and the searched key was
    refused ("no option gives it a literal default")."""
    obj = command(tmp_path, f"{PYTHON} train.py train {{args}}", {}, CLICK_GROUP, space_keys=("batch_size", "use_bn"))
    assert obj.base_params == {"batch_size": 32, "use_bn": False}
    assert obj.run(0, {"batch_size": 16, "use_bn": True}, lambda s, v: False)["loss"] == 1.5  # --use-bn, a flag
    obj = command(tmp_path, f"{PYTHON} train.py eval {{args}}", {}, CLICK_GROUP, space_keys=("batch_size", "use_bn"))
    assert obj.base_params == {"batch_size": 64, "use_bn": True} and obj.options["use_bn"].kind == "optional"
    typer_app = ("import typer\napp = typer.Typer()\n\n\n@app.command()\ndef train(batch_size: int = 32):\n    pass\n"
                 "\n\n@app.command()\ndef fine_tune(batch_size: int = 8):\n    pass\n\n\napp()\n")
    obj = command(tmp_path, f"{PYTHON} train.py fine-tune {{args}}", {}, typer_app, space_keys=("batch_size",))
    assert obj.base_params == {"batch_size": 8}
    obj = command(tmp_path, f"{PYTHON} train.py {{args}}", {}, typer_app, space_keys=("batch_size",))
    assert obj.options["batch_size"].default is None  # no command named: both read, their defaults differ
    # the commands in modules of their own, added to the group by the script
    (tmp_path / "cmds.py").write_text("import click\n\n\n@click.command()\n@click.option('--batch-size', default=32)\n"
                                      "def train(batch_size):\n    pass\n")
    (tmp_path / "evals.py").write_text("import click\n\n\n@click.command('eval')\n"
                                       "@click.option('--batch-size', default=64)\n"
                                       "def evaluate(batch_size):\n    pass\n")
    group = ("import click\nfrom cmds import train\nfrom evals import evaluate\n\n\n@click.group()\ndef cli():\n"
             "    pass\n\n\ncli.add_command(train)\ncli.add_command(evaluate)\ncli()\n")
    obj = command(tmp_path, f"{PYTHON} train.py eval {{args}}", {}, group, space_keys=("batch_size",))
    assert obj.base_params == {"batch_size": 64}


def test_a_search_without_params_starts_at_the_scripts_defaults(tmp_path: Path) -> None:
    """The whole search: no objective.params, trial 0 passes the script's defaults, the rest differ from them."""
    from agentlab.nas.run import run_nas_optimization

    (tmp_path / "train.py").write_text(ARGPARSE_DEFAULTS)
    config = {"objective": {"command": f"{PYTHON} train.py {{args}}", "metric": "loss", "cwd": str(tmp_path)},
              "search": {"planner": "random", "pruner": "none", "seed": 0,
                         "space": {"lr": {"low": 0.001, "high": 0.1, "log": True},
                                   "hidden_sizes": {"choices": [[64, 64], [128]]}}}}
    results = run_nas_optimization(max_iterations=3, config=config, out=tmp_path / "run")
    trials = tmp_path / "run" / "trials"
    assert (trials / "run_0000" / "command.txt").read_text().endswith(
        "train.py --learning-rate=0.01 --hidden-sizes 64 64\n")
    assert results["trials"] == 3 and (trials / "run_0002" / "command.txt").is_file()


def test_a_conditional_key_left_out_of_a_trial_is_not_passed(tmp_path: Path) -> None:
    # Hydra: `model.degree=2` with model=ridge is "Key 'degree' is not in struct" (exit 1): a conditional key the
    # trial leaves out (its condition does not hold) is not passed with its base value either
    base = {"model": "ridge", "model.degree": 2, "lr": 0.1}
    obj = command(tmp_path, f"{PYTHON} train.py {{overrides}}", base, ECHO_ARGS,
                  space_keys=("model", "model.degree", "lr"))
    assert obj.run(0, {"model": "ridge", "lr": 0.1}, lambda s, v: False)["argv"] == "model=ridge lr=0.1"
    assert obj.run(1, {"model": "poly", "model.degree": 3, "lr": 0.1},
                   lambda s, v: False)["argv"] == "model=poly model.degree=3 lr=0.1"


def test_the_stderr_line_that_says_what_went_wrong() -> None:
    # the last line always, preceded by the line that says what went wrong when that is another one (Hydra's last
    # line is its hint, "Set the environment variable HYDRA_FULL_ERROR=1 ...")
    from agentlab.core.search.records import reason_line

    def said(tail: str) -> str:
        return reason_line("failed: exit code 1 after 0.3 s; stderr (last 6 lines):\n" + tail).split("stderr: ")[1]

    hint = "Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace."
    hydra = f"Could not override 'model.degree'.\nKey 'degree' is not in struct\n    full_key: model.degree\n\n{hint}"
    assert said(hydra) == f"Could not override 'model.degree'. | {hint}"
    traceback = ('epoch 1 error rate 0.2\nTraceback (most recent call last):\n  File "train.py", line 3\n'
                 "    raise ValueError\nValueError: lr must be positive\n")
    assert said(traceback) == "ValueError: lr must be positive"
    assert said("usage: train.py [-h]\ntrain.py: error: unrecognized arguments: --foo=1") == \
        "train.py: error: unrecognized arguments: --foo=1"
    # a metric, a warning, a logged line with "error: <number>", a line that merely names an exception: not it
    assert said("MeanSquaredError: 0.52\nINFO:root:val error: 0.29\nx.py:3: RuntimeWarning: cannot cast\nKilled") \
        == "Killed"
    caught = ('Traceback (most recent call last):\n  File "a.py", line 1\nFileNotFoundError: cache.json\n'
              "Segmentation fault")
    assert said(caught) == "FileNotFoundError: cache.json | Segmentation fault"  # the last line is always there


COLOURED = """\
import sys
for epoch in (1, 2):
    print(f"\\033[36mepoch {epoch}:\\033[0m loss=\\033[1m{1 / epoch}\\033[0m", flush=True)
if "--fail" in sys.argv:
    print("\\033[31mRuntimeError: out of memory\\033[0m", file=sys.stderr)
    sys.exit(1)
print("\\033[32mloss: 0.25\\033[0m")
"""


def test_a_script_that_colours_its_output_into_the_pipe_is_read_without_the_colours(tmp_path: Path) -> None:
    steps: list[tuple[int, float]] = []
    obj = command(tmp_path, f"{PYTHON} train.py", {}, COLOURED)
    out = obj.run(1, {}, lambda step, value: steps.append((step, value)) is not None)
    assert out["value"] == 0.25 and steps == [(1, 1.0), (2, 0.5)]
    assert "\x1b[32m" in (tmp_path / "run" / "trials" / "run_0001" / "stdout.log").read_text()  # the log as printed
    obj = command(tmp_path, f"{PYTHON} train.py --fail", {}, COLOURED)
    with pytest.raises(TrialFailed) as failed:
        obj.run(2, {}, lambda step, value: False)
    assert "RuntimeError: out of memory" in str(failed.value) and "\x1b" not in str(failed.value)


def test_args_inside_a_word_is_refused(tmp_path: Path) -> None:
    obj = command(tmp_path, f"{PYTHON} train.py --x{{args}}", {"lr": 0.1}, ECHO_ARGS, space_keys=("lr",))
    with pytest.raises(UsageError, match="a word of its own"):
        obj.validate()


# --------------------------------------------------------------------------- results as text


@pytest.mark.parametrize(("line", "found"), [
    ("final val_loss: 0.52 test_mse: 0.61", ({"val_loss": 0.52, "test_mse": 0.61}, None)),
    ("val_loss=0.5", ({"val_loss": 0.5}, None)),
    ("Epoch 3/10 - val_loss: 1.5e-2", ({"val_loss": 0.015}, 3)),
    ("step 40: train_loss=0.3 val_loss=0.4", ({"train_loss": 0.3, "val_loss": 0.4}, 40)),
    ("best_val_loss: 0.2", None),  # another metric: not this one
    ("Best val_loss: 0.21 at epoch 7", ({"val_loss": 0.21}, None)),  # names an epoch after the metric: final
    ("done, val_loss: 0.41.", ({"val_loss": 0.41}, None)),  # a sentence's full stop
    ("val_loss is low", None),
    # a tensor or NumPy scalar printed as it is (`print(f"val_loss: {loss}")`, a dict printed whole)
    ("val_loss: tensor(0.3100)", ({"val_loss": 0.31}, None)),
    ("{'val_loss': tensor(0.3100, grad_fn=<MeanBackward0>), 'epoch': 2}", ({"val_loss": 0.31}, 2)),
    ("{'val_loss': np.float64(0.25), 'acc': np.float32(0.9)}", ({"val_loss": 0.25, "acc": 0.9}, None)),
])
def test_text_result_lines(line: str, found: Any) -> None:
    assert text_metrics(line, "val_loss") == found


@pytest.mark.parametrize(("line", "metric", "found"), [
    # PyTorch's MNIST example: a count over its total is their fraction, not the count
    ("Test set: Average loss: 0.0340, Accuracy: 9890/10000 (99%)", "Accuracy", ({"loss": 0.034, "Accuracy": 0.989},
                                                                               None)),
    ("Validation accuracy: 45/50", "Validation accuracy", ({"Validation accuracy": 0.9}, None)),
    ("Accuracy: 9890/10000.", "Accuracy", ({"Accuracy": 0.989}, None)),  # a sentence's full stop
    ("Accuracy 9890/10000", "Accuracy", ({"Accuracy": 0.989}, None)),  # apart by a space
    ("val_loss: 0.41/0.52", "val_loss", ({"val_loss": 0.41}, None)),  # two values: the first, as before
    ("Epoch: 3/10 val_loss: 0.4", "val_loss", ({"val_loss": 0.4}, 3)),  # the step, whatever its case, is no metric
])
def test_a_count_over_its_total_and_a_step_named_in_capitals(line: str, metric: str, found: Any) -> None:
    assert text_metrics(line, metric) == found


PRINTS = """\
import sys
for epoch in range(1, 4):
    print(f"epoch {epoch}: val_loss={4 - epoch:.3f}", flush=True)
print("final accuracy: 0.81")
print("val_loss: 0.75 test_mse: 0.9")
"""


def test_a_script_printing_text_gives_its_result_and_its_curve(tmp_path: Path) -> None:
    seen: list[tuple[int, float]] = []
    obj = command(tmp_path, f"{PYTHON} train.py", {}, PRINTS, metric="val_loss")
    out = obj.run(0, {}, lambda step, value: seen.append((step, value)) or False)
    assert out["value"] == 0.75 and out["test_mse"] == 0.9
    assert seen == [(1, 3.0), (2, 2.0), (3, 1.0)]
    obj = command(tmp_path, f"{PYTHON} train.py", {}, PRINTS, metric="val_loss")
    with pytest.raises(Pruned):
        obj.run(1, {}, lambda step, value: step >= 2)
    obj = command(tmp_path, f"{PYTHON} train.py", {}, PRINTS, metric="accuracy")
    assert obj.run(2, {}, lambda s, v: False)["value"] == 0.81


LOGGING = """\
import logging, sys, time
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")  # to stderr
for epoch in range(1, 4):
    logging.info("epoch %d | train_loss %.3f | val_loss %.3f", epoch, 5 - epoch, 4 - epoch)
    time.sleep(0.05)
print("saving", flush=True)
logging.info("done. val_loss 0.75")
"""
BAR = """\
import sys
for epoch in range(1, 3):  # a progress bar on stderr: one line of updates after carriage returns per epoch
    for done, loss in ((1, 9.0), (2, 5.0 / epoch)):
        sys.stderr.write(f"\\rEpoch {epoch}: {50 * done}%|#####| {done}/2 [val_loss={loss}]")
    sys.stderr.write("\\n")
print("val_loss: 1.5")
"""


def test_step_lines_on_stderr_give_the_curve_and_reach_the_pruner(tmp_path: Path) -> None:
    """A script that reports through `logging` (stderr): its epochs were read only for the result, so its trials
    had no learning curve and were never pruned."""
    seen: list[tuple[int, float]] = []
    obj = command(tmp_path, f"{PYTHON} train.py", {}, LOGGING, metric="val_loss")
    out = obj.run(0, {}, lambda step, value: seen.append((step, value)) or False)
    assert out["value"] == 0.75 and seen == [(1, 3.0), (2, 2.0), (3, 1.0)]
    history = json.loads((tmp_path / "run" / "trials" / "run_0000" / "history.json").read_text())
    assert history == [{"step": 1, "val_loss": 3.0}, {"step": 2, "val_loss": 2.0}, {"step": 3, "val_loss": 1.0}]
    assert "epoch 1 | train_loss" in (tmp_path / "run" / "trials" / "run_0000" / "stderr.log").read_text()
    obj = command(tmp_path, f"{PYTHON} train.py", {}, LOGGING, metric="val_loss")
    with pytest.raises(Pruned):
        obj.run(1, {}, lambda step, value: step >= 2)

    obj = command(tmp_path, f"{PYTHON} train.py", {}, BAR, metric="val_loss")
    assert obj.run(2, {}, lambda s, v: False)["value"] == 1.5  # stdout's final line first
    history = json.loads((tmp_path / "run" / "trials" / "run_0002" / "history.json").read_text())
    assert [(h["step"], h["val_loss"]) for h in history] == [(1, 5.0), (2, 2.5)]  # each epoch's last update

    late = "import os, sys, time\nos.close(1)\n" + "".join(  # stdout closed first: stderr is read to its end
        f"time.sleep(0.1)\nprint('epoch {e} | val_loss {4 - e}', file=sys.stderr, flush=True)\n" for e in (1, 2, 3))
    obj = command(tmp_path, f"{PYTHON} train.py", {}, late, metric="val_loss")
    assert obj.run(3, {}, lambda s, v: False)["value"] == 1.0
    assert len(json.loads((tmp_path / "run" / "trials" / "run_0003" / "history.json").read_text())) == 3


KERAS = """\
for epoch in range(1, 4):  # Keras 3's fit() when its output is no terminal: the epoch, its first batch, its end
    print(f"Epoch {epoch}/3")
    print(f"\\x1b[1m1/7\\x1b[0m ━━━━━━━━━━━━━━━━━━━━ 0s 10ms/step - loss: {9.0 / epoch:.4f}\\b\\b\\b")
    print(f"7/7 ━━━━━━━━━━━━━━━━━━━━ 0s 4ms/step - loss: {2.0 / epoch:.4f} - val_loss: {1.0 / epoch:.4f}")
print("2/2 ━━━━━━━━━━━━━━━━━━━━ 0s 3ms/step - loss: 0.3000")  # evaluate()
"""


def test_keras_epoch_lines_give_the_curve(tmp_path: Path) -> None:
    """Keras names the epoch on a line of its own: its lines were final results, with no curve and no pruning."""
    seen: list[tuple[int, float]] = []
    obj = command(tmp_path, f"{PYTHON} train.py", {}, KERAS, metric="val_loss")
    out = obj.run(0, {}, lambda step, value: seen.append((step, value)) or False)
    assert out["value"] == 0.3333 and seen == [(1, 1.0), (2, 0.5), (3, 0.3333)]
    history = json.loads((tmp_path / "run" / "trials" / "run_0000" / "history.json").read_text())
    assert [(h["step"], h["val_loss"]) for h in history] == [(1, 1.0), (2, 0.5), (3, 0.3333)]
    seen.clear()
    obj = command(tmp_path, f"{PYTHON} train.py", {}, KERAS, metric="loss")
    assert obj.run(1, {}, lambda step, value: seen.append((step, value)) or False)["value"] == 0.3  # evaluate()'s
    assert seen == [(1, 2.0), (2, 1.0), (3, 0.3)]  # each epoch's last line, not its first batch's


def test_a_progress_bar_without_a_newline_reaches_the_pruner_as_it_draws(tmp_path: Path) -> None:
    """A bar redrawn after carriage returns writes no newline for a whole epoch: its updates are read as they come,
    and an epoch's last state reaches the pruner when the next epoch starts (its first state shows the validation
    of the epoch before), so the pruner stops a trial mid-epoch on the right value, and the log holds what was
    drawn."""
    bar = ("import sys, time\n"
           "for epoch, states in ((1, (9.5, 9.0)), (2, (9.0, 8.0)), (3, (8.0, 8.0))):\n"
           "    for loss in states:\n"
           "        sys.stderr.write(f'\\rEpoch {epoch}: 50%| [val_loss={loss}]'); sys.stderr.flush()\n"
           "        time.sleep(0.05)\n"
           "time.sleep(60)\n")
    seen: list[tuple[int, float]] = []
    obj = command(tmp_path, f"{PYTHON} train.py", {}, bar, metric="val_loss")
    start = time.monotonic()
    with pytest.raises(Pruned):
        obj.run(0, {}, lambda step, value: seen.append((step, value)) or step >= 2)
    assert time.monotonic() - start < 30 and seen == [(1, 9.0), (2, 8.0)]
    assert "Epoch 3: 50%" in (tmp_path / "run" / "trials" / "run_0000" / "stderr.log").read_text()


LIGHTNING = """\
print("┃      Validate metric      ┃       DataLoader 0        ┃")
print("│         val_loss          │     2.312345676422119     │")  # trainer.validate() before fit()
for epoch in range(3):
    print(f"Epoch {epoch}: 100%|##########| 5/5 [00:00<00:00, v_num=0, val_loss={1.0 - 0.2 * epoch:.3f}]")
"""


def test_a_table_row_before_training_is_not_the_result(tmp_path: Path) -> None:
    obj = command(tmp_path, f"{PYTHON} train.py", {}, LIGHTNING, metric="val_loss")
    assert obj.run(0, {}, lambda s, v: False)["value"] == 0.6  # the last epoch's, not the untrained model's
    after = LIGHTNING + 'print("│         val_loss          │     0.55     │")\n'  # trainer.test() after fit()
    obj = command(tmp_path, f"{PYTHON} train.py", {}, after, metric="val_loss")
    assert obj.run(1, {}, lambda s, v: False)["value"] == 0.55


def test_no_result_names_every_place_looked(tmp_path: Path) -> None:
    obj = command(tmp_path, f"{PYTHON} train.py", {}, "print('done')\n", metric="val_loss")
    with pytest.raises(TrialFailed) as err:
        obj.run(0, {}, lambda s, v: False)
    said = str(err.value)
    assert "JSON object" in said and "metrics.json written by the trial" in said and "val_loss: <number>" in said
    assert "stdout or stderr" in said


def test_metrics_json_in_the_workspace_counts_but_not_a_stale_one(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text("import json\njson.dump({'loss': 0.25}, open('metrics.json', 'w'))\n")
    spaces = Workspaces(project, tmp_path / "run" / "workspaces", "r")
    spaces.prepare()
    obj = CommandObjective(spec(f"{PYTHON} train.py"), cwd=project, workspaces=spaces,
                           trial_dir=lambda n: tmp_path / "run" / "trials" / f"run_{n:04d}")
    assert obj.run(0, {}, lambda s, v: False)["value"] == 0.25
    assert not (project / "metrics.json").exists()  # written in the workspace, never in the user's folder
    (project / "metrics.json").write_text(json.dumps({"loss": 9.0}))  # a stale one in the project
    (project / "train.py").write_text("print('forgot to write it')\n")
    spaces = Workspaces(project, tmp_path / "run2" / "workspaces", "r2")  # the next search: the files as they are
    spaces.prepare()
    obj = CommandObjective(spec(f"{PYTHON} train.py"), cwd=project, workspaces=spaces,
                           trial_dir=lambda n: tmp_path / "run2" / "trials" / f"run_{n:04d}")
    with pytest.raises(TrialFailed, match="no result"):
        obj.run(1, {}, lambda s, v: False)


IGNORES = "import json\nprint(json.dumps({'loss': 0.5}))\n"


def test_a_command_that_ignores_its_params_is_warned_about_once(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    obj = command(tmp_path, f"{PYTHON} train.py", {"lr": 0.1}, IGNORES, space_keys=("lr",))
    for n, lr in enumerate((0.1, 0.2, 0.3)):
        obj.run(n, {"lr": lr}, lambda s, v: False)
    assert obj.ignored_params is not None and "ignores" in obj.ignored_params
    assert sum("ignores" in r.message for r in caplog.records) == 1
    uses = command(tmp_path, f"{PYTHON} train.py {{args}}", {"lr": 0.1}, IGNORES, space_keys=("lr",))
    for n, lr in enumerate((0.1, 0.2)):
        uses.run(10 + n, {"lr": lr}, lambda s, v: False)
    assert uses.ignored_params is None  # it is given them: same results may be the truth


def test_the_config_file_is_written_in_the_workspace_only(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "config.py").write_text(CONFIG_PY, encoding="utf-8")
    (project / "train.py").write_text("import json, config\nprint(json.dumps({'loss': config.training['lr']}))\n")
    spaces = Workspaces(project, tmp_path / "run" / "workspaces", "r")
    spaces.prepare()
    cfg = ConfigFile.load(project / "config.py")
    obj = CommandObjective(spec(f"{PYTHON} train.py"), cwd=project, workspaces=spaces, config=cfg,
                           space_keys=("training.lr",),
                           trial_dir=lambda n: tmp_path / "run" / "trials" / f"run_{n:04d}")
    obj.validate()
    assert obj.run(0, {"training.lr": 0.25}, lambda s, v: False)["value"] == 0.25
    assert (project / "config.py").read_text(encoding="utf-8") == CONFIG_PY
    used = (tmp_path / "run" / "trials" / "run_0000" / "config_used.py").read_text(encoding="utf-8")
    assert '"lr": 0.25,   # learning rate: keep this comment' in used
    assert not list((tmp_path / "run" / "workspaces").glob("trial_*"))  # removed once recorded
    bad = CommandObjective(spec(f"{PYTHON} train.py"), cwd=project, workspaces=spaces, config=cfg,
                           space_keys=("training.nope",), trial_dir=lambda n: tmp_path)
    with pytest.raises(ConfigFileError, match="config.py:5: no 'training.nope'"):
        bad.validate()


LOGS = """\
import logging
logging.basicConfig(level=logging.INFO)
logging.info("val_loss: 0.04")
"""


def test_a_result_logged_to_stderr_counts(tmp_path: Path) -> None:
    obj = command(tmp_path, f"{PYTHON} train.py", {}, LOGS, metric="val_loss")
    assert obj.run(0, {}, lambda s, v: False)["value"] == 0.04
    # as on stdout: an evaluation before training is not the result, the last per-epoch line is
    epochs = LOGS.replace('logging.info("val_loss: 0.04")', 'logging.info("val_loss: 2.31")\nfor e in range(3):\n'
                          '    logging.info(f"epoch {e}: val_loss={0.5 - 0.1 * e:.2f}")')
    obj = command(tmp_path, f"{PYTHON} train.py", {}, epochs, metric="val_loss")
    assert obj.run(1, {}, lambda s, v: False)["value"] == 0.3


def test_metrics_json_in_a_subfolder_of_the_workspace_and_a_committed_checkpoint(tmp_path: Path) -> None:
    """Hydra writes outputs/<date>/metrics.json; a data file with a checkpoint's suffix the project holds is data."""
    project = tmp_path / "project"
    (project / "assets").mkdir(parents=True)
    (project / "assets" / "vocab.pkl").write_bytes(b"data")
    (project / "train.py").write_text("import json, os\nos.makedirs('outputs/d1', exist_ok=True)\n"
                                      "json.dump({'loss': 0.5}, open('outputs/d1/metrics.json', 'w'))\n"
                                      "open('model.pt', 'wb').write(b'w')\n")
    spaces = Workspaces(project, tmp_path / "run" / "workspaces", "r")
    spaces.prepare()
    obj = CommandObjective(spec(f"{PYTHON} train.py"), cwd=project, workspaces=spaces,
                           trial_dir=lambda n: tmp_path / "run" / "trials" / f"run_{n:04d}")
    assert obj.run(0, {}, lambda s, v: False)["value"] == 0.5
    kept = sorted(p.name for p in (tmp_path / "run" / "trials" / "run_0000" / "checkpoint").rglob("*") if p.is_file())
    assert kept == ["model.pt"]


def test_only_changed_values_are_written_and_crlf_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "config.py"
    path.write_bytes(b'training = {\r\n    "lr": 1e-3,  # keep\r\n    "act": "tanh",\r\n}\r\n')
    cfg = ConfigFile.load(path)
    text = cfg.render({"training.act": "relu"})
    assert text == 'training = {\r\n    "lr": 1e-3,  # keep\r\n    "act": "relu",\r\n}\r\n'


@pytest.mark.parametrize(("name", "text", "key", "written"), [
    ("config.py", "lr = 0.01\nepochs = 3\n", "lr", "lr = 0.02\nepochs = 3\n"),
    ("params.json", '{"lr": 0.01, "epochs": 3}\n', "lr", '{"lr": 0.02, "epochs": 3}\n'),
    ("params.toml", "lr = 0.01\nepochs = 3\n", "lr", "lr = 0.02\nepochs = 3\n"),
    ("params.yaml", "lr: 0.01\nepochs: 3\n", "lr", "lr: 0.02\nepochs: 3\n")])
def test_a_byte_order_mark_is_read_past_and_written_back(tmp_path: Path, name: str, text: str, key: str,
                                                         written: str) -> None:
    """Windows editors start UTF-8 files with a BOM, which Python reads past: config.py was refused as "not valid
    Python (invalid non-printable character U+FEFF)", params.json as not valid JSON."""
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    cfg = ConfigFile.load(path)
    assert cfg.lookup(key) == (True, 0.01)
    assert cfg.render({key: 0.02}) == "\ufeff" + written and cfg.render({key: 0.01}) == "\ufeff" + text


@pytest.mark.parametrize("word", ["|", "&&", ">", "2>&1", ";"])
def test_a_shell_operator_in_the_command_is_refused_before_trial_0(tmp_path: Path, word: str) -> None:
    (tmp_path / "train.py").write_text("print('loss: 1')\n")
    obj = command(tmp_path, f"{PYTHON} train.py {word} tee log.txt", {"lr": 0.1}, "")
    with pytest.raises(UsageError, match=f"objective.command: '{re.escape(word)}' is a shell operator"):
        obj.validate_program()
    command(tmp_path, f"{PYTHON} train.py --sep '{word}'", {"lr": 0.1}, "").validate_program()  # quoted: a value


def test_no_result_names_what_the_trial_printed_and_the_nearest_name(tmp_path: Path) -> None:
    from agentlab.nas.command import printed_instead

    (tmp_path / "stdout.log").write_text('epoch 1: val_loss=0.3\nval_loss: 0.259 val_acc: 0.741\n{"f1": 0.5}\n')
    assert printed_instead("val_los", tmp_path) == "; it printed val_loss, val_acc, f1 (did you mean metric: val_loss?)"
    assert printed_instead("bleu", tmp_path) == "; it printed val_loss, val_acc, f1"
    assert printed_instead("bleu", tmp_path / "nothing") == ""
    (tmp_path / "stdout.log").write_text("lr: 0.1\n" * 150_000 + "loss: 1 loss: 2 val_loss: 0.3\n")  # 1.2 MB
    assert printed_instead("val_los", tmp_path) == "; it printed lr, loss, val_loss (did you mean metric: val_loss?)"
    # a word of a sentence before a number is no name it printed; `name number` that looks like a metric's is
    (tmp_path / "stdout.log").write_text("train done on 320 rows\nval_rmse: 0.1\nstep 250: val loss 2.08 top-1 0.7\n")
    assert printed_instead("val_mse", tmp_path) == ("; it printed val_rmse, val loss, top-1 "
                                                    "(did you mean metric: val_rmse?)")


def test_a_yaml_map_with_int_and_str_keys_takes_a_value(tmp_path: Path) -> None:
    """The read-back check compared the files' values sorted by key, which a map of int and str keys cannot be."""
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.1  # keep\nwidths:\n  1: 64\n  two: 32\n")
    cfg = ConfigFile.load(path)
    cfg.check_writable(["lr", "widths.two"])
    assert cfg.render({"lr": 0.2, "widths.two": 16}) == "lr: 0.2  # keep\nwidths:\n  1: 64\n  two: 16\n"


def test_a_yaml_merge_key_is_refused_before_trial_0(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("base: &b\n  lr: 0.1\ntrain:\n  <<: *b\n")
    cfg = ConfigFile.load(path)
    assert cfg.lookup("train.lr") == (True, 0.1)
    with pytest.raises(ConfigFileError, match=r"c.yaml:3: train.lr comes from a YAML merge key") as exc:
        cfg.check_writable(["train.lr"])
    assert "give train its own lr: line" in str(exc.value.hint)


def test_a_python_config_value_that_is_no_literal_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "config.py"
    path.write_text("from dataclasses import dataclass\nBASE = 0.01\n\n@dataclass\nclass Cfg:\n    lr: float = 0.1\n\n"
                    "lr2 = BASE * 2\ntraining = {'lr': BASE}\n")
    cfg = ConfigFile.load(path)
    for key, where in [("lr2", "config.py:8: lr2 cannot be searched: lr2 = BASE * 2 is computed"),
                       ("training.lr", "config.py:9: training.lr cannot be searched: training = {'lr': BASE} is"),
                       ("Cfg.lr", "config.py:5: Cfg.lr cannot be searched: Cfg is a class")]:
        with pytest.raises(ConfigFileError, match=re.escape(where)):
            cfg.require([key])
    with pytest.raises(ConfigFileError, match=re.escape("no 'BASE.x' here")):  # BASE is read: its part is missing
        cfg.require(["BASE.x"])


def test_a_param_neither_in_the_config_file_nor_passed_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.py").write_text(CONFIG_PY, encoding="utf-8")
    cfg = ConfigFile.load(tmp_path / "config.py")
    obj = command(tmp_path, f"{PYTHON} train.py", {"training": {"lrr": 0.05}}, ECHO_ARGS, config=cfg,
                  space_keys=("training.lr",))
    with pytest.raises(UsageError, match="objective.params.training.lrr: neither in config.py nor passed"):
        obj.validate()
    passed = command(tmp_path, f"{PYTHON} train.py {{args}}", {"seed": 1}, ECHO_ARGS, config=cfg,
                     space_keys=("training.lr",))
    passed.validate()  # given to the command as a flag: fine


@pytest.mark.parametrize(("text", "values", "expected"), [
    ("layers:\n  - 64\n  - 128\n# the lr\nlr: 0.1\n", {"layers": [32, 32]}, "layers:\n  [32, 32]\n# the lr\nlr: 0.1\n"),
    ("desc: |\n  hi\nlr: 0.1\n", {"desc": "yo"}, "desc: yo\nlr: 0.1\n"),
    ("lr:\nx: 1\n", {"lr": 0.5}, "lr: 0.5\nx: 1\n"),
])
def test_block_yaml_values_are_replaced_whole(tmp_path: Path, text: str, values: dict, expected: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    assert ConfigFile.load(path).render(values) == expected


def test_a_yaml_alias_and_a_duplicate_python_key_are_refused(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("base: &lr 0.1\nlr: *lr\n")
    with pytest.raises(ConfigFileError, match="anchor or alias"):
        ConfigFile.load(tmp_path / "c.yaml").render({"lr": 0.5})
    (tmp_path / "c.py").write_text("t = {'lr': 0.1, 'lr': 0.2}\n")
    with pytest.raises(ConfigFileError, match="changed other values of the file, or not these"):
        ConfigFile.load(tmp_path / "c.py").render({"t.lr": 0.5})


@pytest.mark.parametrize(("line", "found"), [
    ("val_loss=0.31 epoch=3", ({"val_loss": 0.31}, 3)),
    ("Best epoch 7: val_loss=0.21", ({"val_loss": 0.21}, None)),
    ("Epoch [3/10], Step [100/600], val_loss: 0.2", ({"val_loss": 0.2}, 3)),
    ("val_loss=1,234.5", None),
    # PyTorch Lightning's test / validate table, with and without rich's borders: a row of the name and a number
    ("│         val_loss          │    0.5433000564575195     │", ({"val_loss": 0.5433000564575195}, None)),
    ("        val_loss              0.41", ({"val_loss": 0.41}, None)),
    ("│          val_acc          │    0.91     │", None),  # another metric's row
    ("val_loss 0.41 after 3 epochs", ({"val_loss": 0.41}, None)),  # the name, then its number
])
def test_more_text_result_lines(line: str, found: Any) -> None:
    assert text_metrics(line, "val_loss") == found


@pytest.mark.parametrize(("metric", "line", "found"), [
    ("val_loss", "2026-11-29 06:38:04,493 INFO done. val_loss 2.2500", ({"val_loss": 2.25}, None)),  # logging
    ("val_loss", "epoch 3 | train_loss 0.52 | val_loss 0.4100", ({"val_loss": 0.41}, 3)),
    ("val_loss", "epoch 3 train_loss 0.52 val_loss 0.41 acc 0.9", ({"val_loss": 0.41}, 3)),
    ("loss", "epoch 002 | valid on 'valid' subset | loss 4.2 | nll_loss 3.1 | ppl 8.6", ({"loss": 4.2}, 2)),  # fairseq
    ("val loss", "step 250: train loss 1.9771, val loss 2.0809", ({"val loss": 2.0809}, 250)),  # nanoGPT
    ("train loss", "step 250: train loss 1.9771, val loss 2.0809", ({"train loss": 1.9771}, 250)),
    ("val_loss", "val_loss improved from inf to 0.41", None),  # Keras' checkpoint line: no number after the name
    # where rich's and logging's records say they were written: not a metric
    ("val_loss", "[12:00:01] epoch 3 val_loss: 0.41                        train.py:12", ({"val_loss": 0.41}, 3)),
    ("val_loss", "2026-11-29 06:38:04,493 INFO trainer.py:88 val_loss=0.41", ({"val_loss": 0.41}, None)),
    # the Hugging Face Trainer's log dict: a whole epoch is the step, a fraction of one is not
    ("eval_loss", "{'eval_loss': 0.41, 'eval_runtime': 1.2, 'epoch': 2.0}", ({"eval_loss": 0.41, "eval_runtime": 1.2},
                                                                            2)),
    ("eval_loss", "{'eval_loss': 0.41, 'epoch': 0.5}", ({"eval_loss": 0.41}, None)),
    # transformers 5 writes each value as a string
    ("eval_loss", "{'eval_loss': '5.827', 'eval_runtime': '0.0168', 'epoch': '2'}",
     ({"eval_loss": 5.827, "eval_runtime": 0.0168}, 2)),
    ("val_loss", "val_loss 1,234.5", None),
    ("val_loss", "best_val_loss 0.2", None),
    ("loss", "epoch 1 val_loss 0.3", None),  # another metric's name ending in this one
])
def test_a_metric_and_its_number_apart_by_spaces(metric: str, line: str, found: Any) -> None:
    """Logging's, fairseq's and nanoGPT's lines, read as printed: `val_loss 0.41` had to be `val_loss: 0.41`."""
    assert text_metrics(line, metric) == found


@pytest.mark.parametrize(("line", "found"), [
    ("Validation accuracy = 0.8123", ({"Validation accuracy": 0.8123}, None)),
    ("Epoch 2/3 - loss 0.4 - Validation accuracy: 0.75 - lr=0.01", ({"Validation accuracy": 0.75, "lr": 0.01}, 2)),
    ("│   Validation accuracy   │   0.91   │", ({"Validation accuracy": 0.91}, None)),
    ("Test accuracy = 0.5", None),  # another metric that ends in the same word
    ("accuracy = 0.5", None),
])
def test_a_metric_name_of_several_words(line: str, found: Any) -> None:
    """A name such as `Validation accuracy` is read as printed (the error for a missing metric offers that form)."""
    assert text_metrics(line, "Validation accuracy") == found


def test_only_epoch_lines_and_a_metrics_file_without_the_metric(tmp_path: Path) -> None:
    body = """\
import json
json.dump({"train_loss": 1.0}, open("metrics.json", "w"))  # not the searched metric: looked past
for epoch in range(1, 4):
    print(f"epoch {epoch}: val_loss={1 / epoch:.4f}")
"""
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text(body)
    spaces = Workspaces(project, tmp_path / "run" / "workspaces", "r")
    spaces.prepare()
    obj = CommandObjective(spec(f"{PYTHON} train.py", "val_loss"), cwd=project, workspaces=spaces,
                           trial_dir=lambda n: tmp_path / "run" / "trials" / f"run_{n:04d}")
    assert obj.run(0, {}, lambda s, v: False)["value"] == pytest.approx(0.3333)


def test_a_missing_cwd_is_named_before_the_config_file_read_from_it(tmp_path: Path) -> None:
    from agentlab.nas.config import NASConfig
    from agentlab.nas.own_code import resolve_cwd

    cfg = NASConfig.model_validate({"objective": {"command": "python train.py", "cwd": str(tmp_path / "gone"),
                                                  "config": "config.py", "metric": "loss"},
                                    "search": {"space": {"lr": {"low": 0.1, "high": 1.0}}}})
    with pytest.raises(UsageError, match=r"objective.cwd: .*gone is not a folder"):
        resolve_cwd(cfg, None)


def test_the_summary_counts_failed_trials_and_unanswered_llm_calls() -> None:
    from agentlab.core.search.records import planner_label
    from agentlab.nas.own_code import command_summary_lines

    best = {"run_id": "run_0003", "loss": 0.2, "params": {"lr": 0.5}, "planner": "llm", "origin": "no answer"}
    results = {"metric": "loss", "direction": "minimize", "best": best, "gain": {"loss": 0.5},
               "base": {"run_id": "run_0000", "loss": 0.4, "params": {"lr": 0.1}}, "trials": 4,
               "states": {"complete": 2, "failed": 2}, "llm_contribution": {"no_answer": 2, "asked": 2}}
    lines = command_summary_lines(results)
    assert lines[0] == "best trial run_0003: loss 0.2 (llm: no answer)"
    assert "2 of 4 trials failed: their reasons are in report.md's table, their output in trials/<run>/" in lines
    assert any(line.startswith("the planner LLM gave no answer 2 of 2 times") for line in lines)
    assert planner_label({"planner": "llm", "origin": "classical"}) == "llm: not asked"
    assert planner_label({"planner": "llm", "origin": "picked", "choice": 2}) == "llm: picked candidate 2"
    assert planner_label({"planner": "llm", "origin": "classical", "warmup": True}, "tpe") == "tpe (warm-up)"


def test_outside_git_the_project_is_kept_at_the_start_but_not_for_an_older_run(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A new run keeps the project's files at its start (workspaces/project/); a run that ran trials before that
    copy existed is not given one on resume (it would be the files as they are now, called the start)."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text("print('loss: 1')\n")
    spaces = Workspaces(project, tmp_path / "new" / "workspaces", "new")
    assert "as the search started" in spaces.prepare()
    (project / "train.py").write_text("print('loss: 2')\n")
    assert (spaces.path(0) / "train.py").exists() is False and (spaces.create(0) / "train.py").read_text() == \
        "print('loss: 1')\n"
    (tmp_path / "old" / "trials" / "run_0000").mkdir(parents=True)
    older = Workspaces(project, tmp_path / "old" / "workspaces", "old")
    line = older.prepare()  # it said "this run started before the project was kept", also when it was deleted
    assert "as they are now" in line and "before the project was kept" not in line
    assert "kept as the search started" in caplog.text and "is gone" in caplog.text  # a warning
    assert not (tmp_path / "old" / "workspaces" / "project").exists()
    assert (older.create(1) / "train.py").read_text() == "print('loss: 2')\n"


# --------------------------------------------------------------------------- findings of a new user's pass


RESET_IN_IF = 'import os\nLR = 0.01\nif not os.environ.get("FULL"):\n    LR = 0.05\n'


def test_a_value_assigned_again_in_a_block_is_refused_before_trial_0(in_tmp: Path, capsys: Any) -> None:
    """`LR = 0.01` then `if ...: LR = 0.05` ran every trial on 0.05: the search did nothing, exit 0, no word."""
    (in_tmp / "config.py").write_text(RESET_IN_IF)
    (in_tmp / "train.py").write_text("import config\nprint(f'loss: {config.LR}')\n")
    (in_tmp / "nas.yaml").write_text(yaml.safe_dump({
        "objective": {"command": f"{PYTHON} train.py", "config": "config.py", "metric": "loss"},
        "search": {"planner": "random", "space": {"LR": {"low": 0.001, "high": 0.1}}}}))
    assert main(["nas", "-c", "nas.yaml", "--dry-run"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert ("config.py:4: LR is assigned again inside an if block (line 3); a trial's value at line 2 would be "
            "overridden") in err and "remove the re-assignment at line 4" in err
    for text, said in [("CFG = {'lr': 0.1}\nfor _ in range(1):\n    CFG['lr'] = 0.2\n",
                        "config.py:3: CFG.lr is assigned again inside a for block (line 2); a trial's value at "
                        "line 1"),
                       ("LR = 0.1\nLR *= 2\n", "config.py:2: LR is assigned again; a trial's value at line 1")]:
        (in_tmp / "config.py").write_text(text)
        with pytest.raises(ConfigFileError, match=re.escape(said)):
            ConfigFile.load(in_tmp / "config.py").require(["CFG.lr" if "CFG" in text else "LR"])
    (in_tmp / "config.py").write_text("import os\nif os.environ.get('FULL'):\n    LR = 0.05\nelse:\n    LR = 0.01\n")
    with pytest.raises(ConfigFileError, match=r"config.py:3: LR cannot be searched: LR is assigned only inside an "
                       r"if block \(line 2\)"):
        ConfigFile.load(in_tmp / "config.py").require(["LR"])
    # what is harmless stays taken: set before the one written, inside a function, another name in a block
    (in_tmp / "config.py").write_text("if True:\n    LR = 1\nLR = 0.1\ndef f():\n    LR = 2\nif True:\n    B = 3\n"
                                      "LR: float\n")
    ConfigFile.load(in_tmp / "config.py").check_writable(["LR"])


@pytest.mark.parametrize("tail", ['training["batch_size"] = 128\n', 'if FULL:\n    training["epochs"] = 100\n',
                                  "training.opt = 1\n", 'training["lr2"] = 1\n', "model = {}\n"])
def test_a_key_not_searched_set_again_is_taken(in_tmp: Path, tail: str) -> None:
    """`training["batch_size"] = 128` after `training = {...}` stopped a search of training.lr before trial 0:
    "training is assigned again; a trial's value at line 2 would be overridden (search.space.training.lr)"."""
    (in_tmp / "config.py").write_text("FULL = False\ntraining = {'lr': 0.1, 'epochs': 3, 'batch_size': 64}\n" + tail)
    config = ConfigFile.load(in_tmp / "config.py")
    config.require(["training.lr"])
    assert "'lr': 0.3" in config.render({"training.lr": 0.3})


@pytest.mark.parametrize(("tail", "key", "said"), [
    ("training = {'epochs': 1}\ntraining['epochs'] = 2\n", "training.epochs",
     "config.py:4: training.epochs is assigned again; a trial's value at line 3"),
    ("training['lr'] = 1\n", "training.lr", "config.py:3: training.lr is assigned again; a trial's value at line 2"),
    ("if FULL:\n    training.lr = 1\n", "training.lr",
     "config.py:4: training.lr is assigned again inside an if block (line 3)"),
    ("training['lr'] *= 2\n", "training.lr", "config.py:3: training.lr is assigned again"),
    ("training['opt'] = {}\n", "training.opt.lr", "config.py:3: training.opt is assigned again; a trial's value of "
     "training.opt.lr at line 2 would be overridden (search.space.training.opt.lr)"),
    ("training['opt']['lr'] = 1\n", "training.opt.lr", "config.py:3: training.opt.lr is assigned again"),
    ("training['opt']['lr'][0] = 1\n", "training.opt.lr",
     "config.py:3: training.opt.lr[0] is assigned again; a trial's value of training.opt.lr"),
    ("training = {'opt': {'lr': 1}}\n", "training.opt.lr", None),  # the last assignment is the one written: taken
    ("k = 'opt'\ntraining[k] = {}\n", "training.opt.lr", "config.py:4: training[...] is assigned again at a key "
     "that is not a constant: it cannot be told whether it overrides a trial's value of training.opt.lr at line 2"),
    ("training['opt'][k] = 1\n", "training.opt.lr", "config.py:3: training.opt[...] is assigned again at a key"),
    ("training['opt'][k] = 1\n", "training.lr", None),  # another key, whatever k is
])
def test_a_searched_key_set_again_is_refused(in_tmp: Path, tail: str, key: str, said: str | None) -> None:
    (in_tmp / "config.py").write_text("FULL = False\ntraining = {'lr': 0.1, 'opt': {'lr': 0.1}, 'epochs': 3}\n"
                                      + tail)
    config = ConfigFile.load(in_tmp / "config.py")
    if said is None:
        config.require([key])
        return
    with pytest.raises(ConfigFileError, match=re.escape(said)):
        config.require([key])


def test_a_config_file_the_script_reads_otherwise_is_warned_when_metrics_repeat(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The 'same metric for different params' warning skipped every search through objective.config."""
    (tmp_path / "config.py").write_text("LR = 0.1\n")
    obj = command(tmp_path, f"{PYTHON} train.py", {}, IGNORES, space_keys=("LR",),
                  config=ConfigFile.load(tmp_path / "config.py"),
                  workspaces=Workspaces(tmp_path, tmp_path / "run" / "workspaces", "r"))
    assert obj.workspaces is not None
    obj.workspaces.prepare()
    for n, lr in enumerate((0.1, 0.2)):
        obj.run(n, {"LR": lr}, lambda s, v: False)
    assert obj.ignored_params is None  # two alike may be chance
    obj.run(2, {"LR": 0.3}, lambda s, v: False)
    assert obj.ignored_params is not None and "only through objective.config (config.py)" in obj.ignored_params
    assert obj.ignored_params.startswith("3 trials with different params gave the same loss (0.5)")
    assert "probably does not read the values" in caplog.text


def test_a_metric_repeated_by_chance_is_not_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An accuracy on a small validation set repeats by chance: two trials alike (twice over) warned that the script
    probably does not read the values it is given through objective.config."""
    (tmp_path / "config.py").write_text("LR = 0.1\n")
    reads = "import json, config\nprint(json.dumps({'loss': {0.1: 0.5, 0.2: 0.5, 0.3: 0.7}.get(config.LR, 0.7)}))\n"
    obj = command(tmp_path, f"{PYTHON} train.py", {}, reads, space_keys=("LR",),
                  config=ConfigFile.load(tmp_path / "config.py"),
                  workspaces=Workspaces(tmp_path, tmp_path / "run" / "workspaces", "r"))
    assert obj.workspaces is not None
    obj.workspaces.prepare()
    for n, lr in enumerate((0.1, 0.2, 0.3, 0.4, 0.1)):  # 0.5 twice, 0.7 twice; the same params again
        assert obj.run(n, {"LR": lr}, lambda s, v: False)["value"] == (0.5 if lr < 0.25 else 0.7)
    assert obj.ignored_params is None and "same loss" not in caplog.text


def test_a_python_config_in_its_declared_encoding_is_read_and_written_so(tmp_path: Path) -> None:
    """`# -*- coding: latin-1 -*-` was refused as not UTF-8, though Python reads it."""
    path = tmp_path / "config.py"
    path.write_bytes('# -*- coding: latin-1 -*-\nNAME = "café"\nLR = 0.01\n'.encode("latin-1"))
    cfg = ConfigFile.load(path)
    assert cfg.values == {"NAME": "café", "LR": 0.01} and cfg.encoding == "iso8859-1"
    cfg.write(tmp_path / "out.py", {"LR": 0.5})
    assert (tmp_path / "out.py").read_bytes() == path.read_bytes().replace(b"0.01", b"0.5")
    (tmp_path / "train.py").write_text("import config\nassert config.NAME == 'café'\nprint(f'loss: {config.LR}')\n")
    spaces = Workspaces(tmp_path, tmp_path / "run" / "workspaces", "r")
    spaces.prepare()
    obj = CommandObjective(spec(f"{PYTHON} train.py"), cwd=tmp_path, workspaces=spaces, config=cfg,
                           space_keys=("LR",), trial_dir=lambda n: tmp_path / "run" / "trials" / f"run_{n:04d}")
    assert obj.run(0, {"LR": 0.25}, lambda s, v: False)["value"] == 0.25  # the script read its own encoding
    path.write_bytes(b"# -*- coding: latin-1 -*-\nS = '" + "é".encode() + b"'\n")  # UTF-8 bytes: as Python reads them
    assert ConfigFile.load(path).values == {"S": "Ã©"}
    path.write_bytes(b"# -*- coding: nope -*-\nX = 1\n")
    with pytest.raises(ConfigFileError, match="unknown encoding"):
        ConfigFile.load(path)


def test_no_result_names_multi_word_metrics_as_printed(tmp_path: Path) -> None:
    """`Val loss 0.3, val acc 0.8` was "it printed loss, acc (did you mean metric: loss?)"."""
    from agentlab.nas.command import printed_instead

    (tmp_path / "stdout.log").write_text("Val loss 0.3, val acc 0.8\n")
    assert printed_instead("val loss", tmp_path) == "; it printed Val loss, val acc (did you mean metric: Val loss?)"
    (tmp_path / "stdout.log").write_text("Validation Loss: 0.3\nINFO loss 0.2\nthe error: 1\n")
    assert printed_instead("bleu", tmp_path) == "; it printed Validation Loss, loss, error"


def test_a_toml_keys_line_follows_its_table(tmp_path: Path) -> None:
    """`[train]` / `width = 16` on line 4 was named as c.toml:1."""
    path = tmp_path / "c.toml"
    path.write_text('lr = 0.1\n\n[train]\nwidth = 16\n[model]\n"depth" = 2\nwidth = 3\nsub = {a = 1}\n')
    cfg = ConfigFile.load(path)
    assert [cfg.line_of(k) for k in ("lr", "train.width", "model.depth", "model.width", "model.sub.a")] == \
        [1, 4, 6, 7, 8]
