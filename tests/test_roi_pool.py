"""The sparse multi-scale RoIAlign gives torchvision's numbers, forward and backward."""

from __future__ import annotations

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign

from cqbnet.modeling.roi_pool import SparseMultiScaleRoIAlign


def _case(seed: int, sizes: list[tuple[int, int]]):
    g = torch.Generator().manual_seed(seed)
    h, w = max(s[0] for s in sizes), max(s[1] for s in sizes)
    hp, wp = -(-h // 32) * 32, -(-w // 32) * 32  # padded batch, as the network pads it
    feats = {
        str(k): torch.randn(len(sizes), 5, hp // 2 ** (k + 2), wp // 2 ** (k + 2), generator=g, requires_grad=True)
        for k in range(4)
    }
    boxes = []
    for ih, iw in sizes:
        xy = torch.rand(30, 2, generator=g) * torch.tensor([iw, ih])
        wh = torch.rand(30, 2, generator=g) * torch.tensor([iw, ih]) * 0.7 + 0.2
        b = torch.cat([xy, xy + wh], 1)
        b[:, 0::2] = b[:, 0::2].clamp(0, iw)
        b[:, 1::2] = b[:, 1::2].clamp(0, ih)
        b[0] = torch.tensor([0.0, 0.0, iw, ih])  # the whole image: touches every border
        b[1] = torch.tensor([3.0, 4.0, 3.2, 4.1])  # tinier than a feature pixel
        boxes.append(b)
    return feats, boxes


@pytest.mark.parametrize("sizes", [[(128, 128), (128, 128)], [(480, 640), (427, 301)], [(96, 200)]])
@pytest.mark.parametrize("output_size", [7, 14])
def test_matches_torchvision(sizes, output_size):
    feats, boxes = _case(0, sizes)
    ref = MultiScaleRoIAlign(["0", "1", "2", "3"], output_size, 2, canonical_scale=112)
    ours = SparseMultiScaleRoIAlign(["0", "1", "2", "3"], output_size, 2, canonical_scale=112)
    a = ref(feats, boxes, sizes)
    b = ours(feats, boxes, sizes)
    assert a.shape == b.shape
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)  # float32 sums in another order
    weight = torch.randn(a.shape, generator=torch.Generator().manual_seed(1))
    ga = torch.autograd.grad((a * weight).sum(), list(feats.values()))
    gb = torch.autograd.grad((b * weight).sum(), list(feats.values()))
    for x, y in zip(ga, gb):
        assert torch.allclose(x, y, atol=1e-4, rtol=1e-4)


def test_no_boxes():
    feats, _ = _case(0, [(64, 64)])
    out = SparseMultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)(feats, [torch.zeros(0, 4)], [(64, 64)])
    assert out.shape == (0, 5, 7, 7)
