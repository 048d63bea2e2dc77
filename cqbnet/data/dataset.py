"""A map-style dataset over a COCO panoptic folder.

Each item is ``(image, target)``: the RGB image as an (H, W, 3) uint8 array and
a dict of numpy arrays in the layout torchvision's detection models use:

* ``masks`` (N, H, W) bool, ``labels`` (N,) contiguous class index,
  ``category_ids`` (N,), ``segment_ids`` (N,), ``iscrowd`` (N,) bool,
  ``boxes`` (N, 4) float32 ``x1, y1, x2, y2`` (exclusive right/bottom edge),
  ``is_thing`` (N,) bool;
* ``semantic`` (H, W) int64 contiguous class index, ``ignore_index`` on void;
* ``panoptic`` (H, W) uint32 segment ids; ``image_id``.

Contiguous indices follow the order of the categories in the JSON
(``dataset.class_names``).
"""

from __future__ import annotations

import os
from typing import Any

import cv2
import numpy as np

from cqbnet.data.panoptic_format import Category, PanopticRecord, PanopticSet, load_panoptic_json
from cqbnet.errors import InputError, where

IGNORE_INDEX = 255
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as (H, W, 3) uint8 RGB, with a clear error when it cannot be read or is cut short."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: image not found")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"{path}: image not found or not readable")
    if str(path).lower().endswith((".jpg", ".jpeg")) and not _jpeg_ends(path):
        raise InputError(f"{path}: truncated JPEG (no end-of-image marker); the file is incomplete")
    return img[..., ::-1].copy()


def _jpeg_ends(path: str | os.PathLike, tail: int = 1024) -> bool:
    """Whether a JPEG file has its end-of-image marker (FF D9) near its end, as a complete file does."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - tail))
        return b"\xff\xd9" in f.read()


def read_image_of(
    path: str | os.PathLike, image_id: int, height: int | None, width: int | None, source: str
) -> np.ndarray:
    """Read an image and check it has the size its annotation (``source``: JSON, manifest) says."""
    img = read_rgb(path)
    if height is not None and img.shape[:2] != (height, width):
        raise InputError(
            f"{where(path, image_id)}image is {img.shape[1]}x{img.shape[0]}, {source} says {width}x{height}"
        )
    return img


def panoptic_target(
    rec: PanopticRecord,
    ids: np.ndarray,
    categories: dict[int, Category],
    contiguous: dict[int, int],
    ignore_index: int = IGNORE_INDEX,
) -> dict[str, Any]:
    """Full panoptic target of one image (masks, classes, boxes, semantic and id maps) from its id map."""
    h, w = ids.shape
    segs = rec.segments
    n = len(segs)
    masks = np.zeros((n, h, w), dtype=bool)
    boxes = np.zeros((n, 4), dtype=np.float32)
    semantic = np.full((h, w), ignore_index, dtype=np.int64)
    for k, s in enumerate(segs):
        m = ids == s.id
        masks[k] = m
        ys = np.flatnonzero(m.any(axis=1))
        xs = np.flatnonzero(m.any(axis=0))
        boxes[k] = (xs[0], ys[0], xs[-1] + 1, ys[-1] + 1)
        semantic[m] = contiguous[s.category_id]
    return {
        "image_id": rec.image_id,
        "masks": masks,
        "labels": np.array([contiguous[s.category_id] for s in segs], dtype=np.int64),
        "category_ids": np.array([s.category_id for s in segs], dtype=np.int64),
        "segment_ids": np.array([s.id for s in segs], dtype=np.int64),
        "iscrowd": np.array([s.iscrowd for s in segs], dtype=bool),
        "is_thing": np.array([categories[s.category_id].isthing for s in segs], dtype=bool),
        "boxes": boxes,
        "semantic": semantic,
        "panoptic": ids,
    }


class PanopticDataset:
    """COCO panoptic JSON + PNG folder + image folder, validated on read."""

    def __init__(
        self,
        json_path: str | os.PathLike,
        png_dir: str | os.PathLike | None = None,
        image_dir: str | os.PathLike | None = None,
        categories: dict[int, Category] | str | os.PathLike | None = None,
        ignore_index: int = IGNORE_INDEX,
    ):
        self.set: PanopticSet = load_panoptic_json(json_path, png_dir, image_dir, categories)
        self.categories = self.set.categories
        self.ignore_index = ignore_index
        self.contiguous = {cid: i for i, cid in enumerate(self.categories)}
        if len(self.contiguous) >= ignore_index:
            raise InputError(f"{json_path}: {len(self.contiguous)} categories do not fit below ignore_index")
        self.class_names = [c.name for c in self.categories.values()]
        self._sem_lut_cat = np.array(list(self.categories), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.set)

    def image_ids(self) -> list[int]:
        return [r.image_id for r in self.set.records]

    def load_image(self, index: int) -> np.ndarray:
        rec = self.set.records[index]
        return read_image_of(self.set.image_path(rec), rec.image_id, rec.height, rec.width, "JSON")

    def load_target(self, index: int) -> dict[str, Any]:
        """The target dict of item ``index`` (see the module docstring)."""
        rec = self.set.records[index]
        ids = self.set.read_ids(rec, validate=True)
        return panoptic_target(rec, ids, self.categories, self.contiguous, self.ignore_index)

    def __getitem__(self, index: int) -> tuple[np.ndarray, dict[str, Any]]:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        return self.load_image(index), self.load_target(index)
