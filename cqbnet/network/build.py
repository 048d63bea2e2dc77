"""Building :class:`~cqbnet.network.panoptic_net.PanopticNet` from plain arguments (a config's ``model`` section).

Every constructor knob is one argument; ``model.panoptic`` holds :class:`~cqbnet.modeling.panoptic_head.
PanopticHead`'s and ``model.weak`` the weak methods' (:class:`WeakConfig`: each method's own config dataclass,
from its file). Each method is built from its settings, passed by name. Unknown keys are errors that name them;
nothing is looked up by name.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, fields
from typing import Any

from cqbnet.data.label_space import LabelSpace
from cqbnet.data.panoptic_format import Category
from cqbnet.errors import InputError
from cqbnet.modeling.backbone import build_backbone
from cqbnet.modeling.cascade_rcnn import CascadeRoIHeads
from cqbnet.modeling.panoptic_head import DenseInstanceAffinity, PanopticHead
from cqbnet.modeling.rpn import build_rpn
from cqbnet.modeling.semantic_head import SEMANTIC_STRIDE, SemanticHead
from cqbnet.network.panoptic_net import PanopticNet
from cqbnet.weak.box2mask import Box2Mask, Box2MaskConfig
from cqbnet.weak.cls2box import Cls2Box, Cls2BoxConfig
from cqbnet.weak.cls2pixel import Cls2Pixel, Cls2PixelConfig
from cqbnet.weak.fdd_points import FDDPoints, PointsConfig
from cqbnet.weak.jtsm import JTSM, MINING_LEVEL, JTSMConfig
from cqbnet.weak.relation_reasoning import RelationConfig, RelationReasoning

# the weak-supervision methods, each with its config dataclass in its own file: ``model.weak`` gives one block per
# method (``points: {enabled: true, lambda_sem: 1.0}``), or the same as flat keys (``points: true,
# points_lambda_sem: 1.0``; see :func:`flatten_weak`)
WEAK_CONFIGS: dict[str, type] = {
    "box2mask": Box2MaskConfig,
    "cls2box": Cls2BoxConfig,
    "cls2pixel": Cls2PixelConfig,
    "relation": RelationConfig,
    "points": PointsConfig,
    "jtsm": JTSMConfig,
}
WEAK_MODULES = tuple(WEAK_CONFIGS)


@dataclass
class WeakConfig:
    """``model.weak`` read: each weak method's own config (paper 000's four modules, papers 003's and 002's)."""

    box2mask: Box2MaskConfig = field(default_factory=Box2MaskConfig)
    cls2box: Cls2BoxConfig = field(default_factory=Cls2BoxConfig)
    cls2pixel: Cls2PixelConfig = field(default_factory=Cls2PixelConfig)
    relation: RelationConfig = field(default_factory=RelationConfig)
    points: PointsConfig = field(default_factory=PointsConfig)
    jtsm: JTSMConfig = field(default_factory=JTSMConfig)


def flat_key(module: str, setting: str) -> str:
    """The flat ``model.weak`` key of a method's setting (``enabled`` is the method's own name)."""
    return module if setting == "enabled" else f"{module}_{setting}"


def weak_defaults() -> dict[str, Any]:
    """Every flat ``model.weak`` key with its default (``points``: False, ``points_lambda_sem``: 1.0, ...)."""
    return {flat_key(m, f.name): getattr(cls(), f.name) for m, cls in WEAK_CONFIGS.items() for f in fields(cls)}


def flatten_weak(values: dict[str, Any] | None, source: str = "config") -> dict[str, Any] | None:
    """``model.weak`` written one block per module (``points: {enabled: true, lambda_sem: 1.0}``) as flat keys
    (``points: true, points_lambda_sem: 1.0``); keys already in that form pass through."""
    if values is None:
        return None
    out: dict[str, Any] = {}
    for key, value in values.items():
        if not isinstance(value, dict):
            out[key] = value
            continue
        if key not in WEAK_MODULES:
            raise InputError(f"{source}: model.weak.{key} is not a weak module's block ({', '.join(WEAK_MODULES)})")
        for sub, v in value.items():
            out[flat_key(key, sub)] = v
    return out


def _check_setting(name: str, value: Any, default: Any, spec) -> None:
    """One weak setting against its field: a switch a boolean, a count an integer at least its minimum, a weight a
    number >= 0, a choice one of its values, a path a string. A one-line :class:`InputError` names it."""
    low, choices = spec.metadata.get("minimum", 0), spec.metadata.get("choices")
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise InputError(f"{name} must be true or false, got {value!r}")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise InputError(f"{name} must be an integer of at least {low}, got {value!r}")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= low:
            raise InputError(f"{name} must be a number >= {low}, got {value!r}")
    elif choices is not None:
        if value not in choices:
            raise InputError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    elif value is not None and not isinstance(value, str):  # a path (jtsm_cache)
        raise InputError(f"{name} must be a path, got {value!r}")


def check_weak(values: dict[str, Any] | None, source: str = "config") -> WeakConfig:
    """``model.weak`` (flat keys) checked key by key before any work, against each method's config dataclass:
    known keys only, each of its field's type and range (:func:`_check_setting`), then each method's own rule
    (e.g. the point decoder's width divisible by its heads). A one-line :class:`InputError` names the key."""
    values = dict(values or {})
    defaults = weak_defaults()
    _check_keys(values, set(defaults), "model.weak")
    blocks: dict[str, dict[str, Any]] = {m: {} for m in WEAK_CONFIGS}
    for key, value in values.items():
        module, _, setting = key.partition("_")
        spec = {f.name: f for f in fields(WEAK_CONFIGS[module])}[setting or "enabled"]
        _check_setting(f"{source}: model.weak.{key}", value, defaults[key], spec)
        blocks[module][setting or "enabled"] = value
    weak = WeakConfig(**{m: WEAK_CONFIGS[m](**b) for m, b in blocks.items()})
    for m in WEAK_CONFIGS:
        config = getattr(weak, m)
        if hasattr(config, "check"):
            config.check(source)
    return weak


# settings that were renamed: old key -> what replaced it
RENAMED = {"min_area": "min_thing_area and min_stuff_area (things and stuff have separate limits)"}


def _check_keys(values: dict[str, Any], known: set[str], section: str) -> None:
    """An unknown key of a config section is an error naming it (and its new name when it was renamed)."""
    for key in values:
        if key not in known:
            hint = f"; it is now {RENAMED[key]}" if key in RENAMED else f"; known keys: {', '.join(sorted(known))}"
            raise InputError(f"config: unknown key {section}.{key}{hint}")


def _panoptic_settings(values: dict[str, Any] | None) -> dict[str, Any]:
    """``model.panoptic``: the keyword arguments of :class:`PanopticHead`, plus ``use_affinity`` and
    ``affinity_norm`` for its affinity."""
    values = dict(values or {})
    known = set(inspect.signature(PanopticHead).parameters) - {"labels", "affinity"}
    _check_keys(values, known | {"use_affinity", "affinity_norm"}, "model.panoptic")
    return values


def build_panoptic_net(
    categories: dict[int, Category],
    backbone: str = "resnet50",
    weights: str | None = None,
    norm: str = "frozen_bn",
    trainable_layers: int = 3,
    fpn_channels: int = 256,
    fpn_norm: str | None = None,
    anchor_sizes: tuple[int, ...] = (32, 64, 128, 256, 512),
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0),
    rpn_pre_nms_train: int = 2000,
    rpn_post_nms_train: int = 1000,
    rpn_pre_nms_test: int = 1000,
    rpn_post_nms_test: int = 1000,
    rpn_batch_size: int = 256,
    roi_batch_size: int = 512,
    box_representation: int = 1024,
    roi_canonical_scale: int = 224,
    detections_per_img: int = 100,
    mask_channels: int = 256,
    mask_train_stage: int = -1,
    semantic_channels: int = 128,
    affinity_channels: int = 128,
    semantic_loss_weight: float = 0.5,
    panoptic: dict[str, Any] | None = None,
    weak: dict[str, Any] | None = None,
    loss_normalization: str = "batch",
    channels_last: bool = True,
    weights_from_checkpoint: bool = False,
) -> PanopticNet:
    """Compose the network from plain arguments (one per constructor knob).

    ``weights_from_checkpoint``: a trained network's weights are loaded next, so ``weights`` may be None with a
    frozen backbone (see :func:`build_backbone`).
    """
    labels = LabelSpace(categories)
    pan = _panoptic_settings(panoptic)
    use_affinity = pan.pop("use_affinity", True)
    affinity_norm = pan.pop("affinity_norm", "mass")
    w = check_weak(weak)
    body = build_backbone(
        backbone,
        weights,
        norm,
        trainable_layers,
        fpn_channels,
        fpn_norm,
        weights_from_checkpoint=weights_from_checkpoint,
    )
    rpn = build_rpn(
        fpn_channels,
        anchor_sizes,
        aspect_ratios,
        rpn_pre_nms_train,
        rpn_post_nms_train,
        rpn_pre_nms_test,
        rpn_post_nms_test,
        rpn_batch_size,
    )
    use_masks = pan.get("use_masks", True)
    roi_heads = CascadeRoIHeads(
        fpn_channels,
        labels.num_things + 1,
        representation=box_representation,
        batch_size_per_image=roi_batch_size,
        detections_per_img=detections_per_img,
        mask_channels=mask_channels,
        with_mask=use_masks,
        canonical_scale=roi_canonical_scale,
        mask_train_stage=mask_train_stage,
    )
    semantic = SemanticHead(fpn_channels, labels.num_semantic, semantic_channels)
    affinity = DenseInstanceAffinity(fpn_channels, affinity_channels, affinity_norm) if use_affinity else None
    panoptic_head = PanopticHead(labels, affinity, **pan)
    stages = len(roi_heads.stages)
    # each module from its own settings (model.weak.<module>: {...}, flat here as <module>_<setting>), by name
    cls2box = None
    if w.cls2box.enabled and labels.num_things:
        cls2box = Cls2Box(
            box_representation,
            labels.thing_semantic,
            stages,
            proposals=w.cls2box.proposals,
            mode=w.cls2box.mode,
            warmup=w.cls2box.warmup,
        )
    box2mask = None
    if w.box2mask.enabled:
        box2mask = Box2Mask(warmup=w.box2mask.warmup, pairwise=w.box2mask.pairwise, rois_per_image=w.box2mask.rois)
    cls2pixel = None
    if w.cls2pixel.enabled:
        cls2pixel = Cls2Pixel(
            semantic_channels,
            labels.num_classes,
            labels.stuff_semantic,
            weight=w.cls2pixel.weight,
            warmup=w.cls2pixel.warmup,
            gate=w.cls2pixel.gate,
            pseudo=w.cls2pixel.pseudo,
            energy=w.cls2pixel.energy,
            tag_consistency=w.cls2pixel.tag_consistency,
            stride=SEMANTIC_STRIDE,
        )
    relation = None
    if w.relation.enabled:
        relation = RelationReasoning(
            box_representation,
            semantic_channels,
            labels.num_things + 1,
            labels.num_semantic,
            labels.region_semantic,  # stuff nodes: the stuff classes, or the background
            width=w.relation.width,
            num_layers=w.relation.layers,
            num_nodes=w.relation.rois,
            seg_weight=w.relation.seg_weight,
            stride=SEMANTIC_STRIDE,
        )
    points = None  # built last, so that switching it on leaves every other module's initialisation as it was
    if w.points.enabled:
        points = FDDPoints(
            fpn_channels,
            semantic_channels if w.points.pixels == "semantic" else fpn_channels,
            labels.num_classes,
            labels.thing_semantic,
            dim=w.points.dim,
            layers=w.points.layers,
            heads=w.points.heads,
            expand=w.points.expand,
            lambda_sem=w.points.lambda_sem,
            warmup=w.points.warmup,
            colour=w.points.colour,
            self_train=w.points.self_training,
            auxiliary=w.points.auxiliary,
            pseudo_labels=w.points.pseudo_labels,
            pixels=w.points.pixels,
            clicked_only=w.points.clicked_only,
            pseudo_start=w.points.pseudo_start,
        )
    jtsm = None
    if w.jtsm.enabled:
        jtsm = JTSM(
            body.body_channels[int(MINING_LEVEL)] if w.jtsm.features == "backbone" else fpn_channels,
            labels.num_classes,
            labels.thing_semantic,
            refinements=w.jtsm.refinements,
            hidden=w.jtsm.hidden,
            warmup=w.jtsm.warmup,
            grabcut=w.jtsm.grabcut,
            masked_pooling=w.jtsm.masked_pooling,
            pseudo_labels=w.jtsm.pseudo_labels,
            cache=w.jtsm.cache,
            lr_scale=w.jtsm.lr_scale,
            features=w.jtsm.features,
        )
    return PanopticNet(
        body,
        rpn,
        roi_heads,
        semantic,
        panoptic_head,
        labels,
        cls2box,
        box2mask,
        cls2pixel,
        relation,
        points,
        jtsm,
        semantic_loss_weight,
        loss_normalization,
        channels_last=channels_last,
    )
