"""`mtl-replay`: a real bag through a real perception node over real (loopback) DDS."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy not installed (pip install -e .[ros])")

from mtl_training.apps.replay_cli import main as replay_main
from mtl_training.data.bags.reader import index_bag
from mtl_training.data.bags.synth import (
    LABEL_TOPIC,
    RGB_TOPIC,
    SynthBagSpec,
    write_synthetic_bag,
)

pytestmark = pytest.mark.ros

REALSENSE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "realsense"


def test_replay_scores_depth_and_labels_and_writes_report_and_result_bag(tmp_path, tiny_artifact,
                                                                         capsys):
    bag = tmp_path / "run"
    write_synthetic_bag(bag, SynthBagSpec(frames=6, labels=True, depth_scale=2, compressed=True))
    report_dir = tmp_path / "report"
    result = tmp_path / "result"
    rc = replay_main([str(bag), "--model", str(tiny_artifact), "--report", str(report_dir),
                      "--rate", "max", "--result-bag", str(result),
                      "--set", f"bag.label_topic={LABEL_TOPIC}"])
    out = capsys.readouterr()
    assert rc == 0, out.err + (report_dir / "node.log").read_text()
    assert "6 frames sent, 6 answered, 0 dropped" in out.out
    assert "depth (6 frames): abs_err" in out.out and "seg (6 frames): mIoU" in out.out
    r = json.loads((report_dir / "report.json").read_text())
    assert r["frames"] == {"sent": 6, "received": 6, "dropped": 0, "scored_depth": 6,
                           "scored_seg": 6}
    assert 0 < r["latency_ms"]["p50"] <= r["latency_ms"]["p95"] <= r["latency_ms"]["p99"]
    assert r["throughput_fps"] > 0
    assert set(r["metrics"]["depth"]) == {"abs_err", "rel_err", "rmse", "delta1"}
    assert 0 <= r["metrics"]["seg"]["miou"] <= 1
    assert r["bag_report"]["registration"].startswith("registered into colour")
    md = (report_dir / "report.md").read_text()
    assert "latency_p95_ms" in md and "## Depth" in md and "## Segmentation" in md
    # the result bag holds inputs and outputs, readable by any rosbag tool
    idx = index_bag(result)
    counts = {name: t.count for name, t in idx.topics.items()}
    assert counts == {"/image": 6, "/camera_info": 6, "/mtl_perception/semantic": 6,
                      "/mtl_perception/depth": 6}
    assert idx.topics["/mtl_perception/depth"].details["encoding"] == "32FC1"


def test_replay_at_recorded_rate_keeps_timing(tmp_path, tiny_artifact, capsys):
    bag = tmp_path / "run.bag"
    write_synthetic_bag(bag, SynthBagSpec(frames=8, storage="ros1", period_s=0.25))
    report_dir = tmp_path / "report"
    rc = replay_main([str(bag), "--model", str(tiny_artifact), "--report", str(report_dir)])
    out = capsys.readouterr()
    assert rc == 0, out.err
    r = json.loads((report_dir / "report.json").read_text())
    assert r["frames"]["sent"] == 8 and r["rate"] == 1.0
    # 8 frames recorded 0.25 s apart: the node answers at the recorded rate, not faster
    assert r["frames"]["received"] >= 7
    assert r["throughput_fps"] == pytest.approx(4.0, rel=0.35)


def test_replay_prints_bad_message_and_stamp_counts(tmp_path, tiny_artifact, capsys):
    bag = tmp_path / "bad"
    write_synthetic_bag(bag, SynthBagSpec(frames=5, repeat_stamps=(3,),
                                          random_bytes=((RGB_TOPIC, 1),)))
    report_dir = tmp_path / "report"
    rc = replay_main([str(bag), "--model", str(tiny_artifact), "--report", str(report_dir),
                      "--rate", "max"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "3 frames sent" in out.out  # 5 - 1 undecodable - 1 duplicate stamp
    assert f"bag: skipped 1 undecodable message(s) on {RGB_TOPIC}" in out.out
    assert "bag: 1 duplicate colour stamps (kept the first)" in out.out
    md = (report_dir / "report.md").read_text()
    assert "## Bad data" in md and f"skipped 1 undecodable message(s) on {RGB_TOPIC}" in md
    r = json.loads((report_dir / "report.json").read_text())
    assert r["bag_report"]["bad_messages"] == {RGB_TOPIC: 1}
    assert r["bag_report"]["duplicate_stamps"] == {"colour": 1, "depth": 1}


def test_replay_bad_inputs_fail_with_one_line(tmp_path, tiny_artifact, capsys):
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"\x89MCAP0\r\n" + bytes(100))
    rc = replay_main([str(junk), "--model", str(tiny_artifact), "--report", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and f"cannot open bag {junk}" in err
    bag = tmp_path / "ok"
    write_synthetic_bag(bag, SynthBagSpec(frames=1))
    missing = tmp_path / "missing.safetensors"
    rc = replay_main([str(bag), "--model", str(missing), "--report", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2 and str(missing) in err and "Traceback" not in err
    rc = replay_main([str(bag), "--model", str(tiny_artifact), "--report", str(tmp_path / "r"),
                      "--rate", "fast"])
    assert rc == 2 and "--rate" in capsys.readouterr().err


@pytest.mark.skipif(not REALSENSE.is_dir(),
                    reason=f"RealSense sample data not found at {REALSENSE}")
def test_replay_realsense_recording(tmp_path, tiny_artifact, capsys):
    bag = REALSENSE / "single_depth_color_640x480.bag"
    report_dir = tmp_path / "report"
    rc = replay_main([str(bag), "--model", str(tiny_artifact), "--report", str(report_dir),
                      "--param", "publish.points=false"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    r = json.loads((report_dir / "report.json").read_text())
    assert r["frames"]["received"] == 1 and r["frames"]["scored_depth"] == 1
    assert np.isfinite(r["metrics"]["depth"]["abs_err"])
    assert "RealSense tf topics" in r["bag_report"]["registration"]
