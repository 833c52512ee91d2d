"""The data behind the confusion explorer: evaluated runs, their confusion records, selections.

A run's evaluation folder (``RUN_DIR/eval_<split>``, written by
:func:`ibs_study.engine.evaluate.evaluate_run`) holds ``predictions.json`` +
``predictions/*.png`` and ``confusion_records.jsonl`` (one
:class:`~ibs_study.metrics.panoptic.ConfusionRecord` per predicted thing segment). The
records and the prediction JSON are read up front; images, ground-truth and predicted
id maps are read when an image is selected and kept in a small LRU cache.

Nothing here draws: :class:`ExplorerData` answers the questions the widget and the static
export ask (rankings under filters, what a selected prediction covers, which prediction of
the other run covers the same object, what lies under a pixel).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from ibs_study.data.datasets import PanopticDataset
from ibs_study.data.panoptic import (
    CategoryInfo,
    ImageRecord,
    PanopticFormatError,
    PanopticSample,
    Segment,
    check_segments_match_png,
    read_id_png,
)
from ibs_study.engine.data import open_split
from ibs_study.engine.run_dir import read_run_config
from ibs_study.errors import RunDirError
from ibs_study.metrics.io import load_prediction_json
from ibs_study.metrics.panoptic import SIZE_NAMES, ConfusionRecord, GTOverlap, rank_images_by_confusion
from ibs_study.models.postprocess import PREDICTIONS_JSON, PREDICTIONS_PNG_DIR
from ibs_study.viz.panoptic import segment_labels

__all__ = [
    "RECORDS_FILE",
    "STUDY_RUN_DIRS",
    "DEMO_RUN_DIRS",
    "ImageId",
    "explorer_run_dirs",
    "RunEval",
    "Selection",
    "ExplorerData",
    "sort_by_confusion",
]

RECORDS_FILE = "confusion_records.jsonl"
# The runs the explorer opens by default: the study's seed-0 crop and crop + IBS runs (notebook 04),
# else those of `make demo` (ibs_study.study.demo writes runs/demo/<setting>).
STUDY_RUN_DIRS = ("runs/study/pfcn_crop_s0", "runs/study/pfcn_crop_ibs_s0")
DEMO_RUN_DIRS = ("runs/demo/crop", "runs/demo/crop_ibs")
ImageId = str | int


def explorer_run_dirs(run_dirs: Sequence[str | os.PathLike], split: str = "val") -> list[Path]:
    """The run directories to explore: ``run_dirs`` when each holds its panoptic evaluation of
    ``split``; the study's default pair (:data:`STUDY_RUN_DIRS`), when not evaluated, falls back to
    the demo's (:data:`DEMO_RUN_DIRS`) when those are.

    Raises:
        RunDirError: a run directory without ``eval_<split>/confusion_records.jsonl``; says what makes one.
    """

    def missing(dirs: Sequence[str | os.PathLike]) -> list[Path]:
        return [Path(d) for d in dirs if not (Path(d) / f"eval_{split}" / RECORDS_FILE).is_file()]

    candidates = [list(run_dirs)]
    if [str(d) for d in run_dirs] == list(STUDY_RUN_DIRS):
        candidates.append(list(DEMO_RUN_DIRS))
    for dirs in candidates:
        if not missing(dirs):
            return [Path(d) for d in dirs]
    tried = " nor ".join(str(missing(dirs)[0]) for dirs in candidates)
    raise RunDirError(
        f"no panoptic evaluation ({RECORDS_FILE}) in {tried}: run `make demo` (then `make explore`), train and "
        f"evaluate the runs (notebook 04, or `ibs-study train` + `ibs-study evaluate`), or pass run_dirs"
    )


def sort_by_confusion(records: Sequence[ConfusionRecord]) -> list[ConfusionRecord]:
    """Most confused first: confusion level, then area (both descending); ties keep the given order."""
    return sorted(records, key=lambda r: (-r.confusion_level, -r.area))


def _read_records(path: Path) -> list[ConfusionRecord]:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: confusion records not found (evaluate the run on the panoptic task)"
        )
    records = []
    with open(path) as f:
        for line_number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(ConfusionRecord.from_json(json.loads(line)))
            except (json.JSONDecodeError, TypeError, KeyError) as err:
                raise PanopticFormatError(
                    f"{path}, line {line_number}: not a confusion record ({err})"
                ) from err
    return records


@dataclass
class RunEval:
    """One run's evaluation folder, records and prediction JSON read, PNGs on demand.

    Attributes:
        label: the run's name in the explorer ("crop", "crop + IBS").
        eval_dir: the folder.
        records: one per predicted thing segment, in file order.
        predictions: image id -> the prediction JSON's record of that image.
    """

    label: str
    eval_dir: Path
    records: list[ConfusionRecord]
    predictions: dict[ImageId, ImageRecord]
    _by_key: dict[tuple[ImageId, int], ConfusionRecord] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, eval_dir: str | os.PathLike, label: str, categories: dict[int, CategoryInfo]) -> RunEval:
        """Read ``eval_dir``'s records and prediction JSON, checking that they describe each other."""
        eval_dir = Path(eval_dir)
        records = _read_records(eval_dir / RECORDS_FILE)
        annotations = load_prediction_json(eval_dir / PREDICTIONS_JSON, categories)
        predictions = {record.image_id: record for record in annotations.records}
        run = cls(label=label, eval_dir=eval_dir, records=records, predictions=predictions)
        for record in records:
            key = (record.image_id, record.segment_id)
            if key in run._by_key:
                raise PanopticFormatError(
                    f"{eval_dir / RECORDS_FILE}: image id {record.image_id!r}, segment id {record.segment_id} "
                    f"has more than one record"
                )
            listed = predictions.get(record.image_id)
            if listed is None or record.segment_id not in {s.id for s in listed.segments}:
                raise PanopticFormatError(
                    f"{eval_dir / RECORDS_FILE}: image id {record.image_id!r}, segment id {record.segment_id} "
                    f"is not a segment of {eval_dir / PREDICTIONS_JSON}"
                )
            run._by_key[key] = record
        return run

    def record(self, image_id: ImageId, segment_id: int) -> ConfusionRecord:
        try:
            return self._by_key[(image_id, segment_id)]
        except KeyError:
            raise KeyError(
                f"{self.eval_dir / RECORDS_FILE}: no record of image id {image_id!r}, segment id {segment_id}"
            ) from None

    def has_record(self, image_id: ImageId, segment_id: int) -> bool:
        return (image_id, segment_id) in self._by_key

    def read_prediction(self, image_id: ImageId) -> tuple[np.ndarray, list[Segment]]:
        """(H, W) int32 predicted id map and segments of ``image_id``, checked against the JSON."""
        if image_id not in self.predictions:
            raise KeyError(f"{self.eval_dir / PREDICTIONS_JSON}: no prediction for image id {image_id!r}")
        listed = self.predictions[image_id]
        png = self.eval_dir / PREDICTIONS_PNG_DIR / listed.png_name
        id_map = read_id_png(png)
        check_segments_match_png(id_map, listed.segments, png_path=png, image_id=image_id, check_area=False)
        return id_map, list(listed.segments)


@dataclass
class Selection:
    """One selected predicted thing segment and what it covers.

    Attributes:
        run_index: which run the prediction belongs to.
        record: its confusion record.
        threshold: the confusion threshold T the selection was made with.
        covered: non-crowd GT things covered by more than T of their area, largest fraction first.
        thing_overlaps: every non-crowd GT thing it intersects, largest fraction first.
        target_gt_id: the GT thing the comparison is anchored on: its PQ match, else the GT thing
            sharing most pixels with it (the object it mostly lies on), or None when it touches
            no GT thing.
        other_index: the other run, or None with a single run.
        counterpart: the other run's predicted thing covering ``target_gt_id`` most, or None.
    """

    run_index: int
    record: ConfusionRecord
    threshold: float
    covered: list[GTOverlap]
    thing_overlaps: list[GTOverlap]
    target_gt_id: int | None
    other_index: int | None
    counterpart: ConfusionRecord | None

    @property
    def covered_gt_ids(self) -> list[int]:
        return [o.gt_id for o in self.covered]

    def counterpart_covered(self) -> list[GTOverlap]:
        if self.counterpart is None:
            return []
        return sorted(self.counterpart.covered_things(self.threshold), key=lambda o: -o.frac_of_gt)


def _thing_overlaps(record: ConfusionRecord) -> list[GTOverlap]:
    return sorted(
        (o for o in record.overlaps if o.isthing and not o.iscrowd),
        key=lambda o: (-o.frac_of_gt, -o.intersection),
    )


class ExplorerData:
    """One or two evaluated runs of the same dataset split, with the ground truth.

    Args:
        runs: the runs (one or two; with two, each is compared with the other).
        dataset: the ground truth the runs were evaluated on.
        cache_size: images / id maps kept in memory per kind.

    Raises:
        PanopticFormatError: a record or prediction for an image id the dataset lacks.
    """

    def __init__(self, runs: Sequence[RunEval], dataset: PanopticDataset, *, cache_size: int = 8) -> None:
        if not 1 <= len(runs) <= 2:
            raise ValueError(f"the explorer compares one or two runs, got {len(runs)}")
        labels = [run.label for run in runs]
        if len(set(labels)) != len(labels):
            raise ValueError(f"run labels must differ, got {labels}")
        self.runs = list(runs)
        self.dataset = dataset
        self.categories = dataset.meta.by_id()
        self._index = {record.image_id: k for k, record in enumerate(dataset.records)}
        for run in self.runs:
            extra = [image_id for image_id in run.predictions if image_id not in self._index]
            if extra:
                raise PanopticFormatError(
                    f"{run.eval_dir / PREDICTIONS_JSON}: prediction for image id {extra[0]!r}, which "
                    f"{dataset.json_path} does not list"
                )
        self.gt = lru_cache(maxsize=cache_size)(self._read_gt)
        self.prediction = lru_cache(maxsize=2 * cache_size)(self._read_prediction)
        self._gt_labels = lru_cache(maxsize=cache_size)(self._read_gt_labels)
        self._pred_labels = lru_cache(maxsize=2 * cache_size)(self._read_pred_labels)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_paths(
        cls,
        eval_dirs: Sequence[str | os.PathLike],
        dataset: PanopticDataset,
        labels: Sequence[str] | None = None,
        **kwargs,
    ) -> ExplorerData:
        """Runs from explicit evaluation folders, labelled by ``labels`` (default: folder names)."""
        labels = list(labels) if labels is not None else [Path(d).parent.name or str(d) for d in eval_dirs]
        if len(labels) != len(eval_dirs):
            raise ValueError(f"got {len(labels)} labels for {len(eval_dirs)} evaluation folders")
        categories = dataset.meta.by_id()
        runs = [RunEval.load(d, label, categories) for d, label in zip(eval_dirs, labels)]
        return cls(runs, dataset, **kwargs)

    @classmethod
    def from_runs(
        cls,
        run_dirs: Sequence[str | os.PathLike],
        labels: Sequence[str] | None = None,
        *,
        split: str = "val",
        data_root: str | os.PathLike | None = None,
        **kwargs,
    ) -> ExplorerData:
        """Runs from their run directories: ``RUN_DIR/eval_<split>``, ground truth from the run config.

        Args:
            data_root: where the dataset lies now, if not at the config's ``data.root``.

        Raises:
            ValueError: the runs were trained on different datasets.
        """
        if not run_dirs:
            raise ValueError("from_runs needs at least one run directory")
        sources, configs = [], [read_run_config(run_dir) for run_dir in run_dirs]
        for cfg in configs:
            sources.append((cfg.data.dataset, Path(data_root if data_root is not None else cfg.data.root)))
        dataset = open_split(configs[0], split, prepare=False, root=sources[0][1])
        for run_dir, cfg, source in zip(run_dirs[1:], configs[1:], sources[1:]):
            other = open_split(cfg, split, prepare=False, root=source[1])
            if other.json_path != dataset.json_path and other.content_hash != dataset.content_hash:
                raise ValueError(
                    f"{run_dir} was evaluated on {source[0]} at {source[1]}, {run_dirs[0]} on "
                    f"{sources[0][0]} at {sources[0][1]}: the {split} ground truth differs"
                )
        labels = list(labels) if labels is not None else [Path(d).name for d in run_dirs]
        return cls.from_paths([Path(d) / f"eval_{split}" for d in run_dirs], dataset, labels, **kwargs)

    # ------------------------------------------------------------------ reading

    def _read_gt(self, image_id: ImageId) -> PanopticSample:
        if image_id not in self._index:
            raise KeyError(f"{self.dataset.json_path}: no image id {image_id!r}")
        return self.dataset[self._index[image_id]]

    def _read_prediction(self, run_index: int, image_id: ImageId) -> tuple[np.ndarray, list[Segment]]:
        id_map, segments = self.runs[run_index].read_prediction(image_id)
        gt = self.gt(image_id)
        if id_map.shape != gt.id_map.shape:
            raise PanopticFormatError(
                f"{self.runs[run_index].eval_dir}: prediction of image id {image_id!r} is {id_map.shape} (H, W), "
                f"the ground truth {gt.id_map.shape}"
            )
        return id_map, segments

    def category_name(self, category_id: int) -> str:
        return (
            self.categories[category_id].name if category_id in self.categories else f"category {category_id}"
        )

    @property
    def thing_classes(self) -> list[tuple[str, int]]:
        """(name, category id) of the thing classes that some run predicted."""
        present = {r.category_id for run in self.runs for r in run.records}
        return [(c.name, c.id) for c in self.categories.values() if c.isthing and c.id in present]

    def other_index(self, run_index: int) -> int | None:
        return None if len(self.runs) == 1 else 1 - run_index

    # ------------------------------------------------------------------ rankings

    def records(
        self,
        run_index: int,
        *,
        category_id: int | None = None,
        size: str | None = None,
        image_id: ImageId | None = None,
    ) -> list[ConfusionRecord]:
        """The run's records under the filters, most confused first (:func:`sort_by_confusion`)."""
        if size is not None and size not in SIZE_NAMES:
            raise ValueError(f"size must be one of {SIZE_NAMES} or None, got {size!r}")
        chosen = [
            r
            for r in self.runs[run_index].records
            if (category_id is None or r.category_id == category_id)
            and (size is None or r.size == size)
            and (image_id is None or r.image_id == image_id)
        ]
        return sort_by_confusion(chosen)

    def top_confused(self, run_index: int, threshold: float, k: int, **filters) -> list[ConfusionRecord]:
        """The ``k`` most confused predictions (confused at ``threshold``) of the run, over all images."""
        return [r for r in self.records(run_index, **filters) if r.is_confused(threshold)][:k]

    def ranked_images(self, run_index: int, threshold: float, **filters) -> list[dict]:
        """Images with predictions under the filters, by confused area at ``threshold`` (most first)."""
        return rank_images_by_confusion(self.records(run_index, **filters), threshold)

    # ------------------------------------------------------------------ selection

    def select(self, run_index: int, image_id: ImageId, segment_id: int, threshold: float) -> Selection:
        """What predicted thing ``segment_id`` of ``image_id`` covers, and its counterpart in the other run."""
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"threshold must lie in [0, 1), got {threshold}")
        record = self.runs[run_index].record(image_id, segment_id)
        overlaps = _thing_overlaps(record)
        target = record.matched_gt_id
        if target is None and overlaps:
            target = max(overlaps, key=lambda o: o.intersection).gt_id
        other = self.other_index(run_index)
        counterpart = None if other is None or target is None else self.counterpart(other, image_id, target)
        return Selection(
            run_index=run_index,
            record=record,
            threshold=threshold,
            covered=[o for o in overlaps if o.frac_of_gt > threshold],
            thing_overlaps=overlaps,
            target_gt_id=target,
            other_index=other,
            counterpart=counterpart,
        )

    def counterpart(self, run_index: int, image_id: ImageId, gt_id: int) -> ConfusionRecord | None:
        """The run's predicted thing sharing most pixels with GT segment ``gt_id`` (ties: the smaller one)."""
        best: tuple[int, int] | None = None
        chosen = None
        for record in self.runs[run_index].records:
            if record.image_id != image_id:
                continue
            shared = next((o.intersection for o in record.overlaps if o.gt_id == gt_id), 0)
            if shared > 0 and (best is None or (shared, -record.area) > best):
                best, chosen = (shared, -record.area), record
        return chosen

    def segment_at(self, run_index: int, image_id: ImageId, x: float, y: float) -> int | None:
        """The run's predicted thing segment (one with a record) under pixel (x, y), else None."""
        id_map, _ = self.prediction(run_index, image_id)
        col, row = int(round(x)), int(round(y))
        if not (0 <= row < id_map.shape[0] and 0 <= col < id_map.shape[1]):
            return None
        segment_id = int(id_map[row, col])
        return segment_id if self.runs[run_index].has_record(image_id, segment_id) else None

    def gt_segment_at(self, image_id: ImageId, x: float, y: float) -> int | None:
        """The GT segment id under pixel (x, y), or None on void / outside the image."""
        id_map = self.gt(image_id).id_map
        col, row = int(round(x)), int(round(y))
        if not (0 <= row < id_map.shape[0] and 0 <= col < id_map.shape[1]) or id_map[row, col] == 0:
            return None
        return int(id_map[row, col])

    def region(
        self, selection: Selection, margin: float = 0.25, min_side: int = 32
    ) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), end-exclusive: the box around the prediction, the GT things it covers and the
        counterpart, grown by ``margin`` of its size on each side (at least ``min_side`` pixels wide and
        high), clipped to the image."""
        record = selection.record
        gt = self.gt(record.image_id)
        boxes = [record.bbox]
        if selection.counterpart is not None:
            boxes.append(selection.counterpart.bbox)
        gt_ids = set(selection.covered_gt_ids)
        if selection.target_gt_id is not None:
            gt_ids.add(selection.target_gt_id)
        if gt_ids:
            rows, cols = np.nonzero(np.isin(gt.id_map, list(gt_ids)))
            boxes.append(
                (
                    int(cols.min()),
                    int(rows.min()),
                    int(cols.max() - cols.min() + 1),
                    int(rows.max() - rows.min() + 1),
                )
            )
        x0 = min(b[0] for b in boxes)
        y0 = min(b[1] for b in boxes)
        x1 = max(b[0] + b[2] for b in boxes)
        y1 = max(b[1] + b[3] for b in boxes)
        height, width = gt.id_map.shape
        grow_x = max(round(margin * (x1 - x0)), (min_side - (x1 - x0) + 1) // 2, 0)
        grow_y = max(round(margin * (y1 - y0)), (min_side - (y1 - y0) + 1) // 2, 0)
        return max(0, x0 - grow_x), max(0, y0 - grow_y), min(width, x1 + grow_x), min(height, y1 + grow_y)

    def gt_label(self, image_id: ImageId, gt_id: int) -> str:
        """The GT segment's label as the panoptic figures write it ("car 2")."""
        labels = self._gt_labels(image_id)
        if gt_id not in labels:
            raise KeyError(f"{self.dataset.json_path}: image id {image_id!r} has no segment id {gt_id}")
        return labels[gt_id]

    def _read_gt_labels(self, image_id: ImageId) -> dict[int, str]:
        return segment_labels(self.dataset.records[self._index[image_id]].segments, self.categories)

    def pred_label(self, run_index: int, record: ConfusionRecord) -> str:
        """The predicted segment's label as the run's panoptic figure writes it (class and index in the
        image), with its size: "car 2 (L)"."""
        labels = self._pred_labels(run_index, record.image_id)
        return f"{labels[record.segment_id]} ({record.size})"

    def _read_pred_labels(self, run_index: int, image_id: ImageId) -> dict[int, str]:
        return segment_labels(self.runs[run_index].predictions[image_id].segments, self.categories)
