"""The Teams app package: icons drawn in code (no image library) and reproducible zip entries."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Callable


def png(width: int, height: int, pixel: Callable[[int, int], tuple[int, int, int, int]]) -> bytes:
    """A minimal RGBA PNG (one IDAT, no filtering): icons without an image library."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    rows = b"".join(
        b"\x00" + b"".join(bytes(pixel(x, y)) for x in range(width)) for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 9))
        + chunk(b"IEND", b"")
    )


ACCENT = (0x3B, 0x5B, 0xDB)


def _color_pixel(x: int, y: int) -> tuple[int, int, int, int]:
    inside = 56 <= x < 136 and 56 <= y < 136  # a white square on the accent colour
    return (255, 255, 255, 255) if inside else (*ACCENT, 255)


def _outline_pixel(x: int, y: int) -> tuple[int, int, int, int]:
    # Teams wants the outline icon white on transparent.
    ring = 6 <= x < 26 and 6 <= y < 26 and not (9 <= x < 23 and 9 <= y < 23)
    return (255, 255, 255, 255) if ring else (0, 0, 0, 0)


def _zip_entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # reproducible bytes
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


def app_zip(manifest_json: str) -> bytes:
    """manifest.json with the two icons Teams requires, as the zip Teams installs from."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as package:
        package.writestr(_zip_entry("manifest.json"), manifest_json)
        package.writestr(_zip_entry("color.png"), png(192, 192, _color_pixel))
        package.writestr(_zip_entry("outline.png"), png(32, 32, _outline_pixel))
    return buffer.getvalue()
