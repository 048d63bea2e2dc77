"""``cqbnet fit``: one final network from any mix of labels, each image learnt with its catalogue method.

The stages a mix needs run once each, in order, every one in a folder of its own inside the fit's folder:

``classifier/``     paper 001's tag classifier (every image with tags, or with masks: their classes), when a
                    boxes-and-tags method is in the mix;
``round0/``         paper 001's approximate labels of those images (thing cues prepared in worker processes and
                    cached, stuff from the classifier's CAMs);
``point-branch/``   a network with paper 003's point branch, trained on the clicked images (and the masked ones),
                    when the offline point recipe is in the mix;
``pseudo-labels/``  its pseudo labels of the clicked images, refined by the dense CRF;
``proposals/``      paper 002's segment proposals of the tags images (worker processes, cached), when ``tags-002`` is
                    in the mix;
``train<r>/``       for each refinement round r before the last: a network of the whole mix on round r, and
``round<r+1>/``     the boxes images' labels refined from it;
``final/``          the final network on every image with what its method gives it (``final/model_final.pth``).

Each stage records ``stage.json``: a fingerprint of everything it is made from (its network recipe, the images it
reads, the stages before it), its status, wall seconds, iterations and images. A finished stage with the same
fingerprint is not run again; a training stage resumes from its checkpoint; a stage whose inputs changed is
refused (naming the stage and what changed) unless ``overwrite``, which redoes it and the stages after it and
keeps the others. ``fit.json`` sums the stages up.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from cqbnet.errors import InputError, where
from cqbnet.io import differences, read_json, write_json
from cqbnet.labels.catalogue import (
    CLASSIFIER,
    POINT_BRANCH,
    PROPOSALS,
    PSEUDO,
    ROUND0,
    Method,
    check_mix,
    final_weak,
    method_of,
)
from cqbnet.labels.manifest import Manifest, load_manifest

STAGE_RECORD = "stage.json"
FIT_RECORD = "fit.json"
FINAL = "final"
# paper 003: lambda_sem is 1 for one click per segment and 0.1 for ten (Sec. 4); from this many clicks on, 0.1
MANY_CLICKS = 5
# the point branch's learning rate as a share of the config's: at the full recipe's 0.02 the network diverges as
# the pseudo labels ramp in (benchmarks/points_collapse.md), at 0.01 it does not
BRANCH_LR = 0.5


@dataclass
class Stage:
    """One step of a fit: its folder name, what it makes, its compute and how it is made."""

    name: str
    what: str
    iterations: int  # network training iterations (0 for a labels stage)
    batch_size: int
    images: int  # images it trains on or prepares labels for
    inputs: dict[str, Any]  # what it is made from (fingerprinted; upstream stages by their fingerprints)
    make: Callable[[Path], None]

    @property
    def fingerprint(self) -> str:
        return _digest(self.inputs)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def network_recipe(cfg: dict[str, Any]) -> dict[str, Any]:
    """What decides a trained network besides its images: model, solver, seed and the training augmentation."""
    d = cfg["data"]
    aug = {k: d.get(k) for k in ("flip", "train_short_sizes", "max_size")}
    model = copy.deepcopy(cfg["model"])
    model.get("weak", {}).pop("jtsm_cache", None)  # where proposals are cached changes no result
    return {"model": model, "solver": cfg["solver"], "seed": cfg["train"]["seed"], "augmentation": aug}


def view(manifest: Manifest, images: list, name: str) -> Manifest:
    """The manifest restricted to ``images`` (same roots and categories)."""
    return dataclasses.replace(manifest, images=images, info={**manifest.info, "view": name})


def images_digest(manifest: Manifest) -> str:
    """A digest of a manifest's labels (its JSON, paths relative to its own folder)."""
    base = manifest.path.parent.absolute() if manifest.path is not None else Path.cwd()
    return _digest(manifest.to_json(base))


def assign_methods(manifest: Manifest) -> dict[int, Method]:
    """Image id -> its catalogue method (its own, else the default for its kinds); errors name the image."""
    out = {
        lab.image_id: method_of(lab.method, lab.kinds, where(manifest.path, lab.image_id)) for lab in manifest.images
    }
    check_mix({m.name for m in out.values()})
    return out


def scaled_solver(solver: dict[str, Any], iterations: int) -> dict[str, Any]:
    """``solver`` at ``iterations``: its warm-up and learning-rate steps scaled by the same factor."""
    f = iterations / solver["max_iter"]
    return {
        **solver,
        "max_iter": iterations,
        "warmup_iters": min(iterations - 1, int(round(solver["warmup_iters"] * f))) if iterations > 1 else 0,
        "steps": [max(1, int(round(s * f))) for s in solver["steps"]],
    }


def stage_config(cfg: dict[str, Any], final: bool = False) -> dict[str, Any]:
    """A network's config inside a fit: the fit's own labels only (no simulated ones) and, for a stage before
    the final network, no evaluation on val or test (only the final network is reported)."""
    out = copy.deepcopy(cfg)
    out["data"].update(labels=None, approximate=None, pseudo=None)
    if not final:
        out["train"]["eval_period"] = 0
        out["train"]["test_at_end"] = False
    return out


# each weak module's ramp: iterations over which its loss or its pseudo labels come in
WARMUPS = {
    "box2mask": "box2mask_warmup",
    "cls2box": "cls2box_warmup",
    "cls2pixel": "cls2pixel_warmup",
    "points": "points_warmup",
    "jtsm": "jtsm_warmup",
}


def with_warmups(weak: dict[str, Any], configured: dict[str, Any], max_iter: int) -> dict[str, Any]:
    """The ramps of the modules a fit switches on that the config had off: at half the schedule unless the config
    names them (as the papers' recipe configs do). A module the config already has on keeps its settings, so that a
    fit of in-network methods trains exactly the network ``cqbnet train`` makes of the same config."""
    from cqbnet.network.build import WeakConfig

    defaults = WeakConfig()
    out = dict(weak)
    for module, key in WARMUPS.items():
        was_on = configured.get(module, getattr(defaults, module))
        if out.get(module) and not was_on and key not in configured:
            out[key] = max(1, max_iter // 2)
    return out


def clicks_per_segment(manifest: Manifest, images: list) -> float:
    """Mean clicks per clicked segment over ``images``."""
    counts = [len(lab.points) / max(1, len({p.segment_id for p in lab.points})) for lab in images if lab.points]
    return float(np.mean(counts)) if counts else 1.0


def bar(items, total: int, desc: str, show: bool = True):
    """``items`` with a progress bar and ETA (per-image work of a stage)."""
    return tqdm(items, total=total, desc=desc, disable=not show, dynamic_ncols=True)


def plan_stages(
    cfg: dict[str, Any],
    manifest: Manifest,
    out: Path,
    device: str = "cpu",
    workers: int = 1,
    cache: Path | None = None,
    progress: bool = True,
    ray_address: str | None = None,
) -> list[Stage]:
    """The stages the manifest's mix needs, in order (nothing is run; see the module docstring). Per-image
    preparation runs in ``workers`` processes, or on the Ray cluster at ``ray_address``."""
    from cqbnet.engine.boxes_tags import classifier_config, tags_view

    fcfg = cfg["fit"]
    methods = assign_methods(manifest)
    used = {m.name for m in methods.values()}
    stages: list[Stage] = []
    labs = manifest.images
    solver = cfg["solver"]
    configured_weak = cfg["model"].get("weak") or {}
    fp: dict[str, str] = {}  # stage -> fingerprint, for the stages after it

    def add(stage: Stage) -> Stage:
        stages.append(stage)
        fp[stage.name] = stage.fingerprint
        return stage

    def network_stage(name: str, what: str, net_cfg: dict[str, Any], images: Manifest) -> Stage:
        """A network trained on a view of the manifest, which it writes into its folder as ``manifest.json``."""

        def make(folder: Path) -> None:
            from cqbnet.engine.trainer import train

            net_cfg["data"]["manifest"] = str(images.save(folder / "manifest.json").absolute())
            train(net_cfg, folder, device, resume=True, progress=progress)

        inputs = {"network": network_recipe(net_cfg), "images": images_digest(images)}
        solve = net_cfg["solver"]
        return Stage(name, what, solve["max_iter"], solve["batch_size"], len(images.images), inputs, make)

    boxes = [lab for lab in labs if ROUND0 in methods[lab.image_id].stages]
    box_method = next((methods[lab.image_id] for lab in boxes), None)
    rounds = 0 if box_method is None else (box_method.rounds if box_method.rounds is not None else fcfg["rounds"])
    if boxes:
        tagged = tags_view(manifest)
        c_cfg = classifier_config(stage_config(cfg), "")
        c_cfg["solver"] = scaled_solver(solver, fcfg["classifier_iter"])
        c_cfg["model"]["weak"] = with_warmups(c_cfg["model"]["weak"], configured_weak, fcfg["classifier_iter"])

        add(network_stage(CLASSIFIER, "paper 001's tag classifier (Sec. 3.3) on every tagged image", c_cfg, tagged))
        box_view = view(manifest, boxes, "boxes and tags")

        def make_round0(folder: Path, box_view=box_view) -> None:
            import torch

            from cqbnet.engine.trainer import load_model
            from cqbnet.fit.prepare import thing_cue_table
            from cqbnet.labels.rounds import write_round
            from cqbnet.weak.approx_ground_truth import round_zero

            ids = [lab.image_id for lab in box_view.images]
            cues = thing_cue_table(box_view, ids, fcfg["cue"], workers, cache, progress, ray_address)
            model, _ = load_model(out / CLASSIFIER / "model_final.pth", torch.device(device))
            entries = round_zero(box_view, model, torch.device(device), fcfg["cue"], cues=cues)
            entries = bar(entries, len(ids), ROUND0, progress)
            write_round(folder / "labels", entries, f"round 0, cue {fcfg['cue']}", overwrite=True)

        add(
            Stage(
                ROUND0,
                "paper 001's approximate labels: thing cues per box, stuff from the CAMs",
                0,
                0,
                len(boxes),
                {"images": images_digest(box_view), "cue": fcfg["cue"], "classifier": fp[CLASSIFIER]},
                make_round0,
            )
        )

    clicked = [lab for lab in labs if POINT_BRANCH in methods[lab.image_id].stages]
    if clicked:
        masked = [lab for lab in labs if methods[lab.image_id].name == "full"]
        branch_view = view(manifest, clicked + masked, "clicked and masked images")
        b_cfg = stage_config(cfg)
        lam = 0.1 if clicks_per_segment(manifest, clicked) >= MANY_CLICKS else 1.0
        weak = {**configured_weak, "points": True, "points_clicked_only": True, "points_lambda_sem": lam}
        b_cfg["model"]["weak"] = with_warmups(weak, configured_weak, solver["max_iter"])
        b_cfg["solver"]["base_lr"] = solver["base_lr"] * BRANCH_LR

        what = "paper 003's point branch, trained on the clicks (clicked parts only)"
        add(network_stage(POINT_BRANCH, what, b_cfg, branch_view))

        def make_pseudo(folder: Path, branch_view=branch_view) -> None:
            import torch

            from cqbnet.engine.inference import write_predictions
            from cqbnet.engine.trainer import load_model
            from cqbnet.labels.dataset import MixedLabelDataset
            from cqbnet.weak.fdd_points import pseudo_label_items

            dev = torch.device(device)
            model, _ = load_model(out / POINT_BRANCH / "model_final.pth", dev)
            dataset = MixedLabelDataset(out / POINT_BRANCH / "manifest.json")
            items = pseudo_label_items(model, dataset, dev, crf=True)
            items = bar(items, len(clicked), f"{PSEUDO} (dense CRF)", progress)
            write_predictions(folder / "labels", items, dataset.categories, overlays=False, overwrite=True)

        add(
            Stage(
                PSEUDO,
                "the point branch's pseudo labels of the clicked images, refined by the dense CRF",
                0,
                0,
                len(clicked),
                {"branch": fp[POINT_BRANCH], "crf": True},
                make_pseudo,
            )
        )

    mined = [lab for lab in labs if PROPOSALS in methods[lab.image_id].stages]
    proposals = (cache / "segment_proposals") if cache is not None else (out / PROPOSALS)
    if mined and not cfg["data"].get("train_short_sizes"):  # resized copies get theirs as the network meets them

        def make_proposals(folder: Path, mined=mined) -> None:
            from cqbnet.fit.prepare import segment_proposal_files

            ids = [lab.image_id for lab in mined]
            flip = bool(cfg["data"]["flip"])
            segment_proposal_files(manifest, ids, proposals, flip, workers, progress, ray_address)

        what = "paper 002's segment proposals of the tags images (and their mirror images)"
        add(
            Stage(
                PROPOSALS, what, 0, 0, len(mined), {"images": _digest([lab.image_id for lab in mined])}, make_proposals
            )
        )

    factor = min(m.lr_factor for m in methods.values())
    for r in range(rounds + 1):
        last = r == rounds
        n_cfg = stage_config(cfg, final=last)
        n_cfg["data"]["manifest"] = str(manifest.path.absolute())
        n_cfg["model"]["weak"] = with_warmups(final_weak(used, configured_weak), configured_weak, solver["max_iter"])
        if mined and not configured_weak.get("jtsm_cache"):  # the proposals made above, shared by every network
            n_cfg["model"]["weak"]["jtsm_cache"] = str(proposals.absolute())
        n_cfg["solver"]["base_lr"] = solver["base_lr"] * factor
        labels = {}
        if boxes:
            n_cfg["data"]["approximate"] = str((out / f"round{r}" / "labels").absolute())
            labels["approximate"] = fp[f"round{r}"]
        if clicked:
            n_cfg["data"]["pseudo"] = str((out / PSEUDO / "labels").absolute())
            labels["pseudo"] = fp[PSEUDO]
        name = FINAL if last else f"train{r}"

        def make_network(folder: Path, n_cfg=n_cfg) -> None:
            from cqbnet.engine.trainer import train

            train(n_cfg, folder, device, resume=True, progress=progress)

        add(
            Stage(
                name,
                "the final network on every image" if last else f"a network of the whole mix on round {r}'s labels",
                solver["max_iter"],
                solver["batch_size"],
                len(labs),
                {"network": network_recipe(n_cfg), "images": images_digest(manifest), **labels},
                make_network,
            )
        )
        if not last:

            def make_round(folder: Path, r=r, box_view=box_view) -> None:
                import torch

                from cqbnet.engine.trainer import load_model
                from cqbnet.labels.rounds import ApproximateRound, write_round
                from cqbnet.weak.approx_ground_truth import refine_round

                dev = torch.device(device)
                model, _ = load_model(out / f"train{r}" / "model_final.pth", dev)
                cues = ApproximateRound.load(out / ROUND0 / "labels")
                refined = bar(
                    refine_round(model, box_view, cues, dev, fill=box_method.fill), len(boxes), f"round{r + 1}"
                )
                source = f"refined, round {r + 1}, fill {box_method.fill}"
                write_round(folder / "labels", refined, source, overwrite=True)

            add(
                Stage(
                    f"round{r + 1}",
                    f"paper 001's labels refined from train{r} (fill {box_method.fill})",
                    0,
                    0,
                    len(boxes),
                    {"network": fp[f"train{r}"], "round0": fp[ROUND0], "fill": box_method.fill},
                    make_round,
                )
            )
    return stages


def check_stage(folder: Path, stage: Stage, overwrite: bool) -> bool:
    """Whether ``stage`` is finished in ``folder``. A folder made from other inputs is an error naming the stage
    and what changed, unless ``overwrite`` (then it is removed, to be made again)."""
    record = folder / STAGE_RECORD
    if not folder.exists():
        return False
    if not record.is_file():
        if any(folder.iterdir()):
            raise InputError(f"{folder}: stage {stage.name} holds files cqbnet did not record; remove them or --out")
        return False
    rec = read_json(record, "stage record")
    if rec.get("fingerprint") != stage.fingerprint:
        if not overwrite:
            diff = differences(rec.get("inputs"), json.loads(json.dumps(stage.inputs, default=str)))
            shown = "; ".join(d[:160] for d in diff[:2]) or "its inputs"
            raise InputError(
                f"{folder}: stage {stage.name} was made from other inputs ({shown}); "
                "rerun with --overwrite to make it and the stages after it again"
            )
        shutil.rmtree(folder)
        return False
    return rec.get("status") == "done"


def run_fit(
    cfg: dict[str, Any],
    manifest_path: Path,
    out: Path,
    device: str = "cpu",
    workers: int = 1,
    cache: Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    ray_address: str | None = None,
) -> dict[str, Any]:
    """Run (or finish) every stage of the fit; ``fit.json``'s content (each stage's compute, the final weights)."""
    from cqbnet.engine.data import shared_data_config

    cfg = shared_data_config(cfg, out)  # generated scenes (if asked for) once, in out/data, for every stage
    manifest = load_manifest(manifest_path)
    stages = plan_stages(cfg, manifest, out, device, workers, cache, progress, ray_address)
    summary: dict[str, Any] = {"manifest": str(manifest_path), "methods": method_counts(manifest), "stages": []}
    for number, stage in enumerate(stages, 1):
        folder = out / stage.name
        if not check_stage(folder, stage, overwrite):
            log(f"fit: stage {number}/{len(stages)} {stage.name}: {stage.what}")
            folder.mkdir(parents=True, exist_ok=True)
            rec = folder / STAGE_RECORD
            before = read_json(rec).get("seconds", 0.0) if rec.is_file() else 0.0  # resumed: time spent before
            head = {"stage": stage.name, "fingerprint": stage.fingerprint, "inputs": stage.inputs}
            write_json(rec, {**head, "status": "running", "seconds": before}, indent=2)
            t = time.time()
            stage.make(folder)
            write_json(
                rec,
                {
                    **head,
                    "status": "done",
                    "seconds": before + time.time() - t,
                    "iterations": stage.iterations,
                    "images": stage.images,
                },
                indent=2,
            )
        rec = read_json(folder / STAGE_RECORD)
        summary["stages"].append({k: rec[k] for k in ("stage", "seconds", "iterations", "images")})
    summary["iterations"] = sum(s["iterations"] for s in summary["stages"])
    summary["networks"] = sum(s["iterations"] > 0 for s in summary["stages"])
    summary["final"] = str(out / FINAL / "model_final.pth")
    test = out / FINAL / "test_metrics.json"
    summary["test"] = read_json(test) if test.is_file() else None
    write_json(out / FIT_RECORD, summary, indent=2)
    return summary


def method_counts(manifest: Manifest) -> dict[str, int]:
    """Images per method."""
    counts: dict[str, int] = {}
    for m in assign_methods(manifest).values():
        counts[m.name] = counts.get(m.name, 0) + 1
    return counts


def dry_run_lines(stages: list[Stage], manifest: Manifest) -> list[str]:
    """``cqbnet fit --dry-run``: the methods, the stages and their compute."""
    lines = ["images per method: " + ", ".join(f"{k} {v}" for k, v in method_counts(manifest).items()), ""]
    lines.append(f"{'stage':<15} {'iterations':>10} {'batch':>6} {'images':>7}  what")
    for s in stages:
        its = str(s.iterations) if s.iterations else "-"
        batch = str(s.batch_size) if s.iterations else "-"
        lines.append(f"{s.name:<15} {its:>10} {batch:>6} {s.images:>7}  {s.what}")
    total = sum(s.iterations for s in stages)
    nets = sum(s.iterations > 0 for s in stages)
    lines.append(f"total: {nets} network(s), {total} training iterations")
    return lines
