"""The training engine: configs, schedule, exact resume after SIGKILL, NaN stop, DDP on CPU, predict/evaluate CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from cqbnet.cli.main import main
from cqbnet.engine.config import load_config
from cqbnet.engine.data import StreamDataset, batch_positions
from cqbnet.engine.trainer import TrainingDiverged, lr_factor, train
from cqbnet.errors import InputError
from helpers import kill_after_checkpoint, tiny_model_config

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(tmp_path: Path, synth: Path, **solver) -> Path:
    cfg = {
        "data": {"root": str(synth)},
        "model": tiny_model_config(),
        "solver": {"max_iter": 6, "batch_size": 2, "base_lr": 0.01, "warmup_iters": 2, "steps": [4], **solver},
        "train": {"checkpoint_period": 1, "eval_period": 0, "log_period": 1},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_config_defaults_overrides_and_errors(tmp_path):
    cfg = load_config(ROOT / "configs" / "synthetic_full.yaml", ["solver.max_iter=7", "model.panoptic.stride=4"])
    assert cfg["solver"]["max_iter"] == 7
    assert cfg["model"]["panoptic"]["stride"] == 4 and cfg["model"]["panoptic"]["min_thing_area"] == 8  # merged
    assert cfg["solver"]["momentum"] == 0.9  # default kept
    with pytest.raises(InputError, match="unknown config key 'solver.max_iters'"):
        load_config(None, ["solver.max_iters=5"])
    with pytest.raises(InputError, match="is not KEY=VALUE"):
        load_config(None, ["solver.max_iter"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2]\n")
    with pytest.raises(InputError, match="model must be a mapping"):
        load_config(bad)


def test_config_base_inheritance(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(
        "data:\n  synthetic: {num_train: 20, size: 64, preset: realistic}\n  flip: true\n"
        "model:\n  fpn_channels: 32\n  weak: {box2mask_warmup: 50}\nsolver: {max_iter: 100, steps: [60, 80]}\n"
    )
    (tmp_path / "sub").mkdir()
    child = tmp_path / "sub" / "child.yaml"
    child.write_text(
        "_base_: ../base.yaml\ndata:\n  synthetic: {num_train: 10, preset: dense}\n"
        "model:\n  weak: {points: true}\nsolver: {steps: [70]}\n"
    )
    cfg = load_config(child, ["solver.max_iter=90"])
    assert cfg["data"]["synthetic"] == {"num_train": 10, "preset": "dense"}  # a scene set is replaced whole
    assert cfg["data"]["flip"] is True and cfg["model"]["fpn_channels"] == 32  # the rest is inherited
    assert cfg["model"]["weak"] == {"box2mask_warmup": 50, "points": True}  # mappings merge
    assert cfg["solver"]["steps"] == [70] and cfg["solver"]["max_iter"] == 90  # lists replace; overrides last
    grand = tmp_path / "grand.yaml"
    grand.write_text("_base_: sub/child.yaml\nmodel: {fpn_channels: 16}\n")
    assert load_config(grand)["model"]["weak"]["points"] is True and load_config(grand)["model"]["fpn_channels"] == 16
    loop = tmp_path / "loop.yaml"
    loop.write_text("_base_: loop2.yaml\n")
    (tmp_path / "loop2.yaml").write_text("_base_: loop.yaml\n")
    with pytest.raises(InputError, match="chain returns to loop.yaml"):
        load_config(loop)
    missing = tmp_path / "missing.yaml"
    missing.write_text("_base_: nowhere.yaml\n")
    with pytest.raises(InputError, match="missing.yaml: _base_ 'nowhere.yaml' is not a file"):
        load_config(missing)


def test_weak_modules_as_blocks(tmp_path):
    """``model.weak`` one block per module, in a file, over a base's flat keys, and as an override."""
    base = tmp_path / "base.yaml"
    base.write_text("model:\n  weak: {points: true, points_warmup: 50, box2mask_warmup: 7}\n")
    child = tmp_path / "child.yaml"
    child.write_text("_base_: base.yaml\nmodel:\n  weak:\n    points: {lambda_sem: 0.1}\n    jtsm: {enabled: true}\n")
    weak = load_config(child, ["model.weak.points.clicked_only=true", "model.weak.cls2box.enabled=false"])["model"][
        "weak"
    ]
    assert weak == {
        "points": True,
        "points_warmup": 50,
        "points_lambda_sem": 0.1,
        "points_clicked_only": True,
        "box2mask_warmup": 7,
        "jtsm": True,
        "cls2box": False,
    }
    with pytest.raises(InputError, match=r"model.weak.frames is not a weak module's block"):
        load_config(None, ["model.weak.frames.enabled=true"])
    with pytest.raises(InputError, match="unknown key model.weak.points_lambda;"):
        load_config(None, ["model.weak.points.lambda=1"])


def test_shipped_recipe_configs_state_only_what_differs():
    """Each recipe config inherits the CPU recipe and states what it changes: the point recipe trains with
    paper 000's modules off, as its benchmark measured it (``tests/test_recipes.py``)."""
    configs = ROOT / "configs"
    for name in ("synthetic_points", "synthetic_tags", "synthetic_pilot", "synthetic_dense"):
        assert "_base_: synthetic_full.yaml" in (configs / f"{name}.yaml").read_text()
    points = load_config(configs / "synthetic_points.yaml")
    full = load_config(configs / "synthetic_full.yaml")
    assert points["solver"] == {**full["solver"], "base_lr": 0.01}
    assert points["model"]["weak"] == {
        **full["model"]["weak"],
        "points": True,
        "points_lambda_sem": 1.0,
        "points_warmup": 500,
        "points_clicked_only": True,
        **{module: False for module in ("box2mask", "cls2box", "cls2pixel", "relation")},
    }
    dense = load_config(configs / "synthetic_dense.yaml")
    assert dense["data"]["synthetic"] == {
        "num_train": 1000,
        "num_val": 200,
        "num_test": 200,
        "seed": 0,
        "preset": "dense",
    }
    assert dense["model"]["panoptic"]["stride"] == 2 and dense["solver"]["batch_size"] == 4


def test_every_shipped_config_builds_its_model(synth, coco_sample):
    """Each config under configs/ builds its network (every key of model.panoptic and model.weak is checked
    by the constructors); one whose weights file is missing here is built as a checkpoint would be, and the
    COCO config, whose weights must be named, refuses to start from a frozen random backbone."""
    from cqbnet.data.dataset import PanopticDataset
    from cqbnet.data.panoptic_format import load_categories
    from cqbnet.engine.trainer import build_model
    from cqbnet.modeling.backbone import resolve_weights

    synthetic = PanopticDataset(synth / "panoptic_train.json", synth / "panoptic" / "train").categories
    coco = load_categories(coco_sample / "panoptic_coco_categories.json")
    built = []
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        if path.name.startswith("costs"):
            continue
        cfg = load_config(path)
        cats = coco if cfg["data"]["train_json"] and "coco" in cfg["data"]["train_json"] else synthetic
        model_cfg = cfg["model"]
        if model_cfg["weights"] is None:
            with pytest.raises(InputError, match="model.weights is null"):
                build_model(cats, model_cfg)
            model = build_model(cats, model_cfg, from_checkpoint=True)
        else:
            try:
                resolve_weights(model_cfg["weights"])
                have = True
            except InputError:  # the weights package is not installed here
                have = False
            model = build_model(cats, model_cfg) if have else build_model(cats, {**model_cfg, "weights": None}, True)
        assert model.labels.num_classes == len(cats)
        built.append(path.name)
    assert "coco_r50_cascade.yaml" in built and "synthetic_full.yaml" in built


def test_settings_keys_are_checked_by_name(synth):
    from cqbnet.data.dataset import PanopticDataset
    from cqbnet.engine.trainer import build_model

    cats = PanopticDataset(synth / "panoptic_train.json", synth / "panoptic" / "train").categories
    cfg = load_config(None)["model"]
    small = {**cfg, **tiny_model_config()}
    with pytest.raises(InputError, match=r"model.panoptic.min_area; it is now min_thing_area and min_stuff_area"):
        build_model(cats, {**small, "panoptic": {"min_area": 4}})
    with pytest.raises(InputError, match=r"unknown key model.weak.box2msk"):
        build_model(cats, {**small, "weak": {"box2msk": False}})


def test_warmup_and_step_schedule():
    s = {"gamma": 0.1, "steps": [10, 20], "warmup_iters": 5, "warmup_factor": 0.001}
    assert lr_factor(0, s) == pytest.approx(0.001)
    assert lr_factor(5, s) == 1.0
    assert lr_factor(10, s) == pytest.approx(0.1)
    assert lr_factor(25, s) == pytest.approx(0.01)
    assert lr_factor(0, s) < lr_factor(2, s) < lr_factor(4, s) < 1.0


def test_data_stream_is_a_function_of_seed_and_position(synth):
    from cqbnet.data.dataset import PanopticDataset

    ds = PanopticDataset(synth / "panoptic_train.json", synth / "panoptic" / "train", synth / "images" / "train")
    a, b = StreamDataset(ds, 5), StreamDataset(ds, 5)
    n = len(ds)
    first_epoch = [a.index(p) for p in range(n)]
    assert sorted(first_epoch) == list(range(n))  # a permutation per epoch
    assert [b.index(p) for p in reversed(range(2 * n))] == [a.index(p) for p in reversed(range(2 * n))]
    assert [a.index(p) for p in range(n, 2 * n)] != first_epoch
    assert batch_positions(3, 2, world=2, rank=1) == [14, 15]
    x1, _ = a[7]
    x2, _ = b[7]
    assert torch.equal(x1, x2)


def _final_weights(out: Path) -> dict:
    return torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)["model"]


def test_resume_after_sigkill_gives_identical_weights(tmp_path, synth):
    cfg = tiny_config(tmp_path, synth)
    base = [sys.executable, "-m", "cqbnet.cli.main", "train", str(cfg), "--quiet", "--device", "cpu"]
    subprocess.run([*base, "--out", str(tmp_path / "a")], check=True, capture_output=True)
    proc = subprocess.Popen([*base, "--out", str(tmp_path / "b")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_at = kill_after_checkpoint(proc, tmp_path / "b" / "checkpoints" / "last.pth")
    assert killed_at is not None and killed_at < 6, "the run ended before it could be killed"
    assert not (tmp_path / "b" / "model_final.pth").exists()
    r = subprocess.run([*base, "--out", str(tmp_path / "b")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    a, b = _final_weights(tmp_path / "a"), _final_weights(tmp_path / "b")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    iters = [json.loads(line)["iter"] for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert iters == [1, 2, 3, 4, 5, 6]  # lines past the checkpoint were dropped on resume


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, synth, monkeypatch):
    from cqbnet.network.panoptic_net import PanopticNet

    cfg = load_config(tiny_config(tmp_path, synth))
    forward = PanopticNet.forward
    calls = {"n": 0}

    def poisoned(self, images, targets=None, mode="argmax"):
        out = forward(self, images, targets, mode)
        if self.training:
            calls["n"] += 1
            if calls["n"] == 4:
                out["loss_mask"] = out["loss_mask"] * float("nan")
        return out

    monkeypatch.setattr(PanopticNet, "forward", poisoned)
    with pytest.raises(TrainingDiverged, match=r"non-finite loss at iteration 4 .*loss_mask nan.*iteration 3\)"):
        train(cfg, tmp_path / "run", progress=False)
    ck = torch.load(tmp_path / "run" / "checkpoints" / "last.pth", weights_only=False)
    assert ck["iteration"] == 3
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def test_ddp_two_processes_on_cpu(tmp_path, synth):
    cfg = tiny_config(tmp_path, synth, max_iter=3, batch_size=1)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29517",
            "-m",
            "cqbnet.cli.main",
            "train",
            str(cfg),
            "--quiet",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "ddp"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [row["iter"] for row in rows] == [1, 2, 3]
    ck = torch.load(tmp_path / "ddp" / "checkpoints" / "last.pth", weights_only=False)
    assert len(ck["rng"]) == 2  # one RNG state per process
    assert (tmp_path / "ddp" / "model_final.pth").is_file()


def test_cli_train_predict_evaluate(tmp_path, synth, capsys):
    cfg = tiny_config(tmp_path, synth)
    code, out, err = run(
        capsys,
        "train",
        cfg,
        "--out",
        tmp_path / "run",
        "--quiet",
        "--device",
        "cpu",
        "train.eval_period=6",
        "train.eval_images=4",
    )
    assert code == 0, err
    assert "PQ" in out
    # the finished network is reported on the held-out test split (6 scenes), in the config's mode
    test = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    assert (test["split"], test["mode"], test["images"]) == ("test", "argmax", 6)
    assert "test split: PQ" in out
    ck = tmp_path / "run" / "model_final.pth"
    code, out, err = run(
        capsys,
        "predict",
        "--checkpoint",
        ck,
        "--data",
        synth,
        "--split",
        "val",
        "--out",
        tmp_path / "pred",
        "--device",
        "cpu",
    )
    assert code == 0, err
    pred = json.loads((tmp_path / "pred" / "panoptic_pred.json").read_text())
    assert len(pred["annotations"]) == 12
    assert len(list((tmp_path / "pred" / "overlays").glob("*.png"))) == 12
    # the written files score exactly what the in-memory evaluation of the checkpoint scores
    gt = ["--gt-json", synth / "panoptic_val.json", "--gt-dir", synth / "panoptic" / "val"]
    pred = tmp_path / "pred"
    files = ["--pred-json", pred / "panoptic_pred.json", "--pred-dir", pred / "panoptic_pred"]
    model = ["--image-dir", synth / "images" / "val", "--checkpoint", ck, "--device", "cpu"]
    for source, out in ((files, "m1.json"), (model, "m2.json")):
        code, _, err = run(capsys, "evaluate", *gt, *source, "--out", tmp_path / out)
        assert code == 0, err
    m1 = json.loads((tmp_path / "m1.json").read_text())
    m2 = json.loads((tmp_path / "m2.json").read_text())
    assert m1["All"] == pytest.approx(m2["All"], abs=1e-12) and m1["Things"] == pytest.approx(m2["Things"], abs=1e-12)
    code, _, err = run(
        capsys,
        "predict",
        "--checkpoint",
        ck,
        "--images",
        synth / "images" / "val",
        "--out",
        tmp_path / "pred2",
        "--mode",
        "heuristic",
        "--no-overlays",
        "--device",
        "cpu",
    )
    assert code == 0, err
    assert len(list((tmp_path / "pred2" / "panoptic_pred").glob("*.png"))) == 12


def test_cli_engine_bad_input(tmp_path, synth, capsys):
    code, _, err = run(capsys, "train", tmp_path / "missing.yaml", "--out", tmp_path / "x")
    assert code == 2 and "config not found" in err
    cfg = tiny_config(tmp_path, synth)
    code, _, err = run(capsys, "train", cfg, "model.panoptic.colour=1", "--out", tmp_path / "x", "--quiet")
    assert code == 2 and "colour" in err
    code, _, err = run(
        capsys, "predict", "--checkpoint", tmp_path / "none.pth", "--images", synth, "--out", tmp_path / "p"
    )
    assert code == 2 and "checkpoint not found" in err


def test_evaluate_refuses_a_checkpoint_of_another_label_set(tmp_path, synth, coco_sample, capsys):
    cfg = tiny_config(tmp_path, synth, max_iter=1)
    assert run(capsys, "train", cfg, "--out", tmp_path / "run", "--quiet", "--device", "cpu")[0] == 0
    s = coco_sample
    code, _, err = run(
        capsys,
        "evaluate",
        "--checkpoint",
        tmp_path / "run" / "model_final.pth",
        "--gt-json",
        s / "panoptic_examples.json",
        "--gt-dir",
        s / "panoptic_examples",
        "--image-dir",
        s / "input_images",
        "--categories",
        s / "panoptic_coco_categories.json",
        "--device",
        "cpu",
    )
    assert code == 2 and "the model was trained on category 1 'disk'" in err and err.count("\n") == 1


def test_checkpoints_from_before_the_weak_modules_load_and_bad_ones_are_named(tmp_path, synth, capsys):
    import torch

    from cqbnet.engine.checkpoint import load_checkpoint, save_checkpoint
    from cqbnet.engine.trainer import load_model

    cfg = tiny_config(tmp_path, synth, max_iter=1)
    assert run(capsys, "train", cfg, "--out", tmp_path / "run", "--quiet", "--device", "cpu")[0] == 0
    ck = load_checkpoint(tmp_path / "run" / "model_final.pth")
    weak_heads = ("relation.", "cls2box.", "cls2pixel.")

    def save(name, state):
        save_checkpoint(tmp_path / name, **{**ck, "model": state})
        return tmp_path / name

    old = save("old.pth", {k: v for k, v in ck["model"].items() if not k.startswith(weak_heads)})
    model, _ = load_model(old, torch.device("cpu"))  # trained before those modules: inference without them
    assert model.relation is None
    image = torch.rand(3, 64, 64)
    with torch.no_grad():
        assert model([image])[0].ids.shape == (64, 64)
    assert load_model(tmp_path / "run" / "model_final.pth", torch.device("cpu"))[0].relation is not None
    key = next(k for k in ck["model"] if k.startswith("backbone."))
    cases = [
        ({k: v for k, v in ck["model"].items() if k != key}, "weights missing from the checkpoint: " + key),
        ({**ck["model"], "extra.weight": torch.zeros(1)}, "does not have: extra.weight"),
        ({**ck["model"], key: torch.zeros(1)}, "weights do not fit the configured network"),
    ]
    for i, (state, message) in enumerate(cases):
        with pytest.raises(InputError, match=message.replace(".", r"\.")):
            load_model(save(f"bad{i}.pth", state), torch.device("cpu"))


@pytest.mark.parametrize(
    "override, message",
    [
        ("solver.max_iter=abc", "solver.max_iter must be an integer, got 'abc'"),
        ("solver.base_lr=abc", "solver.base_lr must be a number"),
        ("solver.steps=abc", "solver.steps must be a list"),
        ("solver.batch_size=0", "solver.batch_size must be at least 1"),
        ("train.checkpoint_period=0", "train.checkpoint_period must be at least 1"),
        ("solver.max_iter=-5", "solver.max_iter must be at least 1"),
        ("solver.base_lr=0", "solver.base_lr must be above 0"),
        ("pilot.seeds=abc", "pilot.seeds must be a list"),
        ("pilot.seeds=[0,x]", "pilot.seeds must be an integer, got 'x'"),
        ("solver.amp=3", "solver.amp must be a boolean"),
        # the newer modules' and label settings (the probes' finding 7): typed and ranged before any work
        ("model.weak.points=abc", "model.weak.points must be true or false, got 'abc'"),
        ("model.weak.points_heads=5", "points_dim (64) must be divisible by model.weak.points_heads (5)"),
        ("model.weak.points_dim=-4", "model.weak.points_dim must be an integer of at least 1, got -4"),
        ("model.weak.points_layers=0", "model.weak.points_layers must be an integer of at least 1, got 0"),
        ("model.weak.jtsm_warmup=abc", "model.weak.jtsm_warmup must be an integer of at least 0, got 'abc'"),
        ("model.weak.points_lambda_sem=-1", "model.weak.points_lambda_sem must be a number >= 0"),
        ("model.weak.cls2box_mode=both", "model.weak.cls2box_mode must be one of paper, pseudo"),
        ("model.weak.jtsm_lr_scale=0", "model.weak.jtsm_lr_scale must be above 0"),
        ("model.weak.pointz=true", "unknown key model.weak.pointz"),
        ("data.labels={ratio: PT=1, seed: abc}", "data.labels.seed must be an integer, got 'abc'"),
        ("data.labels={seed: 0}", "data.labels must be a mapping with a ratio"),
        ("data.labels={ratio: PT=2}", "data.labels.ratio"),
        ("data.labels={ratio: PT=1, point_sampling: corner}", "data.labels.point_sampling must be one of"),
        ("data.pseudo_labels=5", "data.pseudo_labels must be a path or a list of paths, got 5"),
        ("data.pseudo_labels=[r0, 3]", "data.pseudo_labels must be a path or a list of paths"),
        ("data.pseudo_labels=r0", "data.pseudo_labels labels a manifest's images; it needs data.manifest"),
        ("data.approximate=r0", "unknown config key 'data.approximate'; it is now data.pseudo_labels"),
        ("data.pseudo=r0", "unknown config key 'data.pseudo'; it is now data.pseudo_labels"),
    ],
)
def test_config_values_are_checked_when_read(tmp_path, synth, override, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(tiny_config(tmp_path, synth), [override])


def test_labels_beside_a_manifest_are_refused_not_ignored(tmp_path, synth):
    with pytest.raises(InputError, match="data.labels .* or data.manifest .*, not both"):
        load_config(tiny_config(tmp_path, synth), ["data.labels={ratio: P=1}", "data.manifest=m.json"])
    load_config(ROOT / "configs" / "synthetic_points.yaml", ["data.labels=null", "data.manifest=m.json"])


def test_devices_and_counts_on_the_command_line_are_checked(tmp_path, synth, capsys):
    cfg = tiny_config(tmp_path, synth, max_iter=1)
    assert run(capsys, "train", cfg, "--out", tmp_path / "run", "--quiet", "--device", "cpu")[0] == 0
    ck = tmp_path / "run" / "model_final.pth"
    gt = ["--gt-json", synth / "panoptic_val.json", "--gt-dir", synth / "panoptic" / "val"]
    for argv in (
        ["predict", "--checkpoint", ck, "--images", synth / "images" / "val", "--out", tmp_path / "p"],
        ["evaluate", *gt, "--checkpoint", ck, "--image-dir", synth / "images" / "val"],
    ):
        if not torch.cuda.is_available():
            code, _, err = run(capsys, *argv, "--device", "cuda")
            assert code == 2 and "no CUDA device is available" in err and len(err.strip().splitlines()) == 1
        code, _, err = run(capsys, *argv, "--device", "banana")
        assert code == 2 and "not a device" in err and len(err.strip().splitlines()) == 1
    for limit in ("0", "-1"):
        code, _, err = run(capsys, "evaluate", *gt, "--checkpoint", ck, "--image-dir", synth, "--limit", limit)
        assert code == 2 and "--limit" in err
    code, _, err = run(capsys, "evaluate", *gt, "--pred-json", synth / "panoptic_val.json", "--workers", "-3")
    assert code == 2 and "--workers" in err


def test_interrupted_and_changed_runs_resume_or_say_why(tmp_path, synth, capsys):
    """A half-written last metrics line (a kill) is dropped on resume; a changed model is refused in one line; a
    temporary file that a killed checkpoint save left is removed by the next save."""
    cfg = tiny_config(tmp_path, synth, max_iter=2)
    out = tmp_path / "run"
    assert run(capsys, "train", cfg, "--out", out, "--quiet", "--device", "cpu", "solver.max_iter=1")[0] == 0
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"iter": 2, "lo')  # killed mid-line
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = out / "checkpoints" / f".cqbnet-tmp.{ended.stdout.strip()}.last.pth.dead0001.pth"
    left.write_bytes(b"half a checkpoint")
    code, _, err = run(capsys, "train", cfg, "--out", out, "--quiet", "--device", "cpu")
    assert code == 0, err
    iters = [json.loads(line)["iter"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert iters == [1, 2]
    assert not left.exists()
    code, _, err = run(
        capsys, "train", cfg, "--out", out, "--quiet", "--device", "cpu", "model.fpn_channels=8", "solver.max_iter=3"
    )
    assert code == 2 and "made with another config (model.fpn_channels" in err and len(err.strip().splitlines()) == 1


def test_a_validation_split_that_cannot_be_read_stops_training(tmp_path, synth, capsys):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(synth, data)
    (data / "panoptic_val.json").write_text("{")
    cfg = tiny_config(tmp_path, data, max_iter=1)
    code, _, err = run(
        capsys, "train", cfg, "--out", tmp_path / "run", "--quiet", "--device", "cpu", "train.eval_period=1"
    )
    assert code == 2 and "panoptic_val.json" in err and "malformed JSON" in err
    assert not (tmp_path / "run" / "model_final.pth").exists()


def test_predict_keeps_inputs_and_every_prediction(tmp_path, synth, capsys):
    import shutil

    cfg = tiny_config(tmp_path, synth, max_iter=1)
    assert run(capsys, "train", cfg, "--out", tmp_path / "run", "--quiet", "--device", "cpu")[0] == 0
    ck = tmp_path / "run" / "model_final.pth"
    images = tmp_path / "images"
    images.mkdir()
    src = sorted((synth / "images" / "val").iterdir())[0]
    shutil.copy(src, images / "a.png")
    import cv2

    cv2.imwrite(str(images / "a.jpg"), cv2.imread(str(src)))
    code, _, err = run(capsys, "predict", "--checkpoint", ck, "--images", images, "--out", images, "--device", "cpu")
    assert (
        code == 2
        and "would replace the input" in err
        and sorted(p.name for p in images.iterdir()) == ["a.jpg", "a.png"]
    )
    out = tmp_path / "pred"
    assert run(capsys, "predict", "--checkpoint", ck, "--images", images, "--out", out, "--device", "cpu")[0] == 0
    written = json.loads((out / "panoptic_pred.json").read_text())
    names = sorted(a["file_name"] for a in written["annotations"])
    assert len(names) == 2 and len(set(names)) == 2
    assert all((out / "panoptic_pred" / n).is_file() for n in names)


def _wrong_value(default):
    """A value of another type than ``default``'s (for a path: a number)."""
    if isinstance(default, bool) or isinstance(default, (int, float)) or isinstance(default, list):
        return "abc"
    return 5


def test_every_config_key_has_a_type_and_every_number_a_range(tmp_path, synth):
    """A walk over every setting of every section: a value of the wrong type is refused in one line naming the
    key, and so is a number below its minimum."""
    from cqbnet.engine.config import DEFAULTS, FREE_FORM, MINIMUM, NONE_DEFAULT_TYPES, PATHS
    from cqbnet.network.build import weak_defaults

    path = tiny_config(tmp_path, synth)
    keys = [
        (f"{sec}.{k}", NONE_DEFAULT_TYPES.get(f"{sec}.{k}", v))
        for sec, values in DEFAULTS.items()
        for k, v in values.items()
        if k not in FREE_FORM and k not in ("labels",)
    ]
    keys += [(f"model.weak.{k}", v) for k, v in weak_defaults().items()]
    # check_weak takes a None-default weak setting as a path; check_data takes data.pseudo_labels as paths
    paths = PATHS | {"model.weak.jtsm_cache", "data.pseudo_labels"}
    untyped = [k for k, v in keys if v is None and k not in paths]
    assert not untyped, f"settings without a type: {untyped}"
    for key, default in keys:
        value = _wrong_value(default)
        with pytest.raises(InputError, match=re.escape(key)):
            load_config(path, [f"{key}={value}"])
    for key, low in MINIMUM.items():
        with pytest.raises(InputError, match=re.escape(key)):
            load_config(
                path,
                [f"{key}={[low - 1] if isinstance(DEFAULTS[key.split('.')[0]][key.split('.')[1]], list) else low - 1}"],
            )


def test_scenes_made_from_other_settings_are_never_reused(tmp_path):
    from cqbnet.engine.data import ensure_synthetic

    syn = {"num_train": 3, "num_val": 2, "num_test": 1, "seed": 0, "size": 48, "max_size": 24}
    ensure_synthetic({"synthetic": syn, "root": None}, tmp_path)
    ensure_synthetic({"synthetic": syn, "root": None}, tmp_path)  # the same: reused
    for key, value in (("seed", 1), ("num_train", 4), ("size", 64)):
        with pytest.raises(InputError, match=f"data.synthetic.{key}="):
            ensure_synthetic({"synthetic": {**syn, key: value}, "root": None}, tmp_path)
