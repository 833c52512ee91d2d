"""Per-class segment index for class-aware paired crop sampling (Sec. 4.2), built from the JSON only.

For every class (thing and stuff) the index lists the images holding at least one
non-crowd segment of it, and per such image those segments (segment id, area, bbox).
It is a CSR structure of flat arrays:

* ``class_ptr[k]:class_ptr[k+1]`` are the *entries* (one per (class, image)) of class k;
* entry e is image ``entry_image[e]`` with segment rows ``entry_ptr[e]:entry_ptr[e+1]``;
* segment rows hold ``segment_id``, ``segment_area`` and ``segment_bbox`` (x, y, w, h).

Building it reads no PNG. It is cached as ``<cache_dir>/segment_index_<content_hash>.npz``
(the hash is the SHA-1 of the dataset JSON); a cache file that is unreadable, of another
format version, of other JSON content or of another category list is rebuilt, never trusted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ibs_study.data.datasets import DatasetMeta, PanopticDataset
from ibs_study.data.panoptic import ImageRecord, PanopticFormatError, load_panoptic_json
from ibs_study.errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["SegmentIndex", "IndexCacheError", "default_cache_dir", "image_sizes"]

INDEX_FORMAT_VERSION = 1
_ARRAYS = (
    "category_ids",
    "is_thing",
    "image_hw",
    "class_ptr",
    "entry_image",
    "entry_ptr",
    "segment_id",
    "segment_area",
    "segment_bbox",
)


class IndexCacheError(DataError):
    """A segment-index cache file that cannot be used (unreadable, stale or inconsistent)."""


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/ibs_study`` (default ``~/.cache/ibs_study``)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ibs_study"


def image_sizes(records: Sequence[ImageRecord], source: str = "") -> np.ndarray:
    """(I, 2) int64 (height, width) of every image, from the JSON ``images`` entries.

    Raises:
        PanopticFormatError: an image entry lacks a positive width or height.
    """
    sizes = np.array([(r.height, r.width) for r in records], dtype=np.int64).reshape(-1, 2)
    bad = np.flatnonzero((sizes <= 0).any(axis=1))
    if len(bad):
        record = records[int(bad[0])]
        raise PanopticFormatError(
            f"{source}: image id {record.image_id!r} has no positive width/height in the JSON "
            f"(got {record.width} x {record.height}); the crop samplers plan crops from these sizes"
        )
    return sizes


@dataclass(frozen=True, eq=False)
class SegmentIndex:
    """Which images hold non-crowd segments of each class, and those segments.

    Attributes:
        content_hash: SHA-1 of the dataset JSON the index was built from.
        category_ids: (K,) int64 dataset category id of each contiguous label.
        is_thing: (K,) bool.
        image_hw: (I, 2) int64 (height, width) of every image, in dataset order.
        class_ptr: (K + 1,) int64, entries of class k are ``class_ptr[k]:class_ptr[k+1]``.
        entry_image: (E,) int64 image index of each (class, image) entry, ascending per class.
        entry_ptr: (E + 1,) int64, segment rows of entry e are ``entry_ptr[e]:entry_ptr[e+1]``.
        segment_id: (S,) int64 segment id in its image.
        segment_area: (S,) int64 JSON area (-1 where the JSON has none).
        segment_bbox: (S, 4) int64 JSON bbox (x, y, w, h), w and h >= 1.
    """

    content_hash: str
    category_ids: np.ndarray
    is_thing: np.ndarray
    image_hw: np.ndarray
    class_ptr: np.ndarray
    entry_image: np.ndarray
    entry_ptr: np.ndarray
    segment_id: np.ndarray
    segment_area: np.ndarray
    segment_bbox: np.ndarray

    # ------------------------------------------------------------------ queries

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    @property
    def num_images(self) -> int:
        return len(self.image_hw)

    def images_per_class(self) -> np.ndarray:
        """(K,) int64 number of images holding a non-crowd segment of each class."""
        return np.diff(self.class_ptr)

    def entries_of(self, label: int) -> range:
        """Entry numbers of class ``label`` (one per image holding it)."""
        return range(int(self.class_ptr[label]), int(self.class_ptr[label + 1]))

    def images_of(self, label: int) -> np.ndarray:
        """(n,) int64 image indices holding a non-crowd segment of class ``label``."""
        return self.entry_image[self.class_ptr[label] : self.class_ptr[label + 1]]

    def segment_rows(self, entry: int) -> range:
        """Segment rows of one (class, image) entry."""
        return range(int(self.entry_ptr[entry]), int(self.entry_ptr[entry + 1]))

    def thing_boxes_by_image(self) -> list[np.ndarray]:
        """Per image, the (n_i, 4) int64 (x, y, w, h) boxes of its non-crowd thing segments."""
        entry_class = np.repeat(np.arange(self.num_classes), np.diff(self.class_ptr))  # (E,)
        row_entry = np.repeat(np.arange(len(self.entry_image)), np.diff(self.entry_ptr))  # (S,)
        thing_rows = np.flatnonzero(self.is_thing[entry_class[row_entry]])
        row_image = self.entry_image[row_entry[thing_rows]]
        order = np.argsort(row_image, kind="stable")
        bounds = np.searchsorted(row_image[order], np.arange(self.num_images + 1))
        boxes = self.segment_bbox[thing_rows[order]]
        return [boxes[bounds[i] : bounds[i + 1]] for i in range(self.num_images)]

    # ------------------------------------------------------------------ building

    @classmethod
    def build(
        cls,
        records: Sequence[ImageRecord],
        meta: DatasetMeta,
        content_hash: str = "",
        source: str = "",
    ) -> SegmentIndex:
        """Index the non-crowd segments of ``records`` by contiguous class.

        Args:
            records: the dataset's images with their JSON segments.
            meta: category list defining the contiguous labels.
            content_hash: recorded with the index (the cache key).
            source: a name for messages (e.g. the JSON path).

        Raises:
            PanopticFormatError: a non-crowd segment with an unknown category or an empty
                bbox (the paired sampler scales and crops by the bbox), or an image
                without size; the message names the image id and segment id.
        """
        contiguous_of = meta.contiguous_of
        labels: list[int] = []
        images: list[int] = []
        ids: list[int] = []
        areas: list[int] = []
        boxes: list[tuple[int, int, int, int]] = []
        for image_index, record in enumerate(records):
            for seg in record.segments:
                if seg.iscrowd:
                    continue
                label = contiguous_of.get(seg.category_id)
                if label is None:
                    raise PanopticFormatError(
                        f"{source}: image id {record.image_id!r}, segment id {seg.id}: category id "
                        f"{seg.category_id} is not one of the {meta.name} categories"
                    )
                if seg.bbox[2] < 1 or seg.bbox[3] < 1:
                    raise PanopticFormatError(
                        f"{source}: image id {record.image_id!r}, segment id {seg.id}: bbox {list(seg.bbox)} "
                        "is missing or empty; paired crop sampling needs the bbox of every non-crowd segment"
                    )
                labels.append(label)
                images.append(image_index)
                ids.append(seg.id)
                areas.append(seg.area)
                boxes.append(seg.bbox)
        label_arr = np.asarray(labels, dtype=np.int64)
        # stable: within a class, images stay in dataset order and segments in JSON order
        order = np.argsort(label_arr, kind="stable")
        label_arr = label_arr[order]
        image_arr = np.asarray(images, dtype=np.int64)[order]
        new_entry = np.ones(len(order), dtype=bool)
        new_entry[1:] = (label_arr[1:] != label_arr[:-1]) | (image_arr[1:] != image_arr[:-1])
        starts = np.flatnonzero(new_entry)
        return cls(
            content_hash=content_hash,
            category_ids=np.array([c.id for c in meta.categories], dtype=np.int64),
            is_thing=meta.is_thing.copy(),
            image_hw=image_sizes(records, source),
            class_ptr=np.searchsorted(label_arr[starts], np.arange(meta.num_classes + 1)).astype(np.int64),
            entry_image=image_arr[starts],
            entry_ptr=np.append(starts, len(order)).astype(np.int64),
            segment_id=np.asarray(ids, dtype=np.int64)[order],
            segment_area=np.asarray(areas, dtype=np.int64)[order],
            segment_bbox=np.asarray(boxes, dtype=np.int64).reshape(-1, 4)[order],
        )

    # ------------------------------------------------------------------ cache

    def save(self, path: str | os.PathLike) -> None:
        """Write the index as an ``.npz`` atomically (a temporary file, then a rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {name: getattr(self, name) for name in _ARRAYS}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(
                    f,
                    version=np.int64(INDEX_FORMAT_VERSION),
                    content_hash=np.str_(self.content_hash),
                    **arrays,
                )
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike) -> SegmentIndex:
        """Read an index written by :meth:`save` and check that its arrays are consistent.

        Raises:
            IndexCacheError: unreadable, another format version, or inconsistent arrays.
        """
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                version = int(data["version"])
                if version != INDEX_FORMAT_VERSION:
                    raise IndexCacheError(
                        f"{path}: format version {version}, expected {INDEX_FORMAT_VERSION}"
                    )
                index = cls(content_hash=str(data["content_hash"]), **{name: data[name] for name in _ARRAYS})
        except IndexCacheError:
            raise
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            raise IndexCacheError(f"{path}: unreadable segment index ({type(err).__name__}: {err})") from err
        index._check_consistent(path)
        return index

    def _check_consistent(self, path: Path) -> None:
        problems = []
        k, e, s = self.num_classes, len(self.entry_image), len(self.segment_id)
        if self.is_thing.shape != (k,) or self.class_ptr.shape != (k + 1,):
            problems.append("class arrays disagree in length")
        elif self.class_ptr[0] != 0 or self.class_ptr[-1] != e or np.any(np.diff(self.class_ptr) < 0):
            problems.append("class_ptr is not a monotone pointer into the entries")
        if self.entry_ptr.shape != (e + 1,) or self.entry_ptr[0] != 0 or self.entry_ptr[-1] != s:
            problems.append("entry_ptr does not span the segments")
        elif np.any(np.diff(self.entry_ptr) < 1):
            problems.append("an entry without segments")
        if e and (self.entry_image.min() < 0 or self.entry_image.max() >= self.num_images):
            problems.append("entry_image outside the images")
        if self.segment_area.shape != (s,) or self.segment_bbox.shape != (s, 4):
            problems.append("segment arrays disagree in length")
        elif s and self.segment_bbox[:, 2:].min() < 1:
            problems.append("an empty bbox")
        if problems:
            raise IndexCacheError(f"{path}: inconsistent segment index: {'; '.join(problems)}")

    def matches(
        self, content_hash: str, meta: DatasetMeta | None, num_images: int | None = None
    ) -> str | None:
        """Why this index does not belong to the given dataset content, or None if it does."""
        if self.content_hash != content_hash:
            return f"built from JSON content {self.content_hash[:12]}, not {content_hash[:12]}"
        if meta is not None:
            if self.category_ids.tolist() != [c.id for c in meta.categories]:
                return f"built for other category ids than {meta.name}'s"
            if not np.array_equal(self.is_thing, meta.is_thing):
                return f"built with other thing/stuff flags than {meta.name}'s"
        if num_images is not None and self.num_images != num_images:
            return f"has {self.num_images} images, the dataset {num_images}"
        return None

    @classmethod
    def _cached(
        cls, content_hash: str, meta: DatasetMeta | None, num_images: int | None, cache_dir: Path
    ) -> SegmentIndex | None:
        path = cache_dir / f"segment_index_{content_hash}.npz"
        if not path.is_file():
            logger.info("no segment index cache at %s; building it", path)
            return None
        try:
            index = cls.load(path)
        except IndexCacheError as err:
            logger.warning("%s; rebuilding the segment index", err)
            return None
        reason = index.matches(content_hash, meta, num_images)
        if reason is not None:
            logger.warning("%s: stale segment index (%s); rebuilding it", path, reason)
            return None
        logger.info("segment index loaded from %s", path)
        return index

    @classmethod
    def _store(cls, index: SegmentIndex, cache_dir: Path) -> None:
        path = cache_dir / f"segment_index_{index.content_hash}.npz"
        try:
            index.save(path)
        except OSError as err:
            logger.warning(
                "could not write the segment index cache %s (%s); continuing without it", path, err
            )

    @classmethod
    def for_dataset(
        cls,
        dataset: PanopticDataset,
        meta: DatasetMeta | None = None,
        cache_dir: str | os.PathLike | None = None,
    ) -> SegmentIndex:
        """The index of an opened dataset, from the cache when it is valid.

        Args:
            dataset: gives records, JSON path and ``content_hash``.
            meta: label space (default: ``dataset.meta``).
            cache_dir: cache folder (default :func:`default_cache_dir`).
        """
        meta = meta or dataset.meta
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        index = cls._cached(dataset.content_hash, meta, len(dataset.records), cache)
        if index is None:
            index = cls.build(dataset.records, meta, dataset.content_hash, source=str(dataset.json_path))
            cls._store(index, cache)
        return index

    @classmethod
    def from_json(
        cls,
        json_path: str | os.PathLike,
        meta: DatasetMeta | None = None,
        cache_dir: str | os.PathLike | None = None,
    ) -> SegmentIndex:
        """The index of a COCO-panoptic JSON alone (no images or PNGs needed); a valid cache
        file is used without parsing the JSON.

        Args:
            json_path: the COCO-panoptic JSON.
            meta: label space (default: the JSON's own categories).
            cache_dir: cache folder (default :func:`default_cache_dir`).
        """
        json_path = Path(json_path)
        if not json_path.is_file():
            raise PanopticFormatError(f"{json_path}: panoptic JSON not found")
        content_hash = hashlib.sha1(json_path.read_bytes()).hexdigest()
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        index = cls._cached(content_hash, meta, None, cache)
        if index is None:
            annotations = load_panoptic_json(json_path, None if meta is None else meta.by_id())
            meta = meta or DatasetMeta.from_categories(json_path.stem, annotations.categories)
            index = cls.build(annotations.records, meta, content_hash, source=str(json_path))
            cls._store(index, cache)
        return index
