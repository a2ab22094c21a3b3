"""Informer model: shapes over option combinations, ProbSparse exactness, seeding, gradients, validation."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

torch = pytest.importorskip("torch")

from agentlab.core.errors import AgentlabError  # noqa: E402
from agentlab.nas.informer import (  # noqa: E402
    LINEAR_KINDS,
    AttentionLayer,
    InformerSpec,
    ProbAttention,
    SpecError,
    build_informer,
    count_parameters,
    moving_average,
)

SEQ, LABEL, PRED, TF = 32, 16, 8, 4
CHANNELS = {"M": (3, 3, 3), "S": (1, 1, 1), "MS": (3, 3, 1)}  # enc_in, dec_in, c_out


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny models are all thread sync: on a busy 2-core machine two threads made these tests 10-20x slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(**overrides) -> InformerSpec:
    base = dict(enc_in=3, dec_in=3, c_out=3, seq_len=SEQ, label_len=LABEL, pred_len=PRED, d_model=16, n_heads=2,
                e_layers=2, d_layers=1, d_ff=32, dropout=0.1, factor=2, time_features=TF)
    return InformerSpec(**(base | overrides))


def batch(spec: InformerSpec, b: int = 2, seed: int = 1) -> tuple:
    g = torch.Generator().manual_seed(seed)
    dec_len = spec.label_len + spec.pred_len
    return (torch.randn(b, spec.seq_len, spec.enc_in, generator=g),
            torch.rand(b, spec.seq_len, spec.time_features, generator=g) - 0.5,
            torch.randn(b, dec_len, spec.dec_in, generator=g),
            torch.rand(b, dec_len, spec.time_features, generator=g) - 0.5)


def test_spec_defaults_follow_the_paper() -> None:
    s = InformerSpec()
    assert (s.d_model, s.n_heads, s.e_layers, s.d_layers, s.d_ff) == (512, 8, 2, 1, 2048)
    assert (s.dropout, s.attn, s.factor, s.distil, s.activation, s.revin) == (0.05, "prob", 5, True, "gelu", False)
    assert (s.seq_len, s.label_len, s.pred_len) == (96, 48, 24)
    assert dataclasses.asdict(s)["time_features"] == 4


@pytest.mark.parametrize("attn,distil,revin", list(itertools.product(("prob", "full"), (True, False), (True, False))))
def test_output_shapes(attn: str, distil: bool, revin: bool) -> None:
    torch.manual_seed(0)
    for e_layers, d_layers, features in itertools.product((1, 2, 3), (1, 2), CHANNELS):
        enc_in, dec_in, c_out = CHANNELS[features]
        linear = LINEAR_KINDS[(e_layers + d_layers) % len(LINEAR_KINDS)]  # every head meets every channel layout
        spec = tiny(attn=attn, distil=distil, revin=revin, e_layers=e_layers, d_layers=d_layers, enc_in=enc_in,
                    dec_in=dec_in, c_out=c_out, activation="relu" if e_layers == 2 else "gelu", linear=linear,
                    moving_avg=5)
        out = build_informer(spec)(*batch(spec))
        assert out.shape == (2, PRED, c_out), (e_layers, d_layers, features)
        assert torch.isfinite(out).all()


def test_moving_average_is_centred_with_edge_padding() -> None:
    x = torch.randn(2, 11, 3)
    out = moving_average(x, 5)
    assert out.shape == x.shape
    padded = torch.cat([x[:, :1].repeat(1, 2, 1), x, x[:, -1:].repeat(1, 2, 1)], dim=1)
    expected = torch.stack([padded[:, t : t + 5].mean(dim=1) for t in range(11)], dim=1)
    torch.testing.assert_close(out, expected)
    assert torch.allclose(moving_average(torch.full((1, 9, 2), 3.0), 7), torch.tensor(3.0))


@pytest.mark.parametrize("linear", ["trend", "input"])
@pytest.mark.parametrize("revin", [True, False])
def test_linear_head_is_added_to_the_informer_forecast(linear: str, revin: bool) -> None:
    # With the Informer's output projection zeroed, the forecast is the linear head's alone: at its initial weights
    # (1 / seq_len) the mean of the window it reads (the trend part for "trend", the input for "input"), per channel.
    torch.manual_seed(0)
    for features in ("M", "MS"):
        enc_in, dec_in, c_out = CHANNELS[features]
        spec = tiny(linear=linear, moving_avg=5, revin=revin, enc_in=enc_in, dec_in=dec_in, c_out=c_out)
        model = build_informer(spec).eval()
        torch.nn.init.zeros_(model.projection.weight)
        torch.nn.init.zeros_(model.projection.bias)
        x, x_mark, y, y_mark = batch(spec)
        read = moving_average(x, 5) if linear == "trend" else x
        expected = read.mean(dim=1, keepdim=True)[..., -c_out:].expand(-1, PRED, -1)
        torch.testing.assert_close(model(x, x_mark, y, y_mark), expected, atol=1e-5, rtol=1e-5)
        model.linear.proj.bias.data.fill_(0.5)  # the head's output reaches the forecast (denormalised with RevIN)
        shift = model(x, x_mark, y, y_mark) - expected
        scale = x.std(dim=1, unbiased=False, keepdim=True)[..., -c_out:] if revin else torch.ones(1)
        torch.testing.assert_close(shift, (0.5 * scale).expand_as(shift), atol=1e-4, rtol=1e-4)


def test_trend_head_without_known_decoder_steps() -> None:
    spec = tiny(linear="trend", moving_avg=5, label_len=0)
    assert build_informer(spec)(*batch(spec)).shape == (2, PRED, 3)


def test_linear_head_options_are_validated() -> None:
    with pytest.raises(SpecError, match="linear must be one of"):
        tiny(linear="deep")
    with pytest.raises(SpecError, match="moving_avg must be odd"):
        tiny(linear="trend", moving_avg=4)
    with pytest.raises(SpecError, match="linear needs dec_in == enc_in"):
        tiny(linear="input", enc_in=3, dec_in=2, c_out=2)


def test_without_time_features_marks_may_be_none() -> None:
    spec = tiny(time_features=0)
    x, _, y, _ = batch(spec)
    assert build_informer(spec)(x, None, y, None).shape == (2, PRED, 3)


def _twin_layers(causal: bool, factor: int) -> tuple[AttentionLayer, AttentionLayer]:
    prob = AttentionLayer(16, 4, "prob", causal=causal, factor=factor)
    full = AttentionLayer(16, 4, "full", causal=causal)
    full.load_state_dict(prob.state_dict())
    return prob.eval(), full.eval()


@pytest.mark.parametrize("causal", [False, True], ids=["encoder", "masked-decoder"])
def test_probsparse_equals_full_attention_when_every_query_is_selected(causal: bool) -> None:
    torch.manual_seed(0)
    prob, full = _twin_layers(causal, factor=10)  # u = 10 * ceil(ln 24) = 40 >= 24: all queries, all keys
    x = torch.randn(3, 24, 16)
    torch.testing.assert_close(prob(x, x, x), full(x, x, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_probsparse_inner_equals_sdpa_when_every_query_is_selected(causal: bool) -> None:
    q, k, v = torch.randn(3, 2, 3, 20, 8).unbind(0)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)
    torch.testing.assert_close(ProbAttention(factor=20, causal=causal)(q, k, v), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_lazy_queries_get_mean_or_cumsum_of_values(causal: bool) -> None:
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 2, 64, 8).unbind(0)
    out = ProbAttention(factor=2, causal=causal)(q, k, v)  # u = 2 * ceil(ln 64) = 10 of 64 queries
    lazy = v.cumsum(dim=2) if causal else v.mean(dim=2, keepdim=True).expand_as(v)
    n_lazy = torch.isclose(out, lazy, atol=1e-6).all(dim=-1).sum(dim=-1)
    # With the mask, an active first query sees only v[0], which is also its cumsum: it may count as lazy.
    assert ((n_lazy >= 64 - 10) & (n_lazy <= 64 - 10 + int(causal))).all()


def test_probsparse_is_sparse_and_seeded() -> None:
    prob, full = _twin_layers(False, factor=1)
    x = torch.randn(2, 64, 16)
    torch.manual_seed(3)
    first = prob(x, x, x)
    torch.manual_seed(3)
    assert torch.equal(first, prob(x, x, x))
    assert not torch.allclose(first, full(x, x, x), atol=1e-3)


def test_same_seed_same_model_and_output() -> None:
    spec = tiny(revin=True)
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        model = build_informer(spec).train()  # dropout and key sampling both draw from the seeded RNG
        outs.append(model(*batch(spec)))
    assert torch.equal(outs[0], outs[1])


def _train_losses(spec: InformerSpec, steps: int = 3) -> list[float]:
    torch.manual_seed(11)
    model = build_informer(spec)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for step in range(steps):
        x, xm, y, ym = batch(spec, b=4, seed=step)
        loss = torch.nn.functional.mse_loss(model(x, xm, y, ym), y[:, -spec.pred_len:, -spec.c_out:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("attn", ["prob", "full"])
def test_same_seed_same_training_losses(attn: str) -> None:
    spec = tiny(attn=attn)
    first = _train_losses(spec)
    assert first == _train_losses(spec)
    assert len(set(first)) == 3


@pytest.mark.parametrize("revin", [False, True])
def test_gradients_reach_every_parameter(revin: bool) -> None:
    torch.manual_seed(0)
    spec = tiny(revin=revin, e_layers=3)
    model = build_informer(spec)
    x, xm, y, ym = batch(spec, b=4)
    model(x, xm, y, ym).pow(2).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    assert model.enc_embedding.value.weight.grad.abs().sum() > 0
    assert model.dec_embedding.time.weight.grad.abs().sum() > 0


def test_future_part_of_decoder_input_is_ignored() -> None:
    spec = tiny()
    model = build_informer(spec).eval()
    x, xm, y, ym = batch(spec)
    leaked = y.clone()
    leaked[:, LABEL:] = 1e3
    torch.manual_seed(0)
    a = model(x, xm, y, ym)
    torch.manual_seed(0)
    torch.testing.assert_close(a, model(x, xm, leaked, ym))


def test_revin_makes_the_forecast_follow_shift_and_scale() -> None:
    spec = tiny(revin=True, dropout=0.0)
    model = build_informer(spec).eval()
    x, xm, y, ym = batch(spec)
    torch.manual_seed(0)
    base = model(x, xm, y, ym)
    torch.manual_seed(0)
    moved = model(x * 3 + 50, xm, y * 3 + 50, ym)
    torch.testing.assert_close(moved, base * 3 + 50, atol=1e-3, rtol=1e-4)


def test_count_parameters() -> None:
    model = build_informer(tiny())
    total = sum(p.numel() for p in model.parameters())
    assert count_parameters(model) == total
    model.projection.weight.requires_grad_(False)
    assert count_parameters(model) == total - model.projection.weight.numel()
    assert count_parameters(model, trainable_only=False) == total


@pytest.mark.parametrize(
    "overrides,needle",
    [
        ({"n_heads": 3}, "n_heads must divide d_model"),
        ({"d_model": 15, "n_heads": 1}, "even"),
        ({"attn": "sparse"}, "attn"),
        ({"activation": "tanh"}, "activation"),
        ({"dropout": 1.0}, "dropout"),
        ({"dropout": "0.1"}, "dropout"),
        ({"e_layers": 0}, "e_layers"),
        ({"label_len": -1}, "label_len"),
        ({"factor": 2.5}, "factor"),
        ({"revin": True, "c_out": 4}, "revin"),
    ],
)
def test_invalid_spec_raises_clear_value_error(overrides: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=needle) as info:
        tiny(**overrides)
    assert isinstance(info.value, SpecError) and isinstance(info.value, AgentlabError)


def test_wrong_input_shape_names_the_argument() -> None:
    spec = tiny()
    x, xm, y, ym = batch(spec)
    with pytest.raises(ValueError, match=r"x_enc must have shape \[batch, 32, 3\]"):
        build_informer(spec)(x[:, 1:], xm[:, 1:], y, ym)
