"""Evaluation: the metrics' math."""

from __future__ import annotations

import pytest

from llm_teach.evaluation import EvalConfig, majority_correct, pass_at_k, summarize


@pytest.mark.parametrize("n, c, k, expected", [
    (4, 0, 1, 0.0), (4, 4, 1, 1.0), (4, 1, 1, 0.25), (4, 1, 2, 0.5), (4, 2, 2, 5 / 6), (4, 3, 2, 1.0), (8, 1, 8, 1.0),
])
def test_unbiased_pass_at_k(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_majority_groups_equivalent_answers_and_ignores_missing():
    item = {"answers": ["7", "1,000", None, "1000.0", "7", None], "correct": [False, True, False, True, False, False]}
    assert majority_correct(item, "gsm8k") is False  # 2 votes each: the answer seen first (7) wins
    item["answers"][2], item["correct"][2] = "$1000", True
    assert majority_correct(item, "gsm8k") is True  # 1,000 ~ 1000.0 ~ $1000 vote together
    assert majority_correct({"answers": [None, None], "correct": [False, False]}, "gsm8k") is False


def test_summary_of_known_items():
    items = [
        {"correct": [True, True, False, False], "answers": ["1", "1", "2", "2"], "finish_reasons": ["stop"] * 4},
        {"correct": [False] * 4, "answers": [None] * 4, "finish_reasons": ["length"] * 4},
    ]
    s = summarize(items, EvalConfig(benchmark="gsm8k", samples=4), model="m", backend="hf")
    assert s["accuracy"] == pytest.approx(0.25) and s["n"] == 2
    assert s["pass_at_k"] == pytest.approx(0.5) and s["pass_at"]["1"] == pytest.approx(0.25)
    assert s["maj_at_k"] == pytest.approx(0.5) and s["truncated_fraction"] == pytest.approx(0.5)
    assert s["no_answer_fraction"] == pytest.approx(0.5)
