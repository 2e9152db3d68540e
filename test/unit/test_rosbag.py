"""Bags -> training data: index, sync, registration, cache and bad data, on real bag files.

Every bag here is written with the `rosbags` writer from the procedural world (exact ground truth);
the RealSense tests read the real recording from $MTL_SAMPLE_DATA/realsense or
../shared/data/realsense (the `realsense_data` fixture in conftest.py) and skip saying where they
looked when it is in neither.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from mtl_perception.core.camera import PinholeCamera
from mtl_perception.core.geometry.registration import register_depth
from mtl_perception.core.geometry.transforms import StaticTransforms, invert, make_transform
from mtl_training.apps.train_cli import main as cli_main
from mtl_training.config import BagConfig, DataConfig
from mtl_training.data import build_datasets
from mtl_training.data.bags.frames import BagReport, read_synced_frames
from mtl_training.data.bags.reader import (
    BagError,
    cdr_header_stamp_ns,
    header_stamp_ns,
    index_bag,
)
from mtl_training.data.bags.sync import check_stamps, plan_pairs
from mtl_training.data.bags.synth import (
    DEPTH_TOPIC,
    LABEL_TOPIC,
    RGB_TOPIC,
    SynthBagSpec,
    make_image,
    write_synthetic_bag,
)
from mtl_training.data.sources.folder import FolderSource, read_index

RS_BAGS = {"ros1": "single_depth_color_640x480.bag", "sqlite3": "ros2_sqlite3",
           "mcap": "ros2_mcap/ros2_mcap.mcap"}


def bag_path(tmp_path: Path, spec: SynthBagSpec, name: str = "run") -> Path:
    return tmp_path / (f"{name}.bag" if spec.storage == "ros1" else name)


def write(tmp_path: Path, name: str = "run", **kw) -> tuple[Path, dict]:
    spec = SynthBagSpec(**kw)
    path = bag_path(tmp_path, spec, name)
    return path, write_synthetic_bag(path, spec)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = cli_main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


# -- index ---------------------------------------------------------------------------------------
def test_index_reports_topics_counts_rates_and_suggestions(tmp_path, capsys):
    a, _ = write(tmp_path, "a", storage="mcap", compressed=True, frames=5)
    b, _ = write(tmp_path, "b", storage="ros1", depth_encoding="32FC1", frames=4)
    rc, out, err = run_cli(capsys, "bag", "index", str(a), str(b), "--json",
                           str(tmp_path / "i.json"))
    assert rc == 0, err
    assert f"{a}  [ROS 2 folder (mcap)]" in out and f"{b}  [ROS 1]" in out
    assert f"rgb={RGB_TOPIC}/compressed" in out and f"depth={DEPTH_TOPIC}" in out
    idx = json.loads((tmp_path / "i.json").read_text())
    topics = idx[0]["topics"]
    assert topics[DEPTH_TOPIC]["count"] == 5
    assert topics[DEPTH_TOPIC]["encoding"] == "16UC1"
    assert topics[DEPTH_TOPIC]["rate_hz"] == pytest.approx(10.0, rel=0.01)
    assert idx[1]["suggested"]["rgb_info"] == "/camera/color/camera_info"
    assert idx[1]["topics"][DEPTH_TOPIC]["encoding"] == "32FC1"


# -- reading and sync ----------------------------------------------------------------------------
@pytest.mark.parametrize("storage,encoding", [("mcap", "16UC1"), ("sqlite3", "mono16"),
                                              ("ros1", "32FC1")])
def test_extract_gives_metric_depth_for_each_encoding_and_storage(tmp_path, capsys, storage,
                                                                   encoding):
    bag, gt = write(tmp_path, storage=storage, depth_encoding=encoding, frames=4)
    out = tmp_path / "ds"
    rc, text, err = run_cli(capsys, "bag", "extract", str(bag), "--out", str(out))
    assert rc == 0, err
    assert "4 pair(s)" in text and "4 written" in text
    src = FolderSource(out)
    assert len(src) == 4
    for i in range(len(src)):
        f = src.frame(i)
        j = gt["stamps"].index(f.meta["stamp_ns"])
        assert f.meta["rgb_topic"] == RGB_TOPIC and f.meta["depth_topic"] == DEPTH_TOPIC
        assert f.meta["depth_stamp_ns"] - f.meta["stamp_ns"] == 10_000_000
        np.testing.assert_array_equal(f.rgb, gt["rgb"][j])
        np.testing.assert_allclose(f.depth, gt["depth"][j], atol=0.0006)  # mm PNG
        np.testing.assert_allclose(f.K, gt["K"])


def test_compressed_colour_is_decoded(tmp_path):
    bag, gt = write(tmp_path, compressed=True, frames=3)
    frames = list(read_synced_frames(bag, BagConfig(), BagReport(str(bag))))
    assert len(frames) == 3
    for f in frames:
        j = gt["stamps"].index(f.stamp_ns)
        assert np.abs(f.rgb.astype(int) - gt["rgb"][j]).mean() < 8  # JPEG quality 95


def test_out_of_order_stamps_are_paired_by_stamp(tmp_path):
    bag, gt = write(tmp_path, storage="sqlite3", shuffle_stamps=True, frames=8)
    report = BagReport(str(bag))
    frames = list(read_synced_frames(bag, BagConfig(), report))
    assert len(frames) == 8 and report.unpaired == 0
    for f in frames:
        j = gt["stamps"].index(f.stamp_ns)
        np.testing.assert_allclose(f.depth, gt["depth"][j], atol=0.0006)
        np.testing.assert_array_equal(f.rgb, gt["rgb"][j])


def test_header_stamps_are_checked_not_just_sliced():
    ts = get_typestore(Stores.ROS2_HUMBLE)
    ts1 = get_typestore(Stores.ROS1_NOETIC)
    img = np.zeros((2, 3, 3), np.uint8)
    cdr = bytes(ts.serialize_cdr(make_image(ts, 5 * 10**9 + 7, "cam", img, "rgb8"),
                                 "sensor_msgs/msg/Image"))
    ros1 = bytes(ts1.serialize_ros1(make_image(ts1, 5 * 10**9 + 7, "cam", img, "rgb8", True),
                                    "sensor_msgs/msg/Image"))
    assert cdr_header_stamp_ns(cdr) == header_stamp_ns(ros1) == 5 * 10**9 + 7
    rng = np.random.default_rng(0)
    for _ in range(200):  # random bytes are not a header (they used to give a garbage stamp)
        raw = rng.integers(0, 256, int(rng.integers(0, 2000)), dtype=np.uint8).tobytes()
        with pytest.raises(ValueError):
            cdr_header_stamp_ns(raw)
        with pytest.raises(ValueError):
            header_stamp_ns(raw)


def test_check_stamps_sets_aside_zero_and_repeated_stamps():
    c = check_stamps([5, 0, 3, 5, 0, 7, 3])
    assert c.stamps == [5, 3, 7] and c.zero == 2 and c.duplicates == 2
    c = check_stamps([0, 0], drop_zero=False)
    assert c.stamps == [0] and c.zero == 0 and c.duplicates == 1


def test_plan_pairs_tolerance_min_gap_and_stride():
    s = 1_000_000_000
    colour = [3 * s // 10, 0, s // 10, 2 * s // 10, 9 * s // 10]  # out of order
    depth = [s // 10 + 20_000_000, 0 + 5_000_000, 2 * s // 10 + 60_000_000, 3 * s // 10]
    pairs, unpaired, thinned = plan_pairs(colour, depth, tolerance_s=0.05)
    assert [c for c, _ in pairs] == [0, s // 10, 3 * s // 10]
    assert unpaired == 2 and thinned == 0  # 0.2 s (60 ms away) and 0.9 s
    pairs, _, thinned = plan_pairs(colour, depth, 0.05, min_gap_s=0.15)
    assert [c for c, _ in pairs] == [0, 3 * s // 10] and thinned == 1
    pairs, _, thinned = plan_pairs(colour, depth, 0.05, stride=2)
    assert [c for c, _ in pairs] == [0, 3 * s // 10] and thinned == 1


def test_label_topic_becomes_segmentation_ground_truth(tmp_path, capsys):
    bag, gt = write(tmp_path, labels=True, frames=3)
    out = tmp_path / "ds"
    rc, _, err = run_cli(capsys, "bag", "extract", str(bag), "--out", str(out), "--label-topic",
                         LABEL_TOPIC)
    assert rc == 0, err
    src = FolderSource(out)
    for i in range(len(src)):
        f = src.frame(i)
        np.testing.assert_array_equal(f.seg, gt["seg"][gt["stamps"].index(f.meta["stamp_ns"])])


# -- registration --------------------------------------------------------------------------------
def test_register_depth_moves_points_with_the_extrinsic():
    K = np.array([[100.0, 0, 49.5], [0, 100.0, 39.5], [0, 0, 1]])
    depth = np.full((80, 100), 2.0, np.float32)
    depth[30:50, 40:60] = 1.0  # a near square in front of a wall
    T = make_transform([0.1, 0.0, 0.0], [0, 0, 0, 1])  # p_colour = p_depth + (0.1, 0, 0)
    cam = PinholeCamera.from_matrix(K, 100, 80)
    out = register_depth(depth, cam, cam, T)
    # the square (z = 1) shifts by f * 0.1 / 1 = 10 px, the wall (z = 2) by 5 px
    assert out[40, 55] == pytest.approx(1.0) and out[40, 68] == pytest.approx(1.0)
    assert out[40, 44] == pytest.approx(2.0) and out[40, 72] == pytest.approx(2.0)
    assert (out[30:50, 45:50] == 0).all()  # wall the depth camera never saw (behind the square)
    assert out[40, 66] == pytest.approx(1.0)  # wall from depth cols 60.. lands behind the square
    assert (out[:, :5] == 0).all()  # nothing lands in the 5 px the wall moved away from


def test_unregistered_depth_is_registered_into_colour(tmp_path):
    bag, gt = write(tmp_path, depth_scale=2, height=96, width=128, frames=3)
    report = BagReport(str(bag))
    frames = list(read_synced_frames(bag, BagConfig(), report))
    assert report.registration.startswith("registered into colour")
    for f in frames:
        j = gt["stamps"].index(f.stamp_ns)
        assert f.depth.shape == (96, 128)
        valid = (f.depth > 0) & (gt["depth"][j] > 0)
        assert valid.mean() > 0.85
        rel = np.abs(f.depth[valid] - gt["depth"][j][valid]) / gt["depth"][j][valid]
        assert np.median(rel) < 0.04


def test_static_transform_chain_lookup():
    tf = StaticTransforms()
    tf.add("base", "cam", make_transform([1, 0, 0], [0, 0, 0, 1]))
    tf.add("cam", "depth", make_transform([0, 0.5, 0], [0, 0, 0, 1]))
    tf.add("base", "color", make_transform([1, 0, 0.2], [0, 0, 0, 1]))
    T = tf.lookup("color", "depth")  # p_color = T p_depth
    np.testing.assert_allclose(T @ [0, 0, 0, 1], [0, 0.5, -0.2, 1], atol=1e-12)
    assert tf.lookup("color", "elsewhere") is None


@pytest.mark.parametrize("storage", ["mcap", "ros1"])
def test_extrinsic_from_tf_static_moves_depth(tmp_path, storage):
    plain, _ = write(tmp_path, "plain", storage=storage, depth_scale=2, frames=1)
    moved, _ = write(tmp_path, "moved", storage=storage, depth_scale=2, frames=1,
                     tf_static=(0.2, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    report = BagReport(str(moved))
    (a,) = read_synced_frames(plain, BagConfig(), BagReport(str(plain)))
    (b,) = read_synced_frames(moved, BagConfig(), report)
    assert report.extrinsic_source == ("/tf_static camera_depth_optical_frame -> "
                                       "camera_color_optical_frame")
    # the depth camera sits 0.2 m to the colour camera's right: its points appear shifted right
    # in the colour image, so the leftmost columns lose their depth
    cols_a = (a.depth > 0).mean(axis=0)
    cols_b = (b.depth > 0).mean(axis=0)
    assert cols_a[:3].mean() > 0.8 and cols_b[:3].mean() < 0.2


def test_extrinsic_from_config_is_used(tmp_path):
    bag, _ = write(tmp_path, depth_scale=2, frames=1)
    report = BagReport(str(bag))
    cfg = BagConfig(extrinsic=[0.05, 0, 0, 0, 0, 0, 1])
    list(read_synced_frames(bag, cfg, report))
    assert report.extrinsic_source == "config bag.extrinsic"


# -- cache ---------------------------------------------------------------------------------------
def test_re_extraction_is_incremental(tmp_path, capsys):
    a, _ = write(tmp_path, "a", frames=4)
    out = tmp_path / "ds"
    assert run_cli(capsys, "bag", "extract", str(a), "--out", str(out))[0] == 0
    png = next((out / "rgb").iterdir())
    mtime = png.stat().st_mtime_ns
    rc, text, _ = run_cli(capsys, "bag", "extract", str(a), "--out", str(out))
    assert rc == 0 and "up to date (4 frames already extracted)" in text
    assert png.stat().st_mtime_ns == mtime
    b, _ = write(tmp_path, "b", frames=3, storage="mcap", seed=1)
    rc, text, _ = run_cli(capsys, "bag", "extract", str(a), str(b), "--out", str(out))
    assert rc == 0 and "3 written" in text and "7 frames" in text
    index = read_index(out)
    assert {e["meta"]["bag"] for e in index["frames"]} == {str(a), str(b)}
    assert len(index["bags"]) == 2 and all(v["complete"] for v in index["bags"].values())
    # different sync settings re-extract that bag instead of mixing frames of two settings
    rc, text, _ = run_cli(capsys, "bag", "extract", str(a), "--out", str(out), "--stride", "2")
    assert rc == 0 and "2 written" in text
    assert len(read_index(out)["frames"]) == 5


def test_extracted_folder_trains_as_a_folder_dataset(tmp_path, capsys):
    bag, _ = write(tmp_path, frames=12)
    out = tmp_path / "ds"
    assert run_cli(capsys, "bag", "extract", str(bag), "--out", str(out))[0] == 0
    train, val = build_datasets(DataConfig(name="folder", root=str(out), height=32, width=48))
    assert len(train) + len(val) == 12 and len(val) >= 1
    sample = train[0]
    assert sample["has_depth"] and not sample["has_seg"]
    assert sample["image"].shape == (3, 32, 48)


# -- bad data ------------------------------------------------------------------------------------
def test_undecodable_messages_are_skipped_counted_and_reported(tmp_path, capsys):
    ts = get_typestore(Stores.ROS2_HUMBLE)
    bag = tmp_path / "bad"
    rgb = np.full((20, 30, 3), 120, np.uint8)
    depth = np.full((20, 30), 1500, np.uint16)
    img_t = "sensor_msgs/msg/Image"
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        c_rgb = w.add_connection(RGB_TOPIC, img_t, typestore=ts)
        c_d = w.add_connection(DEPTH_TOPIC, img_t, typestore=ts)
        for i in range(5):
            stamp = 10**9 * (i + 1)
            good = ts.serialize_cdr(make_image(ts, stamp, "c", rgb, "rgb8"), img_t)
            if i == 1:
                good = bytes(good)[:40]  # truncated message: cannot be deserialised
            if i == 3:  # header says 30x20 rgb8 but the pixel data is cut short
                short = make_image(ts, stamp, "c", rgb, "rgb8")
                short.data = short.data[:100]
                good = ts.serialize_cdr(short, img_t)
            w.write(c_rgb, stamp, good)
            w.write(c_d, stamp + 1, ts.serialize_cdr(make_image(ts, stamp, "d", depth, "16UC1"),
                                                     img_t))
    out = tmp_path / "ds"
    rc, text, err = run_cli(capsys, "bag", "extract", str(bag), "--out", str(out),
                            "--rgb-topic", RGB_TOPIC, "--depth-topic", DEPTH_TOPIC)
    assert rc == 0, err
    assert f"skipped 2 undecodable message(s) on {RGB_TOPIC}" in text
    assert len(read_index(out)["frames"]) == 3


def _truncate(bag: Path, fraction: float) -> None:
    files = [bag] if bag.is_file() else [f for f in bag.iterdir() if f.suffix != ".yaml"]
    size = files[0].stat().st_size
    with open(files[0], "r+b") as fh:
        fh.truncate(int(size * fraction))


def test_truncated_mcap_keeps_complete_records_and_says_so(tmp_path, capsys):
    # a recorder killed mid-write: no summary, no footer; 30 frames span 3 chunks of ~1 MiB
    bag, gt = write(tmp_path, storage="mcap", frames=30, height=120, width=160)
    _truncate(bag, 0.6)
    out = tmp_path / "ds"
    rc, text, err = run_cli(capsys, "bag", "extract", str(bag), "--out", str(out))
    assert rc == 0, err
    assert "bag truncated: reading stopped early (file cut short" in text
    index = read_index(out)
    n = len(index["frames"])
    assert 0 < n < 30 and f"{n} written" in text
    assert not index["bags"][next(iter(index["bags"]))]["complete"]
    src = FolderSource(out)
    for i in range(n):  # what was kept is intact
        f = src.frame(i)
        np.testing.assert_array_equal(f.rgb, gt["rgb"][gt["stamps"].index(f.meta["stamp_ns"])])


@pytest.mark.parametrize("storage", ["sqlite3", "ros1"])
def test_truncated_bag_fails_with_one_line_naming_it(tmp_path, capsys, storage):
    bag, _ = write(tmp_path, storage=storage, frames=6)
    _truncate(bag, 0.6)
    out = tmp_path / "ds"
    rc, _text, err = run_cli(capsys, "bag", "extract", str(bag), "--out", str(out))
    assert rc == 2
    assert err.count("\n") == 1 and f"cannot open bag {bag}" in err
    assert not (out / "dataset.json").exists()  # nothing left that looks complete


def test_unopenable_and_missing_bags(tmp_path, capsys):
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(os.urandom(1000))
    rc, _, err = run_cli(capsys, "bag", "index", str(junk))
    assert rc == 2 and err.startswith(f"mtl-train bag: error: cannot open bag {junk}")
    rc, _, err = run_cli(capsys, "bag", "index", str(tmp_path / "nope.db3"))
    assert rc == 2 and "no such file or folder" in err
    with pytest.raises(BagError, match="not in the bag"):
        bag, _ = write(tmp_path, frames=1)
        list(read_synced_frames(bag, BagConfig(depth_topic="/nope"), BagReport(str(bag))))


def test_missing_camera_info(tmp_path, capsys):
    bag, _gt = write(tmp_path, "same", camera_info=False, frames=2)
    out = tmp_path / "ds"
    rc, text, err = run_cli(capsys, "bag", "extract", str(bag), "--out", str(out))
    assert rc == 0, err
    assert "no camera_info: assumed already registered" in text
    assert FolderSource(out).frame(0).K is None
    bag2, _ = write(tmp_path, "scaled", camera_info=False, depth_scale=2, frames=2)
    rc, _, err = run_cli(capsys, "bag", "extract", str(bag2), "--out", str(tmp_path / "ds2"))
    assert rc == 2 and "cannot register depth 40x30 into colour 80x60" in err
    assert err.count("\n") == 1


# -- the real RealSense recording ------------------------------------------------------------
@pytest.mark.parametrize("kind", list(RS_BAGS))
def test_realsense_index_and_extract(tmp_path, capsys, kind, realsense_data):
    bag = realsense_data / RS_BAGS[kind]
    idx = index_bag(bag)
    assert idx.suggested == {"rgb": "/device_0/sensor_1/Color_0/image/data",
                             "depth": "/device_0/sensor_0/Depth_0/image/data",
                             "rgb_info": "/device_0/sensor_1/Color_0/info/camera_info",
                             "depth_info": "/device_0/sensor_0/Depth_0/info/camera_info"}
    assert idx.topics["/device_0/sensor_0/Depth_0/image/data"].details["encoding"] == "mono16"
    out = tmp_path / "ds"
    rc, text, err = run_cli(capsys, "bag", "extract", str(bag), "--out", str(out))
    assert rc == 0, err
    assert "1 colour / 2 depth messages -> 1 pair(s)" in text
    assert "registered into colour" in text
    if kind == "ros1":
        assert "RealSense tf topics (Depth_0 -> Color_0)" in text
    f = FolderSource(out).frame(0)
    assert f.meta["stamp_ns"] == 360_713_523_000 and f.meta["depth_stamp_ns"] == 360_815_089_000
    assert f.rgb.shape == (480, 640, 3) and f.depth.shape == (480, 640)
    valid = f.depth > 0
    assert valid.mean() > 0.9
    assert 0.3 < np.median(f.depth[valid]) < 3.3 and f.depth.max() < 3.3
    np.testing.assert_allclose(f.K[0, 0], 613.2, atol=0.1)


def _edge_agreement(depth: np.ndarray, rgb: np.ndarray) -> float:
    """Correlation of depth and colour gradient magnitudes (higher = better aligned)."""
    g = cv2.GaussianBlur(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32), (5, 5), 0)
    gc = np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))
    dd = cv2.GaussianBlur(depth, (5, 5), 0)
    gd = np.hypot(cv2.Sobel(dd, cv2.CV_32F, 1, 0), cv2.Sobel(dd, cv2.CV_32F, 0, 1))
    gd[~(cv2.erode((depth > 0).astype(np.uint8), np.ones((7, 7))) > 0)] = 0
    a, b = gd[20:-20, 40:-40].ravel(), gc[20:-20, 40:-40].ravel()
    return float(np.mean((a - a.mean()) / a.std() * (b - b.mean()) / b.std()))


def test_realsense_extrinsic_direction_aligns_depth_with_colour(realsense_data):
    bag = realsense_data / RS_BAGS["ros1"]
    report = BagReport(str(bag))
    (f,) = read_synced_frames(bag, BagConfig(), report)
    assert report.extrinsic_source.startswith("RealSense tf topics")
    T = np.asarray(report.extrinsic)
    scores = {}
    for name, ext in (("chosen", T), ("identity", np.eye(4)), ("inverse", invert(T))):
        q = _quaternion(ext)
        (g,) = read_synced_frames(bag, BagConfig(extrinsic=[*ext[:3, 3], *q]), BagReport("x"))
        scores[name] = _edge_agreement(g.depth, g.rgb)
    np.testing.assert_allclose(_edge_agreement(f.depth, f.rgb), scores["chosen"], atol=1e-6)
    assert scores["chosen"] > scores["identity"] > scores["inverse"], scores


def _quaternion(T: np.ndarray) -> list[float]:
    R = T[:3, :3]
    w = np.sqrt(max(0.0, 1 + R[0, 0] + R[1, 1] + R[2, 2])) / 2
    return [(R[2, 1] - R[1, 2]) / (4 * w), (R[0, 2] - R[2, 0]) / (4 * w),
            (R[1, 0] - R[0, 1]) / (4 * w), w]


# -- extraction speed paths (issue 13): worker threads, PNG level, vectorised registration -------
def _brute_force_registration(depth, cam_d, cam_c, T):
    """register_depth's rule written pixel by pixel: lift, move, project, splat k x k, nearest."""
    H, W = cam_c.size
    out = np.full((H, W), np.inf)
    k = int(min(4, max(1, np.ceil(max(cam_c.fx / cam_d.fx, cam_c.fy / cam_d.fy) - 1e-6))))
    for v in range(depth.shape[0]):
        for u in range(depth.shape[1]):
            z = float(depth[v, u])
            if z <= 0:
                continue
            p = T[:3, :3] @ np.array([(u - cam_d.cx) / cam_d.fx * z,
                                      (v - cam_d.cy) / cam_d.fy * z, z]) + T[:3, 3]
            if p[2] <= 1e-6:
                continue
            uc, vc = cam_c.fx * p[0] / p[2] + cam_c.cx, cam_c.fy * p[1] / p[2] + cam_c.cy
            u0, v0 = int(np.floor(uc - (k - 1) / 2 + 0.5)), int(np.floor(vc - (k - 1) / 2 + 0.5))
            for dv in range(k):
                for du in range(k):
                    if 0 <= v0 + dv < H and 0 <= u0 + du < W:
                        out[v0 + dv, u0 + du] = min(out[v0 + dv, u0 + du], p[2])
    out[np.isinf(out)] = 0
    return out.astype(np.float32)


def test_vectorised_registration_matches_the_pixel_by_pixel_rule():
    rng = np.random.default_rng(4)
    depth = (0.5 + 3 * rng.random((18, 24))).astype(np.float32)
    depth[rng.random(depth.shape) < 0.2] = 0
    cam_d = PinholeCamera.from_matrix([20.0, 0, 11.5, 0, 21.0, 8.5, 0, 0, 1], 24, 18)
    cam_c = PinholeCamera.from_matrix([41.0, 0, 23.5, 0, 40.0, 17.5, 0, 0, 1], 48, 36)
    T = make_transform([0.04, -0.01, 0.02], [0.02, -0.03, 0.01, 0.999])
    fast = register_depth(depth, cam_d, cam_c, T)
    slow = _brute_force_registration(depth, cam_d, cam_c, T)
    assert (fast > 0).mean() > 0.5
    np.testing.assert_allclose(fast, slow, rtol=1e-6, atol=0)


def _folder_arrays(root: Path) -> dict[str, tuple]:
    src = FolderSource(root)
    return {f.meta["frame_id"] if "frame_id" in f.meta else str(i): (f.rgb, f.depth)
            for i, f in ((i, src.frame(i)) for i in range(len(src)))}


def test_parallel_extraction_writes_what_one_thread_writes(tmp_path, capsys):
    bag, _ = write(tmp_path, depth_scale=2, height=48, width=64, frames=9)
    outs = {}
    for workers, level in ((1, "6"), (3, "0")):
        out = tmp_path / f"ds_{workers}"
        rc, text, err = run_cli(capsys, "bag", "extract", str(bag), "--out", str(out),
                                "--workers", str(workers), "--png-compression", level)
        assert rc == 0, err
        assert f"frames/s, {workers} workers" in text
        outs[workers] = out
    one, three = (read_index(outs[w]) for w in (1, 3))
    assert [e["id"] for e in one["frames"]] == [e["id"] for e in three["frames"]]  # bag order
    assert [e["depth_max"] for e in one["frames"]] == [e["depth_max"] for e in three["frames"]]
    a, b = _folder_arrays(outs[1]), _folder_arrays(outs[3])
    assert a.keys() == b.keys() and len(a) == 9
    for k in a:  # level 0 and level 6 are both lossless: the same pixels and depths
        np.testing.assert_array_equal(a[k][0], b[k][0])
        np.testing.assert_array_equal(a[k][1], b[k][1])
    size = {w: sum(p.stat().st_size for p in (outs[w] / "rgb").iterdir()) for w in (1, 3)}
    assert size[3] > size[1]  # stored (level 0) PNGs are larger: the price of speed
    raw = tmp_path / "ds_npy"  # raw arrays (format/3): the same pixels and depths again
    rc, text, err = run_cli(capsys, "bag", "extract", str(bag), "--out", str(raw),
                            "--workers", "2", "--image-format", "npy")
    assert rc == 0, err
    index = read_index(raw)
    assert index["format"] == "mtl_perception.folder/3"
    assert {Path(e[k]).suffix for e in index["frames"] for k in ("rgb", "depth")} == {".npy"}
    c = _folder_arrays(raw)
    assert c.keys() == a.keys()
    for k in a:
        np.testing.assert_array_equal(a[k][0], c[k][0])
        np.testing.assert_array_equal(a[k][1], c[k][1])
    rc, _, err = run_cli(capsys, "bag", "extract", str(bag), "--out", str(tmp_path / "x"),
                         "--workers", "0")
    assert rc == 2 and "--workers must be >= 1" in err
