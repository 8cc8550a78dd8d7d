"""Read and write ``s3://`` objects, ``file://`` URIs and local paths, streaming.

Owns: parsing and joining locations, resolving a manifest's relative references, the one S3
client of the process, and turning boto3 and file-system failures into :class:`StorageError`.
Imports ``lvkit.errors`` only; ``boto3`` is imported inside the functions that reach S3, so
``import lvkit`` stays light and local paths work without any AWS configuration.

S3 access goes through boto3's default chain and nothing of lvkit's own: credentials, region
and endpoint come from the environment (``AWS_PROFILE``, ``AWS_ACCESS_KEY_ID``,
``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``, ...) and from the shared config file, including
a profile's ``endpoint_url`` or its ``services`` section. So real S3, MinIO and other
S3-compatible servers work as the AWS CLI does. Servers that need path-style addressing want
``s3 =\\n  addressing_style = path`` in the profile; servers without the newer checksums want
``request_checksum_calculation = when_required`` (or the ``AWS_REQUEST_CHECKSUM_CALCULATION``
variable). The client's own settings are only a short connect timeout (5 s) and 3 attempts,
so an unreachable endpoint fails in seconds.

Nothing reads a whole object into memory except :func:`read_bytes`: reads go through a
1 MiB buffer. Local writes are atomic: a temporary file in the target's folder, whose name
starts with the target's name, then ``os.replace``; a failure leaves nothing at the target.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import secrets
import shutil
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Literal, TypeVar, cast

from botocore.exceptions import BotoCoreError, ClientError

from lvkit.errors import LvkitError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = [
    "StorageError",
    "check_bucket",
    "download",
    "exists",
    "is_s3",
    "iter_lines",
    "join",
    "open_read",
    "read_bytes",
    "resolve",
    "s3_client",
    "s3_uri",
    "split_s3",
    "upload_file",
    "write_bytes",
]

Reason = Literal["not_found", "no_bucket", "access_denied", "invalid", "unreachable", "too_large", "io"]
_T = TypeVar("_T")

#: bytes read from a source at a time
_CHUNK = 1 << 20
#: a URI scheme (two letters or more, so that ``C:`` stays a Windows drive)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+):")
#: the environment the S3 client is built from; a change rebuilds it
_CLIENT_ENV = (
    "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION",
)
_client_lock = threading.Lock()
_client_cache: tuple[str, Any] | None = None

_MISSING = {"NoSuchKey", "404", "NotFound"}
_DENIED = {"AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
           "InvalidToken", "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem", "RequestTimeTooSkewed"}
_INVALID = {"InvalidBucketName", "InvalidArgument", "KeyTooLongError"}
_CREDENTIALS_HINT = ("configure credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE "
                     "naming a profile of ~/.aws/config (see `aws configure`)")


class StorageError(LvkitError):
    """A location could not be read or written; ``str(exc)`` is ``"<uri>: <what was wrong>"``.

    Parameters
    ----------
    uri : str
        The location, as given (an ``s3://`` URI, a ``file://`` URI or a path).
    reason : {"not_found", "no_bucket", "access_denied", "invalid", "unreachable", "too_large", "io"}
        What kind of failure, for code to branch on.
    detail : str
        What was wrong, one sentence, without the location.
    """

    def __init__(self, uri: str, reason: Reason, detail: str) -> None:
        super().__init__(f"{uri}: {detail}")
        self.uri = uri
        self.reason: Reason = reason
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across worker processes
        return (type(self), (self.uri, self.reason, self.detail))


# --- locations ----------------------------------------------------------------------------------


def is_s3(uri: str) -> bool:
    """Whether ``uri`` is an ``s3://`` URI (the scheme in any case).

    >>> is_s3("s3://bucket/key"), is_s3("/data/train.manifest")
    (True, False)
    """
    return uri[:5].lower() == "s3://"


def s3_uri(bucket: str, key: str) -> str:
    """The URI ``s3://bucket/key``; the key is kept as given.

    >>> s3_uri("bucket", "datasets/train.manifest")
    's3://bucket/datasets/train.manifest'
    """
    if not bucket or "/" in bucket:
        raise StorageError(f"s3://{bucket}/{key}", "invalid", f"{bucket!r} is not a bucket name")
    return f"s3://{bucket}/{key}"


def split_s3(uri: str) -> tuple[str, str]:
    """``(bucket, key)`` of an ``s3://`` URI; the key is ``""`` for ``s3://bucket``.

    Raises
    ------
    StorageError
        ``reason="invalid"``: not an ``s3://`` URI, or no bucket.

    >>> split_s3("s3://bucket/a/b.png")
    ('bucket', 'a/b.png')
    """
    if not is_s3(uri):
        raise StorageError(uri, "invalid", "not an s3:// URI")
    bucket, _, key = uri[5:].partition("/")
    if not bucket:
        raise StorageError(uri, "invalid", "the URI names no bucket (s3://bucket/key)")
    return bucket, key


def resolve(ref: str, base: str | None = None) -> str:
    """A manifest's ``source-ref`` as an absolute location, relative ones against ``base``'s folder.

    Absolute references come back normalised: ``s3://`` URIs with a lower-case scheme and their
    key unchanged, ``file://`` URIs and absolute paths as a plain absolute path. A relative
    reference is joined to the folder holding ``base`` (the manifest's location: an ``s3://``
    prefix, a ``file://`` URI or a path); ``.`` and ``..`` parts are applied.

    Parameters
    ----------
    ref : str
        The reference as written in the manifest.
    base : str or None, default None
        The manifest's own location (None: relative references are refused).

    Raises
    ------
    StorageError
        ``reason="invalid"``: an empty reference, another scheme (``http:``, ``gs:``), a relative
        reference without a base, or ``..`` above the bucket.

    Examples
    --------
    >>> resolve("images/1.png", "s3://bucket/data/train.manifest")
    's3://bucket/data/images/1.png'
    >>> resolve("../masks/1.png", "/srv/data/train.manifest")
    '/srv/masks/1.png'
    >>> resolve("file:///srv/data/1.png")
    '/srv/data/1.png'
    """
    if not ref.strip():
        raise StorageError(ref, "invalid", "an empty reference")
    if is_s3(ref):
        bucket, key = split_s3(ref)
        return s3_uri(bucket, key)
    path = _local_path(ref)
    if os.path.isabs(path):
        return os.path.normpath(path)
    if base is None:
        raise StorageError(ref, "invalid", "a relative reference, and no manifest location to resolve it against")
    if not is_s3(base):
        return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(_local_path(base))), path))
    bucket, key = split_s3(base)
    parts = key.split("/")[:-1]
    for part in ref.split("/"):
        if part == "..":
            if not parts:
                raise StorageError(ref, "invalid", f"the reference goes above the bucket of {base}")
            parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return s3_uri(bucket, "/".join(parts))


def join(base: str, *parts: str) -> str:
    """``base`` and ``parts`` joined: S3 keys with one ``/`` between parts, local paths by ``os.path``.

    Slashes at the ends of each part are dropped (a part never restarts from the root), except
    a trailing one on the last part, which stays (a prefix). A ``file://`` base gives a path.

    >>> join("s3://bucket/prefix/", "/eval/", "result.json")
    's3://bucket/prefix/eval/result.json'
    >>> join("s3://bucket", "model.zip")
    's3://bucket/model.zip'
    >>> join("/out", "eval", "result.json")
    '/out/eval/result.json'
    """
    if is_s3(base):
        bucket, key = split_s3(base)
        pieces = [p.strip("/") for p in (key, *parts)]
        joined = "/".join(p for p in pieces if p)
        if parts and parts[-1].endswith("/") and joined:
            joined += "/"
        return s3_uri(bucket, joined)
    return os.path.join(_local_path(base), *(p.lstrip("/" + os.sep) for p in parts))


def _local_path(uri: str) -> str:
    """The path of a ``file://`` URI or a path; StorageError for any other scheme."""
    if not uri:
        raise StorageError(uri, "invalid", "an empty location")
    if uri[:5].lower() == "file:":
        parts = urllib.parse.urlsplit(uri)
        path = urllib.parse.unquote(parts.path)
        if parts.netloc not in ("", "localhost") or not path.startswith("/"):
            raise StorageError(uri, "invalid", "a file URI names an absolute local path: file:///abs/path")
        return path
    match = _SCHEME.match(uri)
    if match:
        raise StorageError(uri, "invalid", f"unsupported scheme {match.group(1)!r}: s3://, file:// or a path only")
    return uri


# --- the S3 client and its errors ---------------------------------------------------------------


def s3_client() -> Any:
    """The process's boto3 S3 client, from boto3's default chain (no endpoint of lvkit's own).

    One client, shared by all threads (boto3 clients are thread-safe), rebuilt when a variable of
    ``_CLIENT_ENV`` changes (the profile, config files, endpoints, keys, region). Its ``Config``
    sets ``connect_timeout=5``, ``read_timeout=60`` and 3 attempts in all (``standard`` retry
    mode); these override ``AWS_MAX_ATTEMPTS`` and the profile's own.

    Raises
    ------
    StorageError
        ``reason="access_denied"`` at the location ``s3://`` when the configuration cannot be
        used (``AWS_PROFILE`` names no profile, say).
    """
    try:
        return _client()
    except BotoCoreError as exc:
        raise _s3_error("s3://", "", exc) from exc


def _client() -> Any:
    global _client_cache
    env = "\0".join(f"{name}={os.environ.get(name)}" for name in _CLIENT_ENV)
    key = hashlib.sha256(env.encode("utf-8", "surrogatepass")).hexdigest()  # no secrets kept in the clear
    with _client_lock:
        if _client_cache is None or _client_cache[0] != key:
            import boto3
            from botocore.config import Config

            config = Config(connect_timeout=5, read_timeout=60, retries={"total_max_attempts": 3, "mode": "standard"})
            _client_cache = (key, boto3.session.Session().client("s3", config=config))
        return _client_cache[1]


def _s3(uri: str, call: Callable[[Any, str, str], _T], *, missing: Reason = "not_found") -> _T:
    """``call(client, bucket, key)`` with botocore's errors turned into StorageError."""
    bucket, key = split_s3(uri)
    try:
        return call(_client(), bucket, key)
    except (ClientError, BotoCoreError) as exc:
        raise _s3_error(uri, bucket, exc, missing=missing) from exc


def _s3_error(uri: str, bucket: str, exc: Exception, *, missing: Reason = "not_found") -> StorageError:
    from botocore import exceptions as bx

    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code", "")), str(error.get("Message", "")).rstrip(".")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        said = f"{code}: {message}" if message else code
        if code == "NoSuchBucket" or (missing == "no_bucket" and status == 404):
            return StorageError(uri, "no_bucket", f"no such bucket {bucket!r}")
        if code == "NoSuchVersion":
            return StorageError(uri, "not_found", f"no such version of the key in bucket {bucket!r}")
        if code in _MISSING or status == 404:
            return StorageError(uri, "not_found", f"no such key in bucket {bucket!r}")
        if code in _DENIED or status == 403:
            return StorageError(uri, "access_denied", f"access denied ({said}); check the credentials boto3 found "
                                                      "(AWS_PROFILE, AWS_ACCESS_KEY_ID) and the bucket's policy")
        if code in _INVALID:
            return StorageError(uri, "invalid", f"S3 refused the request ({said})")
        if status >= 500:
            return StorageError(uri, "unreachable", f"the S3 endpoint failed after 3 attempts ({said})")
        return StorageError(uri, "io", f"S3 error ({said})")
    if isinstance(exc, (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ConnectionClosedError,
                        bx.ProxyConnectionError, bx.SSLError, bx.ReadTimeoutError)):
        return StorageError(uri, "unreachable", f"cannot reach S3 ({exc}); check the endpoint (AWS_ENDPOINT_URL_S3, "
                                                "AWS_ENDPOINT_URL or the profile's endpoint_url) and the network")
    if isinstance(exc, (bx.NoCredentialsError, bx.PartialCredentialsError, bx.ProfileNotFound,
                        bx.CredentialRetrievalError)):
        return StorageError(uri, "access_denied", f"{exc}; {_CREDENTIALS_HINT}")
    return StorageError(uri, "io", f"S3 failed: {exc}")


def _os_error(location: str, exc: OSError) -> StorageError:
    if isinstance(exc, FileNotFoundError):
        return StorageError(location, "not_found", "no such file")
    if isinstance(exc, NotADirectoryError):
        return StorageError(location, "not_found", "a part of the path is a file, not a folder")
    if isinstance(exc, IsADirectoryError):
        return StorageError(location, "invalid", "a folder, not a file")
    if isinstance(exc, PermissionError):
        return StorageError(location, "access_denied", "permission denied")
    return StorageError(location, "io", exc.strerror or str(exc))


# --- reading ------------------------------------------------------------------------------------


class _Source(io.RawIOBase):
    """A raw stream over ``read(n)`` whose failures while reading become StorageError."""

    def __init__(self, uri: str, read: Callable[[int], bytes], close: Callable[[], object]) -> None:
        super().__init__()
        self._uri, self._read, self._close = uri, read, close

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        try:
            data = self._read(len(view))
        except (OSError, BotoCoreError) as exc:
            raise StorageError(self._uri, "io", f"reading broke off: {exc}") from exc
        view[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                self._close()
            finally:
                super().close()


@contextlib.contextmanager
def _opened(uri: str, version_id: str | None) -> Iterator[tuple[BinaryIO, int]]:
    """The stream of ``uri`` (1 MiB buffer) and its size in bytes."""
    if is_s3(uri):
        _need_key(uri)
        extra = {"VersionId": version_id} if version_id is not None else {}
        response = _s3(uri, lambda c, b, k: c.get_object(Bucket=b, Key=k, **extra))
        body = response["Body"]
        raw, size = _Source(uri, body.read, body.close), int(response.get("ContentLength", -1))
    else:
        if version_id is not None:
            raise StorageError(uri, "invalid", "version_id applies to s3:// objects only")
        try:
            file = open(_local_path(uri), "rb", buffering=0)
        except OSError as exc:
            raise _os_error(uri, exc) from exc
        raw, size = _Source(uri, cast(Callable[[int], bytes], file.read), file.close), os.fstat(file.fileno()).st_size
    with io.BufferedReader(raw, _CHUNK) as stream:
        yield cast(BinaryIO, stream), size


@contextlib.contextmanager
def open_read(uri: str, *, version_id: str | None = None) -> Iterator[BinaryIO]:
    """Open ``uri`` for streaming reads: ``with open_read(uri) as f: f.read(n)``.

    The object is fetched as it is read, through a 1 MiB buffer (``read``, ``readline``, line
    iteration); leaving the block closes the connection.

    Parameters
    ----------
    uri : str
        An ``s3://`` URI, a ``file://`` URI or a local path.
    version_id : str or None, default None
        The S3 object version to read (None: the latest). Not allowed for local locations.

    Raises
    ------
    StorageError
        On entering the block: ``not_found``, ``no_bucket``, ``access_denied``, ``invalid``
        (another scheme, a bucket without key, a folder) or ``unreachable``; while reading,
        ``io`` when the connection or the disk fails.
    """
    with _opened(uri, version_id) as (stream, _):
        yield stream


def read_bytes(uri: str, *, version_id: str | None = None, max_bytes: int | None = None) -> bytes:
    """The whole content of ``uri`` (small objects: manifests, JSON); arguments as :func:`open_read`.

    Parameters
    ----------
    max_bytes : int or None, default None
        Refuse a larger object. Its size is checked before anything is read (S3's
        ``ContentLength``, the file's size), and reading stops once past the limit.

    Raises
    ------
    StorageError
        ``reason="too_large"`` past ``max_bytes``; otherwise as :func:`open_read`.
    """
    with _opened(uri, version_id) as (stream, size):
        _check_size(uri, size, max_bytes, exact=True)
        chunks, total = [], 0
        while chunk := stream.read(_CHUNK):
            total += len(chunk)
            _check_size(uri, total, max_bytes)
            chunks.append(chunk)
        return b"".join(chunks)


def iter_lines(uri: str, *, version_id: str | None = None) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` for each non-blank line of a UTF-8 text object, streamed.

    Line numbers start at 1 and count blank lines too, so they match an editor's. The text has
    no ``\\n`` (nor ``\\r\\n``); a byte order mark at the start of line 1 is dropped. Lines holding
    only whitespace are skipped. Only one line (and the 1 MiB buffer) is in memory at a time.

    Raises
    ------
    StorageError
        ``reason="invalid"`` for a line that is not UTF-8 (the message names it); otherwise as
        :func:`open_read`.
    """
    with _opened(uri, version_id) as (stream, _):
        for number, raw in enumerate(stream, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise StorageError(uri, "invalid", f"line {number} is not valid UTF-8 ({exc.reason} at byte "
                                                   f"{exc.start + 1} of the line)") from exc
            if number == 1 and text.startswith("\ufeff"):
                text = text[1:]
            text = text[:-1] if text.endswith("\n") else text
            text = text[:-1] if text.endswith("\r") else text
            if text.strip():
                yield number, text


def download(uri: str, dest: os.PathLike[str] | str, *, max_bytes: int | None = None,
             version_id: str | None = None) -> int:
    """Copy ``uri`` to the local file ``dest``, streamed; the number of bytes written.

    ``dest``'s folder is created if needed. The bytes go to a temporary file next to ``dest``
    (``<dest name>.<random>.part``) that replaces ``dest`` once complete: on any failure
    nothing is left at ``dest`` (an existing file there stays as it was). ``uri`` and
    ``version_id`` as :func:`open_read`, ``max_bytes`` as :func:`read_bytes`.

    Raises
    ------
    StorageError
        ``too_large`` past ``max_bytes``; a failure writing ``dest`` names ``dest``; otherwise
        as :func:`open_read`.
    """
    target = os.fspath(dest)
    if is_s3(target):
        raise StorageError(target, "invalid", "download writes a local file; use write_bytes for S3")
    with _opened(uri, version_id) as (stream, size):
        _check_size(uri, size, max_bytes, exact=True)

        def fill(out: IO[bytes]) -> int:
            total = 0
            while chunk := stream.read(_CHUNK):
                total += len(chunk)
                _check_size(uri, total, max_bytes)
                out.write(chunk)
            return total

        return _write_local(target, fill)


def _check_size(uri: str, size: int, max_bytes: int | None, *, exact: bool = False) -> None:
    if max_bytes is not None and size > max_bytes:
        said = f"{size:,} bytes" if exact else f"over {max_bytes:,} bytes"
        raise StorageError(uri, "too_large", f"the object is {said}, more than the limit of {max_bytes:,}")


def _need_key(uri: str) -> None:
    if not split_s3(uri)[1]:
        raise StorageError(uri, "invalid", "the URI names a bucket, not an object (s3://bucket/key)")


# --- writing and checking -----------------------------------------------------------------------


def write_bytes(uri: str, data: bytes, *, content_type: str | None = None) -> None:
    """Write ``data`` to ``uri``: an S3 ``PutObject``, or an atomic local write (folders created).

    Parameters
    ----------
    uri : str
        An ``s3://`` URI, a ``file://`` URI or a local path.
    data : bytes
        The whole content.
    content_type : str or None, default None
        The S3 object's ``Content-Type`` (ignored for local files).

    Raises
    ------
    StorageError
        ``no_bucket``, ``access_denied``, ``invalid``, ``unreachable`` or, locally, ``io``
        (a full disk, say).
    """
    if is_s3(uri):
        _need_key(uri)
        extra = {"ContentType": content_type} if content_type else {}
        _s3(uri, lambda c, b, k: c.put_object(Bucket=b, Key=k, Body=data, **extra))
        return
    _write_local(uri, lambda out: out.write(data))


def upload_file(path: os.PathLike[str] | str, uri: str, *, content_type: str | None = None) -> None:
    """Copy the local file ``path`` to ``uri``: boto3's managed transfer for S3, an atomic copy locally.

    boto3's transfer sends files over its multipart threshold (8 MiB) in parts, in parallel.

    Raises
    ------
    StorageError
        A source that cannot be read names ``path``; otherwise as :func:`write_bytes`.
    """
    source = os.fspath(path)
    try:
        file = open(source, "rb")
    except OSError as exc:
        raise _os_error(source, exc) from exc
    with file:
        if not is_s3(uri):
            _write_local(uri, lambda out: _copy(file, out))
            return
    _need_key(uri)
    from boto3.exceptions import S3UploadFailedError

    def call(client: Any, bucket: str, key: str) -> None:
        try:
            client.upload_file(source, bucket, key, ExtraArgs={"ContentType": content_type} if content_type else None)
        except S3UploadFailedError as exc:  # boto3 wraps the ClientError it caught
            if isinstance(exc.__context__, ClientError):
                raise exc.__context__ from None
            raise StorageError(uri, "io", str(exc)) from exc
        except OSError as exc:
            raise _os_error(source, exc) from exc

    _s3(uri, call)


def _copy(source: IO[bytes], out: IO[bytes]) -> int:
    shutil.copyfileobj(source, out, _CHUNK)
    return out.tell()


def _write_local(location: str, fill: Callable[[IO[bytes]], int]) -> int:
    """Write ``path`` through ``fill(file)`` into a temporary file, then ``os.replace``."""
    path = _local_path(location)
    tmp = f"{path}.{secrets.token_hex(4)}.part"  # open(..., "x"): the umask applies, unlike mkstemp's 0600
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(tmp, "xb") as out:
            written = fill(out)
        os.replace(tmp, path)
        return written
    except OSError as exc:
        raise _os_error(location, exc) from exc
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def exists(uri: str) -> bool:
    """Whether the S3 object or the local regular file ``uri`` exists.

    A missing bucket gives False (S3 answers a ``HEAD`` of a key in it with a bare 404).

    Raises
    ------
    StorageError
        ``access_denied``, ``invalid`` or ``unreachable``: failures other than absence.
    """
    if is_s3(uri):
        _need_key(uri)
        try:
            _s3(uri, lambda c, b, k: c.head_object(Bucket=b, Key=k))
        except StorageError as exc:
            if exc.reason in ("not_found", "no_bucket"):
                return False
            raise
        return True
    return os.path.isfile(_local_path(uri))


def check_bucket(bucket: str) -> None:
    """Check that ``bucket`` exists and these credentials may use it (S3 ``HeadBucket``).

    Raises
    ------
    StorageError
        ``no_bucket``, ``access_denied`` (the bucket exists but is not ours to use, or no
        credentials) or ``unreachable``; the location is ``s3://bucket/``.
    """
    _s3(s3_uri(bucket, ""), lambda c, b, k: c.head_bucket(Bucket=b), missing="no_bucket")
