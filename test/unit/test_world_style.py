"""The procedural world's second style (`data.style: robot`), the cross-domain study's target:
the standard world is untouched by it, the robot world really is another domain (other rooms,
camera, light), and every place a style passes through (config, sources, identities, pseudo-label
provenance) keeps the two apart."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from mtl_training.config import WORLD_STYLES, ConfigError, DataConfig, load_config
from mtl_training.data.identity import dataset_identity, describe_identity, same_dataset
from mtl_training.data.sources.synthetic import WorldConfig, render_frame, source
from mtl_training.data.sources.world_style import ROBOT, STANDARD, STYLES
from mtl_training.pseudo.provenance import is_cross_domain, teacher_data

SMALL = WorldConfig(height=48, width=64)
ROBOT_SMALL = WorldConfig(height=48, width=64, style="robot")
# render_frame(3, 11, 48x64) before styles existed: a style must never change the standard world
STANDARD_SHA256 = "c0abb8abea609b7a685795a0232b63d327697fe66677022b0c38f1726c57ed2a"


def test_the_standard_world_is_bit_identical_to_the_world_before_styles() -> None:
    f = render_frame(3, 11, SMALL)
    digest = hashlib.sha256(f.rgb.tobytes() + f.seg.tobytes() + f.depth.tobytes()).hexdigest()
    assert digest == STANDARD_SHA256
    assert SMALL.fov_deg == 70.0 and SMALL.colour_noise == 4.0


def test_the_robot_world_has_other_rooms_a_low_level_camera_and_warm_dim_light() -> None:
    std = [render_frame(0, i, SMALL) for i in range(12)]
    rob = [render_frame(0, i, ROBOT_SMALL) for i in range(12)]
    # another random stream: frame i of the robot world is not frame i of the standard one
    assert all(not np.array_equal(a.seg, b.seg) for a, b in zip(std, rob, strict=True))
    heights = np.array([f.T_world_cam[2, 3] for f in rob])
    assert heights.min() >= ROBOT.camera_height[0] and heights.max() <= ROBOT.camera_height[1]
    assert min(f.T_world_cam[2, 3] for f in std) >= STANDARD.camera_height[0]
    # the wider lens: a shorter focal length at the same image size
    assert rob[0].K[0, 0] < std[0].K[0, 0]
    assert ROBOT_SMALL.fov_deg == ROBOT.hfov_deg

    def mean_rgb(frames: list) -> np.ndarray:
        return np.mean([f.rgb.reshape(-1, 3).mean(0) for f in frames], axis=0)

    s, r = mean_rgb(std), mean_rgb(rob)
    assert r.sum() < s.sum()  # dimmer
    assert r[0] / r[2] > 1.2 * (s[0] / s[2])  # warmer: red over blue
    # the same classes by the same rules: every robot frame is fully labelled with >= 3 classes
    assert all(len(np.unique(f.seg)) >= 3 for f in rob)


def test_an_unknown_style_is_refused_naming_the_styles() -> None:
    with pytest.raises(ValueError, match=r"unknown style 'sunny' .*standard, robot"):
        WorldConfig(style="sunny")
    with pytest.raises(ConfigError, match=r"data\.style"):
        load_config(None, ["data.style=sunny"])
    assert tuple(STYLES) == WORLD_STYLES  # the config's choices are the styles that exist


def test_data_style_reaches_the_source_and_its_identity() -> None:
    std = source(DataConfig(train_frames=4, val_frames=2), "train")
    rob = source(DataConfig(train_frames=4, val_frames=2, style="robot"), "train")
    assert rob.cfg.style == "robot" and std.cfg.style == "standard"
    ids = dataset_identity(std), dataset_identity(rob)
    # the standard identity is the one recorded before styles existed (no key): old pseudo-label
    # folders and checkpoints still match; the robot world is another dataset
    assert "style" not in ids[0] and ids[1]["style"] == "robot"
    assert not same_dataset(*ids)
    assert "robot style" in describe_identity(ids[1])


def test_a_teacher_of_the_standard_world_labelling_the_robot_world_is_cross_domain() -> None:
    rob = dataset_identity(source(DataConfig(train_frames=4, style="robot"), "train"))
    std = dataset_identity(source(DataConfig(train_frames=4), "train"))
    teacher_std = teacher_data({"data": {"name": "synthetic", "seed": 0, "style": "standard"}})
    teacher_old = teacher_data({"data": {"name": "synthetic", "seed": 0}})  # before styles
    assert is_cross_domain(teacher_std, rob) and is_cross_domain(teacher_old, rob)
    assert not is_cross_domain(teacher_std, std) and not is_cross_domain(teacher_old, std)
