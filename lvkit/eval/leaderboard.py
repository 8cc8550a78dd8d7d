r"""The numbers of a model matrix: each cell's metrics with bootstrap intervals, and leaderboards.

A cell is one model trained on one dataset with one seed and scored on that version's held-out
images (``lvkit.eval.matrix``). Its per-image answers are a :class:`CellArrays`; the metrics
of one, :data:`METRICS`, are computed by :func:`cell_values` only:

- ``auroc``: image AUROC of the anomaly score (``lvkit.eval.image_auroc``);
- ``f1``: F1 of the served verdicts (``IsAnomalous``), the decision the service makes;
- ``ece``: top-label ECE of the served ``Confidence`` (10 equal-width bins,
  ``lvkit.eval.calibration_error`` on ``(confidence, is_anomalous == label)``);
- ``iou``: mask IoU of the AnomalyMask, every label together, macro over images, images whose
  two masks are both empty left out (``mask_report``'s ``iou_any`` with ``empty="skip"``);
- ``aupro``: AU-PRO of the raw anomaly maps up to FPR 0.3, from per-image rows
  (``lvkit.eval._maps.aupro_rows``) on the cell's own threshold grid;
- ``latency_ms``: median (p50) DetectAnomalies latency in milliseconds;
- ``fit_s``: seconds ``lvkit.train`` took (one number per cell, no per-image part).

Intervals: a cell's are percentile bootstraps over its images (:func:`cell_report`). A
leaderboard (:func:`leaderboard_frame`) resamples in two levels, as the runs were made: the
seeds with replacement, then within each drawn seed its held-out images with replacement; a
model's value in a resample is the mean over the drawn seeds. All models of a dataset share
each resample's draws (the same seeds, the same images: a seed fixes the splits, whatever the
model), so the difference to the best model is a paired bootstrap, and ``worse`` marks a model
whose difference interval excludes 0 on the bad side. ``fit_s`` has no images: it is resampled
over seeds only, and has no interval with a single seed. The best model is chosen on the same
data, so a ``worse`` flag is a screen, not a test corrected for that choice.

Imports numpy and ``lvkit.eval`` siblings; pandas tables are passed in or built inside functions.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from lvkit.eval._maps import aupro_from_rows
from lvkit.eval.base import (
    auroc_from_curve,
    bin_edges,
    binned_stats,
    calibration_from_bins,
    confusion_stats,
    curve_stats,
    intervals,
    overlap_from_stats,
)
from lvkit.eval.checks import NAN

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["METRICS", "CellArrays", "cell_report", "cell_values", "leaderboard_frame", "leaderboard_text"]

#: metric -> (higher is better, what it is); the order of the leaderboard's columns
METRICS: dict[str, tuple[bool, str]] = {
    "auroc": (True, "image AUROC"),
    "f1": (True, "F1 at the served decision"),
    "ece": (False, "top-label ECE of the served Confidence"),
    "iou": (True, "mask IoU (any label, macro, both-empty skipped)"),
    "aupro": (True, "AU-PRO (FPR <= 0.3)"),
    "latency_ms": (False, "p50 DetectAnomalies latency (ms)"),
    "fit_s": (False, "lvkit.train wall time (s)"),
}
FPR_LIMIT = 0.3
N_BINS = 10

_F64 = npt.NDArray[np.float64]
_Bool = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class CellArrays:
    """One cell's held-out images as arrays, rows in ``paths`` order.

    ``ok`` is False for an image whose call failed (left out of every metric);
    ``mask_stats`` holds ``(intersection, union, true, predicted)`` pixel counts of each image
    (None: no masks were served); ``aupro_rows`` the ``aupro_rows`` of each image (None: no
    raw maps).
    """

    paths: npt.NDArray[np.str_]
    label: _Bool
    is_anomalous: _Bool
    confidence: _F64
    anomaly_score: _F64
    latency_s: _F64
    ok: _Bool
    mask_stats: npt.NDArray[np.int64] | None = None
    aupro_rows: _F64 | None = None
    fit_s: float = NAN

    def __len__(self) -> int:
        return int(self.paths.size)

    def take(self, rows: npt.NDArray[np.intp]) -> CellArrays:
        """The cell restricted to ``rows`` (repeats allowed: a bootstrap resample)."""
        def pick(a: Any) -> Any:
            return None if a is None else a[rows]

        return replace(self, paths=self.paths[rows], label=self.label[rows], is_anomalous=self.is_anomalous[rows],
                       confidence=self.confidence[rows], anomaly_score=self.anomaly_score[rows],
                       latency_s=self.latency_s[rows], ok=self.ok[rows], mask_stats=pick(self.mask_stats),
                       aupro_rows=pick(self.aupro_rows))

    @classmethod
    def from_frame(cls, df: pd.DataFrame, *, aupro_rows: _F64 | None = None, fit_s: float = NAN) -> CellArrays:
        """From a per-image table: ``path, label, is_anomalous, confidence, anomaly_score,
        latency_s, error`` and, when masks were served, ``mask_inter, mask_union, mask_true,
        mask_pred``."""
        ok = df["error"].isna().to_numpy(bool) if "error" in df.columns else np.ones(len(df), bool)
        stats = None
        if "mask_union" in df.columns and bool(df["mask_union"].notna().any()):
            cols = df[["mask_inter", "mask_union", "mask_true", "mask_pred"]].fillna(0)
            stats = cols.to_numpy(np.int64)
        return cls(
            paths=df["path"].astype(str).to_numpy(), label=df["label"].to_numpy(bool),
            is_anomalous=df["is_anomalous"].fillna(False).to_numpy(bool),
            confidence=df["confidence"].fillna(0.5).to_numpy(np.float64),
            anomaly_score=df["anomaly_score"].fillna(0.5).to_numpy(np.float64),
            latency_s=df["latency_s"].to_numpy(np.float64), ok=ok, mask_stats=stats,
            aupro_rows=None if aupro_rows is None else np.asarray(aupro_rows, dtype=np.float64), fit_s=float(fit_s),
        )


def cell_values(c: CellArrays) -> dict[str, float]:
    """The :data:`METRICS` of one cell (its ``ok`` images); ``nan`` where undefined, no warning.

    Examples
    --------
    >>> c = CellArrays(paths=np.array(["a", "b", "c", "d"]), label=np.array([0, 0, 1, 1], bool),
    ...                is_anomalous=np.array([0, 1, 1, 1], bool), confidence=np.array([0.9, 0.6, 0.8, 0.7]),
    ...                anomaly_score=np.array([0.1, 0.6, 0.8, 0.7]), latency_s=np.array([0.01, 0.03, 0.02, 0.04]),
    ...                ok=np.ones(4, bool), fit_s=12.0)
    >>> {k: round(v, 3) for k, v in cell_values(c).items() if not np.isnan(v)}
    {'auroc': 1.0, 'f1': 0.8, 'ece': 0.3, 'latency_ms': 25.0, 'fit_s': 12.0}
    """
    ok = c.ok
    y, pred, conf, score = c.label[ok], c.is_anomalous[ok], c.confidence[ok], c.anomaly_score[ok]
    out = dict.fromkeys(METRICS, NAN)
    out["fit_s"] = c.fit_s
    if y.size == 0:
        return out
    _, tps, fps = curve_stats(y, score)
    out["auroc"] = auroc_from_curve(tps, fps)
    counts = confusion_stats(y, pred)
    den = 2 * counts["tp"] + counts["fp"] + counts["fn"]
    out["f1"] = 2 * counts["tp"] / den if den else NAN
    edges = bin_edges(conf, N_BINS, "uniform")
    out["ece"] = calibration_from_bins(*binned_stats(conf, pred == y, edges, "uniform"), norm="l1")
    out["latency_ms"] = float(np.median(c.latency_s[ok])) * 1000.0
    with warnings.catch_warnings():  # undefined (every pair empty): nan, shown as such
        warnings.simplefilter("ignore")
        if c.mask_stats is not None:
            out["iou"] = overlap_from_stats(c.mask_stats[ok], metric="iou", average="macro", empty="skip")
    if c.aupro_rows is not None:
        out["aupro"] = aupro_from_rows(c.aupro_rows[ok], fpr_limit=FPR_LIMIT)
    return out


def cell_report(c: CellArrays, *, n_resamples: int = 1000, confidence_level: float = 0.95,
                seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """Metric -> ``(value, low, high)`` of one cell, bounds from a percentile bootstrap of its images.

    ``fit_s`` has no images to resample: its bounds are ``nan``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = rng.random(60) < 0.5
    >>> s = np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0, 1)
    >>> c = CellArrays(paths=np.arange(60).astype(str), label=y, is_anomalous=s > 0.5,
    ...                confidence=np.maximum(s, 1 - s), anomaly_score=s, latency_s=np.full(60, 0.05),
    ...                ok=np.ones(60, bool))
    >>> value, low, high = cell_report(c, n_resamples=200)["auroc"]
    >>> bool(low < value < high)
    True
    """
    values = cell_values(c)
    if len(c) == 0:
        return {k: (v, NAN, NAN) for k, v in values.items()}
    bounds = intervals(lambda rows: cell_values(c.take(rows)), np.arange(len(c)), n_resamples=n_resamples,
                       confidence_level=confidence_level, seed=seed)
    return {k: (v, *(bounds[k] if k != "fit_s" else (NAN, NAN))) for k, v in values.items()}


def _percentile(values: _F64, confidence_level: float) -> tuple[float, float]:
    v = values[~np.isnan(values)]
    if v.size == 0:
        return NAN, NAN
    alpha = (1.0 - confidence_level) / 2.0
    low, high = np.percentile(v, [100.0 * alpha, 100.0 * (1.0 - alpha)])
    return float(low), float(high)


def _aligned(runs: Mapping[str, Mapping[int, CellArrays]], seed: int) -> tuple[int, dict[str, npt.NDArray[np.intp]]]:
    """The images of ``seed`` over all models (sorted paths) and, per model, its row of each (-1: none)."""
    universe = sorted({p for cells in runs.values() if seed in cells for p in cells[seed].paths.tolist()})
    where = {p: i for i, p in enumerate(universe)}
    out = {}
    for model, cells in runs.items():
        if seed in cells:
            index = np.full(len(universe), -1, dtype=np.intp)
            index[[where[p] for p in cells[seed].paths.tolist()]] = np.arange(len(cells[seed]))
            out[model] = index
    return len(universe), out


def _nanmean(rows: list[dict[str, float]]) -> dict[str, float]:
    out = {}
    for k in METRICS:
        v = np.array([r[k] for r in rows], dtype=np.float64)
        out[k] = float(v[~np.isnan(v)].mean()) if bool(np.any(~np.isnan(v))) else NAN
    return out


def _dataset_board(runs: Mapping[str, Mapping[int, CellArrays]], *, n_resamples: int, confidence_level: float,
                   seed: int) -> list[dict[str, Any]]:
    """The leaderboard rows of one dataset: ``runs`` maps model -> seed -> cell."""
    seeds = sorted({s for cells in runs.values() for s in cells})
    aligned = {s: _aligned(runs, s) for s in seeds}
    per_seed = {m: {s: cell_values(c) for s, c in cells.items()} for m, cells in runs.items()}
    estimate = {m: _nanmean(list(v.values())) for m, v in per_seed.items()}
    rng = np.random.default_rng(seed)
    boot = {m: {k: np.full(n_resamples, NAN) for k in METRICS} for m in runs}
    for b in range(n_resamples):
        drawn = [seeds[i] for i in rng.integers(0, len(seeds), size=len(seeds))]
        draws = [(s, rng.integers(0, aligned[s][0], size=aligned[s][0])) for s in drawn if aligned[s][0]]
        for m, cells in runs.items():
            rows = []
            for s, idx in draws:
                if s in cells:
                    mine = aligned[s][1][m][idx]
                    rows.append(cell_values(cells[s].take(mine[mine >= 0])))
            if rows:
                for k, v in _nanmean(rows).items():
                    boot[m][k][b] = v
    out = []
    for m in runs:
        row: dict[str, Any] = {"model": m, "n_seeds": len(runs[m]),
                               "n_images": int(sum(int(c.ok.sum()) for c in runs[m].values()))}
        for k, (higher, _) in METRICS.items():
            row[k] = estimate[m][k]
            low, high = _percentile(boot[m][k], confidence_level)
            if k == "fit_s" and len(runs[m]) < 2:
                low = high = NAN  # one seed: nothing to resample
            spread = np.array([v[k] for v in per_seed[m].values()], dtype=np.float64)
            spread = spread[~np.isnan(spread)]
            row.update({f"{k}_low": low, f"{k}_high": high,
                        f"{k}_seed_sd": float(spread.std(ddof=1)) if spread.size > 1 else NAN})
        out.append(row)
    for k, (higher, _) in METRICS.items():
        scored = [r for r in out if not np.isnan(r[k])]
        best = (max if higher else min)(scored, key=lambda r: r[k])["model"] if scored else None
        for r in out:
            r[f"{k}_best"] = r["model"] == best
            if best is None or np.isnan(r[k]):
                r.update({f"{k}_diff": NAN, f"{k}_diff_low": NAN, f"{k}_diff_high": NAN, f"{k}_worse": False})
                continue
            low, high = _percentile(boot[r["model"]][k] - boot[best][k], confidence_level)
            if k == "fit_s" and min(len(runs[r["model"]]), len(runs[best])) < 2:
                low = high = NAN
            worse = bool(high < 0) if higher else bool(low > 0)
            r.update({f"{k}_diff": r[k] - estimate[best][k], f"{k}_diff_low": low, f"{k}_diff_high": high,
                      f"{k}_worse": worse and r["model"] != best})
    return out


def leaderboard_frame(runs: Mapping[str, Mapping[str, Mapping[int, CellArrays]]], *, n_resamples: int = 1000,
                      confidence_level: float = 0.95, seed: int = 0, sort_by: str = "auroc") -> pd.DataFrame:
    """One row per dataset and model: each metric's mean over seeds, its interval and the paired difference.

    Parameters
    ----------
    runs : mapping
        dataset -> model -> seed -> :class:`CellArrays` (finished cells only).
    n_resamples : int, default 1000
        Bootstrap resamples (two-level: seeds, then images; see the module docstring).
    confidence_level : float, default 0.95
        Coverage of every interval.
    seed : int, default 0
        Seed of the resampling generator.
    sort_by : str, default "auroc"
        The metric that orders each dataset's rows, best first.

    Returns
    -------
    DataFrame
        Index ``(dataset, model)``; columns ``n_seeds, n_images`` and, per metric ``m`` of
        :data:`METRICS`: ``m, m_low, m_high, m_seed_sd`` (standard deviation over seeds),
        ``m_best``, ``m_diff, m_diff_low, m_diff_high`` (the model minus the best one) and
        ``m_worse``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = np.arange(40) % 2 == 1
    >>> def cell(noise):
    ...     s = np.clip(0.5 + (y - 0.5) * 0.6 + rng.normal(0, noise, 40), 0, 1)
    ...     return CellArrays(paths=np.arange(40).astype(str), label=y, is_anomalous=s > 0.5,
    ...                       confidence=np.maximum(s, 1 - s), anomaly_score=s, latency_s=np.full(40, 0.05),
    ...                       ok=np.ones(40, bool))
    >>> board = leaderboard_frame({"d": {"good": {0: cell(0.05)}, "bad": {0: cell(0.6)}}}, n_resamples=200)
    >>> board["auroc_worse"].tolist(), board["auroc_best"].tolist()
    ([False, True], [True, False])
    """
    import pandas as pd

    if sort_by not in METRICS:
        raise ValueError(f"sort_by: expected one of {sorted(METRICS)}, got {sort_by!r}")
    rows = []
    for dataset, models in runs.items():
        board = _dataset_board({m: c for m, c in models.items() if c}, n_resamples=n_resamples,
                               confidence_level=confidence_level, seed=seed)
        higher = METRICS[sort_by][0]
        board.sort(key=lambda r: (np.isnan(r[sort_by]), -r[sort_by] if higher else r[sort_by],
                                  not r[f"{sort_by}_best"], r["model"]))  # among ties, the best one first
        rows += [{"dataset": dataset, **r} for r in board]
    columns = ["dataset", "model", "n_seeds", "n_images"]
    for k in METRICS:
        columns += [k, f"{k}_low", f"{k}_high", f"{k}_seed_sd", f"{k}_best", f"{k}_diff", f"{k}_diff_low",
                    f"{k}_diff_high", f"{k}_worse"]
    frame = pd.DataFrame(rows, columns=columns).set_index(["dataset", "model"])
    frame.attrs.update(n_resamples=n_resamples, confidence_level=confidence_level, seed=seed)
    return frame


def _fmt(value: float, digits: int) -> str:
    return "nan" if np.isnan(value) else f"{value:.{digits}f}"


def leaderboard_text(board: pd.DataFrame, *, markdown: bool = False,
                     metrics: Sequence[str] = tuple(METRICS)) -> str:
    """A leaderboard as a table to print (or Markdown): ``value [low, high]`` per metric, ``*`` when worse.

    Examples
    --------
    >>> import pandas as pd
    >>> row = {"n_seeds": 1, "n_images": 20, "auroc": 0.9, "auroc_low": 0.8, "auroc_high": 0.97,
    ...        "auroc_worse": True}
    >>> board = pd.DataFrame([{"dataset": "brick", "model": "padim", **row}]).set_index(["dataset", "model"])
    >>> print(leaderboard_text(board, metrics=["auroc"], markdown=True))  # doctest: +ELLIPSIS
    | dataset | model | seeds | images | auroc |
    |---|---|---|---|---|
    | brick | padim | 1 | 20 | 0.900 [0.800, 0.970] * |
    <BLANKLINE>
    [low, high]: 95% bootstrap interval; \\* worse than the best model of its dataset: ... excludes 0
    """
    header = ["dataset", "model", "seeds", "images", *metrics]
    lines = []
    for (dataset, model), r in board.iterrows():
        cells = [str(dataset), str(model), str(int(r["n_seeds"])), str(int(r["n_images"]))]
        for k in metrics:
            digits = 1 if k in ("latency_ms", "fit_s") else 3
            text = _fmt(float(r[k]), digits)
            if not np.isnan(float(r.get(f"{k}_low", NAN))):
                text += f" [{_fmt(float(r[f'{k}_low']), digits)}, {_fmt(float(r[f'{k}_high']), digits)}]"
            cells.append(text + (" *" if bool(r.get(f"{k}_worse", False)) else ""))
        lines.append(cells)
    level = board.attrs.get("confidence_level", 0.95)
    note = ("* worse than the best model of its dataset: the paired bootstrap interval of the difference "
            "excludes 0")
    if markdown:  # the note's "*" escaped: a line starting with "* " is a bullet in Markdown
        table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        table += ["| " + " | ".join(c) + " |" for c in lines]
        return "\n".join(table) + f"\n\n[low, high]: {level:.0%} bootstrap interval; \\{note}"
    widths = [max(len(h), *(len(c[i]) for c in lines)) if lines else len(h) for i, h in enumerate(header)]
    table = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    table += ["  ".join(c.ljust(w) for c, w in zip(cells, widths)) for cells in lines]
    return "\n".join(table) + f"\n[low, high]: {level:.0%} bootstrap interval; {note}"
