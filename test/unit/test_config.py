import pytest

from mtl_training.config import ConfigError, ExperimentConfig, load_config, save_config


def test_yaml_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("data:\n  seg_fraction: 0.1\ntrain:\n  epochs: 3\n")
    cfg = load_config(f, ["train.epochs=5", "model.tasks=[seg]", "data.root=null"])
    assert cfg.data.seg_fraction == 0.1
    assert cfg.train.epochs == 5
    assert cfg.model.tasks == ["seg"]
    assert cfg.data.root is None


@pytest.mark.parametrize("override", ["train.epochz=3", "nope.x=1", "train.epochs=abc", "train"])
def test_bad_overrides_name_the_key(override):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert override.split("=")[0].split(".")[-1] in str(err.value) or "key=value" in str(err.value)


def test_unknown_yaml_key_names_file_and_key(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("train:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*train.lrr"):
        load_config(f)


def test_saved_config_round_trips(tmp_path):
    cfg = load_config(None, ["loss.depth_weight=0.5", "stages={teacher: {train: {epochs: 2}}}"])
    save_config(cfg, tmp_path / "c.yaml")
    again = load_config(tmp_path / "c.yaml")
    assert again == cfg
    assert again.for_stage("teacher").train.epochs == 2
    assert again.for_stage("teacher").train.stage == "teacher"
    assert isinstance(again, ExperimentConfig)


def test_out_of_range_value_names_file_key_and_allowed_values(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("train:\n  batch_size: 0\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: train\.batch_size: must be an integer in "
                                          r"\[1, \d+\], got 0"):
        load_config(f)
    with pytest.raises(ConfigError, match=r"^data\.seg_fraction: must be a number in \[0, 1\]"):
        load_config(None, ["data.seg_fraction=2"])
