"""The fast panoptic PNG decoder against an independent encoder written here, libpng and Pillow."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import threading
import zlib

import numpy as np
import pytest
import torch
import torchvision.io  # noqa: F401  (registers torch.ops.image: libpng, the reference decoder)
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from ibs_study.data.panoptic import PanopticFormatError, read_id_png, read_id_runs, rgb_to_id, write_id_png
from ibs_study.data.png import PngError, decode_rgb8_ids, decode_rgb8_runs, read_png_chunks
from ibs_study.metrics.io import decode_id_png

# --------------------------------------------------------------------------- an encoder for the tests

ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _paeth(a: int, b: int, c: int) -> int:
    """The PNG specification's Paeth predictor, written out as the specification does."""
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    if pb <= pc:
        return b
    return c


def _filter_row(filter_type: int, row: np.ndarray, above: np.ndarray, bpp: int = 3) -> bytes:
    """Filter one scanline byte by byte (``row``, ``above``: (3 W,) uint8); a type outside 0-4
    writes the bytes unfiltered under that (invalid) type."""
    out = bytearray([filter_type])
    for i, x in enumerate(row.tolist()):
        a = int(row[i - bpp]) if i >= bpp else 0
        b = int(above[i])
        c = int(above[i - bpp]) if i >= bpp else 0
        prediction = {1: a, 2: b, 3: (a + b) // 2, 4: _paeth(a, b, c)}.get(filter_type, 0)
        out.append((x - prediction) % 256)
    return bytes(out)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))


def encode_png(
    rgb: np.ndarray,
    filter_types: list[int],
    *,
    interlace: bool = False,
    idat_chunks: int = 1,
) -> bytes:
    """An RGB PNG of (H, W, 3) uint8 ``rgb`` with the given filter type per scanline (cycled)."""
    height, width = rgb.shape[:2]
    passes = ADAM7 if interlace else ((0, 0, 1, 1),)
    scanlines, index = bytearray(), 0
    for x0, y0, dx, dy in passes:
        sub = rgb[y0::dy, x0::dx]
        if sub.size == 0:
            continue
        above = np.zeros(sub.shape[1] * 3, dtype=np.uint8)
        for line in sub.reshape(sub.shape[0], -1):
            scanlines += _filter_row(filter_types[index % len(filter_types)], line, above)
            above, index = line, index + 1
    stream = zlib.compress(bytes(scanlines), 6)
    cuts = np.linspace(0, len(stream), idat_chunks + 1).astype(int)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, int(interlace))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"tEXt", b"Comment\x00ancillary chunks are skipped")
        + b"".join(_chunk(b"IDAT", stream[a:b]) for a, b in zip(cuts[:-1], cuts[1:]))
        + _chunk(b"IEND", b"")
    )


def _panoptic_like(rng: np.random.Generator, height: int, width: int, noise: float) -> np.ndarray:
    """Piecewise-constant RGB ids (rectangles over a background) with a share of random pixels:
    flat runs take the Paeth shortcut, edges and noise every Paeth branch."""
    palette = rng.integers(0, 256, size=(6, 3), dtype=np.uint8)
    labels = np.zeros((height, width), dtype=np.int64)
    for k in range(1, 6):
        y, x = rng.integers(0, height), rng.integers(0, width)
        labels[y : y + rng.integers(1, height + 1), x : x + rng.integers(1, width + 1)] = k
    rgb = palette[labels]
    noisy = rng.random((height, width)) < noise
    rgb[noisy] = rng.integers(0, 256, size=(int(noisy.sum()), 3), dtype=np.uint8)
    return rgb


# --------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("filter_type", [0, 1, 2, 3, 4])
def test_each_filter_type_decodes_exactly(filter_type):
    rng = np.random.default_rng(filter_type)
    rgb = _panoptic_like(rng, 13, 29, noise=0.2)
    ids = decode_rgb8_ids(encode_png(rgb, [filter_type]))
    assert ids.dtype == np.uint32 and ids.shape == (13, 29)
    np.testing.assert_array_equal(ids, rgb_to_id(rgb))


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(1, 12),
    width=st.integers(1, 20),
    noise=st.sampled_from([0.0, 0.1, 1.0]),
    filters=st.lists(st.integers(0, 4), min_size=1, max_size=12),
    idat_chunks=st.integers(1, 3),
    seed=st.integers(0, 2**31 - 1),
)
def test_mixed_filters_equal_the_encoded_image_and_libpng(height, width, noise, filters, idat_chunks, seed):
    rgb = _panoptic_like(np.random.default_rng(seed), height, width, noise)
    data = encode_png(rgb, filters, idat_chunks=idat_chunks)
    ids = decode_rgb8_ids(data)
    np.testing.assert_array_equal(ids, rgb_to_id(rgb))
    libpng = torch.ops.image.decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8), 0, False)
    np.testing.assert_array_equal(ids, rgb_to_id(libpng.permute(1, 2, 0).numpy()))


def _runs_pixel_by_pixel(ids: np.ndarray) -> tuple[list[int], list[int]]:
    """Start (raster index) and id of every run of equal ids along each row, one pixel at a time."""
    starts, values = [], []
    height, width = ids.shape
    for r in range(height):
        for c in range(width):
            if c == 0 or ids[r, c] != ids[r, c - 1]:
                starts.append(r * width + c)
                values.append(int(ids[r, c]))
    return starts, values


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(1, 12),
    width=st.integers(1, 20),
    noise=st.sampled_from([0.0, 0.1, 1.0]),
    filters=st.lists(st.integers(0, 4), min_size=1, max_size=12),
    seed=st.integers(0, 2**31 - 1),
)
def test_runs_are_those_of_the_encoded_image(height, width, noise, filters, seed):
    rgb = _panoptic_like(np.random.default_rng(seed), height, width, noise)
    runs = decode_rgb8_runs(encode_png(rgb, filters))
    assert (runs.height, runs.width) == (height, width)
    assert runs.starts.dtype == np.int64 and runs.ids.dtype == np.uint32
    assert (runs.starts.tolist(), runs.ids.tolist()) == _runs_pixel_by_pixel(rgb_to_id(rgb))


def test_without_libdeflate_symbols_the_deflate_binding_inflates(monkeypatch):
    """Where the ``deflate`` extension exports no libdeflate functions, its Python binding inflates:
    same ids, same errors."""
    import ibs_study.data.png as png

    rgb = _panoptic_like(np.random.default_rng(4), 9, 11, noise=0.3)
    data = encode_png(rgb, [1, 2, 4])
    monkeypatch.setattr(png, "_LIBDEFLATE", None)
    monkeypatch.setattr(png, "_THREAD", threading.local())  # a scratch made without libdeflate
    np.testing.assert_array_equal(decode_rgb8_ids(data), rgb_to_id(rgb))
    assert png._THREAD.scratch._decompressor is None
    idat = data.index(b"IDAT")
    body = bytearray(data[idat + 4 : idat + 4 + struct.unpack(">I", data[idat - 4 : idat])[0]])
    body[-5] ^= 0xFF  # a corrupt zlib stream under a valid CRC
    corrupt = data[: idat - 4] + _chunk(b"IDAT", bytes(body)) + data[idat + 8 + len(body) :]
    with pytest.raises(PngError, match="corrupt image data"):
        decode_rgb8_ids(corrupt)


def test_runs_of_bad_and_other_pngs(tmp_path):
    rgb = _panoptic_like(np.random.default_rng(3), 6, 7, noise=0.5)
    with pytest.raises(PngError, match="row 2 names filter type 7"):
        decode_rgb8_runs(encode_png(rgb, [0, 0, 7]))
    interlaced = encode_png(rgb, [0], interlace=True)
    assert decode_rgb8_runs(interlaced) is None
    (tmp_path / "interlaced.png").write_bytes(interlaced)  # read through Pillow instead
    runs = read_id_runs(tmp_path / "interlaced.png")
    assert (runs.starts.tolist(), runs.ids.tolist()) == _runs_pixel_by_pixel(rgb_to_id(rgb))


def test_pillow_and_write_id_png_files_decode_like_pillow(tmp_path):
    """Pillow chooses the filters adaptively (mostly Up and Paeth on id maps)."""
    rng = np.random.default_rng(0)
    for level in (1, 6, 9):
        rgb = _panoptic_like(rng, 96, 160, noise=0.01)
        buffer = io.BytesIO()
        Image.fromarray(rgb, mode="RGB").save(buffer, format="PNG", compress_level=level)
        np.testing.assert_array_equal(decode_rgb8_ids(buffer.getvalue()), rgb_to_id(rgb))
    ids = rng.integers(0, 2**24, size=(40, 70))
    write_id_png(tmp_path / "ids.png", ids)
    np.testing.assert_array_equal(decode_id_png(tmp_path / "ids.png"), ids)


def test_other_png_layouts_fall_back_to_pillow(tmp_path):
    rng = np.random.default_rng(1)
    rgb = _panoptic_like(rng, 19, 23, noise=0.1)
    interlaced = encode_png(rgb, [0, 1, 2, 3, 4], interlace=True)
    assert decode_rgb8_ids(interlaced) is None
    (tmp_path / "adam7.png").write_bytes(interlaced)
    np.testing.assert_array_equal(decode_id_png(tmp_path / "adam7.png"), rgb_to_id(rgb))
    palette = Image.fromarray(rng.integers(0, 4, size=(8, 8), dtype=np.uint8), mode="P")
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG")
    assert read_png_chunks(buffer.getvalue())[0].color_type == 3
    assert decode_rgb8_ids(buffer.getvalue()) is None


# --------------------------------------------------------------------------- bad files


def test_corrupt_files_are_errors_never_wrong_ids(tmp_path):
    rgb = _panoptic_like(np.random.default_rng(2), 6, 7, noise=0.5)
    good = encode_png(rgb, [4])
    idat = good.index(b"IDAT")
    flipped = bytearray(good)
    flipped[idat + 6] ^= 0xFF
    with pytest.raises(PngError, match=r"CRC mismatch in chunk b'IDAT'"):
        decode_rgb8_ids(bytes(flipped))
    with pytest.raises(PngError, match="truncated"):
        decode_rgb8_ids(good[: idat + 10])
    with pytest.raises(PngError, match="wrong signature"):
        decode_rgb8_ids(b"GIF89a" + good[6:])
    with pytest.raises(PngError, match="row 3 names filter type 5"):
        decode_rgb8_ids(encode_png(rgb, [0, 0, 0, 5]))
    # IHDR promises 12 rows, the image data holds 6
    with pytest.raises(PngError, match="image data inflates to 132 bytes, 264 expected for 7 x 12 RGB"):
        decode_rgb8_ids(good[:8] + _rebuilt_ihdr(12, 7) + good[33:])
    # ... or 3 rows, and the data holds more
    with pytest.raises(PngError, match="corrupt image data"):
        decode_rgb8_ids(good[:8] + _rebuilt_ihdr(3, 7) + good[33:])
    no_data = good[:33] + _chunk(b"IEND", b"")
    with pytest.raises(PngError, match="no IDAT chunk"):
        decode_rgb8_ids(no_data)
    (tmp_path / "flipped.png").write_bytes(bytes(flipped))
    with pytest.raises(PanopticFormatError, match=r"flipped.png: not a readable PNG \(corrupt: CRC mismatch"):
        decode_id_png(tmp_path / "flipped.png")


def _rebuilt_ihdr(height: int, width: int) -> bytes:
    return _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))


# --------------------------------------------------------------------------- the training reader


def test_read_id_png_uses_the_fast_path_and_keeps_its_contract(tmp_path):
    """The datasets' reader gives int32 ids equal to Pillow's for every layout it accepts,
    and names the file and the problem for the ones it refuses."""
    rng = np.random.default_rng(3)
    rgb = _panoptic_like(rng, 21, 33, noise=0.05)
    for name, data in (
        ("paeth.png", encode_png(rgb, [4, 2])),
        ("adam7.png", encode_png(rgb, [1], interlace=True)),
    ):
        (tmp_path / name).write_bytes(data)
        ids = read_id_png(tmp_path / name)
        assert ids.dtype == np.int32
        np.testing.assert_array_equal(ids, rgb_to_id(rgb))
    ids = rng.integers(0, 2**24, size=(9, 14))
    write_id_png(tmp_path / "written.png", ids)
    np.testing.assert_array_equal(read_id_png(tmp_path / "written.png"), ids)

    Image.fromarray(rng.integers(0, 255, size=(5, 5), dtype=np.uint8), mode="L").save(tmp_path / "grey.png")
    with pytest.raises(
        PanopticFormatError, match=r"grey.png: panoptic PNG must be 8-bit RGB .* got mode 'L'"
    ):
        read_id_png(tmp_path / "grey.png")
    corrupt = bytearray(encode_png(rgb, [0]))
    corrupt[corrupt.index(b"IDAT") + 6] ^= 0xFF
    (tmp_path / "corrupt.png").write_bytes(bytes(corrupt))
    with pytest.raises(PanopticFormatError, match=r"corrupt.png: not a readable PNG \(corrupt: CRC mismatch"):
        read_id_png(tmp_path / "corrupt.png")
    with pytest.raises(PanopticFormatError, match="missing.png: panoptic PNG not found"):
        read_id_png(tmp_path / "missing.png")


# --------------------------------------------------------------------------- the compiled kernel between processes

# argv: PNG path. Decodes it once in a fresh process; reports how long the first decode took,
# whether numba was imported, and numba's cache statistics of the kernel if numba ran it.
_FIRST_DECODE = """
import json, sys, time
import numpy as np
from ibs_study.data.png import decode_rgb8_ids, decode_rgb8_runs
data = np.fromfile(sys.argv[1], dtype=np.uint8)
start = time.perf_counter()
ids = decode_rgb8_ids(data)
seconds = time.perf_counter() - start
runs = decode_rgb8_runs(data)  # the second kernel, the one scoring runs
stats = None
if "numba" in sys.modules and "ibs_study.data._png_kernel" in sys.modules:
    kernel = sys.modules["ibs_study.data._png_kernel"].unfilter_rgb8_to_ids
    stats = {"hits": sum(kernel.stats.cache_hits.values()), "misses": sum(kernel.stats.cache_misses.values())}
print(json.dumps({"seconds": seconds, "numba": "numba" in sys.modules, "stats": stats, "sum": int(ids.sum()),
                  "runs": len(runs.starts)}))
"""


def _first_decode(path, cache_dir, *, compiler: bool = True) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir)}
    if not compiler:  # no C compiler on the PATH, and none named
        env |= {"PATH": "/nonexistent", "CC": ""}
    run = subprocess.run(
        [sys.executable, "-c", _FIRST_DECODE, str(path)], capture_output=True, text=True, env=env, timeout=600
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.splitlines()[-1])


def test_a_fresh_process_loads_the_kernel_from_the_cache(tmp_path):
    """The first process compiles the kernel into the cache; the next one loads it, without numba,
    and its first decode is a small fraction of a cold compile."""
    rgb = _panoptic_like(np.random.default_rng(4), 256, 512, noise=0.001)
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "ids.png")
    cold = _first_decode(tmp_path / "ids.png", tmp_path / "cache")
    assert cold["numba"] and len(list((tmp_path / "cache").rglob("_png_kernel.*.so"))) == 2
    warm = _first_decode(tmp_path / "ids.png", tmp_path / "cache")
    assert not warm["numba"], "the second process compiled a kernel again"
    assert warm["seconds"] < cold["seconds"] / 10, (warm, cold)
    assert warm["sum"] == cold["sum"] == int(rgb_to_id(rgb).astype(np.int64).sum())
    assert warm["runs"] == cold["runs"] == len(_runs_pixel_by_pixel(rgb_to_id(rgb))[0])


def test_without_a_c_compiler_numba_caches_the_kernel_between_processes(tmp_path):
    rgb = _panoptic_like(np.random.default_rng(5), 64, 96, noise=0.01)
    Image.fromarray(rgb, mode="RGB").save(tmp_path / "ids.png")
    cold = _first_decode(tmp_path / "ids.png", tmp_path / "cache", compiler=False)
    warm = _first_decode(tmp_path / "ids.png", tmp_path / "cache", compiler=False)
    assert not list((tmp_path / "cache").rglob("*.so"))
    assert cold["stats"] == {"hits": 0, "misses": 1}
    assert warm["stats"] == {"hits": 1, "misses": 0}, "numba compiled the kernel again"
    assert warm["sum"] == cold["sum"] == int(rgb_to_id(rgb).astype(np.int64).sum())
