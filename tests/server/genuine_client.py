"""A program written for the real service, run by the genuine boto3/botocore 1.40.60.

Run by ``test_genuine_boto.py`` with that release's interpreter, against ``lvkit serve``:
``python genuine_client.py DARK.png BRIGHT.png``; the endpoint comes from
``AWS_ENDPOINT_URL_LOOKOUTVISION`` and the keys from the environment, as for any program.
Prints what it saw as JSON. Nothing in it knows about lvkit.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main(dark_path: str, bright_path: str) -> dict:
    import boto3
    import botocore
    from botocore.config import Config

    seen: dict = {"botocore": botocore.__version__}
    config = Config(retries={"total_max_attempts": 1})
    lv = boto3.client("lookoutvision", config=config)
    seen["endpoint"] = lv.meta.endpoint_url
    # the first data folder holding the model is where it came from: it must be botocore's own
    seen["model_from"] = next(p for p in lv._loader.search_paths if os.path.isdir(os.path.join(p, "lookoutvision")))

    seen["created"] = lv.create_project(ProjectName="genuine", ClientToken="genuine-1")["ProjectMetadata"][
        "ProjectName"]
    seen["created_again"] = lv.create_project(ProjectName="genuine", ClientToken="genuine-1")["ProjectMetadata"][
        "ProjectName"]
    seen["projects"] = [
        p["ProjectName"] for page in lv.get_paginator("list_projects").paginate() for p in page["Projects"]
    ]
    seen["models"] = [m["ModelVersion"] for m in lv.list_models(ProjectName="demo")["Models"]]
    d = lv.describe_model(ProjectName="demo", ModelVersion="1")["ModelDescription"]
    seen["status_before"] = d["Status"]
    seen["created_is_datetime"] = type(d["CreationTimestamp"]).__name__

    dark, bright = open(dark_path, "rb").read(), open(bright_path, "rb").read()
    try:
        lv.detect_anomalies(ProjectName="demo", ModelVersion="1", ContentType="image/png", Body=dark)
    except lv.exceptions.ConflictException as e:
        seen["conflict"] = [e.response["Error"]["Code"], e.response["ResourceType"]]

    seen["start"] = lv.start_model(ProjectName="demo", ModelVersion="1", MinInferenceUnits=1)["Status"]
    lv.start_model(ProjectName="demo", ModelVersion="latest", MinInferenceUnits=1, MaxInferenceUnits=2)
    for version in ("1", "2"):
        for _ in range(1000):
            status = lv.describe_model(ProjectName="demo", ModelVersion=version)["ModelDescription"]["Status"]
            if status != "STARTING_HOSTING":
                break
            time.sleep(0.02)
        seen[f"status_{version}"] = status

    result = lv.detect_anomalies(ProjectName="demo", ModelVersion="1", ContentType="image/png", Body=bright)
    r = result["DetectAnomalyResult"]
    seen["bright"] = [r["IsAnomalous"], [a["Name"] for a in r["Anomalies"]], r["AnomalyMask"][:8].hex()]
    r = lv.detect_anomalies(ProjectName="demo", ModelVersion="latest", ContentType="image/png", Body=dark)
    seen["dark_latest"] = sorted(r["DetectAnomalyResult"])
    try:
        lv.describe_model(ProjectName="nope", ModelVersion="1")
    except lv.exceptions.ResourceNotFoundException as e:
        seen["not_found"] = [e.response["ResourceId"], e.response["ResourceType"], e.response["Error"]["Message"]]
    try:
        lv.detect_anomalies(ProjectName="demo", ModelVersion="1", ContentType="image/gif", Body=dark)
    except lv.exceptions.ValidationException as e:
        seen["validation"] = e.response["Error"]["Message"]
    arn = d["ModelArn"]
    lv.tag_resource(ResourceArn=arn, Tags=[{"Key": "line", "Value": "7"}])
    seen["tags"] = lv.list_tags_for_resource(ResourceArn=arn)["Tags"]
    lv.untag_resource(ResourceArn=arn, TagKeys=["line"])
    seen["stop"] = lv.stop_model(ProjectName="demo", ModelVersion="1")["Status"]

    bad = boto3.client("lookoutvision", config=config, aws_access_key_id="AKIDNOBODY", aws_secret_access_key="x")
    try:
        bad.list_projects()
    except bad.exceptions.AccessDeniedException as e:
        seen["denied"] = e.response["ResponseMetadata"]["HTTPStatusCode"]
    return seen


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
