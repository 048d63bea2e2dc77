"""COCO panoptic format: segment-id PNGs plus a JSON of segments.

A panoptic PNG stores one segment id per pixel as ``id = R + 256*G + 256**2*B``;
id 0 is void (unlabelled). The JSON lists, per image, the segments with their
``category_id`` and ``iscrowd`` flag, and a ``categories`` list with ``isthing``
(Kirillov et al., "Panoptic Segmentation", CVPR 2019; the COCO panoptic format).

Readers here validate everything they load and raise :class:`InputError`
naming the file, image id and segment id at fault.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cqbnet.errors import InputError, where
from cqbnet.io import atomic_path, read_json

try:  # optional fast PNG decoder
    import pyspng as _spng
except ImportError:  # pragma: no cover - depends on the platform
    _spng = None

VOID = 0
MAX_ID = 256**3 - 1


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) uint32 segment ids, ``R + 256 G + 256^2 B``."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB array, got shape {rgb.shape}")
    rgb = rgb.astype(np.uint32)
    return rgb[..., 0] + (rgb[..., 1] << 8) + (rgb[..., 2] << 16)


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """(H, W) integer segment ids -> (H, W, 3) uint8 RGB; inverse of :func:`rgb2id`."""
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() > MAX_ID):
        raise ValueError(f"segment ids must lie in [0, {MAX_ID}]")
    ids = ids.astype(np.uint32)
    out = np.empty(ids.shape + (3,), dtype=np.uint8)
    out[..., 0] = ids & 0xFF
    out[..., 1] = (ids >> 8) & 0xFF
    out[..., 2] = (ids >> 16) & 0xFF
    return out


def read_panoptic_png(path: str | os.PathLike) -> np.ndarray:
    """Read a panoptic PNG as an (H, W) uint32 id map.

    Decoding goes through OpenCV; the BGR pixels are turned into ids without a
    per-channel Python loop (one colour conversion and one mask).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: panoptic PNG not found")
    rgba = _decode_rgba(path)
    # RGBA bytes viewed as little-endian uint32 are R + 2^8 G + 2^16 B + 2^24 A.
    ids = rgba.view(np.uint32)[..., 0]
    np.bitwise_and(ids, MAX_ID, out=ids)
    return ids


def _decode_rgba(path: Path) -> np.ndarray:
    """Decode an 8-bit RGB(A) PNG to (H, W, 4) RGBA.

    libspng (pyspng, about twice as fast as libpng) decodes straight to RGBA when
    installed and the header says 8-bit RGB or RGBA; anything else goes through
    OpenCV, which also judges damaged files.
    """
    if _spng is not None:
        data = path.read_bytes()
        # IHDR: bit depth at byte 24, colour type at byte 25 (2 = RGB, 6 = RGBA)
        if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 25 and data[24] == 8 and data[25] in (2, 6):
            try:
                return _spng.load(data, "RGBA")
            except Exception:  # a damaged PNG: let OpenCV judge it below
                pass
    bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if bgr is None:
        raise InputError(f"{path}: not a readable PNG image")
    if bgr.dtype != np.uint8 or bgr.ndim != 3 or bgr.shape[2] not in (3, 4):
        raise InputError(f"{path}: a panoptic PNG must be 8-bit RGB, got shape {bgr.shape} dtype {bgr.dtype}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGBA if bgr.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)


def write_panoptic_png(path: str | os.PathLike, ids: np.ndarray) -> None:
    """Write an (H, W) id map as a panoptic PNG, atomically."""
    rgb = id2rgb(ids)
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), rgb[..., ::-1]):
            raise OSError(f"{path}: could not write PNG")


@dataclass(frozen=True)
class Category:
    """One panoptic category; ``isthing`` separates countable things from stuff."""

    id: int
    name: str
    isthing: bool
    color: tuple[int, int, int] = (128, 128, 128)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "isthing": int(self.isthing), "color": list(self.color)}


@dataclass
class SegmentInfo:
    """A segment of one image: ``id`` in the PNG, its category and crowd flag."""

    id: int
    category_id: int
    iscrowd: bool = False
    area: int | None = None
    bbox: tuple[int, int, int, int] | None = None  # x, y, w, h
    score: float | None = None  # predictions only

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": int(self.id), "category_id": int(self.category_id), "iscrowd": int(self.iscrowd)}
        if self.area is not None:
            d["area"] = int(self.area)
        if self.bbox is not None:
            d["bbox"] = [int(v) for v in self.bbox]
        if self.score is not None:
            d["score"] = float(self.score)
        return d


@dataclass
class PanopticRecord:
    """One image's panoptic annotation: the PNG file name and its segments."""

    image_id: int
    file_name: str  # the panoptic PNG
    segments: list[SegmentInfo]
    image_file_name: str | None = None
    height: int | None = None
    width: int | None = None
    raw_segments: list | None = None  # unparsed segments_info (load_panoptic_json(lazy_segments=True))

    def to_json(self) -> dict[str, Any]:
        return {
            "image_id": self.image_id,
            "file_name": self.file_name,
            "segments_info": [s.to_json() for s in self.segments],
        }


@dataclass
class PanopticSet:
    """A COCO panoptic JSON with its PNG folder (and optionally the image folder)."""

    json_path: Path
    png_dir: Path
    categories: dict[int, Category]
    records: list[PanopticRecord]
    image_dir: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)

    def by_image_id(self) -> dict[int, PanopticRecord]:
        return {r.image_id: r for r in self.records}

    def png_path(self, record: PanopticRecord) -> Path:
        return self.png_dir / record.file_name

    def image_path(self, record: PanopticRecord) -> Path:
        if self.image_dir is None or record.image_file_name is None:
            raise InputError(f"{self.json_path}: image {record.image_id}: no image folder or file name known")
        return self.image_dir / record.image_file_name

    def read_ids(self, record: PanopticRecord, validate: bool = True) -> np.ndarray:
        """Read the record's PNG as an id map; with ``validate``, check it against the JSON."""
        ids = read_panoptic_png(self.png_path(record))
        if validate:
            check_record(ids, record, self.categories, self.png_path(record))
        return ids

    @property
    def thing_ids(self) -> list[int]:
        return [c.id for c in self.categories.values() if c.isthing]

    @property
    def stuff_ids(self) -> list[int]:
        return [c.id for c in self.categories.values() if not c.isthing]


def _int_field(obj: Any, key: str, ctx: str) -> int:
    if not isinstance(obj, dict) or key not in obj:
        raise InputError(f"{ctx}missing '{key}'")
    v = obj[key]
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        if isinstance(v, float) and v.is_integer():
            return int(v)
        raise InputError(f"{ctx}'{key}' must be an integer, got {v!r}")
    return int(v)


def parse_categories(raw: Any, path: Path) -> dict[int, Category]:
    """Validate a COCO ``categories`` list (ids unique, ``isthing`` present)."""
    if not isinstance(raw, list) or not raw:
        raise InputError(f"{path}: 'categories' must be a non-empty list")
    cats: dict[int, Category] = {}
    for i, c in enumerate(raw):
        ctx = f"{path}: categories[{i}]: "
        cid = _int_field(c, "id", ctx)
        if cid in cats:
            raise InputError(f"{path}: duplicate category id {cid}")
        if "isthing" not in c:
            raise InputError(f"{ctx}category {cid} has no 'isthing'")
        color = c.get("color", [128, 128, 128])
        cats[cid] = Category(cid, str(c.get("name", cid)), bool(c["isthing"]), tuple(int(v) for v in color[:3]))
    return cats


def load_categories(path: str | os.PathLike) -> dict[int, Category]:
    """Read categories from a JSON that is either a list or has a ``categories`` key."""
    path = Path(path)
    raw = read_json(path)
    if isinstance(raw, dict):
        raw = raw.get("categories")
    return parse_categories(raw, path)


def _parse_segment(s: Any, ctx: str) -> SegmentInfo:
    """One ``segments_info`` entry, validated (a fast path for the common well-formed case)."""
    if type(s) is dict:
        sid, cat, crowd = s.get("id"), s.get("category_id"), s.get("iscrowd", 0)
        area, bbox, score = s.get("area"), s.get("bbox"), s.get("score")
        if (
            type(sid) is int
            and type(cat) is int
            and 0 < sid <= MAX_ID
            and type(crowd) in (int, bool)
            and crowd in (0, 1)
            and (area is None or type(area) is int)
            and (bbox is None or (type(bbox) is list and len(bbox) == 4 and all(type(v) is int for v in bbox)))
            and (score is None or type(score) in (int, float))
        ):
            return SegmentInfo(
                sid,
                cat,
                bool(crowd),
                area,
                None if bbox is None else tuple(bbox),
                None if score is None else float(score),
            )
    return _parse_segment_checked(s, ctx)


def _parse_segment_checked(s: Any, ctx: str) -> SegmentInfo:
    sid = _int_field(s, "id", ctx)
    sctx = f"{ctx}segment {sid}: "
    cat = _int_field(s, "category_id", sctx)
    crowd = s.get("iscrowd", 0)
    if crowd not in (0, 1, True, False):
        raise InputError(f"{sctx}'iscrowd' must be 0 or 1, got {crowd!r}")
    area = _int_field(s, "area", sctx) if "area" in s else None
    bbox = s.get("bbox")
    if bbox is not None:
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
            raise InputError(f"{sctx}'bbox' must be [x, y, w, h]")
        bbox = tuple(int(round(float(v))) for v in bbox)
    score = s.get("score")
    if score is not None and not isinstance(score, (int, float)):
        raise InputError(f"{sctx}'score' must be a number")
    if not 0 <= sid <= MAX_ID or sid == VOID:
        raise InputError(f"{sctx}segment id must be in [1, {MAX_ID}]")
    return SegmentInfo(sid, cat, bool(crowd), area, bbox, None if score is None else float(score))


def parse_segments(raw: list, categories: dict[int, Category], ctx: str = "") -> list[SegmentInfo]:
    """Validate one image's ``segments_info`` list: fields, unique ids, known categories."""
    segs = [_parse_segment(s, ctx) for s in raw]
    ids = [s.id for s in segs]
    if len(set(ids)) != len(ids):
        dup = sorted({x for x in ids if ids.count(x) > 1})
        raise InputError(f"{ctx}segment {dup[0]}: duplicate segment id")
    for s in segs:
        if s.category_id not in categories:
            raise InputError(f"{ctx}segment {s.id}: unknown category_id {s.category_id}")
    return segs


def load_panoptic_json(
    json_path: str | os.PathLike,
    png_dir: str | os.PathLike | None = None,
    image_dir: str | os.PathLike | None = None,
    categories: dict[int, Category] | str | os.PathLike | None = None,
    lazy_segments: bool = False,
) -> PanopticSet:
    """Load and validate a COCO panoptic JSON.

    ``png_dir`` defaults to the JSON path without ``.json`` (the COCO layout).
    ``categories`` (a dict or a categories JSON) overrides or supplies the JSON's
    own list. Checked here: malformed JSON, missing keys, duplicate image or
    segment ids, unknown category ids, annotations for unknown images. With
    ``lazy_segments`` each record keeps its raw ``segments_info`` in
    ``raw_segments`` for :func:`parse_segments` to check later (the evaluator
    does that in its worker processes).
    """
    json_path = Path(json_path)
    raw = read_json(json_path)
    if not isinstance(raw, dict) or not isinstance(raw.get("annotations"), list):
        raise InputError(f"{json_path}: not a COCO panoptic JSON (no 'annotations' list)")
    if categories is None:
        if not raw.get("categories"):
            raise InputError(f"{json_path}: no 'categories'; pass a categories JSON")
        cats = parse_categories(raw["categories"], json_path)
    elif isinstance(categories, dict):
        cats = categories
    else:
        cats = load_categories(categories)

    images: dict[int, dict[str, Any]] = {}
    for i, im in enumerate(raw.get("images") or []):
        iid = _int_field(im, "id", f"{json_path}: images[{i}]: ")
        if iid in images:
            raise InputError(f"{json_path}: duplicate image id {iid} in 'images'")
        images[iid] = im

    records: list[PanopticRecord] = []
    seen: set[int] = set()
    for i, ann in enumerate(raw["annotations"]):
        iid = _int_field(ann, "image_id", f"{json_path}: annotations[{i}]: ")
        ctx = where(json_path, iid)
        if iid in seen:
            raise InputError(f"{ctx}more than one annotation for this image")
        seen.add(iid)
        if images and iid not in images:
            raise InputError(f"{ctx}annotation for an image id not listed in 'images'")
        if not isinstance(ann.get("file_name"), str):
            raise InputError(f"{ctx}missing 'file_name' of the panoptic PNG")
        segs_raw = ann.get("segments_info")
        if not isinstance(segs_raw, list):
            raise InputError(f"{ctx}missing 'segments_info' list")
        im = images.get(iid, {})
        records.append(
            PanopticRecord(
                image_id=iid,
                file_name=ann["file_name"],
                segments=[] if lazy_segments else parse_segments(segs_raw, cats, ctx),
                image_file_name=im.get("file_name"),
                height=im.get("height"),
                width=im.get("width"),
                raw_segments=segs_raw if lazy_segments else None,
            )
        )
    if png_dir is None:
        png_dir = json_path.with_suffix("")
    return PanopticSet(
        json_path=json_path,
        png_dir=Path(png_dir),
        categories=cats,
        records=records,
        image_dir=None if image_dir is None else Path(image_dir),
        info=raw.get("info") or {},
    )


def segment_areas(ids: np.ndarray) -> dict[int, int]:
    """Pixel count per segment id present in an id map (void included)."""
    u, c = np.unique(ids, return_counts=True)
    return {int(a): int(b) for a, b in zip(u, c)}


def check_size(ids: np.ndarray, record: PanopticRecord, png_path: str | os.PathLike) -> None:
    """Raise when the PNG's size differs from the image's height and width in the JSON (when known)."""
    h, w = record.height, record.width
    if h is not None and w is not None and ids.shape != (h, w):
        raise InputError(
            f"{where(png_path, record.image_id)}PNG is {ids.shape[1]}x{ids.shape[0]} but the image is {w}x{h}"
        )


def check_record(
    ids: np.ndarray,
    record: PanopticRecord,
    categories: dict[int, Category],
    png_path: str | os.PathLike,
) -> dict[int, int]:
    """Check one PNG against its JSON record; return the area of each segment.

    Errors: the size differs from the image's height/width, an id in the PNG is
    not in the JSON, a JSON segment has no pixel, a JSON area disagrees with
    the PNG, or a category id is unknown.
    """
    ctx = where(png_path, record.image_id)
    check_size(ids, record, png_path)
    areas = segment_areas(ids)
    known = {s.id for s in record.segments}
    for sid in areas:
        if sid != VOID and sid not in known:
            raise InputError(f"{ctx}segment {sid}: in the PNG but not in the JSON")
    for s in record.segments:
        if s.id not in areas:
            raise InputError(f"{ctx}segment {s.id}: in the JSON but has no pixel in the PNG")
        if s.area is not None and s.area != areas[s.id]:
            raise InputError(f"{ctx}segment {s.id}: JSON area {s.area} but {areas[s.id]} pixels in the PNG")
        if s.category_id not in categories:
            raise InputError(f"{ctx}segment {s.id}: unknown category_id {s.category_id}")
    return areas


def bbox_of(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight COCO box ``(x, y, w, h)`` of a boolean mask (zeros if empty)."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if ys.size == 0:
        return (0, 0, 0, 0)
    return (int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1))


def panoptic_json(
    categories: dict[int, Category],
    images: list[dict[str, Any]],
    records: list[PanopticRecord],
    info: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble a COCO panoptic JSON document."""
    return {
        "info": info or {},
        "images": images,
        "annotations": [r.to_json() for r in records],
        "categories": [c.to_json() for c in categories.values()],
    }
