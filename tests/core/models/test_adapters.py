"""The checks every command makes of a LoRA adapter folder before a model loads (``core.models.adapters``): eval,
export, blend, debate and `models list` refuse or list the same folders, with the same words."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from agentlab.core.errors import InputError
from agentlab.core.models.adapters import (
    check_lora_rank,
    check_scales,
    find_adapters,
    read_lora,
    read_peft,
    read_scored,
)


def _adapter(folder: Path, *, cut: bool = False, **config: object) -> Path:
    """A LoRA adapter folder whose weights hold one float32 tensor of 4 values (the last 8 bytes gone if ``cut``)."""
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8, **config}))
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}).encode()
    data = struct.pack("<Q", len(header)) + header + bytes(16)
    (folder / "adapter_model.safetensors").write_bytes(data[:-8] if cut else data)
    return folder


def test_weights_cut_short_are_refused_by_read_lora(tmp_path: Path) -> None:
    """eval's check (read_lora) passed a cut adapter_model.safetensors, which failed only once the model loaded;
    debate and `models list` caught it with their own copies of the check."""
    assert read_lora(_adapter(tmp_path / "whole"), "scored")["r"] == 8
    cut = _adapter(tmp_path / "cut", cut=True)
    with pytest.raises(InputError) as caught:
        read_lora(cut, "scored")
    assert caught.value.message.startswith(f"{cut / 'adapter_model.safetensors'}: not a readable safetensors file "
                                           "(truncated: the file has ")
    assert "cut short" in (caught.value.hint or "")
    unreadable: list[tuple[str, str]] = []
    assert [a.path for a in find_adapters(tmp_path, unreadable)] == [str(tmp_path / "whole")]
    assert unreadable == [(str(cut), caught.value.message)]


@pytest.mark.parametrize("config, said", [
    ({"peft_type": "LORA"}, None), ({"peft_type": "lora"}, "peft_type is 'lora'; PEFT reads only \"LORA\""),
    ({"peft_type": "IA3"}, "peft_type is 'IA3'; only LoRA adapters can be scored"),
    ({"lora_alpha": None}, "lora_alpha is null; it must be a number above 0"),
    ({"use_rslora": "yes"}, 'use_rslora is "yes"; it must be true or false')])
def test_read_lora_names_the_field_it_refuses(tmp_path: Path, config: dict, said: str | None) -> None:
    folder = _adapter(tmp_path / "a", **config)
    if said is None:
        read_lora(folder, "scored")
        return
    with pytest.raises(InputError) as caught:
        read_lora(folder, "scored")
    assert caught.value.message == f"{folder / 'adapter_config.json'}: {said}"


@pytest.mark.parametrize("config, said", [
    ({"peft_type": "IA3"}, None), ({"peft_type": "PREFIX_TUNING", "r": "ignored"}, None),  # scales: LoRA's only
    ({"peft_type": "LORA", "r": "eight"}, 'r is "eight"; it must be a whole number above 0'),
    ({"peft_type": "ia3"}, "peft_type is 'ia3'; PEFT reads only \"IA3\""),
    ({"peft_type": 7}, "peft_type is 7; the installed PEFT knows no such method")])
def test_read_peft_takes_any_method_peft_loads(tmp_path: Path, config: dict, said: str | None) -> None:
    """eval scores any PEFT adapter PeftModel loads; blend and export (read_lora) still take LoRA only."""
    folder = _adapter(tmp_path / "a", **config)
    if said is None:
        assert read_peft(folder)["peft_type"] == config["peft_type"]
        with pytest.raises(InputError, match="only LoRA adapters can be blended"):
            read_lora(folder, "blended")
        return
    with pytest.raises(InputError) as caught:
        read_peft(folder)
    assert caught.value.message.startswith(f"{folder / 'adapter_config.json'}: {said}")


def test_read_scored_refuses_two_methods_and_cut_weights(tmp_path: Path) -> None:
    lora, ia3 = _adapter(tmp_path / "lora"), _adapter(tmp_path / "ia3", peft_type="IA3")
    assert [c["peft_type"] for c in read_scored([lora, _adapter(tmp_path / "lora2")])] == ["LORA", "LORA"]
    with pytest.raises(InputError) as caught:
        read_scored([lora, ia3])
    assert caught.value.message.startswith(f"{ia3 / 'adapter_config.json'}: peft_type is 'IA3', but {lora}'s is "
                                           "'LORA'")
    with pytest.raises(InputError, match="not a readable safetensors file"):
        read_scored([_adapter(tmp_path / "cut", cut=True, peft_type="IA3")])


def test_check_scales_is_public_and_leaves_out_missing_fields(tmp_path: Path) -> None:
    check_scales(tmp_path, {})
    with pytest.raises(InputError, match='r is "eight"'):
        check_scales(tmp_path, {"r": "eight"})


@pytest.mark.parametrize("name", ["adapter_config.json", "adapter_model.safetensors"])
def test_a_folder_in_place_of_the_config_or_the_weights_is_named_as_one(tmp_path: Path, name: str) -> None:
    """It said "no adapter_config.json" / "no adapter_model.safetensors or adapter_model.bin"."""
    folder = _adapter(tmp_path / "a")
    (folder / name).unlink()
    (folder / name).mkdir()
    with pytest.raises(InputError) as caught:
        read_lora(folder, "scored")
    assert caught.value.message.startswith(f"{folder / name}: is a folder, not the adapter's "), caught.value.message
    assert "no " not in caught.value.message and caught.value.hint


def _factors(folder: Path, modules: list[str], **config: object) -> Path:
    """A LoRA folder whose weights hold rank-2 factors (header only read) for ``modules`` (paths in the model)."""
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, **config}))
    entries, offset = {}, 0
    for module in modules:
        for factor, shape in (("lora_A", [2, 4]), ("lora_B", [4, 2])):
            entries[f"base_model.model.{module}.{factor}.weight"] = {"dtype": "F32", "shape": shape,
                                                                      "data_offsets": [offset, offset + 32]}
            offset += 32
    header = json.dumps(entries).encode()
    (folder / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(offset))
    return folder


MODULES = [f"model.layers.{i}.{part}" for i in range(2)
           for part in ("self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj")]


@pytest.mark.parametrize("targets, left_out", [
    (["q_proj", "v_proj", "down_proj"], None), (["down_proj", "q_proj", "v_proj", "k_proj"], None),  # any order, more
    (MODULES, None),  # whole paths
    (r".*\.(q_proj|v_proj|down_proj)", None), ("all-linear", None), (None, None),  # a pattern; PEFT's defaults
    (["q_proj"], 4), (["self_attn.q_proj", "self_attn.v_proj"], 2), ([MODULES[0]], 5),  # the rest dropped
    (["roj"], 6),  # a name ends a path at a dot: "roj" is no q_proj
    (r".*\.q_proj", 4), (r"q_proj", 6)])  # a pattern matches the whole path
def test_target_modules_leaving_out_modules_the_weights_hold_are_refused(tmp_path: Path, targets: object,
                                                                         left_out: int | None) -> None:
    """A config whose target_modules named q_proj over weights for 14 modules was blended ("exact ... over 14
    modules", a child PEFT loads as q_proj alone), taken as an evolve seed and exported with 13 modules' deltas
    dropped: what PEFT makes layers for is what the folder is."""
    folder = _factors(tmp_path / "a", MODULES, target_modules=targets)
    config = read_lora(folder, "blended")
    if left_out is None:
        check_lora_rank(folder, config)
        return
    with pytest.raises(InputError) as caught:
        check_lora_rank(folder, config)
    assert caught.value.message.startswith(f"{folder / 'adapter_config.json'}: target_modules is "
                                           f"{json.dumps(targets)}, which leaves out {left_out} of the 6 modules "
                                           "the adapter's weights hold (e.g. model.layers."), caught.value.message
    assert caught.value.hint and '["down_proj", "q_proj", "v_proj"]' in caught.value.hint


def test_exclude_modules_and_layer_choices_are_read_as_peft_reads_them(tmp_path: Path) -> None:
    folder = _factors(tmp_path / "a", MODULES, target_modules=["q_proj", "v_proj", "down_proj"],
                      exclude_modules=["down_proj"])
    with pytest.raises(InputError, match="leaves out 2 of the 6 modules") as err:
        check_lora_rank(folder, read_lora(folder, "blended"))
    assert "exclude_modules is [\"down_proj\"]" in err.value.message  # the field that leaves them out
    assert "remove those modules from exclude_modules" in (err.value.hint or "")
    for i, config in enumerate([{"target_modules": ["q_proj"], "layers_to_transform": [0]},  # not told: left to PEFT
                                {"target_modules": "ALL-LINEAR"},  # as PEFT reads it, whatever its case
                                {"target_modules": "(", "exclude_modules": None},  # a pattern PEFT would fail on
                                {"target_modules": ["q_proj"], "peft_type": "IA3"}]):  # not LoRA
        other = _factors(tmp_path / str(i), MODULES, **config)
        check_lora_rank(other, json.loads((other / "adapter_config.json").read_text()))
