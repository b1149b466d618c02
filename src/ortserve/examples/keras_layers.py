"""Small Keras models, one per kind of layer teams build with: attention, recurrent, convolutional, normalization,
merging, reshaping, preprocessing, embeddings, TensorFlow ops on Keras 2 tensors, Lambda layers. Each builder
takes the Keras package (`keras` for Keras 3, `tf_keras` for Keras 2) and returns a model with random weights;
`KERAS_3_ONLY` and `KERAS_2_ONLY` name those that use one package's API. Used by the layer-coverage benchmark
and the tests of `ortserve convert`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Builder = Callable[[Any], Any]


def _input(keras: Any, *shape: int | None, dtype: str = "float32", name: str = "x") -> Any:
    return keras.Input(shape=shape, dtype=dtype, name=name)


def _stack(keras: Any, inputs: Any, *layers: Any) -> Any:
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x)


def attention(keras: Any) -> Any:
    x = _input(keras, 10, 16)
    attended = keras.layers.MultiHeadAttention(2, 8)(x, x)
    return keras.Model(x, keras.layers.GlobalAveragePooling1D()(keras.layers.LayerNormalization()(attended + x)))


def query_value_attention(keras: Any) -> Any:
    query, value = _input(keras, 5, 8, name="query"), _input(keras, 7, 8, name="value")
    return keras.Model([query, value], keras.layers.Concatenate()([keras.layers.Attention()([query, value]),
                                                                  keras.layers.AdditiveAttention()([query, value])]))


def transformer(keras: Any) -> Any:
    tokens = _input(keras, 16, dtype="int32", name="tokens")
    x = keras.layers.Embedding(200, 32)(tokens)
    x = keras.layers.LayerNormalization(epsilon=1e-6)(x + keras.layers.MultiHeadAttention(4, 8)(x, x))
    feed_forward = keras.layers.Dense(32)(keras.layers.Dense(64, activation="gelu")(x))
    x = keras.layers.LayerNormalization(epsilon=1e-6)(x + feed_forward)
    return keras.Model(tokens, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(x)))


def masked_lstm(keras: Any) -> Any:
    ids = _input(keras, 12, dtype="int64")
    x = keras.layers.LSTM(6)(keras.layers.Embedding(50, 8, mask_zero=True)(ids))
    return keras.Model(ids, keras.layers.Dense(3)(x))


def bidirectional_gru(keras: Any) -> Any:
    x = _input(keras, 12, 4)
    sequence = keras.layers.Bidirectional(keras.layers.GRU(5, return_sequences=True))(x)
    return keras.Model(x, keras.layers.GlobalMaxPooling1D()(sequence))


def stacked_recurrent(keras: Any) -> Any:
    return _stack(keras, _input(keras, 9, 4), keras.layers.LSTM(5, return_sequences=True, go_backwards=True),
                  keras.layers.GRU(3, reset_after=False), keras.layers.Dense(2))


def simple_rnn(keras: Any) -> Any:
    return _stack(keras, _input(keras, 7, 3), keras.layers.SimpleRNN(4), keras.layers.Dense(2))


def masking(keras: Any) -> Any:
    return _stack(keras, _input(keras, 6, 3), keras.layers.Masking(0.0), keras.layers.LSTM(4))


def text_cnn(keras: Any) -> Any:
    return _stack(keras, _input(keras, 20, dtype="int32"), keras.layers.Embedding(100, 8),
                  keras.layers.Conv1D(6, 3, activation="relu"), keras.layers.MaxPooling1D(2),
                  keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(1, activation="sigmoid"))


def variable_length_conv1d(keras: Any) -> Any:
    return _stack(keras, _input(keras, None, 3), keras.layers.Conv1D(4, 3, padding="same"),
                  keras.layers.GlobalMaxPooling1D())


def variable_size_image(keras: Any) -> Any:
    return _stack(keras, _input(keras, None, None, 3), keras.layers.Conv2D(4, 3, strides=2),
                  keras.layers.GlobalAveragePooling2D())


def transposed_conv(keras: Any) -> Any:
    return _stack(keras, _input(keras, 8, 8, 3), keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same"),
                  keras.layers.UpSampling2D(), keras.layers.Conv2D(2, 1))


def conv3d(keras: Any) -> Any:
    return _stack(keras, _input(keras, 4, 8, 8, 2), keras.layers.Conv3D(3, 2), keras.layers.MaxPooling3D(),
                  keras.layers.Flatten(), keras.layers.Dense(2))


def separable_conv(keras: Any) -> Any:
    return _stack(keras, _input(keras, 16, 16, 3), keras.layers.SeparableConv2D(8, 3),
                  keras.layers.DepthwiseConv2D(3), keras.layers.BatchNormalization(), keras.layers.ReLU(6.0),
                  keras.layers.GlobalAveragePooling2D())


def time_distributed(keras: Any) -> Any:
    return _stack(keras, _input(keras, 5, 8, 8, 3), keras.layers.TimeDistributed(keras.layers.Conv2D(2, 3)),
                  keras.layers.TimeDistributed(keras.layers.Flatten()), keras.layers.LSTM(3))


def conv_lstm(keras: Any) -> Any:
    return _stack(keras, _input(keras, 3, 8, 8, 2), keras.layers.ConvLSTM2D(2, 3), keras.layers.Flatten())


def activations(keras: Any) -> Any:
    x = _input(keras, 10)
    names = ["gelu", "swish", "elu", "selu", "softplus", "softsign", "tanh", "hard_sigmoid", "relu6", "exponential"]
    outputs = [keras.layers.Activation(name)(x) for name in names]
    outputs += [keras.layers.PReLU()(x), keras.layers.LeakyReLU(0.2)(x), keras.layers.ELU()(x),
                keras.layers.Softmax()(x)]
    return keras.Model(x, keras.layers.Concatenate()(outputs))


def normalizations(keras: Any) -> Any:
    x = _input(keras, 6, 6, 8)
    return keras.Model(x, keras.layers.Add()([keras.layers.GroupNormalization(4)(x),
                                              keras.layers.LayerNormalization(axis=[1, 2, 3])(x),
                                              keras.layers.UnitNormalization()(x)]))


def merging(keras: Any) -> Any:
    a, b = _input(keras, 4, name="a"), _input(keras, 4, name="b")
    merged = [keras.layers.Multiply()([a, b]), keras.layers.Subtract()([a, b]), keras.layers.Maximum()([a, b]),
              keras.layers.Minimum()([a, b]), keras.layers.Average()([a, b]), keras.layers.Dot(axes=1)([a, b])]
    return keras.Model([a, b], keras.layers.Concatenate()(merged))


def reshaping(keras: Any) -> Any:
    return _stack(keras, _input(keras, 4, 6, 3), keras.layers.ZeroPadding2D(1), keras.layers.Cropping2D(1),
                  keras.layers.Permute((2, 1, 3)), keras.layers.Reshape((-1, 3)), keras.layers.Flatten(),
                  keras.layers.RepeatVector(2), keras.layers.Flatten())


def pooling(keras: Any) -> Any:
    x = _input(keras, 9, 9, 3)
    pooled = [keras.layers.Flatten()(keras.layers.AveragePooling2D(3, strides=2, padding="same")(x)),
              keras.layers.Flatten()(keras.layers.MaxPooling2D(2)(x)), keras.layers.GlobalMaxPooling2D()(x)]
    return keras.Model(x, keras.layers.Concatenate()(pooled))


def image_preprocessing(keras: Any) -> Any:
    return _stack(keras, _input(keras, 32, 32, 3), keras.layers.Rescaling(1 / 255.0), keras.layers.Resizing(16, 16),
                  keras.layers.CenterCrop(12, 12), keras.layers.Conv2D(2, 3), keras.layers.GlobalAveragePooling2D())


def inference_noops(keras: Any) -> Any:
    return _stack(keras, _input(keras, 10), keras.layers.Dropout(0.5), keras.layers.GaussianNoise(0.1),
                  keras.layers.AlphaDropout(0.1), keras.layers.Dense(3, activation="softmax"))


def named_outputs(keras: Any) -> Any:
    x = _input(keras, 5)
    hidden = keras.layers.Dense(4)(x)
    return keras.Model(x, {"score": keras.layers.Dense(1, name="score")(hidden),
                           "label": keras.layers.Dense(3, activation="softmax", name="label")(hidden)})


def einsum_dense(keras: Any) -> Any:
    return _stack(keras, _input(keras, 4, 6),
                  keras.layers.EinsumDense("abc,cd->abd", output_shape=(None, 5), bias_axes="d"),
                  keras.layers.Flatten())


def lambda_layer(keras: Any) -> Any:
    return _stack(keras, _input(keras, 6), keras.layers.Lambda(lambda t: t * 2.0 + 1.0), keras.layers.Dense(2))


def keras_ops(keras: Any) -> Any:
    x = _input(keras, 6, 5)
    ops = keras.ops
    return keras.Model(x, [ops.cumsum(x, axis=1), ops.top_k(x, 2)[0], ops.sort(x, axis=-1),
                           ops.einsum("bij,bkj->bik", x, x), ops.erf(x), ops.clip(x, -0.5, 0.5),
                           ops.where(x > 0, x, 0.0), ops.argmax(x, axis=-1), ops.logsumexp(x, axis=-1)])


def mixed_input_types(keras: Any) -> Any:
    ids, values, flags = (_input(keras, 3, dtype="int32", name="ids"), _input(keras, 3, name="values"),
                          _input(keras, 3, dtype="bool", name="flags"))
    ops = keras.ops
    joined = ops.concatenate([ops.cast(ids, "float32"), ops.where(flags, values, -values)], axis=-1)
    return keras.Model([ids, values, flags], keras.layers.Dense(2)(joined))


def audio_spectrograms(keras: Any) -> Any:
    """Waveforms in, spectrograms computed in the model (Keras 3's audio layers: an RFFT read as parts and as
    magnitudes)."""
    waveform = _input(keras, 2048, name="audio")
    mel = keras.layers.MelSpectrogram(fft_length=256, sequence_stride=128, num_mel_bins=16, sampling_rate=8000)
    linear = keras.layers.STFTSpectrogram(frame_length=128, frame_step=64, fft_length=128, mode="log")
    features = keras.layers.Concatenate()([keras.layers.Flatten()(mel(waveform)),
                                           keras.layers.Flatten()(linear(keras.layers.Reshape((2048, 1))(waveform)))])
    return keras.Model(waveform, keras.layers.Dense(3)(features))


def tensorflow_ops(keras: Any) -> Any:
    """Keras 2 functional models may call TensorFlow ops on their tensors: each becomes a TFOpLambda layer."""
    import tensorflow as tf

    x = _input(keras, 8)
    hidden = keras.layers.Dense(6)(x)
    joined = tf.concat([tf.nn.relu(hidden), tf.math.sigmoid(hidden) * 3.0,
                        tf.reduce_max(hidden, axis=1, keepdims=True)], axis=-1)
    return keras.Model(x, tf.reshape(joined, (-1, 13)))


CASES: dict[str, Builder] = {builder.__name__: builder for builder in (
    attention, query_value_attention, transformer, masked_lstm, bidirectional_gru, stacked_recurrent, simple_rnn,
    masking, text_cnn, variable_length_conv1d, variable_size_image, transposed_conv, conv3d, separable_conv,
    time_distributed, conv_lstm, activations, normalizations, merging, reshaping, pooling, image_preprocessing,
    inference_noops, named_outputs, einsum_dense, lambda_layer, keras_ops, mixed_input_types, audio_spectrograms,
    tensorflow_ops)}
KERAS_3_ONLY = frozenset({"keras_ops", "mixed_input_types", "audio_spectrograms"})
KERAS_2_ONLY = frozenset({"tensorflow_ops"})


def build(name: str, keras: Any) -> Any:
    """The model `name` built with `keras` (the keras or tf_keras module), its weights seeded."""
    keras.utils.set_random_seed(0)
    return CASES[name](keras)
