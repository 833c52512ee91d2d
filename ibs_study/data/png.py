"""A fast decoder for panoptic id PNGs: 8-bit RGB, non-interlaced, straight to uint32 ids.

Measured on 1024 x 2048 panoptic PNGs (docs/benchmarks.md), libpng spends most of its time
in zlib's row-by-row inflate and the rest in unfiltering. Here the whole IDAT stream is
inflated in one call by libdeflate (the library inside the ``deflate`` package, called
through ctypes into a buffer each thread reuses; the decoded size is known from the
header, so no buffer grows), and one compiled pass (numba) undoes the five PNG row filters
and packs each pixel's three bytes into ``id = R + 256 G + 256^2 B``
(:func:`decode_rgb8_ids`) or lists the runs of constant id along each row
(:func:`decode_rgb8_runs`, what scoring needs, without writing the id map). Panoptic
maps are piecewise constant, which the Paeth filter's common case exploits: where the row
above is flat (``b == c``) the prediction is the left neighbour, so most of a Paeth row
costs an add. Both steps release the GIL, so threads decode in parallel. The compiled pass
is built once into a shared library (:mod:`ibs_study.data._native`), so a new process
decodes its first PNG without importing numba.

Only the layout every panoptic tool writes takes this path (colour type 2, bit depth 8,
no interlacing); :func:`decode_rgb8_ids` returns None for anything else and the caller
falls back to libpng. Chunk CRCs and the zlib checksum are verified, so a corrupt file is
an error, never a wrong id map.
"""

from __future__ import annotations

import ctypes
import struct
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import deflate
import numpy as np

from ibs_study.data import _native
from ibs_study.errors import DataError

__all__ = [
    "PNG_SIGNATURE",
    "PngHeader",
    "PngError",
    "IdRuns",
    "read_png_chunks",
    "decode_rgb8_ids",
    "decode_rgb8_runs",
]

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


@dataclass(frozen=True)
class IdRuns:
    """An id map as its horizontal runs of constant id; a run never crosses a row end.

    Attributes:
        height, width: the map's size H, W.
        starts: (N,) int64 raster index (``row * W + column``) of each run's first pixel,
            ascending; every row starts a run.
        ids: (N,) uint32 id of each run.
    """

    height: int
    width: int
    starts: np.ndarray
    ids: np.ndarray


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
    inflated = _inflate_rgb8(data)
    if inflated is None:
        return None
    header, filtered, scratch = inflated
    ids = np.empty((header.height, header.width), dtype=np.uint32)
    bad_row = _kernel("unfilter_rgb8_to_ids", 5)(filtered, header.height, header.width, scratch.rows, ids)
    if bad_row >= 0:
        _raise_bad_filter(filtered, bad_row, header.width)
    return ids


def decode_rgb8_runs(data: bytes | memoryview) -> IdRuns | None:
    """Decode an 8-bit RGB PNG into its runs of constant id along each row
    (``id = R + 256 G + 256^2 B``), without building the id map.

    Args:
        data: the whole PNG file.

    Returns:
        the runs, or None when the PNG is valid but not 8-bit RGB without interlacing.

    Raises:
        PngError: as :func:`decode_rgb8_ids`.
    """
    inflated = _inflate_rgb8(data)
    if inflated is None:
        return None
    header, filtered, scratch = inflated
    height, width = header.height, header.width
    starts, ids = scratch.run_buffers(height * width)
    count = _kernel("unfilter_rgb8_to_runs", 6)(filtered, height, width, scratch.rows, starts, ids)
    if count < 0:
        _raise_bad_filter(filtered, -1 - count, width)
    return IdRuns(height, width, starts[:count].copy(), ids[:count].copy())


def _raise_bad_filter(filtered: np.ndarray, row: int, width: int) -> None:
    filter_type = filtered[row * (1 + 3 * width)]
    raise PngError(f"row {row} names filter type {filter_type}; PNG defines 0-4")


def _inflate_rgb8(data: bytes | memoryview) -> tuple[PngHeader, np.ndarray, _Scratch] | None:
    """The header, the inflated IDAT stream (a view into this thread's scratch buffer, valid
    until its next decode) and the scratch of an 8-bit RGB PNG; None for another layout."""
    header, stream = read_png_chunks(data)
    if not header.is_rgb8:
        return None
    height, width = header.height, header.width
    if height == 0 or width == 0:
        raise PngError(f"IHDR gives an empty image ({width} x {height})")
    size = height * (1 + 3 * width)
    scratch = _scratch(width)
    filtered = scratch.inflate(stream, size)
    if len(filtered) != size:
        raise PngError(
            f"image data inflates to {len(filtered)} bytes, {size} expected for {width} x {height} RGB"
        )
    return header, filtered, scratch


_POINTER, _INT = ctypes.c_void_p, ctypes.c_int64
_LIBDEFLATE_SUCCESS = 0


def _libdeflate() -> ctypes.CDLL | None:
    """libdeflate as linked into the ``deflate`` package's extension (its symbols are
    exported), for calls that release the GIL and write into a given buffer; None where
    they are not found (then ``deflate.zlib_decompress`` inflates)."""
    try:
        library = ctypes.CDLL(deflate._deflate.__file__)
        library.libdeflate_alloc_decompressor.restype = ctypes.c_void_p
        library.libdeflate_alloc_decompressor.argtypes = ()
        library.libdeflate_free_decompressor.restype = None
        library.libdeflate_free_decompressor.argtypes = (ctypes.c_void_p,)
        library.libdeflate_zlib_decompress.restype = ctypes.c_int
        library.libdeflate_zlib_decompress.argtypes = (
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.POINTER(ctypes.c_size_t),
        )
    except (AttributeError, OSError):
        return None
    return library


_LIBDEFLATE = _libdeflate()


class _Scratch:
    """One thread's reusable decoding buffers (large allocations cost page faults on every
    image otherwise) and its libdeflate decompressor (which threads must not share)."""

    def __init__(self) -> None:
        self.rows = np.empty((2, 0), dtype=np.uint8)
        self._inflated = np.empty(0, dtype=np.uint8)
        self._starts = np.empty(0, dtype=np.int64)
        self._ids = np.empty(0, dtype=np.uint32)
        self._decompressor = _LIBDEFLATE.libdeflate_alloc_decompressor() if _LIBDEFLATE else None
        if _LIBDEFLATE and not self._decompressor:
            raise MemoryError("libdeflate could not allocate a decompressor")
        # kept here: at interpreter exit the module's globals may be gone before this object
        self._free = _LIBDEFLATE.libdeflate_free_decompressor if _LIBDEFLATE else None

    def __del__(self) -> None:
        if self._decompressor:
            self._free(self._decompressor)

    def inflate(self, stream: bytes, size: int) -> np.ndarray:
        """The zlib ``stream`` inflated (at most ``size`` bytes, else :class:`PngError`); the
        Adler-32 checksum is verified."""
        if self._decompressor is None:
            try:
                return np.frombuffer(deflate.zlib_decompress(stream, size), dtype=np.uint8)
            except deflate.DeflateError as err:
                raise PngError(f"corrupt image data: {err}") from err
        if len(self._inflated) < size:
            self._inflated = np.empty(size, dtype=np.uint8)
        actual = ctypes.c_size_t()
        result = _LIBDEFLATE.libdeflate_zlib_decompress(
            self._decompressor, stream, len(stream), self._inflated.ctypes.data, size, ctypes.byref(actual)
        )
        if result != _LIBDEFLATE_SUCCESS:
            reason = "does not fit the image size" if result == 3 else "not a valid zlib stream"
            raise PngError(f"corrupt image data: {reason} (libdeflate result {result})")
        return self._inflated[: actual.value]

    def run_buffers(self, pixels: int) -> tuple[np.ndarray, np.ndarray]:
        """(pixels,) int64 and uint32 buffers for the runs of an image (at most one per pixel)."""
        if len(self._starts) < pixels:
            self._starts = np.empty(pixels, dtype=np.int64)
            self._ids = np.empty(pixels, dtype=np.uint32)
        return self._starts, self._ids


_THREAD = threading.local()


def _scratch(width: int) -> _Scratch:
    """This thread's :class:`_Scratch`, its row buffers sized for ``width`` pixels."""
    scratch = getattr(_THREAD, "scratch", None)
    if scratch is None:
        scratch = _THREAD.scratch = _Scratch()
    if scratch.rows.shape[1] != 3 * width:
        scratch.rows = np.empty((2, 3 * width), dtype=np.uint8)
    return scratch


def _kernel(name: str, num_args: int) -> Callable[..., int]:
    """The compiled pass ``name`` of :mod:`ibs_study.data._png_kernel`, taking ``num_args``
    arguments (arrays and integers: see :func:`ibs_study.data._native.kernel`)."""
    argtypes = (_POINTER, _INT, _INT) + (_POINTER,) * (num_args - 3)
    return _native.kernel("ibs_study.data._png_kernel", name, argtypes)
