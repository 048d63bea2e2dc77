"""``cqbnet``: the command line of the toolkit.

Every sub-command turns bad input into one line on stderr naming the file or
id at fault, and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cqbnet.errors import InputError


def _add_gt_args(p: argparse.ArgumentParser, required_json: bool = False) -> None:
    g = p.add_argument_group("ground truth (COCO panoptic)")
    g.add_argument("--data", type=Path, help="a folder made by 'cqbnet data synth' (sets the three paths below)")
    g.add_argument("--split", default="train", help="split of --data (default: train)")
    g.add_argument("--gt-json", type=Path, help="panoptic JSON")
    g.add_argument("--png-dir", type=Path, help="panoptic PNG folder (default: JSON path without .json)")
    g.add_argument("--image-dir", type=Path, help="image folder")
    g.add_argument("--categories", type=Path, help="categories JSON, when the panoptic JSON has none")


def _gt_paths(args) -> tuple[Path, Path | None, Path | None]:
    if args.data is not None:
        if args.gt_json is not None:
            raise InputError("give either --data or --gt-json, not both")
        d = args.data
        if not d.is_dir():
            raise InputError(f"{d}: data folder not found")
        return d / f"panoptic_{args.split}.json", d / "panoptic" / args.split, d / "images" / args.split
    if args.gt_json is None:
        raise InputError("give --data DIR or --gt-json FILE")
    return args.gt_json, args.png_dir, args.image_dir


def _load_gt(args):
    from cqbnet.data.panoptic_format import load_panoptic_json

    j, png, img = _gt_paths(args)
    return load_panoptic_json(j, png, img, categories=args.categories)


def _costs(args):
    from cqbnet.labels.costs import CostModel

    return CostModel.from_yaml(args.costs) if args.costs else CostModel()


def cmd_synth(args) -> int:
    from cqbnet.data.synthetic import SceneConfig, generate

    cfg = SceneConfig(size=args.size, max_instances=args.max_instances, min_size=args.min_size, max_size=args.max_size)
    out = generate(args.out, args.num_train, args.num_val, args.seed, cfg)
    print(f"wrote {args.num_train} train and {args.num_val} val scenes ({args.size}x{args.size}) to {out}")
    return 0


def cmd_simulate(args) -> int:
    from cqbnet.labels.costs import cost_table
    from cqbnet.labels.simulate import dataset_stats, manifest_cost, parse_ratio, simulate

    ratio = parse_ratio(args.ratio)
    costs = _costs(args)
    gt = _load_gt(args)
    m = simulate(
        gt,
        ratio,
        args.out,
        seed=args.seed,
        points_per_segment=args.points_per_segment,
        point_sampling=args.point_sampling,
    )
    print(f"wrote {m.path} ({len(m.images)} images)")
    costs.stats = {**dataset_stats(gt, args.points_per_segment), **costs.stats}
    print(cost_table(manifest_cost(m, costs), len(m.images)))
    return 0


def cmd_cost(args) -> int:
    from cqbnet.labels.costs import CostRow, cost_table
    from cqbnet.labels.kinds import kind_set_name
    from cqbnet.labels.manifest import load_manifest
    from cqbnet.labels.simulate import dataset_stats, exact_counts, manifest_cost, parse_ratio

    costs = _costs(args)
    print(costs.describe())
    print()
    if args.manifest:
        m = load_manifest(args.manifest, check_files=False)
        print(cost_table(manifest_cost(m, costs), len(m.images)))
    elif args.ratio:
        ratio = parse_ratio(args.ratio)
        if args.data or args.gt_json:
            costs.stats = {**dataset_stats(_load_gt(args), args.points_per_segment), **costs.stats}
        n = args.num_images
        counts = exact_counts(ratio, n)
        rows = []
        for kinds, c in counts.items():
            per = sum(costs.expected_per_image(k) for k in kinds)
            rows.append(CostRow(kind_set_name(kinds), c, 0, 0, per * c))
        print(cost_table(rows, n))
        print(f"f2 (paper 000, Eq. 2) = {costs.ratio_cost(ratio):.4f}")
    return 0


def cmd_show(args) -> int:
    from cqbnet.labels.manifest import load_manifest
    from cqbnet.visualization.labels import write_manifest_pictures

    m = load_manifest(args.manifest)
    paths = write_manifest_pictures(m, args.out, num=args.num, seed=args.seed)
    for p in paths:
        print(f"wrote {p}")
    return 0


def cmd_evaluate(args) -> int:
    from cqbnet.evaluation.panoptic_quality import evaluate_panoptic_files
    from cqbnet.io import write_json

    r = evaluate_panoptic_files(
        args.gt_json,
        args.pred_json,
        args.gt_dir,
        args.pred_dir,
        categories=args.categories,
        workers=args.workers,
        compute_ap=args.ap,
    )
    print(r.table(per_class=args.per_class))
    for t in ("bbox", "segm"):
        if t in r.extra:
            v = r.extra[t]
            text = "no predictions" if v is None else "  ".join(f"{k} {100 * x:.1f}" for k, x in v.items())
            print(f"{t} AP: {text}")
    if args.out:
        write_json(args.out, r.to_json(), indent=2)
        print(f"wrote {args.out}")
    return 0


def cmd_demo(args) -> int:
    from cqbnet.cli.demo import run_demo

    run_demo(args.out, seed=args.seed, num_train=args.num_train, num_val=args.num_val, ratio=args.ratio)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cqbnet", description="Label-efficient panoptic segmentation.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="run the whole pipeline on the embedded synthetic scenes")
    d.add_argument("--out", type=Path, default=Path("cqbnet_demo"))
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--num-train", type=int, default=2000)
    d.add_argument("--num-val", type=int, default=300)
    d.add_argument("--ratio", default="P=0.29,I=0.355,B=0.29,S=0.065", help="labelling plan (default: paper 000's O6)")
    d.set_defaults(func=cmd_demo)

    data = sub.add_parser("data", help="datasets").add_subparsers(dest="data_command", required=True)
    s = data.add_parser("synth", help="write the synthetic panoptic scenes (COCO panoptic train/val)")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--num-train", type=int, default=2000)
    s.add_argument("--num-val", type=int, default=300)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=int, default=128)
    s.add_argument("--max-instances", type=int, default=10)
    s.add_argument("--min-size", type=float, default=10.0)
    s.add_argument("--max-size", type=float, default=56.0)
    s.set_defaults(func=cmd_synth)

    labels = sub.add_parser("labels", help="label simulation and costs").add_subparsers(
        dest="labels_command", required=True
    )
    sim = labels.add_parser("simulate", help="assign label kinds to training images and write a manifest")
    _add_gt_args(sim)
    sim.add_argument("--ratio", required=True, help="e.g. P=0.29,I=0.355,B=0.29,S=0.065 (keys may be B+I)")
    sim.add_argument("--out", type=Path, required=True, help="output folder for manifest.json")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--points-per-segment", type=int, default=1)
    sim.add_argument("--point-sampling", default="uniform", choices=["uniform", "center", "border"])
    sim.add_argument("--costs", type=Path, help="YAML of relative costs or seconds")
    sim.set_defaults(func=cmd_simulate)

    c = labels.add_parser("cost", help="cost table of a ratio or a manifest")
    g = c.add_mutually_exclusive_group(required=True)
    g.add_argument("--ratio")
    g.add_argument("--manifest", type=Path)
    c.add_argument("--num-images", type=int, default=1000, help="dataset size for a ratio's table")
    c.add_argument("--points-per-segment", type=int, default=1)
    c.add_argument("--costs", type=Path)
    _add_gt_args(c)
    c.set_defaults(func=cmd_cost)

    sh = labels.add_parser("show", help="draw a manifest's labels on its images")
    sh.add_argument("--manifest", type=Path, required=True)
    sh.add_argument("--out", type=Path, required=True)
    sh.add_argument("--num", type=int, default=12)
    sh.add_argument("--seed", type=int, default=0)
    sh.set_defaults(func=cmd_show)

    e = sub.add_parser("evaluate", help="PQ/SQ/RQ, mIoU and AP of panoptic predictions")
    e.add_argument("--gt-json", type=Path, required=True)
    e.add_argument("--pred-json", type=Path, required=True)
    e.add_argument("--gt-dir", type=Path)
    e.add_argument("--pred-dir", type=Path)
    e.add_argument("--categories", type=Path)
    e.add_argument("--workers", type=int, default=None)
    e.add_argument("--ap", action="store_true", help="also box and mask AP of the thing segments")
    e.add_argument("--per-class", action="store_true")
    e.add_argument("--out", type=Path, help="write all metrics as JSON")
    e.set_defaults(func=cmd_evaluate)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except InputError as e:
        print(f"cqbnet: error: {e}", file=sys.stderr)
        return 2
    except json.JSONDecodeError as e:  # pragma: no cover - readers turn these into InputError
        print(f"cqbnet: error: malformed JSON: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
