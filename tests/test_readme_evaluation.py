"""The README's evaluation snippet, run as written (on the tiny benchmark's trained PatchCore).

Issue 13, item 3: as written it used to return all-NaN metrics without a word (the model was not
started and ``lve.run`` kept the errors in its rows), and it scored the validation images that
chose the thresholds. Now it starts the model and scores the version's held-out images.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

import lvkit
from lvkit import eval as lve

README = Path(__file__).resolve().parents[1] / "README.md"


def evaluation_snippet() -> str:
    section = README.read_text().split("## Evaluation", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


@pytest.mark.slow
def test_readme_evaluation_snippet_runs_as_written(anomalib_home, tiny_benchmark):
    code = (evaluation_snippet()
            .replace("lvkit.client()", f"lvkit.client({str(anomalib_home)!r})")
            .replace('"lvkit-demo/data/brick"', repr(str(tiny_benchmark)))
            .replace('"demo-brick"', '"brick"'))
    scope: dict = {"lvkit": lvkit}
    before = lvkit.client(anomalib_home)
    if before.describe_model(ProjectName="brick", ModelVersion="1")["ModelDescription"]["Status"] == "HOSTED":
        before.stop_model(ProjectName="brick", ModelVersion="1")  # the README starts from a stopped model
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            exec(compile(code, "README.md", "exec"), scope)
        # the tiny benchmark holds a handful of held-out images: the reports must say so, and
        # nothing else may warn (a temperature fit at its bound may, on so few images)
        kinds = {w.category for w in caught}
        assert lve.CoverageWarning in kinds, [str(w.message) for w in caught]
        assert kinds <= {lve.CoverageWarning, lve.CalibrationFitWarning}, [str(w.message) for w in caught]
        df, test, ds = scope["df"], scope["test"], scope["ds"]
        assert df.attrs["errors"] == 0 and df["error"].isna().all()
        with pytest.warns(lve.CoverageWarning):
            metrics = lve.image_metrics(df)
        assert 0.0 <= metrics["auroc"] <= 1.0  # a number, not NaN
        validation = set(scope["lv"].service.version_splits("brick", "1")["validation"])
        assert len(test) < len(ds.split("test").samples)  # the held-out part only
        assert not validation & set(df["path"])  # none of the images that chose the thresholds
    finally:
        lvkit.client(anomalib_home).stop_model(ProjectName="brick", ModelVersion="1")
