"""The HF backend on SmolLM2: stop strings, answers and scores."""

from __future__ import annotations

import math

import pytest

from integration.test_hf_backend import CHAT
from llm_teach.backends.base import SamplingConfig

pytestmark = pytest.mark.slow  # every test here loads the real SmolLM2-135M


def test_stop_strings_cut_the_text(smollm2_backend):
    out = smollm2_backend.generate(["The capital of France is"], 1,
                                   SamplingConfig(max_new_tokens=24, stop=["."]))[0][0]
    assert "." not in out.completion and out.finish_reason == "stop"
    assert "Paris" in out.completion


def test_smollm2_answers_and_scores_its_own_greedy_answer_highly(smollm2_backend):
    out = smollm2_backend.generate([CHAT], 1, SamplingConfig(max_new_tokens=24, logprobs=True))[0][0]
    assert "5" in out.completion and out.finish_reason == "stop"
    right = smollm2_backend.score([CHAT], [out.completion])[0]
    wrong = smollm2_backend.score([CHAT], [out.completion.replace("5", "7")])[0]
    assert right.logprobs == pytest.approx(out.logprobs, abs=1e-3)
    assert right.total > wrong.total
    assert all(math.isfinite(x) for x in right.logprobs)
