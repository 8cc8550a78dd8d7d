"""Figures from evaluation outputs. matplotlib is imported inside each function.

No metric is computed here: functions take the tables and arrays the metric functions return
(:func:`~lvkit.eval.calibration_report`'s ``reliability``, :func:`~lvkit.eval.mask_threshold_curve`,
:func:`~lvkit.eval.mask_report`'s ``iou_console``, :func:`~lvkit.eval.throughput`'s
``latencies_s``). Each returns a :class:`matplotlib.figure.Figure` built without pyplot, so no
GUI backend is touched; save it with ``fig.savefig(...)`` or show it in a notebook. The
reliability diagram's histogram bins its confidences with the curve's own helpers
(``lvkit.eval.base.bin_edges``/``bin_ids``), so its bars are the curve's bins.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from lvkit.eval.base import bin_edges, bin_ids, n_bin_slots
from lvkit.eval.checks import STRATEGIES, as_probability, check_choice, check_positive_int

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


_TRUTH_COLOR = "yellow"
EMPTY_PREDICTION = "predicted mask: empty\n(no pixel above the pixel threshold)"


def _hex(rgb: Any) -> str:
    return "#{:02X}{:02X}{:02X}".format(*(int(v) for v in rgb))


def mask_sheet(
    images: Sequence[npt.NDArray[np.uint8]],
    true_masks: Sequence[npt.NDArray[np.bool_]],
    pred_masks: Sequence[npt.NDArray[np.uint8]],
    titles: Sequence[str],
    *,
    labels: Mapping[str, str] | None = None,
) -> Figure:
    """A sheet of images with their true mask (contour) and predicted AnomalyMask (overlay).

    A legend under the sheet names the colours: the truth's yellow outline and each predicted
    label's colour (from ``labels``; without it, each colour found in the predicted masks).
    A predicted mask with no pixel is titled as such: the verdict comes from the image score
    and its threshold, the mask from the pixels above the pixel threshold, so an image can be
    anomalous with an empty mask.

    Parameters
    ----------
    images : sequence of ndarray (H, W, 3) uint8
    true_masks : sequence of ndarray (H, W) bool
    pred_masks : sequence of ndarray (H, W, 3) uint8
        The decoded AnomalyMask PNGs (black background).
    titles : sequence of str
        One caption per image.
    labels : mapping of str to str, optional
        Anomaly name -> ``#RRGGBB`` (the run table's ``anomalies`` column), for the legend.

    Returns
    -------
    matplotlib.figure.Figure
        One row per image: the image, the truth, the prediction; and the colour legend.

    Examples
    --------
    >>> img = np.zeros((64, 64, 3), np.uint8); truth = np.zeros((64, 64), bool); truth[8:16, 8:16] = True
    >>> pred = np.zeros((64, 64, 3), np.uint8); pred[8:20, 8:20] = (255, 0, 0)
    >>> fig = mask_sheet([img], [truth], [pred], ["scratch"], labels={"scratch": "#FF0000"})
    >>> len(fig.axes), [t.get_text() for t in fig.legends[0].get_texts()]
    (3, ['true mask (outline)', 'predicted: scratch'])
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    n = len(images)
    fig = _figure(figsize=(7.5, 2.5 * n + 0.5), layout="constrained")
    axes = fig.subplots(n, 3, squeeze=False)
    seen: list[str] = []
    for i, (img, truth, pred, title) in enumerate(zip(images, true_masks, pred_masks, titles)):
        axes[i, 0].imshow(img)
        axes[i, 0].set_title(title, fontsize=8)
        axes[i, 1].imshow(img)
        if truth.any():
            axes[i, 1].contour(truth, levels=[0.5], colors=_TRUTH_COLOR, linewidths=1)
        axes[i, 1].set_title("true mask" if truth.any() else "true mask: empty", fontsize=8)
        overlay = img.copy()
        hit = pred.any(axis=2)
        overlay[hit] = (0.45 * img[hit] + 0.55 * pred[hit]).astype(np.uint8)
        seen += [c for c in (_hex(v) for v in np.unique(pred[hit].reshape(-1, 3), axis=0)) if c not in seen]
        axes[i, 2].imshow(overlay)
        if truth.any():
            axes[i, 2].contour(truth, levels=[0.5], colors=_TRUTH_COLOR, linewidths=1)
        axes[i, 2].set_title("predicted mask (truth outlined)" if hit.any() else EMPTY_PREDICTION, fontsize=8)
        for ax in axes[i]:
            ax.set_axis_off()
    handles: list[Any] = [Line2D([], [], color=_TRUTH_COLOR, linewidth=2, label="true mask (outline)")]
    if labels:
        handles += [Patch(facecolor=color, label=f"predicted: {name}") for name, color in labels.items()]
    else:
        handles += [Patch(facecolor=color, label=f"predicted ({color})") for color in seen]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), fontsize=8)
    return fig


def reliability_diagram(
    prob_true: npt.ArrayLike,
    prob_pred: npt.ArrayLike,
    counts: npt.ArrayLike,
    *,
    confidence: npt.ArrayLike | None = None,
    n_bins: int = 10,
    strategy: str = "uniform",
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
        The confidences themselves (non-finite ones, from failed rows, are left out); when
        given, the lower panel is their histogram over the curve's own bins (``n_bins`` and
        ``strategy`` as the curve was made: the same edges and the same edge convention,
        confidence 1 drawn as a bar of its own past 1 for uniform bins), else bars of
        ``counts`` at ``prob_pred``.
    n_bins : int, default 10
        Bins of the curve.
    strategy : {"uniform", "quantile"}, default "uniform"
        Bins of the curve.
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure
        Two panels: the diagram with the diagonal of perfect calibration, and the histogram.

    Raises
    ------
    ValueError
        If ``confidence`` is given and its histogram's non-empty bins do not hold ``counts``
        (the curve was made with other bins or other data).

    Examples
    --------
    >>> fig = reliability_diagram([0.0, 0.75], [0.65, 0.95], [1, 4], confidence=[0.65, 0.95, 0.95, 0.95, 0.95])
    >>> [ax.get_ylabel() for ax in fig.axes]
    ['accuracy', 'count']
    """
    n_bins = check_positive_int("n_bins", n_bins)
    strategy = check_choice("strategy", strategy, STRATEGIES)
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
        values = np.asarray(confidence, dtype=np.float64)
        values = as_probability("confidence", values[np.isfinite(values)])
        edges = bin_edges(values, n_bins, strategy)
        hist = np.bincount(bin_ids(values, edges, strategy), minlength=n_bin_slots(edges, strategy))
        if hist[hist > 0].tolist() != n.astype(np.int64).tolist():
            raise ValueError(f"expected counts of these confidences' bins (n_bins={n_bins}, strategy={strategy!r}), "
                             f"got counts {n.astype(np.int64).tolist()} for bins holding {hist[hist > 0].tolist()}")
        bottom.bar(edges[:-1], hist[: edges.size - 1], width=np.diff(edges), align="edge", color="C0",
                   edgecolor="white", linewidth=0.5)
        if hist.size == edges.size and hist[-1]:  # uniform bins: confidence 1 is a bin of its own
            width = 0.3 / n_bins
            bottom.bar([1.0], [hist[-1]], width=width, align="edge", color="C1", label="confidence = 1")
            bottom.legend(loc="upper left", fontsize=7)
            top.set_xlim(0, 1 + width)
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
