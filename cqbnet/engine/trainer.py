"""``cqbnet train``: SGD with warm-up and step decay, checkpoints that resume exactly, DDP, periodic PQ.

The schedule is detectron2's WarmupMultiStepLR: the learning rate rises linearly
from ``warmup_factor * base_lr`` over ``warmup_iters`` and is multiplied by
``gamma`` at each of ``steps``. Paper 000's COCO recipe (24 epochs, batch 16,
lr 0.02, decay at epochs 18 and 23, momentum 0.9, weight decay 1e-4) is the
default. A non-finite loss stops training with a clear message before the step
that would spoil the weights, so the last checkpoint stays good.

Output folder::

    config.yaml                the resolved config
    checkpoints/last.pth       model, optimiser, scheduler, scaler, iteration, RNG states
    metrics.jsonl              one line per log period (losses, lr) and per evaluation (PQ ...)
    model_final.pth            weights + config + categories, for predict and evaluate
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from tqdm import tqdm

from cqbnet.data.panoptic_format import Category
from cqbnet.engine import distributed as dist_utils
from cqbnet.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from cqbnet.engine.data import StreamDataset, dataset_paths, load_split, make_loader, move_to, prepare_data
from cqbnet.engine.inference import evaluate_model
from cqbnet.errors import InputError
from cqbnet.io import atomic_path, differences, read_json, write_json
from cqbnet.network.build import build_panoptic_net
from cqbnet.network.panoptic_net import PanopticNet


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the message names the iteration and the last good checkpoint."""


def lr_factor(iteration: int, solver: dict[str, Any]) -> float:
    """WarmupMultiStepLR: linear warm-up, then x gamma at every step passed."""
    f = solver["gamma"] ** sum(iteration >= s for s in solver["steps"])
    w = solver["warmup_iters"]
    if iteration < w:
        alpha = iteration / w
        f *= solver["warmup_factor"] * (1 - alpha) + alpha
    return f


def param_groups(model: nn.Module, base_lr: float) -> list[dict[str, Any]]:
    """The trainable parameters in SGD groups: those of a submodule with an ``lr_scale`` attribute train at that
    multiple of ``base_lr`` (the innermost such module decides), the rest at ``base_lr``."""
    scale_of: dict[int, float] = {}
    for module in model.modules():  # parents come before children, so a child's scale overrides its parent's
        if hasattr(module, "lr_scale"):
            for p in module.parameters():
                scale_of[id(p)] = float(module.lr_scale)
    groups: dict[float, list[nn.Parameter]] = {}
    for p in model.parameters():
        if p.requires_grad:
            groups.setdefault(scale_of.get(id(p), 1.0), []).append(p)
    return [{"params": ps, "lr": base_lr * s} for s, ps in sorted(groups.items(), key=lambda kv: -kv[0])]


def build_model(
    categories: dict[int, Category], model_cfg: dict[str, Any], from_checkpoint: bool = False
) -> PanopticNet:
    """The network of a config's ``model`` section (``from_checkpoint``: trained weights are loaded next)."""
    args = dict(model_cfg)
    for k in ("anchor_sizes", "aspect_ratios"):
        args[k] = tuple(args[k])
    return build_panoptic_net(categories, **args, weights_from_checkpoint=from_checkpoint)


def categories_from_json(rows: list[dict[str, Any]]) -> dict[int, Category]:
    from cqbnet.data.panoptic_format import parse_categories

    return parse_categories(rows, Path("checkpoint"))


def load_model(
    path: str | os.PathLike, device: torch.device, overrides: dict[str, Any] | None = None
) -> tuple[PanopticNet, dict[str, Any]]:
    """A trained network from ``model_final.pth`` or a training checkpoint (weights given, nothing downloaded)."""
    ckpt = load_checkpoint(path)
    if "model" not in ckpt or "config" not in ckpt or "categories" not in ckpt:
        raise InputError(f"{path}: not a cqbnet training checkpoint (needs model, config and categories)")
    cfg = ckpt["config"]
    model_cfg = dict(cfg["model"], weights=None)
    panoptic = dict(model_cfg.get("panoptic") or {})
    if "min_area" in panoptic:  # a checkpoint's config from before the split: its limit held for both
        area = panoptic.pop("min_area")
        model_cfg["panoptic"] = {"min_thing_area": area, "min_stuff_area": area, **panoptic}
    if overrides:
        model_cfg["panoptic"] = {**model_cfg.get("panoptic", {}), **overrides}
    model = build_model(categories_from_json(ckpt["categories"]), model_cfg, from_checkpoint=True)
    load_weights(model, ckpt["model"], path)
    return model.to(device).eval(), cfg


TRAINING_ONLY = ("cls2box.", "cls2pixel.")  # Cls2Box and Cls2Pixel: used by losses, not inference


def load_weights(model: PanopticNet, state: dict[str, Any], path: str | os.PathLike) -> None:
    """Load trained weights; a checkpoint from before a weak module existed still loads for inference.

    Missing training-only heads are fine; missing relation-reasoning weights switch that module off (the
    network then predicts as it was trained); anything else missing or unexpected is an error naming the keys.
    """
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shapes that differ from the configured network's
        detail = str(e).strip().splitlines()[-1].strip()
        raise InputError(f"{path}: weights do not fit the configured network: {detail}") from None
    if unexpected:
        raise InputError(f"{path}: weights the configured network does not have: {', '.join(unexpected[:4])}")
    relation = [k for k in model.state_dict() if k.startswith("relation.")]
    if relation and set(relation) <= set(missing):
        model.relation = None  # trained before relation reasoning was part of the network
        missing = [k for k in missing if not k.startswith("relation.")]
    missing = [k for k in missing if not k.startswith(TRAINING_ONLY)]
    if missing:
        raise InputError(f"{path}: weights missing from the checkpoint: {', '.join(missing[:4])}")


def _split_if_named(dcfg: dict[str, Any], split: str, out: Path) -> tuple[Path | None, Any]:
    """(its JSON path, the split) when the config names ``split`` and its JSON exists, else (the path or None, None)."""
    try:
        j, _, _ = dataset_paths(dcfg, split, out)
    except InputError:
        return None, None
    if not Path(j).is_file():
        return j, None
    return j, load_split(dcfg, split, out)


def _validation_split(dcfg: dict[str, Any], out: Path, eval_period: int, main: bool):
    """The validation split, or None when the config names none (with a warning if evaluation was asked for).
    A named split that cannot be read is an error: training on without the evaluation asked for would hide it."""
    j, split = _split_if_named(dcfg, "val", out)
    if split is None and eval_period and main:
        where = "no validation split in the config" if j is None else f"{j}: not found"
        print(f"cqbnet: warning: {where}; training without evaluation (train.eval_period={eval_period})")
    return split


RESUME_FREE = {
    "data": {"workers"},
    "solver": {"max_iter"},  # a finished or stopped run may be trained on for longer
    "train": {"checkpoint_period", "eval_period", "eval_images", "log_period", "test_mode", "test_at_end"},
}


def check_resumed_config(cfg: dict[str, Any], out: Path) -> None:
    """A resumed run continues the run it was: its data, model, solver and seed must be the ones its
    ``config.yaml`` records (else a one-line error names what changed; a changed label mix, say, would otherwise
    train on the old labels while the final checkpoint records the new config). Logging, checkpoint and evaluation
    periods, the loader's workers and the number of iterations (to train on for longer) may change."""
    saved_path = out / "config.yaml"
    if not saved_path.is_file():
        return
    saved = yaml.safe_load(saved_path.read_text()) or {}

    def decisive(c: dict[str, Any]) -> dict[str, Any]:
        return {
            sec: {k: v for k, v in (c.get(sec) or {}).items() if k not in RESUME_FREE.get(sec, set())}
            for sec in ("data", "model", "solver", "train")
        }

    diff = differences(decisive(saved), decisive(json.loads(json.dumps(cfg))))
    if diff:
        raise InputError(
            f"{out}: this run was made with another config ({'; '.join(diff[:2])}); resume with the config it was made "
            f"with ({saved_path}), or train into another --out"
        )


TEST_METRICS = "test_metrics.json"


def report_test(model: PanopticNet, cfg: dict[str, Any], out: Path, dev: torch.device) -> dict[str, Any] | None:
    """The finished network on the held-out test split (``data.test_*`` or the scenes' ``test``), in the config's
    inference mode, written to ``out/test_metrics.json``: the number to report, after every choice was made on
    val. None when the config names no test split."""
    dcfg, tcfg = cfg["data"], cfg["train"]
    _, test = _split_if_named(dcfg, "test", out)
    if test is None:
        return None
    r = evaluate_model(model, test, dev, tcfg["test_mode"], None, dcfg["test_short_size"], dcfg["max_size"])
    row = {"split": "test", "mode": tcfg["test_mode"], **r.summary()}
    write_json(out / TEST_METRICS, row, indent=2)
    return row


class _Metrics:
    """metrics.jsonl, appended line by line; lines past the resume point are dropped on resume."""

    def __init__(self, path: Path, resume_iter: int):
        self.path = path
        if path.is_file():
            lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
            keep = []
            for k, ln in enumerate(lines):
                try:
                    row = json.loads(ln)
                    it = int(row["iter"])
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    if k == len(lines) - 1:  # the last line, cut short by a kill: dropped
                        break
                    raise InputError(
                        f"{path}: line {k + 1} is not a metrics row; move the file aside to resume"
                    ) from None
                if it <= resume_iter:
                    keep.append(ln)
            with atomic_path(path) as tmp:
                tmp.write_text("".join(ln + "\n" for ln in keep))

    def write(self, row: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")


def training_set(dcfg: dict[str, Any], out: Path):
    """The training images of a (prepared) data config: its manifest's mixed labels, else the train split."""
    if dcfg.get("manifest"):
        from cqbnet.labels.dataset import MixedLabelDataset

        return MixedLabelDataset(dcfg["manifest"], pseudo_labels=dcfg.get("pseudo_labels"))
    return load_split(dcfg, "train", out)


def training_loader(train_set, cfg: dict[str, Any], start: int, stop: int, world: int = 1, rank: int = 0):
    """The batches of iterations ``start .. stop - 1`` of the config's seeded, augmented training stream."""
    dcfg, solver = cfg["data"], cfg["solver"]
    stream = StreamDataset(train_set, cfg["train"]["seed"], dcfg["flip"], dcfg["train_short_sizes"], dcfg["max_size"])
    return make_loader(stream, start, stop, solver["batch_size"], world, rank, dcfg["workers"])


def train(
    cfg: dict[str, Any], out_dir: str | os.PathLike, device: str = "cpu", resume: bool = True, progress: bool = True
) -> dict[str, Any]:
    """Train the network of ``cfg`` into ``out_dir``; resumes from ``checkpoints/last.pth`` when present."""
    out = Path(out_dir)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda given, but no CUDA device is available")
    info = dist_utils.init(dev)
    if info.world > 1 and dev.type == "cuda":
        dev = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(dev)
    if info.world > 1 and dev.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // info.world))
    solver, tcfg, dcfg = cfg["solver"], cfg["train"], cfg["data"]
    out.mkdir(parents=True, exist_ok=True)
    dcfg = prepare_data(dcfg, out, write=info.main)
    dist_utils.barrier(info)  # the other processes read what the main one wrote

    train_set = training_set(dcfg, out)
    val_set = _validation_split(dcfg, out, tcfg["eval_period"], info.main)
    model_cfg = cfg["model"]
    weak = model_cfg.get("weak") or {}
    if weak.get("jtsm") and not weak.get("jtsm_cache"):  # paper 002's segment proposals: computed once per image
        model_cfg = {**model_cfg, "weak": {**weak, "jtsm_cache": str(out / "proposals")}}
    torch.manual_seed(tcfg["seed"])
    model = build_model(train_set.categories, model_cfg).to(dev)
    groups = param_groups(model, solver["base_lr"])
    params = [p for g in groups for p in g["params"]]  # every trainable parameter, for the gradient clip
    opt = torch.optim.SGD(
        groups,
        lr=solver["base_lr"],
        momentum=solver["momentum"],
        weight_decay=solver["weight_decay"],
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: lr_factor(it, solver))
    amp = bool(solver["amp"]) and dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    ckpt_path = out / "checkpoints" / "last.pth"
    start = 0
    if resume and ckpt_path.is_file():
        check_resumed_config(cfg, out)
        ck = load_checkpoint(ckpt_path)
        try:
            model.load_state_dict(ck["model"])
        except RuntimeError:
            raise InputError(
                f"{ckpt_path}: this run was made with another model config; resume with the config it was made "
                f"with ({out / 'config.yaml'}), or train into another --out"
            ) from None
        opt.load_state_dict(ck["optimizer"])
        sched.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck["scaler"])
        start = int(ck["iteration"])
    elif info.main:
        with atomic_path(out / "config.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(cfg, sort_keys=False))
    metrics = _Metrics(out / "metrics.jsonl", start) if info.main else None

    core = model
    if info.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None, find_unused_parameters=True
        )
    max_iter = int(solver["max_iter"])
    loader = training_loader(train_set, {**cfg, "data": dcfg}, start, max_iter, info.world, info.rank)
    categories = [c.to_json() for c in train_set.categories.values()]

    def checkpoint(iteration: int) -> None:
        states = [None] * info.world
        if info.world > 1:
            torch.distributed.all_gather_object(states, rng_state())
        else:
            states = [rng_state()]
        if info.main:
            save_checkpoint(
                ckpt_path,
                model=core.state_dict(),
                optimizer=opt.state_dict(),
                scheduler=sched.state_dict(),
                scaler=scaler.state_dict(),
                iteration=iteration,
                rng=states,
                config=cfg,
                categories=categories,
            )

    bar = tqdm(total=max_iter, initial=start, disable=not (progress and info.main), dynamic_ncols=True, desc="train")
    model.train()
    t_last, it_last = time.time(), start
    last_eval: dict[str, Any] = {}
    batches = iter(loader)  # creating the iterator draws from the global RNG: do it before restoring that
    if start > 0:
        set_rng_state(ck["rng"][info.rank])
    for it, (images, targets) in enumerate(batches, start=start):
        images, targets = move_to(images, targets, dev)
        core.iteration = it  # for warm-ups (Box2Mask's pairwise term)
        with torch.autocast(device_type="cuda", enabled=amp):
            losses = model(images, targets)
        loss = sum(losses.values())
        bad = not bool(torch.isfinite(loss.detach()))
        if dist_utils.any_true(bad, info, dev):
            done = int(load_checkpoint(ckpt_path)["iteration"]) if ckpt_path.is_file() else 0
            where = f"{ckpt_path} (iteration {done})" if ckpt_path.is_file() else "none was written yet"
            values = ", ".join(f"{k} {float(v.detach()):.4g}" for k, v in losses.items())
            raise TrainingDiverged(
                f"non-finite loss at iteration {it + 1} ({values}); "
                f"training stopped, the last good checkpoint is {where}"
            )
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        grad_norm = None  # before clipping: how close the step came to the limit
        if solver["clip_grad_norm"]:
            scaler.unscale_(opt)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, solver["clip_grad_norm"]))
        scaler.step(opt)
        scaler.update()
        sched.step()
        i = it + 1
        bar.update(1)
        if info.main and (i % tcfg["log_period"] == 0 or i == max_iter):
            now = time.time()
            sec = (now - t_last) / max(1, i - it_last)
            t_last, it_last = now, i
            row = {
                "iter": i,
                "lr": opt.param_groups[0]["lr"],
                "loss": float(loss.detach()),
                **{k: float(v.detach()) for k, v in losses.items()},
                **({"grad_norm": grad_norm} if grad_norm is not None else {}),
                "sec_per_iter": sec,
            }
            metrics.write(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{row['lr']:.2g}")
        if i % tcfg["checkpoint_period"] == 0 or i == max_iter:
            checkpoint(i)
        if val_set is not None and tcfg["eval_period"] and (i % tcfg["eval_period"] == 0 or i == max_iter):
            if info.main:
                r = evaluate_model(
                    core,
                    val_set,
                    dev,
                    tcfg["test_mode"],
                    tcfg["eval_images"],
                    dcfg["test_short_size"],
                    dcfg["max_size"],
                )
                last_eval = {"iter": i, **r.summary()}
                metrics.write(last_eval)
                bar.write(
                    f"iter {i}: PQ {100 * r.all['pq']:.1f} (things {100 * r.things['pq']:.1f}, "
                    f"stuff {100 * r.stuff['pq']:.1f})"
                )
            dist_utils.barrier(info)
    bar.close()
    if info.main and (start < max_iter or not (out / "model_final.pth").is_file()):
        save_checkpoint(
            out / "model_final.pth", model=core.state_dict(), config=cfg, categories=categories, iteration=max_iter
        )
    test = None
    if info.main and tcfg["test_at_end"]:
        test = read_json(out / TEST_METRICS) if (out / TEST_METRICS).is_file() and start == max_iter else None
        if test is None:
            model.eval()
            test = report_test(core, cfg, out, dev)
            if test is not None:
                bar.write(
                    f"test split: PQ {100 * test['pq']:.1f} (things {100 * test['pq_th']:.1f}, "
                    f"stuff {100 * test['pq_st']:.1f}), {tcfg['test_mode']} inference"
                )
    dist_utils.shutdown(info)
    return {"out": str(out), "iterations": max_iter, "resumed_from": start, "last_eval": last_eval, "test": test}
