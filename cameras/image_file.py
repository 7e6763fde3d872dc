"""Reading one image file strictly: a file that is missing, unreadable, undecodable or cut short
is a `CameraSourceError` naming the file and what is wrong with it, never a half-grey image.

`cv2.imdecode` happily decodes a truncated JPEG (the missing rows come out grey) and some cut
PNGs, so the bytes are checked first: a JPEG must have its end-of-image marker after its last
start-of-scan, a PNG its IEND chunk, a BMP at least the size its header declares. The message
starts with the kind of problem (``truncated JPEG``, ``cannot decode``, ``cannot read``), then
names the file, so a FAILSAFE verdict carries it as its cause.
"""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np

from edge.errors import CameraSourceError

_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
_JPEG_SOS = b"\xff\xda"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_IEND = b"IEND\xaeB`\x82"


def integrity_problem(data: bytes | memoryview | np.ndarray) -> str | None:
    """What is wrong with an encoded image's bytes, or None (formats it cannot check: None)."""
    raw = bytes(data) if not isinstance(data, bytes) else data
    if len(raw) == 0:
        return "empty file"
    if raw.startswith(_JPEG_SOI):
        sos = raw.rfind(_JPEG_SOS)
        eoi = raw.rfind(_JPEG_EOI)
        if sos < 0:
            return "truncated JPEG (no image data)"
        if eoi < sos:
            return "truncated JPEG (no end-of-image marker)"
        return None
    if raw.startswith(_PNG_SIGNATURE):
        if raw.rfind(_PNG_IEND) < 0:
            return "truncated PNG (no IEND chunk)"
        return None
    if raw.startswith(b"BM") and len(raw) >= 6:
        (declared,) = struct.unpack_from("<I", raw, 2)
        if len(raw) < declared:
            return f"truncated BMP ({len(raw)} of {declared} bytes)"
    return None


def decode_strict(data: np.ndarray, flag: int, name: str) -> np.ndarray:
    """Decode encoded bytes (uint8 1-D) into an 8-bit HxW or HxWx3 image; raises `CameraSourceError`."""
    problem = integrity_problem(data)
    if problem is not None:
        raise CameraSourceError(f"{problem}: {name}")
    img = cv2.imdecode(data, flag)
    if img is None or img.size == 0:
        raise CameraSourceError(f"cannot decode {name} ({len(data)} bytes, not an image OpenCV reads)")
    if img.dtype != np.uint8:  # pragma: no cover - ANYCOLOR without ANYDEPTH is 8-bit
        img = cv2.convertScaleAbs(img)
    if img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    elif img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    return img


def read_image(path: Path, flag: int) -> np.ndarray:
    """Read and strictly decode one image file; raises `CameraSourceError` naming the file."""
    try:
        data = np.fromfile(str(path), np.uint8)
    except FileNotFoundError as exc:
        raise CameraSourceError(f"cannot read {path}: file not found") from exc
    except OSError as exc:
        raise CameraSourceError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return decode_strict(data, flag, str(path))
