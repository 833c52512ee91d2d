"""The compiled inner loop of :mod:`ibs_study.data.png` (imported only when first needed:
importing numba costs a few hundred milliseconds)."""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["unfilter_rgb8_to_ids"]

_JIT = {"nogil": True, "cache": True, "boundscheck": False}


@numba.njit(inline="always", **_JIT)
def _predict_sub(left: int, up: int, up_left: int) -> int:
    return left


@numba.njit(inline="always", **_JIT)
def _predict_average(left: int, up: int, up_left: int) -> int:
    return (left + up) >> 1


@numba.njit(inline="always", **_JIT)
def _predict_paeth(left: int, up: int, up_left: int) -> int:
    if up == up_left:  # a flat row above: |p - left| = 0, the left neighbour wins
        return left
    pa, pb, pc = abs(up - up_left), abs(left - up_left), abs(left + up - 2 * up_left)
    if pa <= pb and pa <= pc:
        return left
    return up if pb <= pc else up_left


def _row_unfilter(predict):
    """A compiled pass over one Sub, Average or Paeth row, ``predict`` inlined: three chains (R, G
    and B) along the row, kept in registers.

    The pass takes row: (3 W,) filtered bytes, previous: (3 W,) the decoded row above,
    current: (3 W,) written.
    """

    @numba.njit(**_JIT)
    def unfilter_row(row: np.ndarray, previous: np.ndarray, current: np.ndarray) -> None:
        # the first pixel has no left neighbour, nor an upper-left one: both count as 0
        red = (np.int32(row[0]) + predict(0, np.int32(previous[0]), 0)) & 255
        green = (np.int32(row[1]) + predict(0, np.int32(previous[1]), 0)) & 255
        blue = (np.int32(row[2]) + predict(0, np.int32(previous[2]), 0)) & 255
        current[0], current[1], current[2] = red, green, blue
        for j in range(1, row.shape[0] // 3):
            i = 3 * j
            red = (np.int32(row[i]) + predict(red, np.int32(previous[i]), np.int32(previous[i - 3]))) & 255
            green = (
                np.int32(row[i + 1]) + predict(green, np.int32(previous[i + 1]), np.int32(previous[i - 2]))
            ) & 255
            blue = (
                np.int32(row[i + 2]) + predict(blue, np.int32(previous[i + 2]), np.int32(previous[i - 1]))
            ) & 255
            current[i], current[i + 1], current[i + 2] = red, green, blue

    return unfilter_row


_unfilter_sub_row = _row_unfilter(_predict_sub)
_unfilter_average_row = _row_unfilter(_predict_average)
_unfilter_paeth_row = _row_unfilter(_predict_paeth)


@numba.njit(**_JIT)
def unfilter_rgb8_to_ids(filtered: np.ndarray, height: int, width: int, ids: np.ndarray) -> int:
    """Undo the PNG row filters of an 8-bit RGB image and pack its pixels into ids.

    Args:
        filtered: (H * (1 + 3 W),) uint8, the inflated IDAT stream: per row a filter-type
            byte, then 3 W filtered bytes.
        height: H. width: W.
        ids: (H, W) uint32, written: ``R + 256 G + 256^2 B``.

    Returns:
        -1, or the first row whose filter type is not 0-4 (``ids`` is then incomplete).
    """
    stride = 3 * width
    previous = np.zeros(stride, np.uint8)  # the row above the first row is zero
    current = np.empty(stride, np.uint8)
    for r in range(height):
        start = r * (stride + 1)
        filter_type = filtered[start]
        row = filtered[start + 1 : start + 1 + stride]
        if filter_type == 0:  # None
            for i in range(stride):
                current[i] = row[i]
        elif filter_type == 2:  # Up
            for i in range(stride):
                current[i] = row[i] + previous[i]
        elif filter_type == 1:
            _unfilter_sub_row(row, previous, current)
        elif filter_type == 3:
            _unfilter_average_row(row, previous, current)
        elif filter_type == 4:
            _unfilter_paeth_row(row, previous, current)
        else:
            return r
        for j in range(width):
            ids[r, j] = (
                np.uint32(current[3 * j])
                | (np.uint32(current[3 * j + 1]) << 8)
                | (np.uint32(current[3 * j + 2]) << 16)
            )
        previous, current = current, previous
    return -1
