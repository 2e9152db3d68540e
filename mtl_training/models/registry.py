"""`build_model(cfg)`: the one way to make a network, used by training, export and the node.

The artifact stores the ModelConfig as JSON; the node rebuilds the network from it through this
registry and loads weights, so no code ever travels inside a model file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from torch import nn

from mtl_training.config import ConfigError, ModelConfig, from_dict
from mtl_training.models.student import MultiTaskNet

_BUILDERS: dict[str, Callable[[ModelConfig], nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[[ModelConfig], nn.Module]],
                                            Callable[[ModelConfig], nn.Module]]:
    def wrap(fn: Callable[[ModelConfig], nn.Module]) -> Callable[[ModelConfig], nn.Module]:
        _BUILDERS[name] = fn
        return fn

    return wrap


@register_model("student")
def _student(cfg: ModelConfig) -> nn.Module:
    return MultiTaskNet(cfg.encoder, cfg.num_classes, tuple(cfg.tasks), cfg.decoder_channels,
                        cfg.decoder_convs, cfg.max_depth)


@register_model("single_task")
def _single_task(cfg: ModelConfig) -> nn.Module:
    if len(cfg.tasks) != 1:
        raise ConfigError(f"model.arch single_task needs exactly one task, got {cfg.tasks}")
    return _student(cfg)


def model_config(cfg: ModelConfig | dict[str, Any]) -> ModelConfig:
    return cfg if isinstance(cfg, ModelConfig) else from_dict(ModelConfig, cfg, prefix="model")


def build_model(cfg: ModelConfig | dict[str, Any]) -> nn.Module:
    """Build the network named by cfg.arch; unknown names fail with the list of known ones."""
    mc = model_config(cfg)
    _ensure_optional_archs()
    if mc.arch not in _BUILDERS:
        raise ConfigError(f"Unknown model.arch '{mc.arch}' "
                          f"(available: {', '.join(sorted(_BUILDERS))})")
    return _BUILDERS[mc.arch](mc)


def model_config_dict(cfg: ModelConfig) -> dict[str, Any]:
    return asdict(cfg)


def _ensure_optional_archs() -> None:
    """Import modules that register further architectures (teacher) without a cycle at import."""
    import importlib

    for module in ("mtl_training.models.teacher",):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
