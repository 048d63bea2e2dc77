"""``cqbnet fit`` and the catalogue of label methods: a mixed manifest in one command, stages run once and
refused when their inputs change, per-image preparation in worker processes, resume after a kill."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cqbnet.cli.main import main
from cqbnet.errors import InputError
from cqbnet.labels.catalogue import DEFAULTS, METHODS, check_mix, default_method, describe, final_weak, method_of
from cqbnet.labels.kinds import parse_kind_set
from cqbnet.labels.manifest import load_manifest
from helpers import kill_after_checkpoint, restrict_label_space, tiny_model_config

MIX = "P=0.25,B+I=0.25,PT=0.25,I=0.25"


def fit_config(tmp_path: Path, synth: Path, max_iter: int = 2) -> Path:
    cfg = {
        "data": {"root": str(synth)},
        "model": {**tiny_model_config(), "weak": {"jtsm_hidden": 16, "points_dim": 16, "points_heads": 2}},
        "solver": {"max_iter": max_iter, "batch_size": 2, "base_lr": 0.01, "warmup_iters": 1, "steps": [max_iter]},
        "train": {"checkpoint_period": 1, "eval_period": 0, "log_period": 1},
        "fit": {"rounds": 1, "classifier_iter": 1},
    }
    path = tmp_path / "fit.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def simulated(tmp_path: Path, synth: Path, ratio: str = MIX, *extra: str) -> Path:
    out = tmp_path / "labels"
    assert main(["labels", "simulate", "--data", str(synth), "--ratio", ratio, "--out", str(out), *extra]) == 0
    return out / "manifest.json"


def test_every_method_names_its_kinds_stages_and_what_it_gives():
    rows = describe()
    assert {r["method"] for r in rows} == set(METHODS)
    for r in rows:
        assert r["kinds"] and r["gives"] and r["departs"] and r["compute"]
    # the paper's own method keeps an entry beside the toolkit's variant
    assert {"boxes-tags-001", "boxes-tags-001-released", "points-003", "points-crf", "tags-002"} <= set(METHODS)
    assert METHODS["boxes-tags-001-released"].fill == "box" and METHODS["boxes-tags-001-released"].rounds == 1
    for kinds, name in DEFAULTS.items():
        assert METHODS[name].accepts(kinds) and default_method(kinds) == name
    assert default_method(parse_kind_set("B+I")) == default_method(parse_kind_set("I+B")) == "boxes-tags-001"
    assert default_method(frozenset({"P", "B"})) == "full"
    assert default_method(frozenset({"B"})) == default_method(frozenset({"I", "S"})) == "modules-000"
    assert default_method(frozenset({"PT", "I"})) == "points-crf"


def test_a_method_an_image_cannot_use_is_refused_naming_it():
    with pytest.raises(InputError, match=r"image 7: unknown label method 'grabcut'"):
        method_of("grabcut", frozenset({"B"}), "image 7: ")
    with pytest.raises(InputError, match=r"method tags-002 needs label kinds I .* carries PT"):
        method_of("tags-002", frozenset({"PT"}))
    with pytest.raises(InputError, match="modules-000 and tags-002 cannot share one fit"):
        check_mix({"full", "modules-000", "tags-002"})
    weak = final_weak({"full", "tags-002", "points-crf"}, {"relation": False, "cls2box": True})
    assert weak["jtsm"] and not weak["cls2box"] and not weak["cls2pixel"] and weak["relation"] is False
    assert "points" not in weak  # the offline recipe's final network has no point branch


def test_simulate_writes_methods_and_the_manifest_keeps_them(tmp_path, synth, capsys):
    path = simulated(tmp_path, synth, MIX, "--method", "I=tags-002")
    m = load_manifest(path)
    methods = {im.method for im in m.images if im.kinds == frozenset({"I"})}
    assert methods == {"tags-002"} and all(im.method is None for im in m.images if im.kinds != frozenset({"I"}))
    code = main(["labels", "simulate", "--data", str(synth), "--ratio", MIX, "--out", str(tmp_path / "x")] + [
        "--method", "B=boxes-tags-001"])  # fmt: skip
    assert code == 2 and "the label mix has no B images" in capsys.readouterr().err


def _edit(path: Path, kinds: list[str], method: str) -> None:
    doc = json.loads(path.read_text())
    for im in doc["images"]:
        if im["kinds"] == kinds:
            im["method"] = method
            break
    path.write_text(json.dumps(doc))


def test_bad_methods_in_a_manifest_are_one_line_errors(tmp_path, synth, capsys):
    cfg = fit_config(tmp_path, synth)
    path = simulated(tmp_path, synth)
    argv = ["fit", str(cfg), "--manifest", str(path), "--out", str(tmp_path / "f"), "--dry-run", "--cache", "none"]
    _edit(path, ["PT"], "tags-002")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "method tags-002 needs label kinds I" in err and "image" in err and len(err.strip().splitlines()) == 1
    _edit(path, ["PT"], "points-003")
    _edit(path, ["I"], "tags-002")  # beside the default of the other tags images: paper 000's modules
    assert main(argv) == 2 and "cannot share one fit" in capsys.readouterr().err
    assert not (tmp_path / "f").exists()


def test_a_mixed_manifest_fits_in_one_command_and_stages_rerun_only_when_their_inputs_change(tmp_path, synth, capsys):
    cfg = fit_config(tmp_path, synth)
    path = simulated(tmp_path, synth, MIX, "--method", "I=tags-002")
    out = tmp_path / "f"
    argv = ["fit", str(cfg), "--manifest", str(path), "--out", str(out), "--device", "cpu", "--quiet"]
    argv += ["--cache", str(tmp_path / "cache"), "--workers", "1"]
    capsys.readouterr()
    assert main([*argv, "--dry-run"]) == 0
    text = capsys.readouterr().out
    stages = ["classifier", "round0", "point-branch", "pseudo-labels", "proposals", "train0", "round1", "final"]
    assert [line.split()[0] for line in text.splitlines()[3:-1]] == stages
    assert "total: 4 network(s), 7 training iterations" in text and not out.exists()

    assert main(argv) == 0
    summary = json.loads((out / "fit.json").read_text())
    assert [s["stage"] for s in summary["stages"]] == stages
    assert summary["methods"] == {"full": 10, "boxes-tags-001": 10, "points-crf": 10, "tags-002": 10}
    assert all(json.loads((out / s / "stage.json").read_text())["status"] == "done" for s in stages)
    final = yaml.safe_load((out / "final" / "config.yaml").read_text())
    approximate, pseudo = final["data"]["pseudo_labels"]  # paper 001's round, then the CRF pseudo labels
    assert approximate.endswith("round1/labels") and pseudo.endswith("pseudo-labels/labels")
    weak = final["model"]["weak"]
    assert weak["jtsm"] and not weak["cls2box"] and not weak["cls2pixel"] and not weak.get("points", False)
    branch = yaml.safe_load((out / "point-branch" / "config.yaml").read_text())
    assert branch["model"]["weak"]["points"] and branch["solver"]["base_lr"] == pytest.approx(0.005)
    assert list((tmp_path / "cache" / "thing_cues").glob("*.npz"))  # round 0's cues are cached
    # paper 002's proposals were made before training, for each tags image and its mirror image, and the mining
    # branch read them from there
    assert len(list((tmp_path / "cache" / "segment_proposals").glob("*.npz"))) == 2 * 10
    assert weak["jtsm_cache"] == str((tmp_path / "cache" / "segment_proposals").absolute())
    assert not (out / "final" / "proposals").exists()
    # the final network predicts
    pred = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(out / "final" / "model_final.pth"), "--images"] + [
        str(synth / "images" / "val"), "--out", str(pred), "--device", "cpu", "--no-overlays"]) == 0  # fmt: skip
    assert json.loads((pred / "panoptic_pred.json").read_text())["annotations"]

    stamp = {s: (out / s / "stage.json").stat().st_mtime_ns for s in stages}
    assert main(argv) == 0  # a finished fit runs nothing again
    assert {s: (out / s / "stage.json").stat().st_mtime_ns for s in stages} == stamp
    capsys.readouterr()
    # one round fewer: the final network learns from round 0; nothing before it depends on the change
    assert main([*argv, "fit.rounds=0"]) == 2
    err = capsys.readouterr().err
    assert "stage final was made from other inputs" in err and "--overwrite" in err
    assert main([*argv, "fit.rounds=0", "--overwrite"]) == 0
    after = {s: (out / s / "stage.json").stat().st_mtime_ns for s in stages}
    assert all(after[s] == stamp[s] for s in stages[:6]) and after["final"] != stamp["final"]
    final = yaml.safe_load((out / "final" / "config.yaml").read_text())
    assert final["data"]["pseudo_labels"][0].endswith("round0/labels")


def test_the_crf_guard_changes_the_pseudo_labels_stage_and_what_is_made_from_it(tmp_path, synth):
    """``fit.crf_keep`` is an input of the ``points-crf`` pseudo labels (and so of the networks after them); at 0
    (off) the stages' fingerprints are those of a fit made before the switch existed."""
    from cqbnet.engine.config import load_config
    from cqbnet.recipes.fit import plan_stages

    path = simulated(tmp_path, synth, "P=0.5,PT=0.5")
    manifest = load_manifest(path)
    prints = {}
    for keep in (0.0, 0.5):
        cfg = load_config(fit_config(tmp_path, synth), [f"fit.crf_keep={keep}"])
        stages = plan_stages(cfg, manifest, tmp_path / "f", progress=False)
        prints[keep] = {s.name: s.fingerprint for s in stages}
        pseudo = next(s for s in stages if s.name == "pseudo-labels")
        assert pseudo.inputs.get("crf_keep", 0.0) == keep
    assert prints[0.0]["point-branch"] == prints[0.5]["point-branch"]
    assert prints[0.0]["pseudo-labels"] != prints[0.5]["pseudo-labels"]
    assert prints[0.0]["final"] != prints[0.5]["final"]


def test_thing_cues_in_worker_processes_equal_one_process_and_are_cached(tmp_path, synth, monkeypatch):
    from cqbnet.recipes import prepare
    from cqbnet.recipes.prepare import thing_cue_table

    monkeypatch.setattr(prepare, "POOL_AFTER_SECONDS", 0.0)  # the pool from the first job, however quick the jobs
    m = load_manifest(simulated(tmp_path, synth, "B=1"))
    ids = [im.image_id for im in m.images[:6]]
    one = thing_cue_table(m, ids, workers=1, progress=False)
    cache = tmp_path / "cache"
    two = thing_cue_table(m, ids, workers=2, cache=cache, progress=False)
    assert len(list((cache / "thing_cues").glob("*.npz"))) == len(ids)
    again = thing_cue_table(m, ids, workers=2, cache=cache, progress=False)
    for i in ids:
        for a, b, c in zip(one[i], two[i], again[i]):
            assert np.array_equal(a, b) and np.array_equal(a, c)


def test_the_pool_starts_only_when_the_work_left_outweighs_starting_it(monkeypatch):
    from cqbnet.recipes import prepare

    monkeypatch.setattr(prepare, "POOL_AFTER_SECONDS", 10.0)
    assert not prepare._pool_pays(1, 5, 100, 50.0)  # one worker: never
    assert not prepare._pool_pays(2, 0, 100, 0.0)  # nothing timed yet
    assert not prepare._pool_pays(2, 10, 50, 1.0)  # 0.1 s a job, 5 s left
    assert prepare._pool_pays(2, 10, 50, 3.0)  # 0.3 s a job, 15 s left
    assert not prepare._pool_pays(2, 1, 1, 30.0)  # one job left for two workers
    monkeypatch.setattr(prepare, "POOL_AFTER_SECONDS", 0.0)
    assert prepare._pool_pays(2, 0, 2, 0.0) and not prepare._pool_pays(2, 0, 1, 0.0)


@pytest.mark.slow
def test_thing_cues_as_ray_tasks_equal_one_process(tmp_path, synth):
    """``--ray-address``: the per-image preparation as Ray tasks (here a local Ray instance) gives the same cues."""
    from cqbnet.recipes.prepare import thing_cue_table

    m = load_manifest(simulated(tmp_path, synth, "B=1"))
    ids = [im.image_id for im in m.images[:3]]
    one = thing_cue_table(m, ids, workers=1, progress=False)
    on_ray = thing_cue_table(m, ids, progress=False, ray_address="local")
    for i in ids:
        assert all(np.array_equal(a, b) for a, b in zip(one[i], on_ray[i]))


@pytest.mark.slow
def test_a_fit_killed_mid_stage_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path, synth):
    cfg = fit_config(tmp_path, synth, max_iter=6)
    path = simulated(tmp_path, synth, "P=0.5,PT=0.5")
    base = [sys.executable, "-m", "cqbnet.cli.main", "fit", str(cfg), "--manifest", str(path), "--quiet"]
    base += ["--device", "cpu", "--cache", "none", "--out"]
    subprocess.run([*base, str(tmp_path / "a")], check=True, capture_output=True)
    proc = subprocess.Popen([*base, str(tmp_path / "b")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_at = kill_after_checkpoint(proc, tmp_path / "b" / "point-branch" / "checkpoints" / "last.pth")
    assert killed_at is not None and killed_at < 6, "the fit ended its first stage before it could be killed"
    assert json.loads((tmp_path / "b" / "point-branch" / "stage.json").read_text())["status"] == "running"
    r = subprocess.run([*base, str(tmp_path / "b")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    a, b = (torch.load(tmp_path / x / "final" / "model_final.pth", weights_only=False)["model"] for x in "ab")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_fit_of_in_network_methods_is_the_training_of_cqbnet_train(tmp_path, synth):
    """Masks, tags and boxes learnt inside the network need no stage: the fit's final network is, bit for bit, what
    ``cqbnet train`` makes of the same manifest and config."""
    cfg = fit_config(tmp_path, synth, max_iter=3)
    path = simulated(tmp_path, synth, "P=0.5,I=0.3,B=0.2")
    base = ["--quiet", "--device", "cpu"]
    assert main(["train", str(cfg), f"data.manifest={path}", "--out", str(tmp_path / "t"), *base]) == 0
    assert main(["fit", str(cfg), "--manifest", str(path), "--out", str(tmp_path / "f"), "--cache", "none", *base]) == 0
    assert [s["stage"] for s in json.loads((tmp_path / "f" / "fit.json").read_text())["stages"]] == ["final"]
    a = torch.load(tmp_path / "t" / "model_final.pth", weights_only=False)["model"]
    b = torch.load(tmp_path / "f" / "final" / "model_final.pth", weights_only=False)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("isthing", [True, False], ids=["things only", "stuff only"])
def test_a_mix_fits_on_thing_only_and_stuff_only_label_spaces(tmp_path, synth, isthing, capsys):
    """Every staged method on a label space without stuff (no stuff tags, no CAMs to read) or without things (no
    boxes, no instance to click): the fit runs its stages and the final network predicts only the space's classes."""
    root = restrict_label_space(synth, tmp_path / "space", isthing)
    cfg = fit_config(tmp_path, root)
    cfg.write_text(cfg.read_text().replace("rounds: 1", "rounds: 0"))  # round 0's labels straight to the final net
    path = simulated(tmp_path, root, MIX, "--method", "I=tags-002")
    out = tmp_path / "f"
    argv = ["fit", str(cfg), "--manifest", str(path), "--out", str(out), "--device", "cpu", "--quiet"]
    assert main([*argv, "--cache", "none", "--workers", "1"]) == 0, capsys.readouterr().err
    stages = [s["stage"] for s in json.loads((out / "fit.json").read_text())["stages"]]
    assert stages == ["classifier", "round0", "point-branch", "pseudo-labels", "proposals", "final"]
    pred = tmp_path / "pred"
    ckpt = out / "final" / "model_final.pth"
    assert main(["predict", "--checkpoint", str(ckpt), "--data", str(root), "--split", "val", "--out", str(pred)]) == 0
    space = {c["id"] for c in json.loads((root / "panoptic_val.json").read_text())["categories"]}
    got = json.loads((pred / "panoptic_pred.json").read_text())["annotations"]
    assert len(got) == 12 and all(s["category_id"] in space for a in got for s in a["segments_info"])


@pytest.mark.slow
def test_a_mix_fits_on_coco_sized_images(tmp_path, coco_sample, capsys):
    """Real COCO images (640 px, 21 and 22 things): full masks on one, boxes and tags on the other through
    paper 001's stages (GrabCut and proposals per box), then clicks through the offline CRF recipe."""
    s = coco_sample
    data = {
        "train_json": str(s / "panoptic_examples.json"),
        "train_png": str(s / "panoptic_examples"),
        "train_images": str(s / "input_images"),
        "categories": str(s / "panoptic_coco_categories.json"),
        "max_size": 640,
    }
    cfg = yaml.safe_load(fit_config(tmp_path, tmp_path).read_text())
    cfg["data"] = data
    path = tmp_path / "coco.yaml"
    path.write_text(yaml.safe_dump(cfg))
    gt = ["--gt-json", str(s / "panoptic_examples.json"), "--png-dir", str(s / "panoptic_examples")]
    gt += ["--image-dir", str(s / "input_images"), "--categories", str(s / "panoptic_coco_categories.json")]
    for ratio, staged in (("P=0.5,B+I=0.5", "round0"), ("P=0.5,PT=0.5", "pseudo-labels")):
        labels, out = tmp_path / f"labels_{staged}", tmp_path / f"fit_{staged}"
        assert main(["labels", "simulate", *gt, "--ratio", ratio, "--out", str(labels)]) == 0
        argv = ["fit", str(path), "--manifest", str(labels / "manifest.json"), "--out", str(out), "--quiet"]
        assert main([*argv, "--device", "cpu", "--cache", "none"]) == 0, capsys.readouterr().err
        summary = json.loads((out / "fit.json").read_text())
        assert staged in [st["stage"] for st in summary["stages"]] and (out / "final" / "model_final.pth").is_file()
