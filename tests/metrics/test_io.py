"""Readers of the metrics: PNG decoding (fast path and Pillow) and threaded prefetching."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from ibs_study.data.panoptic import MAX_SEGMENT_ID, PanopticFormatError, rgb_to_id, write_id_png
from ibs_study.metrics.io import decode_id_png, prefetch


@settings(max_examples=20, deadline=None)
@given(
    height=st.integers(1, 17),
    width=st.integers(1, 23),
    seed=st.integers(0, 2**31 - 1),
)
def test_decode_equals_pillow_and_the_written_ids(tmp_path_factory, height, width, seed):
    rng = np.random.default_rng(seed)
    ids = rng.choice([0, 1, 255, 256, 65535, 65536, 70001, MAX_SEGMENT_ID], size=(height, width))
    path = tmp_path_factory.mktemp("png") / "ids.png"
    write_id_png(path, ids)
    decoded = decode_id_png(path)
    assert decoded.dtype == np.uint32 and decoded.shape == (height, width)
    np.testing.assert_array_equal(decoded, ids)
    np.testing.assert_array_equal(decoded, rgb_to_id(np.asarray(Image.open(path))))


def test_decode_rejects_non_rgb(tmp_path):
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8), mode="L").save(tmp_path / "gray.png")
    with pytest.raises(PanopticFormatError, match="gray.png: panoptic PNG must be 8-bit RGB"):
        decode_id_png(tmp_path / "gray.png")
    Image.fromarray(np.zeros((4, 4, 4), dtype=np.uint8), mode="RGBA").save(tmp_path / "rgba.png")
    with pytest.raises(PanopticFormatError, match="rgba.png: panoptic PNG must be 8-bit RGB"):
        decode_id_png(tmp_path / "rgba.png")
    with pytest.raises(PanopticFormatError, match="missing.png: panoptic PNG not found"):
        decode_id_png(tmp_path / "missing.png")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(PanopticFormatError, match="broken.png: not a readable PNG"):
        decode_id_png(tmp_path / "broken.png")


def test_prefetch_keeps_order_and_raises_at_the_failing_item():
    assert list(prefetch(lambda x: x * x, range(20), threads=2, depth=3)) == [x * x for x in range(20)]

    def fail_at_five(x: int) -> int:
        if x == 5:
            raise ValueError("item 5")
        return x

    results = []
    with pytest.raises(ValueError, match="item 5"):
        for value in prefetch(fail_at_five, range(10)):
            results.append(value)
    assert results == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="threads >= 1"):
        list(prefetch(abs, [1], threads=0))


def test_prefetch_in_the_callers_pool_leaves_it_running():
    with ThreadPoolExecutor(max_workers=2) as pool:
        assert list(prefetch(lambda x: x + 1, range(9), depth=3, pool=pool)) == list(range(1, 10))
        assert pool.submit(abs, -4).result() == 4  # not shut down by prefetch
