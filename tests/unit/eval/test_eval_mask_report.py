"""mask_report / mask_threshold_curve against the array functions on hand-made predictions."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from lvkit.datasets import read_label_masks
from lvkit.errors import UndefinedMetricWarning
from lvkit.eval import (
    aupro,
    best_iou_threshold,
    iou_score,
    iou_threshold_curve,
    mask_report,
    mask_threshold_curve,
    mean_dice,
    mean_iou,
    per_label_iou,
    pixel_auroc,
    run,
)
from lvkit.images import encode_mask_png
from lvkit.shapes import anomaly_name

COLORS = {"hole": "#1F77B4", "scratch": "#FF7F0E", "stain": "#2CA02C"}


def union(masks: dict, shape=(64, 64)) -> np.ndarray:
    out = np.zeros(shape, bool)
    for m in masks.values():
        out |= m
    return out


def predictions(brick, rng: np.random.Generator):
    """Per sample: a predicted label map and a raw map. Anomalies: the truth (shifted for every
    second one, labelled 'scratch' for stains); normal images: empty, but one gets a blob."""
    names = list(COLORS)
    rows, truths, preds, maps = [], [], [], []
    for i, s in enumerate(brick.samples):
        truth = read_label_masks(s, shape=(64, 64))
        t_any = union(truth)
        lm = np.zeros((64, 64), np.int64)
        if s.defect_type:
            mask = np.roll(t_any, 3, axis=1) if i % 2 else t_any
            label = "scratch" if s.defect_type == "stain" else s.defect_type
            lm[mask] = names.index(label) + 1
        elif i == 1:
            lm[:5, :5] = names.index("hole") + 1
        present = sorted({names[k - 1] for k in np.unique(lm) if k})
        amap = (rng.normal(0, 0.3, (64, 64)) + 1.2 * t_any).astype(np.float32)
        rows.append({"path": str(s.image_path), "label": s.label, "defect_type": s.defect_type,
                     "anomaly_mask": encode_mask_png(lm, list(COLORS.values())),
                     "anomalies": {n: COLORS[n] for n in present}, "anomaly_map": amap, "error": None})
        truths.append(truth)
        preds.append({n: lm == names.index(n) + 1 for n in present})
        maps.append(amap)
    return pd.DataFrame(rows), truths, preds, maps


@pytest.fixture
def made(brick, rng):
    return predictions(brick, rng)


@pytest.mark.parametrize("empty", ["skip", "one", "nan"])
def test_iou_and_dice_match_the_array_functions(brick, made, empty: str) -> None:
    df, truths, preds, _ = made
    table = mask_report(df, brick, empty=empty, n_resamples=50)
    assert table.columns.name == f"empty={empty}" and table.attrs["empty"] == empty
    t_any = [union(t) for t in truths]
    p_any = [union(p) for p in preds]
    kinds = [s.defect_type or "normal" for s in brick.samples]
    assert sorted(table.index) == sorted({*kinds, "all"})
    for kind in [*set(kinds), "all"]:
        idx = [i for i, k in enumerate(kinds) if kind in ("all", k)]
        ts, ps = [t_any[i] for i in idx], [p_any[i] for i in idx]
        both_empty = sum(not t.any() and not p.any() for t, p in zip(ts, ps))
        assert table.loc[kind, "n_both_empty"] == both_empty
        assert table.loc[kind, "n_images"] == len(idx) - (both_empty if empty == "skip" else 0)
        with warnings.catch_warnings():  # the 'normal' group is undefined under skip/nan: nan cells
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            ref = {
                "iou_micro": mean_iou(ts, ps, empty=empty),
                "iou_any": mean_iou(ts, ps, average="macro", empty=empty),
                "dice_micro": mean_dice(ts, ps, empty=empty),
                "dice_any": mean_dice(ts, ps, average="macro", empty=empty),
            }
        for col, value in ref.items():
            np.testing.assert_allclose(table.loc[kind, col], value, atol=1e-12, err_msg=f"{kind} {col}")
    # normal images: skipped unless the model marked pixels (one did: IoU 0)
    if empty == "skip":
        assert table.loc["normal", "n_images"] == 1 and table.loc["normal", "iou_any"] == 0.0
    if empty == "one":
        assert table.loc["normal", "iou_any"] == pytest.approx(3 / 4)
    assert table.loc["all", "iou_any_low"] <= table.loc["all", "iou_any"] <= table.loc["all", "iou_any_high"]


def test_label_and_console_columns(brick, made) -> None:
    df, truths, preds, _ = made
    table = mask_report(df, brick, ci=False)
    console = per_label_iou([{anomaly_name(k): v for k, v in t.items()} for t in truths], preds)
    assert table.loc["hole", "iou_console"] == pytest.approx(console["hole"])
    assert table.loc["scratch", "iou_console"] == pytest.approx(console["scratch"])
    # stain pixels are predicted as 'scratch': the 'stain' label scores 0, the 'scratch' label loses
    assert table.loc["stain", "iou_console"] == console["stain"] == 0.0
    assert table.loc["all", "iou_console"] == pytest.approx(np.mean(list(console.values())))
    stains = [i for i, s in enumerate(brick.samples) if s.defect_type == "stain"]
    assert table.loc["stain", "iou_label"] == 0.0 and stains
    holes = [i for i, s in enumerate(brick.samples) if s.defect_type == "hole"]
    own = [iou_score(union(truths[i]), preds[i].get("hole", np.zeros((64, 64), bool)), empty="one") for i in holes]
    assert table.loc["hole", "iou_label"] == pytest.approx(np.mean(own))
    assert np.isnan(table.loc["normal", "iou_label"]) and np.isnan(table.loc["normal", "iou_console"])
    every = [iou_score(union(truths[i]), preds[i].get(anomaly_name(s.defect_type), np.zeros((64, 64), bool)))
             for i, s in enumerate(brick.samples) if s.defect_type]
    assert table.loc["all", "iou_label"] == pytest.approx(np.mean(every))


def test_raw_map_columns_and_curve(brick, made) -> None:
    df, truths, _, maps = made
    table = mask_report(df, brick, ci=False, thresholds=20)
    t_any = [union(t) for t in truths]
    assert table.loc["all", "pixel_auroc"] == pytest.approx(pixel_auroc(t_any, maps), abs=1e-12)
    assert table.loc["all", "aupro"] == pytest.approx(aupro(t_any, maps), abs=1e-12)
    thr, best = best_iou_threshold(t_any, maps, thresholds=20)
    assert (table.loc["all", "best_iou_threshold"], table.loc["all", "best_iou"]) == pytest.approx((thr, best))
    holes = [i for i, s in enumerate(brick.samples) if s.defect_type == "hole"]
    assert table.loc["hole", "aupro"] == pytest.approx(aupro([t_any[i] for i in holes], [maps[i] for i in holes]))
    assert np.isnan(table.loc["normal", "pixel_auroc"])  # no anomalous pixel: undefined, shown as nan
    curve = mask_threshold_curve(df, brick, thresholds=20)
    grid, iou = iou_threshold_curve(t_any, maps, thresholds=20)
    np.testing.assert_allclose(curve["threshold"], grid)
    np.testing.assert_allclose(curve["iou"], iou)
    assert curve["iou"].max() == pytest.approx(best)
    with pytest.raises(ValueError, match="raw anomaly maps"):
        mask_threshold_curve(df.drop(columns="anomaly_map"), brick)
    assert "aupro" not in mask_report(df.drop(columns="anomaly_map"), brick, ci=False).columns


def test_all_empty_warns_once_and_errors_are_left_out(brick, made) -> None:
    df, *_ = made
    normal = df[df["label"] == 0].copy()
    normal["anomaly_mask"] = encode_mask_png(np.zeros((64, 64), np.int64), ["#1F77B4"])
    normal["anomalies"] = [{}] * len(normal)
    with pytest.warns(UndefinedMetricWarning, match="every scored mask pair is empty"):
        table = mask_report(normal, brick, ci=False)
    assert table.loc["all", "n_both_empty"] == len(normal) and table.loc["all", "n_images"] == 0
    assert mask_report(normal, brick, empty="one", ci=False).loc["all", "iou_micro"] == 1.0
    broken = df.copy()
    broken.loc[0, "error"] = "InternalServerException: x"
    assert (
        mask_report(broken, brick, ci=False).loc["all", "n_both_empty"]
        == mask_report(df, brick, ci=False).loc["all", "n_both_empty"] - 1
    )
    with pytest.raises(ValueError, match="among the samples"):
        mask_report(df.assign(path="elsewhere.png"), brick)


def test_end_to_end_from_run(brick, raw_fake) -> None:
    table = mask_report(run(raw_fake, brick, raw=True, progress=False), brick, n_resamples=20)
    assert {"iou_micro", "aupro", "pixel_auroc", "best_iou"} <= set(table.columns)
    assert 0.0 <= table.loc["all", "pixel_auroc"] <= 1.0


@pytest.mark.parametrize("with_maps", [True, False])
def test_a_defect_image_answered_without_a_mask_scores_zero(brick, made, with_maps: bool) -> None:
    df, truths, preds, _ = made
    df = df if with_maps else df.drop(columns="anomaly_map")
    hole = next(i for i, s in enumerate(brick.samples) if s.defect_type == "hole")
    normal = next(i for i, s in enumerate(brick.samples) if not s.defect_type and i != 1)
    answered = df.copy()
    answered.loc[[hole, normal], "anomaly_mask"] = None  # e.g. the service sent no AnomalyMask
    answered.loc[[hole, normal], "anomalies"] = None
    table = mask_report(answered, brick, ci=False)
    preds = [{} if i in (hole, normal) else p for i, p in enumerate(preds)]
    holes = [i for i, s in enumerate(brick.samples) if s.defect_type == "hole"]
    ious = [iou_score(union(truths[i]), union(preds[i])) for i in holes]
    assert 0.0 in ious and table.loc["hole", "iou_any"] == pytest.approx(np.mean(ious))
    assert table.loc["hole", "n_images"] == len(holes)  # scored, not skipped
    assert table.loc["hole", "iou_label"] == pytest.approx(
        np.mean([iou_score(union(truths[i]), preds[i].get("hole", np.zeros((64, 64), bool))) for i in holes]))
    # the normal image without a mask is a pair of empty masks, as with an empty AnomalyMask: not skipped
    assert table.loc["normal", "n_both_empty"] == mask_report(df, brick, ci=False).loc["normal", "n_both_empty"]
    # a table without any AnomalyMask (a classification model) has no mask to score
    none = df.assign(anomaly_mask=None, anomalies=None)
    if not with_maps:
        empty_table = mask_report(none, brick, ci=False)
        assert empty_table.loc["all", "n_images"] == 0 and np.isnan(empty_table.loc["all", "iou_any"])
