"""Backends behind the Predictor: torch and onnxruntime give the same outputs through the one
pre/postprocessing path; `auto` picks by model file; a backend that cannot run says why in one
line (wrong file kind, absent onnxruntime, a GPU request this onnxruntime cannot serve).

GPU providers (CUDA, TensorRT, fp16) are checked in the opt-in `-m gpu` tests.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="onnxruntime is the optional onnx extra")
import onnxruntime as ort

from mtl_perception.core.artifact import ArtifactError, ArtifactMeta, write_artifact
from mtl_perception.core.models.registry import ModelSpec, build_model
from mtl_perception.core.preprocess import PreprocessSpec
from mtl_perception.runtime.backend import (
    BACKEND_CHOICES,
    CUDA_PROVIDER,
    BackendError,
    OnnxRuntimeBackend,
    TorchBackend,
    open_backend,
    resolve_backend,
)
from mtl_perception.runtime.predictor import Predictor
from mtl_training.export import export_onnx


@pytest.fixture(scope="module")
def onnx_model(tiny_artifact, tmp_path_factory) -> Path:
    out = tmp_path_factory.getbasetemp() / "onnx_shared" / "tiny.onnx"
    if not out.is_file():
        export_onnx(tiny_artifact, out)
    return out


@pytest.fixture(scope="module")
def both(tiny_artifact, onnx_model) -> tuple[Predictor, Predictor]:
    return (Predictor(tiny_artifact, device="cpu", backend="torch", num_threads=1),
            Predictor(onnx_model, device="cpu", backend="onnxruntime", num_threads=1))


def test_auto_picks_by_model_file(tiny_artifact, onnx_model):
    assert BACKEND_CHOICES == ("auto", "torch", "onnxruntime")
    assert resolve_backend(onnx_model) == "onnxruntime"
    assert resolve_backend(tiny_artifact) == "torch"
    assert isinstance(open_backend(onnx_model, device="cpu"), OnnxRuntimeBackend)
    assert isinstance(open_backend(tiny_artifact, device="cpu"), TorchBackend)
    with pytest.raises(BackendError, match="backend must be one of auto, torch, onnxruntime"):
        resolve_backend(onnx_model, "tensorflow")


@pytest.mark.parametrize("resolution", ["input", "network"])
def test_same_outputs_through_both_backends(both, resolution):
    torch_p, ort_p = both
    rgb = np.random.default_rng(3).integers(0, 255, (60, 90, 3), dtype=np.uint8)
    a, b = torch_p.predict(rgb, resolution), ort_p.predict(rgb, resolution)
    assert (a.labels == b.labels).mean() > 0.999
    np.testing.assert_allclose(a.depth, b.depth, atol=1e-4)
    np.testing.assert_allclose(a.confidence, b.confidence, atol=1e-4)
    assert b.labels.dtype == np.uint8 and b.depth.dtype == np.float32
    assert ort_p.classes == torch_p.classes and ort_p.palette == torch_p.palette
    assert ort_p.input_size == torch_p.input_size and ort_p.tasks == ("seg", "depth")


def test_only_wanted_outputs_and_caller_buffers_with_onnxruntime(both):
    _, ort_p = both
    rgb = np.random.default_rng(4).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    only = ort_p.predict(rgb, want={"depth"})
    assert only.labels is None and only.confidence is None
    dst = {"depth": np.empty((40, 60), np.float32)}
    assert ort_p.predict(rgb, want={"depth"}, dst=dst).depth is dst["depth"]
    np.testing.assert_array_equal(dst["depth"], only.depth)


def test_settings_name_backend_providers_and_threads(both):
    torch_p, ort_p = both
    s = ort_p.backend.settings()
    assert s == {"backend": "onnxruntime", "providers": "CPUExecutionProvider", "threads": "1",
                 "precision": "fp32"}
    assert torch_p.backend.settings()["backend"] == "torch"
    assert "onnxruntime" in ort_p.backend.describe()


def test_wrong_file_kind_is_one_line(tiny_artifact, onnx_model):
    with pytest.raises(BackendError, match=r"runs \.onnx models.*--onnx"):
        Predictor(tiny_artifact, device="cpu", backend="onnxruntime")
    with pytest.raises(BackendError, match=r"runs \.safetensors artifacts"):
        Predictor(onnx_model, device="cpu", backend="torch")
    with pytest.raises(ArtifactError, match=r"nope\.onnx"):
        Predictor(onnx_model.parent / "nope.onnx", device="cpu")


@pytest.mark.skipif(CUDA_PROVIDER in ort.get_available_providers(),
                    reason="this onnxruntime has the CUDA provider")
def test_gpu_requests_without_gpu_providers_are_refused(onnx_model):
    with pytest.raises(BackendError, match=r"CUDA provider.*onnxruntime-gpu"):
        Predictor(onnx_model, device="cuda", backend="onnxruntime")
    with pytest.raises(BackendError, match="fp16 needs a CUDA device"):
        Predictor(onnx_model, device="cpu", precision="fp16", backend="onnxruntime")
    # auto without GPU providers runs on the CPU provider
    assert Predictor(onnx_model, device="auto").backend.settings()["providers"] == \
        "CPUExecutionProvider"


BLOCKED = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "onnxruntime":
            raise ModuleNotFoundError("No module named 'onnxruntime'")
sys.meta_path.insert(0, Block())
from mtl_perception.runtime.backend import BackendError
from mtl_perception.runtime.predictor import Predictor
for backend in ("onnxruntime", "auto"):
    try:
        Predictor(sys.argv[1], device="cpu", backend=backend)
    except BackendError as exc:
        print(exc)
"""


def test_absent_onnxruntime_is_one_line_naming_the_extra(onnx_model):
    out = subprocess.run([sys.executable, "-c", BLOCKED, str(onnx_model)], capture_output=True,
                         text=True, timeout=120, check=True).stdout.splitlines()
    assert len(out) == 2, out
    assert all("needs the onnxruntime package" in line and "[onnx]" in line for line in out)


@pytest.mark.gpu
@pytest.mark.skipif(CUDA_PROVIDER not in ort.get_available_providers(),
                    reason="needs onnxruntime-gpu with the CUDA provider")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_gpu_providers_match_the_cpu(both, onnx_model, precision):
    _, cpu = both
    if precision == "fp16" and "TensorrtExecutionProvider" not in ort.get_available_providers():
        pytest.skip("fp16 runs through the TensorRT provider")
    gpu = Predictor(onnx_model, device="cuda", precision=precision, backend="onnxruntime")
    assert CUDA_PROVIDER in gpu.backend.settings()["providers"]
    rgb = np.random.default_rng(5).integers(0, 255, (60, 90, 3), dtype=np.uint8)
    a, b = cpu.predict(rgb), gpu.predict(rgb)
    atol = 1e-2 if precision == "fp16" else 1e-3
    np.testing.assert_allclose(a.depth, b.depth, atol=atol)
    assert (a.labels == b.labels).mean() > 0.98


@pytest.mark.parametrize("order", ["rgb", "bgr"])
def test_lookup_normalisation_is_the_specs_arithmetic(tmp_path, order):
    """The Predictor normalises by table lookup; the values equal PreprocessSpec.to_chw's bit for
    bit, for both channel orders (bgr networks read the blue channel first)."""
    spec = PreprocessSpec(16, 24, mean=(0.3, 0.5, 0.7), std=(0.2, 0.25, 0.3), channel_order=order)
    model_spec = ModelSpec(num_classes=3, decoder_channels=8, decoder_convs=1)
    meta = ArtifactMeta(model_spec, ["a", "b", "c"], [[1, 2, 3]] * 3, spec, 10.0)
    path = write_artifact(build_model(model_spec).eval(), meta, tmp_path / f"{order}.safetensors")
    p = Predictor(path, device="cpu", backend="torch")
    rgb = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    x = p.preprocess(rgb)
    assert x.shape == (1, 3, 16, 24) and x.is_contiguous()
    assert torch.equal(x[0], torch.from_numpy(spec.to_chw(rgb)))
