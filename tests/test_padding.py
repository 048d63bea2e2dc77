"""An image's prediction and losses do not depend on the other images of its batch (review 2026-12-01, A6.1).

``PanopticNet.batch`` pads every image to the batch's largest. The network's convolutions and GroupNorms see
the padding as any detector's features do (detectron2's and torchvision's too); what must not see it are the
sums, means and maxima over an image that come after them: paper 004's affinity context, the CAM's pooling
and peak, the stuff nodes of relation reasoning. Each test takes an
image's features from a batch with a larger image, cuts them to the image's own padded size, and asks for
the same result from both.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.models.detection.image_list import ImageList

from cqbnet.data.dataset import PanopticDataset, read_rgb
from cqbnet.data.panoptic_format import load_categories
from cqbnet.data.transforms import resize, to_tensors
from cqbnet.modeling.fast_argmax import upsample_argmax
from cqbnet.modeling.panoptic_head import panoptic_from_logits
from cqbnet.modeling.semantic_head import SEMANTIC_STRIDE
from cqbnet.network.build import build_panoptic_net
from cqbnet.network.panoptic_net import Detections
from cqbnet.weak.cls2pixel import CAMClassifier, class_activation_maps
from cqbnet.weak.relation_reasoning import RelationReasoning
from helpers import TINY


def alone(found: Detections, i: int, divisible: int = 32) -> Detections:
    """Image ``i`` of a batch's detections as if it had been batched alone: every map cut to its padded size."""
    h, w = found.image_list.image_sizes[i]
    ph, pw = -(-h // divisible) * divisible, -(-w // divisible) * divisible
    tensors = found.image_list.tensors[i : i + 1, :, :ph, :pw]
    fpn = [f[i : i + 1, :, : ph // (4 * 2**k), : pw // (4 * 2**k)] for k, f in enumerate(found.fpn)]
    sem = found.sem_logits[i : i + 1, :, : ph // SEMANTIC_STRIDE, : pw // SEMANTIC_STRIDE]
    return Detections(ImageList(tensors, [(h, w)]), fpn, sem, [found.dets[i]])


def panoptic_logits(model, found: Detections, q: torch.Tensor, i: int) -> torch.Tensor:
    """P of image ``i`` from its batch's detections and affinity features Q (N, C, H'/4, W'/4)."""
    return model.panoptic_head.logits(
        found.sem_logits[i], q[i], found.dets[i], found.image_list.tensors.shape[-2:], found.image_list.image_sizes[i]
    )


def prediction(model, found: Detections, q: torch.Tensor, i: int):
    """The argmax inference of :meth:`PanopticNet.panoptic_stage` for image ``i``, with Q given."""
    size, det = found.image_list.image_sizes[i], found.dets[i]
    return panoptic_from_logits(
        upsample_argmax(panoptic_logits(model, found, q, i), model.panoptic_head.stride, size),
        model.labels.detection_categories(det["labels"]),
        [float(s) for s in det["scores"]],
        model.labels.region_categories(),
        model.panoptic_head.min_thing_area,
        model.panoptic_head.min_stuff_area,
    )


def crop_q(q: torch.Tensor, found: Detections, i: int, divisible: int = 32) -> torch.Tensor:
    """Image ``i``'s Q cut to its own padded size. (Q comes from convolutions and GroupNorm, which see the
    padding as a detector's features do; what this file tests is everything after them.)"""
    h, w = found.image_list.image_sizes[i]
    ph, pw = -(-h // divisible) * divisible, -(-w // divisible) * divisible
    return q[i : i + 1, :, : ph // SEMANTIC_STRIDE, : pw // SEMANTIC_STRIDE]


def assert_same_prediction(a, b) -> None:
    assert np.array_equal(a.ids, b.ids)
    assert [(s["category_id"], s["area"]) for s in a.segments] == [(s["category_id"], s["area"]) for s in b.segments]


def test_real_coco_images_of_two_sizes_predict_as_alone(coco_sample):
    """640 x 427 and 640 x 360 in one batch: the smaller one is padded by 64 rows, its P and output unchanged."""
    cats = load_categories(coco_sample / "panoptic_coco_categories.json")
    torch.manual_seed(0)
    model = build_panoptic_net(cats, **TINY).eval()
    images = [
        torch.from_numpy(read_rgb(coco_sample / "input_images" / f"{n}.jpg")).permute(2, 0, 1).float() / 255
        for n in ("000000142238", "000000439180")
    ]
    assert {tuple(im.shape[-2:]) for im in images} == {(427, 640), (360, 640)}
    with torch.no_grad():
        found = model.detect(images)
        small = int(np.argmin([im.shape[-2] for im in images]))
        single = alone(found, small)
        assert single.image_list.tensors.shape[-2] < found.image_list.tensors.shape[-2]  # it was padded more
        assert len(found.dets[small]["boxes"]) > 0
        q = model.panoptic_head.features(found.fpn)
        q_single = crop_q(q, found, small)
        torch.testing.assert_close(panoptic_logits(model, found, q, small), panoptic_logits(model, single, q_single, 0))
        assert_same_prediction(prediction(model, found, q, small), prediction(model, single, q_single, 0))


@pytest.fixture(scope="module")
def padded_pair(synth):
    """A synthetic 64 x 64 scene and a 29 x 29 one (padded to 32 alone, to 64 beside the other)."""
    ds = PanopticDataset(synth / "panoptic_train.json", synth / "panoptic" / "train", synth / "images" / "train")
    big = to_tensors(*ds[0])
    small = resize(*to_tensors(*ds[1]), 0.45)
    return [big, small]


def test_panoptic_loss_of_a_padded_image_is_its_own(synth, padded_pair):
    """The matching loss of the smaller image of a pair is the same with the pair's padding and without."""
    ds = PanopticDataset(synth / "panoptic_train.json", synth / "panoptic" / "train", synth / "images" / "train")
    torch.manual_seed(0)
    model = build_panoptic_net(ds.categories, **TINY).eval()
    images = [padded_pair[0][0], padded_pair[1][0]]
    targets = [padded_pair[0][1], padded_pair[1][1]]
    with torch.no_grad():
        found = model.detect(images)
        single = alone(found, 1)
        assert single.image_list.tensors.shape[-1] < found.image_list.tensors.shape[-1]
        q_joint = model.panoptic_head.features(found.fpn)
        losses = []
        for f, i, q in ((found, 1, q_joint), (single, 0, crop_q(q_joint, found, 1))):
            losses.append(
                model.panoptic_head.loss(
                    f.sem_logits[i : i + 1],
                    q[i : i + 1],
                    [f.dets[i]],
                    [targets[1]],
                    f.image_list.tensors.shape[-2:],
                    [f.image_list.image_sizes[i]],
                )
            )
    assert float(losses[0]) > 0
    torch.testing.assert_close(losses[0], losses[1])


def test_cam_pooling_and_peak_read_only_the_image():
    """Cls2Pixel: the image score (global average) and the CAM normalisation (peak) ignore the padded cells."""
    torch.manual_seed(0)
    head = CAMClassifier(8, 5)
    features = torch.randn(1, 8, 12, 10)
    padded = torch.randn(1, 8, 16, 16) * 10  # garbage in the padding
    padded[:, :, :12, :10] = features
    valid = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
    valid[:, :, :12, :10] = True
    scores, maps = head(features)
    scores_padded, maps_padded = head(padded, valid)
    torch.testing.assert_close(scores_padded, scores)
    cams = class_activation_maps(maps_padded, valid)
    torch.testing.assert_close(cams[..., :12, :10], class_activation_maps(maps))
    assert float(cams[..., 12:, :].detach().abs().sum()) == 0.0  # no pseudo label can come from the padding


def test_relation_stuff_nodes_pool_only_the_image():
    torch.manual_seed(0)
    rr = RelationReasoning(32, 8, 4, 6, [3, 4, 5], width=16)
    rois = torch.randn(7, 32)
    features, probs = torch.randn(8, 12, 10), torch.softmax(torch.randn(6, 12, 10), 0)
    big_f, big_p = torch.randn(8, 16, 16) * 10, torch.softmax(torch.randn(6, 16, 16) * 5, 0)
    big_f[:, :12, :10], big_p[:, :12, :10] = features, probs
    out = rr(rois, features, probs)
    out_padded = rr(rois, big_f, big_p, cells=(12, 10))
    torch.testing.assert_close(out_padded[0], out[0])
    torch.testing.assert_close(out_padded[1], out[1])
    torch.testing.assert_close(out_padded[2][:, :12, :10], out[2])
