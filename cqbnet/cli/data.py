"""``cqbnet demo`` and ``cqbnet data``: the whole pipeline on the embedded scenes, and the scenes."""

from __future__ import annotations

from pathlib import Path

from cqbnet.cli.common import (
    OVERWRITE_HELP,
    at_least,
    resolve_device,
)


def cmd_synth(args) -> int:
    from cqbnet.data.synthetic import generate, scene_config

    cfg = scene_config(
        args.preset,
        size=args.size,
        min_instances=args.min_instances,
        max_instances=args.max_instances,
        min_size=args.min_size,
        max_size=args.max_size,
    )
    cfg.validate()
    out = generate(args.out, args.num_train, args.num_val, args.seed, cfg, args.overwrite, args.num_test)
    size = f"{cfg.size}x{cfg.size}"
    print(
        f"wrote {args.num_train} train, {args.num_val} val and {args.num_test} test {args.preset} scenes ({size}) "
        f"to {out}"
    )
    return 0


def cmd_demo(args) -> int:
    from cqbnet.demo import run_demo

    run_demo(
        args.out,
        seed=args.seed,
        num_train=args.num_train,
        num_val=args.num_val,
        ratio=args.ratio,
        budget=args.budget,
        train_iters=args.train_iters,
        device=resolve_device(args.device),
        overwrite=args.overwrite,
    )
    return 0


def add_commands(sub) -> None:
    """This group's sub-commands."""
    d = sub.add_parser("demo", help="run the whole pipeline on the embedded synthetic scenes")
    d.add_argument("--out", type=Path, default=Path("cqbnet_demo"))
    d.add_argument("--seed", type=at_least(0), default=0)
    d.add_argument("--num-train", type=at_least(0), default=2000)
    d.add_argument("--num-val", type=at_least(0), default=300)
    d.add_argument(
        "--budget", type=at_least(0.0, float), default=0.45, help="annotation budget for the planner (full labels = 1)"
    )
    d.add_argument("--ratio", help="a labelling plan to use instead of planning, e.g. P=0.29,I=0.355,B=0.29,S=0.065")
    d.add_argument("--train-iters", type=at_least(0), default=400, help="training iterations (0: skip training)")
    d.add_argument("--device", default="auto", help="cpu, cuda or auto")
    d.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    d.set_defaults(func=cmd_demo)

    data = sub.add_parser("data", help="datasets").add_subparsers(dest="data_command", required=True)
    s = data.add_parser("synth", help="write the synthetic panoptic scenes (COCO panoptic train/val/test)")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--num-train", type=at_least(0), default=2000)
    s.add_argument("--num-val", type=at_least(0), default=300, help="scenes to tune on")
    s.add_argument("--num-test", type=at_least(0), default=300, help="held-out scenes to report on")
    s.add_argument("--seed", type=at_least(0), default=0)
    s.add_argument("--size", type=at_least(16), help="image side in px (default: the preset's, 128 or 256)")
    s.add_argument("--min-instances", type=at_least(0), help="things per image, at least (default: the preset's)")
    s.add_argument("--max-instances", type=at_least(0), help="things per image, at most (default: the preset's)")
    s.add_argument("--min-size", type=at_least(1.0, float), help="smallest thing extent in px (default: the preset's)")
    s.add_argument("--max-size", type=at_least(1.0, float), help="largest thing extent in px (default: the preset's)")
    s.add_argument(
        "--preset",
        choices=("realistic", "camouflage", "dense"),
        default="realistic",
        help="realistic: class-typical colours, objects mostly stand out (default); camouflage: shape is the only "
        "cue; dense: 256 px, 20-80 small things that touch, weak colour cues (docs/data.md)",
    )
    s.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    s.set_defaults(func=cmd_synth)
