"""Styles of the procedural world: the same kind of rooms seen by another camera, under other
light, built from other materials (`WorldConfig.style`, `data.style`).

Why: a robot's recordings never look like the labelled benchmark a user starts from. The
cross-domain study (`mtl-train experiment domain`) needs a second domain whose labels follow the
same rules (same classes, same geometry of furniture) while its pixels differ the way a robot's
do: a camera mounted low and level with a wider lens, warm artificial light with a colour cast
and underexposure, duller materials with fewer textures, a noisier colour sensor. The depth
sensor model is the same, as it is when a user's robot carries the benchmark's kind of sensor.

`standard` reproduces the world exactly as it was before styles existed (bit-identical frames);
another style also draws its rooms from another random stream, so the two domains never share
a room.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorldStyle:
    """What a style changes. Ranges are (low, high) of uniform draws per frame."""

    name: str
    stream: tuple[int, ...]  # appended to a frame's (seed, index) random stream
    hfov_deg: float  # the lens, when WorldConfig.hfov_deg leaves it to the style
    camera_height: tuple[float, float]  # metres above the floor
    pitch_deg: tuple[float, float]  # looking down (positive)
    colour_gain: tuple[float, float, float]  # white balance of the light (R, G, B)
    exposure: tuple[float, float]
    ambient: tuple[float, float]  # share of light that is ambient
    saturation: tuple[float, float]  # of every material's base colour
    value: tuple[float, float]  # brightness of every material's base colour
    plain: float  # probability a material is untextured (0: the standard pattern draw)
    rgb_noise: float  # std of colour noise on the 0..255 scale, when WorldConfig leaves it


STANDARD = WorldStyle(
    name="standard", stream=(), hfov_deg=70.0, camera_height=(0.8, 1.8), pitch_deg=(2.0, 22.0),
    colour_gain=(1.0, 1.0, 1.0), exposure=(0.85, 1.1), ambient=(0.3, 0.5),
    saturation=(0.0, 0.65), value=(0.25, 0.95), plain=0.0, rgb_noise=4.0)

# A wheeled robot's camera in a lit building: 0.3-0.7 m up, looking nearly level through a wide
# lens, tungsten-warm and darker light, muted paint and fewer patterns, a cheaper sensor.
ROBOT = WorldStyle(
    name="robot", stream=(7,), hfov_deg=86.0, camera_height=(0.3, 0.7), pitch_deg=(-4.0, 10.0),
    colour_gain=(1.15, 0.98, 0.72), exposure=(0.7, 1.0), ambient=(0.2, 0.4),
    saturation=(0.0, 0.35), value=(0.3, 0.8), plain=0.5, rgb_noise=7.0)

STYLES: dict[str, WorldStyle] = {s.name: s for s in (STANDARD, ROBOT)}


def world_style(name: str) -> WorldStyle:
    """The style called `name`; ValueError listing the styles otherwise."""
    if name not in STYLES:
        raise ValueError(f"WorldConfig: unknown style {name!r} (available: {', '.join(STYLES)})")
    return STYLES[name]
