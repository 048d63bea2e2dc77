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

Each method's stages are written in its recipe's file (:mod:`cqbnet.recipes.boxes_tags_001`,
:mod:`cqbnet.recipes.points_offline_003`, :mod:`cqbnet.recipes.tags_002`); how a stage is run, skipped after it
finished or refused when its inputs changed is :mod:`cqbnet.recipes.stages` (``--overwrite`` redoes a changed stage
and the stages after it and keeps the others). ``fit.json`` sums the stages up.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cqbnet.errors import where
from cqbnet.io import read_json, write_json
from cqbnet.labels.catalogue import POINT_BRANCH, PROPOSALS, PSEUDO, ROUND0, Method, check_mix, final_weak, method_of
from cqbnet.labels.manifest import Manifest, load_manifest
from cqbnet.recipes import boxes_tags_001, points_offline_003, tags_002
from cqbnet.recipes.stages import Context, Stage, images_digest, network_recipe, run_stages, stage_config, with_warmups

FIT_RECORD = "fit.json"
FINAL = "final"


def assign_methods(manifest: Manifest) -> dict[int, Method]:
    """Image id -> its catalogue method (its own, else the default for its kinds); errors name the image."""
    out = {
        lab.image_id: method_of(lab.method, lab.kinds, where(manifest.path, lab.image_id)) for lab in manifest.images
    }
    check_mix({m.name for m in out.values()})
    return out


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
    ctx = Context(cfg, manifest, out, device, workers, cache, progress, ray_address)
    fcfg, solver = cfg["fit"], cfg["solver"]
    methods = assign_methods(manifest)
    labs = manifest.images
    configured_weak = cfg["model"].get("weak") or {}

    boxes = [lab for lab in labs if ROUND0 in methods[lab.image_id].stages]
    box_method = next((methods[lab.image_id] for lab in boxes), None)
    rounds = 0 if box_method is None else (box_method.rounds if box_method.rounds is not None else fcfg["rounds"])
    if boxes:
        box_view = boxes_tags_001.classifier_and_round_zero(ctx, boxes, fcfg["cue"], fcfg["classifier_iter"])
    clicked = [lab for lab in labs if POINT_BRANCH in methods[lab.image_id].stages]
    if clicked:
        masked = [lab for lab in labs if methods[lab.image_id].name == "full"]
        points_offline_003.branch_and_pseudo_labels(ctx, clicked, masked)
    mined = [lab for lab in labs if PROPOSALS in methods[lab.image_id].stages]
    proposals = tags_002.proposals(ctx, mined) if mined else None

    factor = min(m.lr_factor for m in methods.values())
    weak = with_warmups(
        final_weak({m.name for m in methods.values()}, configured_weak), configured_weak, solver["max_iter"]
    )
    if proposals is not None and not configured_weak.get("jtsm_cache"):  # made above, shared by every network
        weak["jtsm_cache"] = str(proposals.absolute())
    for r in range(rounds + 1):
        last = r == rounds
        n_cfg = stage_config(cfg, final=last)
        n_cfg["data"]["manifest"] = str(manifest.path.absolute())
        n_cfg["model"]["weak"] = dict(weak)
        n_cfg["solver"]["base_lr"] = solver["base_lr"] * factor
        pseudo, labels = [], {}
        if boxes:
            pseudo.append(str((out / f"round{r}" / "labels").absolute()))
            labels["approximate"] = ctx.fingerprints[f"round{r}"]
        if clicked:
            pseudo.append(str((out / PSEUDO / "labels").absolute()))
            labels["pseudo"] = ctx.fingerprints[PSEUDO]
        n_cfg["data"]["pseudo_labels"] = pseudo or None
        name = FINAL if last else f"train{r}"

        def make_network(folder: Path, n_cfg=n_cfg) -> None:
            from cqbnet.engine.trainer import train

            train(n_cfg, folder, device, resume=True, progress=progress)

        what = "the final network on every image" if last else f"a network of the whole mix on round {r}'s labels"
        inputs = {"network": network_recipe(n_cfg), "images": images_digest(manifest), **labels}
        ctx.add(Stage(name, what, solver["max_iter"], solver["batch_size"], len(labs), inputs, make_network))
        if not last:
            boxes_tags_001.refined_round(ctx, r, box_view, box_method)
    return ctx.stages


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
    summary: dict[str, Any] = {"manifest": str(manifest_path), "methods": method_counts(manifest)}
    summary["stages"] = run_stages(stages, out, overwrite, log, "fit")
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
