"""Paper 004's argmax over P against the heuristic merge on one checkpoint, and what separates them.

On the same trained weights and the whole val split: the heuristic merge (Panoptic FPN), argmax over P as trained,
and argmax with one inference rule changed at a time: the affinity off (the potential Psi alone), each detection's
affinity boost kept inside its box (``affinity_in_box``), no class-agnostic NMS before the potential (training
feeds Psi without it), and the training's score threshold (0.3) instead of 0.5, with and without that NMS. Things'
true positives, false positives and false negatives are summed over the thing classes. Report:
``benchmarks/argmax_vs_merge.md``.

Usage: ``python -m benchmarks.argmax_vs_merge CHECKPOINT --data DATA [--out JSON]``.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch

from benchmarks.machine import machine_info
from cqbnet.data.dataset import PanopticDataset
from cqbnet.data.synthetic import split_paths
from cqbnet.engine.inference import evaluate_model
from cqbnet.engine.trainer import load_model
from cqbnet.io import write_json

OUT = Path(__file__).parent / "results" / "argmax_vs_merge.json"


def thing_counts(result, categories) -> dict[str, int]:
    tot = {"tp": 0, "fp": 0, "fn": 0}
    for cid, row in result.per_class.items():
        if categories[int(cid)].isthing:
            for k in tot:
                tot[k] += int(row.get(k, 0))
    return tot


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    model, _ = load_model(args.checkpoint, torch.device("cpu"))
    val = PanopticDataset(*split_paths(args.data, "val"))
    head = copy.deepcopy(model.panoptic_head)
    affinity = model.panoptic_head.affinity
    variants = {
        "heuristic merge": ("heuristic", {}, True),
        "argmax over P": ("argmax", {}, True),
        "argmax, affinity off (Psi only)": ("argmax", {}, False),
        "argmax, each detection's affinity boost inside its box only": ("argmax", {"affinity_in_box": True}, True),
        "argmax, no class-agnostic NMS": ("argmax", {"agnostic_nms": None}, True),
        "argmax, score threshold 0.3": ("argmax", {"test_score_thresh": 0.3}, True),
        "argmax, score threshold 0.3, no class-agnostic NMS": (
            "argmax", {"test_score_thresh": 0.3, "agnostic_nms": None}, True
        ),
    }  # fmt: skip
    rows = {}
    for name, (mode, changes, with_affinity) in variants.items():
        model.panoptic_head = copy.deepcopy(head)
        for k, v in changes.items():
            setattr(model.panoptic_head, k, v)
        model.panoptic_head.affinity = affinity if with_affinity else None
        r = evaluate_model(model, val, torch.device("cpu"), mode)
        rows[name] = {**r.summary(), "things": thing_counts(r, val.categories)}
        s = rows[name]
        print(f"| {name} | {100 * s['pq']:.1f} | {100 * s['pq_th']:.1f} | {100 * s['sq_th']:.1f} | "
              f"{100 * s['rq_th']:.1f} | {100 * s['pq_st']:.1f} | {s['things']['tp']} | {s['things']['fp']} | "
              f"{s['things']['fn']} |", flush=True)  # fmt: skip
    write_json(args.out, {"machine": machine_info(), "checkpoint": str(args.checkpoint), "variants": rows}, indent=2)


if __name__ == "__main__":
    main()
