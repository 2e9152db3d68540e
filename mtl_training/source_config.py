"""`data.sources`: several data sources in one run, each resolved to its own DataConfig.

Each entry is a partial DataConfig plus `weight` (sampling weight, default 1), `class_map`
(source class id or name -> run class id or name; unmapped ids become 255, ignored) and
`label` (the prefix of its validation metrics; default its dataset name, numbered when two
share one). Keys an entry
does not set inherit the top-level `data` keys, so height, width and augmentation stay shared.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from mtl_training.config import ConfigError, DataConfig, from_dict

IGNORE = 255
EXTRA_KEYS = ("weight", "class_map", "label", "labelled_only")


@dataclass
class SourceSpec:
    """One resolved source: its own DataConfig, sampling weight, class map and metrics label."""

    label: str
    data: DataConfig
    weight: float = 1.0
    class_map: dict[int | str, int | str] | None = None  # names until resolve_class_map
    labelled_only: bool = False  # train on the frames keeping segmentation ground truth only


def _class_id(value: object, key: str, what: str, num_classes: int | None) -> int | str:
    """A class id from a YAML key or value, or a class name (resolved once the sources' class
    names are known: multisource.resolve_class_map)."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: {value!r} is not a class {what}")
    try:
        cid = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        if isinstance(value, str) and value.strip():
            return value
        raise ConfigError(f"{key}: {value!r} is not a class {what}") from None
    upper = num_classes if (num_classes and what == "of the run") else IGNORE + 1
    if cid < 0 or cid >= upper or (what == "of the run" and cid == IGNORE):
        allowed = f" (classes: 0..{upper - 1})" if what == "of the run" else ""
        raise ConfigError(f"{key}: {value!r} is not a class {what}{allowed}")
    return cid


def source_specs(data: DataConfig, *, num_classes: int | None = None,
                 prefix: str = "data") -> list[SourceSpec]:
    """The run's sources: `data.sources` resolved, or the single top-level source (weight 1,
    no class map). Raises ConfigError in one line naming `data.sources[i].<key>`."""
    if not data.sources:
        base = DataConfig(**{**asdict(data), "sources": None})
        return [SourceSpec(base.name, base)]
    inherited = {k: v for k, v in asdict(data).items() if k != "sources"}
    specs: list[SourceSpec] = []
    for i, entry in enumerate(data.sources):
        key = f"{prefix}.sources[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{key}: expected a mapping, got {entry!r}")
        if "sources" in entry:
            raise ConfigError(f"{key}.sources: a source cannot list sources")
        own = {k: v for k, v in entry.items() if k not in EXTRA_KEYS}
        cfg = from_dict(DataConfig, {**inherited, **own}, prefix=key)
        try:
            weight = float(entry.get("weight", 1.0))
        except (TypeError, ValueError):
            raise ConfigError(f"{key}.weight: expected a number, got {entry['weight']!r}") from None
        if not weight > 0:
            raise ConfigError(f"{key}.weight: must be > 0, got {entry['weight']!r}")
        raw_map = entry.get("class_map")
        class_map = None
        if raw_map is not None:
            if not isinstance(raw_map, dict):
                raise ConfigError(f"{key}.class_map: expected a mapping, got {raw_map!r}")
            class_map = {_class_id(s, f"{key}.class_map", "id of the source", None):
                         _class_id(t, f"{key}.class_map", "of the run", num_classes)
                         for s, t in raw_map.items()}
        label = str(entry.get("label", cfg.name))
        only = entry.get("labelled_only", False)
        if not isinstance(only, bool):
            raise ConfigError(f"{key}.labelled_only: expected true or false, got {only!r}")
        specs.append(SourceSpec(label, cfg, weight, class_map, only))
    labels = [s.label for s in specs]
    for i, spec in enumerate(specs):
        if labels.count(spec.label) > 1 and "label" not in data.sources[i]:
            spec.label = f"{spec.label}{i}"
    if len({s.label for s in specs}) != len(specs):
        raise ConfigError(f"{prefix}.sources: two sources share the label "
                          f"(labels: {', '.join(s.label for s in specs)})")
    return specs
