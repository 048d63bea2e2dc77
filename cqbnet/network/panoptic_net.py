"""The base network of paper 000: Panoptic FPN with a 3-stage cascade R-CNN, ending in paper 004's panoptic head.

:class:`PanopticNet` is composed in one place, in the order the data flows; every head returns its outputs and
its losses (as detectron2's ``PanopticFPN`` and torchvision's ``GeneralizedRCNN`` are written)::

    features   = backbone(images)                            # ResNet / MobileNetV2 + FPN
    proposals  = rpn(images, features)                       # torchvision RPN
    detections = roi_heads(features, proposals)              # cascade stages + mask head
    semantic   = semantic_head(features)                     # all classes, stride 4
    panoptic   = panoptic_head(semantic, features, detections)   # paper 004: P, then argmax (or the merge)

In training, the weak-supervision plug-ins (``cqbnet/weak/``, one protocol: :mod:`cqbnet.weak.base`) add the
losses that images with cheaper labels can teach, in one loop (:meth:`PanopticNet.weak_modules`): papers 003 and 002
first relabel their images with pseudo panoptic labels, paper 000's four modules add their losses after the heads';
each takes its images from :data:`~cqbnet.modeling.supervision.LOSS_IMAGES` and owns its wiring.
:func:`build_panoptic_net` fills the constructors from plain arguments (a config section); nothing is looked
up by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torchvision.models.detection.image_list import ImageList

from cqbnet.data.label_space import LabelSpace
from cqbnet.errors import InputError
from cqbnet.modeling.cascade_rcnn import CascadeRoIHeads
from cqbnet.modeling.panoptic_head import PanopticHead, PanopticOutput
from cqbnet.modeling.rpn import ProposalNetwork
from cqbnet.modeling.semantic_head import SemanticHead
from cqbnet.modeling.supervision import LOSS_NORMALIZATIONS, TrainingBatch, normalise
from cqbnet.modeling.targets import detection_target, pad_semantic, semantic_target
from cqbnet.weak.base import WeakModule
from cqbnet.weak.box2mask import Box2Mask
from cqbnet.weak.cls2box import Cls2Box
from cqbnet.weak.cls2pixel import Cls2Pixel
from cqbnet.weak.fdd_points import FDDPoints
from cqbnet.weak.jtsm import JTSM
from cqbnet.weak.relation_reasoning import RelationReasoning, average_with_base

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INFERENCE_MODES = ("argmax", "heuristic")


def _fpn(features: dict[str, Tensor]) -> list[Tensor]:
    """The FPN levels the heads read, strides 4..32 (the backbone's "pool" level is for the RPN only)."""
    return [features[k] for k in ("0", "1", "2", "3")]


class Features(NamedTuple):
    """What every head and weak module reads of a batch (:meth:`PanopticNet.features`)."""

    image_list: ImageList  # normalised and padded, (N, 3, H', W')
    fpn: dict[str, Tensor]  # FPN levels "0".."3" at strides 4..32 and "pool" at 64, (N, C, H'/s, W'/s)
    sem_features: Tensor  # the semantic head's decoder output, (N, C, H'/4, W'/4)
    sem_logits: Tensor  # (N, K, H'/4, W'/4)
    body: dict[str, Tensor]  # the backbone body's own levels "0".."3" (the FPN's inputs), (N, C_l, H'/s, W'/s)


@dataclass
class Detections:
    """What inference has before the panoptic stage (:meth:`PanopticNet.detect`)."""

    image_list: ImageList
    fpn: list[Tensor]  # FPN levels at strides 4..32, each (N, C, H'/s, W'/s)
    sem_logits: Tensor  # (N, K, H'/4, W'/4), relation-enhanced when relation reasoning is on
    dets: list[dict[str, Tensor]]  # per image: boxes, scores, labels (and mask_probs when needed)


class PanopticNet(nn.Module):
    """Backbone + RPN + cascade R-CNN + semantic head + paper 004's panoptic head, and paper 000's weak modules.

    A weak module that is None is off (the pilot's baselines switch them off). ``points`` is paper 003's
    pseudo-label branch for clicked points (:class:`~cqbnet.weak.fdd_points.FDDPoints`) and ``jtsm`` paper 002's
    thing-and-stuff mining from tags (:class:`~cqbnet.weak.jtsm.JTSM`), both used in training only.
    """

    def __init__(
        self,
        backbone: nn.Module,
        rpn: ProposalNetwork,
        roi_heads: CascadeRoIHeads,
        semantic_head: SemanticHead,
        panoptic_head: PanopticHead,
        labels: LabelSpace,
        cls2box: Cls2Box | None = None,
        box2mask: Box2Mask | None = None,
        cls2pixel: Cls2Pixel | None = None,
        relation: RelationReasoning | None = None,
        points: FDDPoints | None = None,
        jtsm: JTSM | None = None,
        semantic_loss_weight: float = 0.5,
        loss_normalization: str = "batch",
        size_divisible: int = 32,
        pixel_mean: tuple[float, ...] = IMAGENET_MEAN,
        pixel_std: tuple[float, ...] = IMAGENET_STD,
        channels_last: bool = True,
    ):
        super().__init__()
        if loss_normalization not in LOSS_NORMALIZATIONS:
            raise InputError(f"unknown loss_normalization {loss_normalization!r}; choose batch or labelled")
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.semantic_head = semantic_head
        self.panoptic_head = panoptic_head
        self.labels = labels
        self.cls2box = cls2box
        self.box2mask = box2mask
        self.cls2pixel = cls2pixel
        self.relation = relation
        self.points = points
        self.jtsm = jtsm
        self.semantic_loss_weight = semantic_loss_weight
        self.loss_normalization = loss_normalization
        self.iteration = 0  # the trainer's step, for warm-ups
        self.size_divisible = size_divisible
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(3, 1, 1), persistent=False)
        # NHWC activations and weights: MobileNetV2-FPN's forward and backward on CPU take about 18% less time
        # (benchmarks/step_profile.md); every result is the same up to float rounding
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.to(memory_format=self.memory_format)

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

    def forward(self, images: list[Tensor], targets: list[dict[str, Any]] | None = None, mode: str = "argmax"):
        """Training: a dict of losses. Inference: one :class:`PanopticOutput` per image (``mode``: argmax|heuristic)."""
        if self.training and targets is None:
            raise ValueError("targets are needed in training mode")
        if mode not in INFERENCE_MODES:
            raise InputError(f"unknown inference mode {mode!r}; choose argmax or heuristic")
        if self.training:
            return self._training_losses(self.training_batch(images, targets, self.iteration))
        return self.panoptic_stage(self.detect(images, mode), mode)

    def features(self, images: list[Tensor]) -> Features:
        """Padded batch, FPN features, semantic features and logits, and the backbone body's own levels (the FPN's
        inputs, which paper 002's mining pools from): what the heads and the weak modules read."""
        image_list = self.batch(images)
        body = self.backbone.body(image_list.tensors)  # "0".."3" at strides 4..32, the body's channels
        features = self.backbone.fpn(body)  # "0".."3" at strides 4..32, "pool" at 64
        sem_features, sem_logits = self.semantic_head.features(_fpn(features))  # (N, C | K, H'/4, W'/4)
        return Features(image_list, features, sem_features, sem_logits, body)

    def training_batch(self, images: list[Tensor], targets: list[dict[str, Any]], iteration: int = 0) -> TrainingBatch:
        """The features of ``images`` with their labels: what every loss of a training step reads (also what a
        tool that runs one module on its own needs, e.g. paper 003's pseudo labels of a trained network)."""
        return TrainingBatch(images, *self.features(images), targets, iteration)

    # --- inference --------------------------------------------------------------------------------------------

    def detect(self, images: list[Tensor], mode: str = "argmax") -> Detections:
        """Inference up to the panoptic stage: features, semantic logits, the cascade's detections (revised
        by relation reasoning when it is on) and their masks when the panoptic stage needs them."""
        image_list, features, sem_features, sem_logits, _ = self.features(images)
        proposals, _ = self.rpn(image_list, features)
        head = self.panoptic_head
        thresh = head.test_score_thresh if mode == "argmax" else self.roi_heads.score_thresh
        dets, sem_logits = self._detections(
            features, proposals, image_list.image_sizes, sem_features, sem_logits, thresh, None
        )
        if mode == "argmax":
            dets = [head.one_channel_per_object(d) for d in dets]
        if head.use_masks or mode == "heuristic":
            self.roi_heads.predict_masks(features, dets, image_list.image_sizes)
        return Detections(image_list, _fpn(features), sem_logits, dets)

    def panoptic_stage(self, found: Detections, mode: str = "argmax") -> list[PanopticOutput]:
        """Paper 004's argmax over P, or the heuristic merge; one output per image."""
        padded = tuple(found.image_list.tensors.shape[-2:])
        outputs, _ = self.panoptic_head(
            found.sem_logits, found.fpn, found.dets, found.image_list.image_sizes, padded, mode=mode
        )
        return outputs

    def _detections(self, features, proposals, sizes, sem_features, sem_logits, thresh, top):
        """The cascade's detections, and the semantic logits, both revised by relation reasoning when it is on
        (the same rule at test and for the panoptic head's detections in training)."""
        enhanced_seg: list[Tensor] = []
        enhance = self.relation.enhancer(sem_features, sem_logits, sizes, enhanced_seg) if self.relation else None
        dets = self.roi_heads.detect(features, proposals, sizes, thresh, top, enhance=enhance)
        if enhanced_seg:  # paper 000: the enhanced semantic logits are averaged with the base ones
            sem_logits = average_with_base(sem_logits, torch.stack(enhanced_seg))
        return dets, sem_logits

    # --- training ---------------------------------------------------------------------------------------------

    def weak_modules(self) -> list[WeakModule]:
        """The weak-supervision plug-ins that are on, in the order they run (:mod:`cqbnet.weak.base`): the
        relabelling ones (paper 003's points, paper 002's mining), then paper 000's four modules."""
        order = (self.points, self.jtsm, self.cls2box, self.cls2pixel, self.box2mask, self.relation)
        return [m for m in order if m is not None]

    def _training_losses(self, batch: TrainingBatch) -> dict[str, Tensor]:
        """Each image contributes exactly the losses its label kinds support (``target["kinds"]``, default P;
        the table is :data:`~cqbnet.modeling.supervision.LOSS_IMAGES`). Images are never asked for a label
        they lack."""
        losses: dict[str, Tensor] = {}
        plugins = self.weak_modules()
        for module in plugins:  # papers 003 and 002: their images first get pseudo panoptic labels
            if module.relabels:
                extra, batch = module.relabel(batch, self)
                losses.update(extra)
        boxed = batch.images_for("detection")
        if boxed:
            images, feats = batch.sub(boxed)
            det_targets = [detection_target(batch.targets[i], self.labels) for i in boxed]
            proposals, rpn_losses = self.rpn(images, feats, det_targets)
            _, det_losses = self.roi_heads(feats, proposals, images.image_sizes, det_targets)
            losses.update(rpn_losses)
            losses.update(det_losses)
            batch.proposals = dict(zip(boxed, proposals))
            batch.gt_boxes = dict(zip(boxed, det_targets))
        else:
            zero = batch.sem_logits.sum() * 0.0
            losses.update({k: zero for k in self._detection_loss_names()})
        ignore = self.semantic_head.ignore_index
        maps = [
            semantic_target(t, k, s, self.labels, ignore)
            for t, k, s in zip(batch.targets, batch.kinds, batch.image_list.image_sizes)
        ]
        semantic = pad_semantic(maps, batch.padded, batch.sem_logits.device, ignore)
        nots = [t.get("semantic_not") for t in batch.targets]  # approximate labels' box background (paper 001)
        not_class = (
            pad_semantic(nots, batch.padded, batch.sem_logits.device, ignore)
            if any(n is not None for n in nots)
            else None
        )
        sem_loss = self.semantic_head.loss(batch.sem_logits, semantic, not_class)
        losses["loss_semantic"] = self.semantic_loss_weight * sem_loss
        losses["loss_panoptic"] = batch.sem_logits.sum() * 0.0  # its place among the losses; computed last
        for module in plugins:  # paper 000's modules: the losses the cheaper labels teach
            if not module.relabels:
                losses.update(module.losses(batch, self))
        losses["loss_panoptic"] = self._panoptic_loss(batch)
        return normalise(losses, batch, self.loss_normalization)

    def _panoptic_loss(self, batch: TrainingBatch) -> Tensor:
        """Paper 004, Appendix A.4: the panoptic head learns from *predicted* detections of the panoptic images,
        made as at test (relation-enhanced); its loss reaches the box and mask heads through their scores and
        masks, and the FPN through their RoI features unless the head detaches them."""
        full = batch.images_for("loss_panoptic")
        if not full:
            return batch.sem_logits.sum() * 0.0
        head = self.panoptic_head
        top = [batch.proposals[i][: head.train_proposals] for i in full]
        detach = head.detach(batch.sem_logits.device)
        feats = {k: v[full].detach() if detach else v[full] for k, v in batch.features.items()}
        sizes = batch.sizes(full)
        dets, sem_logits = self._detections(
            feats,
            top,
            sizes,
            batch.sem_features[full],
            batch.sem_logits[full],
            head.train_score_thresh,
            head.train_max_detections,
        )
        if head.use_masks:
            self.roi_heads.predict_masks(feats, dets, sizes)
        fpn = [f[full] for f in _fpn(batch.features)]
        _, losses = head(sem_logits, fpn, dets, sizes, batch.padded, [batch.targets[i] for i in full])
        return losses["loss_panoptic"]

    def _detection_loss_names(self) -> list[str]:
        names = ["loss_objectness", "loss_rpn_box_reg"]
        names += [f"loss_{k}_s{i}" for i in range(len(self.roi_heads.stages)) for k in ("cls", "box")]
        return names + (["loss_mask"] if self.roi_heads.with_mask else [])
