"""Task-transfer networks: shapes, any input size, and that they stay out of the artifact."""

import pytest
import torch

from mtl_perception.core.models.transfer import TaskTransfer, TransferNet


@pytest.mark.parametrize("size", [(48, 64), (30, 45)])
def test_transfer_net_keeps_size(size):
    net = TransferNet(3, 5, channels=4)
    assert net(torch.randn(2, 3, *size)).shape == (2, 5, *size)


def test_task_transfer_maps_each_prediction_to_the_other_task():
    torch.manual_seed(0)
    tt = TaskTransfer(num_classes=4, max_depth=8.0, channels=4)
    pred = {"seg": torch.randn(2, 4, 24, 32, requires_grad=True),
            "depth": (torch.rand(2, 1, 24, 32) * 8).requires_grad_()}
    out = tt(pred)
    assert out["seg"].shape == (2, 4, 24, 32)  # depth -> seg logits
    assert out["depth"].shape == (2, 1, 24, 32)  # seg -> depth, metres
    assert (out["depth"] > 0).all() and (out["depth"] < 8.0).all()
    # the transferred seg depends on the depth prediction only, and vice versa
    out["seg"].sum().backward()
    assert pred["depth"].grad.abs().sum() > 0 and pred["seg"].grad is None
