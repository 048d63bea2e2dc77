"""torchvision's region proposal network, with proposals for images that have no boxes to train it with."""

from __future__ import annotations

from torch import Tensor
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import (
    AnchorGenerator,
    RegionProposalNetwork,
    RPNHead,
    concat_box_prediction_layers,
)


class ProposalNetwork(RegionProposalNetwork):
    """``forward`` is torchvision's (proposals, and losses when given targets); :meth:`proposals` gives the
    proposals of images without boxes (tag-only or stuff-only images) with no loss and no gradient."""

    def proposals(self, images: ImageList, features: dict[str, Tensor]) -> list[Tensor]:
        """Per image (R, 4) proposals, best first, as ``forward`` makes them in training mode, without targets."""
        feats = list(features.values())
        objectness, deltas = self.head(feats)
        anchors = self.anchor_generator(images, feats)
        per_level = [o[0].shape[0] * o[0].shape[1] * o[0].shape[2] for o in objectness]
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        proposals = self.box_coder.decode(deltas.detach(), anchors).view(len(anchors), -1, 4)
        boxes, _ = self.filter_proposals(proposals, objectness, images.image_sizes, per_level)
        return boxes


def build_rpn(
    channels: int,
    anchor_sizes: tuple[int, ...],
    aspect_ratios: tuple[float, ...],
    pre_nms_train: int,
    post_nms_train: int,
    pre_nms_test: int,
    post_nms_test: int,
    batch_size: int,
) -> ProposalNetwork:
    """The FPN's RPN: one anchor size per level, torchvision's matching (0.7 / 0.3) and NMS (0.7)."""
    anchors = AnchorGenerator(tuple((s,) for s in anchor_sizes), (tuple(aspect_ratios),) * len(anchor_sizes))
    return ProposalNetwork(
        anchors,
        RPNHead(channels, anchors.num_anchors_per_location()[0]),
        fg_iou_thresh=0.7,
        bg_iou_thresh=0.3,
        batch_size_per_image=batch_size,
        positive_fraction=0.5,
        pre_nms_top_n={"training": pre_nms_train, "testing": pre_nms_test},
        post_nms_top_n={"training": post_nms_train, "testing": post_nms_test},
        nms_thresh=0.7,
    )
