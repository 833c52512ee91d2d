"""Panoptic datasets on disk: a generic COCO-panoptic folder plus Cityscapes, Mapillary Vistas
and the synthetic set, with their category metadata.

Every reader returns :class:`~ibs_study.data.panoptic.PanopticSample` objects validated
against the JSON (see :mod:`ibs_study.data.panoptic` for the checks and the area policy).
Missing files are reported when the dataset is opened, naming the file and the image id;
PNG contents are checked each time a sample is read, and :meth:`PanopticDataset.validate`
reads everything once.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from ibs_study.data.panoptic import (
    CategoryInfo,
    ImageRecord,
    PanopticAnnotations,
    PanopticFormatError,
    PanopticSample,
    check_segments_match_png,
    load_panoptic_json,
    read_id_png,
)
from ibs_study.errors import DataError

logger = logging.getLogger(__name__)

__all__ = [
    "DatasetMeta",
    "PanopticDataset",
    "CITYSCAPES_META",
    "CITYSCAPES_TRAIN_ID_META",
    "MAPILLARY_VISTAS_META",
    "cityscapes",
    "mapillary_vistas",
    "synthetic",
    "coco_panoptic",
    "coco_panoptic_folder",
    "open_dataset",
    "DATASET_KINDS",
]

# (label id, name, isthing, colour, supercategory) of the 19 evaluated Cityscapes labels
_CITYSCAPES = [
    (7, "road", 0, (128, 64, 128), "flat"),
    (8, "sidewalk", 0, (244, 35, 232), "flat"),
    (11, "building", 0, (70, 70, 70), "construction"),
    (12, "wall", 0, (102, 102, 156), "construction"),
    (13, "fence", 0, (190, 153, 153), "construction"),
    (17, "pole", 0, (153, 153, 153), "object"),
    (19, "traffic light", 0, (250, 170, 30), "object"),
    (20, "traffic sign", 0, (220, 220, 0), "object"),
    (21, "vegetation", 0, (107, 142, 35), "nature"),
    (22, "terrain", 0, (152, 251, 152), "nature"),
    (23, "sky", 0, (70, 130, 180), "sky"),
    (24, "person", 1, (220, 20, 60), "human"),
    (25, "rider", 1, (255, 0, 0), "human"),
    (26, "car", 1, (0, 0, 142), "vehicle"),
    (27, "truck", 1, (0, 0, 70), "vehicle"),
    (28, "bus", 1, (0, 60, 100), "vehicle"),
    (31, "train", 1, (0, 80, 100), "vehicle"),
    (32, "motorcycle", 1, (0, 0, 230), "vehicle"),
    (33, "bicycle", 1, (119, 11, 32), "vehicle"),
]

# (category id, name, isthing, colour, supercategory) of Mapillary Vistas v1.2 (panoptic_2018.json)
_MAPILLARY_VISTAS = [
    (1, "Bird", 1, (165, 42, 42), "animal--bird"),
    (2, "Ground Animal", 1, (0, 192, 0), "animal--ground-animal"),
    (3, "Curb", 0, (196, 196, 196), "construction--barrier--curb"),
    (4, "Fence", 0, (190, 153, 153), "construction--barrier--fence"),
    (5, "Guard Rail", 0, (180, 165, 180), "construction--barrier--guard-rail"),
    (6, "Barrier", 0, (90, 120, 150), "construction--barrier--other-barrier"),
    (7, "Wall", 0, (102, 102, 156), "construction--barrier--wall"),
    (8, "Bike Lane", 0, (128, 64, 255), "construction--flat--bike-lane"),
    (9, "Crosswalk - Plain", 1, (140, 140, 200), "construction--flat--crosswalk-plain"),
    (10, "Curb Cut", 0, (170, 170, 170), "construction--flat--curb-cut"),
    (11, "Parking", 0, (250, 170, 160), "construction--flat--parking"),
    (12, "Pedestrian Area", 0, (96, 96, 96), "construction--flat--pedestrian-area"),
    (13, "Rail Track", 0, (230, 150, 140), "construction--flat--rail-track"),
    (14, "Road", 0, (128, 64, 128), "construction--flat--road"),
    (15, "Service Lane", 0, (110, 110, 110), "construction--flat--service-lane"),
    (16, "Sidewalk", 0, (244, 35, 232), "construction--flat--sidewalk"),
    (17, "Bridge", 0, (150, 100, 100), "construction--structure--bridge"),
    (18, "Building", 0, (70, 70, 70), "construction--structure--building"),
    (19, "Tunnel", 0, (150, 120, 90), "construction--structure--tunnel"),
    (20, "Person", 1, (220, 20, 60), "human--person"),
    (21, "Bicyclist", 1, (255, 0, 0), "human--rider--bicyclist"),
    (22, "Motorcyclist", 1, (255, 0, 100), "human--rider--motorcyclist"),
    (23, "Other Rider", 1, (255, 0, 200), "human--rider--other-rider"),
    (24, "Lane Marking - Crosswalk", 1, (200, 128, 128), "marking--crosswalk-zebra"),
    (25, "Lane Marking - General", 0, (255, 255, 255), "marking--general"),
    (26, "Mountain", 0, (64, 170, 64), "nature--mountain"),
    (27, "Sand", 0, (230, 160, 50), "nature--sand"),
    (28, "Sky", 0, (70, 130, 180), "nature--sky"),
    (29, "Snow", 0, (190, 255, 255), "nature--snow"),
    (30, "Terrain", 0, (152, 251, 152), "nature--terrain"),
    (31, "Vegetation", 0, (107, 142, 35), "nature--vegetation"),
    (32, "Water", 0, (0, 170, 30), "nature--water"),
    (33, "Banner", 1, (255, 255, 128), "object--banner"),
    (34, "Bench", 1, (250, 0, 30), "object--bench"),
    (35, "Bike Rack", 1, (100, 140, 180), "object--bike-rack"),
    (36, "Billboard", 1, (220, 220, 220), "object--billboard"),
    (37, "Catch Basin", 1, (220, 128, 128), "object--catch-basin"),
    (38, "CCTV Camera", 1, (222, 40, 40), "object--cctv-camera"),
    (39, "Fire Hydrant", 1, (100, 170, 30), "object--fire-hydrant"),
    (40, "Junction Box", 1, (40, 40, 40), "object--junction-box"),
    (41, "Mailbox", 1, (33, 33, 33), "object--mailbox"),
    (42, "Manhole", 1, (100, 128, 160), "object--manhole"),
    (43, "Phone Booth", 1, (142, 0, 0), "object--phone-booth"),
    (44, "Pothole", 0, (70, 100, 150), "object--pothole"),
    (45, "Street Light", 1, (210, 170, 100), "object--street-light"),
    (46, "Pole", 1, (153, 153, 153), "object--support--pole"),
    (47, "Traffic Sign Frame", 1, (128, 128, 128), "object--support--traffic-sign-frame"),
    (48, "Utility Pole", 1, (0, 0, 80), "object--support--utility-pole"),
    (49, "Traffic Light", 1, (250, 170, 30), "object--traffic-light"),
    (50, "Traffic Sign (Back)", 1, (192, 192, 192), "object--traffic-sign--back"),
    (51, "Traffic Sign (Front)", 1, (220, 220, 0), "object--traffic-sign--front"),
    (52, "Trash Can", 1, (140, 140, 20), "object--trash-can"),
    (53, "Bicycle", 1, (119, 11, 32), "object--vehicle--bicycle"),
    (54, "Boat", 1, (150, 0, 255), "object--vehicle--boat"),
    (55, "Bus", 1, (0, 60, 100), "object--vehicle--bus"),
    (56, "Car", 1, (0, 0, 142), "object--vehicle--car"),
    (57, "Caravan", 1, (0, 0, 90), "object--vehicle--caravan"),
    (58, "Motorcycle", 1, (0, 0, 230), "object--vehicle--motorcycle"),
    (59, "On Rails", 0, (0, 80, 100), "object--vehicle--on-rails"),
    (60, "Other Vehicle", 1, (128, 64, 64), "object--vehicle--other-vehicle"),
    (61, "Trailer", 1, (0, 0, 110), "object--vehicle--trailer"),
    (62, "Truck", 1, (0, 0, 70), "object--vehicle--truck"),
    (63, "Wheeled Slow", 1, (0, 0, 192), "object--vehicle--wheeled-slow"),
    (64, "Car Mount", 0, (32, 32, 32), "void--car-mount"),
    (65, "Ego Vehicle", 0, (120, 10, 10), "void--ego-vehicle"),
]


@dataclass(frozen=True)
class DatasetMeta:
    """Categories of a dataset and the contiguous label space models train on.

    Contiguous label ``k`` is the k-th category in ascending dataset-id order; raw dataset
    ids are never used to index arrays.
    """

    name: str
    categories: tuple[CategoryInfo, ...]

    def __post_init__(self) -> None:
        ids = [c.id for c in self.categories]
        if ids != sorted(set(ids)):
            raise ValueError(f"{self.name}: category ids must be unique and ascending, got {ids}")

    @classmethod
    def from_categories(
        cls, name: str, categories: dict[int, CategoryInfo] | list[CategoryInfo]
    ) -> DatasetMeta:
        values = categories.values() if isinstance(categories, dict) else categories
        return cls(name=name, categories=tuple(sorted(values, key=lambda c: c.id)))

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    @cached_property
    def contiguous_of(self) -> dict[int, int]:
        """Dataset category id -> contiguous label."""
        return {c.id: k for k, c in enumerate(self.categories)}

    @cached_property
    def is_thing(self) -> np.ndarray:
        """(K,) bool, True where contiguous label k is a thing class."""
        return np.array([c.isthing for c in self.categories], dtype=bool)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.categories]

    @property
    def thing_labels(self) -> list[int]:
        return [k for k, c in enumerate(self.categories) if c.isthing]

    @property
    def stuff_labels(self) -> list[int]:
        return [k for k, c in enumerate(self.categories) if not c.isthing]

    def by_id(self) -> dict[int, CategoryInfo]:
        return {c.id: c for c in self.categories}


def _meta_from_table(name: str, table: list[tuple]) -> DatasetMeta:
    return DatasetMeta.from_categories(
        name,
        [CategoryInfo(id=i, name=n, isthing=bool(t), color=c, supercategory=s) for i, n, t, c, s in table],
    )


CITYSCAPES_META = _meta_from_table("cityscapes", _CITYSCAPES)
# ``createPanopticImgs --use-train-id`` writes category ids 0..18 (train ids, in label-id order)
CITYSCAPES_TRAIN_ID_META = _meta_from_table(
    "cityscapes_train_id", [(train_id, *row[1:]) for train_id, row in enumerate(_CITYSCAPES)]
)
MAPILLARY_VISTAS_META = _meta_from_table("mapillary_vistas", _MAPILLARY_VISTAS)


class PanopticDataset:
    """Any COCO-panoptic dataset: a JSON, a folder of id PNGs and a way to find each image.

    Args:
        json_path: the COCO-panoptic JSON.
        png_dir: folder holding the id PNGs named by each annotation's ``file_name``.
        image_path: maps an :class:`ImageRecord` to its image file, or a folder in which
            each image's ``file_name`` lies.
        meta: categories to validate against; default: the JSON's own categories.
        name: a readable name used in messages.
        check_area: make a JSON ``area`` that differs from the PNG pixel count an error.
    """

    def __init__(
        self,
        json_path: str | os.PathLike,
        png_dir: str | os.PathLike,
        image_path: Callable[[ImageRecord], Path] | str | os.PathLike,
        meta: DatasetMeta | None = None,
        *,
        name: str | None = None,
        check_area: bool = True,
    ) -> None:
        self.json_path = Path(json_path)
        self.png_dir = Path(png_dir)
        if not self.png_dir.is_dir():
            raise PanopticFormatError(f"{self.png_dir}: panoptic PNG folder not found")
        annotations: PanopticAnnotations = load_panoptic_json(
            self.json_path, None if meta is None else meta.by_id()
        )
        self.meta = meta or DatasetMeta.from_categories(name or self.json_path.stem, annotations.categories)
        self.name = name or self.meta.name
        self.records = annotations.records
        self.check_area = check_area
        if callable(image_path):
            self._image_path = image_path
        else:
            image_dir = Path(image_path)
            self._image_path = lambda record: image_dir / record.file_name
        self._check_files_exist()

    def _check_files_exist(self) -> None:
        for record in self.records:
            image = self.image_path(record)
            if not image.is_file():
                raise PanopticFormatError(f"{image}: image for image id {record.image_id!r} not found")
            png = self.png_dir / record.png_name
            if not png.is_file():
                raise PanopticFormatError(f"{png}: panoptic PNG for image id {record.image_id!r} not found")

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return f"PanopticDataset({self.name!r}, {len(self)} images, {self.meta.num_classes} classes)"

    def image_path(self, record: ImageRecord) -> Path:
        return Path(self._image_path(record))

    def png_path(self, record: ImageRecord) -> Path:
        return self.png_dir / record.png_name

    def read_image(self, index: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB image of sample ``index``."""
        path = self.image_path(self.records[index])
        with Image.open(path) as img:
            return np.array(img.convert("RGB"))

    def read_id_map(self, index: int) -> np.ndarray:
        """(H, W) int32 segment ids of sample ``index``, checked against the JSON."""
        record = self.records[index]
        png = self.png_path(record)
        id_map = read_id_png(png)
        check_segments_match_png(
            id_map, record.segments, png_path=png, image_id=record.image_id, check_area=self.check_area
        )
        return id_map

    def __getitem__(self, index: int) -> PanopticSample:
        record = self.records[index]
        image = self.read_image(index)
        id_map = self.read_id_map(index)
        if image.shape[:2] != id_map.shape:
            raise PanopticFormatError(
                f"{self.png_path(record)} (image id {record.image_id!r}): PNG size {id_map.shape[::-1]} "
                f"differs from image size {image.shape[1::-1]} of {self.image_path(record)} (W x H)"
            )
        return PanopticSample(
            image_id=record.image_id, image=image, id_map=id_map, segments=list(record.segments)
        )

    def validate(self, progress: bool = False) -> None:
        """Read every sample once; raises on the first problem."""
        from tqdm.auto import tqdm

        for index in tqdm(range(len(self)), desc=f"validating {self.name}", disable=not progress):
            self[index]

    @cached_property
    def content_hash(self) -> str:
        """SHA-1 of the JSON bytes: identifies the annotation content (e.g. for cache keys)."""
        return hashlib.sha1(self.json_path.read_bytes()).hexdigest()


def coco_panoptic_folder(
    json_path: str | os.PathLike, png_dir: str | os.PathLike, image_dir: str | os.PathLike, **kwargs
) -> PanopticDataset:
    """A COCO-panoptic folder whose images are ``image_dir / images[].file_name``."""
    return PanopticDataset(json_path, png_dir, image_dir, **kwargs)


def cityscapes(
    root: str | os.PathLike, split: str = "val", *, use_train_id: bool = False, **kwargs
) -> PanopticDataset:
    """Cityscapes panoptic as written by cityscapesScripts' ``createPanopticImgs``.

    Layout: ``gtFine/cityscapes_panoptic_{split}.json``, flat ``gtFine/cityscapes_panoptic_{split}/``
    PNGs, images ``leftImg8bit/{split}/{city}/{image_id}_leftImg8bit.png``. Images are located
    from the image id (the converter's ``file_name`` names a file that does not exist).
    ``use_train_id`` reads the ``--use-train-id`` variant (``..._{split}_trainId.json``, ids 0..18).
    """
    root = Path(root)
    gt = root / "gtFine"
    suffix = "_trainId" if use_train_id else ""
    _require_layout(
        root,
        [gt / f"cityscapes_panoptic_{split}{suffix}.json", gt / f"cityscapes_panoptic_{split}{suffix}"],
        "Cityscapes",
        "point it at the folder holding gtFine/ and leftImg8bit/ and run cityscapesScripts' "
        "createPanopticImgs (csCreatePanopticImgs) there",
    )

    def image_path(record: ImageRecord) -> Path:
        stem = str(record.image_id)
        city = stem.split("_", 1)[0]
        return root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"

    return PanopticDataset(
        gt / f"cityscapes_panoptic_{split}{suffix}.json",
        gt / f"cityscapes_panoptic_{split}{suffix}",
        image_path,
        CITYSCAPES_TRAIN_ID_META if use_train_id else CITYSCAPES_META,
        name=f"cityscapes_{split}",
        **kwargs,
    )


_VISTAS_SPLITS = {
    "train": "training",
    "val": "validation",
    "training": "training",
    "validation": "validation",
}


def mapillary_vistas(root: str | os.PathLike, split: str = "val", **kwargs) -> PanopticDataset:
    """Mapillary Vistas v1.2 panoptic (standalone v1.2 layout or the v2.0 bundle's ``v1.2`` folder).

    Layout: ``{training,validation}/images/{key}.jpg`` and
    ``{training,validation}/panoptic/panoptic_2018.json`` + ``panoptic/{key}.png``
    (v2.0 bundle: ``{split}/v1.2/panoptic/...``). ``split`` accepts train/val or the folder names.
    """
    if split not in _VISTAS_SPLITS:
        raise ValueError(f"unknown Mapillary Vistas split {split!r}; use one of {sorted(_VISTAS_SPLITS)}")
    split_dir = Path(root) / _VISTAS_SPLITS[split]
    panoptic_dir = split_dir / "panoptic"
    if not (panoptic_dir / "panoptic_2018.json").is_file() and (split_dir / "v1.2" / "panoptic").is_dir():
        panoptic_dir = split_dir / "v1.2" / "panoptic"
    _require_layout(
        root,
        [panoptic_dir / "panoptic_2018.json", split_dir / "images"],
        "Mapillary Vistas",
        "point it at the folder holding training/ and validation/ (v1.2, or the v2.0 bundle with v1.2/)",
    )
    return PanopticDataset(
        panoptic_dir / "panoptic_2018.json",
        panoptic_dir,
        split_dir / "images",
        MAPILLARY_VISTAS_META,
        name=f"mapillary_vistas_{split}",
        **kwargs,
    )


def coco_panoptic(
    root: str | os.PathLike,
    split: str = "train",
    *,
    json_path: str | os.PathLike | None = None,
    png_dir: str | os.PathLike | None = None,
    image_dir: str | os.PathLike | None = None,
    keys: str | None = None,
    **kwargs,
) -> PanopticDataset:
    """Any COCO-panoptic folder; categories (ids, names, isthing, colours) come from its JSON.

    Default layout (what ``ibs-study synth`` writes): ``annotations/panoptic_{split}.json``,
    ``panoptic_{split}/`` and ``images/{split}/``. ``json_path``, ``png_dir`` and ``image_dir``
    replace one part each, relative to ``root`` or absolute (COCO 2017:
    ``annotations/panoptic_train2017.json``, ``annotations/panoptic_train2017``, ``train2017``).

    Args:
        keys: the config keys that name these paths, e.g. ``data.coco_panoptic.train``
            (messages about a missing part then name ``{keys}_json`` and so on; default: the
            ``train`` or ``val`` keys for those splits).

    Raises:
        DataError: ``root``, the JSON, the PNG folder or the image folder is missing (named,
            with the key that sets it).
    """
    root = Path(root)
    if keys is None and split in ("train", "val"):
        keys = f"data.coco_panoptic.{split}"
    parts = {
        "json": (
            "COCO-panoptic JSON",
            json_path,
            Path("annotations") / f"panoptic_{split}.json",
            Path.is_file,
        ),
        "png_dir": ("panoptic PNG folder", png_dir, Path(f"panoptic_{split}"), Path.is_dir),
        "image_dir": ("image folder", image_dir, Path("images") / split, Path.is_dir),
    }
    _require_layout(root, [], "COCO-panoptic", "point it at the dataset's folder")
    paths = {}
    for part, (what, given, default, exists) in parts.items():
        path = root / (given if given is not None else default)  # an absolute ``given`` replaces root
        if not exists(path):
            key = f"{keys or 'data.coco_panoptic.{train,val}'}_{part}"
            where = f"set by {key}" if given is not None else f"the default layout; {key} names another"
            raise DataError(
                f"{path}: {what} of split {split!r} not found ({where}, relative to the dataset root "
                f"{root} (data.root) or absolute)"
            )
        paths[part] = path
    kwargs.setdefault("name", f"coco_panoptic_{split}")
    return PanopticDataset(paths["json"], paths["png_dir"], paths["image_dir"], **kwargs)


def synthetic(root: str | os.PathLike, split: str = "train", **kwargs) -> PanopticDataset:
    """The synthetic set: ``annotations/panoptic_{split}.json``, ``panoptic_{split}/``, ``images/{split}/``
    (:func:`coco_panoptic`'s default layout)."""
    _require_layout(Path(root), [], "synthetic", f"generate one with `ibs-study synth --out {root}`")
    return coco_panoptic(root, split, name=f"synthetic_{split}", **kwargs)


def _require_layout(root: Path, paths: list[Path], kind: str, remedy: str) -> None:
    """Raise a :class:`DataError` naming the dataset root and the first of ``paths`` that is missing."""
    if not root.is_dir():
        raise DataError(f"{root}: {kind} dataset root (data.root) not found; {remedy}")
    for path in paths:
        if not path.exists():
            raise DataError(f"{path}: not found in the {kind} dataset root {root} (data.root); {remedy}")


DATASET_KINDS: dict[str, Callable[..., PanopticDataset]] = {
    "synthetic": synthetic,
    "cityscapes": cityscapes,
    "mapillary_vistas": mapillary_vistas,
    "coco_panoptic": coco_panoptic,
}


def open_dataset(kind: str, root: str | os.PathLike, split: str, **kwargs) -> PanopticDataset:
    """Open a dataset by kind name (``synthetic``, ``cityscapes``, ``mapillary_vistas``, ``coco_panoptic``)."""
    if kind not in DATASET_KINDS:
        raise DataError(f"unknown dataset kind {kind!r}; valid kinds: {sorted(DATASET_KINDS)}")
    return DATASET_KINDS[kind](root, split, **kwargs)
