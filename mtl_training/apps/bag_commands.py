"""`mtl-train bag index | extract`: look into recorded rosbags, turn them into a folder dataset."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from mtl_training.apps.command import Command, UserError, add_config_options
from mtl_training.config import BagConfig, load_config
from mtl_training.data.bags.extract import PNG_COMPRESSION, extract
from mtl_training.data.bags.reader import BagError, format_index, index_bag
from mtl_training.data.sources.folder import IMAGE_FORMATS

_TOPIC_OPTIONS = ("rgb-topic", "depth-topic", "rgb-info-topic", "depth-info-topic", "label-topic")


def _bag_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="bag_command", required=True, metavar="{index,extract}")
    idx = sub.add_parser("index", help="topics, types, counts, rates, time span, suggested topics")
    idx.add_argument("bags", nargs="+", type=Path, help=".bag / .db3 / .mcap files or bag folders")
    idx.add_argument("--json", type=Path, default=None, help="also write the index as JSON")
    ext = sub.add_parser("extract", help="synced, registered, metric frames -> folder dataset")
    ext.add_argument("bags", nargs="+", type=Path, help=".bag / .db3 / .mcap files or bag folders")
    ext.add_argument("--out", required=True, type=Path, help="dataset folder (created/extended)")
    for name in _TOPIC_OPTIONS:
        ext.add_argument(f"--{name}", default=None, help=f"bag.{name.replace('-', '_')}")
    ext.add_argument("--tolerance", type=float, default=None,
                     help="max colour/depth stamp difference, s (bag.sync_tolerance)")
    ext.add_argument("--min-gap", type=float, default=None, help="s between frames (bag.min_gap)")
    ext.add_argument("--stride", type=int, default=None, help="keep every N-th pair (bag.stride)")
    ext.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1),
                     help="threads registering and encoding frames (default: min(4, cores))")
    ext.add_argument("--png-compression", type=int, default=PNG_COMPRESSION, choices=range(10),
                     metavar="0..9", help="zlib level of the PNGs, all lossless (default "
                     f"{PNG_COMPRESSION}: fastest, ~1.7x the size of level 6)")
    ext.add_argument("--image-format", choices=IMAGE_FORMATS, default="png",
                     help="png (default: any image tool opens them) or npy (raw arrays, "
                          "lossless: the fastest to write and to train from; folder format/3)")
    for action in (idx, ext):  # the sub-parsers need the common options too
        add_config_options(action)


def bag_config_from_args(args: argparse.Namespace) -> tuple[BagConfig, float]:
    """(bag section of --config/--set with the topic/sync flags applied, data.max_depth)."""
    cfg = load_config(args.config, args.set)
    b = cfg.bag
    for attr in ("rgb_topic", "depth_topic", "rgb_info_topic", "depth_info_topic", "label_topic"):
        if getattr(args, attr, None) is not None:
            setattr(b, attr, getattr(args, attr))
    if getattr(args, "tolerance", None) is not None:
        b.sync_tolerance = args.tolerance
    if getattr(args, "min_gap", None) is not None:
        b.min_gap = args.min_gap
    if getattr(args, "stride", None) is not None:
        b.stride = args.stride
    if b.sync_tolerance < 0 or b.min_gap < 0 or b.stride < 1:
        raise BagError("bag.sync_tolerance and bag.min_gap must be >= 0 and bag.stride >= 1")
    return b, cfg.data.max_depth


def _run_bag(args: argparse.Namespace) -> int:
    if args.bag_command == "index":
        out = []
        for bag in args.bags:
            idx = index_bag(bag)
            print(format_index(idx))
            out.append(idx.to_dict())
        if args.json:
            args.json.write_text(json.dumps(out, indent=1))
        return 0
    cfg, max_depth = bag_config_from_args(args)
    if args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    reports, totals = extract(args.bags, args.out, cfg, max_depth, progress=sys.stderr.isatty(),
                              workers=args.workers, png_compression=args.png_compression,
                              image_format=args.image_format)
    for r in reports:
        print(r.summary())
    split = (f"train {totals['train']}, val {totals['val']}" if totals["held_out"] else
             "too few for a held-out split: train and val read all of them")
    print(f"dataset {args.out}: {totals['frames']} frames ({split}); wrote "
          f"{totals['written']} in {totals['seconds']:.1f} s ({totals['fps']:.1f} frames/s, "
          f"{totals['workers']} workers)")
    return 0


BAG = Command("bag", "index or extract recorded rosbags (.bag, .db3, .mcap)", _bag_args, _run_bag)
