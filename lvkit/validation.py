"""Field rules of the API (lengths, patterns, ranges), each failure a ValidationException.

Imports ``lvkit.errors`` only.
"""

from __future__ import annotations

import base64
import re
import unicodedata

from lvkit.errors import ValidationException

__all__ = [
    "INT32_MAX",
    "MAX_TAGS",
    "check_client_token",
    "check_dataset_source",
    "check_inference_units",
    "check_max_results",
    "check_project_name",
    "check_s3_location",
    "check_version",
    "check_tag_keys",
    "check_tags",
    "decode_next_token",
    "encode_next_token",
    "parse_resource_arn",
]

# fullmatch, never match with "$": "$" also matches before a final newline ("demo\n")
_PROJECT = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_\-]*")
_VERSION = re.compile(r"[1-9][0-9]*|latest")
_TOKEN = re.compile(r"[a-zA-Z0-9-]+")


def check_project_name(name: object, *, field: str = "ProjectName") -> str:
    """ProjectName: 1-255 characters, ``[a-zA-Z0-9][a-zA-Z0-9_\\-]*``.

    >>> check_project_name("demo-brick")
    'demo-brick'
    >>> check_project_name("-x")
    Traceback (most recent call last):
    ...
    lvkit.errors.ValidationException: ... ProjectName '-x' is invalid: ...
    """
    if not isinstance(name, str) or not 1 <= len(name) <= 255:
        got = f"{len(name)} characters" if isinstance(name, str) else type(name).__name__
        raise ValidationException(f"{field} must be 1 to 255 characters long, got {got}")
    if not _PROJECT.fullmatch(name):
        raise ValidationException(
            f"{field} {name[:64]!r} is invalid: it must start with a letter or digit and contain only "
            "ASCII letters, digits, '_' and '-'"
        )
    return name


def check_version(version: object, *, field: str = "ModelVersion") -> str:
    """ModelVersion: 1-10 characters, a positive integer without leading zeros, or ``latest``.

    >>> check_version("latest"), check_version("12")
    ('latest', '12')
    """
    if not isinstance(version, str) or not 1 <= len(version) <= 10:
        got = f"{len(version)} characters" if isinstance(version, str) else type(version).__name__
        raise ValidationException(f"{field} must be 1 to 10 characters long, got {got}")
    if not _VERSION.fullmatch(version):
        raise ValidationException(
            f"{field} {version!r} is invalid: expected a positive integer without leading zeros "
            "(1, 2, ...) or 'latest'"
        )
    return version


def check_client_token(token: object) -> str | None:
    """ClientToken: optional, 1-64 characters ``[a-zA-Z0-9-]``."""
    if token is None:
        return None
    if not isinstance(token, str) or not 1 <= len(token) <= 64 or not _TOKEN.fullmatch(token):
        raise ValidationException("ClientToken must be 1 to 64 characters of ASCII letters, digits and '-'")
    return token


#: the API's Integer type is 32-bit: larger numbers are not InferenceUnits at all (400)
INT32_MAX = 2**31 - 1


def check_inference_units(min_units: object, max_units: object) -> tuple[int, int | None]:
    """MinInferenceUnits >= 1 (required); MaxInferenceUnits >= MinInferenceUnits (optional).

    Both are the API's 32-bit Integer; a count within it but beyond the server's quota is the
    service's ServiceQuotaExceededException (402), checked by the service.

    >>> check_inference_units(2**40, None)
    Traceback (most recent call last):
    ...
    lvkit.errors.ValidationException: ... MinInferenceUnits must be an integer from 1 to 2147483647, got 1099511627776
    """
    if isinstance(min_units, bool) or not isinstance(min_units, int) or not 1 <= min_units <= INT32_MAX:
        raise ValidationException(f"MinInferenceUnits must be an integer from 1 to {INT32_MAX}, got {min_units!r}")
    if max_units is not None:
        if isinstance(max_units, bool) or not isinstance(max_units, int) or not min_units <= max_units <= INT32_MAX:
            raise ValidationException(
                f"MaxInferenceUnits must be an integer from MinInferenceUnits ({min_units}) to {INT32_MAX}, "
                f"got {max_units!r}"
            )
    return min_units, max_units


def check_max_results(max_results: object) -> int:
    """MaxResults: 1-100; None means 100."""
    if max_results is None:
        return 100
    if isinstance(max_results, bool) or not isinstance(max_results, int) or not 1 <= max_results <= 100:
        raise ValidationException(f"MaxResults must be an integer from 1 to 100, got {max_results!r}")
    return max_results


def encode_next_token(offset: int) -> str:
    """An opaque NextToken for a list offset."""
    return base64.urlsafe_b64encode(f"lvkit:{offset}".encode()).decode()


def decode_next_token(token: object) -> int:
    """The list offset of a NextToken from :func:`encode_next_token`; 0 for None."""
    if token is None:
        return 0
    try:
        assert isinstance(token, str) and 1 <= len(token) <= 2048
        prefix, offset = base64.urlsafe_b64decode(token.encode()).decode().split(":")
        assert prefix == "lvkit" and int(offset) >= 0
        return int(offset)
    except Exception as exc:  # any malformed token is the caller's error
        raise ValidationException(f"NextToken {str(token)[:64]!r} is not a token lvkit returned") from exc


#: most tags on one resource
MAX_TAGS = 200
_TAG_PUNCTUATION = frozenset("_.:/=+-@")
_ARN = re.compile(r"arn:aws:lookoutvision:([^:]*):([^:]*):(?:project/([^/]+)|model/([^/]+)/([^/]+))")
_ARN_VERSION = re.compile(r"[1-9][0-9]{0,9}", re.ASCII)


def _tag_text(text: str) -> bool:
    """The contract's tag pattern ``^([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)$``: letters, separators, numbers
    and ``_.:/=+-@``. Control characters (``\\n``, ``\\t``) are refused; the line and paragraph
    separators U+2028/U+2029 are in ``\\p{Z}`` and so, to the letter of the pattern, allowed."""
    return all(c in _TAG_PUNCTUATION or unicodedata.category(c)[0] in "LZN" for c in text)


def check_tag_key(key: object) -> str:
    """TagKey: 1-128 characters of the tag pattern, not starting ``aws:``.

    >>> check_tag_key("line\\n")
    Traceback (most recent call last):
    ...
    lvkit.errors.ValidationException: ... tag key 'line\\n' is invalid: ...
    """
    if not isinstance(key, str) or not 1 <= len(key) <= 128 or not _tag_text(key):
        raise ValidationException(f"tag key {str(key)[:64]!r} is invalid: 1 to 128 letters, numbers, spaces "
                                  "and _.:/=+-@ (no control characters)")
    if key.lower().startswith("aws:"):
        raise ValidationException(f"tag key {key[:64]!r} is invalid: the prefix 'aws:' is reserved")
    return key


def check_tags(tags: object) -> dict[str, str]:
    """Tags: at most :data:`MAX_TAGS`, each key a TagKey and each value 0-256 characters of the pattern."""
    if not isinstance(tags, dict) or len(tags) > MAX_TAGS:
        raise ValidationException(f"Tags must hold 0 to {MAX_TAGS} tags")
    for key, value in tags.items():
        check_tag_key(key)
        if not isinstance(value, str) or len(value) > 256 or not _tag_text(value):
            raise ValidationException(f"tag value {str(value)[:64]!r} is invalid: 0 to 256 letters, numbers, "
                                      "spaces and _.:/=+-@ (no control characters)")
    return tags


def check_tag_keys(keys: object) -> list[str]:
    """TagKeys (UntagResource): a list of at most :data:`MAX_TAGS` TagKeys."""
    if not isinstance(keys, list) or len(keys) > MAX_TAGS:
        raise ValidationException(f"TagKeys must hold 0 to {MAX_TAGS} keys")
    for key in keys:
        check_tag_key(key)
    return keys


def parse_resource_arn(arn: object) -> tuple[str, str, str, str, str | None]:
    """A project or model ARN -> (region, account, "PROJECT"|"MODEL", project, version or None).

    The version is 1 to 10 ASCII digits: ``'١'`` or ``'²'`` are not version 1 or 2.

    >>> parse_resource_arn("arn:aws:lookoutvision:us-east-1:000000000000:model/demo/3")
    ('us-east-1', '000000000000', 'MODEL', 'demo', '3')
    """
    if not isinstance(arn, str) or not 1 <= len(arn) <= 1011:
        raise ValidationException("ResourceArn must be 1 to 1011 characters long")
    match = _ARN.fullmatch(arn)
    if match is None:
        raise ValidationException(f"ResourceArn {arn[:128]!r} is not a Lookout for Vision project or model ARN")
    region, account, project, model_project, version = match.groups()
    if project is not None:
        return region, account, "PROJECT", check_project_name(project), None
    if not _ARN_VERSION.fullmatch(version):
        raise ValidationException(f"a model ARN names a version number (1 to 10 ASCII digits), got {version[:32]!r}")
    return region, account, "MODEL", check_project_name(model_project), version


_BUCKET = re.compile(r"[0-9A-Za-z.\-_]{3,63}")
_KEY = re.compile(r"[a-zA-Z0-9!_.*'()-][/a-zA-Z0-9!_.*'()-]*")


def _s3_name(value: object, field: str, *, key: bool, empty: bool = False) -> str:
    if value is None and empty:
        return ""
    if not isinstance(value, str):
        raise ValidationException(f"{field} must be a string, got {type(value).__name__}")
    if value == "" and empty:
        return value
    if key and (len(value) > 1024 or not _KEY.fullmatch(value)):
        raise ValidationException(f"{field} {value[:64]!r} is invalid: at most 1024 characters of letters, digits, "
                                  "'/' and !_.*'()- , not starting with '/'")
    if not key and not _BUCKET.fullmatch(value):
        raise ValidationException(f"{field} {value[:64]!r} is not a bucket name: 3 to 63 letters, digits, '.', '-' "
                                  "and '_'")
    return value


def check_dataset_source(source: object) -> tuple[str, str, str | None] | None:
    """CreateDataset's DatasetSource -> (bucket, key, version id), or None without one.

    >>> check_dataset_source({"GroundTruthManifest": {"S3Object": {"Bucket": "lines", "Key": "a/train.manifest"}}})
    ('lines', 'a/train.manifest', None)
    """
    if source is None:
        return None
    manifest = source.get("GroundTruthManifest") if isinstance(source, dict) else None
    s3 = manifest.get("S3Object") if isinstance(manifest, dict) else None
    if not isinstance(s3, dict):
        raise ValidationException('DatasetSource must be {"GroundTruthManifest": {"S3Object": {"Bucket": ..., '
                                  '"Key": ...}}}')
    version = s3.get("VersionId")
    if version is not None and (not isinstance(version, str) or not 1 <= len(version) <= 1024):
        raise ValidationException("DatasetSource VersionId must be 1 to 1024 characters")
    return (_s3_name(s3.get("Bucket"), "DatasetSource Bucket", key=False),
            _s3_name(s3.get("Key"), "DatasetSource Key", key=True), version)


def check_s3_location(location: object, field: str) -> tuple[str, str]:
    """An ``S3Location`` (``{"Bucket": ..., "Prefix": ...}``) -> (bucket, prefix); the prefix may be empty.

    >>> check_s3_location({"Bucket": "out", "Prefix": "runs/"}, "OutputConfig")
    ('out', 'runs/')
    """
    if not isinstance(location, dict) or "Bucket" not in location or set(location) - {"Bucket", "Prefix"}:
        raise ValidationException(f'{field} S3Location must be {{"Bucket": ..., "Prefix": ...}}')
    return (_s3_name(location["Bucket"], f"{field} Bucket", key=False),
            _s3_name(location.get("Prefix"), f"{field} Prefix", key=True, empty=True))
