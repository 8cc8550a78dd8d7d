"""Plots return Figures built from metric outputs; matplotlib loads only when one is drawn."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from matplotlib.figure import Figure

from lvkit.eval import calibration_report, plots


def test_every_plot_returns_a_figure(tmp_path) -> None:
    import pandas as pd

    df = pd.DataFrame({"label": [0, 1, 1, 0], "is_anomalous": [False, True, False, True],
                       "confidence": [0.9, 0.8, 0.6, 0.7], "error": None})
    rel = calibration_report(df, ci=False)["reliability"]
    figures = [
        plots.reliability_diagram(rel["accuracy"], rel["confidence"], rel["count"], confidence=df["confidence"],
                                  title="t"),
        plots.reliability_diagram(rel["accuracy"], rel["confidence"], rel["count"]),
        plots.iou_threshold_plot(np.linspace(0, 1, 5), [0.1, 0.3, 0.5, 0.2, np.nan], best=(0.5, 0.5), title="t"),
        plots.per_label_iou_bars({"scratch": 0.4, "hole": float("nan")}, title="t"),
        plots.latency_histogram([0.01, 0.02, 0.015], marks={"p50": 0.015}),
        plots.latency_histogram({"a": [0.01, 0.01], "b": [0.01, 0.01]}, title="t"),
        plots.mask_sheet([np.zeros((64, 64, 3), np.uint8)] * 2, [np.zeros((64, 64), bool)] * 2,
                         [np.zeros((64, 64, 3), np.uint8)] * 2, ["a", "b"]),
    ]
    for i, fig in enumerate(figures):
        assert isinstance(fig, Figure)
        fig.savefig(tmp_path / f"{i}.png", dpi=30)


@pytest.mark.parametrize("name", plots.__all__)
def test_plots_have_examples(name: str) -> None:
    assert "Examples" in getattr(plots, name).__doc__


def test_matplotlib_is_imported_only_when_drawing() -> None:
    code = ("import sys, lvkit.eval.plots as p; before = 'matplotlib' in sys.modules;"
            "p.iou_threshold_plot([0, 1], [0.5, 0.2]); print(before, 'matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


def _bar_heights(ax) -> list[float]:
    return [p.get_height() for p in ax.patches if p.get_height() > 0]


@pytest.mark.parametrize("strategy", ["uniform", "quantile"])
def test_reliability_histogram_has_the_curve_bins(rng: np.random.Generator, strategy: str) -> None:
    from lvkit.eval import reliability_curve

    # confidences on edges (0.1, 0.5, 1.0 exactly) and in between
    conf = np.r_[0.1, 0.1, 0.15, 0.5, 0.5, 0.95, 1.0, 1.0, 1.0, rng.uniform(0.5, 1.0, 20)]
    correct = rng.random(conf.size) < conf
    acc, mean_conf, counts = reliability_curve(conf, correct, n_bins=10, strategy=strategy)
    fig = plots.reliability_diagram(acc, mean_conf, counts, confidence=conf, n_bins=10, strategy=strategy)
    assert _bar_heights(fig.axes[1]) == counts.tolist()


def test_reliability_histogram_refuses_other_bins() -> None:
    conf = [0.1, 0.1, 0.55, 1.0]
    with pytest.raises(ValueError, match="expected counts of these confidences' bins"):
        plots.reliability_diagram([1.0, 1.0, 1.0], [0.1, 0.55, 1.0], [1, 2, 1], confidence=conf)
    with pytest.raises(ValueError, match="strategy: expected one of"):
        plots.reliability_diagram([1.0], [0.5], [1], strategy="kmeans")


def test_mask_sheet_has_a_colour_legend_and_explains_an_empty_prediction() -> None:
    img = np.zeros((64, 64, 3), np.uint8)
    truth = np.zeros((64, 64), bool)
    truth[8:16, 8:16] = True
    pred = np.zeros((64, 64, 3), np.uint8)
    pred[8:20, 8:20] = (0x1F, 0x77, 0xB4)
    fig = plots.mask_sheet([img, img], [truth, truth], [pred, np.zeros_like(pred)], ["hole", "anomalous (0.79)"],
                           labels={"hole": "#1F77B4", "scratch": "#FF7F0E"})
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["true mask (outline)", "predicted: hole",
                                                          "predicted: scratch"]
    assert legend.get_patches()[0].get_facecolor()[:3] == pytest.approx((0x1F / 255, 0x77 / 255, 0xB4 / 255))
    assert fig.axes[5].get_title() == plots.EMPTY_PREDICTION
    assert "no pixel above the pixel threshold" in plots.EMPTY_PREDICTION
    assert fig.axes[2].get_title() == "predicted mask (truth outlined)"
    # without names, the legend lists the colours found in the predictions
    fig = plots.mask_sheet([img], [truth], [pred], ["hole"])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["true mask (outline)", "predicted (#1F77B4)"]
