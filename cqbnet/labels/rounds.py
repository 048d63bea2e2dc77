"""Paper 001's approximate labels on disk: one round per folder (``<image id>.png`` and ``labels.json``), and the
panoptic targets a mixed-label dataset makes from them (:class:`ApproximateRound`). How a round is made (thing cues
per box, CAMs, refinement from a network) is :mod:`cqbnet.weak.approx_ground_truth`; this is only its format.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cqbnet.data.panoptic_format import read_panoptic_png, write_panoptic_png
from cqbnet.errors import InputError
from cqbnet.io import read_json


def box_pixels(box, h: int, w: int) -> tuple[int, int, int, int]:
    """The pixel rectangle (x1, y1, x2, y2; right and bottom exclusive) of an xyxy box, clipped to an image of
    height ``h`` and width ``w``: every pixel the box touches."""
    x1, y1 = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    x2, y2 = min(w, int(np.ceil(box[2]))), min(h, int(np.ceil(box[3])))
    return x1, y1, x2, y2


ROUND_FORMAT = "cqbnet.approximate_panoptic"
STUFF, BACKGROUND = -1, -2  # the box index of a stuff segment, and of the box background (category id -1)


def write_round(
    out_dir: Path,
    entries: Iterable[tuple[int | str, np.ndarray, list[tuple[int, int, int]]]],
    source: str,
    inputs=(),
    overwrite: bool = False,
) -> Path:
    """Write one round of approximate labels: ``out_dir/<image id>.png`` (COCO panoptic ids, 0 = ignore) and
    ``labels.json`` listing each image's segments as (segment id, category id, box index; :data:`STUFF` for
    stuff, :data:`BACKGROUND` for the box background, ignore for every class). The folder appears complete or not
    at all, under cqbnet's output policy (:func:`cqbnet.io.atomic_directory`)."""
    from cqbnet.io import atomic_directory, write_json

    out_dir = Path(out_dir)
    with atomic_directory(out_dir, inputs, overwrite) as tmp:
        images = {}
        for image_id, ids, segments in entries:
            name = f"{image_id}.png"
            write_panoptic_png(tmp / name, ids.astype(np.uint32))
            images[str(image_id)] = {"file_name": name, "segments": [list(map(int, s)) for s in segments]}
        write_json(tmp / "labels.json", {"format": ROUND_FORMAT, "source": source, "images": images}, indent=None)
    return out_dir / "labels.json"


@dataclass
class ApproximateRound:
    """A round of approximate labels read back (:func:`write_round`); a source of pseudo labels for the boxes
    images (:mod:`cqbnet.labels.pseudo`)."""

    root: Path
    images: dict[str, dict]
    kind = "B"  # the label kind of the images it labels
    what = "approximate labels"

    def covered(self) -> set[str]:
        """Ids (as strings) of the images it labels."""
        return set(self.images)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ApproximateRound:
        path = Path(path)
        if path.is_dir():
            path = path / "labels.json"
        if not path.is_file():
            raise InputError(f"{path}: no approximate labels here (cqbnet labels approximate writes them)")
        data = read_json(path)
        if data.get("format") != ROUND_FORMAT:
            raise InputError(f"{path}: not a file of approximate panoptic labels (format {data.get('format')!r})")
        return cls(path.parent, data["images"])

    def check_against(self, manifest) -> None:
        """Before any work: the round labels images of ``manifest`` (not another's) and each of its label maps has
        its image's size; else a one-line :class:`InputError` naming the file and image."""
        boxed = [lab for lab in manifest.images if "B" in lab.kinds]
        covered = [lab for lab in boxed if str(lab.image_id) in self.images]
        if not covered:
            raise InputError(
                f"{self.root / 'labels.json'}: labels none of the {len(boxed)} boxes images of {manifest.path}; "
                "were they made for another manifest?"
            )
        for lab in covered:
            path = self.root / self.images[str(lab.image_id)]["file_name"]
            shape = read_panoptic_png(path).shape[:2]
            if shape != (lab.height, lab.width):
                raise InputError(f"{path}: {shape[1]}x{shape[0]} px, image {lab.image_id} is {lab.width}x{lab.height}")

    def read(self, image_id) -> tuple[np.ndarray, list[tuple[int, int, int]], np.ndarray]:
        """One image's labels: (H, W) int64 segment ids with the box background set to 0 (ignore for every class),
        the rows (segment id, category id, box index) of its labelled segments, and its box background (H, W) bool
        (:func:`thing_cues`; all False when the round marks none)."""
        entry = self.images[str(image_id)]
        ids = read_panoptic_png(self.root / entry["file_name"]).astype(np.int64)
        background = np.isin(ids, [sid for sid, _, j in entry["segments"] if j == BACKGROUND])
        ids[background] = 0
        return ids, [(sid, cid, j) for sid, cid, j in entry["segments"] if j != BACKGROUND], background

    def target(self, lab, contiguous: dict[int, int], categories: dict, ignore_index: int) -> dict[str, Any] | None:
        """The panoptic target of a boxes image from its approximate labels (None when the round lacks it): every
        non-crowd box is an instance with its annotated box and its confident pixels (possibly none), each stuff
        segment its pixels; ``ignore`` (H, W) marks the pixels no class loss reads. Where the round marks a box
        background, ``box_background`` (H, W) holds those of the ignore pixels the mask head takes as its box's
        background (:func:`thing_cues`), and ``semantic_not`` (H, W) the class each of them is known not to be:
        its box's (the smallest box's, where boxes of several classes hold it), else ``ignore_index``."""
        entry = self.images.get(str(lab.image_id))
        if entry is None:
            return None
        ids, rows, background = self.read(lab.image_id)
        if ids.shape != (lab.height, lab.width):
            raise InputError(
                f"{self.root / entry['file_name']}: {ids.shape[1]}x{ids.shape[0]} px, image {lab.image_id} is "
                f"{lab.width}x{lab.height}"
            )
        of_box = {j: sid for sid, _, j in rows if j >= 0}
        stuff = [(sid, cid) for sid, cid, j in rows if j == STUFF]
        boxes = [b for b in (lab.boxes or []) if not b.iscrowd]
        index = [j for j, b in enumerate(lab.boxes or []) if not b.iscrowd]
        n = len(boxes) + len(stuff)
        h, w = ids.shape
        masks = np.zeros((n, h, w), dtype=bool)
        out_boxes = np.zeros((n, 4), dtype=np.float32)
        classes = np.zeros(n, dtype=np.int64)
        seg_ids = np.zeros(n, dtype=np.int64)
        fresh = int(ids.max()) + 1  # ids for instances with no confident pixel (not in the map)
        for k, (j, b) in enumerate(zip(index, boxes)):
            sid = of_box.get(j)
            if sid is None:
                sid, fresh = fresh, fresh + 1
            masks[k] = ids == sid
            out_boxes[k] = (b.bbox[0], b.bbox[1], b.bbox[0] + b.bbox[2], b.bbox[1] + b.bbox[3])
            classes[k], seg_ids[k] = contiguous[b.category_id], sid
        for k, (sid, cid) in enumerate(stuff, start=len(boxes)):
            masks[k] = ids == sid
            ys, xs = np.nonzero(masks[k])
            out_boxes[k] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) if len(xs) else (0, 0, 0, 0)
            classes[k], seg_ids[k] = contiguous[cid], sid
        semantic = np.full((h, w), ignore_index, dtype=np.int64)
        for m, c in zip(masks, classes):
            semantic[m] = c
        cats = list(categories)
        out = {
            "masks": masks,
            "labels": classes,
            "category_ids": np.array([cats[c] for c in classes], dtype=np.int64),
            "segment_ids": seg_ids,
            "iscrowd": np.zeros(n, dtype=bool),
            "is_thing": np.array([categories[cats[c]].isthing for c in classes], dtype=bool),
            "boxes": out_boxes,
            "semantic": semantic,
            "panoptic": ids,
            "ignore": ids == 0,
        }
        if background.any():
            not_class = np.full((h, w), ignore_index, dtype=np.int64)
            area = (out_boxes[: len(boxes), 2:] - out_boxes[: len(boxes), :2]).prod(1)
            for k in np.argsort(-area, kind="stable"):  # large first, smaller boxes paint over
                x1, y1, x2, y2 = box_pixels(out_boxes[k], h, w)
                not_class[y1:y2, x1:x2][background[y1:y2, x1:x2]] = classes[k]
            out.update(box_background=background, semantic_not=not_class)
        return out
