"""The base network of paper 000: Panoptic FPN with a 3-stage cascade R-CNN, ending in paper 004's panoptic head.

:class:`PanopticNet` is composed in one place, in the order the data flows::

    features   = backbone(images)                        # ResNet / MobileNetV2 + FPN
    proposals  = rpn(images, features)                   # torchvision RPN
    detections = roi_heads(features, proposals)          # cascade stages + mask head
    semantic   = semantic_head(features)                 # all classes, stride 4
    P          = affinity(Q, dynamic_potential(...))     # paper 004, Eqs. 1-4
    panoptic   = argmax(P)          (or heuristic_merge) # no post-processing heuristics by default

:func:`build_panoptic_net` fills the constructors from plain arguments (a config
section); nothing is looked up by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import (
    AnchorGenerator,
    RegionProposalNetwork,
    RPNHead,
    concat_box_prediction_layers,
)
from torchvision.ops import nms, roi_align

from cqbnet.data.panoptic_format import Category
from cqbnet.errors import InputError
from cqbnet.modeling.backbone import build_backbone
from cqbnet.modeling.cascade_rcnn import CascadeRoIHeads
from cqbnet.modeling.padding import grid_cells, valid_cells
from cqbnet.modeling.panoptic_head import (
    IGNORE,
    POTENTIAL_VARIANTS,
    DenseInstanceAffinity,
    PanopticOutput,
    box_region,
    dynamic_potential,
    heuristic_merge,
    match_segments,
    panoptic_from_logits,
    panoptic_targets,
    paste_masks,
    upsample_argmax,
)
from cqbnet.modeling.semantic_head import SEMANTIC_STRIDE, SemanticHead
from cqbnet.weak.box2mask import (
    PAIRWISE_POOL,
    box_in_roi,
    lab_similarity,
    pairwise_loss,
    pooled_lab,
    projection_loss,
    ramp_weight,
    sample_box_rois,
)
from cqbnet.weak.cls2box import MIDHead, cls2box_loss
from cqbnet.weak.cls2pixel import (
    CAMClassifier,
    PseudoLabelGate,
    class_activation_maps,
    classification_loss,
    energy_loss,
    pseudo_label_loss,
    pseudo_stuff_labels,
    tag_consistency_loss,
)
from cqbnet.weak.relation_reasoning import RelationReasoning, average_with_base, relation_loss

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INFERENCE_MODES = ("argmax", "heuristic")
# how a loss that only some of a batch's images carry is weighed: "batch" scales each loss by the share of the
# batch's images that carry its label, so the batch's loss is the mean over images of what each one can teach
# (L = 1/N sum_i L_i); "labelled" takes each loss as a mean over the images that carry it, whatever their share
LOSS_NORMALIZATIONS = ("batch", "labelled")
FULL_LABELS = frozenset({"P"})  # the kinds of an image from a plain panoptic dataset


@dataclass
class LabelSpace:
    """Class indices: semantic index = order of the categories; detector label k = the k-th thing class (1-based).

    A label space without stuff classes (things on an unlabelled background) gets one more semantic class,
    *background*, index ``num_classes``: the semantic head learns it on the void pixels of panoptic images, and
    it is P's whole-image channel, so every pixel has a channel to fall to and an image without detections is
    all void. With stuff classes, void stays unlabelled and the stuff classes are P's whole-image channels.
    """

    categories: dict[int, Category]
    semantic_of: dict[int, int] = field(init=False)  # category id -> semantic index
    thing_semantic: list[int] = field(init=False)  # detector label k -> semantic index (k - 1)
    stuff_semantic: list[int] = field(init=False)
    region_semantic: list[int] = field(init=False)  # semantic index of each whole-image channel of P

    def __post_init__(self) -> None:
        if not self.categories:
            raise InputError("the label space has no categories")
        self.semantic_of = {cid: i for i, cid in enumerate(self.categories)}
        cats = list(self.categories.values())
        self.thing_semantic = [i for i, c in enumerate(cats) if c.isthing]
        self.stuff_semantic = [i for i, c in enumerate(cats) if not c.isthing]
        self.category_of = [c.id for c in cats]  # semantic index -> category id
        self.region_semantic = self.stuff_semantic or [len(cats)]

    @property
    def background(self) -> bool:
        """True when there are no stuff classes: unlabelled pixels are the background class."""
        return not self.stuff_semantic

    @property
    def num_semantic(self) -> int:
        """Outputs of the semantic head: every class, and the background class when there is no stuff."""
        return self.num_classes + int(self.background)

    def region_categories(self) -> list[int | None]:
        """Category id of each whole-image channel of P (None: background, which becomes void)."""
        return (
            [None] * len(self.region_semantic)
            if self.background
            else [self.category_of[c] for c in self.stuff_semantic]
        )

    def detection_categories(self, labels: Tensor) -> list[int]:
        """Category ids of detector labels (1..T)."""
        return [self.category_of[self.thing_semantic[int(k) - 1]] for k in labels]

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    @property
    def num_things(self) -> int:
        return len(self.thing_semantic)


@dataclass
class WeakConfig:
    """Paper 000's weak-supervision modules, each switched on or off (the pilot needs that)."""

    box2mask: bool = True  # boxes teach masks: projection + pairwise LAB losses on the boxes' mask logits
    box2mask_warmup: int = 10000  # iterations over which the pairwise term ramps in (BoxInst)
    box2mask_pairwise: bool = True
    box2mask_rois: int = 16  # RoIs per boxes-only image: its boxes, then proposals at IoU >= 0.5 with one of them
    cls2box: bool = True  # tags teach detection: WSDDN's MID head times the detector's scores (L_C2B)
    cls2box_proposals: int = 100  # proposals per tag image fed to the MID head
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
    relation_rois: int = 64  # proposals per image that become thing nodes in training
    relation_seg_weight: float = 0.5  # beta of L_RR = L_cls_en + L_reg_en + beta L_seg_en


def _fpn(features: dict[str, Tensor]) -> list[Tensor]:
    """The FPN levels the heads read, strides 4..32 (the backbone's "pool" level is for the RPN only)."""
    return [features[k] for k in ("0", "1", "2", "3")]


@dataclass
class Detections:
    """What inference has before the panoptic stage (:meth:`PanopticNet.detect`)."""

    image_list: ImageList
    fpn: list[Tensor]  # FPN levels at strides 4..32, each (N, C, H'/s, W'/s)
    sem_logits: Tensor  # (N, K, H'/4, W'/4), relation-enhanced when relation reasoning is on
    dets: list[dict[str, Tensor]]  # per image: boxes, scores, labels (and mask_probs when needed)


@dataclass
class PanopticHeadConfig:
    variant: str = "C"  # dynamic potential: B multiplies V and M, C adds them (paper 004, Appendix A.3)
    use_masks: bool = True
    use_affinity: bool = True
    stride: int = 4  # resolution of Psi and P (paper: d = 4)
    match_iou: float = 0.5  # t of Eq. 5
    train_score_thresh: float = 0.3
    train_max_detections: int = 50
    train_proposals: int = 200
    test_score_thresh: float = 0.5
    agnostic_nms: float | None = 0.7  # IoU of class-agnostic NMS on the detections fed to Psi
    affinity_norm: str = "mass"  # scale of Eq. 4's product: "mass" (per channel), "mass_score" or "pixels"
    # the panoptic loss stops at the RoI features of its detections (None: on CPU only, where the backward of
    # their RoIAlign is costly; the FPN still learns from every other loss)
    detach_detection_features: bool | None = None
    # argmax inference: segments smaller than these (pixels) become void; things and stuff apart, as detectron2
    # limits only stuff (its COCO STUFF_AREA_LIMIT is 4096) and a small object is still an object
    min_thing_area: int = 16
    min_stuff_area: int = 64
    loss_weight: float = 1.0
    # heuristic merge (second inference mode)
    merge_score_thresh: float = 0.5
    merge_overlap_thresh: float = 0.5
    merge_stuff_area: int = 64


class PanopticNet(nn.Module):
    """Backbone + RPN + cascade R-CNN + semantic head + paper 004's panoptic head."""

    def __init__(
        self,
        backbone: nn.Module,
        rpn: RegionProposalNetwork,
        roi_heads: CascadeRoIHeads,
        semantic_head: SemanticHead,
        affinity: DenseInstanceAffinity | None,
        labels: LabelSpace,
        head: PanopticHeadConfig,
        semantic_loss_weight: float = 0.5,
        weak: WeakConfig | None = None,
        loss_normalization: str = "batch",
        size_divisible: int = 32,
        pixel_mean: tuple[float, ...] = IMAGENET_MEAN,
        pixel_std: tuple[float, ...] = IMAGENET_STD,
        channels_last: bool = True,
    ):
        super().__init__()
        if head.variant not in POTENTIAL_VARIANTS:
            raise InputError(f"unknown potential variant {head.variant!r}; choose B or C")
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.semantic_head = semantic_head
        self.affinity = affinity
        self.labels = labels
        self.head = head
        self.semantic_loss_weight = semantic_loss_weight
        if loss_normalization not in LOSS_NORMALIZATIONS:
            raise InputError(f"unknown loss_normalization {loss_normalization!r}; choose batch or labelled")
        self.loss_normalization = loss_normalization
        self.weak = weak or WeakConfig()
        rep = roi_heads.stages[0].predictor.cls_score.in_features
        self.mid_heads = None  # Cls2Box: one MID head per cascade stage (Eq. 3 sums L_C2B over the stages)
        if self.weak.cls2box and labels.num_things:
            self.mid_heads = nn.ModuleList(MIDHead(rep, labels.num_things) for _ in roi_heads.stages)
        sem_channels = semantic_head.predictor.in_channels
        self.cam_head = CAMClassifier(sem_channels, labels.num_classes) if self.weak.cls2pixel else None
        self.pseudo_gate = PseudoLabelGate(self.weak.cls2pixel_gate) if self.weak.cls2pixel else None
        self.relation = None
        if self.weak.relation:
            self.relation = RelationReasoning(
                rep,
                sem_channels,
                labels.num_things + 1,
                labels.num_semantic,
                labels.region_semantic,  # stuff nodes: the stuff classes, or the background
                self.weak.relation_width,
                self.weak.relation_layers,
            )
        self.iteration = 0  # the trainer's step, for warm-ups
        self.size_divisible = size_divisible
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(3, 1, 1), persistent=False)
        self.register_buffer(
            "_thing_semantic", torch.tensor(labels.thing_semantic, dtype=torch.int64), persistent=False
        )
        self.register_buffer(
            "_stuff_semantic", torch.tensor(labels.stuff_semantic, dtype=torch.int64), persistent=False
        )
        self.register_buffer(
            "_region_semantic", torch.tensor(labels.region_semantic, dtype=torch.int64), persistent=False
        )
        # NHWC activations and weights: MobileNetV2-FPN's forward and backward on CPU take about 18% less time
        # (benchmarks/step_profile.md); every result is the same up to float rounding
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.to(memory_format=self.memory_format)

    # --- input ------------------------------------------------------------------------------------------------

    def batch(self, images: list[Tensor]) -> ImageList:
        """Normalise (3, H, W) float images in [0, 1] and pad them into one (N, 3, H', W') tensor."""
        sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        d = self.size_divisible
        hmax = -(-max(s[0] for s in sizes) // d) * d
        wmax = -(-max(s[1] for s in sizes) // d) * d
        x = images[0].new_zeros((len(images), 3, hmax, wmax))
        for i, im in enumerate(images):
            x[i, :, : im.shape[-2], : im.shape[-1]] = (im - self.pixel_mean) / self.pixel_std
        return ImageList(x.contiguous(memory_format=self.memory_format), sizes)

    # --- forward ----------------------------------------------------------------------------------------------

    def forward(self, images: list[Tensor], targets: list[dict[str, Any]] | None = None, mode: str = "argmax"):
        """Training: a dict of losses. Inference: one :class:`PanopticOutput` per image (``mode``: argmax|heuristic)."""
        if self.training and targets is None:
            raise ValueError("targets are needed in training mode")
        if mode not in INFERENCE_MODES:
            raise InputError(f"unknown inference mode {mode!r}; choose argmax or heuristic")
        if self.training:
            image_list, features, sem_features, sem_logits = self._shared_features(images)
            return self._training_losses(images, image_list, features, sem_features, sem_logits, targets)
        return self.panoptic_stage(self.detect(images, mode), mode)

    def _shared_features(self, images: list[Tensor]) -> tuple[ImageList, dict[str, Tensor], Tensor, Tensor]:
        """Padded batch, backbone + FPN features, semantic features and logits."""
        image_list = self.batch(images)
        features = self.backbone(image_list.tensors)  # "0".."3" at strides 4..32, "pool" at 64
        sem_features = self.semantic_head.decoder(_fpn(features))  # (N, C, H'/4, W'/4)
        sem_logits = self.semantic_head.predictor(sem_features)  # (N, K, H'/4, W'/4)
        return image_list, features, sem_features, sem_logits

    def detect(self, images: list[Tensor], mode: str = "argmax") -> Detections:
        """Inference up to the panoptic stage: features, semantic logits, the cascade's detections (revised
        by relation reasoning when it is on) and their masks when the panoptic stage needs them."""
        image_list, features, sem_features, sem_logits = self._shared_features(images)
        proposals, _ = self.rpn(image_list, features)
        thresh = self.head.test_score_thresh if mode == "argmax" else self.roi_heads.score_thresh
        enhanced_seg: list[Tensor] = []
        enhance = (
            self._relation_enhancer(sem_features, sem_logits, image_list.image_sizes, enhanced_seg)
            if self.relation
            else None
        )
        dets = self.roi_heads.detect(features, proposals, image_list.image_sizes, thresh, enhance=enhance)
        if enhanced_seg:  # paper 000: the enhanced semantic logits are averaged with the base ones
            sem_logits = average_with_base(sem_logits, torch.stack(enhanced_seg))
        if mode == "argmax":
            dets = [self._one_channel_per_object(d) for d in dets]
        if self.head.use_masks or mode == "heuristic":
            self.roi_heads.predict_masks(features, dets, image_list.image_sizes)
        return Detections(image_list, _fpn(features), sem_logits, dets)

    def panoptic_stage(self, found: Detections, mode: str = "argmax") -> list[PanopticOutput]:
        """Paper 004's argmax over P (with its affinity features Q), or the heuristic merge; one output per image."""
        need_q = self.affinity is not None and mode == "argmax"
        q = self.affinity.features(found.fpn) if need_q else None  # (N, C, H'/4, W'/4)
        outputs = []
        for i, (h, w) in enumerate(found.image_list.image_sizes):
            sem, det = found.sem_logits[i], found.dets[i]
            if mode == "argmax":
                logits = self._panoptic_logits(
                    sem, None if q is None else q[i], det, found.image_list.tensors.shape[-2:], (h, w)
                )
                outputs.append(
                    panoptic_from_logits(
                        upsample_argmax(logits, self.head.stride, (h, w)),
                        self.labels.detection_categories(det["labels"]),
                        [float(s) for s in det["scores"]],
                        self.labels.region_categories(),
                        self.head.min_thing_area,
                        self.head.min_stuff_area,
                    )
                )
            else:
                outputs.append(self._heuristic(sem, det, (h, w)))
        return outputs

    # --- training ---------------------------------------------------------------------------------------------

    def _training_losses(
        self,
        images: list[Tensor],
        image_list: ImageList,
        features: dict[str, Tensor],
        sem_features: Tensor,
        sem_logits: Tensor,
        targets: list[dict[str, Any]],
    ) -> dict[str, Tensor]:
        """Each image contributes exactly the losses its label kinds support (``target["kinds"]``, default P).

        P: every loss. B: RPN and box losses (no mask loss). S: the semantic loss on stuff pixels.
        PT: the semantic loss at the clicked points. Images are never asked for a label they lack.
        """
        kinds = [t.get("kinds", FULL_LABELS) for t in targets]
        boxed = [i for i, k in enumerate(kinds) if "P" in k or "B" in k]
        full = [i for i, k in enumerate(kinds) if "P" in k]
        zero = sem_logits.sum() * 0.0
        losses: dict[str, Tensor] = {}
        det_targets = [self._detection_target(targets[i]) for i in boxed]
        gt_boxes = dict(zip(boxed, det_targets))  # image -> its boxes as detection targets (P and B images)
        proposals: list[Tensor] = []
        if boxed:
            sub = ImageList(image_list.tensors[boxed], [image_list.image_sizes[i] for i in boxed])
            feats = {k: v[boxed] for k, v in features.items()}
            proposals, rpn_losses = self.rpn(sub, feats, det_targets)
            _, det_losses = self.roi_heads(feats, proposals, sub.image_sizes, det_targets)
            losses.update(rpn_losses)
            losses.update(det_losses)
        else:
            losses.update({k: zero for k in self._detection_loss_names()})
        sem_maps = [self._semantic_target(t, k, s) for t, k, s in zip(targets, kinds, image_list.image_sizes)]
        sem_targets = self._pad_semantic(
            sem_maps,
            image_list.tensors.shape[-2:],
            sem_logits.device,
        )
        losses["loss_semantic"] = self.semantic_loss_weight * self.semantic_head.loss(sem_logits, sem_targets)
        losses["loss_panoptic"] = zero
        boxes_only = [i for i, k in enumerate(kinds) if "B" in k and "P" not in k]
        tags_only = [i for i, k in enumerate(kinds) if "I" in k and "P" not in k and "B" not in k]
        if self.mid_heads is not None:
            losses["loss_cls2box"] = self._cls2box_loss(image_list, features, targets, tags_only)
        tagged = [i for i, k in enumerate(kinds) if "I" in k and "P" not in k and "S" not in k]
        if self.cam_head is not None:
            losses["loss_cls2pixel"] = self.weak.cls2pixel_weight * self._cls2pixel_loss(
                images, sem_features, sem_logits, targets, tagged, full
            )
        if self.weak.box2mask and self.roi_heads.with_mask:
            losses["loss_box2mask"] = self._box2mask_loss(
                images, image_list, features, gt_boxes, dict(zip(boxed, proposals)), boxes_only
            )
        if self.relation is not None:
            known = dict(zip(boxed, proposals))
            losses["loss_relation"] = self._relation_loss(
                image_list, features, sem_features, sem_logits, targets, kinds, known, gt_boxes
            )
        if full:
            # paper 004, Appendix A.4: the panoptic head learns from *predicted* detections. Its loss reaches
            # the box and mask heads through the scores and masks, and the FPN through the RoI features unless
            # ``head.detach_detection_features`` (by default on CPU only, where that backward is the costly part)
            pos = [boxed.index(i) for i in full]
            top = [proposals[j][: self.head.train_proposals] for j in pos]
            detach = self.head.detach_detection_features
            if detach is None:
                detach = sem_logits.device.type == "cpu"
            frozen = {k: v[full].detach() if detach else v[full] for k, v in features.items()}
            sizes = [image_list.image_sizes[i] for i in full]
            pan_sem = sem_logits[full]
            enhanced_seg: list[Tensor] = []
            enhance = (  # as at test: the panoptic head learns from what it will be given
                self._relation_enhancer(sem_features[full], pan_sem, sizes, enhanced_seg) if self.relation else None
            )
            pan_dets = self.roi_heads.detect(
                frozen, top, sizes, self.head.train_score_thresh, self.head.train_max_detections, enhance=enhance
            )
            if enhanced_seg:
                pan_sem = average_with_base(pan_sem, torch.stack(enhanced_seg))
            if self.head.use_masks:
                self.roi_heads.predict_masks(frozen, pan_dets, sizes)
            losses["loss_panoptic"] = self.head.loss_weight * self._panoptic_loss(
                pan_sem,
                # Q of the panoptic images only: (n, C, H'/4, W'/4)
                None if self.affinity is None else self.affinity.features([f[full] for f in _fpn(features)]),
                pan_dets,
                [targets[i] for i in full],
                image_list.tensors.shape[-2:],
                sizes,
            )
        if self.loss_normalization == "batch":
            contributors = {
                **{k: len(boxed) for k in self._detection_loss_names()},
                "loss_mask": len(full),
                "loss_semantic": sum(m is not None for m in sem_maps),
                "loss_panoptic": len(full),
                "loss_cls2box": len(tags_only),
                "loss_cls2pixel": len(tagged),
                "loss_box2mask": len(boxes_only),
                "loss_relation": sum(bool(k & {"P", "B", "S"}) for k in kinds),
            }
            losses = {k: v * (contributors[k] / len(targets)) for k, v in losses.items()}
        return losses

    def _cls2pixel_loss(self, images, sem_features, sem_logits, targets, idx: list[int], full: list[int]) -> Tensor:
        """Cls2Pixel (paper 000): L_pseudo + L_cls + L_energy for images whose stuff is known only by tags.

        CAMs of a classification branch on the semantic features give pseudo stuff labels (confident
        pixels of tagged stuff classes, the rest ignored) for the semantic logits; the branch itself learns
        from the tags; an energy term keeps the semantic prediction coherent with the image's colours. The
        pseudo-label and energy terms ramp in over ``weak.cls2pixel_warmup`` iterations (our addition, after
        BoxInst's warm-up): a classifier's CAMs are noise until it has learned, and on a pilot where 90% of
        the images carry tags only, pseudo labels from that noise drove the stuff prediction to collapse. For
        the same reason L_pseudo is gated (:class:`PseudoLabelGate`): the panoptic images ``full`` of the batch
        score the pseudo labels against their true semantic map, and they teach, weighed by how far they beat
        the head, only while they do.
        """
        zero = _zero_loss(self.cam_head)
        if full and self.pseudo_gate.enabled and self.weak.cls2pixel_pseudo:
            self._score_pseudo_labels(images, sem_features, sem_logits, targets, full)
        if not idx:
            return zero
        valid = valid_cells(
            [images[i].shape[-2:] for i in idx], SEMANTIC_STRIDE, sem_features.shape[-2:], sem_features.device
        )  # (n, 1, h, w): each image's own cells
        image_logits, maps = self.cam_head(sem_features[idx], valid)  # (n, K), (n, K, h, w)
        tags = torch.stack([targets[i]["tags"] for i in idx])
        loss = classification_loss(image_logits, tags)
        ramp = ramp_weight(self.iteration, self.weak.cls2pixel_warmup)
        if ramp == 0:  # the CAMs of a classifier that has not learned yet are noise: no pseudo labels from them
            return loss
        weak = self.weak
        dense = zero
        gate = self.pseudo_gate.weight() if weak.cls2pixel_pseudo else 0.0
        if gate > 0:  # CAMs and pseudo labels only when they teach
            cams = class_activation_maps(maps.detach(), valid)  # 0 off the image: no pseudo label there
            pseudo = pseudo_stuff_labels(cams, tags, self._stuff_semantic)  # (n, h, w)
            dense = gate * pseudo_label_loss(sem_logits[idx], pseudo)
        for j, i in enumerate(idx):
            h, w = grid_cells(images[i].shape[-2:], SEMANTIC_STRIDE)  # the image's cells on the grid
            probs = torch.softmax(sem_logits[i, :, :h, :w], dim=0)[None]  # (1, K, h, w)
            if weak.cls2pixel_energy:
                lab = pooled_lab(images[i], SEMANTIC_STRIDE)  # (1, 3, h, w): where the energy fires
                dense = dense + energy_loss(probs, lab.to(sem_logits.device)[..., :h, :w]) / len(idx)
            if weak.cls2pixel_tag_consistency:
                classes = probs[:, : tags.shape[1]]  # without the background class of a stuff-free label space
                dense = dense + tag_consistency_loss(classes, tags[j : j + 1]) / len(idx)
        return loss + ramp * dense

    @torch.no_grad()
    def _score_pseudo_labels(self, images, sem_features, sem_logits, targets, full: list[int]) -> None:
        """Pseudo labels for the panoptic images, made as for tag images, scored against their semantic maps."""
        ignore = self.semantic_head.ignore_index
        valid = valid_cells(
            [images[i].shape[-2:] for i in full], SEMANTIC_STRIDE, sem_features.shape[-2:], sem_features.device
        )
        _, maps = self.cam_head(sem_features[full], valid)  # (n, K, h, w) on the padded grid
        cams = class_activation_maps(maps, valid)
        for j, i in enumerate(full):
            h, w = grid_cells(images[i].shape[-2:], SEMANTIC_STRIDE)  # the image's cells on the grid
            truth = targets[i]["semantic"].to(sem_logits.device)
            grid = F.interpolate(truth[None, None].float(), size=(h, w), mode="nearest")[0].long()  # (1, h, w)
            present = truth[truth != ignore].unique()
            tags = torch.zeros(1, cams.shape[1], device=cams.device)
            tags[0, present[present < cams.shape[1]]] = 1.0
            pseudo = pseudo_stuff_labels(cams[j : j + 1, :, :h, :w], tags, self._stuff_semantic)  # (1, h, w)
            head = sem_logits[i : i + 1, : tags.shape[1], :h, :w]  # the classes the tags can name
            self.pseudo_gate.update(pseudo, head, tags, grid, ignore)

    def _relation_enhancer(
        self, sem_features: Tensor, sem_logits: Tensor, sizes: list[tuple[int, int]], seg_out: list[Tensor]
    ):
        """Relation reasoning revising the first cascade stage of :meth:`CascadeRoIHeads.detect`, per image of
        ``sizes``; appends each image's enhanced semantic logits (K, h, w) to ``seg_out`` (paper 000: averaged
        with the base predictions). The same at test and for the panoptic head's detections in training: an
        image's first ``weak.relation_rois`` RoIs are the thing graph, the rest read it."""
        probs = torch.softmax(sem_logits, dim=1)  # (N, K, h, w)

        def enhance(x: Tensor, logits: Tensor, deltas: Tensor, counts: list[int]) -> tuple[Tensor, Tensor]:
            cls, reg = [], []
            for i, (xi, li, di) in enumerate(zip(x.split(counts), logits.split(counts), deltas.split(counts))):
                cells = grid_cells(sizes[i], SEMANTIC_STRIDE)
                c, r, seg = self.relation(xi, sem_features[i], probs[i], cells, self.weak.relation_rois)
                cls.append(average_with_base(li, c))
                reg.append(average_with_base(di, r))
                seg_out.append(seg)
            return torch.cat(cls), torch.cat(reg)

        return enhance

    def _relation_loss(
        self,
        image_list: ImageList,
        features: dict[str, Tensor],
        sem_features: Tensor,
        sem_logits: Tensor,
        targets: list[dict[str, Any]],
        kinds: list[frozenset[str]],
        proposals: dict[int, Tensor],
        gt: dict[int, dict[str, Tensor]],
    ) -> Tensor:
        """Relation reasoning (paper 000, "Semantic Coherence"): L_RR = L_cls_en + L_reg_en + beta L_seg_en.

        Every image with boxes (P, B) or stuff pixels (P, S) builds its super graph from its RoIs and its
        stuff classes. The enhanced predictions, averaged with the base ones, are trained only against the
        labels the image has: boxes give L_cls_en and L_reg_en, stuff pixels L_seg_en. The graph carries each
        loss into the other branch: a stuff map trains the RoI features, boxes train the semantic features.
        """
        zero = _zero_loss(self.relation)
        idx = [i for i, k in enumerate(kinds) if k & {"P", "B", "S"}]
        if not idx:
            return zero
        n = self.weak.relation_rois
        missing = [i for i in idx if i not in proposals]
        if missing:  # stuff-only images: RPN proposals without an RPN loss
            sub = ImageList(image_list.tensors[missing], [image_list.image_sizes[i] for i in missing])
            found = self._proposals(sub, {k: v[missing] for k, v in features.items()})
            proposals = {**proposals, **dict(zip(missing, found))}
        rois = [torch.cat([proposals[i][:n], gt[i]["boxes"]]) if i in gt else proposals[i][:n] for i in idx]
        sizes = [image_list.image_sizes[i] for i in idx]
        stage = self.roi_heads.stages[0]
        x = stage.head(self.roi_heads.box_roi_pool({k: v[idx] for k, v in features.items()}, rois, sizes))  # (R, F)
        base_logits, base_deltas = stage.predictor(x)
        probs = torch.softmax(sem_logits[idx].detach(), dim=1)  # (n, K, h, w): where each stuff class is
        counts = [len(r) for r in rois]
        box_cls, box_reg, box_rois, seg, seg_targets = [], [], [], [], []
        for j, (xi, li, di) in enumerate(zip(x.split(counts), base_logits.split(counts), base_deltas.split(counts))):
            i = idx[j]
            c, r, s = self.relation(
                xi, sem_features[i], probs[j], grid_cells(image_list.image_sizes[i], SEMANTIC_STRIDE)
            )
            if i in gt:
                box_cls.append(average_with_base(li, c))
                box_reg.append(average_with_base(di, r))
                box_rois.append(rois[j])
            target = self._semantic_target(targets[i], kinds[i] & {"P", "S"}, image_list.image_sizes[i])
            if target is not None:
                seg.append(average_with_base(sem_logits[i], s))
                seg_targets.append(target)
        cls_en = reg_en = seg_en = zero
        if box_rois:
            labels, reg_targets = self.roi_heads.first_stage_targets(
                box_rois, [gt[i]["boxes"] for i in idx if i in gt], [gt[i]["labels"] for i in idx if i in gt]
            )
            cls_en, reg_en = self.roi_heads.box_losses(torch.cat(box_cls), torch.cat(box_reg), labels, reg_targets)
        if seg:
            padded = self._pad_semantic(seg_targets, image_list.tensors.shape[-2:], sem_logits.device)
            seg_en = self.semantic_head.loss(torch.stack(seg), padded)
        return relation_loss(cls_en, reg_en, seg_en, self.weak.relation_seg_weight)

    def _proposals(self, image_list: ImageList, features: dict[str, Tensor]) -> list[Tensor]:
        """RPN proposals without its loss (for images that have no boxes to train it with)."""
        feats = list(features.values())
        objectness, deltas = self.rpn.head(feats)
        anchors = self.rpn.anchor_generator(image_list, feats)
        per_level = [o[0].shape[0] * o[0].shape[1] * o[0].shape[2] for o in objectness]
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        proposals = self.rpn.box_coder.decode(deltas.detach(), anchors).view(len(anchors), -1, 4)
        boxes, _ = self.rpn.filter_proposals(proposals, objectness, image_list.image_sizes, per_level)
        return boxes

    def _cls2box_loss(self, image_list, features, targets, idx: list[int]) -> Tensor:
        """Cls2Box (paper 000): phi_MID times the detector's class probabilities, summed over proposals,
        against the image's thing tags (binary cross-entropy). Trains the MID heads and the detector.

        Eq. 3: sum_i lambda_i L_C2B over the cascade stages (lambda = the stages' loss weights). Stage i sees
        the proposals refined by the stages before it, as at test, where the score is the stages' mean.
        """
        zero = _zero_loss(self.mid_heads)
        if not idx:
            return zero
        sub = ImageList(image_list.tensors[idx], [image_list.image_sizes[i] for i in idx])
        feats = {k: v[idx] for k, v in features.items()}
        boxes = [p[: self.weak.cls2box_proposals] for p in self._proposals(sub, feats)]
        counts = [len(b) for b in boxes]
        tags = torch.stack([targets[i]["tags"][self._thing_semantic] for i in idx])  # (n, T)
        heads = self.roi_heads
        for stage, mid_head, weight in zip(heads.stages, self.mid_heads, heads.stage_weights):
            x = stage.head(heads.box_roi_pool(feats, boxes, sub.image_sizes))  # (R, representation)
            logits, deltas = stage.predictor(x)
            probs = torch.softmax(logits, dim=1)[:, 1:].split(counts)  # things only
            zero = zero + weight * cls2box_loss(mid_head(x, counts), tags, list(probs))
            boxes = heads.refine(stage, deltas, boxes, sub.image_sizes)
        return zero

    def _box2mask_loss(
        self,
        images: list[Tensor],
        image_list: ImageList,
        features: dict[str, Tensor],
        gt_boxes: dict[int, dict[str, Tensor]],
        proposals: dict[int, Tensor],
        idx: list[int],
    ) -> Tensor:
        """Box2Mask (paper 000): in boxes-only images, the masks of RoIs on a box (the box and proposals at
        IoU >= 0.5) must project onto the box along rows and columns (projection loss, zero outside the box)
        and agree across similar-coloured neighbours inside it (pairwise loss, warmed up)."""
        idx = [i for i in idx if len(gt_boxes[i]["boxes"])]
        if not idx:
            return _zero_loss(self.roi_heads.mask_predictor)
        rois, boxes, labels = [], [], []
        for i in idx:
            r, which = sample_box_rois(proposals[i], gt_boxes[i]["boxes"], self.weak.box2mask_rois)
            rois.append(r)
            boxes.append(gt_boxes[i]["boxes"][which])
            labels.append(gt_boxes[i]["labels"][which])
        feats = {k: v[idx] for k, v in features.items()}
        sizes = [image_list.image_sizes[i] for i in idx]
        logits = self.roi_heads.mask_logits(feats, rois, labels, sizes)  # (M, 28, 28)
        inside = box_in_roi(torch.cat(rois), torch.cat(boxes), logits.shape[-1])  # (M, 28, 28)
        loss = projection_loss(logits, inside)
        if self.weak.box2mask_pairwise:
            lab = [pooled_lab(images[i]).to(logits.device) for i in idx]  # each (1, 3, H / pool, W / pool)
            scale = 1.0 / PAIRWISE_POOL
            lab_rois = torch.cat(
                [
                    roi_align(x, [r], logits.shape[-2:], spatial_scale=scale, sampling_ratio=2, aligned=True)
                    for x, r in zip(lab, rois)
                ]
            )  # (M, 3, 28, 28)
            sim = lab_similarity(lab_rois)
            loss = loss + ramp_weight(self.iteration, self.weak.box2mask_warmup) * pairwise_loss(logits, sim, inside)
        return loss

    def _detection_loss_names(self) -> list[str]:
        names = ["loss_objectness", "loss_rpn_box_reg"]
        names += [f"loss_{k}_s{i}" for i in range(len(self.roi_heads.stages)) for k in ("cls", "box")]
        return names + (["loss_mask"] if self.roi_heads.with_mask else [])

    def _semantic_target(self, t: dict[str, Any], kinds: frozenset[str], size: tuple[int, int]) -> Tensor | None:
        """Pixel labels an image carries: full (P), stuff only (S), clicked points (PT); None when it has none."""
        if "P" in kinds:
            if self.labels.background:  # no stuff classes: the unlabelled pixels are the background class
                return torch.where(t["panoptic"] == 0, self.labels.num_classes, t["semantic"])
            return t["semantic"]
        if "S" in kinds:
            return t["stuff_semantic"]
        if "PT" in kinds:
            h, w = size
            out = torch.full((h, w), self.semantic_head.ignore_index, dtype=torch.int64, device=t["point_xy"].device)
            out[t["point_xy"][:, 1], t["point_xy"][:, 0]] = t["point_labels"]
            return out
        return None

    # --- pieces -----------------------------------------------------------------------------------------------

    def _one_channel_per_object(self, det: dict[str, Tensor]) -> dict[str, Tensor]:
        """Class-agnostic NMS before the potential (our addition; ``head.agnostic_nms``, None to skip).

        The detector's NMS is per class, so one object can come with boxes of two classes; as two channels
        of Psi they would split its pixels. Keeping the higher-scoring box gives each object one channel.
        """
        if self.head.agnostic_nms is None or len(det["boxes"]) < 2:
            return det
        keep = nms(det["boxes"].detach(), det["scores"].detach(), self.head.agnostic_nms)
        return {k: v[keep] for k, v in det.items()}

    def _detection_target(self, t: dict[str, Any]) -> dict[str, Tensor]:
        """Non-crowd things as torchvision detection targets (labels 1..T): segments of P, else boxes of B."""
        det_label = {s: k + 1 for k, s in enumerate(self.labels.thing_semantic)}
        if "masks" in t:
            sel = t["is_thing"] & ~t["iscrowd"]
            boxes, classes = t["boxes"][sel], t["labels"][sel]
        else:
            sel = ~t["box_iscrowd"]
            boxes, classes = t["box_boxes"][sel], t["box_labels"][sel]
        labels = torch.tensor([det_label[int(c)] for c in classes], dtype=torch.int64, device=boxes.device)
        out = {"boxes": boxes.float(), "labels": labels}
        if "masks" in t:
            out["masks"] = t["masks"][sel].to(torch.uint8)
        return out

    def _pad_semantic(self, maps: list[Tensor | None], size, device) -> Tensor:
        """Per-image label maps (or None: nothing labelled) padded into one (N, H', W') batch."""
        out = torch.full((len(maps), *size), self.semantic_head.ignore_index, dtype=torch.int64, device=device)
        for i, m in enumerate(maps):
            if m is not None:
                out[i, : m.shape[0], : m.shape[1]] = m
        return out

    def _grid_probs(self, sem_logits: Tensor, padded: tuple[int, int]) -> Tensor:
        """Semantic probabilities (K, h, w) on the panoptic grid (stride ``head.stride`` of the padded image)."""
        s = self.head.stride
        size = (padded[0] // s, padded[1] // s)
        logits = (
            sem_logits
            if sem_logits.shape[-2:] == size
            else F.interpolate(sem_logits[None], size=size, mode="bilinear", align_corners=False)[0]
        )
        return torch.softmax(logits, dim=0)

    def _panoptic_logits(
        self, sem_logits: Tensor, q: Tensor | None, det: dict[str, Tensor], padded, size: tuple[int, int]
    ) -> Tensor:
        """P (D + N_st, h, w) for one image of ``size`` (H, W): Psi (Eqs. 1-2), revised by the affinity (Eq. 4).

        P covers the image's own cells, ceil(H / stride) x ceil(W / stride), whatever the batch's padding: the
        affinity's context sums over every cell of Psi.
        """
        rows, cols = grid_cells(size, self.head.stride)
        prob = self._grid_probs(sem_logits, padded)[:, :rows, :cols]  # (K, h, w)
        classes = self._thing_semantic[det["labels"] - 1]
        masks = None
        if self.head.use_masks and "mask_probs" in det:
            masks = paste_masks(det["mask_probs"], det["boxes"], rows, cols, self.head.stride)
        psi = dynamic_potential(
            prob,
            det["boxes"],
            classes,
            det["scores"],
            self._region_semantic,
            self.head.stride,
            masks,
            self.head.variant,
        )
        if self.affinity is None or q is None:
            return psi
        q = q[:, : grid_cells(size, SEMANTIC_STRIDE)[0], : grid_cells(size, SEMANTIC_STRIDE)[1]]
        scores = torch.cat([det["scores"], det["scores"].new_ones(len(self._region_semantic))])  # (K,) regions: 1
        return self.affinity(q, psi, scores)  # Q at stride 4 is taken to the grid inside

    def _panoptic_loss(self, sem_logits, q, dets, targets, padded, sizes) -> Tensor:
        """Panoptic matching loss (paper 004, Sec. 3.5): cross-entropy on P against matched ground truth."""
        total = sem_logits.sum() * 0.0
        n = 0
        for i, t in enumerate(targets):
            det = dets[i]
            things = t["is_thing"] & ~t["iscrowd"]
            gt_classes = t["labels"][things]
            det_classes = self._thing_semantic[det["labels"] - 1]
            match, keep = match_segments(t["boxes"][things], gt_classes, det["boxes"], det_classes, self.head.match_iou)
            keep = keep.to(det["boxes"].device)
            det = {k: v[keep] for k, v in det.items()}
            logits = self._panoptic_logits(sem_logits[i], None if q is None else q[i], det, padded, sizes[i])
            segs = [
                {"id": int(sid), "class": int(c), "is_thing": bool(th), "iscrowd": bool(cr)}
                for sid, c, th, cr in zip(t["segment_ids"], t["labels"], t["is_thing"], t["iscrowd"])
            ]
            ids = torch.full(padded, -1, dtype=torch.int64, device=t["panoptic"].device)  # -1: off the image
            ids[: t["panoptic"].shape[0], : t["panoptic"].shape[1]] = t["panoptic"]
            target = panoptic_targets(
                ids, segs, match, keep.cpu(), self.labels.stuff_semantic, self.head.stride, self.labels.background
            )
            target = target[: logits.shape[1], : logits.shape[2]]
            if (target != IGNORE).any():
                total = total + F.cross_entropy(logits[None], target[None], ignore_index=IGNORE)
                n += 1
        return total / max(n, 1)

    def _heuristic(self, sem_logits: Tensor, det: dict[str, Tensor], size: tuple[int, int]) -> PanopticOutput:
        h, w = size
        prob = SemanticHead.probabilities(sem_logits[None], tuple(s * SEMANTIC_STRIDE for s in sem_logits.shape[-2:]))[
            0
        ]
        semantic = prob[:, :h, :w].argmax(0).cpu().numpy()
        if len(det["boxes"]) and "mask_probs" in det:
            masks = (paste_masks(det["mask_probs"], det["boxes"], h, w, 1.0) > 0.5).cpu().numpy()
        else:  # a network without a mask head: each detection is its box
            masks = box_region(det["boxes"].detach(), h, w, 1.0).cpu().numpy()
        labels = self.labels.detection_categories(det["labels"])
        stuff = {c: self.labels.category_of[c] for c in self.labels.stuff_semantic}
        return heuristic_merge(
            masks,
            labels,
            [float(s) for s in det["scores"]],
            semantic,
            stuff,
            self.head.merge_score_thresh,
            self.head.merge_overlap_thresh,
            self.head.merge_stuff_area,
        )


def _zero_loss(module: nn.Module) -> Tensor:
    """A zero that is connected to ``module``'s parameters (so DDP sees them used when a batch has no such image)."""
    return sum(p.sum() for p in module.parameters()) * 0.0


# settings that were renamed: old key -> what replaced it
RENAMED = {"min_area": "min_thing_area and min_stuff_area (things and stuff have separate limits)"}


def _settings(cls, values: dict[str, Any] | None, section: str):
    """A settings dataclass from a config mapping; an unknown key is an error naming it (and its new name)."""
    values = dict(values or {})
    known = {f.name for f in fields(cls)}
    for key in values:
        if key not in known:
            hint = f"; it is now {RENAMED[key]}" if key in RENAMED else f"; known keys: {', '.join(sorted(known))}"
            raise InputError(f"config: unknown key {section}.{key}{hint}")
    return cls(**values)


def build_panoptic_net(
    categories: dict[int, Category],
    backbone: str = "resnet18",
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
    head = _settings(PanopticHeadConfig, panoptic, "model.panoptic")
    weak_cfg = _settings(WeakConfig, weak, "model.weak")
    body = build_backbone(
        backbone,
        weights,
        norm,
        trainable_layers,
        fpn_channels,
        fpn_norm,
        weights_from_checkpoint=weights_from_checkpoint,
    )
    anchors = AnchorGenerator(tuple((s,) for s in anchor_sizes), (tuple(aspect_ratios),) * len(anchor_sizes))
    rpn = RegionProposalNetwork(
        anchors,
        RPNHead(fpn_channels, anchors.num_anchors_per_location()[0]),
        fg_iou_thresh=0.7,
        bg_iou_thresh=0.3,
        batch_size_per_image=rpn_batch_size,
        positive_fraction=0.5,
        pre_nms_top_n={"training": rpn_pre_nms_train, "testing": rpn_pre_nms_test},
        post_nms_top_n={"training": rpn_post_nms_train, "testing": rpn_post_nms_test},
        nms_thresh=0.7,
    )
    roi_heads = CascadeRoIHeads(
        fpn_channels,
        labels.num_things + 1,
        representation=box_representation,
        batch_size_per_image=roi_batch_size,
        detections_per_img=detections_per_img,
        mask_channels=mask_channels,
        with_mask=head.use_masks,
        canonical_scale=roi_canonical_scale,
        mask_train_stage=mask_train_stage,
    )
    semantic = SemanticHead(fpn_channels, labels.num_semantic, semantic_channels)
    affinity = DenseInstanceAffinity(fpn_channels, affinity_channels, head.affinity_norm) if head.use_affinity else None
    return PanopticNet(
        body,
        rpn,
        roi_heads,
        semantic,
        affinity,
        labels,
        head,
        semantic_loss_weight,
        weak_cfg,
        loss_normalization,
        channels_last=channels_last,
    )
