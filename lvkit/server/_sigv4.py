"""SigV4 verification of incoming requests, with botocore's own signing code.

The server rebuilds the request as the client signed it (method, the path and query exactly
as sent, the signed headers, the body) in a ``botocore.awsrequest.AWSRequest``, computes the
signature with ``botocore.auth.SigV4Auth`` and the secret of the access key named in the
``Authorization`` header, and compares with ``hmac.compare_digest``. Refusals are
AccessDeniedException (403): no or malformed Authorization, unknown access key, a date more
than 15 minutes from the server's clock, a credential scope for another service or date, a
payload hash that does not match the body, a wrong signature. An unknown access key, a payload
hash that does not match and a wrong signature get the same message at the same point (after
the body is read: an unknown key goes through the same size, budget and body checks as a known
one), so neither the answer nor its status tells a client which keys exist; the server's log
(logger ``lvkit.server``) says which it was, with the request id.

Choices: any region in the credential scope is accepted (the signature covers it);
``UNSIGNED-PAYLOAD`` is refused; presigned URLs (query-string auth) are not supported.

Credentials come from a file (:func:`load_credentials`): the AWS shared-credentials INI format
(every section with ``aws_access_key_id`` and ``aws_secret_access_key``) or lines
``ACCESS_KEY_ID:SECRET``; or from ``$LVKIT_ACCESS_KEYS`` (``ID:SECRET,ID:SECRET``). Errors
in them name the line, never its content (a secret may be on it).

Imports ``lvkit.errors`` and botocore only.
"""

from __future__ import annotations

import configparser
import datetime as dt
import hashlib
import hmac
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from lvkit.errors import AccessDeniedException

__all__ = ["SigV4Verifier", "load_credentials"]

logger = logging.getLogger("lvkit.server")

#: how far a request's date may be from the server's clock
MAX_SKEW_SECONDS = 15 * 60
#: the answer to an unknown access key and to a wrong signature alike
BAD_SIGNATURE = ("the request signature does not match: check the access key id, the secret access key "
                 "and the signing method")

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
        try:
            text = Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{path}: not UTF-8 text") from None
        if re.search(r"^\s*\[", text, re.MULTILINE):
            parser = configparser.ConfigParser(interpolation=None)  # a '%' in a secret is a '%'
            try:
                parser.read_string(text)
            except configparser.Error as exc:  # its message quotes the line: say where, not what
                raise ValueError(f"{path}: not a credentials INI file ({type(exc).__name__}"
                                 f"{_ini_line(exc)})") from None
            for section in parser.sections():
                kid = parser[section].get("aws_access_key_id")
                secret = parser[section].get("aws_secret_access_key")
                if kid and secret:
                    keys[kid.strip()] = secret.strip()
        else:
            for number, line in enumerate(text.splitlines(), 1):
                line = line.strip()
                if line and not line.startswith("#"):
                    kid, sep, secret = line.partition(":")
                    if not sep or not kid.strip() or not secret.strip():
                        raise ValueError(f"{path}: line {number} is not of the form ACCESS_KEY_ID:SECRET")
                    keys[kid.strip()] = secret.strip()
        if not keys:
            raise ValueError(f"{path}: no access keys found")
    for pair in filter(None, (p.strip() for p in env.get("LVKIT_ACCESS_KEYS", "").split(","))):
        kid, sep, secret = pair.partition(":")
        if not sep or not kid or not secret:
            raise ValueError("LVKIT_ACCESS_KEYS must be ID:SECRET[,ID:SECRET...]")
        keys[kid] = secret
    return keys


def _ini_line(exc: configparser.Error) -> str:
    """`` at line N`` for a configparser error that knows its line."""
    errors = getattr(exc, "errors", None)  # ParsingError: [(lineno, line), ...]
    number = errors[0][0] if errors else getattr(exc, "lineno", None)
    return f" at line {number}" if isinstance(number, int) else ""


@dataclass(frozen=True, slots=True)
class _Authorization:
    access_key: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    timestamp: str
    known: bool = True  # False: an unknown key, refused by verify() exactly like a wrong signature


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
        self._decoy = secrets.token_hex(20)
        self.service = service
        self.clock = clock

    def precheck(self, headers: Mapping[str, str], *, request_id: str = "-") -> _Authorization:
        """Check what needs no body: the Authorization header and the date. Whether the key is
        known is :meth:`verify`'s answer, after the body, the same as for a wrong signature.

        ``request_id`` only labels the server's log line for a refused request.
        """
        header = headers.get("authorization")
        if not header:
            raise AccessDeniedException("the request is not signed: this server requires SigV4 "
                                        "(configure AWS credentials in the client)")
        match = _AUTH.match(header.strip())
        if match is None:
            raise AccessDeniedException("the Authorization header is not a SigV4 (AWS4-HMAC-SHA256) signature")
        key, date, region, service, signed, signature = match.groups()
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
        missing = [name for name in names if name not in headers]
        if missing:
            raise AccessDeniedException(f"signed headers are missing from the request: {sorted(missing)}")
        # an unknown key goes on as far as a known one (body limits, budget, reading the body) and
        # is refused by verify() with the same answer as a wrong signature: no answer, status or
        # timing before the body tells a caller whether a key exists
        return _Authorization(key, date, region, service, names, signature, timestamp, key in self.credentials)

    def verify(self, auth: _Authorization, *, method: str, url: str, headers: Sequence[tuple[str, str]],
               body: bytes, request_id: str = "-") -> None:
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
            logger.warning("request %s: SigV4 refused: X-Amz-Content-SHA256 does not match the body", request_id)
            raise AccessDeniedException(BAD_SIGNATURE)
        request = AWSRequest(method=method, url=url, data=body)
        for name, value in signed:
            request.headers[name] = value  # an HTTPMessage: repeated names keep every value
        request.context["timestamp"] = auth.timestamp
        secret = self.credentials.get(auth.access_key, self._decoy)  # the same work for an unknown key
        signer = SigV4Auth(Credentials(auth.access_key, secret), auth.service, auth.region)
        expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
        if not auth.known:
            logger.warning("request %s: SigV4 refused: the access key %r is not known", request_id, auth.access_key)
            raise AccessDeniedException(BAD_SIGNATURE)
        if not hmac.compare_digest(expected, auth.signature):
            logger.warning("request %s: SigV4 refused: a wrong signature for the access key %r", request_id,
                           auth.access_key)
            raise AccessDeniedException(BAD_SIGNATURE)
