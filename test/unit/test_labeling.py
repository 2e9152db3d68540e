"""`mtl-train select` and `mtl-train labels import`: choosing frames with a real (tiny) teacher,
the PNG and CVAT exports, the round trip back into the folder dataset, and bad input that stops
the import with one line and loses nothing.

The teacher is trained for two real steps on the synthetic world; the datasets are synthetic
folders with most training labels removed (the robot case: frames without segmentation), and the
real RealSense recording extracted with `mtl-train bag extract`.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from mtl_training.apps.train_cli import main
from mtl_training.config import DataConfig, ExperimentConfig, ModelConfig
from mtl_training.data import build_datasets
from mtl_training.data.identity import dataset_identity
from mtl_training.data.sources.folder import FolderSource, read_png, write_png
from mtl_training.data.sources.synthetic import write_synthetic_folder
from mtl_training.labeling.export_formats import parse_labelmap, rgb_codes
from mtl_training.labeling.select import FrameScore, SelectionRule, choose
from mtl_training.pseudo import PseudoLabelError
from mtl_training.pseudo.store import PseudoLabelStore
from mtl_training.pseudo.teacher import file_sha256
from mtl_training.trainer import train

SMALL = dict(train_frames=10, val_frames=2, render_height=24, render_width=32, height=16,
             width=24)
LABELLED = 2  # training frames that keep their segmentation label


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real RGB + depth -> seg teacher (7 synthetic classes) after two optimiser steps."""
    cfg = ExperimentConfig()
    for k, v in SMALL.items():
        setattr(cfg.data, k, v)
    cfg.model = ModelConfig(arch="teacher", aux_input="depth", decoder_channels=4,
                            decoder_convs=1)
    cfg.train.out_dir = str(tmp_path_factory.mktemp("teacher") / "run")
    cfg.train.batch_size, cfg.train.max_steps, cfg.train.epochs = 4, 2, 1
    cfg.train.device, cfg.train.tensorboard, cfg.train.montage_frames = "cpu", False, 0
    return train(cfg)


def robot_folder(root: Path, seed: int = 0, duplicate: bool = True) -> Path:
    """A synthetic folder dataset whose training frames mostly lack segmentation (removed from
    the index and the disk), plus, with `duplicate`, an exact copy of the last training frame
    under another id (a robot standing still)."""
    write_synthetic_folder(root, DataConfig(seed=seed, **SMALL))
    index = json.loads((root / "dataset.json").read_text())
    train_ids = index["splits"]["train"]
    for entry in index["frames"]:
        if entry["id"] in train_ids[LABELLED:]:
            (root / entry["seg"]).unlink()
            entry["seg"] = None
    if duplicate:
        src = next(e for e in index["frames"] if e["id"] == train_ids[-1])
        copy = json.loads(json.dumps(src))
        copy["id"] = "train_copy"
        for key in ("rgb", "depth"):
            copy[key] = src[key].replace(train_ids[-1], "train_copy")
            shutil.copy(root / src[key], root / copy[key])
        index["frames"].append(copy)
        train_ids.append("train_copy")
    (root / "dataset.json").write_text(json.dumps(index))
    return root


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out = capsys.readouterr()
    return rc, out.out, out.err


def select(capsys: pytest.CaptureFixture[str], data: Path, teacher: Path, out: Path,
           budget: int = 3, *extra: str) -> dict:
    rc, text, err = run_cli(capsys, "select", str(data), "--teacher", str(teacher),
                            "--budget", str(budget), "--out", str(out), "--pre-annotate",
                            "--set", "train.device=cpu", *extra)
    assert rc == 0, err
    assert f"chose {budget} of" in text
    return json.loads((out / "manifest.json").read_text())


BUDGET = 4


@pytest.fixture(scope="module")
def selection(teacher_run: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[Path, Path, str]:
    """(dataset, its selection of BUDGET frames with pre-annotation, what select printed), made
    once; tests work on copies (`copy_selection`), since an import changes the dataset."""
    root = tmp_path_factory.mktemp("selection")
    data, out = robot_folder(root / "day1"), root / "to_label"
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        rc = main(["select", str(data), "--teacher", str(teacher_run), "--budget", str(BUDGET),
                   "--out", str(out), "--pre-annotate", "--set", "train.device=cpu"])
    assert rc == 0
    return data, out, printed.getvalue()


def copy_selection(selection: tuple[Path, Path, str], tmp_path: Path
                   ) -> tuple[Path, Path, dict]:
    """A private copy of the dataset and the selection, and the selection's manifest."""
    data = Path(shutil.copytree(selection[0], tmp_path / "day1"))
    out = Path(shutil.copytree(selection[1], tmp_path / "to_label"))
    return data, out, json.loads((out / "manifest.json").read_text())


def one_line_error(rc: int, err: str, *needles: str) -> str:
    assert rc == 2, err
    assert err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err
    return err


# -- the ranking rule, on hand-made scores ----------------------------------------------------
def _score(i: int, u: float, feat: list[float], stamp: int | None = None) -> FrameScore:
    f = np.asarray(feat, np.float32)
    return FrameScore(i, f"f{i}", stamp, "bag", 0.0, 0.0, u, f / np.linalg.norm(f))


def test_choose_weighs_uncertainty_against_diversity_and_skips_duplicates():
    scores = [_score(0, 0.9, [1, 0, 0]), _score(1, 0.85, [1, 0.01, 0]),  # near-copy of 0
              _score(2, 0.2, [0, 1, 0]), _score(3, 0.5, [0.7, 0.7, 0])]
    picks = choose(scores, [], SelectionRule(budget=3))
    assert [p.score.index for p in picks.picks] == [0, 2, 3]
    assert picks.skipped["near_in_features"] == 1  # frame 1: features within 0.02 of frame 0
    assert picks.picks[0].distance is None and picks.picks[1].distance == pytest.approx(2 ** .5)
    # uncertainty alone (w = 0) takes the most uncertain frames, duplicates still skipped
    only_u = choose(scores, [], SelectionRule(budget=3, diversity=0.0))
    assert [p.score.index for p in only_u.picks] == [0, 3, 2]
    # a labelled frame counts as chosen: its neighbourhood is covered already
    covered = choose(scores, [np.array([1, 0, 0], np.float32)], SelectionRule(budget=1))
    assert covered.skipped["near_labelled_frame"] == 2 and covered.picks[0].score.index == 2


def test_choose_skips_frames_near_in_time_of_one_recording():
    second = 1_000_000_000
    scores = [_score(0, 0.9, [1, 0, 0], 0), _score(1, 0.8, [0, 1, 0], second // 2),
              _score(2, 0.7, [0, 0, 1], 3 * second)]
    picks = choose(scores, [], SelectionRule(budget=3, min_gap_s=1.0))
    assert [p.score.index for p in picks.picks] == [0, 2]
    assert picks.skipped["near_in_time"] == 1
    no_stamps = [_score(i, u, f) for i, u, f in ((0, 0.9, [1, 0, 0]), (1, 0.8, [0, 1, 0]),
                                                   (2, 0.7, [0, 0, 1]))]
    picks = choose(no_stamps, [], SelectionRule(budget=3, min_index_gap=1))
    assert [p.score.index for p in picks.picks] == [0, 2]
    seeded = [choose(no_stamps, [], SelectionRule(budget=2, strategy="random", seed=s))
              for s in (0, 0, 1)]
    ids = [[p.score.index for p in c.picks] for c in seeded]
    assert ids[0] == ids[1] and len(ids[0]) == 2


# -- select on a folder dataset with the real teacher ----------------------------------------
def test_select_exports_png_and_cvat_with_a_manifest(selection, teacher_run):
    data, out, printed = selection
    m = json.loads((out / "manifest.json").read_text())
    assert f"chose {BUDGET} of 9 unlabelled frames (uncertainty-diversity)" in printed
    src = FolderSource(data, "train")
    assert m["teacher"]["sha256"] == file_sha256(teacher_run / "best.pt")
    assert m["dataset"] == dataset_identity(src)
    assert m["candidates"] == 9 and m["labelled"] == LABELLED and m["chosen"] == BUDGET
    unlabelled = {f["id"] for f in src.frames if not f["seg"]}
    chosen = [f["id"] for f in m["frames"]]
    assert set(chosen) <= unlabelled and len(set(chosen)) == BUDGET
    assert not {"train_copy", src.frames[-2]["id"]} <= set(chosen)  # never both of a duplicate
    assert m["rule"]["strategy"] == "uncertainty-diversity"
    assert m["rule"]["network_size"] == [16, 24]  # the teacher's training size
    labelmap = parse_labelmap("x", (out / "cvat" / "labelmap.txt").read_text())
    assert list(labelmap) == ["background", *m["classes"]]
    table = {sum(c[i] << (16 - 8 * i) for i in range(3)): k for k, c in
             enumerate(labelmap.values(), start=-1)}  # background -> -1
    with zipfile.ZipFile(out / "cvat" / "segmentation_mask_1.1.zip") as z:
        names = z.read("ImageSets/Segmentation/default.txt").decode().split()
        assert names == [f["name"] for f in m["frames"]]
        for f in m["frames"]:
            frame = src.frame(f["index"])
            img = cv2.cvtColor(read_png(out / f["image"]), cv2.COLOR_BGR2RGB)
            np.testing.assert_array_equal(img, frame.rgb)  # the frame itself, lossless
            ids = read_png(out / f["mask"])
            assert ids.shape == frame.rgb.shape[:2] and ids.dtype == np.uint8
            cls = cv2.imdecode(np.frombuffer(z.read(f"SegmentationClass/{f['name']}.png"),
                                             np.uint8), cv2.IMREAD_COLOR)
            decoded = np.vectorize(table.get)(rgb_codes(cv2.cvtColor(cls, cv2.COLOR_BGR2RGB)))
            np.testing.assert_array_equal(np.where(decoded < 0, 255, decoded), ids)
            assert f"SegmentationObject/{f['name']}.png" in z.namelist()
            colour = cv2.cvtColor(read_png(out / f["mask_color"]), cv2.COLOR_BGR2RGB)
            assert colour.shape == frame.rgb.shape


# -- the round trip ---------------------------------------------------------------------------
def _paint(path: Path, value: int | tuple[int, int, int]) -> np.ndarray:
    """Set the top-left quarter of a mask PNG to `value` (an id, or an RGB colour); returns the
    ids or colours written."""
    img = read_png(path)
    if isinstance(value, tuple):
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    h, w = img.shape[:2]
    img[: h // 2, : w // 2] = value
    write_png(path, img)
    return img


def test_round_trip_png_then_cvat_and_stale_pseudo_labels(tmp_path, teacher_run, selection,
                                                          capsys):
    data, out, m = copy_selection(selection, tmp_path)
    sets = [f"data.{k}={v}" for k, v in SMALL.items()] + [
        "data.name=folder", f"data.root={data}", "data.seg_fraction=0", "train.device=cpu"]
    cfg_args = [x for kv in sets for x in ("--set", kv)]
    rc, _, err = run_cli(capsys, "pseudo-label", "--teacher", str(teacher_run), "--out",
                         str(tmp_path / "pseudo"), *cfg_args)
    assert rc == 0, err
    store = PseudoLabelStore(tmp_path / "pseudo")

    first, second = m["frames"][0], m["frames"][1]
    edited = _paint(out / first["mask"], 1)  # a reviewed frame; the others left untouched
    rc, text, err = run_cli(capsys, "labels", "import", str(out), "--into", str(data))
    assert rc == 0, err
    assert "imported 1 segmentation labels (selection)" in text
    assert text.count("still the teacher's pre-annotation") == 3
    src = FolderSource(data, "train")
    by_id = {f["id"]: i for i, f in enumerate(src.frames)}
    np.testing.assert_array_equal(src.frame(by_id[first["id"]]).seg, edited)
    index = json.loads((data / "dataset.json").read_text())
    assert index["label_imports"][0]["frames"] == [first["id"]]
    # importing the selection again adds nothing and changes nothing
    rc, text, err = run_cli(capsys, "labels", "import", str(out), "--into", str(data))
    assert rc == 0 and "already has exactly this label" in text, err
    assert "imported 0 segmentation labels" in text
    assert json.loads((data / "dataset.json").read_text()) == index
    assert index["label_imports"][0]["teacher_sha256"] == m["teacher"]["sha256"]

    # the dataset changed: the pseudo-labels made before are refused as stale, in one line
    with pytest.raises(PseudoLabelError, match="pseudo-labels were made from"):
        build_datasets(DataConfig(name="folder", root=str(data), **SMALL), store)

    # CVAT: the labeller repaints part of the second frame with the colour of class 2
    cvat = tmp_path / "cvat_export.zip"
    labelmap = parse_labelmap("x", (out / "cvat" / "labelmap.txt").read_text())
    colour = labelmap[m["classes"][2]]
    with zipfile.ZipFile(out / "cvat" / "segmentation_mask_1.1.zip") as z_in, \
            zipfile.ZipFile(cvat, "w") as z_out:
        for member in z_in.namelist():
            data_bytes = z_in.read(member)
            if member == f"SegmentationClass/{second['name']}.png":
                img = cv2.imdecode(np.frombuffer(data_bytes, np.uint8), cv2.IMREAD_COLOR)
                img[: img.shape[0] // 2] = colour[::-1]  # BGR
                data_bytes = cv2.imencode(".png", img)[1].tobytes()
            # CVAT names items by the uploaded path: images/<name>
            z_out.writestr(member.replace("SegmentationClass/", "SegmentationClass/images/"),
                           data_bytes)
    rc, text, err = run_cli(capsys, "labels", "import", str(cvat), "--into", str(data),
                            "--selection", str(out))
    assert rc == 0, err
    assert "imported 1 segmentation labels (cvat)" in text, text
    seg = FolderSource(data, "train").frame(by_id[second["id"]]).seg
    pre = read_png(out / second["mask"])
    h = seg.shape[0] // 2
    assert (seg[:h] == 2).all()
    np.testing.assert_array_equal(seg[h:], pre[h:])
    np.testing.assert_array_equal(FolderSource(data, "train").frame(by_id[first["id"]]).seg,
                                  edited)  # the first import is still there


def test_label_studio_tasks_round_trip_and_bad_exports_fail_in_one_line(tmp_path, selection,
                                                                       capsys):
    """select writes Label Studio tasks (pre-filled with the teacher's mask where it is sure);
    the labeller paints one frame, cancels another, submits a third empty; the JSON export
    comes back as labels, and a label Label Studio knows but the dataset does not stops the
    import in one line naming the task."""
    from mtl_training.labeling.label_studio import brush_results, regions_to_ids

    data, out, m = copy_selection(selection, tmp_path)
    assert m["exports"]["label_studio_tasks"] == "label_studio/tasks.json"
    xml = (out / "label_studio" / "label_config.xml").read_text()
    assert all(f'<Label value="{c}"' in xml for c in m["classes"])
    tasks = json.loads((out / "label_studio" / "tasks.json").read_text())
    assert [t["data"]["frame_id"] for t in tasks] == [f["id"] for f in m["frames"]]
    first = m["frames"][0]
    assert tasks[0]["data"]["image"] == f"/data/local-files/?d=to_label/{first['image']}"
    for t, f in zip(tasks, m["frames"], strict=True):  # predictions = the pre-annotation
        ids = regions_to_ids("x", t["predictions"][0]["result"], m["classes"])
        pre = read_png(out / f["mask"])
        np.testing.assert_array_equal(np.full(pre.shape, 255) if ids is None else ids, pre)
    # what Label Studio exports: the annotation, its own ids, an uploaded file's name (never
    # read: data.frame_id names the frame); two regions, the later one on top
    h, w = first["size"]
    floor, top = np.full((h, w), 1, np.uint8), np.full((h, w), 255, np.uint8)
    top[: h // 2] = 2
    export = [
        {"id": 11, "data": {**tasks[0]["data"], "image": "/data/upload/1/3f2a-x.png"},
         "annotations": [{"id": 1, "was_cancelled": False, "result":
                          brush_results(floor, m["classes"]) + brush_results(top, m["classes"])}]},
        {"id": 12, "data": tasks[1]["data"],
         "annotations": [{"id": 2, "was_cancelled": True,
                          "result": brush_results(floor, m["classes"])}]},
        {"id": 13, "data": tasks[2]["data"],
         "annotations": [{"id": 3, "was_cancelled": False, "result": []}]}]
    path = tmp_path / "project-1-at-2026-12-05.json"
    path.write_text(json.dumps(export))
    rc, text, err = run_cli(capsys, "labels", "import", str(path), "--into", str(data),
                            "--selection", str(out))
    assert rc == 0, err
    assert "imported 1 segmentation labels (label_studio)" in text, text
    assert f"{path} task 13: its annotation has no brush region, not imported" in text
    seg = FolderSource(data, "train").frame(first["index"]).seg
    np.testing.assert_array_equal(seg, np.where(top == 2, 2, 1))
    imports = json.loads((data / "dataset.json").read_text())["label_imports"]
    assert imports[0]["frames"] == [first["id"]] and imports[0]["kind"] == "label_studio"

    before = (data / "dataset.json").read_bytes()
    bad = json.loads(json.dumps(export[:1]))
    bad[0]["annotations"][0]["result"][0]["value"]["brushlabels"] = ["sky"]
    path.write_text(json.dumps(bad))
    rc, _, err = run_cli(capsys, "labels", "import", str(path), "--into", str(data))
    one_line_error(rc, err, f"{path} task 11, region 0: label 'sky' is not a class",
                   "nothing was imported")
    bad[0]["annotations"][0]["result"][0]["value"]["brushlabels"] = [m["classes"][0]]
    bad[0]["annotations"][0]["result"][0]["value"]["rle"] = [0, 0, 1, 0, 57, 27, 255]
    path.write_text(json.dumps(bad))
    rc, _, err = run_cli(capsys, "labels", "import", str(path), "--into", str(data))
    one_line_error(rc, err, f"{path} task 11, region 0: the RLE stream ends early")
    path.write_text('{"not": "a list"}')
    rc, _, err = run_cli(capsys, "labels", "import", str(path), "--into", str(data))
    one_line_error(rc, err, "not a Label Studio JSON export")
    assert (data / "dataset.json").read_bytes() == before


# -- bad input: one line naming the file, nothing written --------------------------------------
def test_bad_masks_stop_the_import_and_lose_nothing(tmp_path, selection, capsys):
    data, out, m = copy_selection(selection, tmp_path)
    a, b, c = m["frames"][:3]
    kept = _paint(out / a["mask"], 3)
    rc, text, err = run_cli(capsys, "labels", "import", str(out), "--into", str(data))
    assert rc == 0 and "imported 1 segmentation labels" in text, err
    before = (data / "dataset.json").read_bytes()
    seg_a = (data / "seg" / f"{a['name']}.png").read_bytes()

    masks = tmp_path / "masks"
    masks.mkdir()
    shape = tuple(a["size"])

    def attempt(files: dict[str, np.ndarray], *needles: str, extra: tuple[str, ...] = ()) -> None:
        shutil.rmtree(masks)
        masks.mkdir()
        for name, img in files.items():
            write_png(masks / name, img)
        rc, _, err = run_cli(capsys, "labels", "import", str(masks), "--into", str(data),
                             *extra)
        one_line_error(rc, err, "nothing was imported", *needles)
        assert (data / "dataset.json").read_bytes() == before
        assert (data / "seg" / f"{a['name']}.png").read_bytes() == seg_a
        assert not (data / "seg" / f"{b['name']}.png").exists()  # good files not written either
        assert not (data / "seg" / f"{c['name']}.png").exists()

    good = np.zeros(shape, np.uint8)
    attempt({f"{b['name']}.png": good, f"{c['name']}.png": np.zeros((5, 7), np.uint8)},
            f"{masks / c['name']}.png: mask is 7x5", "width x height")
    unknown = good.copy()
    unknown[0, 0] = 9
    attempt({f"{b['name']}.png": unknown}, f"{masks / b['name']}.png: label ids 9 are not "
            "classes of the dataset (0..6, 255 = unlabelled)")
    attempt({f"{b['name']}.png": good, "not_a_frame.png": good},
            f"{masks / 'not_a_frame.png'}: frame 'not_a_frame' is not in the dataset")
    colour = np.zeros((*shape, 3), np.uint8)
    colour[0, 0] = (1, 2, 3)
    attempt({f"{b['name']}.png": colour}, f"{masks / b['name']}.png: colours (1,2,3) are not in")
    attempt({f"{a['name']}.png": good}, f"frame '{a['id']}' already has a segmentation label",
            "--replace")
    attempt({f"{b['name']}.png": unknown, "nope.png": good, f"{c['name']}.png": good},
            "(and 1 more bad files)")
    # a CVAT label that is not a class of the dataset
    zpath = tmp_path / "bad_cvat.zip"
    img = np.zeros((*shape, 3), np.uint8)
    img[0, 0] = (9, 9, 9)
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("labelmap.txt", "background:0,0,0::\nsky:9,9,9::\n")
        z.writestr(f"SegmentationClass/{b['name']}.png",
                   cv2.imencode(".png", img)[1].tobytes())
    rc, _, err = run_cli(capsys, "labels", "import", str(zpath), "--into", str(data))
    one_line_error(rc, err, f"{zpath}/SegmentationClass/{b['name']}.png: label 'sky'",
                   "not a class of the dataset")
    assert (data / "dataset.json").read_bytes() == before
    np.testing.assert_array_equal(read_png(data / "seg" / f"{a['name']}.png"), kept)
    # --replace is the one way to change an imported label
    write_png(masks / f"{a['name']}.png", good)
    for extra in ((), ("--replace",)):
        shutil.rmtree(masks)
        masks.mkdir()
        write_png(masks / f"{a['name']}.png", good)
        rc, text, err = run_cli(capsys, "labels", "import", str(masks), "--into", str(data),
                                *extra)
    assert rc == 0 and "(1 replaced)" in text, err
    assert (read_png(data / "seg" / f"{a['name']}.png") == 0).all()


def test_select_refuses_bad_requests_in_one_line(tmp_path, teacher_run, selection, capsys):
    data, out, _ = copy_selection(selection, tmp_path)
    base = ["select", str(data), "--teacher", str(teacher_run), "--set", "train.device=cpu"]
    rc, _, err = run_cli(capsys, *base, "--budget", "1", "--out", str(out))
    one_line_error(rc, err, "manifest.json exists", "--overwrite")
    (out / "masks" / "stale_frame.png").write_bytes(b"")  # from an earlier selection
    rc, _, err = run_cli(capsys, *base, "--budget", "1", "--out", str(out), "--overwrite")
    assert rc == 0 and not (out / "masks" / "stale_frame.png").exists(), err
    rc, _, err = run_cli(capsys, *base, "--budget", "1", "--out", str(tmp_path))
    one_line_error(rc, err, "not empty and not a selection folder")
    rc, _, err = run_cli(capsys, *base, "--budget", "0", "--out", str(tmp_path / "x"))
    one_line_error(rc, err, "--budget must be >= 1")
    rc, _, err = run_cli(capsys, *base, "--budget", "1", "--out", str(tmp_path / "x"),
                         "--teacher", str(tmp_path / "missing"))
    one_line_error(rc, err, "no teacher checkpoint")


# -- the real RealSense recording -------------------------------------------------------------
def test_realsense_extract_select_export_import(tmp_path, teacher_run, capsys, realsense_data):
    bag = realsense_data / "ros2_sqlite3"
    data = tmp_path / "rs"
    rc, _, err = run_cli(capsys, "bag", "extract", str(bag), "--out", str(data))
    assert rc == 0, err
    sets = ["data.name=folder", f"data.root={data}", "data.seg_fraction=0", "data.height=16",
            "data.width=24", "train.device=cpu"]
    cfg_args = [x for kv in sets for x in ("--set", kv)]
    # the teacher learned on the procedural world: thresholds from its own held-out rooms
    rc, text, err = run_cli(capsys, "pseudo-label", "--teacher", str(teacher_run), "--out",
                            str(tmp_path / "pseudo"), *cfg_args,
                            "--set", "pseudo.calibrate=teacher_val")
    assert rc == 0 and "1/1 frames labelled (seg)" in text, err
    assert "cross-domain" in text and "calibrated on the teacher's held-out frames" in text
    manifest = json.loads((tmp_path / "pseudo" / "manifest.json").read_text())
    assert manifest["cross_domain"] and manifest["teacher_data"]["name"] == "synthetic"
    assert manifest["dataset"]["kind"] == "folder"
    out = tmp_path / "to_label"
    m = select(capsys, data, teacher_run, out, 1)
    (f,) = m["frames"]
    assert f["stamp_ns"] == 360_713_523_000 and f["size"] == [480, 640]
    with zipfile.ZipFile(out / "cvat" / "segmentation_mask_1.1.zip") as z:
        cls = cv2.imdecode(np.frombuffer(z.read(f"SegmentationClass/{f['name']}.png"),
                                         np.uint8), cv2.IMREAD_COLOR)
    assert cls.shape == (480, 640, 3)
    # the labeller marks the lower half as floor in the colour PNG
    labelmap = parse_labelmap("x", (out / "cvat" / "labelmap.txt").read_text())
    colour = _paint(out / f["mask_color"], labelmap["floor"])
    masks = tmp_path / "reviewed"
    masks.mkdir()
    shutil.copy(out / f["mask_color"], masks / f"{f['id']}.png")
    rc, text, err = run_cli(capsys, "labels", "import", str(masks), "--into", str(data))
    assert rc == 0 and "imported 1 segmentation labels (png)" in text, err
    seg = FolderSource(data).frame(0).seg
    assert seg.shape == (480, 640) and (seg[:240, :320] == 0).all()  # floor is class 0
    black = (colour == 0).all(axis=2)
    assert (seg[black] == 255).all()
    with pytest.raises(PseudoLabelError, match="pseudo-labels were made from"):
        PseudoLabelStore(tmp_path / "pseudo").check_dataset(dataset_identity(FolderSource(data)))
