"""Network benchmark: CPU latency of our network (argmax head vs heuristic merge) against torchvision's Mask R-CNN,
and the peak memory of paper 004's dense instance affinity head as the pixel count grows.

Usage: ``python -m benchmarks.network_speed [--repeat 3]``; writes ``benchmarks/results/network_speed.json``.

Latency: one image, batch 1, ``torch.no_grad``, best of ``--repeat`` after one warm-up, all models in one
process. Our network is the full-scale configuration (ResNet-50-FPN, 256 channels, COCO's 80 thing + 53 stuff
classes) with untrained weights and every score threshold at 0, so each image carries the paper's 100
detections through the head (the worst case). "heuristic" runs the same checkpoint through Panoptic FPN's merge
instead of the affinity head. Mask R-CNN R50-FPN (torchvision, 91 classes, same 100 detections) is the reference.

Memory: each size runs in a fresh process that applies the affinity head (C = 128, 153 channels of Psi) at stride
4; the peak resident set (Linux VmHWM) is reset once the inputs exist, so the growth measured is the head's own
working memory. The explicit HW x HW product is measured beside it where it fits.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks.machine import machine_info

OUT = Path(__file__).parent / "results" / "network_speed.json"
SIZES = [(128, 128), (512, 512), (800, 1333)]


def coco_like_categories():
    from cqbnet.data.panoptic_format import Category

    cats = {}
    for i in range(133):
        cid = i + 1
        cats[cid] = Category(cid, f"c{cid}", i < 80, (0, 0, 0))
    return cats


def build_ours():
    from cqbnet.network.build import build_panoptic_net

    torch.manual_seed(0)
    model = build_panoptic_net(
        coco_like_categories(),
        backbone="resnet50",
        norm="frozen_bn",
        panoptic={
            "test_score_thresh": 0.0,
            "merge_score_thresh": 0.0,
            "min_thing_area": 0,
            "min_stuff_area": 0,
            "agnostic_nms": None,
        },
    ).eval()
    model.roi_heads.score_thresh = 0.0
    return model


def build_maskrcnn(h: int, w: int):
    """Mask R-CNN whose transform keeps an (h, w) image at its size."""
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    torch.manual_seed(0)
    m = maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, box_score_thresh=0.0, min_size=min(h, w), max_size=max(h, w)
    )
    return m.eval()


def without_panoptic_stage(model, img) -> None:
    """Everything the argmax mode computes before the panoptic stage (``PanopticNet.detect``): backbone, semantic
    head, RPN, the three stages (revised by relation reasoning when it is on) and masks."""
    model.detect([img], "argmax")


def latency(fn, repeat: int) -> float:
    with torch.no_grad():
        fn()
        best = float("inf")
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
    return best


def measure_latency(repeat: int) -> dict:
    ours = build_ours()
    out = {}
    for h, w in SIZES:
        mrcnn = build_maskrcnn(h, w)
        torch.manual_seed(1)
        img = torch.rand(3, h, w)
        row = {
            "ours_without_panoptic_stage": latency(lambda img=img: without_panoptic_stage(ours, img), repeat),
            "ours_argmax": latency(lambda img=img: ours([img], mode="argmax"), repeat),
            "ours_heuristic": latency(lambda img=img: ours([img], mode="heuristic"), repeat),
            "maskrcnn_r50_fpn": latency(lambda img=img, m=mrcnn: m([img]), repeat),
        }
        with torch.no_grad():
            row["thing_segments_argmax"] = sum(s["isthing"] for s in ours([img], mode="argmax")[0].segments)
            row["detections_maskrcnn"] = len(mrcnn([img])[0]["boxes"])
        row["argmax_head_overhead"] = row["ours_argmax"] / row["ours_without_panoptic_stage"] - 1
        row["heuristic_merge_overhead"] = row["ours_heuristic"] / row["ours_without_panoptic_stage"] - 1
        out[f"{h}x{w}"] = row
        print(f"{h}x{w}", {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    return out


def measure_trained(checkpoint: Path, val_image: Path, repeat: int) -> dict:
    """The same comparison for a trained checkpoint (e.g. the CPU recipe's) on one val image resized to each size."""
    import numpy as np
    import torch.nn.functional as F

    from cqbnet.data.dataset import read_rgb
    from cqbnet.engine.trainer import load_model

    model, _ = load_model(checkpoint, torch.device("cpu"))
    img0 = torch.from_numpy(np.ascontiguousarray(read_rgb(val_image))).permute(2, 0, 1).float() / 255
    out = {}
    for h, w in SIZES:
        img = F.interpolate(img0[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        row = {
            "without_panoptic_stage": latency(lambda img=img: without_panoptic_stage(model, img), repeat),
            "argmax": latency(lambda img=img: model([img], mode="argmax"), repeat),
            "heuristic": latency(lambda img=img: model([img], mode="heuristic"), repeat),
        }
        row["argmax_head_overhead"] = row["argmax"] / row["without_panoptic_stage"] - 1
        row["heuristic_merge_overhead"] = row["heuristic"] / row["without_panoptic_stage"] - 1
        out[f"{h}x{w}"] = row
        print("trained", f"{h}x{w}", {k: round(v, 3) for k, v in row.items()}, flush=True)
    return out


def _affinity_child(h: int, w: int, explicit: bool) -> None:
    """Runs in a subprocess: peak RSS growth of one affinity application at an (h, w) grid."""
    from cqbnet.modeling.panoptic_head import DenseInstanceAffinity

    torch.manual_seed(0)
    head = DenseInstanceAffinity(in_channels=256, channels=128).eval()
    q = torch.randn(128, h, w)
    psi = torch.rand(153, h, w)
    base = _reset_peak_rss_kb()
    with torch.no_grad():
        if explicit:
            a = head.phi0(q[None])[0].flatten(1)
            b = head.phi1(q[None])[0].flatten(1)
            p = psi.flatten(1) + (a.T @ b @ psi.flatten(1).T).T / (h * w)
        else:
            p = head(q, psi)
    peak = _peak_rss_kb()
    print(json.dumps({"peak_growth_mb": (peak - base) / 1024, "checksum": float(p.sum())}))


def _peak_rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def _reset_peak_rss_kb() -> int:
    """Reset the peak resident set size to the current one (Linux: write 5 to clear_refs) and return it."""
    Path("/proc/self/clear_refs").write_text("5")
    return _peak_rss_kb()


def measure_memory() -> dict:
    """Peak memory of the affinity head per size (each in a fresh process)."""
    out = {}
    for h, w in SIZES:
        gh, gw = h // 4, w // 4
        row = {"grid": [gh, gw], "pixels": gh * gw}
        for explicit in (False, True):
            if explicit and gh * gw > 20000:  # HW x HW floats would take (HW)^2 * 4 bytes
                row["explicit_mb"] = None
                row["explicit_would_need_mb"] = (gh * gw) ** 2 * 4 / 2**20
                continue
            r = subprocess.run(
                [sys.executable, __file__, "--child", str(gh), str(gw), str(int(explicit))],
                capture_output=True,
                text=True,
                check=True,
            )
            val = json.loads(r.stdout.strip().splitlines()[-1])["peak_growth_mb"]
            row["explicit_mb" if explicit else "linear_mb"] = val
        row["linear_mb_per_kpixel"] = row["linear_mb"] / (gh * gw / 1000)
        out[f"{h}x{w}"] = row
        print(f"{h}x{w}", row, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--child", nargs=3, type=int)
    ap.add_argument("--trained", type=Path, help="also time this checkpoint; with --only-trained, only it")
    ap.add_argument("--val-image", type=Path, help="the image --trained is timed on")
    ap.add_argument("--only-trained", action="store_true", help="add the trained timing to the existing result")
    args = ap.parse_args()
    if args.child:
        _affinity_child(*args.child[:2], bool(args.child[2]))
        return
    if args.only_trained:
        result = json.loads(OUT.read_text())
        result["trained_checkpoint_latency"] = measure_trained(args.trained, args.val_image, args.repeat)
        OUT.write_text(json.dumps(result, indent=2))
        return
    result = {
        "machine": machine_info(),
        "latency_seconds": measure_latency(args.repeat),
        "affinity_memory": measure_memory(),
    }
    if args.trained:
        result["trained_checkpoint_latency"] = measure_trained(args.trained, args.val_image, args.repeat)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
