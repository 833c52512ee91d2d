"""COCO-panoptic structures, PNG id encoding and strict validation.

The on-disk format (used by Cityscapes, Mapillary Vistas, COCO and the synthetic set):

* one JSON with ``images`` (``id``, ``file_name``, ``width``, ``height``), ``annotations``
  (``image_id``, ``file_name`` of the id PNG, ``segments_info``) and ``categories``
  (``id``, ``name``, ``isthing``, ``color``);
* one 8-bit RGB PNG per image whose pixels encode a segment id as
  ``id = R + 256 * G + 256**2 * B``; id 0 is void (unlabeled).

Area policy: a segment whose JSON ``area`` differs from its pixel count in the PNG is a
:class:`PanopticFormatError` (the JSON is then not describing the PNG it names). Use
``check_area=False`` to read such files anyway; the pixel count is what every metric
uses, as panopticapi does.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ibs_study.data.png import IdRuns, PngError, decode_rgb8_ids, decode_rgb8_runs
from ibs_study.errors import DataError
from ibs_study.input_files import expect, read_json

logger = logging.getLogger(__name__)

__all__ = [
    "VOID_ID",
    "CategoryInfo",
    "Segment",
    "PanopticSample",
    "ImageRecord",
    "PanopticAnnotations",
    "PanopticFormatError",
    "rgb_to_id",
    "id_to_rgb",
    "read_fast_id_png",
    "read_id_png",
    "read_id_runs",
    "id_runs",
    "write_id_png",
    "segments_from_id_map",
    "check_segments_match_png",
    "check_segments_match_areas",
    "load_panoptic_json",
    "write_panoptic_json",
    "categories_from_json",
]

T = TypeVar("T")

VOID_ID = 0
MAX_SEGMENT_ID = 256**3 - 1


class PanopticFormatError(DataError):
    """Input that does not follow the COCO-panoptic format; the message names where and what."""


@dataclass(frozen=True)
class CategoryInfo:
    """One dataset category.

    Args:
        id: dataset category id (as in the JSON; not necessarily contiguous).
        name: readable name.
        isthing: True for countable classes with instances.
        color: RGB colour used for visualisation.
        supercategory: optional grouping name.
    """

    id: int
    name: str
    isthing: bool
    color: tuple[int, int, int] = (0, 0, 0)
    supercategory: str = ""

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "isthing": int(self.isthing),
            "color": list(self.color),
            "supercategory": self.supercategory,
        }


@dataclass(frozen=True)
class Segment:
    """One panoptic segment of an image.

    Args:
        id: segment id as encoded in the PNG (> 0).
        category_id: dataset category id.
        iscrowd: 1 for a crowd region (a group of things without instance ids).
        area: number of pixels.
        bbox: (x, y, w, h) in pixels, the tight box of the mask.
        score: confidence, for predictions only (``None`` for ground truth).
    """

    id: int
    category_id: int
    iscrowd: int = 0
    area: int = 0
    bbox: tuple[int, int, int, int] = (0, 0, 0, 0)
    score: float | None = None

    def to_json(self) -> dict:
        out = {
            "id": int(self.id),
            "category_id": int(self.category_id),
            "iscrowd": int(self.iscrowd),
            "area": int(self.area),
            "bbox": [int(v) for v in self.bbox],
        }
        if self.score is not None:
            out["score"] = float(self.score)
        return out


@dataclass
class PanopticSample:
    """One image with its panoptic annotation, in memory.

    Attributes:
        image_id: dataset image id (string for Cityscapes/Vistas, int for COCO).
        image: (H, W, 3) uint8 RGB.
        id_map: (H, W) int32 segment ids, 0 = void.
        segments: one :class:`Segment` per id present in ``id_map``.
    """

    image_id: str | int
    image: np.ndarray
    id_map: np.ndarray
    segments: list[Segment] = field(default_factory=list)

    @property
    def height(self) -> int:
        return int(self.id_map.shape[0])

    @property
    def width(self) -> int:
        return int(self.id_map.shape[1])

    def segment_by_id(self) -> dict[int, Segment]:
        return {s.id: s for s in self.segments}


# --------------------------------------------------------------------------- PNG encoding


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) int32 ids with ``id = R + 256 G + 256^2 B``."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise PanopticFormatError(f"expected an (H, W, 3) RGB array, got shape {rgb.shape}")
    rgb = rgb.astype(np.uint32, copy=False)
    ids = rgb[..., 0] | (rgb[..., 1] << 8) | (rgb[..., 2] << 16)
    return ids.astype(np.int32)


def id_to_rgb(id_map: np.ndarray) -> np.ndarray:
    """(H, W) integer ids -> (H, W, 3) uint8 RGB; inverse of :func:`rgb_to_id`."""
    ids = np.asarray(id_map)
    if ids.size and (ids.min() < 0 or ids.max() > MAX_SEGMENT_ID):
        raise PanopticFormatError(
            f"segment ids must lie in [0, {MAX_SEGMENT_ID}] to fit an RGB PNG; "
            f"got range [{ids.min()}, {ids.max()}]"
        )
    ids = ids.astype(np.uint32, copy=False)
    rgb = np.empty(ids.shape + (3,), dtype=np.uint8)
    rgb[..., 0] = ids & 0xFF
    rgb[..., 1] = (ids >> 8) & 0xFF
    rgb[..., 2] = (ids >> 16) & 0xFF
    return rgb


def read_fast_id_png(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None]:
    """The fast path shared by the panoptic PNG readers: the file's bytes and, for a
    non-interlaced 8-bit RGB PNG (what panoptic tools write), its (H, W) uint32 ids from
    :func:`ibs_study.data.png.decode_rgb8_ids`; None for any other layout, which the caller
    decodes another way.

    Raises:
        PanopticFormatError: the file is missing or corrupt.
    """
    return _read_fast(path, decode_rgb8_ids)


def _read_fast(
    path: str | os.PathLike, decode: Callable[[np.ndarray], T | None]
) -> tuple[np.ndarray, T | None]:
    """The file's bytes and ``decode`` of them, a missing or corrupt file named in the error."""
    path = Path(path)
    if not path.is_file():
        raise PanopticFormatError(f"{path}: panoptic PNG not found")
    data = np.fromfile(path, dtype=np.uint8)
    try:
        return data, decode(data)
    except PngError as err:
        raise PanopticFormatError(f"{path}: not a readable PNG ({err})") from err


def id_runs(id_map: np.ndarray) -> IdRuns:
    """The runs of constant id along each row of an (H, W) id map (see :class:`IdRuns`)."""
    height, width = id_map.shape
    flat = id_map.reshape(-1)
    change = np.empty(flat.size, dtype=bool)
    change[0] = True
    np.not_equal(flat[1:], flat[:-1], out=change[1:])
    change[::width] = True
    starts = np.flatnonzero(change)
    return IdRuns(height, width, starts, flat[starts].astype(np.uint32))


def read_id_runs(path: str | os.PathLike) -> IdRuns:
    """The runs of constant id along each row of a panoptic PNG (:class:`IdRuns`), the ids
    those of :func:`read_id_png`: what counting overlaps needs, decoded without building the
    id map where the PNG is 8-bit RGB without interlacing (see :func:`read_fast_id_png`).

    Raises:
        PanopticFormatError: the file is missing, corrupt, or not 8-bit RGB.
    """
    _, runs = _read_fast(path, decode_rgb8_runs)
    return runs if runs is not None else id_runs(read_id_png(path))


def read_id_png(path: str | os.PathLike) -> np.ndarray:
    """Read a panoptic PNG into an (H, W) int32 id map; the PNG must be 8-bit RGB.

    The fast path (:func:`read_fast_id_png`) decodes what panoptic tools write; any other
    layout goes through Pillow.

    Raises:
        PanopticFormatError: the file is missing, corrupt, or not 8-bit RGB.
    """
    _, ids = read_fast_id_png(path)
    if ids is not None:
        return ids.view(np.int32)  # ids < 2^24
    from PIL import Image  # only for layouts the fast path does not read (scoring imports no Pillow)

    try:
        with Image.open(path) as png:
            if png.mode != "RGB":
                raise PanopticFormatError(
                    f"{path}: panoptic PNG must be 8-bit RGB (id = R + 256*G + 65536*B), got mode {png.mode!r}"
                )
            rgb = np.asarray(png)
    except OSError as err:  # Pillow: truncated or corrupt image data
        raise PanopticFormatError(f"{path}: not a readable PNG ({err})") from err
    return rgb_to_id(rgb)


def write_id_png(path: str | os.PathLike, id_map: np.ndarray) -> None:
    """Write an (H, W) id map as an RGB PNG (lossless)."""
    from PIL import Image

    Image.fromarray(id_to_rgb(id_map), mode="RGB").save(path, compress_level=1)


# ----------------------------------------------------------------------- segment geometry


def segments_from_id_map(
    id_map: np.ndarray,
    category_of: dict[int, int],
    iscrowd_of: dict[int, int] | None = None,
    score_of: dict[int, float] | None = None,
) -> list[Segment]:
    """Segments (area and tight bbox from the pixels) for every non-void id in ``id_map``.

    Args:
        id_map: (H, W) integer segment ids.
        category_of: segment id -> category id; every non-void id must be present.
        iscrowd_of: segment id -> iscrowd flag (default 0).
        score_of: segment id -> score (predictions only).

    Returns:
        Segments sorted by id.
    """
    ids, inverse, areas = np.unique(id_map.ravel(), return_inverse=True, return_counts=True)
    h, w = id_map.shape
    inverse = inverse.reshape(h, w)
    n = len(ids)
    # Per-id extents from per-row / per-column presence, no per-segment pixel loops.
    rows = np.zeros((n, h), dtype=bool)
    cols = np.zeros((n, w), dtype=bool)
    rows[inverse, np.arange(h)[:, None]] = True
    cols[inverse, np.arange(w)[None, :]] = True
    segments = []
    for k, seg_id in enumerate(ids.tolist()):
        if seg_id == VOID_ID:
            continue
        if seg_id not in category_of:
            raise PanopticFormatError(f"segment id {seg_id} present in the id map has no category")
        ys = np.flatnonzero(rows[k])
        xs = np.flatnonzero(cols[k])
        bbox = (int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1))
        segments.append(
            Segment(
                id=seg_id,
                category_id=category_of[seg_id],
                iscrowd=int((iscrowd_of or {}).get(seg_id, 0)),
                area=int(areas[k]),
                bbox=bbox,
                score=None if score_of is None else float(score_of[seg_id]),
            )
        )
    return segments


def check_segments_match_png(
    id_map: np.ndarray,
    segments: Sequence[Segment],
    *,
    png_path: str | os.PathLike,
    image_id: str | int,
    check_area: bool = True,
) -> None:
    """Raise :class:`PanopticFormatError` unless the JSON segments describe the PNG exactly.

    Checks: every non-void id in the PNG has a JSON segment, every JSON segment is present
    in the PNG, and (``check_area``) each JSON area equals the pixel count.
    """
    ids, counts = np.unique(id_map, return_counts=True)
    png_area = dict(zip(ids.tolist(), counts.tolist(), strict=True))
    check_segments_match_areas(
        png_area, segments, png_path=png_path, image_id=image_id, check_area=check_area
    )


def check_segments_match_areas(
    png_area: Mapping[int, int],
    segments: Sequence[Segment],
    *,
    png_path: str | os.PathLike,
    image_id: str | int,
    check_area: bool = True,
) -> None:
    """:func:`check_segments_match_png` for pixel counts already computed by the caller.

    Args:
        png_area: segment id -> pixel count of every id present in the PNG (void may be
            included; ids with count 0 count as absent).
    """
    png_area = {seg_id: count for seg_id, count in png_area.items() if count > 0 and seg_id != VOID_ID}
    json_ids = {s.id for s in segments}
    missing = sorted(set(png_area) - json_ids)
    if missing:
        raise PanopticFormatError(
            f"{png_path} (image id {image_id!r}): segment id(s) {missing[:10]} appear in the PNG "
            f"but not in the JSON segments_info"
        )
    for seg in segments:
        if seg.id not in png_area:
            raise PanopticFormatError(
                f"{png_path} (image id {image_id!r}): segment id {seg.id} is listed in the JSON "
                f"but absent from the PNG"
            )
        if check_area and seg.area != png_area[seg.id]:
            raise PanopticFormatError(
                f"{png_path} (image id {image_id!r}): segment id {seg.id} has area {seg.area} in the "
                f"JSON but {png_area[seg.id]} pixels in the PNG"
            )


# --------------------------------------------------------------------------- JSON level


@dataclass
class ImageRecord:
    """One image entry joined with its annotation entry."""

    image_id: str | int
    file_name: str
    width: int
    height: int
    png_name: str
    segments: list[Segment]


@dataclass
class PanopticAnnotations:
    """A parsed and structurally validated COCO-panoptic JSON.

    Attributes:
        path: the JSON file.
        categories: by dataset category id, in JSON order.
        records: one per image, in JSON ``images`` order.
    """

    path: Path
    categories: dict[int, CategoryInfo]
    records: list[ImageRecord]

    def __len__(self) -> int:
        return len(self.records)


def _require(entry: dict, keys: Iterable[str], what: str, path: Path) -> None:
    _expect(entry, dict, what, path)
    missing = [k for k in keys if k not in entry]
    if missing:
        raise PanopticFormatError(f"{path}: {what} lacks key(s) {missing}: {str(entry)[:200]}")


def _category_color(category_id: int) -> tuple[int, int, int]:
    """A fixed mid-range colour for a category whose JSON entry has none (COCO's panoptic_*.json)."""
    return tuple(int(c) for c in np.random.default_rng([7, category_id]).integers(40, 216, 3))  # type: ignore[return-value]


def _expect(value: Any, types: type | tuple[type, ...], where: str, path: Path) -> Any:
    """:func:`~ibs_study.input_files.expect`, raising :class:`PanopticFormatError`."""
    try:
        return expect(value, types, where, path)
    except DataError as err:
        raise PanopticFormatError(str(err)) from None


def _integer(value: Any, where: str, path: Path) -> int:
    """``value`` as an int (an integral float such as ``3.0`` too), else :class:`PanopticFormatError`."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return _expect(value, int, where, path)


def _integers(value: Any, length: int, where: str, path: Path) -> tuple[int, ...]:
    """A list of ``length`` numbers as a tuple of ints (truncated), else :class:`PanopticFormatError`."""
    items = _expect(value, list, where, path)
    if len(items) != length:
        raise PanopticFormatError(f"{path}: {where} must list {length} numbers, got {items}")
    return tuple(int(_expect(v, (int, float), f"{where}[{i}]", path)) for i, v in enumerate(items))


def categories_from_json(entries: list[dict], path: Path | str = "<categories>") -> dict[int, CategoryInfo]:
    """Parse a COCO-panoptic ``categories`` list, rejecting duplicates and missing keys."""
    path = Path(path)
    categories: dict[int, CategoryInfo] = {}
    for k, entry in enumerate(_expect(entries, list, "'categories'", path)):
        _require(entry, ("id", "name", "isthing"), f"categories[{k}]", path)
        cat_id = _integer(entry["id"], f"categories[{k}].id", path)
        if cat_id in categories:
            raise PanopticFormatError(f"{path}: duplicate category id {cat_id}")
        color = (
            _integers(entry["color"], 3, f"category id {cat_id}: color", path)
            if "color" in entry
            else _category_color(cat_id)
        )
        categories[cat_id] = CategoryInfo(
            id=cat_id,
            name=str(entry["name"]),
            isthing=bool(_expect(entry["isthing"], (bool, int), f"category id {cat_id}: isthing", path)),
            color=color,  # type: ignore[arg-type]
            supercategory=str(entry.get("supercategory", "")),
        )
    return categories


_NO_BBOX = object()


def _plain_segment(info: Any, categories: Mapping[int, CategoryInfo]) -> Segment | None:
    """The segment of a ``segments_info`` entry whose values are all plain integers (what tools
    write; ``score`` a float or absent) and valid; None for anything else, which
    :func:`_checked_segment` then reads or names as an error."""
    if type(info) is not dict:
        return None
    seg_id, cat_id = info.get("id"), info.get("category_id")
    iscrowd, area, score = info.get("iscrowd", 0), info.get("area", -1), info.get("score")
    bbox = info.get("bbox", _NO_BBOX)
    if not (
        type(seg_id) is int
        and VOID_ID < seg_id <= MAX_SEGMENT_ID
        and type(cat_id) is int
        and cat_id in categories
        and type(iscrowd) is int
        and type(area) is int
        and (score is None or type(score) is float)
    ):
        return None
    if bbox is _NO_BBOX:
        return Segment(seg_id, cat_id, iscrowd, area, (0, 0, 0, 0), score)
    if type(bbox) is not list or len(bbox) != 4:
        return None
    x, y, w, h = bbox
    if not (type(x) is int and type(y) is int and type(w) is int and type(h) is int):
        return None
    return Segment(seg_id, cat_id, iscrowd, area, (x, y, w, h), score)


def _checked_segment(
    info: Any,
    j: int,
    image_id: str | int,
    seen: set[int],
    categories: Mapping[int, CategoryInfo],
    path: Path,
) -> Segment:
    """Segment ``j`` of image ``image_id``, every value checked (``seen``: the image's segment
    ids so far); :class:`PanopticFormatError` naming the file, image and segment otherwise."""
    where = f"image id {image_id!r}"
    _require(info, ("id", "category_id"), f"{where}: segments_info[{j}]", path)
    seg_id = _integer(info["id"], f"{where}: segments_info[{j}].id", path)
    if seg_id in seen:
        raise PanopticFormatError(f"{path}: image id {image_id!r} lists segment id {seg_id} twice")
    if seg_id <= VOID_ID or seg_id > MAX_SEGMENT_ID:
        raise PanopticFormatError(
            f"{path}: image id {image_id!r}: segment id {seg_id} outside [1, {MAX_SEGMENT_ID}]"
        )
    cat_id = _integer(info["category_id"], f"{where}, segment id {seg_id}: category_id", path)
    if cat_id not in categories:
        raise PanopticFormatError(
            f"{path}: image id {image_id!r}, segment id {seg_id}: unknown category id {cat_id}"
        )
    bbox = _integers(info.get("bbox", [0, 0, 0, 0]), 4, f"{where}, segment id {seg_id}: bbox", path)
    score = info.get("score")
    return Segment(
        id=seg_id,
        category_id=cat_id,
        iscrowd=_integer(info.get("iscrowd", 0), f"{where}, segment id {seg_id}: iscrowd", path),
        area=int(_expect(info.get("area", -1), (int, float), f"{where}, segment id {seg_id}: area", path)),
        bbox=bbox,  # type: ignore[arg-type]
        score=None
        if score is None
        else float(_expect(score, (int, float), f"{where}, segment id {seg_id}: score", path)),
    )


def load_panoptic_json(
    path: str | os.PathLike,
    categories: dict[int, CategoryInfo] | None = None,
    *,
    allow_empty: bool = False,
    images_optional: bool = False,
) -> PanopticAnnotations:
    """Read and validate a COCO-panoptic JSON (structure only; PNGs are checked when read).

    Args:
        path: the JSON file.
        categories: categories to validate against; default: the JSON's own ``categories``.
        allow_empty: accept a JSON without images (an empty dataset is an error by default).
        images_optional: treat ``images`` as optional, as prediction files do: accept
            annotations whose image id is not listed in ``images`` (or no ``images`` at all;
            such records take the PNG name as ``file_name`` and -1 as width and height, and
            follow the listed images) and leave listed images without annotation out.

    Raises:
        PanopticFormatError: not COCO-panoptic, duplicate image ids, duplicate segment ids
            within an image, unknown category ids, annotations without image or images
            without annotation, empty dataset.
    """
    path = Path(path)
    if not path.is_file():
        raise PanopticFormatError(f"{path}: panoptic JSON not found")
    try:
        data = read_json(path, "panoptic JSON")
    except DataError as err:
        raise PanopticFormatError(str(err)) from err
    if not isinstance(data, dict) or "annotations" not in data:
        raise PanopticFormatError(
            f"{path}: not a COCO-panoptic JSON (needs 'images', 'annotations', 'categories')"
        )
    if categories is None:
        if "categories" not in data:
            raise PanopticFormatError(f"{path}: has no 'categories' and none were given")
        categories = categories_from_json(data["categories"], path)

    images: dict[str | int, dict] = {}
    for k, entry in enumerate(_expect(data.get("images", []), list, "'images'", path)):
        _require(entry, ("id", "file_name"), f"images[{k}]", path)
        _expect(entry["id"], (int, str), f"images[{k}].id", path)
        if entry["id"] in images:
            raise PanopticFormatError(f"{path}: duplicate image id {entry['id']!r} in 'images'")
        images[entry["id"]] = entry

    records: dict[str | int, ImageRecord] = {}
    images_only_annotated: list[str | int] = []
    for k, ann in enumerate(_expect(data["annotations"], list, "'annotations'", path)):
        _require(ann, ("image_id", "file_name", "segments_info"), f"annotations[{k}]", path)
        image_id = _expect(ann["image_id"], (int, str), f"annotations[{k}].image_id", path)
        if image_id in records:
            raise PanopticFormatError(f"{path}: image id {image_id!r} has more than one annotation")
        if image_id not in images:
            if not images_optional:
                raise PanopticFormatError(
                    f"{path}: annotation for image id {image_id!r} which is not in 'images'"
                )
            images_only_annotated.append(image_id)
        segments: list[Segment] = []
        seen: set[int] = set()
        where = f"image id {image_id!r}"
        for j, info in enumerate(_expect(ann["segments_info"], list, f"{where}: segments_info", path)):
            segment = _plain_segment(info, categories)
            if segment is None or segment.id in seen:
                segment = _checked_segment(info, j, image_id, seen, categories, path)
            seen.add(segment.id)
            segments.append(segment)
        entry = images.get(image_id, {"file_name": ann["file_name"]})
        records[image_id] = ImageRecord(
            image_id=image_id,
            file_name=str(entry["file_name"]),
            width=_integer(entry.get("width", -1), f"{where}: width", path),
            height=_integer(entry.get("height", -1), f"{where}: height", path),
            png_name=str(ann["file_name"]),
            segments=segments,
        )
    unannotated = [i for i in images if i not in records]
    if unannotated and not images_optional:
        raise PanopticFormatError(
            f"{path}: {len(unannotated)} image(s) have no annotation, e.g. image id {unannotated[0]!r}"
        )
    if not records and not allow_empty:
        raise PanopticFormatError(f"{path}: empty dataset (no annotated images)")
    ordered = [records[i] for i in [*images, *images_only_annotated] if i in records]
    return PanopticAnnotations(path=path, categories=dict(categories), records=ordered)


def write_panoptic_json(
    path: str | os.PathLike,
    records: Sequence[ImageRecord],
    categories: Iterable[CategoryInfo],
    *,
    info: dict | None = None,
) -> None:
    """Write a COCO-panoptic JSON; ids and file names as given (nothing is renumbered)."""
    data = {
        "info": info or {},
        "images": [
            {"id": r.image_id, "file_name": r.file_name, "width": r.width, "height": r.height}
            for r in records
        ],
        "annotations": [
            {
                "image_id": r.image_id,
                "file_name": r.png_name,
                "segments_info": [s.to_json() for s in r.segments],
            }
            for r in records
        ],
        "categories": [c.to_json() for c in categories],
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)
