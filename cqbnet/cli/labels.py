"""``cqbnet labels``: simulated label mixes, their cost and pictures, paper 001's approximate labels."""

from __future__ import annotations

from pathlib import Path

from cqbnet.cli.common import (
    OVERWRITE_HELP,
    add_box_background_arg,
    add_device_and_overwrite,
    add_fill_arg,
    add_gt_args,
    add_workers_arg,
    at_least,
    command_inputs,
    cost_model,
    load_gt,
    load_model_args,
    workers_of,
)
from cqbnet.errors import InputError


def cmd_simulate(args) -> int:
    from cqbnet.labels.costs import cost_table
    from cqbnet.labels.simulate import dataset_stats, manifest_cost, parse_methods, parse_ratio, simulate

    if (args.ratio is None) == (args.plan is None):
        raise InputError("give either --ratio or --plan")
    methods = {}
    if args.plan is not None:
        from cqbnet.planner.methods import load_plan_methods
        from cqbnet.planner.plan import load_plan_ratio

        ratio = load_plan_ratio(args.plan)
        methods = load_plan_methods(args.plan)  # a plan over methods names each kind set's method
    else:
        ratio = parse_ratio(args.ratio)
    methods.update(parse_methods(args.method))
    costs = cost_model(args)
    gt = load_gt(args)
    m = simulate(
        gt,
        ratio,
        args.out,
        seed=args.seed,
        points_per_segment=args.points_per_segment,
        point_sampling=args.point_sampling,
        overwrite=args.overwrite,
        methods=methods or None,
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

    costs = cost_model(args)
    print(costs.describe())
    print()
    if args.manifest:
        m = load_manifest(args.manifest, check_files=False)
        print(cost_table(manifest_cost(m, costs), len(m.images)))
    elif args.ratio:
        ratio = parse_ratio(args.ratio)
        if args.data or args.gt_json:
            costs.stats = {**dataset_stats(load_gt(args), args.points_per_segment), **costs.stats}
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
    from cqbnet.io import check_writable
    from cqbnet.labels.manifest import load_manifest
    from cqbnet.visualization.labels import write_manifest_pictures

    check_writable(args.out, folder=True)
    m = load_manifest(args.manifest)
    paths = write_manifest_pictures(m, args.out, num=args.num, seed=args.seed)
    for p in paths:
        print(f"wrote {p}")
    return 0


def _boxes_manifest(args):
    """The manifest of ``labels approximate`` / ``refine``, checked before any work: it has boxes images, and the
    ground truth to score against (when given) has every one of them."""
    from cqbnet.labels.manifest import load_manifest

    manifest = load_manifest(args.manifest)
    boxed = [lab.image_id for lab in manifest.images if "B" in lab.kinds and "P" not in lab.kinds]
    if not boxed:
        raise InputError(f"{args.manifest}: no image carries boxes (B); there is nothing to approximate")
    if args.data is not None or args.gt_json is not None:
        have = {r.image_id for r in load_gt(args).records}
        missing = [i for i in boxed if i not in have]
        if missing:
            raise InputError(
                f"{args.manifest}: image {missing[0]} (and {len(missing) - 1} more) is not in the ground truth given "
                "to score against"
            )
    return manifest


def cmd_approximate(args) -> int:
    """Round 0 of paper 001's approximate labels; scored against the ground truth when it is given."""
    from cqbnet.io import check_output_dir
    from cqbnet.recipes.prepare import thing_cue_table
    from cqbnet.recipes.stages import bar
    from cqbnet.weak.approx_ground_truth import round_zero

    check_output_dir(args.out, command_inputs(args), args.overwrite)
    manifest = _boxes_manifest(args)
    model = device = None
    if args.checkpoint is not None:
        model, _, device = load_model_args(args)
    boxed = [lab.image_id for lab in manifest.images if "B" in lab.kinds]
    cues = thing_cue_table(manifest, boxed, args.cue, workers_of(args), progress=True)  # every core, a bar
    entries = round_zero(manifest, model, device or "cpu", args.cue, box_background=args.box_background, cues=cues)
    return _write_and_score(args, manifest, bar(entries, len(boxed), "round 0"), "round 0")


def _write_and_score(args, manifest, entries, source: str) -> int:
    """Write a round of approximate labels to ``args.out``; score it when the ground truth is given."""
    from cqbnet.labels.rounds import ApproximateRound, write_round
    from cqbnet.weak.approx_ground_truth import score_round

    path = write_round(
        args.out, entries, f"{source}, cue {getattr(args, 'cue', 'both')}", command_inputs(args), args.overwrite
    )
    print(f"wrote {path}")
    if args.data is not None or args.gt_json is not None:
        score = score_round(ApproximateRound.load(path), manifest, load_gt(args))
        print("  ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in score.items()))
    return 0


def cmd_refine(args) -> int:
    """A refinement round of paper 001's approximate labels; scored against the ground truth when it is given."""
    from cqbnet.io import check_output_dir
    from cqbnet.labels.rounds import ApproximateRound
    from cqbnet.weak.approx_ground_truth import refine_round

    check_output_dir(args.out, command_inputs(args), args.overwrite)
    manifest = _boxes_manifest(args)
    cues = ApproximateRound.load(args.cues)
    cues.check_against(manifest)
    model, _, device = load_model_args(args)
    return _write_and_score(
        args, manifest, refine_round(model, manifest, cues, device, fill=args.fill), f"refined from {args.checkpoint}"
    )


def add_commands(sub) -> None:
    """This group's sub-commands."""
    labels = sub.add_parser("labels", help="label simulation and costs").add_subparsers(
        dest="labels_command", required=True
    )
    sim = labels.add_parser("simulate", help="assign label kinds to training images and write a manifest")
    add_gt_args(sim)
    sim.add_argument("--ratio", help="e.g. P=0.29,I=0.355,B=0.29,S=0.065 (keys may be B+I)")
    sim.add_argument("--plan", type=Path, help="a plan.json from 'cqbnet plan' (its recommended ratio)")
    sim.add_argument("--out", type=Path, required=True, help="output folder for manifest.json")
    sim.add_argument("--seed", type=at_least(0), default=0)
    sim.add_argument("--points-per-segment", type=at_least(1), default=1)
    sim.add_argument("--point-sampling", default="uniform", choices=["uniform", "center", "border"])
    sim.add_argument("--costs", type=Path, help="YAML of relative costs or seconds")
    sim.add_argument(
        "--method",
        action="append",
        metavar="KINDS=METHOD",
        help="the label method of a kind set's images, e.g. I=tags-002 (cqbnet fit --methods lists them)",
    )
    sim.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    sim.set_defaults(func=cmd_simulate)

    ap = labels.add_parser(
        "approximate", help="paper 001: approximate panoptic labels of a manifest's boxes images (round 0)"
    )
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True, help="folder of the round's PNGs and labels.json")
    ap.add_argument(
        "--checkpoint",
        type=Path,
        help="a network with Cls2Pixel trained on the tags (boxes-tags' classifier/): its CAMs give stuff",
    )
    ap.add_argument("--cue", default="both", choices=["both", "grabcut", "proposal", "box"], help="things' cue")
    add_workers_arg(ap)
    add_box_background_arg(ap)
    add_gt_args(ap)
    add_device_and_overwrite(ap)
    ap.set_defaults(func=cmd_approximate)

    rf = labels.add_parser(
        "refine", help="paper 001: the next round of approximate labels, from a network trained on the last one"
    )
    rf.add_argument("--manifest", type=Path, required=True)
    rf.add_argument("--cues", type=Path, required=True, help="round 0's folder (cqbnet labels approximate)")
    rf.add_argument("--checkpoint", type=Path, required=True, help="the network trained on the last round")
    rf.add_argument("--out", type=Path, required=True)
    add_fill_arg(rf)
    add_gt_args(rf)
    add_device_and_overwrite(rf)
    rf.set_defaults(func=cmd_refine)

    c = labels.add_parser("cost", help="cost table of a ratio or a manifest")
    g = c.add_mutually_exclusive_group(required=True)
    g.add_argument("--ratio")
    g.add_argument("--manifest", type=Path)
    c.add_argument("--num-images", type=at_least(1), default=1000, help="dataset size for a ratio's table")
    c.add_argument("--points-per-segment", type=at_least(1), default=1)
    c.add_argument("--costs", type=Path)
    add_gt_args(c)
    c.set_defaults(func=cmd_cost)

    sh = labels.add_parser("show", help="draw a manifest's labels on its images")
    sh.add_argument("--manifest", type=Path, required=True)
    sh.add_argument("--out", type=Path, required=True)
    sh.add_argument("--num", type=at_least(1), default=12)
    sh.add_argument("--seed", type=at_least(0), default=0)
    sh.set_defaults(func=cmd_show)
