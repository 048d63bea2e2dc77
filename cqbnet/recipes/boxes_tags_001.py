"""Paper 001's recipe: panoptic labels approximated from boxes and tags, then refined by the networks trained on
them. Its model switches (:func:`network_config`, :func:`classifier_config`), its stages inside ``cqbnet fit``
(:func:`classifier_and_round_zero`, :func:`refined_round`) and its own command, ``cqbnet boxes-tags``
(:func:`run_boxes_tags`), which runs the recipe alone, resumable between rounds, with its ablations.

``cqbnet boxes-tags`` writes into ``out``: ``classifier/`` paper 001's multi-label classifier (Sec. 3.3, Eq. 6:
the network's backbone and semantic features, global average pooling and a linear layer, trained on the images'
tags alone), whose CAMs localise the tagged stuff; ``round0/`` the approximate labels
(:func:`~cqbnet.weak.approx_ground_truth.round_zero`); ``train0/`` the network trained on them; then for each
refinement round r, ``round<r>_fill-predicted/`` the labels refined from the last network
(:func:`~cqbnet.weak.approx_ground_truth.refine_round`, the default fill rule) and ``train<r>_fill-predicted/`` the
network trained on them (``round<r>/`` and ``train<r>/`` with the released code's whole-box rule, ``fill="box"``;
every folder of a run that marks the box background for the mask and semantic heads ends in ``_box-background``,
from ``round0`` on). A step whose output is complete is not run again; an interrupted training resumes from its
checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import torch

from cqbnet.labels.catalogue import CLASSIFIER, PAPER_000_MODULES, ROUND0, Method
from cqbnet.labels.manifest import Manifest, load_manifest
from cqbnet.labels.rounds import ApproximateRound, write_round
from cqbnet.recipes.stages import (
    Context,
    Stage,
    bar,
    images_digest,
    network_stage,
    scaled_solver,
    stage_config,
    view,
    with_warmups,
)
from cqbnet.weak.approx_ground_truth import DEFAULT_FILL, refine_round, round_zero, score_round


def network_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The config of the networks ``cqbnet boxes-tags`` trains on the approximate labels: ``cfg`` with paper 000's
    weak modules off (paper 001 trains a plain panoptic network on its labels; so were they measured,
    benchmarks/boxes_tags.md)."""
    out = copy.deepcopy(cfg)
    out["model"]["weak"] = {**(out["model"].get("weak") or {}), **{m: False for m in PAPER_000_MODULES}}
    return out


def trained(cfg: dict[str, Any], out: Path, device: str = "cpu") -> Path:
    """The final weights of a training run into ``out``, training (or finishing) it first when they are missing."""
    from cqbnet.engine.trainer import train

    if not (out / "model_final.pth").is_file():
        train(cfg, out, device, resume=True, progress=False)
    return out / "model_final.pth"


def tags_view(manifest) -> Manifest:
    """The manifest's images with their tags as their only label (kind I), so that a network trained on it learns
    nothing but the tags. A panoptic image without tags is tagged with the classes of its segments; an image with
    neither is left out."""
    images = []
    for lab in manifest.images:
        tags = lab.tags
        if tags is None and lab.panoptic is not None:
            tags = sorted({s.category_id for s in lab.panoptic.segments})
        if tags is not None:
            images.append(
                dataclasses.replace(
                    lab,
                    kinds=frozenset({"I"}),
                    tags=list(tags),
                    boxes=None,
                    panoptic=None,
                    stuff_map=None,
                    points=None,
                    method=None,
                )
            )
    return dataclasses.replace(manifest, images=images, info={**manifest.info, "view": "tags only"})


def tags_only(manifest, out: Path) -> Path:
    """Write ``out``: the manifest's tags-only view (:func:`tags_view`)."""
    return tags_view(manifest).save(out)


def classifier_config(cfg: dict[str, Any], manifest: Path) -> dict[str, Any]:
    """The config of paper 001's tag classifier (Sec. 3.3): ``cfg``'s network and schedule with every weak module
    off but Cls2Pixel, and of Cls2Pixel only its classification loss L_cls (Eq. 6 of paper 001) on, trained on
    the tags-only view ``manifest``. Its image scores are a linear layer over the globally averaged semantic
    features, so its CAMs are paper 001's Grad-CAMs up to a positive factor per class. It is not a panoptic
    network, so it is never evaluated as one (no val or test PQ)."""
    out = copy.deepcopy(cfg)
    out.setdefault("train", {}).update(eval_period=0, test_at_end=False)
    weak = out["model"].setdefault("weak", {})
    for key in ("box2mask", "cls2box", "relation", "points", "jtsm"):
        weak[key] = False
    weak.update(cls2pixel=True, cls2pixel_pseudo=False, cls2pixel_energy=False, cls2pixel_tag_consistency=False)
    out["data"]["manifest"] = str(manifest)
    out["data"]["pseudo_labels"] = None
    return out


def write_round_zero(
    images: Manifest,
    classifier: Path,
    folder: Path,
    cue: str,
    device: str = "cpu",
    workers: int = 1,
    cache: Path | None = None,
    ray_address: str | None = None,
    box_background: bool = False,
    progress: bool = False,
    overwrite: bool = False,
) -> Path:
    """Round 0 of the boxes images of ``images`` into ``folder``: things from their boxes (``cue``; the thing cues
    prepared in ``workers`` processes, or on the Ray cluster at ``ray_address``, and cached in ``cache``), stuff
    from the CAMs of the trained ``classifier``."""
    from cqbnet.engine.trainer import load_model
    from cqbnet.recipes.prepare import thing_cue_table

    boxed = [lab.image_id for lab in images.images if "B" in lab.kinds and "P" not in lab.kinds]
    cues = thing_cue_table(images, boxed, cue, workers, cache, progress, ray_address)
    dev = torch.device(device)
    model, _ = load_model(classifier, dev)
    entries = round_zero(images, model, dev, cue, box_background=box_background, cues=cues)
    n = len(boxed)
    source = f"round 0, cue {cue}" + (", box background" if box_background else "")
    return write_round(folder, bar(entries, n, ROUND0, progress), source, overwrite=overwrite)


def write_refined_round(
    images: Manifest,
    network: Path,
    round0: Path,
    folder: Path,
    r: int,
    fill: str,
    device: str = "cpu",
    progress: bool = False,
    overwrite: bool = False,
) -> Path:
    """Round ``r`` of the boxes images of ``images`` into ``folder``: the trained ``network``'s predictions refined
    against round 0's cues (``round0``) with rule 5's ``fill``."""
    from cqbnet.engine.trainer import load_model

    dev = torch.device(device)
    model, _ = load_model(network, dev)
    refined = refine_round(model, images, ApproximateRound.load(round0), dev, fill=fill)
    n = sum("B" in lab.kinds for lab in images.images)
    source = f"refined, round {r}, fill {fill}"
    return write_round(folder, bar(refined, n, f"round{r}", progress), source, overwrite=overwrite)


def run_boxes_tags(
    cfg: dict[str, Any],
    cam_cfg: dict[str, Any],
    manifest: Path,
    out: Path,
    rounds: int = 1,
    cue: str = "both",
    device: str = "cpu",
    gt=None,
    fill: str = DEFAULT_FILL,
    box_background: bool = False,
    workers: int = 1,
) -> list[dict[str, Any]]:
    """Run (or finish) the recipe; one entry per round: its labels' folder, the network trained on them and, when
    the ground truth ``gt`` is given, the labels' score (``score.json`` in the labels' folder). ``fill`` is the
    refinement's low-coverage rule (:func:`~cqbnet.weak.approx_ground_truth.clean_prediction`); round 0 and its
    network are shared by every fill rule. ``box_background``: round 0 marks the box background for the mask and
    semantic heads (:func:`~cqbnet.weak.approx_ground_truth.round_zero`) and every later round keeps it.
    ``workers``: processes preparing round 0's thing cues (the labels do not depend on their number)."""
    from cqbnet.io import read_json, write_json

    out = Path(out)
    cfg = network_config(cfg)
    labels_of = load_manifest(manifest)
    base = ("" if cue == "both" else f"_{cue}") + ("_box-background" if box_background else "")
    r0 = out / f"round0{base}"
    if not (r0 / "labels.json").is_file():
        view = out / "classifier" / "tags_only.json"
        if not view.is_file():
            view.parent.mkdir(parents=True, exist_ok=True)
            tags_only(labels_of, view)
        classifier = trained(classifier_config(cam_cfg, view), out / "classifier", device)
        write_round_zero(labels_of, classifier, r0, cue, device, workers, box_background=box_background)
    done, labels = [], r0
    variant = "" if fill == "box" else f"_fill-{fill}"
    for r in range(rounds + 1):
        if r > 0:
            nxt = out / f"round{r}{base}{variant}"
            if not (nxt / "labels.json").is_file():
                write_refined_round(labels_of, done[-1]["checkpoint"], r0, nxt, r, fill, device)
            labels = nxt
        entry: dict[str, Any] = {"round": r, "labels": labels}
        if gt is not None:
            if not (labels / "score.json").is_file():
                write_json(labels / "score.json", score_round(ApproximateRound.load(labels), labels_of, gt), indent=2)
            entry["score"] = read_json(labels / "score.json")
        run_cfg = copy.deepcopy(cfg)
        run_cfg["data"]["manifest"], run_cfg["data"]["pseudo_labels"] = str(manifest), str(labels)
        name = f"train{r}{base}" + (variant if r > 0 else "")
        entry["checkpoint"] = trained(run_cfg, out / name, device)
        entry["run"] = out / name
        done.append(entry)
    return done


def classifier_and_round_zero(ctx: Context, boxes: list, cue: str, classifier_iter: int) -> Manifest:
    """``cqbnet fit``'s first two stages of the method: the tag classifier on every tagged image (masked images
    tagged with their classes) and round 0 of the ``boxes`` images, whose thing cues are prepared in worker
    processes and cached. The boxes images' view of the manifest, for the refinement rounds."""
    configured = ctx.cfg["model"].get("weak") or {}
    c_cfg = classifier_config(stage_config(ctx.cfg), "")
    c_cfg["solver"] = scaled_solver(ctx.cfg["solver"], classifier_iter)
    c_cfg["model"]["weak"] = with_warmups(c_cfg["model"]["weak"], configured, classifier_iter)
    what = "paper 001's tag classifier (Sec. 3.3) on every tagged image"
    ctx.add(network_stage(ctx, CLASSIFIER, what, c_cfg, tags_view(ctx.manifest)))
    box_view = view(ctx.manifest, boxes, "boxes and tags")

    def make(folder: Path) -> None:
        classifier = ctx.out / CLASSIFIER / "model_final.pth"
        write_round_zero(
            box_view,
            classifier,
            folder / "labels",
            cue,
            ctx.device,
            ctx.workers,
            ctx.cache,
            ctx.ray_address,
            progress=ctx.progress,
            overwrite=True,
        )

    inputs = {"images": images_digest(box_view), "cue": cue, "classifier": ctx.fingerprints[CLASSIFIER]}
    what = "paper 001's approximate labels: thing cues per box, stuff from the CAMs"
    ctx.add(Stage(ROUND0, what, 0, 0, len(boxes), inputs, make))
    return box_view


def refined_round(ctx: Context, r: int, box_view: Manifest, method: Method) -> None:
    """``cqbnet fit``'s stage ``round<r+1>``: the boxes images' labels refined from the network ``train<r>``."""

    def make(folder: Path) -> None:
        network = ctx.out / f"train{r}" / "model_final.pth"
        round0 = ctx.out / ROUND0 / "labels"
        write_refined_round(
            box_view, network, round0, folder / "labels", r + 1, method.fill, ctx.device, ctx.progress, overwrite=True
        )

    inputs = {"network": ctx.fingerprints[f"train{r}"], "round0": ctx.fingerprints[ROUND0], "fill": method.fill}
    what = f"paper 001's labels refined from train{r} (fill {method.fill})"
    ctx.add(Stage(f"round{r + 1}", what, 0, 0, len(box_view.images), inputs, make))
