"""How well labels fit the ground truth's things, by object size: pseudo labels (paper 003's from clicks, written by
``cqbnet fit``'s ``pseudo-labels`` stage or ``cqbnet pseudo-labels``) or a network's predictions (``cqbnet
predict``), scored against the scenes' hidden ground truth with :mod:`cqbnet.evaluation.by_size` (matched share,
best IoU, coverage, box IoU, merged touching things, precision; per size bin). Used to find where clicks stop
teaching things on small, crowded objects (the dense preset). Usage::

    python -m benchmarks.label_fit --labels runs/dense/points_s0/pseudo-labels/labels --data runs/dense/data \
        --split train [--out benchmarks/results/dense/pseudo_fit_points_s0.json]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks.machine import machine_info
from cqbnet.data.panoptic_format import load_panoptic_json, read_panoptic_png
from cqbnet.engine.data import dataset_paths
from cqbnet.errors import InputError
from cqbnet.evaluation.by_size import SIZE_BINS, SizeFit
from cqbnet.io import write_json


def label_fit(labels_json: Path, data: Path, split: str) -> dict:
    """The per-size table of the labels in ``labels_json`` (a COCO panoptic JSON beside its PNG folder) against
    ``split`` of the scenes in ``data``."""
    gt = load_panoptic_json(*dataset_paths({"root": str(data)}, split, data))
    png_dir = labels_json.with_suffix("")
    if not png_dir.is_dir():
        raise InputError(f"{labels_json}: no PNG folder {png_dir} beside it")
    labels = load_panoptic_json(labels_json, png_dir)
    truth = {r.image_id: r for r in gt.records}
    fit = SizeFit()
    for rec in labels.records:
        g = truth.get(rec.image_id)
        if g is None:
            raise InputError(f"{labels_json}: image {rec.image_id} is not in the {split} split of {data}")
        fit.add(
            read_panoptic_png(gt.png_dir / g.file_name),
            g.segments,
            read_panoptic_png(png_dir / rec.file_name),
            rec.segments,
            gt.categories,
        )
    return {"labels": str(labels_json), "split": split, "images": len(labels.records), "by_size": fit.summary()}


def table(result: dict) -> str:
    cols = ("things", "matched", "best_iou", "coverage", "box_iou", "merged", "segments", "precision")
    lines = ["| size (px) | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name in [*(n for n, _, _ in SIZE_BINS), "all"]:
        row = result["by_size"][name]
        cells = [str(row[c]) if isinstance(row[c], int) else "-" if row[c] is None else f"{row[c]:.3f}" for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", type=Path, required=True, help="a folder with panoptic_pred.json, or the JSON")
    ap.add_argument("--data", type=Path, required=True, help="the scenes (cqbnet data synth)")
    ap.add_argument("--split", default="train")
    ap.add_argument("--out", type=Path, help="write the table as JSON here")
    args = ap.parse_args()
    path = args.labels / "panoptic_pred.json" if args.labels.is_dir() else args.labels
    result = label_fit(path, args.data, args.split)
    print(table(result))
    if args.out:
        write_json(args.out, {"machine": machine_info(), **result}, indent=2)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    try:
        main()
    except InputError as e:
        raise SystemExit(f"error: {e}") from None
