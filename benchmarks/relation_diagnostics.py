"""Where relation reasoning's cost on things comes from: its revisions at test, or what its training did to the base.

For a checkpoint trained with relation reasoning (``model.weak.relation``), the val split is evaluated four ways
(argmax over P): both of the module's revisions on (as trained and as shipped), only the box revision (the
first cascade stage's class logits and deltas averaged with the enhanced ones), only the semantic revision (the
semantic logits averaged with the enhanced ones), and neither (the base network alone). Each arm also reports the
detections per image that pass the panoptic head's test threshold and their mean score, over the first
``--count-images`` val scenes; on the same scenes, the first stage's probabilities from its base logits, the
enhanced logits alone and their average (:func:`first_stage_probabilities`).

If the network with neither revision does as well as a baseline trained without the module, the harm is in how
the revisions are applied at test; if it is also worse, the module's losses changed the base network.

A checkpoint trained without the module (its baseline) gives the base network's numbers alone, for comparison.

Usage: ``python -m benchmarks.relation_diagnostics RUN/model_final.pth DATA [--out FILE.json]``; prints JSON.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torchvision.ops import box_iou

from cqbnet.data.dataset import PanopticDataset
from cqbnet.data.synthetic import split_paths
from cqbnet.data.transforms import to_tensors
from cqbnet.engine.inference import evaluate_model
from cqbnet.engine.trainer import load_model
from cqbnet.io import write_json
from cqbnet.modeling.padding import grid_cells
from cqbnet.weak.relation_reasoning import average_with_base

ARMS = {"both": (True, True), "boxes_only": (True, False), "semantics_only": (False, True), "neither": (False, False)}


@contextmanager
def revisions(model, boxes: bool, semantics: bool) -> Iterator[None]:
    """Relation reasoning's test-time revisions switched on or off (the module's weights untouched)."""
    relation = model.relation
    original = relation.enhancer

    def enhancer(sem_features, sem_logits, sizes, seg_out):
        inner = original(sem_features, sem_logits, sizes, seg_out if semantics else [])

        def enhance(x, logits, deltas, counts):
            cls, reg = inner(x, logits, deltas, counts)
            return (cls, reg) if boxes else (logits, deltas)

        return enhance

    relation.enhancer = enhancer
    try:
        yield
    finally:
        relation.enhancer = original


@torch.no_grad()
def detection_stats(model, val: PanopticDataset, images: int) -> dict[str, float]:
    """Detections per image passing the panoptic head's test threshold (after its class-agnostic NMS), mean score."""
    model.eval()
    count, total = 0, 0.0
    n = min(images, len(val))
    for i in range(n):
        image, _ = to_tensors(*val[i])
        found = model.detect([image])
        scores = found.dets[0]["scores"]
        count += len(scores)
        total += float(scores.sum())
    return {"detections_per_image": count / max(n, 1), "mean_score": total / max(count, 1)}


@torch.no_grad()
def first_stage_probabilities(model, val: PanopticDataset, images: int) -> dict[str, float]:
    """The first cascade stage's probabilities on the first ``images`` val scenes' RPN proposals, from its base
    logits, the relation module's enhanced logits alone, and their average (what the cascade uses): the mean
    probability of the true class on proposals at IoU >= 0.5 with a thing, and the mean foreground probability on
    the others."""
    model.eval()
    heads, relation = model.roi_heads, model.relation
    stage = heads.stages[0]
    names = ("base",) if relation is None else ("base", "enhanced", "average")
    sums = {f"{w}_{k}": 0.0 for w in names for k in ("true_class_pos", "fg_neg")}
    n_pos = n_neg = 0
    det_label = {s: k + 1 for k, s in enumerate(model.labels.thing_semantic)}
    for i in range(min(images, len(val))):
        image, t = to_tensors(*val[i])
        image_list, features, sem_features, sem_logits, _ = model.features([image])
        boxes = model.rpn.proposals(image_list, features)[0]
        things = t["is_thing"] & ~t["iscrowd"]
        if not bool(things.any()) or len(boxes) == 0:
            continue
        x = stage.head(heads.box_roi_pool(features, [boxes], image_list.image_sizes))
        base, _ = stage.predictor(x)
        logits = {"base": base}
        if relation is not None:
            probs = torch.softmax(sem_logits, dim=1)[0]
            cells = grid_cells(image_list.image_sizes[0], relation.stride)
            enhanced, _, _ = relation(x, sem_features[0], probs, cells, relation.num_nodes)
            logits.update(enhanced=enhanced, average=average_with_base(base, enhanced))
        iou, k = box_iou(boxes, t["boxes"][things].float()).max(1)
        true = torch.tensor([det_label[int(c)] for c in t["labels"][things]])[k]
        pos = iou >= 0.5
        for name, lg in logits.items():
            p = torch.softmax(lg, dim=1)
            sums[f"{name}_true_class_pos"] += float(p[pos, true[pos]].sum())
            sums[f"{name}_fg_neg"] += float((1 - p[~pos, 0]).sum())
        n_pos += int(pos.sum())
        n_neg += int((~pos).sum())
    out = {k: v / max(n_pos if k.endswith("pos") else n_neg, 1) for k, v in sums.items()}
    return {**out, "positive_proposals": n_pos, "negative_proposals": n_neg}


def diagnose(checkpoint: Path, data: Path, count_images: int = 100) -> dict[str, Any]:
    model, _ = load_model(checkpoint, torch.device("cpu"))
    val = PanopticDataset(*split_paths(data, "val"))

    def scored() -> dict[str, float]:
        pq = evaluate_model(model, val, torch.device("cpu"), "argmax").summary()
        return {**pq, **detection_stats(model, val, count_images)}

    arms = {}
    if model.relation is None:  # a baseline trained without the module: the base network's numbers only
        arms["neither"] = scored()
    else:
        for name, (boxes, semantics) in ARMS.items():
            with revisions(model, boxes, semantics):
                arms[name] = scored()
    for name, arm in arms.items():
        print(name, {k: round(v, 4) if isinstance(v, float) else v for k, v in arm.items()}, flush=True)
    stage1 = first_stage_probabilities(model, val, count_images)
    print("first stage", {k: round(v, 4) for k, v in stage1.items()}, flush=True)
    return {"checkpoint": str(checkpoint), "arms": arms, "first_stage": stage1}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("data", type=Path, help="the scenes folder (its val split is used)")
    ap.add_argument("--count-images", type=int, default=100)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    result = diagnose(args.checkpoint, args.data, args.count_images)
    if args.out:
        write_json(args.out, result, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
