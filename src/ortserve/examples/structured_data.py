"""A Keras model of structured data as the Keras tutorials build one: an input per column, the preprocessing
layers inside the model (StringLookup one-hot, multi-hot and embedded ids with a mask token, IntegerLookup
counts, Normalization, Discretization, CategoryEncoding), a small network behind them. For the structured-data
conversion tests (tests/convert/test_convert_structured_data.py) and benchmark (benchmarks/structured_data.py).
Needs `keras` (the tensorflow extra)."""

from __future__ import annotations

from typing import Any

import numpy as np

ANIMALS = ["cat", "dog", "bird"]
BREEDS = ["tabby", "collie", "siamese", "beagle"]
COLORS = ["black", "white", "brown"]
AGES = [1, 2, 3, 5, 8]
COLUMNS = ["animal", "breed", "colors", "age", "fee", "weight", "rooms"]


def adoption_model(seed: int = 7) -> Any:
    """An adoption-speed classifier (three classes) of seven columns: `animal`, `breed` and `colors` (two a row)
    strings; `age` and `rooms` int64; `fee` and `weight` float32."""
    import keras

    keras.utils.set_random_seed(seed)
    inputs = {
        "animal": keras.Input((1,), dtype="string", name="animal"),
        "breed": keras.Input((1,), dtype="string", name="breed"),
        "colors": keras.Input((2,), dtype="string", name="colors"),
        "age": keras.Input((1,), dtype="int64", name="age"),
        "fee": keras.Input((1,), dtype="float32", name="fee"),
        "weight": keras.Input((1,), dtype="float32", name="weight"),
        "rooms": keras.Input((1,), dtype="int64", name="rooms"),
    }
    breed_ids = keras.layers.StringLookup(vocabulary=BREEDS, mask_token="")(inputs["breed"])
    features = [
        keras.layers.StringLookup(vocabulary=ANIMALS, output_mode="one_hot")(inputs["animal"]),
        keras.layers.Flatten()(keras.layers.Embedding(len(BREEDS) + 2, 3, mask_zero=True)(breed_ids)),
        keras.layers.StringLookup(vocabulary=COLORS, output_mode="multi_hot")(inputs["colors"]),
        keras.layers.IntegerLookup(vocabulary=AGES, output_mode="count")(inputs["age"]),
        keras.layers.Normalization(mean=60.0, variance=900.0)(inputs["fee"]),
        keras.layers.Discretization(bin_boundaries=[1.0, 10.0, 25.0], output_mode="one_hot")(inputs["weight"]),
        keras.layers.CategoryEncoding(num_tokens=5, output_mode="one_hot")(inputs["rooms"]),
    ]
    hidden = keras.layers.Dense(8, activation="relu")(keras.layers.concatenate(features))
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="speed")(hidden))


def random_rows(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """Rows as a client sends them, mostly of known values, some unknown or missing."""
    rng = np.random.default_rng(seed)

    def pick(known: list[Any], unknown: Any) -> Any:
        return unknown if rng.random() < 0.1 else known[int(rng.integers(len(known)))]

    return [{"animal": pick(ANIMALS, "lizard"), "breed": pick(BREEDS, ""),
             "colors": [pick(COLORS, "green"), pick(COLORS, "green")], "age": int(pick(AGES, 40)),
             "fee": round(float(rng.uniform(0, 300)), 2), "weight": round(float(rng.uniform(0.2, 40)), 1),
             "rooms": int(rng.integers(-1, 5))} for _ in range(count)]


def columns(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The rows as one array per column, shaped and typed as the model's inputs ([rows, 1], colors [rows, 2])."""
    arrays = {}
    for name in COLUMNS:
        values = [row[name] if isinstance(row[name], list) else [row[name]] for row in rows]
        first = values[0][0]
        dtype = object if isinstance(first, str) else np.int64 if isinstance(first, int) else np.float32
        arrays[name] = np.array(values, dtype=dtype)
    return arrays
