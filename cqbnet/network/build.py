"""Building :class:`~cqbnet.network.panoptic_net.PanopticNet` from plain arguments (a config's ``model`` section).

Every constructor knob is one argument; ``model.panoptic`` holds :class:`~cqbnet.modeling.panoptic_head.
PanopticHead`'s and ``model.weak`` the weak modules' (:class:`WeakConfig`). Unknown keys are errors that name
them; nothing is looked up by name.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, fields
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
from cqbnet.weak.box2mask import Box2Mask
from cqbnet.weak.cls2box import MODES as CLS2BOX_MODES
from cqbnet.weak.cls2box import Cls2Box
from cqbnet.weak.cls2pixel import Cls2Pixel
from cqbnet.weak.fdd_points import PIXEL_SOURCES, FDDPoints
from cqbnet.weak.jtsm import JTSM, MINING_LEVEL
from cqbnet.weak.relation_reasoning import RelationReasoning


@dataclass
class WeakConfig:
    """Paper 000's weak-supervision modules as ``model.weak`` sets them: each switched on or off, and tuned."""

    box2mask: bool = True  # boxes teach masks: projection + pairwise LAB losses on the boxes' mask logits
    box2mask_warmup: int = 10000  # iterations over which the pairwise term ramps in (BoxInst)
    box2mask_pairwise: bool = True
    box2mask_rois: int = 16  # RoIs per boxes-only image: its boxes, then proposals at IoU >= 0.5 with one of them
    cls2box: bool = True  # tags teach detection: WSDDN's MID head times the detector's scores (L_C2B)
    cls2box_proposals: int = 100  # proposals per tag image fed to the MID heads
    cls2box_mode: str = "pseudo"  # "paper": L_C2B trains the detector; "pseudo": its pseudo boxes and absent tags do
    cls2box_warmup: int = 10000  # iterations over which L_C2B ramps in
    cls2pixel: bool = True  # tags teach stuff pixels: CAM pseudo labels + classification + energy (L_C2P)
    cls2pixel_weight: float = 0.5  # beta of Eq. 3
    cls2pixel_warmup: int = 10000  # iterations over which L_pseudo and L_energy ramp in (L_cls from the start)
    cls2pixel_gate: bool = True  # L_pseudo only while CAM pseudo labels beat the head told the tags, on P images
    cls2pixel_pseudo: bool = True  # the three dense terms of L_C2P, each switchable for ablations
    cls2pixel_energy: bool = True
    cls2pixel_tag_consistency: bool = True  # our MIL term on the semantic head
    relation: bool = True  # boxes teach stuff and stuff maps teach detection: graph reasoning (L_RR)
    relation_width: int = 128  # node width of the thing, stuff and super graphs (paper: 128)
    relation_layers: int = 2  # inter-graph reasoning layers (paper: 2)
    relation_rois: int = 64  # RoIs per image that are the thing graph's nodes, in training and at test
    relation_seg_weight: float = 0.5  # beta of L_RR = L_cls_en + L_reg_en + beta L_seg_en
    points: bool = False  # paper 003 (FDD): clicked points teach everything through learned dense pseudo labels
    points_dim: int = 64  # decoder width
    points_layers: int = 2  # decoder layers (paper 003 does not give its count)
    points_heads: int = 4
    points_expand: int = 7  # side in pixels of the square each click is expanded to for its query (Eq. 1)
    points_lambda_sem: float = 1.0  # the auxiliary semantic branch's weight (paper 003: 1 for P1, 0.1 for P10)
    points_warmup: int = 10000  # iterations over which the point images switch to their pseudo panoptic labels
    points_colour: bool = True  # the colour prior (Eqs. 4-5), the self-training (Eq. 6), the auxiliary branch
    points_self_training: bool = True  # and the pseudo labels themselves, each switchable for ablations
    points_auxiliary: bool = True
    points_pseudo_labels: bool = True
    # the stride-4 features the masks are read from: "fpn" (the FPN's finest level, which the detector shares) or
    # "semantic" (the semantic head's features, trained by a class-level loss)
    points_pixels: str = "fpn"
    points_clicked_only: bool = False  # a thing's pseudo mask keeps only its parts that hold a click
    points_pseudo_start: int = 0  # iteration from which the point images begin switching to their pseudo labels
    jtsm: bool = False  # paper 002 (JTSM): tags alone teach things and stuff, mined over segment proposals
    jtsm_refinements: int = 4  # OICR refinement heads (paper 002: 4)
    jtsm_hidden: int = 256  # width of the mining branch's two FC layers
    jtsm_warmup: int = 10000  # iterations over which the tags images switch to their mined pseudo labels
    jtsm_grabcut: bool = True  # re-estimate the mined segments with GrabCut (Sec. 3.4)
    jtsm_masked_pooling: bool = True  # MoIPool; false: RoIPool on the segments' boxes (the ablation)
    jtsm_pseudo_labels: bool = True  # the self-training of the network's branches on the mined labels
    jtsm_cache: str | None = None  # folder caching each image's segment proposals (none: computed every time)
    jtsm_lr_scale: float = 1.0  # the mining heads' learning rate as a multiple of the solver's (WSDDN/OICR: 0.001)
    # what the segments are pooled from at stride 8: "backbone" (the body's own features, as paper 002 pools VGG's
    # conv5) or "fpn" (the FPN level, whose top-down context blurs small things; benchmarks/jtsm_diagnostics.md)
    jtsm_features: str = "backbone"


# smallest value of WeakConfig's numeric settings (0 unless named here) and the choices of its string settings
WEAK_MINIMUM = {
    "box2mask_rois": 1,
    "cls2box_proposals": 1,
    "relation_width": 1,
    "relation_layers": 1,
    "relation_rois": 1,
    "points_dim": 1,
    "points_layers": 1,
    "points_heads": 1,
    "points_expand": 1,
    "jtsm_hidden": 1,
}
WEAK_CHOICES = {"cls2box_mode": CLS2BOX_MODES, "points_pixels": PIXEL_SOURCES, "jtsm_features": ("backbone", "fpn")}


# the weak-supervision modules, each of which ``model.weak`` may give as one block: {points: {enabled: true,
# lambda_sem: 1.0}} is points: true, points_lambda_sem: 1.0 (see :func:`flatten_weak`)
WEAK_MODULES = ("box2mask", "cls2box", "cls2pixel", "relation", "points", "jtsm")


def flatten_weak(values: dict[str, Any] | None, source: str = "config") -> dict[str, Any] | None:
    """``model.weak`` written one block per module (``points: {enabled: true, lambda_sem: 1.0}``) as the keys of
    :class:`WeakConfig` (``points: true, points_lambda_sem: 1.0``); keys already in that form pass through."""
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
            out[key if sub == "enabled" else f"{key}_{sub}"] = v
    return out


def check_weak(values: dict[str, Any] | None, source: str = "config") -> WeakConfig:
    """``model.weak`` checked key by key before any work: known keys only, each of its default's type (a switch a
    boolean, a count an integer at least its minimum, a weight a number >= 0, a choice one of its values), and
    the decoder's width divisible by its heads. A one-line :class:`InputError` names the key and the value."""
    values = dict(values or {})
    _check_keys(values, {f.name for f in fields(WeakConfig)}, "model.weak")
    defaults = WeakConfig()
    for key, value in values.items():
        want, name = getattr(defaults, key), f"{source}: model.weak.{key}"
        if isinstance(want, bool):
            if not isinstance(value, bool):
                raise InputError(f"{name} must be true or false, got {value!r}")
        elif isinstance(want, int):
            if isinstance(value, bool) or not isinstance(value, int) or value < WEAK_MINIMUM.get(key, 0):
                raise InputError(f"{name} must be an integer of at least {WEAK_MINIMUM.get(key, 0)}, got {value!r}")
        elif isinstance(want, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise InputError(f"{name} must be a number >= 0, got {value!r}")
        elif key in WEAK_CHOICES:
            if value not in WEAK_CHOICES[key]:
                raise InputError(f"{name} must be one of {', '.join(WEAK_CHOICES[key])}, got {value!r}")
        elif value is not None and not isinstance(value, str):  # a path (jtsm_cache)
            raise InputError(f"{name} must be a path, got {value!r}")
    weak = WeakConfig(**values)
    if weak.points_dim % weak.points_heads:
        raise InputError(
            f"{source}: model.weak.points_dim ({weak.points_dim}) must be divisible by model.weak.points_heads "
            f"({weak.points_heads})"
        )
    if weak.jtsm_lr_scale <= 0:
        raise InputError(f"{source}: model.weak.jtsm_lr_scale must be above 0, got {weak.jtsm_lr_scale!r}")
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
    if w.cls2box and labels.num_things:
        cls2box = Cls2Box(
            box_representation,
            labels.thing_semantic,
            stages,
            proposals=w.cls2box_proposals,
            mode=w.cls2box_mode,
            warmup=w.cls2box_warmup,
        )
    box2mask = None
    if w.box2mask:
        box2mask = Box2Mask(warmup=w.box2mask_warmup, pairwise=w.box2mask_pairwise, rois_per_image=w.box2mask_rois)
    cls2pixel = None
    if w.cls2pixel:
        cls2pixel = Cls2Pixel(
            semantic_channels,
            labels.num_classes,
            labels.stuff_semantic,
            weight=w.cls2pixel_weight,
            warmup=w.cls2pixel_warmup,
            gate=w.cls2pixel_gate,
            pseudo=w.cls2pixel_pseudo,
            energy=w.cls2pixel_energy,
            tag_consistency=w.cls2pixel_tag_consistency,
            stride=SEMANTIC_STRIDE,
        )
    relation = None
    if w.relation:
        relation = RelationReasoning(
            box_representation,
            semantic_channels,
            labels.num_things + 1,
            labels.num_semantic,
            labels.region_semantic,  # stuff nodes: the stuff classes, or the background
            width=w.relation_width,
            num_layers=w.relation_layers,
            num_nodes=w.relation_rois,
            seg_weight=w.relation_seg_weight,
            stride=SEMANTIC_STRIDE,
        )
    points = None  # built last, so that switching it on leaves every other module's initialisation as it was
    if w.points:
        if w.points_pixels not in PIXEL_SOURCES:
            raise InputError(f"model.weak.points_pixels: {w.points_pixels!r} is not one of {', '.join(PIXEL_SOURCES)}")
        points = FDDPoints(
            fpn_channels,
            semantic_channels if w.points_pixels == "semantic" else fpn_channels,
            labels.num_classes,
            labels.thing_semantic,
            dim=w.points_dim,
            layers=w.points_layers,
            heads=w.points_heads,
            expand=w.points_expand,
            lambda_sem=w.points_lambda_sem,
            warmup=w.points_warmup,
            colour=w.points_colour,
            self_train=w.points_self_training,
            auxiliary=w.points_auxiliary,
            pseudo_labels=w.points_pseudo_labels,
            pixels=w.points_pixels,
            clicked_only=w.points_clicked_only,
            pseudo_start=w.points_pseudo_start,
        )
    jtsm = None
    if w.jtsm:
        jtsm = JTSM(
            body.body_channels[int(MINING_LEVEL)] if w.jtsm_features == "backbone" else fpn_channels,
            labels.num_classes,
            labels.thing_semantic,
            refinements=w.jtsm_refinements,
            hidden=w.jtsm_hidden,
            warmup=w.jtsm_warmup,
            grabcut=w.jtsm_grabcut,
            masked_pooling=w.jtsm_masked_pooling,
            pseudo_labels=w.jtsm_pseudo_labels,
            cache=w.jtsm_cache,
            lr_scale=w.jtsm_lr_scale,
            features=w.jtsm_features,
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
