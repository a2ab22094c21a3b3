"""The search's final model: greedy ensemble selection (Caruana et al., ICML 2004) over its finished trials.

Every finished trial keeps its forecasts of the validation and test windows (``pred_val.npy`` / ``pred_test.npy`` in
its folder, float16, standardised units) and ``predictions.json`` naming the targets they forecast; the targets are
stored once per run (``targets/<key>.npz``, float32; the key is a hash of them, so trials whose windows differ, e.g.
another horizon, are never mixed). After every trial and at the end, greedy selection with replacement builds the
ensemble on validation MSE only: start empty, add the trial (again, if it is already in) whose addition gives the
lowest validation MSE of the mean, ``ROUNDS`` times, and keep the prefix with the lowest validation MSE. Its first
pick is the single trial with the lowest validation MSE, so the ensemble is never worse than that trial on
validation. The weights are the counts over the rounds. The test windows are only scored, never used to choose.

Selection runs on the Gram matrix of the validation residuals (``mean(r_i * r_j)``, float64): the MSE of any weighted
mean is ``w' G w`` because the weights sum to one, so each round costs O(trials^2) instead of a pass over the data;
the matrix is filled a chunk of windows at a time, and only the rows of new trials are computed after the first build.

The naive forecasts (repeat the last value, repeat the last period) are always in the pool: a search whose space
lacks them gets them as reference members (``naive/<family>/`` in the run folder, made by ``nas.run``), and the
final choice is guarded on rolling origins: the validation windows cut into ``ORIGINS`` consecutive blocks, the
ensemble is kept only when it beats the best naive forecast on at least three quarters of them, else the naive
forecast alone is the final model. On a random walk a model can lead the naive forecast on validation by chance (a
drifting stretch); leading it on most of 8 blocks by chance is rarer, while a model that is truly better (a
mean-reverting series) leads on most blocks even where noise flips one or two (benchmarks/nas_origins.py measured
the blocks and the share on synthetic series).

Pure numpy: no torch here.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agentlab.core.runs import atomic_write_bytes, atomic_write_json
from agentlab.core.search.records import TrialRecord
from agentlab.nas.config import NAIVE_FAMILIES

log = logging.getLogger(__name__)

ROUNDS = 25  # greedy rounds: the most members (with repeats) an ensemble has
ORIGINS = 8  # rolling origins of the guard against the naive forecast (benchmarks/nas_origins.py)
WIN_SHARE = 0.75  # the share of them the ensemble must beat it on
PRED_VAL, PRED_TEST, PREDICTIONS = "pred_val.npy", "pred_test.npy", "predictions.json"
TARGETS = "targets"
REFERENCES = "naive"  # <run>/naive/<family>/: the naive reference forecasts (nas.run.naive_references)
_CHUNK = 1 << 16  # window elements per block while the Gram matrix is filled
_F16_MAX = float(np.finfo(np.float16).max)


# --------------------------------------------------------------------------- the selection (pure)


def residual_gram(residuals: Sequence[np.ndarray]) -> np.ndarray:
    """``G[i, j] = mean(r_i * r_j)`` in float64 for equally long residual vectors (prediction minus target)."""
    flat = [np.asarray(r, dtype=np.float64).ravel() for r in residuals]
    n = flat[0].size if flat else 0
    if any(r.size != n for r in flat):
        raise ValueError("residuals of different lengths")
    matrix = np.stack(flat) if flat else np.zeros((0, 0))
    return matrix @ matrix.T / max(n, 1)


def greedy_selection(gram: np.ndarray, rounds: int = ROUNDS) -> tuple[np.ndarray, float]:
    """Caruana's forward selection with replacement on a residual Gram matrix: the counts per candidate of the best
    prefix (by MSE, the earliest of equals) and its MSE. Ties go to the lower index, so order the candidates best
    first. The first pick is the candidate with the lowest MSE (``G[i, i]``), so the result never exceeds it."""
    k = gram.shape[0]
    if k == 0 or gram.shape != (k, k):
        raise ValueError("greedy_selection needs a square, non-empty Gram matrix")
    counts = np.zeros(k, dtype=np.int64)
    gc = np.zeros(k)  # G @ counts
    quad = 0.0  # counts' G counts
    diag = np.diag(gram).astype(np.float64)
    best_counts, best_mse = counts.copy(), math.inf
    for size in range(1, rounds + 1):
        scores = (quad + 2 * gc + diag) / size**2  # the MSE of the mean after adding each candidate once more
        scores = np.where(np.isfinite(scores), scores, np.inf)
        pick = int(np.argmin(scores))
        if not math.isfinite(scores[pick]):
            break
        quad += 2 * gc[pick] + diag[pick]
        gc += gram[:, pick]
        counts[pick] += 1
        if scores[pick] < best_mse - 1e-15 * abs(best_mse if math.isfinite(best_mse) else 0.0):
            best_mse, best_counts = float(scores[pick]), counts.copy()
    return best_counts, best_mse


# --------------------------------------------------------------------------- the files


def targets_key(val: np.ndarray, test: np.ndarray) -> str:
    """A short hash of the targets (shapes and float32 bytes): trials with equal keys forecast the same windows."""
    digest = hashlib.sha1()
    for array in (val, test):
        a = np.ascontiguousarray(array, dtype=np.float32)
        digest.update(repr(a.shape).encode())
        digest.update(a.tobytes())
    return digest.hexdigest()[:16]


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _half(array: np.ndarray) -> np.ndarray:
    """float16, clipped to its finite range (an absurd forecast stays absurd but finite)."""
    return np.clip(np.nan_to_num(array.astype(np.float32), nan=_F16_MAX), -_F16_MAX, _F16_MAX).astype(np.float16)


def save_predictions(run_path: Path, trial_dir: Path, val: tuple[np.ndarray, np.ndarray],
                     test: tuple[np.ndarray, np.ndarray]) -> str:
    """Write a trial's (prediction, target) pairs of the validation and test windows: the predictions in float16 to
    its folder, the targets once per run to ``targets/<key>.npz``; every file atomic, ``predictions.json`` last (its
    presence says the rest is whole). Returns the targets key."""
    key = targets_key(val[1], test[1])
    targets = run_path / TARGETS / f"{key}.npz"
    if not targets.is_file():
        buffer = io.BytesIO()
        np.savez(buffer, val=val[1].astype(np.float32), test=test[1].astype(np.float32))
        atomic_write_bytes(targets, buffer.getvalue())
    atomic_write_bytes(trial_dir / PRED_VAL, _npy(_half(val[0])))
    atomic_write_bytes(trial_dir / PRED_TEST, _npy(_half(test[0])))
    atomic_write_json(trial_dir / PREDICTIONS, {"targets": key, "val_shape": list(val[0].shape),
                                                "test_shape": list(test[0].shape), "dtype": "float16"})
    return key


@dataclass
class Member:
    """A finished trial, or a naive reference forecast, with predictions on disk."""

    record: TrialRecord
    folder: Path  # its trial folder
    run_path: Path  # the run folder that holds it (another worker's, with several workers)
    key: str
    stamp: tuple[str, int]  # what the Gram cache is keyed by: folder and the predictions' mtime
    name: str = ""  # the trial's run_id, or the reference's family
    family: str | None = None

    def val(self) -> np.ndarray:
        return np.load(self.folder / PRED_VAL, mmap_mode="r", allow_pickle=False)

    def test(self) -> np.ndarray:
        return np.load(self.folder / PRED_TEST, mmap_mode="r", allow_pickle=False)


def kept_naive(block: dict[str, Any] | None) -> str | None:
    """The naive forecast the guard kept in the ensemble's place (its family), from results.json's ``ensemble``
    block; None when the ensemble is the final model, or there is no block."""
    kept = ((block or {}).get("selection") or {}).get("kept", "ensemble")
    return None if kept == "ensemble" else str(kept)


def model_name(block: dict[str, Any]) -> str:
    """What results.json's ``ensemble`` block forecasts with, in words: ``the naive forecast X`` when the guard kept
    it in the ensemble's place, or greedy selection kept one naive forecast alone; else ``ensemble of 2 trials and 1
    naive forecast``: the naive forecasts in it (the pool's reference forecasts, or trials of a naive family) are
    not counted as trials, since nothing was trained for them."""
    kept = kept_naive(block)
    if kept:
        return f"the naive forecast {kept}"
    members = block["members"]
    naive = sum(1 for m in members if m.get("family") in NAIVE_FAMILIES)
    if len(members) == 1 and naive:
        alone = members[0]
        return f"the naive forecast {alone['run_id']}" + (
            f" ({alone['family']})" if alone["family"] != alone["run_id"] else "")
    counts = ((len(members) - naive, "trial"), (naive, "naive forecast"))
    return "ensemble of " + " and ".join(f"{n} {what}{'' if n == 1 else 's'}" for n, what in counts if n)


def shown_weights(weights: Sequence[float], digits: int = 2) -> list[str]:
    """``weights`` (summing to 1) as printed with ``digits`` decimals, rounded so that the printed ones sum to 1
    too (largest remainder): 0.857, 0.095, 0.048 print as 0.86, 0.09, 0.05, not 0.86, 0.10, 0.05."""
    unit = 10 ** digits
    raw = [w * unit for w in weights]
    kept = [math.floor(r + 1e-9) for r in raw]
    for i in sorted(range(len(raw)), key=lambda i: kept[i] - raw[i])[:max(0, round(sum(raw)) - sum(kept))]:
        kept[i] += 1
    return [f"{k / unit:.{digits}f}" for k in kept]


def block_mse(pred: np.ndarray, true: np.ndarray, origins: int = ORIGINS) -> np.ndarray:
    """The MSE of each of ``origins`` consecutive blocks of windows (the first axis): the rolling origins."""
    blocks = np.array_split(np.arange(len(true)), min(origins, max(len(true), 1)))
    return np.array([np.mean(np.square(pred[b].astype(np.float64) - true[b])) for b in blocks if len(b)])


def _errors(pred: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    err = pred.astype(np.float64) - true
    return float(np.mean(np.square(err))), float(np.mean(np.abs(err)))


class EnsembleBuilder:
    """Builds the ensemble of one search, again after every trial; remembers the Gram entries it computed."""

    def __init__(self, run_path: Path, rounds: int = ROUNDS, origins: int = ORIGINS):
        self.run_path, self.rounds, self.origins = Path(run_path), rounds, origins  # origins 0: no guard
        self._gram: dict[tuple[tuple[str, int], tuple[str, int]], float] = {}
        self._targets: dict[str, dict[str, np.ndarray]] = {}
        self._skipped: set[str] = set()  # what was logged as skipped already

    # ---------------------------------------------------------------- the pool

    def _skip(self, run_id: str, why: str, *, warn: bool = False) -> None:
        """One log line per trial and reason (the ensemble is built again after every trial); ``warn``: a warning,
        for a finished trial whose forecasts are missing or unreadable (the user lost something), not for one of
        another horizon (a searched data.pred_len: expected)."""
        if run_id + why not in self._skipped:
            self._skipped.add(run_id + why)
            log.log(logging.WARNING if warn else logging.INFO, "ensemble: %s skipped (%s)", run_id, why)

    def members(self, records: list[TrialRecord], run_dirs: dict[int, str],
                missed: list[str] | None = None) -> list[Member]:
        """The finished trials (complete, finite validation MSE) whose predictions can be read: from this run's
        folder, else from the run folder of the worker that ran it (``run_dirs``); a trial without them is skipped
        with one warning line, and its run id appended to ``missed``."""
        out = []
        missed = missed if missed is not None else []
        for r in records:
            if r.state != "complete" or not r.finite:
                continue
            folders = [self.run_path / "trials" / r.run_id]
            if run_dirs.get(r.number):
                folders.append(Path(run_dirs[r.number]) / "trials" / r.run_id)
            folder = next((f for f in folders if (f / PREDICTIONS).is_file()), None)
            if folder is None:
                self._skip(r.run_id, f"no {PREDICTIONS} in {' or '.join(str(f) for f in dict.fromkeys(folders))}",
                           warn=True)
                missed.append(r.run_id)
                continue
            try:
                info = json.loads((folder / PREDICTIONS).read_text(encoding="utf-8"))
                key = str(info["targets"])
                stamp = (str(folder.resolve()), (folder / PRED_VAL).stat().st_mtime_ns)
                (folder / PRED_TEST).stat()
            except (OSError, ValueError, KeyError, TypeError) as exc:
                self._skip(r.run_id, f"unreadable predictions in {folder}: {exc}", warn=True)
                missed.append(r.run_id)
                continue
            out.append(Member(r, folder, folder.parent.parent, key, stamp, r.run_id))
        return out

    def references(self, folders: dict[str, Path]) -> list[Member]:
        """The naive reference forecasts (family -> folder holding their predictions), as members."""
        out = []
        for i, (family, folder) in enumerate(folders.items()):
            try:
                key = str(json.loads((folder / PREDICTIONS).read_text(encoding="utf-8"))["targets"])
                metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
                stamp = (str(folder.resolve()), (folder / PRED_VAL).stat().st_mtime_ns)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                self._skip(family, f"unreadable reference forecast in {folder}: {exc}")
                continue
            record = TrialRecord(number=-1 - i, state="complete", value=float(metrics["val_mse"]), params={},
                                 metrics=metrics)
            out.append(Member(record, folder, self.run_path, key, stamp, family, family))
        return out

    def _targets_of(self, members: list[Member]) -> dict[str, np.ndarray] | None:
        key = members[0].key
        if key not in self._targets:
            for m in members:
                path = m.run_path / TARGETS / f"{key}.npz"
                try:
                    with np.load(path, allow_pickle=False) as data:
                        self._targets[key] = {"val": data["val"].astype(np.float32),
                                              "test": data["test"].astype(np.float32)}
                    break
                except (OSError, ValueError, KeyError):
                    continue
            else:
                log.info("ensemble: no targets file %s.npz in the members' run folders: no ensemble", key)
                return None
        return self._targets[key]

    # ---------------------------------------------------------------- the Gram matrix

    def _fill(self, members: list[Member], true: np.ndarray) -> np.ndarray | None:
        """The residual Gram matrix of ``members`` on validation, computing only the entries not cached."""
        k = len(members)
        new = [i for i in range(k) if (members[i].stamp, members[i].stamp) not in self._gram]
        if new:
            try:
                arrays = [m.val().reshape(-1) for m in members]
            except (OSError, ValueError) as exc:
                log.info("ensemble: could not read the validation predictions (%s): no ensemble", exc)
                return None
            flat = true.reshape(-1)
            if any(a.size != flat.size for a in arrays):
                log.info("ensemble: validation predictions of another shape than their targets: no ensemble")
                return None
            block = np.zeros((len(new), k))
            for lo in range(0, flat.size, _CHUNK):
                t = flat[lo:lo + _CHUNK].astype(np.float64)
                res = np.stack([a[lo:lo + _CHUNK].astype(np.float64) - t for a in arrays])
                block += res[new] @ res.T
            block /= max(flat.size, 1)
            for row, i in enumerate(new):
                for j in range(k):
                    self._gram[(members[i].stamp, members[j].stamp)] = block[row, j]
                    self._gram[(members[j].stamp, members[i].stamp)] = block[row, j]
        return np.array([[self._gram[(a.stamp, b.stamp)] for b in members] for a in members], dtype=np.float64)

    # ---------------------------------------------------------------- the ensemble

    def build(self, records: list[TrialRecord], run_dirs: dict[int, str] | None = None,
              family: Callable[[TrialRecord], str] | None = None,
              references: dict[str, Path] | None = None) -> dict[str, Any] | None:
        """results.json's ``ensemble`` block, or None when no finished trial has predictions. Members are the trials
        that forecast the same windows as the finished trial with the lowest validation MSE, and the naive
        ``references`` (family -> folder) of a family no trial ran; then the rolling-origin guard (module doc)."""
        missed: list[str] = []  # finished trials whose forecast files are missing or unreadable
        pool = self.members(records, run_dirs or {}, missed)
        if not pool:
            return None
        for m in pool:
            m.family = family(m.record) if family else None
        ran = {m.family for m in pool}
        pool += [m for m in self.references(references or {}) if m.family not in ran]
        pool.sort(key=lambda m: (m.record.value, m.record.number))  # best first: ties go to the better trial
        lead = pool[0].key
        others = [m for m in pool if m.key != lead]
        for m in others:
            self._skip(m.name, f"forecasts other windows than {pool[0].name} (another horizon)")
        pool = [m for m in pool if m.key == lead]
        targets = self._targets_of(pool)
        if targets is None:
            return None
        gram = self._fill(pool, targets["val"])
        if gram is None:
            return None
        counts, _ = greedy_selection(gram, self.rounds)
        chosen = [(m, int(c)) for m, c in zip(pool, counts, strict=True) if c > 0]
        greedy = self._mix(chosen, targets)
        if greedy is None:
            return None
        selection = self._guard(pool, chosen, greedy, targets)
        if selection["kept"] != "ensemble":
            chosen = [(next(m for m in pool if m.name == selection["kept"]), 1)]
            mixed = self._mix(chosen, targets)
            if mixed is None:
                return None
        else:
            mixed = greedy
        total = sum(c for _, c in chosen)
        scores = {split: _errors(mixed[split], targets[split]) for split in ("val", "test")}
        best = pool[0]
        block = {
            "members": [{"run_id": m.name, "weight": c / total, "count": c, "family": m.family,
                         "path": self._relative(m.folder), "val_mse": m.record.value,
                         "test_mse": m.record.metrics.get("test_mse"), "test_mae": m.record.metrics.get("test_mae")}
                        for m, c in sorted(chosen, key=lambda mc: (-mc[1], mc[0].record.number))],
            "val_mse": scores["val"][0], "val_mae": scores["val"][1],
            "test_mse": scores["test"][0], "test_mae": scores["test"][1],
            "best_single": {"run_id": best.name, "val_mse": float(gram[0, 0])},
            "rounds": self.rounds, "pool": len(pool), "skipped": len(others) + len(missed), "targets": lead,
            "naive": [f for f in NAIVE_FAMILIES if any(m.family == f for m in pool)],  # the naive forecasts in it
            "selection": selection,
            "note": "greedy selection with replacement (Caruana et al. 2004) on validation MSE, "
                    + (f"kept only when it beats the best naive forecast on {WIN_SHARE:.0%} of {self.origins} rolling "
                       "origins (consecutive blocks of validation windows)" if self.origins else "no naive guard")
                    + "; MSE/MAE over every window element, on standardised data, from the stored float16 "
                    "predictions",
        }
        return {**block, "name": model_name(block)}  # in words, as the summary and report say it (the ui reads it)

    def _mix(self, chosen: list[tuple[Member, int]], targets: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        """The weighted mean forecast of ``chosen`` on the validation and test windows (None: a shape mismatch)."""
        total = sum(c for _, c in chosen)
        out = {}
        for split in ("val", "test"):
            mean = np.zeros(targets[split].shape, dtype=np.float64)
            for m, c in chosen:
                pred = m.val() if split == "val" else m.test()
                if pred.shape != targets[split].shape:
                    log.info("ensemble: %s's %s predictions have shape %s, the targets %s: no ensemble",
                             m.name, split, pred.shape, targets[split].shape)
                    return None
                mean += (c / total) * pred.astype(np.float64)
            out[split] = mean
        return out

    def _guard(self, pool: list[Member], chosen: list[tuple[Member, int]], greedy: dict[str, np.ndarray],
               targets: dict[str, np.ndarray]) -> dict[str, Any]:
        """The rolling-origin check of the greedy ensemble against the best naive forecast in the pool."""
        naive = [m for m in pool if m.family in NAIVE_FAMILIES]
        if not naive or not self.origins or all(m.family in NAIVE_FAMILIES for m, _ in chosen):
            return {"kept": "ensemble", "origins": self.origins, "against": None}
        ref = naive[0]  # the pool is sorted best first
        mine = block_mse(greedy["val"], targets["val"], self.origins)
        theirs = block_mse(np.asarray(ref.val()), targets["val"], self.origins)
        wins, need = int(np.sum(mine < theirs)), math.ceil(WIN_SHARE * len(mine))
        return {"kept": "ensemble" if wins >= need else ref.name, "origins": len(mine), "against": ref.name,
                "wins": wins, "needed": need, "ensemble_block_mse": [round(float(v), 6) for v in mine],
                "naive_block_mse": [round(float(v), 6) for v in theirs],
                "greedy": {"val_mse": _errors(greedy["val"], targets["val"])[0],
                           "test_mse": _errors(greedy["test"], targets["test"])[0],
                           "members": [m.name for m, _ in chosen]}}

    def _relative(self, folder: Path) -> str:
        """The member's folder relative to this run folder when it is inside it (a copied run still works), else
        absolute (another worker's run folder)."""
        try:
            return folder.resolve().relative_to(self.run_path.resolve()).as_posix()
        except ValueError:
            return str(folder.resolve())
