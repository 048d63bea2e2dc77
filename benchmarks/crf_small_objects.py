"""Does the dense CRF erase small objects? The CRF that refines the click recipe's pseudo labels
(:func:`cqbnet.cues.dense_crf.dense_crf`) runs on the image average-pooled until it has at most
``CRF_MAX_PIXELS`` pixels, so on a 256 px image it sees 4 x 4 px cells and on a COCO image 9 x 9 px cells: an
object of a few pixels is one cell or less there.

No network is trained, so the CRF alone is measured: each image's true segments are given as a perfect point branch
would give them (the one-hot map of every segment at stride 4, upsampled bilinearly to the image as the branch's
logits are), and its things are scored against the truth per object size (:mod:`cqbnet.evaluation.by_size`)
before the CRF, after it at the recipe's pixel limit, and after it at larger limits. Usage::

    python -m benchmarks.crf_small_objects --preset dense --images 40 [--limits 4096 16384] [--commit]

With ``--checkpoint`` (a network trained with paper 003's point branch) and ``--manifest`` (its clicked labels) the
maps are the branch's own on the manifest's first ``--images`` point images of ``--data``, as ``cqbnet fit``'s
``pseudo-labels/`` stage makes them: without the CRF, with it, and with it and ``--keep``; each also scored by PQ
against the truth. Usage::

    python -m benchmarks.crf_small_objects --name realistic-P1-branch --checkpoint RUN/model_final.pth \
        --manifest RUN/labels/manifest.json --data DATA --images 300 --keep 0.5 [--commit]

Results: ``benchmarks/results/crf_small_objects_<preset or name>.json`` and ``benchmarks/crf_small_objects.md``.
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
from cqbnet.data.transforms import to_image_bytes
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


def measure_branch(checkpoint: Path, manifest: Path, data: Path, images: int, keep: float | None) -> dict[str, Any]:
    """The per-size fit and PQ of a trained point branch's pseudo labels (:func:`cqbnet.weak.fdd_points.branch_logits`)
    of the first ``images`` point images of ``manifest``: without the CRF, with it, and with it and ``keep``."""
    from cqbnet.engine.inference import to_segment_infos
    from cqbnet.engine.trainer import load_model
    from cqbnet.evaluation.panoptic_quality import PanopticQuality
    from cqbnet.labels.dataset import MixedLabelDataset
    from cqbnet.weak.fdd_points import branch_logits, pseudo_output

    gt = load_panoptic_json(*dataset_paths({"root": str(data)}, "train", data))
    records = {r.image_id: r for r in gt.records}
    model, _ = load_model(checkpoint, torch.device("cpu"))
    dataset = MixedLabelDataset(manifest)
    variants = {"branch maps, no CRF": (False, 0.0), f"CRF at {crf_module.CRF_MAX_PIXELS} px": (True, 0.0)}
    if keep is not None:
        variants[f"CRF at {crf_module.CRF_MAX_PIXELS} px, segments shrunk below {keep:g} given back"] = (True, keep)
    fits = {k: SizeFit() for k in variants}
    pq = {k: PanopticQuality(dataset.categories) for k in variants}
    seconds = dict.fromkeys(variants, 0.0)
    n = 0
    for info, image, target, logits in branch_logits(model, dataset):
        if n == images:
            break
        n += 1
        rec = records[info["id"]]
        ids = gt.read_ids(rec).astype(np.int64)
        img, size = to_image_bytes(image), tuple(image.shape[1:])
        for key, (crf, k) in variants.items():
            t = time.perf_counter()
            out = pseudo_output(model, target, logits, size, img if crf else None, k)
            seconds[key] += time.perf_counter() - t
            fits[key].add(ids, rec.segments, out.ids.astype(np.int64), to_segment_infos(out), gt.categories)
            pq[key].update(ids, rec.segments, out.ids, out.segments, info["id"])
    return {
        "images": n,
        "size": max(max(r.height, r.width) for r in gt.records),
        "checkpoint": str(checkpoint),
        "fits": {k: f.summary() for k, f in fits.items()},
        "pq": {k: {m: 100 * v for m, v in pq[k].compute().summary().items() if m != "images"} for k in variants},
        "crf_seconds_per_image": {k: v / max(1, n) for k, v in seconds.items() if variants[k][0]},
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
        if "pq" in res:
            lines += [f"The pseudo labels of `{res['checkpoint']}` against the truth:", ""]
            lines += ["| labels | PQ | PQ_th | PQ_st |", "|---|---|---|---|"]
            lines += [f"| {k} | {v['pq']:.1f} | {v['pq_th']:.1f} | {v['pq_st']:.1f} |" for k, v in res["pq"].items()]
            lines.append("")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="dense")
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--limits", type=int, nargs="+", default=[crf_module.CRF_MAX_PIXELS, 4 * crf_module.CRF_MAX_PIXELS])
    ap.add_argument("--keep", type=float, help="also the CRF with segments it shrank below this share given back")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "crf_small_objects")
    ap.add_argument("--checkpoint", type=Path, help="a point branch's network: score its pseudo labels instead")
    ap.add_argument("--manifest", type=Path, help="with --checkpoint: the clicked labels it was trained from")
    ap.add_argument("--data", type=Path, help="with --checkpoint: the data root of the manifest's images")
    ap.add_argument("--name", help="the results' name (default: the preset)")
    ap.add_argument("--commit", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.checkpoint is not None:
        if args.manifest is None or args.data is None:
            ap.error("--checkpoint needs --manifest and --data")
        res = measure_branch(args.checkpoint, args.manifest, args.data, args.images, args.keep)
        res["machine"] = machine_info()
    else:
        cfg = scene_config(args.preset)
        data = args.work / args.preset
        if not data.is_dir():
            generate(data, args.images, 0, seed=0, cfg=cfg, num_test=0)
        res = {**measure(data, args.images, args.limits, args.keep), "size": cfg.size, "machine": machine_info()}
    name = args.name or args.preset
    out = ROOT / "benchmarks" / "results" / f"crf_small_objects_{name}.json"
    write_json(out, res, indent=2)
    results = {
        p.stem.removeprefix("crf_small_objects_"): json.loads(p.read_text())
        for p in sorted(out.parent.glob("crf_small_objects_*.json"))
    }
    md = ROOT / "benchmarks" / "crf_small_objects.md"
    with atomic_path(md) as tmp:
        tmp.write_text("\n".join(report(results)) + "\n")
    print("\n".join(report({name: res})))
    if args.commit:
        commit([out, md], f"crf_small_objects: {name}")


if __name__ == "__main__":
    main()
