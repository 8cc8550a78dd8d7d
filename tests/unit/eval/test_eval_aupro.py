"""AUPRO against anomalib's ``AUPRO`` and against a naive per-threshold loop.

anomalib 2.7's AUPRO uses every distinct score as a threshold (no binning), like lvkit's
default, but casts the maps to float32 and accumulates FPR and PRO with float32 ``cumsum``.
On these ~3,500-pixel sets that leaves differences of about 1e-7 (observed up to 8e-8), so
the comparison holds at ``abs=1e-6``; the maps are float32-representable so both sides see the
same ties. The naive float64 loop below follows MVTec AD's ``compute_pro`` + ``trapezoid``
and agrees to 1e-9.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import blob_masks
from skimage.measure import label as sk_label

from lvkit.errors import UndefinedMetricWarning
from lvkit.eval._maps import _region_weights
from lvkit.eval.masks import aupro


def _anomalib_aupro(masks: list[np.ndarray], maps: list[np.ndarray], fpr_limit: float) -> float:
    from anomalib.metrics import AUPRO

    metric = AUPRO(fields=["anomaly_map", "gt_mask"], fpr_limit=fpr_limit)
    batch = SimpleNamespace(
        anomaly_map=torch.tensor(np.stack(maps), dtype=torch.float32),
        gt_mask=torch.tensor(np.stack(masks), dtype=torch.float32),
    )
    metric.update(batch)
    return float(metric.compute())


def _naive_curve(masks, maps, thresholds) -> tuple[np.ndarray, np.ndarray]:
    regions = [(i, sk_label(m, connectivity=2)) for i, m in enumerate(masks)]
    regions = [(i, lab == r) for i, lab in regions for r in range(1, lab.max() + 1)]
    normal = [~m for m in masks]
    n_normal = sum(n.sum() for n in normal)
    fprs, pros = [0.0], [0.0]
    for t in sorted(thresholds, reverse=True):
        pred = [a >= t for a in maps]
        fprs.append(sum((p & n).sum() for p, n in zip(pred, normal)) / n_normal)
        pros.append(np.mean([pred[i][r].mean() for i, r in regions]))
    return np.array(fprs), np.array(pros)


def _mvtec_trapezoid(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    correction = 0.0
    if x_max not in x:
        ins = int(np.searchsorted(x, x_max, side="right"))
        y_interp = y[ins - 1] + (y[ins] - y[ins - 1]) * (x_max - x[ins - 1]) / (x[ins] - x[ins - 1])
        correction = 0.5 * (y_interp + y[ins - 1]) * (x_max - x[ins - 1])
    keep = x <= x_max
    x, y = x[keep], y[keep]
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * (x[1:] - x[:-1])) + correction)


@pytest.fixture(scope="module")
def synthetic() -> list[tuple[list[np.ndarray], list[np.ndarray]]]:
    rng = np.random.default_rng(3)
    sets = [blob_masks(rng, n=6, size=24) for _ in range(3)]
    coarse = blob_masks(rng, n=4, size=16)  # rounded maps: many tied scores
    sets.append((coarse[0], [np.round(m, 1) for m in coarse[1]]))
    return sets


@pytest.mark.parametrize("fpr_limit", [0.3, 0.05, 1.0])
def test_matches_anomalib(synthetic, fpr_limit: float) -> None:
    for masks, maps in synthetic:
        ours = aupro(masks, maps, fpr_limit=fpr_limit)
        assert ours == pytest.approx(_anomalib_aupro(masks, maps, fpr_limit), abs=1e-6)


@pytest.mark.parametrize(("which", "fpr_limit"), [(3, 0.3), (3, 0.1), (0, 0.3)])
def test_matches_a_naive_loop(synthetic, which: int, fpr_limit: float) -> None:
    masks, maps = synthetic[which]
    fpr, pro = _naive_curve(masks, maps, np.unique(np.concatenate([m.ravel() for m in maps])))
    reference = _mvtec_trapezoid(fpr, pro, fpr_limit) / fpr_limit
    assert aupro(masks, maps, fpr_limit=fpr_limit) == pytest.approx(reference, abs=1e-9)


def test_binned_thresholds(synthetic) -> None:
    masks, maps = synthetic[0]
    lo, hi = min(m.min() for m in maps), max(m.max() for m in maps)
    fpr, pro = _naive_curve(masks, maps, np.linspace(lo, hi, 50))
    binned = aupro(masks, maps, num_thresholds=50)
    assert binned == pytest.approx(_mvtec_trapezoid(fpr, pro, 0.3) / 0.3, abs=1e-9)
    assert aupro(masks, maps, num_thresholds=2000) == pytest.approx(aupro(masks, maps), abs=5e-3)


def test_perfect_and_eight_connectivity() -> None:
    mask = np.zeros((6, 6), bool)
    mask[1, 1:4] = mask[2, 3] = mask[3, 4] = True  # an L and a diagonal neighbour: one region
    assert _region_weights(mask)[1] == 1
    assert aupro([mask], [mask * 1.0]) == 1.0
    assert aupro([mask], [mask * -1.0]) == 0.0


def test_undefined_and_errors() -> None:
    empty, full = np.zeros((4, 4), bool), np.ones((4, 4), bool)
    for masks in ([empty], [full], []):
        with pytest.warns(UndefinedMetricWarning, match="AUPRO is undefined"):
            assert np.isnan(aupro(masks, [np.zeros((4, 4))] * len(masks)))
    with pytest.raises(ValueError, match=r"fpr_limit: expected a number in \(0, 1\], got 0"):
        aupro([full], [np.zeros((4, 4))], fpr_limit=0)
    with pytest.raises(ValueError, match="num_thresholds: expected an integer >= 2, got 1"):
        aupro([full], [np.zeros((4, 4))], num_thresholds=1)
