"""Decoding request bodies: sniffing, full decode, size rules, pixel-mode conversion."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from lvkit.errors import ValidationException
from lvkit.images import decode_image, encode_mask_png, sniff_content_type
from tests.conftest import png_bytes

RGB = np.random.RandomState(0).randint(0, 256, (64, 80, 3), dtype=np.uint8)


def _save(img: Image.Image, fmt: str = "PNG", **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_rgb_png_round_trip():
    assert np.array_equal(decode_image(png_bytes(RGB), "image/png"), RGB)


def test_jpeg_decodes():
    out = decode_image(png_bytes(RGB, fmt="JPEG"), "image/jpeg")
    assert out.shape == (64, 80, 3) and out.dtype == np.uint8


@pytest.mark.parametrize("mode", ["L", "1", "P", "RGBA", "LA"])
def test_modes_convert_to_rgb_the_same_way(mode):
    img = Image.fromarray(RGB).convert(mode)
    out = decode_image(_save(img), "image/png")
    assert out.shape == (64, 80, 3) and out.dtype == np.uint8
    assert np.array_equal(out, decode_image(_save(img), "image/png"))  # deterministic
    if mode == "RGBA":  # alpha is dropped: colours kept as they are
        assert np.array_equal(out, RGB)
    if mode in ("L", "LA"):
        gray = np.asarray(img.convert("L"))
        assert np.array_equal(out[:, :, 0], gray) and np.array_equal(out[:, :, 2], gray)


def test_sixteen_bit_keeps_high_byte():
    gray16 = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    out = decode_image(_save(Image.fromarray(gray16)), "image/png")
    assert np.array_equal(out[:, :, 1], (gray16 >> 8).astype(np.uint8))


def test_cmyk_jpeg_converts():
    body = _save(Image.fromarray(RGB).convert("CMYK"), "JPEG")
    out = decode_image(body, "image/jpeg")
    assert out.shape == (64, 80, 3)
    assert np.abs(out.astype(int) - RGB.astype(int)).mean() < 12  # lossy but the same picture


def test_transparent_alpha_keeps_colour():
    rgba = np.dstack([RGB, np.zeros((64, 80), np.uint8)])
    assert np.array_equal(decode_image(_save(Image.fromarray(rgba)), "image/png"), RGB)


@pytest.mark.parametrize("size", [(63, 64), (64, 4097)])
def test_size_limits(size):
    w, h = size
    with pytest.raises(ValidationException, match=f"{w}x{h}"):
        decode_image(png_bytes(np.zeros((h, w, 3), np.uint8)), "image/png")


def test_limits_inclusive():
    assert decode_image(png_bytes(np.zeros((64, 64, 3), np.uint8)), "image/png").shape == (64, 64, 3)


def test_corrupt_middle_is_validation_error():
    body = bytearray(png_bytes(RGB))
    body[60:120] = b"\x00" * 60
    with pytest.raises(ValidationException, match="could not be decoded"):
        decode_image(bytes(body), "image/png")


def test_sniff():
    assert sniff_content_type(png_bytes(RGB)) == "image/png"
    assert sniff_content_type(png_bytes(RGB, fmt="JPEG")) == "image/jpeg"
    assert sniff_content_type(b"BM....") is None


def test_mask_png_background_black_and_colours():
    lm = np.zeros((64, 64), np.int64)
    lm[0:4, 0:4] = 1
    lm[10:12, 10:12] = 2
    out = np.asarray(Image.open(io.BytesIO(encode_mask_png(lm, ["#2CA02C", "#d62728"]))))
    assert Image.open(io.BytesIO(encode_mask_png(lm, ["#2CA02C", "#d62728"]))).mode == "RGB"
    assert out[0, 0].tolist() == [0x2C, 0xA0, 0x2C] and out[10, 10].tolist() == [0xD6, 0x27, 0x28]
    assert out[30, 30].tolist() == [0, 0, 0]
    with pytest.raises(ValueError, match="black"):
        encode_mask_png(lm, ["#000000", "#ffffff"])
