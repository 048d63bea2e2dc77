"""``cqbnet``: the command line of the toolkit.

Every sub-command turns bad input into one line on stderr naming the file or
id at fault, and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
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


def _add_fill_arg(p: argparse.ArgumentParser) -> None:
    # the rules and default of cqbnet.weak.approx_ground_truth (FILL_RULES, DEFAULT_FILL), written out so that
    # building the parser imports no torch; a test holds them equal
    p.add_argument(
        "--fill",
        default="predicted",
        choices=["box", "predicted"],
        help="refinement's low-coverage rule: fill only the box's predicted pixels (default) or the whole box (paper "
        "001's released code)",
    )


def _add_box_background_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--box-background",
        action="store_true",
        help="box pixels every cue calls background: the mask head's background, not the box's class (else ignore)",
    )


OVERWRITE_HELP = "replace what cqbnet wrote in an existing --out (files it did not write are kept)"


def _add_device_and_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)


def _gt_paths(args) -> tuple[Path, Path | None, Path | None]:
    if args.data is not None:
        if args.gt_json is not None:
            raise InputError("give either --data or --gt-json, not both")
        d = args.data
        if not d.is_dir():
            raise InputError(f"{d}: data folder not found")
        from cqbnet.data.synthetic import split_paths

        return split_paths(d, args.split)
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

    cfg = SceneConfig(
        size=args.size,
        max_instances=args.max_instances,
        min_size=args.min_size,
        max_size=args.max_size,
        preset=args.preset,
    )
    out = generate(args.out, args.num_train, args.num_val, args.seed, cfg, args.overwrite, args.num_test)
    size = f"{args.size}x{args.size}"
    print(
        f"wrote {args.num_train} train, {args.num_val} val and {args.num_test} test {args.preset} scenes ({size}) "
        f"to {out}"
    )
    return 0


def cmd_simulate(args) -> int:
    from cqbnet.labels.costs import cost_table
    from cqbnet.labels.simulate import dataset_stats, manifest_cost, parse_ratio, simulate

    if (args.ratio is None) == (args.plan is None):
        raise InputError("give either --ratio or --plan")
    if args.plan is not None:
        from cqbnet.planner.plan import load_plan_ratio

        ratio = load_plan_ratio(args.plan)
    else:
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
        overwrite=args.overwrite,
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
    from cqbnet.io import check_writable
    from cqbnet.labels.manifest import load_manifest
    from cqbnet.visualization.labels import write_manifest_pictures

    check_writable(args.out, folder=True)
    m = load_manifest(args.manifest)
    paths = write_manifest_pictures(m, args.out, num=args.num, seed=args.seed)
    for p in paths:
        print(f"wrote {p}")
    return 0


def cmd_evaluate(args) -> int:
    from cqbnet.evaluation.panoptic_quality import evaluate_panoptic_files
    from cqbnet.io import check_writable, write_json

    if args.out:
        check_writable(args.out)
    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit {args.limit}: give a number of images of at least 1")
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers {args.workers}: give at least 1")
    if args.checkpoint is not None:
        from cqbnet.data.dataset import PanopticDataset
        from cqbnet.engine.inference import evaluate_model

        if args.pred_json is not None:
            raise InputError("give either --checkpoint or --pred-json, not both")
        model, cfg, device = _load_model_args(args)
        ds = PanopticDataset(args.gt_json, args.gt_dir, args.image_dir, categories=args.categories)
        r = evaluate_model(
            model, ds, device, args.mode, args.limit, cfg["data"]["test_short_size"], cfg["data"]["max_size"]
        )
    elif args.pred_json is None:
        raise InputError("give --pred-json (files to evaluate) or --checkpoint (a model to run)")
    else:
        r = evaluate_panoptic_files(
            args.gt_json,
            args.pred_json,
            args.gt_dir,
            args.pred_dir,
            categories=args.categories,
            workers=args.workers,
            compute_ap=args.ap,
            strict=args.strict,
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


def cmd_plan(args) -> int:
    from cqbnet.io import check_writable, write_json
    from cqbnet.labels.kinds import KINDS
    from cqbnet.planner.pilot_table import load_pilot_table, regression_samples
    from cqbnet.planner.plan import make_plan
    from cqbnet.planner.presets import PAPER_TABLE1, named_ratios, preset
    from cqbnet.planner.quality_model import fit_quality_model
    from cqbnet.planner.search import Constraints, parse_kinds, parse_shares
    from cqbnet.visualization.pareto_plot import plot_plan

    check_writable(args.out, folder=True)
    for name in ("plan.json", "pareto.png"):  # a folder in the way of a file it writes
        check_writable(args.out / name)
    costs = _costs(args)
    gt = None
    if args.data or args.gt_json:
        from cqbnet.labels.simulate import dataset_stats

        gt = _load_gt(args)
        costs.stats = {**dataset_stats(gt, args.points_per_segment), **costs.stats}
    named, paper = {}, {}
    if args.preset:
        model = preset(args.preset, args.objective)
        if args.thing_share is not None:
            model.thing_share = args.thing_share
        named = named_ratios(args.preset)
        paper = {n: {"pq_all": r[1], "f1": r[2], "f2": r[3]} for n, r in PAPER_TABLE1.items()}
    else:
        table = load_pilot_table(args.pilot)
        print(table.summary())
        print()
        share = args.thing_share
        if share is None and gt is not None:
            things = sum(c.isthing for c in gt.categories.values())
            share = things / len(gt.categories)
        notes: list[str] = []
        samples = regression_samples(table, notes=notes)
        for n in notes:
            print(f"note: {n}")
        model = fit_quality_model(
            samples,
            args.regressor,
            args.degree,
            args.bootstrap,
            args.seed,
            args.objective,
            share,
            source=f"fitted from {args.pilot}",
        )
    print(model.describe())
    unavailable = parse_kinds(args.unavailable, "--unavailable")
    lower = parse_shares(args.minimum, "--min")
    if args.min_full is not None:
        lower["P"] = args.min_full
    upper = parse_shares(args.cap, "--cap")
    for k in unavailable:
        if lower.get(k, 0) > 0:
            raise InputError(f"{k} is unavailable but has a minimum share of {lower[k]:g}")
    in_play = [k for k in KINDS if (k in model.kinds or lower.get(k, 0) > 0) and k not in unavailable]
    left_out = [k for k in KINDS if k not in in_play and k not in unavailable]
    if left_out:
        print(f"left out (no quality curve): {', '.join(left_out)}")
    constraints = Constraints(tuple(in_play), {k: v for k, v in lower.items() if k in in_play}, upper)
    result = make_plan(
        model,
        costs,
        constraints,
        budget=args.budget,
        quality_target=args.quality_target,
        method=args.search,
        samples=args.samples,
        seed=args.seed,
        population=args.population,
        named=named,
        named_paper=paper,
    )
    print()
    print(result.table())
    out = args.out
    write_json(out / "plan.json", result.to_json(), indent=2)
    plot_plan(result, out / "pareto.png", budget=args.budget)
    print(f"wrote {out / 'plan.json'} and {out / 'pareto.png'}")
    print(f"next: cqbnet labels simulate --plan {out / 'plan.json'} --data DIR --out LABELS")
    return 0


def _device(name: str | None) -> str:
    """``--device``: auto, cpu, cuda or cuda:N, checked against this machine."""
    import torch

    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise InputError(f"--device {name!r}: not a device; give auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise InputError(f"--device {name!r}: cqbnet runs on cpu or cuda")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {name} given, but no CUDA device is available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA devices")
    return name


def _after_failed_training(out: Path, new: bool, hint: bool = True) -> None:
    """A failed training leaves nothing that looks like a result: a folder it created is removed unless it holds
    a checkpoint to resume from (and then, after an interruption or a failure of the run itself, the user is told
    so; a refused input has its own one-line error)."""
    import shutil

    ckpt = out / "checkpoints" / "last.pth"
    if ckpt.is_file():
        if hint:
            print(f"cqbnet: the run can resume from {ckpt}: run the same command again", file=sys.stderr)
    elif new and out.is_dir():
        shutil.rmtree(out, ignore_errors=True)


def cmd_train(args) -> int:
    from cqbnet.engine.config import load_config
    from cqbnet.engine.trainer import train
    from cqbnet.io import check_writable

    cfg = load_config(args.config, args.overrides)
    out = Path(args.out or Path("runs") / Path(args.config).stem)
    check_writable(out, folder=True)
    new = not out.exists()
    try:
        summary = train(cfg, out, device=_device(args.device), resume=not args.no_resume, progress=not args.quiet)
    except BaseException as e:
        _after_failed_training(out, new, hint=not isinstance(e, InputError))
        raise
    ev = summary["last_eval"]
    if ev:
        print(
            f"iteration {ev['iter']}: PQ {100 * ev['pq']:.1f}  PQ_th {100 * ev['pq_th']:.1f}  "
            f"PQ_st {100 * ev['pq_st']:.1f}  SQ {100 * ev['sq']:.1f}  RQ {100 * ev['rq']:.1f}"
        )
    print(f"wrote {out / 'model_final.pth'} and {out / 'metrics.jsonl'}")
    return 0


def _recipe_of(cfg: dict) -> dict:
    """What decides a network: its model, solver and seed (paths, logging and evaluation left out)."""
    return {"model": cfg["model"], "solver": cfg["solver"], "seed": cfg["train"]["seed"]}


def cmd_boxes_tags(args) -> int:
    """Paper 001's whole recipe (cqbnet.engine.boxes_tags): CAM network, round 0, training, refinement rounds."""
    from cqbnet.engine.boxes_tags import run_boxes_tags
    from cqbnet.engine.config import load_config
    from cqbnet.io import file_digest, start_job_dir

    cfg = load_config(args.config, args.overrides)
    cam_cfg = load_config(args.cam_config or args.config, args.overrides)
    gt = _load_gt(args) if (args.data is not None or args.gt_json is not None) else None
    device = _device(args.device)
    if not args.manifest.is_file():
        raise InputError(f"{args.manifest}: manifest not found")
    # rounds, cue, fill and box background name their own folders inside: a rerun may add rounds or variants
    made_from = {"manifest": file_digest(args.manifest), "network": _recipe_of(cfg), "cam_network": _recipe_of(cam_cfg)}
    start_job_dir(args.out, _inputs(args), made_from)
    steps = run_boxes_tags(
        cfg, cam_cfg, args.manifest, args.out, args.rounds, args.cue, device, gt, args.fill, args.box_background
    )
    for entry in steps:
        score = entry.get("score")
        text = (
            ""
            if score is None
            else f"; labels: precision th {score['precision_th']:.1f} / st {score['precision_st']:.1f}, "
        )
        if score is not None:
            text += f"coverage th {score['coverage_th']:.1f} / st {score['coverage_st']:.1f}, PQ {score['pq']:.1f}"
        print(f"round {entry['round']}: {entry['labels']} -> {entry['checkpoint']}{text}")
    return 0


def cmd_pilot(args) -> int:
    from cqbnet.engine.config import load_config
    from cqbnet.planner.pilot_table import load_pilot_table
    from cqbnet.sweep.run_pilot import run_pilot

    cfg = load_config(args.config, args.overrides)
    out = args.out or Path("runs") / Path(args.config).stem
    device = _device(args.device)
    gpus = args.gpus_per_run if args.gpus_per_run is not None else (1.0 if device.startswith("cuda") else 0.0)
    table = run_pilot(cfg, out, args.table, args.address, args.cpus_per_run, gpus, device)
    print(load_pilot_table(table).summary())
    print(f"pilot table: {table}  (fit the planner with: cqbnet plan --pilot {table} ...)")
    return 0


def _load_model_args(args):
    import torch

    from cqbnet.engine.trainer import load_model

    device = torch.device(_device(args.device))
    model, cfg = load_model(args.checkpoint, device)
    return model, cfg, device


def cmd_predict(args) -> int:
    from cqbnet.data.dataset import IMAGE_SUFFIXES
    from cqbnet.engine.inference import image_items, predict_images, write_predictions
    from cqbnet.io import check_output_dir

    inputs = [args.checkpoint, args.images, args.data, getattr(args, "image_dir", None), getattr(args, "png_dir", None)]
    check_output_dir(args.out, inputs, args.overwrite)  # before any work
    model, cfg, device = _load_model_args(args)
    if args.images is not None:
        if not args.images.exists():
            raise InputError(f"{args.images}: no such image or folder")
        if args.images.is_dir():
            paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            paths = [args.images]
        if not paths:
            raise InputError(f"{args.images}: no images (.jpg, .png) found")
        items = list(image_items(paths))
    else:
        gt = _load_gt(args)
        from cqbnet.data.dataset import read_rgb

        items = []
        for r in gt.records:
            info = {"id": r.image_id, "file_name": r.image_file_name or r.file_name}
            img = read_rgb(gt.image_path(r))
            info.update(height=img.shape[0], width=img.shape[1])
            items.append((info, img))
    outs = predict_images(
        model, (img for _, img in items), device, args.mode, cfg["data"]["test_short_size"], cfg["data"]["max_size"]
    )
    categories = model.labels.categories
    path = write_predictions(
        args.out,
        ((info, img, o) for (info, img), o in zip(items, outs)),
        categories,
        overlays=not args.no_overlays,
        inputs=inputs,
        overwrite=args.overwrite,
    )
    print(
        f"wrote {path} ({len(items)} images), PNGs in {args.out / 'panoptic_pred'}"
        + ("" if args.no_overlays else f", overlays in {args.out / 'overlays'}")
    )
    return 0


def _inputs(args) -> list[Path]:
    """Every input path a command was given (its output may never hold one of them)."""
    names = (
        "checkpoint",
        "manifest",
        "cues",
        "data",
        "gt_json",
        "png_dir",
        "image_dir",
        "images",
        "config",
        "cam_config",
    )
    return [getattr(args, n) for n in names if getattr(args, n, None) is not None]


def _boxes_manifest(args):
    """The manifest of ``labels approximate`` / ``refine``, checked before any work: it has boxes images, and the
    ground truth to score against (when given) has every one of them."""
    from cqbnet.labels.manifest import load_manifest

    manifest = load_manifest(args.manifest)
    boxed = [lab.image_id for lab in manifest.images if "B" in lab.kinds]
    if not boxed:
        raise InputError(f"{args.manifest}: no image carries boxes (B); there is nothing to approximate")
    if args.data is not None or args.gt_json is not None:
        have = {r.image_id for r in _load_gt(args).records}
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
    from cqbnet.weak.approx_ground_truth import round_zero

    check_output_dir(args.out, _inputs(args), args.overwrite)
    manifest = _boxes_manifest(args)
    model = device = None
    if args.checkpoint is not None:
        model, _, device = _load_model_args(args)
    entries = round_zero(manifest, model, device or "cpu", args.cue, box_background=args.box_background)
    return _write_and_score(args, manifest, entries, "round 0")


def _write_and_score(args, manifest, entries, source: str) -> int:
    """Write a round of approximate labels to ``args.out``; score it when the ground truth is given."""
    from cqbnet.weak.approx_ground_truth import ApproximateRound, score_round, write_round

    path = write_round(
        args.out, entries, f"{source}, cue {getattr(args, 'cue', 'both')}", _inputs(args), args.overwrite
    )
    print(f"wrote {path}")
    if args.data is not None or args.gt_json is not None:
        score = score_round(ApproximateRound.load(path), manifest, _load_gt(args))
        print("  ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in score.items()))
    return 0


def cmd_refine(args) -> int:
    """A refinement round of paper 001's approximate labels; scored against the ground truth when it is given."""
    from cqbnet.io import check_output_dir
    from cqbnet.weak.approx_ground_truth import ApproximateRound, refine_round

    check_output_dir(args.out, _inputs(args), args.overwrite)
    manifest = _boxes_manifest(args)
    cues = ApproximateRound.load(args.cues)
    cues.check_against(manifest)
    model, _, device = _load_model_args(args)
    return _write_and_score(
        args, manifest, refine_round(model, manifest, cues, device, fill=args.fill), f"refined from {args.checkpoint}"
    )


def cmd_pseudo_labels(args) -> int:
    """Paper 003's pseudo panoptic labels of a manifest's point images, written as COCO panoptic predictions and,
    with the ground truth given, scored against it (PQ and mIoU of the pseudo labels themselves)."""
    from cqbnet.data.mixed_dataset import MixedLabelDataset
    from cqbnet.engine.inference import write_predictions
    from cqbnet.evaluation.panoptic_quality import PanopticQuality
    from cqbnet.io import check_output_dir
    from cqbnet.weak.fdd_points import pseudo_label_items

    inputs = _inputs(args)
    check_output_dir(args.out, inputs, args.overwrite)
    dataset = MixedLabelDataset(args.manifest)
    if not any("PT" in lab.kinds and "P" not in lab.kinds for lab in dataset.manifest.images):
        raise InputError(f"{args.manifest}: no image carries clicked points (PT) alone; there is nothing to label")
    model, _, device = _load_model_args(args)
    gt = _load_gt(args) if (args.data is not None or args.gt_json is not None) else None
    metric = PanopticQuality(dataset.categories) if gt is not None else None
    records = {r.image_id: r for r in gt.records} if gt is not None else {}

    def items():
        for info, img, out in pseudo_label_items(model, dataset, device, crf=args.crf):
            if metric is not None:
                rec = records.get(info["id"])
                if rec is None:
                    raise InputError(f"{args.manifest}: image {info['id']} is not in the ground truth given")
                metric.update(gt.read_ids(rec, validate=False), rec.segments, out.ids, out.segments, info["id"])
            yield info, img, out

    path = write_predictions(args.out, items(), dataset.categories, not args.no_overlays, inputs, args.overwrite)
    print(f"wrote {path}: the pseudo labels of the manifest's point images")
    if metric is not None:
        print(metric.compute().table(per_class=args.per_class))
    return 0


def cmd_demo(args) -> int:
    from cqbnet.cli.demo import run_demo

    run_demo(
        args.out,
        seed=args.seed,
        num_train=args.num_train,
        num_val=args.num_val,
        ratio=args.ratio,
        budget=args.budget,
        train_iters=args.train_iters,
        device=_device(args.device),
        overwrite=args.overwrite,
    )
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line and exit code 2, as every other error of the command line."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _at_least(low: float, cast=int):
    """An argparse type: an integer (or, with ``cast=float``, a finite number) of at least ``low``."""
    what = "an integer" if cast is int else "a number"

    def parse(text: str):
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if cast is float and (not math.isfinite(value) or value < low):
            raise argparse.ArgumentTypeError(f"{text} must be a finite number of at least {low:g}")
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below {low}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="cqbnet", description="Label-efficient panoptic segmentation.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="run the whole pipeline on the embedded synthetic scenes")
    d.add_argument("--out", type=Path, default=Path("cqbnet_demo"))
    d.add_argument("--seed", type=_at_least(0), default=0)
    d.add_argument("--num-train", type=_at_least(0), default=2000)
    d.add_argument("--num-val", type=_at_least(0), default=300)
    d.add_argument(
        "--budget", type=_at_least(0.0, float), default=0.45, help="annotation budget for the planner (full labels = 1)"
    )
    d.add_argument("--ratio", help="a labelling plan to use instead of planning, e.g. P=0.29,I=0.355,B=0.29,S=0.065")
    d.add_argument("--train-iters", type=_at_least(0), default=400, help="training iterations (0: skip training)")
    d.add_argument("--device", default="auto", help="cpu, cuda or auto")
    d.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    d.set_defaults(func=cmd_demo)

    data = sub.add_parser("data", help="datasets").add_subparsers(dest="data_command", required=True)
    s = data.add_parser("synth", help="write the synthetic panoptic scenes (COCO panoptic train/val/test)")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--num-train", type=_at_least(0), default=2000)
    s.add_argument("--num-val", type=_at_least(0), default=300, help="scenes to tune on")
    s.add_argument("--num-test", type=_at_least(0), default=300, help="held-out scenes to report on")
    s.add_argument("--seed", type=_at_least(0), default=0)
    s.add_argument("--size", type=_at_least(16), default=128)
    s.add_argument("--max-instances", type=_at_least(0), default=10)
    s.add_argument("--min-size", type=_at_least(1.0, float), default=10.0)
    s.add_argument("--max-size", type=_at_least(1.0, float), default=56.0)
    s.add_argument(
        "--preset",
        choices=("realistic", "camouflage"),
        default="realistic",
        help="realistic: class-typical colours, objects mostly stand out (default); camouflage: shape is the only cue",
    )
    s.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    s.set_defaults(func=cmd_synth)

    labels = sub.add_parser("labels", help="label simulation and costs").add_subparsers(
        dest="labels_command", required=True
    )
    sim = labels.add_parser("simulate", help="assign label kinds to training images and write a manifest")
    _add_gt_args(sim)
    sim.add_argument("--ratio", help="e.g. P=0.29,I=0.355,B=0.29,S=0.065 (keys may be B+I)")
    sim.add_argument("--plan", type=Path, help="a plan.json from 'cqbnet plan' (its recommended ratio)")
    sim.add_argument("--out", type=Path, required=True, help="output folder for manifest.json")
    sim.add_argument("--seed", type=_at_least(0), default=0)
    sim.add_argument("--points-per-segment", type=_at_least(1), default=1)
    sim.add_argument("--point-sampling", default="uniform", choices=["uniform", "center", "border"])
    sim.add_argument("--costs", type=Path, help="YAML of relative costs or seconds")
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
    _add_box_background_arg(ap)
    _add_gt_args(ap)
    _add_device_and_overwrite(ap)
    ap.set_defaults(func=cmd_approximate)

    rf = labels.add_parser(
        "refine", help="paper 001: the next round of approximate labels, from a network trained on the last one"
    )
    rf.add_argument("--manifest", type=Path, required=True)
    rf.add_argument("--cues", type=Path, required=True, help="round 0's folder (cqbnet labels approximate)")
    rf.add_argument("--checkpoint", type=Path, required=True, help="the network trained on the last round")
    rf.add_argument("--out", type=Path, required=True)
    _add_fill_arg(rf)
    _add_gt_args(rf)
    _add_device_and_overwrite(rf)
    rf.set_defaults(func=cmd_refine)

    c = labels.add_parser("cost", help="cost table of a ratio or a manifest")
    g = c.add_mutually_exclusive_group(required=True)
    g.add_argument("--ratio")
    g.add_argument("--manifest", type=Path)
    c.add_argument("--num-images", type=_at_least(1), default=1000, help="dataset size for a ratio's table")
    c.add_argument("--points-per-segment", type=_at_least(1), default=1)
    c.add_argument("--costs", type=Path)
    _add_gt_args(c)
    c.set_defaults(func=cmd_cost)

    sh = labels.add_parser("show", help="draw a manifest's labels on its images")
    sh.add_argument("--manifest", type=Path, required=True)
    sh.add_argument("--out", type=Path, required=True)
    sh.add_argument("--num", type=_at_least(1), default=12)
    sh.add_argument("--seed", type=_at_least(0), default=0)
    sh.set_defaults(func=cmd_show)

    pl = sub.add_parser("plan", help="which labels to buy: Pareto front of quality and cost, plan for a budget")
    src = pl.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", choices=["paper-coco", "paper-coco-literal"], help="paper 000's published model")
    src.add_argument("--pilot", type=Path, help="pilot table (CSV) to fit the quality model from")
    pl.add_argument("--regressor", choices=["poly", "monotone"], default="poly", help="curve form (Eq. 8: poly)")
    pl.add_argument("--degree", type=int, default=3, help="polynomial degree (default 3, as Eq. 8)")
    pl.add_argument("--bootstrap", type=_at_least(0), default=200, help="bootstrap refits for the uncertainty of f1")
    pl.add_argument("--objective", choices=["product", "additive"], default="product", help="f1: Eq. 9 or a sum")
    pl.add_argument("--thing-share", type=float, help="r_th of Eq. 4 (default: from --data, or 80/133 for COCO)")
    pl.add_argument("--budget", type=float, help="recommend the best plan costing at most this (full = 1)")
    pl.add_argument("--quality-target", type=_at_least(0.0, float), help="recommend the cheapest plan reaching this f1")
    pl.add_argument("--min-full", type=float, help="minimum share of fully labelled images (rho_P)")
    pl.add_argument("--min", dest="minimum", help="minimum shares, e.g. P=0.1,S=0.05")
    pl.add_argument("--cap", help="maximum shares, e.g. B=0.3,S=0.2")
    pl.add_argument("--unavailable", help="kinds that cannot be bought, e.g. S,PT")
    pl.add_argument(
        "--search",
        choices=["random", "nsga2", "both"],
        default="random",
        help="random: paper 000's sampling; nsga2: pymoo's NSGA-II; both: the union",
    )
    pl.add_argument("--samples", type=int, default=7500, help="ratios to evaluate (default 7500, as the paper)")
    pl.add_argument("--population", type=_at_least(2), default=100, help="NSGA-II population")
    pl.add_argument("--seed", type=_at_least(0), default=0)
    pl.add_argument("--costs", type=Path, help="YAML of relative costs or seconds")
    pl.add_argument(
        "--points-per-segment", type=_at_least(1), default=1, help="clicks per segment, for the cost of points"
    )
    _add_gt_args(pl)
    pl.add_argument("--out", type=Path, default=Path("plan"), help="folder for plan.json and pareto.png")
    pl.set_defaults(func=cmd_plan)

    t = sub.add_parser("train", help="train the panoptic network from a YAML config (resumes automatically)")
    t.add_argument("config", type=Path, help="e.g. configs/synthetic_full.yaml")
    t.add_argument("overrides", nargs="*", help="section.key=value, e.g. solver.max_iter=200")
    t.add_argument("--out", type=Path, help="output folder (default: runs/<config name>)")
    t.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    t.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    bt = sub.add_parser(
        "boxes-tags", help="paper 001: approximate labels from boxes and tags, training and refinement rounds"
    )
    bt.add_argument("config", type=Path, help="the network's recipe, e.g. configs/synthetic_full.yaml")
    bt.add_argument("overrides", nargs="*", help="section.key=value for both networks")
    bt.add_argument("--manifest", type=Path, required=True, help="a manifest whose images carry boxes and tags (B+I)")
    bt.add_argument("--out", type=Path, required=True)
    bt.add_argument("--cam-config", type=Path, help="the CAM network's config (default: the recipe's)")
    bt.add_argument("--rounds", type=_at_least(0), default=1, help="refinement rounds after round 0")
    bt.add_argument("--cue", default="both", choices=["both", "grabcut", "proposal", "box"], help="things' cue")
    _add_fill_arg(bt)
    _add_box_background_arg(bt)
    _add_gt_args(bt)
    bt.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    bt.set_defaults(func=cmd_boxes_tags)

    pi = sub.add_parser(
        "pilot", help="paper 000's Table 2 protocol as Ray training runs, written to a pilot table for `plan`"
    )
    pi.add_argument(
        "config", type=Path, help="a training config with a pilot section, e.g. configs/synthetic_pilot.yaml"
    )
    pi.add_argument("overrides", nargs="*", help="section.key=value, e.g. pilot.seeds=[0]")
    pi.add_argument("--out", type=Path, help="output folder (default: runs/<config name>); runs go to OUT/runs/")
    pi.add_argument("--table", type=Path, help="pilot table to write (default: OUT/pilot.csv)")
    pi.add_argument("--address", help="Ray cluster address (default: start Ray on this machine)")
    pi.add_argument("--cpus-per-run", type=float, help="CPUs per run (default: all of this machine, 1 on a cluster)")
    pi.add_argument("--gpus-per-run", type=float, help="GPUs per run (default: 1 with a CUDA device, else 0)")
    pi.add_argument("--device", default="auto", help="cpu, cuda or auto")
    pi.set_defaults(func=cmd_pilot)

    pr = sub.add_parser("predict", help="COCO panoptic predictions (PNG + JSON) and overlay pictures")
    pr.add_argument("--checkpoint", type=Path, required=True, help="model_final.pth or checkpoints/last.pth")
    pr.add_argument("--images", type=Path, help="an image file or a folder of images")
    _add_gt_args(pr)
    pr.add_argument(
        "--mode",
        choices=["argmax", "heuristic"],
        default="argmax",
        help="argmax over P (paper 004) or the Panoptic FPN heuristic merge",
    )
    pr.add_argument("--out", type=Path, required=True)
    pr.add_argument("--no-overlays", action="store_true")
    pr.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    pr.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    pr.set_defaults(func=cmd_predict)

    ps = sub.add_parser(
        "pseudo-labels",
        help="paper 003: the dense pseudo labels a trained point branch gives a manifest's point images",
    )
    ps.add_argument("--checkpoint", type=Path, required=True, help="a network trained with model.weak.points on")
    ps.add_argument("--manifest", type=Path, required=True, help="the mixed-label manifest it was trained from")
    _add_gt_args(ps)
    ps.add_argument("--out", type=Path, required=True)
    ps.add_argument("--per-class", action="store_true", help="one row per class in the score table")
    ps.add_argument(
        "--crf", action="store_true", help="refine each image's maps with the dense CRF first (beyond paper 003)"
    )
    ps.add_argument("--no-overlays", action="store_true")
    _add_device_and_overwrite(ps)
    ps.set_defaults(func=cmd_pseudo_labels)

    e = sub.add_parser("evaluate", help="PQ/SQ/RQ, mIoU and AP of panoptic predictions")
    e.add_argument("--gt-json", type=Path, required=True)
    e.add_argument("--pred-json", type=Path)
    e.add_argument("--checkpoint", type=Path, help="evaluate a trained model (model_final.pth) instead of files")
    e.add_argument("--image-dir", type=Path, help="with --checkpoint: the images")
    e.add_argument("--mode", choices=["argmax", "heuristic"], default="argmax", help="with --checkpoint")
    e.add_argument("--limit", type=_at_least(1), help="with --checkpoint: first N images only")
    e.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    e.add_argument("--gt-dir", type=Path)
    e.add_argument("--pred-dir", type=Path)
    e.add_argument("--categories", type=Path)
    e.add_argument("--workers", type=_at_least(1), default=None)
    e.add_argument("--ap", action="store_true", help="also box and mask AP of the thing segments")
    e.add_argument(
        "--strict",
        action="store_true",
        help="refuse ground truth that panopticapi passes over (a segment without pixels, a wrong JSON area, "
        "predictions of images without ground truth); by default these are warnings and counted as panopticapi does",
    )
    e.add_argument("--per-class", action="store_true")
    e.add_argument("--out", type=Path, help="write all metrics as JSON")
    e.set_defaults(func=cmd_evaluate)
    return p


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings as the command line shows them: one line, no source location."""
    return f"cqbnet: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = _one_line_warning
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
    except SystemExit as e:  # --help, or a bad argument (one line, code 2)
        return int(e.code or 0)
    if extra:  # overrides of `train` may come after its options
        if getattr(args, "command", None) not in ("train", "pilot") or any(
            a.startswith("-") or "=" not in a for a in extra
        ):
            print(f"cqbnet: error: unrecognized arguments: {' '.join(extra)}", file=sys.stderr)
            return 2
        args.overrides = [*args.overrides, *extra]
    try:
        return args.func(args)
    except InputError as e:
        print(f"cqbnet: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "cqbnet: interrupted; outputs are whole or absent (training resumes from its last checkpoint)",
            file=sys.stderr,
        )
        return 130
    except RuntimeError as e:
        from cqbnet.engine.trainer import TrainingDiverged
        from cqbnet.sweep.runner import SweepFailed

        if not isinstance(e, (TrainingDiverged, SweepFailed)):
            raise
        print(f"cqbnet: error: {e}", file=sys.stderr)
        return 3
    except json.JSONDecodeError as e:  # pragma: no cover - readers turn these into InputError
        print(f"cqbnet: error: malformed JSON: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file system that refuses a write the checks could not foresee (/proc, a full disk)
        where = f"{e.filename}: " if e.filename else ""
        print(f"cqbnet: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
