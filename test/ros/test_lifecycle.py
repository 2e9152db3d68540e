"""perception_node as a lifecycle node, driven through its lifecycle services over real DDS.

The node runs as its own process with autostart:=false and is moved through configure, activate,
deactivate, cleanup and shutdown by `<node>/change_state` calls from another participant, as a
lifecycle manager (Nav2's, or `ros2 lifecycle set`) does. What each state must mean:
unconfigured = nothing loaded and no topics; inactive = model loaded, no topics, frames get no
answer; active = frames answered; deactivate keeps the model (re-activation loads nothing).
The ONNX model is served the same way, by the onnxruntime backend, with the same outputs.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy not installed (pip install -e .[ros])")
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter

from mtl_perception.ros.client import PerceptionClient, decode_outputs
from mtl_perception.ros.process import start_node, stop_node
from mtl_perception.runtime.predictor import Predictor
from mtl_training.export import export_onnx

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[2]
PARAMS_FILE = REPO / "config" / "perception.yaml"
H, W = 48, 64


def frame(seed: int) -> np.ndarray:
    small = np.random.default_rng(seed).integers(0, 255, (H // 8 + 1, W // 8 + 1, 3), np.uint8)
    return np.ascontiguousarray(np.repeat(np.repeat(small, 8, 0), 8, 1)[:H, :W])


def tiny_onnx(tmp_path_factory: pytest.TempPathFactory, artifact: Path) -> Path:
    """The tiny artifact's ONNX export, once per pytest session (the export takes seconds)."""
    out = tmp_path_factory.getbasetemp() / "onnx_shared" / "tiny.onnx"
    if not out.is_file():
        export_onnx(artifact, out)
    return out


class Managed:
    """A node process with autostart off, and a client that calls its lifecycle services."""

    def __init__(self, tmp_path_factory, model: Path, ns: str,
                 params: dict | None = None) -> None:
        self.log = tmp_path_factory.mktemp("life") / "node.log"
        self.fqn = f"{ns}/mtl_perception"
        self.image = f"{ns}/image"
        self.proc = start_node(model, params={"device": "cpu", "autostart": False,
                                              **(params or {})},
                               params_file=PARAMS_FILE, remaps={"__ns": ns, "image": self.image},
                               log_path=self.log)
        self.client = PerceptionClient(node_name=self.fqn, image_topic=self.image,
                                       outputs=("semantic", "depth"))
        self.stamp = 1_700_000_000_000_000_000

    def _call(self, srv_type, name: str, request, timeout: float = 60.0):
        cli = self.client.node.create_client(srv_type, f"{self.fqn}/{name}")
        try:
            assert cli.wait_for_service(timeout_sec=timeout), f"no {name}: {self.log_text()}"
            future = cli.call_async(request)
            deadline = time.monotonic() + timeout
            while not future.done() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert future.done(), f"{name} timed out; log:\n{self.log_text()}"
            return future.result()
        finally:
            self.client.node.destroy_client(cli)

    def state(self) -> str:
        return self._call(GetState, "get_state", GetState.Request()).current_state.label

    def change(self, transition: int) -> bool:
        req = ChangeState.Request()
        req.transition.id = transition
        return self._call(ChangeState, "change_state", req).success

    def set_params(self, **values) -> bool:
        req = SetParameters.Request(parameters=[
            Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
        return all(r.successful for r in self._call(SetParameters, "set_parameters",
                                                   req).results)

    def answered(self, timeout: float = 5.0, tries: int = 4) -> bool:
        """Whether a frame gets both outputs (best effort input: resent a few times)."""
        for _ in range(tries):
            self.stamp += 10_000_000
            self.client.publish_rgb(frame(1), self.stamp, "cam")
            if self.client.wait_for(self.stamp, ("semantic", "depth"), timeout=timeout):
                return True
        return False

    def served(self, rgb: np.ndarray):
        for _ in range(4):
            self.stamp += 10_000_000
            self.client.publish_rgb(rgb, self.stamp, "cam")
            rec = self.client.wait_for(self.stamp, ("semantic", "depth"), timeout=5)
            if rec is not None:
                return rec
        raise AssertionError(f"no outputs; log:\n{self.log_text()}")

    def topics_up(self) -> bool:
        """The node subscribes our image topic and publishes both watched outputs."""
        return self.client.image_pub.get_subscription_count() > 0 and all(
            s.get_publisher_count() > 0 for s in self.client.subs)

    def wait_topics(self, up: bool, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.topics_up() == up:
                return
            time.sleep(0.05)
        raise AssertionError(f"topics {'up' if up else 'down'} not seen; log:\n{self.log_text()}")

    def log_text(self) -> str:
        return self.log.read_text()

    def close(self) -> int:
        self.client.close()
        return stop_node(self.proc)


def test_lifecycle_transitions_over_dds(tiny_artifact, tmp_path_factory):
    m = Managed(tmp_path_factory, tiny_artifact, "/life")
    try:
        assert m.state() == "unconfigured"
        time.sleep(1.0)  # discovery has had time: still no topics, nothing loaded
        assert not m.topics_up()
        assert "classes" not in m.log_text()
        # Configure-time parameters may change while unconfigured.
        assert m.set_params(num_threads=1)

        assert m.change(Transition.TRANSITION_CONFIGURE)
        assert m.state() == "inactive"
        log = m.log_text()
        assert "4 classes" in log and "input 48x32" in log and "backend torch" in log, log
        assert "threads 1" in log, log
        assert not m.topics_up()
        assert not m.set_params(device="cuda")  # read-only once configured
        assert m.set_params(**{"points.stride": 8})  # run-time ones still change

        assert m.change(Transition.TRANSITION_ACTIVATE)
        assert m.state() == "active"
        m.wait_topics(up=True)
        assert m.answered()

        assert m.change(Transition.TRANSITION_DEACTIVATE)
        assert m.state() == "inactive"
        m.wait_topics(up=False)
        assert not m.answered(timeout=1.0, tries=2)

        # Re-activation loads nothing: the model stayed in memory.
        t0 = time.monotonic()
        assert m.change(Transition.TRANSITION_ACTIVATE)
        activate_s = time.monotonic() - t0
        m.wait_topics(up=True)
        assert m.answered()
        assert m.log_text().count("4 classes") == 1, m.log_text()

        assert m.change(Transition.TRANSITION_DEACTIVATE)
        assert m.change(Transition.TRANSITION_CLEANUP)
        assert m.state() == "unconfigured"
        assert "model freed" in m.log_text()

        # A failing configure leaves the node unconfigured and alive, with one line naming why.
        assert m.set_params(model_path="/nonexistent/model.safetensors")
        assert not m.change(Transition.TRANSITION_CONFIGURE)
        assert m.state() == "unconfigured"
        assert "/nonexistent/model.safetensors" in m.log_text()
        assert m.proc.poll() is None

        assert m.set_params(model_path=str(tiny_artifact))
        assert m.change(Transition.TRANSITION_CONFIGURE)
        assert m.state() == "inactive"
        assert m.change(Transition.TRANSITION_INACTIVE_SHUTDOWN)
        assert m.proc.wait(15) == 0  # finalized: the process ends
    finally:
        code = m.close()
    assert code == 0, m.log_text()
    assert "Traceback" not in m.log_text(), m.log_text()
    assert activate_s < 5.0  # ordering, not speed: far below a model load on a loaded machine


def test_onnx_model_is_served_by_onnxruntime(tiny_artifact, tmp_path_factory):
    """The .onnx export through backend onnxruntime answers like the .safetensors artifact."""
    pytest.importorskip("onnxruntime", reason="onnxruntime is the optional onnx extra")
    model = tiny_onnx(tmp_path_factory, tiny_artifact)
    m = Managed(tmp_path_factory, model, "/onnxnode", params={"backend": "onnxruntime",
                                                                "num_threads": 1})
    try:
        assert m.change(Transition.TRANSITION_CONFIGURE)
        assert m.change(Transition.TRANSITION_ACTIVATE)
        log = m.log_text()
        assert "backend onnxruntime" in log and "CPUExecutionProvider" in log, log
        assert "threads 1" in log and "input 48x32" in log, log
        m.wait_topics(up=True)
        rgb = frame(3)
        out = decode_outputs(m.served(rgb))
        ref = Predictor(tiny_artifact, device="cpu", backend="torch").predict(rgb)
        np.testing.assert_allclose(out["depth"], ref.depth, atol=1e-3)
        assert (out["semantic"] == ref.labels).mean() > 0.99
    finally:
        code = m.close()
    assert code == 0, m.log_text()


@pytest.mark.parametrize("transition", ["TRANSITION_UNCONFIGURED_SHUTDOWN",
                                        "TRANSITION_ACTIVE_SHUTDOWN"])
def test_shutdown_transition_ends_the_process(tiny_artifact, tmp_path_factory, transition):
    """`ros2 lifecycle set <node> shutdown` succeeds and the process exits 0 soon after, as a
    lifecycle manager (and launch, which watches the process) expects of a finalized node."""
    m = Managed(tmp_path_factory, tiny_artifact, f"/bye{transition[11]}")
    try:
        if transition == "TRANSITION_ACTIVE_SHUTDOWN":
            assert m.change(Transition.TRANSITION_CONFIGURE)
            assert m.change(Transition.TRANSITION_ACTIVATE)
            assert m.answered()
        assert m.change(getattr(Transition, transition))
        code = m.proc.wait(15)  # TimeoutExpired: the process kept running after shutdown
    finally:
        m.client.close()
        stop_node(m.proc)
    assert code == 0, m.log_text()
    assert "Traceback" not in m.log_text(), m.log_text()
