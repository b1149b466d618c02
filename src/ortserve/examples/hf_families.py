"""The common families of Hugging Face `transformers`, built from small configs with random weights (none ship
offline) and saved as `save_pretrained` directories: the conversion coverage of Hugging Face sources
(benchmarks/hf_coverage.py, tests/convert/test_huggingface.py). Needs `transformers` (the test extra)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

TEXT = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "vocab_size": 64, "max_position_embeddings": 64}


def _builders(transformers: Any) -> dict[str, Callable[[], Any]]:
    t = transformers
    return {
        "bert": lambda: t.BertForSequenceClassification(t.BertConfig(**TEXT, num_labels=3)),
        "distilbert": lambda: t.DistilBertModel(t.DistilBertConfig(
            dim=32, n_layers=2, n_heads=2, hidden_dim=64, vocab_size=64, max_position_embeddings=64)),
        "roberta": lambda: t.RobertaForSequenceClassification(t.RobertaConfig(**{**TEXT, "max_position_embeddings": 80},
                                                                              num_labels=2)),
        "gpt2": lambda: t.GPT2LMHeadModel(t.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=64, n_positions=64)),
        "t5-encoder": lambda: t.T5EncoderModel(t.T5Config(d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
                                                          vocab_size=64)),
        "vit": lambda: t.ViTForImageClassification(t.ViTConfig(**{k: TEXT[k] for k in (
            "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")},
            image_size=32, patch_size=8, num_labels=4)),
        "swin": lambda: t.SwinForImageClassification(t.SwinConfig(image_size=32, patch_size=4, embed_dim=16,
                                                                  depths=[1, 1], num_heads=[1, 2], window_size=4,
                                                                  num_labels=4)),
        "convnext": lambda: t.ConvNextForImageClassification(t.ConvNextConfig(
            image_size=32, num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], num_labels=4)),
        "resnet": lambda: t.ResNetForImageClassification(t.ResNetConfig(
            image_size=32, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=4)),
        "mobilevit": lambda: t.MobileViTForImageClassification(t.MobileViTConfig(
            image_size=64, hidden_sizes=[16, 24, 32], neck_hidden_sizes=[8, 8, 16, 16, 24, 24, 48], num_labels=4)),
        "wav2vec2": lambda: t.Wav2Vec2Model(t.Wav2Vec2Config(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            conv_dim=[16, 16], conv_stride=[5, 4], conv_kernel=[10, 8], num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=4)),
        "albert": lambda: t.AlbertForSequenceClassification(t.AlbertConfig(**TEXT, embedding_size=16, num_labels=2)),
        "electra": lambda: t.ElectraForTokenClassification(t.ElectraConfig(**TEXT, embedding_size=16, num_labels=5)),
        "deberta-v2": lambda: t.DebertaV2ForSequenceClassification(t.DebertaV2Config(**TEXT, num_labels=2)),
        "xlm-roberta": lambda: t.XLMRobertaForMaskedLM(t.XLMRobertaConfig(**{**TEXT, "max_position_embeddings": 80})),
        "mpnet": lambda: t.MPNetModel(t.MPNetConfig(**TEXT)),
        "llama": lambda: t.LlamaForCausalLM(t.LlamaConfig(**TEXT, num_key_value_heads=1)),
        "mistral": lambda: t.MistralForCausalLM(t.MistralConfig(**TEXT, num_key_value_heads=1)),
        "qwen2": lambda: t.Qwen2ForCausalLM(t.Qwen2Config(**TEXT, num_key_value_heads=1)),
        "phi": lambda: t.PhiForCausalLM(t.PhiConfig(**TEXT)),
        "opt": lambda: t.OPTForCausalLM(t.OPTConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, ffn_dim=64,
                                                    num_attention_heads=2, max_position_embeddings=64,
                                                    word_embed_proj_dim=32)),
        "bloom": lambda: t.BloomForCausalLM(t.BloomConfig(vocab_size=64, hidden_size=32, n_layer=2, n_head=2)),
        "deit": lambda: t.DeiTForImageClassification(t.DeiTConfig(**{k: TEXT[k] for k in (
            "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")},
            image_size=32, patch_size=8, num_labels=4)),
        "dinov2": lambda: t.Dinov2Model(t.Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                       image_size=32, patch_size=8)),
        "regnet": lambda: t.RegNetForImageClassification(t.RegNetConfig(
            embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], groups_width=8, num_labels=4)),
        "mobilenet-v2": lambda: t.MobileNetV2ForImageClassification(t.MobileNetV2Config(
            image_size=32, depth_multiplier=0.25, num_labels=4)),
        "segformer": lambda: t.SegformerForImageClassification(t.SegformerConfig(
            image_size=32, hidden_sizes=[8, 16, 16, 32], num_attention_heads=[1, 1, 1, 2], depths=[1, 1, 1, 1],
            decoder_hidden_size=32, num_labels=4)),
        "poolformer": lambda: t.PoolFormerForImageClassification(t.PoolFormerConfig(
            image_size=32, hidden_sizes=[8, 16, 16, 32], depths=[1, 1, 1, 1], num_labels=4)),
        "bert-qa": lambda: t.BertForQuestionAnswering(t.BertConfig(**TEXT)),
        "bert-multiple-choice": lambda: t.BertForMultipleChoice(t.BertConfig(**TEXT)),
        "segformer-segmentation": lambda: t.SegformerForSemanticSegmentation(t.SegformerConfig(
            image_size=32, hidden_sizes=[8, 16, 16, 32], num_attention_heads=[1, 1, 1, 2], depths=[1, 1, 1, 1],
            decoder_hidden_size=32, num_labels=4)),
        "hubert": lambda: t.HubertModel(t.HubertConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            conv_dim=[16, 16], conv_stride=[5, 4], conv_kernel=[10, 8], num_conv_pos_embeddings=16,
            num_conv_pos_embedding_groups=4)),
    }


FAMILIES = ("bert", "distilbert", "roberta", "gpt2", "t5-encoder", "vit", "swin", "convnext", "resnet", "mobilevit",
            "wav2vec2", "albert", "electra", "deberta-v2", "xlm-roberta", "mpnet", "llama", "mistral", "qwen2", "phi",
            "opt", "bloom", "deit", "dinov2", "regnet", "mobilenet-v2", "segformer", "poolformer", "hubert", "bert-qa",
            "bert-multiple-choice", "segformer-segmentation")


def save_family(name: str, directory: Path, seed: int = 0) -> Path:
    """Build family `name` from its small config and save it under `directory`; the saved directory."""
    import torch
    import transformers

    torch.manual_seed(seed)
    model = _builders(transformers)[name]().eval()
    path = directory / name
    model.save_pretrained(path)
    return path
