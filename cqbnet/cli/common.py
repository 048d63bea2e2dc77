"""Helpers shared by the command groups: common arguments, devices, inputs and the ground truth."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from cqbnet.errors import InputError


def add_gt_args(p: argparse.ArgumentParser, required_json: bool = False) -> None:
    g = p.add_argument_group("ground truth (COCO panoptic)")
    g.add_argument("--data", type=Path, help="a folder made by 'cqbnet data synth' (sets the three paths below)")
    g.add_argument("--split", default="train", help="split of --data (default: train)")
    g.add_argument("--gt-json", type=Path, help="panoptic JSON")
    g.add_argument("--png-dir", type=Path, help="panoptic PNG folder (default: JSON path without .json)")
    g.add_argument("--image-dir", type=Path, help="image folder")
    g.add_argument("--categories", type=Path, help="categories JSON, when the panoptic JSON has none")


def add_fill_arg(p: argparse.ArgumentParser) -> None:
    # the rules and default of cqbnet.weak.approx_ground_truth (FILL_RULES, DEFAULT_FILL), written out so that
    # building the parser imports no torch; a test holds them equal
    p.add_argument(
        "--fill",
        default="predicted",
        choices=["box", "predicted"],
        help="refinement's low-coverage rule: fill only the box's predicted pixels (default) or the whole box (paper "
        "001's released code)",
    )


def add_box_background_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--box-background",
        action="store_true",
        help="box pixels every cue calls background: the mask head's background, not the box's class (else ignore)",
    )


OVERWRITE_HELP = "replace what cqbnet wrote in an existing --out (files it did not write are kept)"


def add_workers_arg(p: argparse.ArgumentParser) -> None:
    """``--workers``: processes preparing labels per image (the result does not depend on their number)."""
    p.add_argument("--workers", type=at_least(1), help="processes preparing labels per image (default: the cores)")


def workers_of(args) -> int:
    """``--workers``, else every core this process may use."""
    from cqbnet.recipes.prepare import default_workers

    return args.workers or default_workers()


def add_device_and_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)


def gt_paths(args) -> tuple[Path, Path | None, Path | None]:
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


def load_gt(args):
    from cqbnet.data.panoptic_format import load_panoptic_json

    j, png, img = gt_paths(args)
    return load_panoptic_json(j, png, img, categories=args.categories)


def cost_model(args):
    from cqbnet.labels.costs import CostModel

    return CostModel.from_yaml(args.costs) if args.costs else CostModel()


def resolve_device(name: str | None) -> str:
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


def after_failed_training(out: Path, new: bool, hint: bool = True) -> None:
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


def recipe_of(cfg: dict) -> dict:
    """What decides a network: its model, solver and seed (paths, logging and evaluation left out)."""
    return {"model": cfg["model"], "solver": cfg["solver"], "seed": cfg["train"]["seed"]}


def load_model_args(args):
    import torch

    from cqbnet.engine.trainer import load_model

    device = torch.device(resolve_device(args.device))
    model, cfg = load_model(args.checkpoint, device)
    return model, cfg, device


def command_inputs(args) -> list[Path]:
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


def at_least(low: float, cast=int):
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
