"""Paper 003 (FDD, Li et al., AAAI 2024): dense pseudo panoptic labels learned from clicked points.

Images labelled with points (kind PT: every segment clicked once or a few times, each click carrying its class and
segment) train a *pseudo-label branch* that turns the clicks into dense instance maps; from a warm-up on, those
maps are the images' panoptic labels for every loss of the network (RPN, cascade, mask head, semantic head,
paper 004's panoptic head, relation reasoning). The branch runs in training only: inference costs nothing more.

* Query generator (Eq. 1): the stride-8 FPN level through two 3x3 convolutions is F^proj; each clicked segment's
  query is the channel-wise max of F^proj over the cells its expanded clicks cover (squares of ``expand`` pixels,
  the nearest click winning where squares meet); its position embedding is its class's row of a learned table.
* Pseudo-label branch: ``layers`` transformer decoder layers (self-attention, cross-attention to F^proj with a
  sine position code, FFN; position embeddings added to queries and keys as in DETR), each query's mask the dot
  product of its embedding with stride-4 features (``pixels``: the FPN's finest level or the semantic head's
  features; MaskFormer's form, standing in for Panoptic SegFormer's attention masks), softmax over the image's
  segments per pixel. Losses at every layer (deep supervision): Eq. 3 partial cross-entropy at the clicks,
  Eqs. 4-5 the colour prior over neighbour pairs of similar LAB colour, Eq. 6 self-training on its own argmax
  (ramped in over ``warmup`` iterations, as every loss that reads M^pse); Eq. 7 L_pse = L_pCE + L_CE + L_col.
  Each term is its own loss (``loss_points_pce``, ``_colour``, ``_self``, ``_sem``), so the training log shows
  which one moves.
* Auxiliary semantic branch (Eqs. 8-9): the same layers and position embeddings with one learned query per class,
  softmax over classes, partial cross-entropy and colour prior, no self-training; weight ``lambda_sem`` (paper 003:
  1 for one click per segment, 0.1 for ten).
* Pseudo labels (Eq. 2): M^pse = argmax over segments of the last layer's map at image resolution; each segment
  keeps its clicks' class. They enter the network's losses image by image as training goes on: image i from
  iteration ``pseudo_start + warmup * u_i`` with u_i in [0, 1) fixed per image id, so the share of point images
  taught by their pseudo labels grows linearly to 1 over ``warmup`` iterations (paper 003 ramps L_CE and L_pan in
  linearly from the start; torchvision's losses take no per-image weight, so the ramp is over images). A later
  ``pseudo_start`` (beyond the paper) lets the branch's labels mature before the network learns from them. With
  ``clicked_only`` (beyond the paper) a thing keeps only the connected parts of its map that hold one of its clicks;
  the rest is unlabelled.

The colour affinity is computed on the image average pooled to the masks' stride (4), where it fires
(``benchmarks/scenes.md``): ``A_ij = 1`` where exp(-||lab_i - lab_j|| / 2) > 0.3, 8 neighbours at dilation 2.
In a label space without stuff classes nothing is clicked on the background, so every pixel goes to some clicked
object: the method assumes, as paper 003 does, that stuff is labelled too.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from skimage.measure import label as label_components
from torch import Tensor, nn

from cqbnet.cues.dense_crf import dense_crf, keep_shrunk_segments
from cqbnet.cues.pairwise import lab_similarity, neighbour_offsets, pooled_lab, shift
from cqbnet.data.transforms import to_image_bytes, to_tensors
from cqbnet.errors import InputError
from cqbnet.modeling.supervision import TrainingBatch, zero_loss
from cqbnet.modeling.targets import pseudo_panoptic_target, with_pseudo_panoptic
from cqbnet.weak.base import WeakModule, setting
from cqbnet.weak.warmup import image_share, ramp_weight

FEATURE_STRIDE = 8  # F^proj: the FPN level the queries are pooled from and the decoder attends to
MASK_STRIDE = 4  # the masks: the semantic head's features
COLOUR_THRESHOLD = 0.3  # Eq. 5
# the logged terms of the branch's loss: Eq. 3, Eqs. 4-5, Eq. 6 (ramped in), lambda_sem times Eq. 9
TERMS = ("pce", "colour", "self", "sem")
PIXEL_SOURCES = ("fpn", "semantic")  # the stride-4 features the masks are read from


def sine_position(h: int, w: int, dim: int, device: torch.device) -> Tensor:
    """(h * w, dim) 2-D sine position code (DETR): half the channels for y, half for x."""
    half = dim // 2
    freq = 10000 ** (torch.arange(0, half, 2, device=device, dtype=torch.float32) / half)  # (half / 2,)
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h * 2 * math.pi
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w * 2 * math.pi
    py = torch.cat([torch.sin(ys[:, None] / freq), torch.cos(ys[:, None] / freq)], 1)  # (h, half)
    px = torch.cat([torch.sin(xs[:, None] / freq), torch.cos(xs[:, None] / freq)], 1)  # (w, half)
    return torch.cat([py[:, None].expand(h, w, half), px[None].expand(h, w, half)], 2).reshape(h * w, 2 * half)


class DecoderLayer(nn.Module):
    """Self-attention among the queries, cross-attention to the image, FFN; post-norm; positions added to the
    queries and keys, not to the values (DETR)."""

    def __init__(self, dim: int, heads: int, ffn: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn), nn.ReLU(inplace=True), nn.Linear(ffn, dim))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(3))

    def forward(self, q: Tensor, q_pos: Tensor, memory: Tensor, m_pos: Tensor) -> Tensor:
        """q, q_pos (1, Q, D); memory, m_pos (1, M, D) -> (1, Q, D)."""
        k = q + q_pos
        q = self.norms[0](q + self.self_attn(k, k, q, need_weights=False)[0])
        q = self.norms[1](q + self.cross_attn(q + q_pos, memory + m_pos, memory, need_weights=False)[0])
        return self.norms[2](q + self.ffn(q))


def click_cells(xy: Tensor, expand: int, h: int, w: int, stride: int) -> tuple[Tensor, Tensor]:
    """The feature cells (stride ``stride``, grid h x w) each click's expanded square covers, the nearest click
    winning where squares meet: (cell indices (M,), click index of each (M,)). A click always owns its own cell
    unless a nearer click shares it."""
    cy = (torch.arange(h, device=xy.device, dtype=torch.float32) + 0.5) * stride
    cx = (torch.arange(w, device=xy.device, dtype=torch.float32) + 0.5) * stride
    grid = torch.stack(torch.meshgrid(cy, cx, indexing="ij"), -1).reshape(-1, 2)  # (h * w, 2) (y, x) centres
    p = xy.float().flip(1) + 0.5  # (Q, 2) (y, x) pixel centres
    d = (grid[:, None] - p[None]).abs()  # (h * w, Q, 2)
    covered = (d <= expand / 2).all(-1)
    own = (xy[:, 1] // stride) * w + (xy[:, 0] // stride)  # (Q,) each click's own cell
    covered[own, torch.arange(len(xy), device=xy.device)] = True
    dist = d.pow(2).sum(-1).masked_fill(~covered, float("inf"))
    best, click = dist.min(1)
    cells = torch.nonzero(torch.isfinite(best)).squeeze(1)
    return cells, click[cells]


def segment_queries(memory: Tensor, xy: Tensor, seg_of_click: Tensor, k: int, expand: int, h: int, w: int) -> Tensor:
    """Eq. 1: each segment's query, the channel-wise max of the stride-8 features (memory (h * w, D)) over the
    cells of its expanded clicks; a segment whose every cell went to nearer clicks takes its first click's cell."""
    d = memory.shape[1]
    cells, click = click_cells(xy, expand, h, w, FEATURE_STRIDE)
    q = memory.new_full((k, d), float("-inf"))
    q = q.scatter_reduce(0, seg_of_click[click][:, None].expand(-1, d), memory[cells], "amax")
    lost = torch.isinf(q[:, 0])
    if lost.any():
        own = (xy[:, 1] // FEATURE_STRIDE) * w + (xy[:, 0] // FEATURE_STRIDE)
        first = torch.full((k,), len(xy) - 1, dtype=torch.int64, device=xy.device)
        first = first.scatter_reduce(0, seg_of_click, torch.arange(len(xy), device=xy.device), "amin")
        q = torch.where(lost[:, None], memory[own[first]], q)
    return q


def partial_ce(log_p: Tensor, cells: Tensor, labels: Tensor) -> Tensor:
    """Eq. 3: mean of -log P_label at the clicked cells; log_p (K, H, W), cells (Q,) flat indices."""
    return -log_p.flatten(1)[labels, cells].mean()


def colour_prior(log_p: Tensor, affinity: Tensor, dilation: int) -> Tensor:
    """Eqs. 4-5: -sum_ij A_ij log(P_i . P_j) / sum_ij A_ij over the 8 dilated neighbours; log_p (K, H, W),
    affinity (8, H, W) binary. The dot product is taken in log space (logsumexp over K)."""
    total = log_p.new_zeros(())
    for a, (dy, dx) in zip(affinity, neighbour_offsets(dilation)):
        total = total - (a * torch.logsumexp(log_p + shift(log_p, dy, dx), dim=0)).sum()
    return total / affinity.sum().clamp(min=1.0)


def clicked_components(masks: Tensor, xy: Tensor, seg_of_click: Tensor, which: Tensor) -> Tensor:
    """Each mask of ``which`` (K,) cut to its 8-connected components that hold one of its clicks, the rest of it
    left unlabelled; masks (K, H, W) bool, xy (Q, 2) click pixels (x, y), seg_of_click (Q,) their mask. A mask
    none of whose clicks it holds stays whole. Beyond paper 003: a thing's stray fragments far from its clicks
    would stretch its box (the pseudo boxes are the masks' tight boxes)."""
    out = masks.clone()
    clicks = xy.long().cpu().numpy()
    owner = seg_of_click.cpu().numpy()
    for k in torch.nonzero(which).flatten().tolist():
        parts = label_components(masks[k].cpu().numpy(), connectivity=2)  # (H, W) 0 outside, 1.. per component
        held = {int(parts[y, x]) for x, y in clicks[owner == k]} - {0}
        if held:
            out[k] = torch.from_numpy(np.isin(parts, sorted(held))).to(masks.device)
    return out


def self_training(logits: Tensor) -> Tensor:
    """Eq. 6: cross-entropy against the map's own argmax (a fixed target); logits (K, H, W)."""
    return F.cross_entropy(logits[None], logits.detach().argmax(0)[None])


@dataclass
class PointsConfig:
    """``model.weak.points``: paper 003 (FDD), clicked points teach everything through learned dense pseudo labels."""

    enabled: bool = False
    dim: int = setting(64, minimum=1)  # decoder width (divisible by heads)
    layers: int = setting(2, minimum=1)  # decoder layers (paper 003 does not give its count)
    heads: int = setting(4, minimum=1)
    expand: int = setting(7, minimum=1)  # side in pixels of the square each click is expanded to (Eq. 1)
    lambda_sem: float = 1.0  # the auxiliary semantic branch's weight (paper 003: 1 for P1, 0.1 for P10)
    warmup: int = 10000  # iterations over which the point images switch to their pseudo panoptic labels
    colour: bool = True  # the colour prior (Eqs. 4-5), the self-training (Eq. 6), the auxiliary branch
    self_training: bool = True  # and the pseudo labels themselves, each switchable for ablations
    auxiliary: bool = True
    pseudo_labels: bool = True
    # the stride-4 features the masks are read from: "fpn" (the FPN's finest level, which the detector shares) or
    # "semantic" (the semantic head's features, trained by a class-level loss)
    pixels: str = setting("fpn", choices=PIXEL_SOURCES)
    clicked_only: bool = False  # a thing's pseudo mask keeps only its parts that hold a click
    pseudo_start: int = 0  # iteration from which the point images begin switching to their pseudo labels

    def check(self, source: str) -> None:
        """The decoder's width divisible by its heads."""
        if self.dim % self.heads:
            raise InputError(
                f"{source}: model.weak.points_dim ({self.dim}) must be divisible by model.weak.points_heads "
                f"({self.heads})"
            )


class FDDPoints(WeakModule):
    """Paper 003's pseudo-label and auxiliary semantic branches, and the pseudo panoptic labels they give."""

    def __init__(
        self,
        fpn_channels: int,
        pixel_channels: int,
        num_classes: int,
        thing_semantic: list[int],
        dim: int = 64,
        layers: int = 2,
        heads: int = 4,
        expand: int = 7,
        lambda_sem: float = 1.0,
        warmup: int = 10000,
        colour: bool = True,
        self_train: bool = True,
        auxiliary: bool = True,
        pseudo_labels: bool = True,
        dilation: int = 2,
        pixels: str = "fpn",
        clicked_only: bool = False,
        pseudo_start: int = 0,
    ):
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(fpn_channels, dim, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(dim, dim, 3, padding=1)
        )
        self.pixel = nn.Conv2d(pixel_channels, dim, 1)
        self.position = nn.Embedding(num_classes, dim)  # class-indexed position embeddings, shared by both branches
        self.class_queries = nn.Embedding(num_classes, dim)  # the auxiliary branch's queries
        self.layers = nn.ModuleList(DecoderLayer(dim, heads, 2 * dim) for _ in range(layers))
        self.mask_embed = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim))
        self.thing_semantic = set(thing_semantic)
        self.expand, self.lambda_sem, self.warmup, self.dilation = expand, lambda_sem, warmup, dilation
        self.colour, self.self_train, self.auxiliary, self.pseudo_labels = colour, self_train, auxiliary, pseudo_labels
        self.pixel_source, self.clicked_only, self.pseudo_start = pixels, clicked_only, pseudo_start

    # --- the branches -------------------------------------------------------------------------------------------

    def decode(self, q: Tensor, q_pos: Tensor, memory: Tensor, m_pos: Tensor, pixels: Tensor) -> list[Tensor]:
        """Each layer's mask logits (K, H4, W4) for queries q, q_pos (K, D) on one image's memory (M, D) and
        pixel embeddings (D, H4, W4)."""
        out, q = [], q[None]
        for layer in self.layers:
            q = layer(q, q_pos[None], memory[None], m_pos[None])
            out.append(torch.einsum("kd,dhw->khw", self.mask_embed(q[0]), pixels))
        return out

    def branch_losses(self, layers: list[Tensor], cells: Tensor, labels: Tensor, affinity: Tensor, st: float) -> dict:
        """Eq. 7's terms (Eq. 9's with ``st`` = 0), each a mean over the layers: ``pce`` L_pCE, ``colour`` L_col,
        ``self`` ``st`` L_CE (only with ``st`` > 0)."""
        terms: dict[str, Tensor] = {}
        for logits in layers:
            log_p = F.log_softmax(logits, 0)
            parts = {"pce": partial_ce(log_p, cells, labels)}
            if self.colour:
                parts["colour"] = colour_prior(log_p, affinity, self.dilation)
            if st > 0:
                parts["self"] = st * self_training(logits)
            for k, v in parts.items():
                terms[k] = terms.get(k, 0.0) + v / len(layers)
        return terms

    def image_losses(self, batch: TrainingBatch, i: int) -> tuple[dict[str, Tensor], Tensor | None]:
        """One point image: the terms of L_pse + lambda_sem L_sem (:data:`TERMS`; the auxiliary branch's as
        ``sem``), and its segments' logits at stride 4 (K, H4, W4), the segments in the order of
        ``point_segments``' unique ids (None without clicks)."""
        t = batch.targets[i]
        xy, segs, cls = t["point_xy"], t["point_segments"], t["point_labels"]
        if len(xy) == 0:
            return {}, None
        h, w = batch.image_list.image_sizes[i]  # the image without the batch's padding
        f8 = self.proj(batch.features["1"][i : i + 1])[0, :, : -(-h // FEATURE_STRIDE), : -(-w // FEATURE_STRIDE)]
        d, h8, w8 = f8.shape  # (D, H8, W8)
        memory = f8.flatten(1).t()  # (M, D)
        m_pos = sine_position(h8, w8, d, f8.device)
        source = batch.features["0"] if self.pixel_source == "fpn" else batch.sem_features  # (N, C, H'/4, W'/4)
        pixels = self.pixel(source[i : i + 1])[0, :, : -(-h // MASK_STRIDE), : -(-w // MASK_STRIDE)]
        h4, w4 = pixels.shape[-2:]  # (D, H4, W4)
        ids, seg_of_click = torch.unique(segs, return_inverse=True)  # segments (K,), each click's segment
        seg_class = torch.zeros(len(ids), dtype=torch.int64, device=cls.device).scatter(0, seg_of_click, cls)
        q = segment_queries(memory, xy, seg_of_click, len(ids), self.expand, h8, w8)  # Eq. 1, (K, D)
        cells4 = (xy[:, 1] // MASK_STRIDE) * w4 + (xy[:, 0] // MASK_STRIDE)  # the clicks on the mask grid
        affinity = self._affinity(batch.images[i], h4, w4)
        layers = self.decode(q, self.position(seg_class), memory, m_pos, pixels)
        # L_CE reads the branch's own argmax: ramped in like every loss that uses M^pse (paper 003, after PSPS)
        st = ramp_weight(batch.iteration, self.warmup) if self.self_train else 0.0
        terms = self.branch_losses(layers, cells4, seg_of_click, affinity, st)
        if self.auxiliary and self.lambda_sem > 0:
            sem = self.decode(self.class_queries.weight, self.position.weight, memory, m_pos, pixels)
            terms["sem"] = self.lambda_sem * sum(self.branch_losses(sem, cells4, cls, affinity, 0.0).values())
        return terms, layers[-1]

    def _affinity(self, image: Tensor, h: int, w: int) -> Tensor:
        """(8, H4, W4) binary A_ij of Eq. 5 on the image pooled to the mask stride (padding: no pairs)."""
        lab = pooled_lab(image, MASK_STRIDE).to(image.device)  # (1, 3, ceil(H / 4), ceil(W / 4))
        sim = lab_similarity(lab, self.dilation)[0] > COLOUR_THRESHOLD  # (8, h, w)
        out = torch.zeros((8, h, w), dtype=torch.float32, device=image.device)
        hh, ww = min(h, sim.shape[1]), min(w, sim.shape[2])
        out[:, :hh, :ww] = sim[:, :hh, :ww].float()
        return out

    # --- the pseudo labels --------------------------------------------------------------------------------------

    def pseudo_target(
        self,
        t: dict[str, Any],
        logits: Tensor,
        size: tuple[int, int],
        ignore: int,
        crf_image: np.ndarray | None = None,
        crf_keep: float = 0.0,
    ) -> dict:
        """Eq. 2 at image resolution as a panoptic target (masks, labels, boxes, semantic, panoptic ...) for the
        network's P losses; segments keep their clicks' class, crowd where a click says so. With ``crf_image``
        (H, W, 3) uint8 (beyond paper 003) the segments' softmax is first refined by the dense CRF of paper
        001's refinement (:func:`cqbnet.cues.dense_crf.dense_crf`), which moves the stride-4 maps' borders onto
        the image's colour edges; a segment it shrinks below ``crf_keep`` of its area keeps its pixels
        (:func:`cqbnet.cues.dense_crf.keep_shrunk_segments`; 0: off)."""
        h, w = size
        up = F.interpolate(logits[None].detach(), scale_factor=MASK_STRIDE, mode="bilinear", align_corners=False)
        up = up[0, :, :h, :w]  # (K, H, W)
        if crf_image is not None:
            probs = up.softmax(0).cpu()
            refined = dense_crf(probs, crf_image[:h, :w])
            if crf_keep > 0:
                refined = keep_shrunk_segments(probs, refined, crf_keep)
            up = refined.to(up.device)
        m = up.argmax(0)  # (H, W) segment index
        ids, seg_of_click = torch.unique(t["point_segments"], return_inverse=True)
        cls = torch.zeros(len(ids), dtype=torch.int64, device=m.device).scatter(0, seg_of_click, t["point_labels"])
        crowd = torch.zeros(len(ids), dtype=torch.int64, device=m.device)
        if "point_iscrowd" in t:
            crowd = crowd.scatter_reduce(0, seg_of_click, t["point_iscrowd"].long(), "amax")
        crowd = crowd.bool()
        masks = m[None] == torch.arange(len(ids), device=m.device)[:, None, None]  # (K, H, W)
        if self.clicked_only:
            things = torch.tensor([int(c) in self.thing_semantic for c in cls], dtype=torch.bool)
            masks = clicked_components(masks, t["point_xy"], seg_of_click, things)
        keep = masks.flatten(1).any(1)
        return pseudo_panoptic_target(masks[keep], cls[keep], crowd[keep], self.thing_semantic, ignore)

    def ramped_in(self, t: dict[str, Any], iteration: int) -> bool:
        """Whether this image learns from its pseudo labels at ``iteration`` (the linear ramp over images, from
        ``pseudo_start`` on)."""
        ramp = ramp_weight(iteration - self.pseudo_start, self.warmup) if iteration >= self.pseudo_start else 0.0
        return self.pseudo_labels and ramp > image_share(t["image_id"])

    name = "points"
    relabels = True

    def relabel(self, batch: TrainingBatch, net) -> tuple[dict[str, Tensor], TrainingBatch]:
        """The point branch's losses, and its pseudo panoptic labels on the point images that are ramped in."""
        return self.loss(batch, net.semantic_head.ignore_index)

    def loss(self, batch: TrainingBatch, ignore: int) -> tuple[dict[str, Tensor], TrainingBatch]:
        """The terms of L_pse + lambda_sem L_sem over the batch's point images (means; ``loss_points_<term>`` for
        each of :data:`TERMS`), and the batch with the pseudo panoptic labels of the point images that are ramped
        in (their kinds gain P; the pseudo flag marks them)."""
        images = batch.images_for("loss_points")
        zero = zero_loss(self)  # one pass over the parameters for every term
        totals = {f"loss_points_{k}": zero for k in TERMS}
        if not images:
            return totals, batch
        targets = list(batch.targets)
        for i in images:
            terms, logits = self.image_losses(batch, i)
            for k, v in terms.items():
                totals[f"loss_points_{k}"] = totals[f"loss_points_{k}"] + v / len(images)
            t = targets[i]
            if logits is not None and self.ramped_in(t, batch.iteration):
                pseudo = self.pseudo_target(t, logits, batch.image_list.image_sizes[i], ignore)
                targets[i] = with_pseudo_panoptic(t, pseudo)
        return totals, replace(batch, targets=targets)


@torch.no_grad()
def branch_logits(model: nn.Module, dataset) -> Iterator[tuple[dict, Tensor, dict, Tensor | None]]:
    """(COCO image info, image (3, H, W), target, the point branch's segment logits (K, H/4, W/4) or None) of each
    point image of a mixed-label dataset, at image resolution and without augmentation."""
    branch = getattr(model, "points", None)
    if branch is None:
        raise InputError("the checkpoint's network has no point branch (model.weak.points was off in its training)")
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    try:
        for index, lab in enumerate(dataset.manifest.images):
            if "PT" not in lab.kinds:
                continue
            image, target = to_tensors(*dataset[index])
            target = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in target.items()}
            batch = model.training_batch([image.to(device)], [target])
            _, logits = branch.image_losses(batch, 0)
            info = {"id": lab.image_id, "file_name": lab.file_name, "height": lab.height, "width": lab.width}
            yield info, image, target, logits
    finally:
        model.train(was)


def pseudo_output(
    model: nn.Module,
    target: dict,
    logits: Tensor | None,
    size: tuple[int, int],
    crf_image: np.ndarray | None = None,
    crf_keep: float = 0.0,
):
    """One image's pseudo panoptic labels (:meth:`FDDPoints.pseudo_target`, refined by the dense CRF on
    ``crf_image`` when given) as a :class:`~cqbnet.modeling.panoptic_head.PanopticOutput` with COCO category ids."""
    from cqbnet.modeling.panoptic_head import PanopticOutput

    if logits is None:
        return PanopticOutput(np.zeros(size, dtype=np.int32), [])
    p = model.points.pseudo_target(target, logits, size, 255, crf_image, crf_keep)
    cats = model.labels.category_of
    segments = [
        {"id": int(sid), "category_id": cats[int(c)], "iscrowd": bool(k), "area": int(m.sum()), "score": 1.0}
        for sid, c, k, m in zip(p["segment_ids"], p["labels"], p["iscrowd"], p["masks"])
    ]
    return PanopticOutput(p["panoptic"].cpu().numpy().astype(np.int32), segments)


def pseudo_label_items(
    model: nn.Module, dataset, device: torch.device, crf: bool = False, crf_keep: float = 0.0
) -> Iterator[tuple[dict, np.ndarray, Any]]:
    """(COCO image info, image, :class:`~cqbnet.modeling.panoptic_head.PanopticOutput`) of the pseudo panoptic
    labels that a trained network's point branch gives each point image of a mixed-label dataset, at image
    resolution and without augmentation; for inspection, scoring against the hidden ground truth, or training
    offline from them (write them with :func:`cqbnet.engine.inference.write_predictions`). With ``crf`` each
    image's maps are refined by the dense CRF first, keeping the segments it shrinks below ``crf_keep`` of their
    area (:meth:`FDDPoints.pseudo_target`)."""
    model.to(device)
    for info, image, target, logits in branch_logits(model, dataset):
        img = to_image_bytes(image)
        yield info, img, pseudo_output(model, target, logits, tuple(image.shape[1:]), img if crf else None, crf_keep)
