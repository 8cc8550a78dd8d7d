"""``lvkit serve`` as a real process (through ``lvkit.serving``): starts on loopback, stops on
SIGINT with status 0, hosts again after a restart, checks SigV4 with a credentials file."""

from __future__ import annotations

import pytest

import lvkit
from tests.server.conftest import KEY_ID, SECRET, boto, host, wait_status

pytestmark = pytest.mark.server


def test_serve_stop_and_restart(demo_home, dark):
    with lvkit.serving(demo_home, wait_hosted=False) as first:
        lv = boto(first.url)
        host(lv, "1", MinInferenceUnits=1, MaxInferenceUnits=2)
        assert lv.detect_anomalies(ProjectName="demo", ModelVersion="1", ContentType="image/png",
                                   Body=dark)["DetectAnomalyResult"]["IsAnomalous"] is False
    assert first.process.returncode == 0
    out = first.log_tail()
    assert f"http://127.0.0.1:{first.port}" in out and "SigV4 off" in out

    with lvkit.serving(demo_home, wait_hosted=False) as second:
        lv = boto(second.url)
        assert wait_status(lv, "1") == "HOSTED"
        d = lv.describe_model(ProjectName="demo", ModelVersion="1")["ModelDescription"]
        assert (d["MinInferenceUnits"], d["MaxInferenceUnits"]) == (1, 2)
        assert lv.detect_anomalies(ProjectName="demo", ModelVersion="1", ContentType="image/png",
                                   Body=dark)["DetectAnomalyResult"]["IsAnomalous"] is False
    assert second.process.returncode == 0


def test_serve_with_a_credentials_file(demo_home, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text(f"{KEY_ID}:{SECRET}\n")
    with lvkit.serving(demo_home, credentials=keys) as server:
        assert [p["ProjectName"] for p in boto(server.url).list_projects()["Projects"]] == ["demo"]
        lv = boto(server.url, aws_access_key_id=KEY_ID, aws_secret_access_key="nope")
        with pytest.raises(lv.exceptions.AccessDeniedException):
            lv.list_projects()
    assert server.process.returncode == 0 and "SigV4 on, 1 key(s)" in server.log_tail()
