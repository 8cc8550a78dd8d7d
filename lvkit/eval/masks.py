r"""Pixel-level metrics: mask IoU and Dice, pixel AUROC and AUPRO.

A mask is a 2-D boolean array (True = anomalous pixel). For one image with true mask ``T`` and
predicted mask ``P``:

.. math::

    \mathrm{IoU} = \frac{|T \cap P|}{|T \cup P|}, \qquad
    \mathrm{Dice} = \frac{2\,|T \cap P|}{|T| + |P|}.

Both are 0/0 when both masks are empty, which is the common case (most images are normal), so
the aggregation is explicit:

- ``average="micro"`` pools the counts over the set: :math:`\sum_i |T_i \cap P_i| / \sum_i |T_i \cup P_i|`.
  Images with both masks empty add nothing; ``empty`` only matters when *every* image is empty
  (``"one"`` gives 1.0, ``"nan"`` and ``"skip"`` give ``nan`` with a warning).
- ``average="macro"`` averages the per-image values. ``empty="nan"``: an empty pair's value is
  ``nan`` and the mean is a nan-mean (``nan`` with a warning if every value is ``nan``);
  ``"one"``: an empty pair scores 1.0; ``"skip"``: empty pairs are left out.

The sufficient statistics (``lvkit.eval.base.mask_stats_rows``) are per-image
``(intersection, union, true_count, pred_count)`` rows, so a streaming accumulator only sums
or stacks them; ``lvkit.eval.base.overlap_from_stats`` applies the policies above.

The metrics of continuous anomaly maps (:func:`iou_threshold_curve`, :func:`best_iou_threshold`,
:func:`pixel_auroc`, :func:`aupro`) live in ``lvkit.eval._maps`` and are re-exported here.

This module imports numpy only (sklearn and scipy inside the functions that need them); it must
not import torch, matplotlib or pandas.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from lvkit.eval._maps import aupro, best_iou_threshold, iou_threshold_curve, pixel_auroc
from lvkit.eval.base import mask_stats_rows, overlap_from_stats, pair_stats
from lvkit.eval.checks import AVERAGES, EMPTY, check_choice, check_mask_options, check_mask_pair

__all__ = [
    "aupro",
    "best_iou_threshold",
    "dice_score",
    "iou_score",
    "iou_threshold_curve",
    "mask_stats",
    "mean_dice",
    "mean_iou",
    "per_label_iou",
    "pixel_auroc",
]

_Bool = npt.NDArray[np.bool_]


# --- checks -------------------------------------------------------------------------------------


def _check_masks(masks_true: Sequence[npt.ArrayLike], masks_pred: Sequence[npt.ArrayLike]) -> list[tuple[_Bool, _Bool]]:
    if len(masks_true) != len(masks_pred):
        raise ValueError(f"expected as many predicted masks as true masks, got {len(masks_pred)} and {len(masks_true)}")
    return [check_mask_pair(t, p, f"[{i}]") for i, (t, p) in enumerate(zip(masks_true, masks_pred))]


# --- single image ------------------------------------------------------------------------------


def mask_stats(mask_true: npt.ArrayLike, mask_pred: npt.ArrayLike) -> tuple[int, int, int, int]:
    """Pixel counts behind IoU and Dice for one image.

    Parameters
    ----------
    mask_true : array-like of shape (H, W), dtype bool
        True anomalous pixels.
    mask_pred : array-like of shape (H, W), dtype bool
        Predicted anomalous pixels.

    Returns
    -------
    tuple of int
        ``(intersection, union, true_count, pred_count)``.

    Raises
    ------
    ValueError
        If a mask is not 2-D boolean (or 0/1) or the shapes differ.

    See Also
    --------
    iou_score, dice_score

    Examples
    --------
    >>> mask_stats([[1, 1], [0, 0]], [[1, 0], [1, 0]])
    (1, 3, 2, 2)
    """
    return pair_stats(*check_mask_pair(mask_true, mask_pred))


def iou_score(mask_true: npt.ArrayLike, mask_pred: npt.ArrayLike, *, empty: str = "nan") -> float:
    """Intersection over union of one predicted mask with the true mask.

    Parameters
    ----------
    mask_true : array-like of shape (H, W), dtype bool
        True anomalous pixels.
    mask_pred : array-like of shape (H, W), dtype bool
        Predicted anomalous pixels.
    empty : {"nan", "one", "skip"}, default "nan"
        Value when both masks are empty: ``"one"`` gives 1.0; ``"nan"`` and ``"skip"`` (nothing
        left to score) give ``nan`` with an :class:`~lvkit.errors.UndefinedMetricWarning`.

    Returns
    -------
    float
        IoU in [0, 1] or ``nan``.

    Raises
    ------
    ValueError
        If ``empty`` is invalid or the masks are (see :func:`mask_stats`).

    See Also
    --------
    mean_iou : Over a set of images.

    Examples
    --------
    A 3x3 example: 2 pixels shared, 4 in the union.

    >>> t = [[1, 1, 0], [0, 1, 0], [0, 0, 0]]
    >>> p = [[1, 0, 0], [0, 1, 1], [0, 0, 0]]
    >>> iou_score(t, p)
    0.5
    >>> iou_score([[0, 0]], [[0, 0]], empty="one")
    1.0
    """
    empty = check_choice("empty", empty, EMPTY)
    stats = mask_stats_rows([check_mask_pair(mask_true, mask_pred)])
    return overlap_from_stats(stats, metric="iou", average="micro", empty=empty)


def dice_score(mask_true: npt.ArrayLike, mask_pred: npt.ArrayLike, *, empty: str = "nan") -> float:
    """Dice coefficient (F1 over pixels) of one predicted mask with the true mask.

    Parameters
    ----------
    mask_true : array-like of shape (H, W), dtype bool
        True anomalous pixels.
    mask_pred : array-like of shape (H, W), dtype bool
        Predicted anomalous pixels.
    empty : {"nan", "one", "skip"}, default "nan"
        As :func:`iou_score`.

    Returns
    -------
    float
        Dice in [0, 1] or ``nan``.

    Raises
    ------
    ValueError
        If ``empty`` is invalid or the masks are.

    See Also
    --------
    mean_dice : Over a set of images.

    Examples
    --------
    >>> t = [[1, 1, 0], [0, 1, 0], [0, 0, 0]]
    >>> p = [[1, 0, 0], [0, 1, 1], [0, 0, 0]]
    >>> round(dice_score(t, p), 6)
    0.666667
    """
    empty = check_choice("empty", empty, EMPTY)
    stats = mask_stats_rows([check_mask_pair(mask_true, mask_pred)])
    return overlap_from_stats(stats, metric="dice", average="micro", empty=empty)


# --- sets of images ----------------------------------------------------------------------------


def mean_iou(
    masks_true: Sequence[npt.ArrayLike],
    masks_pred: Sequence[npt.ArrayLike],
    *,
    average: str = "micro",
    empty: str = "nan",
) -> float:
    """IoU over a set of images, pooled (``"micro"``) or per image and averaged (``"macro"``).

    The ``average`` and ``empty`` policies are defined in the module docstring.

    Parameters
    ----------
    masks_true : sequence of array-like of shape (H, W), dtype bool
        True masks (sizes may differ between images).
    masks_pred : sequence of array-like of shape (H, W), dtype bool
        Predicted masks, the same shapes.
    average : {"micro", "macro"}, default "micro"
        Pool pixel counts, or average per-image IoU.
    empty : {"nan", "one", "skip"}, default "nan"
        Policy for images whose two masks are both empty.

    Returns
    -------
    float
        IoU in [0, 1], or ``nan`` with an :class:`~lvkit.errors.UndefinedMetricWarning` when
        nothing is left to score.

    Raises
    ------
    ValueError
        If an option is invalid, the sequences differ in length, or a pair of masks is invalid.

    See Also
    --------
    iou_score, mean_dice, per_label_iou

    Examples
    --------
    >>> t = [[[1, 1], [0, 0]], [[0, 0], [0, 0]]]
    >>> p = [[[1, 0], [0, 0]], [[0, 0], [0, 0]]]
    >>> mean_iou(t, p), mean_iou(t, p, average="macro", empty="one")
    (0.5, 0.75)
    """
    average, empty = check_mask_options(average, empty)
    stats = mask_stats_rows(_check_masks(masks_true, masks_pred))
    return overlap_from_stats(stats, metric="iou", average=average, empty=empty)


def mean_dice(
    masks_true: Sequence[npt.ArrayLike],
    masks_pred: Sequence[npt.ArrayLike],
    *,
    average: str = "micro",
    empty: str = "nan",
) -> float:
    """Dice over a set of images, pooled (``"micro"``) or per image and averaged (``"macro"``).

    Parameters
    ----------
    masks_true : sequence of array-like of shape (H, W), dtype bool
        True masks.
    masks_pred : sequence of array-like of shape (H, W), dtype bool
        Predicted masks, the same shapes.
    average : {"micro", "macro"}, default "micro"
        As :func:`mean_iou`.
    empty : {"nan", "one", "skip"}, default "nan"
        As :func:`mean_iou`.

    Returns
    -------
    float
        Dice in [0, 1] or ``nan`` (with a warning).

    Raises
    ------
    ValueError
        As :func:`mean_iou`.

    See Also
    --------
    mean_iou

    Examples
    --------
    >>> t = [[[1, 1], [0, 0]], [[0, 0], [0, 0]]]
    >>> p = [[[1, 0], [0, 0]], [[0, 0], [0, 0]]]
    >>> round(mean_dice(t, p), 6)
    0.666667
    """
    average, empty = check_mask_options(average, empty)
    stats = mask_stats_rows(_check_masks(masks_true, masks_pred))
    return overlap_from_stats(stats, metric="dice", average=average, empty=empty)


def per_label_iou(
    true_label_masks: Sequence[Mapping[str, npt.ArrayLike]],
    pred_label_masks: Sequence[Mapping[str, npt.ArrayLike]],
    *,
    labels: Sequence[str] | None = None,
    average: str = "macro",
) -> dict[str, float]:
    """Average IoU per anomaly label, as the console's per-label "average IoU".

    Each image is a dict from label name to that label's mask; a label missing from a dict has
    an empty mask there. For each label, only the images where the label is present in the
    truth *or* the prediction are scored (both masks empty = not scored, ``empty="skip"``);
    ``"macro"`` averages their per-image IoU, ``"micro"`` pools their pixel counts. The
    console's exact definition is not public; this is lvkit's.

    Parameters
    ----------
    true_label_masks : sequence of dict of str to array-like of shape (H, W), dtype bool
        Per image, the true mask of each label.
    pred_label_masks : sequence of dict of str to array-like of shape (H, W), dtype bool
        Per image, the predicted mask of each label (e.g. decoded from ``AnomalyMask`` colours).
    labels : sequence of str, optional
        Labels to score; default every label seen, sorted. Leave ``"background"`` out.
    average : {"micro", "macro"}, default "macro"
        Pool pixel counts or average per-image IoU.

    Returns
    -------
    dict of str to float
        IoU per label; ``nan`` with an :class:`~lvkit.errors.UndefinedMetricWarning` for a
        label that appears in no image.

    Raises
    ------
    ValueError
        If the sequences differ in length, ``average`` is invalid or a pair of masks is invalid.

    See Also
    --------
    mean_iou

    Examples
    --------
    >>> t = [{"scratch": [[1, 1], [0, 0]]}, {"dent": [[0, 1], [0, 0]]}]
    >>> p = [{"scratch": [[1, 0], [0, 0]]}, {"dent": [[0, 1], [0, 0]], "scratch": [[1, 0], [0, 0]]}]
    >>> per_label_iou(t, p)
    {'dent': 1.0, 'scratch': 0.25}
    """
    average = check_choice("average", average, AVERAGES)
    if len(true_label_masks) != len(pred_label_masks):
        raise ValueError(
            f"expected as many predicted images as true images, got {len(pred_label_masks)} and {len(true_label_masks)}"
        )
    if labels is None:
        labels = sorted({name for image in (*true_label_masks, *pred_label_masks) for name in image})
    out: dict[str, float] = {}
    for label in labels:
        rows = []
        for i, (t_img, p_img) in enumerate(zip(true_label_masks, pred_label_masks)):
            t_mask, p_mask = t_img.get(label), p_img.get(label)
            if t_mask is None and p_mask is None:
                continue
            if t_mask is None or p_mask is None:
                ref = np.asarray(p_mask if t_mask is None else t_mask)
                t_mask = np.zeros(ref.shape, bool) if t_mask is None else t_mask
                p_mask = np.zeros(ref.shape, bool) if p_mask is None else p_mask
            rows.append(pair_stats(*check_mask_pair(t_mask, p_mask, f"[{i}][{label!r}]")))
        stats = np.array(rows, dtype=np.int64).reshape(-1, 4)
        out[label] = overlap_from_stats(stats, metric="iou", average=average, empty="skip")
    return out
