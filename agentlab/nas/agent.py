"""nas's tools for the ``agent`` planner (``core.search.agent``), every result computed in code: ``inspect_data``
(length, period, trend and seasonal strength, scale per column, channel correlation), ``literature`` (the bundled
fair table: which families and lookbacks lead on data like this), ``learning_curve`` (a trial's validation loss per
epoch). The literature's leading families and lookbacks are also candidate configs (``literature_leads``: the
``suggest`` tool lists the untried ones in place of TPE's extra draws). The facts of ``inspect_data`` and
``literature`` are also in the agent's brief, so even a small model starts from them; its notes go to
``<runs>/nas/knowledge.json`` under the data's signature (frequency, period, length)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from agentlab.core.agent.runtime import AgentModel, Tool
from agentlab.core.runs import runs_root
from agentlab.core.search.agent import AgentKit, learning_curve
from agentlab.core.search.planners import PlanContext, TrialDomain
from agentlab.nas.data import FREQ_NAMES
from agentlab.nas.literature import TABLES, Published, recognise

if TYPE_CHECKING:
    from agentlab.nas.config import NASConfig
    from agentlab.nas.data import PreparedData

# published model -> (family in agentlab's space, the variant worth naming)
FAMILY_OF = {"SparseTSF": "sparsetsf", "CycleNet": "cyclenet", "PatchTST": "patchtst", "PatchTST/64": "patchtst",
             "DLinear": "linear", "iTransformer": "itransformer", "Informer": "informer", "DUET": "duet"}


def strengths(x: np.ndarray, period: int) -> tuple[float, float]:
    """Trend and seasonal strength of a series (Wang, Smith & Hyndman 2006): a centred moving average over one
    period is the trend, the mean by phase of the detrended series the season; strength = max(0, 1 - var(remainder)
    / var(remainder + component))."""
    n = len(x)
    if period < 2 or n < 2 * period + 1:
        return 0.0, 0.0
    kernel = np.ones(period) / period
    trend = np.convolve(x, kernel, mode="same")
    half = period // 2
    trend[:half], trend[n - half:] = trend[half], trend[n - half - 1]
    detrended = x - trend
    season = np.array([detrended[i::period].mean() for i in range(period)])
    seasonal = season[np.arange(n) % period]
    rest = detrended - seasonal

    def strength(part: np.ndarray) -> float:
        total = np.var(rest + part)
        return float(max(0.0, 1.0 - np.var(rest) / total)) if total > 0 else 0.0

    return strength(trend), strength(seasonal)


def inspect_data(prepared: PreparedData) -> str:
    """The facts a forecaster's search depends on, on the training part (standardised)."""
    train = prepared.train.data.numpy()
    target = prepared.columns.index(prepared.target) if prepared.target in prepared.columns else -1
    trend, season = strengths(train[:, target].astype(float), prepared.period)
    mean, std = np.asarray(prepared.scaler.mean).ravel(), np.asarray(prepared.scaler.std).ravel()
    scale = ", ".join(f"{c} {m:.3g}+-{s:.3g}" for c, m, s in list(zip(prepared.columns, mean, std, strict=False))[:8])
    corr = ""
    if train.shape[1] > 1:
        c = np.corrcoef(train.T)
        off = np.abs(c[np.triu_indices_from(c, k=1)])
        corr = f"; channel correlation |r| mean {np.nanmean(off):.2f}, max {np.nanmax(off):.2f}"
    return (f"data: {prepared.n_steps} rows ({len(prepared.train.data)} in training), {len(prepared.columns)} "
            f"columns, {FREQ_NAMES.get(prepared.freq, prepared.freq)} (period {prepared.period} steps), target "
            f"{prepared.target}: trend strength {trend:.2f}, seasonal strength {season:.2f}{corr}; scale (mean+-std): "
            f"{scale}; horizon {prepared.test.pred_len}")


def _leading(cfg: NASConfig, prepared: PreparedData,
             families: list[str]) -> tuple[tuple[str, int], str | None, list[Published]]:
    """The bundled table for this data (an ETT file), else for the closest stored setting (ETTh1 at the nearest
    horizon): its key, the data's own name, and per family of this search's space its best published row (fair rows
    first), best first."""
    horizon = prepared.test.pred_len
    dataset = recognise(cfg.data.path, prepared.n_steps, len(prepared.columns))
    keys = [k for k in TABLES if k[0] == dataset] or list(TABLES)
    key = min(keys, key=lambda k: abs(k[1] - horizon))
    rows: dict[str, Published] = {}
    for r in sorted(TABLES[key], key=lambda r: (r.protocol != "fair", r.mse)):
        family = FAMILY_OF.get(r.model)
        if family and family in families and family not in rows:
            rows[family] = r
    return key, dataset, list(rows.values())


def literature(cfg: NASConfig, prepared: PreparedData, families: list[str]) -> str:
    """The bundled fair table for this data (an ETT file), else for the closest stored setting (ETTh1 at the
    nearest horizon), as families of this search's space ranked by published test MSE."""
    key, dataset, rows = _leading(cfg, prepared, families)
    seen = [f"{FAMILY_OF[r.model]} {r.mse:.3f} (lookback {r.lookback}, {r.model}, {r.protocol})" for r in rows]
    which = "this data" if key[0] == dataset else f"the closest stored setting, {key[0]}"
    lines = [f"published test MSE on {which} at horizon {key[1]}, the families of this search best first: "
             + "; ".join(seen)] if seen else ["no published figures for the families of this search"]
    if key[0] != dataset:
        lines.append(f"(this data is not {key[0]}: a hint, not a fact about it)")
    return "\n".join(lines)


def literature_leads(cfg: NASConfig, prepared: PreparedData, families: list[str]) -> list[tuple[dict[str, Any], str]]:
    """The bundled fair table as configs to try, best published first: per family of this search's space, its best
    fair result's family and lookback (when the lookback is a number the space offers; else the family alone). The
    agent's ``suggest`` shows the untried ones among its candidates."""
    key, dataset, rows = _leading(cfg, prepared, families)
    spec = cfg.search.space.get("data.seq_len")
    lookbacks = set(spec.choices or []) if spec is not None else set()
    where = "" if key[0] == dataset else f" on {key[0]}, a hint"
    out: list[tuple[dict[str, Any], str]] = []
    for r in rows:
        if r.protocol != "fair":  # a family's best row is its fair one when it has one
            continue
        changes: dict[str, Any] = {"model.family": FAMILY_OF[r.model]}
        if r.lookback.isdigit() and int(r.lookback) in lookbacks:
            changes["data.seq_len"] = int(r.lookback)
        out.append((changes, f"from the literature: {r.model} {r.mse:.3f}{where}"))
    return out


def signature(prepared: PreparedData) -> str:
    """Data like this: its frequency, period, length (order of magnitude) and channel count."""
    return (f"{prepared.freq}/period {prepared.period}/{10 ** int(np.log10(max(prepared.n_steps, 1)))}+ rows/"
            f"{len(prepared.columns)} channels/horizon {prepared.test.pred_len}")


def nas_kit(cfg: NASConfig, prepared: PreparedData, families: list[str]) -> AgentKit:
    data_facts = inspect_data(prepared)
    published = literature(cfg, prepared, families)
    leads = literature_leads(cfg, prepared, families)

    def tools(ctx: PlanContext, model: AgentModel) -> list[Tool]:
        domain = ctx.domain
        assert isinstance(domain, TrialDomain)
        return [
            Tool("inspect_data", "the data's length, period, trend and seasonal strength, scale, channel correlation",
                 {"type": "object", "properties": {}}, lambda args: data_facts),
            Tool("literature", "published test MSE of the families of this search on data like this",
                 {"type": "object", "properties": {}}, lambda args: published),
            learning_curve(domain, "validation MSE by epoch"),
        ]

    return AgentKit(what=f"an architecture search for a forecaster (minimise validation MSE, {cfg.data.features} "
                    f"mode, horizon {prepared.test.pred_len})",
                    facts=lambda: f"{data_facts}\n{published}", tools=tools,
                    knowledge=runs_root() / "nas" / "knowledge.json", signature=signature(prepared),
                    leads=lambda: leads)
