"""Pruning on the session's tiny Llama (and a tiny Qwen2 for biases): exact sparsity per layer, N:M groups, Wanda's
choice against magnitude's when activations are uneven, and structured pruning that equals zeroing what it removes,
shrinks the model, and round-trips through save_pretrained / from_pretrained and generate."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from agentlab.compress.prune import (  # noqa: E402
    decoder_linears,
    keep_kv_groups,
    keep_mlp_channels,
    magnitude_prune,
    param_count,
    sparsity_of,
    structured_prune,
    wanda_prune,
)
from agentlab.core.errors import InputError  # noqa: E402
from agentlab.core.models.load import load_causal_lm  # noqa: E402
from agentlab.core.train.tiny import CORPUS, make_tiny_model  # noqa: E402

TEXT = CORPUS.read_text(encoding="utf-8")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def tiny(tiny_model: dict[str, Path]) -> tuple[Any, Any]:
    return load_causal_lm(tiny_model["hf"], device="cpu")


def logits(model: Any, ids: list[int] | None = None) -> Any:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids or list(range(4, 40))])).logits


def test_magnitude_reaches_the_sparsity_of_every_layer_by_dropping_the_smallest(tiny: tuple[Any, Any]) -> None:
    model, _ = tiny
    dense = {name: lin.weight.detach().clone() for name, lin in decoder_linears(model).items()}
    report = magnitude_prune(model, 0.3)
    assert report["sparsity"] == pytest.approx(0.3, abs=1e-3) and report["layers"] == 14
    for name, lin in decoder_linears(model).items():
        gone = lin.weight == 0
        assert int(gone.sum()) == round(lin.weight.numel() * 0.3), name
        assert dense[name][~gone].abs().min() >= dense[name][gone].abs().max()  # the smallest went
    assert sparsity_of(model).sparsity == pytest.approx(0.3, abs=1e-3)
    assert model.lm_head.weight.ne(0).all() and model.model.embed_tokens.weight.ne(0).all()


@pytest.mark.parametrize("method", ["magnitude", "wanda"])
def test_two_of_four_holds_in_every_group(tiny: tuple[Any, Any], method: str) -> None:
    model, tokenizer = tiny
    if method == "magnitude":
        dense = {name: lin.weight.detach().clone() for name, lin in decoder_linears(model).items()}
        report = magnitude_prune(model, None, "2:4")
    else:
        report = wanda_prune(model, tokenizer, TEXT, 0.5, "2:4", n_samples=8, seq_len=64)
    assert report["sparsity"] == 0.5
    for name, lin in decoder_linears(model).items():
        groups = lin.weight.reshape(lin.weight.shape[0], -1, 4)
        assert (groups == 0).sum(dim=2).eq(2).all(), name
        if method == "magnitude":
            old = dense[name].reshape(groups.shape).abs()
            kept, gone = groups != 0, groups == 0
            assert (old.masked_fill(gone, float("inf")).amin(2) >= old.masked_fill(kept, 0).amax(2)).all()


def test_wanda_prunes_each_output_row_to_the_sparsity(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    report = wanda_prune(model, tokenizer, TEXT, 0.5, n_samples=4, seq_len=64)
    assert report["calib_samples"] == 4 and report["calib_tokens"] == 256
    for name, lin in decoder_linears(model).items():
        assert (lin.weight == 0).sum(dim=1).eq(lin.weight.shape[1] // 2).all(), name


def test_wanda_keeps_the_weights_of_loud_inputs_where_magnitude_does_not(tiny: tuple[Any, Any]) -> None:
    """Layer 0's attention input norm scales half the hidden channels up 20x and the other half down 20x: q_proj's
    inputs are then uneven, and Wanda keeps the weights that read the loud half, which magnitude ignores."""
    model, tokenizer = tiny
    with torch.no_grad():
        norm = model.model.layers[0].input_layernorm.weight
        norm[:32] *= 20
        norm[32:] /= 20
    by_magnitude = copy.deepcopy(model)
    magnitude_prune(by_magnitude, 0.5)
    wanda_prune(model, tokenizer, TEXT, 0.5, n_samples=8, seq_len=64)
    q_wanda = model.model.layers[0].self_attn.q_proj.weight != 0
    q_magnitude = by_magnitude.model.layers[0].self_attn.q_proj.weight != 0
    assert q_wanda[:, :32].float().mean() > 0.95  # kept: nearly all of the loud half
    assert 0.35 < q_magnitude[:, :32].float().mean() < 0.65  # magnitude cannot see loudness
    assert (q_wanda != q_magnitude).float().mean() > 0.3


@pytest.mark.parametrize(("sparsity", "pattern"), [(1.0, "unstructured"), (None, "unstructured"), (0.3, "2:4"),
                                                   (None, "4:2"), (None, "half")])
def test_bad_sparsity_or_pattern_is_an_input_error(tiny: tuple[Any, Any], sparsity: Any, pattern: str) -> None:
    with pytest.raises(InputError):
        magnitude_prune(tiny[0], sparsity, pattern)


def test_sparsity_of_a_dense_model_is_zero(tiny: tuple[Any, Any]) -> None:
    found = sparsity_of(tiny[0])
    assert found.sparsity == 0 and found.zeros == 0 and found.weights == sum(
        lin.weight.numel() for lin in decoder_linears(tiny[0]).values())


def test_removing_mlp_channels_equals_zeroing_them(tiny: tuple[Any, Any]) -> None:
    model, _ = tiny
    zeroed = copy.deepcopy(model)
    keep = torch.tensor([1, 5, 6, 30, 64, 100, 127])
    keep_mlp_channels(model.model.layers[1].mlp, keep)
    gone = torch.ones(128, dtype=torch.bool)
    gone[keep] = False
    with torch.no_grad():
        zeroed.model.layers[1].mlp.down_proj.weight[:, gone] = 0
    assert model.model.layers[1].mlp.up_proj.weight.shape == (7, 64)
    torch.testing.assert_close(logits(model), logits(zeroed), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("group", [0, 1])
def test_removing_a_kv_group_equals_zeroing_its_query_heads_output(tiny: tuple[Any, Any], group: int) -> None:
    """4 query heads on 2 KV heads (head_dim 16): group g is KV head g and query heads 2g, 2g + 1."""
    model, _ = tiny
    zeroed = copy.deepcopy(model)
    keep_kv_groups(model.model.layers[0].self_attn, [1 - group], rep=2, head_dim=16)
    with torch.no_grad():
        zeroed.model.layers[0].self_attn.o_proj.weight[:, group * 32:(group + 1) * 32] = 0
    assert model.model.layers[0].self_attn.k_proj.weight.shape == (16, 64)
    torch.testing.assert_close(logits(model), logits(zeroed), atol=1e-5, rtol=1e-5)


def roundtrip(model: Any, tokenizer: Any, folder: Path) -> Any:
    """Save, reload with the shared loader, check same logits and greedy generate with and without the KV cache."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    again, _ = load_causal_lm(folder, device="cpu")
    torch.testing.assert_close(logits(again), logits(model))
    prompt = torch.tensor([[5, 6, 7, 8, 9]])
    cached = again.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=True)
    plain = again.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=False)
    assert cached.shape == (1, 11) and torch.equal(cached, plain)  # the renumbered layers index the cache right
    return again


def test_structured_prune_shrinks_the_model_and_round_trips(tiny: tuple[Any, Any], tmp_path: Path) -> None:
    model, tokenizer = tiny
    before = param_count(model)
    report = structured_prune(model, mlp_keep=0.5, drop_layers=[0], heads_keep=1)
    assert report["params_before"] == before and report["params_after"] == param_count(model) < before
    assert report["dropped_layers"] == [0] and report["importance"] == "weights"
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.intermediate_size, cfg.num_attention_heads, cfg.num_key_value_heads,
            cfg.head_dim) == (1, 64, 2, 1, 16)
    again = roundtrip(model, tokenizer, tmp_path / "pruned")
    assert param_count(again) == report["params_after"]


def test_structured_prune_from_calibration_drops_the_least_influential_layer(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    report = structured_prune(model, drop_layers=1, mlp_keep=40, tokenizer=tokenizer, calib_text=TEXT, n_samples=4,
                              seq_len=64)
    influence = report["block_influence"]
    assert report["dropped_layers"] == [influence.index(min(influence))] and report["importance"] == "activations"
    assert model.config.num_hidden_layers == 1 and model.config.intermediate_size == 40
    assert model.model.layers[0].self_attn.layer_idx == 0
    assert logits(model).isfinite().all()


def test_structured_prune_on_qwen2_with_biases(tmp_path: Path) -> None:
    folder = make_tiny_model(tmp_path / "qwen", arch="qwen2", layers=3)
    model, tokenizer = load_causal_lm(folder, device="cpu")
    assert model.model.layers[0].self_attn.q_proj.bias is not None
    report = structured_prune(model, mlp_keep=0.25, drop_layers=[1], heads_keep=0.5)
    assert report["layers_after"] == 2 and report["kv_heads_after"] == 1 and len(model.config.layer_types) == 2
    assert model.model.layers[1].self_attn.q_proj.bias.shape == (32,)
    roundtrip(model, tokenizer, tmp_path / "pruned")


@pytest.mark.parametrize("kwargs", [{"mlp_keep": 1.5}, {"mlp_keep": 0}, {"heads_keep": 3}, {"drop_layers": 1},
                                    {"drop_layers": [0, 1]}, {"drop_layers": [5]}, {"calib_text": "x y z"}])
def test_structured_prune_refuses_what_it_cannot_do(tiny: tuple[Any, Any], kwargs: dict[str, Any]) -> None:
    with pytest.raises(InputError):
        structured_prune(tiny[0], **kwargs)


def test_mlp_keep_rounds_to_a_multiple(tiny: tuple[Any, Any]) -> None:
    model, _ = tiny
    structured_prune(model, mlp_keep=0.3, multiple_of=32)  # 38 channels -> 32
    assert model.config.intermediate_size == 32 and model.model.layers[0].mlp.down_proj.in_features == 32
