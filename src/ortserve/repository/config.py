"""The per-model config.yaml schema: every serving knob for one model, typed and validated."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ortserve.digits import is_decimal
from ortserve.errors import ConfigError

CONFIG_FILE = "config.yaml"
DEFAULT_MAX_BATCH_SIZE = 32
LABEL_PATTERN = re.compile(r"^[a-zA-Z0-9_]+$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SessionOptions(_Strict):
    """ONNX Runtime session options; 0 threads means ONNX Runtime's default (one per physical core)."""

    intra_op_threads: Annotated[int, Field(ge=0)] = 0
    inter_op_threads: Annotated[int, Field(ge=0)] = 0
    execution_mode: Literal["sequential", "parallel"] = "sequential"
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"
    enable_cpu_mem_arena: bool = True
    enable_mem_pattern: bool = True
    # Spinning intra-op threads burn the cores that the event loop needs between batches.
    allow_spinning: bool = False


PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}


class ExecutionProvider(_Strict):
    name: str
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        full = PROVIDER_ALIASES.get(name.lower(), name)
        if full not in PROVIDER_ALIASES.values():
            raise ValueError(
                f"unknown execution provider {name!r}; expected one of {', '.join(PROVIDER_ALIASES)}"
            )
        return full


class VersionPolicy(_Strict):
    """Which versions to serve, as TF Serving and Triton: `latest: N`, `all`, or `specific: [..]`."""

    latest: Annotated[int, Field(ge=1)] | None = None
    specific: list[Annotated[int, Field(ge=1)]] | None = None
    all: bool = False

    @model_validator(mode="before")
    @classmethod
    def _all_shorthand(cls, value: Any) -> Any:
        return {"all": True} if value == "all" else value

    @model_validator(mode="after")
    def _exactly_one(self) -> VersionPolicy:
        chosen = [self.latest is not None, self.specific is not None, self.all]
        if sum(chosen) != 1:
            raise ValueError("give exactly one of `latest: N`, `specific: [versions]` or `all`")
        if self.specific == []:
            raise ValueError("`specific` needs at least one version")
        return self

    def select(self, available: list[int]) -> list[int]:
        """The versions to serve out of those on disk, ascending."""
        ordered = sorted(available)
        if self.all:
            return ordered
        if self.specific is not None:
            return [v for v in ordered if v in set(self.specific)]
        assert self.latest is not None
        return ordered[-self.latest :]


class Warmup(_Strict):
    """Runs made on each version before it is reported AVAILABLE, with zero-filled inputs or the model's own
    samples."""

    runs: Annotated[int, Field(ge=0)] = 1
    batch_size: Annotated[int, Field(ge=1)] = 1
    # Sizes for dynamic dimensions other than the batch one, per input name; unset ones default to 1.
    shapes: dict[str, list[Annotated[int, Field(ge=1)]]] = Field(default_factory=dict)
    # A .npz of sample inputs by input name (runtime.samples), in the version directory or the model's; unset:
    # warmup.npz there, when present
    data: Annotated[str, Field(min_length=1, pattern=r"^[^/\\]+$")] | None = None


class Resize(_Strict):
    """Either scale so the shorter side has this length (aspect kept), or resize to an exact [height, width]."""

    shorter_side: Annotated[int, Field(ge=1)] | None = None
    exact: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=2, max_length=2)] | None = None
    # Bilinear either way. On: Pillow's, whose filter widens as it shrinks a picture. Off: TensorFlow's
    # tf.image.resize (half-pixel centres, the 2x2 nearest pixels), for a model trained behind it (runtime.resize)
    antialias: bool = True
    # With antialias off: off reads pixel i of the output at i * scale of the input, as TF1's resize_bilinear did
    # by default (on: at (i + 0.5) * scale - 0.5, as tf.image.resize does)
    half_pixel_centers: bool = True
    method: Literal["bilinear", "bicubic"] = "bilinear"  # bicubic: Pillow's, or tf.image.resize's (Keys, a = -0.5)
    # shorter_side: the longer side's length in pixels, rounded, or truncated as torchvision's Resize and
    # transformers' image processors compute it
    longer_side: Literal["round", "truncate"] = "round"

    @model_validator(mode="after")
    def _one_kind(self) -> Resize:
        if (self.shorter_side is None) == (self.exact is None):
            raise ValueError("give exactly one of `shorter_side: N` or `exact: [height, width]`")
        if not self.half_pixel_centers and self.antialias:
            raise ValueError("`half_pixel_centers: false` is TensorFlow's resize: set `antialias: false` too")
        if not self.half_pixel_centers and self.method == "bicubic":
            raise ValueError("`half_pixel_centers: false` is TF1's bilinear resize; its bicubic is not reproduced")
        return self


class ImagePreprocessing(_Strict):
    """How an uploaded image becomes the model's input tensor, and how its output becomes labels.

    Pixels (0-255, after colour conversion, resize and crop) become `(pixel * scale - mean) / std` per channel.
    """

    input: str | None = None  # the model input fed with the image; unset: the model's only input
    output: str | None = None  # the output holding class scores; unset: the model's first output
    # Before resizing, keep the central part of this fraction of each side (tf.image.central_crop's
    # central_fraction: Inception's 0.875); with crop_square, a centred square of this fraction of the shorter
    # side (TensorFlow's official ResNet and EfficientNet preprocessing: size / (size + 32))
    crop_fraction: Annotated[float, Field(gt=0, le=1)] | None = None
    crop_square: bool = False
    resize: Resize | None = None
    center_crop: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=2, max_length=2)] | None = None
    color: Literal["rgb", "bgr"] = "rgb"
    layout: Literal["nchw", "nhwc"] = "nchw"
    scale: float = 1.0
    mean: list[float] = Field(default_factory=lambda: [0.0, 0.0, 0.0], min_length=3, max_length=3)
    std: list[float] = Field(default_factory=lambda: [1.0, 1.0, 1.0], min_length=3, max_length=3)
    scores: Literal["logits", "probabilities"] = "logits"  # logits get a softmax
    labels_file: str | None = None  # one label per line, in the model directory; line i is class i
    default: bool = False  # the model POST /predict serves
    max_image_bytes: Annotated[int, Field(ge=1)] = 20 * 1024 * 1024
    max_image_pixels: Annotated[int, Field(ge=1)] = 40_000_000  # refuses decompression bombs before decoding

    @field_validator("std")
    @classmethod
    def _no_zero_std(cls, std: list[float]) -> list[float]:
        if any(value == 0 for value in std):
            raise ValueError("std values must not be 0")
        return std

    @model_validator(mode="after")
    def _square_of_a_fraction(self) -> ImagePreprocessing:
        if self.crop_square and self.crop_fraction is None:
            raise ValueError("`crop_square: true` crops a square of `crop_fraction` of the shorter side: set it too")
        return self


class TextInputs(_Strict):
    """Which model inputs receive the token ids, the attention mask and the token type ids; unset: the model's input
    of the usual name (input_ids, attention_mask, token_type_ids), when it has one."""

    ids: str | None = None
    mask: str | None = None
    type_ids: str | None = None


class TextPreprocessing(_Strict):
    """How raw strings become the model's token inputs (a `tokenizers` tokenizer.json), and how its output becomes
    per-text embeddings, class labels, entities (`tag`: a label per token, [batch, sequence, labels]), answers
    (`answer`: a question and a context in, the span of the context that answers it out, from start and end
    logits), or stays the model's own outputs (`predict`: a Keras model that split its text in the graph,
    converted from its token ids on)."""

    task: Literal["embed", "classify", "tag", "answer", "predict"]
    tokenizer: str = "tokenizer.json"  # in the version directory, else the model directory
    max_length: Annotated[int, Field(ge=1)] = 512  # tokens a text may have, special tokens included
    truncation: bool = True  # off: a longer text is refused (400), not cut
    # A batch's texts are sorted by length and run in as many session runs as keep each run's padding (to its
    # longest text) under this share of its tokens; 1: one run padded to the batch's longest text
    max_padding: Annotated[float, Field(ge=0, le=1)] = 0.2
    inputs: TextInputs = TextInputs()
    output: str | None = None  # the model output used; unset: the model's first output
    # embed: an output of [batch, sequence, hidden] is pooled over the mask (`cls`: the first token's); an output
    # of [batch, hidden] is the embedding already
    pooling: Literal["mean", "cls"] = "mean"
    normalize: bool = False  # embed: scale each embedding to unit length (L2)
    # classify, tag: logits get a softmax; a multi-label model's logits a sigmoid each
    scores: Literal["logits", "multi_label_logits", "probabilities"] = "logits"
    # classify, tag: one label per line (version directory, else model directory; unset: config.json's id2label)
    labels_file: str | None = None
    input_name: str = "text"  # the BYTES input that V2 and TF Serving clients send strings to
    # answer: the BYTES inputs of the questions and their contexts, and the longest answer in tokens
    question_input: str = "question"
    context_input: str = "context"
    max_answer_tokens: Annotated[int, Field(ge=1)] = 15
    default: bool = False  # the model POST /embed or POST /classify serves


class QueueSettings(_Strict):
    """The bounded queue and admission control in front of a model's batches (runtime.admission)."""

    # Most rows queued at once. Unset: the rows the model is measured to run in `max_wait_ms`.
    max_rows: Annotated[int, Field(ge=1)] | None = None
    max_wait_ms: Annotated[float, Field(gt=0)] = 2000.0
    # Refuse at once what cannot be served in time (queue bound, deadlines, latency objective). Off: every request
    # is queued, however long the queue (requests whose deadline passes while queued are still dropped).
    admission: bool = True


class Instances(_Strict):
    """How many sessions of a version run batches at once (Triton's instance count): a number, or a range the
    scheduler moves in as the load rises and falls (runtime.instances)."""

    min: Annotated[int, Field(ge=1)] = 1
    max: Annotated[int, Field(ge=1)] = 1

    @model_validator(mode="before")
    @classmethod
    def _count_shorthand(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return {"min": value, "max": value}
        return value

    @model_validator(mode="after")
    def _ordered(self) -> Instances:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) is larger than max ({self.max})")
        return self

    @property
    def adaptive(self) -> bool:
        return self.max > self.min


class TensorDeclaration(_Strict):
    """One input or output of the model's contract: every served version must have it, with this type and shape."""

    name: str
    datatype: str  # KServe V2 name: FP32, INT64, BYTES, ...
    dims: list[Annotated[int, Field(ge=-1)]]  # -1 for a dynamic dimension

    @field_validator("datatype")
    @classmethod
    def _known_datatype(cls, datatype: str) -> str:
        from ortserve.dtypes import BY_V2

        if datatype not in BY_V2:
            raise ValueError(f"unknown datatype {datatype!r}; expected one of {', '.join(BY_V2)}")
        return datatype


VersionRef = Annotated[int, Field(ge=1)] | str  # a version number, or a label of the model


class Shadow(_Strict):
    """A version that gets a copy of a fraction of the model's traffic after each caller is answered; its
    answers are compared with the served ones, never returned (routing.shadow)."""

    target: VersionRef
    fraction: Annotated[float, Field(gt=0, le=1)] = 1.0
    # Most of the time the copies may take while the served versions are answering requests (routing.shadow).
    max_share: Annotated[float, Field(gt=0, le=1)] = 0.02


class Routing(_Strict):
    """How requests that name neither a version nor a label reach a version."""

    # Weights over labels or versions ({stable: 90, canary: 10}); unset: the newest available version.
    split: dict[Annotated[int, Field(ge=1)] | str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    shadow: Shadow | None = None


class ResponseCache(_Strict):
    """Answers kept per version, keyed by the exact inputs and requested outputs, least recently used first out."""

    max_bytes: Annotated[int, Field(ge=1)]


class Group(_Strict):
    """A model served by other models of the repository (its members, of one input/output contract): each
    request goes to one member, chosen by the policy (routing.group)."""

    members: Annotated[list[str], Field(min_length=1)]
    policy: Literal["least_latency", "round_robin", "weighted"] = "least_latency"
    weights: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)  # for `weighted`

    @model_validator(mode="after")
    def _consistent(self) -> Group:
        if len(set(self.members)) != len(self.members):
            raise ValueError(f"members {self.members} name a model twice")
        if self.policy == "weighted":
            if set(self.weights) != set(self.members):
                raise ValueError(f"policy 'weighted' needs a weight for every member, and only for them: members "
                                 f"{self.members}, weights for {sorted(self.weights)}")
        elif self.weights:
            raise ValueError(f"weights are for policy 'weighted', not {self.policy!r}")
        return self


class ModelConfig(_Strict):
    """config.yaml of one model. Unset batching fields are derived from the ONNX signature."""

    max_batch_size: Annotated[int, Field(ge=0)] | None = None
    # Unset: chosen continuously from measured batch costs and arrivals (runtime.scheduler).
    max_queue_delay_us: Annotated[int, Field(ge=0)] | None = None
    preferred_batch_sizes: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list)
    latency_slo_ms: Annotated[float, Field(gt=0)] | None = None
    queue: QueueSettings = QueueSettings()
    instances: Instances = Instances()
    session: SessionOptions = SessionOptions()
    execution_providers: list[ExecutionProvider] = Field(
        default_factory=lambda: [ExecutionProvider(name="cpu")]
    )
    version_policy: VersionPolicy = VersionPolicy(latest=1)
    labels: dict[str, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)
    routing: Routing = Routing()
    response_cache: ResponseCache | None = None
    group: Group | None = None
    warmup: Warmup = Warmup()
    image: ImagePreprocessing | None = None
    text: TextPreprocessing | None = None
    # TF Serving Predict: an input of serialized tf.Examples, read into the model's inputs by feature name (written
    # by `convert` for a SavedModel whose signature parsed them: server.tf_examples)
    examples_input: str | None = None
    # The model's contract (as TF Serving's signature and Triton's config declare it); empty: not checked.
    inputs: list[TensorDeclaration] = Field(default_factory=list)
    outputs: list[TensorDeclaration] = Field(default_factory=list)

    @field_validator("execution_providers", mode="before")
    @classmethod
    def _provider_shorthand(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": item} if isinstance(item, str) else item for item in value]
        return value

    @field_validator("labels")
    @classmethod
    def _label_names(cls, labels: dict[str, int]) -> dict[str, int]:
        for label in labels:
            if not LABEL_PATTERN.match(label):
                raise ValueError(f"label {label!r} must match [a-zA-Z0-9_]+")
        return labels

    def version_of(self, ref: int | str) -> int | None:
        """The version a split or shadow entry names: a number (also written as text) or a label; None when it
        is neither."""
        if isinstance(ref, int):
            return ref
        if is_decimal(ref):
            return int(ref)
        return self.labels.get(ref)

    @model_validator(mode="after")
    def _group_alone(self) -> ModelConfig:
        if self.group is not None:
            others = sorted(name for name in self.model_fields_set if name != "group")
            if others:
                raise ValueError(f"a group's config holds only `group:`; {', '.join(others)} belong to its members")
        return self

    @model_validator(mode="after")
    def _one_kind_of_preprocessing(self) -> ModelConfig:
        if self.image is not None and self.text is not None:
            raise ValueError("a model takes images (`image:`) or texts (`text:`), not both")
        return self

    @model_validator(mode="after")
    def _batch_sizes_fit(self) -> ModelConfig:
        if self.max_batch_size is not None:
            too_big = [size for size in self.preferred_batch_sizes if size > self.max_batch_size]
            if too_big:
                raise ValueError(
                    f"preferred_batch_sizes {too_big} exceed max_batch_size {self.max_batch_size}"
                )
        return self


# Fields that change only which versions serve and how requests reach them: a change to these alone keeps the
# loaded versions as they are; any other change loads them anew, beside the serving ones.
ROUTING_FIELDS = frozenset({"version_policy", "labels", "routing"})


def same_serving(old: ModelConfig, new: ModelConfig) -> bool:
    """Whether versions loaded under `old` serve exactly as they would under `new`."""
    return old.model_dump(exclude=set(ROUTING_FIELDS)) == new.model_dump(exclude=set(ROUTING_FIELDS))


def _field_path(location: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in location) or "(top level)"


def parse_config(model_name: str, data: Any, source: str = CONFIG_FILE) -> ModelConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"model {model_name!r}: {source} must be a mapping, got {type(data).__name__}")
    try:
        return ModelConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"field {_field_path(err['loc'])!r}: {err['msg']}" for err in exc.errors(include_url=False)
        )
        raise ConfigError(f"model {model_name!r}: invalid {source}: {problems}") from None


def load_config(model_dir: Path, overrides: Mapping[str, Any] | None = None) -> ModelConfig:
    """Read REPO/<model>/config.yaml (a missing file means all defaults), with `overrides` in place of its
    top-level fields of the same names (the version policy and labels of a TF Serving model config)."""
    path = model_dir / CONFIG_FILE
    data: Any = None
    if path.exists():
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"model {model_dir.name!r}: {CONFIG_FILE} is not valid YAML: {exc}") from None
    if overrides and (data is None or isinstance(data, dict)):
        data = {**(data or {}), **overrides}
    return parse_config(model_dir.name, data)


def update_config(model_dir: Path, changes: dict[str, Any]) -> ModelConfig:
    """Set top-level fields of REPO/<model>/config.yaml, keeping the others; validated, then replaced at once."""
    path = model_dir / CONFIG_FILE
    data = (yaml.safe_load(path.read_text()) if path.exists() else None) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"model {model_dir.name!r}: {CONFIG_FILE} must be a mapping, got {type(data).__name__}")
    data.update(changes)
    config = parse_config(model_dir.name, data)
    staged = path.with_name(f".{CONFIG_FILE}.new")
    staged.write_text(yaml.safe_dump(data, sort_keys=False))
    os.replace(staged, path)
    return config
