"""Predictor hot-path options used by the node: only wanted outputs, in-place results, NaN guard."""

from __future__ import annotations

import numpy as np
import pytest

from mtl_perception.runtime.predictor import NonFiniteOutput, Predictor


@pytest.fixture(scope="module")
def predictor(tiny_artifact) -> Predictor:
    return Predictor(tiny_artifact, device="cpu")


def test_only_wanted_outputs_are_computed(predictor):
    rgb = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    full = predictor.predict(rgb)
    only_depth = predictor.predict(rgb, want={"depth"})
    assert only_depth.labels is None and only_depth.confidence is None
    np.testing.assert_array_equal(only_depth.depth, full.depth)
    conf = predictor.predict(rgb, want={"confidence"}).confidence
    np.testing.assert_allclose(conf, full.confidence, rtol=1e-6)


@pytest.mark.parametrize("resolution", ["input", "network"])
def test_results_land_in_caller_buffers(predictor, resolution):
    rgb = np.random.default_rng(1).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    h, w = (40, 60) if resolution == "input" else predictor.input_size
    dst = {"labels": np.empty((h, w), np.uint8), "depth": np.empty((h, w), np.float32),
           "confidence": np.empty((h, w), np.float32)}
    pred = predictor.predict(rgb, resolution, dst=dst)
    ref = predictor.predict(rgb, resolution)
    for name, arr in (("labels", pred.labels), ("depth", pred.depth),
                      ("confidence", pred.confidence)):
        assert arr is dst[name]
    np.testing.assert_array_equal(dst["labels"], ref.labels)
    np.testing.assert_allclose(dst["depth"], ref.depth)


def test_non_finite_network_output_raises(predictor):
    import torch

    out = {"seg": torch.zeros(1, 4, 8, 8), "depth": torch.full((1, 1, 8, 8), float("nan"))}
    with pytest.raises(NonFiniteOutput, match="depth"):
        predictor.postprocess(out, None)
    out = {"seg": torch.full((1, 4, 8, 8), float("nan")), "depth": torch.ones(1, 1, 8, 8)}
    with pytest.raises(NonFiniteOutput, match="logits"):
        predictor.postprocess(out, None)


def test_more_than_255_classes_give_uint16_labels(tmp_path):
    from conftest import make_tiny_artifact  # test/ is on sys.path via its conftest

    many = Predictor(make_tiny_artifact(tmp_path / "many.safetensors", num_classes=300), "cpu")
    labels = many.predict(np.zeros((20, 30, 3), np.uint8)).labels
    assert labels.dtype == np.uint16 and labels.max() < 300


def test_network_labels_are_the_ids_before_the_resize(predictor):
    """The node colours ~/semantic_color at the network size and resizes it like ~/semantic:
    that equals colouring the resized ids only if the ids are the same nearest resize."""
    import cv2

    from mtl_perception.core.labels import colorize_labels, palette_lut

    rgb = np.random.default_rng(2).integers(0, 255, (90, 130, 3), dtype=np.uint8)
    pred = predictor.predict(rgb)
    assert pred.network_labels.shape == predictor.input_size
    np.testing.assert_array_equal(
        cv2.resize(pred.network_labels, (130, 90), interpolation=cv2.INTER_NEAREST), pred.labels)
    lut = palette_lut(predictor.palette)
    np.testing.assert_array_equal(
        cv2.resize(colorize_labels(pred.network_labels, lut), (130, 90),
                   interpolation=cv2.INTER_NEAREST), colorize_labels(pred.labels, lut))
