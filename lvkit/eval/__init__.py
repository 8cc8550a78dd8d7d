"""Evaluation: any DetectAnomalies target over a dataset into a table, and the metrics of that table.

``lvkit.eval`` consumes labels, scores and masks (e.g. from ``DetectAnomalyResult``s), so it
scores the real service, anomalib and recorded runs alike:

- :func:`run` -> a DataFrame, one row per image (of :func:`heldout`, a version's held-out
  images); :func:`throughput` -> latency and images/s.
- :func:`matrix` -> models x datasets x seeds, a version trained and scored per :class:`Cell`
  (on Ray, resumable); its :class:`MatrixResult` holds per-cell metrics and leaderboards
  with paired bootstrap differences (``leaderboard``).
- Tables: :func:`image_metrics`, :func:`operating_points`, :func:`calibration_report`,
  :func:`recalibration_report` (with :func:`split_for_calibration`), :func:`mask_report`,
  :func:`mask_threshold_curve`; :func:`ci_frame` shows a report as ``estimate, low, high``.
- Pure numpy metric functions (``ranking``, ``calibration``, ``masks``, ``bootstrap``,
  ``scores``), streaming accumulators (``accumulate``) and figures (``plots``).
- What the modules share lives in ``checks`` (argument checks, :class:`CalibrationFitWarning`,
  :class:`CoverageWarning`) and ``base`` (sufficient statistics, bootstrap draws, run-table
  plumbing); no module imports another's ``_private`` name.

Importing it must not import torch, matplotlib or pandas, nor any lvkit module but
``lvkit.shapes`` and ``lvkit.errors``; sklearn, scipy, pandas and the rest of lvkit are
imported inside the functions that need them.
"""

from lvkit.eval import plots
from lvkit.eval.accumulate import CalibrationAccumulator, ConfusionAccumulator, MaskIoUAccumulator
from lvkit.eval.bootstrap import bootstrap_ci
from lvkit.eval.calibration import (
    CALIBRATORS,
    BetaCalibrator,
    Calibrator,
    IsotonicCalibrator,
    PlattCalibrator,
    TemperatureCalibrator,
    brier_score_loss,
    calibration_error,
    calibrator_from_dict,
    fit_calibrator,
    log_loss,
    reliability_curve,
)
from lvkit.eval.cells import Cell
from lvkit.eval.checks import CalibrationFitWarning, CoverageWarning
from lvkit.eval.masks import (
    aupro,
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
from lvkit.eval.matrix import MatrixResult, matrix, stop_ray
from lvkit.eval.parity import parity
from lvkit.eval.ranking import (
    average_precision,
    best_f1_threshold,
    confusion_counts,
    image_auroc,
    operating_point,
    precision_recall_f1,
    threshold_metrics,
)
from lvkit.eval.report import ci_frame, image_metrics, operating_points
from lvkit.eval.report_calibration import calibration_report, recalibration_report, split_for_calibration
from lvkit.eval.report_masks import mask_report, mask_threshold_curve, predicted_label_masks
from lvkit.eval.run import detect_one, heldout, run
from lvkit.eval.scores import anomaly_score, confidence_from_score
from lvkit.eval.throughput import fingerprint, throughput

__all__ = [
    "anomaly_score",
    "aupro",
    "average_precision",
    "best_f1_threshold",
    "best_iou_threshold",
    "BetaCalibrator",
    "bootstrap_ci",
    "brier_score_loss",
    "calibration_error",
    "calibration_report",
    "CalibrationAccumulator",
    "CalibrationFitWarning",
    "Calibrator",
    "calibrator_from_dict",
    "CALIBRATORS",
    "Cell",
    "ci_frame",
    "confidence_from_score",
    "confusion_counts",
    "ConfusionAccumulator",
    "CoverageWarning",
    "detect_one",
    "dice_score",
    "fingerprint",
    "fit_calibrator",
    "heldout",
    "image_auroc",
    "image_metrics",
    "iou_score",
    "iou_threshold_curve",
    "IsotonicCalibrator",
    "log_loss",
    "mask_report",
    "mask_stats",
    "mask_threshold_curve",
    "MaskIoUAccumulator",
    "matrix",
    "MatrixResult",
    "mean_dice",
    "mean_iou",
    "operating_point",
    "operating_points",
    "parity",
    "per_label_iou",
    "pixel_auroc",
    "PlattCalibrator",
    "plots",
    "precision_recall_f1",
    "predicted_label_masks",
    "recalibration_report",
    "reliability_curve",
    "run",
    "split_for_calibration",
    "stop_ray",
    "TemperatureCalibrator",
    "threshold_metrics",
    "throughput",
]
