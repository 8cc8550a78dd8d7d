"""Read and write ``s3://`` objects, ``file://`` URIs and local paths, streaming.

The public face of storage; its parts are :mod:`lvkit.storage_errors` (:class:`StorageError` and
how boto3's and the file system's failures map onto it), :mod:`lvkit.storage_locations` (parsing,
resolving and joining locations) and :mod:`lvkit.storage_s3` (the one S3 client of the process).
Callers import ``lvkit.storage`` only (its ``__all__`` re-exports what they use of the parts);
this module owns the reads and writes themselves. ``boto3`` is imported inside the functions that reach S3,
so ``import lvkit`` stays light and local paths work without any AWS configuration.

S3 access goes through boto3's default chain and nothing of lvkit's own, so real S3, MinIO and
other S3-compatible servers work as the AWS CLI does (:mod:`lvkit.storage_s3` says which
variables and profile settings it reads, and the client's own few settings).

Nothing reads a whole object into memory except :func:`read_bytes`: reads go through a
1 MiB buffer. Local writes are atomic: a temporary file in the target's folder, whose name
starts with the target's name, then ``os.replace``; a failure leaves nothing at the target.

Imports its parts only (``lvkit.storage_errors``, ``lvkit.storage_locations``, ``lvkit.storage_s3``),
which import ``lvkit.errors`` only.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any, BinaryIO, cast

from botocore.exceptions import BotoCoreError, ClientError

from lvkit.storage_errors import Reason as Reason  # the type of StorageError.reason, for annotations
from lvkit.storage_errors import StorageError, os_error
from lvkit.storage_locations import is_s3, join, local_path, resolve, s3_uri, split_s3
from lvkit.storage_s3 import s3_call, s3_client

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

#: bytes read from a source at a time
_CHUNK = 1 << 20


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
        response = s3_call(uri, lambda c, b, k: c.get_object(Bucket=b, Key=k, **extra))
        body = response["Body"]
        raw, size = _Source(uri, body.read, body.close), int(response.get("ContentLength", -1))
    else:
        if version_id is not None:
            raise StorageError(uri, "invalid", "version_id applies to s3:// objects only")
        try:
            file = open(local_path(uri), "rb", buffering=0)
        except OSError as exc:
            raise os_error(uri, exc) from exc
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
        s3_call(uri, lambda c, b, k: c.put_object(Bucket=b, Key=k, Body=data, **extra))
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
        raise os_error(source, exc) from exc
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
            raise os_error(source, exc) from exc

    s3_call(uri, call)


def _copy(source: IO[bytes], out: IO[bytes]) -> int:
    shutil.copyfileobj(source, out, _CHUNK)
    return out.tell()


def _write_local(location: str, fill: Callable[[IO[bytes]], int]) -> int:
    """Write ``path`` through ``fill(file)`` into a temporary file, then ``os.replace``."""
    path = local_path(location)
    tmp = f"{path}.{secrets.token_hex(4)}.part"  # open(..., "x"): the umask applies, unlike mkstemp's 0600
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(tmp, "xb") as out:
            written = fill(out)
        os.replace(tmp, path)
        return written
    except OSError as exc:
        raise os_error(location, exc) from exc
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
            s3_call(uri, lambda c, b, k: c.head_object(Bucket=b, Key=k))
        except StorageError as exc:
            if exc.reason in ("not_found", "no_bucket"):
                return False
            raise
        return True
    return os.path.isfile(local_path(uri))


def check_bucket(bucket: str) -> None:
    """Check that ``bucket`` exists and these credentials may use it (S3 ``HeadBucket``).

    Raises
    ------
    StorageError
        ``no_bucket``, ``access_denied`` (the bucket exists but is not ours to use, or no
        credentials) or ``unreachable``; the location is ``s3://bucket/``.
    """
    s3_call(s3_uri(bucket, ""), lambda c, b, k: c.head_bucket(Bucket=b), missing="no_bucket")
