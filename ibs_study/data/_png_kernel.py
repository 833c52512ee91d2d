"""The compiled inner loop of :mod:`ibs_study.data.png`: numba kernels, module-level functions.

Imported only to build the native library (:mod:`ibs_study.data._native`) or where no C
compiler is found (then numba runs them, ``cache=True`` keeping the machine code between
processes); importing numba and initialising its compiler costs about 0.4 s.

The kernels allocate nothing (the caller passes every buffer) and cannot raise, so their
C versions (:data:`C_SIGNATURES`) need no Python runtime and run without the GIL.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import carray, types

__all__ = [
    "unfilter_rgb8_to_ids",
    "unfilter_rgb8_to_runs",
    "C_SIGNATURES",
    "c_unfilter_rgb8_to_ids",
    "c_unfilter_rgb8_to_runs",
]

_JIT = {"nogil": True, "cache": True, "boundscheck": False}


@numba.njit(inline="always", **_JIT)
def _predict(filter_type: int, left: int, up: int, up_left: int) -> int:
    """The prediction of filter 1 (Sub), 3 (Average) or 4 (Paeth) from the left, upper and
    upper-left bytes; the callers' loops are compiled once per filter type."""
    if filter_type == 1:
        return left
    if filter_type == 3:
        return (left + up) >> 1
    if up == up_left:  # Paeth under a flat row above: |p - left| = 0, the left neighbour wins
        return left
    pa, pb, pc = abs(up - up_left), abs(left - up_left), abs(left + up - 2 * up_left)
    if pa <= pb and pa <= pc:
        return left
    return up if pb <= pc else up_left


@numba.njit(inline="always", **_JIT)
def _unfilter_row(row: np.ndarray, previous: np.ndarray, current: np.ndarray, filter_type: int) -> None:
    """One Sub, Average or Paeth row: three chains (R, G and B) along the row, kept in registers.

    Args:
        row: (3 W,) filtered bytes. previous: (3 W,) the decoded row above.
        current: (3 W,) written. filter_type: 1, 3 or 4.
    """
    # the first pixel has no left neighbour, nor an upper-left one: both count as 0
    red = (np.int32(row[0]) + _predict(filter_type, 0, np.int32(previous[0]), 0)) & 255
    green = (np.int32(row[1]) + _predict(filter_type, 0, np.int32(previous[1]), 0)) & 255
    blue = (np.int32(row[2]) + _predict(filter_type, 0, np.int32(previous[2]), 0)) & 255
    current[0], current[1], current[2] = red, green, blue
    for j in range(1, row.shape[0] // 3):
        i = 3 * j
        red = (
            np.int32(row[i]) + _predict(filter_type, red, np.int32(previous[i]), np.int32(previous[i - 3]))
        ) & 255
        green = (
            np.int32(row[i + 1])
            + _predict(filter_type, green, np.int32(previous[i + 1]), np.int32(previous[i - 2]))
        ) & 255
        blue = (
            np.int32(row[i + 2])
            + _predict(filter_type, blue, np.int32(previous[i + 2]), np.int32(previous[i - 1]))
        ) & 255
        current[i], current[i + 1], current[i + 2] = red, green, blue


@numba.njit(inline="always", **_JIT)
def _unfilter_image_row(
    filtered: np.ndarray, r: int, stride: int, previous: np.ndarray, current: np.ndarray
) -> bool:
    """Undo the filter of row ``r`` into ``current`` (``previous``: the decoded row above);
    False where the row names a filter type other than 0-4."""
    start = r * (stride + 1)
    filter_type = filtered[start]
    row = filtered[start + 1 : start + 1 + stride]
    if filter_type == 0:  # None
        for i in range(stride):
            current[i] = row[i]
    elif filter_type == 2:  # Up
        for i in range(stride):
            current[i] = row[i] + previous[i]
    elif filter_type == 1:  # the literal filter types let the compiler specialise each row loop
        _unfilter_row(row, previous, current, 1)
    elif filter_type == 3:
        _unfilter_row(row, previous, current, 3)
    elif filter_type == 4:
        _unfilter_row(row, previous, current, 4)
    else:
        return False
    return True


@numba.njit(inline="always", **_JIT)
def _zero(row: np.ndarray) -> bool:
    """Whether every byte of ``row`` (uint8) is 0, read 8 bytes at a time."""
    words = row.shape[0] // 8
    wide = row[: 8 * words].view(np.uint64)
    for i in range(words):
        if wide[i] != 0:
            return False
    for i in range(8 * words, row.shape[0]):
        if row[i] != 0:
            return False
    return True


@numba.njit(inline="always", **_JIT)
def _pixel_id(row: np.ndarray, j: int) -> np.uint32:
    """``R + 256 G + 256^2 B`` of pixel ``j`` of a decoded (3 W,) row."""
    return np.uint32(row[3 * j]) | (np.uint32(row[3 * j + 1]) << 8) | (np.uint32(row[3 * j + 2]) << 16)


@numba.njit(**_JIT)
def unfilter_rgb8_to_ids(
    filtered: np.ndarray, height: int, width: int, rows: np.ndarray, ids: np.ndarray
) -> int:
    """Undo the PNG row filters of an 8-bit RGB image and pack its pixels into ids.

    Args:
        filtered: (H * (1 + 3 W),) uint8, the inflated IDAT stream: per row a filter-type
            byte, then 3 W filtered bytes.
        height: H. width: W.
        rows: (2, 3 W) uint8 scratch (overwritten).
        ids: (H, W) uint32, written: ``R + 256 G + 256^2 B``.

    Returns:
        -1, or the first row whose filter type is not 0-4 (``ids`` is then incomplete).
    """
    stride = 3 * width
    previous, current = rows[0], rows[1]
    previous[:] = 0  # the row above the first row is zero
    for r in range(height):
        if not _unfilter_image_row(filtered, r, stride, previous, current):
            return r
        for j in range(width):
            ids[r, j] = _pixel_id(current, j)
        previous, current = current, previous
    return -1


@numba.njit(**_JIT)
def unfilter_rgb8_to_runs(
    filtered: np.ndarray, height: int, width: int, rows: np.ndarray, starts: np.ndarray, ids: np.ndarray
) -> int:
    """Undo the PNG row filters of an 8-bit RGB image and list its runs of constant id, rows
    apart (a run never crosses a row end), without writing the id map.

    Args:
        filtered, height, width, rows: as in :func:`unfilter_rgb8_to_ids`.
        starts: (H * W,) int64, written: the raster index of each run's first pixel, ascending.
        ids: (H * W,) uint32, written: each run's id, ``R + 256 G + 256^2 B``.

    Returns:
        the number N of runs (``starts[:N]``, ``ids[:N]``), or ``-1 - r`` where row r is
        the first whose filter type is not 0-4.
    """
    stride = 3 * width
    previous, current = rows[0], rows[1]
    previous[:] = 0  # the row above the first row is zero
    n = 0
    above = 0  # the index of the first run of the row above
    for r in range(height):
        if not _unfilter_image_row(filtered, r, stride, previous, current):
            return -1 - r
        first = n
        start = r * (stride + 1) + 1
        if r > 0 and filtered[start - 1] == 2 and _zero(filtered[start : start + stride]):
            # an Up row of zeros repeats the row above, and so do its runs, one row further on
            for k in range(first - above):
                starts[n], ids[n] = starts[above + k] + width, ids[above + k]
                n += 1
            above = first
            previous, current = current, previous
            continue
        above = first
        last = _pixel_id(current, 0)
        starts[n], ids[n] = r * width, last
        n += 1
        for j in range(1, width):
            value = _pixel_id(current, j)
            if value != last:
                starts[n], ids[n] = r * width + j, value
                n += 1
                last = value
        previous, current = current, previous
    return n


def c_unfilter_rgb8_to_ids(filtered, height, width, rows, ids):  # noqa: ANN001, ANN201 (C pointers)
    """:func:`unfilter_rgb8_to_ids` on raw pointers, for the native library."""
    stride = 3 * width
    return unfilter_rgb8_to_ids(
        carray(filtered, (height * (1 + stride),)),
        height,
        width,
        carray(rows, (2, stride)),
        carray(ids, (height, width)),
    )


def c_unfilter_rgb8_to_runs(filtered, height, width, rows, starts, ids):  # noqa: ANN001, ANN201 (C pointers)
    """:func:`unfilter_rgb8_to_runs` on raw pointers, for the native library."""
    stride = 3 * width
    return unfilter_rgb8_to_runs(
        carray(filtered, (height * (1 + stride),)),
        height,
        width,
        carray(rows, (2, stride)),
        carray(starts, (height * width,)),
        carray(ids, (height * width,)),
    )


_u8 = types.CPointer(types.uint8)
# name -> (C entry point, its signature): what :mod:`ibs_study.data._native` compiles
C_SIGNATURES = {
    "unfilter_rgb8_to_ids": (
        c_unfilter_rgb8_to_ids,
        types.int64(_u8, types.int64, types.int64, _u8, types.CPointer(types.uint32)),
    ),
    "unfilter_rgb8_to_runs": (
        c_unfilter_rgb8_to_runs,
        types.int64(
            _u8, types.int64, types.int64, _u8, types.CPointer(types.int64), types.CPointer(types.uint32)
        ),
    ),
}
