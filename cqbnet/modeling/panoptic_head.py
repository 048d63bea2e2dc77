"""Paper 004's heuristic-free panoptic head (Li, Qi and Torr, CVPR 2020), and the heuristic merge it replaces.

* :func:`dynamic_potential` (Sec. 3.4.1, Eqs. 1-2): one channel per detection,
  s_k * V(c_k) inside the detection's box (with its mask: V * M, variant B, or
  V + M, variant C), plus one whole-image channel per stuff class.
* :class:`DenseInstanceAffinity` (Sec. 3.4.2, Eqs. 3-4): P = Psi + phi0(Q) (phi1(Q)^T Psi),
  evaluated right to left so the HW x HW affinity matrix never exists.
* :func:`match_segments` and :func:`panoptic_targets` (Sec. 3.5, Eq. 5): ground
  truth segments are matched to *predicted* detections by box IoU (same class,
  IoU >= t, one-to-one, maximum total IoU); unmatched ground truth is ignored and
  duplicate detections of a matched segment are dropped.
* :func:`panoptic_from_logits`: inference is argmax over P (computed exactly and cheaply by
  :func:`cqbnet.modeling.fast_argmax.upsample_argmax`); small segments become void.
* :func:`heuristic_merge`: the Panoptic FPN / detectron2 rule (instances by score,
  overlap test, then stuff from the semantic argmax with an area limit), as the
  second inference mode on the same checkpoint.
* :class:`PanopticHead`: the module that owns all of the above for the network, ``forward`` returning its
  outputs and its losses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torchvision.ops import box_iou, nms

from cqbnet.data.label_space import LabelSpace
from cqbnet.errors import InputError
from cqbnet.modeling.fast_argmax import upsample_argmax
from cqbnet.modeling.padding import grid_cells
from cqbnet.modeling.semantic_head import SEMANTIC_STRIDE, FPNDecoder

IGNORE = -100
POTENTIAL_VARIANTS = ("B", "C")


def box_region(boxes: Tensor, height: int, width: int, stride: float) -> Tensor:
    """(D, 4) image-pixel boxes -> (D, h, w) bool: grid cells whose centre lies in the box."""
    ys = (torch.arange(height, device=boxes.device, dtype=boxes.dtype) + 0.5) * stride
    xs = (torch.arange(width, device=boxes.device, dtype=boxes.dtype) + 0.5) * stride
    x1, y1, x2, y2 = (boxes[:, i, None] for i in range(4))
    inside_y = (ys[None] >= y1) & (ys[None] <= y2)  # (D, h)
    inside_x = (xs[None] >= x1) & (xs[None] <= x2)  # (D, w)
    return inside_y[:, :, None] & inside_x[:, None, :]


def paste_masks(mask_probs: Tensor, boxes: Tensor, height: int, width: int, stride: float) -> Tensor:
    """(D, 1, m, m) box-relative mask probabilities -> (D, h, w) on the grid, differentiably (grid_sample)."""
    d = len(boxes)
    if d == 0:
        return mask_probs.new_zeros((0, height, width))
    ys = (torch.arange(height, device=boxes.device, dtype=boxes.dtype) + 0.5) * stride
    xs = (torch.arange(width, device=boxes.device, dtype=boxes.dtype) + 0.5) * stride
    x1, y1, x2, y2 = (boxes[:, i, None] for i in range(4))
    u = (xs[None] - x1) / (x2 - x1).clamp(min=1e-3) * 2 - 1  # (D, w) in [-1, 1] inside the box
    v = (ys[None] - y1) / (y2 - y1).clamp(min=1e-3) * 2 - 1  # (D, h)
    grid = torch.stack([u[:, None, :].expand(d, height, width), v[:, :, None].expand(d, height, width)], dim=-1)
    out = F.grid_sample(mask_probs, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[:, 0]


def dynamic_potential(
    sem_prob: Tensor,
    boxes: Tensor,
    classes: Tensor,
    scores: Tensor,
    stuff_classes: Tensor,
    stride: float,
    masks: Tensor | None = None,
    variant: str = "C",
) -> Tensor:
    """Psi (D + N_st, h, w) from semantic probabilities (K, h, w) and D detections (paper 004, Eqs. 1-2).

    ``classes`` are the detections' semantic class indices; ``masks`` (D, h, w) are
    pasted mask probabilities or None (box-only potential, Eq. 1).
    """
    h, w = sem_prob.shape[-2:]
    v = sem_prob[classes]  # (D, h, w)
    if masks is not None:
        v = v * masks if variant == "B" else v + masks
    inside = box_region(boxes, h, w, stride)
    thing = scores[:, None, None] * v * inside
    stuff = sem_prob[stuff_classes]  # (N_st, h, w): whole-image boxes with score 1
    return torch.cat([thing, stuff], dim=0)


AFFINITY_NORMS = ("pixels", "mass", "mass_score")


class DenseInstanceAffinity(nn.Module):
    """P = Psi + phi0(Q) (phi1(Q)^T Psi) (paper 004, Eq. 4), in memory linear in the pixel count.

    Q comes from a feature decoder of the same architecture as the semantic
    head's (Appendix A.1), C = 128 channels at stride 4. phi0 and phi1 are 1x1
    convolutions followed by ReLU. The paper leaves the scale of the product
    open; ``norm`` picks it (our choice either way):

    * ``"pixels"``: divide by the number of pixels, so the scale does not depend on the image size;
    * ``"mass"``: divide channel k's context phi1(Q)^T Psi_k by its mass sum_i Psi_ik, so the added
      term is each pixel's affinity to the channel's mean feature. Large stuff regions then no longer
      outweigh small instances just by their area.
    * ``"mass_score"``: as ``"mass"``, times the channel's score s_k (1 for stuff). Dividing by the mass
      removes s_k from the context (Psi_k carries it as a factor); this puts it back, so an unconfident
      detection's boost is attenuated by its score as Sec. 3.4.1 intends.
    """

    def __init__(self, in_channels: int, channels: int = 128, norm: str = "mass"):
        super().__init__()
        if norm not in AFFINITY_NORMS:
            raise ValueError(f"unknown affinity norm {norm!r}; choose one of {', '.join(AFFINITY_NORMS)}")
        self.decoder = FPNDecoder(in_channels, channels)
        self.phi0 = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.ReLU())
        self.phi1 = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.ReLU())
        self.norm = norm

    def features(self, fpn: list[Tensor]) -> Tensor:
        """Q: (N, C, H/4, W/4)."""
        return self.decoder(fpn)

    def forward(self, q: Tensor, psi: Tensor, scores: Tensor | None = None) -> Tensor:
        """q (C, h', w'), psi (K, h, w) -> P (K, h, w); never forms the (hw, hw) matrix (Eq. 3).

        ``scores`` (K,): each channel's score, needed by the ``"mass_score"`` norm.

        A Q coarser than Psi's grid is taken to it by bilinear upsampling. phi0 and phi1 are then applied
        before the upsampling and their ReLU after it: a 1x1 convolution commutes with bilinear
        interpolation (whose weights sum to 1), so P is the same and the projections cost a quarter at stride 2.
        """
        k, h, w = psi.shape
        c = q.shape[0]
        if q.shape[-2:] == (h, w):
            a, b = (_project(phi, q.flatten(1)).relu_() for phi in (self.phi0, self.phi1))  # (C, hw) each
        else:
            both = torch.cat([_project(phi, q.flatten(1)) for phi in (self.phi0, self.phi1)])  # (2C, h'w')
            both = F.interpolate(both.view(1, 2 * c, *q.shape[-2:]), size=(h, w), mode="bilinear", align_corners=False)
            a, b = both[0].flatten(1).relu_().split(c)  # (C, hw) each
        flat = psi.flatten(1)  # (K, hw)
        # each channel's weights are scaled before the sum over pixels, never after: a sum over the ~67k cells of
        # a COCO image would overflow float16 under autocast (its largest value is 65504)
        if self.norm in ("mass", "mass_score"):
            weights = flat / flat.float().sum(1, keepdim=True).clamp(min=1e-6)  # (K, hw), each row sums to 1
            if self.norm == "mass_score":
                if scores is None:
                    raise ValueError("the mass_score affinity norm needs each channel's score")
                weights = weights * scores[:, None].to(weights.dtype)
        else:
            weights = flat / (h * w)
        context = b @ weights.T  # (C, K): phi1(Q)^T Psi, scaled
        return torch.addmm(flat, context.T, a).reshape(k, h, w)  # Psi + context^T phi0(Q): (K, h, w)


def _project(phi: nn.Sequential, flat: Tensor) -> Tensor:
    """The 1x1 convolution of phi (before its ReLU) applied to (C_in, hw) features as one matrix product.

    The same numbers as the convolution, about twice as fast on CPU for these wide, flat maps: (C_out, hw).
    """
    conv = phi[0]
    return torch.addmm(conv.bias[:, None], conv.weight.flatten(1), flat)


def match_segments(
    gt_boxes: Tensor, gt_classes: Tensor, det_boxes: Tensor, det_classes: Tensor, threshold: float = 0.5
) -> tuple[Tensor, Tensor]:
    """Eq. 5: the permutation of ground-truth segments that maximises total box IoU with the detections.

    Pairs of different classes count as IoU 0, pairs below ``threshold`` cannot
    match. Returns, per ground-truth segment, its detection index or -1, and a
    (D,) bool of detections to keep: all but the unmatched ones that overlap a
    matched segment of their class at >= threshold (duplicates, removed as the paper says).
    """
    g, d = len(gt_boxes), len(det_boxes)
    match = torch.full((g,), -1, dtype=torch.int64)
    keep = torch.ones(d, dtype=torch.bool)
    if g == 0 or d == 0:
        return match, keep
    iou = box_iou(gt_boxes.detach().float(), det_boxes.detach().float()).cpu()
    iou[gt_classes.cpu()[:, None] != det_classes.cpu()[None, :]] = 0.0
    iou[iou < threshold] = 0.0
    rows, cols = linear_sum_assignment(iou.numpy(), maximize=True)
    for r, c in zip(rows, cols):
        if iou[r, c] > 0:
            match[r] = int(c)
    matched_dets = set(match[match >= 0].tolist())
    matched_gts = match >= 0
    for c in range(d):
        if c not in matched_dets and bool((iou[matched_gts, c] > 0).any()):
            keep[c] = False
    return match, keep


def panoptic_targets(
    gt_ids: Tensor,
    gt_segments: list[dict],
    match: Tensor,
    keep: Tensor,
    stuff_classes: list[int],
    stride: int,
    background: bool = False,
) -> Tensor:
    """Channel index per grid cell for the cross-entropy on P (IGNORE where nothing is matched).

    ``gt_segments`` rows: id, semantic class, is_thing, iscrowd, in the order of
    ``match`` for the thing segments. Channels: kept detections first, then one
    per stuff class; with ``background`` (a label space without stuff), the one background channel, which
    void cells (id 0) take. Negative ids (off the image) are ignored.
    """
    kept_index = torch.cumsum(keep.long(), 0) - 1  # new channel of each kept detection
    num_kept = int(keep.sum())
    off = stride // 2
    ids = gt_ids[off::stride, off::stride]
    target = torch.full(ids.shape, IGNORE, dtype=torch.int64, device=gt_ids.device)
    stuff_pos = {c: i for i, c in enumerate(stuff_classes)}
    if background:
        target[ids == 0] = num_kept
    thing_k = 0
    for seg in gt_segments:
        if seg["is_thing"] and not seg["iscrowd"]:
            det = int(match[thing_k])
            thing_k += 1
            if det >= 0 and bool(keep[det]):
                target[ids == seg["id"]] = int(kept_index[det])
        elif not seg["is_thing"]:
            target[ids == seg["id"]] = num_kept + stuff_pos[seg["class"]]
    return target


@dataclass
class PanopticOutput:
    """One image's panoptic prediction: an id map and its segments (COCO panoptic ``segments_info``)."""

    ids: np.ndarray  # (H, W) int32, 0 = void
    segments: list[dict]


def panoptic_from_logits(
    logits: Tensor,
    det_labels: list[int],
    det_scores: list[float],
    stuff_categories: list[int | None],
    min_thing_area: int,
    min_stuff_area: int,
) -> PanopticOutput:
    """Segments from the winning channel per pixel, (H, W) (or P itself, (K, H, W), to take its argmax).

    Channel k < D is detection k, the rest the whole-image channels: a stuff category, or None for the
    background of a label space without stuff (void). Thing segments below ``min_thing_area`` pixels and stuff
    segments below ``min_stuff_area`` become void.
    """
    num_channels = len(det_labels) + len(stuff_categories)
    channel = (logits.argmax(0) if logits.dim() == 3 else logits).cpu().numpy()
    d = len(det_labels)
    areas = np.bincount(channel.ravel(), minlength=num_channels)
    lut = np.zeros(num_channels, dtype=np.int32)  # channel -> segment id (0: void)
    segments = []
    limit = np.full(num_channels, max(min_stuff_area, 1))
    limit[:d] = max(min_thing_area, 1)
    for k in np.flatnonzero(areas >= limit):
        if k >= d and stuff_categories[k - d] is None:
            continue  # background: void
        seg_id = len(segments) + 1
        lut[k] = seg_id
        if k < d:
            seg = {"id": seg_id, "category_id": det_labels[k], "isthing": True, "score": det_scores[k]}
        else:
            seg = {"id": seg_id, "category_id": stuff_categories[k - d], "isthing": False, "score": 1.0}
        seg["area"] = int(areas[k])
        segments.append(seg)
    return PanopticOutput(lut[channel], segments)


def heuristic_merge(
    masks: np.ndarray,
    det_labels: list[int],
    det_scores: list[float],
    semantic: np.ndarray,
    stuff_class_to_category: dict[int, int],
    score_thresh: float = 0.5,
    overlap_thresh: float = 0.5,
    stuff_area_limit: int = 4096,
) -> PanopticOutput:
    """Panoptic FPN's merge (detectron2's ``combine_semantic_and_instance_outputs``).

    ``masks`` (D, H, W) bool instance masks; ``semantic`` (H, W) argmax class index.
    Instances in order of score: skip below ``score_thresh`` or when more than
    ``overlap_thresh`` of the mask is taken, else claim its free pixels. Then each
    stuff class of the semantic argmax takes its free pixels if they reach
    ``stuff_area_limit``.
    """
    ids = np.zeros(semantic.shape, dtype=np.int32)
    segments = []
    for k in np.argsort(-np.asarray(det_scores, dtype=float), kind="stable"):
        if det_scores[k] < score_thresh:
            break
        m = masks[k]
        area = int(m.sum())
        if area == 0:
            continue
        taken = int((m & (ids > 0)).sum())
        if taken / area > overlap_thresh:
            continue
        m = m & (ids == 0)
        seg_id = len(segments) + 1
        ids[m] = seg_id
        segments.append({"id": seg_id, "category_id": det_labels[k], "isthing": True, "score": float(det_scores[k])})
    for cls in np.unique(semantic):
        if int(cls) not in stuff_class_to_category:
            continue
        m = (semantic == cls) & (ids == 0)
        if m.sum() < stuff_area_limit:
            continue
        seg_id = len(segments) + 1
        ids[m] = seg_id
        segments.append(
            {"id": seg_id, "category_id": stuff_class_to_category[int(cls)], "isthing": False, "score": 1.0}
        )
    for s in segments:
        s["area"] = int((ids == s["id"]).sum())
    return PanopticOutput(ids, segments)


class PanopticHead(nn.Module):
    """Paper 004's panoptic stage: P from the semantic logits and the detections, its loss and both inferences.

    Owns the affinity decoder (Q) and every rule of the stage: the potential variant (Eqs. 1-2), the affinity
    (Eqs. 3-4; None to use Psi as P), the matching loss (Eq. 5, cross-entropy reading P as logits), the
    class-agnostic NMS that gives each object one channel (our addition), argmax inference (exact, through
    :func:`~cqbnet.modeling.fast_argmax.upsample_argmax`) with thing and stuff area limits, and Panoptic FPN's
    heuristic merge as the second inference mode. P covers each image's own cells, never the batch's padding.
    """

    def __init__(
        self,
        labels: LabelSpace,
        affinity: DenseInstanceAffinity | None = None,
        variant: str = "C",
        use_masks: bool = True,
        stride: int = 4,
        match_iou: float = 0.5,
        train_score_thresh: float = 0.3,
        train_max_detections: int = 50,
        train_proposals: int = 200,
        test_score_thresh: float = 0.5,
        agnostic_nms: float | None = 0.7,
        detach_detection_features: bool | None = None,
        min_thing_area: int = 16,
        min_stuff_area: int = 64,
        loss_weight: float = 1.0,
        merge_score_thresh: float = 0.5,
        merge_overlap_thresh: float = 0.5,
        merge_stuff_area: int = 64,
        affinity_in_box: bool = False,
    ):
        super().__init__()
        if variant not in POTENTIAL_VARIANTS:
            raise InputError(f"unknown potential variant {variant!r}; choose B or C")
        self.labels = labels
        self.affinity = affinity
        # our option, off by default: a detection's affinity boost (Eq. 4's second term) only inside its box, where
        # its potential Psi lives; paper 004 adds it on every pixel
        self.affinity_in_box = affinity_in_box
        self.variant = variant  # B multiplies V and M, C adds them (paper 004, Appendix A.3)
        self.use_masks = use_masks
        self.stride = stride  # of Psi and P (paper: d = 4)
        self.match_iou = match_iou  # t of Eq. 5
        # the detections it learns from in training: scored above this, at most this many, from the top proposals
        self.train_score_thresh = train_score_thresh
        self.train_max_detections = train_max_detections
        self.train_proposals = train_proposals
        self.test_score_thresh = test_score_thresh
        self.agnostic_nms = agnostic_nms  # IoU of class-agnostic NMS on the detections fed to Psi (None: off)
        # the loss stops at its detections' RoI features (None: on CPU only, where that RoIAlign backward is the
        # costly part; the FPN still learns from every other loss)
        self.detach_detection_features = detach_detection_features
        # argmax inference: segments smaller than these (pixels) become void; things and stuff apart, as
        # detectron2 limits only stuff (its COCO STUFF_AREA_LIMIT is 4096) and a small object is still an object
        self.min_thing_area = min_thing_area
        self.min_stuff_area = min_stuff_area
        self.loss_weight = loss_weight
        self.merge_score_thresh = merge_score_thresh
        self.merge_overlap_thresh = merge_overlap_thresh
        self.merge_stuff_area = merge_stuff_area
        self.register_buffer(
            "_thing_semantic", torch.tensor(labels.thing_semantic, dtype=torch.int64), persistent=False
        )
        self.register_buffer(
            "_region_semantic", torch.tensor(labels.region_semantic, dtype=torch.int64), persistent=False
        )

    def features(self, fpn: list[Tensor]) -> Tensor | None:
        """Q (N, C, H'/4, W'/4) of the affinity, or None without one."""
        return None if self.affinity is None else self.affinity.features(fpn)

    def detach(self, device: torch.device) -> bool:
        """Whether the loss stops at the RoI features of its detections, on this device."""
        return device.type == "cpu" if self.detach_detection_features is None else self.detach_detection_features

    def one_channel_per_object(self, det: dict[str, Tensor]) -> dict[str, Tensor]:
        """Class-agnostic NMS before the potential (our addition; ``agnostic_nms``, None to skip).

        The detector's NMS is per class, so one object can come with boxes of two classes; as two channels
        of Psi they would split its pixels. Keeping the higher-scoring box gives each object one channel.
        """
        if self.agnostic_nms is None or len(det["boxes"]) < 2:
            return det
        keep = nms(det["boxes"].detach(), det["scores"].detach(), self.agnostic_nms)
        return {k: v[keep] for k, v in det.items()}

    def _grid_probs(self, sem_logits: Tensor, padded: tuple[int, int]) -> Tensor:
        """Semantic probabilities (K, h, w) on the panoptic grid (stride ``stride`` of the padded image)."""
        size = (padded[0] // self.stride, padded[1] // self.stride)
        logits = (
            sem_logits
            if sem_logits.shape[-2:] == size
            else F.interpolate(sem_logits[None], size=size, mode="bilinear", align_corners=False)[0]
        )
        return torch.softmax(logits, dim=0)

    def logits(
        self, sem_logits: Tensor, q: Tensor | None, det: dict[str, Tensor], padded, size: tuple[int, int]
    ) -> Tensor:
        """P (D + N_st, h, w) for one image of ``size`` (H, W): Psi (Eqs. 1-2), revised by the affinity (Eq. 4).

        P covers the image's own cells, ceil(H / stride) x ceil(W / stride), whatever the batch's padding: the
        affinity's context sums over every cell of Psi.
        """
        rows, cols = grid_cells(size, self.stride)
        prob = self._grid_probs(sem_logits, padded)[:, :rows, :cols]  # (K, h, w)
        classes = self._thing_semantic[det["labels"] - 1]
        masks = None
        if self.use_masks and "mask_probs" in det:
            masks = paste_masks(det["mask_probs"], det["boxes"], rows, cols, self.stride)
        psi = dynamic_potential(
            prob, det["boxes"], classes, det["scores"], self._region_semantic, self.stride, masks, self.variant
        )
        if self.affinity is None or q is None:
            return psi
        q_rows, q_cols = grid_cells(size, SEMANTIC_STRIDE)
        scores = torch.cat([det["scores"], det["scores"].new_ones(len(self._region_semantic))])  # (K,) regions: 1
        p = self.affinity(q[:, :q_rows, :q_cols], psi, scores)  # Q at stride 4 is taken to the grid inside
        if self.affinity_in_box and len(det["boxes"]):
            d = len(det["boxes"])
            inside = box_region(det["boxes"], rows, cols, self.stride)  # (D, h, w)
            p = torch.cat([psi[:d] + (p[:d] - psi[:d]) * inside, p[d:]])
        return p

    def loss(self, sem_logits, q, dets, targets, padded, sizes) -> Tensor:
        """Panoptic matching loss (paper 004, Sec. 3.5): cross-entropy on P against matched ground truth."""
        total = sem_logits.sum() * 0.0
        n = 0
        for i, t in enumerate(targets):
            det = dets[i]
            things = t["is_thing"] & ~t["iscrowd"]
            gt_classes = t["labels"][things]
            det_classes = self._thing_semantic[det["labels"] - 1]
            match, keep = match_segments(t["boxes"][things], gt_classes, det["boxes"], det_classes, self.match_iou)
            keep = keep.to(det["boxes"].device)
            det = {k: v[keep] for k, v in det.items()}
            logits = self.logits(sem_logits[i], None if q is None else q[i], det, padded, sizes[i])
            segs = [
                {"id": int(sid), "class": int(c), "is_thing": bool(th), "iscrowd": bool(cr)}
                for sid, c, th, cr in zip(t["segment_ids"], t["labels"], t["is_thing"], t["iscrowd"])
            ]
            ids = torch.full(padded, -1, dtype=torch.int64, device=t["panoptic"].device)  # -1: off the image
            ids[: t["panoptic"].shape[0], : t["panoptic"].shape[1]] = t["panoptic"]
            target = panoptic_targets(
                ids, segs, match, keep.cpu(), self.labels.stuff_semantic, self.stride, self.labels.background
            )
            target = target[: logits.shape[1], : logits.shape[2]]
            if "ignore" in t:  # approximate labels (paper 001): their ignore pixels, even in a background space
                off = self.stride // 2
                ig = t["ignore"][off :: self.stride, off :: self.stride]
                target[: ig.shape[0], : ig.shape[1]][ig[: target.shape[0], : target.shape[1]]] = IGNORE
            if (target != IGNORE).any():
                total = total + F.cross_entropy(logits[None], target[None], ignore_index=IGNORE)
                n += 1
        return self.loss_weight * total / max(n, 1)

    def forward(
        self,
        sem_logits: Tensor,
        fpn: list[Tensor],
        dets: list[dict[str, Tensor]],
        sizes: list[tuple[int, int]],
        padded: tuple[int, int],
        targets: list[dict[str, Any]] | None = None,
        mode: str = "argmax",
    ) -> tuple[list[PanopticOutput], dict[str, Tensor]]:
        """Training (``targets`` given): ([], {"loss_panoptic"}). Inference: one output per image, argmax over P
        or the heuristic merge (``mode``), and no losses. sem_logits (N, K, H'/4, W'/4); fpn: strides 4..32."""
        need_q = targets is not None or mode == "argmax"
        q = self.features(fpn) if need_q else None  # (N, C, H'/4, W'/4)
        if targets is not None:
            return [], {"loss_panoptic": self.loss(sem_logits, q, dets, targets, padded, sizes)}
        outputs = []
        for i, size in enumerate(sizes):
            det = dets[i]
            if mode == "heuristic":
                outputs.append(self.heuristic(sem_logits[i], det, size))
                continue
            logits = self.logits(sem_logits[i], None if q is None else q[i], det, padded, size)
            outputs.append(
                panoptic_from_logits(
                    upsample_argmax(logits, self.stride, size),
                    self.labels.detection_categories(det["labels"]),
                    [float(s) for s in det["scores"]],
                    self.labels.region_categories(),
                    self.min_thing_area,
                    self.min_stuff_area,
                )
            )
        return outputs, {}

    def heuristic(self, sem_logits: Tensor, det: dict[str, Tensor], size: tuple[int, int]) -> PanopticOutput:
        """Panoptic FPN's merge on one image; a detection without a mask is its box. The semantic argmax is that of
        the upsampled logits (the softmax keeps each pixel's order), computed for the classes that can win only."""
        h, w = size
        semantic = upsample_argmax(sem_logits, SEMANTIC_STRIDE, size).cpu().numpy()
        if len(det["boxes"]) and "mask_probs" in det:
            masks = (paste_masks(det["mask_probs"], det["boxes"], h, w, 1.0) > 0.5).cpu().numpy()
        else:  # a network without a mask head: each detection is its box
            masks = box_region(det["boxes"].detach(), h, w, 1.0).cpu().numpy()
        stuff = {c: self.labels.category_of[c] for c in self.labels.stuff_semantic}
        return heuristic_merge(
            masks,
            self.labels.detection_categories(det["labels"]),
            [float(s) for s in det["scores"]],
            semantic,
            stuff,
            self.merge_score_thresh,
            self.merge_overlap_thresh,
            self.merge_stuff_area,
        )
