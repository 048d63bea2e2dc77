"""The command line end to end, and its answers to bad input (one line, exit code 2, nothing left behind)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from cqbnet.cli.main import main
from cqbnet.data.panoptic_format import load_panoptic_json, read_panoptic_png
from cqbnet.evaluation.perturb import perturb
from helpers import write_prediction


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_console_script_installed():
    r = subprocess.run([sys.executable, "-m", "cqbnet.cli.main", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "demo" in r.stdout


def test_demo_small(tmp_path, capsys):
    code, out, err = run(
        capsys,
        "demo",
        "--out",
        tmp_path / "d",
        "--num-train",
        24,
        "--num-val",
        6,
        "--train-iters",
        2,
        "--device",
        "cpu",
    )
    assert code == 0, err
    assert "cost relative to full panoptic labels" in out
    assert "PQ" in out and (tmp_path / "d" / "pictures" / "predictions.png").is_file()
    assert (tmp_path / "d" / "run" / "final" / "model_final.pth").is_file()  # trained by cqbnet fit
    assert json.loads((tmp_path / "d" / "run" / "fit.json").read_text())["stages"][-1]["stage"] == "final"
    assert (tmp_path / "d" / "pictures" / "label_kinds.png").stat().st_size > 10_000
    assert (tmp_path / "d" / "pictures" / "manifest_labels.png").is_file()
    assert (tmp_path / "d" / "labels" / "manifest.json").is_file()
    # CQB-Net trained on the simulated mix of labels, and the report puts its PQ beside the cost
    assert "labels/manifest.json" in (tmp_path / "d" / "run" / "final" / "config.yaml").read_text()
    assert "of full panoptic labelling gave **PQ" in (tmp_path / "d" / "report.md").read_text()
    # a second demo into the same folder leaves nothing of the first that could look current
    again = ["demo", "--out", tmp_path / "d", "--num-train", 24, "--num-val", 6, "--train-iters", 0, "--ratio", "P=1"]
    assert run(capsys, *again, "--device", "cpu")[0] == 0
    assert not (tmp_path / "d" / "run").exists() and not (tmp_path / "d" / "pictures" / "predictions.png").exists()
    assert "gave **PQ" not in (tmp_path / "d" / "report.md").read_text()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    again[2] = tmp_path / "mine"
    code, _, err = run(capsys, *again, "--device", "cpu")
    assert code == 2 and "--overwrite" in err and (tmp_path / "mine" / "thesis.tex").is_file()


def test_synth_simulate_cost_show(tmp_path, capsys):
    d = tmp_path / "data"
    assert run(capsys, "data", "synth", "--out", d, "--num-train", 20, "--num-val", 4, "--size", 64)[0] == 0
    code, out, _ = run(
        capsys,
        "labels",
        "simulate",
        "--data",
        d,
        "--ratio",
        "P=0.5,B+I=0.3,PT=0.2",
        "--points-per-segment",
        10,
        "--point-sampling",
        "center",
        "--out",
        tmp_path / "m",
    )
    assert code == 0 and "I+B" in out
    m = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert m["info"]["counts"] == {"P": 10, "I+B": 6, "PT": 4}
    code, out, _ = run(capsys, "labels", "cost", "--manifest", tmp_path / "m" / "manifest.json")
    assert code == 0 and "total" in out
    code, out, _ = run(capsys, "labels", "cost", "--ratio", "P=0.29,I=0.355,B=0.29,S=0.065")
    assert code == 0 and "f2 (paper 000, Eq. 2) = 0.3450" in out
    code, out, _ = run(
        capsys, "labels", "show", "--manifest", tmp_path / "m" / "manifest.json", "--out", tmp_path / "pics"
    )
    assert code == 0 and (tmp_path / "pics" / "manifest_labels.png").is_file()


def evaluate(capsys, synth, pred_json, pred_dir, out, *extra):
    """``cqbnet evaluate --ap`` of a prediction against the synthetic val split."""
    gt = ["--gt-json", synth / "panoptic_val.json", "--gt-dir", synth / "panoptic" / "val"]
    pred = ["--pred-json", pred_json, "--pred-dir", pred_dir]
    return run(capsys, "evaluate", *gt, *pred, "--ap", "--out", out, *extra)


def test_evaluate_with_ap(tmp_path, capsys, synth):
    gt = load_panoptic_json(synth / "panoptic_val.json", synth / "panoptic" / "val")
    rng = np.random.default_rng(0)
    preds = {r.image_id: perturb(read_panoptic_png(gt.png_path(r)), r.segments, gt.categories, rng) for r in gt.records}
    pj = write_prediction(tmp_path, preds, gt.categories)
    code, out, _ = evaluate(capsys, synth, pj, tmp_path / "pred", tmp_path / "metrics.json", "--per-class")
    assert code == 0 and "segm AP" in out and "disk" in out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert 0 < metrics["All"]["pq"] < 1 and 0 < metrics["segm"]["AP"] < 1 and 0 < metrics["mIoU"] < 1
    # identity: every metric perfect
    code, out, _ = evaluate(
        capsys, synth, synth / "panoptic_val.json", synth / "panoptic" / "val", tmp_path / "id.json"
    )
    assert code == 0
    ident = json.loads((tmp_path / "id.json").read_text())
    assert ident["All"]["pq"] == 1.0 and ident["segm"]["AP"] == pytest.approx(1.0)
    assert ident["bbox"]["AP"] == pytest.approx(1.0) and ident["mIoU"] == 1.0


@pytest.mark.parametrize(
    "argv, msg",
    [
        (["labels", "simulate", "--data", "{d}", "--ratio", "P=0.5,I=0.4", "--out", "{o}"], "sum to 0.9"),
        (["labels", "simulate", "--data", "{d}", "--ratio", "P=0.5,Z=0.5", "--out", "{o}"], "unknown label kind"),
        (["labels", "simulate", "--data", "{t}/nope", "--ratio", "P=1", "--out", "{o}"], "data folder not found"),
        (["labels", "cost", "--ratio", "P=1", "--costs", "{t}/neg.yaml"], "cost of B must be a finite number"),
        (["evaluate", "--gt-json", "{t}/bad.json", "--pred-json", "{t}/bad.json"], "bad.json: malformed JSON"),
        (["labels", "cost", "--manifest", "{t}/bad.json"], "malformed JSON"),
        (["labels", "cost", "--ratio", "PT=1"], "needs stats.segments_per_image"),
    ],
)
def test_bad_input_exit_2_one_line(tmp_path, capsys, synth, argv, msg):
    (tmp_path / "bad.json").write_text("{")
    (tmp_path / "neg.yaml").write_text("relative: {B: -0.1}\n")
    argv = [a.format(d=synth, o=tmp_path / "out", t=tmp_path) for a in argv]
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert msg in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()  # no partial output


def test_failed_simulation_leaves_nothing(tmp_path, capsys, synth):
    """A PNG that disagrees with its JSON stops the run half way: no manifest folder appears."""
    import shutil

    d = tmp_path / "data"
    shutil.copytree(synth, d)
    gt = json.loads((d / "panoptic_train.json").read_text())
    victim = gt["annotations"][-1]
    victim["segments_info"] = victim["segments_info"][:-1]  # a PNG id now missing from the JSON
    (d / "panoptic_train.json").write_text(json.dumps(gt))
    code, _, err = run(capsys, "labels", "simulate", "--data", d, "--ratio", "B=1", "--out", tmp_path / "m")
    assert code == 2 and "in the PNG but not in the JSON" in err and f"image {victim['image_id']}" in err
    assert not (tmp_path / "m").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".cqbnet-tmp.")]


@pytest.mark.parametrize(
    "argv, msg",
    [
        (["labels", "cost", "--ratio", "P=1", "--num-images", "-5"], "-5 is below 1"),
        (["labels", "cost", "--ratio", "P=1", "--costs", "{t}/free.yaml"], "the cost of P"),
        (["data", "synth", "--out", "{o}", "--seed", "-1"], "-1 is below 0"),
        (["data", "synth", "--out", "{o}", "--max-size", "1000"], "larger than the 128 px image"),
        (["plan", "--preset", "paper-coco", "--population", "0", "--out", "{o}"], "0 is below 2"),
        (["plan", "--preset", "paper-coco", "--bootstrap", "-3", "--out", "{o}"], "-3 is below 0"),
        (["plan", "--preset", "paper-coco", "--quality-target", "-5", "--out", "{o}"], "at least 0"),
        (["plan", "--pilot", "{t}/latin1.csv", "--out", "{o}"], "not a UTF-8 text file"),
        (["evaluate", "--gt-json", "{t}/x.json", "--pred-json", "{t}/x.json", "--workers", "-3"], "-3 is below 1"),
        (["labels", "simulate", "--data", "{d}", "--ratio", "P=1", "--out", "{d}"], "would replace the input"),
        (["labels", "simulate", "--data", "{d}", "--ratio", "P=1", "--out", "{t}/other"], "cqbnet did not write"),
        # an output that cannot be written is refused before any work (here: before reading the missing inputs)
        (["evaluate", "--gt-json", "{t}/x.json", "--pred-json", "{t}/x.json", "--out", "{t}/other"], "is a folder"),
        (
            ["evaluate", "--gt-json", "{t}/x.json", "--pred-json", "{t}/x.json", "--out", "{t}/free.yaml/m.json"],
            "cannot write there",
        ),
        (["plan", "--pilot", "{t}/missing.csv", "--out", "{t}/free.yaml"], "exists and is not a folder"),
    ],
)
def test_bad_numbers_and_outputs_exit_2_one_line(tmp_path, capsys, synth, argv, msg):
    (tmp_path / "free.yaml").write_text("relative: {P: 0}\n")
    (tmp_path / "latin1.csv").write_bytes("study,arm,seed,rho_P,pq_th\nP,full,0,0.1,3\u00e9\n".encode("latin-1"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "mine.txt").write_text("a file of the user's")
    before = sorted(p.name for p in synth.iterdir())
    argv = [a.format(d=synth, o=tmp_path / "out", t=tmp_path) for a in argv]
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert msg in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in synth.iterdir()) == before  # the input is intact
    assert (tmp_path / "other" / "mine.txt").is_file()


def test_outputs_replace_only_what_cqbnet_wrote(tmp_path, capsys):
    d = tmp_path / "data"
    args = ["data", "synth", "--out", d, "--num-train", 2, "--num-val", 1, "--size", 64, "--max-size", 30]
    assert run(capsys, *args)[0] == 0
    assert run(capsys, *args)[0] == 0  # its own output: replaced
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    args[3] = tmp_path / "mine"
    code, _, err = run(capsys, *args)
    assert code == 2 and "--overwrite" in err and (tmp_path / "mine" / "notes.txt").is_file()
    assert run(capsys, *args, "--overwrite")[0] == 0  # replaces what cqbnet writes, keeps the user's files
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert (tmp_path / "mine" / "panoptic_val.json").is_file()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / f".cqbnet-tmp.{dead.stdout.strip()}.data.abc123").mkdir()  # what a killed run left beside its output
    (tmp_path / ".data.bak").mkdir()  # a user's folder that merely looks like a temporary
    assert (
        run(capsys, "data", "synth", "--out", d, "--num-train", 2, "--num-val", 1, "--size", 64, "--max-size", 30)[0]
        == 0
    )
    assert not list(tmp_path.glob(".cqbnet-tmp.*")) and (tmp_path / ".data.bak").is_dir()


def test_truncated_jpeg_is_named(tmp_path):
    import cv2
    import numpy as np

    from cqbnet.data.dataset import read_rgb
    from cqbnet.errors import InputError

    ok, data = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    assert ok
    (tmp_path / "whole.jpg").write_bytes(data.tobytes())
    assert read_rgb(tmp_path / "whole.jpg").shape == (64, 64, 3)
    (tmp_path / "cut.jpg").write_bytes(data.tobytes()[: len(data) // 2])
    with pytest.raises(InputError, match="cut.jpg: truncated JPEG"):
        read_rgb(tmp_path / "cut.jpg")
