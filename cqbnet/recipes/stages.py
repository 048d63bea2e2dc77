"""The stages a recipe is made of, and how one is run, skipped or refused.

A recipe (paper 001's rounds, paper 003's offline point labels, paper 002's proposals, ``cqbnet fit``'s whole mix)
is a list of :class:`Stage` s, each made in a folder of its own. A stage records ``stage.json``: a fingerprint of
everything it is made from (its network recipe, the images it reads, the stages before it by their fingerprints),
its status, wall seconds, iterations and images. A finished stage with the same fingerprint is not run again; a
training stage resumes from its checkpoint; a stage whose inputs changed is refused (naming the stage and what
changed) unless ``overwrite``, which makes it again.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from cqbnet.errors import InputError
from cqbnet.io import differences, read_json, write_json
from cqbnet.labels.manifest import Manifest

STAGE_RECORD = "stage.json"


@dataclass
class Stage:
    """One step of a recipe: its folder name, what it makes, its compute and how it is made."""

    name: str
    what: str
    iterations: int  # network training iterations (0 for a labels stage)
    batch_size: int
    images: int  # images it trains on or prepares labels for
    inputs: dict[str, Any]  # what it is made from (fingerprinted; upstream stages by their fingerprints)
    make: Callable[[Path], None]

    @property
    def fingerprint(self) -> str:
        return digest(self.inputs)


@dataclass
class Context:
    """What every stage of one recipe run shares: the config, the manifest, the run's folder, where to compute,
    and the fingerprints of the stages planned so far (a later stage is made from them)."""

    cfg: dict[str, Any]
    manifest: Manifest
    out: Path
    device: str = "cpu"
    workers: int = 1
    cache: Path | None = None
    progress: bool = True
    ray_address: str | None = None
    stages: list[Stage] = field(default_factory=list)
    fingerprints: dict[str, str] = field(default_factory=dict)

    def add(self, stage: Stage) -> Stage:
        """Append ``stage`` to the plan."""
        self.stages.append(stage)
        self.fingerprints[stage.name] = stage.fingerprint
        return stage


def digest(obj: Any) -> str:
    """A short digest of a JSON-able object (keys sorted)."""
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
    return digest(manifest.to_json(base))


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
    """A network's config inside a recipe: the recipe's own labels only (no simulated ones) and, for a stage before
    the final network, no evaluation on val or test (only the final network is reported)."""
    out = copy.deepcopy(cfg)
    out["data"].update(labels=None, pseudo_labels=None)
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
    """The ramps of the modules a recipe switches on that the config had off: at half the schedule unless the
    config names them (as the papers' recipe configs do). A module the config already has on keeps its settings,
    so that a recipe of in-network methods trains exactly the network ``cqbnet train`` makes of the same config."""
    from cqbnet.network.build import weak_defaults

    defaults = weak_defaults()
    out = dict(weak)
    for module, key in WARMUPS.items():
        was_on = configured.get(module, defaults[module])
        if out.get(module) and not was_on and key not in configured:
            out[key] = max(1, max_iter // 2)
    return out


def bar(items, total: int, desc: str, show: bool = True):
    """``items`` with a progress bar and ETA (per-image work of a stage)."""
    return tqdm(items, total=total, desc=desc, disable=not show, dynamic_ncols=True)


def network_stage(ctx: Context, name: str, what: str, net_cfg: dict[str, Any], images: Manifest) -> Stage:
    """A network trained on a view of the manifest, which it writes into its folder as ``manifest.json``."""

    def make(folder: Path) -> None:
        from cqbnet.engine.trainer import train

        net_cfg["data"]["manifest"] = str(images.save(folder / "manifest.json").absolute())
        train(net_cfg, folder, ctx.device, resume=True, progress=ctx.progress)

    inputs = {"network": network_recipe(net_cfg), "images": images_digest(images)}
    solve = net_cfg["solver"]
    return Stage(name, what, solve["max_iter"], solve["batch_size"], len(images.images), inputs, make)


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


def run_stages(
    stages: list[Stage],
    out: Path,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
    command: str = "fit",
) -> list[dict[str, Any]]:
    """Run (or finish) every stage in ``out/<stage name>``, in order, saying each one it runs as ``command``'s;
    each stage's record (stage, seconds, iterations, images)."""
    done = []
    for number, stage in enumerate(stages, 1):
        folder = out / stage.name
        if not check_stage(folder, stage, overwrite):
            log(f"{command}: stage {number}/{len(stages)} {stage.name}: {stage.what}")
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
        done.append({k: rec[k] for k in ("stage", "seconds", "iterations", "images")})
    return done
