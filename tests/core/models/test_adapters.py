"""The checks every command makes of a LoRA adapter folder before a model loads (``core.models.adapters``): eval,
export, blend, debate and `models list` refuse or list the same folders, with the same words."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from agentlab.core.errors import InputError
from agentlab.core.models.adapters import check_scales, find_adapters, read_lora, read_peft, read_scored


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
