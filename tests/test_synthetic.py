"""The synthetic scenes: deterministic, hard in the ways the foundation issue asks, and (realistic preset) with the
appearance statistics the scenes issue asks for."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from cqbnet.data.dataset import PanopticDataset
from cqbnet.data.panoptic_format import load_panoptic_json, read_panoptic_png
from cqbnet.data.scene_probes import colour_only_accuracy, lab_edge_statistics
from cqbnet.data.synthetic import (
    STUFF_TEXTURES,
    THING_SHAPES,
    SceneConfig,
    add_test_split,
    generate,
    make_scene,
    scene_config,
    scene_rng,
    split_paths,
)
from cqbnet.errors import InputError


def _digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != ".cqbnet-output":  # the output record holds the files' times
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("preset", ["realistic", "camouflage", "dense"])
def test_deterministic_by_seed(tmp_path, preset):
    cfg = SceneConfig(size=48, min_size=6, max_size=24, preset=preset)
    a = generate(tmp_path / "a", 6, 2, seed=5, cfg=cfg)
    b = generate(tmp_path / "b", 6, 2, seed=5, cfg=cfg)
    c = generate(tmp_path / "c", 6, 2, seed=6, cfg=cfg)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def _split_digest(folder, split):
    h = hashlib.sha256((folder / f"panoptic_{split}.json").read_bytes())
    for sub in ("images", "panoptic"):
        for p in sorted((folder / sub / split).glob("*.png")):
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_test_split_is_held_out_deterministic_and_leaves_train_and_val_unchanged(tmp_path):
    cfg = SceneConfig(size=48, min_size=6, max_size=24)
    without = generate(tmp_path / "old", 6, 3, seed=5, cfg=cfg, num_test=0)
    a = generate(tmp_path / "a", 6, 3, seed=5, cfg=cfg, num_test=4)
    b = generate(tmp_path / "b", 6, 3, seed=5, cfg=cfg, num_test=4)
    c = generate(tmp_path / "c", 6, 3, seed=6, cfg=cfg, num_test=4)
    for split in ("train", "val"):  # adding the test split changes nothing else
        assert _split_digest(a, split) == _split_digest(without, split)
    assert _split_digest(a, "test") == _split_digest(b, "test") != _split_digest(c, "test")
    gt = {
        s: load_panoptic_json(a / f"panoptic_{s}.json", a / "panoptic" / s, a / "images" / s) for s in ("val", "test")
    }
    assert len(gt["test"].records) == 4
    assert not {r.image_id for r in gt["test"].records} & {r.image_id for r in gt["val"].records}
    val_pixels = {np.asarray(PanopticDataset(*split_paths(a, "val")).load_image(i)).tobytes() for i in range(3)}
    test_set = PanopticDataset(*split_paths(a, "test"))
    assert not {np.asarray(test_set.load_image(i)).tobytes() for i in range(4)} & val_pixels  # other scenes


def test_a_test_split_added_to_an_older_folder_is_the_one_generate_writes(tmp_path):
    cfg = SceneConfig(size=48, min_size=6, max_size=24)
    old = generate(tmp_path / "old", 6, 3, seed=5, cfg=cfg, num_test=0)
    assert not (old / "panoptic_test.json").exists()
    add_test_split(old, 4)
    new = generate(tmp_path / "new", 6, 3, seed=5, cfg=cfg, num_test=4)
    assert _split_digest(old, "test") == _split_digest(new, "test")


def test_image_does_not_depend_on_split_size():
    cfg = SceneConfig()
    s1 = make_scene(scene_rng(0, "train", 17), cfg)
    s2 = make_scene(scene_rng(0, "train", 17), cfg)
    assert np.array_equal(s1.image, s2.image) and np.array_equal(s1.ids, s2.ids)


def test_camouflage_preset_is_the_original_generator():
    """The camouflage preset draws exactly the scenes the generator drew before presets existed (digest of five
    scenes of seed 0 taken from that generator)."""
    h = hashlib.sha256()
    for i in range(5):
        sc = make_scene(scene_rng(0, "train", i), SceneConfig(preset="camouflage"))
        h.update(sc.image.tobytes())
        h.update(sc.ids.tobytes())
        h.update(repr([(x.id, x.category_id, x.iscrowd, x.area) for x in sc.segments]).encode())
    assert h.hexdigest() == "cb0215447e70a43afe4459233ef002ae69725ab31d5a430631d64ef6a5a71cb2"


def test_presets_share_geometry_and_differ_in_look():
    a = make_scene(scene_rng(0, "train", 3), SceneConfig(preset="realistic"))
    b = make_scene(scene_rng(0, "train", 3), SceneConfig(preset="camouflage"))
    assert not np.array_equal(a.image, b.image)
    with pytest.raises(InputError, match="preset"):
        SceneConfig(preset="photo").validate()


def test_realistic_probe_bands():
    """Colour tells a good deal about a thing's class without settling it, and silhouettes stand out of their
    textures; on the camouflage preset colour is at chance (small sample: 300 train / 150 val scenes)."""
    acc = {}
    for preset in ("realistic", "camouflage"):
        cfg = SceneConfig(preset=preset)
        train = [make_scene(scene_rng(0, "train", i), cfg) for i in range(300)]
        val = [make_scene(scene_rng(0, "val", i), cfg) for i in range(150)]
        acc[preset] = colour_only_accuracy(train, val, len(THING_SHAPES))["accuracy"]
        edges = lab_edge_statistics(val[:60], len(THING_SHAPES))
        if preset == "realistic":
            assert edges["inside_p90"] < edges["across_p50"]
        else:
            assert edges["inside_p90"] > edges["across_p50"]
    assert 0.35 <= acc["realistic"] <= 0.60
    assert acc["camouflage"] < 0.25


@pytest.mark.parametrize("preset", ["realistic", "camouflage"])
def test_scene_statistics(preset):
    """Over 300 scenes: classes, counts, scale range, void, crowd, touching; colour no cue in the camouflage
    preset."""
    cfg = SceneConfig(preset=preset)
    n_inst, extents, void, crowd, touching = [], [], [], 0, 0
    colours_per_class: dict[int, set] = {}
    stuff_seen = set()
    for i in range(300):
        sc = make_scene(scene_rng(1, "stats", i), cfg)
        things = [s for s in sc.segments if s.category_id <= len(THING_SHAPES)]
        n_inst.append(sum(not s.iscrowd for s in things))
        crowd += sum(s.iscrowd for s in things)
        void.append((sc.ids == 0).mean())
        stuff_seen |= {s.category_id for s in sc.segments if s.category_id > len(THING_SHAPES)}
        for s in things:
            if not s.iscrowd:
                extents.append(max(s.bbox[2], s.bbox[3]))
                m = sc.ids == s.id
                colours_per_class.setdefault(s.category_id, set()).add(tuple((sc.image[m].mean(0) // 64).astype(int)))
        # touching: two same-class instances whose masks are 4-adjacent
        for a in things:
            for b in things:
                if a.id < b.id and a.category_id == b.category_id and not (a.iscrowd or b.iscrowd):
                    ma, mb = sc.ids == a.id, sc.ids == b.id
                    grown = ma.copy()
                    grown[1:] |= ma[:-1]
                    grown[:-1] |= ma[1:]
                    grown[:, 1:] |= ma[:, :-1]
                    grown[:, :-1] |= ma[:, 1:]
                    touching += bool((grown & mb).any())
    assert len(colours_per_class) == len(THING_SHAPES) == 6
    assert len(stuff_seen) == len(STUFF_TEXTURES) >= 4
    assert min(n_inst) == 0 and max(n_inst) >= 8 and max(n_inst) <= cfg.max_instances
    assert np.percentile(extents, 95) / max(np.percentile(extents, 5), 1) >= 4
    assert 0.002 < np.mean(void) < 0.05
    assert crowd >= 10 and touching >= 10
    # every class is seen in many colour bins: colour does not give the class away
    assert all(len(c) >= (8 if preset == "camouflage" else 4) for c in colours_per_class.values())


def test_written_split_is_valid_coco_panoptic(synth):
    ds = PanopticDataset(synth / "panoptic_train.json", synth / "panoptic" / "train", synth / "images" / "train")
    assert len(ds) == 40
    s = load_panoptic_json(synth / "panoptic_val.json", synth / "panoptic" / "val")
    for rec in s.records:  # every PNG agrees with its JSON (areas included)
        s.read_ids(rec)
    img, t = ds[0]
    assert img.shape == (64, 64, 3) and t["semantic"].shape == (64, 64)
    assert [r.image_id for r in s.records] == list(range(1_000_001, 1_000_013))  # val ids never clash with train
    assert read_panoptic_png(s.png_path(s.records[0])).dtype == np.uint32


def test_the_dense_preset_is_crowded_small_and_touching():
    """Dense scenes (a stand-in for cells or aerial tiles): 256 px, about 20-80 visible things of 4-20 px (x1.25
    for the shapes' aspect), most of them touching another thing, 1-3 stuff classes; colour hints at the class
    less than on the realistic preset; an explicit setting wins over the preset's."""
    cfg = scene_config("dense")
    assert (cfg.size, cfg.min_instances, cfg.max_instances, cfg.min_size, cfg.max_size) == (256, 20, 80, 4.0, 20.0)
    assert scene_config("dense", size=128, max_size=None).size == 128 and scene_config("realistic") == SceneConfig()
    counts, extents, touching, things_total, stuff = [], [], 0, 0, []
    for i in range(8):
        sc = make_scene(scene_rng(2, "dense", i), cfg)
        assert sc.image.shape == (256, 256, 3)
        things = [x for x in sc.segments if x.category_id <= len(THING_SHAPES) and not x.iscrowd]
        counts.append(len(things))
        stuff.append(sum(x.category_id > len(THING_SHAPES) for x in sc.segments))
        thing_ids = np.isin(sc.ids, [x.id for x in things])
        for x in things:
            extents.append(max(x.bbox[2], x.bbox[3]))
            m = sc.ids == x.id
            grown = m.copy()
            grown[1:] |= m[:-1]
            grown[:-1] |= m[1:]
            grown[:, 1:] |= m[:, :-1]
            grown[:, :-1] |= m[:, 1:]
            touching += bool((grown & ~m & thing_ids).any())
            things_total += 1
    assert 15 <= min(counts) and max(counts) <= 80 and np.mean(counts) >= 30
    assert max(extents) <= 26 and np.median(extents) <= 14
    assert touching / things_total >= 0.4
    assert 1 <= min(stuff) and max(stuff) <= 3
