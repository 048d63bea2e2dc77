"""Run many independent training runs through Ray: local by default, a cluster when given its address.

Each run (:class:`~cqbnet.sweep.protocol.RunSpec`) lives in ``ROOT/runs/<key>/``: its simulated labels, its
training checkpoints and, once evaluated, ``result.json``. A run is therefore resumable at every level: a
finished run is never trained again (its ``result.json`` is there), an interrupted one continues from its last
checkpoint (the trainer's exact resume), and labels are simulated once. The scenes are generated once, into
``ROOT/data``, before any run starts. On a cluster, ``ROOT`` must be a folder every node sees.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cqbnet.data.panoptic_format import load_panoptic_json
from cqbnet.engine.data import dataset_paths, load_split, shared_data_config
from cqbnet.errors import InputError
from cqbnet.io import atomic_path, differences, read_json, write_json
from cqbnet.labels.kinds import parse_kind_set
from cqbnet.sweep.protocol import MODULES, POINTS, RunSpec

RESULT = "result.json"  # the run on val (what sweeps and pilots choose by); on test: result_test.json
RECIPE = "recipe.json"  # what decides a run's network: its model, solver and point simulation (see check_recipe)
IMAGE_COUNTS = "image_counts.npz"  # per val image and class: IoU sum, TP, FP, FN, for each inference mode


def write_image_counts(path: Path, categories: dict, counts: dict[str, np.ndarray]) -> None:
    """Each inference mode's (N, C, 4) per-image counts with the category ids and thing flags, written atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(
                f,
                category_ids=np.array(list(categories), dtype=np.int64),
                isthing=np.array([c.isthing for c in categories.values()], dtype=bool),
                **counts,
            )


def read_image_counts(path: Path) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(category ids, thing flags, {mode: (N, C, 4) counts}) as :func:`write_image_counts` wrote them."""
    with np.load(path) as z:
        modes = {k: z[k] for k in z.files if k not in ("category_ids", "isthing")}
        return z["category_ids"], z["isthing"], modes


class SweepFailed(RuntimeError):
    """Some runs of a sweep raised; the message names each by key with its last error line."""


def prepare_labels(
    spec: RunSpec, cfg: dict[str, Any], out: Path, points_per_segment: int = 1, point_sampling: str = "uniform"
) -> Path:
    """Simulate the run's labels from the training split's ground truth (once); the manifest's path."""
    from cqbnet.labels.simulate import simulate

    target = out / "labels" / "manifest.json"
    if target.is_file():
        return target
    j, png, img = dataset_paths(cfg["data"], "train", out)
    gt = load_panoptic_json(j, png, img)
    ratio = {parse_kind_set(k): v for k, v in spec.ratio}
    methods = {parse_kind_set(k): m for k, m in spec.methods}
    simulate(
        gt,
        ratio,
        out / "labels",
        seed=spec.seed,
        points_per_segment=points_per_segment,
        point_sampling=point_sampling,
        methods=methods or None,
    )
    return target


def run_config(cfg: dict[str, Any], spec: RunSpec, manifest: Path) -> dict[str, Any]:
    """The training config of one run: the shared recipe with the run's labels, modules and seed."""
    cfg = copy.deepcopy(cfg)
    cfg["data"]["manifest"] = str(manifest)
    switches = {m: m in spec.modules for m in (*MODULES, POINTS)}
    cfg["model"]["weak"] = {**(cfg["model"].get("weak") or {}), **switches}
    cfg["train"]["seed"] = spec.seed
    cfg["train"]["test_at_end"] = False  # execute() evaluates the split it is asked for
    return cfg


def run_recipe(cfg: dict[str, Any], fit: bool = False) -> dict[str, Any]:
    """The parts of a run's config that decide what it trains: model, solver, seed and how clicks are simulated,
    and for a run of label methods the ``fit`` section (paths, logging and evaluation periods left out, so a moved
    or re-logged run folder stays the same run)."""
    pilot = cfg.get("pilot", {})
    return ({"fit": cfg["fit"]} if fit else {}) | {
        "model": cfg["model"],
        "solver": cfg["solver"],
        "seed": cfg["train"].get("seed"),
        "points_per_segment": int(pilot.get("points_per_segment", 1)),
        "point_sampling": str(pilot.get("point_sampling", "uniform")),
        # paper 003 offline: the pseudo labels the network learns from (recorded as "pseudo" since before the key
        # was data.pseudo_labels, so that finished runs stay the same run)
        "pseudo": cfg["data"].get("pseudo_labels"),
    }


def json_roundtrip(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), for comparing with a recorded one."""
    return json.loads(json.dumps(value))


def check_recipe(out: Path, cfg: dict[str, Any], fit: bool = False) -> None:
    """A run folder belongs to one recipe: the first call records it in ``recipe.json``, every later call (a
    resume, or a finished run being reused) must bring the same recipe, else a one-line :class:`InputError`
    names the folder and what differs. A run's key names only its labels, modules and seed, so without this
    check a changed config would silently reuse the results of the old one. Folders from before the record
    (a finished run without ``recipe.json``) are trusted as they are."""
    recipe = run_recipe(cfg, fit)
    path = out / RECIPE
    if path.is_file():
        diff = differences(read_json(path), json_roundtrip(recipe))
        if diff:
            shown = "; ".join(diff[:3]) + (f"; and {len(diff) - 3} more" if len(diff) > 3 else "")
            raise InputError(
                f"{out}: this run folder was made with another recipe ({shown}): use another work folder, or delete it"
            )
    elif not (out / RESULT).is_file():
        out.mkdir(parents=True, exist_ok=True)
        write_json(path, recipe, indent=2)


def result_name(split: str) -> str:
    """A run's result file for ``split``: ``result.json`` on val, ``result_<split>.json`` otherwise."""
    return RESULT if split == "val" else f"result_{split}.json"


def execute(
    spec: RunSpec, cfg: dict[str, Any], root: str | os.PathLike, device: str = "cpu", split: str = "val"
) -> dict[str, Any]:
    """One run from start to finish (or from wherever it stopped): labels, training, evaluation on ``split`` (val
    for choosing, test for reporting; a finished network is evaluated on another split without training again).
    The run folder's recorded recipe must match ``cfg``'s (:func:`check_recipe`)."""
    from cqbnet.engine.inference import evaluate_model
    from cqbnet.engine.trainer import load_model, train
    from cqbnet.network.panoptic_net import INFERENCE_MODES

    out = Path(root) / "runs" / spec.key
    check_recipe(out, run_config(cfg, spec, out / "labels" / "manifest.json"), bool(spec.methods))
    name = result_name(split)
    if (out / name).is_file():
        return read_json(out / name)
    t0 = time.time()
    pilot = cfg.get("pilot", {})
    manifest = prepare_labels(
        spec, cfg, out, int(pilot.get("points_per_segment", 1)), str(pilot.get("point_sampling", "uniform"))
    )
    run_cfg = run_config(cfg, spec, manifest)
    if spec.methods:  # label methods: every stage their mix needs, then the final network (cqbnet fit)
        from cqbnet.recipes.fit import FINAL, run_fit
        from cqbnet.recipes.prepare import default_workers

        # per-image preparation on every core, cached for the sweep's other runs (by image and label content)
        cache = Path(root) / "cache"
        fitted = run_fit(run_cfg, manifest, out / "fit", device, default_workers(), cache, progress=False, log=print)
        weights = out / "fit" / FINAL / "model_final.pth"
        info = {"iterations": fitted["iterations"], "resumed_from": None, "stages": fitted["stages"]}
    else:
        info = train(run_cfg, out, device, resume=True, progress=False)
        weights = out / "model_final.pth"
    t_train = time.time()
    model, _ = load_model(weights, torch.device(device))
    dcfg, tcfg = run_cfg["data"], run_cfg["train"]
    images = load_split(dcfg, split, out)
    primary = tcfg["test_mode"]
    modes, counts = {}, {}
    for mode in (primary, *(m for m in INFERENCE_MODES if m != primary)):
        r = evaluate_model(
            model,
            images,
            torch.device(device),
            mode,
            tcfg["eval_images"] if split == "val" else None,
            dcfg["test_short_size"],
            dcfg["max_size"],
            keep_images=True,
        )
        modes[mode] = {k: (100 * v if k != "images" else v) for k, v in r.summary().items()}
        counts[mode] = r.image_counts
    write_image_counts(
        out / (IMAGE_COUNTS if split == "val" else f"image_counts_{split}.npz"), images.categories, counts
    )
    seconds_train = t_train - t0
    if info["resumed_from"] == info["iterations"]:  # trained before: its training time is the val result's
        seconds_train = read_json(out / RESULT).get("seconds_train") if (out / RESULT).is_file() else None
    if "stages" in info:  # a fit records each stage's time, resumed or not
        seconds_train = sum(st["seconds"] for st in info["stages"])
    result = {
        "key": spec.key,
        "spec": asdict(spec),
        "split": split,
        **modes[primary],
        "test_mode": primary,
        "modes": modes,
        "iterations": info["iterations"],
        "resumed_from": info["resumed_from"],
        **({"stages": info["stages"]} if "stages" in info else {}),
        "seconds_train": seconds_train,
        "seconds_eval": time.time() - t_train,
        "seconds": time.time() - t0,
        "device": device,
        "threads": torch.get_num_threads(),
    }
    write_json(out / name, result, indent=2)
    return result


def finished(specs: list[RunSpec], root: Path, cfg: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Results of the runs already done (their ``result.json``), by key; with the sweep's ``cfg``, each one's
    recorded recipe must be the one ``cfg`` gives it (:func:`check_recipe`)."""
    done = {}
    for s in specs:
        out = root / "runs" / s.key
        if (out / RESULT).is_file():
            if cfg is not None:
                check_recipe(out, run_config(cfg, s, out / "labels" / "manifest.json"), bool(s.methods))
            done[s.key] = read_json(out / RESULT)
    return done


def run_specs(
    specs: list[RunSpec],
    cfg: dict[str, Any],
    root: str | os.PathLike,
    address: str | None = None,
    cpus_per_run: float | None = None,
    gpus_per_run: float = 0,
    device: str = "cpu",
    on_result: Callable[[RunSpec, dict[str, Any]], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Train every spec not yet finished as an independent Ray task; call ``on_result`` as each one ends.

    Locally (no ``address``) Ray starts on this machine and each run takes all its cores unless
    ``cpus_per_run`` says otherwise, so runs go one after another; on a cluster, as many run at once as its
    resources allow. A failed run is reported by key after the others have finished.
    """
    root = Path(root)
    cfg = shared_data_config(cfg, root)
    results = finished(specs, root, cfg)
    todo = [s for s in specs if s.key not in results]
    if not todo:
        return results
    import ray

    local_cpus = os.cpu_count() or 1
    cpus = float(cpus_per_run) if cpus_per_run else (1.0 if address else float(local_cpus))
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(num_cpus=local_cpus, include_dashboard=False, log_to_driver=False)
    try:
        task = ray.remote(execute).options(num_cpus=cpus, num_gpus=gpus_per_run, max_retries=0)
        pending = {task.remote(s, cfg, str(root.absolute()), device): s for s in todo}
        failures = []
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            spec = pending.pop(done[0])
            try:
                res = ray.get(done[0])
            except ray.exceptions.RayError as e:
                failures.append(f"{spec.key}: {str(e).strip().splitlines()[-1]}")
                continue
            results[spec.key] = res
            if on_result is not None:
                on_result(spec, res)
    finally:
        ray.shutdown()
    if failures:
        where = root / "runs"
        raise SweepFailed(
            f"{len(failures)} run(s) failed (their folders under {where} keep their progress):\n" + "\n".join(failures)
        )
    return results
