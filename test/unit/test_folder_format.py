"""The folder format loses nothing: far depth survives, raw label ids are refused (or mapped
by a declared label_map), a dataset without a held-out split warns, format/1 folders still read,
and model.max_depth is checked against the dataset's range."""

from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest

from mtl_perception.core.contracts import DatasetInfo
from mtl_training.config import ConfigError, DataConfig, ExperimentConfig
from mtl_training.data import build_datasets, build_split, check_depth_range
from mtl_training.data.sources.folder import (
    FORMAT,
    FORMAT_V1,
    FORMAT_V3,
    INDEX,
    DatasetFormatError,
    FolderSource,
    read_index,
    write_frame,
    write_index,
)
from mtl_training.data.sources.synthetic import write_synthetic_folder
from mtl_training.trainer import Trainer

H, W = 12, 16
INFO = DatasetInfo("t", ["a", "b", "c"], [[0, 0, 0], [9, 9, 9], [200, 0, 0]], None)


def _rgb(i: int) -> np.ndarray:
    return np.random.default_rng(i).integers(0, 255, (H, W, 3), dtype=np.uint8)


def _write(root, depths, segs=None, splits=None, label_map=None):
    entries = []
    for i, d in enumerate(depths):
        seg = None if segs is None else segs[i]
        entries.append(write_frame(root, f"f{i}", _rgb(i), d, seg, np.eye(3), {"i": i}))
    write_index(root, INFO, entries, splits, label_map=label_map)
    return entries


def test_depth_beyond_65_m_survives_a_round_trip(tmp_path):
    far = np.linspace(0.5, 120.0, H * W, dtype=np.float32).reshape(H, W)  # Cityscapes-like
    near = np.linspace(0.3, 9.0, H * W, dtype=np.float32).reshape(H, W)
    near[0, :3] = [0.0, np.nan, -1.0]  # invalid in any spelling -> 0
    entries = _write(tmp_path, [far, near])
    assert entries[0]["depth"].endswith(".npy") and "depth_scale" not in entries[0]
    assert entries[1]["depth"].endswith(".png") and entries[1]["depth_scale"] == 0.001
    index = read_index(tmp_path)
    assert index["format"] == FORMAT
    assert index["max_depth"] == pytest.approx(120.0)  # recorded from the frames written
    src = FolderSource(tmp_path)
    assert src.info.max_depth == pytest.approx(120.0)
    np.testing.assert_array_equal(src.frame(0).depth, far)  # exact: float32 metres
    back = src.frame(1).depth
    np.testing.assert_array_equal(back[0, :3], 0.0)
    np.testing.assert_allclose(back[0, 3:], near[0, 3:], atol=5e-4)  # 1 mm units
    np.testing.assert_allclose(back[1:], near[1:], atol=5e-4)


def test_png16_with_a_declared_scale_or_a_refusal(tmp_path):
    far = np.full((H, W), 300.0, np.float32)
    with pytest.raises(ValueError, match="does not fit a 16-bit PNG"):
        write_frame(tmp_path, "x", _rgb(0), far, None, None, depth_encoding="png16")
    e = write_frame(tmp_path, "y", _rgb(0), far, None, None, depth_encoding="png16",
                    depth_scale=0.01)
    assert e["depth"].endswith(".png") and e["depth_scale"] == 0.01
    write_index(tmp_path, INFO, [e])
    np.testing.assert_allclose(FolderSource(tmp_path).frame(0).depth, 300.0, atol=0.005)


def test_format_1_folders_still_read(tmp_path):
    cv2.imwrite(str(tmp_path / "rgb.png"), _rgb(0))
    cv2.imwrite(str(tmp_path / "d.png"), np.full((H, W), 2500, np.uint16))
    index = {"format": FORMAT_V1, "classes": ["a"], "max_depth": 10.0, "frames": [
        {"id": "0", "rgb": "rgb.png", "depth": "d.png", "seg": None, "K": None, "meta": {}}]}
    (tmp_path / INDEX).write_text(json.dumps(index))
    np.testing.assert_allclose(FolderSource(tmp_path).frame(0).depth, 2.5)


def test_raw_label_ids_are_an_error_naming_the_file(tmp_path):
    seg = np.full((H, W), 26, np.uint8)  # a Cityscapes label id (car) in a 3-class dataset
    seg[0, 0] = 255
    _write(tmp_path, [None], [seg])
    with pytest.raises(DatasetFormatError, match=r"seg/f0\.png: label ids 26 outside the 3 "
                                                 r"classes.*label_map"):
        FolderSource(tmp_path).frame(0)


def test_a_declared_label_map_translates_raw_ids(tmp_path):
    seg = np.array([[7, 26, 0, 255] * (W // 4)] * H, np.uint8)
    _write(tmp_path, [None], [seg], label_map={7: 0, 26: 2, 0: 255, 255: 255})
    got = FolderSource(tmp_path).frame(0).seg
    np.testing.assert_array_equal(got[0, :4], [0, 2, 255, 255])
    seg[0, 0] = 33  # not in the map: named, not dropped
    _write(tmp_path, [None], [seg], label_map={7: 0, 26: 2, 0: 255, 255: 255})
    with pytest.raises(DatasetFormatError, match=r"seg/f0\.png: label ids 33 are not in"):
        FolderSource(tmp_path).frame(0)
    _write(tmp_path, [None], [seg], label_map={7: 5})
    with pytest.raises(DatasetFormatError, match=r"label_map\['7'\] = 5 is neither a class"):
        FolderSource(tmp_path)


def test_a_dataset_without_splits_warns_and_says_how_to_add_one(tmp_path, caplog):
    _write(tmp_path, [np.ones((H, W), np.float32)] * 3)
    cfg = DataConfig(name="folder", root=str(tmp_path), height=H, width=W)
    # caplog's handler on the logger itself: a sourced ROS install's launch logging can stop
    # records reaching the root logger, where caplog listens by default
    logger = logging.getLogger("mtl_training.data")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, "mtl_training.data"):
            train, val = build_datasets(cfg)
    finally:
        logger.removeHandler(caplog.handler)
    assert len(train) == len(val) == 3
    assert "no splits" in caplog.text and '"splits"' in caplog.text and "val_every" in caplog.text


def test_val_is_held_out_of_train_when_only_train_and_test_exist(tmp_path):
    ones = np.ones((H, W), np.float32)
    _write(tmp_path, [ones] * 12, splits={"train": [f"f{i}" for i in range(10)],
                                          "test": ["f10", "f11"]})
    cfg = DataConfig(name="folder", root=str(tmp_path), height=H, width=W, val_fraction=0.2)
    train, val = build_datasets(cfg)
    test = build_split(cfg, "test")
    ids = {name: {ds.frame_id(i) for i in range(len(ds))} for name, ds in
           (("train", train), ("val", val), ("test", test))}
    assert len(ids["val"]) == 2 and len(ids["train"]) == 8 and ids["test"] == {"f10", "f11"}
    assert not ids["train"] & ids["val"] and not (ids["train"] | ids["val"]) & ids["test"]
    with pytest.raises(ConfigError, match="Unknown split 'dev'"):
        build_split(cfg, "dev")


def test_data_max_depth_applies_to_folder_datasets(tmp_path):
    d = np.full((H, W), 30.0, np.float32)
    d[:, : W // 2] = 80.0
    _write(tmp_path, [d])
    src = FolderSource(tmp_path, max_depth=50.0)
    assert src.info.max_depth == 50.0
    assert (src.frame(0).depth[:, : W // 2] == 0).all() and (src.frame(0).depth[:, W // 2:]
                                                            == 30).all()


def test_model_max_depth_is_checked_against_the_dataset(tmp_path):
    _write(tmp_path, [np.full((H, W), 70.0, np.float32)])
    cfg = ExperimentConfig()
    cfg.data = DataConfig(name="folder", root=str(tmp_path), height=16, width=16)
    cfg.model.num_classes = 3
    cfg.train.out_dir = str(tmp_path / "run")
    with pytest.raises(ConfigError, match=r"model\.max_depth: 10 but dataset 't' has depth up "
                                          r"to 70.*model\.max_depth=70"):
        Trainer(cfg)
    check_depth_range(cfg.model, DatasetInfo("x", ["a"], [[0, 0, 0]], 10.0))  # equal: fine


def test_synth_writes_the_lossless_format(tmp_path):
    cfg = DataConfig(train_frames=2, val_frames=1, render_height=24, render_width=32)
    write_synthetic_folder(tmp_path, cfg)
    index = read_index(tmp_path)
    assert index["format"] == FORMAT and index["max_depth"] == 10.0
    assert set(index["splits"]) == {"train", "val"}


def test_npy_images_round_trip_and_hostile_npy_files_fail_naming_them(tmp_path):
    """image_format npy (format/3) holds the PNG's pixels exactly; a PNG-only folder still says
    format/2 (older readers open it); a pickled or wrongly typed .npy stops reading with one
    line that names the file, and nothing is ever unpickled."""
    depth = np.linspace(0.3, 9.0, H * W, dtype=np.float32).reshape(H, W)
    depth[0, 0] = 0.0
    seg = (np.arange(H * W) % 3).reshape(H, W).astype(np.uint8)
    png, raw = tmp_path / "png", tmp_path / "raw"
    for root, fmt in ((png, "png"), (raw, "npy")):
        entry = write_frame(root, "f0", _rgb(0), depth, seg, np.eye(3), image_format=fmt)
        write_index(root, INFO, [entry])
    assert read_index(png)["format"] == FORMAT and read_index(raw)["format"] == FORMAT_V3
    assert sorted(p.name for p in raw.rglob("*.npy")) == ["f0.npy"] * 3
    a, b = FolderSource(png).frame(0), FolderSource(raw).frame(0)
    for x, y in ((a.rgb, b.rgb), (a.depth, b.depth), (a.seg, b.seg)):
        assert x.dtype == y.dtype
        np.testing.assert_array_equal(x, y)
    np.save(raw / "rgb" / "f0.npy", np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DatasetFormatError, match=r"rgb/f0\.npy"):
        FolderSource(raw).frame(0)
    np.save(raw / "rgb" / "f0.npy", np.zeros((H, W), np.float32))
    with pytest.raises(DatasetFormatError, match=r"rgb/f0\.npy: rgb must be uint8 \[H, W, 3\]"):
        FolderSource(raw).frame(0)
    with pytest.raises(ValueError, match="image format must be one of png, npy"):
        write_frame(raw, "f1", _rgb(1), None, None, None, image_format="jpg")
