import json
import os
import stat

import numpy as np
import pytest
import torch
from conftest import make_tiny_artifact

from mtl_perception.core.artifact import (
    FORMAT_VERSION,
    METADATA_KEY,
    ArtifactError,
    load_artifact,
    read_metadata,
)
from mtl_perception.core.fileio import write_json_atomic
from mtl_perception.core.models.registry import ModelSpec, build_model


def test_round_trip_gives_identical_outputs(tmp_path):
    path = make_tiny_artifact(tmp_path / "a.safetensors")
    a = load_artifact(path)
    b = load_artifact(path)
    x = torch.randn(1, 3, 32, 48)
    with torch.inference_mode():
        oa, ob = a.model(x), b.model(x)
    assert torch.equal(oa["seg"], ob["seg"]) and torch.equal(oa["depth"], ob["depth"])
    assert a.classes == ["class0", "class1", "class2", "class3"]
    assert a.input_size == (32, 48)
    meta = read_metadata(path).to_json()
    assert meta["depth"]["unit"] == "m" and meta["input"]["channel_order"] == "rgb"
    assert meta["format_version"] == FORMAT_VERSION


def test_export_matches_trained_weights(tmp_path):
    """The artifact reproduces the in-memory model bit for bit (same seed -> same weights)."""
    path = make_tiny_artifact(tmp_path / "a.safetensors", seed=3)
    torch.manual_seed(3)
    ref = build_model(ModelSpec(num_classes=4, decoder_channels=8, decoder_convs=1)).eval()
    x = torch.randn(1, 3, 32, 48)
    with torch.inference_mode():
        assert torch.equal(ref(x)["seg"], load_artifact(path).model(x)["seg"])


def _damage(path, how):
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif how == "pickle":
        torch.save({"x": torch.zeros(1)}, path)


@pytest.mark.parametrize("how", ["truncated", "garbage", "pickle"])
def test_damaged_artifact_refused_with_file_name(tmp_path, how):
    path = make_tiny_artifact(tmp_path / "m.safetensors")
    _damage(path, how)
    with pytest.raises(ArtifactError) as err:
        load_artifact(path)
    assert str(path) in str(err.value)


def test_missing_file_and_foreign_safetensors(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        load_artifact(tmp_path / "nope.safetensors")
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(ArtifactError, match=f"no '{METADATA_KEY}' metadata"):
        load_artifact(foreign)


def test_wrong_weights_or_version_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    path = make_tiny_artifact(tmp_path / "m.safetensors")
    meta = read_metadata(path).to_json()
    tensors = load_file(str(path))
    tensors.pop("decoders.seg.head.bias")
    save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(meta)})
    with pytest.raises(ArtifactError, match="do not match"):
        load_artifact(path)
    meta["format_version"] = 99
    save_file(load_file(str(path)), str(path), metadata={METADATA_KEY: json.dumps(meta)})
    with pytest.raises(ArtifactError, match="format_version 99"):
        load_artifact(path)


def _rewrite_meta(path, meta):
    from safetensors.torch import load_file, save_file

    save_file(load_file(str(path)), str(path), metadata={METADATA_KEY: json.dumps(meta)})


def test_version_1_files_still_load(tmp_path):
    """v1 stored the training config's model section (with encoder_weights): still readable."""
    path = make_tiny_artifact(tmp_path / "v1.safetensors", seed=5)
    reference = load_artifact(path)
    meta = read_metadata(path).to_json()
    meta["format_version"] = 1
    meta["architecture"]["encoder_weights"] = "/somewhere/resnet18.pth"
    _rewrite_meta(path, meta)
    old = load_artifact(path)
    assert old.meta.architecture == reference.meta.architecture
    x = torch.randn(1, 3, 32, 48)
    with torch.inference_mode():
        assert torch.equal(old.model(x)["depth"], reference.model(x)["depth"])


def test_the_schema_is_independent_of_the_training_config(tmp_path):
    """A field the model spec does not know is refused by name (v2), not silently passed on."""
    path = make_tiny_artifact(tmp_path / "m.safetensors")
    meta = read_metadata(path).to_json()
    meta["architecture"]["encoder_weights"] = None  # a training option, not part of v2
    _rewrite_meta(path, meta)
    with pytest.raises(ArtifactError, match="unknown field 'encoder_weights'"):
        read_metadata(path)


@pytest.mark.parametrize("section,key,value,expected", [
    ("architecture", "decoder_channels", 100000, r"architecture\.decoder_channels"),
    ("architecture", "num_classes", 3, "classes lists 4 names"),
    ("architecture", "arch", "teacher", "not deployable"),
    ("input", "height", 0, "input.height"),
    ("input", "width", "abc", "input.width"),
    ("input", "std", [0.2, 0.0, 0.2], "input.std"),
    ("depth", "max", -10, "depth range"),
])
def test_bad_metadata_fields_are_named(tmp_path, section, key, value, expected):
    path = make_tiny_artifact(tmp_path / "m.safetensors")
    meta = read_metadata(path).to_json()
    meta[section][key] = value
    _rewrite_meta(path, meta)
    with pytest.raises(ArtifactError, match=expected) as err:
        load_artifact(path)
    assert str(path) in str(err.value)


def test_palette_values_are_checked(tmp_path):
    path = make_tiny_artifact(tmp_path / "m.safetensors")
    meta = read_metadata(path).to_json()
    meta["palette"][0] = [300, 0, 0]
    _rewrite_meta(path, meta)
    with pytest.raises(ArtifactError, match=r"palette\[0\]"):
        read_metadata(path)


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o027, 0o640)])
def test_exported_file_is_readable_as_a_plain_file_create_would_make_it(tmp_path, umask, mode):
    """safetensors creates its file 0600: a node running as another user could not read the
    export. The artifact gets 0666 less the umask, like any file the user creates."""
    old = os.umask(umask)
    try:
        path = make_tiny_artifact(tmp_path / "a.safetensors")
        json_path = tmp_path / "b.json"
        write_json_atomic(json_path, {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert stat.S_IMODE(json_path.stat().st_mode) == mode
