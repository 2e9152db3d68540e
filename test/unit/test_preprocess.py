"""One preprocessing spec: training samples and the Predictor give the network the same tensor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mtl_perception.core.preprocess import PreprocessSpec
from mtl_perception.runtime.predictor import Predictor
from mtl_training.data.transforms import make_sample


@pytest.mark.parametrize("shape", [(32, 48), (60, 90), (24, 30)])  # equal, shrink, grow
def test_preprocess_parity_training_vs_predictor(tiny_artifact, shape):
    rgb = np.random.default_rng(1).integers(0, 256, (*shape, 3), dtype=np.uint8)
    predictor = Predictor(tiny_artifact, device="cpu")
    robot = predictor.preprocess(predictor.resize_input(rgb))[0]  # [3, h, w]
    training = make_sample(rgb, None, None, predictor.input_size, augment=False)["image"]
    assert robot.shape == training.shape == (3, *predictor.input_size)
    assert torch.equal(robot, training)


def test_spec_round_trips_and_denormalizes():
    spec = PreprocessSpec(16, 24, channel_order="bgr")
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    rgb = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    x = spec.to_chw(rgb)
    assert x.dtype == np.float32 and x.shape == (3, 16, 24)
    # bgr: the first network channel is the blue one
    blue = (rgb[..., 2] / 255.0 - spec.mean[0]) / spec.std[0]
    np.testing.assert_allclose(x[0], blue, atol=1e-5)
    np.testing.assert_array_equal(spec.denormalize(x), rgb)


def test_normalize_writes_into_the_given_buffer():
    spec = PreprocessSpec(8, 8)
    rgb = np.full((8, 8, 3), 128, np.uint8)
    buf = np.empty((8, 8, 3), np.float32)
    assert spec.normalize(rgb, out=buf) is buf
