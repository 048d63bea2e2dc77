"""Test helpers: predictions in COCO panoptic format, pilot tables, tiny models, restricted label spaces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cqbnet.data.panoptic_format import PanopticRecord, SegmentInfo, read_panoptic_png, write_panoptic_png
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


def write_pilot(
    path: Path,
    curves: dict[tuple[str, str], tuple[float, ...]],
    seeds: int = 3,
    noise: float = 0.0,
    rng_seed: int = 0,
    rho_p=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
) -> Path:
    """A pilot CSV whose runs follow known curves (ascending polynomial coefficients per (kind, region)).

    Study P: PQ(rho) = 20 + 100 * int_0^rho f (Eq. 5 as a rate); weak study W at rho_W = 1 - rho_P:
    module = baseline * (1 + f(rho_W)) (Eq. 6), baseline 40 for things and 30 for stuff. Noise in PQ points.
    """
    from numpy.polynomial import polynomial as npoly

    rng = np.random.default_rng(rng_seed)
    lines = ["study,arm,seed,rho_P,rho_I,rho_B,rho_S,rho_PT,pq_th,pq_st"]
    kinds = sorted({k for k, _ in curves}, key=lambda k: ("P", "I", "B", "S", "PT").index(k))
    for kind in kinds:
        for rp in rho_p:
            for s in range(seeds):
                pq = {}
                for region, base in (("th", 40.0), ("st", 30.0)):
                    c = curves.get((kind, region))
                    if c is None:
                        continue
                    if kind == "P":
                        pq[region] = {"full": 20.0 + 100 * npoly.polyval(rp, npoly.polyint(c))}
                    else:
                        pq[region] = {
                            "baseline": base,
                            "module": base * (1 + npoly.polyval(1 - rp, c)),
                            "upper": base + 5,
                        }
                arms = ("full",) if kind == "P" else ("baseline", "module", "upper")
                for arm in arms:
                    ratio = {k: 0.0 for k in ("P", "I", "B", "S", "PT")}
                    ratio["P"] = rp
                    if kind != "P":
                        ratio[kind] = round(1 - rp, 6)
                    cells = [
                        f"{pq[r][arm] + noise * rng.standard_normal():.6f}" if r in pq else "" for r in ("th", "st")
                    ]
                    lines.append(",".join([kind, arm, str(s)] + [f"{ratio[k]:g}" for k in ratio] + cells))
    path.write_text("\n".join(lines) + "\n")
    return path


# A network small enough for tests: 16-32 channels, few proposals, thresholds at 0 so outputs are never empty.
TINY = dict(
    backbone="resnet18",
    norm="bn",
    trainable_layers=5,
    fpn_channels=32,
    anchor_sizes=(8, 16, 32, 64, 128),
    rpn_pre_nms_train=200,
    rpn_post_nms_train=100,
    rpn_pre_nms_test=100,
    rpn_post_nms_test=50,
    roi_batch_size=32,
    box_representation=64,
    detections_per_img=20,
    mask_channels=16,
    semantic_channels=16,
    affinity_channels=16,
    panoptic={
        "stride": 4,
        "train_proposals": 50,
        "test_score_thresh": 0.0,
        "min_thing_area": 1,
        "min_stuff_area": 1,
        "merge_score_thresh": 0.0,
        "merge_stuff_area": 1,
    },
)


def tiny_model_config() -> dict:
    """The ``model`` section of a config for tests: the tiny network, in YAML-friendly types."""
    return {
        "backbone": "resnet18",
        "norm": "bn",
        "trainable_layers": 5,
        "fpn_channels": 16,
        "anchor_sizes": [8, 16, 32, 64, 128],
        "rpn_pre_nms_train": 100,
        "rpn_post_nms_train": 50,
        "rpn_pre_nms_test": 50,
        "rpn_post_nms_test": 30,
        "roi_batch_size": 16,
        "box_representation": 32,
        "detections_per_img": 10,
        "mask_channels": 8,
        "semantic_channels": 8,
        "affinity_channels": 8,
        "panoptic": {
            "stride": 4,
            "train_proposals": 20,
            "test_score_thresh": 0.0,
            "min_thing_area": 1,
            "min_stuff_area": 1,
        },
    }


def restrict_label_space(src: Path, dst: Path, isthing: bool) -> Path:
    """A copy of a synthetic data set keeping only its thing (``isthing``) or only its stuff classes; the
    removed classes' pixels become void."""
    for split in ("train", "val", "test"):
        if not (src / f"panoptic_{split}.json").is_file():
            continue
        raw = json.loads((src / f"panoptic_{split}.json").read_text())
        gone = {c["id"] for c in raw["categories"] if bool(c["isthing"]) != isthing}
        raw["categories"] = [c for c in raw["categories"] if c["id"] not in gone]
        (dst / "panoptic" / split).mkdir(parents=True)
        for ann in raw["annotations"]:
            ids = read_panoptic_png(src / "panoptic" / split / ann["file_name"])
            ids[np.isin(ids, [s["id"] for s in ann["segments_info"] if s["category_id"] in gone])] = 0
            write_panoptic_png(dst / "panoptic" / split / ann["file_name"], ids)
            ann["segments_info"] = [s for s in ann["segments_info"] if s["category_id"] not in gone]
        (dst / f"panoptic_{split}.json").write_text(json.dumps(raw))
    (dst / "images").symlink_to(src / "images")
    return dst


def kill_after_checkpoint(proc, ckpt: Path, at: int = 2, timeout: float = 300) -> int | None:
    """SIGKILL ``proc`` once its checkpoint ``ckpt`` holds iteration ``at`` or later; the iteration it was killed
    at (None when the process ended first)."""
    import os
    import signal
    import time

    import torch

    killed_at, deadline = None, time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if ckpt.is_file():
            try:
                killed_at = torch.load(ckpt, weights_only=False)["iteration"]
            except Exception:  # being replaced right now
                killed_at = None
            if killed_at is not None and killed_at >= at:
                os.kill(proc.pid, signal.SIGKILL)
                break
        time.sleep(0.02)
    proc.wait()
    return killed_at
