"""Panoptic FPN's semantic branch (Kirillov et al. 2019) with GroupNorm, as paper 004 (Appendix A.1) uses it.

:class:`FPNDecoder` merges FPN levels at strides 4..32 into one map at stride 4:
each level passes through (conv3x3 -> GroupNorm -> ReLU -> 2x upsample) until it
reaches stride 4, and the levels are summed. The same decoder extracts the
affinity features Q of paper 004's dense instance affinity head (Sec. 3.4.2).
:class:`SemanticHead` adds a 1x1 classifier over all thing and stuff classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SEMANTIC_STRIDE = 4  # the decoder's output: FPN level "0"


def conv_gn_relu(cin: int, cout: int) -> nn.Sequential:
    groups = 32 if cout % 32 == 0 else 8 if cout % 8 == 0 else 1
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.GroupNorm(groups, cout), nn.ReLU(inplace=True)
    )


class FPNDecoder(nn.Module):
    """FPN levels (strides 4, 8, 16, 32) -> one (N, channels, H/4, W/4) map."""

    def __init__(self, in_channels: int, channels: int = 128, num_levels: int = 4):
        super().__init__()
        self.scale_heads = nn.ModuleList()
        for level in range(num_levels):
            layers: list[nn.Module] = []
            for k in range(max(1, level)):
                layers.append(conv_gn_relu(in_channels if k == 0 else channels, channels))
                if level > 0:
                    layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            self.scale_heads.append(nn.Sequential(*layers))

    def forward(self, features: list[Tensor]) -> Tensor:
        out = self.scale_heads[0](features[0])
        for head, f in zip(self.scale_heads[1:], features[1:]):
            y = head(f)
            if y.shape[-2:] != out.shape[-2:]:  # odd input sizes
                y = F.interpolate(y, size=out.shape[-2:], mode="bilinear", align_corners=False)
            out = out + y
        return out


def complement_nll(logits: Tensor, not_class: Tensor, ignore_index: int) -> Tensor:
    """(N, H, W) -log(1 - softmax(logits)[not_class]), computed stably as logsumexp over all classes minus
    logsumexp over the others; 0 where ``not_class`` is ``ignore_index``. logits (N, K, H, W)."""
    known = not_class != ignore_index
    index = torch.where(known, not_class, torch.zeros_like(not_class))[:, None]  # (N, 1, H, W)
    others = logits.scatter(1, index, float("-inf"))
    out = torch.logsumexp(logits, 1) - torch.logsumexp(others, 1)
    return torch.where(known, out, torch.zeros_like(out))


class SemanticHead(nn.Module):
    """Per-pixel logits over every class (things and stuff) at stride 4."""

    def __init__(self, in_channels: int, num_classes: int, channels: int = 128, ignore_index: int = 255):
        super().__init__()
        self.decoder = FPNDecoder(in_channels, channels)
        self.predictor = nn.Conv2d(channels, num_classes, 1)
        self.ignore_index = ignore_index

    def forward(self, features: list[Tensor]) -> Tensor:
        """(N, classes, H/4, W/4) logits."""
        return self.predictor(self.decoder(features))

    def features(self, features: list[Tensor]) -> tuple[Tensor, Tensor]:
        """The decoder's (N, C, H/4, W/4) features, which paper 000's modules also read, and their logits."""
        sem = self.decoder(features)
        return sem, self.predictor(sem)

    def loss(self, logits: Tensor, semantic: Tensor, not_class: Tensor | None = None) -> Tensor:
        """Cross-entropy at input resolution (logits upsampled, as Panoptic FPN does); void ignored.

        ``not_class`` (N, H, W), optional: a class each pixel is known *not* to be (``ignore_index`` where none is
        known; the box background of paper 001's approximate labels), which costs -log(1 - p_class) there.
        A mean over each image's labelled pixels, then over the images that have any: an image weighs the
        same whether it carries a full map or a few clicked points (the loss normalisation then weighs images).
        """
        up = F.interpolate(logits, size=semantic.shape[-2:], mode="bilinear", align_corners=False)
        ce = F.cross_entropy(up, semantic, ignore_index=self.ignore_index, reduction="none")  # (N, H, W), 0 on void
        labelled = (semantic != self.ignore_index).flatten(1).sum(1)  # (N,)
        if not_class is not None:
            ce = ce + complement_nll(up, not_class, self.ignore_index)
            labelled = labelled + (not_class != self.ignore_index).flatten(1).sum(1)
        if not bool(labelled.any()):
            return up.sum() * 0.0
        has = labelled > 0
        return (ce.flatten(1).sum(1)[has] / labelled[has]).mean()

    @staticmethod
    def probabilities(logits: Tensor, size: tuple[int, int]) -> Tensor:
        return torch.softmax(F.interpolate(logits, size=size, mode="bilinear", align_corners=False), dim=1)
