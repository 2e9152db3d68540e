"""`scripts/demo.py --tiny`: the whole demo (bag -> teacher -> pseudo-labels -> students -> live
node replay -> montage + summary) end to end at toy sizes, in a subprocess as `make demo` does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

pytest.importorskip("rclpy", reason="rclpy not installed (pip install -e .[ros])")

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[2]


def test_tiny_demo_runs_end_to_end_and_writes_its_files(tmp_path):
    out = tmp_path / "demo_out"
    env = {**os.environ, "ROS_LOG_DIR": str(tmp_path / "ros_log"), "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.run([sys.executable, str(REPO / "scripts/demo.py"), "--tiny", "--out",
                           str(out)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    text = proc.stdout
    for line in ("recorded 40 frames", "dataset ", "keep segmentation labels",
                 "teacher (RGB + depth -> seg) trained", "pseudo-labels at tau",
                 "kept-pixel accuracy", "baseline trained", "student trained",
                 # the real-time networks, both from the packaged ImageNet weights
                 "students: efficientnet_lite0_lean + refine decoder, ImageNet",
                 "depth branch from ImageNet", "% at 50 % coverage",
                 "=== mtl_perception demo", "held-out recording (6 frames",
                 "one seed", "docs/results/", "wall time:", "CPU time"):
        assert line in text, f"missing {line!r} in:\n{text}"
    for name in ("baseline", "student"):
        assert f"{name}: replay " in text and "6 frames sent, 6 answered" in text
        assert (out / f"{name}.safetensors").is_file()
        report = out / f"replay_{name}"
        r = json.loads((report / "report.json").read_text())
        assert r["frames"]["received"] == r["frames"]["sent"] == 6
        assert r["frames"]["scored_seg"] == 6 and r["frames"]["scored_depth"] == 6
        assert 0 <= r["metrics"]["seg"]["miou"] <= 1 and r["throughput_fps"] > 0
        assert (report / "report.md").is_file()
        assert (report / "result_bag" / "metadata.yaml").is_file()
    assert json.loads((out / "pseudo" / "manifest.json").read_text())["complete"] is True
    img = cv2.imread(str(out / "montage.png"))
    assert img is not None and img.shape[1] > 6 * 80  # six labelled columns
    summary = (out / "summary.md").read_text()
    assert "| baseline |" in summary and "| student |" in summary and "one seed" in summary
    assert "montage.png" in summary
    # a second run into the same folder replaces its own outputs (overwrite), no refusal; with
    # --docs it also writes the page and a 1x montage the page links to
    docs = tmp_path / "docs"
    again = subprocess.run([sys.executable, str(REPO / "scripts/demo.py"), "--tiny", "--out",
                            str(out), "--docs", str(docs)], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    page = (docs / "results/demo.md").read_text()
    assert "![montage](../img/demo_montage.png)" in page and "| student |" in page
    assert "scripts/demo.py --tiny" in page and "s wall time" in page
    small = cv2.imread(str(docs / "img/demo_montage.png"))
    assert small is not None and small.shape[1] < img.shape[1]  # 1x, not the demo's 2x
