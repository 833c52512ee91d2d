"""The explorer's raster views: a selected prediction over its image region, and the panoptic images.

:func:`instance_views` draws the selected predicted mask (and, with two runs, the other run's
prediction on the same object) over the same image region, with the GT instances it is judged
against outlined; :func:`panoptic_rgb` draws the colour-coded panoptic image of the ground
truth or of a run, colours matched to the ground truth's. The widget shows these arrays in
plotly figures, the static export composes them into a PNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ibs_study.metrics.panoptic import ConfusionRecord
from ibs_study.viz.explorer.data import ExplorerData, ImageId, Selection
from ibs_study.viz.panoptic import (
    RGB,
    PanopticView,
    blend,
    label_points,
    matched_colors,
    render_panoptic,
    segment_colors,
    segment_labels,
)

__all__ = [
    "GT_SOURCE",
    "OUTLINE_COLORS",
    "InstanceView",
    "GTOutlines",
    "outline_colors",
    "gt_outlines",
    "render_instance_view",
    "instance_views",
    "run_order",
    "panoptic_source",
    "panoptic_rgb",
    "panoptic_labels",
]

GT_SOURCE = -1  # the panoptic image of the ground truth; a run's is named by its index
# Outlines of the GT instances a prediction covers, in order of covered fraction; the
# predicted mask itself is tinted with MASK_COLOR (unlike any of these) and the image
# around it darkened by OUTSIDE_DIM.
OUTLINE_COLORS: tuple[RGB, ...] = (
    (255, 40, 40),
    (40, 220, 40),
    (255, 225, 25),
    (0, 130, 255),
    (255, 130, 0),
    (0, 240, 240),
    (160, 255, 120),
    (255, 255, 255),
)
MASK_COLOR: RGB = (255, 0, 255)
OUTSIDE_DIM = 0.5


@dataclass
class InstanceView:
    """One predicted mask drawn over its image region, with the GT outlines it is judged against.

    Attributes:
        rgb: (h, w, 3) uint8 crop of the image: mask filled, GT instances outlined.
        region: (x0, y0, x1, y1) of the crop in image pixels.
        labels: (x, y, text, colour) in image pixels, one per outlined GT instance.
        title: what the view shows.
    """

    rgb: np.ndarray
    region: tuple[int, int, int, int]
    labels: list[tuple[int, int, str, RGB]]
    title: str


def outline_colors(gt_ids: Sequence[int]) -> dict[int, RGB]:
    """A distinct outline colour per GT id, in the order given."""
    return {gt_id: OUTLINE_COLORS[k % len(OUTLINE_COLORS)] for k, gt_id in enumerate(gt_ids)}


@dataclass
class GTOutlines:
    """The GT instances drawn over an image region, shared by the instance views of all runs.

    Attributes:
        region: (x0, y0, x1, y1) in image pixels, end-exclusive.
        rings: GT id -> (h, w) bool inner boundary of that GT segment within the region.
        points: GT id -> (x, y) label position in image pixels (inside the segment).
        colors: GT id -> outline colour.
    """

    region: tuple[int, int, int, int]
    rings: dict[int, np.ndarray]
    points: dict[int, tuple[int, int]]
    colors: dict[int, RGB]


def gt_outlines(
    data: ExplorerData,
    image_id: ImageId,
    region: tuple[int, int, int, int],
    colors: dict[int, RGB],
    thickness: int = 2,
) -> GTOutlines:
    """Outlines (``thickness`` pixels inside each segment) and label points of the GT ids of ``colors``
    that are visible in ``region``."""
    x0, y0, x1, y1 = region
    gt_crop = data.gt(image_id).id_map[y0:y1, x0:x1]
    visible = [g for g in colors if (gt_crop == g).any()]
    points = label_points(np.where(np.isin(gt_crop, visible), gt_crop, 0), visible)
    rings = {}
    for gt_id in visible:
        gt_mask = gt_crop == gt_id
        rings[gt_id] = gt_mask & ~ndimage.binary_erosion(gt_mask, iterations=thickness, border_value=0)
    return GTOutlines(
        region=region,
        rings=rings,
        points={g: (px + x0, py + y0) for g, (px, py) in points.items()},
        colors={g: colors[g] for g in visible},
    )


def render_instance_view(
    data: ExplorerData,
    run_index: int,
    image_id: ImageId,
    record: ConfusionRecord | None,
    outlines: GTOutlines,
    *,
    alpha: float = 0.6,
) -> InstanceView:
    """Draw the run's predicted mask of ``record`` (none when None) on the region of ``outlines``, with
    those GT instances outlined and labelled with the fraction of their area the prediction covers.

    The mask is tinted with MASK_COLOR at ``alpha``, the rest of the region darkened (OUTSIDE_DIM).
    """
    x0, y0, x1, y1 = outlines.region
    crop = data.gt(image_id).image[y0:y1, x0:x1]
    mask = np.zeros(crop.shape[:2], dtype=bool)
    if record is not None:
        if record.image_id != image_id:
            raise ValueError(f"record of image id {record.image_id!r} drawn on image id {image_id!r}")
        mask = data.prediction(run_index, image_id)[0][y0:y1, x0:x1] == record.segment_id
    rgb = blend(crop, np.zeros_like(crop), OUTSIDE_DIM, ~mask)
    rgb = blend(rgb, np.broadcast_to(np.array(MASK_COLOR, dtype=np.uint8), crop.shape), alpha, mask)
    fractions = {o.gt_id: o.frac_of_gt for o in record.overlaps} if record is not None else {}
    labels = []
    for gt_id, ring in outlines.rings.items():
        rgb[ring] = outlines.colors[gt_id]
        text = f"{data.gt_label(image_id, gt_id)}: {100 * fractions.get(gt_id, 0.0):.0f}%"
        if record is not None and record.matched_gt_id == gt_id:
            text += " (match)"
        labels.append((*outlines.points[gt_id], text, outlines.colors[gt_id]))
    run = data.runs[run_index]
    if record is None:
        title = f"{run.label}: no predicted thing covers these objects"
    else:
        title = f"{run.label}: {image_id} · {data.pred_label(run_index, record)}"
    return InstanceView(rgb=rgb, region=outlines.region, labels=labels, title=title)


def run_order(data: ExplorerData, run_index: int) -> list[int]:
    """The run shown in each instance view when ``run_index`` is the primary run: it, then the other."""
    other = data.other_index(run_index)
    return [run_index] + ([other] if other is not None else [])


def _outlined(selection: Selection) -> dict[int, RGB]:
    """Outline colours of the GT things the selection and its counterpart cover, and of its target."""
    ids = list(selection.covered_gt_ids)
    for extra in [selection.target_gt_id, *[o.gt_id for o in selection.counterpart_covered()]]:
        if extra is not None and extra not in ids:
            ids.append(extra)
    return outline_colors(ids)


def instance_views(data: ExplorerData, selection: Selection) -> list[InstanceView]:
    """The selected prediction's view and (with two runs) its counterpart's, over the same region."""
    image_id = selection.record.image_id
    outlines = gt_outlines(data, image_id, data.region(selection), _outlined(selection))
    views = [render_instance_view(data, selection.run_index, image_id, selection.record, outlines)]
    if selection.other_index is not None:
        views.append(
            render_instance_view(data, selection.other_index, image_id, selection.counterpart, outlines)
        )
    return views


def panoptic_source(
    data: ExplorerData, source: int, image_id: ImageId
) -> tuple[PanopticView, dict[int, RGB]]:
    """The ground truth's (``source`` :data:`GT_SOURCE`) or run ``source``'s segments of ``image_id``, with
    their colours: the ground truth's own, a run's matched to them (the same object keeps its colour)."""
    sample = data.gt(image_id)
    gt_view = PanopticView("ground truth", sample.id_map, sample.segments)
    gt_colors = segment_colors(sample.segments, data.categories)
    if source == GT_SOURCE:
        return gt_view, gt_colors
    id_map, segments = data.prediction(source, image_id)
    view = PanopticView(data.runs[source].label, id_map, segments)
    return view, matched_colors(gt_view, gt_colors, view, data.categories)


def panoptic_rgb(
    data: ExplorerData, view: PanopticView, colors: dict[int, RGB], image_id: ImageId
) -> np.ndarray:
    """(H, W, 3) uint8 colour-coded panoptic image of ``view`` over the image of ``image_id``, without text
    (:func:`~ibs_study.viz.panoptic.render_panoptic`; :func:`panoptic_labels` gives the labels)."""
    return render_panoptic(
        view.id_map,
        view.segments,
        data.categories,
        image=data.gt(image_id).image,
        colors=colors,
        labels=False,
    )


def panoptic_labels(data: ExplorerData, view: PanopticView) -> list[tuple[int, int, str]]:
    """(x, y, text) in image pixels of each segment of ``view``: its label ("car 2") at its interior point."""
    texts = segment_labels(view.segments, data.categories)
    points = label_points(view.id_map, [s.id for s in view.segments])
    return [(x, y, texts[segment_id]) for segment_id, (x, y) in points.items()]
