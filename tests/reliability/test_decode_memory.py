"""Decoding a legal 4096x4096 request body has a small, bounded peak memory (issue 8, item 6b).

Each body is decoded by ``lvkit.images.decode_image`` in a fresh interpreter, which reports the
rise of its peak resident set size (``VmHWM``) over the decode. The bound is what the
decode cannot avoid (the image as Pillow holds it, 4 bytes a pixel for RGB and RGBA, 2 for
16-bit gray, plus the uint8 RGB result) and 32 MB for one band of conversion, the decoder's
buffers and allocator slack. The whole-image conversion it replaced rose by about 305 MB on the
16-bit gray body (int64 temporaries) and 160-224 MB on the others (full-size copies).

The bodies are legal and small (hand-written PNGs of repeating rows, about 0.5-1 MB),
which is the point: a request within every size limit must not cost hundreds of MB.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from lvkit.images import DEFAULT_MAX_BYTES

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak RSS from /proc (Linux)")

SIDE = 4096
MB = 2**20
SLACK = 32 * MB
ROOT = Path(__file__).resolve().parents[2]

# The child reads the body and warms the PNG plugin on a tiny image, resets its peak RSS to the
# current RSS, decodes, and prints the peak's rise (MB) and the decode time (s). It reads the peak
# from /proc (VmHWM), not from getrusage: Linux carries ru_maxrss over fork and execve, so a child
# of a large pytest process would start with the parent's peak and every rise would hide under it.
_CHILD = """
import sys, time
import numpy as np
from lvkit.images import decode_image, encode_png
def status_kib(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
decode_image(encode_png(np.zeros((64, 64, 3), np.uint8)), "image/png")
body = open(sys.argv[1], "rb").read()
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # peak RSS := current RSS
except OSError:
    pass  # then the import peak, a few MB above the current RSS, only makes the check lenient
base = status_kib("VmRSS")
start = time.perf_counter()
rgb = decode_image(body, "image/png")
seconds = time.perf_counter() - start
peak = status_kib("VmHWM")
assert rgb.shape == (4096, 4096, 3) and rgb.dtype == np.uint8, rgb.shape
print((peak - base) / 1024, seconds)
"""


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(row: np.ndarray, *, depth: int, color_type: int) -> bytes:
    """A SIDE x SIDE PNG whose every row is ``row`` (samples of one row, filter type 0)."""
    raw = (b"\x00" + row.astype(">u2" if depth == 16 else np.uint8).tobytes()) * SIDE
    ihdr = struct.pack(">IIBBBBB", SIDE, SIDE, depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw, 1))
            + _chunk(b"IEND", b""))


_X = np.arange(SIDE) % 256  # rows repeat every 256 pixels: small bodies, fast to compress
#: name -> (body maker, bytes a pixel of the image as Pillow decodes it). 8-bit RGB is left out: once
#: Pillow has decoded it, it takes rgb16's path (mode RGB); its numbers are rgb16's.
CASES = {
    "gray16": (lambda: _png(_X * 257, depth=16, color_type=0), 2),
    "rgb16": (lambda: _png(np.stack([_X * 257, _X * 131, 65535 - _X], 1), depth=16, color_type=2), 4),
    "rgba8": (lambda: _png(np.stack([_X, _X * 3 % 256, 255 - _X, _X * 5 % 256], 1), depth=8, color_type=6), 4),
}


@pytest.fixture(scope="module")
def children(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, subprocess.Popen[str]]]:
    """One decoding interpreter per case, all started at once (each one imports lvkit: ~1 s)."""
    folder = tmp_path_factory.mktemp("decode-memory")
    procs = {}
    for case, (make, _) in CASES.items():
        body = make()
        assert len(body) < DEFAULT_MAX_BYTES  # a legal body
        path = folder / f"{case}.png"
        path.write_bytes(body)
        procs[case] = subprocess.Popen(
            [sys.executable, "-c", _CHILD, str(path)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.mark.parametrize("case", sorted(CASES))
def test_decode_peak_memory_is_bounded(case: str, children: dict[str, subprocess.Popen[str]]) -> None:
    out, err = children[case].communicate(timeout=120)
    assert children[case].returncode == 0, err
    rise_mb, seconds = map(float, out.split())
    _, pillow_bytes_per_pixel = CASES[case]
    bound_mb = (SIDE * SIDE * (pillow_bytes_per_pixel + 3) + SLACK) / MB
    assert rise_mb < bound_mb, f"{case}: decoding rose the peak RSS by {rise_mb:.0f} MB in {seconds:.2f} s"
