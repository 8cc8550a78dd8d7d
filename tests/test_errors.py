"""The error tree: codes, statuses and members as the contract's table says."""

from __future__ import annotations

import pickle

import pytest
from botocore.exceptions import ClientError

import lvkit
from lvkit.errors import API_ERRORS

TABLE = {
    "ValidationException": (400, set()),
    "AccessDeniedException": (403, set()),
    "ResourceNotFoundException": (404, {"ResourceId", "ResourceType"}),
    "ConflictException": (409, {"ResourceId", "ResourceType"}),
    "ThrottlingException": (429, {"QuotaCode", "ServiceCode", "RetryAfterSeconds"}),
    "ServiceQuotaExceededException": (402, {"QuotaCode", "ServiceCode", "ResourceId", "ResourceType"}),
    "InternalServerException": (500, {"RetryAfterSeconds"}),
}


@pytest.mark.parametrize("code", sorted(TABLE))
def test_codes_statuses_members(code):
    cls = API_ERRORS[code]
    assert cls.__name__ == code and cls.code == code
    assert cls.http_status == TABLE[code][0]
    assert set(cls.members.values()) == TABLE[code][1]
    assert issubclass(cls, ClientError) and issubclass(cls, lvkit.LvkitError)


def test_response_dict_like_boto3():
    exc = lvkit.ResourceNotFoundException("project 'x' does not exist", resource_id="x", resource_type="PROJECT")
    assert exc.response["Error"] == {"Code": "ResourceNotFoundException", "Message": "project 'x' does not exist"}
    assert exc.response["ResourceId"] == "x" and exc.response["ResourceType"] == "PROJECT"
    assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert str(exc.with_operation("DescribeProject")).startswith(
        "An error occurred (ResourceNotFoundException) when calling the DescribeProject operation")


def test_unknown_member_rejected():
    with pytest.raises(TypeError):
        lvkit.ValidationException("x", resource_id="y")


def test_picklable():
    exc = lvkit.ThrottlingException("busy", retry_after_seconds=2)
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is lvkit.ThrottlingException and back.retry_after_seconds == 2
    assert back.response["ResponseMetadata"]["HTTPHeaders"]["retry-after"] == "2"
