"""Relation reasoning between things and stuff (paper 000, "Semantic Coherence"; after Wu et al. 2020).

Boxes can teach stuff and stuff maps can teach detection when the two branches reason together:

1. a *thing graph* whose nodes are the RoIs' features and a *stuff graph* whose nodes are class-level stuff
   features (the semantic features pooled under each stuff class's predicted probability), both projected to
   a common width (128 in the paper);
2. a super graph over all nodes with learned, image-specific edges (softmax of feature similarities), on
   which ``num_layers`` inter-graph reasoning layers (2 in the paper) propagate features;
3. the reasoned node features are projected back: thing nodes give extra box scores and deltas, stuff nodes
   are spread back to the pixels by the semantic probabilities and give extra semantic logits;
4. the enhanced predictions are averaged with the base ones, at test and for the detections the panoptic head
   learns from.

One rule for the thing graph in training and at test: its nodes are an image's first ``num_nodes`` RoIs (the
top proposals, and in training the ground-truth boxes). Further RoIs (at test the detector scores 1000 or so)
*read* the graph, attending to its nodes, without entering it, so the graph a detection sees is the same size
in both. Deviation from BGRNet (Wu et al. 2020, which paper 000 cites): there is no separate intra-graph
reasoning on the thing graph and the stuff graph; every layer attends over the whole super graph.

The loss over the enhanced predictions is L_RR = L_cls_en + L_reg_en + beta L_seg_en (beta = 0.5), with the same
targets as the base heads; :func:`relation_loss` sums the three terms. Each term is taken on the enhanced
predictions themselves, not on their average with the base ones: trained through the average, the extra
classifier was left flat while the base one carried it (on proposals at IoU >= 0.5 with a thing it gave the true
class 0.16, the base 0.54), and averaging it in at test cost detections (``benchmarks/relation_diagnostics.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cqbnet.modeling.padding import grid_cells
from cqbnet.modeling.supervision import zero_loss
from cqbnet.modeling.targets import pad_semantic, semantic_target
from cqbnet.weak.base import WeakModule, setting


class GraphReasoningLayer(nn.Module):
    """One layer: x' = x + ReLU(W (A x)), with A = softmax(theta(x) phi(x)^T) learned per image."""

    def __init__(self, width: int):
        super().__init__()
        self.theta = nn.Linear(width, width)
        self.phi = nn.Linear(width, width)
        self.update = nn.Linear(width, width)

    def forward(self, x: Tensor, readers: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """x (V, D): the nodes of one image's super graph; readers (R, D): features that attend to the nodes
        without being attended to. Returns both, updated."""
        keys = self.phi(x)
        scale = x.shape[1] ** 0.5
        adjacency = torch.softmax(self.theta(x) @ keys.T / scale, dim=1)  # (V, V)
        out = x + F.relu(self.update(adjacency @ x))
        if readers is not None and len(readers):
            reads = torch.softmax(self.theta(readers) @ keys.T / scale, dim=1)  # (R, V)
            readers = readers + F.relu(self.update(reads @ x))
        return out, readers


@dataclass
class RelationConfig:
    """``model.weak.relation``: boxes teach stuff and stuff maps teach detection (graph reasoning, L_RR)."""

    enabled: bool = True
    width: int = setting(128, minimum=1)  # node width of the thing, stuff and super graphs (paper: 128)
    layers: int = setting(2, minimum=1)  # inter-graph reasoning layers (paper: 2)
    rois: int = setting(64, minimum=1)  # RoIs per image that are the thing graph's nodes, in training and at test
    seg_weight: float = 0.5  # beta of L_RR = L_cls_en + L_reg_en + beta L_seg_en


class RelationReasoning(WeakModule):
    """Thing graph + stuff graph + inter-graph reasoning; enhanced box and semantic predictions."""

    def __init__(
        self,
        roi_features: int,
        semantic_channels: int,
        num_box_classes: int,
        num_semantic_classes: int,
        stuff_classes: list[int],
        width: int = 128,
        num_layers: int = 2,
        num_nodes: int = 64,
        seg_weight: float = 0.5,
        stride: int = 4,
    ):
        super().__init__()
        self.num_nodes = num_nodes  # RoIs per image that are the thing graph's nodes (the rest read it)
        self.seg_weight = seg_weight  # beta of L_RR
        self.stride = stride  # of the semantic features and logits
        self.thing_in = nn.Linear(roi_features, width)
        self.stuff_in = nn.Linear(semantic_channels, width)
        self.layers = nn.ModuleList(GraphReasoningLayer(width) for _ in range(num_layers))
        self.cls_en = nn.Linear(width, num_box_classes)
        self.reg_en = nn.Linear(width, 4)
        self.stuff_out = nn.Conv2d(width, semantic_channels, 1)
        self.seg_en = nn.Conv2d(semantic_channels, num_semantic_classes, 1)
        self.register_buffer("stuff_classes", torch.tensor(stuff_classes, dtype=torch.int64), persistent=False)

    def stuff_nodes(self, features: Tensor, probs: Tensor, cells: tuple[int, int] | None = None) -> Tensor:
        """Class-level stuff features (N_st, C): pixel features averaged under each stuff class's probability.

        features (C, h, w); probs (K, h, w) semantic probabilities; ``cells`` (rows, cols): the image's own
        cells of a padded grid, the only ones pooled (all when None).
        """
        if cells is not None:
            features, probs = features[:, : cells[0], : cells[1]], probs[:, : cells[0], : cells[1]]
        w = probs[self.stuff_classes].flatten(1)  # (N_st, hw)
        w = w / w.sum(1, keepdim=True).clamp(min=1e-6)
        return w @ features.flatten(1).T  # (N_st, C)

    def forward(
        self,
        roi_features: Tensor,
        features: Tensor,
        probs: Tensor,
        cells: tuple[int, int] | None = None,
        num_nodes: int | None = None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One image: RoI features (R, F), semantic features (C, h, w), semantic probabilities (K, h, w).

        The first ``num_nodes`` RoIs (all when None) are the thing graph's nodes, the others read it; ``cells``:
        the image's own cells of the padded grid. Returns enhanced box class logits (R, classes), box deltas
        (R, 4) and semantic logits (K, h, w).
        """
        n = roi_features.shape[0] if num_nodes is None else min(num_nodes, roi_features.shape[0])
        things = self.thing_in(roi_features)  # (R, D)
        stuff = self.stuff_in(self.stuff_nodes(features, probs, cells))  # (N_st, D)
        nodes = torch.cat([things[:n], stuff])  # (n + N_st, D): the super graph
        readers = things[n:]  # (R - n, D)
        for layer in self.layers:
            nodes, readers = layer(nodes, readers)
        things, stuff = torch.cat([nodes[:n], readers]), nodes[n:]
        # stuff nodes back to pixels, weighted by where each stuff class is predicted
        spread = torch.einsum("kd,khw->dhw", stuff, probs[self.stuff_classes])  # (D, h, w)
        seg = self.seg_en(features + self.stuff_out(spread[None])[0])  # (K, h, w)
        return self.cls_en(things), self.reg_en(things), seg

    def enhancer(self, sem_features: Tensor, sem_logits: Tensor, sizes: list[tuple[int, int]], seg_out: list[Tensor]):
        """The revision of the first cascade stage that :meth:`CascadeRoIHeads.detect` calls, for a batch of
        images of ``sizes``; appends each image's enhanced semantic logits (K, h, w) to ``seg_out`` (paper 000:
        averaged with the base predictions). The same at test and for the detections the panoptic head trains
        on: an image's first ``num_nodes`` RoIs are the thing graph, the rest read it."""
        probs = torch.softmax(sem_logits, dim=1)  # (N, K, h, w)

        def enhance(x: Tensor, logits: Tensor, deltas: Tensor, counts: list[int]) -> tuple[Tensor, Tensor]:
            cls, reg = [], []
            for i, (xi, li, di) in enumerate(zip(x.split(counts), logits.split(counts), deltas.split(counts))):
                cells = grid_cells(sizes[i], self.stride)
                c, r, seg = self(xi, sem_features[i], probs[i], cells, self.num_nodes)
                cls.append(average_with_base(li, c))
                reg.append(average_with_base(di, r))
                seg_out.append(seg)
            return torch.cat(cls), torch.cat(reg)

        return enhance

    name = "relation"

    def losses(self, batch, net) -> dict[str, Tensor]:
        """L_RR on the images with boxes or stuff labels."""
        return {"loss_relation": self.loss(batch, net.rpn, net.roi_heads, net.semantic_head, net.labels)}

    def loss(self, batch, rpn, roi_heads, semantic_head, labels) -> Tensor:
        """L_RR = L_cls_en + L_reg_en + beta L_seg_en of ``batch`` (a :class:`~cqbnet.modeling.supervision.
        TrainingBatch`).

        Every image with boxes (P, B) or stuff pixels (P, S) builds its super graph from its RoIs (its first
        ``num_nodes`` proposals and its boxes) and its stuff classes. The enhanced predictions are trained only
        against the labels the image has: boxes give L_cls_en and L_reg_en, stuff pixels L_seg_en. The graph
        carries each loss into the other branch: a stuff map trains the RoI features, boxes train the semantic
        features.
        """
        zero = zero_loss(self)
        idx = batch.images_for("loss_relation")
        if not idx:
            return zero
        proposals, gt = dict(batch.proposals), batch.gt_boxes
        missing = [i for i in idx if i not in proposals]
        if missing:  # stuff-only images: RPN proposals without an RPN loss
            proposals.update(zip(missing, rpn.proposals(*batch.sub(missing))))
        n = self.num_nodes
        rois = [torch.cat([proposals[i][:n], gt[i]["boxes"]]) if i in gt else proposals[i][:n] for i in idx]
        _, feats = batch.sub(idx)
        stage = roi_heads.stages[0]
        x = stage.head(roi_heads.box_roi_pool(feats, rois, batch.sizes(idx)))  # (R, F)
        probs = torch.softmax(batch.sem_logits[idx].detach(), dim=1)  # (n, K, h, w): where each stuff class is
        counts = [len(r) for r in rois]
        box_cls, box_reg, box_rois, seg, seg_targets = [], [], [], [], []
        for j, xi in enumerate(x.split(counts)):
            i = idx[j]
            size = batch.image_list.image_sizes[i]
            # the loss is on the enhanced predictions themselves: each must predict on its own what the average
            # (at test) is to predict, or the base's confidence carries the average and the extra head stays flat
            c, r, s = self(xi, batch.sem_features[i], probs[j], grid_cells(size, self.stride))
            if i in gt:
                box_cls.append(c)
                box_reg.append(r)
                box_rois.append(rois[j])
            target = semantic_target(
                batch.targets[i], batch.kinds[i] & {"P", "S"}, size, labels, semantic_head.ignore_index
            )
            if target is not None:
                seg.append(s)
                seg_targets.append(target)
        cls_en = reg_en = seg_en = zero
        if box_rois:
            boxed = [i for i in idx if i in gt]
            labels_en, reg_targets = roi_heads.first_stage_targets(
                box_rois, [gt[i]["boxes"] for i in boxed], [gt[i]["labels"] for i in boxed]
            )
            cls_en, reg_en = roi_heads.box_losses(torch.cat(box_cls), torch.cat(box_reg), labels_en, reg_targets)
        if seg:
            padded = pad_semantic(seg_targets, batch.padded, batch.sem_logits.device, semantic_head.ignore_index)
            seg_en = semantic_head.loss(torch.stack(seg), padded)
        return relation_loss(cls_en, reg_en, seg_en, self.seg_weight)


def average_with_base(base: Tensor, enhanced: Tensor) -> Tensor:
    """Paper 000: the enhanced predictions are averaged with the base network's."""
    return (base + enhanced) / 2


def relation_loss(cls_en: Tensor, reg_en: Tensor, seg_en: Tensor, beta: float = 0.5) -> Tensor:
    """L_RR = L_cls_en + L_reg_en + beta L_seg_en (paper 000; beta = 0.5)."""
    return cls_en + reg_en + beta * seg_en
