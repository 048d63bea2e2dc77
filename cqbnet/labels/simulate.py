"""Simulate what a labelling plan would buy, from full ground truth.

``parse_ratio("P=0.29,I=0.355,B=0.29,S=0.065")`` reads a plan (paper 000's
allocation ratio rho, Eq. 2: the shares sum to 1). :func:`exact_counts` turns
shares into whole image counts that sum to the dataset size (largest
remainder), and :func:`simulate` gives every training image its kinds by a
seeded permutation and derives those labels from the ground truth. A key may
name a set of kinds (``"B+I=1"``: boxes for things and tags for stuff on every
image, as in paper 001).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from cqbnet.data.panoptic_format import PanopticRecord, PanopticSet, write_panoptic_png
from cqbnet.errors import InputError, where
from cqbnet.io import atomic_directory, write_json
from cqbnet.labels.costs import CostModel, CostRow
from cqbnet.labels.kinds import (
    KINDS,
    POINT_SAMPLING,
    derive_boxes,
    derive_points,
    derive_stuff_map,
    derive_tags,
    kind_set_name,
    parse_kind_set,
)
from cqbnet.labels.manifest import ImageLabels, Manifest

Ratio = dict[frozenset[str], float]


def parse_ratio(text: str) -> Ratio:
    """``"P=0.29,I=0.355,B=0.29,S=0.065"`` -> {frozenset({'P'}): 0.29, ...}; shares must sum to 1."""
    if not isinstance(text, str) or not text.strip():
        raise InputError("empty ratio; expected e.g. P=0.3,I=0.3,B=0.4")
    ratio: Ratio = {}
    for part in text.split(","):
        if "=" not in part:
            raise InputError(f"ratio term {part.strip()!r} is not KIND=SHARE")
        key, val = part.split("=", 1)
        kinds = parse_kind_set(key.strip())
        try:
            share = float(val)
        except ValueError:
            raise InputError(f"ratio share {val.strip()!r} for {key.strip()} is not a number") from None
        if not math.isfinite(share) or share < 0:
            raise InputError(f"ratio share for {key.strip()} must be >= 0, got {val.strip()}")
        if kinds in ratio:
            raise InputError(f"ratio names {kind_set_name(kinds)} twice")
        ratio[kinds] = share
    return check_ratio(ratio)


def check_ratio(ratio: Ratio) -> Ratio:
    total = sum(ratio.values())
    if abs(total - 1.0) > 1e-6:
        raise InputError(f"ratio shares sum to {total:.6g}, not 1")
    return ratio


def format_ratio(ratio: Ratio) -> str:
    return ",".join(f"{kind_set_name(k)}={v:g}" for k, v in ratio.items())


def exact_counts(ratio: Ratio, n: int) -> dict[frozenset[str], int]:
    """Whole image counts per kind set summing to ``n`` (Hamilton's largest-remainder rule).

    Ties in the remainder go to the kind set named first.
    """
    keys = list(ratio)
    raw = [ratio[k] * n for k in keys]
    counts = [math.floor(r + 1e-9) for r in raw]
    left = n - sum(counts)
    order = sorted(range(len(keys)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[:left]:
        counts[i] += 1
    return dict(zip(keys, counts))


def assign_kinds(image_ids: list[int], ratio: Ratio, seed: int) -> dict[int, frozenset[str]]:
    """Each image's kind set: exact counts, placed by a seeded permutation of the images."""
    counts = exact_counts(ratio, len(image_ids))
    rng = np.random.default_rng([seed, 7])
    order = rng.permutation(len(image_ids))
    out: dict[int, frozenset[str]] = {}
    pos = 0
    for kinds, c in counts.items():
        for j in order[pos : pos + c]:
            out[image_ids[j]] = kinds
        pos += c
    return out


def simulate(
    gt: PanopticSet,
    ratio: Ratio,
    out_dir: str | os.PathLike,
    seed: int = 0,
    points_per_segment: int = 1,
    point_sampling: str = "uniform",
    overwrite: bool = False,
    methods: dict[frozenset[str], str] | None = None,
) -> Manifest:
    """Write ``out_dir/manifest.json`` (and stuff-map PNGs) for the plan ``ratio`` on ``gt``. ``methods``: the
    label method (``cqbnet.labels.catalogue``) each image of a kind set is learnt with; kind sets it does not name
    get the catalogue's default (the manifest names none).

    The folder is built aside and moved into place only when complete.
    """
    if point_sampling not in POINT_SAMPLING:
        raise InputError(f"unknown point sampling {point_sampling!r}; choose one of {', '.join(POINT_SAMPLING)}")
    if points_per_segment < 1:
        raise InputError(f"points per segment must be >= 1, got {points_per_segment}")
    if gt.image_dir is None:
        raise InputError(f"{gt.json_path}: the image folder is needed to write a manifest")
    check_ratio(ratio)
    _check_methods(methods or {}, ratio)
    out_dir = Path(out_dir)
    assignment = assign_kinds([r.image_id for r in gt.records], ratio, seed)
    inputs = (gt.json_path, gt.png_dir, gt.image_dir)  # an output there would delete the data set
    with atomic_directory(out_dir, inputs, overwrite) as tmp:
        images: list[ImageLabels] = []
        for rec in gt.records:
            kinds = assignment[rec.image_id]
            images.append(_labels_for(gt, rec, kinds, tmp, seed, points_per_segment, point_sampling))
            images[-1].method = (methods or {}).get(kinds)
        manifest = Manifest(
            categories=gt.categories,
            images=images,
            image_root=Path(os.path.abspath(gt.image_dir)),
            panoptic_root=Path(os.path.abspath(gt.png_dir)),
            stuff_root=(out_dir / "stuff_maps").absolute(),
            info={
                "seed": seed,
                "ratio": {kind_set_name(k): v for k, v in ratio.items()},
                "counts": {kind_set_name(k): c for k, c in exact_counts(ratio, len(gt.records)).items()},
                "points_per_segment": points_per_segment,
                "point_sampling": point_sampling,
                "source": {"json": str(Path(gt.json_path).absolute()), "png_dir": str(Path(gt.png_dir).absolute())},
            },
        )
        # paths are written relative to the final folder, so the manifest survives the move
        write_json(tmp / "manifest.json", manifest.to_json(out_dir.absolute()), indent=None)
    manifest.path = out_dir / "manifest.json"
    return manifest


def _check_methods(methods: dict[frozenset[str], str], ratio: Ratio) -> None:
    """Each named method exists and can learn from its kind set, which the ratio has."""
    from cqbnet.labels.catalogue import method_of

    for kinds, name in methods.items():
        if kinds not in ratio:
            raise InputError(
                f"--method {kind_set_name(kinds)}={name}: the label mix has no {kind_set_name(kinds)} images"
            )
        method_of(name, kinds, f"--method {kind_set_name(kinds)}={name}: ")


def parse_methods(items: list[str] | None) -> dict[frozenset[str], str]:
    """``["I=tags-002", "PT=points-003"]`` -> {kind set: method}."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise InputError(f"--method {item!r} is not KINDS=METHOD (e.g. I=tags-002)")
        kinds, name = item.split("=", 1)
        out[parse_kind_set(kinds)] = name.strip()
    return out


def _labels_for(
    gt: PanopticSet,
    rec: PanopticRecord,
    kinds: frozenset[str],
    tmp: Path,
    seed: int,
    k: int,
    sampling: str,
) -> ImageLabels:
    h, w = rec.height, rec.width
    need_png = bool(kinds & {"B", "S", "PT"}) or h is None
    ids = gt.read_ids(rec) if need_png else None
    if ids is not None:
        h, w = ids.shape
    if rec.image_file_name is None:
        raise InputError(f"{where(gt.json_path, rec.image_id)}no entry in 'images' (file name unknown)")
    lab = ImageLabels(rec.image_id, rec.image_file_name, int(h), int(w), kinds)
    if "P" in kinds:
        lab.panoptic = rec
    if "I" in kinds:
        lab.tags = derive_tags(rec)
    if "B" in kinds:
        lab.boxes = derive_boxes(ids, rec, gt.categories)
    if "S" in kinds:
        smap, segs = derive_stuff_map(ids, rec, gt.categories)
        name = Path(rec.file_name).with_suffix(".png").name
        write_panoptic_png(tmp / "stuff_maps" / name, smap)
        lab.stuff_map = PanopticRecord(rec.image_id, name, segs, rec.image_file_name, h, w)
    if "PT" in kinds:
        rng = np.random.default_rng([seed, 11, rec.image_id])
        lab.points = derive_points(ids, rec, k, sampling, rng)
    return lab


def manifest_cost(manifest: Manifest, costs: CostModel) -> list[CostRow]:
    """Cost of every image's labels, grouped by kind set (units counted per image)."""
    rows: dict[str, CostRow] = {}
    for im in manifest.images:
        key = kind_set_name(im.kinds)
        row = rows.setdefault(key, CostRow(key, 0, 0, 0, 0.0))
        nb = len(im.boxes or [])
        npt = len(im.points or [])
        row.images += 1
        row.boxes += nb
        row.points += npt
        row.cost += sum(costs.per_image(k, boxes=nb, points=npt, **image_content(im, manifest)) for k in im.kinds)
    order = {kind_set_name(frozenset([k])): i for i, k in enumerate(KINDS)}
    return sorted(rows.values(), key=lambda r: (order.get(r.kinds, len(KINDS)), r.kinds))


def image_content(im: ImageLabels, manifest: Manifest) -> dict[str, float]:
    """What one image's labels show of its content, for costs charged by content: its thing masks and stuff regions
    (from its panoptic label or stuff map) and its tags; what its labels do not show is left to the expected count."""
    out: dict[str, float] = {}
    if im.panoptic is not None:
        thing = [manifest.categories[s.category_id].isthing for s in im.panoptic.segments]
        out.update(things=sum(thing), stuff=len(thing) - sum(thing), segments=len(thing))
    elif im.stuff_map is not None:
        out["stuff"] = len(im.stuff_map.segments)
    if im.tags is not None:
        out["tags"] = len(im.tags)
    return out


def dataset_stats(gt: PanopticSet, points_per_segment: int = 1) -> dict[str, float]:
    """Mean content per image, for costs charged per box, point, thing mask, stuff region or tag: thing boxes,
    stuff regions, segments and classes present."""
    n = max(len(gt.records), 1)
    things = set(gt.thing_ids)
    boxes = sum(1 for r in gt.records for s in r.segments if s.category_id in things)
    segs = sum(len(r.segments) for r in gt.records)
    tags = sum(len(derive_tags(r)) for r in gt.records)
    return {
        "boxes_per_image": boxes / n,
        "stuff_per_image": (segs - boxes) / n,
        "segments_per_image": segs / n,
        "tags_per_image": tags / n,
        "points_per_segment": points_per_segment,
    }
