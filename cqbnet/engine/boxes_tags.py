"""Paper 001's whole recipe from a manifest of boxes-and-tags images, resumable between rounds (``cqbnet
boxes-tags``).

Into ``out``: ``classifier/`` paper 001's multi-label classifier (Sec. 3.3, Eq. 6: the network's backbone and
semantic features, global average pooling and a linear layer, trained on the images' tags alone), whose CAMs
localise the tagged stuff;
``round0/`` the approximate labels (:func:`~cqbnet.weak.approx_ground_truth.round_zero`); ``train0/`` the network
trained on them; then for each refinement round r, ``round<r>_fill-predicted/`` the labels refined from the
last network (:func:`~cqbnet.weak.approx_ground_truth.refine_round`, the default fill rule) and
``train<r>_fill-predicted/`` the network trained on them (``round<r>/`` and ``train<r>/`` with the released code's
whole-box rule, ``fill="box"``; every folder
of a run that marks the box background for the mask and semantic heads ends in ``_box-background``, from
``round0`` on). A step whose output is complete is not run again; an interrupted training resumes from its
checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import torch

from cqbnet.labels.manifest import Manifest, load_manifest
from cqbnet.labels.rounds import ApproximateRound, write_round
from cqbnet.weak.approx_ground_truth import DEFAULT_FILL, refine_round, round_zero, score_round


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
    features, so its CAMs are paper 001's Grad-CAMs up to a positive factor per class."""
    out = copy.deepcopy(cfg)
    weak = out["model"].setdefault("weak", {})
    for key in ("box2mask", "cls2box", "relation", "points", "jtsm"):
        weak[key] = False
    weak.update(cls2pixel=True, cls2pixel_pseudo=False, cls2pixel_energy=False, cls2pixel_tag_consistency=False)
    out["data"]["manifest"] = str(manifest)
    out["data"].pop("approximate", None)
    return out


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
) -> list[dict[str, Any]]:
    """Run (or finish) the recipe; one entry per round: its labels' folder, the network trained on them and, when
    the ground truth ``gt`` is given, the labels' score (``score.json`` in the labels' folder). ``fill`` is the
    refinement's low-coverage rule (:func:`~cqbnet.weak.approx_ground_truth.clean_prediction`); round 0 and its
    network are shared by every fill rule. ``box_background``: round 0 marks the box background for the mask and
    semantic heads (:func:`~cqbnet.weak.approx_ground_truth.round_zero`) and every later round keeps it."""
    from cqbnet.engine.trainer import load_model
    from cqbnet.io import read_json, write_json

    out = Path(out)
    labels_of = load_manifest(manifest)
    dev = torch.device(device)
    base = ("" if cue == "both" else f"_{cue}") + ("_box-background" if box_background else "")
    r0 = out / f"round0{base}"
    if not (r0 / "labels.json").is_file():
        view = out / "classifier" / "tags_only.json"
        if not view.is_file():
            view.parent.mkdir(parents=True, exist_ok=True)
            tags_only(labels_of, view)
        model, _ = load_model(trained(classifier_config(cam_cfg, view), out / "classifier", device), dev)
        entries = round_zero(labels_of, model, dev, cue, box_background=box_background)
        write_round(r0, entries, f"round 0, cue {cue}" + (", box background" if box_background else ""))
    done, labels = [], r0
    variant = "" if fill == "box" else f"_fill-{fill}"
    for r in range(rounds + 1):
        if r > 0:
            nxt = out / f"round{r}{base}{variant}"
            if not (nxt / "labels.json").is_file():
                model, _ = load_model(done[-1]["checkpoint"], dev)
                refined = refine_round(model, labels_of, ApproximateRound.load(r0), dev, fill=fill)
                write_round(nxt, refined, f"refined, round {r}, fill {fill}")
            labels = nxt
        entry: dict[str, Any] = {"round": r, "labels": labels}
        if gt is not None:
            if not (labels / "score.json").is_file():
                write_json(labels / "score.json", score_round(ApproximateRound.load(labels), labels_of, gt), indent=2)
            entry["score"] = read_json(labels / "score.json")
        run_cfg = copy.deepcopy(cfg)
        run_cfg["data"]["manifest"], run_cfg["data"]["approximate"] = str(manifest), str(labels)
        name = f"train{r}{base}" + (variant if r > 0 else "")
        entry["checkpoint"] = trained(run_cfg, out / name, device)
        entry["run"] = out / name
        done.append(entry)
    return done
