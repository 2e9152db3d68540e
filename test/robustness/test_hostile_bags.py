"""Hostile and unlucky bags: every one ends in a counted skip or the documented one-line error.

The corpus is generated here, in tmp_path, with the `rosbags` writer (mtl_training.data.bags.synth):
header stamps all 0 or repeated, random-bytes messages on each topic, files of each storage cut
short or overwritten with noise. Then `mtl-train bag extract` is killed (SIGKILL) at seeded random
moments and re-run, and the dataset must list every paired frame exactly once, intact.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from mtl_training.apps.replay_cli import format_replay_report, summary_lines
from mtl_training.apps.train_cli import main as cli_main
from mtl_training.config import BagConfig
from mtl_training.data.bags.frames import BagReport, read_synced_frames
from mtl_training.data.bags.synth import (
    DEPTH_INFO_TOPIC,
    DEPTH_TOPIC,
    LABEL_TOPIC,
    RGB_INFO_TOPIC,
    RGB_TOPIC,
    SynthBagSpec,
    write_synthetic_bag,
)
from mtl_training.data.sources.folder import INDEX, FolderSource, read_index

STORAGES = ("mcap", "sqlite3", "ros1")
REPO = Path(__file__).resolve().parents[2]
ONE_LINE_S = 10.0  # generous on a loaded 2-core CI machine; typical is well under 0.1 s


def _write(tmp_path: Path, name: str, **kw) -> tuple[Path, dict]:
    spec = SynthBagSpec(**kw)
    path = tmp_path / (f"{name}.bag" if spec.storage == "ros1" else name)
    return path, write_synthetic_bag(path, spec)


def _extract(capsys, bag: Path, out: Path, *extra: str) -> tuple[int, str, str, float]:
    t0 = time.perf_counter()
    rc = cli_main(["bag", "extract", str(bag), "--out", str(out), *extra])
    seconds = time.perf_counter() - t0
    cap = capsys.readouterr()
    return rc, cap.out, cap.err, seconds


def _assert_one_line_error(rc: int, err: str, bag: Path) -> None:
    assert rc == 2, err
    assert err.count("\n") == 1 and err.startswith("mtl-train bag: error: "), err
    assert str(bag) in err and "Traceback" not in err


def _assert_dataset_intact(out: Path) -> list[str]:
    """Every listed frame's files exist and decode; ids are unique. Returns the ids."""
    index = read_index(out)
    ids = [e["id"] for e in index["frames"]]
    assert len(ids) == len(set(ids)), "a frame is listed twice"
    for e in index["frames"]:
        for key in ("rgb", "depth", "seg"):
            if e.get(key):
                img = cv2.imread(str(out / e[key]), cv2.IMREAD_UNCHANGED)
                assert img is not None, f"{e[key]} listed but missing or not decodable"
    return ids


# -- stamps ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("storage", STORAGES)
def test_all_zero_stamps_pair_by_receive_time_and_say_so(tmp_path, capsys, storage):
    bag, gt = _write(tmp_path, "zero", storage=storage, frames=8, zero_stamps=tuple(range(8)))
    rc, out, err, _ = _extract(capsys, bag, tmp_path / "ds")
    assert rc == 0, err
    assert "8 colour messages with stamp 0" in out and "8 depth messages with stamp 0" in out
    assert "paired by bag receive time instead" in out
    assert "-> 8 pair(s)" in out and "8 written" in out  # was: 1 pair, no warning
    index = read_index(tmp_path / "ds")
    assert sorted(e["meta"]["stamp_ns"] for e in index["frames"]) == sorted(gt["receive_stamps"])
    assert {e["meta"]["stamp_source"] for e in index["frames"]} == {"receive"}
    assert index["bags"][next(iter(index["bags"]))]["zero_stamps"] == {"colour": 8, "depth": 8}


def test_some_zero_stamps_are_dropped_and_counted(tmp_path):
    bag, gt = _write(tmp_path, "somezero", frames=8, zero_stamps=(2, 5))
    report = BagReport(str(bag))
    frames = list(read_synced_frames(bag, BagConfig(), report))
    assert len(frames) == 6 and report.stamp_source == "header"
    assert report.zero_stamps == {"colour": 2, "depth": 2}
    assert "2 colour messages with stamp 0 (dropped: cannot be paired by time)" in report.summary()
    assert sorted(f.stamp_ns for f in frames) == [s for i, s in enumerate(gt["stamps"])
                                                  if i not in (2, 5)]


@pytest.mark.parametrize("storage", STORAGES)
def test_duplicate_stamps_keep_the_first_and_are_counted(tmp_path, capsys, storage):
    bag, gt = _write(tmp_path, "dup", storage=storage, frames=8, repeat_stamps=(3, 6))
    rc, out, err, _ = _extract(capsys, bag, tmp_path / "ds")
    assert rc == 0, err
    assert "2 duplicate colour stamps (kept the first)" in out
    assert "2 duplicate depth stamps (kept the first)" in out
    assert "-> 6 pair(s)" in out and "6 written" in out
    src = FolderSource(tmp_path / "ds")
    for i in range(len(src)):  # the frame stamped like frames 2/3 is frame 2: the first one
        f = src.frame(i)
        j = gt["stamps"].index(f.meta["stamp_ns"])
        np.testing.assert_array_equal(f.rgb, gt["rgb"][j])


# -- random-bytes messages -----------------------------------------------------------------------
TOPICS = {"rgb": RGB_TOPIC, "depth": DEPTH_TOPIC, "rgb_info": RGB_INFO_TOPIC,
          "depth_info": DEPTH_INFO_TOPIC, "label": LABEL_TOPIC}


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("role", list(TOPICS))
def test_one_random_bytes_message_is_counted_as_undecodable(tmp_path, capsys, storage, role):
    topic = TOPICS[role]
    bag, _ = _write(tmp_path, "noise", storage=storage, frames=8, labels=True, depth_scale=2,
                    random_bytes=((topic, 3),))
    rc, out, err, seconds = _extract(capsys, bag, tmp_path / "ds", "--label-topic", LABEL_TOPIC)
    assert rc == 0, err
    assert f"skipped 1 undecodable message(s) on {topic}" in out
    # a garbage colour message is not a "colour frame without depth": it is undecodable
    assert "(0 colour frames without depth in tolerance" in out
    assert ("7 written" if role == "rgb" else "8 written") in out
    _assert_dataset_intact(tmp_path / "ds")
    assert seconds < ONE_LINE_S


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("role", list(TOPICS))
def test_a_topic_of_random_bytes_is_counted_or_one_line(tmp_path, capsys, storage, role):
    topic = TOPICS[role]
    bag, _ = _write(tmp_path, "noise", storage=storage, frames=6, labels=True, depth_scale=2,
                    random_bytes=tuple((topic, i) for i in range(6)))
    rc, out, err, seconds = _extract(capsys, bag, tmp_path / "ds", "--label-topic", LABEL_TOPIC)
    assert seconds < ONE_LINE_S
    if role in ("rgb", "rgb_info", "depth_info"):  # nothing usable: say why, in one line
        _assert_one_line_error(rc, err, bag)
        assert f"6 undecodable message(s) on {topic}" in err
        return
    assert rc == 0, err
    assert f"skipped 6 undecodable message(s) on {topic}" in out
    if role == "depth":  # no depth topic could be recognised: frames without depth, counted
        assert "no depth topic (frames without depth)" in out
    _assert_dataset_intact(tmp_path / "ds")


def test_replay_report_prints_bad_message_and_stamp_counts(tmp_path):
    bag, _ = _write(tmp_path, "bad", frames=6, repeat_stamps=(4,),
                    random_bytes=((RGB_TOPIC, 1), (DEPTH_INFO_TOPIC, 2)))
    report = BagReport(str(bag))
    frames = list(read_synced_frames(bag, BagConfig(), report, keep_unpaired=True))
    assert len(frames) == 4  # 6 - 1 undecodable - 1 duplicate
    r = {"bag": str(bag), "model": "m.safetensors", "rate": "max",
         "frames": {"sent": 4, "received": 4, "dropped": 0, "scored_depth": 0, "scored_seg": 0},
         "latency_ms": {"p50": 1.0, "p95": 2.0, "p99": 3.0}, "throughput_fps": 10.0,
         "metrics": {"depth": None, "seg": None}, "bag_report": report.to_dict()}
    lines = summary_lines(json.loads(json.dumps(r)))  # as report.json holds it
    assert f"bag: skipped 1 undecodable message(s) on {RGB_TOPIC}" in lines
    assert f"bag: skipped 1 undecodable message(s) on {DEPTH_INFO_TOPIC}" in lines
    assert "bag: 1 duplicate colour stamps (kept the first)" in lines
    md = format_replay_report(r)
    assert "## Bad data" in md and f"- skipped 1 undecodable message(s) on {RGB_TOPIC}" in md


# -- damaged files ---------------------------------------------------------------------------------
DAMAGE = (0.0, 0.01, 0.3, 0.6, 0.9, 0.99, "noise", "noisy-head")


def _damage(bag: Path, how: float | str) -> None:
    f = bag if bag.is_file() else next(x for x in bag.iterdir() if x.suffix != ".yaml")
    data = bytearray(f.read_bytes())
    rng = np.random.default_rng(len(data))
    if how == "noise":
        data = bytearray(rng.integers(0, 256, len(data), dtype=np.uint8).tobytes())
    elif how == "noisy-head":
        data[:64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
    else:
        data = data[:int(len(data) * how)]
    f.write_bytes(bytes(data))


@pytest.mark.parametrize("storage", STORAGES)
def test_damaged_files_of_each_storage(tmp_path, capsys, storage):
    handled, worst = 0, 0.0
    for how in DAMAGE:
        bag, gt = _write(tmp_path, f"cut{how}", storage=storage, frames=10)
        _damage(bag, how)
        out = tmp_path / f"ds{how}"
        for argv in (["bag", "index", str(bag)], None):
            t0 = time.perf_counter()
            if argv is None:
                rc, text, err, seconds = _extract(capsys, bag, out)
            else:
                rc = cli_main(argv)
                cap = capsys.readouterr()
                text, err, seconds = cap.out, cap.err, time.perf_counter() - t0
            worst = max(worst, seconds)
            if rc == 2:  # the documented one-line error, and nothing that looks complete
                _assert_one_line_error(rc, err, bag)
                assert argv is not None or not (out / INDEX).exists()
            else:  # read what is whole, and say the file was cut short
                assert rc == 0, err
                assert "truncated" in text, text
                if argv is None:
                    for i in _assert_dataset_intact(out):
                        assert int(i.rsplit("_", 1)[1]) in gt["stamps"]
        handled += 1
    assert handled == len(DAMAGE) and worst < ONE_LINE_S


# -- kill -9 during extraction --------------------------------------------------------------------
def _written_since(out: Path, since_ns: int) -> int:
    """How many colour PNGs were (re)written since `since_ns`: how far this run has got."""
    try:
        with os.scandir(out / "rgb") as it:
            return sum(1 for e in it if e.stat().st_mtime_ns >= since_ns)
    except FileNotFoundError:
        return 0


def _listed(out: Path) -> int:
    return len(read_index(out)["frames"]) if (out / INDEX).exists() else 0


def _run_extract(bag: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "mtl_training", "bag", "extract", str(bag),
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO, env=env)


@pytest.mark.parametrize("seed,kills", [(17, 4), pytest.param(5, 12, marks=pytest.mark.slow)])
def test_kill_9_during_extraction_loses_nothing(tmp_path, seed, kills):
    """SIGKILL after a seeded random number of this run's frame writes (so every kill lands
    mid-extraction, however fast the machine), re-run, repeat; then finish and re-check."""
    frames = 48
    bag, gt = _write(tmp_path, "long", frames=frames, height=120, width=160, depth_scale=2)
    out = tmp_path / "ds"
    rng = np.random.default_rng(seed)
    killed = 0
    for _ in range(kills):
        remaining = frames - _listed(out)
        if remaining < 2:
            break
        # kill once this run has written this many frames (leaving some to go: room for the
        # poll below to be late on a loaded machine)
        target = int(rng.integers(1, max(2, remaining * 3 // 4)))
        time.sleep(0.02)  # file times are coarse: let the last run's writes fall behind `started`
        started = time.time_ns()
        proc = _run_extract(bag, out)
        deadline = time.monotonic() + 60
        while proc.poll() is None and _written_since(out, started) < target:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail("extraction wrote nothing within 60 s")
            time.sleep(0.001)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.communicate(timeout=30)
        if (out / INDEX).exists():  # whatever a kill left must be whole and true
            _assert_dataset_intact(out)
    listed = _listed(out)
    proc = _run_extract(bag, out)
    text, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert f"{frames - listed} written, {listed} already extracted" in text  # resumed
    ids = _assert_dataset_intact(out)
    stamps = sorted(int(i.rsplit("_", 1)[1]) for i in ids)
    assert stamps == sorted(gt["stamps"]), "every paired frame exactly once"
    assert killed >= min(3, kills), f"only {killed} of {kills} runs were killed mid-extraction"
    assert not list(out.glob(f".{INDEX}.*.tmp")), "an index temporary a kill left is still there"
    proc = _run_extract(bag, out)
    text, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and f"up to date ({frames} frames already extracted)" in text, err


# -- depth that holds nothing, temporaries a kill leaves ------------------------------------------
@pytest.mark.parametrize("fill", [float("nan"), float("-inf")])
def test_a_depth_topic_without_one_valid_pixel_is_one_clear_line(tmp_path, capsys, fill):
    """A broken depth sensor (every pixel NaN or -inf) still extracts its frames (colour and
    labels are fine), but the report says in one line that the topic gave no depth at all."""
    bag, _ = _write(tmp_path, "blind", frames=8, depth_encoding="32FC1", depth_fill=fill)
    rc, out, err, _ = _extract(capsys, bag, tmp_path / "ds")
    assert rc == 0, err
    lines = [line for line in out.splitlines() if "no valid depth pixel" in line]
    assert len(lines) == 1, out
    assert DEPTH_TOPIC in lines[0] and "any of the 8 frames" in lines[0]
    index = read_index(tmp_path / "ds")
    assert index["bags"][next(iter(index["bags"]))]["no_valid_depth"] == 8


def test_frames_without_valid_depth_are_counted_per_bag():
    report = BagReport("b.mcap", topics={"depth": "/d"}, written=8, existing=2, no_valid_depth=3)
    assert "3 of 8 frames written have no valid depth pixel on /d" in report.summary()
    assert report.to_dict()["no_valid_depth"] == 3
    assert not BagReport("b.mcap", written=8).problems()


def test_a_rerun_removes_the_index_temporaries_a_kill_left(tmp_path, capsys):
    """`.dataset.json.<pid>.tmp` of a killed extract goes on the next run; one of a live process
    (another extract writing the index right now), and any other file, stay."""
    bag, _ = _write(tmp_path, "b", frames=4)
    out = tmp_path / "ds"
    assert _extract(capsys, bag, out)[0] == 0
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    stale = out / f".dataset.json.{int(dead.stdout)}.tmp"
    stale.write_text('{"format": "mtl-folder/2", "frames": [')  # cut short by the kill
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as live:
        busy = out / f".dataset.json.{live.pid}.tmp"
        busy.write_text("{")
        other = out / ".dataset.json.notes.tmp"
        other.write_text("mine")
        rc, text, err, _ = _extract(capsys, bag, out)
        live.kill()
    assert rc == 0 and "up to date" in text, err
    assert not stale.exists() and busy.exists() and other.exists()


def test_training_on_a_bag_whose_depth_holds_nothing_refuses_at_start(tmp_path, capsys):
    """The extracted frames of a blind depth sensor list depth files of zeros: a run asking for
    depth refuses (any source, not only Cityscapes) instead of training an untrained head."""
    from mtl_training.config import ConfigError, load_config
    from mtl_training.trainer import Trainer

    bag, _ = _write(tmp_path, "blind", frames=6, labels=True, depth_encoding="32FC1",
                    depth_fill=float("nan"))
    assert _extract(capsys, bag, tmp_path / "ds", "--label-topic", LABEL_TOPIC)[0] == 0
    cfg = load_config(None, ["data.name=folder", f"data.root={tmp_path / 'ds'}",
                             "data.height=32", "data.width=32", "model.decoder_channels=4",
                             "train.device=cpu", f"train.out_dir={tmp_path / 'run'}"])
    with pytest.raises(ConfigError, match=r"^model\.tasks: depth") as err:
        Trainer(cfg)
    assert "\n" not in str(err.value) and "model.tasks=[seg]" in str(err.value)
    cfg.model.tasks = ["seg"]
    Trainer(cfg)
