"""Mask tables from a :func:`lvkit.eval.run` DataFrame: IoU/Dice per defect type, per label, from raw maps.

Thin shells over ``lvkit.eval.masks`` (``_stats``/``_from_stats``, :func:`~lvkit.eval.per_label_iou`,
:func:`~lvkit.eval.pixel_auroc`, :func:`~lvkit.eval.aupro`, :func:`~lvkit.eval.iou_threshold_curve`).
pandas, PIL and ``lvkit.datasets`` (to read the true masks) are imported inside the functions.

True masks are read with :func:`lvkit.datasets.read_label_masks`; their labels are mapped to
Anomalies names with :func:`lvkit.shapes.anomaly_name` (``oil_stain`` -> ``oilstain``), the
names the service gives them. Predicted masks are the ``AnomalyMask`` PNG decoded through the
``Name -> Color`` of the row's Anomalies. Rows with an ``error`` are left out.

Three mask IoUs, each with one name wherever it is shown (:data:`IOU_NAMES`: the tables' docs,
``lvkit demo``'s printout, the README):

- ``iou_any``, "IoU (any label)": the true mask of every label together against the predicted
  mask of every label together, per image, averaged over the group's images;
- ``iou_label``, "IoU (own label)": the true mask against only the pixels predicted with the
  image's own defect type, per anomalous image, averaged;
- ``iou_console``, "IoU (per label)": for each label, that label's true mask against that
  label's predicted mask (:func:`~lvkit.eval.per_label_iou`, the console's per-label
  "average IoU").
"""

from __future__ import annotations

import io
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from lvkit.errors import UndefinedMetricWarning
from lvkit.eval.base import intervals, ok_rows, overlap_from_stats, pair_stats
from lvkit.eval.checks import EMPTY, NAN, check_choice, check_positive_int, warn_undefined
from lvkit.eval.masks import aupro, best_iou_threshold, iou_score, iou_threshold_curve, per_label_iou, pixel_auroc
from lvkit.shapes import anomaly_name

if TYPE_CHECKING:
    import numpy.typing as npt
    import pandas as pd

__all__ = ["mask_report", "mask_threshold_curve", "predicted_label_masks"]

#: the display name of each IoU column of :func:`mask_report`, one name per definition
IOU_NAMES = {"iou_any": "IoU (any label)", "iou_label": "IoU (own label)", "iou_console": "IoU (per label)"}
#: what each name means, in a line (the demo prints these under its table)
IOU_MEANINGS = {
    "iou_any": "every true label together against every predicted label together, per image, averaged",
    "iou_label": "the true mask against only the pixels predicted with the image's own defect type",
    "iou_console": "each label's true mask against the same label's predicted mask (the console's average IoU)",
}


def predicted_label_masks(mask_png: bytes | None, colors: dict[str, str] | None) -> dict[str, npt.NDArray[np.bool_]]:
    """Label -> bool mask from an AnomalyMask PNG and the ``Name -> Color`` of its Anomalies.

    Parameters
    ----------
    mask_png : bytes or None
        The ``AnomalyMask`` (RGB PNG, background black).
    colors : dict of str to str or None
        Anomaly name -> ``#RRGGBB`` (the run table's ``anomalies`` column).

    Returns
    -------
    dict of str to ndarray of shape (H, W), dtype bool
        Empty when there is no mask.

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


def _png_shape(png: bytes) -> tuple[int, int]:
    from PIL import Image

    w, h = Image.open(io.BytesIO(png)).size
    return h, w


def _has_map(value: Any) -> bool:
    return isinstance(value, np.ndarray) and value.ndim == 2 and bool(np.all(np.isfinite(value)))


def _collect(df: pd.DataFrame, samples: Any) -> list[dict[str, Any]]:
    """Per successful row: defect type, true label masks, predicted label masks (or None), map (or None).

    When any row of the table holds an AnomalyMask (a segmentation model, ``keep_masks=True``),
    a row without one was answered without a mask: its predicted masks are empty (``{}``), so
    a defect image scores IoU 0 instead of being left out. A table without any mask (a
    classification model, ``keep_masks=False``) has nothing to score (``None``).
    """
    from lvkit.datasets import image_shape, read_label_masks

    by_path = {str(s.image_path): s for s in getattr(samples, "samples", samples)}
    ok = ok_rows(df)
    has_maps = "anomaly_map" in ok.columns
    answered_with_masks = "anomaly_mask" in ok.columns and any(isinstance(v, bytes) for v in ok["anomaly_mask"])
    items = []
    for _, r in ok.iterrows():
        sample = by_path.get(r["path"])
        if sample is None:
            raise ValueError(f"expected every row's path among the samples, got {r['path']!r} not there")
        png = r.get("anomaly_mask")
        png = png if isinstance(png, bytes) else None
        amap = r["anomaly_map"] if has_maps and _has_map(r["anomaly_map"]) else None
        if png is None and amap is None and not answered_with_masks:
            continue
        if amap is not None:
            shape = amap.shape
        elif png is not None:
            shape = _png_shape(png)
        else:
            shape = image_shape(sample.image_path)
        truth = {anomaly_name(k): v for k, v in read_label_masks(sample, shape=shape).items()}
        colors = r["anomalies"] if isinstance(r.get("anomalies"), dict) else {}
        pred = predicted_label_masks(png, colors) if png is not None else ({} if answered_with_masks else None)
        items.append({"kind": sample.defect_type or "normal", "truth": truth, "pred": pred, "map": amap,
                      "shape": shape})
    return items


def _quiet(fn: Any, *args: Any, **kw: Any) -> Any:
    """``fn(*args, **kw)`` with UndefinedMetricWarning silenced: a table cell shows the nan."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return fn(*args, **kw)


def _mask_cells(stats: npt.NDArray[np.int64], empty: str) -> dict[str, float]:
    out = {}
    for metric in ("iou", "dice"):
        out[f"{metric}_any"] = _quiet(overlap_from_stats, stats, metric=metric, average="macro", empty=empty)
        out[f"{metric}_micro"] = _quiet(overlap_from_stats, stats, metric=metric, average="micro", empty=empty)
    return out


def _map_cells(items: list[dict[str, Any]], thresholds: int, fpr_limit: float) -> dict[str, float]:
    from lvkit.datasets import union_mask

    pairs = [(union_mask(it["truth"], it["shape"]), it["map"]) for it in items if it["map"] is not None]
    out = dict.fromkeys(("pixel_auroc", "aupro", "best_iou", "best_iou_threshold"), NAN)
    n_pos = sum(int(t.sum()) for t, _ in pairs)
    if not pairs or n_pos == 0 or n_pos == sum(t.size for t, _ in pairs):
        return out  # no anomalous (or no normal) pixel: undefined, shown as nan
    truths, maps = [t for t, _ in pairs], [m for _, m in pairs]
    out["pixel_auroc"] = pixel_auroc(truths, maps)
    out["aupro"] = aupro(truths, maps, fpr_limit=fpr_limit)
    out["best_iou_threshold"], out["best_iou"] = _quiet(best_iou_threshold, truths, maps, thresholds=thresholds)
    return out


def mask_report(
    df: pd.DataFrame,
    samples: Any,
    *,
    empty: str = "skip",
    ci: bool = True,
    n_resamples: int = 1000,
    confidence_level: float = 0.95,
    seed: int = 0,
    thresholds: int = 50,
    fpr_limit: float = 0.3,
) -> pd.DataFrame:
    """Mask IoU and Dice per defect type (and ``all``), per label as the console did, and from raw maps.

    ``iou_any``, "IoU (any label)": for each image the predicted anomaly mask (every label
    together) is compared with the true mask (every label together). ``iou_any``/``dice_any``
    average the per-image values (macro); ``iou_micro``/``dice_micro`` pool the pixel counts
    of the group. An image answered without an AnomalyMask, in a table where other answers
    have one, is scored with an empty prediction: a defect image gets IoU 0 (it is not left
    out); a table without any AnomalyMask has no mask to score. Normal images
    have empty true masks, so the policy for an image whose two masks are both empty decides
    the headline; it is ``empty`` (shown as the table's column-axis name and counted in
    ``n_both_empty``): ``"skip"`` (default) leaves such images out, so a normal image counts
    only when the model marks pixels on it (its IoU is then 0); ``"one"`` scores them 1.0;
    ``"nan"`` scores them nan (the macro mean skips them). See ``lvkit.eval.masks``.

    ``iou_label``, "IoU (own label)", compares the true mask with only the pixels the model
    gave the image's own defect type (mean over the group's anomalous images; ``all``: over
    every anomalous image). ``iou_console``, "IoU (per label)", is the per-label average IoU of
    :func:`~lvkit.eval.per_label_iou` over the whole table (each label's true mask against the
    same label's predicted mask, the console's per-label number), in the row of the defect
    type of that name; its ``all`` is the mean over labels. The names are :data:`IOU_NAMES`.

    When the table holds raw anomaly maps (``run(..., raw=True)``), ``pixel_auroc``,
    ``aupro`` (up to ``fpr_limit``), and the maximum of the IoU-versus-threshold curve
    (``best_iou`` at ``best_iou_threshold``, over ``thresholds`` evenly spaced thresholds) are
    added per group.

    Parameters
    ----------
    df : DataFrame
        From :func:`lvkit.eval.run` with ``keep_masks=True`` (and ``raw=True`` for the map
        columns).
    samples : Dataset or iterable of Sample
        The same samples (their true masks are read from disk).
    empty : {"skip", "nan", "one"}, default "skip"
        Policy for images whose two masks are both empty.
    ci : bool, default True
        Add bootstrap bounds (over the group's images) ``iou_any_low``, ``iou_any_high``,
        ``iou_micro_low``, ``iou_micro_high``.
    n_resamples, confidence_level, seed
        As :func:`lvkit.eval.image_metrics`.
    thresholds : int, default 50
        Thresholds of the IoU-versus-threshold sweep on raw maps.
    fpr_limit : float, default 0.3
        FPR limit of AU-PRO.

    Returns
    -------
    DataFrame
        Index: defect type (``normal`` for normal images) and ``all``. A cell whose metric is
        undefined for its group (no pixel to score) is nan without a warning; if the ``all``
        row's IoU is undefined, one :class:`~lvkit.errors.UndefinedMetricWarning` says so.

    Raises
    ------
    ValueError
        If an option is invalid or a row's path is not among ``samples``.

    See Also
    --------
    mask_threshold_curve : The IoU-versus-threshold curve itself.

    Examples
    --------
    >>> import tempfile, lvkit
    >>> from lvkit.backends.fake import FakeBackend, brightness_handler
    >>> root = lvkit.datasets.generate(tempfile.mkdtemp(), categories=("brick",), n_train=2,
    ...                                n_test_good=1, n_test_defect_per_type=1, image_size=64)
    >>> test = lvkit.datasets.load(root / "brick").split("test")
    >>> backend = FakeBackend(brightness_handler(threshold=250.0, segmentation=True))
    >>> table = mask_report(lvkit.eval.run(backend, test, progress=False), test, n_resamples=50)
    >>> table.columns.name, list(table.columns[:4]), "all" in table.index
    ('empty=skip', ['n_images', 'n_both_empty', 'iou_any', 'iou_any_low'], True)
    """
    import pandas as pd

    from lvkit.datasets import union_mask

    empty = check_choice("empty", empty, EMPTY)
    thresholds = check_positive_int("thresholds", thresholds)
    items = _collect(df, samples)
    with_masks = [it for it in items if it["pred"] is not None]
    labels = sorted({name for it in with_masks for name in (*it["truth"], *it["pred"])})
    console = _quiet(per_label_iou, [it["truth"] for it in with_masks], [it["pred"] for it in with_masks],
                     labels=labels) if with_masks else {}
    for it in with_masks:  # IoU of the truth with the pixels of the image's own label
        t_any = union_mask(it["truth"], it["shape"])
        if it["kind"] != "normal" and t_any.any():
            it["own"] = iou_score(t_any, it["pred"].get(anomaly_name(it["kind"]), np.zeros(it["shape"], bool)))
    has_maps = any(it["map"] is not None for it in items)
    kinds = sorted({it["kind"] for it in items})
    rows = []
    for kind in [*kinds, "all"]:
        group = [it for it in items if kind == "all" or it["kind"] == kind]
        masked = [it for it in group if it["pred"] is not None]
        stats = np.array([pair_stats(union_mask(it["truth"], it["shape"]), union_mask(it["pred"], it["shape"]))
                          for it in masked], dtype=np.int64).reshape(-1, 4)
        both_empty = int(np.sum(stats[:, 1] == 0))
        row: dict[str, Any] = {"defect_type": kind,
                               "n_images": len(masked) - (both_empty if empty == "skip" else 0),
                               "n_both_empty": both_empty, **_mask_cells(stats, empty)}
        if ci:
            bounds = intervals(lambda s: {k: v for k, v in _mask_cells(s, empty).items() if k.startswith("iou")},
                                stats, n_resamples=n_resamples, confidence_level=confidence_level,
                                seed=seed) if len(stats) else {}
            for name in ("iou_any", "iou_micro"):
                row[f"{name}_low"], row[f"{name}_high"] = bounds.get(name, (NAN, NAN))
        own = [it["own"] for it in masked if "own" in it]
        row["iou_label"] = float(np.mean(own)) if own else NAN
        if kind == "all":
            defined = [v for v in console.values() if not np.isnan(v)]
            row["iou_console"] = float(np.mean(defined)) if defined else NAN
        else:
            row["iou_console"] = console.get(anomaly_name(kind), NAN) if kind != "normal" else NAN
        if has_maps:
            row.update(_map_cells(group, thresholds, fpr_limit))
        rows.append(row)
    order = ["n_images", "n_both_empty", "iou_any", "iou_any_low", "iou_any_high", "iou_micro", "iou_micro_low",
             "iou_micro_high", "dice_any", "dice_micro", "iou_label", "iou_console",
             "pixel_auroc", "aupro", "best_iou", "best_iou_threshold"]
    table = pd.DataFrame(rows).set_index("defect_type")
    table = table[[c for c in order if c in table.columns]]
    table.columns.name = f"empty={empty}"
    table.attrs["empty"] = empty
    if with_masks and np.isnan(table.loc["all", "iou_micro"]):
        warn_undefined(f"mask_report: IoU is undefined, every scored mask pair is empty (empty={empty!r}); nan",
                       stacklevel=2)
    return table


def mask_threshold_curve(df: pd.DataFrame, samples: Any, *, thresholds: int = 50) -> pd.DataFrame:
    """The pooled IoU of ``anomaly_map >= t`` against the true masks, for a sweep of thresholds.

    :func:`~lvkit.eval.iou_threshold_curve` over every successful row that holds a raw anomaly
    map (``run(..., raw=True)``), all labels together.

    Parameters
    ----------
    df : DataFrame
        From :func:`lvkit.eval.run` with ``raw=True``.
    samples : Dataset or iterable of Sample
        The same samples.
    thresholds : int, default 50
        Evenly spaced thresholds between the lowest and the highest map value.

    Returns
    -------
    DataFrame
        Columns ``threshold, iou``, ready for :func:`lvkit.eval.plots.iou_threshold_plot`.

    Raises
    ------
    ValueError
        If the table holds no raw maps.

    See Also
    --------
    mask_report : Its ``best_iou`` is the maximum of this curve.

    Examples
    --------
    >>> import pandas as pd
    >>> from lvkit.datasets import Sample
    >>> from pathlib import Path
    >>> sample = Sample(Path("n.png"), 0, "test", None, None)
    >>> amap = np.zeros((64, 64), np.float32); amap[:8] = 1.0
    >>> df = pd.DataFrame({"path": ["n.png"], "anomaly_map": [amap], "error": [None]})
    >>> mask_threshold_curve(df, [sample], thresholds=2)
       threshold  iou
    0        0.0  0.0
    1        1.0  0.0
    """
    import pandas as pd

    from lvkit.datasets import union_mask

    thresholds = check_positive_int("thresholds", thresholds)
    pairs = [(union_mask(it["truth"], it["shape"]), it["map"]) for it in _collect(df, samples)
             if it["map"] is not None]
    if not pairs:
        raise ValueError("expected raw anomaly maps in the table (run(..., raw=True)), got none")
    grid, iou = iou_threshold_curve([t for t, _ in pairs], [m for _, m in pairs], thresholds=thresholds)
    return pd.DataFrame({"threshold": grid, "iou": iou})
