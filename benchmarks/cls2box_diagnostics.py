"""Are Cls2Box's pseudo targets better than chance? What its MID heads pick, scored against the hidden boxes.

For a trained checkpoint with Cls2Box (``model.weak.cls2box``), on val scenes: the first 100 RPN proposals of
each image go through every cascade stage as in training (:class:`cqbnet.weak.cls2box.Cls2Box`); for every thing
class the image holds, the proposal that stage's phi_MID times detector probability ranks first is the one
L_C2B credits most (``cls2box_mode: pseudo`` takes its pseudo boxes from the last stage's picks). Reported per
stage: the share of those picks that overlap a ground-truth box of the class at IoU >= 0.5 (``hit``;
``detector_only_hit`` when the detector's probability alone ranks), against the share of all proposals that do
(``chance``: a pick at random), and the mean foreground probability the detector gives the picks.

Usage: ``python -m benchmarks.cls2box_diagnostics RUN/model_final.pth DATA [--images 100]``; prints JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torchvision.ops import box_iou

from cqbnet.data.dataset import PanopticDataset
from cqbnet.data.synthetic import split_paths
from cqbnet.data.transforms import to_tensors
from cqbnet.engine.trainer import load_model


@torch.no_grad()
def diagnose(checkpoint: Path, data: Path, images: int = 100) -> dict:
    model, _ = load_model(checkpoint, torch.device("cpu"))
    if model.cls2box is None:
        raise SystemExit(f"{checkpoint}: trained without Cls2Box")
    val = PanopticDataset(*split_paths(data, "val"))
    heads = model.roi_heads
    stages = len(heads.stages)
    hit, chance, fg, picks = [0.0] * stages, [0.0] * stages, [0.0] * stages, 0
    det_hit = [0.0] * stages  # the same, ranked by the detector's probability alone
    for n in range(min(images, len(val))):
        image, t = to_tensors(*val[n])
        image_list, features, _, _, _ = model.features([image])
        boxes = [model.rpn.proposals(image_list, features)[0][: model.cls2box.proposals]]
        things = t["is_thing"] & ~t["iscrowd"]
        classes = sorted({int(c) for c in t["labels"][things]})
        if not classes or len(boxes[0]) == 0:
            continue
        det_label = {s: k for k, s in enumerate(model.labels.thing_semantic)}
        for k, (stage, mid_head) in enumerate(zip(heads.stages, model.cls2box.mid_heads)):
            x = stage.head(heads.box_roi_pool(features, boxes, image_list.image_sizes))
            logits, deltas = stage.predictor(x)
            probs = torch.softmax(logits, dim=1)
            score = mid_head(x, [len(boxes[0])])[0] * probs[:, 1:]  # (R, T)
            for c in classes:
                gt = t["boxes"][things][t["labels"][things] == c].float()
                iou = box_iou(boxes[0], gt).amax(1)  # (R,)
                j = int(score[:, det_label[c]].argmax())
                hit[k] += float(iou[j] >= 0.5)
                det_hit[k] += float(iou[int(probs[:, 1 + det_label[c]].argmax())] >= 0.5)
                chance[k] += float((iou >= 0.5).float().mean())
                fg[k] += float(1 - probs[j, 0])
                picks += k == 0
            boxes = heads.refine(stage, deltas, boxes, image_list.image_sizes)
    return {
        "checkpoint": str(checkpoint),
        "class_picks": picks,
        "per_stage": [
            {
                "stage": k,
                "hit": hit[k] / max(picks, 1),
                "detector_only_hit": det_hit[k] / max(picks, 1),
                "chance": chance[k] / max(picks, 1),
                "fg_prob": fg[k] / max(picks, 1),
            }
            for k in range(stages)
        ],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("data", type=Path)
    ap.add_argument("--images", type=int, default=100)
    args = ap.parse_args()
    print(json.dumps(diagnose(args.checkpoint, args.data, args.images), indent=2))


if __name__ == "__main__":
    main()
