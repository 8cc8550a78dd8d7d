r"""Metrics of anomaly maps against true masks, re-exported by ``lvkit.eval.masks``.

``iou_threshold_curve``/``best_iou_threshold`` sweep a threshold over the maps and score the
masks ``map >= t`` by pooled IoU; ``pixel_auroc`` ranks the pooled pixels with sklearn;
``aupro`` is the area under the per-region-overlap curve (MVTec AD), defined as follows.

The true masks are split into connected regions (8-connectivity, as MVTec AD's evaluation code
and anomalib's OpenCV labelling). For a threshold :math:`t` with predicted masks
:math:`P_t = \{\text{map} \ge t\}`:

.. math::

    \mathrm{PRO}(t) = \frac{1}{R} \sum_{r=1}^{R} \frac{|C_r \cap P_t|}{|C_r|}, \qquad
    \mathrm{FPR}(t) = \frac{|N \cap P_t|}{|N|},

over all :math:`R` regions :math:`C_r` of all images and all normal pixels :math:`N` of all
images. The curve (starting at (0, 0)) is integrated with the trapezoid rule over
:math:`\mathrm{FPR} \in [0, \text{fpr\_limit}]`, interpolating linearly at the limit, and
divided by ``fpr_limit``: the definition of anomalib's ``AUPRO`` (2.x), whose thresholds are
every distinct score (``num_thresholds=None`` here). ``num_thresholds=k`` evaluates ``k``
evenly spaced thresholds instead, trading exactness for memory and a per-threshold histogram
that can be accumulated image by image: :func:`aupro_rows` keeps, per image, the counts that
curve is made of at fixed thresholds, and :func:`aupro_from_rows` sums any subset of them (a
bootstrap resample) into the area, equal to ``aupro(..., num_thresholds=k)`` on the same grid.

This module imports numpy (scipy.ndimage and sklearn inside functions); not torch, matplotlib,
pandas.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from lvkit.eval.checks import (
    NAN,
    as_finite,
    check_in_range,
    check_maps,
    check_positive_int,
    pooled_pixels,
    warn_undefined,
)

__all__ = [
    "aupro", "aupro_from_rows", "aupro_rows", "aupro_thresholds", "best_iou_threshold", "iou_threshold_curve",
    "pixel_auroc",
]

_Bool = npt.NDArray[np.bool_]
_F64 = npt.NDArray[np.float64]


def _region_weights(mask_true: _Bool) -> tuple[_F64, int]:
    """Per-pixel weight ``1 / |C_r|`` for region pixels (0 for normal ones) and the region count."""
    from scipy.ndimage import label

    regions, n_regions = label(mask_true, structure=np.ones((3, 3), dtype=np.int64))
    flat = regions.ravel()
    sizes = np.bincount(flat, minlength=n_regions + 1).astype(np.float64)
    weights = np.zeros(flat.size, dtype=np.float64)
    fg = flat > 0
    weights[fg] = 1.0 / sizes[flat[fg]]
    return weights, int(n_regions)


def _stats(pairs: Sequence[tuple[_Bool, _F64]]) -> tuple[_F64, _F64, _F64, int, int]:
    """Pixel-level statistics: scores, normal-pixel indicator, region weight, #normal, #regions."""
    scores, normal, weights, n_regions = [], [], [], 0
    for mask, amap in pairs:
        w, r = _region_weights(mask)
        scores.append(amap.ravel())
        normal.append((~mask.ravel()).astype(np.float64))
        weights.append(w)
        n_regions += r
    if not pairs:
        empty = np.empty(0, np.float64)
        return empty, empty, empty, 0, 0
    nrm = np.concatenate(normal)
    return np.concatenate(scores), nrm, np.concatenate(weights), int(nrm.sum()), n_regions


def _curve_exact(scores: _F64, normal: _F64, weights: _F64, n_normal: int, n_regions: int) -> tuple[_F64, _F64]:
    """(FPR, PRO) at every distinct score, from the highest threshold down, starting at (0, 0)."""
    order = np.argsort(-scores, kind="mergesort")
    s = scores[order]
    fpr = np.minimum(np.cumsum(normal[order]) / n_normal, 1.0)
    pro = np.minimum(np.cumsum(weights[order]) / n_regions, 1.0)
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last pixel of each tie group
    return np.r_[0.0, fpr[last]], np.r_[0.0, pro[last]]


def _curve_binned(
    scores: _F64, normal: _F64, weights: _F64, n_normal: int, n_regions: int, thresholds: _F64
) -> tuple[_F64, _F64]:
    """(FPR, PRO) at ascending ``thresholds``, from the highest down, starting at (0, 0)."""
    k = thresholds.size
    above = np.searchsorted(thresholds, scores, side="right")  # thresholds t with score >= t
    fp_hist = np.bincount(above, weights=normal, minlength=k + 1)
    pro_hist = np.bincount(above, weights=weights, minlength=k + 1)
    # positives at thresholds[m] = pixels with above > m; reversed -> from the highest threshold
    fp_at = np.cumsum(fp_hist[::-1])[:-1]
    pro_at = np.cumsum(pro_hist[::-1])[:-1]
    return np.r_[0.0, np.minimum(fp_at / n_normal, 1.0)], np.r_[0.0, np.minimum(pro_at / n_regions, 1.0)]


def _from_curve(fpr: _F64, pro: _F64, fpr_limit: float) -> float:
    """Normalised area under PRO(FPR) on [0, fpr_limit], interpolated at the limit (as anomalib)."""
    i = int(np.searchsorted(fpr, fpr_limit, side="right")) - 1  # last point with fpr <= limit
    x, y = fpr[: i + 1], pro[: i + 1]
    if fpr[i] < fpr_limit and i + 1 < fpr.size:
        f1, f2, p1, p2 = fpr[i], fpr[i + 1], pro[i], pro[i + 1]
        x = np.r_[x, fpr_limit]
        y = np.r_[y, p1 + (p2 - p1) * (fpr_limit - f1) / (f2 - f1)]
    area = float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))
    return area / fpr_limit


def aupro(
    masks_true: Sequence[npt.ArrayLike],
    anomaly_maps: Sequence[npt.ArrayLike],
    *,
    fpr_limit: float = 0.3,
    num_thresholds: int | None = None,
) -> float:
    """Normalised area under the per-region-overlap curve up to a false-positive-rate limit.

    The definition (MVTec AD's, as anomalib's ``AUPRO`` computes it) is in the module docstring
    of ``lvkit.eval._maps``. Unlike anomalib, which returns 0, the metric is ``nan`` with an
    :class:`~lvkit.errors.UndefinedMetricWarning` when there is no anomalous region or no
    normal pixel.

    Parameters
    ----------
    masks_true : sequence of array-like of shape (H, W), dtype bool
        True masks; their 8-connected components are the regions.
    anomaly_maps : sequence of array-like of shape (H, W), dtype float
        Per-pixel anomaly scores, the same shapes.
    fpr_limit : float in (0, 1], default 0.3
        Upper end of the FPR integration range.
    num_thresholds : int, optional
        Use this many evenly spaced thresholds between the lowest and highest score (at least
        2) instead of every distinct score.

    Returns
    -------
    float
        AUPRO in [0, 1], or ``nan``.

    Raises
    ------
    ValueError
        If ``fpr_limit`` or ``num_thresholds`` is invalid, or the masks or maps are.

    See Also
    --------
    pixel_auroc : Pixel-level AUROC, dominated by large regions.

    Examples
    --------
    The one region's pixels score above every normal pixel, so PRO reaches 1 at FPR 0:

    >>> mask = [[0, 0, 0], [0, 1, 1], [0, 0, 0]]
    >>> amap = [[0.1, 0.2, 0.3], [0.2, 0.9, 0.8], [0.1, 0.0, 0.4]]
    >>> aupro([mask], [amap])
    1.0
    """
    limit = check_in_range("fpr_limit", fpr_limit, "(0, 1]")
    if num_thresholds is not None:
        num_thresholds = check_positive_int("num_thresholds", num_thresholds, minimum=2)
    scores, normal, weights, n_normal, n_regions = _stats(check_maps(masks_true, anomaly_maps))
    if n_regions == 0 or n_normal == 0:
        warn_undefined(
            f"AUPRO is undefined with {n_regions} anomalous region(s) and {n_normal} normal pixel(s); returning nan"
        )
        return NAN
    if num_thresholds is None:
        fpr, pro = _curve_exact(scores, normal, weights, n_normal, n_regions)
    else:
        grid = np.linspace(scores.min(), scores.max(), num_thresholds)
        fpr, pro = _curve_binned(scores, normal, weights, n_normal, n_regions, grid)
    return _from_curve(fpr, pro, limit)


def aupro_rows(masks_true: Sequence[npt.ArrayLike], anomaly_maps: Sequence[npt.ArrayLike], *,
               thresholds: npt.ArrayLike) -> _F64:
    """Per-image statistics of the PRO curve at fixed ascending ``thresholds`` (``k`` of them).

    Row ``i`` is ``[normal pixels, regions, fp(t_1) .. fp(t_k), overlap(t_1) .. overlap(t_k)]``
    of image ``i``: ``fp(t)`` counts its normal pixels with ``map >= t`` and ``overlap(t)``
    sums ``|C_r & P_t| / |C_r|`` over its regions. Rows add: :func:`aupro_from_rows` of any
    subset (with repeats) is the AU-PRO of those images on this grid, so a bootstrap resamples
    rows instead of maps. Not re-exported by ``lvkit.eval``; ``lvkit.eval.matrix`` stores them.
    """
    grid = as_finite("thresholds", thresholds)
    if grid.size < 2 or bool(np.any(np.diff(grid) <= 0)):
        raise ValueError(f"thresholds: expected at least 2 strictly ascending values, got {grid.size}")
    k = grid.size
    rows = np.zeros((len(masks_true), 2 + 2 * k), dtype=np.float64)
    for i, (mask, amap) in enumerate(check_maps(masks_true, anomaly_maps)):
        weights, n_regions = _region_weights(mask)
        normal = (~mask.ravel()).astype(np.float64)
        above = np.searchsorted(grid, amap.ravel(), side="right")  # thresholds t with score >= t
        # pixels at threshold m: those with above > m (the counts of _curve_binned, per image)
        fp = np.cumsum(np.bincount(above, weights=normal, minlength=k + 1)[::-1])[::-1][1:]
        pro = np.cumsum(np.bincount(above, weights=weights, minlength=k + 1)[::-1])[::-1][1:]
        rows[i, 0], rows[i, 1], rows[i, 2 : 2 + k], rows[i, 2 + k :] = normal.sum(), n_regions, fp, pro
    return rows


def aupro_from_rows(rows: npt.ArrayLike, *, fpr_limit: float = 0.3) -> float:
    """AU-PRO of the images whose :func:`aupro_rows` are ``rows``; ``nan`` (no warning) when
    they hold no region or no normal pixel."""
    r = np.asarray(rows, dtype=np.float64)
    total = r.sum(axis=0)
    k = (r.shape[1] - 2) // 2
    n_normal, n_regions = total[0], total[1]
    if n_regions == 0 or n_normal == 0:
        return NAN
    fpr = np.r_[0.0, np.minimum(total[2 : 2 + k][::-1] / n_normal, 1.0)]  # from the highest threshold down
    pro = np.r_[0.0, np.minimum(total[2 + k :][::-1] / n_regions, 1.0)]
    return _from_curve(fpr, pro, fpr_limit)


def aupro_thresholds(masks_true: Sequence[npt.ArrayLike], anomaly_maps: Sequence[npt.ArrayLike], *,
                     fpr_limit: float = 0.3, n: int = 100) -> _F64:
    """A threshold grid for :func:`aupro_rows` that is fine where AU-PRO is measured.

    ``n`` quantiles of the normal pixels' scores at false-positive rates evenly spaced on
    ``[0, min(1, 1.5 * fpr_limit)]`` (so the curve has a point every ``1.5 * fpr_limit / n``
    of FPR up to past the limit), plus ``n // 2`` evenly spaced thresholds over all scores;
    ascending, distinct. Evenly spaced thresholds alone (``aupro(num_thresholds=k)``) put few
    points below the limit when the normal scores are skewed.
    """
    limit = check_in_range("fpr_limit", fpr_limit, "(0, 1]")
    n = check_positive_int("n", n, minimum=2)
    pairs = check_maps(masks_true, anomaly_maps)
    truth, score = pooled_pixels(pairs)
    if score.size == 0:
        raise ValueError("expected at least one anomaly map, got none")
    normal = score[~truth] if bool(np.any(~truth)) else score
    levels = np.linspace(0.0, min(1.0, 1.5 * limit), n)
    grid = np.unique(np.r_[np.quantile(normal, 1.0 - levels), np.linspace(score.min(), score.max(), n // 2)])
    return grid if grid.size >= 2 else np.r_[grid, grid[-1] + 1.0]


# --- threshold sweeps and pixel AUROC -----------------------------------------------------------


def iou_threshold_curve(
    masks_true: Sequence[npt.ArrayLike],
    anomaly_maps: Sequence[npt.ArrayLike],
    *,
    thresholds: int | npt.ArrayLike,
) -> tuple[_F64, _F64]:
    """Micro IoU of the masks ``anomaly_map >= t`` for each threshold ``t``.

    Parameters
    ----------
    masks_true : sequence of array-like of shape (H, W), dtype bool
        True masks.
    anomaly_maps : sequence of array-like of shape (H, W), dtype float
        Per-pixel anomaly scores, the same shapes.
    thresholds : int or array-like of shape (k,)
        The thresholds, or how many evenly spaced ones between the lowest and highest score.

    Returns
    -------
    thresholds : ndarray of shape (k,), float64
        The thresholds, in the order given.
    iou : ndarray of shape (k,), float64
        Pooled IoU at each; ``nan`` where the pooled union is empty (with one
        :class:`~lvkit.errors.UndefinedMetricWarning`).

    Raises
    ------
    ValueError
        If the thresholds, masks or maps are invalid.

    See Also
    --------
    best_iou_threshold : The arg-max of this curve.

    Examples
    --------
    >>> t, iou = iou_threshold_curve([[[0, 1, 1]]], [[[0.2, 0.5, 0.9]]], thresholds=[0.3, 0.6])
    >>> iou.tolist()
    [1.0, 0.5]
    """
    truth, score = pooled_pixels(check_maps(masks_true, anomaly_maps))
    if isinstance(thresholds, (int, np.integer)) and not isinstance(thresholds, bool):
        if thresholds < 1 or score.size == 0:
            raise ValueError(f"thresholds: expected >= 1 thresholds over non-empty maps, got {thresholds!r}")
        grid = np.linspace(score.min(), score.max(), int(thresholds))
    else:
        grid = as_finite("thresholds", thresholds)
    sorted_all, sorted_true = np.sort(score), np.sort(score[truth])
    n_pred = score.size - np.searchsorted(sorted_all, grid, side="left")
    inter = sorted_true.size - np.searchsorted(sorted_true, grid, side="left")
    union = (sorted_true.size + n_pred - inter).astype(np.float64)
    iou = np.divide(inter.astype(np.float64), union, out=np.full(grid.shape, NAN), where=union > 0)
    if bool(np.any(union == 0)):
        warn_undefined(f"IoU is undefined at {int(np.sum(union == 0))} threshold(s) with empty masks; nan there")
    return grid.astype(np.float64), iou


def best_iou_threshold(
    masks_true: Sequence[npt.ArrayLike],
    anomaly_maps: Sequence[npt.ArrayLike],
    *,
    thresholds: int | npt.ArrayLike,
) -> tuple[float, float]:
    """The threshold of :func:`iou_threshold_curve` with the highest micro IoU, and that IoU.

    Ties go to the first threshold in the order given.

    Parameters
    ----------
    masks_true : sequence of array-like of shape (H, W), dtype bool
        True masks.
    anomaly_maps : sequence of array-like of shape (H, W), dtype float
        Per-pixel anomaly scores.
    thresholds : int or array-like of shape (k,)
        As :func:`iou_threshold_curve`.

    Returns
    -------
    threshold : float
    iou : float
        Both ``nan`` (with a warning) if the IoU is undefined at every threshold.

    Raises
    ------
    ValueError
        As :func:`iou_threshold_curve`.

    See Also
    --------
    iou_threshold_curve

    Examples
    --------
    >>> best_iou_threshold([[[0, 1, 1]]], [[[0.2, 0.5, 0.9]]], thresholds=[0.3, 0.6])
    (0.3, 1.0)
    """
    grid, iou = iou_threshold_curve(masks_true, anomaly_maps, thresholds=thresholds)
    if grid.size == 0 or bool(np.all(np.isnan(iou))):
        warn_undefined("IoU is undefined at every threshold; returning nan")
        return NAN, NAN
    k = int(np.nanargmax(iou))
    return float(grid[k]), float(iou[k])


def pixel_auroc(masks_true: Sequence[npt.ArrayLike], anomaly_maps: Sequence[npt.ArrayLike]) -> float:
    """Pixel-level AUROC: :func:`sklearn.metrics.roc_auc_score` over the pooled pixels.

    Parameters
    ----------
    masks_true : sequence of array-like of shape (H, W), dtype bool
        True masks.
    anomaly_maps : sequence of array-like of shape (H, W), dtype float
        Per-pixel anomaly scores, the same shapes.

    Returns
    -------
    float
        AUROC in [0, 1], or ``nan`` with an :class:`~lvkit.errors.UndefinedMetricWarning` if
        the pooled pixels are all normal or all anomalous.

    Raises
    ------
    ValueError
        If the masks or maps are invalid.

    See Also
    --------
    aupro : The region-balanced alternative.

    Examples
    --------
    >>> pixel_auroc([[[0, 1], [0, 1]]], [[[0.1, 0.8], [0.6, 0.4]]])
    0.75
    """
    truth, score = pooled_pixels(check_maps(masks_true, anomaly_maps))
    n_pos = int(truth.sum())
    if n_pos == 0 or n_pos == truth.size:
        warn_undefined(
            f"pixel AUROC is undefined with one class ({n_pos} anomalous of {truth.size} pixels); returning nan"
        )
        return NAN
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(truth.astype(np.int64), score))

