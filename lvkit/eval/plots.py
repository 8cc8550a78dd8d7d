"""Figures from evaluation outputs. matplotlib is imported inside each function.

No metric is computed here: functions take the tables and arrays the metric functions return
(:func:`~lvkit.eval.calibration_report`'s ``reliability``, :func:`~lvkit.eval.mask_threshold_curve`,
:func:`~lvkit.eval.mask_report`'s ``iou_console``, :func:`~lvkit.eval.throughput`'s
``latencies_s``). Each returns a :class:`matplotlib.figure.Figure` built without pyplot, so no
GUI backend is touched; save it with ``fig.savefig(...)`` or show it in a notebook.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt
    from matplotlib.figure import Figure

__all__ = ["iou_threshold_plot", "latency_histogram", "mask_sheet", "per_label_iou_bars", "reliability_diagram"]


def _figure(**kw: Any) -> Figure:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        from lvkit.errors import BackendUnavailableError

        raise BackendUnavailableError("plots need matplotlib: pip install 'lvkit[plot]'") from exc
    return Figure(**kw)


def mask_sheet(
    images: Sequence[npt.NDArray[np.uint8]],
    true_masks: Sequence[npt.NDArray[np.bool_]],
    pred_masks: Sequence[npt.NDArray[np.uint8]],
    titles: Sequence[str],
) -> Figure:
    """A sheet of images with their true mask (contour) and predicted AnomalyMask (overlay).

    Parameters
    ----------
    images : sequence of ndarray (H, W, 3) uint8
    true_masks : sequence of ndarray (H, W) bool
    pred_masks : sequence of ndarray (H, W, 3) uint8
        The decoded AnomalyMask PNGs (black background).
    titles : sequence of str
        One caption per image.

    Returns
    -------
    matplotlib.figure.Figure
        One row per image: the image, the truth, the prediction.

    Examples
    --------
    >>> img = np.zeros((64, 64, 3), np.uint8); truth = np.zeros((64, 64), bool); truth[8:16, 8:16] = True
    >>> pred = np.zeros((64, 64, 3), np.uint8); pred[8:20, 8:20] = (255, 0, 0)
    >>> len(mask_sheet([img], [truth], [pred], ["scratch"]).axes)
    3
    """
    n = len(images)
    fig = _figure(figsize=(7.5, 2.5 * n), layout="constrained")
    axes = fig.subplots(n, 3, squeeze=False)
    for i, (img, truth, pred, title) in enumerate(zip(images, true_masks, pred_masks, titles)):
        axes[i, 0].imshow(img)
        axes[i, 0].set_title(title, fontsize=8)
        axes[i, 1].imshow(img)
        if truth.any():
            axes[i, 1].contour(truth, levels=[0.5], colors="yellow", linewidths=1)
        axes[i, 1].set_title("true mask", fontsize=8)
        overlay = img.copy()
        hit = pred.any(axis=2)
        overlay[hit] = (0.45 * img[hit] + 0.55 * pred[hit]).astype(np.uint8)
        axes[i, 2].imshow(overlay)
        if truth.any():
            axes[i, 2].contour(truth, levels=[0.5], colors="yellow", linewidths=1)
        axes[i, 2].set_title("predicted mask (truth outlined)", fontsize=8)
        for ax in axes[i]:
            ax.set_axis_off()
    return fig


def reliability_diagram(
    prob_true: npt.ArrayLike,
    prob_pred: npt.ArrayLike,
    counts: npt.ArrayLike,
    *,
    confidence: npt.ArrayLike | None = None,
    n_bins: int = 10,
    title: str | None = None,
) -> Figure:
    """Reliability diagram (accuracy against confidence per bin) over a confidence histogram.

    Parameters
    ----------
    prob_true, prob_pred, counts : array-like of shape (m,)
        Per non-empty bin: accuracy, mean confidence and sample count, as returned by
        :func:`~lvkit.eval.reliability_curve` (or the ``reliability`` table of
        :func:`~lvkit.eval.calibration_report`: ``accuracy``, ``confidence``, ``count``).
    confidence : array-like of shape (n,), optional
        The confidences themselves; when given, the lower panel is their histogram over
        ``n_bins`` equal-width bins, else bars of ``counts`` at ``prob_pred``.
    n_bins : int, default 10
        Histogram bins.
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        Two panels: the diagram with the diagonal of perfect calibration, and the histogram.

    Examples
    --------
    >>> fig = reliability_diagram([0.0, 0.75], [0.65, 0.95], [1, 4], confidence=[0.65, 0.95, 0.95, 0.95, 0.95])
    >>> [ax.get_ylabel() for ax in fig.axes]
    ['accuracy', 'count']
    """
    acc, conf, n = (np.asarray(a, dtype=np.float64) for a in (prob_true, prob_pred, counts))
    fig = _figure(figsize=(4.5, 5.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.plot([0, 1], [0, 1], linestyle="--", color="gray", linewidth=1, label="perfectly calibrated")
    top.plot(conf, acc, marker="o", label="model")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1.02)
    top.set_ylabel("accuracy")
    top.legend(loc="upper left", fontsize=8)
    if title:
        top.set_title(title)
    if confidence is not None:
        bottom.hist(np.asarray(confidence, dtype=np.float64), bins=np.linspace(0, 1, n_bins + 1).tolist(), color="C0")
    else:
        bottom.bar(conf, n, width=0.8 / max(n_bins, 1), color="C0")
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("count")
    return fig


def iou_threshold_plot(
    thresholds: npt.ArrayLike,
    iou: npt.ArrayLike,
    *,
    best: tuple[float, float] | None = None,
    title: str | None = None,
) -> Figure:
    """IoU against the binarisation threshold of raw anomaly maps.

    Parameters
    ----------
    thresholds, iou : array-like of shape (k,)
        From :func:`~lvkit.eval.iou_threshold_curve` (or the ``threshold`` and ``iou`` columns of
        :func:`~lvkit.eval.mask_threshold_curve`).
    best : (threshold, iou), optional
        A point to mark, e.g. :func:`~lvkit.eval.best_iou_threshold`.
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> fig = iou_threshold_plot([0.1, 0.5, 0.9], [0.2, 0.6, 0.3], best=(0.5, 0.6))
    >>> fig.axes[0].get_xlabel()
    'threshold'
    """
    fig = _figure(figsize=(5, 3.5), layout="constrained")
    ax = fig.subplots()
    ax.plot(np.asarray(thresholds, dtype=np.float64), np.asarray(iou, dtype=np.float64))
    if best is not None:
        ax.plot([best[0]], [best[1]], marker="o", color="C3")
        ax.annotate(f"max {best[1]:.3f} at {best[0]:.3g}", best, textcoords="offset points", xytext=(6, 6),
                    fontsize=8)
    ax.set_xlabel("threshold")
    ax.set_ylabel("IoU (pooled)")
    ax.set_ylim(0, 1)
    if title:
        ax.set_title(title)
    return fig


def per_label_iou_bars(ious: Mapping[str, float], *, title: str | None = None) -> Figure:
    """Horizontal bars of the average IoU per anomaly label, as the service's console showed it.

    Parameters
    ----------
    ious : mapping of str to float
        Label -> IoU, e.g. :func:`~lvkit.eval.per_label_iou` or a column of
        :func:`~lvkit.eval.mask_report` (``table["iou_console"].to_dict()``); nan bars are
        drawn empty and labelled "n/a".
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> fig = per_label_iou_bars({"scratch": 0.5, "hole": 0.75})
    >>> [t.get_text() for t in fig.axes[0].get_yticklabels()]
    ['scratch', 'hole']
    """
    names = list(ious)
    values = np.asarray([ious[k] for k in names], dtype=np.float64)
    fig = _figure(figsize=(5, 0.45 * len(names) + 1.2), layout="constrained")
    ax = fig.subplots()
    y = np.arange(len(names))
    ax.barh(y, np.nan_to_num(values, nan=0.0), color="C0")
    for i, v in enumerate(values):
        ax.text((0.0 if np.isnan(v) else v) + 0.01, i, "n/a" if np.isnan(v) else f"{v:.3f}", va="center", fontsize=8)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.1)
    ax.set_xlabel("average IoU")
    if title:
        ax.set_title(title)
    return fig


def latency_histogram(
    latencies: Mapping[str, npt.ArrayLike] | npt.ArrayLike,
    *,
    bins: int = 30,
    marks: Mapping[str, float] | None = None,
    title: str | None = None,
) -> Figure:
    """Histogram of request latencies, one series per target, in milliseconds.

    Parameters
    ----------
    latencies : array-like of seconds, or mapping of str to array-like
        E.g. the ``latency_s`` column of :func:`~lvkit.eval.run`, or ``{target: latencies_s}``
        from the batch-size-1 rows of :func:`~lvkit.eval.throughput`.
    bins : int, default 30
        Histogram bins (shared by all series).
    marks : mapping of str to float, optional
        Vertical lines to draw, in seconds, e.g. ``{"p50": row.latency_p50_s, "p99":
        row.latency_p99_s}``.
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> fig = latency_histogram({"in-process": [0.010, 0.012, 0.011]}, marks={"p50": 0.011})
    >>> fig.axes[0].get_xlabel()
    'latency (ms)'
    """
    series = {k: np.asarray(v, dtype=np.float64) for k, v in latencies.items()} if isinstance(latencies, Mapping) \
        else {"latency": np.asarray(latencies, dtype=np.float64)}
    every = np.concatenate([v for v in series.values()]) * 1000.0
    edges = np.linspace(every.min(), every.max() if every.max() > every.min() else every.min() + 1e-3, bins + 1)
    fig = _figure(figsize=(5.5, 3.5), layout="constrained")
    ax = fig.subplots()
    for name, values in series.items():
        ax.hist(values * 1000.0, bins=edges.tolist(), alpha=0.6, label=name)
    for i, (name, value) in enumerate((marks or {}).items()):
        ax.axvline(value * 1000.0, color=f"C{(i + 3) % 10}", linestyle="--", linewidth=1, label=name)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("requests")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return fig
