"""Problem analysis (paper Sec. 3): why crop-based training confuses instances, in numbers.

* :func:`instance_counts`: thing instances in each full image and in random training
  crops of it (the paper's Fig. 3 argument as two distributions);
* :func:`segment_sizes` and :func:`size_shares`: segment areas, and how the thing segments
  and the thing pixels split over the S / M / L sizes (PQ counts segments, Acc^th and
  Prec^th count pixels);
* :func:`shared_class_fractions`: how often an IBS pair (a crop and the crop whose features
  its thing embeddings meet) holds things of a common class, for random crops with a random
  partner and for the class-aware paired sampler with its pair mate (Sec. 4.2);
* :func:`merge_instances` and :func:`merge_sweep`: a prediction built from the ground truth
  in which one predicted segment covers the ``k`` largest instances of one thing class,
  scored with the real :class:`~ibs_study.metrics.panoptic.PanopticEvaluator`: PQ barely
  moves while Acc^th and Prec^th drop (Sec. 3.3).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ibs_study.config import ExperimentConfig
from ibs_study.data.datasets import PanopticDataset
from ibs_study.data.panoptic import VOID_ID, CategoryInfo, PanopticSample, Segment, segments_from_id_map
from ibs_study.data.statistics import things_in_crop
from ibs_study.data.transforms import random_crop_box
from ibs_study.errors import ConfigError, RunDirError
from ibs_study.losses import assign_partners, shared_thing_class_fraction
from ibs_study.metrics.panoptic import DEFAULT_SIZE_BOUNDS, SIZE_NAMES, PanopticEvaluator, curve_ratio_at

if TYPE_CHECKING:
    from ibs_study.study.results import StudyResults

logger = logging.getLogger(__name__)

__all__ = [
    "InstanceCounts",
    "instance_counts",
    "SegmentSizes",
    "segment_sizes",
    "size_shares",
    "SAMPLER_PAIRINGS",
    "shared_class_fractions",
    "setting_differences",
    "run_differences",
    "score_prediction",
    "merge_instances",
    "MergeOutcome",
    "merge_sweep",
]


# ------------------------------------------------------------------------ instances per crop


@dataclass
class InstanceCounts:
    """Thing instances per full image and per random crop.

    Attributes:
        per_image: (I,) int64 non-crowd thing instances of each image.
        per_crop: (I, K) int64 instances with at least one pixel in each of K random crops.
        per_image_one_class: (I,) int64 instances of the image's most frequent thing class.
        per_crop_one_class: (I, K) int64 the same within each crop.
        crop_size: (H, W) of the crops.
        image_ids: the I image ids.
    """

    per_image: np.ndarray
    per_crop: np.ndarray
    per_image_one_class: np.ndarray
    per_crop_one_class: np.ndarray
    crop_size: tuple[int, int]
    image_ids: list

    @property
    def ratio(self) -> float:
        """Mean instances per image over mean instances per crop (inf when crops hold none)."""
        mean_crop = float(self.per_crop.mean()) if self.per_crop.size else 0.0
        return float(self.per_image.mean()) / mean_crop if mean_crop > 0 else float("inf")


def instance_counts(
    dataset: PanopticDataset,
    crop_size: tuple[int, int] | Sequence[int],
    *,
    crops_per_image: int = 8,
    max_images: int | None = None,
    seed: int = 0,
) -> InstanceCounts:
    """Count thing instances in full images and in ``crops_per_image`` uniform random crops of each.

    A thing counts for a crop when at least one of its pixels lies in the window (as in
    :func:`ibs_study.data.statistics.things_in_crop`); crowd segments are not instances.
    Crops larger than an image side start at 0 on that side (the crop then holds the whole side).

    Args:
        dataset: the split to describe.
        crop_size: (H, W) of the training crops.
        crops_per_image: random crops per image (K).
        max_images: only the first N images (None: all).
        seed: crop positions of image ``i`` come from ``(seed, i)``.
    """
    crop_h, crop_w = (int(v) for v in crop_size)
    if min(crop_h, crop_w) < 1:
        raise ValueError(f"crop_size must be positive (H, W), got {tuple(crop_size)}")
    if crops_per_image < 1:
        raise ValueError(f"crops_per_image must be >= 1, got {crops_per_image}")
    count = len(dataset) if max_images is None else min(max_images, len(dataset))
    categories = dataset.meta.by_id()
    per_image, per_crop, image_one, crop_one, ids = [], [], [], [], []
    for index in range(count):
        record = dataset.records[index]
        id_map = dataset.read_id_map(index)
        things = [s for s in record.segments if categories[s.category_id].isthing and not s.iscrowd]
        by_class: dict[int, list[Segment]] = {}
        for seg in things:
            by_class.setdefault(seg.category_id, []).append(seg)
        rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
        crops, crops_one = [], []
        for _ in range(crops_per_image):
            top, left = random_crop_box(id_map.shape, (crop_h, crop_w), rng)
            crops.append(things_in_crop(id_map, things, top, left, crop_h, crop_w))
            crops_one.append(
                max(
                    (things_in_crop(id_map, group, top, left, crop_h, crop_w) for group in by_class.values()),
                    default=0,
                )
            )
        per_image.append(len(things))
        image_one.append(max((len(group) for group in by_class.values()), default=0))
        per_crop.append(crops)
        crop_one.append(crops_one)
        ids.append(record.image_id)
    return InstanceCounts(
        per_image=np.asarray(per_image, dtype=np.int64),
        per_crop=np.asarray(per_crop, dtype=np.int64).reshape(count, crops_per_image),
        per_image_one_class=np.asarray(image_one, dtype=np.int64),
        per_crop_one_class=np.asarray(crop_one, dtype=np.int64).reshape(count, crops_per_image),
        crop_size=(crop_h, crop_w),
        image_ids=ids,
    )


# ---------------------------------------------------------------------------- segment sizes


@dataclass
class SegmentSizes:
    """Areas of the non-crowd segments of a split (from the annotation JSON).

    Attributes:
        area: (N,) int64 pixels.
        fraction: (N,) float64 area / image area.
        category: (N,) the category name of each segment.
        isthing: (N,) bool.
    """

    area: np.ndarray
    fraction: np.ndarray
    category: np.ndarray
    isthing: np.ndarray


def segment_sizes(dataset: PanopticDataset, *, max_images: int | None = None) -> SegmentSizes:
    """Areas of every non-crowd segment of the first ``max_images`` images (None: all)."""
    categories = dataset.meta.by_id()
    records = dataset.records if max_images is None else dataset.records[:max_images]
    rows = [
        (seg.area, seg.area / (record.height * record.width), categories[seg.category_id])
        for record in records
        for seg in record.segments
        if not seg.iscrowd
    ]
    return SegmentSizes(
        area=np.array([r[0] for r in rows], dtype=np.int64),
        fraction=np.array([r[1] for r in rows], dtype=np.float64),
        category=np.array([r[2].name for r in rows], dtype=object),
        isthing=np.array([r[2].isthing for r in rows], dtype=bool),
    )


def size_shares(
    sizes: SegmentSizes, bounds: tuple[float, float] = DEFAULT_SIZE_BOUNDS
) -> dict[str, dict[str, float]]:
    """How the thing segments and the thing pixels split over the sizes S / M / L.

    Sizes follow the evaluator's rule on area fractions: S below ``bounds[0]``, M up to
    ``bounds[1]`` (exclusive), L from ``bounds[1]``.

    Returns:
        ``{"S" | "M" | "L": {"segments": share of thing segments, "pixels": share of thing
        pixels, "count": number of thing segments}}``; shares are 0 without things.
    """
    fraction = sizes.fraction[sizes.isthing]
    area = sizes.area[sizes.isthing].astype(np.float64)
    bins = np.digitize(fraction, bounds)  # 0: S, 1: M, 2: L
    total_count, total_area = len(fraction), float(area.sum())
    return {
        name: {
            "segments": float((bins == k).sum() / total_count) if total_count else 0.0,
            "pixels": float(area[bins == k].sum() / total_area) if total_area else 0.0,
            "count": int((bins == k).sum()),
        }
        for k, name in enumerate(SIZE_NAMES)
    }


# ----------------------------------------------------------------------- sampler statistic

# label -> (sampler.kind, IBS partner rule): the two settings of Table 3's IBS rows
SAMPLER_PAIRINGS: dict[str, tuple[str, str]] = {
    "random crops, random partner": ("random", "random"),
    "paired sampler, pair mate": ("paired", "pair_mate"),
}


def shared_class_fractions(
    cfg: ExperimentConfig,
    *,
    batches: int = 20,
    dataset: PanopticDataset | None = None,
    pairings: Mapping[str, tuple[str, str]] = SAMPLER_PAIRINGS,
) -> dict[str, np.ndarray]:
    """Per batch, the fraction of IBS pairs whose crops share a thing class, for each pairing.

    Each pairing draws ``batches`` training batches exactly as training step 0, 1, ... of
    ``cfg`` would (``cfg.sampler`` with ``kind`` replaced, the config's augmentation and
    batch size) and assigns partners with the pairing's rule and the step's generator.

    Args:
        cfg: the experiment (needs ``data.crop_size``; paired sampling needs an even batch).
        batches: batches per pairing.
        dataset: the training split (default: opened from ``cfg``).
        pairings: label -> (sampler kind, partner rule).

    Returns:
        label -> (batches,) float64 fractions in [0, 1].
    """
    from ibs_study.engine.data import open_split
    from ibs_study.engine.train import step_generator, train_loader

    if batches < 1:
        raise ValueError(f"batches must be >= 1, got {batches}")
    if dataset is None:
        dataset = open_split(cfg, cfg.data.train_split)
    out = {}
    for label, (kind, partner) in pairings.items():
        loader = train_loader(
            dataclasses.replace(cfg, sampler=dataclasses.replace(cfg.sampler, kind=kind)), dataset
        )
        values = []
        for step, batch in zip(range(batches), loader):
            partners = assign_partners(len(batch), partner, step_generator(cfg.seed, 0, step))
            values.append(shared_thing_class_fraction(batch.targets, partners))
        out[label] = np.asarray(values, dtype=np.float64)
    return out


# ----------------------------------------------------------------------- study comparisons


def setting_differences(
    results: StudyResults,
    model: str,
    baseline: str,
    other: str,
    metrics: Sequence[str] = ("pq", "pq_th", "pq_st", "acc_th", "prec_th"),
) -> dict[str, dict]:
    """``other - baseline`` per metric for one model of a ``synthetic_results.json``, paired by seed
    (the study's own rows, not variants).

    Runs with the same seed share the initialisation seed and the data order, so the
    difference is taken per seed and summarised with :func:`ibs_study.study.results.metric_summary`
    (mean, Student-t 95 % interval over the seeds both rows have).

    Returns:
        metric -> ``{"mean", "ci95", "per_seed", "seeds"}`` (fractions); metrics that a row
        lacks are left out.

    Raises:
        KeyError: a row is missing (the message lists the rows present).
        ValueError: the rows share no seed.
    """
    from ibs_study.study.claims import paired_difference

    first, second = results.find_row(model, baseline), results.find_row(model, other)
    if first is None or second is None:
        found = sorted((r.model, r.setting) for r in results.rows if not r.variant)
        missing = baseline if first is None else other
        raise KeyError(f"no row ({model!r}, {missing!r}) in the results; rows: {found}")
    seeds = [s for s in first.seeds if s in second.seeds]
    if not seeds:
        raise ValueError(
            f"rows {baseline!r} (seeds {list(first.seeds)}) and {other!r} (seeds {list(second.seeds)}) share no seed"
        )
    differences = {metric: paired_difference(first, second, metric) for metric in metrics}
    return {metric: d for metric, d in differences.items() if d is not None}


def run_differences(
    baseline_runs: str | os.PathLike,
    other_runs: str | os.PathLike,
    seeds: Sequence[int],
    metrics: Sequence[str] | None = None,
) -> dict[str, dict]:
    """``other - baseline`` per metric between two sets of evaluated runs in any folders, paired
    by seed: the runs ``<prefix>_s<seed>`` of two prefixes (e.g. ``runs/study/pfcn_crop`` against
    ``runs/exp_thingcrop/pfcn_crop``), so a side experiment reads against the study's rows.

    Args:
        baseline_runs, other_runs: run-directory prefixes.
        seeds: the seeds, each with a run under both prefixes.
        metrics: names of :func:`~ibs_study.study.results.flat_metrics` or ``confusion_auc`` (the mean of
            the confusion curve); None: every metric both have, then ``confusion_auc``.

    Returns:
        metric -> ``{"mean", "ci95", "per_seed", "seeds", "baseline", "other"}``: the summary of
        the differences (:func:`~ibs_study.study.results.metric_summary`, fractions) and the two means.

    Raises:
        RunDirError: a run directory is missing or not evaluated (names it).
        ConfigError: a seed given twice, or a metric neither set has.
        RunDirError: also when the two sets (or the runs of one set) trained for different numbers
            of steps.
    """
    from ibs_study.study.claims import paired_difference, per_seed_values
    from ibs_study.study.results import row_from_runs

    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds {list(seeds)} repeat a seed; give each once")
    rows = [
        row_from_runs([f"{prefix}_s{seed}" for seed in seeds], seeds)
        for prefix in (baseline_runs, other_runs)
    ]
    if rows[0].steps != rows[1].steps:
        raise RunDirError(
            f"{baseline_runs} trained {rows[0].steps} steps, {other_runs} {rows[1].steps}: not one budget; "
            "compare runs trained for the same train.max_steps"
        )
    if metrics is None:
        metrics = [m for m in rows[0].metrics if m in rows[1].metrics] + ["confusion_auc"]
    unknown = [
        m for m in metrics if m != "confusion_auc" and not (m in rows[0].metrics or m in rows[1].metrics)
    ]
    if unknown:
        raise ConfigError(
            f"metric(s) {unknown} not in these runs' metrics; choose from {sorted(rows[0].metrics)} or confusion_auc"
        )
    out = {}
    for metric in metrics:
        difference = paired_difference(rows[0], rows[1], metric)
        if difference is None:
            continue
        means = [float(np.mean(list(per_seed_values(row, metric).values()))) for row in rows]
        out[metric] = {**difference, "baseline": means[0], "other": means[1]}
    return out


# --------------------------------------------------------------------- PQ vs Acc^th / Prec^th


def score_prediction(
    gt_id_map: np.ndarray,
    gt_segments: Sequence[Segment],
    pred_id_map: np.ndarray,
    pred_segments: Sequence[Segment],
    categories: Mapping[int, CategoryInfo],
    image_id: str | int = 0,
) -> dict:
    """The evaluator's metrics (``summarize`` output, fractions) of one image's prediction."""
    evaluator = PanopticEvaluator(categories)
    evaluator.process(gt_id_map, gt_segments, pred_id_map, pred_segments, image_id)
    return evaluator.summarize()


def _largest_instances(
    segments: Iterable[Segment], categories: Mapping[int, CategoryInfo], category_id: int | None, k: int
) -> tuple[int, list[Segment]]:
    """The thing class to merge (given, or the one whose ``k`` largest instances cover most pixels)
    and its instances, largest first."""
    by_class: dict[int, list[Segment]] = {}
    for seg in segments:
        if categories[seg.category_id].isthing and not seg.iscrowd:
            by_class.setdefault(seg.category_id, []).append(seg)
    if not by_class:
        raise ValueError("the image has no non-crowd thing instance to merge")
    for group in by_class.values():
        group.sort(key=lambda s: (-s.area, s.id))
    if category_id is None:
        category_id = max(by_class, key=lambda c: (sum(s.area for s in by_class[c][:k]), -c))
    if category_id not in by_class:
        names = {c: categories[c].name for c in by_class}
        raise ValueError(
            f"category id {category_id} has no instance in the image; thing classes present: {names}"
        )
    return category_id, by_class[category_id]


def merge_instances(
    sample: PanopticSample,
    categories: Mapping[int, CategoryInfo],
    num_merged: int,
    category_id: int | None = None,
) -> tuple[np.ndarray, list[Segment], list[int]]:
    """A prediction equal to the ground truth except that one segment covers several instances.

    Every non-crowd GT segment is predicted exactly (crowd regions are left unpredicted,
    id 0), except the ``num_merged`` largest instances of one thing class, which become one
    predicted segment with the id of the largest: the confusion of Fig. 2.

    Args:
        sample: the ground truth (id map and segments).
        categories: dataset category id -> info.
        num_merged: instances merged (1: the perfect prediction); at most the class's count.
        category_id: the thing class to merge; default: the one whose ``num_merged``
            largest instances cover the most pixels.

    Returns:
        (predicted id map (H, W) int32, predicted segments, ids of the merged GT instances).
    """
    if num_merged < 1:
        raise ValueError(f"num_merged must be >= 1, got {num_merged}")
    category_id, instances = _largest_instances(sample.segments, categories, category_id, num_merged)
    if num_merged > len(instances):
        raise ValueError(
            f"image id {sample.image_id!r}: num_merged={num_merged} but {categories[category_id].name} "
            f"has {len(instances)} instance(s)"
        )
    merged = [s.id for s in instances[:num_merged]]
    pred = sample.id_map.astype(np.int32, copy=True)
    crowd = [s.id for s in sample.segments if s.iscrowd]
    pred[np.isin(sample.id_map, crowd)] = VOID_ID
    pred[np.isin(sample.id_map, merged)] = merged[0]
    category_of = {s.id: s.category_id for s in sample.segments}
    return pred, segments_from_id_map(pred, category_of), merged


@dataclass
class MergeOutcome:
    """One prediction of :func:`merge_sweep` and its scores.

    Attributes:
        num_merged: instances covered by the merged prediction.
        merged_ids: their GT segment ids, largest first.
        merged_area: pixels of the merged prediction.
        category: class name of the merged instances.
        metrics: the evaluator's summary (fractions).
    """

    num_merged: int
    merged_ids: list[int]
    merged_area: int
    category: str
    metrics: dict

    def row(self) -> dict[str, float | int | str]:
        """Flat record for tables: the numbers the worked example compares (fractions)."""
        m = self.metrics
        return {
            "num_merged": self.num_merged,
            "category": self.category,
            "merged_area": self.merged_area,
            "pq": m["all"]["pq"],
            "pq_th": m["things"]["pq"],
            "acc_th": m["acc_th"],
            "prec_th": m["prec_th"],
            "confused_at_0.5": curve_ratio_at(m["confusion_curve"], 0.5),
        }


def merge_sweep(
    sample: PanopticSample,
    categories: Mapping[int, CategoryInfo],
    counts: Sequence[int] = (1, 2, 3, 4),
    category_id: int | None = None,
) -> list[MergeOutcome]:
    """Score :func:`merge_instances` predictions for each number of merged instances in ``counts``.

    The class is chosen once, for the largest count, so every prediction merges instances
    of the same class (the ``k`` largest ones).
    """
    if not counts:
        raise ValueError("counts must list at least one number of merged instances")
    category_id, _ = _largest_instances(sample.segments, categories, category_id, max(counts))
    outcomes = []
    for k in counts:
        pred, segments, merged = merge_instances(sample, categories, k, category_id)
        area = next(s.area for s in segments if s.id == merged[0])
        metrics = score_prediction(
            sample.id_map, sample.segments, pred, segments, categories, sample.image_id
        )
        outcomes.append(MergeOutcome(k, merged, area, categories[category_id].name, metrics))
    return outcomes
