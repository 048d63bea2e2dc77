"""Training configs: YAML files under ``configs/`` over these defaults, with ``section.key=value`` overrides.

A config only fills constructor arguments: ``model`` is passed as keyword
arguments to :func:`cqbnet.network.build.build_panoptic_net`, ``solver``
and ``train`` to the trainer. Unknown keys are an error, so a typo never goes
unnoticed.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from cqbnet.errors import InputError
from cqbnet.io import read_yaml

# the configs shipped in the package (configs/ in the source tree links here)
CONFIGS = Path(__file__).resolve().parents[1] / "configs"

DEFAULTS: dict[str, Any] = {
    "data": {
        # either a folder made by `cqbnet data synth` (root), or explicit COCO panoptic paths
        "root": None,
        "train_json": None,
        "train_png": None,
        "train_images": None,
        "val_json": None,
        "val_png": None,
        "val_images": None,
        # the held-out split the final numbers are reported on (choices are made on val)
        "test_json": None,
        "test_png": None,
        "test_images": None,
        "categories": None,
        # a mixed-label manifest (cqbnet labels simulate) to train from instead of the full train split
        "manifest": None,
        # or the label mix to simulate from the train split's ground truth into <out>/labels before training, e.g.
        # {ratio: "PT=1", points_per_segment: 1, point_sampling: uniform, seed: 0} (cqbnet labels simulate's options)
        "labels": None,
        # pseudo panoptic labels of the manifest's weak images, one path or a list (cqbnet.labels.pseudo): paper 001's
        # approximate labels of the boxes images (cqbnet labels approximate / refine), paper 003's pseudo labels of the
        # point images (cqbnet pseudo-labels)
        "pseudo_labels": None,
        # generate the synthetic scenes into <out>/data when no root is given
        "synthetic": None,  # e.g. {num_train: 2000, num_val: 300, num_test: 300, seed: 0, size: 128}
        "train_short_sizes": None,  # random shorter-side resize, e.g. [640, 672, ..., 800]
        "test_short_size": None,
        "max_size": None,
        "flip": True,
        "workers": 0,
    },
    "model": {
        "backbone": "resnet50",
        "weights": None,
        "norm": "frozen_bn",
        "trainable_layers": 3,
        "fpn_channels": 256,
        "fpn_norm": None,  # "gn": GroupNorm in the FPN (keeps its scale fixed under sparse supervision)
        "anchor_sizes": [32, 64, 128, 256, 512],
        "aspect_ratios": [0.5, 1.0, 2.0],
        "rpn_pre_nms_train": 2000,
        "rpn_post_nms_train": 1000,
        "rpn_pre_nms_test": 1000,
        "rpn_post_nms_test": 1000,
        "rpn_batch_size": 256,
        "roi_batch_size": 512,
        "box_representation": 1024,
        "roi_canonical_scale": 224,
        "detections_per_img": 100,
        "mask_channels": 256,
        "mask_train_stage": -1,  # stage whose positives train the mask head (-1: last, IoU 0.7; 0: 0.5)
        "semantic_channels": 128,
        "affinity_channels": 128,
        "semantic_loss_weight": 0.5,
        "panoptic": {},
        "loss_normalization": "batch",  # a loss only some images carry: scaled by their share ("batch") or not
        "channels_last": True,  # NHWC weights and activations (faster convolutions on CPU)
        "weak": {},  # WeakConfig: the four modules' switches and settings (box2mask, cls2box, cls2pixel, relation)
    },
    "solver": {
        # paper 000's COCO schedule: 24 epochs of COCO's 118,287 training images at batch 16 (7,393 iterations
        # each), lr 0.02, x0.1 after epochs 18 and 23
        "max_iter": 177432,
        "batch_size": 16,
        "base_lr": 0.02,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "warmup_iters": 500,
        "warmup_factor": 0.001,
        "steps": [133074, 170039],
        "gamma": 0.1,
        "clip_grad_norm": None,
        "amp": True,  # only on CUDA
    },
    "train": {
        "seed": 0,
        "checkpoint_period": 1000,
        "eval_period": 5000,
        "eval_images": None,  # None: the whole val split
        "log_period": 20,
        "test_mode": "argmax",
        "test_at_end": True,  # the finished network on the test split (if named): <out>/test_metrics.json
    },
    # `cqbnet fit`: the stages of the catalogue's methods (cqbnet.recipes.fit); ignored by `cqbnet train`
    "fit": {
        # paper 001's refinement rounds (boxes-tags-001): chosen on val, where round 2 gains 3.4 points of full
        # supervision's PQ over round 1 and each later round at most 1.5, one network each (benchmarks/boxes_tags.md)
        "rounds": 2,
        "classifier_iter": 320,  # paper 001's tag classifier: its iterations (the solver's schedule scaled to them)
        "cue": "both",  # paper 001's thing cue: GrabCut and the best proposal agreeing (ablations: grabcut, ...)
        # points-crf: a segment the dense CRF shrinks below this share of its area keeps its pixels (0: off;
        # cqbnet.cues.dense_crf.keep_shrunk_segments, benchmarks/crf_small_objects.md)
        "crf_keep": 0.0,
    },
    # `cqbnet pilot`: paper 000's Table 2 protocol (cqbnet.sweep.protocol); ignored by `cqbnet train`
    "pilot": {
        "studies": ["P", "I", "B", "S"],
        "rho_P": [0.1, 0.3, 0.5],
        "seeds": [0, 1],
        "arms": ["baseline", "module", "upper"],
        "points_per_segment": 1,
        "point_sampling": "uniform",  # where clicks land (cqbnet.labels.kinds.POINT_SAMPLING)
        # a pilot over label methods instead (cqbnet.planner.methods): KINDS:METHOD variables, each trained through
        # `cqbnet fit` with full labels at every method_rho_P and the method on the rest; full labels alone at rho_P
        "methods": [],
        "method_rho_P": [0.0, 0.1, 0.3],
    },
}


FREE_FORM = ("panoptic", "synthetic", "weak")
# keys that were replaced: old key -> what replaced it
REPLACED = {
    "data.approximate": "data.pseudo_labels (one key for every kind of pseudo labels)",
    "data.pseudo": "data.pseudo_labels (one key for every kind of pseudo labels)",
}


def _merge(base: dict[str, Any], update: dict[str, Any], path: str, source: str) -> None:
    for k, v in update.items():
        key = f"{path}{k}"
        if k not in base:
            hint = f"; it is now {REPLACED[key]}" if key in REPLACED else ""
            raise InputError(f"{source}: unknown config key {key!r}{hint}")
        if k in FREE_FORM:  # checked by the constructor they feed
            if v is not None and not isinstance(v, dict):
                raise InputError(f"{source}: {key} must be a mapping")
            if key == "model.weak":  # one block per module, or flat keys
                v = _flat_weak(v, source)
            base[k] = None if v is None else {**(base[k] or {}), **v}
        elif isinstance(base[k], dict):
            if v is None and path:  # a setting a config filled with a mapping, unset again (data.labels=null)
                base[k] = None
                continue
            if not isinstance(v, dict):
                raise InputError(f"{source}: {key} must be a mapping")
            _merge(base[k], v, key + ".", source)
        else:
            base[k] = v


def _flat_weak(values: dict[str, Any] | None, source: str) -> dict[str, Any] | None:
    from cqbnet.network.build import flatten_weak

    return flatten_weak(values, source)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"solver.max_iter=100"`` -> (["solver", "max_iter"], 100); the value is read as YAML."""
    if "=" not in text:
        raise InputError(f"override {text!r} is not KEY=VALUE (e.g. solver.max_iter=100)")
    key, val = text.split("=", 1)
    try:
        value = yaml.safe_load(val)
    except yaml.YAMLError:
        raise InputError(f"override {text!r}: value is not valid YAML") from None
    return key.strip().split("."), value


# smallest allowed value of numeric settings (a value below is refused when the config is read)
MINIMUM = {
    "solver.max_iter": 1,
    "solver.batch_size": 1,
    "solver.base_lr": 0,
    "solver.momentum": 0,
    "solver.weight_decay": 0,
    "solver.warmup_iters": 0,
    "solver.warmup_factor": 0,
    "solver.steps": 0,
    "solver.gamma": 0,
    "solver.clip_grad_norm": 0,
    "train.seed": 0,
    "train.checkpoint_period": 1,
    "train.eval_period": 0,
    "train.eval_images": 1,
    "train.log_period": 1,
    "data.workers": 0,
    "data.test_short_size": 1,
    "data.max_size": 1,
    "data.train_short_sizes": 1,
    "fit.rounds": 0,
    "fit.classifier_iter": 1,
    "fit.crf_keep": 0,
    "pilot.seeds": 0,
    "pilot.rho_P": 0,
    "pilot.points_per_segment": 1,
    "model.trainable_layers": 0,
    "model.fpn_channels": 1,
    "model.anchor_sizes": 1,
    "model.aspect_ratios": 0,
    "model.rpn_pre_nms_train": 1,
    "model.rpn_post_nms_train": 1,
    "model.rpn_pre_nms_test": 1,
    "model.rpn_post_nms_test": 1,
    "model.rpn_batch_size": 1,
    "model.roi_batch_size": 1,
    "model.box_representation": 1,
    "model.roi_canonical_scale": 1,
    "model.detections_per_img": 1,
    "model.mask_channels": 1,
    "model.semantic_channels": 1,
    "model.affinity_channels": 1,
    "model.semantic_loss_weight": 0,
    "model.mask_train_stage": -1,
}
POSITIVE = {
    "solver.base_lr",
    "solver.gamma",
    "model.aspect_ratios",
}  # of those, the ones that must lie above their minimum

# the type of each setting whose default is None (the others have their default's type)
PATHS = {
    f"data.{k}"
    for k in (
        *(f"{s}_{p}" for s in ("train", "val", "test") for p in ("json", "png", "images")),
        "root",
        "categories",
        "manifest",
    )
} | {"model.weights"}
NONE_DEFAULT_TYPES: dict[str, Any] = {
    "data.train_short_sizes": [1],
    "data.test_short_size": 1,
    "data.max_size": 1,
    "solver.clip_grad_norm": 1.0,
    "train.eval_images": 1,
    "model.fpn_norm": "gn",
}


def _choices() -> dict[str, tuple[str, ...]]:
    """The allowed values of the settings that name a choice."""
    from cqbnet.modeling.backbone import BACKBONES, NORMS
    from cqbnet.modeling.supervision import LOSS_NORMALIZATIONS
    from cqbnet.network.panoptic_net import INFERENCE_MODES

    return {
        "model.backbone": BACKBONES,
        "model.norm": NORMS,
        "model.fpn_norm": ("gn",),
        "model.loss_normalization": tuple(LOSS_NORMALIZATIONS),
        "train.test_mode": INFERENCE_MODES,
        "pilot.point_sampling": ("uniform", "center", "border"),
        "fit.cue": ("both", "grabcut", "proposal", "box"),
    }


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _check_value(key: str, value: Any, default: Any, source: str) -> None:
    """A setting has its default's type (an integer where a number is wanted is fine) and its minimum."""
    numbers = (int, float)
    if value is None or key.split(".")[-1] in FREE_FORM:
        return
    if key in PATHS:
        if not isinstance(value, str):
            raise InputError(f"{source}: {key} must be a path, got {value!r}")
        return
    if default is None:
        default = NONE_DEFAULT_TYPES.get(key)
    choices = _choices().get(key)
    if choices is not None and value not in choices:
        raise InputError(f"{source}: {key} must be one of {', '.join(choices)}, got {value!r}")
    items = value if isinstance(value, list) else [value]
    want = default
    if isinstance(default, list):
        if not isinstance(value, list):
            raise InputError(f"{source}: {key} must be a list, got {value!r}")
        want = default[0] if default else None
    if want is not None:
        for v in items:
            if isinstance(want, bool) or isinstance(v, bool):
                ok = isinstance(v, bool) and isinstance(want, bool)
            elif isinstance(want, int):
                ok = isinstance(v, int)
            elif isinstance(want, float):
                ok = isinstance(v, numbers)
            else:
                ok = isinstance(v, type(want))
            if not ok:
                raise InputError(f"{source}: {key} must be {_kind(want)}, got {v!r}")
    low = MINIMUM.get(key)
    if low is not None:
        for v in items:
            if not isinstance(v, numbers) or isinstance(v, bool):
                raise InputError(f"{source}: {key} must be a number, got {v!r}")
            if v < low or (key in POSITIVE and v == low):
                bound = f"above {low}" if key in POSITIVE else f"at least {low}"
                raise InputError(f"{source}: {key} must be {bound}, got {v!r}")


SYNTHETIC_MINIMUM = {
    "num_train": 1,
    "num_val": 0,
    "num_test": 0,
    "seed": 0,
    "size": 16,
    "min_instances": 0,
    "max_instances": 0,
    "min_size": 1,
    "max_size": 1,
}
LABEL_OPTIONS = {"ratio": str, "points_per_segment": int, "point_sampling": str, "seed": int}


def check_data(data: dict[str, Any], source: str = "config") -> None:
    """``data.labels`` (a label mix to simulate) and ``data.pseudo_labels`` (a path or a list of paths) typed, and
    the combinations that cannot mean what they say refused."""
    from cqbnet.labels.kinds import POINT_SAMPLING
    from cqbnet.labels.simulate import parse_ratio

    labels = data.get("labels")
    if labels is not None:
        if not isinstance(labels, dict) or "ratio" not in labels:
            raise InputError(f"{source}: data.labels must be a mapping with a ratio, e.g. {{ratio: 'PT=1', seed: 0}}")
        for key, value in labels.items():
            want = LABEL_OPTIONS.get(key)
            if want is None:
                raise InputError(f"{source}: unknown key data.labels.{key}; known: {', '.join(LABEL_OPTIONS)}")
            if isinstance(value, bool) or not isinstance(value, want):
                kind = "an integer" if want is int else "a string"
                raise InputError(f"{source}: data.labels.{key} must be {kind}, got {value!r}")
        if labels.get("points_per_segment", 1) < 1 or labels.get("seed", 0) < 0:
            raise InputError(f"{source}: data.labels.points_per_segment must be >= 1 and data.labels.seed >= 0")
        if labels.get("point_sampling", "uniform") not in POINT_SAMPLING:
            raise InputError(f"{source}: data.labels.point_sampling must be one of {', '.join(POINT_SAMPLING)}")
        try:
            parse_ratio(labels["ratio"])
        except InputError as e:
            raise InputError(f"{source}: data.labels.ratio: {e}") from None
        if data.get("manifest") is not None:
            raise InputError(f"{source}: give data.labels (a mix to simulate) or data.manifest (labels made), not both")
    syn = data.get("synthetic")
    if syn is not None:
        from cqbnet.data.synthetic import PRESETS

        for key, value in syn.items():
            low = SYNTHETIC_MINIMUM.get(key)
            if key == "preset":
                if value not in PRESETS:
                    raise InputError(
                        f"{source}: data.synthetic.preset must be one of {', '.join(PRESETS)}, got {value!r}"
                    )
            elif low is None:
                raise InputError(
                    f"{source}: unknown key data.synthetic.{key}; known: preset, {', '.join(SYNTHETIC_MINIMUM)}"
                )
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
                raise InputError(f"{source}: data.synthetic.{key} must be a number of at least {low}, got {value!r}")
            elif key not in ("min_size", "max_size") and not isinstance(value, int):
                raise InputError(f"{source}: data.synthetic.{key} must be an integer, got {value!r}")
    pseudo = data.get("pseudo_labels")
    if pseudo is not None:
        paths = pseudo if isinstance(pseudo, list) else [pseudo]
        if not paths or not all(isinstance(p, str) for p in paths):
            raise InputError(f"{source}: data.pseudo_labels must be a path or a list of paths, got {pseudo!r}")
        if data.get("manifest") is None and labels is None:
            raise InputError(
                f"{source}: data.pseudo_labels labels a manifest's images; it needs data.manifest or data.labels"
            )


def check_config(cfg: dict[str, Any], source: str = "config") -> None:
    """Every setting of known type has that type and its minimum (see ``MINIMUM``); ``model.weak`` and the data
    section's label settings are checked by their own rules."""
    from cqbnet.network.build import check_weak

    for section, values in cfg.items():
        for key, value in values.items():
            default = DEFAULTS[section][key]
            if not isinstance(default, dict):
                _check_value(f"{section}.{key}", value, default, source)
    check_weak(cfg["model"].get("weak"), source)
    check_data(cfg["data"], source)


BASE_KEY = "_base_"
WHOLE = ("data.synthetic", "data.labels")  # a scene set and a label mix are replaced whole, never merged


def _deep_update(base: dict[str, Any], child: dict[str, Any], where: str = "") -> dict[str, Any]:
    """``child`` over ``base``: mappings merge key by key (but :data:`WHOLE`), anything else (lists too) replaces."""
    out = dict(base)
    for k, v in child.items():
        key = f"{where}{k}"
        merge = isinstance(v, dict) and isinstance(out.get(k), dict) and key not in WHOLE
        out[k] = _deep_update(out[k], v, f"{key}.") if merge else v
    return out


def read_config_file(path: str | os.PathLike, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config YAML with its ``_base_`` chain resolved: ``_base_: other.yaml`` (relative to the file) is read
    first and the file states only what differs; mappings merge, other values replace. Cycles and a base that is
    not a file are one-line errors naming the file."""
    path = Path(path)
    raw = read_yaml(path, "config")
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InputError(f"{path}: a config must be a mapping of sections")
    base = raw.pop(BASE_KEY, None)
    model = raw.get("model")
    if isinstance(model, dict) and isinstance(model.get("weak"), dict):  # blocks merge with a base's flat keys
        raw["model"] = {**model, "weak": _flat_weak(model["weak"], str(path))}
    if base is None:
        return raw
    if not isinstance(base, str) or not base.strip():
        raise InputError(f"{path}: {BASE_KEY} must name a config file, got {base!r}")
    base_path = (path.parent / base).resolve()
    if base_path in seen or base_path == path.resolve():
        raise InputError(f"{path}: {BASE_KEY} chain returns to {base_path.name} (a cycle)")
    if not base_path.is_file():
        raise InputError(f"{path}: {BASE_KEY} {base!r} is not a file ({base_path})")
    return _deep_update(read_config_file(base_path, (*seen, path.resolve())), raw)


def load_config(path: str | os.PathLike | None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Defaults, then the YAML file (after its ``_base_`` chain), then the overrides; each value checked for its
    type and range."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        _merge(cfg, read_config_file(path), "", str(path))
    for text in overrides or []:
        keys, value = parse_override(text)
        update: dict[str, Any] = value
        for k in reversed(keys):
            update = {k: update}
        _merge(cfg, update, "", f"override {text!r}")
    source = "config" if path is None else str(path)
    check_config(cfg, f"{source} with its overrides" if overrides else source)
    return cfg
