"""GRPO rewards grade with the problem source."""

from __future__ import annotations

import torch


def test_grpo_rewards_grade_with_the_problem_source():
    from llm_teach.trainers.grpo import boxed_format, correctness

    completions = [[{"role": "assistant", "content": "so \\boxed{1,000}"}], [{"role": "assistant", "content": "1000"}],
                   [{"role": "assistant", "content": "\\boxed{-5}"}]]
    golds = ["1000", "1000", "5"]
    assert correctness(completions, golds, ["gsm8k"] * 3, ["{}"] * 3) == [1.0, 1.0, 0.0]
    assert boxed_format(completions) == [1.0, 0.0, 1.0]
    assert torch.tensor(correctness(["\\boxed{7}"], ["7"], ["math500"], ["{}"])).item() == 1.0
