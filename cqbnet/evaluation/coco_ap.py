"""Box and mask AP of the thing segments, through pycocotools' COCOeval.

Ground-truth instances are the thing segments of the panoptic GT (crowd
segments keep ``iscrowd``); detections are the thing segments of the panoptic
prediction with their ``score`` (1.0 when the prediction has none). Boxes are
the tight boxes of the masks. This is how a panoptic output is scored as an
instance segmentation (as detectron2 does for COCO panoptic models).
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from cqbnet.data.panoptic_format import Category, SegmentInfo, bbox_of

AP_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl")


class InstanceCollector:
    """Collects GT and predicted thing instances image by image, then runs COCOeval."""

    def __init__(self, categories: dict[int, Category]):
        self.categories = categories
        self.images: list[dict[str, Any]] = []
        self.gts: list[dict[str, Any]] = []
        self.dts: list[dict[str, Any]] = []

    def _instances(self, ids: np.ndarray, segments: list[SegmentInfo | dict]) -> list[tuple]:
        out = []
        for s in segments:
            if isinstance(s, dict):
                s = SegmentInfo(int(s["id"]), int(s["category_id"]), bool(s.get("iscrowd", 0)), score=s.get("score"))
            cat = self.categories.get(s.category_id)
            if cat is None or not cat.isthing:
                continue
            m = ids == s.id
            if not m.any():
                continue
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            out.append((s, rle, [float(v) for v in bbox_of(m)], int(m.sum())))
        return out

    def encode(self, image_id: int, gt_ids: np.ndarray, gt_segments, pred_ids: np.ndarray, pred_segments) -> tuple:
        """The RLE-encoded instances of one image (thread-safe; pass the result to :meth:`add_encoded`)."""
        return image_id, gt_ids.shape, self._instances(gt_ids, gt_segments), self._instances(pred_ids, pred_segments)

    def add(self, image_id: int, gt_ids: np.ndarray, gt_segments, pred_ids: np.ndarray, pred_segments) -> None:
        self.add_encoded(self.encode(image_id, gt_ids, gt_segments, pred_ids, pred_segments))

    def add_encoded(self, encoded: tuple) -> None:
        image_id, (h, w), gts, dts = encoded
        self.images.append({"id": image_id, "height": h, "width": w})
        for s, rle, box, area in gts:
            self.gts.append(
                {
                    "id": len(self.gts) + 1,
                    "image_id": image_id,
                    "category_id": s.category_id,
                    "segmentation": rle,
                    "bbox": box,
                    "area": area,
                    "iscrowd": int(s.iscrowd),
                }
            )
        for s, rle, box, _ in dts:
            score = 1.0 if s.score is None else float(s.score)
            self.dts.append(
                {"image_id": image_id, "category_id": s.category_id, "segmentation": rle, "bbox": box, "score": score}
            )

    def compute(self) -> dict[str, dict[str, float] | None]:
        """``{"bbox": {AP, AP50, ...}, "segm": {...}}`` in [0, 1]; None where no prediction exists."""
        if not self.dts or not self.gts:
            return {"bbox": None, "segm": None}
        things = [c.to_json() for c in self.categories.values() if c.isthing]
        gt = COCO()
        gt.dataset = {"images": self.images, "annotations": self.gts, "categories": things}
        with contextlib.redirect_stdout(io.StringIO()):
            gt.createIndex()
            dt = gt.loadRes([dict(d) for d in self.dts])
            out = {}
            for iou_type in ("bbox", "segm"):
                ev = COCOeval(gt, dt, iou_type)
                ev.evaluate()
                ev.accumulate()
                ev.summarize()
                out[iou_type] = {n: float(v) for n, v in zip(AP_NAMES, ev.stats[:6])}
        return out
