"""Evaluation metrics for anomaly verdicts, scores and masks: pure numpy functions.

``lvkit.eval`` consumes labels, scores and masks (e.g. from ``DetectAnomalyResult``s), so it
scores the real service, anomalib and recorded runs alike. Importing it must not import torch,
matplotlib or pandas, nor any lvkit module but ``lvkit.shapes`` and ``lvkit.errors``; sklearn
and scipy are imported inside the functions that need them.
"""

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
from lvkit.eval.ranking import (
    average_precision,
    best_f1_threshold,
    confusion_counts,
    image_auroc,
    operating_point,
    precision_recall_f1,
    threshold_metrics,
)
from lvkit.eval import plots
from lvkit.eval.report import image_metrics, mask_report, predicted_label_masks
from lvkit.eval.run import detect_one, run
from lvkit.eval.scores import anomaly_score, confidence_from_score

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
    "Calibrator",
    "calibrator_from_dict",
    "CALIBRATORS",
    "confidence_from_score",
    "confusion_counts",
    "detect_one",
    "dice_score",
    "fit_calibrator",
    "image_auroc",
    "image_metrics",
    "iou_score",
    "iou_threshold_curve",
    "IsotonicCalibrator",
    "log_loss",
    "mask_report",
    "mask_stats",
    "mean_dice",
    "mean_iou",
    "operating_point",
    "per_label_iou",
    "pixel_auroc",
    "PlattCalibrator",
    "precision_recall_f1",
    "predicted_label_masks",
    "reliability_curve",
    "run",
    "TemperatureCalibrator",
    "threshold_metrics",
]
