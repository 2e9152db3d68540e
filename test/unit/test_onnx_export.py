"""ONNX export: the file carries the artifact's metadata, runs in onnxruntime like PyTorch, and an
export that does not reproduce PyTorch within the tolerance is refused and never written.

Real exports (torch.onnx, torch.export-based) of the tiny student and of a real training run
through `mtl-train export --onnx`; real onnxruntime sessions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime", reason="onnxruntime is the optional onnx extra")
pytest.importorskip("onnxscript", reason="the torch.export-based ONNX exporter needs onnxscript")
import onnx
import onnxruntime as ort

from mtl_perception.core.artifact import (
    METADATA_KEY,
    ONNX_EXPORT_KEY,
    ArtifactError,
    load_artifact,
    read_any_metadata,
    read_metadata,
    read_onnx,
)
from mtl_training.apps.train_cli import main as train_cli
from mtl_training.config import ExperimentConfig
from mtl_training.export import ONNX_OPSET, ONNX_TOLERANCE, export_onnx
from mtl_training.trainer import train


@pytest.fixture(scope="module")
def fixed(tiny_artifact, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    return export_onnx(tiny_artifact, out)


@pytest.fixture(scope="module")
def dynamic(tiny_artifact, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx_dyn") / "tiny_dynamic.onnx"
    return export_onnx(tiny_artifact, out, dynamic=True)


def _run(path: Path, x: torch.Tensor) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {sess.get_inputs()[0].name: x.numpy()}),
                    strict=True))


def test_export_carries_the_artifacts_metadata_and_its_check(fixed, tiny_artifact):
    model = onnx.load(str(fixed.path))
    assert model.opset_import[0].version == ONNX_OPSET >= 17
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props[METADATA_KEY]) == read_metadata(tiny_artifact).to_json()
    info = json.loads(props[ONNX_EXPORT_KEY])
    assert info["opset"] == ONNX_OPSET and info["dynamic"] is False
    assert set(info["max_abs_diff"]) == {"seg", "depth"}
    # The robot reads the same metadata from either file.
    assert read_any_metadata(fixed.path) == read_metadata(tiny_artifact)
    onnx_model = read_onnx(fixed.path)
    assert onnx_model.output_names == ("seg", "depth") and not onnx_model.dynamic
    assert fixed.sizes == ((32, 48),)
    assert all(d <= ONNX_TOLERANCE for d in fixed.max_abs_diff.values())
    assert "max abs difference" in fixed.summary()


def test_onnxruntime_reproduces_pytorch(fixed, tiny_artifact):
    model = load_artifact(tiny_artifact).model
    x = torch.randn(1, 3, 32, 48, generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        ref = model(x)
    got = _run(fixed.path, x)
    for task in ("seg", "depth"):
        np.testing.assert_allclose(got[task], ref[task].numpy(), atol=1e-4, rtol=0)
    assert (got["seg"].argmax(1) == ref["seg"].argmax(1).numpy()).mean() > 0.999


def test_dynamic_export_runs_at_other_sizes(dynamic, tiny_artifact):
    assert read_onnx(dynamic.path).dynamic and len(dynamic.sizes) == 2
    model = load_artifact(tiny_artifact).model
    x = torch.randn(1, 3, 72, 100)
    with torch.inference_mode():
        ref = model(x)
    got = _run(dynamic.path, x)
    assert got["seg"].shape == (1, 4, 72, 100)
    np.testing.assert_allclose(got["depth"], ref["depth"].numpy(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("which", ["fixed", "dynamic"])
def test_no_convolution_reads_a_channel_concat(which, request):
    """The decoder's concat -> conv pairs are exported as per-input convs + Add (export.py
    split_concat_convs), so onnxruntime never writes the concatenated tensor; the outputs
    above matched PyTorch with the rewritten graph."""
    export = request.getfixturevalue(which)
    graph = onnx.load(str(export.path)).graph
    producer = {o: n for n in graph.node for o in n.output}
    fed = [n.name for n in graph.node if n.op_type == "Conv"
           and producer.get(n.input[0]) is not None
           and producer[n.input[0]].op_type == "Concat"]
    assert fed == []
    info = json.loads({p.key: p.value for p in onnx.load(str(export.path)).metadata_props}
                      [ONNX_EXPORT_KEY])
    assert info["split_concat_convs"] >= 1  # the tiny student's decoder has skip concats
    onnx.checker.check_model(onnx.load(str(export.path)))


def test_export_beyond_the_tolerance_fails_and_writes_nothing(tiny_artifact, tmp_path):
    out = tmp_path / "strict.onnx"
    with pytest.raises(ArtifactError, match=r"export check failed.*max abs difference"):
        export_onnx(tiny_artifact, out, tolerance=1e-12)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_export_of_a_damaged_artifact_names_the_file(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(ArtifactError, match=r"bad\.safetensors"):
        export_onnx(bad, tmp_path / "bad.onnx")


def _tiny_run(out_dir: Path) -> Path:
    cfg = ExperimentConfig()
    d = cfg.data
    d.train_frames, d.val_frames = 4, 2
    d.render_height, d.render_width, d.height, d.width = 30, 40, 32, 48
    cfg.model.decoder_channels, cfg.model.decoder_convs = 8, 1
    t = cfg.train
    t.out_dir, t.epochs, t.batch_size = str(out_dir), 1, 4
    t.device, t.num_threads, t.montage_frames, t.seed = "cpu", 1, 1, 3
    return train(cfg)


def test_cli_export_onnx_prints_the_check(tmp_path, capsys):
    run = _tiny_run(tmp_path / "run")
    st, ox = tmp_path / "student.safetensors", tmp_path / "student.onnx"
    assert train_cli(["export", str(run), "--out", str(st), "--onnx", str(ox)]) == 0
    out = capsys.readouterr().out
    assert f"wrote {ox}" in out and "opset 18" in out and "max abs difference: seg" in out, out
    assert read_onnx(ox).meta == read_metadata(st)
    # Bad option combinations are one line and exit 2.
    assert train_cli(["export", str(run), "--out", str(st), "--onnx", str(tmp_path / "x.bin")]) \
        == 2
    assert "--onnx must end in .onnx" in capsys.readouterr().err
    assert train_cli(["export", str(run), "--out", str(st), "--onnx-dynamic"]) == 2
