"""KDRL loss pieces at the tensor level (fast: the mutation-testing set with test_losses.py):
the normalization over all completion tokens, the importance weights, NaN rewards kept in KD."""

from __future__ import annotations

import math

import pytest
import torch


def test_masked_responses_shrink_the_term_not_reweight_the_rest():
    """N counts every completion token: masking half the responses halves the term when the two
    halves have equal per-token KD (a kept-token mean would leave it unchanged)."""
    from llm_teach.trainers.losses.kdrl import kd_term

    per_token = torch.full((4, 3), 2.0)
    mask = torch.ones(4, 3)
    keep = torch.tensor([1.0, 0.0, 1.0, 0.0])
    ones = torch.ones(4, 3)
    full = kd_term(per_token, mask, ones, mask.sum())
    half = kd_term(per_token, mask * keep[:, None], ones, mask.sum())
    assert full.item() == pytest.approx(2.0) and half.item() == pytest.approx(1.0)
    weights = torch.full((4, 3), 0.5)
    assert kd_term(per_token, mask, weights, mask.sum()).item() == pytest.approx(1.0)
    assert kd_term(per_token, torch.zeros(4, 3), ones, 0).item() == 0.0  # empty batch: 0, not NaN


def test_importance_weights_are_detached_clipped_and_one_on_policy():
    from llm_teach.trainers.losses.kdrl import importance_weights

    logps = torch.tensor([[-1.0, -1.0, -1.0, -1.0]], requires_grad=True)
    old = torch.tensor([[-1.0, -1.1, -0.5, -2.0]])
    w = importance_weights(logps, old, 0.2, 0.3)
    assert not w.requires_grad
    assert w.tolist()[0] == pytest.approx([1.0, math.exp(0.1), 0.8, 1.3])
    assert importance_weights(logps, None).tolist() == [[1.0] * 4]


def test_nan_correctness_is_unknown_and_keeps_kd():
    from llm_teach.trainers.losses.kdrl import reward_mask

    r = torch.tensor([1.0, float("nan"), 0.0, 1.0, float("nan"), float("nan"), 0.0, float("nan")])
    assert reward_mask(r, 2, "response").tolist() == [0, 1, 1, 0, 1, 1, 1, 1]
    # groups (1, nan): has a correct one; (0, 1): yes; (nan, nan): nobody known correct; (0, nan): none
    assert reward_mask(r, 2, "group").tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


def test_defaults_and_small_denominators():
    """The functions' own defaults (k2, token mean, no mask, GRPO's eps 0.2) and counts below 2
    (one kept token divides by 1, an empty batch by nothing)."""
    from llm_teach.trainers.losses.kdrl import importance_weights, kd_estimator, kd_term, masked_mean, reward_mask

    s, t = torch.tensor([[-0.5, -2.0]]), torch.tensor([[-1.0, -1.0]])
    assert torch.equal(kd_estimator(s, t), kd_estimator(s, t, "k2"))
    v, m = torch.tensor([[3.0, 5.0]]), torch.tensor([[1, 0]])
    assert masked_mean(v, m).item() == 3.0  # token mean over ONE token: divided by 1
    assert kd_term(v, m, torch.ones(1, 2), 1).item() == 3.0
    r64 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    assert reward_mask(r64, 2).dtype == torch.float32 and reward_mask(r64, 2).tolist() == [1.0, 1.0]
    w = importance_weights(torch.zeros(1, 2), torch.tensor([[2.0, -2.0]]))
    assert w.tolist() == [[pytest.approx(0.8), pytest.approx(1.2)]]


def test_bad_options_name_themselves():
    from llm_teach.trainers.losses.kdrl import beta_schedule, kd_estimator, masked_mean, reward_mask

    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="k4"):
        kd_estimator(x, x, "k4")
    with pytest.raises(ValueError, match="batch"):
        masked_mean(x, x, "batch")
    with pytest.raises(ValueError, match="cosine"):
        beta_schedule(0, kind="cosine")
    with pytest.raises(ValueError, match="sometimes"):
        reward_mask(torch.zeros(4), 2, "sometimes")
    with pytest.raises(ValueError, match="groups of 3"):
        reward_mask(torch.zeros(4), 3, "group")
