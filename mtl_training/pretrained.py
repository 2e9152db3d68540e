"""Local ImageNet weights for an encoder: training-time only, never needed by export or the node.

The artifact carries the trained weights; this reads a torchvision/timm state_dict (a
.safetensors file, or a tensors-only torch file loaded with weights_only=True, never unpickling
code) into an encoder before training starts.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from mtl_perception.core.models.backbones import ResNet
from mtl_training.checkpoint import first_sentence
from mtl_training.config import ConfigError

log = logging.getLogger("mtl_training.trainer")


class EncoderWeightsError(ValueError):
    """A pretrained encoder file is missing, unreadable or does not fit the encoder."""


def load_encoder_weights(encoder: ResNet, path: str | Path) -> dict[str, list[str]]:
    """Load an ImageNet state_dict (torchvision or timm names) from a local file.

    Accepts .safetensors or a tensors-only torch file (loaded with weights_only=True, never
    unpickling code). Classifier keys (fc.*) are expected extras. Returns the missing and unexpected
    keys so callers can report them; raises when nothing matches, which means the wrong file.
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
        elif k in own and k == "conv1.weight" and v.ndim == 4 and own[k].shape[1] != v.shape[1]:
            # another modality: average the RGB filters over the input channels
            usable[k] = v.mean(dim=1, keepdim=True).expand_as(own[k]).clone()
    if not usable:
        raise EncoderWeightsError(f"{p}: no parameter matches a {type(encoder).__name__} encoder")
    encoder.load_state_dict(usable, strict=False)
    missing = sorted(set(own) - set(usable))
    unexpected = sorted(k for k in state if k not in usable)
    return {"missing": missing, "unexpected": unexpected}


def load_pretrained_encoder(model: nn.Module, path: str) -> dict[str, list[str]]:
    """Initialise the model's encoder from a local ImageNet state_dict and log what matched.

    Training-time only: the artifact carries the trained weights, so neither export nor the node
    ever needs this file. A teacher's auxiliary branch (`aux_encoder`) gets the same weights, its
    conv1 averaging the RGB filters over its input channels.
    """
    try:
        if isinstance(getattr(model, "aux_encoder", None), nn.Module):
            rgb = load_encoder_weights(model.encoder, path)
            aux = load_encoder_weights(model.aux_encoder, path)
            report = {"missing": rgb["missing"] + [f"aux_encoder.{k}" for k in aux["missing"]],
                      "unexpected": rgb["unexpected"]}
        elif isinstance(getattr(model, "encoder", None), nn.Module):
            report = load_encoder_weights(model.encoder, path)
        else:
            raise ConfigError(f"model.encoder_weights is set but {type(model).__name__} has no "
                              "encoder to load it into")
    except EncoderWeightsError as exc:  # missing or unreadable file: name the config key
        raise ConfigError(f"model.encoder_weights: {first_sentence(exc)}") from exc
    log.info("encoder weights %s: %d missing keys%s, %d unexpected keys%s", path,
             len(report["missing"]), _preview(report["missing"]), len(report["unexpected"]),
             _preview(report["unexpected"]))
    return report


def _preview(keys: list[str], n: int = 6) -> str:
    if not keys:
        return ""
    more = f", ... (+{len(keys) - n})" if len(keys) > n else ""
    return " (" + ", ".join(keys[:n]) + more + ")"
