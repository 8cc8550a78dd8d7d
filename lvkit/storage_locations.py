"""Locations: parsing, building, resolving and joining ``s3://`` URIs, ``file://`` URIs and local paths.

Owns what a location may be (an ``s3://bucket/key`` URI with the scheme in any case, a
``file://`` URI naming an absolute local path, or a path; any other scheme is refused), how a
manifest's relative ``source-ref`` resolves against the manifest's own location, and how parts
join onto a prefix. Pure string work: nothing here opens a file or reaches S3, and nothing needs boto3.

Imports ``lvkit.storage_errors`` only.
"""

from __future__ import annotations

import os
import re
import urllib.parse

from lvkit.storage_errors import StorageError

__all__ = ["is_s3", "join", "local_path", "resolve", "s3_uri", "split_s3"]

#: a URI scheme (two letters or more, so that ``C:`` stays a Windows drive)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+):")


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
    path = local_path(ref)
    if os.path.isabs(path):
        return os.path.normpath(path)
    if base is None:
        raise StorageError(ref, "invalid", "a relative reference, and no manifest location to resolve it against")
    if not is_s3(base):
        return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(local_path(base))), path))
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
    return os.path.join(local_path(base), *(p.lstrip("/" + os.sep) for p in parts))


def local_path(uri: str) -> str:
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
