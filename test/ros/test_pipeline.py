"""The node's frame pipeline and diagnostics as plain code: ROS messages, no graph, no process."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy not installed (pip install -e .[ros])")
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticStatus
from sensor_msgs.msg import CameraInfo, Image

from mtl_perception.core.codecs import fill_image, image_to_array, pointcloud2_to_array
from mtl_perception.ros.diagnostics import (
    RECENT_FRAMES,
    SkipCounter,
    Stats,
    diagnostic_array,
    take_window,
)
from mtl_perception.ros.pipeline import (
    FramePipeline,
    FrameRejected,
    FrameSettings,
    needed_predictions,
)
from mtl_perception.runtime.predictor import Predictor

pytestmark = pytest.mark.ros
H, W = 48, 64


class Recorder:
    """Stands in for a publisher: keeps a copy of what was published (buffers are reused)."""

    def __init__(self) -> None:
        self.msgs: list[object] = []

    def publish(self, msg: object) -> None:
        self.msgs.append(image_to_array(msg).copy() if isinstance(msg, Image) else msg)


@pytest.fixture(scope="module")
def predictor(tiny_artifact) -> Predictor:
    return Predictor(tiny_artifact, device="cpu")


def _info() -> CameraInfo:
    info = CameraInfo(width=W, height=H)
    info.k = [50.0, 0.0, 31.5, 0.0, 55.0, 23.5, 0.0, 0.0, 1.0]
    info.p = [50.0, 0.0, 31.5, 0.0, 0.0, 55.0, 23.5, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def _image(seed: int = 0) -> Image:
    rgb = np.random.default_rng(seed).integers(0, 255, (H, W, 3), np.uint8)
    return fill_image(Image(), rgb, "rgb8")


def test_needed_predictions_follow_the_wanted_outputs():
    assert needed_predictions({"depth": True}) == {"depth"}
    assert needed_predictions({"points": True}) == {"labels", "depth"}
    assert needed_predictions({"semantic_color": True, "confidence": True}) == {
        "labels", "confidence"}
    assert needed_predictions({"camera_info": True}) == set()


def test_every_output_published_with_colours_from_the_palette(predictor):
    warnings: list[str] = []
    pipe = FramePipeline(predictor, network_resolution=False, warn=warnings.append)
    pubs = {name: Recorder() for name in ("semantic", "semantic_color", "depth", "confidence",
                                          "points", "camera_info")}
    want = dict.fromkeys(pubs, True)
    result = pipe.process(_image(), want, _info(), FrameSettings(4, 10.0), pubs)
    assert result is not None and not warnings
    assert {"decode", "preprocess", "forward", "postprocess", "publish"} <= set(result.stages)
    labels = pubs["semantic"].msgs[0]
    palette = np.asarray(predictor.palette, np.uint8)
    assert np.array_equal(pubs["semantic_color"].msgs[0], palette[labels])
    assert pointcloud2_to_array(pubs["points"].msgs[0]).size == (H // 4) * (W // 4)
    assert (pubs["camera_info"].msgs[0].width, pubs["camera_info"].msgs[0].height) == (W, H)


def test_without_camera_info_points_wait_and_a_warning_says_why(predictor):
    warnings: list[str] = []
    pipe = FramePipeline(predictor, network_resolution=True, warn=warnings.append)
    pubs = {"depth": Recorder(), "points": Recorder(), "camera_info": Recorder()}
    want = dict.fromkeys(pubs, True)
    assert pipe.process(_image(), want, None, FrameSettings(4, 10.0), pubs) is not None
    assert pubs["depth"].msgs[0].shape == predictor.input_size
    assert not pubs["points"].msgs and not pubs["camera_info"].msgs
    assert warnings and "no camera_info" in warnings[0]
    # only camera_info wanted, none known: nothing to do, no inference
    assert pipe.process(_image(), {"camera_info": True}, None, FrameSettings(4, 10.0),
                        pubs) is None


def test_bad_input_is_rejected(predictor):
    pipe = FramePipeline(predictor, network_resolution=False, warn=lambda _: None)
    bad = Image(height=4, width=4, encoding="yuv422_yuy2", step=8, data=b"\x00" * 32)
    with pytest.raises(FrameRejected):
        pipe.process(bad, {"semantic": True}, None, FrameSettings(4, 10.0),
                     {"semantic": Recorder()})


def test_diagnostics_window_counts_and_resets():
    stats = Stats(window_start=0.0)
    stats.count_received(skipped=2)
    stats.count_processed(0.010, {"forward": 0.004})
    stats.count_rejected("bad encoding")
    level, message, values = take_window(stats, 1.0, {"device": "cpu"})
    assert level == DiagnosticStatus.WARN and "1 bad frame" in message
    assert values["input_rate_hz"] == "3.00" and values["frames_dropped"] == "2"
    assert values["latency_mean_ms"] == "10.00" and values["forward_ms"] == "4.00"
    assert values["last_reject_reason"] == "bad encoding" and values["device"] == "cpu"
    level, _, values = take_window(stats, 2.0, {})
    assert level == DiagnosticStatus.OK and values["latency_mean_ms"] == "nan"
    arr = diagnostic_array("/robot/mtl_perception", "cpu", level, "ok", values, Time(sec=1))
    assert arr.status[0].name == "/robot/mtl_perception: perception"


def test_diagnostics_level_judges_the_last_frames_not_the_last_second():
    """All of the last frames dropped: ERROR, and it stays ERROR in windows without frames (it
    read "ok" once the frames stopped); most dropped: WARN; a window of good frames: OK."""
    stats = Stats(window_start=0.0)
    for _ in range(RECENT_FRAMES):
        stats.count_processed(0.01, {})
    for _ in range(RECENT_FRAMES // 2 + 1):
        stats.count_rejected("depth contains NaN/inf")
    assert take_window(stats, 1.0, {})[0] == DiagnosticStatus.WARN
    assert take_window(stats, 2.0, {})[0] == DiagnosticStatus.WARN  # no frames: still WARN
    for _ in range(RECENT_FRAMES):
        stats.count_error("RuntimeError: boom")
    level, message, _ = take_window(stats, 3.0, {})
    assert level == DiagnosticStatus.ERROR and "boom" in message
    level, _, values = take_window(stats, 4.0, {})
    assert level == DiagnosticStatus.ERROR and values["output_rate_hz"] == "0.00"
    for _ in range(RECENT_FRAMES):
        stats.count_processed(0.01, {})
    assert take_window(stats, 5.0, {})[0] == DiagnosticStatus.OK


def test_skip_counter_counts_sequence_gaps_per_publisher():
    skips = SkipCounter()
    a, b = {"data": b"a"}, {"data": b"b"}
    seen = [skips.skipped({"publication_sequence_number": s, "publisher_gid": g})
            for s, g in ((1, a), (4, a), (1, b), (5, a), (3, b))]
    assert seen == [0, 2, 0, 0, 1]
    assert skips.skipped(None) == 0
