"""Test helpers: write predictions in COCO panoptic format."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cqbnet.data.panoptic_format import PanopticRecord, SegmentInfo, write_panoptic_png
from cqbnet.io import write_json


def write_prediction(out: Path, preds: dict[int, tuple[np.ndarray, list[SegmentInfo]]], categories) -> Path:
    """Write {image_id: (ids, segments)} as ``out/pred.json`` + ``out/pred/*.png``; return the JSON path."""
    (out / "pred").mkdir(parents=True, exist_ok=True)
    anns = []
    for iid, (ids, segs) in preds.items():
        name = f"{iid}.png"
        write_panoptic_png(out / "pred" / name, ids)
        anns.append(PanopticRecord(iid, name, segs).to_json())
    j = out / "pred.json"
    write_json(j, {"annotations": anns, "categories": [c.to_json() for c in categories.values()]})
    return j
