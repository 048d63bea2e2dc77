"""Pictures of weak labels: what each kind of label shows an annotator (and a model)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cqbnet.data.dataset import read_rgb
from cqbnet.data.panoptic_format import Category, PanopticRecord, PanopticSet, read_panoptic_png
from cqbnet.io import write_image
from cqbnet.labels.kinds import KIND_NAMES, KINDS, derive_boxes, derive_points, derive_stuff_map, derive_tags
from cqbnet.labels.manifest import ImageLabels, Manifest
from cqbnet.visualization.draw import (
    draw_boxes,
    draw_panoptic,
    draw_points,
    draw_tags,
    grid,
    titled,
    upscale,
)

SCALE = 3


def draw_image_labels(image: np.ndarray, lab: ImageLabels, m: Manifest, scale: int = SCALE) -> np.ndarray:
    """One image with every label it carries drawn on it (masks first, then boxes, points, tags)."""
    out = upscale(image, scale)
    cats = m.categories
    if lab.panoptic is not None:
        ids = read_panoptic_png(m.panoptic_root / lab.panoptic.file_name)
        out = draw_panoptic(image, ids, lab.panoptic.segments, cats, scale=scale)
    if lab.stuff_map is not None:
        ids = read_panoptic_png(m.stuff_root / lab.stuff_map.file_name)
        out = draw_panoptic(image, ids, lab.stuff_map.segments, cats, scale=scale)
    if lab.boxes:
        out = draw_boxes(out, lab.boxes, cats, scale=1) if scale == 1 else _boxes_scaled(out, lab, cats, scale)
    if lab.points:
        out = _points_scaled(out, lab, cats, scale)
    if lab.tags is not None:
        out = draw_tags(out, lab.tags, cats)
    return titled(out, f"image {lab.image_id}: " + " + ".join(KIND_NAMES[k] for k in KINDS if k in lab.kinds))


def _boxes_scaled(img: np.ndarray, lab: ImageLabels, cats, scale: int) -> np.ndarray:
    from cqbnet.labels.kinds import Box

    boxes = [Box(b.category_id, tuple(v * scale for v in b.bbox), b.iscrowd) for b in lab.boxes]
    return draw_boxes(img, boxes, cats)


def _points_scaled(img: np.ndarray, lab: ImageLabels, cats, scale: int) -> np.ndarray:
    from cqbnet.labels.kinds import Point

    pts = [Point(int((p.x + 0.5) * scale), int((p.y + 0.5) * scale), p.category_id, p.segment_id) for p in lab.points]
    return draw_points(img, pts, cats)


def write_manifest_pictures(m: Manifest, out: str | os.PathLike, num: int = 12, seed: int = 0) -> list[Path]:
    """A grid of ``num`` images per kind set, each with the labels the manifest gives it."""
    out = Path(out)
    rng = np.random.default_rng(seed)
    by_kind: dict[frozenset, list[ImageLabels]] = {}
    for im in m.images:
        by_kind.setdefault(im.kinds, []).append(im)
    tiles = []
    per_kind = max(1, num // max(len(by_kind), 1))
    for kinds in sorted(by_kind, key=lambda k: [KINDS.index(x) for x in KINDS if x in k]):
        ims = by_kind[kinds]
        for j in rng.choice(len(ims), size=min(per_kind, len(ims)), replace=False):
            im = ims[int(j)]
            tiles.append(draw_image_labels(read_rgb(m.image_root / im.file_name), im, m))
    path = out / "manifest_labels.png"
    write_image(path, grid(tiles, cols=min(4, len(tiles))))
    return [path]


def label_kinds_figure(
    gt: PanopticSet, record: PanopticRecord, k: int = 10, seed: int = 0, scale: int = SCALE
) -> np.ndarray:
    """One image shown as each of the five label kinds (a row: image, P, I, B, S, PT)."""
    cats: dict[int, Category] = gt.categories
    image = read_rgb(gt.image_path(record))
    ids = gt.read_ids(record)
    row = [titled(upscale(image, scale), "image")]
    row.append(titled(draw_panoptic(image, ids, record.segments, cats, scale=scale), "P: panoptic"))
    row.append(titled(draw_tags(upscale(image, scale), derive_tags(record), cats), "I: tags"))
    lab = ImageLabels(record.image_id, "", *ids.shape, frozenset({"B"}))
    lab.boxes = derive_boxes(ids, record, cats)
    row.append(titled(_boxes_scaled(upscale(image, scale), lab, cats, scale), "B: boxes"))
    smap, segs = derive_stuff_map(ids, record, cats)
    row.append(titled(draw_panoptic(image, smap, segs, cats, scale=scale), "S: stuff map"))
    lab.points = derive_points(ids, record, k, "uniform", np.random.default_rng(seed))
    row.append(titled(_points_scaled(upscale(image, scale), lab, cats, scale), f"PT: {k} points/segment"))
    return grid(row, cols=len(row), pad=3)
