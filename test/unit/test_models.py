import pytest
import torch

from mtl_perception.core.models.backbones import build_encoder
from mtl_perception.core.models.registry import ModelSpec, build_model
from mtl_training.config import ConfigError, ModelConfig
from mtl_training.pretrained import EncoderWeightsError, load_encoder_weights


@pytest.mark.parametrize("size", [(64, 96), (50, 70)])
def test_student_output_shapes_and_positive_depth(size):
    model = build_model(ModelSpec(num_classes=5, decoder_channels=8, decoder_convs=1)).eval()
    out = model(torch.randn(2, 3, *size))
    assert out["seg"].shape == (2, 5, *size)
    assert out["depth"].shape == (2, 1, *size)
    assert (out["depth"] > 0).all() and (out["depth"] < 10.0).all()


def test_single_task_and_unknown_arch():
    m = build_model(ModelSpec(arch="single_task", tasks=["depth"], decoder_channels=8))
    assert set(m.eval()(torch.randn(1, 3, 32, 32))) == {"depth"}
    with pytest.raises(ConfigError, match=r"Unknown model\.arch 'nope'"):
        ModelConfig(arch="nope").spec()


@pytest.mark.parametrize("name,blocks", [("resnet18", [2, 2, 2, 2]), ("resnet34", [3, 4, 6, 3]),
                                         ("resnet50", [3, 4, 6, 3])])
def test_encoder_uses_torchvision_names(name, blocks):
    keys = set(build_encoder(name).state_dict())
    for i, n in enumerate(blocks, start=1):
        assert f"layer{i}.{n - 1}.bn2.running_mean" in keys
    assert {"conv1.weight", "bn1.weight", "layer2.0.downsample.0.weight",
            "layer2.0.downsample.1.running_var"} <= keys
    assert not any(k.startswith("fc.") for k in keys)


def test_torchvision_state_dict_loads_with_report(tmp_path):
    src = build_encoder("resnet34")
    state = {k: torch.randn_like(v) if v.is_floating_point() else v
             for k, v in src.state_dict().items()}
    state["fc.weight"] = torch.randn(1000, 512)
    state["fc.bias"] = torch.randn(1000)
    path = tmp_path / "resnet34.pth"
    torch.save(state, path)
    dst = build_encoder("resnet34")
    report = load_encoder_weights(dst, path)
    assert report["missing"] == []
    assert report["unexpected"] == ["fc.bias", "fc.weight"]
    assert torch.equal(dst.state_dict()["layer3.5.conv2.weight"], state["layer3.5.conv2.weight"])
    with pytest.raises(EncoderWeightsError, match="not found"):
        load_encoder_weights(dst, tmp_path / "missing.pth")
