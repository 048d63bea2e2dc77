"""Paper 001 (Li, Arnab and Torr) on the synthetic scenes: boxes for things and tags for stuff, approximate ground
truth, refinement rounds.

Per seed, every step resumable (a finished step's output is kept, an interrupted training resumes):

1. every training image labelled with boxes and tags (``B+I=1``, the seed's simulation);
2. paper 001's recipe (``cqbnet.recipes.boxes_tags_001``, what ``cqbnet boxes-tags`` runs): a tag classifier trained
   on the images' tags alone (the pilot's schedule) for the CAMs, probed (``probe_classifier``), round 0 of the
   approximate labels, the recipe's network trained on round r and round r + 1 refined from it, for ``--rounds``
   rounds; every round's labels scored against the hidden ground truth and every network evaluated on val;
3. full supervision at the same schedule and seed, for the fractions.

Ablations (round 0 only, one run each): ``--cues grabcut proposal box`` (``box``: every box pixel its class, no
ignore). Variant: ``--fills predicted``, the refinement rounds again from the same round 0 and network with rule 5
filling only the predicted pixels of a sparsely covered box (arms ``fill-predicted_round<r>``, every main seed).
Variant: ``--box-background``, the recipe again from a round 0 that marks the box background for the mask head,
refined with the first of ``--fills`` (arms ``box-background_round0``, ``box-background_fill-predicted_round<r>``),
each paired against the same arm without it. Every trained network's thing segments are also measured against
the truth on val (``thing_fit``: do they spill over their objects?).
Usage::

    python -m benchmarks.boxes_tags --seeds 0 1 --rounds 1 [--cues grabcut proposal box] [--fills predicted] \
        [--box-background] [--commit]
    # the committed results (the fill variant is the recipe's default and the summary's headline):
    python -m benchmarks.boxes_tags --seeds 0 1 --rounds 1 --fills predicted --fill-rounds 5 --box-background \
        --background-seeds 0 --background-rounds 1 --cues grabcut proposal box
    python -m benchmarks.boxes_tags --probe runs/boxes_tags/s0/classifier/model_final.pth   # one classifier's CAMs

Results: ``benchmarks/results/boxes_tags/runs.json``, ``summary.json`` and ``benchmarks/boxes_tags.md``.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.commit_results import commit
from benchmarks.machine import machine_info
from benchmarks.recipe_arms import versus_full
from cqbnet.data.panoptic_format import load_panoptic_json
from cqbnet.engine.config import load_config
from cqbnet.engine.data import dataset_paths, load_split
from cqbnet.engine.inference import evaluate_model
from cqbnet.engine.trainer import load_model
from cqbnet.evaluation.statistics import paired_rows, ratio_of_means
from cqbnet.io import atomic_path, read_json, write_json
from cqbnet.labels.simulate import parse_ratio, simulate
from cqbnet.recipes.boxes_tags_001 import network_config, run_boxes_tags, trained
from cqbnet.recipes.prepare import default_workers
from cqbnet.sweep.runner import shared_data_config
from cqbnet.weak.approx_ground_truth import DEFAULT_FILL  # the recipe's fill rule: the summary's headline

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "boxes_tags"
REPORT = Path(__file__).parent / "boxes_tags.md"
RECIPE = ROOT / "configs" / "synthetic_full.yaml"
CAM_CONFIG = ROOT / "configs" / "synthetic_pilot.yaml"
TARGETS = {"fraction_of_full": 0.88, "stuff_fraction_of_full": 0.83}  # issue 20 (paper 001: 85.6%, 83.0%)


def evaluated(cfg: dict[str, Any], out: Path, split: str = "val") -> dict[str, float]:
    """PQ (percent) on ``split`` of a trained run, argmax inference; cached in ``out/<split>.json``."""
    if (out / f"{split}.json").is_file():
        return read_json(out / f"{split}.json")
    model, _ = load_model(trained(cfg, out), torch.device("cpu"))
    images = load_split(cfg["data"], split, out)
    r = evaluate_model(model, images, torch.device("cpu"), "argmax")
    res = {k: (100 * v if k != "images" else v) for k, v in r.summary().items()}
    write_json(out / f"{split}.json", res, indent=2)
    return res


def truth_classes(gt, record) -> np.ndarray:
    """(H, W) category ids of a ground-truth record's panoptic map (0 on void)."""
    from cqbnet.weak.approx_ground_truth import paint_classes

    return paint_classes(gt.read_ids(record, validate=False), [(s.id, s.category_id) for s in record.segments], 0)


def probe_classifier(checkpoint: Path, manifest: Path, gt, images: int = 200) -> dict[str, Any]:
    """How well a network's CAM classifier knows the stuff, on the first ``images`` boxes-and-tags training images:
    the ROC AUC of its image scores for each stuff class against the tags; on the true stuff pixels of tagged stuff
    classes, the share where the tagged stuff class with the highest CAM is the true one; and paper 001's stuff cue
    (:func:`stuff_cues`) scored off the things (precision of its labelled pixels and coverage of the stuff pixels,
    percent)."""
    from cqbnet.data.dataset import read_image_of
    from cqbnet.labels.manifest import load_manifest
    from cqbnet.weak.approx_ground_truth import IGNORE, stuff_cams, stuff_cues

    model, _ = load_model(checkpoint, torch.device("cpu"))
    m = load_manifest(manifest)
    cats = m.categories
    order = list(cats)
    stuff = [c for c in order if not cats[c].isthing]
    records = {r.image_id: r for r in gt.records}
    scores, tags = [], []
    right = on = picked = labelled = there = 0
    for lab in m.images[:images]:
        image = read_image_of(m.image_root / lab.file_name, lab.image_id, lab.height, lab.width, "manifest")
        truth = truth_classes(gt, records[lab.image_id])
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(255.0)
        with torch.no_grad():
            logits, _ = model.cls2pixel.cam_head(model.features([x]).sem_features)
        scores.append(logits[0, [order.index(c) for c in stuff]].numpy())
        tags.append([c in lab.tags for c in stuff])
        tagged = [c for c in lab.tags if c in stuff]
        if not tagged:
            continue
        cams = stuff_cams(model, image, torch.device("cpu"))[[order.index(c) for c in tagged]]
        is_stuff = np.isin(truth, tagged)
        right += int((np.asarray(tagged)[cams.argmax(0)] == truth)[is_stuff].sum())
        on += int(is_stuff.sum())
        cue = stuff_cues(cams, tagged)
        scored = (cue != IGNORE) & np.isin(truth, stuff)  # off the things and void, as the recipe's boxes keep it
        picked += int((cue == truth)[scored].sum())
        labelled += int(scored.sum())
        there += int(np.isin(truth, stuff).sum())
    s, t = np.array(scores), np.array(tags, dtype=bool)
    auc = {}
    for k, c in enumerate(stuff):
        pos, neg = s[t[:, k], k], s[~t[:, k], k]
        if len(pos) and len(neg):
            auc[str(c)] = float((pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean())
    return {
        "images": min(images, len(m.images)),
        "stuff_tag_auc": auc,
        "cam_argmax_accuracy": 100 * right / max(on, 1),
        "cue_precision_st": 100 * picked / max(labelled, 1),
        "cue_coverage_st": 100 * picked / max(there, 1),
    }


def matched_things(ids: np.ndarray, segments: list[dict], record, truth: np.ndarray, cats):
    """Each non-crowd true thing of ``record`` (``truth``: its id map) with the predicted segment of its class
    (``ids``, ``segments``: a panoptic prediction) that overlaps it best, when their IoU exceeds 0.5 (PQ's match):
    (segment, (H, W) truth mask, (H, W) predicted mask or None)."""
    for seg in record.segments:
        if not cats[seg.category_id].isthing or seg.iscrowd:
            continue
        g = truth == seg.id
        best, pick = 0.5, None
        for p in segments:
            if p["category_id"] == seg.category_id:
                m = ids == p["id"]
                iou = int((m & g).sum()) / int((m | g).sum())
                if iou > best:
                    best, pick = iou, m
        yield seg, g, pick


def thing_fit(checkpoint: Path, val, images: int = 100) -> dict[str, float]:
    """How a network's thing segments miss on the first ``images`` val scenes: each true thing's best predicted
    segment of its class, counted when their IoU exceeds 0.5 (PQ's match); over those, the share of the predicted
    pixels that are the thing (precision), of the thing's pixels predicted (recall), and the mean area ratio
    predicted / true. Low precision with high recall: the masks spill over the objects."""
    from cqbnet.engine.inference import predict_images

    model, _ = load_model(checkpoint, torch.device("cpu"))
    cats = val.categories
    n = min(images, len(val))
    inter = pred_area = true_area = matched = total = 0
    ratios = []
    outs = predict_images(model, (val.load_image(i) for i in range(n)), torch.device("cpu"))
    for i, out in enumerate(outs):
        rec = val.set.records[i]
        truth = val.set.read_ids(rec, validate=False)
        for _, g, pick in matched_things(out.ids, out.segments, rec, truth, cats):
            total += 1
            if pick is not None:
                matched += 1
                inter += int((pick & g).sum())
                pred_area, true_area = pred_area + int(pick.sum()), true_area + int(g.sum())
                ratios.append(int(pick.sum()) / int(g.sum()))
    return {
        "things": total,
        "matched_share": 100 * matched / max(total, 1),
        "precision": 100 * inter / max(pred_area, 1),
        "recall": 100 * inter / max(true_area, 1),
        "area_ratio": float(np.mean(ratios)) if ratios else float("nan"),
    }


def spill_source(checkpoint: Path, val, images: int = 100) -> dict[str, float]:
    """Where a network's thing segments spill (first ``images`` val scenes; the segments ``thing_fit`` matches):
    over the spilled pixels (predicted the thing, truly not) and, beside them, the thing's own pixels, the share
    where the semantic head's argmax is the thing's class (V of paper 004's potential) and where the mask of the
    segment's detection (the same-class detection whose mask > 0.5 fits the segment best) exceeds 0.5 (M)."""
    from cqbnet.modeling.panoptic_head import paste_masks

    model, _ = load_model(checkpoint, torch.device("cpu"))
    model.eval()
    cats = val.categories
    order = list(cats)
    count = {k: 0 for k in ("spill", "spill_sem", "spill_mask", "inside", "inside_sem", "inside_mask")}
    for i in range(min(images, len(val))):
        img = val.load_image(i)
        h, w = img.shape[:2]
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div(255.0)
        with torch.no_grad():
            found = model.detect([x])
            out = model.panoptic_stage(found)[0]
            sem = torch.nn.functional.interpolate(found.sem_logits, scale_factor=4, mode="bilinear")[0, :, :h, :w]
            sem_cls = np.asarray(order)[sem[: len(order)].argmax(0).numpy()]
            det = found.dets[0]
            masks = paste_masks(det["mask_probs"], det["boxes"], h, w, 1.0).numpy() > 0.5  # (D, H, W)
            det_cls = np.asarray(order)[model.panoptic_head._thing_semantic[det["labels"] - 1].numpy()]
        rec = val.set.records[i]
        truth = val.set.read_ids(rec, validate=False)
        for seg, g, pick in matched_things(out.ids, out.segments, rec, truth, cats):
            if pick is None:
                continue
            fits = [
                int((mk & pick).sum()) / int((mk | pick).sum()) if c == seg.category_id else -1.0
                for mk, c in zip(masks, det_cls)
            ]
            mask = masks[int(np.argmax(fits))] if fits and max(fits) > 0 else np.zeros_like(pick)
            for name, where in (("spill", pick & ~g), ("inside", pick & g)):
                count[name] += int(where.sum())
                count[f"{name}_sem"] += int((where & (sem_cls == seg.category_id)).sum())
                count[f"{name}_mask"] += int((where & mask).sum())
    return {
        "spill_pixels": count["spill"],
        "spill_semantic_thing": 100 * count["spill_sem"] / max(count["spill"], 1),
        "spill_mask_on": 100 * count["spill_mask"] / max(count["spill"], 1),
        "inside_semantic_thing": 100 * count["inside_sem"] / max(count["inside"], 1),
        "inside_mask_on": 100 * count["inside_mask"] / max(count["inside"], 1),
    }


def cue_errors(first: Path, manifest: Path, gt, images: int = 500, marked: Path | None = None) -> dict[str, Any]:
    """Where round 0's thing pixels are wrong (first ``images`` training images): the wrong pixels by distance to
    the nearest true thing pixel (0: on a thing of another class; 5: five or more), and the thing labels'
    precision, and share of their right pixels kept, after eroding each instance by 1 and 2 pixels. With
    ``marked`` (a round 0 with the box background), the box background's share of the pixels and, over its
    pixels in each box holding them, the share that truly is the box's class."""
    from scipy import ndimage

    from cqbnet.labels.manifest import load_manifest
    from cqbnet.labels.rounds import ApproximateRound, box_pixels

    r0, labels = ApproximateRound.load(first), load_manifest(manifest)
    records = {r.image_id: r for r in gt.records}
    things = [c for c, k in gt.categories.items() if k.isthing]
    by_distance = np.zeros(6, dtype=np.int64)
    right = wrong = 0
    eroded = {1: [0, 0], 2: [0, 0]}  # pixels right, pixels kept
    background = ApproximateRound.load(marked) if marked is not None else None
    bg_pixels = bg_in_boxes = bg_of_class = total = 0
    for lab in labels.images[:images]:
        ids, rows, _ = r0.read(lab.image_id)
        truth = truth_classes(gt, records[lab.image_id])
        distance = ndimage.distance_transform_edt(~np.isin(truth, things))
        total += truth.size
        if background is not None:
            _, _, bg = background.read(lab.image_id)
            bg_pixels += int(bg.sum())
            for b in lab.boxes or []:
                if not b.iscrowd:
                    x1, y1, x2, y2 = box_pixels(
                        (b.bbox[0], b.bbox[1], b.bbox[0] + b.bbox[2], b.bbox[1] + b.bbox[3]), *bg.shape
                    )
                    inside = bg[y1:y2, x1:x2]
                    bg_in_boxes += int(inside.sum())
                    bg_of_class += int((inside & (truth[y1:y2, x1:x2] == b.category_id)).sum())
        for sid, cid, box in rows:
            if box < 0:
                continue
            m = ids == sid
            bad = m & (truth != cid)
            right, wrong = right + int((m & (truth == cid)).sum()), wrong + int(bad.sum())
            by_distance += np.bincount(np.clip(np.ceil(distance[bad]).astype(int), 0, 5), minlength=6)
            for k in eroded:
                kept = ndimage.binary_erosion(m, iterations=k)
                eroded[k][0] += int((kept & (truth == cid)).sum())
                eroded[k][1] += int(kept.sum())
    out = (
        {}
        if background is None
        else {
            "box_background_share": 100 * bg_pixels / max(total, 1),
            "box_background_of_box_class": 100 * bg_of_class / max(bg_in_boxes, 1),
        }
    )
    return {
        **out,
        "images": min(images, len(labels.images)),
        "precision_th": 100 * right / max(right + wrong, 1),
        "wrong_by_distance": (100 * by_distance / max(by_distance.sum(), 1)).round(1).tolist(),
        "eroded": {
            k: {"precision_th": 100 * a / max(b, 1), "right_kept": 100 * a / max(right, 1)}
            for k, (a, b) in eroded.items()
        },
    }


def cue_veto(checkpoint: Path, first: Path, manifest: Path, gt, images: int = 200) -> dict[str, Any]:
    """Could a trained network veto round 0's wrong thing pixels? Over the first ``images`` training images, its
    semantic probabilities refined by the dense CRF, as the refinement makes them; per confidence threshold, the
    share of the wrong and of the right cue thing pixels it predicts as another class at that confidence, and the
    precision of the cue thing pixels it would leave."""
    from cqbnet.data.dataset import read_image_of
    from cqbnet.labels.manifest import load_manifest
    from cqbnet.labels.rounds import ApproximateRound
    from cqbnet.weak.approx_ground_truth import class_map, refined_probabilities

    r0, labels = ApproximateRound.load(first), load_manifest(manifest)
    records = {r.image_id: r for r in gt.records}
    model, _ = load_model(checkpoint, torch.device("cpu"))
    model.eval()
    order = list(labels.categories)
    things = [c for c, k in labels.categories.items() if k.isthing]
    counts = {t: np.zeros((2, 2), dtype=np.int64) for t in (0.5, 0.9, 0.99)}  # [cue right][vetoed]
    for lab in labels.images[:images]:
        image = read_image_of(labels.image_root / lab.file_name, lab.image_id, lab.height, lab.width, "manifest")
        q = refined_probabilities(model, image, len(order), torch.device("cpu"))
        pred, score = np.asarray(order)[q.argmax(0)], q.max(0)
        cue = class_map(r0, lab.image_id)
        is_cue = np.isin(cue, things)
        right = cue == truth_classes(gt, records[lab.image_id])
        for t, c in counts.items():
            veto = is_cue & (pred != cue) & (score >= t)
            for r in (0, 1):
                for v in (0, 1):
                    c[r, v] += int((is_cue & (right == bool(r)) & (veto == bool(v))).sum())
    out = {"images": min(images, len(labels.images)), "checkpoint": str(checkpoint)}
    for t, c in counts.items():
        out[str(t)] = {
            "wrong_vetoed": 100 * c[0, 1] / max(c[0].sum(), 1),
            "right_vetoed": 100 * c[1, 1] / max(c[1].sum(), 1),
            "precision_before": 100 * c[1].sum() / max(c.sum(), 1),
            "precision_after": 100 * c[1, 0] / max(c[:, 0].sum(), 1),
        }
    return out


def added_things(first: Path, later: Path, gt) -> dict[str, float]:
    """The thing pixels a refinement round labels that round 0 did not (the released code's low-coverage fill is
    the only rule that adds any): their number, their share of the round's thing pixels and their precision
    against the hidden ground truth (percent), beside the precision of the thing pixels both rounds label."""
    from cqbnet.labels.rounds import ApproximateRound
    from cqbnet.weak.approx_ground_truth import class_map

    r0, r1 = ApproximateRound.load(first), ApproximateRound.load(later)
    records = {r.image_id: r for r in gt.records}
    things = [c for c, k in gt.categories.items() if k.isthing]
    kept = kept_right = new = new_right = 0
    for image_id in r1.images:
        truth = truth_classes(gt, records[int(image_id)])
        before, after = class_map(r0, image_id), class_map(r1, image_id)
        now, was = np.isin(after, things), np.isin(before, things)
        both, added = now & was, now & ~was
        kept, kept_right = kept + int(both.sum()), kept_right + int((both & (after == truth)).sum())
        new, new_right = new + int(added.sum()), new_right + int((added & (after == truth)).sum())
    return {
        "added_pixels": new,
        "added_share": 100 * new / max(new + kept, 1),
        "added_precision": 100 * new_right / max(new, 1),
        "kept_precision": 100 * kept_right / max(kept, 1),
    }


def run_seed(
    seed: int,
    rounds: int,
    cue: str,
    overrides: list[str],
    work: Path,
    fill: str = "box",
    box_background: bool = False,
    split: str = "val",
) -> list[dict[str, Any]]:
    """One seed's rows, evaluated on ``split``: with ``cue`` ``both`` (paper 001) full supervision, the recipe's
    rounds and the classifier's probe; with another cue, that ablation's round 0; with another ``fill`` rule, its
    refinement rounds only; with ``box_background``, its own round 0 and refinement rounds."""
    recipe = shared_data_config(load_config(RECIPE, overrides), work)
    recipe["train"]["seed"] = seed
    recipe = network_config(recipe)  # paper 000's modules off, as cqbnet boxes-tags trains
    cam_cfg = shared_data_config(load_config(CAM_CONFIG, overrides), work)
    cam_cfg["train"]["seed"] = seed
    gt = load_panoptic_json(*dataset_paths(recipe["data"], "train", work))
    base = work / f"s{seed}"
    manifest = base / "labels" / "manifest.json"
    if not manifest.is_file():
        simulate(gt, parse_ratio("B+I=1"), base / "labels", seed=seed)
    headline = cue == "both" and fill == "box" and not box_background
    full = {"seed": seed, "arm": "full", "split": split, **evaluated(copy.deepcopy(recipe), base / "full", split)}
    rows = [full] if headline else []
    steps = run_boxes_tags(
        recipe,
        cam_cfg,
        manifest,
        base,
        rounds if cue == "both" else 0,
        cue,
        "cpu",
        gt,
        fill,
        box_background,
        default_workers(),  # round 0's thing cues on every core (the labels do not depend on it)
    )
    for entry in steps:
        if fill != "box" and entry["round"] == 0 and not box_background:
            continue  # round 0 is the main arm's
        cfg = copy.deepcopy(recipe)
        cfg["data"]["manifest"], cfg["data"]["pseudo_labels"] = str(manifest), str(entry["labels"])
        name = f"{cue if fill == 'box' or entry['round'] == 0 else 'fill-' + fill}_round{entry['round']}"
        if box_background:
            name = "box-background_" + name.removeprefix("both_")
        row = {
            "seed": seed,
            "arm": name,
            "split": split,
            "labels": entry["score"],
            **evaluated(cfg, entry["run"], split),
        }
        fit = Path(entry["run"]) / "thing_fit.json"
        if not fit.is_file():
            write_json(fit, thing_fit(entry["checkpoint"], load_split(recipe["data"], "val", work)), indent=2)
        row["thing_fit"] = read_json(fit)
        if entry["round"] > 0:
            cached = Path(entry["labels"]) / "added_things.json"
            if not cached.is_file():
                write_json(cached, added_things(base / "round0", Path(entry["labels"]), gt), indent=2)
            row["added_things"] = read_json(cached)
        rows.append(row)
    if headline:
        probe = base / "classifier" / "probe.json"
        if not probe.is_file():
            write_json(probe, probe_classifier(base / "classifier" / "model_final.pth", manifest, gt), indent=2)
        rows[1]["classifier"] = read_json(probe)
    return rows


def round_of(arm: str) -> int:
    return int(arm.rsplit("round", 1)[1])


def compute_of(arm: str, overrides: list[str]) -> dict[str, int]:
    """The networks an arm trains and their total iterations: full supervision one recipe network; a round r the
    tag classifier and r + 1 recipe networks (round 0's, then one per refinement round, each trained afresh)."""
    net = int(load_config(RECIPE, overrides)["solver"]["max_iter"])
    cam = int(load_config(CAM_CONFIG, overrides)["solver"]["max_iter"])
    if arm == "full":
        return {"networks": 1, "iterations": net}
    r = round_of(arm)
    return {"networks": r + 2, "iterations": cam + (r + 1) * net}


def methods(by: dict[str, list[dict]], overrides: list[str]) -> dict[str, dict[str, Any]]:
    """One entry per arm: seeds, mean PQ, compute, and PQ over full supervision's with a paired delta-method t
    interval over seeds (full trained for the same total iterations has not been measured here: null)."""
    full = {r["seed"]: r["pq"] for r in by.get("full", [])}
    out = {}
    for arm, rs in by.items():
        if arm != "full" and "_round" not in arm:
            continue
        pq = {r["seed"]: r["pq"] for r in rs}
        e = ratio_of_means(pq, full) if set(pq) & set(full) else None
        out[arm] = {
            "seeds": sorted(pq),
            "pq": float(np.mean(list(pq.values()))),
            **compute_of(arm, overrides),
            "fraction_of_full": None if e is None else e.estimate,
            "fraction_of_full_interval": None if e is None or e.interval is None else list(e.interval),
            "fraction_of_full_same_iterations": None,
        }
    return out


def summary(rows: list[dict[str, Any]], overrides: list[str] | None = None) -> dict[str, Any]:
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["arm"], []).append(r)
    mean = {a: {k: float(np.mean([r[k] for r in rs])) for k in ("pq", "pq_th", "pq_st")} for a, rs in by.items()}
    out: dict[str, Any] = {"machine": machine_info(), "mean": mean}
    full_pq = mean.get("full", {}).get("pq", 0.0)
    # each method keeps its key: the plain keys are paper 001's released rule (what they were first asked for), the
    # ``predicted_fill_`` ones the toolkit's predicted-pixels fill; ``recipe`` names the family `cqbnet boxes-tags`
    # runs by default (DEFAULT_FILL)
    out["split"] = "val" if not rows else rows[0].get("split", "val")
    out["recipe"] = {
        "fill": DEFAULT_FILL,
        "keys": "released_rule_" if DEFAULT_FILL == "box" else f"{DEFAULT_FILL}_fill_",
    }
    for family, prefix in (
        ("both_round", ""),
        ("both_round", "released_rule_"),
        ("fill-predicted_round", "predicted_fill_"),
    ):
        refined = sorted((a for a in mean if a.startswith(family)), key=round_of)
        if full_pq > 0 and refined:
            last = refined[-1]
            out[f"{prefix}refined_arm"] = last
            out[f"{prefix}fraction_of_full"] = mean[last]["pq"] / full_pq
            out[f"{prefix}stuff_fraction_of_full"] = mean[last]["pq_st"] / max(mean["full"]["pq_st"], 1e-9)
            out["targets"] = TARGETS
    out["minus_full"] = versus_full(by)
    out["methods"] = methods(by, overrides or [])
    out["compute"] = {a: {k: m[k] for k in ("networks", "iterations")} for a, m in out["methods"].items()}
    # a fill variant against the released rule's round, paired over the seeds both have
    out["fill_gain"] = {}
    for arm in (a for a in by if a.startswith("fill-")):
        gain = paired_rows(by[arm], by.get(f"both_round{round_of(arm)}", []))
        if gain is not None:
            out["fill_gain"][arm] = gain
    # the box background against the same arm without it
    out["background_gain"] = {}
    for arm in (a for a in by if a.startswith("box-background_")):
        without = arm.removeprefix("box-background_")
        gain = paired_rows(by[arm], by.get(without if without in by else f"both_{without}", []))
        if gain is not None:
            out["background_gain"][arm] = {**gain, "without": without if without in by else f"both_{without}"}
    for arm in (a for a in by if a.startswith(("fill-", "box-background_"))):
        if full_pq > 0:
            out.setdefault("variant_fraction_of_full", {})[arm] = {
                "fraction_of_full": mean[arm]["pq"] / full_pq,
                "stuff_fraction_of_full": mean[arm]["pq_st"] / max(mean["full"]["pq_st"], 1e-9),
            }
    # does each refinement round pay? round r minus round r - 1 of the same rule (round 0 is shared)
    out["round_gain"] = {}
    for arm in sorted((a for a in by if "_round" in a and round_of(a) > 0), key=round_of):
        family, r = arm.rsplit("_round", 1)[0], round_of(arm)
        # the same family's round before, else its variant's (box-background), else the main arm's
        prev = next(f"{f}_round{r - 1}" for f in (family, family.split("_")[0], "both") if f"{f}_round{r - 1}" in by)
        gain = paired_rows(by[arm], by.get(prev, []))
        if gain is not None:
            out["round_gain"][arm] = {**gain, "before": prev}
    return out


def full_report(rows: list[dict[str, Any]], summ: dict[str, Any], others: list[dict[str, Any]]) -> str:
    """The report of ``rows`` (the split run now, whose summary is ``summ``), then that of the other split's saved
    runs: the test split's numbers are reported, the val split's are what the choices were made on."""
    text = report(rows, summ)
    if others:
        other = others[0].get("split", "val")
        why = "the numbers the choices were made on" if other == "val" else "the reported numbers"
        text += f"\n## The {other} split: {why}\n\n" + report(others, summary(others), title=False)
    return text


def report(rows: list[dict[str, Any]], summ: dict[str, Any], title: bool = True) -> str:
    split = summ["split"]
    lines = [] if not title else ["# Paper 001: boxes for things, tags for stuff, on the synthetic scenes", ""]
    lines += [
        "Produced by `python -m benchmarks.boxes_tags`; every row one trained network (`results/boxes_tags/`). "
        f"PQ in percent on the scenes' **{split}** split, argmax inference; *labels* columns score the approximate "
        "labels the network was trained on against the hidden ground truth (pixel precision and coverage of things "
        "and stuff, the share of pixels labelled, PQ with ignore as void). Every image carries boxes and tags, so the "
        "boxes and round 0's thing cues are the same in every seed; a seed changes the classifier's and the networks' "
        "initialisation and data order, and so the stuff cues and every later round.",
        f"Machine: `{summ['machine']}`.",
        "",
        "| arm | seed | PQ | PQ_th | PQ_st | SQ_th | labels: prec th / cov th | prec st / cov st | labelled "
        "| labels PQ |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lab = r.get("labels")
        cols = (
            f"{lab['precision_th']:.1f} / {lab['coverage_th']:.1f} | {lab['precision_st']:.1f} / "
            f"{lab['coverage_st']:.1f} | {lab['labelled_share']:.1f}% | {lab['pq']:.1f}"
            if lab
            else "- | - | - | -"
        )
        lines.append(
            f"| {r['arm']} | {r['seed']} | {r['pq']:.1f} | {r['pq_th']:.1f} | {r['pq_st']:.1f} | {r['sq_th']:.1f} | "
            f"{cols} |"
        )
    added = [(r["seed"], r["arm"], r["added_things"]) for r in rows if "added_things" in r]
    if added:
        lines += [
            "",
            "Thing pixels a refinement round labels that round 0 left ignore or stuff (`added_things`; only the "
            "released code's low-coverage fill adds any), against those both rounds label:",
            "",
            "| seed | arm | added: share of the round's thing pixels | precision | kept: precision |",
            "|---|---|---|---|---|",
        ]
        for seed, arm, a in added:
            lines.append(
                f"| {seed} | {arm} | {a['added_share']:.1f}% | {a['added_precision']:.1f} | {a['kept_precision']:.1f} |"
            )
    fits = [(r["seed"], r["arm"], r["thing_fit"]) for r in rows if "thing_fit" in r]
    if fits:
        lines += [
            "",
            "How the networks' thing segments fit the objects (`thing_fit`, first 100 val scenes): each true thing's "
            "best predicted segment of its class, where their IoU exceeds 0.5; pixel precision and recall over those, "
            "and the mean area predicted / true (above 1: the masks spill over the objects).",
            "",
            "| seed | arm | matched | precision | recall | area ratio |",
            "|---|---|---|---|---|---|",
        ]
        for seed, arm, f in sorted(fits, key=lambda x: (x[0], x[1])):
            lines.append(
                f"| {seed} | {arm} | {f['matched_share']:.1f}% | {f['precision']:.1f} | {f['recall']:.1f} | "
                f"{f['area_ratio']:.2f} |"
            )
    probes = [(r["seed"], r["classifier"]) for r in rows if "classifier" in r]
    if probes:
        lines += [
            "",
            "The stuff classifier behind round 0 (`probe_classifier`, first 200 training images): ROC AUC of its image "
            "scores per stuff class against the tags; on true stuff pixels, the share where the highest CAM among the "
            "tagged stuff classes is right; paper 001's stuff cue (50% of each CAM's maximum, smaller region wins) "
            "scored off the things.",
            "",
            "| seed | stuff tag AUC (min / mean) | CAM argmax right | cue precision st | cue coverage st |",
            "|---|---|---|---|---|",
        ]
        for seed, p in probes:
            auc = list(p["stuff_tag_auc"].values())
            lines.append(
                f"| {seed} | {min(auc):.3f} / {np.mean(auc):.3f} | {p['cam_argmax_accuracy']:.1f} | "
                f"{p['cue_precision_st']:.1f} | {p['cue_coverage_st']:.1f} |"
            )
    lines.append("")
    paired = [(f"{a} minus full", d) for a, d in summ.get("minus_full", {}).items()]
    paired += [(f"{a} minus {d['before']}", d) for a, d in summ.get("round_gain", {}).items()]
    paired += [(f"{a} minus both_round{round_of(a)}", d) for a, d in summ.get("fill_gain", {}).items()]
    paired += [(f"{a} minus {d['without']}", d) for a, d in summ.get("background_gain", {}).items()]
    for name, d in paired:
        parts = []
        for m, label in (("pq", "PQ"), ("pq_th", "PQ_th"), ("pq_st", "PQ_st")):
            mean, lo, hi = d[m]
            interval = lo is not None and np.isfinite(lo)  # one seed: no interval (null, or nan in older files)
            parts.append(f"{label} {mean:+.1f}" + (f" [{lo:+.1f}, {hi:+.1f}]" if interval else ""))
        lines.append(f"- {name}, paired over seeds {d['seeds']} (95% t interval): " + "; ".join(parts) + ".")
    for arm, fractions in summ.get("variant_fraction_of_full", {}).items():
        lines.append(
            f"- {arm}: {100 * fractions['fraction_of_full']:.1f}% of full supervision's PQ, stuff "
            f"{100 * fractions['stuff_fraction_of_full']:.1f}% of its PQ_st (targets "
            f"{100 * TARGETS['fraction_of_full']:.0f}% and {100 * TARGETS['stuff_fraction_of_full']:.0f}%)."
        )
    for prefix in ("", "predicted_fill_"):
        for key, target in TARGETS.items():
            if prefix + key in summ:
                f = summ[prefix + key]
                lines.append(
                    f"- {prefix + key} ({summ[prefix + 'refined_arm']}): {100 * f:.1f}% (target {100 * target:.0f}%): "
                    f"{'met' if f >= target else 'MISSED'}."
                )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--rounds", type=int, default=1, help="refinement rounds after round 0")
    ap.add_argument("--cues", nargs="*", default=[], choices=["grabcut", "proposal", "box"], help="ablations")
    ap.add_argument("--fills", nargs="*", default=[], choices=["predicted"], help="refinement variants")
    ap.add_argument("--fill-rounds", type=int, help="refinement rounds of the fill variants (default: --rounds)")
    ap.add_argument("--box-background", action="store_true", help="the box-background variant")
    ap.add_argument("--background-seeds", nargs="*", type=int, help="its seeds (default: the main seeds)")
    ap.add_argument("--background-rounds", type=int, help="its refinement rounds (default: those of its fill)")
    ap.add_argument("--ablation-seeds", nargs="*", type=int, help="seeds of the ablations (default: the first)")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "boxes_tags")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--report", type=Path, default=REPORT)
    ap.add_argument("--commit", action="store_true")
    ap.add_argument("--probe", type=Path, help="only probe this checkpoint's CAM classifier (seed 0's manifest)")
    ap.add_argument("--fit", nargs="+", type=Path, help="only print thing_fit of these checkpoints on val")
    ap.add_argument("--spill", nargs="+", type=Path, help="only print spill_source of these checkpoints on val")
    ap.add_argument("--cue-probe", type=Path, help="only probe round 0's thing errors, and this network's veto")
    ap.add_argument("--report-only", action="store_true", help="rewrite summary and report from runs.json")
    ap.add_argument("--split", choices=("val", "test"), default="test", help="val to choose, test to report")
    ap.add_argument("overrides", nargs="*", help="config overrides for every network, e.g. solver.max_iter=320")
    args = ap.parse_args()
    saved = read_json(args.results / "runs.json")["runs"] if (args.results / "runs.json").is_file() else []
    others = [r for r in saved if r.get("split", "val") != args.split]  # kept: the other split's results
    if args.report_only:
        rows = [r for r in saved if r.get("split", "val") == args.split]
        summ = summary(rows, args.overrides)
        write_json(args.results / "summary.json", summ, indent=2)
        with atomic_path(args.report) as tmp:
            tmp.write_text(full_report(rows, summ, others))
        return
    if args.cue_probe:
        data = shared_data_config(load_config(RECIPE), args.work)["data"]
        gt = load_panoptic_json(*dataset_paths(data, "train", args.work))
        base = args.work / "s0"
        found = {
            "machine": machine_info(),
            "errors": cue_errors(
                base / "round0", base / "labels" / "manifest.json", gt, marked=base / "round0_box-background"
            ),
            "veto": cue_veto(args.cue_probe, base / "round0", base / "labels" / "manifest.json", gt),
        }
        print(found)
        write_json(args.results / "cue_probe.json", found, indent=2)
        return
    if args.spill:
        data = shared_data_config(load_config(RECIPE), args.work)["data"]
        val = load_split(data, "val", args.work)
        found = {}
        for checkpoint in args.spill:
            found[str(checkpoint)] = {k: round(v, 1) for k, v in spill_source(checkpoint, val).items()}
            print(checkpoint, found[str(checkpoint)])
        write_json(args.results / "spill.json", {"machine": machine_info(), "val_images": 100, "runs": found}, indent=2)
        return
    if args.fit:
        data = shared_data_config(load_config(RECIPE), args.work)["data"]
        val = load_split(data, "val", args.work)
        for checkpoint in args.fit:
            print(checkpoint, {k: round(v, 3) for k, v in thing_fit(checkpoint, val).items()})
        return
    if args.probe:
        data = shared_data_config(load_config(RECIPE), args.work)["data"]
        gt = load_panoptic_json(*dataset_paths(data, "train", args.work))
        print(probe_classifier(args.probe, args.work / "s0" / "labels" / "manifest.json", gt))
        return
    rows: list[dict[str, Any]] = []
    ablated = args.seeds[:1] if args.ablation_seeds is None else args.ablation_seeds
    # every seed's main rows first, then the ablations, each step's results committed as it ends
    fill_rounds = args.rounds if args.fill_rounds is None else args.fill_rounds
    steps = [(s, "both", "box", False, args.rounds) for s in args.seeds]
    steps += [(s, "both", f, False, fill_rounds) for f in args.fills for s in args.seeds]
    if args.box_background:
        fill = (args.fills or ["box"])[0]
        rounds = args.background_rounds if args.background_rounds is not None else steps[-1][-1]
        seeds = args.seeds if args.background_seeds is None else args.background_seeds
        steps += [(s, "both", fill, True, rounds) for s in seeds]
    steps += [(s, c, "box", False, 0) for s in ablated for c in args.cues]
    for seed, cue, fill, background, rounds in steps:
        rows += run_seed(seed, rounds, cue, args.overrides, args.work, fill, background, args.split)
        args.results.mkdir(parents=True, exist_ok=True)
        summ = summary(rows, args.overrides)
        write_json(args.results / "runs.json", {"overrides": args.overrides, "runs": others + rows}, indent=2)
        write_json(args.results / "summary.json", summ, indent=2)
        with atomic_path(args.report) as tmp:
            tmp.write_text(full_report(rows, summ, others))
        if args.commit:
            commit(
                [args.results / "runs.json", args.results / "summary.json", args.report],
                "boxes and tags (paper 001): results so far",
            )


if __name__ == "__main__":
    main()
