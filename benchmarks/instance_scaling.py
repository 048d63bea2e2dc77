"""How a training step's cost grows with the number of instances per image (issue 17, item 3).

For each ``--instances`` value N, the recipe's network is profiled by ``benchmarks/step_profile.py`` on synthetic
scenes of ``--size`` px holding 0..N things each (``max_instances`` N, things at most ``--max-thing`` px), one
process per N, one at a time. The report gives seconds per step, the instances per image actually seen, the
marginal cost of one more instance between successive N, and the forward parts and ops that grow the most: the
cost grows at most linearly when the marginal cost does not rise with N.

Usage::

    python -m benchmarks.instance_scaling --label recipe --instances 10 20 40 80 [--steps 10]

Results: ``benchmarks/results/instance_scaling_<label>.json``; the table is printed, and
``benchmarks/instance_scaling.md`` is written from every label's results found (its ``## Findings`` section,
written by hand, is kept).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.machine import machine_info
from cqbnet.io import atomic_path, read_json, write_json

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FINDINGS = "\n## Findings"


def profile(n: int, args: argparse.Namespace) -> dict[str, Any]:
    """step_profile.py on scenes with up to ``n`` instances each (its JSON)."""
    out = ROOT / "runs" / "instance_scaling" / f"{args.label}_n{n}.json"
    overrides = [
        f"data.synthetic.size={args.size}",
        f"data.synthetic.max_instances={n}",
        f"data.synthetic.max_size={args.max_thing}",
        f"data.synthetic.num_train={args.images}",
        "data.synthetic.num_val=10",
        *args.overrides,
    ]
    cmd = [sys.executable, str(HERE / "step_profile.py"), "--config", str(args.config), "--steps", str(args.steps)]
    cmd += ["--run", str(ROOT / "runs" / "instance_scaling" / f"scenes_n{n}"), "--out", str(out), *overrides]
    if not out.is_file():  # a finished profile is kept: the script can be rerun with more values of N
        subprocess.run(cmd, check=True, cwd=ROOT)
    return read_json(out)


def table(label: str, rows: list[dict[str, Any]]) -> list[str]:
    """One label's rows: step time, instances, marginal cost per instance, and the three largest forward parts."""
    lines = [
        f"### {label}",
        "",
        "| max instances | instances per image | s per step | marginal s per instance per image "
        "| largest forward parts (s) |",
        "|---|---|---|---|---|",
    ]
    prev = None
    for r in rows:
        marginal = "-"
        if prev is not None and r["instances_per_image"] > prev["instances_per_image"]:
            slope = (r["seconds_per_step"] - prev["seconds_per_step"]) / (
                r["instances_per_image"] - prev["instances_per_image"]
            )
            marginal = f"{slope:.4f}"
        parts = ", ".join(f"{k} {v:.3f}" for k, v in list(r["forward_parts"].items())[:3])
        lines.append(
            f"| {r['max_instances']} | {r['instances_per_image']:.1f} | {r['seconds_per_step']:.3f} | {marginal} | "
            f"{parts} |"
        )
        prev = r
    first, last = rows[0], rows[-1]
    grow = sorted(
        ((k, v - first["top_self_ops"].get(k, 0.0)) for k, v in last["top_self_ops"].items()), key=lambda kv: -kv[1]
    )[:6]
    lines += [
        "",
        f"Ops whose self time grew the most from {first['max_instances']} to {last['max_instances']} instances "
        "(s per step): " + ", ".join(f"`{k}` +{v:.3f}" for k, v in grow) + ".",
        "",
    ]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", required=True, help="names this set of runs (e.g. the config or code version)")
    ap.add_argument("--instances", type=int, nargs="+", default=[10, 20, 40, 80])
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "synthetic_full.yaml")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--max-thing", type=float, default=40.0)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    rows = []
    for n in args.instances:
        r = profile(n, args)
        rows.append({"max_instances": n, **{k: r[k] for k in r if k != "machine"}})
    result = {"machine": machine_info(), "label": args.label, "size": args.size, "runs": rows}
    write_json(HERE / "results" / f"instance_scaling_{args.label}.json", result, indent=2)
    print("\n".join(table(args.label, rows)))
    sections = []
    for path in sorted((HERE / "results").glob("instance_scaling_*.json")):
        res = read_json(path)
        sections += table(res["label"], res["runs"])
    header = [
        "# A training step against the number of instances per image",
        "",
        "Produced by `python -m benchmarks.instance_scaling` (each row one `benchmarks/step_profile.py` run of 10 "
        f"profiled steps, batch {rows[0]['batch_size']} of {args.size} px scenes, things at most {args.max_thing:g} "
        f"px, `{args.config.name}`). Machine: `{json.dumps(machine_info())}`.",
        "",
    ]
    md = HERE / "instance_scaling.md"
    old = md.read_text() if md.is_file() else ""
    findings = old[old.index(FINDINGS) :] if FINDINGS in old else ""  # written by hand, kept across reruns
    with atomic_path(md) as tmp:
        Path(tmp).write_text("\n".join(header + sections) + findings)


if __name__ == "__main__":
    main()
