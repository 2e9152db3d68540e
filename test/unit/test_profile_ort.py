"""The forward-time profile of docs/models.md: every operator of a run is counted once, in the
part (encoder / decoder) it belongs to."""

from __future__ import annotations

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from bench.profile_ort import profile


def test_the_real_time_students_profile_splits_encoder_and_decoder():
    rows = profile("lean-7", threads=1, runs=2)
    parts = {(part, kind) for part, kind, _ in rows}
    # the refine decoder's chained residual pooling is the only max pool; the stem is the only
    # dense 3x3 stride-2 convolution
    assert ("decoder", "MaxPool") in parts and ("encoder", "MaxPool") not in parts
    assert ("encoder", "Conv dense 3x3 s2") in parts
    assert ("decoder", "Conv dense 3x3 s2") not in parts
    assert all(ms > 0 for *_, ms in rows)


def test_an_unknown_architecture_is_named():
    with pytest.raises(SystemExit, match="unknown architecture 'nope'"):
        profile("nope", threads=1, runs=1)
