"""How hard are the synthetic scenes' six thing classes? A probe apart from the detector.

The CPU recipe's detector gets the class of only about half of the objects it finds (57% at 1000 iterations),
and at the pilot's 200 iterations it is at chance. To tell a slow detector from a hard task, this script trains
a small classifier directly on ground-truth objects: every non-crowd thing of the first ``--images`` training
scenes is cut out with RoIAlign (a square around its box, 1.2 times its longer side, resampled to 32 x 32) and
a 3-layer CNN (BatchNorm, Adam 1e-3, batch 128) learns its class; accuracy is measured on the things of the val
scenes. Two inputs:

* ``rgb``: the image crop, what a detector sees (textures, the shared palette, occluders, neighbours);
* ``mask``: the object's own visible mask only, its silhouette after occlusion and nothing else.

Usage: ``python -m benchmarks.thing_class_probe [--data DIR] [--steps 600] [--seeds 0 1]``; writes
``benchmarks/results/thing_class_probe.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import roi_align

from benchmarks.machine import machine_info
from cqbnet.data.dataset import PanopticDataset
from cqbnet.data.synthetic import SceneConfig, generate, split_paths
from cqbnet.io import write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "thing_class_probe.json"
CROP = 32


def object_crops(data: Path, split: str, images: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, 3, 32, 32) image crops, (N, 1, 32, 32) own-mask crops and (N,) class indices of the split's things."""
    ds = PanopticDataset(*split_paths(data, split))
    rgb, mask, labels = [], [], []
    for i in range(min(images, len(ds))):
        img, t = ds[i]
        things = t["is_thing"] & ~t["iscrowd"]
        if not things.any():
            continue
        boxes = torch.from_numpy(t["boxes"][things])  # (n, 4)
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        half = (boxes[:, 2:] - boxes[:, :2]).amax(1, keepdim=True) * 0.6
        square = [torch.cat([centre - half, centre + half], 1)]
        image = torch.from_numpy(img).permute(2, 0, 1).float()[None] / 255  # (1, 3, H, W)
        own = torch.from_numpy(t["masks"][things]).float()[:, None]  # (n, 1, H, W)
        rgb.append(roi_align(image, square, CROP, 1.0, 2, True))
        indexed = torch.cat([torch.arange(len(own), dtype=torch.float32)[:, None], square[0]], 1)  # (n, 5)
        mask.append(roi_align(own, indexed, CROP, 1.0, 2, True))  # each object's mask in its own square
        labels.append(torch.from_numpy(t["labels"][things]))
    return torch.cat(rgb), torch.cat(mask), torch.cat(labels)


def small_cnn(in_channels: int, classes: int) -> nn.Module:
    def block(i: int, o: int) -> list[nn.Module]:
        return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(
        *block(in_channels, 32), *block(32, 64), *block(64, 64),  # 32 -> 4 px
        nn.Flatten(), nn.Linear(64 * 16, 128), nn.ReLU(), nn.Linear(128, classes),
    )  # fmt: skip


def train_probe(x: torch.Tensor, y: torch.Tensor, xv: torch.Tensor, yv: torch.Tensor, steps: int, seed: int) -> dict:
    """Val accuracy every 100 steps (the last is the result), and the final training accuracy."""
    torch.manual_seed(seed)
    classes = int(max(y.max(), yv.max())) + 1
    net = small_cnn(x.shape[1], classes)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    curve = {}

    def accuracy(a: torch.Tensor, b: torch.Tensor) -> float:
        net.eval()
        with torch.no_grad():
            acc = float((net(a).argmax(1) == b).float().mean())
        net.train()
        return acc

    for step in range(1, steps + 1):
        idx = torch.randint(len(x), (128,), generator=gen)
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps:
            curve[step] = accuracy(xv, yv)
    return {"val_accuracy": curve[steps], "curve": curve, "train_accuracy": accuracy(x, y)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, help="a folder made by `cqbnet data synth` (default: generate one)")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "thing_class_probe")
    ap.add_argument("--train-images", type=int, nargs="+", default=[600, 2000])
    ap.add_argument("--val-images", type=int, default=300)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    data = args.data
    if data is None:
        data = args.work / "data"
        if not (data / "panoptic_val.json").is_file():
            generate(data, num_train=max(args.train_images), num_val=args.val_images, seed=0, cfg=SceneConfig())
    xv_rgb, xv_mask, yv = object_crops(data, "val", args.val_images)
    rows = []
    for images in args.train_images:
        x_rgb, x_mask, y = object_crops(data, "train", images)
        for name, x, xv in (("rgb", x_rgb, xv_rgb), ("mask", x_mask, xv_mask)):
            for seed in args.seeds:
                t0 = time.perf_counter()
                res = train_probe(x, y, xv, yv, args.steps, seed)
                rows.append(
                    {"input": name, "train_images": images, "train_objects": len(y), "val_objects": len(yv),
                     "steps": args.steps, "seed": seed, "seconds": time.perf_counter() - t0, **res}
                )  # fmt: skip
                print(f"{name} {images} images ({len(y)} objects) seed {seed}: val {res['val_accuracy']:.3f} "
                      f"train {res['train_accuracy']:.3f}", flush=True)  # fmt: skip
    write_json(args.out, {"machine": machine_info(), "data": str(data), "runs": rows}, indent=2)
    print("\n| input | training scenes (objects) | val accuracy, mean over seeds | training accuracy |")
    print("|---|---|---|---|")
    for name in ("rgb", "mask"):
        for images in args.train_images:
            sel = [r for r in rows if r["input"] == name and r["train_images"] == images]
            val = np.mean([r["val_accuracy"] for r in sel])
            tr = np.mean([r["train_accuracy"] for r in sel])
            print(f"| {name} | {images} ({sel[0]['train_objects']}) | {100 * val:.1f}% | {100 * tr:.1f}% |")


if __name__ == "__main__":
    main()
