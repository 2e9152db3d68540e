"""Cityscapes loader on a fixture tree in the official layout: leftImg8bit, gtFine labelIds,
16-bit disparity PNGs and per-frame camera JSON. Depth values are checked against numbers
computed by hand from the dataset's documented rule: disparity = (p - 1) / 256 px for p > 1,
depth = baseline x fx / disparity."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from mtl_training.config import ConfigError, DataConfig
from mtl_training.data import build_datasets, build_split
from mtl_training.data.sources import build_source
from mtl_training.data.sources.cityscapes import CITYSCAPES_MAX_DEPTH
from mtl_training.data.sources.folder import DatasetFormatError
from mtl_training.data.transforms import make_sample

H, W = 8, 16  # the real frames: 1024 x 2048
# aachen's baseline and focal lengths (as its *_camera.json files hold them; the principal
# point is moved into the fixture's 16x8 frame); a second city with other numbers
CAMERAS = {"aachen": {"baseline": 0.209313, "fx": 2262.52, "fy": 2265.3017905988554,
                      "u0": 8.57, "v0": 4.01},
           "bremen": {"baseline": 0.22, "fx": 2200.0, "fy": 2200.0, "u0": 8.0, "v0": 4.0}}
# disparity PNG values along the first row: invalid, invalid, 1/256 px, 1 px, 10 px, 50 px
P_ROW = [0, 1, 2, 257, 2561, 12801]
IDS_ROW = [7, 8, 9, 26, 24, 23, 0, 33]  # road sidewalk parking car person sky unlabeled bicycle


def _write_frame(root, split, city, n):
    stem = f"{city}_{n:06d}_000019"
    paths = {"rgb": root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png",
             "seg": root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png",
             "disp": root / "disparity" / split / city / f"{stem}_disparity.png",
             "cam": root / "camera" / split / city / f"{stem}_camera.json"}
    for p in paths.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(n).integers(0, 255, (H, W, 3), dtype=np.uint8)
    cv2.imwrite(str(paths["rgb"]), rgb)
    ids = np.zeros((H, W), np.uint8)
    ids[0, : len(IDS_ROW)] = IDS_ROW
    cv2.imwrite(str(paths["seg"]), ids)
    disp = np.full((H, W), 12801, np.uint16)
    disp[0, : len(P_ROW)] = P_ROW
    cv2.imwrite(str(paths["disp"]), disp)
    cam = CAMERAS[city]
    paths["cam"].write_text(json.dumps({
        "extrinsic": {"baseline": cam["baseline"], "pitch": 0.038, "roll": 0.0, "x": 1.7,
                      "y": 0.026, "yaw": -0.0195, "z": 1.18},
        "intrinsic": {k: cam[k] for k in ("fx", "fy", "u0", "v0")}}))
    return stem, paths


def write_tree(root):
    stems = {}
    for split, frames in (("train", [("aachen", 0), ("aachen", 1), ("bremen", 2), ("bremen", 3),
                                     ("bremen", 4)]),
                          ("val", [("aachen", 10), ("bremen", 11)])):
        stems[split] = [_write_frame(root, split, c, n)[0] for c, n in frames]
    return stems


def _cfg(root, **kw) -> DataConfig:
    return DataConfig(**{"name": "cityscapes", "root": str(root), "height": H, "width": W, **kw})


def test_depth_from_disparity_matches_hand_computed_values(tmp_path):
    write_tree(tmp_path)
    f = build_source(_cfg(tmp_path, val_fraction=0.2), "test").frame(0)  # aachen, val
    # baseline x fx = 0.209313 x 2262.52 = 473.574849 m px
    np.testing.assert_allclose(f.depth[0, :6], [0, 0, 0, 0, 47.357485, 9.471497], rtol=1e-6)
    assert CITYSCAPES_MAX_DEPTH == 100.0  # 1 px (473.6 m) and 1/256 px lie beyond: invalid
    far = build_source(_cfg(tmp_path, max_depth=500.0), "test").frame(0)
    assert far.depth[0, 3] == pytest.approx(473.574849, rel=1e-6) and far.depth[0, 2] == 0
    np.testing.assert_allclose(f.K, [[2262.52, 0, 8.57], [0, 2265.3017905988554, 4.01],
                                     [0, 0, 1]])
    inv = build_source(_cfg(tmp_path, depth_target="inverse"), "test")
    assert inv.info.max_depth == 1.0 and inv.depth_target == "inverse"
    # 1 / depth = disparity / (baseline x fx): 10 / 473.574849, 50 / 473.574849
    np.testing.assert_allclose(inv.frame(0).depth[0, :6], [0, 0, 0, 0, 0.0211160, 0.1055799],
                               rtol=1e-5)


def test_per_frame_intrinsics_and_baseline(tmp_path):
    write_tree(tmp_path)
    test = build_source(_cfg(tmp_path), "test")
    f = test.frame(1)  # bremen: its own camera
    assert f.meta["frame_id"] == "bremen_000011_000019" and f.meta["baseline"] == 0.22
    np.testing.assert_allclose(f.K[0], [2200.0, 0, 8.0])
    assert f.depth[0, 4] == pytest.approx(0.22 * 2200.0 / 10, rel=1e-6)
    sample = build_split(_cfg(tmp_path, height=H, width=W // 2), "test")[1]
    np.testing.assert_allclose(sample["K"][0, 0].item(), 2200.0 / 2, rtol=1e-5)  # resized K


@pytest.mark.parametrize("classes,row", [
    (7, [0, 0, 255, 6, 5, 4, 255, 6]),  # flat flat (parking: not scored) vehicle human sky
    (19, [0, 1, 255, 13, 11, 10, 255, 18]),
])
def test_label_ids_map_to_categories_and_train_ids(tmp_path, classes, row):
    write_tree(tmp_path)
    src = build_source(_cfg(tmp_path, classes=classes), "test")
    assert len(src.info.classes) == classes
    np.testing.assert_array_equal(src.frame(0).seg[0, : len(IDS_ROW)], row)
    assert (src.frame(0).seg[1:] == 255).all()  # id 0 elsewhere: void


def test_splits_by_folder_with_validation_held_out_of_train(tmp_path):
    stems = write_tree(tmp_path)
    cfg = _cfg(tmp_path, val_fraction=0.2)
    ids = {s: build_source(cfg, s).frame_ids() for s in ("train", "val", "test")}
    assert ids["test"] == stems["val"]  # the official val is every paper's test set
    assert sorted(ids["train"] + ids["val"]) == sorted(stems["train"]) and len(ids["val"]) == 1
    train, val = build_datasets(cfg)
    assert len(train) == 4 and len(val) == 1
    assert len(build_source(_cfg(tmp_path, train_count=2), "train")) == 2  # the small setting
    with pytest.raises(ConfigError, match=r"data\.train_count: 9 but"):
        build_source(_cfg(tmp_path, train_count=9), "train")


def test_bad_camera_json_and_missing_tree_name_the_file(tmp_path):
    _, paths = _write_frame(tmp_path, "val", "aachen", 0)
    data = json.loads(paths["cam"].read_text())
    del data["extrinsic"]["baseline"]
    paths["cam"].write_text(json.dumps(data))
    with pytest.raises(DatasetFormatError, match=r"_camera\.json: extrinsic\.baseline must be a "
                                                 r"number, got None"):
        build_source(_cfg(tmp_path), "test").frame(0)
    with pytest.raises(DatasetFormatError, match=r"leftImg8bit/train missing"):
        build_source(_cfg(tmp_path), "train")
    with pytest.raises(ConfigError, match="7 \\(categories\\) or 19"):
        build_source(_cfg(tmp_path, classes=13), "test")


def test_inverse_depth_scales_the_other_way_under_scale_crop():
    rgb = np.zeros((H, W, 3), np.uint8)
    d = np.full((H, W), 0.5, np.float32)
    for seed in range(6):
        rng = np.random.default_rng(seed)
        depth = make_sample(rgb, d, None, (H, W), None, True, np.random.default_rng(seed))["depth"]
        inv = make_sample(rgb, d, None, (H, W), None, True, rng, inverse_depth=True)["depth"]
        s = float(inv.mean() / 0.5)
        assert min(abs(s - x) for x in (1.0, 1.2, 1.5)) < 1e-5  # zoom s: closer, 1/depth x s
        assert float(depth.mean()) == pytest.approx(0.5 / s, rel=1e-5)


def test_training_both_tasks_without_any_depth_file_refuses_at_start(tmp_path, capsys):
    """Cityscapes without camera/*.json: no frame has depth, so a run asking for both tasks
    would end with an untrained depth head (and exit 0); it refuses in one line naming what is
    missing and the two ways out. Without gtFine, the same for segmentation."""
    from mtl_training.apps.train_cli import main
    from mtl_training.config import ExperimentConfig
    from mtl_training.trainer import Trainer

    write_tree(tmp_path / "cs")
    shutil.rmtree(tmp_path / "cs" / "camera")
    cfg = ExperimentConfig(data=_cfg(tmp_path / "cs", height=32, width=32))
    cfg.model.decoder_channels, cfg.model.num_classes, cfg.model.max_depth = 4, 7, 100.0
    cfg.train.device, cfg.train.out_dir = "cpu", str(tmp_path / "run")
    with pytest.raises(ConfigError) as err:
        Trainer(cfg)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("model.tasks: depth")
    assert "camera" in msg and "model.tasks=[seg]" in msg
    rc = main(["train", "--out", str(tmp_path / "run"), "--set", "data.name=cityscapes",
               "--set", f"data.root={tmp_path / 'cs'}", "--set", "model.num_classes=7",
               "--set", "model.max_depth=100", "--set", "train.device=cpu"])
    line = capsys.readouterr().err.strip()
    assert rc == 2 and len(line.splitlines()) == 1 and "model.tasks: depth" in line
    assert not (tmp_path / "run").exists()
    cfg.model.tasks = ["seg"]  # the way out it names: segmentation alone trains
    Trainer(cfg)
    shutil.rmtree(tmp_path / "cs" / "gtFine")
    with pytest.raises(ConfigError, match=r"model\.tasks: seg .*gtFine"):
        Trainer(cfg)
