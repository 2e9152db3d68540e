import numpy as np
import pytest

from mtl_perception.inference import ArtifactError, Predictor


def test_prediction_at_input_resolution(tiny_artifact):
    p = Predictor(tiny_artifact, device="cpu")
    rgb = np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8)
    pred = p.predict(rgb)
    assert pred.labels.shape == (60, 90) and pred.labels.dtype == np.uint8
    assert pred.depth.shape == (60, 90) and pred.depth.dtype == np.float32
    assert np.isfinite(pred.depth).all() and (pred.depth > 0).all()
    assert pred.confidence.min() >= 0 and pred.confidence.max() <= 1
    assert pred.labels.max() < len(p.classes)
    small = p.predict(rgb, output_resolution="network")
    assert small.labels.shape == p.input_size
    assert set(pred.timings) == {"preprocess", "forward", "postprocess"}


def test_bad_options_and_missing_model(tiny_artifact, tmp_path):
    with pytest.raises(ValueError, match="precision"):
        Predictor(tiny_artifact, device="cpu", precision="int4")
    with pytest.raises(ValueError, match="CUDA"):
        Predictor(tiny_artifact, device="cpu", precision="fp16")
    with pytest.raises(ArtifactError, match=r"nope\.safetensors"):
        Predictor(tmp_path / "nope.safetensors", device="cpu")
