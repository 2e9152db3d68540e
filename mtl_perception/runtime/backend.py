"""Inference backends: what runs the network, behind one small interface.

The Predictor does the same pre- and postprocessing whatever runs the network; a backend only
turns a normalised input into the network's outputs. Two are here:

- `torch`: PyTorch eager on the network rebuilt from a .safetensors artifact (CPU, CUDA; fp16/bf16
  autocast on CUDA);
- `onnxruntime`: an .onnx export (`mtl-train export --onnx`) in an onnxruntime session: the CPU
  provider, plus the CUDA and TensorRT providers when the installed onnxruntime has them (fp16
  through TensorRT). onnxruntime is the optional `onnx` extra, imported only when asked for.

`auto` picks by model file: onnxruntime for .onnx (the fastest backend this package has on every
size measured, bench/bench_backends.py), torch for .safetensors. Adding a backend means a class
here with `forward`, `device`, `tasks`, `describe` and an entry in BACKENDS.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from mtl_perception.core.artifact import (
    ONNX_SUFFIX,
    ArtifactError,
    ArtifactMeta,
    load_artifact,
    read_onnx,
)
from mtl_perception.core.device import resolve_device

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "fp16": torch.float16,
                                             "bf16": torch.bfloat16}
BACKEND_CHOICES = ("auto", "torch", "onnxruntime")
CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"
TENSORRT_PROVIDER = "TensorrtExecutionProvider"


class BackendError(ValueError):
    """This backend cannot run this model here with these settings; names the parameter."""


class Backend(Protocol):
    """Runs one network: normalised input [1, 3, h, w] in, {task: tensor} out."""

    name: str
    meta: ArtifactMeta
    device: torch.device
    tasks: tuple[str, ...]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]: ...

    def describe(self) -> str: ...

    def settings(self) -> dict[str, str]: ...



def check_precision(precision: str) -> None:
    """BackendError naming the choices when `precision` is not one of PRECISIONS."""
    if precision not in PRECISIONS:
        raise BackendError(f"precision must be one of {', '.join(PRECISIONS)}, "
                           f"got '{precision}'")


class TorchBackend:
    """PyTorch eager, CPU or CUDA; fp16/bf16 autocast on CUDA."""

    name = "torch"

    def __init__(self, model_path: str | Path, device: str = "auto", precision: str = "fp32",
                 num_threads: int = 0) -> None:
        check_precision(precision)
        try:
            self.device = resolve_device(device)
        except ValueError as exc:
            raise BackendError(str(exc)) from exc
        if precision != "fp32" and self.device.type != "cuda":
            raise BackendError(f"precision {precision} needs a CUDA device (device is "
                               f"{self.device})")
        if Path(model_path).suffix == ONNX_SUFFIX:
            raise BackendError(f"backend torch runs .safetensors artifacts, not {model_path}; "
                               "use backend onnxruntime (or auto) for .onnx models")
        if num_threads > 0:
            torch.set_num_threads(num_threads)
        artifact = load_artifact(model_path, self.device)
        self.path = artifact.path
        self.model = artifact.model
        self.meta = artifact.meta
        self.precision = precision
        self._dtype = PRECISIONS[precision]
        self.tasks: tuple[str, ...] = tuple(getattr(self.model, "tasks", ("seg", "depth")))

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.autocast(self.device.type, dtype=self._dtype or torch.float32,
                            enabled=self._dtype is not None):
            out = self.model(x.to(self.device, non_blocking=True))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return out

    def settings(self) -> dict[str, str]:
        """What the start-up line and /diagnostics report: backend, providers, threads."""
        threads = torch.get_num_threads() if self.device.type == "cpu" else 0
        return {"backend": self.name, "providers": f"torch {self.device.type}",
                "threads": str(threads) if threads else "n/a", "precision": self.precision}

    def describe(self) -> str:
        s = self.settings()
        return (f"backend torch on {self.device} ({self.precision}"
                + (f", {s['threads']} threads" if s["threads"] != "n/a" else "") + ")")


def onnxruntime_available() -> bool:
    """Whether the optional onnxruntime package is installed (nothing imported)."""
    try:
        return importlib.util.find_spec("onnxruntime") is not None
    except (ImportError, ValueError):  # a broken or blocked installation counts as absent
        return False


class OnnxRuntimeBackend:
    """An .onnx export in an onnxruntime session (CPU; CUDA/TensorRT when installed).

    Device `auto` uses the GPU providers when the installed onnxruntime has them, else the CPU;
    `cpu` never touches a GPU; `cuda[:N]` needs the CUDA provider and adds TensorRT first when
    present. fp16 runs through TensorRT (its fp16 kernels on an fp32 graph); the CUDA provider
    alone runs fp32. Threads: `num_threads` intra-op threads (0 = onnxruntime's default, one per
    physical core), one inter-op thread (the graph is a chain), no spinning while idle.
    """

    name = "onnxruntime"

    def __init__(self, model_path: str | Path, device: str = "auto", precision: str = "fp32",
                 num_threads: int = 0) -> None:
        check_precision(precision)
        if Path(model_path).suffix != ONNX_SUFFIX:
            raise BackendError(f"backend onnxruntime runs .onnx models, not {model_path}; export "
                               "one with `mtl-train export RUN --out M.safetensors --onnx M.onnx`"
                               " (or use backend torch)")
        if not onnxruntime_available():
            raise BackendError("backend onnxruntime needs the onnxruntime package: pip install "
                               "'mtl_perception[onnx]' (onnxruntime-gpu for CUDA/TensorRT)")
        import onnxruntime as ort  # lazy: optional extra, only this backend needs it

        onnx_model = read_onnx(model_path)
        self.path = onnx_model.path
        self.meta = onnx_model.meta
        self.tasks = tuple(onnx_model.output_names)
        self.dynamic = onnx_model.dynamic
        self.precision = precision
        self.providers, self.device = _providers(ort.get_available_providers(), device,
                                                 precision)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if num_threads > 0:
            options.intra_op_num_threads = num_threads
        options.log_severity_level = 3  # errors only: the node logs its own start-up line
        # Idle intra-op threads block instead of spinning: a robot's cores are shared with the
        # ROS executor and drivers. Measured here (2 threads): no change in the forward pass,
        # and a GEMM run right after it 23 % faster than after a spinning session.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(onnx_model.model_bytes, options,
                                                providers=self.providers)
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/... types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ArtifactError(f"{self.path}: onnxruntime cannot load it "
                                f"({type(exc).__name__}: {first[:300]})") from exc
        self.providers = list(self.session.get_providers())  # what it actually got
        self.threads = num_threads
        self.input_name = onnx_model.input_name
        self._outputs = list(self.tasks)
        # onnxruntime checks shapes inside the graph only when it runs: one run on zeros at
        # load, so a graph that cannot run fails here, naming the file, not on the first frame.
        h, w = self.meta.input_size
        try:
            outs = self.session.run(self._outputs,
                                    {self.input_name: np.zeros((1, 3, h, w), np.float32)})
        except Exception as exc:  # onnxruntime's own error types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ArtifactError(f"{self.path}: onnxruntime cannot run it "
                                f"({type(exc).__name__}: {first[:300]})") from exc
        for name, out in zip(self._outputs, outs, strict=True):
            # At the input size, or at an integer stride of it (an export that leaves the final
            # bilinear upsampling to the Predictor, which does it on the small maps).
            stride = h // out.shape[-2] if out.ndim == 4 and out.shape[-2] else 0
            want = (1, self.meta.architecture.num_classes if name == "seg" else 1, h, w)
            if (out.dtype != np.float32 or out.shape[:2] != want[:2] or stride < 1
                    or out.shape[2:] != (h // stride, w // stride)
                    or (h % stride, w % stride) != (0, 0)):
                raise ArtifactError(f"{self.path}: output '{name}' is {out.dtype} "
                                    f"{list(out.shape)} at the metadata's input size, expected "
                                    f"float32 {list(want)} (or its height and width divided "
                                    "by one integer stride)")

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """[1, 3, h, w] float32 (CPU) -> {task: tensor} (CPU; views of onnxruntime's arrays)."""
        arr = x.detach().cpu().numpy()
        if arr.dtype != np.float32:
            arr = arr.astype(np.float32)
        outs = self.session.run(self._outputs, {self.input_name: arr})
        return {t: torch.from_numpy(o) for t, o in zip(self._outputs, outs, strict=True)}

    def settings(self) -> dict[str, str]:
        threads = str(self.threads) if self.threads > 0 else "default"
        return {"backend": self.name, "providers": ",".join(self.providers),
                "threads": threads, "precision": self.precision}

    def describe(self) -> str:
        s = self.settings()
        return (f"backend onnxruntime ({s['providers']}; {s['threads']} threads, "
                f"{self.precision})")


def _providers(available: list[str], device: str, precision: str
               ) -> tuple[list[Any], torch.device]:
    """onnxruntime providers (with options) for a device request, and the device they run on."""
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise BackendError(f"device must be auto, cpu, cuda or cuda:N, got '{device}'")
    gpu = CUDA_PROVIDER in available
    if device.startswith("cuda") and not gpu:
        raise BackendError(f"device '{device}' needs onnxruntime's CUDA provider; this "
                           f"onnxruntime has {', '.join(available)} (install onnxruntime-gpu)")
    use_gpu = gpu and device != "cpu"
    if precision != "fp32" and not use_gpu:
        raise BackendError(f"precision {precision} needs a CUDA device")
    if precision == "bf16" or (precision == "fp16" and TENSORRT_PROVIDER not in available):
        raise BackendError(f"precision {precision} with onnxruntime needs the TensorRT provider "
                           "(fp16); use fp32, or backend torch")
    if not use_gpu:
        return [CPU_PROVIDER], torch.device("cpu")
    index = int(device.split(":")[1]) if ":" in device else 0
    providers: list[Any] = []
    if TENSORRT_PROVIDER in available:
        providers.append((TENSORRT_PROVIDER, {"device_id": index,
                                              "trt_fp16_enable": precision == "fp16"}))
    providers += [(CUDA_PROVIDER, {"device_id": index}), CPU_PROVIDER]
    return providers, torch.device("cuda", index)


BACKENDS = {"torch": TorchBackend, "onnxruntime": OnnxRuntimeBackend}


def resolve_backend(model_path: str | Path, backend: str = "auto") -> str:
    """The backend that runs this model: `auto` -> onnxruntime for .onnx, torch otherwise."""
    if backend not in BACKEND_CHOICES:
        raise BackendError(f"backend must be one of {', '.join(BACKEND_CHOICES)}, got "
                           f"'{backend}'")
    if backend != "auto":
        return backend
    return "onnxruntime" if Path(model_path).suffix == ONNX_SUFFIX else "torch"


def open_backend(model_path: str | Path, backend: str = "auto", device: str = "auto",
                 precision: str = "fp32", num_threads: int = 0) -> Backend:
    """The named backend for a model file; BackendError names the choices, ArtifactError the
    file."""
    return BACKENDS[resolve_backend(model_path, backend)](model_path, device, precision,
                                                          num_threads)
