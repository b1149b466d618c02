"""Answers of a request's slices joined into one (runtime.slices)."""

from __future__ import annotations

import numpy as np

from ortserve.errors import Overloaded
from ortserve.runtime.slices import JoinedAnswer, row_slices


def test_slices_are_views_of_at_most_the_limit() -> None:
    inputs = {"a": np.arange(10).reshape(5, 2), "b": np.arange(5)}
    pieces = row_slices(inputs, 5, 2)
    assert [len(piece["a"]) for piece in pieces] == [2, 2, 1]
    assert all(np.shares_memory(piece["a"], inputs["a"]) for piece in pieces)
    np.testing.assert_array_equal(np.concatenate([piece["b"] for piece in pieces]), inputs["b"])


def test_parts_arriving_out_of_order_are_joined_in_slice_order() -> None:
    answers: list = []
    joined = JoinedAnswer(answers.append, 3)
    for index in (2, 0, 1):
        assert not answers
        joined.part(index)({"y": np.full((index + 1, 2), index)})
    (answer,) = answers
    np.testing.assert_array_equal(answer["y"][:, 0], [0, 1, 1, 2, 2, 2])


def test_the_first_error_is_the_answer_and_later_parts_are_ignored() -> None:
    answers: list = []
    joined = JoinedAnswer(answers.append, 3)
    joined.part(0)({"y": np.zeros((1, 2))})
    refusal = Overloaded("the model is overloaded", 1.0, "queue_full")
    joined.part(1)(refusal)
    joined.part(2)({"y": np.zeros((1, 2))})
    assert answers == [refusal]


def test_an_abandoned_request_gets_no_answer() -> None:
    answers: list = []
    joined = JoinedAnswer(answers.append, 2)
    joined.part(0)({"y": np.zeros((1, 2))})
    joined.abandon()
    joined.part(1)({"y": np.zeros((1, 2))})
    assert answers == []
