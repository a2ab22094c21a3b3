"""The forecaster families `agentlab nas` searches besides Informer: small, channel-independent or variate-token
models that lead the fair ETT tables, each written from its paper in plain torch.

- ``linear``: one linear map over time per channel (Zeng et al., "Are Transformers Effective for Time Series
  Forecasting?", AAAI 2023): ``linear`` (RLinear with RevIN, Li et al. 2023), ``nlinear`` (the last value
  subtracted and added back) or ``dlinear`` (moving-average trend and seasonal rest, one map each); weights shared by
  every channel or one set per channel (``individual``).
- ``sparsetsf``: SparseTSF (Lin et al., ICML 2024): a period-wide convolution, then one linear map shared by the
  ``period`` phases over the down-sampled series (started as the mean of the past periods); under a thousand
  parameters.
- ``cyclenet``: CycleNet (Lin et al., NeurIPS 2024): a learnable cycle of ``period`` steps per channel is removed
  from the input and added back to the forecast; the rest is forecast by a linear map or a two-layer MLP.
- ``patchtst``: PatchTST (Nie et al., ICLR 2023): each channel cut into patches (``patch_len``, ``stride``), a
  Transformer encoder over the patches (batch norm, as the paper), a flatten head.
- ``naive_last`` and ``naive_seasonal``: the naive forecasts as models, so validation can pick them where nothing
  beats them (a random walk): repeat the last value; repeat the last ``period`` steps (seasonal naive, the period
  detected from the timestamps unless ``model.period`` sets it). No weights: they train nothing (zero epochs).
- ``itransformer``: iTransformer (Liu et al., ICLR 2024): every variate (and time feature) is one token embedded
  from its whole window; a Transformer encoder mixes the variates; a linear head forecasts each.
- ``duet``: DUET (Qiu et al., "DUET: Dual Clustering Enhanced Multivariate Time Series Forecasting", KDD 2025):
  temporal clustering, a router that reads each channel's raw window (its distribution) and sends it to ``top_k`` of
  ``n_experts`` linear pattern extractors (noisy top-k gating, Shazeer et al. 2017, with their load-balancing loss);
  channel clustering, a learned metric over the channels' frequency amplitudes that gives each pair of channels the
  probability of attending to each other, from which a sparse channel mask is sampled; fused by a Transformer
  encoder over the channels under that mask and a linear head.

Every family takes ``revin`` (reversible instance normalisation, Kim et al., ICLR 2022) and has no decoder, so none
takes ``label_len``. A model maps ``x`` [B, seq_len, C] (with the time features ``x_mark`` [B, seq_len, F] and
``index`` [B], the row number in the whole series of each window's first step) to [B, pred_len, c_out]; the output
channels are the last ``c_out`` input channels (the target is last in "MS").

This module imports torch at the top: import it only where a model is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from agentlab.nas.config import NAIVE_FAMILIES
from agentlab.nas.informer import RevIN, SpecError, moving_average

FAMILIES = ("informer", "linear", "sparsetsf", "cyclenet", "patchtst", "itransformer", "duet", "naive_last",
            "naive_seasonal")
LINEAR_VARIANTS = ("linear", "nlinear", "dlinear")
BACKBONES = ("linear", "mlp")


@dataclass
class FamilySpec:
    """Every option of the non-Informer families, flat; each family reads the fields it needs."""

    family: str = "linear"
    seq_len: int = 96
    pred_len: int = 96
    enc_in: int = 7
    c_out: int = 7
    time_features: int = 4
    revin: bool = True
    linear_variant: str = "linear"
    individual: bool = False
    moving_avg: int = 25
    period: int = 24
    cycle_backbone: str = "linear"
    d_model: int = 64
    n_heads: int = 4
    e_layers: int = 2
    d_ff: int = 128
    dropout: float = 0.1
    activation: str = "gelu"
    patch_len: int = 16
    stride: int = 8
    n_experts: int = 2
    top_k: int = 1
    fc_dropout: float = 0.1

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`SpecError` naming the first field that cannot work, and what would."""
        if self.family not in FAMILIES[1:]:
            raise SpecError(f"family must be one of {FAMILIES[1:]} here, got {self.family!r}")
        for name in ("seq_len", "pred_len", "enc_in", "c_out", "period", "d_model", "n_heads", "e_layers", "d_ff",
                     "patch_len", "stride", "moving_avg", "n_experts", "top_k"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SpecError(f"{name} must be an integer >= 1, got {value!r}")
        if self.c_out > self.enc_in:
            raise SpecError(f"c_out ({self.c_out}) must not exceed enc_in ({self.enc_in}): the forecast channels "
                            "are the last input channels")
        if self.linear_variant not in LINEAR_VARIANTS:
            raise SpecError(f"linear_variant must be one of {LINEAR_VARIANTS}, got {self.linear_variant!r}")
        if self.cycle_backbone not in BACKBONES:
            raise SpecError(f"cycle_backbone must be one of {BACKBONES}, got {self.cycle_backbone!r}")
        if self.family == "sparsetsf" and self.seq_len < self.period:
            raise SpecError(f"sparsetsf needs seq_len >= period ({self.seq_len} < {self.period}): use a longer "
                            "data.seq_len or a shorter model.period")
        if self.family == "naive_seasonal" and self.seq_len < self.period:
            raise SpecError(f"naive_seasonal needs seq_len >= period ({self.seq_len} < {self.period}): use a longer "
                            "data.seq_len or a shorter model.period")
        if self.family == "patchtst" and self.seq_len < self.patch_len:
            raise SpecError(f"patchtst needs seq_len >= patch_len ({self.seq_len} < {self.patch_len})")
        if self.family == "duet" and self.top_k > self.n_experts:
            raise SpecError(f"duet: top_k must not exceed n_experts ({self.top_k} > {self.n_experts})")
        if self.family in ("patchtst", "itransformer", "duet") and self.d_model % self.n_heads:
            raise SpecError(f"n_heads must divide d_model ({self.d_model} % {self.n_heads} != 0)")


# --------------------------------------------------------------------------- the families' cores


class LinearCore(nn.Module):
    """Linear maps over time, [B, L, C] -> [B, H, C]: shared by the channels, or one per channel (``individual``)."""

    def __init__(self, seq_len: int, pred_len: int, channels: int, variant: str = "linear", individual: bool = False,
                 moving_avg: int = 25):
        super().__init__()
        self.variant, self.moving_avg = variant, moving_avg
        n_maps = 2 if variant == "dlinear" else 1  # dlinear: one map for the trend, one for the seasonal rest
        shape = (n_maps, channels if individual else 1)
        bound = 1 / math.sqrt(seq_len)  # nn.Linear's initialisation
        self.weight = nn.Parameter(torch.empty(*shape, pred_len, seq_len).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(*shape, pred_len).uniform_(-bound, bound))

    def _map(self, i: int, x: torch.Tensor) -> torch.Tensor:
        # x [B, L, C]; weight [C or 1, H, L] -> [B, H, C]
        if self.weight.shape[1] == 1:  # shared: one matrix product for every channel
            return F.linear(x.transpose(1, 2), self.weight[i, 0], self.bias[i, 0]).transpose(1, 2)
        return torch.einsum("blc,chl->bhc", x, self.weight[i]) + self.bias[i].T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.variant == "nlinear":
            last = x[:, -1:]
            return self._map(0, x - last) + last
        if self.variant == "dlinear":
            trend = moving_average(x, self.moving_avg)
            return self._map(0, trend) + self._map(1, x - trend)
        return self._map(0, x)


class SparseTSFCore(nn.Module):
    """SparseTSF: x minus its mean, plus a period-wide convolution of itself; then each of the ``period`` phases'
    down-sampled series is forecast by one shared linear map (segments in, segments out), and the mean added back.
    A lookback that is no multiple of the period uses its last whole periods."""

    def __init__(self, seq_len: int, pred_len: int, period: int):
        super().__init__()
        self.period = period
        self.n_in = seq_len // period
        self.n_out = math.ceil(pred_len / period)
        self.pred_len = pred_len
        self.conv = nn.Conv1d(1, 1, kernel_size=1 + 2 * (period // 2), padding=period // 2, bias=False)
        self.linear = nn.Linear(self.n_in, self.n_out, bias=False)
        # Starts as the mean of the same phase over the past periods (the reference starts from nn.Linear's random
        # init): with a few hundred weights and a short budget, training then refines a sound forecast.
        nn.init.constant_(self.linear.weight, 1.0 / self.n_in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, c = x.shape
        x = x[:, -self.n_in * self.period :]
        mean = x.mean(dim=1, keepdim=True)
        z = (x - mean).transpose(1, 2).reshape(b * c, 1, -1)  # channel-independent: [B*C, 1, L]
        z = (self.conv(z) + z).reshape(b * c, self.n_in, self.period).transpose(1, 2)  # [B*C, period, n_in]
        y = self.linear(z).transpose(1, 2).reshape(b, c, -1)[..., : self.pred_len]  # [B, C, H]
        return y.transpose(1, 2) + mean


class NaiveCore(nn.Module):
    """The naive forecasts, [B, L, C] -> [B, H, C], no weights: the last value repeated (``period`` 1), or the last
    ``period`` steps repeated (seasonal naive)."""

    def __init__(self, pred_len: int, period: int = 1):
        super().__init__()
        self.pred_len, self.period = pred_len, period

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cycle = x[:, -self.period :]
        reps = math.ceil(self.pred_len / self.period)
        return cycle.repeat(1, reps, 1)[:, : self.pred_len]


class CycleNetCore(nn.Module):
    """CycleNet: a learnable cycle Q [period, C] is removed from the input at each step's phase, the rest forecast
    by a linear map or an MLP over time, and Q added back at the forecast steps' phases."""

    def __init__(self, seq_len: int, pred_len: int, channels: int, period: int, backbone: str = "linear",
                 d_model: int = 512):
        super().__init__()
        self.seq_len, self.pred_len, self.period = seq_len, pred_len, period
        self.cycle = nn.Parameter(torch.zeros(period, channels))
        self.model: nn.Module = (nn.Linear(seq_len, pred_len) if backbone == "linear" else nn.Sequential(
            nn.Linear(seq_len, d_model), nn.ReLU(), nn.Linear(d_model, pred_len)))

    def _cycle(self, start: torch.Tensor, length: int) -> torch.Tensor:
        phase = (start[:, None] + torch.arange(length, device=start.device)) % self.period
        return self.cycle[phase]  # [B, length, C]

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        x = x - self._cycle(index, self.seq_len)
        y = self.model(x.transpose(1, 2)).transpose(1, 2)
        return y + self._cycle(index + self.seq_len, self.pred_len)


class SelfAttention(nn.Module):
    """Multi-head self-attention on ``F.scaled_dot_product_attention``, without dropout on the attention weights
    (PatchTST's default; on a CPU that dropout alone took a third of a training step)."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        return self.out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d))


class EncoderLayer(nn.Module):
    """A post-norm Transformer encoder layer; ``norm="batch"`` normalises over batch and tokens (PatchTST's)."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, activation: str, norm: str):
        super().__init__()
        self.attn = SelfAttention(d_model, n_heads)
        # Dropout on the residual branches only: inside the feed-forward it is d_ff / d_model times the work.
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU() if activation == "gelu" else nn.ReLU(),
                                nn.Linear(d_ff, d_model))
        kind: type[nn.Module] = nn.BatchNorm1d if norm == "batch" else nn.LayerNorm
        self.norm1, self.norm2 = kind(d_model), kind(d_model)
        self.dropout = nn.Dropout(dropout)

    def _norm(self, norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return norm(x.transpose(1, 2)).transpose(1, 2) if isinstance(norm, nn.BatchNorm1d) else norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._norm(self.norm1, x + self.dropout(self.attn(x)))
        return self._norm(self.norm2, x + self.dropout(self.ff(x)))


class PatchTSTCore(nn.Module):
    """PatchTST: per channel, patches of ``patch_len`` every ``stride`` steps (the series padded at the end by
    ``stride`` copies of its last value, as the paper), a linear patch embedding plus a learned position, the
    encoder, and one linear head from every patch's output to the horizon."""

    def __init__(self, seq_len: int, pred_len: int, patch_len: int, stride: int, d_model: int, n_heads: int,
                 e_layers: int, d_ff: int, dropout: float, activation: str):
        super().__init__()
        self.patch_len, self.stride = patch_len, stride
        n_patches = (seq_len + stride - patch_len) // stride + 1
        self.embed = nn.Linear(patch_len, d_model)
        self.position = nn.Parameter(torch.empty(n_patches, d_model).uniform_(-0.02, 0.02))
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(EncoderLayer(d_model, n_heads, d_ff, dropout, activation, "batch")
                                    for _ in range(e_layers))
        self.head = nn.Sequential(nn.Flatten(start_dim=1), nn.Dropout(dropout), nn.Linear(n_patches * d_model,
                                                                                          pred_len))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, c = x.shape
        z = x.transpose(1, 2).reshape(b * c, -1)  # [B*C, L]
        z = torch.cat([z, z[:, -1:].expand(-1, self.stride)], dim=1)
        patches = z.unfold(1, self.patch_len, self.stride)  # [B*C, N, patch_len]
        h = self.dropout(self.embed(patches) + self.position)
        for layer in self.layers:
            h = layer(h)
        return self.head(h).reshape(b, c, -1).transpose(1, 2)


class ITransformerCore(nn.Module):
    """iTransformer: each variate's window (and each time feature's) is one token, a linear embedding of the whole
    window; the encoder attends across variates; a linear head forecasts each variate from its token."""

    def __init__(self, seq_len: int, pred_len: int, d_model: int, n_heads: int, e_layers: int, d_ff: int,
                 dropout: float, activation: str):
        super().__init__()
        self.embed = nn.Linear(seq_len, d_model)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(EncoderLayer(d_model, n_heads, d_ff, dropout, activation, "layer")
                                    for _ in range(e_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, pred_len)

    def forward(self, x: torch.Tensor, x_mark: torch.Tensor | None) -> torch.Tensor:
        c = x.shape[-1]
        tokens = x if x_mark is None else torch.cat([x, x_mark], dim=-1)
        h = self.dropout(self.embed(tokens.transpose(1, 2)))  # [B, C + F, d_model]
        for layer in self.layers:
            h = layer(h)
        return self.head(self.norm(h))[:, :c].transpose(1, 2)


class DUETCore(nn.Module):
    """DUET, [B, L, C] -> [B, H, C] plus ``aux_loss`` (the router's load balance, added to the training loss).

    Temporal clustering (TCM): each channel's window is one sample; the distribution router (an MLP over the raw,
    un-normalised window, so it sees level and scale) scores ``n_experts`` linear pattern extractors, noise is added
    to the scores while training (its scale learned too), and the ``top_k`` best get the softmax weights,
    renormalised; evaluation routes on the clean scores alone, as the reference code does (the learned mix ``mix``,
    its W_h, only turns the noisy ones). Each extractor is DLinear's (a moving-average trend and the seasonal rest,
    one linear map each, seq_len -> d_model, started as the window mean) on the normalised window. Every expert is
    computed and the unchosen weighted by zero: the same sums as a sparse dispatch, simpler and as fast at these sizes
    on a CPU.

    Channel clustering (CCM): the amplitudes of each channel's real FFT, projected by a learned matrix A; the
    squared distance of two channels' projections gives the similarity 1 / distance, scaled per row so the closest
    other channel is 1 and the diagonal set to 1, times 0.99: the probability that channel i attends to channel j.
    Training samples the mask from it (Bernoulli through a straight-through Gumbel-softmax, so A learns);
    evaluation keeps the pairs above 0.5 (the paper's code samples at test time too: here a forecast is repeatable).

    Fusion: the channels' d_model features through ``e_layers`` post-norm encoder layers whose attention scores are
    multiplied by the mask (a masked pair's score set low, as the reference code), a final LayerNorm, and a linear
    head to pred_len.
    """

    ROUTER_HIDDEN = 256  # the reference implementation's hidden width of the router and noise MLPs

    def __init__(self, spec: FamilySpec):
        super().__init__()
        seq_len, n_experts, d_model = spec.seq_len, spec.n_experts, spec.d_model
        self.n_experts, self.top_k, self.moving_avg = n_experts, spec.top_k, spec.moving_avg

        def router() -> nn.Module:
            return nn.Sequential(nn.Linear(seq_len, self.ROUTER_HIDDEN, bias=False), nn.ReLU(),
                                 nn.Linear(self.ROUTER_HIDDEN, n_experts, bias=False))

        self.gate, self.noise = router(), router()
        self.mix = nn.Parameter(torch.eye(n_experts))  # W_h: the noisy scores mixed before the softmax
        self.trend = nn.Linear(seq_len, d_model * n_experts)  # every expert's trend map, side by side
        self.season = nn.Linear(seq_len, d_model * n_experts)
        for linear in (self.trend, self.season):  # as DLinear's and DUET's extractors start: the window mean
            nn.init.constant_(linear.weight, 1.0 / seq_len)
        freqs = seq_len // 2 + 1
        self.metric = nn.Parameter(torch.randn(freqs, freqs) / math.sqrt(freqs))
        self.layers = nn.ModuleList(_MaskedLayer(d_model, spec.n_heads, spec.d_ff, spec.dropout, spec.activation)
                                    for _ in range(spec.e_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Sequential(nn.Linear(d_model, spec.pred_len), nn.Dropout(spec.fc_dropout))
        self.aux_loss = torch.zeros(())

    @staticmethod
    def _cv_squared(x: torch.Tensor) -> torch.Tensor:
        return x.var() / (x.mean() ** 2 + 1e-10) if x.numel() > 1 else x.new_zeros(())

    def _route(self, raw: torch.Tensor) -> torch.Tensor:
        """Gates [N, n_experts] for the channel windows ``raw`` [N, L]; sets ``aux_loss``."""
        clean = self.gate(raw)
        noisy = self.training and self.top_k < self.n_experts
        if noisy:
            std = F.softplus(self.noise(raw)) + 1e-2
            scores = (clean + torch.randn_like(clean) * std) @ self.mix
        else:
            scores = clean
        probs = torch.softmax(scores, dim=1)
        top, index = scores.topk(min(self.top_k + 1, self.n_experts), dim=1)
        chosen = probs.gather(1, index[:, : self.top_k])
        gates = torch.zeros_like(probs).scatter(1, index[:, : self.top_k],
                                                chosen / (chosen.sum(1, keepdim=True) + 1e-6))
        if noisy:  # the smooth load: each expert's probability of staying in the top k under fresh noise
            normal = torch.distributions.Normal(0.0, 1.0)
            in_threshold, out_threshold = top[:, self.top_k : self.top_k + 1], top[:, self.top_k - 1 : self.top_k]
            load = torch.where(scores > in_threshold, normal.cdf((clean - in_threshold) / std),
                               normal.cdf((clean - out_threshold) / std)).sum(0)
        else:
            load = (gates > 0).float().sum(0)
        self.aux_loss = self._cv_squared(gates.sum(0)) + self._cv_squared(load)
        return gates

    def _mask(self, raw: torch.Tensor) -> torch.Tensor:
        """The channel mask [B, C, C] (1: i attends to j) from the raw windows ``raw`` [B, C, L]."""
        amplitude = torch.fft.rfft(raw, dim=-1).abs()
        z = amplitude @ self.metric.T  # A (x_i - x_j) = A x_i - A x_j: one projection per channel
        dist = torch.cdist(z, z).square()
        c = raw.shape[1]
        off = 1 - torch.eye(c, device=raw.device)
        sim = off / (dist + 1e-10)
        p = (sim / sim.amax(dim=-1, keepdim=True).detach().clamp_min(1e-10) * off + torch.eye(c, device=raw.device))
        p = (p * 0.99).clamp(1e-6, 0.99)
        if not self.training:
            return (p > 0.5).float()
        logits = torch.stack([torch.log(p / (1 - p)), torch.log((1 - p) / p)], dim=-1)
        return F.gumbel_softmax(logits, hard=True)[..., 0]

    def forward(self, x: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        b, length, c = x.shape
        series = x.transpose(1, 2).reshape(b * c, length)  # channel-independent: [B*C, L]
        gates = self._route(raw.transpose(1, 2).reshape(b * c, length))
        trend = moving_average(series.unsqueeze(-1), self.moving_avg).squeeze(-1)
        experts = (self.trend(trend) + self.season(series - trend)).view(b * c, self.n_experts, -1)
        h = torch.einsum("ne,ned->nd", gates, experts).view(b, c, -1)  # [B, C, d_model]
        mask = self._mask(raw.transpose(1, 2)) if c > 1 else None
        for layer in self.layers:
            h = layer(h, mask)
        return self.head(self.norm(h)).transpose(1, 2)


class _MaskedLayer(nn.Module):
    """DUET's fusion layer: post-norm self-attention over the channels with the scores multiplied by a 0/1 mask (so
    the mask's straight-through gradient reaches the metric) and a masked pair's score set to ``MASKED``, then a
    feed-forward."""

    MASKED = -math.log(1e10)  # the reference code's score for a masked pair, before the 1/sqrt(d) scaling: soft

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, activation: str):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU() if activation == "gelu" else nn.ReLU(),
                                nn.Dropout(dropout), nn.Linear(d_ff, d_model))
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2)  # [B, heads, C, C]
        if mask is not None:
            m = mask.unsqueeze(1)
            scores = scores * m + (1 - m.detach()) * self.MASKED
        attn = self.dropout(torch.softmax(scores / math.sqrt(d // self.n_heads), dim=-1))
        h = (attn @ v).transpose(1, 2).reshape(b, t, d)
        x = self.norm1(x + self.dropout(self.out(h)))
        return self.norm2(x + self.dropout(self.ff(x)))


# --------------------------------------------------------------------------- the model


class Forecaster(nn.Module):
    """One family's core between optional RevIN; returns the last ``c_out`` channels."""

    def __init__(self, spec: FamilySpec):
        super().__init__()
        spec.validate()
        self.spec = spec
        naive = spec.family in NAIVE_FAMILIES
        self.revin = RevIN(spec.enc_in) if spec.revin and not naive else None  # a naive forecast needs no scaling
        s = spec
        if naive:
            self.core: nn.Module = NaiveCore(s.pred_len, s.period if s.family == "naive_seasonal" else 1)
        elif s.family == "linear":
            self.core = LinearCore(s.seq_len, s.pred_len, s.enc_in, s.linear_variant, s.individual,
                                              s.moving_avg)
        elif s.family == "sparsetsf":
            self.core = SparseTSFCore(s.seq_len, s.pred_len, s.period)
        elif s.family == "cyclenet":
            self.core = CycleNetCore(s.seq_len, s.pred_len, s.enc_in, s.period, s.cycle_backbone, s.d_model)
        elif s.family == "patchtst":
            self.core = PatchTSTCore(s.seq_len, s.pred_len, s.patch_len, s.stride, s.d_model, s.n_heads, s.e_layers,
                                     s.d_ff, s.dropout, s.activation)
        elif s.family == "duet":
            self.core = DUETCore(s)
        else:
            self.core = ITransformerCore(s.seq_len, s.pred_len, s.d_model, s.n_heads, s.e_layers, s.d_ff, s.dropout,
                                         s.activation)

    @property
    def aux_loss(self) -> torch.Tensor | None:
        """What the last training forward adds to the loss (DUET's load balance), else None."""
        return getattr(self.core, "aux_loss", None)

    def forward(self, x: torch.Tensor, x_mark: torch.Tensor | None = None,
                index: torch.Tensor | None = None) -> torch.Tensor:
        """Forecast [B, pred_len, c_out] from ``x`` [B, seq_len, enc_in]; ``index`` (CycleNet) defaults to 0."""
        s = self.spec
        if x.dim() != 3 or x.shape[1] != s.seq_len or x.shape[2] != s.enc_in:
            raise ValueError(f"x must have shape [batch, {s.seq_len}, {s.enc_in}], got {list(x.shape)}")
        raw = x
        if self.revin is not None:
            mean, std = self.revin.stats(x)
            x = self.revin.normalize(x, mean, std)
        if s.family == "cyclenet":
            start = index if index is not None else torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
            y = self.core(x, start)
        elif s.family == "itransformer":
            y = self.core(x, x_mark)
        elif s.family == "duet":  # the router and the channel metric read the raw window
            y = self.core(x, raw)
        else:
            y = self.core(x)
        if self.revin is not None:
            y = self.revin.denormalize(y, mean, std)
        return y[..., -s.c_out :]


def build_forecaster(spec: FamilySpec) -> Forecaster:
    """Validate ``spec`` and build a freshly initialised :class:`Forecaster` (seed torch first for repeatability)."""
    spec.validate()
    return Forecaster(spec)

