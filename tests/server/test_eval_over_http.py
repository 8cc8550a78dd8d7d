"""lvkit.eval.run gives the same table through boto3 + lvkit serve as in process (latency aside)."""

from __future__ import annotations

import warnings

import pandas as pd
import pytest

import lvkit
from lvkit import eval as lve
from tests.server.conftest import boto, wait_status

pytestmark = pytest.mark.server


def test_run_in_process_and_over_http_agree(live, demo_home, tmp_path):
    root = lvkit.datasets.generate(tmp_path / "bench", categories=("brick",), n_train=2, n_test_good=3,
                                   n_test_defect_per_type=2, image_size=64)
    test = lvkit.datasets.load(root / "brick").split("test")
    remote = boto(live.url)
    remote.start_model(ProjectName="demo", ModelVersion="1", MinInferenceUnits=1)
    assert wait_status(remote, "1") == "HOSTED"
    local = lvkit.client(demo_home)
    a = lve.run(local, test, project="demo", version="1", progress=False)
    b = lve.run(remote, test, project="demo", version="1", progress=False)
    assert a["error"].isna().all() and b["error"].isna().all()
    pd.testing.assert_frame_equal(a.drop(columns="latency_s"), b.drop(columns="latency_s"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lvkit.UndefinedMetricWarning)  # the fake rule may call nothing anomalous
        assert pd.Series(lve.image_metrics(a, ci=False)).equals(pd.Series(lve.image_metrics(b, ci=False)))
