"""SigV4 verification of incoming requests, with botocore's own signing code.

The server rebuilds the request as the client signed it (method, the path and query exactly
as sent, the signed headers, the body) in a ``botocore.awsrequest.AWSRequest``, computes the
signature with ``botocore.auth.SigV4Auth`` and the secret of the access key named in the
``Authorization`` header, and compares with ``hmac.compare_digest``. Refusals are
AccessDeniedException (403): no or malformed Authorization, unknown access key, a date more
than 15 minutes from the server's clock, a credential scope for another service or date, a
payload hash that does not match the body, a wrong signature.

Choices: any region in the credential scope is accepted (the signature covers it);
``UNSIGNED-PAYLOAD`` is refused; presigned URLs (query-string auth) are not supported.

Credentials come from a file (:func:`load_credentials`): the AWS shared-credentials INI format
(every section with ``aws_access_key_id`` and ``aws_secret_access_key``) or lines
``ACCESS_KEY_ID:SECRET``; or from ``$LVKIT_ACCESS_KEYS`` (``ID:SECRET,ID:SECRET``).

Imports ``lvkit.errors`` and botocore only.
"""

from __future__ import annotations

import configparser
import datetime as dt
import hashlib
import hmac
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from lvkit.errors import AccessDeniedException

__all__ = ["SigV4Verifier", "load_credentials"]

#: how far a request's date may be from the server's clock
MAX_SKEW_SECONDS = 15 * 60

_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=([^/\s,]+)/(\d{8})/([^/\s,]+)/([^/\s,]+)/aws4_request\s*,\s*"
    r"SignedHeaders=([a-z0-9\-;]+)\s*,\s*Signature=([0-9a-f]{64})$"
)


def load_credentials(path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None
                     ) -> dict[str, str]:
    """Access key id -> secret, from a credentials file and/or ``$LVKIT_ACCESS_KEYS``.

    Examples
    --------
    >>> load_credentials(env={"LVKIT_ACCESS_KEYS": "AKIDEXAMPLE:secret1, AKID2:secret2"})
    {'AKIDEXAMPLE': 'secret1', 'AKID2': 'secret2'}
    """
    env = os.environ if env is None else env
    keys: dict[str, str] = {}
    if path is not None:
        text = Path(path).read_text()
        if re.search(r"^\s*\[", text, re.MULTILINE):
            parser = configparser.ConfigParser()
            parser.read_string(text)
            for section in parser.sections():
                kid = parser[section].get("aws_access_key_id")
                secret = parser[section].get("aws_secret_access_key")
                if kid and secret:
                    keys[kid.strip()] = secret.strip()
        else:
            for line in text.splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    kid, sep, secret = line.partition(":")
                    if not sep or not kid.strip() or not secret.strip():
                        raise ValueError(f"{path}: expected lines ACCESS_KEY_ID:SECRET, got {line[:20]!r}...")
                    keys[kid.strip()] = secret.strip()
        if not keys:
            raise ValueError(f"{path}: no access keys found")
    for pair in filter(None, (p.strip() for p in env.get("LVKIT_ACCESS_KEYS", "").split(","))):
        kid, sep, secret = pair.partition(":")
        if not sep or not kid or not secret:
            raise ValueError("LVKIT_ACCESS_KEYS must be ID:SECRET[,ID:SECRET...]")
        keys[kid] = secret
    return keys


@dataclass(frozen=True, slots=True)
class _Authorization:
    access_key: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    timestamp: str


class SigV4Verifier:
    """Checks SigV4 signatures against a set of access keys.

    Parameters
    ----------
    credentials : mapping
        Access key id -> secret access key.
    service : str, default "lookoutvision"
        The signing name the credential scope must carry.
    clock : callable, default time.time
        Seconds since the epoch, for the date check.
    """

    def __init__(self, credentials: Mapping[str, str], *, service: str = "lookoutvision",
                 clock: Callable[[], float] = time.time) -> None:
        if not credentials:
            raise ValueError("expected at least one access key")
        self.credentials = dict(credentials)
        self.service = service
        self.clock = clock

    def precheck(self, headers: Mapping[str, str]) -> _Authorization:
        """Check what needs no body: the Authorization header, the key, the date."""
        header = headers.get("authorization")
        if not header:
            raise AccessDeniedException("the request is not signed: this server requires SigV4 "
                                        "(configure AWS credentials in the client)")
        match = _AUTH.match(header.strip())
        if match is None:
            raise AccessDeniedException("the Authorization header is not a SigV4 (AWS4-HMAC-SHA256) signature")
        key, date, region, service, signed, signature = match.groups()
        if key not in self.credentials:
            raise AccessDeniedException(f"the access key {key!r} is not known to this server")
        if service != self.service:
            raise AccessDeniedException(f"the credential scope names service {service!r}, expected {self.service!r}")
        timestamp = headers.get("x-amz-date", "")
        try:
            when = dt.datetime.strptime(timestamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
        except ValueError:
            raise AccessDeniedException("X-Amz-Date is missing or not YYYYMMDDTHHMMSSZ") from None
        skew = abs(when.timestamp() - self.clock())
        if skew > MAX_SKEW_SECONDS:
            raise AccessDeniedException(
                f"Signature expired: the request was signed at {timestamp}, {skew / 60:.0f} minutes from the "
                f"server's time; the limit is {MAX_SKEW_SECONDS // 60} minutes")
        if timestamp[:8] != date:
            raise AccessDeniedException("the credential scope's date is not the date of X-Amz-Date")
        names = tuple(signed.split(";"))
        if "host" not in names or "x-amz-date" not in names:
            raise AccessDeniedException("the signature must cover the host and x-amz-date headers")
        return _Authorization(key, date, region, service, names, signature, timestamp)

    def verify(self, auth: _Authorization, *, method: str, url: str, headers: Sequence[tuple[str, str]],
               body: bytes) -> None:
        """Recompute the signature of the request as sent; AccessDeniedException when it differs.

        ``url`` is ``http://host`` plus the path and query string exactly as they came over
        the wire (still percent-encoded); ``headers`` are all the request's (name, value) pairs.
        """
        signed = [(name.lower(), value) for name, value in headers if name.lower() in auth.signed_headers]
        missing = set(auth.signed_headers) - {name for name, _ in signed}
        if missing:
            raise AccessDeniedException(f"signed headers are missing from the request: {sorted(missing)}")
        declared = dict(signed).get("x-amz-content-sha256")
        if declared is not None and not hmac.compare_digest(declared, hashlib.sha256(body).hexdigest()):
            raise AccessDeniedException("X-Amz-Content-SHA256 does not match the body")
        request = AWSRequest(method=method, url=url, data=body)
        for name, value in signed:
            request.headers[name] = value  # an HTTPMessage: repeated names keep every value
        request.context["timestamp"] = auth.timestamp
        signer = SigV4Auth(Credentials(auth.access_key, self.credentials[auth.access_key]), auth.service,
                           auth.region)
        expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
        if not hmac.compare_digest(expected, auth.signature):
            raise AccessDeniedException(
                "the request signature does not match: check the secret access key and signing method")
