"""Networks that answer at a stride of their input: the Predictor brings the outputs to size.

A real-time export can leave the decoder's last bilinear upsampling out (40 logit maps at 640x480
cost more to upsample and argmax than the rest of the postprocessing). The node must then give
the same class ids as the argmax of the upsampled logits, computed only where it matters.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtl_perception.runtime.predictor import Predictor, _argmax_channels, upsample_labels


def _scene_logits(classes: int, h: int, w: int, seed: int) -> np.ndarray:
    """Logits of a piecewise scene (regions of one class, soft edges, a little noise)."""
    rng = np.random.default_rng(seed)
    regions = rng.integers(0, classes, (max(2, h // 6), max(2, w // 6))).astype(np.uint16)
    lab = cv2.resize(regions, (w, h), interpolation=cv2.INTER_NEAREST)
    logits = np.stack([cv2.GaussianBlur((lab == c).astype(np.float32) * 5, (5, 5), 1.5)
                       for c in range(classes)])
    return logits + 0.3 * rng.standard_normal(logits.shape).astype(np.float32)


def _reference(logits: np.ndarray, stride: int) -> np.ndarray:
    full = F.interpolate(torch.from_numpy(logits)[None], scale_factor=stride, mode="bilinear",
                         align_corners=False)[0]
    return full.argmax(0).numpy()


@pytest.mark.parametrize(("classes", "h", "w", "stride"),
                         [(7, 24, 32, 4), (40, 30, 40, 4), (13, 21, 27, 3), (5, 16, 20, 2),
                          (300, 12, 18, 4)])
def test_labels_are_the_argmax_of_the_bilinearly_upsampled_logits(classes, h, w, stride):
    logits = _scene_logits(classes, h, w, seed=classes)
    ids = _argmax_channels(logits, np.uint8 if classes <= 255 else np.uint16)[1]
    got = upsample_labels(logits, ids, stride)
    ref = _reference(logits, stride)
    assert got.shape == (h * stride, w * stride) and got.dtype == ids.dtype
    np.testing.assert_array_equal(got, ref)
    # the scene has boundaries where a nearest upsampling of the ids would be wrong
    nearest = cv2.resize(ids, (w * stride, h * stride), interpolation=cv2.INTER_NEAREST)
    assert (nearest != ref).any()


def test_noise_everywhere_takes_the_plain_way_with_the_same_result():
    logits = np.random.default_rng(0).standard_normal((6, 10, 14)).astype(np.float32)
    ids = _argmax_channels(logits, np.uint8)[1]
    np.testing.assert_array_equal(upsample_labels(logits, ids, 4), _reference(logits, 4))


STRIDE = 4


@pytest.fixture(scope="module")
def strided_onnx(tiny_artifact, tmp_path_factory) -> Path:
    """The tiny student's ONNX export with every output subsampled by STRIDE (Slice nodes
    appended to the graph): a network answering at 1/STRIDE of its input size."""
    import onnx
    from onnx import helper, numpy_helper

    from mtl_training.export import export_onnx

    full = tmp_path_factory.mktemp("strided") / "full.onnx"
    export_onnx(tiny_artifact, full)
    model = onnx.load(str(full))
    graph = model.graph
    consts = {"starts": [0, 0], "ends": [1 << 30, 1 << 30], "axes": [2, 3],
              "steps": [STRIDE, STRIDE]}
    for name, values in consts.items():
        graph.initializer.append(numpy_helper.from_array(np.asarray(values, np.int64),
                                                         f"stride_{name}"))
    for out in graph.output:
        inner = f"{out.name}__full"
        for node in graph.node:
            node.output[:] = [inner if o == out.name else o for o in node.output]
            node.input[:] = [inner if i == out.name else i for i in node.input]
        graph.node.append(helper.make_node("Slice", [inner, *(f"stride_{k}" for k in consts)],
                                           [out.name]))
        dims = out.type.tensor_type.shape.dim
        for d in dims[2:]:
            d.dim_value = d.dim_value // STRIDE
    path = full.with_name("strided.onnx")
    onnx.save(model, str(path))
    return path


def test_predictor_serves_a_network_answering_at_a_stride(strided_onnx):
    import onnxruntime as ort

    predictor = Predictor(strided_onnx, device="cpu", backend="onnxruntime")
    h, w = predictor.input_size
    rgb = np.random.default_rng(3).integers(0, 255, (h * 2, w * 2, 3), dtype=np.uint8)
    x = predictor.preprocess(predictor.resize_input(rgb)).numpy().copy()
    session = ort.InferenceSession(str(strided_onnx), providers=["CPUExecutionProvider"])
    seg, depth = session.run(["seg", "depth"], {session.get_inputs()[0].name: x})
    assert seg.shape[2:] == (h // STRIDE, w // STRIDE)
    ref_net = _reference(seg[0], STRIDE)
    ref_depth = F.interpolate(torch.from_numpy(depth), scale_factor=STRIDE, mode="bilinear",
                              align_corners=False)[0, 0].numpy()

    net = predictor.predict(rgb, "network")
    np.testing.assert_array_equal(net.labels, ref_net)
    np.testing.assert_allclose(net.depth, ref_depth, rtol=1e-4, atol=1e-4)
    assert net.confidence.shape == (h, w)

    dst = {"labels": np.empty(rgb.shape[:2], np.uint8),
           "depth": np.empty(rgb.shape[:2], np.float32)}
    cam = predictor.predict(rgb, "input", want={"labels", "depth"}, dst=dst)
    assert cam.labels is dst["labels"] and cam.depth is dst["depth"]
    np.testing.assert_array_equal(cam.labels, cv2.resize(ref_net, (w * 2, h * 2),
                                                         interpolation=cv2.INTER_NEAREST))
    assert cam.network_labels.shape == (h, w)
    np.testing.assert_allclose(cam.depth, cv2.resize(depth[0, 0], (w * 2, h * 2),
                                                     interpolation=cv2.INTER_LINEAR),
                               rtol=1e-5, atol=1e-5)
