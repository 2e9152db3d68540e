"""NYUv2 loaders on fixtures in the exact on-disk formats: the official MATLAB v7.3 (HDF5) file
with splits.mat and classMapping40.mat, and MTAN's preprocessed .npy folders."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from scipy.io import savemat

from mtl_training.config import ConfigError, DataConfig
from mtl_training.data import build_datasets, build_split
from mtl_training.data.sources import build_source
from mtl_training.data.sources.folder import DatasetFormatError
from mtl_training.data.sources.nyuv2 import NYU_K
from mtl_training.data.sources.nyuv2_classes import NYU13_CLASSES, NYU40_CLASSES, NYU40_TO_13

H, W, N = 6, 8, 10  # frames of H x W (the real file: 480 x 640, 1449 frames)
TRAIN, TEST = [1, 2, 3, 5, 6, 8, 9], [4, 7, 10]  # 1-based, as splits.mat stores them


def _frame(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(i)
    rgb = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    depth = rng.uniform(0.5, 9.5, (H, W)).astype(np.float32)
    raw = rng.integers(0, 895, (H, W)).astype(np.uint16)  # 0 = unlabelled, 1..894
    return rgb, depth, raw


MAP_CLASS = (np.arange(894) % 40 + 1).astype(np.float64)  # raw k -> 40-class ((k - 1) % 40) + 1


def write_official(root, map_class=MAP_CLASS):
    """The three files users download, as MATLAB writes them (v7.3 = HDF5 with a 512-byte
    user block; h5py sees the arrays transposed)."""
    root.mkdir(parents=True, exist_ok=True)
    frames = [_frame(i) for i in range(N)]
    with h5py.File(root / "nyu_depth_v2_labeled.mat", "w", userblock_size=512) as f:
        f["images"] = np.stack([rgb.transpose(2, 1, 0) for rgb, _, _ in frames])  # [N, 3, W, H]
        f["depths"] = np.stack([d.T for _, d, _ in frames])  # [N, W, H]
        f["labels"] = np.stack([r.T for _, _, r in frames])
    with open(root / "nyu_depth_v2_labeled.mat", "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2012")
    savemat(root / "splits.mat", {"trainNdxs": np.array(TRAIN, float)[:, None],
                                  "testNdxs": np.array(TEST, float)[:, None]})
    savemat(root / "classMapping40.mat", {"mapClass": map_class[None, :]})
    return frames


def _cfg(root, **kw) -> DataConfig:
    return DataConfig(name="nyuv2", root=str(root), height=H, width=W, **kw)


def test_class_tables():
    assert len(NYU40_CLASSES) == 40 and len(NYU13_CLASSES) == 13 and len(NYU40_TO_13) == 40
    assert set(NYU40_TO_13) == set(range(13))  # every 13-class id is reached
    for c40, c13 in (("wall", "wall"), ("floor mat", "floor"), ("books", "books"),
                     ("television", "tv"), ("blinds", "window"), ("night stand", "furniture"),
                     ("person", "objects"), ("desk", "table"), ("door", "wall")):
        assert NYU13_CLASSES[NYU40_TO_13[NYU40_CLASSES.index(c40)]] == c13


@pytest.mark.parametrize("classes", [13, 40])
def test_official_mat_frames_labels_and_intrinsics(tmp_path, classes):
    frames = write_official(tmp_path)
    cfg = _cfg(tmp_path, classes=classes, val_fraction=0.0)
    test = build_source(cfg, "test")
    assert len(test) == 3 and test.info.classes == list(
        NYU13_CLASSES if classes == 13 else NYU40_CLASSES)
    f = test.frame(1)  # official frame 7
    rgb, depth, raw = frames[6]
    assert f.meta["frame_id"] == "0007"
    np.testing.assert_array_equal(f.rgb, rgb)  # [H, W, 3], not MATLAB's transposed order
    np.testing.assert_array_equal(f.depth, depth)
    K = NYU_K * [[W / 640], [H / 480], [1]]  # the toolbox's 640x480 camera, at this size
    np.testing.assert_allclose(f.K, K)
    c40 = np.where(raw > 0, (raw.astype(int) - 1) % 40, 255)
    want = c40 if classes == 40 else np.where(c40 == 255, 255,
                                              np.asarray(NYU40_TO_13)[np.minimum(c40, 39)])
    np.testing.assert_array_equal(f.seg, want)
    assert (f.seg[raw == 0] == 255).all()


def test_official_splits_hold_out_validation_from_train(tmp_path):
    write_official(tmp_path)
    cfg = _cfg(tmp_path, val_fraction=0.3)
    ids = {s: build_source(cfg, s).frame_ids() for s in ("train", "val", "test")}
    assert ids["test"] == ["0004", "0007", "0010"]
    assert sorted(ids["train"] + ids["val"]) == [f"{i:04d}" for i in TRAIN]
    assert len(ids["val"]) == 2 and not set(ids["train"]) & set(ids["val"])
    train, val = build_datasets(cfg)  # the trainer's view: best.pt is chosen on val, not test
    assert val.frame_id(0) in ids["val"] and len(train) == 5
    assert len(build_source(_cfg(tmp_path, val_fraction=0.3, train_count=3), "train")) == 3


def test_official_layout_errors_name_the_file(tmp_path):
    write_official(tmp_path)
    (tmp_path / "classMapping40.mat").unlink()
    with pytest.raises(DatasetFormatError, match=r"classMapping40\.mat missing"):
        build_source(_cfg(tmp_path), "train")
    write_official(tmp_path, map_class=MAP_CLASS[:800])
    with pytest.raises(DatasetFormatError, match=r"classMapping40\.mat: mapClass must hold 894"):
        build_source(_cfg(tmp_path), "train")
    write_official(tmp_path)
    (tmp_path / "nyu_depth_v2_labeled.mat").write_bytes(b"MATLAB 5.0 MAT-file" + b"\0" * 200)
    with pytest.raises(DatasetFormatError, match=r"labeled\.mat: not a MATLAB v7\.3 \(HDF5\)"):
        build_source(_cfg(tmp_path), "train")
    with pytest.raises(ConfigError, match=r"data\.classes: NYUv2 has 13 or 40 classes, got 19"):
        build_source(_cfg(tmp_path, classes=19), "train")
    with pytest.raises(DatasetFormatError, match=r"neither nyu_depth_v2_labeled\.mat"):
        build_source(_cfg(tmp_path / "empty"), "train")


def write_mtan(root, n_train=4, n_val=2):
    """MTAN's preprocessed NYUv2: <split>/{image,label,depth}/<i>.npy (val = official test)."""
    out = {}
    for part, n in (("train", n_train), ("val", n_val)):
        for sub in ("image", "label", "depth"):
            (root / part / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            rng = np.random.default_rng([len(part), i])
            image = rng.uniform(0, 1, (H, W, 3)).astype(np.float32)
            label = rng.integers(-1, 13, (H, W)).astype(np.float32)
            depth = rng.uniform(0, 8, (H, W, 1)).astype(np.float32)
            depth[0, 0, 0] = 0.0
            np.save(root / part / "image" / f"{i}.npy", image)
            np.save(root / part / "label" / f"{i}.npy", label)
            np.save(root / part / "depth" / f"{i}.npy", depth)
            out[(part, i)] = (image, label, depth)
    return out


def test_mtan_npy_layout(tmp_path):
    arrays = write_mtan(tmp_path)
    cfg = _cfg(tmp_path, val_fraction=0.25)
    test = build_source(cfg, "test")
    assert len(test) == 2 and len(build_source(cfg, "train")) == 3
    f = test.frame(1)
    image, label, depth = arrays[("val", 1)]
    assert f.meta["frame_id"] == "val_0001" and f.K is None
    np.testing.assert_array_equal(f.rgb, np.round(image * 255).astype(np.uint8))
    np.testing.assert_array_equal(f.seg, np.where(label < 0, 255, label).astype(np.uint8))
    np.testing.assert_array_equal(f.depth, depth[..., 0])
    sample = build_split(cfg, "test")[0]
    assert sample["has_seg"] and sample["has_depth"] and sample["seg"].shape == (H, W)
    with pytest.raises(ConfigError, match="13-class labels"):
        build_source(_cfg(tmp_path, classes=40), "train")
    np.save(tmp_path / "val" / "label" / "0.npy", np.full((H, W), 13.0, np.float32))
    with pytest.raises(DatasetFormatError, match=r"val/label/0\.npy: label ids \[13\] outside"):
        test.frame(0)
