"""SigV4: signatures checked with botocore's signer; 403 for unknown keys, bad signatures, old dates."""

from __future__ import annotations

import time

import pytest
from botocore import UNSIGNED
from botocore.config import Config
from click.testing import CliRunner

import lvkit
from lvkit.cli import main
from lvkit.server import check_bind, load_credentials
from tests.server.conftest import KEY_ID, SECRET, boto, host, serving_service

pytestmark = pytest.mark.server


@pytest.fixture
def secured(demo_home, start_server):
    return start_server(serving_service(demo_home), credentials={KEY_ID: SECRET, "AKIDOTHER": "other-secret"})


def refused(lv, needle, call=None):
    with pytest.raises(lv.exceptions.AccessDeniedException) as info:
        (call or (lambda: lv.list_projects()))()
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert needle in info.value.response["Error"]["Message"]


def test_signed_requests_are_accepted(secured, dark):
    lv = boto(secured.url)  # keys from the environment
    host(lv, "1")
    r = lv.detect_anomalies(ProjectName="demo", ModelVersion="1", ContentType="image/png", Body=dark)
    assert r["DetectAnomalyResult"]["IsAnomalous"] is False  # a signed binary body
    arn = lv.describe_model(ProjectName="demo", ModelVersion="1")["ModelDescription"]["ModelArn"]
    lv.tag_resource(ResourceArn=arn, Tags=[{"Key": "k", "Value": "v w"}])  # a percent-encoded path
    lv.untag_resource(ResourceArn=arn, TagKeys=["k", "x y"])  # a repeated query parameter
    other = boto(secured.url, aws_access_key_id="AKIDOTHER", aws_secret_access_key="other-secret",
                 region_name="eu-west-1")  # any key of the file, any region in the scope
    assert other.list_tags_for_resource(ResourceArn=arn)["Tags"] == []
    pages = list(lv.get_paginator("list_models").paginate(ProjectName="demo", PaginationConfig={"PageSize": 1}))
    assert len(pages) == 2  # nextToken in the signed query


def test_wrong_secret_unknown_key_and_unsigned_are_refused(secured, caplog):
    refused(boto(secured.url, aws_access_key_id=KEY_ID, aws_secret_access_key="wrong"), "signature does not match")
    refused(boto(secured.url, aws_access_key_id="AKIDNOBODY", aws_secret_access_key=SECRET), "signature does not match")
    refused(boto(secured.url, config=Config(signature_version=UNSIGNED)), "not signed")
    logged = [r.getMessage() for r in caplog.records if "SigV4 refused" in r.getMessage()]
    assert "wrong signature for the access key 'AKIDLVKITTEST'" in logged[0]
    assert "the access key 'AKIDNOBODY' is not known" in logged[1]


def test_old_dates_are_refused(secured):
    verifier = secured.server.config.app.state.lvkit.verifier
    verifier.clock = lambda: time.time() + 16 * 60  # the request looks 16 minutes old
    refused(boto(secured.url), "Signature expired")
    verifier.clock = lambda: time.time() + 14 * 60
    assert boto(secured.url).list_projects()["Projects"]


def test_a_body_changed_after_signing_is_refused(secured, dark, bright):
    lv = boto(secured.url)
    host(lv, "1")

    def tamper(request, **kwargs):
        request.body = bright
        request.headers["Content-Length"] = str(len(bright))

    lv.meta.events.register("before-send.lookoutvision.DetectAnomalies", tamper)
    refused(lv, "signature does not match", lambda: lv.detect_anomalies(
        ProjectName="demo", ModelVersion="1", ContentType="image/png", Body=dark))


def test_loopback_only_without_credentials():
    for host_ in ("127.0.0.1", "127.8.9.1", "::1", "localhost"):
        check_bind(host_, has_credentials=False)
    for host_ in ("0.0.0.0", "::", "192.0.2.7", "example.com"):
        with pytest.raises(lvkit.LvkitError, match="refusing to serve"):
            check_bind(host_, has_credentials=False)
        check_bind(host_, has_credentials=True)
        check_bind(host_, has_credentials=False, insecure=True)
    result = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0", "--port", "1"])
    assert result.exit_code == 1 and "refusing to serve 0.0.0.0 without credentials" in result.output


def test_credentials_files(tmp_path, monkeypatch):
    ini = tmp_path / "credentials"
    ini.write_text("[default]\naws_access_key_id = AKID1\naws_secret_access_key = s1\n"
                   "[ci]\naws_access_key_id=AKID2\naws_secret_access_key=s2\n[empty]\nregion=x\n")
    assert load_credentials(ini, env={}) == {"AKID1": "s1", "AKID2": "s2"}
    lines = tmp_path / "keys.txt"
    lines.write_text("# id:secret\nAKID3:s3\n\nAKID4 : s4\n")
    assert load_credentials(lines, env={"LVKIT_ACCESS_KEYS": "AKID5:s5"}) == {
        "AKID3": "s3", "AKID4": "s4", "AKID5": "s5"
    }
    bad = tmp_path / "bad.txt"
    bad.write_text("AKID-without-secret\n")
    with pytest.raises(ValueError, match="ACCESS_KEY_ID:SECRET"):
        load_credentials(bad, env={})
    assert load_credentials(None, env={}) == {}
    result = CliRunner().invoke(main, ["serve", "--credentials", str(bad)])
    assert result.exit_code != 0 and "ACCESS_KEY_ID:SECRET" in result.output
