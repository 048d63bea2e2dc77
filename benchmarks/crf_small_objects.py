"""Does the dense CRF erase small objects? The CRF that refines the click recipe's pseudo labels
(:func:`cqbnet.cues.dense_crf.dense_crf`) runs on the image average-pooled until it has at most
``CRF_MAX_PIXELS`` pixels, so on a 256 px image it sees 4 x 4 px cells and on a COCO image 9 x 9 px cells: an
object of a few pixels is one cell or less there.

No network is trained, so the CRF alone is measured: each image's true segments are given as a perfect point branch
would give them (the one-hot map of every segment at stride 4, upsampled bilinearly to the image as the branch's
logits are), and its things are scored against the truth per object size (:mod:`cqbnet.evaluation.by_size`)
before the CRF, after it at the recipe's pixel limit, and after it at larger limits. Usage::

    python -m benchmarks.crf_small_objects --preset dense --images 40 [--limits 4096 16384] [--commit]

Results: ``benchmarks/results/crf_small_objects_<preset>.json`` and ``benchmarks/crf_small_objects.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.commit_results import commit
from benchmarks.machine import machine_info
from cqbnet.cues import dense_crf as crf_module
from cqbnet.data.dataset import read_image_of
from cqbnet.data.panoptic_format import SegmentInfo, load_panoptic_json
from cqbnet.data.synthetic import generate, scene_config
from cqbnet.engine.data import dataset_paths
from cqbnet.evaluation.by_size import SIZE_BINS, SizeFit
from cqbnet.io import atomic_path, write_json

ROOT = Path(__file__).resolve().parents[1]
STRIDE = 4  # the point branch's masks are read from stride-4 features (cqbnet.weak.fdd_points.MASK_STRIDE)


def stride_maps(ids: np.ndarray, segment_ids: list[int]) -> torch.Tensor:
    """(K, H, W) the segments' one-hot maps averaged over stride-4 cells and upsampled bilinearly to the image: a
    perfect point branch's softmax."""
    h, w = ids.shape
    onehot = torch.from_numpy(np.stack([ids == s for s in segment_ids]).astype(np.float32))
    coarse = F.avg_pool2d(onehot[None], STRIDE, ceil_mode=True)
    up = F.interpolate(coarse, scale_factor=STRIDE, mode="bilinear", align_corners=False)[0, :, :h, :w]
    return up / up.sum(0, keepdim=True).clamp(min=1e-6)


def as_labels(probs: torch.Tensor, segments: list[SegmentInfo]) -> tuple[np.ndarray, list[SegmentInfo]]:
    """The argmax of ``probs`` as a panoptic map with the segments' own ids and classes."""
    index = probs.argmax(0).numpy()
    ids = np.asarray([s.id for s in segments])[index]
    present = set(np.unique(ids).tolist())
    return ids, [s for s in segments if s.id in present]


def measure(data: Path, images: int, limits: list[int], keep: float | None = None) -> dict[str, Any]:
    """The per-size fit of the stride-4 maps and of their CRF at each pixel limit, on the first ``images`` training
    scenes, with the CRF's seconds per image; with ``keep``, also the CRF at the recipe's limit with every segment
    it shrank below that share of its area given back (:func:`cqbnet.cues.dense_crf.keep_shrunk_segments`)."""
    gt = load_panoptic_json(*dataset_paths({"root": str(data)}, "train", data))
    fits = {"stride-4 maps, no CRF": SizeFit(), **{f"CRF at {n} px": SizeFit() for n in limits}}
    guarded = f"CRF at {limits[0]} px, segments shrunk below {keep:g} given back" if keep is not None else None
    if guarded:
        fits[guarded] = SizeFit()
    seconds = {f"CRF at {n} px": 0.0 for n in limits}
    for rec in gt.records[:images]:
        ids = gt.read_ids(rec).astype(np.int64)
        image = read_image_of(gt.image_path(rec), rec.image_id, rec.height, rec.width, "scenes")
        segs = [s for s in rec.segments if (ids == s.id).any()]
        probs = stride_maps(ids, [s.id for s in segs])
        fits["stride-4 maps, no CRF"].add(ids, rec.segments, *as_labels(probs, segs), gt.categories)
        for n in limits:
            key = f"CRF at {n} px"
            crf_module.CRF_MAX_PIXELS = n
            t = time.perf_counter()
            refined = crf_module.dense_crf(probs, image)
            seconds[key] += time.perf_counter() - t
            fits[key].add(ids, rec.segments, *as_labels(refined, segs), gt.categories)
            if guarded and n == limits[0]:
                kept = crf_module.keep_shrunk_segments(probs, refined, keep)
                fits[guarded].add(ids, rec.segments, *as_labels(kept, segs), gt.categories)
    return {
        "images": images,
        "fits": {k: f.summary() for k, f in fits.items()},
        "crf_seconds_per_image": {k: v / images for k, v in seconds.items()},
    }


def report(results: dict[str, Any]) -> list[str]:
    """The markdown table of every preset measured."""
    lines = [
        "# Does the dense CRF erase small objects?",
        "",
        "Produced by `python -m benchmarks.crf_small_objects`; results in "
        "`benchmarks/results/crf_small_objects_*.json`. A perfect point branch's stride-4 maps of each training "
        "scene's true segments, scored before and after "
        "the dense CRF (the recipe pools the image to at most 4096 px before the CRF) against the truth: the share "
        "of things matched (IoU > 0.5) per object area in pixels, and the share merged with a touching thing.",
        "",
    ]
    for preset, res in results.items():
        lines += [f"## {preset} ({res['images']} images, {res['size']} px)", "", f"Machine: `{res['machine']}`.", ""]
        bins = [name for name, _, _ in SIZE_BINS] + ["all"]
        lines.append("| labels | " + " | ".join(f"matched {b}" for b in bins) + " | merged all | CRF s / image |")
        lines.append("|---|" + "---|" * (len(bins) + 2))
        for key, fit in res["fits"].items():
            cells = [f"{100 * fit[b]['matched']:.1f} ({fit[b]['things']})" if fit[b]["things"] else "-" for b in bins]
            sec = res["crf_seconds_per_image"].get(key)
            merged = f"{100 * fit['all']['merged']:.1f}"
            lines.append(f"| {key} | " + " | ".join(cells) + f" | {merged} | {'-' if sec is None else f'{sec:.2f}'} |")
        lines.append("")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="dense")
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--limits", type=int, nargs="+", default=[crf_module.CRF_MAX_PIXELS, 4 * crf_module.CRF_MAX_PIXELS])
    ap.add_argument("--keep", type=float, help="also the CRF with segments it shrank below this share given back")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "crf_small_objects")
    ap.add_argument("--commit", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = scene_config(args.preset)
    data = args.work / args.preset
    if not data.is_dir():
        generate(data, args.images, 0, seed=0, cfg=cfg, num_test=0)
    res = {**measure(data, args.images, args.limits, args.keep), "size": cfg.size, "machine": machine_info()}
    out = ROOT / "benchmarks" / "results" / f"crf_small_objects_{args.preset}.json"
    write_json(out, res, indent=2)
    results = {
        p.stem.removeprefix("crf_small_objects_"): json.loads(p.read_text())
        for p in sorted(out.parent.glob("crf_small_objects_*.json"))
    }
    md = ROOT / "benchmarks" / "crf_small_objects.md"
    with atomic_path(md) as tmp:
        tmp.write_text("\n".join(report(results)) + "\n")
    print("\n".join(report({args.preset: res})))
    if args.commit:
        commit([out, md], f"crf_small_objects: {args.preset}")


if __name__ == "__main__":
    main()
