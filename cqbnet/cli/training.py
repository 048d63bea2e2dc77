"""``cqbnet train``, ``fit``, ``boxes-tags`` and ``pseudo-labels``: networks and the labels they make."""

from __future__ import annotations

import os
from pathlib import Path

from cqbnet.cli.common import (
    add_box_background_arg,
    add_device_and_overwrite,
    add_fill_arg,
    add_gt_args,
    add_workers_arg,
    after_failed_training,
    at_least,
    command_inputs,
    load_gt,
    load_model_args,
    recipe_of,
    resolve_device,
    workers_of,
)
from cqbnet.errors import InputError


def cmd_train(args) -> int:
    from cqbnet.engine.config import load_config
    from cqbnet.engine.trainer import train
    from cqbnet.io import check_writable

    cfg = load_config(args.config, args.overrides)
    out = Path(args.out or Path("runs") / Path(args.config).stem)
    check_writable(out, folder=True)
    new = not out.exists()
    try:
        summary = train(
            cfg, out, device=resolve_device(args.device), resume=not args.no_resume, progress=not args.quiet
        )
    except BaseException as e:
        after_failed_training(out, new, hint=not isinstance(e, InputError))
        raise
    ev = summary["last_eval"]
    if ev:
        print(
            f"iteration {ev['iter']}: PQ {100 * ev['pq']:.1f}  PQ_th {100 * ev['pq_th']:.1f}  "
            f"PQ_st {100 * ev['pq_st']:.1f}  SQ {100 * ev['sq']:.1f}  RQ {100 * ev['rq']:.1f}"
        )
    print(f"wrote {out / 'model_final.pth'} and {out / 'metrics.jsonl'}")
    return 0


def cmd_boxes_tags(args) -> int:
    """Paper 001's whole recipe (cqbnet.recipes.boxes_tags_001): CAM network, round 0, training, refinement rounds."""
    from cqbnet.engine.config import load_config
    from cqbnet.io import file_digest, start_job_dir
    from cqbnet.recipes.boxes_tags_001 import run_boxes_tags

    cfg = load_config(args.config, args.overrides)
    cam_cfg = load_config(args.cam_config or args.config, args.overrides)
    gt = load_gt(args) if (args.data is not None or args.gt_json is not None) else None
    device = resolve_device(args.device)
    if not args.manifest.is_file():
        raise InputError(f"{args.manifest}: manifest not found")
    # rounds, cue, fill and box background name their own folders inside: a rerun may add rounds or variants
    made_from = {"manifest": file_digest(args.manifest), "network": recipe_of(cfg), "cam_network": recipe_of(cam_cfg)}
    start_job_dir(args.out, command_inputs(args), made_from)
    steps = run_boxes_tags(
        cfg,
        cam_cfg,
        args.manifest,
        args.out,
        args.rounds,
        args.cue,
        device,
        gt,
        args.fill,
        args.box_background,
        workers_of(args),
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


def _fit_cache(text: str | None) -> Path | None:
    """``--cache``: the folder of prepared per-image labels shared by fits (default ``$CQBNET_CACHE`` or
    ``~/.cache/cqbnet``); ``none`` turns caching off."""
    if text == "none":
        return None
    return Path(text or os.environ.get("CQBNET_CACHE") or Path.home() / ".cache" / "cqbnet")


def cmd_fit(args) -> int:
    """One final network from any mix of labels (cqbnet.recipes.fit): every stage its methods need, once each."""
    from cqbnet.labels.catalogue import describe

    if args.methods:
        for row in describe():
            print(f"{row['method']}: kinds {row['kinds']} (also {row['also']}), paper {row['paper']}")
            print(f"    stages: {', '.join(row['stages']) or 'none'}; preparation: {row['preparation']}")
            print(f"    gives the final network: {row['gives']}")
            print(f"    trains: {row['compute']}; departs from its paper: {row['departs']}")
            if row["default_for"]:
                print(f"    default for: {', '.join(row['default_for'])}")
        return 0
    if args.config is None or args.out is None:
        raise InputError("cqbnet fit needs a CONFIG and --out (or --methods to list the label methods)")
    from cqbnet.engine.config import load_config
    from cqbnet.engine.data import shared_data_config, simulate_labels
    from cqbnet.io import start_job_dir
    from cqbnet.labels.manifest import load_manifest
    from cqbnet.recipes.fit import dry_run_lines, plan_stages, run_fit

    cfg = load_config(args.config, args.overrides)
    manifest = args.manifest or (Path(cfg["data"]["manifest"]) if cfg["data"].get("manifest") else None)
    device = resolve_device(args.device)
    workers = workers_of(args)
    cache = _fit_cache(args.cache)
    if args.dry_run:
        if manifest is None:
            raise InputError("--dry-run needs a manifest (--manifest or data.manifest); data.labels is simulated")
        m = load_manifest(manifest)
        print("\n".join(dry_run_lines(plan_stages(cfg, m, args.out, device, workers, cache), m)))
        return 0
    start_job_dir(args.out, command_inputs(args), {"job": "fit"})  # each stage checks its own inputs
    cfg = shared_data_config(cfg, args.out)
    if manifest is None:
        if not cfg["data"].get("labels"):
            raise InputError("cqbnet fit needs --manifest, data.manifest or data.labels (a label mix to simulate)")
        manifest = simulate_labels(cfg["data"], args.out)
    summary = run_fit(
        cfg, manifest, args.out, device, workers, cache, args.overwrite, not args.quiet, ray_address=args.ray_address
    )
    for st in summary["stages"]:
        print(f"{st['stage']}: {st['iterations']} iterations, {st['images']} images, {st['seconds'] / 60:.1f} min")
    test = summary["test"]
    if test:
        th, st = 100 * test["pq_th"], 100 * test["pq_st"]
        print(f"test split: PQ {100 * test['pq']:.1f} (things {th:.1f}, stuff {st:.1f})")
    print(f"wrote {summary['final']} and {args.out / 'fit.json'}")
    return 0


def cmd_pseudo_labels(args) -> int:
    """Paper 003's pseudo panoptic labels of a manifest's point images, written as COCO panoptic predictions and,
    with the ground truth given, scored against it (PQ and mIoU of the pseudo labels themselves)."""
    from cqbnet.engine.inference import write_predictions
    from cqbnet.evaluation.panoptic_quality import PanopticQuality
    from cqbnet.io import check_output_dir
    from cqbnet.labels.dataset import MixedLabelDataset
    from cqbnet.weak.fdd_points import pseudo_label_items

    inputs = command_inputs(args)
    check_output_dir(args.out, inputs, args.overwrite)
    dataset = MixedLabelDataset(args.manifest)
    if not any("PT" in lab.kinds and "P" not in lab.kinds for lab in dataset.manifest.images):
        raise InputError(f"{args.manifest}: no image carries clicked points (PT) alone; there is nothing to label")
    model, _, device = load_model_args(args)
    gt = load_gt(args) if (args.data is not None or args.gt_json is not None) else None
    metric = PanopticQuality(dataset.categories) if gt is not None else None
    records = {r.image_id: r for r in gt.records} if gt is not None else {}

    def items():
        for info, img, out in pseudo_label_items(model, dataset, device, args.crf, args.crf_keep):
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


def add_commands(sub) -> None:
    """This group's sub-commands."""
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
    bt.add_argument("--rounds", type=at_least(0), default=1, help="refinement rounds after round 0")
    bt.add_argument("--cue", default="both", choices=["both", "grabcut", "proposal", "box"], help="things' cue")
    add_workers_arg(bt)
    add_fill_arg(bt)
    add_box_background_arg(bt)
    add_gt_args(bt)
    bt.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    bt.set_defaults(func=cmd_boxes_tags)

    fi = sub.add_parser(
        "fit", help="one network from any mix of labels: every stage its label methods need (cqbnet fit --methods)"
    )
    fi.add_argument("config", type=Path, nargs="?", help="the network's recipe, e.g. configs/synthetic_full.yaml")
    fi.add_argument("overrides", nargs="*", help="section.key=value, e.g. fit.rounds=1")
    fi.add_argument("--manifest", type=Path, help="the mixed-label manifest (default: data.manifest or data.labels)")
    fi.add_argument("--out", type=Path, help="the fit's folder: one folder per stage, final/model_final.pth")
    fi.add_argument("--methods", action="store_true", help="list the catalogue of label methods and exit")
    fi.add_argument("--dry-run", action="store_true", help="print the stages and their compute; run nothing")
    add_workers_arg(fi)
    fi.add_argument("--cache", help="folder of prepared per-image labels ($CQBNET_CACHE, ~/.cache/cqbnet; none: off)")
    fi.add_argument(
        "--ray-address", help="prepare the per-image labels as Ray tasks on this cluster (its nodes see the images)"
    )
    fi.add_argument("--quiet", action="store_true", help="no progress bars")
    fi.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    fi.add_argument("--overwrite", action="store_true", help="make again the stages whose inputs changed")
    fi.set_defaults(func=cmd_fit)

    ps = sub.add_parser(
        "pseudo-labels",
        help="paper 003: the dense pseudo labels a trained point branch gives a manifest's point images",
    )
    ps.add_argument("--checkpoint", type=Path, required=True, help="a network trained with model.weak.points on")
    ps.add_argument("--manifest", type=Path, required=True, help="the mixed-label manifest it was trained from")
    add_gt_args(ps)
    ps.add_argument("--out", type=Path, required=True)
    ps.add_argument("--per-class", action="store_true", help="one row per class in the score table")
    ps.add_argument(
        "--crf", action="store_true", help="refine each image's maps with the dense CRF first (beyond paper 003)"
    )
    ps.add_argument(
        "--crf-keep",
        type=at_least(0, float),
        default=0.0,
        help="with --crf: a segment the CRF shrinks below this share of its area keeps its pixels (0: off)",
    )
    ps.add_argument("--no-overlays", action="store_true")
    add_device_and_overwrite(ps)
    ps.set_defaults(func=cmd_pseudo_labels)
