"""Headline tables from a :func:`lvkit.eval.run` DataFrame: image metrics and mask IoU.

Thin shells over the pure metric functions (``ranking``, ``masks``); pandas is imported
inside the functions. Rows with an ``error`` are left out of every metric.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from lvkit.eval.masks import dice_score, iou_score
from lvkit.eval.ranking import average_precision, confusion_counts, image_auroc, precision_recall_f1
from lvkit.shapes import anomaly_name

if TYPE_CHECKING:
    import numpy.typing as npt
    import pandas as pd

__all__ = ["image_metrics", "mask_report", "predicted_label_masks"]


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["error"].isna()]


def image_metrics(df: pd.DataFrame) -> dict[str, float]:
    """Image-level AUROC and AP (on the anomaly score) and precision/recall/F1 at the served verdict.

    Parameters
    ----------
    df : DataFrame
        From :func:`lvkit.eval.run`.

    Returns
    -------
    dict
        ``n, auroc, average_precision, precision, recall, f1, tp, fp, tn, fn``.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"label": [0, 0, 1, 1], "anomaly_score": [0.1, 0.6, 0.7, 0.9],
    ...                    "is_anomalous": [False, True, True, True], "error": [None] * 4})
    >>> m = image_metrics(df)
    >>> m["auroc"], m["precision"], m["recall"]
    (1.0, 0.6666666666666666, 1.0)
    """
    ok = _ok(df)
    y = ok["label"].to_numpy(bool)
    score = ok["anomaly_score"].to_numpy(float)
    pred = ok["is_anomalous"].to_numpy(bool)
    out: dict[str, float] = {"n": float(len(ok)), "auroc": image_auroc(y, score),
                             "average_precision": average_precision(y, score)}
    out.update(precision_recall_f1(y, pred))
    out.update({k: float(v) for k, v in confusion_counts(y, pred).items()})
    return out


def predicted_label_masks(mask_png: bytes | None, colors: dict[str, str] | None) -> dict[str, npt.NDArray[np.bool_]]:
    """Label -> bool mask from an AnomalyMask PNG and the ``Name -> Color`` of its Anomalies.

    Examples
    --------
    >>> from lvkit.images import encode_mask_png
    >>> lm = np.zeros((64, 64), np.int64); lm[:4] = 1
    >>> masks = predicted_label_masks(encode_mask_png(lm, ["#1F77B4"]), {"scratch": "#1F77B4"})
    >>> int(masks["scratch"].sum())
    256
    """
    if mask_png is None or not isinstance(mask_png, bytes):
        return {}
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(mask_png)).convert("RGB"))
    code = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    return {name: code == int(color.lstrip("#"), 16) for name, color in (colors or {}).items()}


def mask_report(df: pd.DataFrame, samples: Iterable[Any], *, empty: str = "skip") -> pd.DataFrame:
    """Mask IoU and Dice per defect type (and ``all``), from a :func:`lvkit.eval.run` table.

    For each image the predicted anomaly mask (every label together) is compared with the true
    mask (every label together): ``iou_any``. ``iou_label`` compares only the pixels the model
    gave the image's own defect type. Normal images have empty true masks; with
    ``empty="skip"`` (default) an image whose two masks are both empty is not scored, so a
    normal image counts only when the model marks pixels on it (and then its IoU is 0).

    Parameters
    ----------
    df : DataFrame
        From :func:`lvkit.eval.run` with ``keep_masks=True``.
    samples : Dataset or iterable of Sample
        The same samples (their masks are read from disk).
    empty : {"skip", "nan", "one"}
        Policy for images where both masks are empty (see ``lvkit.eval.masks``).

    Returns
    -------
    DataFrame
        Index: defect type (``normal`` for normal images) and ``all``; columns ``n_images,
        iou_any, dice_any, iou_label`` (macro means over scored images).

    Examples
    --------
    >>> import tempfile, lvkit
    >>> from lvkit.backends.fake import FakeBackend, brightness_handler
    >>> root = lvkit.datasets.generate(tempfile.mkdtemp(), categories=("brick",), n_train=2,
    ...                                n_test_good=1, n_test_defect_per_type=1, image_size=64)
    >>> test = lvkit.datasets.load(root / "brick").split("test")
    >>> backend = FakeBackend(brightness_handler(threshold=250.0, segmentation=True))
    >>> table = mask_report(lvkit.eval.run(backend, test, progress=False), test)
    >>> list(table.columns), "all" in table.index
    (['n_images', 'iou_any', 'dice_any', 'iou_label'], True)
    """
    import pandas as pd

    from lvkit.datasets import read_label_masks

    by_path = {str(s.image_path): s for s in getattr(samples, "samples", samples)}
    rows = []
    for _, r in _ok(df).iterrows():
        sample = by_path[r["path"]]
        truth = read_label_masks(sample)
        pred = predicted_label_masks(r["anomaly_mask"], r["anomalies"] if isinstance(r["anomalies"], dict) else {})
        if r["anomaly_mask"] is None or not isinstance(r["anomaly_mask"], bytes):
            continue
        shape = next(iter(pred.values())).shape if pred else _png_shape(r["anomaly_mask"])
        t_any = _union(truth.values(), shape)
        p_any = _union(pred.values(), shape)
        both_empty = not t_any.any() and not p_any.any()
        if both_empty and empty == "skip":
            continue
        policy = "nan" if empty == "skip" else empty
        kind = sample.defect_type or "normal"
        own = anomaly_name(kind)
        rows.append({
            "defect_type": kind,
            "iou_any": iou_score(t_any, p_any, empty=policy) if not both_empty or policy != "nan" else np.nan,
            "dice_any": dice_score(t_any, p_any, empty=policy) if not both_empty or policy != "nan" else np.nan,
            "iou_label": iou_score(t_any, pred.get(own, np.zeros(shape, bool)), empty="one") if t_any.any() else np.nan,
        })
    table = pd.DataFrame(rows, columns=["defect_type", "iou_any", "dice_any", "iou_label"])
    out = table.groupby("defect_type").agg(n_images=("iou_any", "size"), iou_any=("iou_any", "mean"),
                                            dice_any=("dice_any", "mean"), iou_label=("iou_label", "mean"))
    out.loc["all"] = [len(table), table["iou_any"].mean(), table["dice_any"].mean(), table["iou_label"].mean()]
    return out


def _union(masks: Iterable[npt.NDArray[np.bool_]], shape: tuple[int, ...]) -> npt.NDArray[np.bool_]:
    out = np.zeros(shape, bool)
    for m in masks:
        out |= m
    return out


def _png_shape(png: bytes) -> tuple[int, int]:
    from PIL import Image

    w, h = Image.open(io.BytesIO(png)).size
    return h, w
