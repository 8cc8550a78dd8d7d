"""Figures from evaluation outputs. matplotlib is imported inside each function.

No metric is computed here: functions take the tables and arrays the metric functions return.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt
    from matplotlib.figure import Figure

__all__ = ["mask_sheet"]


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
