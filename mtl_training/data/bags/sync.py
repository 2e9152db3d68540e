"""Pairing colour with depth (and label) frames by header stamp, from stamps alone.

Planning works on integer nanosecond stamps read from the raw bytes, before any message is
decoded, so out-of-order stamps, strides and gaps cost nothing; decoding then fetches only what a
planned pair needs and yields a frame as soon as all its parts have arrived (`ready`).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass


def nearest(sorted_stamps: list[int], t: int, tol: int) -> int | None:
    """The stamp in `sorted_stamps` nearest to `t`, if within `tol` ns (ties: the earlier)."""
    i = bisect.bisect_left(sorted_stamps, t)
    best = min((sorted_stamps[j] for j in (i - 1, i) if 0 <= j < len(sorted_stamps)),
               key=lambda s: abs(s - t), default=None)
    return best if best is not None and abs(best - t) <= tol else None


def plan_pairs(colour: list[int], depth: list[int], tolerance_s: float, min_gap_s: float = 0.0,
               stride: int = 1) -> tuple[list[tuple[int, int]], int, int]:
    """Pair each colour stamp with the nearest depth stamp within tolerance.

    Stamps may arrive out of order; both lists are sorted here. Returns (pairs sorted by colour
    stamp, colour frames without depth, pairs dropped by min_gap/stride).
    """
    colour = sorted(set(colour))
    depth = sorted(set(depth))
    tol = round(tolerance_s * 1e9)
    pairs, unpaired = [], 0
    for c in colour:
        best = nearest(depth, c, tol)
        if best is None:
            unpaired += 1
        else:
            pairs.append((c, best))
    kept, last = [], None
    gap = round(min_gap_s * 1e9)
    for c, d in pairs:
        if last is None or c - last >= gap:
            kept.append((c, d))
            last = c
    kept = kept[::max(1, stride)]
    return kept, unpaired, len(pairs) - len(kept)


def plan_frames(colour: list[int], depth: list[int] | None, tolerance_s: float,
                min_gap_s: float = 0.0, stride: int = 1, keep_unpaired: bool = False
                ) -> tuple[list[tuple[int, int | None]], int, int]:
    """The frames to read: (colour stamp, depth stamp or None) sorted by colour stamp.

    Without a depth topic (`depth` None) every colour frame is a frame of its own. With one,
    colour frames without depth in tolerance are dropped, or kept with depth None when
    `keep_unpaired` (replay publishes every colour frame; training keeps only pairs). Returns
    (frames, colour frames without depth, pairs dropped by min_gap/stride).
    """
    if depth is None:
        only, _, thinned = plan_pairs(colour, colour, 0.0, min_gap_s, stride)
        return [(c, None) for c, _ in only], 0, thinned
    pairs, unpaired, thinned = plan_pairs(colour, depth, tolerance_s, min_gap_s, stride)
    frames: list[tuple[int, int | None]] = list(pairs)
    if keep_unpaired:
        paired = {c for c, _ in pairs}
        every, _, _ = plan_pairs(colour, colour, 0.0, min_gap_s, stride)
        frames = sorted(frames + [(c, None) for c, _ in every if c not in paired])
    return frames, unpaired, thinned


def ready(todo: Mapping[int, int | None], colour: Mapping[int, object],
          depth: Mapping[int, object], labels: Mapping[int, object],
          label_for: Mapping[int, int | None]) -> list[int]:
    """Colour stamps in `colour` whose planned depth and label have arrived (buffers by stamp)."""
    out = []
    for c in list(colour):
        d = todo.get(c)
        if d is not None and d not in depth:
            continue
        lab = label_for.get(c)
        if lab is not None and lab not in labels:
            continue
        out.append(c)
    return out


@dataclass
class StampCheck:
    """The usable stamps of one topic, and what was set aside to get them."""

    stamps: list[int]  # unique, in bag order (the first message of each stamp)
    zero: int = 0  # messages stamped 0 that were set aside (`drop_zero`)
    duplicates: int = 0  # messages repeating an earlier stamp of the same topic


def check_stamps(stamps: list[int], drop_zero: bool = True) -> StampCheck:
    """Set aside stamp-0 messages (when `drop_zero`) and repeats; keep the first of each stamp.

    A header stamp of 0 means the driver had no clock: such a message cannot be placed in time,
    and pairing it would match it with whatever else is stamped 0. A repeated stamp on one topic
    (a re-sent or re-stamped message) would make two frames share one id; the first one in bag
    order is kept so re-reading the bag always picks the same message. Both are counted so the
    report can say what was left out.
    """
    seen: set[int] = set()
    out = StampCheck([])
    for s in stamps:
        if drop_zero and s == 0:
            out.zero += 1
        elif s in seen:
            out.duplicates += 1
        else:
            seen.add(s)
            out.stamps.append(s)
    return out


def clockless(stamps: list[int]) -> bool:
    """True when a topic has messages and every header stamp is 0 (a driver without a clock)."""
    return bool(stamps) and not any(stamps)
