"""Distillation loss options at the tensor level (written against mutation-testing survivors):
the documented defaults, option checks that name the bad value, bf16/fp16 inputs upcast (and
float64 left alone), one-token masks, chunk size 1."""

from __future__ import annotations

import pytest
import torch

from llm_teach.trainers.losses.distill import ChunkedDistillLoss, DistillLoss, dense_divergence, topk_divergence
from llm_teach.trainers.losses.divergences import jsd


def _logits(seed=0, shape=(2, 3, 11), dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * 2).to(dtype)


def test_defaults_are_forward_kl_at_t1_and_half_jsd():
    s, t = _logits(0), _logits(1)
    torch.testing.assert_close(dense_divergence(s, t), dense_divergence(s, t, "forward_kl", temperature=1.0))
    torch.testing.assert_close(dense_divergence(s, t, "jsd"), dense_divergence(s, t, "jsd", jsd_beta=0.5))
    lp, ids = t.log_softmax(-1).topk(4, dim=-1)
    torch.testing.assert_close(topk_divergence(s, ids, lp), topk_divergence(s, ids, lp, "forward_kl", temperature=1.0))
    torch.testing.assert_close(topk_divergence(s, ids, lp, "jsd"), topk_divergence(s, ids, lp, "jsd", jsd_beta=0.5))
    ls, lt = s.log_softmax(-1), t.log_softmax(-1)
    torch.testing.assert_close(jsd(ls, lt), jsd(ls, lt, 0.5))
    mask = torch.ones(2, 3)
    torch.testing.assert_close(DistillLoss()(s, mask, teacher_logits=t).loss,
                               DistillLoss("forward_kl", temperature=1.0)(s, mask, teacher_logits=t).loss)


@pytest.mark.parametrize("make, match", [
    (lambda: DistillLoss(temperature=0.0), "temperature"),
    (lambda: DistillLoss(jsd_beta=1.5), "jsd_beta"),
    (lambda: DistillLoss("kl"), "kl"),
    (lambda: ChunkedDistillLoss(chunk_size=0), "chunk_size"),
    (lambda: jsd(torch.zeros(1, 2), torch.zeros(1, 2), 1.5), "beta"),
    (lambda: dense_divergence(torch.zeros(1, 1, 2), torch.zeros(1, 1, 2), "kl"), "kl"),
])
def test_bad_options_name_the_value(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_half_precision_logits_are_upcast_and_float64_is_kept():
    s, t = _logits(0), _logits(1)
    for dtype in (torch.bfloat16, torch.float16):
        low = dense_divergence(s.to(dtype), t.to(dtype))
        exact = dense_divergence(s.to(dtype).double(), t.to(dtype).double())
        assert low.dtype == torch.float32
        torch.testing.assert_close(low.double(), exact, atol=1e-5, rtol=1e-5)
    s64, t64 = s.double(), t.double()
    assert dense_divergence(s64, t64).dtype == torch.float64


def test_one_token_mask_is_that_tokens_divergence():
    s, t = _logits(0), _logits(1)
    mask = torch.zeros(2, 3)
    mask[1, 2] = 1
    out = DistillLoss()(s, mask, teacher_logits=t)
    assert out.kd.item() == pytest.approx(dense_divergence(s, t)[1, 2].item(), rel=1e-6)


def test_chunk_size_one_equals_one_chunk():
    g = torch.Generator().manual_seed(3)
    hidden, head = torch.randn(2, 5, 4, generator=g), torch.nn.Linear(4, 11, bias=False)
    teacher = torch.randn(2, 5, 11, generator=g)
    mask = torch.ones(2, 5)
    one = ChunkedDistillLoss(chunk_size=1)(hidden, head, mask, teacher_logits=teacher)
    full = ChunkedDistillLoss(chunk_size=5)(hidden, head, mask, teacher_logits=teacher)
    torch.testing.assert_close(one.loss, full.loss)


def test_topk_jsd_at_beta_zero_is_forward_kl_and_reverse_kl_ignores_jsd_beta():
    s, t = _logits(0), _logits(1)
    lp, ids = t.log_softmax(-1).topk(4, dim=-1)
    torch.testing.assert_close(topk_divergence(s, ids, lp, "jsd", jsd_beta=0.0), topk_divergence(s, ids, lp))
    rkl = topk_divergence(s, ids, lp, "reverse_kl", student_renorm=True)
    torch.testing.assert_close(topk_divergence(s, ids, lp, "reverse_kl", jsd_beta=0.0, student_renorm=True), rkl)


def test_topk_and_teacher_input_errors_say_what_to_do():
    s, t = _logits(0), _logits(1)
    lp, ids = t.log_softmax(-1).topk(4, dim=-1)
    for part in ("reverse KL against a top-k teacher is infinite", "pass student_renorm=True",
                 "forward_kl / jsd with beta < 1"):
        with pytest.raises(ValueError, match=part):
            topk_divergence(s, ids, lp, "reverse_kl")
    with pytest.raises(ValueError, match="unknown divergence 'kl'"):
        topk_divergence(s, ids, lp, "kl")
    mask = torch.ones(2, 3)
    with pytest.raises(ValueError, match="give teacher_logits or teacher_topk_ids"):
        DistillLoss()(s, mask, teacher_topk_ids=ids)  # the log-probs are missing
    with pytest.raises(ValueError, match="lambda_ce > 0 needs targets"):
        DistillLoss(lambda_ce=1.0)(s, mask, teacher_logits=t)
