"""A pseudo-label folder made from one dataset is refused, in one line, for another.

Labels are looked up by frame id, and ids repeat across datasets (two synthetic folders both
number their frames train_0000000..), so the manifest records the dataset's identity and the
student compares it with its own training set before reading any label.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from mtl_perception.core.models.registry import build_model
from mtl_training.apps.train_cli import main
from mtl_training.config import DataConfig, ExperimentConfig, ModelConfig, PseudoLabelConfig
from mtl_training.data import build_datasets
from mtl_training.data.sources.synthetic import write_synthetic_folder
from mtl_training.pseudo import PseudoLabelError
from mtl_training.pseudo.run import run_pseudo_label
from mtl_training.pseudo.store import MANIFEST, PseudoLabelStore
from mtl_training.pseudo.teacher import load_teacher

SMALL = dict(train_frames=6, val_frames=1, render_height=24, render_width=32, height=16,
             width=24, seg_fraction=0.34)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    cfg = ExperimentConfig()
    cfg.model = ModelConfig(arch="teacher", decoder_channels=4, decoder_convs=1)  # 7 classes
    path = tmp_path_factory.mktemp("teacher")
    torch.save({"model": build_model(cfg.model.spec()).state_dict(), "config": cfg.to_dict(),
                "info": {}}, path / "best.pt")
    return path


def _folder(root: Path, seed: int) -> DataConfig:
    write_synthetic_folder(root, DataConfig(seed=seed, **SMALL))
    return DataConfig(name="folder", root=str(root), **SMALL)


def _pseudo(teacher_dir: Path, data: DataConfig, out: Path) -> Path:
    train_set, _ = build_datasets(data)
    run_pseudo_label(load_teacher(teacher_dir), train_set, out, PseudoLabelConfig(batch_size=4),
                     progress=False)
    return out


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_folder_from_dataset_a_is_refused_for_dataset_b(tmp_path, teacher_dir):
    a = _folder(tmp_path / "A", seed=0)
    b = _folder(tmp_path / "B", seed=1)  # same frame ids as A, other frames
    labels = _pseudo(teacher_dir, a, tmp_path / "pseudo_A")
    store = PseudoLabelStore(labels)
    assert store.dataset["kind"] == "folder" and store.dataset["frames"] == 6
    build_datasets(a, store)  # its own dataset: accepted
    with pytest.raises(PseudoLabelError) as exc:
        build_datasets(b, store)
    line = _one_line(exc)
    assert str(tmp_path / "A") in line and str(tmp_path / "B") in line  # both identities named
    assert "run `mtl-train pseudo-label` for this dataset" in line


def test_a_copied_dataset_is_still_the_same_dataset(tmp_path, teacher_dir):
    a = _folder(tmp_path / "A", seed=0)
    labels = _pseudo(teacher_dir, a, tmp_path / "pseudo_A")
    shutil.copytree(tmp_path / "A", tmp_path / "A_copy")
    copy = DataConfig(name="folder", root=str(tmp_path / "A_copy"), **SMALL)
    train, _ = build_datasets(copy, PseudoLabelStore(labels))
    assert any(train[i]["seg_source"] == "pseudo" for i in range(len(train)))


def test_synthetic_seed_and_changed_folder_are_other_datasets(tmp_path, teacher_dir):
    syn = DataConfig(seed=0, **SMALL)
    labels = _pseudo(teacher_dir, syn, tmp_path / "pseudo_syn")
    with pytest.raises(PseudoLabelError, match=r"synthetic world seed 0 .* synthetic world seed 3"):
        build_datasets(DataConfig(seed=3, **SMALL), PseudoLabelStore(labels))
    a = _folder(tmp_path / "A", seed=0)
    labels_a = _pseudo(teacher_dir, a, tmp_path / "pseudo_A")
    index = tmp_path / "A" / "dataset.json"
    data = json.loads(index.read_text())
    data["frames"][0]["K"] = None  # the folder changed after labelling (e.g. re-extracted)
    index.write_text(json.dumps(data))
    with pytest.raises(PseudoLabelError, match=r"dataset\.json sha256"):
        build_datasets(a, PseudoLabelStore(labels_a))


def test_manifest_without_identity_is_refused_with_the_fix(tmp_path, teacher_dir):
    a = _folder(tmp_path / "A", seed=0)
    labels = _pseudo(teacher_dir, a, tmp_path / "pseudo_A")
    manifest = json.loads((labels / MANIFEST).read_text())
    del manifest["dataset"]
    manifest["format"] = "mtl_perception.pseudo_labels/1"  # what older versions wrote
    (labels / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(PseudoLabelError) as exc:
        PseudoLabelStore(labels)
    assert "records no dataset identity" in _one_line(exc) and "re-run pseudo-label" in str(
        exc.value)


def test_resuming_into_another_datasets_folder_is_refused(tmp_path, teacher_dir):
    a = _folder(tmp_path / "A", seed=0)
    b = _folder(tmp_path / "B", seed=1)
    labels = _pseudo(teacher_dir, a, tmp_path / "pseudo")
    with pytest.raises(PseudoLabelError) as exc:
        _pseudo(teacher_dir, b, labels)
    assert "or pass --overwrite" in _one_line(exc)


def test_cli_student_refuses_in_one_line(tmp_path, teacher_dir, capsys):
    _folder(tmp_path / "A", seed=0)
    _folder(tmp_path / "B", seed=1)
    sets = [f"data.{k}={v}" for k, v in SMALL.items()] + ["data.name=folder", "train.device=cpu"]
    args = [x for kv in sets for x in ("--set", kv)]
    out = tmp_path / "pseudo_A"
    rc = main(["pseudo-label", "--teacher", str(teacher_dir), "--out", str(out), *args,
               "--set", f"data.root={tmp_path / 'A'}"])
    assert rc == 0, capsys.readouterr().err
    capsys.readouterr()
    rc = main(["train", *args, "--set", f"data.root={tmp_path / 'B'}",
               "--set", f"data.pseudo_labels={out}", "--set", "train.epochs=1",
               "--set", "model.decoder_channels=4", "--set", "model.decoder_convs=1",
               "--set", f"train.out_dir={tmp_path / 'runs'}"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "pseudo-labels were made from" in err, err
    assert str(tmp_path / "A") in err and str(tmp_path / "B") in err
