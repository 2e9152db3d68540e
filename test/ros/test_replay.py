"""`mtl-replay`: a real bag through a real perception node over real (loopback) DDS."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader

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


def _send_times(result_bag: Path, topic: str = "/image") -> list[float]:
    """Seconds at which the replay published each input (the result bag's receive times)."""
    with Reader(result_bag) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        return [t * 1e-9 for _, t, _ in reader.messages(connections=conns)]


def test_replay_at_recorded_rate_keeps_timing(tmp_path, tiny_artifact, capsys):
    """Frames go out on the recording's schedule, never ahead of it; what a loaded machine
    changes (late sends, frames the busy node replaced in its queue) is not asserted."""
    bag = tmp_path / "run.bag"
    write_synthetic_bag(bag, SynthBagSpec(frames=8, storage="ros1", period_s=0.25))
    spans = {}
    for rate in ("1", "2"):
        report_dir = tmp_path / f"report{rate}"
        rc = replay_main([str(bag), "--model", str(tiny_artifact), "--report", str(report_dir),
                          "--rate", rate, "--result-bag", str(tmp_path / f"result{rate}")])
        out = capsys.readouterr()
        assert rc == 0, out.err
        r = json.loads((report_dir / "report.json").read_text())
        assert r["frames"]["sent"] == 8 and r["rate"] == float(rate)
        assert 1 <= r["frames"]["received"] <= 8
        sent = _send_times(tmp_path / f"result{rate}")
        assert len(sent) == 8
        # frame k is due k * 0.25 s / rate after the first: late under load, never early
        period = 0.25 / float(rate)
        for k, t in enumerate(sent):
            assert t - sent[0] >= k * period - 0.01, (rate, k, sent)
        spans[rate] = sent[-1] - sent[0]
    # the recorded schedule at twice the speed takes at least half as long, never less
    assert spans["1"] >= 1.75 - 0.01 and spans["2"] >= 0.875 - 0.01, spans


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


def test_replay_without_label_topic_says_why_segmentation_is_not_scored(tmp_path, tiny_artifact,
                                                                      capsys):
    """No bag.label_topic (replay_eval.launch.py without config:=): the report and the summary
    say segmentation was not scored and what to pass, instead of leaving it out silently."""
    bag = tmp_path / "nolabels"
    write_synthetic_bag(bag, SynthBagSpec(frames=3, labels=True))
    report_dir = tmp_path / "report"
    rc = replay_main([str(bag), "--model", str(tiny_artifact), "--report", str(report_dir),
                      "--rate", "max"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    md = (report_dir / "report.md").read_text()
    assert "## Segmentation\n\nNot scored: no label topic given: pass --config FILE with " \
           "bag.label_topic (replay_eval.launch.py: config:=FILE)." in md, md
    assert "seg: not scored (no label topic given" in out.out
    r = json.loads((report_dir / "report.json").read_text())
    assert r["metrics"]["seg"] == {} and "label_topic" in r["not_scored"]["seg"]
    assert r["metrics"]["depth"] and "depth" not in r["not_scored"]


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


def test_replay_realsense_recording(tmp_path, tiny_artifact, capsys, realsense_data):
    bag = realsense_data / "single_depth_color_640x480.bag"
    report_dir = tmp_path / "report"
    rc = replay_main([str(bag), "--model", str(tiny_artifact), "--report", str(report_dir),
                      "--param", "publish.points=false"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    r = json.loads((report_dir / "report.json").read_text())
    assert r["frames"]["received"] == 1 and r["frames"]["scored_depth"] == 1
    assert np.isfinite(r["metrics"]["depth"]["abs_err"])
    assert "RealSense tf topics" in r["bag_report"]["registration"]
