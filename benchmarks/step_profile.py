"""Where one training step of a config spends its time: data loading, and forward and backward of each part.

Builds the config's network and data stream (the scenes are generated into ``--run`` when missing), warms up, then
times ``--steps`` steps. Forward time per part comes from forward hooks on the network's children (a part's
time includes the children it calls); backward time per part from the autograd profiler, where every backward op
is charged to the part whose forward recorded it (``record_function`` scopes). Data loading is timed apart.

Usage: ``python -m benchmarks.step_profile [--config configs/synthetic_full.yaml] [--steps 20] [overrides ...]``
writes ``benchmarks/results/step_profile.json`` (``--out`` to change) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.autograd.profiler import record_function

from benchmarks.machine import machine_info
from cqbnet.engine.config import load_config
from cqbnet.engine.data import StreamDataset, ensure_synthetic, load_split, make_loader
from cqbnet.engine.trainer import build_model
from cqbnet.io import write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results" / "step_profile.json"


def parts_of(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The network's parts as timed: its direct children, the RoI heads split into pooling, stages and masks."""
    parts = {name: m for name, m in model.named_children()}
    heads = parts.pop("roi_heads")
    for name, m in heads.named_children():
        parts[f"roi_heads.{name}"] = m
    return parts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "synthetic_full.yaml")
    ap.add_argument("--run", type=Path, default=ROOT / "runs" / "step_profile")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    cfg = load_config(args.config, args.overrides)
    ensure_synthetic(cfg["data"], args.run)
    dataset = load_split(cfg["data"], "train", args.run)
    torch.manual_seed(0)
    model = build_model(dataset.categories, cfg["model"])
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    d = cfg["data"]
    stream = StreamDataset(dataset, 0, d["flip"], d["train_short_sizes"], d["max_size"])
    loader = iter(make_loader(stream, 0, args.steps + args.warmup, cfg["solver"]["batch_size"], workers=d["workers"]))

    forward = defaultdict(float)
    starts: dict[str, float] = {}
    for name, m in parts_of(model).items():

        def pre(_m, _i, name=name):
            starts[name] = time.perf_counter()
            scope = record_function(f"part::{name}")
            scope.__enter__()
            starts[name + "#scope"] = scope  # type: ignore[assignment]

        def post(_m, _i, _o, name=name):
            starts.pop(name + "#scope").__exit__(None, None, None)  # type: ignore[union-attr]
            if timing[0]:
                forward[name] += time.perf_counter() - starts[name]

        m.register_forward_pre_hook(pre)
        m.register_forward_hook(post)

    timing = [False]
    totals = defaultdict(float)
    counts = {"images": 0, "instances": 0}

    def step(images, targets) -> None:
        model.iteration = 10**6  # every warm-up ramp fully in
        t0 = time.perf_counter()
        losses = model(images, targets)
        t1 = time.perf_counter()
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        if timing[0]:
            totals["forward"] += t1 - t0
            totals["backward"] += t2 - t1
            totals["optimizer"] += t3 - t2

    for _ in range(args.warmup):
        step(*next(loader))
    timing[0] = True
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            t = time.perf_counter()
            batch = next(loader)
            totals["data"] += time.perf_counter() - t
            counts["images"] += len(batch[1])
            counts["instances"] += sum(int((tg["is_thing"] & ~tg["iscrowd"]).sum()) for tg in batch[1])
            step(*batch)
    backward = defaultdict(float)
    ops = defaultdict(float)
    for ev in prof.events():
        ops[ev.name] += ev.self_cpu_time_total / 1e6
    # backward ops carry the forward scope they came from only through sequence numbers; charge them by name
    for ev in prof.key_averages(group_by_input_shape=False):
        if "Backward" in ev.key:
            backward[ev.key] += ev.self_cpu_time_total / 1e6
    n = args.steps
    top_ops = sorted(ops.items(), key=lambda kv: -kv[1])[:25]
    top_backward = sorted(backward.items(), key=lambda kv: -kv[1])[:15]
    step_time = sum(totals.values()) / n
    result = {
        "machine": machine_info(),
        "config": str(args.config),
        "overrides": args.overrides,
        "steps": n,
        "threads": torch.get_num_threads(),
        "seconds_per_step": step_time,
        "batch_size": cfg["solver"]["batch_size"],
        "instances_per_image": counts["instances"] / max(counts["images"], 1),  # non-crowd things, timed steps
        "phases": {k: v / n for k, v in totals.items()},
        "forward_parts": {k: v / n for k, v in sorted(forward.items(), key=lambda kv: -kv[1])},
        "top_self_ops": {k: v / n for k, v in top_ops},
        "top_backward_ops": {k: v / n for k, v in top_backward},
    }
    write_json(args.out, result, indent=2)
    print(
        f"{step_time:.3f} s per step ({n} steps, {torch.get_num_threads()} threads, "
        f"{result['instances_per_image']:.1f} instances per image)\n"
    )
    print("| phase | s per step |\n|---|---|")
    for k, v in result["phases"].items():
        print(f"| {k} | {v:.3f} |")
    print("\n| forward part | s per step |\n|---|---|")
    for k, v in result["forward_parts"].items():
        print(f"| {k} | {v:.3f} |")
    print("\n| op (self time, forward and backward) | s per step |\n|---|---|")
    for k, v in result["top_self_ops"].items():
        print(f"| {k} | {v:.3f} |")


if __name__ == "__main__":
    main()
