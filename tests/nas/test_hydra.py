"""A Hydra app searched through ``{overrides}``: the best trial's overrides written back into its config files, each
where Hydra read the value from, and `agentlab nas apply` putting them in the project."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentlab.cli import main
from agentlab.core.errors import UsageError
from agentlab.nas.best import apply_best
from agentlab.nas.hydra import write_back

PRIMARY = "# the model group\ndefaults:\n  - model: linear   # start simple\n  - _self_\ntrain:\n  l2: 1.0  # ridge\n"
APP = '''import hydra
import numpy as np


@hydra.main(version_base=None, config_path="conf", config_name="config")
def main(cfg) -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, 200)
    y = np.sin(2 * x) + 0.1 * rng.normal(size=200)
    feats = [x ** d for d in range(cfg.model.degree + 1)] if cfg.model.name == "poly" else [np.ones_like(x), x]
    X = np.stack(feats, 1)
    w = np.linalg.solve(X.T @ X + cfg.train.l2 * np.eye(X.shape[1]), X.T @ y)
    print(f"val_mse: {float(np.mean((X @ w - y) ** 2))!r}")


if __name__ == "__main__":
    main()
'''


def hydra_app(folder: Path, conf: str = "conf") -> Path:
    (folder / conf / "model").mkdir(parents=True)
    (folder / conf / "config.yaml").write_text(PRIMARY)
    (folder / conf / "model" / "linear.yaml").write_text("name: linear\n")
    (folder / conf / "model" / "poly.yaml").write_text("name: poly\ndegree: 2  # of the polynomial\n")
    (folder / "train.py").write_text(APP.replace('config_path="conf"', f'config_path="{conf}"'))
    return folder


def test_each_override_goes_where_hydra_reads_it_and_the_rest_is_listed(tmp_path: Path) -> None:
    hydra_app(tmp_path)
    (tmp_path / "conf" / "model" / "spline.yaml").write_text("# @package _global_\nknots: 4\n")
    back = write_back(tmp_path, "conf", "config.yaml", {
        "model": "poly", "model.degree": 8, "train.l2": 0.001, "+trainer.clip": 0.5, "seed": 3})
    assert back.files == {
        "conf/config.yaml": PRIMARY.replace("model: linear ", "model: poly ").replace("l2: 1.0", "l2: 0.001"),
        "conf/model/poly.yaml": "name: poly\ndegree: 8  # of the polynomial\n"}
    assert back.left == ["+trainer.clip=0.5: adds or removes a key, which no config file holds",
                         "seed=3: neither conf/config.yaml nor a chosen option's file holds it"]
    # a chosen file in another package: where Hydra takes a value from is not certain, so nothing is written
    back = write_back(tmp_path, "conf", "config.yaml", {"model": "spline", "train.l2": 0.5})
    assert back.files == {} and [line.split(": ", 1)[0] for line in back.left] == ["model=spline", "train.l2=0.5"]
    assert "conf/model/spline.yaml has a `# @package` line" in back.left[0]
    back = write_back(tmp_path, "conf", "config.yaml", {"model": "tree"})
    assert back.files == {} and back.left == ["model=tree: no conf/model/tree.yaml"]


# Layouts: (the primary config, {file: text} of the groups, the best overrides, the keys left out[, what every trial
# also got])
LAYOUTS = {
    "self-last": ("defaults:\n  - model: linear\n  - _self_\nlr: 0.1\nmodel:\n  width: 4\n",
                  {"model/linear.yaml": "width: 2\ndepth: 1\n", "model/poly.yaml": "width: 2\ndepth: 1\n"},
                  {"model": "poly", "lr": 0.01, "model.width": 16, "model.depth": 3}, []),
    "no-self": ("defaults:\n  - model: linear\nlr: 0.1\n", {"model/linear.yaml": "depth: 1\n"},
                {"lr": 0.02, "model.depth": 5}, []),
    "self-first": ("defaults:\n  - _self_\n  - model: linear\nmodel:\n  depth: 9\n",
                   {"model/linear.yaml": "depth: 1\n"}, {"model.depth": 5}, ["model.depth"]),
    "keywords-null-nested-hydra": (
        "defaults:\n  - optional /model: linear\n  - server/db: small\n  - extra: null\n  - _self_\n"
        "  - override hydra/job_logging: disabled\nlr: 0.1\n",
        {"model/linear.yaml": "depth: 1\n", "server/db/small.yaml": "port: 1\n", "server/db/big.yaml": "port: 2\n",
         "extra/more.yaml": "bonus: 1\n"},
        {"server/db": "big", "server.db.port": 9, "model.depth": 4, "extra": "more", "extra.bonus": 3, "lr": 0.5},
        []),
    "package-entry": ("defaults:\n  - model@aux: linear\n  - _self_\nlr: 0.1\n", {"model/linear.yaml": "depth: 1\n"},
                      {"lr": 0.2}, ["lr"]),
    "global-experiment": ("defaults:\n  - model: linear\n  - experiment: big\n  - _self_\nlr: 0.1\n",
                          {"model/linear.yaml": "depth: 1\n", "experiment/big.yaml": "# @package _global_\nlr: 0.3\n"},
                          {"model.depth": 2}, ["model.depth"]),
    "two-holders": ("defaults:\n  - model: linear\n  - model/head: mlp\n  - _self_\n",
                    {"model/linear.yaml": "head:\n  size: 1\n", "model/head/mlp.yaml": "size: 2\n"},
                    {"model.head.size": 7}, ["model.head.size"]),
    # every trial also chose model=poly (objective.params' constant): linear.yaml is not where degree comes from
    "constant-choice": ("defaults:\n  - model: linear\n  - _self_\n",
                        {"model/linear.yaml": "degree: 1\n", "model/poly.yaml": "degree: 2\n"},
                        {"model.degree": 5}, ["model.degree"], {"model": "poly", "+train.seed": 1}),
    "strings-hydra-reads-otherwise": ("act: relu\nsize: small\nwidth: '8'\n", {},
                                      {"act": "32", "size": "big", "width": " 9"}, ["act", "width"]),
    "primary-in-a-package": ("# @package train\ndefaults:\n  - _self_\nlr: 1\n", {}, {"train.lr": 5}, ["train.lr"]),
    "anchored-defaults": ("dl: &d\n  - model: linear\n  - _self_\ndefaults: *d\n",
                          {"model/linear.yaml": "w: 1\n", "model/poly.yaml": "w: 2\n"}, {"model": "poly"}, ["model"]),
}


@pytest.mark.filterwarnings("ignore:In 'config'. Defaults list is missing `_self_`")
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_the_written_files_compose_to_the_best_trials_config_in_hydra(tmp_path: Path, layout: str) -> None:
    """The property the write-back claims, checked by Hydra itself: the written files with the overrides left out
    compose to the same config as the files as the search started with every override."""
    pytest.importorskip("hydra")
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from agentlab.nas.command import cli_value

    primary, groups, overrides, left, *more = LAYOUTS[layout]
    context = more[0] if more else {}
    base, written = tmp_path / "base", tmp_path / "written"
    for root in (base, written):
        (root / "conf").mkdir(parents=True)
        (root / "conf" / "config.yaml").write_text(primary)
        for name, text in groups.items():
            (root / "conf" / name).parent.mkdir(parents=True, exist_ok=True)
            (root / "conf" / name).write_text(text)
    back = write_back(base, "conf", "config.yaml", overrides, context)
    assert sorted(line.split("=", 1)[0] for line in back.left) == sorted(left)
    for name, text in back.files.items():
        (written / name).write_text(text)
    not_written = [line.split(": ", 1)[0] for line in back.left]

    def composed(root: Path, with_overrides: list[str]) -> dict:
        with initialize_config_dir(config_dir=str(root / "conf"), version_base=None):
            return OmegaConf.to_container(compose(config_name="config", overrides=with_overrides))

    fixed = [f"{key}={cli_value(value)}" for key, value in context.items()]  # as the search passes them
    everything = fixed + [f"{key}={cli_value(value)}" for key, value in overrides.items()]
    assert composed(written, fixed + not_written) == composed(base, everything)
    if not left:
        assert not back.left and composed(written, fixed) == composed(base, everything)


@pytest.mark.parametrize("conf", ["conf", "."])
def test_a_search_writes_the_best_overrides_back_and_the_app_alone_reproduces_the_best(in_tmp: Path,
                                                                                       conf: str) -> None:
    pytest.importorskip("hydra")
    project = hydra_app(in_tmp / "project", conf)
    run = project / "runs" / "h"  # inside the config folder when it is the project's own (config_path=".")
    config = in_tmp / "nas.yaml"
    config.write_text(yaml.safe_dump({
        "objective": {"command": f"{sys.executable} train.py {{overrides}}", "cwd": str(project), "metric": "val_mse",
                      "params": {"model": "linear", "model.degree": 2, "train.l2": 1.0, "+train.seed": 1}},
        "search": {"max_iterations": 5, "seed": 0, "space": {
            "model": {"choices": ["linear", "poly"]},
            "model.degree": {"low": 3, "high": 9, "when": {"model": ["poly"]}},
            "train.l2": {"low": 1e-4, "high": 10.0, "log": True}}}}))
    assert main(["nas", "-c", str(config), "--out", str(run)]) == 0
    results = json.loads((run / "results.json").read_text())
    assert json.loads((run / "best" / "params.json").read_text())["model"] == "poly"  # (seed 0)
    files = [str(Path(conf, name)) for name in ("config.yaml", "model/poly.yaml")]
    assert results["best_files"]["hydra"] == files
    assert "not_written" not in results["best_files"]  # the constant +train.seed is not searched: not written
    assert not list((run / "base").rglob("runs"))  # the run folder is not copied into its own base/
    assert main(["nas", "apply", str(run)]) == 0
    done = subprocess.run([sys.executable, "train.py", "+train.seed=1"], cwd=project, capture_output=True,
                          text=True, check=True)
    best_trial = (run / "trials" / results["best"]["run_id"] / "stdout.log").read_text()
    assert done.stdout.strip() == best_trial.strip()  # the same val_mse to the last digit, with no searched override
    assert "# start simple" in (project / files[0]).read_text()  # comments kept
    assert main(["nas", "apply", str(run)]) == 0  # already the best version: nothing changes
    # a file changed since the search started: refused, nothing written
    best = (project / files[0]).read_text()
    (project / files[0]).write_text(PRIMARY + "# mine\n")
    assert main(["nas", "apply", str(run)]) == 2
    assert (project / files[0]).read_text() == PRIMARY + "# mine\n" != best


def test_a_search_without_params_starts_at_the_apps_composed_config(in_tmp: Path) -> None:
    """No objective.params: trial 0 is what the app composes by itself (Hydra's own `--cfg all`), a group's key at
    its chosen option, and a key the app does not hold is refused naming the app."""
    pytest.importorskip("hydra")
    project = hydra_app(in_tmp / "project")
    (project / "conf" / "model" / "linear.yaml").write_text("name: linear\ndegree: 1\n")
    objective = {"command": f"{sys.executable} train.py {{overrides}}", "cwd": str(project), "metric": "val_mse"}
    space = {"model": {"choices": ["linear", "poly"]}, "model.degree": {"low": 1, "high": 5},
             "train.l2": {"low": 1e-4, "high": 10.0, "log": True}}
    config = in_tmp / "nas.yaml"
    config.write_text(yaml.safe_dump({"objective": objective, "search": {"max_iterations": 2, "space": space}}))
    assert main(["nas", "-c", str(config), "--out", "run"]) == 0
    assert (in_tmp / "run" / "trials" / "run_0000" / "command.txt").read_text().endswith(
        "train.py model=linear model.degree=1 train.l2=1.0\n")
    from agentlab.nas.run import run_nas_optimization

    config.write_text(yaml.safe_dump({"objective": objective, "search": {"space": {"train.lr": {"low": 0.1,
                                                                                                "high": 1.0}}}}))
    with pytest.raises(UsageError, match=r"search.space.train.lr: not a key of objective.params, and the Hydra "
                       r"app's config \(`train.py --cfg job`\) does not hold it$"):  # not "did you mean train.l2" (L2)
        run_nas_optimization(max_iterations=1, config=str(config), out=in_tmp / "run2")
    config.write_text(yaml.safe_dump({"objective": objective, "search": {"space": {"train.l22": {"low": 0.1,
                                                                                               "high": 1.0}}}}))
    with pytest.raises(UsageError, match=r"does not hold it \(did you mean train.l2\?\)$"):
        run_nas_optimization(max_iterations=1, config=str(config), out=in_tmp / "run2")
    # a group's choice that is none of its options: refused before any trial (each trial of it failed in Hydra)
    config.write_text(yaml.safe_dump({"objective": objective, "search": {"space": {
        "model": {"choices": ["linear", "cnn"]}}}}))
    with pytest.raises(UsageError, match=r"search.space.model: 'cnn' is no option of the Hydra group model \(no "
                       r".*conf/model/cnn.yaml; its options: linear, poly\)"):
        run_nas_optimization(max_iterations=1, config=str(config), out=in_tmp / "run4")
    (project / "conf" / "config.yaml").write_text("defaults:\n  - model: nosuch\n")  # an app that cannot compose
    with pytest.raises(UsageError, match=r"the Hydra app did not print its config: `\S*python\S* train.py --cfg job` "
                       r"failed: exit code 1; stderr: In 'config': Could not find 'model/nosuch'$"):
        run_nas_optimization(max_iterations=1, config=str(config), out=in_tmp / "run3")


def test_an_app_that_cannot_print_its_config_says_why_and_the_command_as_run(in_tmp: Path, capsys: Any) -> None:
    """A Hydra app run by a python without hydra said "the Hydra app did not print its config (run `train.py --cfg
    job` to see why)": no cause (ModuleNotFoundError on its stderr), a command without its python, and a hint to add
    the key to objective.params."""
    project = hydra_app(in_tmp / "project")
    (project / "train.py").write_text("import nosuch_hydra_module  # the python that runs it lacks it\n" + APP)
    config = in_tmp / "nas.yaml"
    config.write_text(yaml.safe_dump({
        "objective": {"command": f"{sys.executable} train.py {{overrides}}", "cwd": str(project), "metric": "val_mse"},
        "search": {"space": {"train.l2": {"low": 1e-4, "high": 10.0, "log": True}}}}))
    assert main(["nas", "-c", str(config), "--dry-run"]) == 2
    err = capsys.readouterr().err
    run = f"`{sys.executable} train.py --cfg job`"
    assert f"the Hydra app did not print its config: {run} failed: exit code 1; stderr: ModuleNotFoundError: No " \
        "module named 'nosuch_hydra_module'" in err
    assert f"hint: make {run} print the app's config (it runs in {project}" in err and "Traceback" not in err


def test_a_range_of_floats_for_an_int_of_the_apps_config_is_warned(in_tmp: Path, capsys: Any) -> None:
    """`model.degree: {low: 1.0, high: 3.5}` where the app's config holds `degree: 2` said "config ok" and every
    trial wrote a float where the app takes an int, with no word before."""
    pytest.importorskip("hydra")
    project = hydra_app(in_tmp / "project")
    config = in_tmp / "nas.yaml"
    objective = {"command": f"{sys.executable} train.py model=poly {{overrides}}", "cwd": str(project),
                 "metric": "val_mse"}
    config.write_text(yaml.safe_dump({"objective": objective, "search": {"space": {
        "model.degree": {"low": 1.0, "high": 3.5}, "train.l2": {"low": 1e-4, "high": 10.0, "log": True}}}}))
    assert main(["nas", "-c", str(config), "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "search.space.model.degree: a range of floats (1.0..3.5), but the Hydra app's config holds it as an int " \
        "(model.degree = 2)" in err and "give int bounds ({low: 1, high: 3})" in err and "Traceback" not in err


def test_apply_names_the_overrides_when_none_has_a_place(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "base").mkdir(parents=True)
    (run / "run.json").write_text("{}")
    (run / "base" / "base.json").write_text(json.dumps({"project": str(tmp_path), "hydra": {
        "folder": "conf", "primary": "config.yaml", "files": {}}}))
    (run / "results.json").write_text(json.dumps({"best_files": {"files": ["command.txt"], "not_written": [
        "+x=1: adds or removes a key, which no config file holds"]}}))
    with pytest.raises(UsageError, match=r"no override of the best trial has a place .*\+x=1"):
        apply_best(run)


def test_a_command_that_names_its_config_gets_no_write_back_and_says_so(in_tmp: Path, capsys: Any) -> None:
    pytest.importorskip("hydra")
    project = hydra_app(in_tmp / "project")
    config = in_tmp / "nas.yaml"
    config.write_text(yaml.safe_dump({
        "objective": {"command": f"{sys.executable} train.py -cn config {{overrides}}", "cwd": str(project),
                      "metric": "val_mse", "params": {"train.l2": 1.0}},
        "search": {"max_iterations": 2, "space": {"train.l2": {"low": 1e-4, "high": 10.0, "log": True}}}}))
    assert main(["nas", "-c", str(config), "--out", "run"]) == 0
    assert "best config: not written back into your files (the command chooses its config with -cn)" in \
        capsys.readouterr().err
    assert not (in_tmp / "run" / "base").exists()
    assert main(["nas", "apply", "run"]) == 2
    assert "this search has no file to write back" in capsys.readouterr().err
    assert (project / "conf" / "config.yaml").read_text() == PRIMARY


def test_a_groups_nested_option_passes_and_options_registered_in_code_are_not_checked(tmp_path: Path) -> None:
    from agentlab.nas.config import ParamSpec
    from agentlab.nas.hydra import check_group_choices

    project = hydra_app(tmp_path / "project")
    (project / "conf" / "model" / "resnet").mkdir()
    (project / "conf" / "model" / "resnet" / "50.yaml").write_text("name: resnet\n")
    command = "python train.py {overrides}"
    check_group_choices(command, project, {"model": ParamSpec(choices=["linear", "resnet/50"])})
    with pytest.raises(UsageError, match=r"'resnet/18' is no option of the Hydra group model"):
        check_group_choices(command, project, {"model": ParamSpec(choices=["resnet/18"])})
    app = (project / "train.py").read_text()
    (project / "train.py").write_text("from hydra.core.config_store import ConfigStore\n" + app)
    check_group_choices(command, project, {"model": ParamSpec(choices=["resnet/18"])})  # may be registered there
