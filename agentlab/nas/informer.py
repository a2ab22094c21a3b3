"""Informer forecaster in plain torch.

Zhou, Zhang, Peng, Zhang, Li, Xiong, Zhang: "Informer: Beyond Efficient Transformer for Long Sequence Time-Series
Forecasting", AAAI 2021 (https://arxiv.org/abs/2012.07436). Optional reversible instance normalisation (RevIN) from
Kim, Kim, Tae, Park, Choi, Choo: "Reversible Instance Normalization for Accurate Time-Series Forecasting against
Distribution Shift", ICLR 2022. Optional linear head over time (``linear``: of the input, or of its moving-average
trend with the Informer on the seasonal rest) from Zeng, Chen, Zhang, Xu: "Are Transformers Effective for Time
Series Forecasting?", AAAI 2023.

Written from the paper; where the paper leaves a detail open (ceil of ln L for u, the initial context of lazy
queries, kaiming init of the value convolution, bias-free time-feature embedding) this follows the authors' code.
Deliberate differences from that code: keys for the sparsity measurement are sampled without replacement and M is
max minus the mean over the sample; the decoder does not use the code's head-scrambling ``mix`` reshape; the model
itself zeroes the ``pred_len`` placeholder of the decoder input, so passing the target window cannot leak labels.

This module imports torch at the top: import it only where a model is built.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from agentlab.core.errors import ConfigError

ATTN_KINDS = ("prob", "full")
ACTIVATIONS = ("gelu", "relu")
LINEAR_KINDS = ("none", "trend", "input")


class SpecError(ConfigError, ValueError):
    """An invalid :class:`InformerSpec`; also a ``ValueError`` so plain callers can catch it."""


@dataclass
class InformerSpec:
    """Every option of the Informer model, flat, with the paper's defaults for ETT hourly data."""

    enc_in: int = 7
    dec_in: int = 7
    c_out: int = 7
    seq_len: int = 96
    label_len: int = 48
    pred_len: int = 24
    d_model: int = 512
    n_heads: int = 8
    e_layers: int = 2
    d_layers: int = 1
    d_ff: int = 2048
    dropout: float = 0.05
    attn: str = "prob"
    factor: int = 5
    distil: bool = True
    activation: str = "gelu"
    revin: bool = False
    linear: str = "none"
    moving_avg: int = 25
    time_features: int = 4

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`SpecError` naming the first invalid field and a value that would work."""
        positive = ("enc_in", "dec_in", "c_out", "seq_len", "pred_len", "d_model", "n_heads", "e_layers",
                    "d_layers", "d_ff", "factor", "moving_avg")
        for name in positive + ("label_len", "time_features"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise SpecError(f"{name} must be an integer, got {value!r}")
            if value < (1 if name in positive else 0):
                raise SpecError(f"{name} must be >= {1 if name in positive else 0}, got {value}")
        if self.d_model % self.n_heads:
            ok = [h for h in range(1, min(self.d_model, 32) + 1) if self.d_model % h == 0]
            raise SpecError(f"n_heads must divide d_model ({self.d_model} % {self.n_heads} != 0); "
                            f"use n_heads in {ok} or change d_model")
        if self.d_model % 2:
            raise SpecError(f"d_model must be even for the sinusoidal position embedding, got {self.d_model}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, int | float) or not 0 <= self.dropout < 1:
            raise SpecError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.attn not in ATTN_KINDS:
            raise SpecError(f"attn must be one of {ATTN_KINDS}, got {self.attn!r}")
        if self.activation not in ACTIVATIONS:
            raise SpecError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.linear not in LINEAR_KINDS:
            raise SpecError(f"linear must be one of {LINEAR_KINDS}, got {self.linear!r}")
        if self.moving_avg % 2 == 0:
            raise SpecError(f"moving_avg must be odd (a centred window), got {self.moving_avg}")
        for name, on in (("revin", self.revin), ("linear", self.linear != "none")):
            if on and (self.dec_in != self.enc_in or self.c_out > self.enc_in):
                # Both reuse the encoder's channels for the output: the output channels are its last c_out.
                raise SpecError(f"{name} needs dec_in == enc_in and c_out <= enc_in (got enc_in={self.enc_in}, "
                                f"dec_in={self.dec_in}, c_out={self.c_out}); turn {name} off or fix the channel "
                                "counts")


def _n_active(factor: int, length: int) -> int:
    """c * ceil(ln L), clamped to [1, L]: at or above L every query (or key) is used, so ProbSparse is exact."""
    return max(1, min(length, factor * math.ceil(math.log(length))))


class ProbAttention(nn.Module):
    """ProbSparse attention: only the top-u queries by sparsity measure M attend; the rest get a lazy context.

    Lazy context: mean(V) without a mask, cumsum(V) with a causal mask (as in the authors' code). Inputs [B, H, L, D].
    """

    def __init__(self, factor: int = 5, causal: bool = False, dropout: float = 0.0):
        super().__init__()
        self.factor, self.causal, self.dropout = factor, causal, dropout

    def _top_queries(self, q: torch.Tensor, k: torch.Tensor, n_sample: int, n_top: int) -> torch.Tensor:
        l_q, l_k = q.shape[2], k.shape[2]
        # The selection is an index: no gradient flows through it, so build no graph for it.
        with torch.no_grad():
            qk = q @ k.transpose(-2, -1)
            if n_sample < l_k:
                # One key sample per query, shared over batch and heads, drawn from the global RNG (seedable).
                # Gathering from the full score matrix is much faster than indexing K per query at these sizes
                # (docs/design/measurements.md).
                idx = torch.rand(l_q, l_k, device=q.device).argsort(dim=-1)[:, :n_sample]
                qk = qk.gather(-1, idx.expand(q.shape[0], q.shape[1], l_q, n_sample))
            sparsity = qk.amax(dim=-1) - qk.mean(dim=-1)
            return sparsity.topk(n_top, dim=-1, sorted=False).indices

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, h, l_q, d = q.shape
        l_k = k.shape[2]
        if self.causal and l_q != l_k:
            raise ValueError(f"causal ProbSparse attention needs L_Q == L_K, got {l_q} and {l_k}")
        n_top = _n_active(self.factor, l_q)
        if n_top >= l_q:
            index = torch.arange(l_q, device=q.device).expand(b, h, l_q)
        else:
            index = self._top_queries(q, k, _n_active(self.factor, l_k), n_top)
        q_top = q.gather(2, index.unsqueeze(-1).expand(-1, -1, -1, d))
        scores = (q_top @ k.transpose(-2, -1)) / math.sqrt(d)
        if self.causal:
            future = torch.arange(l_k, device=q.device) > index.unsqueeze(-1)
            scores = scores.masked_fill(future, float("-inf"))
        weights = F.dropout(torch.softmax(scores, dim=-1), self.dropout, self.training)
        if self.causal:
            context = v.cumsum(dim=2)
        else:
            context = v.mean(dim=2, keepdim=True).expand(b, h, l_q, v.shape[-1])
        # Under autocast cumsum runs in float32 while the matmul runs in half precision: match dtypes for scatter.
        active = (weights @ v).to(context.dtype)
        return context.scatter(2, index.unsqueeze(-1).expand(-1, -1, -1, v.shape[-1]), active)


class FullAttention(nn.Module):
    """Canonical scaled dot-product attention via ``F.scaled_dot_product_attention``. Inputs [B, H, L, D]."""

    def __init__(self, causal: bool = False, dropout: float = 0.0):
        super().__init__()
        self.causal, self.dropout = causal, dropout

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        p = self.dropout if self.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=self.causal)


class AttentionLayer(nn.Module):
    """Multi-head wrapper: project, split heads, attend (``kind`` "prob" or "full"), merge, project back."""

    def __init__(self, d_model: int, n_heads: int, kind: str = "full", causal: bool = False, factor: int = 5,
                 dropout: float = 0.0):
        super().__init__()
        if kind not in ATTN_KINDS:
            raise ValueError(f"attention kind must be one of {ATTN_KINDS}, got {kind!r}")
        if d_model % n_heads:
            raise ValueError(f"n_heads must divide d_model ({d_model} % {n_heads} != 0)")
        self.n_heads = n_heads
        self.q_proj, self.k_proj = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)
        self.v_proj, self.out_proj = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)
        self.inner = ProbAttention(factor, causal, dropout) if kind == "prob" else FullAttention(causal, dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, length, _ = x.shape
        return x.view(b, length, self.n_heads, -1).transpose(1, 2)

    def forward(self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.q_proj(queries)), self._split(self.k_proj(keys)), self._split(self.v_proj(values))
        out = self.inner(q, k, v).transpose(1, 2).reshape(queries.shape)
        return self.out_proj(out)


class DataEmbedding(nn.Module):
    """Value (circular Conv1d, k=3) + fixed sinusoidal position + linear time-feature ('timeF') embedding."""

    pe: torch.Tensor  # the buffer registered in __init__

    def __init__(self, c_in: int, d_model: int, time_features: int, max_len: int, dropout: float):
        super().__init__()
        self.value = nn.Conv1d(c_in, d_model, kernel_size=3, padding=1, padding_mode="circular", bias=False)
        nn.init.kaiming_normal_(self.value.weight, mode="fan_in", nonlinearity="leaky_relu")
        position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
        div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(position * div), torch.cos(position * div)
        self.register_buffer("pe", pe, persistent=False)  # recomputed on build; keeps checkpoints small
        self.time = nn.Linear(time_features, d_model, bias=False) if time_features else None
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, x_mark: torch.Tensor | None) -> torch.Tensor:
        out = self.value(x.transpose(1, 2)).transpose(1, 2) + self.pe[: x.shape[1]]
        if self.time is not None:
            out = out + self.time(x_mark)
        return self.dropout(out)


class _FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, dropout: float, activation: str):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU() if activation == "gelu" else nn.ReLU(),
                                 nn.Dropout(dropout), nn.Linear(d_ff, d_model), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class EncoderLayer(nn.Module):
    """Post-norm transformer block: self-attention then position-wise feed-forward."""

    def __init__(self, spec: InformerSpec):
        super().__init__()
        self.attn = AttentionLayer(spec.d_model, spec.n_heads, spec.attn, False, spec.factor, spec.dropout)
        self.ff = _FeedForward(spec.d_model, spec.d_ff, spec.dropout, spec.activation)
        self.norm1, self.norm2 = nn.LayerNorm(spec.d_model), nn.LayerNorm(spec.d_model)
        self.dropout = nn.Dropout(spec.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.attn(x, x, x)))
        return self.norm2(x + self.ff(x))


class DistilLayer(nn.Module):
    """Self-attention distilling: Conv1d + BatchNorm + ELU + MaxPool(stride 2) halves the sequence (ceil(L/2))."""

    def __init__(self, d_model: int):
        super().__init__()
        self.conv = nn.Conv1d(d_model, d_model, kernel_size=3, padding=1, padding_mode="circular")
        self.norm = nn.BatchNorm1d(d_model)
        self.pool = nn.MaxPool1d(kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.elu(self.norm(self.conv(x.transpose(1, 2))))).transpose(1, 2)


class DecoderLayer(nn.Module):
    """Masked self-attention, cross-attention to the encoder (always full, as in the paper), feed-forward."""

    def __init__(self, spec: InformerSpec):
        super().__init__()
        self.self_attn = AttentionLayer(spec.d_model, spec.n_heads, spec.attn, True, spec.factor, spec.dropout)
        self.cross_attn = AttentionLayer(spec.d_model, spec.n_heads, "full", False, spec.factor, spec.dropout)
        self.ff = _FeedForward(spec.d_model, spec.d_ff, spec.dropout, spec.activation)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(spec.d_model) for _ in range(3))
        self.dropout = nn.Dropout(spec.dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.dropout(self.self_attn(x, x, x)))
        x = self.norm2(x + self.dropout(self.cross_attn(x, memory, memory)))
        return self.norm3(x + self.ff(x))


class RevIN(nn.Module):
    """Reversible instance normalisation with a learnable per-channel affine map (Kim et al., ICLR 2022)."""

    def __init__(self, n_channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(n_channels))
        self.bias = nn.Parameter(torch.zeros(n_channels))

    def stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-instance, per-channel mean and std over time, detached as in the RevIN reference code."""
        mean = x.mean(dim=1, keepdim=True).detach()
        std = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + self.eps).detach()
        return mean, std

    def normalize(self, x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """Standardise ``x`` [B, L, C] with the given statistics, then apply the learnable affine map."""
        return (x - mean) / std * self.weight + self.bias

    def denormalize(self, y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """Invert :meth:`normalize` for ``y`` [B, L, c_out]."""
        # The output channels are the last c_out input channels (the target is last for "MS").
        c = y.shape[-1]
        y = (y - self.bias[-c:]) / (self.weight[-c:] + self.eps * self.eps)
        return y * std[..., -c:] + mean[..., -c:]


def moving_average(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """Centred moving average over time of ``x`` [B, L, C], the ends padded with their edge values (as
    Autoformer's and DLinear's series decomposition), so the output has the input's length."""
    half = (kernel - 1) // 2
    padded = torch.cat([x[:, :1].expand(-1, half, -1), x, x[:, -1:].expand(-1, half, -1)], dim=1)
    return F.avg_pool1d(padded.transpose(1, 2), kernel_size=kernel, stride=1).transpose(1, 2)


class LinearHead(nn.Module):
    """One linear map over time, ``seq_len -> pred_len``, shared by every channel (DLinear's, Zeng et al., AAAI
    2023); initialised to the window mean, so an untrained head forecasts the input's level."""

    def __init__(self, seq_len: int, pred_len: int):
        super().__init__()
        self.proj = nn.Linear(seq_len, pred_len)
        nn.init.constant_(self.proj.weight, 1.0 / seq_len)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.transpose(1, 2)).transpose(1, 2)


class Informer(nn.Module):
    """Encoder-decoder Informer with a generative (one forward pass) decoder; see :func:`build_informer`."""

    def __init__(self, spec: InformerSpec):
        super().__init__()
        spec.validate()
        self.spec = spec
        max_len = max(spec.seq_len, spec.label_len + spec.pred_len)
        self.enc_embedding = DataEmbedding(spec.enc_in, spec.d_model, spec.time_features, max_len, spec.dropout)
        self.dec_embedding = DataEmbedding(spec.dec_in, spec.d_model, spec.time_features, max_len, spec.dropout)
        self.encoder = nn.ModuleList(EncoderLayer(spec) for _ in range(spec.e_layers))
        n_distil = spec.e_layers - 1 if spec.distil else 0
        self.distil = nn.ModuleList(DistilLayer(spec.d_model) for _ in range(n_distil))
        self.enc_norm = nn.LayerNorm(spec.d_model)
        self.decoder = nn.ModuleList(DecoderLayer(spec) for _ in range(spec.d_layers))
        self.dec_norm = nn.LayerNorm(spec.d_model)
        self.projection = nn.Linear(spec.d_model, spec.c_out)
        self.revin = RevIN(spec.enc_in) if spec.revin else None
        self.linear = LinearHead(spec.seq_len, spec.pred_len) if spec.linear != "none" else None

    def _check(self, name: str, x: torch.Tensor | None, length: int, width: int) -> None:
        if width == 0 and x is None:
            return
        if x is None or x.dim() != 3 or x.shape[1] != length or x.shape[2] != width:
            got = "None" if x is None else list(x.shape)
            raise ValueError(f"{name} must have shape [batch, {length}, {width}], got {got}")

    def forward(self, x_enc: torch.Tensor, x_mark_enc: torch.Tensor | None, x_dec: torch.Tensor,
                x_mark_dec: torch.Tensor | None) -> torch.Tensor:
        """Forecast ``[B, pred_len, c_out]``.

        ``x_dec`` is ``[B, label_len + pred_len, dec_in]``; only its first ``label_len`` steps are read, the
        rest is replaced by the paper's zero placeholder. Time marks cover the same steps as their inputs.
        """
        s = self.spec
        dec_len = s.label_len + s.pred_len
        self._check("x_enc", x_enc, s.seq_len, s.enc_in)
        self._check("x_mark_enc", x_mark_enc, s.seq_len, s.time_features)
        self._check("x_dec", x_dec, dec_len, s.dec_in)
        self._check("x_mark_dec", x_mark_dec, dec_len, s.time_features)
        known = x_dec[:, : s.label_len]
        if self.revin is not None:
            mean, std = self.revin.stats(x_enc)
            x_enc, known = self.revin.normalize(x_enc, mean, std), self.revin.normalize(known, mean, std)
        base = None
        # (self.linear is None exactly when s.linear is "none")
        if self.linear is not None and s.linear == "trend":  # the Informer sees the seasonal part; the head the trend
            trend = moving_average(x_enc, s.moving_avg)
            x_enc = x_enc - trend
            known = known - moving_average(known, s.moving_avg) if s.label_len else known
            base = self.linear(trend)
        elif self.linear is not None and s.linear == "input":  # the Informer forecasts what the linear head misses
            base = self.linear(x_enc)
        dec_in = torch.cat([known, known.new_zeros(known.shape[0], s.pred_len, s.dec_in)], dim=1)

        enc = self.enc_embedding(x_enc, x_mark_enc)
        for i, layer in enumerate(self.encoder):
            enc = layer(enc)
            if i < len(self.distil):
                enc = self.distil[i](enc)
        enc = self.enc_norm(enc)

        dec = self.dec_embedding(dec_in, x_mark_dec)
        for layer in self.decoder:
            dec = layer(dec, enc)
        out = self.projection(self.dec_norm(dec))[:, -s.pred_len :]
        if base is not None:  # the output channels are the last c_out input channels, as for RevIN
            out = out + base[..., -s.c_out :]
        if self.revin is not None:
            out = self.revin.denormalize(out, mean, std)
        return out


def build_informer(spec: InformerSpec) -> Informer:
    """Validate ``spec`` and build a freshly initialised :class:`Informer` (seed torch first for repeatability)."""
    spec.validate()
    return Informer(spec)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable, by default) scalar parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
