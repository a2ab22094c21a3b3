"""Published results to put a search's best trial beside: the ETT benchmark files, recognised by name and shape.

Figures are test MSE / MAE on the standardised data (scaler fitted on the train part), multivariate ("M"), the
standard 12/4/4-month split: the protocol `agentlab nas` follows. "fair" rows keep every test window (no
``drop_last``) and search the lookback (TFB, Qiu et al., VLDB 2024, and the DUET / xPatch tables that follow it);
"paper" rows are a method's own publication, whose code dropped the last incomplete test batch, which flatters them
(TFB measured the difference). An MAE is given only where the source gives it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentlab.nas.ensemble import kept_naive, model_name


@dataclass(frozen=True)
class Published:
    model: str
    mse: float
    mae: float | None
    lookback: str
    protocol: str  # fair | paper
    source: str


_TFB = "TFB / DUET tables (lookback searched over 96, 336, 512)"
_LONG = "fair re-runs at lookback 720 (xPatch table)"
_INFORMER = "Informer as reproduced in the Autoformer paper (lookback 96)"

# (file, horizon) -> rows, best first within each protocol.
TABLES: dict[tuple[str, int], list[Published]] = {
    ("ETTh1", 96): [
        Published("DUET", 0.352, None, "searched", "fair", _TFB),
        Published("SparseTSF", 0.362, None, "720", "fair", _LONG),
        Published("TimeMixer", 0.372, None, "searched", "fair", _TFB),
        Published("FITS", 0.376, None, "searched", "fair", _TFB),
        Published("PatchTST", 0.377, None, "searched", "fair", _TFB),
        Published("DLinear", 0.379, None, "searched", "fair", _TFB),
        Published("CycleNet", 0.380, None, "720", "fair", _LONG + ", 5 seeds"),
        Published("iTransformer", 0.386, None, "searched", "fair", _TFB),
        Published("Informer", 0.865, 0.713, "96", "paper", _INFORMER),
    ],
    ("ETTh1", 192): [
        Published("DLinear", 0.405, 0.416, "336", "paper", "DLinear paper (drop_last)"),
        Published("PatchTST/64", 0.413, 0.429, "512", "paper", "PatchTST paper (drop_last)"),
        Published("Informer", 1.008, 0.792, "96", "paper", _INFORMER),
    ],
}

# name -> (rows, value columns) of the published files; a file is recognised only when both match.
ETT_SHAPES = {"ETTh1": (17420, 7), "ETTh2": (17420, 7), "ETTm1": (69680, 7), "ETTm2": (69680, 7)}


def recognise(path: str | Path | None, rows: int, columns: int) -> str | None:
    """The ETT file ``path`` is (ETTh1, ...), when its name and its shape (rows, value columns) both say so."""
    if path is None:
        return None
    name = Path(path).stem
    return name if ETT_SHAPES.get(name) == (rows, columns) else None


def comparison(dataset: str | None, horizon: int, features: str, split: str) -> dict[str, Any] | None:
    """The published rows for ``dataset`` at ``horizon`` under our protocol, or None (not an ETT file, another
    feature mode or split, or a setting no table is stored for: ``rows`` is then empty)."""
    if dataset is None or features != "M" or split not in ("ett_hour", "ett_minute"):
        return None
    rows = TABLES.get((dataset, horizon), [])
    return {"dataset": dataset, "horizon": horizon,
            "rows": [{"model": r.model, "mse": r.mse, "mae": r.mae, "lookback": r.lookback, "protocol": r.protocol,
                      "source": r.source} for r in rows]}


def render(ours: dict[str, Any], table: dict[str, Any], ensemble: dict[str, Any] | None = None) -> list[str]:
    """Markdown lines: our best trial (``ours``: family, seq_len, test_mse, test_mae), and the ensemble of the
    trials when there is one (results.json's block), ranked among ``table``'s rows."""
    head = f"## Beside the published results: {table['dataset']}, horizon {table['horizon']}"
    if not table["rows"]:
        return ["", head, "", f"No published figures are stored for {table['dataset']} at horizon "
                f"{table['horizon']} (agentlab.nas.literature.TABLES)."]

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    mine = {"model": f"**this search: {ours['family']}**", "mse": ours["test_mse"], "mae": ours.get("test_mae"),
            "lookback": str(ours["seq_len"]), "protocol": "fair", "source": "best trial by validation MSE"}
    ours_rows = [mine]
    kept = kept_naive(ensemble)
    if ensemble and kept:
        ours_rows.append({"model": f"**this search: the naive forecast {kept}**", "mse": ensemble["test_mse"],
                          "mae": ensemble.get("test_mae"), "lookback": "-", "protocol": "fair",
                          "source": "kept over the ensemble of the trials on rolling origins of validation"})
    elif ensemble:
        ours_rows.append({"model": f"**this search: {model_name(ensemble)}**",
                          "mse": ensemble["test_mse"], "mae": ensemble.get("test_mae"), "lookback": "per trial",
                          "protocol": "fair",
                          "source": "greedy selection by validation MSE over the trials and naive forecasts"})
    rows = sorted([*table["rows"], *ours_rows], key=lambda r: (r["protocol"] != "fair", r["mse"]))
    lines = ["", head, "",
             "Test MSE / MAE on the standardised data. fair: every test window kept (as here); paper: the method's "
             "own publication, whose code dropped the last test batch (flattering).", "",
             "| model | lookback | test MSE | test MAE | protocol | source |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['lookback']} | {fmt(r['mse'])} | {fmt(r['mae'])} | {r['protocol']} | "
              f"{r['source']} |" for r in rows]
    fair = [r for r in table["rows"] if r["protocol"] == "fair"]
    if fair:
        beaten = sum(1 for r in fair if ours["test_mse"] < r["mse"])
        lines += ["", f"This search's best trial has a lower test MSE than {beaten} of the {len(fair)} fair results."]
        if ensemble:
            beaten = sum(1 for r in fair if ensemble["test_mse"] < r["mse"])
            lines[-1] += (f" Its final model ({model_name(ensemble)}) has a lower test MSE "
                          f"than {beaten} of them.")
    return lines
