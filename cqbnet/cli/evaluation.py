"""``cqbnet predict`` and ``cqbnet evaluate``: predictions, pictures and metrics."""

from __future__ import annotations

from pathlib import Path

from cqbnet.cli.common import (
    OVERWRITE_HELP,
    add_gt_args,
    at_least,
    load_gt,
    load_model_args,
)
from cqbnet.errors import InputError


def cmd_predict(args) -> int:
    from cqbnet.data.dataset import IMAGE_SUFFIXES
    from cqbnet.engine.inference import image_items, predict_images, write_predictions
    from cqbnet.io import check_output_dir

    inputs = [args.checkpoint, args.images, args.data, getattr(args, "image_dir", None), getattr(args, "png_dir", None)]
    check_output_dir(args.out, inputs, args.overwrite)  # before any work
    model, cfg, device = load_model_args(args)
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
        gt = load_gt(args)
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
        model, cfg, device = load_model_args(args)
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


def add_commands(sub) -> None:
    """This group's sub-commands."""
    pr = sub.add_parser("predict", help="COCO panoptic predictions (PNG + JSON) and overlay pictures")
    pr.add_argument("--checkpoint", type=Path, required=True, help="model_final.pth or checkpoints/last.pth")
    pr.add_argument("--images", type=Path, help="an image file or a folder of images")
    add_gt_args(pr)
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

    e = sub.add_parser("evaluate", help="PQ/SQ/RQ, mIoU and AP of panoptic predictions")
    e.add_argument("--gt-json", type=Path, required=True)
    e.add_argument("--pred-json", type=Path)
    e.add_argument("--checkpoint", type=Path, help="evaluate a trained model (model_final.pth) instead of files")
    e.add_argument("--image-dir", type=Path, help="with --checkpoint: the images")
    e.add_argument("--mode", choices=["argmax", "heuristic"], default="argmax", help="with --checkpoint")
    e.add_argument("--limit", type=at_least(1), help="with --checkpoint: first N images only")
    e.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    e.add_argument("--gt-dir", type=Path)
    e.add_argument("--pred-dir", type=Path)
    e.add_argument("--categories", type=Path)
    e.add_argument("--workers", type=at_least(1), default=None)
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
