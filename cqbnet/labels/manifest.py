"""The mixed-label manifest: which labels each training image carries.

One COCO-style JSON file (``manifest.json``) beside the weak annotations it
points to. It is the only thing the trainer reads. Layout::

    {
      "format": "cqbnet.mixed_labels", "version": 1,
      "info": {...},                        # seed, ratio, point settings, source files
      "categories": [...],                  # COCO categories with "isthing"
      "image_root": "...",                  # folder of the images
      "images": [{"id", "file_name", "height", "width", "kinds": ["B", "I"],
                  "method": "boxes-tags-001"}],    # optional: how it is learnt (cqbnet.labels.catalogue)
      "panoptic":   {"png_root": "...", "annotations": [{"image_id", "file_name", "segments_info"}]},
      "tags":       [{"image_id", "category_ids": [...]}],
      "boxes":      [{"id", "image_id", "category_id", "bbox": [x, y, w, h], "iscrowd"}],
      "stuff_maps": {"png_root": "...", "annotations": [{"image_id", "file_name", "segments_info"}]},
      "points":     [{"image_id", "x", "y", "category_id", "segment_id", "iscrowd"}]
    }

Paths are relative to the manifest's folder (absolute paths are allowed).
``kinds`` may be any non-empty subset of P, I, B, S, PT; ``method`` names the
catalogue's label method the image is learnt with by ``cqbnet fit`` (absent:
the catalogue's default for its kinds; checked by ``fit``). An image carries
annotations of exactly the kinds it lists: the reader rejects a weak image
that has a panoptic entry (or any label it does not list), so no loss can be
computed against a label the image lacks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cqbnet.data.panoptic_format import Category, PanopticRecord, _parse_segment, parse_categories
from cqbnet.errors import InputError, where
from cqbnet.io import read_json, write_json
from cqbnet.labels.kinds import KINDS, Box, Point, kind_set_name

FORMAT = "cqbnet.mixed_labels"
VERSION = 1


@dataclass
class ImageLabels:
    """Everything the manifest says about one image."""

    image_id: int
    file_name: str
    height: int
    width: int
    kinds: frozenset[str]
    panoptic: PanopticRecord | None = None
    tags: list[int] | None = None
    boxes: list[Box] | None = None
    stuff_map: PanopticRecord | None = None
    points: list[Point] | None = None
    method: str | None = None  # the label method it is learnt with (cqbnet.labels.catalogue); None: the default


@dataclass
class Manifest:
    """A mixed-label training set."""

    categories: dict[int, Category]
    images: list[ImageLabels]
    image_root: Path
    panoptic_root: Path | None = None
    stuff_root: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def counts(self) -> dict[str, int]:
        """Number of images per kind set (``"P"``, ``"I+B"``, ...)."""
        out: dict[str, int] = {}
        for im in self.images:
            key = kind_set_name(im.kinds)
            out[key] = out.get(key, 0) + 1
        return out

    def to_json(self, base: Path) -> dict[str, Any]:
        def rel(p: Path | None) -> str | None:
            return None if p is None else os.path.relpath(p, base)

        doc: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "info": self.info,
            "categories": [c.to_json() for c in self.categories.values()],
            "image_root": rel(self.image_root),
            "images": [],
            "panoptic": {"png_root": rel(self.panoptic_root), "annotations": []},
            "tags": [],
            "boxes": [],
            "stuff_maps": {"png_root": rel(self.stuff_root), "annotations": []},
            "points": [],
        }
        box_id = 0
        for im in self.images:
            doc["images"].append(
                {
                    "id": im.image_id,
                    "file_name": im.file_name,
                    "height": im.height,
                    "width": im.width,
                    "kinds": [k for k in KINDS if k in im.kinds],
                    **({"method": im.method} if im.method is not None else {}),
                }
            )
            if im.panoptic is not None:
                doc["panoptic"]["annotations"].append(im.panoptic.to_json())
            if im.tags is not None:
                doc["tags"].append({"image_id": im.image_id, "category_ids": list(im.tags)})
            for b in im.boxes or []:
                box_id += 1
                doc["boxes"].append(
                    {
                        "id": box_id,
                        "image_id": im.image_id,
                        "category_id": b.category_id,
                        "bbox": list(b.bbox),
                        "iscrowd": int(b.iscrowd),
                    }
                )
            if im.stuff_map is not None:
                doc["stuff_maps"]["annotations"].append(im.stuff_map.to_json())
            for p in im.points or []:
                doc["points"].append(
                    {
                        "image_id": im.image_id,
                        "x": p.x,
                        "y": p.y,
                        "category_id": p.category_id,
                        "segment_id": p.segment_id,
                        "iscrowd": int(p.iscrowd),
                    }
                )
        return doc

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        write_json(path, self.to_json(path.parent.resolve() if path.parent.exists() else path.parent))
        self.path = path
        return path


def _req(obj: Any, key: str, typ: type | tuple, ctx: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise InputError(f"{ctx}missing '{key}'")
    v = obj[key]
    if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
        raise InputError(f"{ctx}'{key}' has the wrong type ({type(v).__name__})")
    return v


def _resolve(base: Path, p: Any, ctx: str) -> Path | None:
    if p is None:
        return None
    if not isinstance(p, str):
        raise InputError(f"{ctx}paths must be strings")
    q = Path(p)
    return q if q.is_absolute() else (base / q)


def _per_image(entries: Any, key: str, ids: dict[int, ImageLabels], path: Path) -> dict[int, list[dict]]:
    if entries is None:
        return {}
    if not isinstance(entries, list):
        raise InputError(f"{path}: '{key}' must be a list")
    out: dict[int, list[dict]] = {}
    for i, e in enumerate(entries):
        iid = _req(e, "image_id", int, f"{path}: {key}[{i}]: ")
        if iid not in ids:
            raise InputError(f"{where(path, iid)}{key} entry for an image not in 'images'")
        out.setdefault(iid, []).append(e)
    return out


def load_manifest(path: str | os.PathLike, check_files: bool = True) -> Manifest:
    """Read and validate a mixed-label manifest (see the module docstring).

    Errors name the manifest file and the image id: unknown kinds, labels an
    image does not list (or listed kinds without labels), unknown categories,
    boxes or points outside the image, stuff maps naming thing classes, and
    (with ``check_files``) missing image or PNG files.
    """
    path = Path(path)
    raw = read_json(path, "manifest")
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise InputError(f"{path}: not a cqbnet mixed-label manifest (format must be {FORMAT!r})")
    if raw.get("version") != VERSION:
        raise InputError(f"{path}: unsupported manifest version {raw.get('version')!r}")
    base = path.parent
    cats = parse_categories(raw.get("categories"), path)
    image_root = _resolve(base, _req(raw, "image_root", str, f"{path}: "), f"{path}: ")
    pan = raw.get("panoptic") or {}
    stf = raw.get("stuff_maps") or {}
    if not isinstance(pan, dict) or not isinstance(stf, dict):
        raise InputError(f"{path}: 'panoptic' and 'stuff_maps' must be objects")
    pan_root = _resolve(base, pan.get("png_root"), f"{path}: panoptic: ")
    stuff_root = _resolve(base, stf.get("png_root"), f"{path}: stuff_maps: ")

    images: dict[int, ImageLabels] = {}
    raw_images = _req(raw, "images", list, f"{path}: ")
    for i, im in enumerate(raw_images):
        ctx = f"{path}: images[{i}]: "
        iid = _req(im, "id", int, ctx)
        ctx = where(path, iid)
        if iid in images:
            raise InputError(f"{ctx}duplicate image id")
        kinds = _req(im, "kinds", list, ctx)
        bad = [k for k in kinds if k not in KINDS]
        if bad:
            raise InputError(f"{ctx}unknown label kind {bad[0]!r}; known kinds: {', '.join(KINDS)}")
        if not kinds or len(set(kinds)) != len(kinds):
            raise InputError(f"{ctx}'kinds' must be a non-empty list without repeats")
        h, w = _req(im, "height", int, ctx), _req(im, "width", int, ctx)
        if h <= 0 or w <= 0:
            raise InputError(f"{ctx}height and width must be positive")
        method = im.get("method")
        if method is not None and not (isinstance(method, str) and method):
            raise InputError(f"{ctx}'method' must be the name of a label method (cqbnet fit --methods lists them)")
        images[iid] = ImageLabels(iid, _req(im, "file_name", str, ctx), h, w, frozenset(kinds), method=method)

    groups = {
        "P": _per_image(pan.get("annotations"), "panoptic", images, path),
        "I": _per_image(raw.get("tags"), "tags", images, path),
        "B": _per_image(raw.get("boxes"), "boxes", images, path),
        "S": _per_image(stf.get("annotations"), "stuff_maps", images, path),
        "PT": _per_image(raw.get("points"), "points", images, path),
    }
    for kind, by_image in groups.items():
        for iid in by_image:
            if kind not in images[iid].kinds:
                raise InputError(
                    f"{where(path, iid)}has {kind} annotations but its kinds are {kind_set_name(images[iid].kinds)}"
                )
    for im in images.values():
        ctx = where(path, im.image_id)
        for kind in im.kinds:
            if kind in ("P", "I", "S") and im.image_id not in groups[kind]:
                raise InputError(f"{ctx}lists kind {kind} but has no {kind} annotation")
        if "P" in im.kinds:
            im.panoptic = _png_record(groups["P"][im.image_id], im, cats, ctx, "panoptic", stuff_only=False)
        if "S" in im.kinds:
            im.stuff_map = _png_record(groups["S"][im.image_id], im, cats, ctx, "stuff map", stuff_only=True)
        if "I" in im.kinds:
            entries = groups["I"][im.image_id]
            if len(entries) != 1:
                raise InputError(f"{ctx}more than one tags entry")
            tags = _req(entries[0], "category_ids", list, ctx)
            for t in tags:
                if t not in cats:
                    raise InputError(f"{ctx}tag with unknown category_id {t!r}")
            im.tags = sorted(set(tags))
        if "B" in im.kinds:
            im.boxes = [_box(e, im, cats, ctx) for e in groups["B"].get(im.image_id, [])]
        if "PT" in im.kinds:
            im.points = [_point(e, im, cats, ctx) for e in groups["PT"].get(im.image_id, [])]
            _check_point_segments(im, ctx)
    _check_box_ids(raw.get("boxes") or [], path)

    m = Manifest(cats, list(images.values()), image_root, pan_root, stuff_root, raw.get("info") or {}, path)
    if check_files:
        for im in m.images:
            f = m.image_root / im.file_name
            if not f.is_file():
                raise InputError(f"{where(path, im.image_id)}image file {f} not found")
            for rec, root, label in ((im.panoptic, pan_root, "panoptic"), (im.stuff_map, stuff_root, "stuff map")):
                if rec is not None:
                    if root is None:
                        raise InputError(f"{path}: {label} annotations but no png_root")
                    if not (root / rec.file_name).is_file():
                        raise InputError(f"{where(path, im.image_id)}{label} PNG {root / rec.file_name} not found")
    return m


def _png_record(
    entries: list[dict], im: ImageLabels, cats: dict[int, Category], ctx: str, label: str, stuff_only: bool
) -> PanopticRecord:
    if len(entries) != 1:
        raise InputError(f"{ctx}more than one {label} entry")
    e = entries[0]
    fname = _req(e, "file_name", str, ctx)
    segs = [_parse_segment(s, ctx) for s in _req(e, "segments_info", list, ctx)]
    seen = set()
    for s in segs:
        if s.id in seen:
            raise InputError(f"{ctx}segment {s.id}: duplicate segment id in the {label}")
        seen.add(s.id)
        if s.category_id not in cats:
            raise InputError(f"{ctx}segment {s.id}: unknown category_id {s.category_id}")
        if stuff_only and cats[s.category_id].isthing:
            raise InputError(
                f"{ctx}segment {s.id}: a stuff map may only hold stuff classes, but category {s.category_id} is a thing"
            )
    return PanopticRecord(im.image_id, fname, segs, im.file_name, im.height, im.width)


def _box(e: dict, im: ImageLabels, cats: dict[int, Category], ctx: str) -> Box:
    cat = _req(e, "category_id", int, ctx)
    if cat not in cats:
        raise InputError(f"{ctx}box with unknown category_id {cat}")
    if not cats[cat].isthing:
        raise InputError(f"{ctx}box of stuff category {cat}; boxes are for things")
    bbox = _req(e, "bbox", list, ctx)
    if len(bbox) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
        raise InputError(f"{ctx}box bbox must be four numbers [x, y, w, h]")
    x, y, w, h = bbox
    if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > im.width or y + h > im.height:
        raise InputError(f"{ctx}box {bbox} is empty or outside the {im.width}x{im.height} image")
    return Box(cat, (int(x), int(y), int(w), int(h)), bool(e.get("iscrowd", 0)))


def _check_box_ids(boxes: list, path: Path) -> None:
    """Box ids, where given, are unique in the manifest."""
    seen: dict[int, int] = {}
    for e in boxes:
        if isinstance(e, dict) and "id" in e:
            if not isinstance(e["id"], int) or isinstance(e["id"], bool):
                raise InputError(f"{where(path, e.get('image_id'))}box id must be an integer, got {e['id']!r}")
            if e["id"] in seen:
                raise InputError(f"{where(path, e.get('image_id'))}duplicate box id {e['id']!r}")
            seen[e["id"]] = 1


def _check_point_segments(im: ImageLabels, ctx: str) -> None:
    """The points of one segment agree on its class, and name a segment that can exist: an id of at least 1
    and, where the image's panoptic segments are known too, one of them with that class."""
    known = {s.id: s.category_id for s in im.panoptic.segments} if im.panoptic is not None else None
    classes: dict[int, int] = {}
    for p in im.points or []:
        if p.segment_id < 1:
            raise InputError(f"{ctx}point ({p.x}, {p.y}): segment_id {p.segment_id} names no segment (ids start at 1)")
        if known is not None and known.get(p.segment_id, p.category_id) != p.category_id:
            raise InputError(
                f"{ctx}point ({p.x}, {p.y}): segment {p.segment_id} is category {known[p.segment_id]} in the "
                f"panoptic labels, the point says {p.category_id}"
            )
        if known is not None and p.segment_id not in known:
            raise InputError(f"{ctx}point ({p.x}, {p.y}): segment {p.segment_id} is not in the image's panoptic labels")
        first = classes.setdefault(p.segment_id, p.category_id)
        if first != p.category_id:
            raise InputError(
                f"{ctx}segment {p.segment_id}: its points disagree on the class ({first} and {p.category_id})"
            )


def _point(e: dict, im: ImageLabels, cats: dict[int, Category], ctx: str) -> Point:
    x, y = _req(e, "x", int, ctx), _req(e, "y", int, ctx)
    cat = _req(e, "category_id", int, ctx)
    sid = _req(e, "segment_id", int, ctx)
    if cat not in cats:
        raise InputError(f"{ctx}point with unknown category_id {cat}")
    if not (0 <= x < im.width and 0 <= y < im.height):
        raise InputError(f"{ctx}point ({x}, {y}) outside the {im.width}x{im.height} image")
    return Point(x, y, cat, sid, bool(e.get("iscrowd", 0)))
