"""Hugging Face model directories (`save_pretrained`) as a source: the task from `architectures`, inputs from the
model type with dynamic batch and sequence, meaningful output names, the tokenizer and labels carried into the
version, and the converted model served with another sequence length than it was exported with. Built from
small configs with random weights (none ship)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

import ortserve
from ortserve.bench.server import start_server
from ortserve.convert.pipeline import ConvertRequest, convert
from ortserve.examples.hf_families import FAMILIES, save_family

pytestmark = pytest.mark.slow
transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


def _saved(tmp_path: Path, name: str, model: object) -> Path:
    path = tmp_path / name
    model.save_pretrained(path)  # type: ignore[attr-defined]
    return path


def test_a_text_classifier_with_its_tokenizer_and_labels(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = transformers.BertConfig(**SMALL, vocab_size=30, num_labels=3,
                                     id2label={0: "negative", 1: "neutral", 2: "positive"},
                                     label2id={"negative": 0, "neutral": 1, "positive": 2})
    model = transformers.BertForSequenceClassification(config).eval()
    path = _saved(tmp_path, "classifier", model)
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad",
                                                   "movie", "the", "was"]) + "\n")
    transformers.BertTokenizerFast(str(tmp_path / "vocab.txt")).save_pretrained(path)
    result = convert(ConvertRequest(source=str(path), repository=tmp_path / "repo", model="sentiment", inputs=[]))
    assert result.parity.passed
    version = result.version_dir
    provenance = json.loads((version / "provenance.json").read_text())
    assert provenance["framework"] == "huggingface" and provenance["task"] == "sequence-classification"
    assert provenance["exporter"] == "torch.export"
    assert [spec["name"] for spec in provenance["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert all(spec["dims"] == ["batch", "sequence"] for spec in provenance["inputs"])
    assert (version / "labels.txt").read_text().split() == ["negative", "neutral", "positive"]
    assert (version / "tokenizer.json").is_file() and (version / "tokenizer_config.json").is_file()

    encoded = transformers.BertTokenizerFast.from_pretrained(version)(
        ["the movie was good", "bad", "the movie was bad the movie was good the movie"], padding=True,
        return_tensors="np")
    feeds = {name: encoded[name].astype(np.int64) for name in ("input_ids", "attention_mask", "token_type_ids")}
    with ortserve.Engine(tmp_path / "repo") as engine:
        served = engine.predict("sentiment", feeds)
    with torch.no_grad():
        expected = model(**{name: torch.from_numpy(array) for name, array in feeds.items()}).logits.numpy()
    assert list(served) == ["logits"]
    np.testing.assert_allclose(served["logits"], expected, rtol=1e-4, atol=1e-5)


FAMILY_TASKS = {"bert": ("sequence-classification", "logits"),
                "distilbert": ("feature-extraction", "last_hidden_state"),
                "roberta": ("sequence-classification", "logits"), "gpt2": ("causal-lm", "logits"),
                "t5-encoder": ("feature-extraction", "last_hidden_state"),
                "vit": ("image-classification", "logits"), "swin": ("image-classification", "logits"),
                "convnext": ("image-classification", "logits"), "resnet": ("image-classification", "logits"),
                "mobilevit": ("image-classification", "logits"),
                "wav2vec2": ("feature-extraction", "last_hidden_state"),
                "albert": ("sequence-classification", "logits"), "electra": ("token-classification", "logits"),
                "deberta-v2": ("sequence-classification", "logits"), "xlm-roberta": ("masked-lm", "logits"),
                "mpnet": ("feature-extraction", "last_hidden_state"), "llama": ("causal-lm", "logits"),
                "mistral": ("causal-lm", "logits"), "qwen2": ("causal-lm", "logits"), "phi": ("causal-lm", "logits"),
                "opt": ("causal-lm", "logits"), "bloom": ("causal-lm", "logits"),
                "deit": ("image-classification", "logits"), "dinov2": ("feature-extraction", "last_hidden_state"),
                "regnet": ("image-classification", "logits"), "mobilenet-v2": ("image-classification", "logits"),
                "segformer": ("image-classification", "logits"), "poolformer": ("image-classification", "logits"),
                "hubert": ("feature-extraction", "last_hidden_state"),
                "bert-qa": ("question-answering", "start_logits", "end_logits"),
                "bert-multiple-choice": ("multiple-choice", "logits"),
                "segformer-segmentation": ("semantic-segmentation", "logits")}


@pytest.mark.parametrize("name", FAMILIES)
def test_families_convert_with_parity_and_serve_another_batch(tmp_path: Path, name: str) -> None:
    """Each common family, from a small config: converted with parity, dynamic batch (and sequence or samples)
    axes, meaningful output names; then served at another batch size and length than exported, as the source
    framework answers."""
    path = save_family(name, tmp_path)
    result = convert(ConvertRequest(source=str(path), repository=tmp_path / "repo", model=name, inputs=[]))
    assert result.parity.passed
    provenance = json.loads((result.version_dir / "provenance.json").read_text())
    task, *outputs = FAMILY_TASKS[name]
    assert provenance["task"] == task and provenance["outputs"] == outputs
    assert all(spec["dims"][0] == "batch" for spec in provenance["inputs"])
    rng = np.random.default_rng(3)
    feeds = {}
    for spec in provenance["inputs"]:
        shape = [3 if dim == "batch" else 11 if dim == "sequence" else 12000 if dim == "samples" else 4
                 if dim == "choices" else dim for dim in spec["dims"]]
        feeds[spec["name"]] = (rng.integers(0, 60, shape) if spec["dtype"] == "int64"
                               else rng.standard_normal(shape)).astype(spec["dtype"])
    if "attention_mask" in feeds:
        feeds["attention_mask"] = np.ones_like(feeds["attention_mask"])
    if "token_type_ids" in feeds:
        feeds["token_type_ids"] = np.zeros_like(feeds["token_type_ids"])
    with ortserve.Engine(tmp_path / "repo") as engine:
        served = engine.predict(name, feeds)
    model = getattr(transformers, json.loads((path / "config.json").read_text())["architectures"][0])
    with torch.no_grad():
        expected = model.from_pretrained(path).eval()(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    for output in outputs:
        np.testing.assert_allclose(served[output], expected[output].numpy(), rtol=1e-3, atol=2e-4)


def test_a_directory_without_architectures_is_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bare"
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ortserve.InvalidInput, match="names no `architectures`"):
        convert(ConvertRequest(source=str(path), repository=tmp_path / "repo", model="m", inputs=[]))


def test_weights_that_do_not_fit_the_config_are_refused_in_one_line(tmp_path: Path) -> None:
    """transformers raises a RuntimeError for a checkpoint whose tensors disagree with its config.json."""
    config = transformers.BertConfig(**SMALL, vocab_size=30, num_labels=3)
    path = _saved(tmp_path, "edited", transformers.BertForSequenceClassification(config))
    edited = json.loads((path / "config.json").read_text())
    edited["id2label"], edited["label2id"] = {"0": "no", "1": "yes"}, {"no": 0, "yes": 1}
    (path / "config.json").write_text(json.dumps(edited))
    with pytest.raises(ortserve.InvalidInput, match="cannot be loaded as BertForSequenceClassification"):
        convert(ConvertRequest(source=str(path), repository=tmp_path / "repo", model="m", inputs=[]))


def test_inputs_come_from_what_forward_takes(tmp_path: Path) -> None:
    """A raw-audio model with a vocabulary (a CTC head's) is audio, by its forward(); a spectrogram model is
    refused by name."""
    torch.manual_seed(0)
    conformer = transformers.Wav2Vec2ConformerForCTC(transformers.Wav2Vec2ConformerConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, conv_dim=[16, 16],
        conv_stride=[5, 4], conv_kernel=[10, 8], num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
        vocab_size=32)).eval()
    result = convert(ConvertRequest(source=str(_saved(tmp_path, "conformer", conformer)), repository=tmp_path / "repo",
                                    model="conformer", inputs=[]))
    provenance = json.loads((result.version_dir / "provenance.json").read_text())
    assert [(spec["name"], spec["dims"]) for spec in provenance["inputs"]] == [("input_values", ["batch", "samples"])]
    whisper = transformers.WhisperForAudioClassification(transformers.WhisperConfig(
        d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=16, max_source_positions=32, num_labels=3))
    with pytest.raises(ortserve.InvalidInput, match="WhisperForAudioClassification takes input_features"):
        convert(ConvertRequest(source=str(_saved(tmp_path, "whisper", whisper)), repository=tmp_path / "repo",
                               model="whisper", inputs=[]))


def _wordpiece(path: Path) -> int:
    """A BERT checkpoint's tokenizer as older transformers saved it: vocab.txt, no tokenizer.json."""
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "movie", "was", "good", "bad", "cat", "##s"]
    (path / "vocab.txt").write_text("\n".join(words) + "\n")
    (path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True,
                                                             "model_max_length": 64}))
    return len(words)


def _byte_level_bpe(path: Path) -> int:
    """A RoBERTa or GPT-2 tokenizer as older transformers saved it: vocab.json and merges.txt."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["the movie was good", "the movie was bad", "a cat sat on the mat"] * 5, vocab_size=300,
                            min_frequency=1, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(path))
    (path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "RobertaTokenizer",
                                                             "model_max_length": 64}))
    return bpe.get_vocab_size()


def _sentencepiece(path: Path) -> int:
    """An ALBERT, T5 or XLM-R tokenizer as saved without a tokenizer.json: a SentencePiece model."""
    import io

    import sentencepiece

    written = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(["the movie was good", "the movie was bad", "a cat sat on the mat"] * 20),
        model_writer=written, vocab_size=24, model_type="unigram", pad_id=0, unk_id=1, bos_id=2, eos_id=3,
        user_defined_symbols=["[CLS]", "[SEP]", "[MASK]"], minloglevel=2)
    (path / "spiece.model").write_bytes(written.getvalue())
    (path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "AlbertTokenizer",
                                                             "model_max_length": 64}))
    return 24


CLASSIFIERS = {"bert": ("BertConfig", "BertForSequenceClassification", {"pad_token_id": 0}),
               "roberta": ("RobertaConfig", "RobertaForSequenceClassification", {"pad_token_id": 1}),
               "albert": ("AlbertConfig", "AlbertForSequenceClassification", {"embedding_size": 16})}


@pytest.mark.parametrize(("family", "vocabulary"),
                         [("bert", _wordpiece), ("roberta", _byte_level_bpe), ("albert", _sentencepiece)],
                         ids=["wordpiece-vocab.txt", "byte-level-bpe-vocab.json", "sentencepiece-spiece.model"])
def test_a_checkpoint_without_tokenizer_json_serves_text_tokenized_as_transformers_does(
        tmp_path: Path, family: str, vocabulary: Callable[[Path], int]) -> None:
    source = tmp_path / family
    source.mkdir()
    words = vocabulary(source)
    torch.manual_seed(0)
    config_name, model_name, extra = CLASSIFIERS[family]
    config = getattr(transformers, config_name)(**SMALL, vocab_size=words, max_position_embeddings=70, num_labels=2,
                                                 **extra)
    model = getattr(transformers, model_name)(config).eval()
    model.save_pretrained(source)
    assert not (source / "tokenizer.json").exists()
    repository = tmp_path / "repo"
    result = convert(ConvertRequest(source=str(source), repository=repository, model=family, inputs=[]))
    assert (result.version_dir / "tokenizer.json").is_file()
    assert yaml.safe_load((repository / family / "config.yaml").read_text())["text"]["task"] == "classify"

    texts = ["the movie was good", "A cat was bad, the cats were good", "good"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(source))
    with torch.no_grad():
        expected = [torch.softmax(model(**tokenizer(text, return_tensors="pt")).logits, -1)[0].numpy()
                    for text in texts]
    with start_server(repository, tmp_path / "server.log") as server:
        response = httpx.post(f"{server.url}/v1/models/{family}:predict_text", json={"texts": texts}, timeout=60)
    assert response.status_code == 200, response.text
    for answer, probabilities in zip(response.json()["predictions"], expected, strict=True):
        served = np.zeros(2, np.float32)
        for entry in answer:
            served[entry["class_id"]] = entry["confidence"]
        np.testing.assert_allclose(served, probabilities, rtol=1e-4, atol=1e-5)


def test_a_token_classifier_serves_entities_from_text_grouped_as_transformers_pipeline_does(tmp_path: Path) -> None:
    import tritonclient.http as triton

    source = tmp_path / "ner"
    source.mkdir()
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "john", "smith", "lives", "in", "new", "york", "paris",
             "and", "mary", "went", "to", "##s", "the"]
    (source / "vocab.txt").write_text("\n".join(words) + "\n")
    (source / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer",
                                                               "do_lower_case": True, "model_max_length": 64}))
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    torch.manual_seed(3)  # random weights: arbitrary tags, so runs of every kind get grouped
    model = transformers.BertForTokenClassification(transformers.BertConfig(
        **SMALL, vocab_size=len(words), max_position_embeddings=70, num_labels=len(labels),
        id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)})).eval()
    model.save_pretrained(source)
    repository = tmp_path / "repo"
    convert(ConvertRequest(source=str(source), repository=repository, model="ner", inputs=[]))
    assert yaml.safe_load((repository / "ner" / "config.yaml").read_text())["text"]["task"] == "tag"

    texts = ["John Smith lives in New York", "Mary went to Paris and Johns", "the"]
    pipeline = transformers.pipeline("token-classification", model=model,
                                     tokenizer=transformers.AutoTokenizer.from_pretrained(str(source)),
                                     aggregation_strategy="simple")
    expected = [pipeline(text) for text in texts]
    assert sum(len(found) for found in expected) >= 5
    with start_server(repository, tmp_path / "server.log") as server:
        response = httpx.post(f"{server.url}/v1/models/ner:predict_text", json={"texts": texts}, timeout=60)
        client = triton.InferenceServerClient(server.host_port)
        strings = triton.InferInput("text", [1], "BYTES")
        strings.set_data_from_numpy(np.array([texts[1].encode()], dtype=object))
        over_v2 = client.infer("ner", [strings]).as_numpy("entities")
    assert response.status_code == 200, response.text
    served = response.json()["entities"]
    assert json.loads(over_v2[0]) == served[1]
    for text, answer, reference in zip(texts, served, expected, strict=True):
        assert [(e["entity_group"], e["start"], e["end"]) for e in answer] == \
            [(e["entity_group"], e["start"], e["end"]) for e in reference]
        assert [e["score"] for e in answer] == pytest.approx([float(e["score"]) for e in reference], rel=1e-4)
        assert [e["word"] for e in answer] == [text[e["start"]:e["end"]] for e in reference]


def _reference_answer(model: object, tokenizer: object, question: str, context: str) -> tuple[str, float, int, int]:
    """The question-answering rule, spelt out over every span: softmax of the start and end logits over the
    context's tokens and [CLS] ([CLS]'s share then dropped), the best product of a span of at most 15 tokens."""
    encoded = tokenizer(question, context, truncation="only_second", return_offsets_mapping=True,
                        return_tensors="pt")  # type: ignore[operator]
    offsets = encoded.pop("offset_mapping")[0].tolist()
    in_context = [sequence == 1 for sequence in encoded.sequence_ids(0)]
    with torch.no_grad():
        found = model(**encoded)  # type: ignore[operator]
    probabilities = []
    for logits in (found.start_logits[0], found.end_logits[0]):
        counted = torch.tensor([index == 0 or kept for index, kept in enumerate(in_context)])
        shares = torch.softmax(logits.masked_fill(~counted, float("-inf")), -1)
        probabilities.append([float(share) if kept else 0.0 for share, kept in zip(shares, in_context, strict=True)])
    best = (0.0, 0, 0)
    for first, start in enumerate(probabilities[0]):
        for last in range(first, min(first + 15, len(in_context))):
            if start * probabilities[1][last] > best[0]:
                best = (start * probabilities[1][last], first, last)
    score, first, last = best
    begin, end = offsets[first][0], offsets[last][1]
    return context[begin:end], score, begin, end


def test_a_question_answering_model_answers_questions_from_text(tmp_path: Path) -> None:
    import tritonclient.grpc as triton_grpc

    source = tmp_path / "qa"
    source.mkdir()
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "who", "lives", "in", "paris", "john", "smith", "where",
             "does", "mary", "live", "she", "london", "and", "the", "city", "of", "##s", "is"]
    (source / "vocab.txt").write_text("\n".join(words) + "\n")
    (source / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer",
                                                               "do_lower_case": True, "model_max_length": 64}))
    torch.manual_seed(5)
    model = transformers.BertForQuestionAnswering(transformers.BertConfig(
        **SMALL, vocab_size=len(words), max_position_embeddings=70)).eval()
    model.save_pretrained(source)
    repository = tmp_path / "repo"
    convert(ConvertRequest(source=str(source), repository=repository, model="qa", inputs=[]))
    assert yaml.safe_load((repository / "qa" / "config.yaml").read_text())["text"]["task"] == "answer"

    questions = ["Who lives in Paris?", "Where does Mary live?", "Who is she?"]
    contexts = ["John Smith lives in Paris and Mary lives in London", "She lives in the city of London",
                "Mary Smith of London is the John of Paris and the Mary of the city where she lives"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(source))
    expected = [_reference_answer(model, tokenizer, q, c) for q, c in zip(questions, contexts, strict=True)]
    with start_server(repository, tmp_path / "server.log") as server:
        response = httpx.post(f"{server.url}/v1/models/qa:predict_text",
                              json={"questions": questions, "contexts": contexts}, timeout=60)
        strings = []
        for name, texts in (("question", questions[1:]), ("context", contexts[1:])):
            strings.append(triton_grpc.InferInput(name, [2], "BYTES"))
            strings[-1].set_data_from_numpy(np.array([text.encode() for text in texts], dtype=object))
        over_grpc = triton_grpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}").infer("qa", strings)
        mismatched = httpx.post(f"{server.url}/v1/models/qa:predict_text",
                                json={"questions": questions, "contexts": contexts[:2]}, timeout=60)
        no_context = httpx.post(f"{server.url}/v2/models/qa/infer", timeout=60, json={
            "inputs": [{"name": "question", "datatype": "BYTES", "shape": [1], "data": ["Who?"]}]})
    assert response.status_code == 200, response.text
    for served, (answer, score, begin, end) in zip(response.json()["answers"], expected, strict=True):
        assert (served["answer"], served["start"], served["end"]) == (answer, begin, end)
        assert served["score"] == pytest.approx(score, rel=1e-4)
    assert [text.decode() for text in over_grpc.as_numpy("answer")] == [e[0] for e in expected[1:]]
    assert over_grpc.as_numpy("start").tolist() == [e[2] for e in expected[1:]]
    assert mismatched.status_code == 400 and "one context per question" in mismatched.json()["error"]
    assert no_context.status_code == 400
    assert "takes strings in 'question' and 'context'; the request has no 'context'" in no_context.json()["error"]


def test_a_question_too_long_for_its_context_is_refused_alone(tmp_path: Path) -> None:
    """Only contexts are cut: a question that leaves its context no token is refused by name, and the requests
    batched with it are answered (the tokenizer failed the whole batch)."""
    import onnxruntime as ort

    from ortserve.repository.config import TextPreprocessing
    from ortserve.runtime.signature import read_signature
    from ortserve.runtime.text import ANSWER, bind_text_model

    source = tmp_path / "qa"
    source.mkdir()
    words = _wordpiece(source)
    torch.manual_seed(0)
    transformers.BertForQuestionAnswering(transformers.BertConfig(
        **SMALL, vocab_size=words, max_position_embeddings=70)).eval().save_pretrained(source)
    result = convert(ConvertRequest(source=str(source), repository=tmp_path / "repo", model="qa", inputs=[]))
    session = ort.InferenceSession(str(result.version_dir / "model.onnx"))
    settings = yaml.safe_load((tmp_path / "repo" / "qa" / "config.yaml").read_text())["text"]
    text = bind_text_model("qa", result.version_dir, TextPreprocessing(**settings), read_signature(session))

    def request(question: str) -> dict[str, np.ndarray]:
        return {"question": np.array([question], dtype=object), "context": np.array(["the movie was good"],
                                                                                      dtype=object)}

    assembled = text.assemble([request(" ".join(["movie"] * 70)), request("the movie was?")])
    assert isinstance(assembled.errors[0], ortserve.InvalidInput)
    assert "question 0 has 70 tokens" in str(assembled.errors[0]) and assembled.errors[1] is None
    outputs = [dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds), strict=True))
               for feeds in assembled.feeds]
    (answered,) = assembled.answers(outputs)
    assert answered[ANSWER][0] in "the movie was good"


@pytest.mark.parametrize("problem", ["multi_label_classification", "regression"])
def test_a_classifiers_scores_are_what_transformers_text_classification_makes_of_its_logits(
        tmp_path: Path, problem: str) -> None:
    source = tmp_path / "classifier"
    source.mkdir()
    words = _wordpiece(source)
    labels = ["toxic", "insult", "threat"] if problem != "regression" else ["stars"]
    torch.manual_seed(1)
    model = transformers.BertForSequenceClassification(transformers.BertConfig(
        **SMALL, vocab_size=words, max_position_embeddings=70, num_labels=len(labels), problem_type=problem,
        id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)})).eval()
    model.save_pretrained(source)
    repository = tmp_path / "repo"
    convert(ConvertRequest(source=str(source), repository=repository, model="scored", inputs=[]))
    texts = ["the movie was good", "a bad cat"]
    pipeline = transformers.pipeline("text-classification", model=model,
                                     tokenizer=transformers.AutoTokenizer.from_pretrained(str(source)), top_k=None)
    expected = [{entry["label"]: entry["score"] for entry in ranking} for ranking in pipeline(texts)]
    with start_server(repository, tmp_path / "server.log") as server:
        response = httpx.post(f"{server.url}/v1/models/scored:predict_text",
                              json={"texts": texts, "top_k": len(labels)}, timeout=60)
    assert response.status_code == 200, response.text
    for answer, reference in zip(response.json()["predictions"], expected, strict=True):
        assert {entry["label"]: entry["confidence"] for entry in answer} == pytest.approx(reference, rel=1e-4)
    if problem != "regression":  # independent classes: their scores need not sum to one
        assert sum(expected[0].values()) != pytest.approx(1.0, abs=1e-3)


IMAGE_CLASSIFIERS = {
    # exact resize, bilinear (ViT's processor)
    "vit": (lambda: transformers.ViTForImageClassification(transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=64,
        patch_size=16, num_labels=3)), lambda: transformers.ViTImageProcessor(size={"height": 64, "width": 64})),
    # shorter side to size / crop_pct, centre crop, bicubic (ConvNeXt's and ResNet's)
    "convnext": (lambda: transformers.ConvNextForImageClassification(transformers.ConvNextConfig(
        hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 1, 1], image_size=56, num_labels=3)),
        lambda: transformers.ConvNextImageProcessor(size={"shortest_edge": 56}, crop_pct=0.875)),
    # shorter side, centre crop, bicubic, CLIP's mean (BiT's and DINOv2's processors alike)
    "bit": (lambda: transformers.ViTForImageClassification(transformers.ViTConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=48,
        patch_size=16, num_labels=3)), lambda: transformers.BitImageProcessor(
        size={"shortest_edge": 60}, crop_size={"height": 48, "width": 48})),
}


@pytest.mark.parametrize("family", IMAGE_CLASSIFIERS)
def test_an_image_classifier_takes_pictures_prepared_as_its_image_processor_prepares_them(
        tmp_path: Path, family: str) -> None:
    from PIL import Image

    build_model, build_processor = IMAGE_CLASSIFIERS[family]
    torch.manual_seed(0)
    model = build_model().eval()
    labels = ["cat", "dog", "bird"]
    model.config.id2label, model.config.label2id = dict(enumerate(labels)), {name: i for i, name in enumerate(labels)}
    source = tmp_path / family
    model.save_pretrained(source)
    processor = build_processor()
    processor.save_pretrained(source)
    repository = tmp_path / "repo"
    convert(ConvertRequest(source=str(source), repository=repository, model=family, inputs=[]))
    assert "image" in yaml.safe_load((repository / family / "config.yaml").read_text())

    blobs = (255 * np.random.default_rng(0).random((6, 10, 3))).astype(np.uint8)  # patches of colour, smoothed
    picture = Image.fromarray(blobs).resize((200, 120), Image.Resampling.BILINEAR)
    upload = tmp_path / "picture.png"
    picture.save(upload)
    with torch.no_grad():
        pixels = processor(images=picture, return_tensors="pt")["pixel_values"]
        expected = torch.softmax(model(pixel_values=pixels).logits, -1)[0].numpy()
    with start_server(repository, tmp_path / "server.log") as server:
        response = httpx.post(f"{server.url}/v1/models/{family}:predict_image?top_k=3",
                              files={"image": ("picture.png", upload.read_bytes())}, timeout=60)
    assert response.status_code == 200, response.text
    served = {entry["label"]: entry["confidence"] for entry in response.json()["predictions"]}
    assert served == pytest.approx(dict(zip(labels, expected.tolist(), strict=True)), abs=2e-3)


@pytest.mark.parametrize("written", ['{"image_processor_type": "ViTImageProcessor", ', '["ViTImageProcessor"]'],
                         ids=["torn", "not-an-object"])
def test_an_image_processor_file_that_cannot_be_read_leaves_the_model_taking_pixel_values(
        tmp_path: Path, written: str) -> None:
    build_model = IMAGE_CLASSIFIERS["vit"][0]
    source = tmp_path / "vit"
    build_model().save_pretrained(source)
    (source / "preprocessor_config.json").write_text(written)
    result = convert(ConvertRequest(source=str(source), repository=tmp_path / "repo", model="vit", inputs=[]))
    assert result.parity.passed
    assert "image" not in (yaml.safe_load((tmp_path / "repo" / "vit" / "config.yaml").read_text()) or {})


def test_image_processor_sizes_not_reproduced_give_no_image_section() -> None:
    from types import SimpleNamespace

    from ortserve.convert.hf_images import _resize_and_crop

    def processor(size: dict[str, int], crop: dict[str, int] | None = None) -> SimpleNamespace:
        return SimpleNamespace(size=size, crop_size=crop, do_center_crop=crop is not None)

    assert _resize_and_crop(processor({"shortest_edge": 256}, {"height": 224, "width": 224}), "BitImageProcessor") \
        == ({"shorter_side": 256, "longer_side": "truncate"}, [224, 224])
    assert _resize_and_crop(processor({"shortest_edge": 256}, {"shortest_edge": 224}), "BitImageProcessor") is None
    assert _resize_and_crop(processor({"shortest_edge": 800, "longest_edge": 1333}), "ViTImageProcessor") is None
