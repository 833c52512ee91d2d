"""A fast decoder for panoptic id PNGs: 8-bit RGB, non-interlaced, straight to uint32 ids.

Measured on 1024 x 2048 panoptic PNGs (docs/benchmarks.md), libpng spends most of its time
in zlib's row-by-row inflate and the rest in unfiltering. Here the whole IDAT stream is
inflated in one call by libdeflate (the ``deflate`` package; the decoded size is known
from the header, so no buffer grows), and one compiled pass (numba) undoes the five PNG
row filters and packs each pixel's three bytes into ``id = R + 256 G + 256^2 B``. Panoptic
maps are piecewise constant, which the Paeth filter's common case exploits: where the row
above is flat (``b == c``) the prediction is the left neighbour, so most of a Paeth row
costs an add. Both steps release the GIL, so threads decode in parallel.

Only the layout every panoptic tool writes takes this path (colour type 2, bit depth 8,
no interlacing); :func:`decode_rgb8_ids` returns None for anything else and the caller
falls back to libpng. Chunk CRCs and the zlib checksum are verified, so a corrupt file is
an error, never a wrong id map.
"""

from __future__ import annotations

import functools
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import deflate
import numpy as np

from ibs_study.errors import DataError

__all__ = ["PNG_SIGNATURE", "PngHeader", "PngError", "read_png_chunks", "decode_rgb8_ids"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class PngError(DataError):
    """The bytes are not a well-formed PNG (the message says what is wrong)."""


@dataclass(frozen=True)
class PngHeader:
    """The IHDR fields of a PNG."""

    width: int
    height: int
    bit_depth: int
    color_type: int
    interlace: int

    @property
    def is_rgb8(self) -> bool:
        """8-bit truecolour without alpha, not interlaced: the layout of panoptic id PNGs."""
        return self.bit_depth == 8 and self.color_type == 2 and self.interlace == 0


def read_png_chunks(data: bytes | memoryview) -> tuple[PngHeader, bytes]:
    """Parse the chunk structure of a PNG and return its header and the joined IDAT data.

    Every chunk's CRC is checked; ancillary chunks are skipped.

    Args:
        data: the whole file.

    Returns:
        (header, the zlib stream formed by all IDAT chunks in order).

    Raises:
        PngError: wrong signature, a truncated or corrupt chunk, no IHDR first, no IDAT
            or no IEND.
    """
    view = memoryview(data)
    if bytes(view[:8]) != PNG_SIGNATURE:
        raise PngError("not a PNG (wrong signature)")
    position, header, idat = 8, None, []
    while True:
        if position + 8 > len(view):
            raise PngError("truncated: the file ends before its IEND chunk")
        length, kind = struct.unpack(">I4s", view[position : position + 8])
        end = position + 12 + length
        if end > len(view):
            raise PngError(f"truncated: chunk {kind!r} at byte {position} runs past the end of the file")
        body = view[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", view[end - 4 : end])
        if zlib.crc32(body, zlib.crc32(kind)) != crc:
            raise PngError(f"corrupt: CRC mismatch in chunk {kind!r} at byte {position}")
        if header is None and kind != b"IHDR":
            raise PngError(f"the first chunk must be IHDR, got {kind!r}")
        if kind == b"IHDR":
            if length != 13:
                raise PngError(f"IHDR must hold 13 bytes, got {length}")
            width, height, bit_depth, color_type, _, _, interlace = struct.unpack(">IIBBBBB", body)
            header = PngHeader(width, height, bit_depth, color_type, interlace)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        position = end
    if not idat:
        raise PngError("no IDAT chunk (no image data)")
    return header, b"".join(idat)


def decode_rgb8_ids(data: bytes | memoryview) -> np.ndarray | None:
    """Decode an 8-bit RGB PNG into an (H, W) uint32 id map, ``id = R + 256 G + 256^2 B``.

    Args:
        data: the whole PNG file.

    Returns:
        (H, W) uint32 ids, or None when the PNG is valid but not 8-bit RGB without
        interlacing (the caller decodes it another way).

    Raises:
        PngError: the file is corrupt (see :func:`read_png_chunks`), its image data does not
            inflate to exactly ``H * (1 + 3 W)`` bytes, or a row names an unknown filter.
    """
    header, stream = read_png_chunks(data)
    if not header.is_rgb8:
        return None
    height, width = header.height, header.width
    if height == 0 or width == 0:
        raise PngError(f"IHDR gives an empty image ({width} x {height})")
    size = height * (1 + 3 * width)
    try:
        filtered = deflate.zlib_decompress(stream, size)
    except deflate.DeflateError as err:
        raise PngError(f"corrupt image data: {err}") from err
    if len(filtered) != size:
        raise PngError(
            f"image data inflates to {len(filtered)} bytes, {size} expected for {width} x {height} RGB"
        )
    ids = np.empty((height, width), dtype=np.uint32)
    bad_row = _unfilter_kernel()(np.frombuffer(filtered, dtype=np.uint8), height, width, ids)
    if bad_row >= 0:
        filter_type = filtered[bad_row * (1 + 3 * width)]
        raise PngError(f"row {bad_row} names filter type {filter_type}; PNG defines 0-4")
    return ids


@functools.cache
def _unfilter_kernel() -> Callable[[np.ndarray, int, int, np.ndarray], int]:
    """The compiled unfilter-and-pack pass, imported on first use (numba compiles it once and
    caches the machine code next to its module, so later processes only load it)."""
    from ibs_study.data._png_kernel import unfilter_rgb8_to_ids

    return unfilter_rgb8_to_ids
