"""Paper 002 (JTSM): MoIPool, OICR's pseudo ground truth, the mined pseudo labels, tags-only images teaching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import roi_pool

from cqbnet.cues.grabcut import grabcut_from_segment
from cqbnet.data.panoptic_format import load_panoptic_json
from cqbnet.data.transforms import to_tensors
from cqbnet.errors import InputError
from cqbnet.labels.dataset import MixedLabelDataset
from cqbnet.labels.simulate import parse_ratio, simulate
from cqbnet.network.build import build_panoptic_net
from cqbnet.weak.jtsm import (
    JTSM,
    MiningHeads,
    MiningOutput,
    Segments,
    cell_max,
    log_one_minus_softmax,
    mask_iou,
    mining_loss,
    moi_pool,
    pool_rois,
    refinement_targets,
)
from helpers import TINY


def test_moi_pool_is_roi_pool_on_a_full_box_mask_and_ignores_features_outside_a_mask():
    torch.manual_seed(0)
    feats = torch.randn(1, 3, 16, 16)
    # boxes whose last pixels fall in the cells RoIPool rounds them to
    boxes = torch.tensor([[8.0, 8, 68, 60], [0, 0, 128, 128]])
    full = torch.zeros(2, 128, 128, dtype=torch.bool)
    for k, b in enumerate(boxes.long()):
        full[k, b[1] : b[3], b[0] : b[2]] = True
    want = roi_pool(feats, pool_rois(boxes, torch.zeros(2)), 7, 1 / 8)
    assert torch.allclose(moi_pool(feats, full, boxes, 8), want)
    # many segments go through in chunks, with the same result as at once
    import cqbnet.weak.jtsm as jtsm_module

    chunk, at_once = jtsm_module.CHUNK_ELEMENTS, moi_pool(feats, full, boxes, 8)
    try:
        jtsm_module.CHUNK_ELEMENTS = feats[0].numel()  # one segment per chunk
        assert torch.equal(moi_pool(feats, full, boxes, 8), at_once)
    finally:
        jtsm_module.CHUNK_ELEMENTS = chunk
    # a mask over the left half of the image: what lies right of it changes nothing
    half = torch.zeros(1, 128, 128, dtype=torch.bool)
    half[0, :, :64] = True
    box = torch.tensor([[0.0, 0, 128, 128]])
    a = moi_pool(feats, half, box, 8)
    other = feats.clone()
    other[..., 8:] = 100.0
    assert torch.allclose(moi_pool(other, half, box, 8), a)
    # empty bins are 0, the others the masked max scaled by bins / non-empty bins
    left = torch.zeros(1, 1, 16, 16)
    left[..., :8] = 1.0
    raw = roi_pool(torch.where(left > 0, feats, torch.tensor(-1e4)), pool_rois(box, torch.zeros(1)), 7, 1 / 8)
    empty = raw[0, 0] < -1e3
    assert 0 < empty.sum() < 49 and (a[0][:, empty] == 0).all()
    assert torch.allclose(a[0][:, ~empty], raw[0][:, ~empty] * 49 / (~empty).sum())


def test_segment_cells_come_from_the_superpixels_as_from_the_masks_at_any_image_size():
    """Eq. 6's mask at feature resolution, straight from the superpixel sets (no (R, H, W) masks), equals the max
    over each stride x stride cell of the full masks, also where the image is no multiple of the stride."""
    rng = np.random.default_rng(0)
    for h, w in ((128, 128), (61, 45)):
        sp = torch.from_numpy(rng.integers(0, 12, (h, w)).astype(np.int32))
        sp[: h // 2] = 12  # one large superpixel
        members = torch.from_numpy(rng.random((9, 13)) < 0.3)
        boxes = torch.zeros(9, 4)
        segments = Segments(sp, members, boxes)
        size = (-(-h // 8), -(-w // 8))
        cells = segments.cells(size, 8)
        assert cells.shape == (9, *size) and torch.equal(cells, cell_max(segments.masks(), size, 8))
        assert torch.equal(segments.mask(3), segments.masks()[3])
    masks = torch.zeros(1, 20, 20, dtype=torch.bool)
    masks[0, 17, 3] = True  # in cell (2, 0) of a 3 x 3 grid at stride 8 (the last cell partly off the image)
    assert torch.nonzero(cell_max(masks, (3, 3), 8)[0]).tolist() == [[2, 0]]


def test_mask_iou_of_superpixel_sets():
    members = torch.tensor([[1, 1, 0], [0, 1, 1], [1, 1, 1]])
    area = torch.tensor([10.0, 10.0, 20.0])
    iou = mask_iou(members, area)
    assert iou[0, 1] == pytest.approx(10 / 40) and iou[0, 2] == pytest.approx(20 / 40) and iou[1, 1] == 1


def test_oicr_targets_take_each_tagged_class_s_top_segment_and_its_neighbours():
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.5, 0.2, 0.0], [0.1, 0.8, 0.0], [0.2, 0.3, 0.0]])
    tags = torch.tensor([1, 1, 0])
    iou = torch.eye(4)
    iou[0, 1] = iou[1, 0] = 0.6  # segment 1 overlaps class 0's top segment
    iou[3, 2] = iou[2, 3] = 0.3  # segment 3 does not overlap class 1's enough
    y = torch.tensor([0.7, 0.4, 0.01])
    labels, weights = refinement_targets(scores, tags, iou, y)
    assert labels.tolist() == [0, 0, 1, 3]  # background is index 3 (= classes)
    assert weights[:3].tolist() == pytest.approx([0.7, 0.7, 0.4])
    assert refinement_targets(scores, torch.zeros(3), iou, y)[0].tolist() == [3, 3, 3, 3]


def test_mining_loss_trains_the_streams_and_every_refinement_head():
    torch.manual_seed(0)
    heads = MiningHeads(4, 3, hidden=16, refinements=2)
    heads.eval()
    pooled = torch.randn(6, 4, 7, 7)
    out = heads(pooled)
    assert out.mil.shape == (6, 3) and len(out.refined) == 2 and out.refined[0].shape == (6, 4)
    assert (out.mil.sum(0) <= 1 + 1e-6).all()
    loss = mining_loss(out, torch.tensor([1, 0, 1]), torch.eye(6))
    loss.backward()
    for p in (heads.classify.weight, heads.detect.weight, heads.refine[0].weight, heads.refine[1].weight):
        assert p.grad.abs().sum() > 0
    assert out.scores().shape == (6, 3)


def test_mil_loss_is_eq2_and_keeps_a_gradient_where_the_streams_are_badly_wrong():
    torch.manual_seed(0)
    classify, detect = torch.randn(5, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    tags = torch.tensor([1, 0, 0, 1])
    y = (F.softmax(classify, 1) * F.softmax(detect, 0)).sum(0)
    want = -(tags * y.log() + (1 - tags) * (1 - y).log()).sum()
    got = mining_loss(MiningOutput(classify, detect, []), tags, torch.eye(5))
    assert float(got) == pytest.approx(float(want), rel=1e-9)
    # a tagged class every segment scores at about e^-20: y_c is below a 1e-6 clamp but its log still has a gradient
    classify = torch.zeros(5, 4, requires_grad=True)
    with torch.no_grad():
        classify[:, 0] = -10.0
        classify[:, 1] = 10.0
    loss = mining_loss(MiningOutput(classify, torch.zeros(5, 4), []), torch.tensor([1, 1, 0, 0]), torch.eye(5))
    loss.backward()
    assert torch.isfinite(loss) and loss > 15 and classify.grad[:, 0].abs().min() > 0.1


def test_log_one_minus_softmax_is_exact_where_one_class_takes_the_mass():
    logits = torch.tensor([[30.0, 0.0, -1.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    got = log_one_minus_softmax(logits)
    eye = torch.eye(3, dtype=torch.bool)
    # 1 - softmax_c = sum of the other classes' exp over the sum of all: a log-sum-exp over j != c, exact
    want = logits[:, None, :].masked_fill(eye, float("-inf")).logsumexp(2) - logits.logsumexp(1, keepdim=True)
    assert torch.allclose(got, want, atol=1e-9)
    assert got[0, 0] == pytest.approx(float(torch.logsumexp(torch.tensor([0.0, -1.0]), 0)) - 30.0, abs=1e-4)


def test_the_mining_heads_train_at_their_lr_scale_and_the_rest_at_the_base_lr():
    from cqbnet.engine.trainer import param_groups

    module = JTSM(8, 3, [0], lr_scale=0.25)
    extra = torch.nn.Linear(2, 2)
    model = torch.nn.ModuleDict({"jtsm": module, "other": extra})
    groups = param_groups(model, 0.02)
    by_lr = {g["lr"]: {id(p) for p in g["params"]} for g in groups}
    assert set(by_lr) == {0.02, 0.005}
    assert by_lr[0.005] == {id(p) for p in module.heads.parameters()}
    assert by_lr[0.02] == {id(p) for p in extra.parameters()}


def test_grabcut_from_a_segment_grows_it_to_the_object_within_its_box():
    rng = np.random.default_rng(0)
    img = np.zeros((64, 64, 3), np.float64)
    img[:] = (40, 150, 40)
    yy, xx = np.mgrid[:64, :64]
    disc = (yy - 32) ** 2 + (xx - 32) ** 2 < 12**2
    img[disc] = (200, 40, 40)
    img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    seed = (yy - 32) ** 2 + (xx - 32) ** 2 < 5**2  # a small segment inside the object
    out = grabcut_from_segment(img, seed, np.array([16, 16, 48, 48.0]))
    assert (out & disc).sum() / (out | disc).sum() > 0.85 and not out[:16].any()


@pytest.fixture()
def tags_data(tmp_path, synth):
    gt = load_panoptic_json(synth / "panoptic_train.json", synth / "panoptic" / "train", synth / "images" / "train")
    m = simulate(gt, parse_ratio("I=0.5,P=0.5"), tmp_path / "labels", seed=1)
    ds = MixedLabelDataset(m.path)
    tags_only = [i for i, lab in enumerate(m.images) if lab.kinds == frozenset({"I"})]
    return ds, tags_only


def test_tags_only_images_teach_the_whole_network_through_their_mined_labels(tags_data, tmp_path):
    ds, tags_only = tags_data
    items = [to_tensors(*ds[i]) for i in tags_only[:2]]
    images, targets = [x[0] for x in items], [x[1] for x in items]
    weak = {"jtsm": True, "jtsm_warmup": 100, "cls2box": False, "cls2pixel": False, "jtsm_cache": str(tmp_path / "c")}
    torch.manual_seed(0)
    model = build_panoptic_net(ds.categories, **{**TINY, "weak": weak}).train()
    model.iteration = 0
    early = model(images, targets)
    assert early["loss_jtsm"] > 0 and early["loss_cls_s0"] == 0 and early["loss_semantic"] == 0
    assert len(list((tmp_path / "c").glob("*.npz"))) == 2  # proposals cached per image
    model.iteration = 100
    late = model(images, targets)
    for k in ("loss_jtsm", "loss_semantic", "loss_panoptic"):
        assert torch.isfinite(late[k]) and late[k] > 0, k
    # the mined labels hold tagged classes only, and ignore elsewhere
    model.zero_grad()
    late["loss_jtsm"].backward(retain_graph=True)
    assert model.jtsm.heads.refine[3].weight.grad.abs().sum() > 0
    # RoIPool instead of MoIPool and no GrabCut are switches
    off = {**weak, "jtsm_masked_pooling": False, "jtsm_grabcut": False, "jtsm_refinements": 0}
    model = build_panoptic_net(ds.categories, **{**TINY, "weak": off}).train()
    model.iteration = 100
    assert torch.isfinite(model(images, targets)["loss_jtsm"])


def test_the_mining_pools_the_backbone_body_not_the_fpn_unless_asked(tags_data):
    ds, tags_only = tags_data
    image, t = to_tensors(*ds[tags_only[0]])
    outputs = {}
    for source in ("backbone", "fpn"):
        torch.manual_seed(0)
        weak = {"jtsm": True, "cls2box": False, "cls2pixel": False, "jtsm_features": source}
        model = build_panoptic_net(ds.categories, **{**TINY, "weak": weak}).eval()
        body_channels = model.backbone.body_channels[1]
        want = (body_channels if source == "backbone" else TINY["fpn_channels"]) * 49
        assert model.jtsm.heads.fc[1].in_features == want
        with torch.no_grad():
            batch = model.training_batch([image], [t])
            props = model.jtsm.proposals(t, image)
            before = model.jtsm.image_outputs(batch, 0, props).classify
            for prm in model.backbone.fpn.parameters():  # the FPN changed: only the "fpn" source sees it
                prm.add_(1.0)
            batch = model.training_batch([image], [t])
            after = model.jtsm.image_outputs(batch, 0, props).classify
        outputs[source] = torch.equal(before, after)
    assert outputs == {"backbone": True, "fpn": False}
    with pytest.raises(InputError, match="jtsm_features"):
        build_panoptic_net(ds.categories, **{**TINY, "weak": {"jtsm": True, "jtsm_features": "c5"}})


def test_mined_target_keeps_tagged_classes_only(tags_data):
    ds, tags_only = tags_data
    image, t = to_tensors(*ds[tags_only[0]])
    module = JTSM(16, len(ds.categories), [0, 1, 2, 3, 4, 5], grabcut=False)
    h, w = image.shape[1:]
    sp = torch.zeros(h, w, dtype=torch.int32)  # superpixel 0 the rest, 1 and 2 two squares
    sp[:10, :10], sp[20:40, 20:40] = 1, 2
    members = torch.tensor([[0, 1, 0], [0, 0, 1], [1, 1, 1]], dtype=torch.bool)  # a square each, then everything
    boxes = torch.tensor([[0, 0, 10, 10.0], [20, 20, 40, 40], [0, 0, w, h]])
    segments = Segments(sp, members, boxes)
    tagged = torch.nonzero(t["tags"] > 0).squeeze(1)
    scores = torch.zeros(3, len(ds.categories))
    scores[0, tagged[0]] = 0.9
    scores[2, tagged[1:]] = 0.5
    p = module.mined_target(t, image, scores, segments, 255)
    assert set(p["labels"].tolist()) <= set(tagged.tolist()) and p["labels"][0] == tagged[0]
    assert (p["semantic"][:10, :10] == tagged[0]).all()
    assert p["ignore"].sum() == (p["panoptic"] == 0).sum()


def test_a_config_trains_from_tags_alone_and_caches_each_image_s_proposals(tmp_path, synth):
    import json

    import yaml

    from cqbnet.cli.main import main
    from cqbnet.weak.jtsm import corloc
    from helpers import tiny_model_config

    model = tiny_model_config()
    model["weak"] = {"jtsm": True, "jtsm_warmup": 2, "cls2box": False, "cls2pixel": False}
    cfg = {
        "data": {"root": str(synth), "labels": {"ratio": "I=1", "seed": 0}, "flip": False},
        "model": model,
        "solver": {"max_iter": 3, "batch_size": 2, "base_lr": 0.01, "warmup_iters": 1, "steps": [2]},
        "train": {"checkpoint_period": 3, "eval_period": 0, "log_period": 1},
    }
    (tmp_path / "tags.yaml").write_text(yaml.safe_dump(cfg))
    assert (
        main(["train", str(tmp_path / "tags.yaml"), "--out", str(tmp_path / "run"), "--quiet", "--device", "cpu"]) == 0
    )
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss_jtsm"] > 0 for r in rows) and rows[-1]["loss_semantic"] > 0  # mined labels after warm-up
    cached = list((tmp_path / "run" / "proposals").glob("*.npz"))
    assert 0 < len(cached) <= 6
    from cqbnet.engine.trainer import load_model
    from cqbnet.labels.dataset import MixedLabelDataset

    net, _ = load_model(tmp_path / "run" / "model_final.pth", torch.device("cpu"))
    ds = MixedLabelDataset(tmp_path / "run" / "labels" / "manifest.json")
    gt = load_panoptic_json(synth / "panoptic_train.json", synth / "panoptic" / "train")
    c = corloc(net, ds, gt, torch.device("cpu"), limit=3)
    assert c["pairs"] > 0 and 0 <= c["corloc"] <= 100
