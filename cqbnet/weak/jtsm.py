"""Paper 002 (JTSM, Shen et al., CVPR 2021): things and stuff mined from image tags alone, over segment proposals.

Things and stuff are treated alike as segments (a stuff region's connected components are instances):

* Segment proposals (C1): MCG has no Python port; :func:`~cqbnet.cues.segment_proposals.segment_proposals`
  (selective search's grouping of Felzenszwalb superpixels) gives them as superpixel sets, so masks are exact
  and mask IoUs are superpixel-count dot products (:func:`mask_iou`). They are computed once per image and cached
  (:func:`proposal_cache`).
* Mask-of-interest pooling (Eqs. 5-8, :func:`moi_pool`): features pooled only inside each segment's mask within
  its box; empty bins are 0 and the pooled features are scaled by psi = bins / non-empty bins (our reading of the
  garbled Eq. 8: it aligns activations across segments of different fill). With a full-box mask it is RoIPool.
  The features are the backbone's own at stride 8 (paper 002 pools VGG's conv5, there is no FPN), not the FPN's
  level: its top-down context spreads a thing over its surroundings (``features="fpn"`` keeps that option).
* Joint thing-and-stuff mining (Eqs. 2-4, :class:`MiningHeads`): WSDDN's two streams over the segments for all
  classes (L_MIL against the tags), and ``refinements`` OICR heads, each learning from the previous one's pseudo
  ground truth (per tagged class its top segment; segments at mask IoU >= 0.5 with it take its class, the others
  background), weighed by the image-level score of the class (:func:`refinement_targets`). Eq. 2's BCE is taken
  in log space (:func:`mil_log_scores`): a clamped probability has no gradient, so a class the streams got badly
  wrong could never recover.
* Self-training (Eqs. 1, 9, 10, :func:`mined_target`): per tagged class the top segment of the averaged
  refinement heads, re-estimated with GrabCut (:func:`~cqbnet.cues.grabcut.grabcut_from_segment`: firm
  foreground inside the segment, firm background outside its box), becomes a pseudo panoptic label (things: an
  instance; stuff: the class's region), every other pixel ignore; from a warm-up on it trains the network's
  losses as a panoptic label does (the mask head and the semantic head are paper 002's instance and semantic
  branches; only tagged classes get a loss). Paper 002 weighs L_IS by the class's image-level score; here the mined
  labels enter unweighted, since the network's losses take no per-segment weight, brought in by the ramp over
  images of :func:`~cqbnet.weak.warmup.image_share`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import roi_pool

from cqbnet.cues.grabcut import grabcut_from_segment
from cqbnet.cues.segment_proposals import segment_proposals
from cqbnet.data.transforms import to_image_bytes
from cqbnet.errors import InputError
from cqbnet.io import read_npz, write_npz
from cqbnet.modeling.supervision import TrainingBatch, zero_loss
from cqbnet.modeling.targets import pseudo_panoptic_target, with_pseudo_panoptic
from cqbnet.weak.base import WeakModule, setting
from cqbnet.weak.warmup import image_share, ramp_weight

POOL = 7  # bins per side
MINING_LEVEL = "1"  # the level the segments are pooled from (stride 8), of the backbone's body or of the FPN
FEATURE_SOURCES = ("backbone", "fpn")
MINING_STRIDE = 8
EMPTY = -1e4  # what masked-out cells hold before the max, so an empty bin is recognisable
MASK_IOU = 0.5  # OICR's overlap for a segment to take a pseudo box's class
CHUNK_ELEMENTS = 2**24  # masked feature cells MoIPool holds at once (64 MB of float32)
LOG_FLOOR = -50.0  # log-probabilities are floored here only so that an impossible label stays finite


def pool_rois(boxes: Tensor, index: Tensor) -> Tensor:
    """(R, 5) RoIs for torchvision's RoIPool from xyxy boxes with exclusive ends: RoIPool reads the end
    coordinates as the last pixel (Fast R-CNN's convention), so they move in by one."""
    return torch.cat([index.to(boxes)[:, None], boxes[:, :2], boxes[:, 2:] - 1], 1)


def moi_pool(features: Tensor, masks: Tensor, boxes: Tensor, stride: int, output: int = POOL) -> Tensor:
    """Eqs. 5-8: (R, C, output, output) features of R segments of one image, each a max over the cells inside its
    mask (masks (R, H, W) at image resolution, or (R, h, w) already at the features', as :meth:`Segments.cells`
    gives them; boxes (R, 4) xyxy) within RoIPool's bins of its box; empty bins
    0, then scaled by psi = bins / non-empty bins. features (1, C, h, w) at ``stride``. The segments go through
    in chunks of at most :data:`CHUNK_ELEMENTS` masked feature cells (thousands of segments on a COCO image)."""
    r = len(boxes)
    if r == 0:
        return features.new_zeros((0, features.shape[1], output, output))
    step = max(1, CHUNK_ELEMENTS // features[0].numel())
    if r > step:
        parts = [
            moi_pool(features, masks[i : i + step], boxes[i : i + step], stride, output) for i in range(0, r, step)
        ]
        return torch.cat(parts)
    h, w = features.shape[-2:]
    omega = masks if masks.shape[-2:] == (h, w) else cell_max(masks, (h, w), stride)
    omega = omega[:, None].to(features.dtype)  # (R, 1, h, w): Eq. 6, the mask at feature resolution
    x = features * omega + EMPTY * (1 - omega)  # (R, C, h, w)
    pooled = roi_pool(x, pool_rois(boxes, torch.arange(r, device=boxes.device)), output, 1.0 / stride)
    empty = pooled <= EMPTY / 2
    pooled = pooled.masked_fill(empty, 0.0)
    full = (~empty[:, :1]).flatten(1).sum(1).clamp(min=1).to(pooled.dtype)  # non-empty bins per segment
    return pooled * (output * output / full)[:, None, None, None]


def cell_max(masks: Tensor, size: tuple[int, int], stride: int) -> Tensor:
    """Eq. 6 at feature resolution: (R, h, w) bool, whether a mask (R, H, W) has a pixel in each stride x stride
    cell (cell (i, j) holds pixels [stride i, stride (i + 1)) x [stride j, stride (j + 1)); pixels past h x w
    cells are dropped, missing ones count as outside)."""
    h, w = size
    m = masks[:, : h * stride, : w * stride].float()
    m = F.pad(m, (0, w * stride - m.shape[-1], 0, h * stride - m.shape[-2]))
    return F.max_pool2d(m[:, None], stride)[:, 0] > 0


class Segments(NamedTuple):
    """An image's segment proposals as superpixel sets: ``superpixels`` (H, W) int, ``members`` (R, S) {0, 1},
    ``boxes`` (R, 4) xyxy. A segment's mask is built only when asked for (:meth:`mask`): on a COCO image the
    thousands of full-resolution masks would take gigabytes."""

    superpixels: Tensor
    members: Tensor
    boxes: Tensor

    def __len__(self) -> int:
        return len(self.members)

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.superpixels.shape)

    def mask(self, r: int) -> Tensor:
        """(H, W) bool: segment r."""
        return self.members[r].bool()[self.superpixels.long()]

    def masks(self) -> Tensor:
        """(R, H, W) bool: every segment (for small images; :meth:`cells` and :meth:`mask` avoid it)."""
        return self.members.bool()[:, self.superpixels.long()]

    def iou(self) -> Tensor:
        """(R, R) mask IoU of the segments, by superpixel areas (:func:`mask_iou`)."""
        area = torch.bincount(self.superpixels.flatten().long(), minlength=self.members.shape[1])
        return mask_iou(self.members, area.float())

    def cells(self, size: tuple[int, int], stride: int) -> Tensor:
        """(R, h, w) bool: :func:`cell_max` of every segment, from the superpixels' cells without any mask: a
        segment touches a cell when one of its superpixels does."""
        h, w = size
        sp = self.superpixels.long()
        ys = torch.arange(sp.shape[0], device=sp.device) // stride
        xs = torch.arange(sp.shape[1], device=sp.device) // stride
        inside = (ys[:, None] < h) & (xs[None] < w)
        cell = (ys[:, None] * w + xs[None]).expand_as(sp)[inside]
        present = torch.zeros((h * w, self.members.shape[1]), dtype=torch.float32, device=sp.device)
        present[cell, sp[inside]] = 1.0  # (h w, S): superpixel s has a pixel in the cell
        return (self.members.float() @ present.t() > 0).reshape(len(self), h, w)


def mask_iou(members: Tensor, area: Tensor) -> Tensor:
    """(R, R) mask IoU of segments given as superpixel sets: members (R, S) {0, 1}, area (S,) pixels."""
    m = members.float()
    inter = (m * area) @ m.t()
    size = m @ area
    return inter / (size[:, None] + size[None] - inter).clamp(min=1.0)


def refinement_targets(scores: Tensor, tags: Tensor, iou: Tensor, image_scores: Tensor) -> tuple[Tensor, Tensor]:
    """OICR's pseudo ground truth for the next head (Eq. 3): per tagged class its top segment under ``scores``
    (R, C); every segment at mask IoU >= 0.5 with a pseudo box takes its class (the best overlapping one), the
    others background (index C); each weighed by the image-level score of its target class (background: that of
    the class of the segment it overlaps most). Returns (labels (R,), weights (R,))."""
    r, c = scores.shape
    classes = torch.nonzero(tags > 0).squeeze(1)
    labels = torch.full((r,), c, dtype=torch.int64, device=scores.device)
    weights = torch.zeros(r, device=scores.device)
    if len(classes) == 0:
        return labels, weights
    top = scores[:, classes].argmax(0)  # (T,) the pseudo boxes
    overlap = iou[:, top]  # (R, T)
    best, which = overlap.max(1)
    fg = best >= MASK_IOU
    labels[fg] = classes[which[fg]]
    weights = image_scores[classes[which]].detach()
    return labels, weights


class MiningHeads(nn.Module):
    """Paper 002's panoptic mining branch: two FC layers on MoIPool features, WSDDN's streams, OICR heads."""

    def __init__(self, channels: int, num_classes: int, hidden: int = 256, refinements: int = 4, dropout: float = 0.5):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * POOL * POOL, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )
        self.classify = nn.Linear(hidden, num_classes)
        self.detect = nn.Linear(hidden, num_classes)
        self.refine = nn.ModuleList(nn.Linear(hidden, num_classes + 1) for _ in range(refinements))

    def forward(self, pooled: Tensor) -> MiningOutput:
        """pooled (R, C, 7, 7) of one image -> the two streams' logits (R, K) and each refinement head's logits
        (R, K + 1)."""
        x = self.fc(pooled)
        return MiningOutput(self.classify(x), self.detect(x), [head(x) for head in self.refine])


class MiningOutput(NamedTuple):
    """The mining heads' logits for one image's R segments: WSDDN's classification and detection streams (R, K)
    and the refinement heads (R, K + 1 each)."""

    classify: Tensor
    detect: Tensor
    refined: list[Tensor]

    @property
    def mil(self) -> Tensor:
        """S^MIL (R, K) = softmax over classes of S^C times softmax over segments of S^D."""
        return F.softmax(self.classify, 1) * F.softmax(self.detect, 0)

    def scores(self) -> Tensor:
        """(R, K) class scores of the segments at test: the refinement heads' softmax averaged (background
        dropped); S^MIL without refinement heads."""
        if not self.refined:
            return self.mil
        return torch.stack([F.softmax(r, 1)[:, :-1] for r in self.refined]).mean(0)

    def detach(self) -> MiningOutput:
        return MiningOutput(self.classify.detach(), self.detect.detach(), [r.detach() for r in self.refined])


def log_one_minus_softmax(logits: Tensor) -> Tensor:
    """log(1 - softmax(logits, 1)) (R, K), exact where a class takes nearly all the mass: for the top class
    the log-sum-exp of the others, for every other class (probability <= 1/2) log1p of minus its probability."""
    top = logits.argmax(1, keepdim=True)
    lse = logits.logsumexp(1, keepdim=True)
    rest = logits.scatter(1, top, float("-inf")).logsumexp(1, keepdim=True) - lse
    out = torch.log1p(-(logits - lse).exp().clamp(max=0.5))
    return out.scatter(1, top, rest)


def mil_log_scores(out: MiningOutput) -> tuple[Tensor, Tensor]:
    """log y_c and log(1 - y_c) (K,) of Eq. 2's image-level scores y_c = sum_p S^MIL_pc, in log space so that
    a class the streams get badly wrong still has a gradient (a clamped probability has none). Since the
    detection stream sums to 1 over segments, 1 - y_c = sum_p softmax_p(S^D)_pc (1 - softmax_c(S^C)_p)."""
    log_det = F.log_softmax(out.detect, 0)  # (R, K)
    log_y = (F.log_softmax(out.classify, 1) + log_det).logsumexp(0)
    log_not = (log_one_minus_softmax(out.classify) + log_det).logsumexp(0)
    return log_y.clamp(min=LOG_FLOOR), log_not.clamp(min=LOG_FLOOR)


def mining_loss(out: MiningOutput, tags: Tensor, iou: Tensor) -> Tensor:
    """Eq. 4: L_PM = L_MIL + sum_r L_PR^r for one image (tags (K,) in {0, 1})."""
    log_y, log_not = mil_log_scores(out)
    t = tags.float()
    loss = -(t * log_y + (1 - t) * log_not).sum()  # Eq. 2
    y = log_y.detach().exp()
    previous = out.mil.detach()
    for logits in out.refined:
        labels, weights = refinement_targets(previous, tags, iou, y)
        loss = loss + (weights * F.cross_entropy(logits, labels, reduction="none")).mean()  # Eq. 3
        previous = F.softmax(logits.detach(), 1)[:, :-1]
    return loss


def proposal_file(image_id, image: np.ndarray) -> str:
    """The cache file name of an image's segment proposals: its id and a digest of its (H, W, 3) uint8 pixels, so
    that a flipped or resized copy of an image has its own proposals."""
    return f"{image_id}_{hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()[:16]}.npz"


def proposal_cache(image: np.ndarray, path: Path | None = None) -> dict[str, np.ndarray]:
    """An image's segment proposals (superpixel map, (R, S) membership, masks' boxes), read from ``path`` when
    cached there, else computed (and cached when a path is given)."""
    cached = read_npz(path) if path is not None and path.is_file() else None
    if cached is not None:
        return cached
    props = segment_proposals(image)
    sp, members = props.superpixels.astype(np.int32), props.members
    h, w = sp.shape
    boxes = np.zeros((len(members), 4), dtype=np.float32)
    ys, xs = np.mgrid[0:h, 0:w]
    for r, m in enumerate(members):
        px = m[sp]
        boxes[r] = (xs[px].min(), ys[px].min(), xs[px].max() + 1, ys[px].max() + 1)
    out = {"superpixels": sp, "members": members, "boxes": boxes}
    if path is not None:
        write_npz(path, **out)
    return out


@dataclass
class JTSMConfig:
    """``model.weak.jtsm``: paper 002 (JTSM), tags alone teach things and stuff, mined over segment proposals."""

    enabled: bool = False
    refinements: int = 4  # OICR refinement heads (paper 002: 4)
    hidden: int = setting(256, minimum=1)  # width of the mining branch's two FC layers
    warmup: int = 10000  # iterations over which the tags images switch to their mined pseudo labels
    grabcut: bool = True  # re-estimate the mined segments with GrabCut (Sec. 3.4)
    masked_pooling: bool = True  # MoIPool; false: RoIPool on the segments' boxes (the ablation)
    pseudo_labels: bool = True  # the self-training of the network's branches on the mined labels
    cache: str | None = None  # folder caching each image's segment proposals (none: computed every time)
    lr_scale: float = 1.0  # the mining heads' learning rate as a multiple of the solver's (WSDDN/OICR: 0.001)
    # what the segments are pooled from at stride 8: "backbone" (the body's own features, as paper 002 pools VGG's
    # conv5) or "fpn" (the FPN level, whose top-down context blurs small things; benchmarks/jtsm_diagnostics.md)
    features: str = setting("backbone", choices=("backbone", "fpn"))

    def check(self, source: str) -> None:
        """The mining heads' learning rate above 0."""
        if self.lr_scale <= 0:
            raise InputError(f"{source}: model.weak.jtsm_lr_scale must be above 0, got {self.lr_scale!r}")


class JTSM(WeakModule):
    """Paper 002 on the tags-only images of a batch: L_PM, and from a warm-up on their mined pseudo labels."""

    def __init__(
        self,
        channels: int,
        num_classes: int,
        thing_semantic: list[int],
        refinements: int = 4,
        hidden: int = 256,
        warmup: int = 10000,
        grabcut: bool = True,
        masked_pooling: bool = True,
        pseudo_labels: bool = True,
        cache: str | None = None,
        lr_scale: float = 1.0,
        features: str = "backbone",
    ):
        super().__init__()
        if features not in FEATURE_SOURCES:
            raise InputError(f"model.weak.jtsm_features must be one of {', '.join(FEATURE_SOURCES)}, got {features!r}")
        self.features = features
        self.heads = MiningHeads(channels, num_classes, hidden, refinements)
        # the heads' first layer reads C * 7 * 7 unnormalised pooled features, so one SGD step moves its outputs by
        # about lr * |x|^2; the trainer gives the parameters of a module with ``lr_scale`` that multiple of the lr
        self.heads.lr_scale = lr_scale
        self.thing_semantic = set(thing_semantic)
        self.warmup, self.grabcut, self.masked_pooling, self.pseudo_labels = (
            warmup,
            grabcut,
            masked_pooling,
            pseudo_labels,
        )
        self.cache = None if cache is None else Path(cache)

    def proposals(self, t: dict[str, Any], image: Tensor) -> Segments:
        """The image's segment proposals as tensors on the image's device (cached by image id)."""
        img = to_image_bytes(image)
        p = proposal_cache(img, None if self.cache is None else self.cache / proposal_file(t["image_id"], img))
        return Segments(*(torch.from_numpy(p[k]).to(image.device) for k in ("superpixels", "members", "boxes")))

    def image_outputs(self, batch: TrainingBatch, i: int, segments: Segments) -> MiningOutput:
        """The mining heads' outputs for the segments of image i."""
        h, w = batch.image_list.image_sizes[i]
        source = batch.body if self.features == "backbone" else batch.features
        feats = source[MINING_LEVEL][i : i + 1, :, : -(-h // MINING_STRIDE), : -(-w // MINING_STRIDE)]
        if self.masked_pooling:
            omega = segments.cells(tuple(feats.shape[-2:]), MINING_STRIDE)  # (R, h, w)
            pooled = moi_pool(feats, omega, segments.boxes, MINING_STRIDE)
        else:  # the ablation: plain RoIPool on the segments' boxes
            rois = pool_rois(segments.boxes, torch.zeros(len(segments), device=feats.device))
            pooled = roi_pool(feats, rois, POOL, 1.0 / MINING_STRIDE)
        return self.heads(pooled)

    def mined_target(
        self, t: dict[str, Any], image: Tensor, scores: Tensor, segments: Segments, ignore_index: int
    ) -> dict[str, Any]:
        """The pseudo panoptic label of a tags image: per tagged class its top segment (GrabCut re-estimated);
        things are instances, stuff classes regions; every other pixel ignore; later classes do not overwrite
        pixels an earlier, higher-scoring one took."""
        tags = torch.nonzero(t["tags"] > 0).squeeze(1)
        h, w = segments.size
        device = segments.members.device
        img = to_image_bytes(image)
        best = scores[:, tags].max(0)
        order = torch.argsort(best.values, descending=True)
        taken = torch.zeros((h, w), dtype=torch.bool, device=device)
        seg_masks, classes = [], []
        for j in order.tolist():
            r, c = int(best.indices[j]), int(tags[j])
            m = segments.mask(r)
            if self.grabcut:
                box = segments.boxes[r].cpu().numpy()
                m = torch.from_numpy(grabcut_from_segment(img, m.cpu().numpy(), box)).to(device)
            m = m & ~taken
            if m.any():
                taken |= m
                seg_masks.append(m)
                classes.append(c)
        n = len(seg_masks)
        masks_t = torch.stack(seg_masks) if n else torch.zeros((0, h, w), dtype=torch.bool, device=device)
        cls = torch.tensor(classes, dtype=torch.int64, device=device)
        crowd = torch.zeros(n, dtype=torch.bool, device=device)
        out = pseudo_panoptic_target(masks_t, cls, crowd, self.thing_semantic, ignore_index)
        out["ignore"] = out["panoptic"] == 0  # only the mined segments teach; every other pixel is unlabelled
        return out

    name = "jtsm"
    relabels = True

    def relabel(self, batch: TrainingBatch, net) -> tuple[dict[str, Tensor], TrainingBatch]:
        """The mining branch's loss, and its mined pseudo labels on the tags images that are ramped in."""
        loss, batch = self.loss(batch, net.semantic_head.ignore_index)
        return {"loss_jtsm": loss}, batch

    def loss(self, batch: TrainingBatch, ignore_index: int) -> tuple[Tensor, TrainingBatch]:
        """L_PM over the batch's tags-only images (mean), and the batch with the mined pseudo labels of those that
        are ramped in (their kinds gain P, ``pseudo_panoptic`` marks them)."""
        images = batch.images_for("loss_jtsm")
        if not images:
            return zero_loss(self), batch
        targets = list(batch.targets)
        total = zero_loss(self)
        for i in images:
            t = targets[i]
            segments = self.proposals(t, batch.images[i])
            out = self.image_outputs(batch, i, segments)
            total = total + mining_loss(out, t["tags"], segments.iou())
            ramp = ramp_weight(batch.iteration, self.warmup)
            if self.pseudo_labels and ramp > image_share(t["image_id"]):
                scores = out.detach().scores()
                pseudo = self.mined_target(t, batch.images[i], scores, segments, ignore_index)
                targets[i] = with_pseudo_panoptic(t, pseudo)
        return total / len(images), replace(batch, targets=targets)


@torch.no_grad()
def corloc(model: nn.Module, dataset, gt, device: torch.device, limit: int | None = None) -> dict[str, float]:
    """CorLoc of the mined segments on a mixed-label dataset's tags images: the share (percent) of (image, tagged
    class) pairs whose top segment (averaged refinement heads) has mask IoU >= 0.5 with a ground-truth segment of
    that class, for things and for stuff."""
    from cqbnet.data.transforms import to_tensors

    branch = getattr(model, "jtsm", None)
    if branch is None:
        raise InputError("the network has no mining branch (model.weak.jtsm was off in its training)")
    records = {r.image_id: r for r in gt.records}
    cats = list(dataset.categories)
    hits = {True: 0, False: 0}
    pairs = {True: 0, False: 0}
    was = model.training
    model.eval()
    try:
        n = 0
        for index, lab in enumerate(dataset.manifest.images):
            if lab.kinds != frozenset({"I"}):
                continue
            if limit is not None and n >= limit:
                break
            n += 1
            image, t = to_tensors(*dataset[index])
            x = image.to(device)
            batch = model.training_batch([x], [t])
            segments = branch.proposals(t, x)
            scores = branch.image_outputs(batch, 0, segments).scores()
            rec = records[lab.image_id]
            ids = gt.read_ids(rec, validate=False)
            for c in torch.nonzero(t["tags"] > 0).squeeze(1).tolist():
                top = segments.mask(int(scores[:, c].argmax())).cpu().numpy()
                thing = dataset.categories[cats[c]].isthing
                pairs[thing] += 1
                for seg in rec.segments:
                    if seg.category_id != cats[c]:
                        continue
                    m = ids == seg.id
                    if (top & m).sum() / max((top | m).sum(), 1) >= MASK_IOU:
                        hits[thing] += 1
                        break
    finally:
        model.train(was)
    total = pairs[True] + pairs[False]
    return {
        "corloc": 100 * (hits[True] + hits[False]) / max(total, 1),
        "corloc_th": 100 * hits[True] / max(pairs[True], 1),
        "corloc_st": 100 * hits[False] / max(pairs[False], 1),
        "pairs": total,
    }
