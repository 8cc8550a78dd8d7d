from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import blob_masks
from sklearn import metrics as skm
from torchmetrics.classification import BinaryJaccardIndex

from lvkit.errors import UndefinedMetricWarning
from lvkit.eval.masks import (
    best_iou_threshold,
    dice_score,
    iou_score,
    iou_threshold_curve,
    mask_stats,
    mean_dice,
    mean_iou,
    per_label_iou,
    pixel_auroc,
)

T3 = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 0]], bool)
P3 = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 1]], bool)
EMPTY = np.zeros((3, 3), bool)


def test_hand_computed_3x3() -> None:
    assert mask_stats(T3, P3) == (2, 5, 3, 4)
    assert all(type(v) is int for v in mask_stats(T3, P3))
    assert iou_score(T3, P3) == pytest.approx(2 / 5)
    assert dice_score(T3, P3) == pytest.approx(4 / 7)


@pytest.mark.parametrize("fn", [iou_score, dice_score])
def test_single_image_empty_policy(fn) -> None:
    assert fn(EMPTY, EMPTY, empty="one") == 1.0
    for empty in ("nan", "skip"):
        with pytest.warns(UndefinedMetricWarning, match="every mask is empty"):
            assert np.isnan(fn(EMPTY, EMPTY, empty=empty))
    assert fn(EMPTY, T3) == 0.0  # one side empty is a plain miss, not undefined


@pytest.fixture
def mask_set(rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    masks, maps = blob_masks(rng, n=8, size=24)
    return masks, [m > 1.0 for m in maps]


def test_micro_iou_matches_torchmetrics(mask_set) -> None:
    t, p = mask_set
    reference = BinaryJaccardIndex()(torch.tensor(np.stack(p)), torch.tensor(np.stack(t)))
    assert mean_iou(t, p, average="micro") == pytest.approx(float(reference), abs=1e-6)


def test_micro_dice_is_pooled_pixel_f1(mask_set) -> None:
    t, p = mask_set
    reference = skm.f1_score(np.concatenate([m.ravel() for m in t]), np.concatenate([m.ravel() for m in p]))
    assert mean_dice(t, p) == pytest.approx(reference, abs=1e-6)


@pytest.mark.parametrize("fn,single", [(mean_iou, iou_score), (mean_dice, dice_score)])
def test_macro_empty_policies_against_a_loop(mask_set, fn, single) -> None:
    t, p = list(mask_set[0]) + [EMPTY] * 2, list(mask_set[1]) + [EMPTY] * 2  # normal images, predicted normal
    nonempty = [single(a, b) for a, b in zip(t, p) if (a | b).any()]
    n_empty = sum(not (a | b).any() for a, b in zip(t, p))
    assert fn(t, p, average="macro", empty="skip") == pytest.approx(np.mean(nonempty), abs=1e-12)
    assert fn(t, p, average="macro", empty="nan") == pytest.approx(np.mean(nonempty), abs=1e-12)
    assert fn(t, p, average="macro", empty="one") == pytest.approx(
        (sum(nonempty) + n_empty) / len(t), abs=1e-12
    )
    # micro ignores empty pairs whatever the policy
    assert {fn(t, p, empty=e) for e in ("nan", "one", "skip")} == {fn(t, p)}


@pytest.mark.parametrize("average", ["micro", "macro"])
def test_all_empty_set(average: str) -> None:
    assert mean_iou([EMPTY, EMPTY], [EMPTY, EMPTY], average=average, empty="one") == 1.0
    for empty in ("nan", "skip"):
        with pytest.warns(UndefinedMetricWarning, match=f"{average} IoU is undefined"):
            assert np.isnan(mean_iou([EMPTY, EMPTY], [EMPTY, EMPTY], average=average, empty=empty))
    with pytest.warns(UndefinedMetricWarning):
        assert np.isnan(mean_iou([], [], average=average))


def test_masks_of_different_sizes() -> None:
    big = np.zeros((5, 7), bool)
    big[0, :2] = True
    assert mean_iou([T3, big], [P3, big]) == pytest.approx((2 + 2) / (5 + 2))


def test_mask_argument_errors() -> None:
    with pytest.raises(ValueError, match=r"mask_pred of the same shape, got \(3, 3\) and \(2, 2\)"):
        iou_score(T3, np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match=r"mask_pred\[0\]: expected bool or 0/1 values, got \[0.5\]"):
        mean_iou([T3], [np.full((3, 3), 0.5)])
    with pytest.raises(ValueError, match=r"mask_true: expected a 2-D array, got shape \(1, 3, 3\)"):
        iou_score(T3[None], P3)
    with pytest.raises(ValueError, match="expected as many predicted masks as true masks, got 1 and 2"):
        mean_iou([T3, T3], [P3])
    with pytest.raises(ValueError, match=r"average: expected one of \['micro', 'macro'\], got 'weighted'"):
        mean_iou([T3], [P3], average="weighted")
    with pytest.raises(ValueError, match=r"empty: expected one of \['nan', 'one', 'skip'\], got 0"):
        iou_score(T3, P3, empty=0)  # type: ignore[arg-type]


def test_per_label_iou() -> None:
    truth = [{"scratch": T3}, {"dent": T3, "scratch": EMPTY}, {}]
    pred = [{"scratch": P3, "dent": EMPTY}, {"dent": T3}, {"scratch": EMPTY}]
    # scratch: image 0 only (images 1, 2 empty both sides); dent: image 1 (image 0 is empty both sides)
    assert per_label_iou(truth, pred) == {"dent": 1.0, "scratch": pytest.approx(0.4)}
    pred[2] = {"scratch": T3}  # a false detection on image 2 now counts for scratch
    assert per_label_iou(truth, pred, labels=["scratch"]) == {"scratch": pytest.approx(0.2)}
    assert per_label_iou(truth, pred, labels=["scratch"], average="micro") == {"scratch": pytest.approx(2 / 8)}
    with pytest.warns(UndefinedMetricWarning, match="macro IoU is undefined"):
        assert np.isnan(per_label_iou(truth, pred, labels=["hole"])["hole"])
    with pytest.raises(ValueError, match="expected as many predicted images as true images"):
        per_label_iou(truth, pred[:2])


@pytest.fixture
def maps(rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    return blob_masks(rng, n=6, size=20)


def test_iou_threshold_curve_against_a_loop(maps) -> None:
    masks, amaps = maps
    grid = np.quantile(np.concatenate([m.ravel() for m in amaps]), [0.1, 0.5, 0.9, 0.99])
    thresholds, iou = iou_threshold_curve(masks, amaps, thresholds=grid)
    np.testing.assert_array_equal(thresholds, grid)
    reference = [mean_iou(masks, [m >= t for m in amaps]) for t in grid]
    np.testing.assert_allclose(iou, reference, atol=1e-12)
    t_best, iou_best = best_iou_threshold(masks, amaps, thresholds=grid)
    assert iou_best == max(reference) and t_best == grid[int(np.argmax(reference))]
    thresholds, iou = iou_threshold_curve(masks, amaps, thresholds=5)
    assert thresholds.size == 5 and thresholds[0] == min(m.min() for m in amaps)


def test_iou_threshold_curve_undefined_points() -> None:
    amap = np.linspace(0, 1, 9).reshape(3, 3)
    with pytest.warns(UndefinedMetricWarning, match="1 threshold"):
        _, iou = iou_threshold_curve([EMPTY], [amap], thresholds=[0.5, 2.0])
    assert iou[0] == 0.0 and np.isnan(iou[1])
    with pytest.warns(UndefinedMetricWarning):
        assert np.isnan(best_iou_threshold([EMPTY], [amap], thresholds=[2.0])[1])
    with pytest.raises(ValueError, match="thresholds: expected >= 1 thresholds"):
        iou_threshold_curve([EMPTY], [amap], thresholds=0)


def test_pixel_auroc_matches_sklearn(maps) -> None:
    masks, amaps = maps
    truth = np.concatenate([m.ravel() for m in masks])
    scores = np.concatenate([m.ravel() for m in amaps])
    assert pixel_auroc(masks, amaps) == pytest.approx(skm.roc_auc_score(truth, scores), abs=1e-6)
    with pytest.warns(UndefinedMetricWarning, match="one class"):
        assert np.isnan(pixel_auroc([EMPTY], [np.ones((3, 3))]))
    with pytest.raises(ValueError, match=r"anomaly_maps\[0\]: expected finite numbers, got \[inf\]"):
        pixel_auroc([T3], [np.full((3, 3), np.inf)])
