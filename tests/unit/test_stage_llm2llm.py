"""LLM2LLM: parsing the teacher's new problems."""

from __future__ import annotations

import pytest

from llm_teach.stages.llm2llm import parse_generated


@pytest.mark.parametrize("text, expected", [
    ("Question: What is 2+2?\nSolution: 2+2=4, so \\boxed{4}", ("What is 2+2?", "2+2=4, so \\boxed{4}")),
    ("Sure! question: A?\nAnswer: B", ("A?", "B")),
    ("no format at all", None),
    ("Question: \nSolution: ", None),
])
def test_parse_generated(text, expected):
    assert parse_generated(text) == expected
