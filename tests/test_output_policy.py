"""The output policy: nothing a user owns is deleted, with or without --overwrite, and no input is ever replaced
(the reproductions of the probes' findings, each a command on tiny data)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cqbnet.cli.main import main
from cqbnet.errors import InputError
from cqbnet.io import (
    atomic_directory,
    check_output_dir,
    finish_output_dir,
    foreign_files,
    start_job_dir,
    start_output_dir,
)
from helpers import tiny_model_config

TINY_SYNTH = ["--num-train", 2, "--num-val", 1, "--num-test", 1, "--size", 48, "--max-size", 24]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_step_config(tmp_path: Path, synth: Path) -> Path:
    """A config of the tiny network that trains one step on ``synth``, evaluating nothing."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "data": {"root": str(synth)},
                "model": tiny_model_config(),
                "solver": {"max_iter": 1, "batch_size": 2, "steps": []},
                "train": {"eval_period": 0, "test_at_end": False},
            }
        )
    )
    return cfg


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def cqbnet_folder(path: Path) -> Path:
    """A folder cqbnet wrote: a demo-like tree with a run and its weights."""
    start_output_dir(path)
    (path / "run").mkdir()
    (path / "run" / "model_final.pth").write_bytes(b"weights")
    (path / "report.md").write_text("# report")
    finish_output_dir(path)
    return path


def test_a_checkpoint_inside_the_output_is_an_input_with_or_without_overwrite(tmp_path, capsys):
    """Finding 1: ``predict --checkpoint D/run/model_final.pth --out D`` deleted the whole demo folder."""
    d = cqbnet_folder(tmp_path / "demo")
    before = tree(d)
    for extra in ([], ["--overwrite"]):
        argv = ["predict", "--checkpoint", d / "run" / "model_final.pth", "--images", tmp_path, "--out", d, *extra]
        code, _, err = run(capsys, *argv)
        assert code == 2 and "would replace the input" in err and len(err.strip().splitlines()) == 1
        assert tree(d) == before
    ck = ["--checkpoint", d / "run" / "model_final.pth", "--manifest", tmp_path / "m.json", "--out", d, "--overwrite"]
    for command in (["labels", "approximate"], ["labels", "refine", "--cues", tmp_path], ["pseudo-labels"]):
        code, _, err = run(capsys, *command, *ck)
        assert code == 2 and "would replace the input" in err, (command, err)
        assert tree(d) == before


def test_a_users_file_in_a_folder_cqbnet_wrote_is_never_deleted(tmp_path, capsys):
    """Finding 2: a my_notes.txt inside a generated dataset or a demo folder was deleted without --overwrite."""
    d = tmp_path / "data"
    synth = ["data", "synth", "--out", d, *TINY_SYNTH]
    assert run(capsys, *synth)[0] == 0
    assert run(capsys, *synth)[0] == 0  # only cqbnet's files there: replaced
    (d / "my_notes.txt").write_text("mine")
    code, _, err = run(capsys, *synth)
    assert code == 2 and "my_notes.txt" in err and "--overwrite" in err
    assert run(capsys, *synth, "--overwrite")[0] == 0
    assert (d / "my_notes.txt").read_text() == "mine" and (d / "panoptic_test.json").is_file()
    # a file cqbnet wrote and the user then edited is the user's too
    (d / "panoptic_val.json").write_text("{}")
    assert foreign_files(d) == [Path("my_notes.txt"), Path("panoptic_val.json")]
    # the demo's folder, filled as it goes: the same rule
    demo = cqbnet_folder(tmp_path / "demo")
    (demo / "run" / "my_notes.txt").write_text("mine")
    with pytest.raises(InputError, match="my_notes.txt"):
        start_output_dir(demo)
    start_output_dir(demo, overwrite=True)
    assert (demo / "run" / "my_notes.txt").read_text() == "mine" and not (demo / "report.md").exists()
    finish_output_dir(demo)
    assert foreign_files(demo) == [Path("run/my_notes.txt")]


def test_a_folder_of_an_older_cqbnet_counts_only_files_changed_since_as_the_users(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "a.json").write_text("{}")
    (old / ".cqbnet-output").write_text("written by cqbnet\n")
    os.utime(old / "a.json", ns=(1, 1))
    assert foreign_files(old) == []
    (old / "notes.txt").write_text("mine")
    assert foreign_files(old) == [Path("notes.txt")]


def test_only_cqbnets_temporaries_of_ended_processes_are_cleaned(tmp_path, capsys):
    """Finding 3: every atomic write deleted everything named ``.NAME.*`` beside ``--out NAME``."""
    (tmp_path / ".mylabels.bak").mkdir()
    (tmp_path / ".mylabels.bak" / "x.json").write_text("{}")
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".cqbnet-tmp.{ended.stdout.strip()}.mylabels.k3j"
    stale.mkdir()
    alive = tmp_path / f".cqbnet-tmp.{os.getpid()}.mylabels.z9"  # another output of a process still at work
    alive.mkdir()
    with atomic_directory(tmp_path / "mylabels") as tmp:
        (tmp / "manifest.json").write_text("{}")
    assert (tmp_path / ".mylabels.bak" / "x.json").is_file() and alive.is_dir() and not stale.exists()


def test_a_resumable_job_folder_is_bound_to_its_inputs(tmp_path):
    """Findings 4 and 5: boxes-tags replaced a user's round0/, wrote into the manifest's own folder, and a rerun
    with another manifest reported the old rounds as its result."""
    job = tmp_path / "job"
    start_job_dir(job, [], {"manifest": "aaa", "network": {"lr": 0.02}})
    (job / "round0").mkdir()
    start_job_dir(job, [], {"manifest": "aaa", "network": {"lr": 0.02}})  # the same inputs: continues
    with pytest.raises(InputError, match="other inputs .*manifest"):
        start_job_dir(job, [], {"manifest": "bbb", "network": {"lr": 0.02}})
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="cqbnet did not write"):
        start_job_dir(mine, [], {"manifest": "aaa"})
    with pytest.raises(InputError, match="would replace the input"):
        start_job_dir(tmp_path, [tmp_path / "m.json"], {"manifest": "aaa"})
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        start_job_dir(tmp_path / "file", [], {})


def test_boxes_tags_refuses_outputs_that_hold_its_inputs_or_other_files(tmp_path, capsys, synth):
    m = tmp_path / "labels"
    assert run(capsys, "labels", "simulate", "--data", synth, "--ratio", "B+I=1", "--out", m)[0] == 0
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"root": str(synth)}, "model": tiny_model_config()}))
    (tmp_path / "file").write_text("x")
    for out, msg in ((m, "would replace the input"), (tmp_path / "file", "not a folder")):
        code, _, err = run(capsys, "boxes-tags", cfg, "--manifest", m / "manifest.json", "--out", out)
        assert code == 2 and msg in err and len(err.strip().splitlines()) == 1, err
    (tmp_path / "round0").mkdir()
    (tmp_path / "round0" / "notes.txt").write_text("mine")
    code, _, err = run(capsys, "boxes-tags", cfg, "--manifest", m / "manifest.json", "--out", tmp_path / "round0")
    assert code == 2 and "cqbnet did not write" in err and (tmp_path / "round0" / "notes.txt").is_file()


def test_a_resumed_training_refuses_a_changed_label_mix(tmp_path, capsys, synth):
    """Finding 5: train resumed with a changed data.labels trained on the old labels."""
    cfg = {
        "data": {"root": str(synth), "labels": {"ratio": "P=0.5,B=0.5", "seed": 0}},
        "model": tiny_model_config(),
        "solver": {"max_iter": 2, "batch_size": 2, "base_lr": 0.01, "warmup_iters": 1, "steps": []},
        "train": {"checkpoint_period": 1, "eval_period": 0, "log_period": 1, "test_at_end": False},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    assert run(capsys, "train", path, "--out", out, "--quiet", "--device", "cpu")[0] == 0
    code, _, err = run(capsys, "train", path, "--out", out, "--quiet", "--device", "cpu", "data.labels.ratio=P=1")
    assert code == 2 and "another config" in err and "data.labels" in err, err
    # what may change on resume: logging and evaluation
    code, _, err = run(capsys, "train", path, "--out", out, "--quiet", "--device", "cpu", "train.log_period=5")
    assert code == 0, err


def test_an_output_that_holds_nothing_but_cqbnets_own_files_is_replaced_whole(tmp_path):
    out = tmp_path / "o"
    with atomic_directory(out) as tmp:
        (tmp / "a.txt").write_text("1")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("2")
    with atomic_directory(out) as tmp:
        (tmp / "a.txt").write_text("3")
    assert tree(out).keys() == {".cqbnet-output", "a.txt"}  # nothing stale of the first
    mark = json.loads((out / ".cqbnet-output").read_text())
    assert list(mark["files"]) == ["a.txt"]
    check_output_dir(out)  # replaceable again
    shutil.rmtree(out)


def test_approximate_and_refine_check_their_inputs_before_any_work(tmp_path, capsys, synth):
    """Finding 8: ground truth lacking the manifest's images crashed after the round was written; cue files of
    another manifest or a manifest without boxes gave an empty result with exit 0."""
    full = tmp_path / "full"
    boxes = tmp_path / "boxes"
    assert run(capsys, "labels", "simulate", "--data", synth, "--ratio", "P=1", "--out", full)[0] == 0
    assert run(capsys, "labels", "simulate", "--data", synth, "--ratio", "B+I=1", "--out", boxes)[0] == 0
    out = tmp_path / "r0"
    code, _, err = run(
        capsys, "labels", "approximate", "--manifest", full / "manifest.json", "--cue", "box", "--out", out
    )
    assert code == 2 and "no image carries boxes" in err
    code, _, err = run(
        capsys,
        "labels",
        "approximate",
        "--manifest",
        boxes / "manifest.json",
        "--cue",
        "box",
        "--data",
        synth,
        "--split",
        "val",
        "--out",
        out,
    )
    assert code == 2 and "not in the ground truth" in err and not out.exists()
    # cues written for another manifest (a round of the val images) are named, not silently used
    from cqbnet.labels.manifest import load_manifest
    from cqbnet.labels.rounds import ApproximateRound, write_round
    from cqbnet.weak.approx_ground_truth import round_zero

    val_boxes = tmp_path / "val_boxes"
    gt = [
        "--gt-json",
        synth / "panoptic_val.json",
        "--png-dir",
        synth / "panoptic" / "val",
        "--image-dir",
        synth / "images" / "val",
    ]
    assert run(capsys, "labels", "simulate", *gt, "--ratio", "B+I=1", "--out", val_boxes)[0] == 0
    foreign = write_round(
        tmp_path / "foreign", round_zero(load_manifest(val_boxes / "manifest.json"), cue="box"), "round 0"
    )
    with pytest.raises(InputError, match="labels none of the"):
        ApproximateRound.load(foreign).check_against(load_manifest(boxes / "manifest.json"))
    from cqbnet.labels.dataset import MixedLabelDataset

    with pytest.raises(InputError, match="approximate labels for 0 of the .* made for another manifest"):
        MixedLabelDataset(boxes / "manifest.json", pseudo_labels=foreign)


def test_odd_outputs_get_one_line_and_failed_trainings_leave_nothing(tmp_path, capsys, synth):
    """Finding 9 and the rule that a failed run leaves nothing that looks like a result."""
    (tmp_path / "file").write_text("x")
    cfg = one_step_config(tmp_path, synth)
    code, _, err = run(capsys, "train", cfg, "--out", tmp_path / "file", "--quiet", "--device", "cpu")
    assert code == 2 and "not a folder" in err and (tmp_path / "file").read_text() == "x"
    code, _, err = run(capsys, "labels", "show", "--manifest", tmp_path / "m.json", "--out", tmp_path / "file")
    assert code == 2 and "not a folder" in err
    (tmp_path / "plan" / "pareto.png").mkdir(parents=True)
    code, _, err = run(capsys, "plan", "--preset", "paper-coco", "--out", tmp_path / "plan")
    assert code == 2 and "pareto.png" in err and len(err.strip().splitlines()) == 1
    # a training that fails before its first checkpoint leaves no run folder behind
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"data": {"root": str(tmp_path / "nowhere")}, "model": tiny_model_config()}))
    code, _, err = run(capsys, "train", bad, "--out", tmp_path / "failed", "--quiet", "--device", "cpu")
    assert code == 2 and not (tmp_path / "failed").exists()
    if os.access("/proc", os.W_OK):  # root: the checks pass and the write itself fails
        gt = synth / "panoptic_val.json"
        code, _, err = run(
            capsys,
            "evaluate",
            "--gt-json",
            gt,
            "--gt-dir",
            synth / "panoptic" / "val",
            "--pred-json",
            gt,
            "--pred-dir",
            synth / "panoptic" / "val",
            "--out",
            "/proc/m.json",
        )
        assert code == 2 and len(err.strip().splitlines()) == 1, err


def test_no_command_that_writes_deletes_a_file_it_did_not_write(tmp_path, capsys, synth):
    """Every command with an output, run into a folder that holds a user's file, with and without --overwrite:
    the file is never deleted or changed (some commands refuse, some add their files beside it)."""
    labels = tmp_path / "labels"
    assert run(capsys, "labels", "simulate", "--data", synth, "--ratio", "P=0.5,B+I=0.5", "--out", labels)[0] == 0
    cfg = one_step_config(tmp_path, synth)
    assert run(capsys, "train", cfg, "--out", tmp_path / "net", "--quiet", "--device", "cpu")[0] == 0
    ck = tmp_path / "net" / "model_final.pth"
    commands = {
        "data synth": ["data", "synth", *TINY_SYNTH],
        "labels simulate": ["labels", "simulate", "--data", synth, "--ratio", "P=1"],
        "labels show": ["labels", "show", "--manifest", labels / "manifest.json", "--num", 2],
        "labels approximate": ["labels", "approximate", "--manifest", labels / "manifest.json", "--cue", "box"],
        "plan": ["plan", "--preset", "paper-coco", "--samples", 200],
        "predict": [
            "predict",
            "--checkpoint",
            ck,
            "--data",
            synth,
            "--split",
            "val",
            "--no-overlays",
            "--device",
            "cpu",
        ],
        "train": ["train", cfg, "--quiet", "--device", "cpu"],
        "fit": ["fit", cfg, "--manifest", labels / "manifest.json", "--quiet", "--device", "cpu", "--cache", "none"],
        "demo": ["demo", "--num-train", 12, "--num-val", 2, "--train-iters", 0, "--ratio", "P=1", "--device", "cpu"],
    }
    overwrite = {"data synth", "labels simulate", "labels approximate", "predict", "fit", "demo"}
    for name, argv in commands.items():
        for extra in [[], ["--overwrite"]] if name in overwrite else [[]]:
            out = tmp_path / f"out_{name.replace(' ', '_')}{len(extra)}"
            out.mkdir()
            (out / "mine.txt").write_text("years of work")
            code, _, err = run(capsys, *argv, "--out", out, *extra)
            assert code in (0, 2), (name, extra, err)
            assert (out / "mine.txt").read_text() == "years of work", (name, extra)
            if code == 2:
                assert len(err.strip().splitlines()) == 1 and "did not write" in err, (name, err)
