"""Weak-supervision losses on hand-made cases: Box2Mask (projection, pairwise) and Cls2Box (MID)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cqbnet.cues.pairwise import image_to_lab, lab_similarity, neighbour_offsets
from cqbnet.weak.box2mask import (
    box_in_roi,
    pairwise_loss,
    projection_loss,
    sample_box_rois,
)
from cqbnet.weak.cls2box import MIDHead, cls2box_loss, image_scores
from cqbnet.weak.warmup import ramp_weight


def box_mask(h, w, x1, y1, x2, y2):
    m = torch.zeros(1, h, w)
    m[0, y1:y2, x1:x2] = 1
    return m


def logits_of(mask: torch.Tensor, scale: float = 30.0) -> torch.Tensor:
    return (mask * 2 - 1) * scale


def test_projection_loss_zero_when_mask_fills_its_box():
    box = box_mask(16, 16, 3, 4, 11, 13)
    assert projection_loss(logits_of(box), box).item() == pytest.approx(0.0, abs=1e-5)


def test_projection_loss_zero_for_any_tight_shape_and_positive_otherwise():
    box = box_mask(16, 16, 2, 2, 12, 12)
    diamond = torch.zeros(1, 16, 16)
    for y in range(2, 12):
        half = 5 - abs(y - 6.5) + 0.5
        diamond[0, y, int(7 - half) : int(7 + half)] = 1  # touches all four sides of the box
    assert diamond[0].max(0).values[2:12].all() and diamond[0].max(1).values[2:12].all()
    assert projection_loss(logits_of(diamond), box).item() == pytest.approx(0.0, abs=1e-5)
    small = box_mask(16, 16, 4, 4, 8, 8)  # does not reach the box's sides
    leak = box_mask(16, 16, 0, 2, 12, 12)  # spills left of the box
    assert projection_loss(logits_of(small), box).item() > 0.2
    assert projection_loss(logits_of(leak), box).item() > 0.05


def test_projection_loss_grows_as_the_mask_leaves_the_box():
    box = box_mask(20, 20, 5, 5, 15, 15)
    shrunk = [projection_loss(logits_of(box_mask(20, 20, 5 + k, 5 + k, 15 - k, 15 - k)), box).item() for k in range(4)]
    grown = [projection_loss(logits_of(box_mask(20, 20, 5 - k, 5 - k, 15 + k, 15 + k)), box).item() for k in range(4)]
    assert shrunk[0] == pytest.approx(0.0, abs=1e-5) and grown[0] == pytest.approx(0.0, abs=1e-5)
    assert all(a < b for a, b in zip(shrunk, shrunk[1:])) and all(a < b for a, b in zip(grown, grown[1:]))
    logits = torch.zeros(1, 20, 20, requires_grad=True)
    projection_loss(logits, box).backward()
    assert logits.grad.abs().sum() > 0


def test_lab_similarity_and_neighbours():
    assert len(neighbour_offsets(2)) == 8 and (2, 2) in neighbour_offsets(2)
    img = np.zeros((8, 8, 3), dtype=np.uint8)
    img[:, 4:] = (255, 0, 0)
    lab = image_to_lab(img)[None]
    s = lab_similarity(lab)
    assert s.shape == (1, 8, 8, 8) and float(s.min()) >= 0 and float(s.max()) <= 1
    k_right = neighbour_offsets(2).index((0, 2))
    assert s[0, k_right, 3, 0] == pytest.approx(1.0)  # black to black
    assert s[0, k_right, 3, 3] < 0.01  # black to red across the edge
    assert s[0, k_right, 3, 7] == 0  # neighbour outside the image
    t = image_to_lab(torch.from_numpy(img).permute(2, 0, 1).float() / 255)
    assert torch.allclose(t, lab[0], atol=1e-3)


def test_pairwise_loss_prefers_masks_that_follow_colour_edges():
    img = np.zeros((12, 12, 3), dtype=np.uint8)
    img[:, 6:] = (240, 240, 240)
    sim = lab_similarity(image_to_lab(img)[None])
    box = torch.ones(1, 12, 12)
    follows = torch.zeros(1, 12, 12)
    follows[0, :, 6:] = 1
    crosses = torch.zeros(1, 12, 12)
    crosses[0, 6:, :] = 1  # cuts across the uniform halves
    a = pairwise_loss(logits_of(follows), sim, box).item()
    b = pairwise_loss(logits_of(crosses), sim, box).item()
    assert a == pytest.approx(0.0, abs=1e-4) and b > 1.0
    outside = torch.zeros(1, 12, 12)  # pairs outside the box do not count
    assert pairwise_loss(logits_of(crosses), sim, outside).item() == 0.0
    logits = logits_of(crosses).clone().requires_grad_()  # a mask that crosses the edge is pushed towards it
    pairwise_loss(logits, sim, box).backward()
    assert float(logits.grad.abs().sum()) > 0


def test_pairwise_warmup():
    assert ramp_weight(0, 100) == 0.0 and ramp_weight(50, 100) == 0.5 and ramp_weight(500, 100) == 1.0


def test_mid_head_normalisation_and_image_scores():
    torch.manual_seed(0)
    head = MIDHead(16, 3)
    mids = head(torch.randn(7, 16), [4, 3])
    assert [m.shape for m in mids] == [(4, 3), (3, 3)]
    for m in mids:
        # softmax over proposals times softmax over classes: each class's column sums to at most 1
        assert torch.all(m.sum(0) <= 1 + 1e-6) and torch.all(m >= 0)
    s = image_scores(mids[0])
    assert s.shape == (3,) and torch.all((s > 0) & (s < 1))


def test_cls2box_loss_small_when_a_proposal_holds_the_tagged_class():
    good = torch.tensor([[0.98, 0.01, 0.01], [0.0, 0.0, 0.0]])  # proposal 0 is surely class 0
    bad = torch.tensor([[0.01, 0.98, 0.01], [0.0, 0.0, 0.0]])
    tags = torch.tensor([[1.0, 0.0, 0.0]])
    assert cls2box_loss([good], tags).item() < 0.05
    assert cls2box_loss([bad], tags).item() > 1.0
    det = torch.tensor([[0.05, 0.9, 0.05], [0.3, 0.3, 0.4]])  # the detector disagrees: the product is low
    assert cls2box_loss([good], tags, [det]).item() > cls2box_loss([good], tags).item()


def test_cls2box_trains_the_mid_head():
    torch.manual_seed(1)
    head = MIDHead(8, 2)
    feats = torch.randn(5, 8)
    feats[2] += 3.0  # one distinctive proposal
    tags = torch.tensor([[0.0, 1.0]])
    opt = torch.optim.SGD(head.parameters(), lr=0.5)
    first = None
    for _ in range(60):
        loss = cls2box_loss(head(feats, [5]), tags)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 4


def test_pseudo_boxes_are_the_top_ranked_box_of_each_present_class_and_label_their_neighbours():
    from cqbnet.weak.cls2box import pseudo_box_targets, pseudo_boxes

    boxes = torch.tensor([[0, 0, 10, 10], [1, 0, 10, 10], [50, 50, 60, 60], [51, 50, 60, 61], [30, 0, 40, 9.0]])
    ranking = torch.tensor([[0.9, 0.0, 0.1], [0.2, 0.0, 0.1], [0.1, 0.0, 0.8], [0.0, 0.0, 0.3], [0.0, 0.0, 0.0]])
    pseudo, classes, picks = pseudo_boxes(boxes, ranking, torch.tensor([1.0, 0.0, 1.0]))
    assert classes.tolist() == [0, 2] and picks.tolist() == [0, 2] and torch.equal(pseudo, boxes[[0, 2]])
    labels, which = pseudo_box_targets(boxes, pseudo, classes, iou=0.5)
    assert labels.tolist() == [1, 1, 3, 3, 0]  # detector labels: 0 none, c + 1 class c; class 1 is not tagged
    assert which.tolist() == [0, 0, 1, 1, -1]
    assert pseudo_box_targets(boxes, pseudo, classes, iou=0.95)[0].tolist() == [1, 0, 3, 0, 0]
    pseudo, classes, picks = pseudo_boxes(boxes, ranking, torch.zeros(3))
    assert len(pseudo) == len(classes) == len(picks) == 0
    assert pseudo_box_targets(boxes, pseudo, classes, iou=0.5)[0].tolist() == [0] * 5


def test_pseudo_loss_credits_only_the_pseudo_boxes_and_blames_the_absent_classes_worst_proposal():
    from cqbnet.weak.cls2box import pseudo_loss

    logits = torch.zeros(4, 4, requires_grad=True)  # 4 proposals, background + 3 classes
    with torch.no_grad():
        logits[3, 2] = 3.0  # proposal 3 is sure of class 1, which the tags say is absent
        logits[1, 3] = 2.0  # proposal 1 gives absent class 2 its highest probability
    labels = torch.tensor([1, 1, 0, 0])  # proposals 0 and 1 near the pseudo box of class 0
    weights = torch.tensor([0.8, 0.8, 0.0, 0.0])
    tags = torch.tensor([1.0, 0.0, 0.0])
    loss = pseudo_loss(logits, labels, weights, tags)
    loss.backward()
    g = logits.grad
    assert float(g[2].abs().sum()) == 0  # a proposal neither near a pseudo box nor the worst of an absent class
    assert g[0, 1] < 0 and g[1, 1] < 0  # the pseudo box's class goes up (descent on -grad)
    assert g[3, 2] > 0  # the absent class goes down where it is highest
    assert g[1, 3] > 0  # so does class 2 where it is highest
    sure = torch.zeros(4, 4)
    sure[:2, 1] = 5.0
    sure[2:, 0] = 5.0
    assert pseudo_loss(sure, labels, weights, tags) < loss.detach() / 5
    half = pseudo_loss(logits.detach(), labels, weights / 2, torch.ones(3))  # no absent class: the CE alone
    assert half == pytest.approx(pseudo_loss(logits.detach(), labels, weights, torch.ones(3)).item() / 2)


def test_cls2box_modes_differ_in_what_reaches_the_detector():
    """The paper's L_C2B credits every proposal phi_MID weighs; the pseudo mode only the pseudo boxes' neighbours
    (and the worst proposal of each absent class), and its MID heads learn on detached inputs."""
    from types import SimpleNamespace

    from cqbnet.weak.cls2box import Cls2Box, cls2box_loss

    torch.manual_seed(0)
    c2b = Cls2Box(8, [0, 1], num_stages=1)
    x = torch.randn(6, 8, requires_grad=True)
    logits = torch.zeros(6, 3, requires_grad=True)
    boxes = [
        torch.tensor(
            [[0, 0, 10, 10], [0, 0, 10, 11], [20, 20, 30, 30], [40, 40, 50, 50], [60, 60, 70, 70], [80, 80, 90, 90.0]]
        )
    ]
    tags = torch.tensor([[1.0, 1.0]])
    mids = c2b.mid_heads[0](x, [6])
    cls2box_loss(mids, tags, [torch.softmax(logits, 1)[:, 1:]]).backward()  # the paper's form
    assert int((logits.grad.abs().sum(1) > 0).sum()) == 6
    logits.grad = x.grad = None
    heads = SimpleNamespace(stages=[SimpleNamespace(matcher=SimpleNamespace(high_threshold=0.5))], stage_weights=(1.0,))
    c2b.pseudo_box_loss([(x, logits, boxes)], boxes, [6], tags, heads).backward()
    assert 0 < int((logits.grad.abs().sum(1) > 0).sum()) < 6
    assert x.grad is None  # the MID heads learn on detached features
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in c2b.mid_heads[0].parameters())
    none = c2b.pseudo_box_loss([(x, logits, boxes)], boxes, [6], torch.zeros(1, 2), heads)  # no thing tagged
    assert torch.isfinite(none) and none > 0  # the absent classes' negative bag alone
    with pytest.raises(ValueError, match="cls2box mode"):
        Cls2Box(8, [0, 1], num_stages=1, mode="oicr")


def test_cams_and_classification_loss():
    from cqbnet.weak.cls2pixel import CAMClassifier, class_activation_maps, classification_loss

    torch.manual_seed(0)
    head = CAMClassifier(4, 3)
    logits, maps = head(torch.randn(2, 4, 6, 6))
    cams_of = maps.detach()
    assert logits.shape == (2, 3) and maps.shape == (2, 3, 6, 6)
    cams = class_activation_maps(cams_of)
    assert float(cams.min()) >= 0 and torch.allclose(
        cams.flatten(2).max(2).values[cams.flatten(2).max(2).values > 0], torch.tensor(1.0)
    )
    tags = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    loss = classification_loss(logits, tags)
    loss.backward()
    assert float(head.classifier.weight.grad.abs().sum()) > 0


def test_pseudo_stuff_labels_keep_confident_tagged_stuff_only():
    from cqbnet.weak.cls2pixel import IGNORE, pseudo_stuff_labels

    cams = torch.zeros(1, 4, 2, 3)  # classes: 0 thing, 1 stuff, 2 stuff, 3 stuff (untagged)
    cams[0, 1, 0, 0] = 0.9  # clear stuff 1
    cams[0, 2, 0, 1], cams[0, 1, 0, 1] = 0.8, 0.7  # stuff 2 wins by less than the margin -> ignore
    cams[0, 0, 0, 2] = 0.95  # a thing wins -> ignore
    cams[0, 3, 1, 0] = 0.99  # class 3 is not tagged -> cannot win
    cams[0, 2, 1, 1] = 0.3  # below the threshold -> ignore
    cams[0, 2, 1, 2] = 0.6  # clear stuff 2
    tags = torch.tensor([[1, 1, 1, 0]])
    got = pseudo_stuff_labels(cams, tags, torch.tensor([1, 2, 3]), threshold=0.5, margin=0.2)
    i = IGNORE
    assert got.tolist() == [[[1, i, i], [i, i, 2]]]


def test_pseudo_label_and_energy_losses():
    from cqbnet.weak.cls2pixel import IGNORE, energy_loss, pseudo_label_loss

    logits = torch.zeros(1, 3, 4, 4, requires_grad=True)
    pseudo = torch.full((1, 4, 4), IGNORE)
    assert pseudo_label_loss(logits, pseudo).item() == 0.0
    pseudo[0, 0, 0] = 2
    loss = pseudo_label_loss(logits, pseudo)
    assert loss.item() == pytest.approx(float(torch.log(torch.tensor(3.0))), abs=1e-6)
    img = np.zeros((6, 6, 3), dtype=np.uint8)
    img[:, 3:] = (250, 250, 250)
    lab = image_to_lab(img)[None]
    follows = torch.zeros(1, 2, 6, 6)
    follows[0, 0, :, :3] = 1
    follows[0, 1, :, 3:] = 1
    crosses = torch.zeros(1, 2, 6, 6)
    crosses[0, 0, :3] = 1
    crosses[0, 1, 3:] = 1
    assert energy_loss(follows, lab).item() < 1e-3
    assert energy_loss(crosses, lab).item() > 0.05
    soft = torch.full((1, 2, 6, 6), 0.5, requires_grad=True)
    energy_loss(soft, lab).backward()
    assert float(soft.grad.abs().sum()) > 0


def test_tag_consistency_loss_forbids_one_class_everywhere_and_untagged_classes():
    from cqbnet.weak.cls2pixel import energy_loss, tag_consistency_loss

    tags = torch.tensor([[1.0, 1.0, 0.0]])  # classes 0 and 1 present, 2 absent
    one_class = torch.zeros(1, 3, 4, 4)
    one_class[:, 0] = 1.0  # class 0 everywhere: what the energy term alone likes best
    halves = one_class.clone()
    halves[:, :, :, 2:] = torch.tensor([0.0, 1.0, 0.0])[:, None, None]  # class 1 on the right half
    lab = torch.zeros(1, 3, 4, 4)
    assert float(energy_loss(one_class, lab)) < float(energy_loss(halves, lab))
    assert float(tag_consistency_loss(halves, tags)) < 1e-5 < float(tag_consistency_loss(one_class, tags))
    stray = halves.clone()
    stray[0, :, 0, 0] = torch.tensor([0.0, 0.0, 1.0])  # one pixel of the untagged class
    assert float(tag_consistency_loss(stray, tags)) > 1.0


def test_pseudo_label_gate_opens_only_while_pseudo_labels_beat_the_head():
    from cqbnet.weak.cls2pixel import IGNORE, PseudoLabelGate

    truth = torch.tensor([[[0, 1], [1, 9]]])  # (1, 2, 2); 9 = unknown
    tags = torch.tensor([[1.0, 1.0, 0.0]])  # classes 0 and 1 present, 2 absent
    pseudo = torch.tensor([[[0, 1], [IGNORE, 0]]])  # right on both scored cells; the 9-cell is not scored

    def head(at_00: int, at_01: int) -> torch.Tensor:
        logits = torch.zeros(1, 3, 2, 2)
        logits[:, 2] = 5.0  # the untagged class is the head's argmax everywhere
        logits[0, at_00, 0, 0] = logits[0, at_01, 0, 1] = 1.0  # the best tagged class at the two scored cells
        return logits

    gate = PseudoLabelGate()
    assert gate.precision is None and not gate.is_open()  # nothing scored yet: shut
    assert PseudoLabelGate(enabled=False).is_open()  # the paper's behaviour: always on
    gate.update(pseudo, head(1, 0), tags, truth, ignore_index=9)  # told the tags, the head is still wrong twice
    assert gate.precision == (1.0, 0.0) and gate.is_open()
    told = PseudoLabelGate()
    told.update(pseudo, head(0, 1), tags, truth, ignore_index=9)  # right once told the tags: the pseudo labels
    assert told.precision == (1.0, 1.0) and not told.is_open()  # teach it nothing, though its argmax is wrong
    for _ in range(30):  # the running counts forget the early batch
        gate.update(torch.where(pseudo == 0, 1, pseudo), head(0, 1), tags, truth, ignore_index=9)
    pseudo_p, head_p = gate.precision
    assert head_p > 0.99 and pseudo_p < 0.6 and not gate.is_open()
    assert float(gate.labelled) == pytest.approx(2 * sum(0.9**k for k in range(31)))


def test_pseudo_label_gate_weight_is_the_share_of_the_heads_errors_put_right():
    from cqbnet.weak.cls2pixel import PseudoLabelGate

    def weight(pseudo_right: float, head_right: float, labelled: float = 100.0) -> float:
        gate = PseudoLabelGate()
        gate.pseudo_right.fill_(pseudo_right)
        gate.head_right.fill_(head_right)
        gate.labelled.fill_(labelled)
        return gate.weight()

    assert weight(100, 0) == 1.0 and weight(100, 60) == 1.0  # perfect pseudo labels teach in full
    assert weight(75, 50) == pytest.approx(0.5) and weight(55, 10) == pytest.approx(0.5)
    assert weight(50, 50) == 0.0 and weight(40, 50) == 0.0  # no better than the head: shut
    # both about as wrong (31% and 30%, as a collapsed run ended): the pseudo labels barely teach
    assert 0 < weight(31.4, 30.1) < 0.02
    assert PseudoLabelGate().weight() == 0.0 and PseudoLabelGate(enabled=False).weight() == 1.0


def test_relation_reasoning_shapes_and_information_flow():
    from cqbnet.weak.relation_reasoning import RelationReasoning, average_with_base, relation_loss

    torch.manual_seed(0)
    rr = RelationReasoning(
        roi_features=32,
        semantic_channels=16,
        num_box_classes=4,
        num_semantic_classes=6,
        stuff_classes=[3, 4, 5],
        width=128,
        num_layers=2,
    )
    assert len(rr.layers) == 2 and rr.thing_in.out_features == 128
    roi = torch.randn(7, 32, requires_grad=True)
    feats = torch.randn(16, 8, 9, requires_grad=True)
    probs = torch.softmax(torch.randn(6, 8, 9), 0)
    cls, reg, seg = rr(roi, feats, probs)
    assert cls.shape == (7, 4) and reg.shape == (7, 4) and seg.shape == (6, 8, 9)
    # boxes teach stuff and stuff teaches boxes: each branch's output depends on the other's input
    seg.sum().backward(retain_graph=True)
    assert roi.grad is not None and roi.grad.abs().sum() > 0
    feats.grad = None
    cls.sum().backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0
    assert torch.equal(average_with_base(torch.ones(2), torch.zeros(2)), torch.full((2,), 0.5))
    assert relation_loss(torch.tensor(1.0), torch.tensor(2.0), torch.tensor(4.0)) == 5.0


def test_stuff_nodes_pool_features_under_class_probabilities():
    from cqbnet.weak.relation_reasoning import RelationReasoning

    rr = RelationReasoning(8, 2, 3, 3, stuff_classes=[1, 2])
    feats = torch.zeros(2, 2, 2)
    feats[0, :, 0] = 1.0  # left column: feature (1, 0)
    feats[1, :, 1] = 1.0  # right column: feature (0, 1)
    probs = torch.zeros(3, 2, 2)
    probs[1, :, 0] = 1.0  # stuff class 1 on the left
    probs[2, :, 1] = 1.0  # stuff class 2 on the right
    nodes = rr.stuff_nodes(feats, probs)
    assert torch.allclose(nodes, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))


def test_box_in_roi_draws_the_box_on_each_rois_grid():
    box = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    assert torch.equal(box_in_roi(box, box, 8), torch.ones(1, 8, 8))  # the RoI is the box: no outside
    wide = torch.tensor([[0.0, 20.0, 40.0, 40.0]])  # twice as wide: cell centres at x = 2.5, 7.5, ..., 37.5
    grid = box_in_roi(wide, box, 8)[0]
    expected = torch.zeros(8, 8)
    expected[:, 2:6] = 1  # centres 12.5 .. 27.5 lie in the box's [10, 30)
    assert torch.equal(grid, expected)
    # a mask that is exactly the box, seen from a larger RoI, has zero projection loss; one filling the RoI not
    assert projection_loss(logits_of(grid[None]), grid[None]).item() == pytest.approx(0.0, abs=1e-5)
    assert projection_loss(logits_of(torch.ones(1, 8, 8)), grid[None]).item() > 0.1


def test_sample_box_rois_keeps_the_boxes_and_only_overlapping_proposals():
    boxes = torch.tensor([[10.0, 10.0, 30.0, 30.0], [50.0, 50.0, 70.0, 70.0]])
    near = torch.tensor([[12.0, 10.0, 32.0, 30.0], [50.0, 48.0, 70.0, 72.0]])  # IoU >= 0.5 with box 0, box 1
    far = torch.tensor([[80.0, 80.0, 100.0, 100.0], [10.0, 10.0, 60.0, 60.0]])  # IoU 0 and 0.16
    proposals = torch.cat([far[:1], near[:1], far[1:], near[1:]])
    rois, which = sample_box_rois(proposals, boxes, per_image=10)
    assert torch.equal(rois[:2], boxes) and which.tolist() == [0, 1, 0, 1]
    assert torch.equal(rois[2:], near)
    rois, which = sample_box_rois(proposals, boxes, per_image=3, generator=torch.Generator().manual_seed(0))
    assert len(rois) == 3 and torch.equal(rois[:2], boxes)  # capped; the boxes always stay
    assert len(sample_box_rois(proposals[:0], boxes, 10)[0]) == 2


def test_semantic_loss_weighs_images_not_pixels():
    """A clicked-point image (3 labelled pixels) weighs as much as a fully labelled one in the semantic loss:
    the loss is the mean of per-image means (review A6.7), not a mean over the batch's pixels."""
    import torch.nn.functional as F

    from cqbnet.modeling.semantic_head import SemanticHead

    torch.manual_seed(0)
    head = SemanticHead(8, 4, channels=8)
    logits = torch.randn(2, 4, 8, 8)
    target = torch.randint(0, 4, (2, 32, 32))
    target[1] = 255
    target[1, 5, 7], target[1, 20, 3], target[1, 30, 30] = 1, 2, 3
    up = F.interpolate(logits, size=(32, 32), mode="bilinear", align_corners=False)
    per_image = [F.cross_entropy(up[i : i + 1], target[i : i + 1], ignore_index=255) for i in range(2)]
    torch.testing.assert_close(head.loss(logits, target), (per_image[0] + per_image[1]) / 2)
    target[1] = 255  # an image without labels does not count
    torch.testing.assert_close(head.loss(logits, target), per_image[0])


def test_a_class_known_not_to_be_costs_minus_log_of_its_complement():
    """The box background of paper 001's approximate labels: a pixel known not to be class c costs
    -log(1 - p_c), counted among the image's labelled pixels; nothing changes without such pixels."""
    import torch.nn.functional as F

    from cqbnet.modeling.semantic_head import SemanticHead, complement_nll

    torch.manual_seed(0)
    head = SemanticHead(8, 4, channels=8)
    logits = torch.randn(2, 4, 8, 8, requires_grad=True)
    target = torch.randint(0, 4, (2, 32, 32))
    target[:, :16] = 255
    nothing = torch.full_like(target, 255)
    torch.testing.assert_close(head.loss(logits, target, nothing), head.loss(logits, target))
    not_class = nothing.clone()
    not_class[0, 3, 4], not_class[1, 10, 10] = 2, 0
    up = F.interpolate(logits, size=(32, 32), mode="bilinear", align_corners=False)
    p = up.softmax(1)
    nll = complement_nll(up, not_class, 255)
    torch.testing.assert_close(nll[0, 3, 4], -torch.log(1 - p[0, 2, 3, 4]))
    torch.testing.assert_close(nll[1, 10, 10], -torch.log(1 - p[1, 0, 10, 10]))
    assert (nll[not_class == 255] == 0).all()
    ce = F.cross_entropy(up, target, ignore_index=255, reduction="none")
    want = [(ce[i].sum() + nll[i].sum()) / ((target[i] != 255).sum() + 1) for i in range(2)]
    torch.testing.assert_close(head.loss(logits, target, not_class), (want[0] + want[1]) / 2)
    # the loss pushes the excluded class down at that pixel; a logit of -inf elsewhere stays finite
    g = torch.autograd.grad(complement_nll(logits, torch.full((2, 8, 8), 1), 255).sum(), logits)[0]
    assert (g[:, 1] > 0).all() and torch.isfinite(
        complement_nll(torch.tensor([[[[50.0]], [[-50.0]]]]), torch.tensor([[[0]]]), 255)
    ).all()
