"""Request images in, mask PNGs out.

Owns: sniffing the body against its ContentType, decoding it fully to RGB uint8, the size
rules, and encoding ``AnomalyMask`` PNGs. Imports ``lvkit.errors`` and ``lvkit.shapes`` only.

Choices where the public material is silent (the same every time):

* Pixel modes are converted to 8-bit RGB: grayscale and 1-bit are replicated to three
  channels; palette images are expanded through their palette; an alpha channel is dropped
  (pixels keep their colour, transparency is ignored); 16-bit samples keep their high byte
  (``value >> 8``); CMYK goes through Pillow's CMYK->RGB conversion.
* EXIF orientation is not applied: width and height are those stored in the file.
* Metadata Pillow cannot read (an EXIF tag pointing past the end of the file, say) is skipped
  with the ``UserWarning`` Pillow gives, never refused: the pixels decode the same, and nothing
  here reads metadata. (Where warnings are errors, as under the test suite, such a warning
  escaping would turn a decodable image into a 500.)
* A PNG must run chunk by chunk up to a whole IEND chunk, or it is refused as truncated
  (``ValidationException``). Pillow stops reading after the image data and accepts a file whose
  IEND is missing or cut, so an upload cut after its last IDAT chunk would be scored as if it
  were whole; the PNG specification makes IEND the last chunk of every datastream, which makes it
  the one sign that the whole file arrived. Bytes after IEND are ignored, as libpng ignores
  them (it stops reading at IEND): nothing there is part of the image.
* Memory: pixels are converted in bands of about a million pixels written straight into the
  output array, with no 64-bit or float64 temporaries, so a request's peak is the image as Pillow
  decoded it plus the RGB result plus one band: at most about 64 + 48 MB at 4096x4096.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from lvkit.errors import ValidationException
from lvkit.shapes import CONTENT_TYPES

if TYPE_CHECKING:
    import numpy.typing as npt

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MAX_SIDE",
    "MIN_SIDE",
    "decode_image",
    "encode_mask_png",
    "encode_png",
    "hex_to_rgb",
    "read_rgb",
    "sniff_content_type",
    "to_rgb",
]

MIN_SIDE = 64
MAX_SIDE = 4096
#: default request body limit: datasets allowed 8 MB per image (configurable per service)
DEFAULT_MAX_BYTES = 8 * 1024 * 1024

#: to_rgb converts this many pixels at a time (a band of whole rows, at least one row)
_BAND_PIXELS = 1 << 20
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
#: the type of the last chunk of every PNG
_IEND = b"IEND"

_MAGIC = {"image/png": (b"\x89PNG\r\n\x1a\n",), "image/jpeg": (b"\xff\xd8\xff",)}


def sniff_content_type(body: bytes) -> str | None:
    """The content type the bytes really are (``image/png``, ``image/jpeg``) or None.

    Examples
    --------
    >>> sniff_content_type(b"\\x89PNG\\r\\n\\x1a\\n...")
    'image/png'
    >>> sniff_content_type(b"GIF89a") is None
    True
    """
    for content_type, magics in _MAGIC.items():
        if any(body.startswith(m) for m in magics):
            return content_type
    return None


def check_content_type(content_type: object) -> str:
    """Validate the ContentType field; return it."""
    if not isinstance(content_type, str) or not 1 <= len(content_type) <= 255:
        raise ValidationException(
            f"ContentType is required (1-255 characters); valid values are {' and '.join(CONTENT_TYPES)}"
        )
    if content_type not in CONTENT_TYPES:
        raise ValidationException(
            f"ContentType {content_type[:64]!r} is not supported; valid values are "
            f"{' and '.join(CONTENT_TYPES)}"
        )
    return content_type


def check_body(body: object, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """Validate the Body field's presence and size; return it as bytes."""
    if isinstance(body, (bytearray, memoryview)):
        body = bytes(body)
    if not isinstance(body, bytes):
        raise ValidationException(f"Body must be the raw image bytes, got {type(body).__name__}")
    if not body:
        raise ValidationException("Body is empty: send the raw bytes of a PNG or JPEG image")
    if len(body) > max_bytes:
        raise ValidationException(
            f"Body is {len(body):,} bytes; the limit is {max_bytes:,} bytes"
        )
    return body


def check_png_complete(body: bytes) -> None:
    """Raise ValidationException unless the PNG's chunks run whole up to its IEND chunk.

    Walks the chunk headers only (length, type) from the signature on; bytes after IEND are
    ignored, as libpng ignores them.

    Examples
    --------
    >>> png = encode_png(np.zeros((64, 64, 3), np.uint8))
    >>> check_png_complete(png + b"trailing bytes")
    >>> check_png_complete(png[:-12])
    Traceback (most recent call last):
    ...
    lvkit.errors.ValidationException: ... (the PNG is truncated: no IEND chunk); is it truncated or corrupt?
    """
    pos, size = len(_MAGIC["image/png"][0]), len(body)
    while pos + 8 <= size:
        (length,) = struct.unpack_from(">I", body, pos)
        end = pos + 12 + length  # length, type, data, CRC
        if body[pos + 4 : pos + 8] == _IEND:
            if end <= size:
                return
            break
        pos = end
    raise ValidationException(
        "the image could not be decoded (the PNG is truncated: no IEND chunk); is it truncated or corrupt?"
    )


def to_rgb(image: Image.Image) -> npt.NDArray[np.uint8]:
    """Convert a Pillow image to RGB uint8 (H, W, 3) by the module's fixed rules.

    The image is converted in bands of rows written straight into the output, so the only
    full-size arrays are the decoded image and the result (see the module docstring).

    Parameters
    ----------
    image : PIL.Image.Image
        Any mode Pillow reads; it is loaded if it is not yet.

    Returns
    -------
    ndarray of shape (H, W, 3), dtype uint8
        A new, writable, C-contiguous array (``torch.from_numpy`` warns on read-only ones).

    Examples
    --------
    >>> gray16 = Image.frombytes("I;16", (2, 1), bytes([0x34, 0x12, 0xFF, 0xFF]))
    >>> to_rgb(gray16).tolist()
    [[[18, 18, 18], [255, 255, 255]]]
    """
    image.load()
    width, height = image.size
    out = np.empty((height, width, 3), np.uint8)
    rows = max(1, _BAND_PIXELS // max(width, 1))
    for top in range(0, height, rows):
        bottom = min(top + rows, height)
        band = image if (top, bottom) == (0, height) else image.crop((0, top, width, bottom))
        _band_to_rgb(band, out[top:bottom])
    return out


def read_rgb(path: str | os.PathLike[str]) -> npt.NDArray[np.uint8]:
    """An image file as RGB uint8 (H, W, 3), by the rules of :func:`to_rgb` (as DetectAnomalies
    decodes it), so training and serving see the same pixels.

    Raises ``FileNotFoundError`` for a missing file and ``OSError`` for one Pillow cannot read.
    """
    with Image.open(path) as image:
        return to_rgb(image)


def _band_to_rgb(band: Image.Image, out: npt.NDArray[np.uint8]) -> None:
    """Write one band of rows, converted to RGB, into ``out`` (a view into the result)."""
    mode = band.mode
    gray: npt.NDArray[np.uint8]
    if mode in _SIXTEEN_BIT:  # uint16 of either byte order: shift in 16 bits, then narrow
        gray = (np.asarray(band) >> 8).astype(np.uint8)
    elif mode == "I":  # int32: clip to the 16-bit range, then keep the high byte
        gray = (np.clip(np.asarray(band), 0, 65535) >> 8).astype(np.uint8)
    elif mode == "F":  # float32: clip to 0..255, truncate
        gray = np.clip(np.asarray(band), 0, 255).astype(np.uint8)
    elif mode == "L":
        gray = np.asarray(band)
    else:
        if mode in ("P", "PA"):
            band = band.convert("RGBA")
        if band.mode != "RGB":
            band = band.convert("RGB")
        out[...] = np.asarray(band)
        return
    for channel in range(3):  # three strided copies: much faster than broadcasting (H, W, 1)
        out[:, :, channel] = gray


def decode_image(
    body: bytes,
    content_type: str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> npt.NDArray[np.uint8]:
    """Validate and fully decode a DetectAnomalies body into RGB uint8 (H, W, 3).

    Parameters
    ----------
    body : bytes
        The raw request body.
    content_type : {"image/png", "image/jpeg"}
        The request's ContentType; the bytes must really be of that type.
    max_bytes : int, default 8 MiB
        Larger bodies are refused.

    Returns
    -------
    ndarray of shape (H, W, 3), dtype uint8

    Raises
    ------
    ValidationException
        Empty, too large, not the declared type, truncated or corrupt (a PNG without its IEND
        chunk included), or a side outside 64..4096.

    Examples
    --------
    >>> png = encode_png(np.zeros((64, 80, 3), np.uint8))
    >>> decode_image(png, "image/png").shape
    (64, 80, 3)
    >>> decode_image(png, "image/jpeg")
    Traceback (most recent call last):
    ...
    lvkit.errors.ValidationException: ... the body is not a JPEG image (its bytes are image/png)
    """
    content_type = check_content_type(content_type)
    body = check_body(body, max_bytes=max_bytes)
    actual = sniff_content_type(body)
    if actual != content_type:
        what = f"its bytes are {actual}" if actual else "its bytes are neither PNG nor JPEG"
        kind = content_type.split("/")[1].upper()
        raise ValidationException(f"ContentType is {content_type} but the body is not a {kind} image ({what})")
    if actual == "image/png":
        check_png_complete(body)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")  # unreadable metadata
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(body))
            width, height = image.size
            check_size(width, height)
            image.load()
    except ValidationException:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ValidationException(f"the image could not be decoded ({exc}); is it truncated or corrupt?") from exc
    return to_rgb(image)


def check_size(width: int, height: int) -> None:
    """Raise ValidationException unless both sides are within 64..4096 pixels."""
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise ValidationException(
            f"the image is {width}x{height} pixels; width and height must each be "
            f"between {MIN_SIDE} and {MAX_SIDE} pixels"
        )


def encode_png(rgb: npt.NDArray[np.uint8]) -> bytes:
    """Encode an RGB uint8 (H, W, 3) array (or gray (H, W)) as PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG")
    return buf.getvalue()


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    """``"#RRGGBB"`` -> (r, g, b).

    >>> hex_to_rgb("#ff8000")
    (255, 128, 0)
    """
    c = color.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


def encode_mask_png(label_map: npt.NDArray[np.integer], colors: list[str]) -> bytes:
    """Encode a label map as the ``AnomalyMask`` PNG: RGB, background black.

    Parameters
    ----------
    label_map : ndarray of shape (H, W), integer
        0 = background, ``k`` = the label whose colour is ``colors[k - 1]``.
    colors : list of str
        ``"#RRGGBB"`` per label; black is reserved for background.

    Examples
    --------
    >>> lm = np.zeros((64, 64), np.int64); lm[:8, :8] = 1
    >>> png = encode_mask_png(lm, ["#FF0000"])
    >>> rgb = decode_image(png, "image/png"); rgb[0, 0].tolist(), rgb[63, 63].tolist()
    ([255, 0, 0], [0, 0, 0])
    """
    table = np.zeros((len(colors) + 1, 3), np.uint8)
    for i, color in enumerate(colors, start=1):
        rgb = hex_to_rgb(color)
        if rgb == (0, 0, 0):
            raise ValueError("black is the background colour of AnomalyMask; a label cannot use it")
        table[i] = rgb
    return encode_png(table[label_map])
