"""Paper 004's panoptic head on hand-made cases: potential, affinity, matching, targets, argmax, heuristic merge."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cqbnet.modeling.panoptic_head import (
    IGNORE,
    DenseInstanceAffinity,
    box_region,
    dynamic_potential,
    heuristic_merge,
    match_segments,
    panoptic_from_logits,
    panoptic_targets,
    paste_masks,
)


def test_box_region_uses_cell_centres():
    r = box_region(torch.tensor([[2.0, 0.0, 6.0, 4.0]]), 4, 4, stride=2.0)  # cells centred at 1, 3, 5, 7
    want = torch.zeros(4, 4, dtype=torch.bool)
    want[0:2, 1:3] = True
    assert torch.equal(r[0], want)


def test_dynamic_potential_eqs_1_and_2():
    torch.manual_seed(0)
    sem = torch.softmax(torch.randn(3, 4, 4), 0)  # classes 0, 1 things; 2 stuff
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 4.0, 4.0]])
    classes = torch.tensor([0, 1])
    scores = torch.tensor([0.9, 0.5])
    stuff = torch.tensor([2])
    psi = dynamic_potential(sem, boxes, classes, scores, stuff, 1.0)  # Eq. 1
    assert psi.shape == (3, 4, 4)
    inside0 = box_region(boxes[:1], 4, 4, 1.0)[0]
    assert torch.allclose(psi[0], 0.9 * sem[0] * inside0)
    assert torch.all(psi[1][~box_region(boxes[1:], 4, 4, 1.0)[0]] == 0)
    assert torch.equal(psi[2], sem[2])  # stuff: whole-image box, score 1
    masks = torch.rand(2, 4, 4)
    b = dynamic_potential(sem, boxes, classes, scores, stuff, 1.0, masks, "B")  # Eq. 2, product
    c = dynamic_potential(sem, boxes, classes, scores, stuff, 1.0, masks, "C")  # Eq. 2, sum
    assert torch.allclose(b[0], 0.9 * sem[0] * masks[0] * inside0)
    assert torch.allclose(c[0], 0.9 * (sem[0] + masks[0]) * inside0)


@pytest.mark.parametrize("norm", ["mass", "pixels"])
@pytest.mark.parametrize("coarse_q", [False, True])
def test_affinity_equals_explicit_pairwise_matrix(norm, coarse_q):
    """Eq. 3: phi0(Q) (phi1(Q)^T Psi) equals forming the HW x HW affinity and multiplying; a Q coarser than
    Psi's grid (stride 4 against 2) gives the same P as upsampling Q first."""
    import torch.nn.functional as F

    torch.manual_seed(1)
    head = DenseInstanceAffinity(in_channels=8, channels=16, norm=norm)
    q = torch.randn(16, 3, 3) if coarse_q else torch.randn(16, 5, 6)
    psi = torch.rand(4, 5, 6)
    p = head(q, psi)
    full_q = F.interpolate(q[None], size=(5, 6), mode="bilinear", align_corners=False)[0] if coarse_q else q
    a = head.phi0(full_q[None])[0].flatten(1)  # (C, HW)
    b = head.phi1(full_q[None])[0].flatten(1)
    affinity = a.T @ b  # (HW, HW): never built by the head
    scale = psi.flatten(1).sum(1)[:, None] if norm == "mass" else 30  # per channel mass, or H W = 5 x 6
    want = psi.flatten(1) + (affinity @ psi.flatten(1).T).T / scale
    assert torch.allclose(p.flatten(1), want, atol=1e-5)
    assert p.shape == psi.shape


def test_affinity_is_differentiable_and_residual():
    head = DenseInstanceAffinity(in_channels=8, channels=8)
    q = torch.randn(8, 4, 4, requires_grad=True)
    psi = torch.rand(3, 4, 4, requires_grad=True)
    head(q, psi).sum().backward()
    assert float(q.grad.abs().sum()) > 0 and float(psi.grad.abs().sum()) > 0
    coarse = torch.randn(8, 2, 2, requires_grad=True)  # Q at half Psi's resolution
    head(coarse, psi).sum().backward()
    assert float(coarse.grad.abs().sum()) > 0
    for m in (head.phi0[0], head.phi1[0]):
        torch.nn.init.zeros_(m.weight)
        torch.nn.init.zeros_(m.bias)
    assert torch.equal(head(q, psi), psi)


def test_match_segments_eq5():
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0], [50.0, 50.0, 60.0, 60.0]])
    gt_cls = torch.tensor([1, 1, 2])
    det = torch.tensor(
        [
            [0.0, 0.0, 10.0, 11.0],  # gt 0, IoU 0.91
            [0.0, 0.0, 10.0, 12.0],  # gt 0 again, IoU 0.83: duplicate -> dropped
            [20.0, 20.0, 30.0, 30.0],  # gt 1 but wrong class -> no match, not a duplicate
            [50.0, 50.0, 60.0, 58.0],  # gt 2, IoU 0.8
            [100.0, 100.0, 110.0, 110.0],  # false positive: kept
        ]
    )
    det_cls = torch.tensor([1, 1, 3, 2, 1])
    match, keep = match_segments(gt, gt_cls, det, det_cls, 0.5)
    assert match.tolist() == [0, -1, 3]
    assert keep.tolist() == [True, False, True, True, True]
    # the assignment maximises total IoU, not greedy per segment
    gt2 = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 14.0]])
    det2 = torch.tensor([[0.0, 0.0, 10.0, 12.0], [0.0, 0.0, 10.0, 9.0]])
    m2, _ = match_segments(gt2, torch.tensor([1, 1]), det2, torch.tensor([1, 1]), 0.5)
    assert m2.tolist() == [1, 0]
    m3, k3 = match_segments(gt2, torch.tensor([1, 1]), det2[:0], torch.tensor([], dtype=torch.int64), 0.5)
    assert m3.tolist() == [-1, -1] and len(k3) == 0


def test_panoptic_targets_channels_and_ignore():
    ids = torch.tensor([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 0], [3, 3, 4, 5]])
    segs = [
        {"id": 1, "class": 0, "is_thing": True, "iscrowd": False},  # matched to det 1
        {"id": 2, "class": 0, "is_thing": True, "iscrowd": False},  # unmatched -> ignore
        {"id": 3, "class": 5, "is_thing": False, "iscrowd": False},  # stuff class 5
        {"id": 4, "class": 6, "is_thing": False, "iscrowd": False},  # stuff class 6
        {"id": 5, "class": 0, "is_thing": True, "iscrowd": True},  # crowd -> ignore
    ]
    match = torch.tensor([1, -1])  # thing segments 1 and 2 (crowd excluded)
    keep = torch.tensor([False, True, True])  # det 0 dropped: det 1 -> channel 0, det 2 -> channel 1
    t = panoptic_targets(ids, segs, match, keep, stuff_classes=[5, 6], stride=1)
    i = IGNORE
    assert t.tolist() == [[0, 0, i, i], [0, 0, i, i], [2, 2, 3, i], [2, 2, 3, i]]
    t2 = panoptic_targets(ids, segs, match, keep, stuff_classes=[5, 6], stride=2)  # cell centres (1, 1), (1, 3)...
    assert t2.tolist() == [[0, i], [2, i]]


def test_argmax_inference_drops_tiny_segments():
    logits = torch.zeros(3, 4, 4)
    logits[0, :2, :2] = 5  # detection 0: 4 px
    logits[1, 3, 3] = 5  # detection 1: 1 px -> void
    logits[2] = 1  # stuff everywhere else
    out = panoptic_from_logits(
        logits, det_labels=[3, 4], det_scores=[0.9, 0.8], stuff_categories=[7], min_thing_area=2, min_stuff_area=2
    )
    cats = {s["id"]: s["category_id"] for s in out.segments}
    assert sorted(cats.values()) == [3, 7]
    assert (out.ids == 0).sum() == 1
    for s in out.segments:
        assert s["area"] == int((out.ids == s["id"]).sum())


@pytest.mark.parametrize("size", [(80, 120), (77, 118)])
def test_the_merge_reads_the_semantic_argmax_of_the_softmax_of_the_upsampled_logits(size):
    """The heuristic merge's semantic map (Panoptic FPN: argmax of the softmax of the logits upsampled to the padded
    image, cropped) is what :func:`upsample_argmax` gives from the stride-4 logits, crop sizes not a multiple of 4
    included."""
    from cqbnet.modeling.fast_argmax import upsample_argmax
    from cqbnet.modeling.semantic_head import SemanticHead

    torch.manual_seed(0)
    logits = torch.randn(12, 20, 30) * 3  # 12 classes on a 20 x 30 grid at stride 4
    full = (80, 120)
    reference = SemanticHead.probabilities(logits[None], full)[0, :, : size[0], : size[1]].argmax(0)
    assert torch.equal(upsample_argmax(logits, 4, size), reference)


def test_heuristic_merge_rules():
    m = np.zeros((3, 6, 6), dtype=bool)
    m[0, :3, :3] = True  # score 0.9
    m[1, :3, :2] = True  # score 0.8, fully inside 0 -> skipped (overlap > 0.5)
    m[2, 2:5, 2:5] = True  # score 0.7, overlaps 1 px -> takes the rest
    sem = np.full((6, 6), 4)
    sem[5] = 5  # stuff class 5: 6 px, under the area limit of 8
    out = heuristic_merge(m, [1, 1, 2], [0.9, 0.8, 0.7], sem, {4: 40, 5: 50}, 0.5, 0.5, stuff_area_limit=8)
    cats = [s["category_id"] for s in out.segments]
    assert cats == [1, 2, 40]
    assert out.segments[1]["area"] == 8
    assert (out.ids[5] == 0).all()  # stuff below the limit stays void
    low = heuristic_merge(m, [1, 1, 2], [0.4, 0.3, 0.2], sem, {4: 40}, 0.5, 0.5, 8)
    assert [s["category_id"] for s in low.segments] == [40]


def test_paste_masks_fills_the_box():
    probs = torch.ones(1, 1, 28, 28)
    pasted = paste_masks(probs, torch.tensor([[2.0, 2.0, 6.0, 8.0]]), 10, 10, 1.0)
    assert pasted.shape == (1, 10, 10)
    assert torch.all(pasted[0, 2:8, 2:6] > 0.45)  # border cells are half-interpolated with zero padding
    assert torch.all(pasted[0, :, 7:] == 0) and torch.all(pasted[0, 9:] == 0)


@pytest.mark.parametrize("variant", ["B", "C"])
def test_potential_gradients_reach_scores_and_masks(variant):
    sem = torch.softmax(torch.randn(3, 4, 4), 0).requires_grad_()
    scores = torch.tensor([0.7], requires_grad=True)
    masks = torch.rand(1, 4, 4, requires_grad=True)
    psi = dynamic_potential(
        sem, torch.tensor([[0.0, 0.0, 4.0, 4.0]]), torch.tensor([0]), scores, torch.tensor([2]), 1.0, masks, variant
    )
    psi.sum().backward()
    assert all(float(t.grad.abs().sum()) > 0 for t in (scores, masks, sem))


def _full_upsample_argmax(logits, stride, size):
    import torch.nn.functional as F

    full = F.interpolate(logits[None], scale_factor=stride, mode="bilinear", align_corners=False)[0]
    return full[:, : size[0], : size[1]].argmax(0)


def test_upsample_argmax_equals_full_upsampling():
    """Dropping channels that cannot win, tile by tile, changes nothing (random and peaky logits, odd crops)."""
    from cqbnet.modeling.fast_argmax import (
        _crop_candidates,
        _tiled_upsample_argmax,
        candidate_channels,
        tile_candidates,
        upsample_argmax,
    )

    torch.manual_seed(3)
    for k, h, w, stride in [(40, 9, 13, 4), (7, 5, 5, 2), (120, 16, 20, 4), (3, 1, 6, 4), (25, 23, 7, 2)]:
        logits = torch.randn(k, h, w) * 0.3
        logits[: k // 2] -= 2.0  # many hopeless channels
        logits[0, : h // 2 + 1, 1:4] += 5.0
        for size in [(h * stride - 3, w * stride - 1), (h * stride // 2 + 1, w * stride // 2 + 3)]:
            want = _full_upsample_argmax(logits, stride, size)
            assert torch.equal(upsample_argmax(logits, stride, size), want)
            assert torch.equal(upsample_argmax(logits, stride, size, tile=None), want)
            ok = _crop_candidates(logits, stride, size)
            assert torch.equal(_crop_candidates(logits, stride, size, block=2), ok)
            keep = torch.nonzero(ok.flatten(1).any(1)).flatten()
            for tile in (1, 2, 3, 8, 64):
                per_tile = tile_candidates(ok, keep, tile)
                got = _tiled_upsample_argmax(logits, keep, per_tile, stride, size, tile)
                assert torch.equal(got, want), (k, h, stride, tile)
        if k > 10:
            assert candidate_channels(logits).sum() < k


def test_upsample_argmax_keeps_a_channel_that_is_never_the_best_cell():
    """Channel 2 is second in every cell yet wins between the two cells, where the other two blend to about 0.6."""
    from cqbnet.modeling.fast_argmax import candidate_channels, upsample_argmax

    logits = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]], [[0.7, 0.7]]])  # (3, 1, 2)
    want = _full_upsample_argmax(logits, 4, (4, 8))
    assert (want == 2).any()
    assert candidate_channels(logits).all()
    assert torch.equal(upsample_argmax(logits, 4, (4, 8)), want)


def test_upsample_argmax_with_nan_logits_still_returns_a_map():
    from cqbnet.modeling.fast_argmax import upsample_argmax

    logits = torch.zeros(3, 4, 4)
    logits[1] = float("nan")
    assert upsample_argmax(logits, 2, (8, 8)).shape == (8, 8)


def test_upsample_argmax_rejects_a_crop_beyond_the_grid():
    from cqbnet.modeling.fast_argmax import upsample_argmax

    with pytest.raises(ValueError, match="larger than"):
        upsample_argmax(torch.zeros(2, 3, 3), 2, (7, 6))


def test_max_filter3_equals_max_pooling():
    import torch.nn.functional as F

    from cqbnet.modeling.fast_argmax import max_filter3

    torch.manual_seed(0)
    for shape in [(1, 1), (3, 1, 5), (4, 7, 9), (2, 3, 6, 5)]:
        x = torch.randn(shape)
        flat = x.reshape(-1, 1, *x.shape[-2:])
        assert torch.equal(max_filter3(x), F.max_pool2d(flat, 3, 1, 1).reshape(x.shape))


def test_mass_score_norm_attenuates_by_the_score():
    """With the per-channel mass norm a channel's boost does not depend on its score; mass_score scales it by it."""
    torch.manual_seed(0)
    q = torch.rand(8, 6, 6)
    base = torch.rand(3, 6, 6)
    boosts = {}
    for norm in ("mass", "mass_score"):
        aff = DenseInstanceAffinity(4, 8, norm)
        for s in (1.0, 0.5):
            scores = torch.tensor([s, 1.0, 1.0])
            psi = base * scores[:, None, None]
            boosts[norm, s] = (aff(q, psi, scores) - psi)[0]
    assert torch.allclose(boosts["mass", 1.0], boosts["mass", 0.5], atol=1e-6)
    assert torch.allclose(boosts["mass_score", 0.5], 0.5 * boosts["mass_score", 1.0], atol=1e-6)
    with pytest.raises(ValueError, match="score"):
        DenseInstanceAffinity(4, 8, "mass_score")(q, base)


def test_thing_and_stuff_area_limits_are_separate():
    """COCO's 4096-pixel limit is for stuff (detectron2's STUFF_AREA_LIMIT): a 30 x 30 object stays an object."""
    channel = np.full((100, 100), 1)  # stuff everywhere...
    channel[10:40, 10:40] = 0  # ...but a 900-pixel thing
    channel[90:, 90:] = 2  # and a 100-pixel scrap of a second stuff class
    out = panoptic_from_logits(torch.from_numpy(channel), [5], [0.9], [7, 8], min_thing_area=16, min_stuff_area=4096)
    assert [(s["category_id"], s["area"]) for s in out.segments] == [(5, 900), (7, 100 * 100 - 900 - 100)]
    assert not out.ids[90:, 90:].any()  # the stuff scrap is void


def test_a_background_channel_is_void_and_learns_the_void_cells():
    """A label space without stuff: P's one whole-image channel is the background, shown as void."""
    channel = np.zeros((8, 8), dtype=np.int64)
    channel[2:5, 2:5] = 1  # detection 1 wins here; channel 2 (background) nowhere
    channel[6:, 6:] = 2
    out = panoptic_from_logits(torch.from_numpy(channel), [3, 4], [0.9, 0.8], [None], 1, 1)
    assert [s["category_id"] for s in out.segments] == [3, 4]
    assert not out.ids[6:, 6:].any()
    ids = torch.zeros(8, 8, dtype=torch.int64)
    ids[0:4, 0:4] = 7  # a thing; the rest is unlabelled background
    ids[:, 7] = -1  # off the image (padding)
    segs = [{"id": 7, "class": 0, "is_thing": True, "iscrowd": False}]
    target = panoptic_targets(ids, segs, torch.tensor([0]), torch.tensor([True]), [], 1, background=True)
    assert (target[0:4, 0:4] == 0).all() and (target[4:, :7] == 1).all() and (target[:, 7] == IGNORE).all()


@pytest.mark.parametrize("norm", ["mass", "mass_score", "pixels"])
def test_affinity_context_under_autocast_stays_finite(norm):
    """Eq. 4 under mixed precision at COCO scale (200 x 336 cells): the context is scaled before the pixel sum,
    so float16 (largest value 65504) cannot overflow; bfloat16 agrees with float32 to its precision."""
    torch.manual_seed(0)
    head = DenseInstanceAffinity(in_channels=8, channels=16, norm=norm)
    with torch.no_grad():
        for phi in (head.phi0, head.phi1):
            phi[0].weight.fill_(0.5)
            phi[0].bias.fill_(1.0)
    q = torch.rand(16, 200, 336) * 2
    psi = torch.rand(3, 200, 336) * 2
    scores = torch.tensor([0.9, 0.5, 1.0])
    with torch.no_grad():
        ref = head(q, psi, scores)
        for dtype in (torch.bfloat16, torch.float16):
            with torch.autocast("cpu", dtype=dtype):
                p = head(q, psi, scores)
            assert torch.isfinite(p).all(), dtype
            torch.testing.assert_close(p.float(), ref, rtol=2e-2, atol=2e-2 * float(ref.abs().max()))


def test_affinity_in_box_keeps_each_detection_s_boost_inside_its_box():
    """Our option ``affinity_in_box``: outside its box a thing channel of P is its potential Psi (0 there), inside it
    is Psi plus the affinity boost as before; the stuff channels are unchanged."""
    from cqbnet.data.label_space import LabelSpace
    from cqbnet.data.panoptic_format import Category
    from cqbnet.modeling.panoptic_head import PanopticHead

    torch.manual_seed(0)
    labels = LabelSpace({1: Category(1, "a", True), 2: Category(2, "b", True), 3: Category(3, "sky", False)})
    affinity = DenseInstanceAffinity(8, 8)
    plain = PanopticHead(labels, affinity, stride=4, use_masks=False)
    boxed = PanopticHead(labels, affinity, stride=4, use_masks=False, affinity_in_box=True)
    sem = torch.randn(3, 8, 8)  # (K, H/4, W/4) for a 32 x 32 image
    q = torch.rand(8, 8, 8)
    det = {"boxes": torch.tensor([[0.0, 0, 12, 12], [16, 8, 32, 24]]), "labels": torch.tensor([1, 2]),
           "scores": torch.tensor([0.9, 0.6])}  # fmt: skip
    a = plain.logits(sem, q, det, (32, 32), (32, 32))
    b = boxed.logits(sem, q, det, (32, 32), (32, 32))
    inside = box_region(det["boxes"], 8, 8, 4)
    assert torch.equal(b[2:], a[2:])
    assert torch.allclose(b[:2][inside], a[:2][inside]) and (b[:2][~inside] == 0).all()
    assert (a[:2][~inside] > 0).any()  # the plain head boosts thing channels outside their boxes
