"""Decoding request bodies: sniffing, full decode, size rules, pixel-mode conversion."""

from __future__ import annotations

import io
import struct
import zlib

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


# --- every pixel mode converts exactly as the original whole-image formula did ----------------------


def _reference_to_rgb(image: Image.Image) -> np.ndarray:
    """The original whole-image conversion (before banding): the results must stay bit-identical."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(image).astype(np.int64)
        gray = (np.clip(arr, 0, 65535) >> 8).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        gray = np.clip(np.asarray(image), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("P", "PA"):
        image = image.convert("RGBA")
    if mode != "RGB":
        image = image.convert("RGB")
    return np.array(image, dtype=np.uint8)


_R = np.random.RandomState(1)
_H, _W = 37, 23  # odd sides, so bands of a few rows leave a short last band


def _mode_image(mode: str) -> Image.Image:
    rgb = _R.randint(0, 256, (_H, _W, 3), dtype=np.uint8)
    if mode == "I":
        return Image.fromarray(_R.randint(-70_000, 140_000, (_H, _W)).astype(np.int32), "I")
    if mode == "F":
        return Image.fromarray(_R.uniform(-50, 300, (_H, _W)).astype(np.float32), "F")
    if mode.startswith("I;16"):
        data = _R.randint(0, 65536, (_H, _W))
        order = {"I;16B": ">u2", "I;16N": "=u2"}.get(mode, "<u2")
        return Image.frombytes(mode, (_W, _H), data.astype(order).tobytes())
    if mode in ("RGBA", "RGBa"):
        return Image.fromarray(_R.randint(0, 256, (_H, _W, 4), dtype=np.uint8), "RGBA").convert(mode)
    if mode == "P+transparency":
        img = Image.fromarray(rgb).convert("P")
        img.info["transparency"] = int(np.asarray(img)[0, 0])
        return img
    if mode == "L+transparency":
        img = Image.fromarray(rgb).convert("L")
        img.info["transparency"] = int(np.asarray(img)[0, 0])
        return img
    return Image.fromarray(rgb).convert(mode)


MODES = ["1", "L", "P", "PA", "P+transparency", "L+transparency", "RGB", "RGBA", "RGBa", "RGBX", "LA",
         "CMYK", "YCbCr", "HSV", "LAB", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"]


@pytest.mark.parametrize("band_pixels", [None, 1, 3 * _W + 5], ids=["one-band", "row-bands", "3-row-bands"])
@pytest.mark.parametrize("mode", MODES)
def test_to_rgb_matches_the_reference_formula(mode, band_pixels, monkeypatch):
    import lvkit.images

    if band_pixels is not None:
        monkeypatch.setattr(lvkit.images, "_BAND_PIXELS", band_pixels, raising=False)
    img = _mode_image(mode)
    expected = _reference_to_rgb(img.copy())
    out = lvkit.images.to_rgb(img)
    assert out.dtype == np.uint8 and out.shape == (_H, _W, 3)
    assert out.flags.writeable and out.flags.c_contiguous
    assert np.array_equal(out, expected)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _raw_png(samples: np.ndarray, *, depth: int, color_type: int, extra: bytes = b"") -> bytes:
    """A PNG written by hand (Pillow cannot write 16-bit RGB/RGBA/LA): samples (H, W, C), filter 0."""
    h, w = samples.shape[:2]
    dtype = ">u2" if depth == 16 else np.uint8
    rows = samples.reshape(h, -1).astype(dtype)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + extra + _chunk(b"IDAT", zlib.compress(raw))
            + _chunk(b"IEND", b""))


def _png_bodies() -> dict[str, tuple[bytes, str]]:
    r = np.random.RandomState(2)
    s16 = r.randint(0, 65536, (70, 66, 4))
    s8 = r.randint(0, 256, (70, 66, 4))
    rgb = Image.fromarray(s8[:, :, :3].astype(np.uint8))
    bodies = {
        "gray16": _raw_png(s16[:, :, :1], depth=16, color_type=0),
        "rgb16": _raw_png(s16[:, :, :3], depth=16, color_type=2),
        "rgba16": _raw_png(s16, depth=16, color_type=6),
        "la16": _raw_png(s16[:, :, :2], depth=16, color_type=4),
        "gray16-trns": _raw_png(s16[:, :, :1], depth=16, color_type=0, extra=_chunk(b"tRNS", b"\x01\x00")),
        "rgb16-trns": _raw_png(s16[:, :, :3], depth=16, color_type=2, extra=_chunk(b"tRNS", bytes(6))),
        "gray8-trns": _raw_png(s8[:, :, :1], depth=8, color_type=0, extra=_chunk(b"tRNS", b"\x00\x07")),
        "rgb8": _save(rgb), "rgba8": _save(Image.fromarray(s8.astype(np.uint8))),
        "la8": _save(rgb.convert("LA")), "l8": _save(rgb.convert("L")), "1": _save(rgb.convert("1")),
        "l2": _save(rgb.convert("L"), bits=2), "p4": _save(rgb.convert("P", colors=16), bits=4),
        "p8": _save(rgb.convert("P")), "p8-trns": _save(rgb.convert("P"), transparency=3),
    }
    out = {k: (v, "image/png") for k, v in bodies.items()}
    for mode in ("RGB", "L", "CMYK"):
        out[f"jpeg-{mode}"] = (_save(rgb.convert(mode), "JPEG"), "image/jpeg")
    return out


@pytest.mark.parametrize("band_pixels", [None, 3 * 66 + 5], ids=["one-band", "3-row-bands"])
@pytest.mark.parametrize("case", sorted(_png_bodies()))
def test_decode_matches_the_reference_formula(case, band_pixels, monkeypatch):
    import lvkit.images

    if band_pixels is not None:
        monkeypatch.setattr(lvkit.images, "_BAND_PIXELS", band_pixels, raising=False)
    body, content_type = _png_bodies()[case]
    img = Image.open(io.BytesIO(body))
    img.load()
    expected = _reference_to_rgb(img)
    assert np.array_equal(decode_image(body, content_type), expected)


def test_sixteen_bit_rgb_keeps_high_byte():
    s16 = np.random.RandomState(3).randint(0, 65536, (64, 65, 3))
    out = decode_image(_raw_png(s16, depth=16, color_type=2), "image/png")
    assert np.array_equal(out, (s16 >> 8).astype(np.uint8))


# --- a PNG must end with its IEND chunk; bytes after it are ignored ---------------------------------

_IEND_CHUNK = _chunk(b"IEND", b"")


def _whole_png() -> bytes:
    body = png_bytes(RGB)
    assert body.endswith(_IEND_CHUNK)
    return body


def test_png_without_iend_is_truncated():
    with pytest.raises(ValidationException, match="truncated: no IEND chunk"):
        decode_image(_whole_png()[: -len(_IEND_CHUNK)], "image/png")


def test_png_with_iend_cut_in_half_is_truncated():
    with pytest.raises(ValidationException, match="truncated: no IEND chunk"):
        decode_image(_whole_png()[: -len(_IEND_CHUNK) // 2], "image/png")


def test_png_cut_in_an_ancillary_chunk_after_the_image_data_is_truncated():
    body = _whole_png()[: -len(_IEND_CHUNK)] + _chunk(b"tEXt", b"Comment\x00" + b"x" * 100) + _IEND_CHUNK
    assert np.array_equal(decode_image(body, "image/png"), RGB)
    with pytest.raises(ValidationException, match="truncated: no IEND chunk"):
        decode_image(body[: -len(_IEND_CHUNK) - 50], "image/png")


@pytest.mark.parametrize("junk", [b"\x00", b"junk after the end" * 10, _IEND_CHUNK, bytes(5000)])
def test_png_with_bytes_after_iend_is_accepted(junk):
    assert np.array_equal(decode_image(_whole_png() + junk, "image/png"), RGB)


def test_png_truncation_message_keeps_the_common_wording():
    with pytest.raises(ValidationException, match="could not be decoded .* truncated or corrupt"):
        decode_image(_whole_png()[:-4], "image/png")


def test_unreadable_exif_is_skipped_not_an_error():
    # one EXIF entry (ImageDescription, 255 bytes) whose data lies past the end: Pillow warns and skips it
    tiff = struct.pack(">2sHIH", b"MM", 42, 8, 1) + struct.pack(">HHII", 0x010E, 2, 255, 0x1000) + bytes(4)
    body = _save(Image.fromarray(RGB), "JPEG", exif=b"Exif\x00\x00" + tiff)
    with pytest.warns(UserWarning, match="Tag data larger than file"):
        Image.open(io.BytesIO(body))  # the warning is real (and an error under this suite's filters)
    assert decode_image(body, "image/jpeg").shape == (64, 80, 3)
