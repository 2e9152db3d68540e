"""The transport floor of the model table is what its notes say: the node's outputs, no work.

bench/bench_models.py reports it beside the node target (the floor alone is above the budget the
target leaves), so the echo node must answer with the same topics, sizes, encodings and header as
perception_node, for every frame.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy not installed (pip install -e .[ros])")

from bench.bench_node_latency import REPO, _echo_floor, frames
from mtl_perception.core.codecs import image_to_array
from mtl_perception.ros.client import PerceptionClient
from mtl_perception.ros.process import stop_node

pytestmark = pytest.mark.ros

OUTPUTS = ("semantic", "semantic_color", "depth")


def test_echo_node_answers_with_the_nodes_outputs_at_the_frames_size(tmp_path):
    ns = "/echo_test"
    proc = subprocess.Popen([sys.executable, "-m", "bench.echo_node", ns, ",".join(OUTPUTS)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        with PerceptionClient(node_name=f"{ns}/mtl_perception",
                              image_topic=f"{ns}/camera/image_raw", outputs=OUTPUTS,
                              queue_depth=1) as client:
            client.wait_until_connected(timeout=60)
            rgb = frames(1)[0]
            rec = None
            for k in range(10):  # best effort: the first frames may go before both sides match
                stamp = 1_234_000_000_000 + k
                client.publish_rgb(rgb, stamp, "camera_optical")
                rec = client.wait_for(stamp, timeout=2)
                if rec is not None:
                    break
            assert rec is not None, "the echo node answered none of 10 frames"
            encodings = {name: msg.encoding for name, msg in rec.outputs.items()}
            assert encodings == {"semantic": "mono8", "semantic_color": "rgb8", "depth": "32FC1"}
            for name, msg in rec.outputs.items():
                assert image_to_array(msg).shape[:2] == rgb.shape[:2], name
                assert msg.header.frame_id == "camera_optical", name
    finally:
        stop_node(proc)


def test_the_floor_is_measured_over_every_output_asked_for(tmp_path):
    floor = _echo_floor(frames(), tmp_path, OUTPUTS, "/echo_floor_test")
    assert floor["outputs"] == list(OUTPUTS) and floor["frames_lost"] == 0
    e2e = floor["end_to_end_ms"]
    assert e2e["n"] == 60 and 0.0 < e2e["p50"] < 1000.0 and np.isfinite(e2e["p90"])
