"""Adapters that do not match their folder or their model, as every command that loads one meets them
(``core/models/load.py``: eval, the hf backend, ``train-persona export``, ``evolve blend``): weights missing from
the file, ``target_modules`` the model lacks and an ``r`` that disagrees with the weights are one line, exit 2; an
adapter trained on another model whose layers have the same sizes loads with one warning. Also the small fixes of
the same pass: ``--gguf X --force`` over a non-GGUF file, an empty adapter argument, Ctrl-C during export, the
probe's hint, ``models check``'s advice for a persona, transformers' mtime note on a resume.

Tiny random models: nothing here reads what a model says."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
safetensors_torch = pytest.importorskip("safetensors.torch")

from agentlab.cli import main  # noqa: E402
from agentlab.core.errors import AgentlabError, InputError  # noqa: E402
from agentlab.core.models.adapters import check_adapter_base, warn_other_base  # noqa: E402
from agentlab.core.models.load import load_causal_lm  # noqa: E402
from agentlab.core.models.modelref import resolve_model  # noqa: E402
from agentlab.core.train import blend_adapters  # noqa: E402
from agentlab.core.train.tiny import make_tiny_adapter, make_tiny_model  # noqa: E402
from agentlab.train_persona.export import export_gguf  # noqa: E402

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny models whose layers have the same sizes: a Llama and a Qwen2 (different models)."""
    root = tmp_path_factory.mktemp("bases")
    return {"a": make_tiny_model(root / "tiny-a", seed=1), "q": make_tiny_model(root / "tiny-q", seed=2, arch="qwen2")}


@pytest.fixture(scope="module")
def good(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_adapter(models["a"], tmp_path_factory.mktemp("adapters") / "good", r=4, seed=3)


def _copy(adapter: Path, out: Path) -> Path:
    out.mkdir()
    for name in (CONFIG, WEIGHTS):
        (out / name).write_bytes((adapter / name).read_bytes())
    return out


def _edit_config(folder: Path, **changes: object) -> None:
    config = json.loads((folder / CONFIG).read_text())
    (folder / CONFIG).write_text(json.dumps({**config, **changes}))


def _edit_weights(folder: Path, how: str) -> None:
    tensors = safetensors_torch.load_file(str(folder / WEIGHTS))
    if how == "half":  # the second layer's tensors removed
        tensors = {k: v for k, v in tensors.items() if ".layers.1." not in k}
    elif how == "target":  # only q_proj kept, named zzz_proj: a folder whose config and weights agree
        tensors = {k.replace("q_proj", "zzz_proj"): v for k, v in tensors.items() if ".q_proj." in k}
    else:  # lora_A keys renamed
        tensors = {k.replace("lora_A", "lora_X"): v for k, v in tensors.items()}
    safetensors_torch.save_file(tensors, str(folder / WEIGHTS))


def _broken(good: Path, tmp_path: Path, how: str) -> Path:
    folder = _copy(good, tmp_path / how)
    if how in ("half", "renamed"):
        _edit_weights(folder, how)
    elif how == "target":  # for another model: the weights hold what the config names, the model has none of it
        _edit_config(folder, target_modules=["zzz_proj"])
        _edit_weights(folder, how)
    elif how == "untargeted":  # PEFT loaded q_proj alone and dropped the other 12 modules' weights without a word
        _edit_config(folder, target_modules=["q_proj"])
    elif how == "rank":
        _edit_config(folder, r=2)  # the weights are rank 4
    return folder


SAYS = {"half": "weights file lacks 14 weights that its adapter_config.json asks for "
                 "(e.g. model.layers.1.self_attn.q_proj.lora_A.weight)",
        "renamed": "weights file lacks 14 weights that its adapter_config.json asks for",
        "target": "adapter_config.json: target_modules {'zzz_proj'} match no layer of",
        "rank": "adapter_config.json: r is 2, but the adapter's weights have rank 4 (model.layers.",
        "untargeted": 'adapter_config.json: target_modules is ["q_proj"], which leaves out 12 of the 14 modules the '
                      "adapter's weights hold (e.g. model.layers.0.mlp.down_proj in adapter_model.safetensors)"}


@pytest.mark.parametrize("how", list(SAYS))
def test_a_broken_adapter_is_one_line_exit_2_when_loaded(how: str, models: dict[str, Path], good: Path,
                                                         tmp_path: Path) -> None:
    """Half the tensors removed loaded and was scored, with PEFT's multi-line warning; the rest were exit 1 (or,
    for r, "does not fit this model ... trained on" the very model)."""
    folder = _broken(good, tmp_path, how)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PEFT's "Found missing adapter keys" warning no longer gets out
        with pytest.raises(InputError) as info:
            load_causal_lm(models["a"], device="cpu", adapters={"x": folder})
    assert SAYS[how] in info.value.message, info.value.message
    assert "\n" not in info.value.message and str(folder) in info.value.message and info.value.hint


@pytest.mark.parametrize("how", list(SAYS))
def test_a_broken_adapter_is_refused_by_export_and_blend(how: str, good: Path, tmp_path: Path) -> None:
    folder = _broken(good, tmp_path, how)
    out = tmp_path / "x.gguf"
    with pytest.raises(InputError) as info:
        export_gguf(folder, out)
    assert SAYS[how] in info.value.message and not out.exists(), info.value.message
    if how in ("rank", "untargeted"):  # the blend took r from the weights, alpha from the config: a child 2x too
        # strong; or blended 14 modules "exactly" into a child whose config named q_proj alone
        with pytest.raises(InputError) as info:
            blend_adapters([good, folder], [0.5, 0.5], tmp_path / "child")
        assert SAYS[how] in info.value.message and not (tmp_path / "child").exists(), info.value.message


def test_cli_export_and_eval_of_a_broken_adapter_exit_2(good: Path, tmp_path: Path, models: dict[str, Path],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    half, target = _broken(good, tmp_path, "half"), _broken(good, tmp_path, "target")
    assert main(["train-persona", "export", str(half), "--gguf", str(tmp_path / "x.gguf")]) == 2
    assert main(["train-persona", "export", str(target), "--gguf", str(tmp_path / "x.gguf")]) == 2
    err = capsys.readouterr().err
    assert "weights file lacks" in err and "match no layer" in err and "Traceback" not in err


def test_blend_names_the_parent_without_a_base(good: Path, tmp_path: Path) -> None:
    """It said "base model 'None' differs from ..."."""
    nobase = _copy(good, tmp_path / "nobase")
    _edit_config(nobase, base_model_name_or_path=None)
    for order in ([good, nobase], [nobase, good]):
        with pytest.raises(InputError) as info:
            blend_adapters(order, [0.5, 0.5], tmp_path / "child")
        assert info.value.message.startswith(f"{nobase}: adapter_config.json names no base model")
        assert "None" not in info.value.message


def test_an_adapter_on_another_model_of_the_same_sizes_warns(models: dict[str, Path], good: Path, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """An adapter trained on tiny-a loaded on tiny-q (a Qwen2 of the same sizes) without a word."""
    with caplog.at_level(logging.WARNING, logger="agentlab.core.models.adapters"):
        load_causal_lm(models["q"], device="cpu", adapters={"x": good})
    said = [r.getMessage() for r in caplog.records if r.name == "agentlab.core.models.adapters"]
    assert len(said) == 1 and f"trained on {models['a']}, not on {models['q']}" in said[0], said
    caplog.clear()
    nobase = _copy(good, tmp_path / "nobase")
    _edit_config(nobase, base_model_name_or_path=None)
    with caplog.at_level(logging.WARNING, logger="agentlab.core.models.adapters"):
        load_causal_lm(models["a"], device="cpu", adapters={"x": good})  # its own base
        load_causal_lm(models["a"], device="cpu", adapters={"x": nobase})  # names none
        load_causal_lm(str(models["a"]) + "/", device="cpu", adapters={"x": good})  # the same folder, spelt another way
    assert not [r for r in caplog.records if r.name == "agentlab.core.models.adapters"]


def test_a_base_of_another_name_with_the_same_sizes_warns_naming_both(models: dict[str, Path], good: Path,
                                                                     tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """`evolve run` and `train-persona export --base-model` took seeds trained on another model of the same
    architecture and sizes (a fine-tune, or a copy: metadata cannot tell) without a word, where `evolve blend`
    refused the pair: now a warning naming both paths, in every check (before a load and once loaded)."""
    other = make_tiny_model(tmp_path / "tiny-a2", seed=5)  # a Llama of tiny-a's sizes: another model
    config = json.loads((good / CONFIG).read_text())
    with caplog.at_level(logging.WARNING, logger="agentlab.core.models.adapters"):
        check_adapter_base(good, config, str(other), resolve_model(str(other)), runs="every seed is scored on",
                           hint="")
        assert warn_other_base(good, config, other)
    said = [r.getMessage() for r in caplog.records if r.name == "agentlab.core.models.adapters"]
    assert len(said) == 2 and all(f"({models['a']})" in m and f"({other})" in m and "\n" not in m for m in said), said
    assert "same architecture and sizes" in said[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="agentlab.core.models.adapters"):  # its own base: nothing
        check_adapter_base(good, config, str(models["a"]), resolve_model(str(models["a"])), runs="", hint="")
        assert not warn_other_base(good, config, models["a"])
    assert not [r for r in caplog.records if r.name == "agentlab.core.models.adapters"]


def test_export_on_another_base_warns(models: dict[str, Path], good: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import agentlab.train_persona.export as export

    def stop(*args: object, **kwargs: object) -> Path:
        raise AgentlabError("stop here")

    # warned once the adapter has merged (loaded): one that does not fit is refused with no warning before
    monkeypatch.setattr(export, "merge_adapter", lambda *args, **kwargs: tmp_path / "merged")
    monkeypatch.setattr(export, "_make_parents", stop)
    with caplog.at_level(logging.WARNING, logger="agentlab.core.models.adapters"), pytest.raises(AgentlabError):
        export_gguf(good, tmp_path / "x.gguf", base_model=str(models["q"]))
    assert any("not on" in r.getMessage() for r in caplog.records), caplog.records


def test_force_replaces_only_a_gguf(good: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--gguf data.txt --force` replaced the user's file."""
    import agentlab.train_persona.export as export

    def merge(*args: object, **kwargs: object) -> Path:
        raise AssertionError("merged before the output was checked")

    monkeypatch.setattr(export, "merge_adapter", merge)
    victim = tmp_path / "victim.txt"
    victim.write_text("my data\n")
    with pytest.raises(InputError) as info:
        export_gguf(good, victim, force=True)
    assert info.value.message == f"--gguf {victim}: already exists and is not a GGUF file; nothing was written"
    assert victim.read_text() == "my data\n"
    old = tmp_path / "old.gguf"
    old.write_bytes(b"GGUF\x03\x00\x00\x00")  # an earlier export: --force goes on to the merge
    with pytest.raises(AssertionError, match="merged before"):
        export_gguf(good, old, force=True)


def test_an_empty_adapter_argument_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """It said "`.`: not a PEFT adapter folder"."""
    monkeypatch.chdir(tmp_path)
    assert main(["train-persona", "export", "", "--gguf", "z.gguf"]) == 2
    err = capsys.readouterr().err
    assert "the adapter folder argument is empty" in err and "not a PEFT adapter" not in err
    assert not list(tmp_path.iterdir())


def test_ctrl_c_during_export_says_run_it_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Export makes no run folder: "before a run folder was made: nothing to resume" was beside the point."""
    import agentlab.cli as cli
    from agentlab.cli.commands import continue_with
    from agentlab.cli.common import console

    printed: list[str] = []
    monkeypatch.setattr(console, "print", lambda *args, **kwargs: printed.append(" ".join(map(str, args))))

    def interrupted(**kwargs: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "app", interrupted)
    assert main(["train-persona", "export", "adapters/a", "--gguf", "a.gguf"]) == 130
    assert "\n".join(printed).strip() == "[yellow]interrupted[/]; run the command again"
    assert continue_with("train-persona") == "continue with --resume"  # training keeps its advice


def test_the_probe_hint_names_each_commands_setting() -> None:
    """It said "lower --set min_logit_change", a key train-persona did not have."""
    from agentlab.core.harness.lm import check_probe
    from agentlab.train_persona.config import TrainPersonaConfig

    with pytest.raises(InputError) as info:
        check_probe({"a": 0.0}, 1e-4, {"a": Path("a")})
    assert "--set min_logit_change=" in (info.value.hint or "")
    assert "--set eval.min_logit_change=" in (info.value.hint or "")
    cfg = TrainPersonaConfig.model_validate({"eval": {"min_logit_change": 1e-6}})
    assert cfg.eval.min_logit_change == 1e-6 and TrainPersonaConfig().eval.min_logit_change == 1e-4


def test_models_check_says_to_train_and_export_a_missing_persona(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """It said `models make-tiny models/persona_a` (random weights) for a persona's GGUF."""
    from agentlab.pipeline.config import make_advice

    monkeypatch.chdir(tmp_path)
    said = make_advice(Path("models/persona_a.gguf"))
    assert "make-tiny" not in said and "agentlab train-persona --data persona_a --out adapters/persona_a" in said
    assert "agentlab train-persona export adapters/persona_a --gguf models/persona_a.gguf" in said
    (tmp_path / "adapters" / "mine").mkdir(parents=True)
    (tmp_path / "adapters" / "mine" / CONFIG).write_text("{}")
    said = make_advice(Path("models/mine.gguf"))
    assert said.startswith("export the adapter adapters/mine") and "--data" not in said
    assert "make-tiny" in make_advice(Path("models/other.gguf"))  # not a persona: as before


def test_transformers_mtime_note_is_silenced(caplog: pytest.LogCaptureFixture) -> None:
    """A resume printed "[transformers] mtime may not be reliable on this filesystem, falling back to numerical
    ordering": checkpoints saved within a second, nothing about the filesystem. Only that message goes."""
    from agentlab.core.models.device import quiet_imports

    quiet_imports()
    quiet_imports()  # once is enough: no second filter
    logger = logging.getLogger("transformers.trainer_utils")
    assert len(logger.filters) == 1
    with caplog.at_level(logging.WARNING, logger="transformers.trainer_utils"):
        logger.warning("mtime may not be reliable on this filesystem, falling back to numerical ordering")
        logger.warning("another warning")
    assert [r.getMessage() for r in caplog.records] == ["another warning"]


def test_an_adapter_of_another_size_is_refused_without_saying_it_loads(models: dict[str, Path], good: Path,
                                                                       tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    """`eval --model models/tiny --adapter adapters/smol-a`: a warning "it loads (its layers have the same sizes)",
    then the error that the shapes differ."""
    narrow = make_tiny_model(tmp_path / "narrow", seed=4, hidden_size=32, intermediate=64)
    with caplog.at_level(logging.WARNING, logger="agentlab.core.models.adapters"), pytest.raises(AgentlabError):
        load_causal_lm(narrow, device="cpu", adapters={"x": good})
    assert not [r for r in caplog.records if r.name == "agentlab.core.models.adapters"]
