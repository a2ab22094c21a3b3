"""Exact LoRA blends (``agentlab.core.train.blend``, ``agentlab evolve blend``) on the tiny model: the child's delta W
is the weighted sum of the parents', the error of a truncated blend is the discarded energy, the child loads in PEFT."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from agentlab.cli import main  # noqa: E402
from agentlab.core.errors import InputError  # noqa: E402
from agentlab.core.train import blend_adapters  # noqa: E402
from agentlab.core.train.blend import dense_delta  # noqa: E402

# (r, alpha, use_rslora) of the three parents: different ranks and alphas, one rsLoRA.
SPECS = [(4, 8, False), (8, 4, True), (6, 12, False)]


def _make_adapter(base: Path, out: Path, r: int, alpha: int, rslora: bool, seed: int) -> Path:
    from agentlab.core.train.tiny import make_tiny_adapter

    return make_tiny_adapter(base, out, r=r, alpha=alpha, rslora=rslora, seed=seed)


@pytest.fixture(scope="module")
def parents(tiny_model: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("parents")
    return [_make_adapter(tiny_model["hf"], root / f"p{i}", r, a, rs, seed=i) for i, (r, a, rs) in enumerate(SPECS)]


def _rel(x: Any, y: Any) -> float:
    return float(torch.linalg.norm(x - y) / torch.linalg.norm(y))


def _target(parents: list[Path], weights: list[float]) -> dict[str, Any]:
    deltas = [dense_delta(p) for p in parents]
    return {m: sum(w * d[m] for w, d in zip(weights, deltas, strict=True)) for m in deltas[0]}


@pytest.mark.parametrize("weights", [[0.6, 0.4], [0.5, -0.7, 1.2]], ids=["two", "three-negative"])
def test_exact_blend_equals_weighted_sum_of_deltas(parents: list[Path], tmp_path: Path, weights: list[float]) -> None:
    chosen = parents[: len(weights)]
    result = blend_adapters(chosen, weights, tmp_path / "child")
    assert result.rank == sum(SPECS[i][0] for i in range(len(weights)))
    assert result.discarded_energy < 1e-12
    child, target = dense_delta(tmp_path / "child"), _target(chosen, weights)
    assert set(child) == set(target)
    for m in target:
        assert _rel(child[m], target[m]) < 1e-5, m
    lineage = json.loads((tmp_path / "child" / "lineage.json").read_text())
    assert lineage["weights"] == weights and lineage["method"] == "exact" and lineage["rank"] == result.rank
    assert lineage["exact"] is True and result.to_dict()["exact"] is True
    assert lineage["parents"] == [str(p) for p in chosen]
    config = json.loads((tmp_path / "child" / "adapter_config.json").read_text())
    assert config["r"] == result.rank and config["lora_alpha"] == result.rank and not config["use_rslora"]


def test_truncated_blend_error_is_the_discarded_energy(parents: list[Path], tmp_path: Path) -> None:
    weights = [0.5, -0.7, 1.2]
    result = blend_adapters(parents, weights, tmp_path / "child", rank=5)
    assert 0 < result.discarded_energy < 1
    child, target = dense_delta(tmp_path / "child"), _target(parents, weights)
    for m, t in target.items():  # Eckart-Young: ||dW - dW_r||^2 / ||dW||^2 = discarded energy
        err = float(torch.linalg.norm(child[m] - t) ** 2 / torch.linalg.norm(t) ** 2)
        assert err == pytest.approx(result.module_energy[m], rel=1e-4, abs=1e-9), m
    total = sum(float(torch.linalg.norm(child[m] - t) ** 2) for m, t in target.items())
    norm = sum(float(torch.linalg.norm(t) ** 2) for t in target.values())
    assert total / norm == pytest.approx(result.discarded_energy, rel=1e-4)
    # a truncated child is not the weighted sum: not called exact (it was, in --json and lineage.json)
    assert not result.exact and result.to_dict()["exact"] is False
    assert json.loads((tmp_path / "child" / "lineage.json").read_text())["exact"] is False


def test_child_alpha_folds_the_scale(parents: list[Path], tmp_path: Path) -> None:
    blend_adapters(parents[:2], [0.3, 0.7], tmp_path / "child", lora_alpha=7)
    assert json.loads((tmp_path / "child" / "adapter_config.json").read_text())["lora_alpha"] == 7
    child, target = dense_delta(tmp_path / "child"), _target(parents[:2], [0.3, 0.7])
    assert max(_rel(child[m], target[m]) for m in target) < 1e-5


def test_linear_blend_is_not_exact(tiny_model: dict[str, Path], tmp_path: Path) -> None:
    a = _make_adapter(tiny_model["hf"], tmp_path / "a", 4, 8, False, seed=10)
    b = _make_adapter(tiny_model["hf"], tmp_path / "b", 4, 16, False, seed=11)
    blend_adapters([a, b], [0.5, 0.5], tmp_path / "linear", method="linear")
    blend_adapters([a, b], [0.5, 0.5], tmp_path / "exact")
    target = _target([a, b], [0.5, 0.5])
    linear, exact = dense_delta(tmp_path / "linear"), dense_delta(tmp_path / "exact")
    assert min(_rel(linear[m], target[m]) for m in target) > 0.1
    assert max(_rel(exact[m], target[m]) for m in target) < 1e-5
    assert json.loads((tmp_path / "linear" / "lineage.json").read_text())["exact"] is False
    r8 = _make_adapter(tiny_model["hf"], tmp_path / "r8", 8, 8, False, seed=12)
    with pytest.raises(InputError, match="one rank"):
        blend_adapters([a, r8], [0.5, 0.5], tmp_path / "x", method="linear")


def test_mutation_is_seeded_and_sparse(parents: list[Path], tmp_path: Path) -> None:
    from safetensors.torch import load_file

    for name, seed in (("m1", 3), ("m2", 3), ("m3", 4)):
        blend_adapters(parents[:2], [0.5, 0.5], tmp_path / name, mut=0.1, mut_std=0.05, seed=seed)
    blend_adapters(parents[:2], [0.5, 0.5], tmp_path / "plain")
    m1, m2, m3, plain = (load_file(str(tmp_path / n / "adapter_model.safetensors"))
                         for n in ("m1", "m2", "m3", "plain"))
    assert all(torch.equal(m1[k], m2[k]) for k in m1)
    assert any(not torch.equal(m1[k], m3[k]) for k in m1)
    changed = sum(int((m1[k] != plain[k]).sum()) for k in m1) / sum(m1[k].numel() for k in m1)
    assert 0.05 < changed < 0.15
    lineage = json.loads((tmp_path / "m1" / "lineage.json").read_text())
    assert lineage["mutation"] == {"p": 0.1, "std": 0.05} and lineage["exact"] is False  # noise added to the sum


def test_child_logits_match_the_dense_merge(tiny_model: dict[str, Path], parents: list[Path], tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    weights = [0.5, -0.7, 1.2]
    blend_adapters(parents, weights, tmp_path / "child")
    ids = torch.tensor([[1, 5, 9, 14, 3, 7, 2, 11]])
    child = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model["hf"], dtype=torch.float32),
                                      str(tmp_path / "child")).eval()
    dense = AutoModelForCausalLM.from_pretrained(tiny_model["hf"], dtype=torch.float32).eval()
    modules = dict(dense.named_modules())
    with torch.no_grad():
        for m, d in _target(parents, weights).items():
            modules[m.removeprefix("base_model.model.")].weight += d.to(torch.float32)
        got, want = child(ids).logits, dense(ids).logits
        base = AutoModelForCausalLM.from_pretrained(tiny_model["hf"], dtype=torch.float32).eval()(ids).logits
    assert not torch.allclose(want, base, atol=1e-3)  # the blend really changes the model
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)


def test_bad_inputs_are_input_errors(tiny_model: dict[str, Path], parents: list[Path], tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        blend_adapters([parents[0], tmp_path / "nosuch"], [0.5, 0.5], tmp_path / "c")
    (tmp_path / "plain").mkdir()
    with pytest.raises(InputError, match="not a PEFT adapter folder"):
        blend_adapters([parents[0], tmp_path / "plain"], [0.5, 0.5], tmp_path / "c")
    with pytest.raises(InputError, match="2 weights for 3 parents"):
        blend_adapters(parents, [0.5, 0.5], tmp_path / "c")
    other = tmp_path / "other"
    other.mkdir()
    for f in parents[1].iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    config = json.loads((other / "adapter_config.json").read_text())
    (other / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": "elsewhere"}))
    with pytest.raises(InputError, match="base model"):
        blend_adapters([parents[0], other], [0.5, 0.5], tmp_path / "c")
    blend_adapters(parents[:2], [0.5, 0.5], tmp_path / "c")
    with pytest.raises(InputError, match="already exists"):
        blend_adapters(parents[:2], [0.5, 0.5], tmp_path / "c")
    blend_adapters(parents[:2], [1.0, 0.0], tmp_path / "c", force=True)
    assert json.loads((tmp_path / "c" / "lineage.json").read_text())["weights"] == [1.0, 0.0]
    notes = tmp_path / "notes"  # --force replaces an adapter folder only: a folder of other files was deleted whole
    (notes / "sub").mkdir(parents=True)
    (notes / "keep.txt").write_text("precious")
    with pytest.raises(InputError, match="holds files but is not an adapter folder"):
        blend_adapters(parents[:2], [0.5, 0.5], notes, force=True)
    assert (notes / "keep.txt").read_text() == "precious" and (notes / "sub").is_dir()
    with pytest.raises(InputError, match="not finite"):  # finite in float32, but noise of 3e38 is not, often
        blend_adapters(parents[:2], [0.5, 0.5], tmp_path / "huge", mut=1.0, mut_std=3e38)
    assert not (tmp_path / "huge").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp folders left


def test_a_child_that_is_not_finite_is_its_own_kind_of_input_error(parents: list[Path], tmp_path: Path) -> None:
    """`evolve run` told it from the blend's other refusals by its text ("not finite"): now by its type, with the
    factor, the dtype and the folder not written as fields; the message and hint stay `evolve blend`'s."""
    from agentlab.core.train.blend import NotFiniteChild

    with pytest.raises(NotFiniteChild) as caught:
        blend_adapters(parents[:2], [1e300, 1e300], tmp_path / "child")
    exc = caught.value
    assert isinstance(exc, InputError) and exc.exit_code == 2
    assert exc.dtype == "float32" and exc.tensor.endswith(".weight") and exc.child == tmp_path / "child"
    assert exc.message == f"the child's {exc.tensor} is not finite in float32: nothing written to {tmp_path / 'child'}"
    assert exc.hint == "give smaller weights (or a smaller --mut-std, --scale)"
    assert not (tmp_path / "child").exists()


def test_cli_blend_writes_a_child_peft_loads(tiny_model: dict[str, Path], parents: list[Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    child = tmp_path / "gen1_child"
    code = main(["evolve", "blend", "--parents", str(parents[0]), str(parents[1]), "--child", str(child),
                 "--alpha", "0.6", "--mut", "0.03", "--mut-std", "0.01", "--json"])
    assert code == 0, capsys.readouterr().err
    out = json.loads(capsys.readouterr().out)
    assert out["rank"] == 12 and out["weights"] == [0.6, pytest.approx(0.4)] and out["method"] == "exact"
    assert out["discarded_energy"] == pytest.approx(0.0, abs=1e-12) and not math.isnan(out["seconds"])
    assert out["exact"] is False and out["mutated"] is True  # --mut adds noise: --json said exact (lineage did not)
    assert json.loads((child / "lineage.json").read_text())["exact"] is False
    umask = os.umask(0)
    os.umask(umask)  # safetensors wrote the weights 0600 beside a 0644 config and lineage
    assert {p.name: p.stat().st_mode & 0o777 for p in child.iterdir()} == dict.fromkeys(
        (p.name for p in child.iterdir()), 0o666 & ~umask)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model["hf"]), str(child))
    assert model.peft_config["default"].r == 12

    assert main(["evolve", "blend", "--parents", *map(str, parents), "--child", str(tmp_path / "three"),
                 "--weights", "0.5,-0.3,0.8", "--rank", "6"]) == 0
    err = capsys.readouterr().err
    assert "rank 6" in err and "discarded energy" in err and "not exact: truncated to this rank" in err


@pytest.mark.parametrize("case", ["missing", "non-peft", "alpha-3", "weights-count", "exists", "alpha-and-weights",
                                  "weights-zero", "weights-nan", "weights-words", "rank-0", "mut-std-huge"])
def test_cli_bad_input_is_one_line_exit_2(parents: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          case: str) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "exists").mkdir()
    (tmp_path / "exists" / "adapter_config.json").write_text("{}")  # an adapter there (an empty folder is used)
    two = [str(parents[0]), str(parents[1])]
    args = {
        "missing": ["--parents", two[0], str(tmp_path / "nosuch"), "--alpha", "0.5"],
        "non-peft": ["--parents", two[0], str(tmp_path / "plain"), "--alpha", "0.5"],
        "alpha-3": ["--parents", *map(str, parents), "--alpha", "0.5"],
        "weights-count": ["--parents", *map(str, parents), "--weights", "0.5,0.5"],
        "exists": ["--parents", *two, "--alpha", "0.5", "--child", str(tmp_path / "exists")],
        "alpha-and-weights": ["--parents", *two, "--alpha", "0.5", "--weights", "0.5,0.5"],
        "weights-zero": ["--parents", *two, "--weights", "0,0"],  # a child that changes nothing (was exit 0)
        "weights-nan": ["--parents", *two, "--weights", "nan,1"],  # (refused by blend_adapters already)
        "weights-words": ["--parents", *two, "--weights", "x,y"],
        "rank-0": ["--parents", *two, "--rank", "0"],
        "mut-std-huge": ["--parents", *two, "--mut", "0.5", "--mut-std", "1e300"],  # inf in float32 (was exit 0)
    }[case]
    if "--child" not in args:
        args += ["--child", str(tmp_path / "child")]
    assert main(["evolve", "blend", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: ") and len([line for line in err if line.startswith("error")]) == 1
    assert err[-1].startswith("hint: "), err  # and the next step


def test_lineage_names_parents_given_relative_by_absolute_path(parents: list[Path], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Parents given relative to the working folder were recorded as typed, so the child's lineage.json named
    folders that did not exist from anywhere else (the child's own folder included)."""
    monkeypatch.chdir(parents[0].parent)
    blend_adapters([Path(parents[0].name), Path(parents[1].name)], [0.5, 0.5], tmp_path / "rel")
    lineage = json.loads((tmp_path / "rel" / "lineage.json").read_text())
    assert lineage["parents"] == [str(parents[0]), str(parents[1])]


def test_a_cut_short_parent_says_what_to_do(parents: list[Path], tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A truncated adapter_model.safetensors was one error line with no hint, unlike every other error."""
    import shutil

    cut = tmp_path / "cut"
    shutil.copytree(parents[0], cut)
    weights = cut / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])
    code = main(["evolve", "blend", "--parents", str(cut), str(parents[1]), "--child", str(tmp_path / "child")])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and "cut/adapter_model.safetensors: not a readable safetensors file (truncated" in err
    assert "hint: the weights file is damaged or cut short" in err


@pytest.mark.parametrize("peft_type, said", [("LORA", None), ("lora", "peft_type is 'lora'; PEFT reads only \"LORA\""),
                                             ("IA3", "peft_type is 'IA3'; only LoRA adapters can "
                                                                   "be blended")])
def test_a_parent_is_read_as_every_command_reads_a_lora_adapter(parents: list[Path], tmp_path: Path, peft_type: str,
                                                                 said: str | None) -> None:
    """blend compared peft_type with "LORA" itself, in other words than eval and export: one check for all (PEFT
    cannot load "lora": a child blended from it would load nowhere)."""
    import shutil

    from agentlab.core.train.blend import read_parent

    parent = tmp_path / "p"
    shutil.copytree(parents[0], parent)
    config = json.loads((parent / "adapter_config.json").read_text())
    (parent / "adapter_config.json").write_text(json.dumps({**config, "peft_type": peft_type}))
    if said is None:
        assert read_parent(parent).modules
        return
    with pytest.raises(InputError) as caught:
        read_parent(parent)
    assert caught.value.message == f"{parent / 'adapter_config.json'}: {said}"


def test_a_dora_parent_says_what_to_do(parents: list[Path], tmp_path: Path) -> None:
    """The DoRA refusal was the one blend error with no hint line."""
    import shutil

    from agentlab.core.train.blend import read_parent

    parent = tmp_path / "dora"
    shutil.copytree(parents[0], parent)
    config = json.loads((parent / "adapter_config.json").read_text())
    (parent / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(InputError) as caught:
        read_parent(parent)
    assert caught.value.message == f"{parent}: a DoRA adapter; only plain LoRA adapters can be blended"
    assert "plain LoRA" in (caught.value.hint or "") and "merge_and_unload" in (caught.value.hint or "")
