"""The evaluation protocol: best.pt chosen on val, `evaluate --split test` scores the distinct
test split with the run's own config, both metric families and their conventions in the report,
raw label ids an error instead of a silent mIoU, and every shipped protocol config consistent."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest

from mtl_perception.core.contracts import DatasetInfo
from mtl_perception.core.metrics import SegMetrics
from mtl_training.apps.experiments.imbalance import ImbalanceStudy as Study
from mtl_training.apps.experiments.study import UMMT, Plan
from mtl_training.apps.train_cli import main
from mtl_training.config import ExperimentConfig, load_config, load_packaged_config, save_config
from mtl_training.data.sources import SOURCES
from mtl_training.data.sources.folder import write_frame, write_index
from mtl_training.report import CONVENTIONS, metrics_report
from mtl_training.trainer import train

H, W = 16, 16
CLASSES = ["floor", "wall", "thing"]


def _frame(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(i)
    seg = np.zeros((H, W), np.uint8)
    seg[H // 2:] = 1
    seg[:, : W // 4] = 2
    rgb = (np.stack([seg * 90, 255 - seg * 80, seg * 40], -1) + rng.integers(0, 20, (H, W, 3))
           ).astype(np.uint8)
    depth = np.where(seg == 1, 2.0, 4.0).astype(np.float32)
    return rgb, depth, seg


def write_dataset(root, n=14, raw_ids=False):
    entries, ids = [], []
    for i in range(n):
        rgb, depth, seg = _frame(i)
        if raw_ids and i >= n - 2:
            seg = np.where(seg == 2, 26, seg).astype(np.uint8)  # a raw id in the test frames
        entries.append(write_frame(root, f"f{i:02d}", rgb, depth, seg, None))
        ids.append(f"f{i:02d}")
    splits = {"train": ids[: n - 4], "val": ids[n - 4: n - 2], "test": ids[n - 2:]}
    write_index(root, DatasetInfo("tiny", CLASSES, [[0, 0, 0], [0, 255, 0], [255, 0, 0]], 5.0),
                entries, splits)
    return splits


def _cfg(tmp_path, root) -> ExperimentConfig:
    cfg = load_config(None, ["data.name=folder", f"data.root={root}", f"data.height={H}",
                             f"data.width={W}", "data.augment=false", "model.num_classes=3",
                             "model.max_depth=5.0", "model.decoder_channels=8",
                             "model.decoder_convs=1", "train.epochs=2", "train.batch_size=4",
                             "train.device=cpu", "train.num_threads=1",
                             "train.montage_frames=0", "train.tensorboard=false",
                             f"train.out_dir={tmp_path / 'run'}"])
    return cfg


def test_best_is_chosen_on_val_and_evaluate_scores_test_with_the_runs_config(tmp_path, capsys):
    splits = write_dataset(tmp_path / "ds")
    run = train(_cfg(tmp_path, tmp_path / "ds"))
    val_scores = [r["val"]["seg"]["miou"] for r in map(json.loads, (run / "metrics.jsonl")
                                                       .read_text().splitlines())]
    rc = main(["evaluate", str(run), "--split", "val", "--json", str(tmp_path / "val.json")])
    assert rc == 0
    # best.pt was chosen on val: its val mIoU is the best epoch's
    val = json.loads((tmp_path / "val.json").read_text())
    assert val["seg"]["miou"] == pytest.approx(max(val_scores), abs=1e-6)
    rc = main(["evaluate", str(run), "--split", "test", "--json", str(tmp_path / "test.json"),
               "--baseline", str(tmp_path / "val.json")])
    out = capsys.readouterr().out
    assert rc == 0 and "Delta_m against the baseline:" in out
    assert "tiny, split test (2 frames)" in out and "13-class" in out and "40-class" in out
    assert "Conventions:" in out and "per-pixel" in out
    test = json.loads((tmp_path / "test.json").read_text())
    assert set(test) == {"seg", "depth"} and "miou_per_image" in test["seg"]
    assert len(splits["test"]) == 2 and not set(splits["test"]) & set(splits["val"])


def test_raw_label_ids_stop_evaluation_with_one_line(tmp_path, capsys):
    write_dataset(tmp_path / "ds")
    run = train(_cfg(tmp_path, tmp_path / "ds"))
    write_dataset(tmp_path / "raw", raw_ids=True)
    cfg = load_config(run / "config.yaml", [f"data.root={tmp_path / 'raw'}"])
    save_config(cfg, tmp_path / "raw.yaml")
    rc = main(["evaluate", str(run), "--split", "test", "--config", str(tmp_path / "raw.yaml")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "seg/f12.png: label ids 26 outside the 3 classes" in err  # not a silent mIoU 0.02


def test_per_image_miou_is_mtans_and_differs_from_the_whole_set_one():
    m = SegMetrics(2)
    m.update(np.array([0, 0, 0, 0]), np.array([0, 0, 0, 0]))  # image 1: IoU(0) = 1
    m.update(np.array([0, 0, 1, 1]), np.array([1, 1, 1, 1]))  # image 2: IoU(0) 0, IoU(1) 0.5
    r = m.compute()
    assert r["miou_per_image"] == pytest.approx((1.0 + 0.25) / 2)
    # whole set: class 0 tp 4 / union 6, class 1 tp 2 / union 4
    assert r["miou"] == pytest.approx((4 / 6 + 2 / 4) / 2)
    page = metrics_report({"seg": r, "depth": {"abs_err": 0.5, "rel_err": 0.1, "rmse": 0.7,
                                               "delta1": 0.8}}, "x", "m",
                          baseline={"seg": {"miou": 0.5, "pixel_acc": 0.5},
                                    "depth": {"abs_err": 0.5, "rel_err": 0.1}})
    assert "| 40-class (Erkent): mIoU, RMSE | 0.5833 | | | | 0.7000 |" in page
    assert "Delta_m against the baseline:" in page and CONVENTIONS in page


PROTOCOLS = ["nyuv2", "xtasc_nyuv2", "nyuv2_imbalanced", "cityscapes", "xtasc_cityscapes",
             "cityscapes_300"]


@pytest.mark.parametrize("name", PROTOCOLS)
def test_protocol_configs_are_consistent(name):
    cfg = load_packaged_config(name)
    d, m, t = cfg.data, cfg.model, cfg.train
    assert d.name in SOURCES and d.val_fraction > 0  # best.pt never chosen on test
    assert m.num_classes == d.classes
    bound = 1.0 if d.depth_target == "inverse" else d.max_depth
    assert m.max_depth >= bound
    assert t.lr == 1e-4 and d.augment
    for stage in ("teacher", "student"):
        cfg.for_stage(stage)
    if name.startswith("xtasc"):
        assert cfg.loss.xtc and t.lr_step_epochs == (60 if "nyu" in name else 80)
        assert (d.height, d.width) == ((288, 384) if "nyu" in name else (128, 256))
    assert (resources.files("mtl_training") / "configs" / f"{name}.yaml").is_file()


def test_imbalance_study_takes_a_dataset_config(tmp_path):
    write_dataset(tmp_path / "ds")
    cfg = _cfg(tmp_path, tmp_path / "ds")
    cfg.data.seg_count = 5  # of the 10 training frames
    cfg.train.epochs = 1
    save_config(cfg, tmp_path / "c.yaml")
    base = load_config(tmp_path / "c.yaml")
    study = Study(tmp_path / "study", tmp_path / "page.md", [0], Plan(), base,
                  str(tmp_path / "c.yaml"))
    assert [s.seg_fraction for s in study.splits] == [0.5] and len(study.dataset.train) == 10
    assert study.count_split is None  # the config's split replaces the sweep and the counts
    assert all(arm.noise == 1.0 for _, arm in study.steps())  # noise arms need the world
    teacher = study.config(0, study.sweep, tmp_path / "t", "teacher", "seg")
    assert teacher.model.arch == "teacher" and teacher.model.aux_input == "seg"
    assert teacher.data.root == str(tmp_path / "ds")
    (tmp_path / "study").mkdir()
    study.run_unit(0, study.sweep, UMMT)  # one real run on the config frames, scored on val
    rec = study.results["s0/r0.5/ummt"]
    assert rec["steps"] == 2 and "seg" in rec["val"]  # 10 frames, batch 4, drop_last
    page = (tmp_path / "page.md").read_text()
    assert "## Dataset run" in page and "--config" in page and "2 validation frames" in page
