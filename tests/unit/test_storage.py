"""lvkit.storage against a real S3-compatible server (moto, loopback) and against local files."""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from lvkit import storage
from lvkit.errors import LvkitError
from lvkit.storage import StorageError
from tests.s3 import S3Env

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = b'\xef\xbb\xbf{"source-ref": "a.png"}\r\n\n   \n{"source-ref": "b.png"}\n{"last": 1}'
MANIFEST_LINES = [(1, '{"source-ref": "a.png"}'), (4, '{"source-ref": "b.png"}'), (5, '{"last": 1}')]


def big_lines(total: int) -> bytes:
    """About ``total`` bytes of numbered 100-byte lines."""
    return b"".join(b"%08d " % i + b"x" * 90 + b"\n" for i in range(total // 100))


@pytest.fixture(params=["s3", "path", "file-uri"])
def where(request: pytest.FixtureRequest, tmp_path: Path):
    """A location factory: ``where("a/b.txt")`` in a fresh bucket, a folder, or as a file:// URI."""
    if request.param == "s3":
        bucket = request.getfixturevalue("s3_env").bucket()
        return lambda key: f"s3://{bucket}/{key}"
    if request.param == "path":
        return lambda key: str(tmp_path / key)
    return lambda key: (tmp_path / key).as_uri()


@contextmanager
def raises(reason: str, *fragments: str) -> Iterator[pytest.ExceptionInfo[StorageError]]:
    """pytest.raises(StorageError), then its reason and message checked."""
    with pytest.raises(StorageError) as info:
        yield info
    assert info.value.reason == reason, (info.value.reason, str(info.value))
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


# --- locations (pure) ---------------------------------------------------------------------------


def test_parse_and_build_s3_uris():
    assert storage.is_s3("s3://b/k") and storage.is_s3("S3://b/k") and not storage.is_s3("/s3://b")
    assert storage.s3_uri("b", "a/b.png") == "s3://b/a/b.png"
    assert storage.split_s3("s3://b/a/b.png") == ("b", "a/b.png")
    assert storage.split_s3("s3://b") == ("b", "") == storage.split_s3("s3://b/")
    for bad in ("s3:///key", "s3://", "/local/path", "file:///x", "gs://b/k"):
        with raises("invalid", bad):
            storage.split_s3(bad)
    with raises("invalid"):
        storage.s3_uri("", "k")


@pytest.mark.parametrize("ref, base, expected", [
    ("s3://b/x/y.png", None, "s3://b/x/y.png"),
    ("S3://b/x/./y.png", "/ignored", "s3://b/x/./y.png"),  # absolute: the key is kept as written
    ("file:///srv/a/../b.png", None, "/srv/b.png"),
    ("file://localhost/srv/b%20c.png", None, "/srv/b c.png"),
    ("/srv/x//y.png", "s3://b/m", "/srv/x/y.png"),
    ("img/1.png", "s3://b/data/train.manifest", "s3://b/data/img/1.png"),
    ("./img/../1.png", "s3://b/data/train.manifest", "s3://b/data/1.png"),
    ("../m/1.png", "s3://b/data/sub/train.manifest", "s3://b/data/m/1.png"),
    ("1.png", "s3://b/train.manifest", "s3://b/1.png"),
    ("1.png", "s3://b/data/", "s3://b/data/1.png"),
    ("img/1.png", "/srv/data/train.manifest", "/srv/data/img/1.png"),
    ("../1.png", "file:///srv/data/train.manifest", "/srv/1.png"),
])
def test_resolve(ref, base, expected):
    assert storage.resolve(ref, base) == expected


def test_resolve_relative_to_a_relative_local_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    assert storage.resolve("img/1.png", "data/train.manifest") == str(tmp_path / "data" / "img" / "1.png")


@pytest.mark.parametrize("ref, base, fragment", [
    ("", "s3://b/m", "empty"),
    ("  ", "s3://b/m", "empty"),
    ("http://example.com/a.png", "s3://b/m", "unsupported scheme 'http'"),
    ("gs://b/a.png", None, "unsupported scheme 'gs'"),
    ("img/1.png", None, "relative reference"),
    ("../../1.png", "s3://b/data/m", "above the bucket"),
    ("file://otherhost/x.png", None, "file:///abs/path"),
    ("img/1.png", "https://example.com/m", "unsupported scheme 'https'"),
])
def test_resolve_refuses(ref, base, fragment):
    with raises("invalid", fragment):
        storage.resolve(ref, base)


@pytest.mark.parametrize("base, parts, expected", [
    ("s3://b/pre", ("x/y.json",), "s3://b/pre/x/y.json"),
    ("s3://b/pre/", ("/x/", "y.json"), "s3://b/pre/x/y.json"),
    ("s3://b", ("x.json",), "s3://b/x.json"),
    ("s3://b/", ("out/",), "s3://b/out/"),
    ("s3://b/pre", (), "s3://b/pre"),
    ("/out", ("eval", "/r.json"), "/out/eval/r.json"),
    ("file:///out", ("r.json",), "/out/r.json"),
])
def test_join(base, parts, expected):
    assert storage.join(base, *parts) == expected


def test_storage_error_is_an_lvkit_error_and_pickles():
    err = StorageError("s3://b/k", "not_found", "no such key in bucket 'b'")
    assert isinstance(err, LvkitError) and str(err) == "s3://b/k: no such key in bucket 'b'"
    back = pickle.loads(pickle.dumps(err))
    assert (back.uri, back.reason, str(back)) == (err.uri, err.reason, str(err))


def test_importing_storage_leaves_boto3_out():
    code = "import sys, lvkit.storage; print('boto3' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"


# --- round trips on every kind of location ------------------------------------------------------


def test_write_read_exists_round_trip(where):
    uri = where("deep/er/obj.bin")
    assert not storage.exists(uri)
    storage.write_bytes(uri, b"hello\nworld\n", content_type="text/plain")
    assert storage.exists(uri)
    assert storage.read_bytes(uri) == b"hello\nworld\n"
    with storage.open_read(uri) as f:
        assert f.readline() == b"hello\n" and f.read() == b"world\n"
    storage.write_bytes(uri, b"")  # overwrite, empty
    assert storage.read_bytes(uri) == b""


def test_iter_lines(where):
    uri = where("train.manifest")
    storage.write_bytes(uri, MANIFEST)
    assert list(storage.iter_lines(uri)) == MANIFEST_LINES


def test_iter_lines_names_the_bad_line(where):
    uri = where("bad.manifest")
    storage.write_bytes(uri, b'{"a": 1}\n{"b": "\xff"}\n')
    with raises("invalid", uri, "line 2 is not valid UTF-8", "byte 8"):
        list(storage.iter_lines(uri))


def test_download_and_upload(where, tmp_path: Path):
    uri = where("x/obj.bin")
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3000))
    storage.upload_file(src, uri, content_type="application/octet-stream")
    dest = tmp_path / "out" / "sub" / "copy.bin"
    assert storage.download(uri, dest) == 3000
    assert dest.read_bytes() == src.read_bytes()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["copy.bin"]  # no temporary file left


def test_missing_objects(where, tmp_path: Path):
    uri = where("nope/missing.manifest")
    with raises("not_found", uri):
        storage.read_bytes(uri)
    with raises("not_found", uri):
        list(storage.iter_lines(uri))
    with raises("not_found", uri):
        with storage.open_read(uri):
            pass  # pragma: no cover
    dest = tmp_path / "dl" / "x.bin"
    with raises("not_found", uri):
        storage.download(uri, dest)
    assert not dest.exists()


def test_too_large_is_refused_before_reading(where, tmp_path: Path):
    uri = where("big.bin")
    storage.write_bytes(uri, b"z" * 5000)
    assert storage.read_bytes(uri, max_bytes=5000) == b"z" * 5000
    with raises("too_large", uri, "5,000 bytes", "limit of 4,999"):
        storage.read_bytes(uri, max_bytes=4999)
    dest = tmp_path / "big" / "copy.bin"
    dest.parent.mkdir()
    dest.write_bytes(b"old")
    with raises("too_large", uri):
        storage.download(uri, dest, max_bytes=10)
    assert dest.read_bytes() == b"old"  # an existing file stays as it was
    assert [p.name for p in dest.parent.iterdir()] == ["copy.bin"]


# --- S3 specifics -------------------------------------------------------------------------------


def test_s3_messages_name_the_location(s3_env: S3Env):
    bucket = s3_env.bucket()
    with raises("not_found", f"s3://{bucket}/train.manifest: no such key in bucket '{bucket}'"):
        storage.read_bytes(f"s3://{bucket}/train.manifest")
    with raises("no_bucket", "s3://lvkit-no-such-bucket/k: no such bucket 'lvkit-no-such-bucket'"):
        storage.read_bytes("s3://lvkit-no-such-bucket/k")
    with raises("no_bucket", "lvkit-no-such-bucket"):
        storage.write_bytes("s3://lvkit-no-such-bucket/k", b"x")
    assert not storage.exists("s3://lvkit-no-such-bucket/k")
    with raises("invalid", "names a bucket, not an object"):
        storage.read_bytes(f"s3://{bucket}")
    with raises("invalid", "unsupported scheme 'gs'"):
        storage.read_bytes("gs://b/k")
    with raises("invalid", "version_id applies to s3:// objects only"):
        storage.read_bytes("/etc/hostname", version_id="1")


def test_check_bucket(s3_env: S3Env):
    storage.check_bucket(s3_env.bucket())
    with raises("no_bucket", "s3://lvkit-no-such-bucket/: no such bucket"):
        storage.check_bucket("lvkit-no-such-bucket")


def test_version_id_reads_an_old_version(s3_env: S3Env, tmp_path: Path):
    bucket = s3_env.bucket()
    s3_env.client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    uri = f"s3://{bucket}/train.manifest"
    old = s3_env.client.put_object(Bucket=bucket, Key="train.manifest", Body=b'{"v": 1}\n')["VersionId"]
    storage.write_bytes(uri, b'{"v": 2}\n')
    assert storage.read_bytes(uri) == b'{"v": 2}\n'
    assert storage.read_bytes(uri, version_id=old) == b'{"v": 1}\n'
    assert list(storage.iter_lines(uri, version_id=old)) == [(1, '{"v": 1}')]
    with storage.open_read(uri, version_id=old) as f:
        assert f.read() == b'{"v": 1}\n'
    assert storage.download(uri, tmp_path / "old", version_id=old) == 9
    with raises("not_found", "no such version"):
        storage.read_bytes(uri, version_id="no-such-version")


def test_upload_file_is_multipart_for_large_files(s3_env: S3Env, tmp_path: Path):
    bucket = s3_env.bucket()
    src = tmp_path / "model.zip"
    src.write_bytes(os.urandom(9 * 1024 * 1024))  # over boto3's 8 MiB threshold
    storage.upload_file(src, f"s3://{bucket}/packages/model.zip", content_type="application/zip")
    head = s3_env.client.head_object(Bucket=bucket, Key="packages/model.zip")
    assert head["ContentLength"] == src.stat().st_size and head["ContentType"] == "application/zip"
    assert "-" in head["ETag"]  # a multipart ETag: "<md5>-<parts>"


def test_upload_file_errors(s3_env: S3Env, tmp_path: Path):
    src = tmp_path / "a.bin"
    with raises("not_found", str(src)):
        storage.upload_file(src, f"s3://{s3_env.bucket()}/a.bin")
    src.write_bytes(b"a")
    with raises("no_bucket", "s3://lvkit-no-such-bucket/a.bin: no such bucket"):
        storage.upload_file(src, "s3://lvkit-no-such-bucket/a.bin")
    with raises("invalid", "a folder, not a file"):
        storage.upload_file(tmp_path, str(tmp_path / "b.bin"))


def test_iter_lines_streams_a_large_s3_object(s3_env: S3Env):
    """20 MB read line by line in another process (moto, in this one, holds the object): its peak stays small."""
    bucket = s3_env.bucket()
    body = big_lines(20_000_000)
    s3_env.client.put_object(Bucket=bucket, Key="big.manifest", Body=body)
    script = textwrap.dedent("""
        import sys, tracemalloc
        from lvkit import storage
        storage.check_bucket(sys.argv[1].split("/")[2])  # boto3 imported, client built, model loaded
        tracemalloc.start()
        count = chars = 0
        for number, line in storage.iter_lines(sys.argv[1]):
            count, chars = number, chars + len(line)
        print(count, chars, line[:8], tracemalloc.get_traced_memory()[1])
    """)
    out = subprocess.run([sys.executable, "-c", script, f"s3://{bucket}/big.manifest"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-3000:]
    count, chars, last, peak = out.stdout.split()
    assert (int(count), int(chars), last) == (200_000, 200_000 * 99, "00199999")
    assert int(peak) < 5_000_000, f"peak {int(peak):,} bytes for a {len(body):,}-byte object"


def test_iter_lines_streams_a_large_local_file(tmp_path: Path):
    path = tmp_path / "big.manifest"
    path.write_bytes(big_lines(20_000_000))
    tracemalloc.start()
    try:
        count = sum(1 for _ in storage.iter_lines(str(path)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 200_000 and peak < 5_000_000, peak


def test_unreachable_endpoint_fails_fast(s3_env: S3Env, monkeypatch: pytest.MonkeyPatch):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{port}")
    start = time.monotonic()
    with raises("unreachable", "s3://b/train.manifest: cannot reach S3", f"127.0.0.1:{port}", "AWS_ENDPOINT_URL_S3"):
        storage.read_bytes("s3://b/train.manifest")
    assert time.monotonic() - start < 20
    with raises("unreachable"):
        storage.check_bucket("b")


def test_no_credentials(s3_env: S3Env, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with raises("access_denied", "s3://b/k: Unable to locate credentials", "AWS_ACCESS_KEY_ID", "AWS_PROFILE"):
        storage.read_bytes("s3://b/k")
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    with raises("access_denied", "no-such-profile"):
        storage.exists("s3://b/k")
    with raises("access_denied", "s3://"):
        storage.s3_client()


def test_wrong_credentials(s3_env: S3Env, monkeypatch: pytest.MonkeyPatch):
    """moto checks keys once its authentication is on (``/moto-api/reset-auth``); none exists, so all are wrong."""
    bucket = s3_env.bucket()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG0")
    previous = _moto_auth(s3_env.url, 0)
    try:
        with raises("access_denied", f"s3://{bucket}/k: access denied (InvalidAccessKeyId", "AWS_ACCESS_KEY_ID"):
            storage.read_bytes(f"s3://{bucket}/k")
        with raises("access_denied", "InvalidAccessKeyId"):
            storage.write_bytes(f"s3://{bucket}/k", b"x")
    finally:
        _moto_auth(s3_env.url, previous)


def _moto_auth(url: str, free_requests: float) -> float:
    """Turn moto's authentication on after ``free_requests`` requests (inf: off); the previous setting."""
    request = urllib.request.Request(f"{url}/moto-api/reset-auth", data=str(free_requests).encode(), method="POST",
                                     headers={"Content-Type": "text/plain"})  # not a form: moto reads the raw body
    with urllib.request.urlopen(request, timeout=10) as response:
        return float(json.loads(response.read())["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"])


def test_a_named_profile_with_a_services_endpoint(s3_env: S3Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """AWS_PROFILE naming a profile whose ``services`` section sets the S3 endpoint; no endpoint variable."""
    bucket = s3_env.bucket()
    config = tmp_path / "aws-config"
    config.write_text(textwrap.dedent(f"""\
        [profile lvtest]
        region = us-east-1
        aws_access_key_id = profilekey
        aws_secret_access_key = profilesecret
        services = lvtest-services

        [services lvtest-services]
        s3 =
          endpoint_url = {s3_env.url}
    """))
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_PROFILE", "lvtest")
    assert storage.s3_client().meta.endpoint_url == s3_env.url
    storage.write_bytes(f"s3://{bucket}/via-profile.json", b"{}")
    assert s3_env.client.get_object(Bucket=bucket, Key="via-profile.json")["Body"].read() == b"{}"
    assert list(storage.iter_lines(f"s3://{bucket}/via-profile.json")) == [(1, "{}")]


def test_one_client_per_environment_shared_by_threads(s3_env: S3Env, monkeypatch: pytest.MonkeyPatch):
    clients: list[object] = []
    threads = [threading.Thread(target=lambda: clients.append(storage.s3_client())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(c) for c in clients}) == 1 and clients[0] is storage.s3_client()
    client = storage.s3_client()
    assert client.meta.endpoint_url == s3_env.url
    assert client.meta.config.connect_timeout == 5 and client.meta.config.retries["total_max_attempts"] == 3
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert storage.s3_client() is not client and storage.s3_client().meta.region_name == "eu-west-1"


# --- local specifics ----------------------------------------------------------------------------


def test_local_errors(tmp_path: Path):
    (tmp_path / "file").write_text("x")
    with raises("invalid", str(tmp_path), "a folder, not a file"):
        storage.read_bytes(str(tmp_path))
    with raises("not_found", "a part of the path is a file"):
        storage.read_bytes(str(tmp_path / "file" / "x"))
    with raises("io"):
        storage.write_bytes(str(tmp_path / "file" / "x"), b"y")  # a parent that is a file
    with raises("invalid", "download writes a local file"):
        storage.download(str(tmp_path / "file"), "s3://b/k")
    assert not storage.exists(str(tmp_path)) and storage.exists((tmp_path / "file").as_uri())


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads every file")
def test_local_permission_denied(tmp_path: Path):  # pragma: no cover - CI runs as root here
    secret = tmp_path / "secret"
    secret.write_text("x")
    secret.chmod(0)
    with raises("access_denied", "permission denied"):
        storage.read_bytes(str(secret))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a named pipe")
def test_a_download_failing_half_way_leaves_nothing(tmp_path: Path):
    """A source of unknown size (a pipe) runs past max_bytes after 2 MiB were written: nothing remains."""
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)

    def feed() -> None:
        with suppress(BrokenPipeError), open(pipe, "wb") as w:
            w.write(b"a" * (3 << 20))

    writer = threading.Thread(target=feed)
    writer.start()
    out = tmp_path / "out"
    with raises("too_large", str(pipe), "over 2,097,152 bytes"):
        storage.download(str(pipe), out / "copy.bin", max_bytes=2 << 20)
    writer.join()
    assert list(out.iterdir()) == []


@pytest.mark.skipif(not os.path.exists("/proc/self/mem"), reason="needs Linux's /proc/self/mem (EIO at offset 0)")
def test_a_read_error_is_io_and_leaves_nothing(tmp_path: Path):
    with raises("io", "/proc/self/mem: reading broke off", "Input/output error"):
        storage.download("/proc/self/mem", tmp_path / "copy.bin")
    assert list(tmp_path.iterdir()) == []


def test_local_writes_are_atomic_and_keep_the_umask(tmp_path: Path):
    target = tmp_path / "a" / "b" / "result.json"
    storage.write_bytes(target.as_uri(), b"{}")
    assert target.read_bytes() == b"{}"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert [p.name for p in target.parent.iterdir()] == ["result.json"]
