"""Several data sources in one run (`data.sources`, docs/training.md).

Each source is built exactly as a single-source run builds it (build_sources +
datasets_from_sources), so its own root, label fractions, depth range, camera and pseudo-labels
apply. Its segmentation ground truth is remapped into the run's classes by its class map at the
frame source, before label hiding and augmentation; ids the map does not name become 255
(ignored). Pseudo-labels are not remapped: a teacher of this run writes them in the run's classes.

Sampling rule: a source's frames are drawn with total probability proportional to its `weight`,
spread evenly over its frames. With equal weights each source fills an equal share of an epoch
whatever its size; weight 2 doubles a source's share relative to a weight-1 source.

A teacher learns only from frames carrying its input and its target (METHOD.md A), so its run
passes `required=("seg", "depth")`: each source keeps those frames, and a source without one
(a robot's bag before any frame is labelled) is left out of training and validation, named in
`MultiSourceData.skipped`. Its identity stays in the run's, so labels imported into it later
change the run's data (a resume notices).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, WeightedRandomSampler

from mtl_perception.core.contracts import FrameSource, RawFrame
from mtl_perception.core.preprocess import IMAGENET_STATS, InputStats
from mtl_training.config import ConfigError, DataConfig
from mtl_training.data import build_sources, datasets_from_sources
from mtl_training.data.datasets import LabelledView, MultiTaskDataset, PseudoLabels
from mtl_training.data.identity import dataset_identity
from mtl_training.source_config import IGNORE, SourceSpec, source_specs


def resolve_class_map(class_map: dict[int | str, int | str], source: list[str],
                      run: list[str], key: str) -> dict[int, int]:
    """Class names of a map turned into ids: keys among the source's classes, values among the
    run's (the first source's); a name that is neither refuses in one line naming `key`."""
    def one(value: int | str, names: list[str], what: str) -> int:
        if isinstance(value, int):
            return value
        if value not in names:
            raise ConfigError(f"{key}: {value!r} is not a class {what} "
                              f"(classes: {', '.join(names)})")
        return names.index(value)
    return {one(s, source, "of the source"): one(t, run, "of the run")
            for s, t in class_map.items()}


class RemappedSource:
    """A frame source whose segmentation ids pass through a class map (unmapped -> 255)."""

    def __init__(self, base: FrameSource, class_map: dict[int, int]) -> None:
        self.base = base
        self.info = base.info
        self.table = np.full(65536, IGNORE, dtype=np.uint8)
        for src, dst in class_map.items():
            self.table[src] = dst

    def __len__(self) -> int:
        return len(self.base)

    def __getattr__(self, name: str) -> Any:  # identity/labels read the base's own fields
        return getattr(self.base, name)

    def frame(self, index: int) -> RawFrame:
        raw = self.base.frame(index)
        if raw.seg is None:
            return raw
        return replace(raw, seg=self.table[raw.seg.astype(np.int64)])


@dataclass
class MultiSourceData:
    """The run's data: one training set over every source, one validation set per source."""

    specs: list[SourceSpec]  # the sources that train, in order
    train: ConcatDataset
    val: dict[str, MultiTaskDataset]
    identities: list[dict[str, Any]]  # every listed source's, trained or not
    skipped: list[str] = field(default_factory=list)  # one line per source left out

    def sample_weights(self) -> torch.Tensor:
        """Per training frame: its source's weight / that source's frame count."""
        parts = [torch.full((len(ds),), spec.weight / max(len(ds), 1), dtype=torch.double)
                 for spec, ds in zip(self.specs, self.train.datasets, strict=True)]
        return torch.cat(parts)

    def sampler(self, num_samples: int | None = None, seed: int = 0) -> WeightedRandomSampler:
        """Draws `num_samples` (default: the training set's size) frames by the sampling rule."""
        gen = torch.Generator().manual_seed(seed)
        return WeightedRandomSampler(self.sample_weights(), num_samples or len(self.train),
                                     replacement=True, generator=gen)


def build_multisource(cfg: DataConfig, *, num_classes: int | None = None,
                      pseudo: Sequence[PseudoLabels | None] | None = None,
                      open_pseudo: Callable[[str], PseudoLabels] | None = None,
                      stats: InputStats = IMAGENET_STATS,
                      opened: Sequence[tuple[FrameSource, FrameSource]] | None = None,
                      required: Sequence[str] = ()) -> MultiSourceData:
    """Every source of `cfg` (data.sources, or the single top-level one) built and combined.
    `pseudo`: per source, its pseudo-label store; None: each entry's `pseudo_labels` folder,
    opened by `open_pseudo` (the trainer passes PseudoLabelStore: pseudo/ imports data/, so
    data/ takes the opener instead of importing it). `opened`: per source, its (train, val)
    frame sources already built from its entry (a study shares its rendered worlds).
    `required`: labels every training frame must carry (a teacher's input and target); a
    source without such a frame is skipped, and ConfigError if every source is."""
    specs = source_specs(cfg, num_classes=num_classes)
    if opened is not None and len(opened) != len(specs):
        raise ValueError(f"build_multisource: {len(opened)} opened sources for {len(specs)}")
    trains, vals, identities, kept, skipped = [], {}, [], [], []
    run_classes: list[str] = []
    for i, spec in enumerate(specs):
        train_src, val_src = opened[i] if opened is not None else build_sources(spec.data)
        run_classes = run_classes or list(train_src.info.classes)  # the first source's
        identity = dataset_identity(train_src)  # the files', not the remapped view's
        if spec.class_map is not None:
            spec.class_map = resolve_class_map(spec.class_map, list(train_src.info.classes),
                                               run_classes, f"data.sources[{i}].class_map")
            train_src = RemappedSource(train_src, spec.class_map)
            val_src = RemappedSource(val_src, spec.class_map)
        store = pseudo[i] if pseudo is not None else None
        if store is None and spec.data.pseudo_labels:  # the entry's own pseudo-label folder
            if open_pseudo is None:
                raise ConfigError(f"data.sources[{i}].pseudo_labels: no pseudo-label reader "
                                  "given (build_multisource(..., open_pseudo=PseudoLabelStore))")
            store = open_pseudo(spec.data.pseudo_labels)
        train, val = datasets_from_sources(spec.data, (train_src, val_src), store, stats=stats)
        identities.append({"label": spec.label, "weight": spec.weight,
                           "class_map": spec.class_map,
                           "identity": identity})
        # labelled_only: a few labelled frames at their own share of every epoch
        tasks = tuple(dict.fromkeys((*(("seg",) if spec.labelled_only else ()), *required)))
        if tasks:
            try:
                train = LabelledView(train, tasks)
            except ValueError:
                if not required:
                    raise ConfigError(f"data.sources[{i}].labelled_only: none of its training "
                                      "frames keeps a segmentation label") from None
                skipped.append(f"data.sources[{i}] ({spec.label}): no training frame carries "
                               f"{' and '.join(tasks)}, so it is left out")
                continue
        trains.append(train)
        vals[spec.label] = val
        kept.append(spec)
    if not kept:
        raise ConfigError(f"data.sources: no source has a training frame carrying "
                          f"{' and '.join(required)} (a teacher learns from frames with its "
                          "input and its target): label some frames first (mtl-train labels "
                          "import)")
    return MultiSourceData(kept, ConcatDataset(trains), vals, identities, skipped)


class MultiSourceTrainSet(ConcatDataset):
    """The sources' training sets as one, with what the trainer reads of a MultiTaskDataset:
    `info` (the first source's: it names the run's classes, so list the native one first),
    `stats`, `set_epoch`, and the sampling rule's per-frame weights. `epoch_frames`: frames
    drawn per epoch (default: every source's frames together); a study comparing runs over
    different sources fixes it, so that every run takes the same optimisation steps."""

    def __init__(self, data: MultiSourceData, epoch_frames: int | None = None) -> None:
        super().__init__(data.train.datasets)
        first = data.train.datasets[0]
        self.info = first.info
        self.stats = getattr(first, "stats", None) or first.base.stats  # a LabelledView's base
        self.weights = data.sample_weights()
        self.epoch_frames = epoch_frames or len(self)

    def set_epoch(self, epoch: int) -> None:
        for ds in self.datasets:
            ds.set_epoch(epoch)

    def draw(self, generator: torch.Generator) -> torch.Tensor:
        """One epoch's order: epoch_frames frames drawn by the sampling rule (with
        replacement)."""
        return torch.multinomial(self.weights, self.epoch_frames, replacement=True,
                                 generator=generator)


def mean_metrics(per_source: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """The mean over sources of every scalar metric all of them report (what chooses best.pt),
    with each source's full metrics under `sources`."""
    out: dict[str, Any] = {}
    tasks = set.intersection(*(set(m) for m in per_source.values()))
    for task in sorted(tasks):
        keys = set.intersection(*(set(m[task]) for m in per_source.values()))
        means = {}
        for key in sorted(keys):
            values = [m[task][key] for m in per_source.values()]
            if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                means[key] = float(np.mean(values))
        out[task] = means
    out["sources"] = per_source
    return out
