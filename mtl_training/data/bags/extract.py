"""Robot recordings -> a folder dataset (mtl_training.data.sources.folder), incrementally.

Robots record rosbags, not datasets. Extraction writes the synced, registered, metric frames of
each bag (frames.py) as PNGs and an index that remembers the source bag, its topics, stamps and
the sync settings. Training then reads PNGs, never the bag; re-running extraction on the same bag
only writes what is missing, and new sync settings re-extract that bag alone.

Speed: the reader (stamp scan, pairing, deserialising) runs on the calling thread; registering a
frame's depth and encoding its PNGs (numpy and OpenCV, both releasing the GIL) run on `workers`
threads, at most 2 x workers frames in flight. Frames are listed in the index in bag order and
only once their files are written, so the kill-safety below does not depend on the worker count.
PNGs are written at zlib level `png_compression` (default 0: stored, lossless, ~30x cheaper to
write than OpenCV's default and ~1.7x larger; 1..9 trade speed for size). `image_format` "npy"
writes the same pixels as raw .npy arrays instead (folder format/3): no PNG framing or
checksums, the cheapest lossless file there is to write and to read back in training.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mtl_perception.core.contracts import DatasetInfo
from mtl_perception.core.labels import palette_for
from mtl_training.config import BagConfig
from mtl_training.data.bags.frames import BagReport, PendingFrame, pending_frames
from mtl_training.data.bags.reader import BagError
from mtl_training.data.sources.folder import (
    IMAGE_FORMATS,
    INDEX,
    DatasetFormatError,
    read_index,
    write_frame,
    write_index,
)
from mtl_training.data.sources.synthetic import CLASSES, PALETTE

# While a bag is extracted, dataset.json is rewritten every CHECKPOINT_S seconds, or after
# max(CHECKPOINT_FRAMES, frames listed / 8) new frames: a kill loses little, and the rewrites
# (each one the whole index) stay a small constant factor of the frames written.
CHECKPOINT_S = 2.0
CHECKPOINT_FRAMES = 16
PNG_COMPRESSION = 0  # zlib level of extracted PNGs: stored (folder.png_params)


def bag_key(path: Path) -> str:
    """Stable, readable id of a bag: its name plus a short hash of its absolute path."""
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:6]
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem if path.is_file() else path.name)
    return f"{stem}-{digest}"


def _signature(path: Path) -> dict[str, int]:
    """Size and newest mtime of the bag's files: a changed bag is read again."""
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    st = [f.stat() for f in files if f.is_file()]
    return {"size": sum(s.st_size for s in st), "mtime_ns": max((s.st_mtime_ns for s in st),
                                                                default=0)}


def _settings(cfg: BagConfig) -> dict[str, Any]:
    """The settings that change which frames a bag yields (not the split or class names)."""
    s = asdict(cfg)
    s.pop("val_every")
    s.pop("classes")
    return s


def _write_pending(out: Path, fid: str, pending: PendingFrame, meta: dict[str, Any],
                   png_compression: int | None, image_format: str) -> dict[str, Any]:
    """Register one frame and write its files (a worker's job); returns its index entry."""
    f = pending.frame()
    return write_frame(out, fid, f.rgb, f.depth, f.seg, f.K, meta,
                       png_compression=png_compression, image_format=image_format)


def extract(bags: list[Path], out: Path, cfg: BagConfig, max_depth: float = 10.0,
            progress: bool = True, *, workers: int = 1,
            png_compression: int | None = PNG_COMPRESSION, image_format: str = "png"
            ) -> tuple[list[BagReport], dict[str, Any]]:
    """Extract bags into the folder dataset `out` (incremental); returns per-bag reports and
    totals. dataset.json is rewritten atomically after each bag and at checkpoints within one
    (CHECKPOINT_S, CHECKPOINT_FRAMES), listing only frames whose files are already written: an
    interrupted run (even kill -9) leaves an index that is whole and true, and the next run
    writes only what it lacks (a PNG cut short by the kill was never listed, and is written
    again under the same name). `workers` threads register and encode frames (module docstring).
    """
    if workers < 1:
        raise BagError(f"--workers must be >= 1, got {workers}")
    if image_format not in IMAGE_FORMATS:
        raise BagError(f"--image-format must be one of {', '.join(IMAGE_FORMATS)}, "
                       f"got {image_format!r}")
    out = Path(out)
    entries: list[dict[str, Any]] = []
    sources: dict[str, Any] = {}
    if (out / INDEX).is_file():
        try:
            index = read_index(out)
        except DatasetFormatError as exc:
            raise BagError(f"{out}: existing dataset cannot be extended ({exc})") from exc
        entries, sources = list(index["frames"]), dict(index.get("bags", {}))
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale_index_temps(out)
    classes, palette = _classes(cfg)
    info = DatasetInfo(out.name, classes, palette, max_depth)
    reports, t0, written = [], time.perf_counter(), 0
    pool = ThreadPoolExecutor(workers, thread_name_prefix="extract") if workers > 1 else None
    try:
        for bag in bags:
            written += _extract_bag(Path(bag), out, cfg, info, entries, sources, reports, progress,
                                    pool, workers, png_compression, image_format)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    if not (out / INDEX).is_file():
        _write(out, info, entries, cfg.val_every, sources)
    seconds = time.perf_counter() - t0
    splits = _splits(entries, cfg.val_every)
    totals = {"frames": len(entries), "written": written, "seconds": seconds,
              "fps": written / seconds if seconds > 0 else 0.0,
              "train": len(splits.get("train", entries)), "val": len(splits.get("val", entries)),
              "held_out": bool(splits), "workers": workers}
    return reports, totals


def _extract_bag(bag: Path, out: Path, cfg: BagConfig, info: DatasetInfo,
                 entries: list[dict[str, Any]], sources: dict[str, Any],
                 reports: list[BagReport], progress: bool, pool: ThreadPoolExecutor | None,
                 workers: int, png_compression: int | None, image_format: str) -> int:
    """One bag into `out` (entries and sources updated in place); returns frames written."""
    key = bag_key(bag)
    report = BagReport(str(bag))
    signature, settings = _signature(bag) if bag.exists() else {}, _settings(cfg)
    prev = sources.get(key)
    if prev and prev.get("settings") != settings:  # new sync settings: re-extract this bag
        entries[:] = [e for e in entries if e.get("meta", {}).get("bag_key") != key]
        prev = None
        del sources[key]  # unlist its frames before any file of theirs is rewritten
        _write(out, info, entries, cfg.val_every, sources)
    mine = {e["meta"]["stamp_ns"] for e in entries if e.get("meta", {}).get("bag_key") == key}
    if prev and prev.get("signature") == signature and prev.get("complete"):
        report.up_to_date, report.existing = True, len(mine)
        reports.append(report)
        return 0
    bar = tqdm(desc=bag.name, unit="frame", disable=not progress or None)
    state = {"written": 0, "since": 0, "at": time.monotonic()}

    def finished(entry: dict[str, Any]) -> None:
        """A frame whose files are written: list it; rewrite the index now and then."""
        entries.append(entry)
        report.written += 1
        if entry.get("depth") and not entry.get("depth_max"):  # max 0: not one valid pixel
            report.no_valid_depth += 1
        state["written"] += 1
        state["since"] += 1
        bar.update()
        if (state["since"] >= max(CHECKPOINT_FRAMES, len(entries) // 8)
                or time.monotonic() - state["at"] > CHECKPOINT_S):  # bounds what a kill loses
            sources[key] = _source(bag, signature, settings, report, prev, complete=False)
            _write(out, info, _sorted(entries), cfg.val_every, sources)
            state["since"], state["at"] = 0, time.monotonic()

    inflight: deque[Future] = deque()
    for f in pending_frames(bag, cfg, report, frozenset(mine)):
        fid = f"{key}_{f.stamp_ns}"
        meta = {"bag": str(bag), "bag_key": key, "rgb_topic": report.topics["rgb"],
                "depth_topic": report.topics["depth"], "label_topic": report.topics["label"],
                "stamp_ns": f.stamp_ns, "depth_stamp_ns": f.depth_stamp_ns,
                "stamp_source": report.stamp_source, "header_frame_id": f.frame_id}
        if pool is None:
            finished(_write_pending(out, fid, f, meta, png_compression, image_format))
            continue
        inflight.append(pool.submit(_write_pending, out, fid, f, meta, png_compression,
                                    image_format))
        while len(inflight) > 2 * workers or (inflight and inflight[0].done()):
            finished(inflight.popleft().result())  # in bag order
    while inflight:
        finished(inflight.popleft().result())
    bar.close()
    sources[key] = _source(bag, signature, settings, report, prev,
                           complete=report.truncated is None)
    _write(out, info, _sorted(entries), cfg.val_every, sources)
    reports.append(report)
    return state["written"]


def _source(bag: Path, signature: dict[str, int], settings: dict[str, Any], report: BagReport,
            prev: dict[str, Any] | None, complete: bool) -> dict[str, Any]:
    """The index's record of one bag: what a re-run compares, and what reading it found.

    `complete` False (a checkpoint mid-bag, or a truncated bag) makes the next run read the bag
    again, writing only the frames the index does not list yet.
    """
    return {"path": str(bag), "signature": signature, "settings": settings,
            "topics": report.topics, "complete": complete,
            "frames": report.written + report.existing,
            "registration": (prev or {}).get("registration", report.registration)
            if report.written == 0 else report.registration,
            "extrinsic": report.extrinsic, "bad_messages": report.bad,
            "zero_stamps": report.zero_stamps, "duplicate_stamps": report.duplicate_stamps,
            "stamp_source": report.stamp_source, "truncated": report.truncated,
            "no_valid_depth": (prev or {}).get("no_valid_depth", 0) + report.no_valid_depth}


# atomic_path's temporary name for the index: `.dataset.json.<pid>.tmp`
_INDEX_TMP = re.compile(rf"\.{re.escape(INDEX)}\.(\d+)\.tmp")


def _remove_stale_index_temps(out: Path) -> None:
    """Delete the index temporaries of processes that no longer run: what a kill during an index
    rewrite leaves (atomic_path cleans up on any error, not on SIGKILL). A live process's
    temporary is its rewrite in progress (another extract into this folder) and stays, as does
    every file not named like one."""
    for path in out.glob(f".{INDEX}.*.tmp"):
        match = _INDEX_TMP.fullmatch(path.name)
        if match and not _running(int(match.group(1))):
            path.unlink(missing_ok=True)


def _running(pid: int) -> bool:
    """Whether process `pid` exists (signal 0 checks without signalling)."""
    if pid == os.getpid():
        return True
    if pid <= 0:  # no process has it (os.kill would signal a process group)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _sorted(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Entries in (bag, stamp) order, sorted in place (the order dataset.json lists them)."""
    entries.sort(key=lambda e: (e["meta"].get("bag_key", ""), e["meta"].get("stamp_ns", 0)))
    return entries


def _classes(cfg: BagConfig) -> tuple[list[str], list[list[int]]]:
    """Class names of the extracted dataset: `bag.classes`, else the synthetic world's (whose
    palette they keep); other names get the core fallback palette."""
    names = list(cfg.classes) if cfg.classes else list(CLASSES)
    if names == list(CLASSES):
        return names, [list(c) for c in PALETTE]
    return names, palette_for(names)


def _splits(entries: list[dict[str, Any]], val_every: int) -> dict[str, list[str]]:
    """Every val_every-th frame of each bag goes to val; fewer than 2 frames: no splits (train
    and val both read everything)."""
    if val_every <= 0 or len(entries) < 2:
        return {}
    train, val, seen = [], [], {}
    for e in entries:
        k = e["meta"].get("bag_key", "")
        i = seen.get(k, 0)
        seen[k] = i + 1
        (val if i % val_every == val_every // 2 else train).append(e["id"])
    if not val or not train:
        return {}
    return {"train": train, "val": val}


def _write(out: Path, info: DatasetInfo, entries: list[dict[str, Any]], val_every: int,
           sources: dict[str, Any]) -> None:
    write_index(out, info, entries, _splits(entries, val_every), extra={"bags": sources})
