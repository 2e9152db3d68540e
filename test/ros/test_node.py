"""The perception node as a real process over real (loopback) DDS."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy not installed (pip install -e .[ros])")
from sensor_msgs.msg import Image  # noqa: E402

from mtl_perception.replay import PerceptionClient, decode_outputs, start_node, stop_node  # noqa: E402

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def running_node(tiny_artifact, tmp_path_factory):
    log = tmp_path_factory.mktemp("node") / "node.log"
    proc = start_node(tiny_artifact, params={"device": "cpu"}, log_path=log)
    client = PerceptionClient()
    try:
        client.wait_until_connected(timeout=60)
    except TimeoutError:
        stop_node(proc)
        client.close()
        pytest.fail(f"node did not come up; log:\n{log.read_text()}")
    yield proc, client, log
    client.close()
    assert stop_node(proc) == 0, log.read_text()


def _send(client, stamp_ns, rgb=None, encoding="rgb8", frame_id="cam_optical"):
    rgb = rgb if rgb is not None else np.random.default_rng(stamp_ns).integers(
        0, 255, (48, 64, 3), dtype=np.uint8)
    for _ in range(3):  # best-effort input: resend until the outputs show up
        client.publish_rgb(rgb, stamp_ns, frame_id, encoding)
        rec = client.wait_for(stamp_ns, timeout=5)
        if rec is not None:
            return rec
    return None


def test_outputs_keep_header_encoding_and_size(running_node):
    _, client, log = running_node
    stamp = 1_700_000_000_123_456_789
    rec = _send(client, stamp)
    assert rec is not None, log.read_text()
    for name, msg in rec.outputs.items():
        assert msg.header.frame_id == "cam_optical", name
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == divmod(stamp, 10**9)
        assert (msg.height, msg.width) == (48, 64)
    assert rec.outputs["semantic"].encoding == "mono8"
    assert rec.outputs["depth"].encoding == "32FC1"
    arrays = decode_outputs(rec)
    assert arrays["semantic"].max() < 4
    assert np.isfinite(arrays["depth"]).all() and (arrays["depth"] > 0).all()


def test_malformed_frame_is_dropped_and_node_keeps_serving(running_node):
    proc, client, log = running_node
    bad = Image(height=480, width=640, encoding="rgb8", step=1920)
    bad.data = b"\x00" * 100  # far shorter than step x height
    bad.header = client.make_header(5_000_000_000, "cam")
    client.publish_raw(bad, 5_000_000_000)
    weird = Image(height=4, width=4, encoding="yuv422", step=8, data=b"\x00" * 32)
    weird.header = client.make_header(5_000_000_001, "cam")
    client.publish_raw(weird, 5_000_000_001)
    rec = _send(client, 6_000_000_000, encoding="bgr8")
    assert rec is not None, log.read_text()
    assert proc.poll() is None
    assert client.wait_for(5_000_000_000, timeout=0.5) is None


def test_missing_model_fails_at_start_with_file_name(tmp_path):
    missing = tmp_path / "missing.safetensors"
    proc = start_node(missing, log_path=tmp_path / "log.txt")
    assert proc.wait(60) != 0
    text = (tmp_path / "log.txt").read_text()
    assert str(missing) in text and "Traceback" not in text
