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
