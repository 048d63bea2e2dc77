"""Why headline v5's box study loses things: its module arm against its baseline, one module at a time.

In headline v5's study B (``benchmarks/headline_v5.md``) the module arm switches on two modules more than its
baseline (Box2Mask and relation reasoning; the baseline keeps Cls2Box and Cls2Pixel). This script trains one
(rho_P, seed) cell of that study on the headline's own data and schedule with four arms, the same panoptic images,
initialisation and data order in each:

* ``baseline``: cls2box+cls2pixel (the pilot's baseline);
* ``box2mask``: the baseline plus Box2Mask;
* ``relation``: the baseline plus relation reasoning;
* ``both``: all four (the pilot's module arm).

Each run is judged by PQ (both inference modes) and by :func:`detector_diagnostics.diagnose` on 300 val scenes:
proposal recall, the share of things detected at IoU >= 0.5, with the right class, confident enough for the merge,
and the mask IoU of their masks beside that of the filled box. Usage::

    python -m benchmarks.box2mask_diagnostics --rho 0.1 --seed 1 [--work runs/headline_v5] [--commit]

Results: ``benchmarks/results/box2mask_diagnostics.json`` and ``benchmarks/box2mask_diagnostics.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from torchvision.ops import roi_align

from benchmarks.commit_results import commit
from benchmarks.detector_diagnostics import diagnose
from benchmarks.machine import machine_info
from cqbnet.cues.pairwise import PAIRWISE_DILATION, PAIRWISE_POOL, lab_similarity, neighbour_offsets, pooled_lab, shift
from cqbnet.data.dataset import PanopticDataset
from cqbnet.data.synthetic import split_paths
from cqbnet.data.transforms import to_tensors
from cqbnet.engine.config import load_config
from cqbnet.io import atomic_path, read_json, write_json
from cqbnet.sweep.protocol import RunSpec
from cqbnet.sweep.runner import execute, shared_data_config
from cqbnet.weak.box2mask import PAIRWISE_THRESHOLD, box_in_roi

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "box2mask_diagnostics.json"
REPORT = Path(__file__).parent / "box2mask_diagnostics.md"
BASE = ("cls2box", "cls2pixel")
ARMS = {
    "baseline": BASE,
    "box2mask": ("box2mask", *BASE),
    "relation": (*BASE, "relation"),
    "both": ("box2mask", *BASE, "relation"),
}
SHOWN = [
    "proposal_recall_iou50",
    "detected",
    "class_accuracy",
    "confident",
    "mask_iou",
    "detection_fill_mask_iou",
    "box_fill_mask_iou",
]


@torch.no_grad()
def pairwise_precision(
    data: Path, images: int = 150, pool: int = PAIRWISE_POOL, dilation: int = PAIRWISE_DILATION, grid: int = 28
) -> dict[str, float]:
    """Are Box2Mask's pairwise targets better than chance? On the RoI grid of each true thing box, as the loss
    samples it: the share of in-box neighbour pairs whose colour similarity passes the threshold, the share of those
    whose true labels (object or not) agree, and the share of all in-box pairs that agree."""
    train = PanopticDataset(*split_paths(data, "train"))
    similar = agree_similar = pairs = agree = 0.0
    for i in range(min(images, len(train))):
        rgb, raw = train[i]
        _, target = to_tensors(rgb, raw)
        keep = target["is_thing"] & ~target["iscrowd"]
        if not keep.any():
            continue
        boxes, masks = target["boxes"][keep].float(), target["masks"][keep].float()
        lab = roi_align(pooled_lab(rgb, pool), [boxes], (grid, grid), 1.0 / pool, 2, True)  # (G, 3, grid, grid)
        sim = lab_similarity(lab, dilation)  # (G, 8, grid, grid)
        truth = roi_align(masks[:, None], [b[None] for b in boxes], (grid, grid), 1.0, 2, True)[:, 0] > 0.5
        inside = box_in_roi(boxes, boxes, grid)
        for k, (dy, dx) in enumerate(neighbour_offsets(dilation)):
            both = inside * shift(inside, dy, dx)
            same = (truth == (shift(truth.float(), dy, dx) > 0.5)).float()
            passed = (sim[:, k] >= PAIRWISE_THRESHOLD).float() * both
            similar += float(passed.sum())
            agree_similar += float((same * passed).sum())
            pairs += float(both.sum())
            agree += float((same * both).sum())
    return {
        "similar_share": similar / max(1.0, pairs),
        "agreement_similar": agree_similar / max(1.0, similar),
        "agreement_all": agree / max(1.0, pairs),
    }


def report(rows: list[dict[str, Any]], cfg_path: Path) -> str:
    """One table row per run: PQ in both modes and the thing branch's diagnostics (percent)."""
    lines = [
        "# Box study of headline v5, one module at a time",
        "",
        f"Produced by `python -m benchmarks.box2mask_diagnostics` from `{cfg_path.relative_to(ROOT)}` (the headline "
        "pilot's schedule and data); rows in `results/box2mask_diagnostics.json`. PQ in percent on the 300 val "
        "scenes; the diagnostics (`benchmarks/detector_diagnostics.py`, 300 val scenes) are shares of the true "
        "things: with a proposal at IoU >= 0.5 (recall), with a detection there (detected), whose best detection "
        "has the right class (class acc.) and a score the merge keeps (confident); mask IoU is that of those "
        "detections' masks with the true masks, detection fill and box fill the IoU of the detected and of the true "
        "box filled.",
        f"Machine: `{json.dumps(machine_info())}`.",
        "",
        "| rho_P | seed | arm | modules | overrides | PQ | PQ_th | PQ_st | argmax PQ_th | recall | detected "
        "| class acc. | confident | mask IoU | detection fill | box fill | minutes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        d = r["diagnostics"]
        lines.append(
            f"| {r['rho_P']:g} | {r['seed']} | {r['arm']} | {'+'.join(r['modules'])} | "
            f"{' '.join(r['overrides']) or '-'} | {r['pq']:.1f} | "
            f"{r['pq_th']:.1f} | {r['pq_st']:.1f} | {r['argmax_pq_th']:.1f} | "
            + " | ".join(f"{100 * d[k]:.1f}" for k in SHOWN)
            + f" | {r['seconds'] / 60:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "synthetic_pilot.yaml")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "headline_v5", help="the headline's data folder")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "box2mask_diagnostics", help="runs (not committed)")
    ap.add_argument("--rho", type=float, default=0.1, help="share of panoptic labels; the rest get boxes")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--commit", action="store_true")
    ap.add_argument("--pairs", action="store_true", help="only score the pairwise targets on the training scenes")
    ap.add_argument("--rediagnose", action="store_true", help="judge the finished runs' checkpoints again")
    ap.add_argument("overrides", nargs="*", help="config overrides, e.g. solver.max_iter=2 (for a trial)")
    args = ap.parse_args()
    cfg = shared_data_config(load_config(args.config, args.overrides), args.work)
    rows = read_json(RESULTS)["runs"] if RESULTS.is_file() else []
    ratio = (("P", args.rho), ("B", round(1 - args.rho, 10)))
    out = args.out.joinpath(*(o.replace("/", "-") for o in args.overrides))  # a run's key does not say its overrides
    if args.pairs:
        print(json.dumps(pairwise_precision(Path(cfg["data"]["root"]))))
        return
    if args.rediagnose:
        for r in rows:
            model = args.out.joinpath(*(o.replace("/", "-") for o in r["overrides"])) / "runs" / r["key"]
            if (model / "model_final.pth").is_file():
                r["diagnostics"] = diagnose(model / "model_final.pth", Path(cfg["data"]["root"]), images=300)
        save(rows, args)
        return
    for arm in args.arms:
        spec = RunSpec(ratio, ARMS[arm], args.seed)
        if any(r["key"] == spec.key and r["overrides"] == args.overrides for r in rows):
            continue
        res = execute(spec, cfg, out)
        diag = diagnose(out / "runs" / spec.key / "model_final.pth", Path(cfg["data"]["root"]), images=300)
        rows.append(
            {
                "key": spec.key,
                "rho_P": args.rho,
                "seed": args.seed,
                "arm": arm,
                "modules": list(spec.modules),
                "overrides": args.overrides,
                **{k: res[k] for k in ("pq", "pq_th", "pq_st", "seconds")},
                "argmax_pq_th": res["modes"]["argmax"]["pq_th"],
                "diagnostics": diag,
            }
        )
        print(f"{arm}: PQ_th {res['pq_th']:.1f} PQ_st {res['pq_st']:.1f} {diag}", flush=True)
        save(rows, args)
        if args.commit:
            commit([RESULTS, REPORT], f"box2mask diagnostics: {arm} {spec.key}")


def save(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    write_json(RESULTS, {"machine": machine_info(), "config": args.config.name, "runs": rows}, indent=2)
    with atomic_path(REPORT) as tmp:
        Path(tmp).write_text(report(rows, args.config))


if __name__ == "__main__":
    main()
