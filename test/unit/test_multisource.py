"""data.sources: several sources in one run (class maps, sampling weights, validation)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from mtl_perception.core.artifact import read_metadata
from mtl_training.checkpoint import load_checkpoint
from mtl_training.config import ConfigError, DataConfig, ExperimentConfig, from_dict, load_config
from mtl_training.data import build_sources
from mtl_training.data.multisource import MultiSourceTrainSet, build_multisource
from mtl_training.export import export_run
from mtl_training.source_config import source_specs
from mtl_training.trainer import train

SMALL = {"name": "synthetic", "train_frames": 8, "val_frames": 2, "height": 32, "width": 32,
         "render_height": 32, "render_width": 32, "augment": False}


def two_sources(**second: object) -> DataConfig:
    return from_dict(DataConfig, {**SMALL, "sources": [
        {"seed": 1}, {"seed": 2, "train_frames": 16, **second}]}, prefix="data")


def test_single_source_config_is_unchanged() -> None:
    cfg = from_dict(DataConfig, dict(SMALL), prefix="data")
    assert cfg.sources is None
    (spec,) = source_specs(cfg)
    assert spec.weight == 1.0 and spec.class_map is None and spec.data.train_frames == 8


def test_entries_inherit_top_level_keys_and_get_distinct_labels() -> None:
    specs = source_specs(two_sources(weight=3), num_classes=7)
    assert [s.label for s in specs] == ["synthetic0", "synthetic1"]
    assert [s.data.seed for s in specs] == [1, 2]
    assert specs[1].data.train_frames == 16 and specs[0].data.train_frames == 8
    assert all(s.data.height == 32 and s.data.sources is None for s in specs)
    assert specs[1].weight == 3.0


@pytest.mark.parametrize(("entry", "message"), [
    ({"class_map": {1: 9}}, "data.sources[1].class_map: 9 is not a class of the run"),
    ({"weight": 0}, "data.sources[1].weight: must be > 0"),
    ({"seg_fraction": 2.0}, "data.sources[1].seg_fraction"),
    ({"colour": 1}, "data.sources[1].colour"),
])
def test_bad_entries_are_refused_in_one_line_naming_the_key(entry: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        source_specs(two_sources(**entry), num_classes=7)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_class_names_resolve_and_unknown_names_are_refused() -> None:
    names = list(build_sources(DataConfig(**SMALL))[0].info.classes)
    data = build_multisource(two_sources(class_map={names[1]: names[0], 2: names[3]}))
    assert data.specs[1].class_map == {1: 0, 2: 3}
    with pytest.raises(ConfigError) as err:
        build_multisource(two_sources(class_map={1: "sofa"}))
    assert str(err.value).startswith("data.sources[1].class_map: 'sofa' is not a class of the run "
                                     f"(classes: {', '.join(names)})")


def test_class_map_remaps_ids_on_samples_and_unmapped_become_ignore() -> None:
    cfg = two_sources(class_map={1: 0, 2: 3})
    data = build_multisource(cfg, num_classes=7)
    plain = build_sources(data.specs[1].data)[0]
    first = len(data.train.datasets[0])
    seen = set()
    for i in range(len(plain)):
        raw = plain.frame(i).seg
        got = data.train[first + i]["seg"].numpy()
        expected = np.full(raw.shape, 255)
        expected[raw == 1], expected[raw == 2] = 0, 3
        np.testing.assert_array_equal(got, expected)  # rendered at 32x32: no resize
        seen |= set(np.unique(got).tolist())
        assert set(np.unique(got).tolist()) <= {0, 3, 255}
    assert {0, 3, 255} <= seen
    assert set(np.unique(data.train[0]["seg"].numpy()).tolist()) - {255} - set(range(7)) == set()
    assert list(data.val) == ["synthetic0", "synthetic1"]
    assert data.identities[0]["identity"] != data.identities[1]["identity"]


def test_weights_set_each_sources_share_of_the_draws() -> None:
    def share(weight: float) -> float:
        data = build_multisource(two_sources(weight=weight))
        first = len(data.train.datasets[0])
        draws = Counter(i >= first for i in data.sampler(4000, seed=0))
        return draws[True] / 4000
    assert abs(share(1) - 0.5) < 0.05  # equal weights: equal shares although 8 vs 16 frames
    assert abs(share(3) - 0.75) < 0.05


def test_two_source_run_validates_per_source_and_records_both(tmp_path: Path) -> None:
    cfg = ExperimentConfig()
    cfg.data = two_sources(weight=2, class_map={i: i for i in range(6)})
    cfg.model.decoder_channels, cfg.model.decoder_convs = 8, 1
    t = cfg.train
    t.out_dir, t.epochs, t.batch_size, t.lr = str(tmp_path / "run"), 1, 4, 1e-3
    t.device, t.num_threads, t.montage_frames = "cpu", 1, 0
    run = train(cfg)
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    per = record["val"]["sources"]
    assert sorted(per) == ["synthetic0", "synthetic1"]
    mean = np.mean([per[s]["seg"]["miou"] for s in per])
    assert record["val"]["seg"]["miou"] == pytest.approx(mean)
    ckpt = load_checkpoint(run / "best.pt")
    sources = ckpt["dataset"]["sources"]
    assert [s["label"] for s in sources] == ["synthetic0", "synthetic1"]
    assert [s["weight"] for s in sources] == [1.0, 2.0]
    assert sources[0]["identity"] != sources[1]["identity"]
    meta = read_metadata(export_run(run, tmp_path / "model.mtl"))
    assert [s["label"] for s in meta.training["sources"]] == ["synthetic0", "synthetic1"]


def test_two_source_run_resumes(tmp_path: Path) -> None:
    cfg = ExperimentConfig()
    cfg.data = two_sources(weight=2)
    cfg.model.decoder_channels, cfg.model.decoder_convs = 8, 1
    t = cfg.train
    t.out_dir, t.epochs, t.batch_size, t.lr = str(tmp_path / "run"), 1, 4, 1e-3
    t.device, t.num_threads, t.montage_frames = "cpu", 1, 0
    run = train(cfg)
    t.epochs = 2
    train(cfg, resume=True)  # the recorded sources' identities match: no refusal
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]


def test_labelled_only_source_trains_on_its_labelled_frames_at_its_own_share() -> None:
    """A few labelled robot frames listed a second time as their own source: they fill that
    source's share of every epoch instead of 3 frames in 16 of the robot's."""
    cfg = from_dict(DataConfig, {**SMALL, "sources": [
        {"seed": 1}, {"seed": 2, "train_frames": 16, "seg_fraction": 0.0},
        {"seed": 2, "train_frames": 16, "seg_frames": [1, 5, 9], "labelled_only": True,
         "label": "robot_labels"}]}, prefix="data")
    data = build_multisource(cfg)
    assert [len(d) for d in data.train.datasets] == [8, 16, 3]
    assert all(bool(data.train.datasets[2][i]["has_seg"]) for i in range(3))
    draws = Counter(int(i) >= 24 for i in data.sampler(3000, seed=0))
    assert abs(draws[True] / 3000 - 1 / 3) < 0.05
    bad = from_dict(DataConfig, {**SMALL, "sources": [
        {"seed": 1}, {"seed": 2, "seg_fraction": 0.0, "labelled_only": True}]}, prefix="data")
    with pytest.raises(ConfigError, match=r"data\.sources\[1\]\.labelled_only: none"):
        build_multisource(bad)
    with pytest.raises(ConfigError, match=r"labelled_only: expected true or false"):
        source_specs(from_dict(DataConfig, {**SMALL, "sources": [{"labelled_only": "yes"}]},
                               prefix="data"))


def test_epoch_frames_fixes_the_draws_per_epoch_and_opened_sources_are_used() -> None:
    """A study comparing runs over one and over two sources gives them equal steps by drawing
    the same number of frames per epoch; it hands in worlds it already rendered."""
    cfg = two_sources()
    opened = [build_sources(s.data) for s in source_specs(cfg)]
    data = build_multisource(cfg, opened=opened)
    assert data.train.datasets[0].source is opened[0][0]
    full = MultiSourceTrainSet(data)
    fixed = MultiSourceTrainSet(data, epoch_frames=10)
    gen = torch.Generator().manual_seed(0)
    assert len(full.draw(gen)) == len(full) and len(fixed.draw(gen)) == 10
    with pytest.raises(ValueError, match="1 opened sources for 2"):
        build_multisource(cfg, opened=opened[:1])


def _teacher_cfg(tmp_path: Path, second: dict) -> ExperimentConfig:
    cfg = ExperimentConfig()
    cfg.data = from_dict(DataConfig, {**SMALL, "sources": [
        {"seed": 1, "label": "labelled"},
        {"seed": 2, "style": "robot", "label": "robot", **second}]}, prefix="data")
    cfg.model.arch, cfg.model.aux_input = "teacher", "depth"
    cfg.model.decoder_channels, cfg.model.decoder_convs = 8, 1
    t = cfg.train
    t.out_dir, t.epochs, t.batch_size, t.lr = str(tmp_path / "teacher"), 1, 4, 1e-3
    t.device, t.num_threads, t.montage_frames = "cpu", 1, 0
    return cfg


def test_teacher_trains_on_every_source_with_labelled_frames(tmp_path: Path, caplog) -> None:
    """After `labels import` a robot folder holds a few labelled frames: a teacher over the
    benchmark and the robot learns from both; a source with no labelled frame yet is left out
    of training and validation with one line, and its identity is still recorded."""
    cfg = _teacher_cfg(tmp_path / "a", {"seg_fraction": 0.0})
    with caplog.at_level("WARNING"):
        run = train(cfg)
    assert "data.sources[1] (robot): no training frame carries seg and depth" in caplog.text
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert sorted(record["val"]["sources"]) == ["labelled"]
    sources = load_checkpoint(run / "last.pt")["dataset"]["sources"]
    assert [s["label"] for s in sources] == ["labelled", "robot"]

    cfg = _teacher_cfg(tmp_path / "b", {"seg_frames": [1, 5, 7], "weight": 2})
    data = build_multisource(cfg.data, required=("seg", "depth"))
    assert [len(d) for d in data.train.datasets] == [8, 3]  # the robot's 3 labelled frames
    assert not data.skipped
    run = train(cfg)
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert sorted(record["val"]["sources"]) == ["labelled", "robot"]

    nothing = _teacher_cfg(tmp_path / "c", {"seg_fraction": 0.0})
    nothing.data.sources[0]["seg_fraction"] = 0.0
    with pytest.raises(ConfigError, match=r"data\.sources: no source has a training frame "
                                          r"carrying seg and depth"):
        train(nothing)


def test_pseudo_labels_from_a_multi_source_teacher_calibrate_on_each_source(
        tmp_path: Path, capsys) -> None:
    """`pseudo-label` with such a teacher: thresholds from the held-out frames of every source
    it trained on (the manifest lists both), and labelling the robot it partly trained on is
    not cross-domain."""
    import yaml

    from mtl_training.apps.train_cli import main

    run = train(_teacher_cfg(tmp_path, {"seg_frames": [1, 5, 7]}))
    config = tmp_path / "robot.yaml"  # the student's sources; --source picks the robot's
    config.write_text(yaml.safe_dump({
        "data": SMALL, "train": {"device": "cpu"},
        "pseudo": {"calibrate": "teacher_val", "batch_size": 4},
        "stages": {"student": {"data": {"sources": [
            {"seed": 1, "label": "labelled"},
            {"seed": 2, "style": "robot", "seg_fraction": 0.0, "label": "robot",
             "pseudo_labels": str(tmp_path / "pseudo")}]}}}}))
    out = tmp_path / "pseudo"
    command = ["pseudo-label", "--teacher", str(run), "--checkpoint", "last", "--out", str(out),
               "--config", str(config)]
    assert main([*command, "--source", "robbot"]) == 2
    assert "no data.sources entry has that label (labels: labelled, robot)" in \
        capsys.readouterr().err
    assert main([*command, "--source", "robot"]) == 0
    printed = capsys.readouterr().out
    assert "thresholds calibrated on the teacher's held-out frames (4 frames)" in printed
    m = json.loads((out / "manifest.json").read_text())
    assert [c["seed"] for c in m["calibration"]] == [1, 2]
    assert [s["seed"] for s in m["teacher_data"]["sources"]] == [1, 2]
    assert m["teacher_data"]["sources"][1]["style"] == "robot"
    assert m["cross_domain"] is False
    assert m["dataset"]["style"] == "robot" and m["dataset"]["seed"] == 2
    student = load_config(config).for_stage("student")  # reads them: the identities agree
    student.train.out_dir, student.train.epochs = str(tmp_path / "student"), 1
    student.model.decoder_channels, student.model.decoder_convs = 8, 1
    student.train.num_threads, student.train.montage_frames = 1, 0
    train(student)
