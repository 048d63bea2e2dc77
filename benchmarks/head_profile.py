"""Where paper 004's head spends its time on a trained network: the argmax path and the heuristic merge, part by
part, at the sizes of ``benchmarks/network_speed.py``.

The network runs ``PanopticNet.detect`` once per size (the path both modes share, timed as the base) and then its
panoptic stage ``--repeat`` times with every part of the head wrapped in a timer: the affinity features Q (a second
feature decoder), the semantic probabilities on the head's grid, the pasted masks, the potential Psi (Eqs. 1-2),
the affinity product (Eq. 4), the in-box rule, the upsampled argmax and the segment extraction; for the merge,
its semantic argmax, pasted masks and the merge itself. The parts are the functions the head calls, replaced
for the run by timed copies (nothing in the library is changed). Usage::

    python -m benchmarks.head_profile --checkpoint RUN/model_final.pth --image VAL.png [--repeat 5] [--commit]

Results: ``benchmarks/results/head_profile.json`` and ``benchmarks/head_profile.md``.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.commit_results import commit
from benchmarks.machine import machine_info
from benchmarks.network_speed import SIZES
from cqbnet.io import atomic_path, write_json
from cqbnet.modeling import panoptic_head as head_module

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "head_profile.json"
REPORT = ROOT / "benchmarks" / "head_profile.md"
# the head's parts: (the function's name in cqbnet.modeling.panoptic_head, its name in the table)
MODULE_PARTS = (
    ("paste_masks", "pasted masks"),
    ("dynamic_potential", "potential Psi (Eqs. 1-2)"),
    ("box_region", "box regions (in-box rule, Psi)"),
    ("upsample_argmax", "upsampled argmax"),
    ("panoptic_from_logits", "segments from the argmax"),
    ("heuristic_merge", "heuristic merge"),
)
# and (the PanopticHead method, its name in the table)
HEAD_PARTS = (("features", "affinity features Q"), ("_grid_probs", "semantic probabilities on the grid"))


class Timers:
    """Seconds per named part, summed over the calls; nested parts are counted in their own row only."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._stack: list[float] = []

    def wrap(self, name: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            self._stack.append(0.0)
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = time.perf_counter() - t
                inner = self._stack.pop()
                self.seconds[name] += spent - inner
                if self._stack:
                    self._stack[-1] += spent

        return timed


@contextmanager
def timed_parts(model, timers: Timers):
    """The head's parts replaced by timed copies for the duration."""
    head = model.panoptic_head
    saved = [(head_module, a, getattr(head_module, a)) for a, _ in MODULE_PARTS]
    saved += [(head, a, getattr(head, a)) for a, _ in HEAD_PARTS]
    saved.append((model, "panoptic_stage", model.panoptic_stage))
    if head.affinity is not None:
        saved.append((head.affinity, "forward", head.affinity.forward))
    names = dict(MODULE_PARTS + HEAD_PARTS, forward="affinity product (Eq. 4)", panoptic_stage="the rest")
    try:
        for owner, attr, fn in saved:
            setattr(owner, attr, timers.wrap(names[attr], fn))
        yield
    finally:
        for owner, attr, fn in saved:
            if owner is head or owner is head.affinity or owner is model:
                delattr(owner, attr)  # back to the class's method
            else:
                setattr(owner, attr, fn)


def profile_size(model, img: torch.Tensor, mode: str, repeat: int) -> dict[str, Any]:
    """Seconds of ``detect`` and of the panoptic stage (best of ``repeat``), the stage's parts (mean over the
    repeats) and the detections that reached the head."""
    with torch.no_grad():
        found = model.detect([img], mode)
        model.panoptic_stage(found, mode)  # warm-up
        base = min(_seconds(lambda: model.detect([img], mode)) for _ in range(repeat))
        stage = min(_seconds(lambda: model.panoptic_stage(found, mode)) for _ in range(repeat))
        timers = Timers()
        with timed_parts(model, timers):
            for _ in range(repeat):
                model.panoptic_stage(found, mode)
        assert "panoptic_stage" not in vars(model), "the timed copies were not removed"
        out = model.panoptic_stage(found, mode)[0]
    parts = {k: v / repeat for k, v in sorted(timers.seconds.items(), key=lambda kv: -kv[1])}
    return {
        "detect_seconds": base,
        "stage_seconds": stage,
        "overhead": stage / base,
        "parts_seconds": parts,
        "detections": len(found.dets[0]["boxes"]),
        "thing_segments": sum(bool(s["isthing"]) for s in out.segments),
        "channels": len(found.dets[0]["boxes"]) + len(model.panoptic_head.labels.region_categories()),
    }


def _seconds(fn: Callable) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def report(res: dict[str, Any]) -> list[str]:
    """The markdown tables: per size and mode, the stage against ``detect`` and its parts."""
    lines = [
        "# Paper 004's head on a trained network: where its time goes",
        "",
        "Produced by `python -m benchmarks.head_profile` (`results/head_profile.json`). Checkpoint "
        f"`{res['checkpoint']}`, image `{res['image']}` resized to each size; batch 1, `torch.no_grad`, "
        f"best of {res['repeat']} for the totals, parts the mean of {res['repeat']} timed runs of the stage (the "
        "timers add a little of their own). Machine: " + f"`{res['machine']}`.",
        "",
        "| size | mode | detect s | panoptic stage s | stage / detect | detections (channels) | thing segments |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for size, modes in res["sizes"].items():
        for mode, r in modes.items():
            lines.append(
                f"| {size} | {mode} | {r['detect_seconds']:.3f} | {r['stage_seconds']:.3f} | "
                f"{100 * r['overhead']:.1f}% | {r['detections']} ({r['channels']}) | {r['thing_segments']} |"
            )
    lines += ["", "Parts of the panoptic stage, seconds (share of the stage's timed total):", ""]
    for size, modes in res["sizes"].items():
        for mode, r in modes.items():
            total = sum(r["parts_seconds"].values())
            lines += [f"**{size}, {mode}** (parts sum to {total:.4f} s)", "", "| part | s | share |", "|---|---:|---:|"]
            lines += [f"| {k} | {v:.4f} | {100 * v / total:.1f}% |" for k, v in r["parts_seconds"].items()]
            lines.append("")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--image", type=Path, required=True, help="the image, resized to each size")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--commit", action="store_true")
    args = ap.parse_args()
    from cqbnet.data.dataset import read_rgb
    from cqbnet.engine.trainer import load_model

    model, _ = load_model(args.checkpoint, torch.device("cpu"))
    img0 = torch.from_numpy(np.ascontiguousarray(read_rgb(args.image))).permute(2, 0, 1).float() / 255
    sizes = {}
    for h, w in SIZES:
        img = F.interpolate(img0[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        sizes[f"{h}x{w}"] = {mode: profile_size(model, img, mode, args.repeat) for mode in ("argmax", "heuristic")}
        print(f"{h}x{w}", {m: round(r["overhead"], 3) for m, r in sizes[f"{h}x{w}"].items()}, flush=True)
    res = {
        "checkpoint": str(args.checkpoint),
        "image": str(args.image),
        "repeat": args.repeat,
        "sizes": sizes,
        "machine": machine_info(),
    }
    write_json(OUT, res, indent=2)
    with atomic_path(REPORT) as tmp:
        tmp.write_text("\n".join(report(res)) + "\n")
    print("\n".join(report(res)))
    if args.commit:
        commit([OUT, REPORT], "head_profile: the panoptic stage's parts on a trained network")


if __name__ == "__main__":
    main()
