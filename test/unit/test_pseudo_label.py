"""Pseudo-labelling: exact thresholds, the manifest, resuming an interrupted run, a frozen
teacher, and the store a student reads."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mtl_perception.core.contracts import DatasetInfo, RawFrame
from mtl_perception.core.models.registry import build_model
from mtl_training.apps.train_cli import main
from mtl_training.config import ExperimentConfig, ModelConfig, PseudoLabelConfig
from mtl_training.data.datasets import MultiTaskDataset
from mtl_training.data.sources.folder import read_png
from mtl_training.pseudo import PseudoLabelError
from mtl_training.pseudo.run import frames_to_label, run_pseudo_label
from mtl_training.pseudo.store import JOURNAL, MANIFEST, PseudoLabelStore
from mtl_training.pseudo.teacher import file_sha256, load_teacher
from mtl_training.pseudo.thresholds import (
    apply_thresholds,
    class_thresholds,
    confidence_histogram,
    depth_keep,
    seg_confidence,
)
from mtl_training.source_config import source_specs

H, W, NC = 12, 16, 3


def _logits_from_probs(p_top: np.ndarray, cls: np.ndarray, num_classes: int) -> torch.Tensor:
    """[C, H, W] logits whose softmax puts p_top on `cls` and the rest evenly on the others."""
    probs = np.repeat(((1 - p_top) / (num_classes - 1))[None], num_classes, axis=0)
    np.put_along_axis(probs, cls[None], p_top[None], axis=0)
    return torch.from_numpy(np.log(probs)).float()


def test_global_tau_thresholding_is_exact():
    p = np.array([[0.99, 0.91, 0.89], [0.50, 0.95, 0.70]])
    cls = np.array([[0, 1, 2], [1, 2, 0]])
    conf, arg = seg_confidence(_logits_from_probs(p, cls, NC))
    assert np.array_equal(arg, cls)
    labels = apply_thresholds(conf, arg, class_thresholds(NC, 0.9))
    assert labels.dtype == np.uint8
    assert labels.tolist() == [[0, 1, 255], [255, 2, 255]]
    assert apply_thresholds(conf, arg, class_thresholds(NC, 0.6)).tolist() == [[0, 1, 2],
                                                                               [255, 2, 0]]


def test_per_class_thresholds_rescue_a_rare_unsure_class():
    # class 0: confident (0.99 .. 0.6); class 1 (rare): never above 0.7
    p = np.array([[0.99, 0.97, 0.95, 0.60], [0.70, 0.65, 0.62, 0.55]])
    cls = np.array([[0, 0, 0, 0], [1, 1, 1, 1]])
    conf, arg = seg_confidence(_logits_from_probs(p, cls, NC))
    hist = confidence_histogram(conf, arg, NC)
    assert hist.sum(axis=1).tolist() == [4, 4, 0]
    thr = class_thresholds(NC, 0.9, "per_class", hist, quantile=0.5)
    # class 0: min(tau, median 0.95..0.97 -> lower edge of 0.95's bin) = tau; class 2 unseen = tau
    assert thr[0] == 0.9 and thr[2] == 0.9
    # class 1: its median sits in the bin of 0.62 (2 of 4 values at or below it)
    assert 0.6199 <= thr[1] <= 0.62
    labels = apply_thresholds(conf, arg, thr)
    assert labels.tolist() == [[0, 0, 0, 255], [1, 1, 1, 255]]
    global_labels = apply_thresholds(conf, arg, class_thresholds(NC, 0.9))
    assert (global_labels == 1).sum() == 0  # the global tau starves class 1 completely


def test_depth_validity_rule():
    pred = np.array([2.0, 2.0, 5.0, 9.95, 0.0])
    flip = np.array([2.05, 2.2, 5.1, 9.95, 0.0])
    assert depth_keep(pred, flip, 10.0, 0.05).tolist() == [True, False, True, False, False]


# -- end to end on a tiny in-memory world -----------------------------------------------------
class TinySource:
    def __init__(self, n: int = 8) -> None:
        self.n = n
        self.info = DatasetInfo("tiny", ["a", "b", "c"], [[0, 0, 0], [9, 9, 9], [99, 99, 99]],
                                10.0)

    def __len__(self) -> int:
        return self.n

    def frame(self, index: int) -> RawFrame:
        rng = np.random.default_rng(index)
        rgb = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
        seg = rng.integers(0, NC, (H, W)).astype(np.uint8)
        depth = (1.0 + seg + rng.random((H, W))).astype(np.float32)
        return RawFrame(rgb, depth, seg, None, {"frame_id": f"f{index:02d}"})


def _dataset(aux: str = "depth") -> MultiTaskDataset:
    keep_seg = np.array([True, True, False, False, False, False, False, True])
    keep_depth = np.array([True, True, True, True, True, True, False, False])
    if aux == "seg":  # reverse direction: segmentation plentiful, depth scarce
        keep_seg, keep_depth = keep_depth, keep_seg
    return MultiTaskDataset(TinySource(), (8, 12), keep_seg=keep_seg, keep_depth=keep_depth)


def _save_teacher(path: Path, aux: str = "depth") -> Path:
    torch.manual_seed(1)
    cfg = ExperimentConfig()
    cfg.model = ModelConfig(arch="teacher", aux_input=aux, num_classes=NC, decoder_channels=4,
                            decoder_convs=1)
    model = build_model(cfg.model.spec())
    model.train()
    with torch.no_grad():  # move BN running stats off their defaults so eval() matters
        model(torch.randn(2, 3, 8, 12),
              torch.rand(2, 1, 8, 12) * 5 if aux == "depth" else torch.randint(0, NC, (2, 8, 12)))
    path.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "config": cfg.to_dict(), "info": {}},
               path / "best.pt")
    return path


PER_CLASS = PseudoLabelConfig(tau=0.9, mode="per_class", batch_size=2)


def test_manifest_integrity(tmp_path):
    teacher = load_teacher(_save_teacher(tmp_path / "teacher"))
    ds = _dataset()
    out = tmp_path / "pseudo"
    summary = run_pseudo_label(teacher, ds, out, PER_CLASS, progress=False)
    m = json.loads((out / MANIFEST).read_text())
    assert m["complete"] and summary["complete"]
    assert m["task"] == "seg" and m["aux_input"] == "depth"
    assert m["tau"] == 0.9 and m["mode"] == "per_class" and len(m["thresholds"]) == NC
    assert m["teacher"]["sha256"] == file_sha256(tmp_path / "teacher" / "best.pt")
    # which dataset was labelled: a student compares it before using any label
    assert m["dataset"]["kind"] == "TinySource" and m["dataset"]["frames"] == 8
    assert len(m["dataset"]["frame_ids_sha256"]) == 64
    PseudoLabelStore(out).check_dataset(m["dataset"])
    with pytest.raises(PseudoLabelError, match="pseudo-labels were made from"):
        PseudoLabelStore(out).check_dataset({**m["dataset"], "frames": 9})
    # exactly the frames that keep depth but not segmentation
    assert frames_to_label(ds, "depth") == [2, 3, 4, 5]
    assert m["planned"] == ["f02", "f03", "f04", "f05"] == sorted(m["frames"])
    kept = pixels = scored = correct = 0
    for fid, rec in m["frames"].items():
        label = read_png(out / rec["file"])
        assert label.shape == (H, W)  # written at the frame's own resolution
        assert rec["kept"] == int((label != 255).sum())
        assert rec["kept_per_class"] == [int((label == c).sum()) for c in range(NC)]
        gt = TinySource().frame(int(fid[1:])).seg
        assert rec["correct"] == int(((label == gt) & (label != 255)).sum())
        kept, pixels = kept + rec["kept"], pixels + rec["pixels"]
        scored, correct = scored + rec["scored"], correct + rec["correct"]
    assert m["summary"]["coverage"] == pytest.approx(kept / pixels)
    assert m["summary"]["kept_accuracy"] == pytest.approx(correct / scored)
    assert kept > 0  # per-class thresholds keep about half of each predicted class
    assert set(m["summary"]["per_class_coverage"]) == {"a", "b", "c"}


def test_resume_after_interruption_skips_written_frames(tmp_path):
    teacher = load_teacher(_save_teacher(tmp_path / "teacher"))
    seen: list[int] = []
    teacher.model.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[0]))
    ds, out = _dataset(), tmp_path / "pseudo"
    cfg = PseudoLabelConfig(tau=0.4, batch_size=2)
    partial = run_pseudo_label(teacher, ds, out, cfg, max_frames=3, progress=False)
    assert not partial["complete"] and partial["frames"] == 3
    with pytest.raises(PseudoLabelError, match="did not finish"):
        PseudoLabelStore(out)  # a student never trains on half a pseudo-label set
    with (out / JOURNAL).open("a") as f:
        f.write('{"id": "f05", "file": "seg/f0')  # torn line from a crash mid-write
    seen.clear()
    done = run_pseudo_label(teacher, ds, out, cfg, progress=False)
    assert done["complete"] and done["frames"] == 4
    assert sum(seen) == 1  # only the one missing frame went through the teacher again
    # same result as a run that was never interrupted
    fresh = tmp_path / "fresh"
    run_pseudo_label(teacher, ds, fresh, cfg, progress=False)
    for fid in ("f02", "f03", "f04", "f05"):
        assert (out / "seg" / f"{fid}.png").read_bytes() == (fresh / "seg" / f"{fid}.png"
                                                             ).read_bytes()
    # other settings on the same folder are refused, unless overwritten
    with pytest.raises(PseudoLabelError, match="tau"):
        run_pseudo_label(teacher, ds, out, PseudoLabelConfig(tau=0.5), progress=False)
    assert run_pseudo_label(teacher, ds, out, PseudoLabelConfig(tau=0.5), overwrite=True,
                            progress=False)["complete"]


def test_teacher_is_frozen_during_pseudo_labelling(tmp_path):
    run_dir = _save_teacher(tmp_path / "teacher")
    sha_before = file_sha256(run_dir / "best.pt")
    teacher = load_teacher(run_dir)
    assert not teacher.model.training
    assert not any(p.requires_grad for p in teacher.model.parameters())
    modes: list[tuple[bool, bool]] = []
    teacher.model.register_forward_hook(
        lambda mod, inp, out: modes.append((torch.is_inference_mode_enabled(), mod.training)))
    run_pseudo_label(teacher, _dataset(), tmp_path / "pseudo", PER_CLASS, progress=False)
    assert modes and all(m == (True, False) for m in modes)  # inference mode, eval BN
    saved = torch.load(run_dir / "best.pt", weights_only=True)["model"]
    for k, v in teacher.model.state_dict().items():  # BN running stats included
        assert torch.equal(v, saved[k]), k
    assert file_sha256(run_dir / "best.pt") == sha_before


def test_reverse_direction_writes_pseudo_depth_the_student_reads(tmp_path):
    teacher = load_teacher(_save_teacher(tmp_path / "teacher", aux="seg"))
    ds = _dataset(aux="seg")
    out = tmp_path / "pseudo_depth"
    cfg = PseudoLabelConfig(depth_rel_tol=0.5, batch_size=4)
    summary = run_pseudo_label(teacher, ds, out, cfg, progress=False)
    assert summary["complete"] and 0 < summary["coverage"] <= 1
    assert "kept_rel_err" in summary  # held-back depth scores the kept pixels
    store = PseudoLabelStore(out)
    assert store.task == "depth" and len(store) == 4 and "f02" in store
    d = store.get("f02")
    assert d.dtype == np.float32 and d.shape == (H, W)
    assert store.get("f00") is None  # a frame with measured depth has no pseudo-depth
    student_set = MultiTaskDataset(TinySource(), (8, 12), keep_seg=ds.keep_seg,
                                   keep_depth=ds.keep_depth, pseudo=store)
    sample = student_set[2]
    assert sample["depth_source"] == "pseudo" and sample["has_depth"]
    assert student_set[0]["depth_source"] == "gt"


def test_store_rejects_bad_folders(tmp_path):
    with pytest.raises(PseudoLabelError, match=r"manifest\.json missing"):
        PseudoLabelStore(tmp_path)
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(PseudoLabelError, match="unreadable"):
        PseudoLabelStore(tmp_path)
    with pytest.raises(PseudoLabelError, match="no teacher checkpoint"):
        load_teacher(tmp_path / "nowhere")
    student = tmp_path / "student"
    student.mkdir()
    cfg = ExperimentConfig()
    cfg.model.decoder_channels, cfg.model.decoder_convs = 4, 1
    torch.save({"model": build_model(cfg.model.spec()).state_dict(), "config": asdict(cfg),
                "info": {}}, student / "best.pt")
    with pytest.raises(PseudoLabelError, match="not a teacher"):
        load_teacher(student)


def cli_teacher_run(folder: Path, aux_input: str = "depth", val_frames: int = 1,
                    fraction: str = "data.seg_fraction=0.34") -> list[str]:
    """A random teacher run under `folder`/teacher (7 classes) and the `--set` arguments of a
    6-frame synthetic world for `mtl-train pseudo-label` to label with it."""
    torch.manual_seed(0)
    cfg = ExperimentConfig()
    cfg.model = ModelConfig(arch="teacher", aux_input=aux_input, decoder_channels=4,
                            decoder_convs=1)
    (folder / "teacher").mkdir()
    torch.save({"model": build_model(cfg.model.spec()).state_dict(), "config": cfg.to_dict(),
                "info": {}}, folder / "teacher" / "best.pt")
    return ["--set", "data.train_frames=6", "--set", f"data.val_frames={val_frames}",
            "--set", "data.render_height=24", "--set", "data.render_width=32",
            "--set", "data.height=16", "--set", "data.width=24",
            "--set", fraction, "--set", "train.device=cpu"]


def run_cli_pseudo_label(folder: Path, capsys: pytest.CaptureFixture[str], options: list[str],
                        **teacher: Any) -> tuple[Path, str, list[str]]:
    """`mtl-train pseudo-label` with a random teacher (cli_teacher_run) into `folder`/pseudo;
    asserts it succeeds and returns (output folder, what it printed, the --set arguments)."""
    small = cli_teacher_run(folder, **teacher)
    out = folder / "pseudo"
    rc = main(["pseudo-label", "--teacher", str(folder / "teacher"), "--out", str(out),
               *options, *small])
    assert rc == 0
    return out, capsys.readouterr().out, small


def test_cli_pseudo_label_reports_and_fails_cleanly(tmp_path, capsys):
    out, printed, small = run_cli_pseudo_label(tmp_path, capsys, ["--mode", "per_class"])
    assert "4/4 frames labelled (seg)" in printed and "kept-pixel accuracy" in printed
    assert PseudoLabelStore(out).tau == 0.9
    rc = main(["pseudo-label", "--teacher", str(tmp_path / "missing"), "--out", str(out),
               *small])
    assert rc == 2
    assert "no teacher checkpoint" in capsys.readouterr().err


def test_manifest_says_where_the_teacher_learned_and_whether_that_is_the_target(tmp_path):
    """A robot's bag is labelled by a teacher trained elsewhere: the manifest records the
    teacher's data and flags the labels as cross-domain (their accuracy was not measured on
    the target)."""
    from mtl_training.pseudo.provenance import is_cross_domain

    teacher = load_teacher(_save_teacher(tmp_path / "teacher"))  # trained on synthetic, seed 0
    out = tmp_path / "pseudo"
    summary = run_pseudo_label(teacher, _dataset(), out, PER_CLASS, progress=False)
    m = json.loads((out / MANIFEST).read_text())
    assert m["teacher_data"]["name"] == "synthetic" and m["teacher_data"]["seed"] == 0
    assert m["cross_domain"] is True and summary["cross_domain"] is True
    # the rule on identities: the same world / folder is not cross-domain, another one is
    world = {"kind": "synthetic", "seed": 0, "root": None}
    assert not is_cross_domain({"name": "synthetic", "seed": 0}, world)
    assert is_cross_domain({"name": "synthetic", "seed": 1}, world)
    assert is_cross_domain({"name": "synthetic", "seed": 0, "style": "robot"}, world)
    day1 = {"kind": "folder", "root": str((tmp_path / "day1").resolve())}
    assert not is_cross_domain({"name": "folder", "root": str(tmp_path / "day1")}, day1)
    assert is_cross_domain({"name": "nyuv2", "root": str(tmp_path / "nyu")}, day1)
    assert is_cross_domain({}, day1)  # unknown teacher data: say cross-domain


def test_precision_thresholds_are_the_lowest_confidence_reaching_the_target():
    """Class 0: right above 0.8, wrong below -> threshold 0.8; class 1 never right -> keeps
    nothing; class 2 barely predicted -> tau."""
    from mtl_training.pseudo.thresholds import CONF_BINS, precision_thresholds

    all_h = np.zeros((3, CONF_BINS), np.int64)
    right = np.zeros((3, CONF_BINS), np.int64)
    all_h[0, 9000], right[0, 9000] = 1000, 1000  # 0.90: all right
    all_h[0, 8000], right[0, 8000] = 1000, 900  # 0.80: 90 % right
    all_h[0, 5000], right[0, 5000] = 2000, 200  # 0.50: mostly wrong
    all_h[1, 9500] = 2000  # confident and always wrong
    all_h[2, 9900], right[2, 9900] = 10, 10  # too few held-out pixels to read
    thr, report = precision_thresholds(all_h, right, tau=0.9, target_precision=0.9)
    assert thr[0] == pytest.approx(0.8) and report[0]["rule"] == "calibrated"
    assert report[0]["precision"] == pytest.approx(1900 / 2000)
    assert report[0]["coverage"] == pytest.approx(2000 / 4000)
    assert thr[1] > 1.0 and report[1]["coverage"] == 0.0  # never kept
    assert thr[2] == 0.9 and report[2]["rule"].startswith("tau")


def test_thresholds_calibrated_on_the_teachers_held_out_frames(tmp_path):
    """pseudo.calibrate=teacher_val: thresholds come from labelled frames the teacher never
    trained on, are recorded with those frames' identity, and a folder resumes with them."""
    teacher = load_teacher(_save_teacher(tmp_path / "teacher"))
    held_out = MultiTaskDataset(TinySource(6), (8, 12))  # every label: the teacher's val split
    cfg = PseudoLabelConfig(tau=0.9, batch_size=2, calibrate="teacher_val",
                            target_precision=0.3)
    out = tmp_path / "pseudo"
    with pytest.raises(PseudoLabelError, match="teacher_val needs the teacher's held-out"):
        run_pseudo_label(teacher, _dataset(), out, cfg, progress=False)
    summary = run_pseudo_label(teacher, _dataset(), out, cfg, progress=False,
                               calibration=held_out)
    m = json.loads((out / MANIFEST).read_text())
    cal = m["seg_calibration"]
    assert m["calibrate"] == "teacher_val" and m["calibration"]["frames"] == 6
    assert cal["frames"] == 6 and len(cal["per_class"]) == NC
    assert summary["seg_calibration"]["target_precision"] == 0.3
    for c, rec in enumerate(cal["per_class"]):  # each threshold is the one its rule says
        if rec["rule"] == "calibrated":
            assert rec["precision"] >= 0.3 and m["thresholds"][c] <= 1.0
        elif rec["rule"].startswith("none"):
            assert m["thresholds"][c] > 1.0
    # resuming the folder keeps the calibrated thresholds (not recomputed, not tau)
    again = run_pseudo_label(teacher, _dataset(), out, cfg, progress=False, calibration=held_out)
    assert again["complete"]
    assert json.loads((out / MANIFEST).read_text())["thresholds"] == m["thresholds"]


def test_cli_calibrates_seg_thresholds_on_the_teachers_validation_split(tmp_path, capsys):
    """`--set pseudo.calibrate=teacher_val`: the command opens the teacher's own validation
    split from its checkpoint's config and prints what the calibration kept there."""
    out, printed, _ = run_cli_pseudo_label(
        tmp_path, capsys, ["--set", "pseudo.calibrate=teacher_val",
                           "--set", "pseudo.target_precision=0.2"])
    assert "thresholds calibrated on the teacher's held-out frames" in printed
    m = json.loads((out / MANIFEST).read_text())
    assert m["calibrate"] == "teacher_val" and m["seg_calibration"]["frames"] > 0
    assert m["calibration"]["kind"] == "synthetic"  # the teacher's world, held-out rooms


def test_nyuv2_to_robot_config_agrees_on_one_class_set():
    """The packaged cross-domain config: the bag's classes, the NYUv2-13 teacher and the student
    name the same 13 classes, and thresholds come from the teacher's held-out frames."""
    from mtl_training.config import load_packaged_config
    from mtl_training.data.sources.nyuv2_classes import NYU13_CLASSES

    cfg = load_packaged_config("nyuv2_to_robot")
    teacher, student = cfg.for_stage("teacher"), cfg.for_stage("student")
    assert tuple(cfg.bag.classes) == NYU13_CLASSES
    assert teacher.data.name == "nyuv2" and teacher.data.classes == 13
    assert teacher.model.num_classes == student.model.num_classes == 13
    assert student.data.name == "folder" and student.data.seg_fraction == 0.0
    # the student trains on NYUv2's ground truth and on the bag's pseudo-labels in one run
    nyu, bag = source_specs(student.data, num_classes=13)
    assert (nyu.data.name, nyu.data.seg_fraction, nyu.data.pseudo_labels) == ("nyuv2", 1.0, None)
    assert (bag.data.name, bag.data.root, bag.data.seg_fraction) == ("folder", "data/day1", 0.0)
    assert bag.data.pseudo_labels == "runs/day1_pseudo"
    assert cfg.pseudo.calibrate == "teacher_val"
