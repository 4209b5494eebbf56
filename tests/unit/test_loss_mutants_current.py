"""Tests written against the mutants of `losses/divergences.py`, `losses/distill.py` and
`losses/kdrl.py` that survived the other fast tests on the current code (issue 11, section 5;
`make mutate`): `pointwise` (the per-token terms the sparse loss sums) at JSD's end points and its
default beta; `DistillLoss` refusing unknown teacher keywords and `student_renorm` with a tail, and
passing the sampled tail's weights and `jsd_beta` on to the sparse loss. Each compares against a reference computed here from probabilities in float64.
Tensor-level, no model: well under a second."""

from __future__ import annotations

import pytest
import torch

from llm_teach.data.sparse_targets import sample_log_weights, sparse_from_logits
from llm_teach.trainers.losses.distill import ChunkedDistillLoss, DistillLoss
from llm_teach.trainers.losses.divergences import pointwise
from llm_teach.trainers.losses.sparse import sparse_divergence
from unit.test_sparse_targets import _collapse, _pair


def _logps(seed: int, shape=(3, 7)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * 2).log_softmax(-1)


def _reference_terms(s: torch.Tensor, t: torch.Tensor, divergence: str, beta: float) -> torch.Tensor:
    """Per-token terms from the probabilities themselves (TRL's end points: jsd at beta 0 is
    forward KL, at beta 1 reverse KL)."""
    p, q = t.exp(), s.exp()
    if divergence == "jsd" and beta == 0.0:
        divergence = "forward_kl"
    if divergence == "jsd" and beta == 1.0:
        divergence = "reverse_kl"
    if divergence == "forward_kl":
        return p * torch.log(p / q)
    if divergence == "reverse_kl":
        return q * torch.log(q / p)
    m = beta * p + (1 - beta) * q
    return beta * p * torch.log(p / m) + (1 - beta) * q * torch.log(q / m)


@pytest.mark.parametrize("divergence, beta", [("forward_kl", 0.5), ("reverse_kl", 0.5), ("jsd", 0.3),
                                              ("jsd", 0.0), ("jsd", 1.0)])
def test_pointwise_terms_are_each_tokens_share_of_the_divergence(divergence, beta):
    s, t = _logps(0), _logps(1)
    want = _reference_terms(s, t, divergence, beta)
    torch.testing.assert_close(pointwise(s, t, divergence, beta), want, rtol=1e-10, atol=1e-12)
    # the end points are the KLs, not the JSD formula's limit (which is 0 at both ends)
    assert want.sum(-1).min() > 1e-3


def test_pointwise_default_beta_is_a_half_and_unknown_divergences_are_refused():
    s, t = _logps(0), _logps(1)
    torch.testing.assert_close(pointwise(s, t, "jsd"), _reference_terms(s, t, "jsd", 0.5), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="unknown divergence 'kl'"):
        pointwise(s, t, "kl")


@pytest.mark.parametrize("beta, kl", [(0.0, "forward_kl"), (1.0, "reverse_kl")])
def test_sparse_jsd_at_its_end_points_is_the_kl(beta, kl):
    """`DistillLoss(divergence="jsd", jsd_beta=0)` with a stored tail goes through `pointwise`:
    it must give the (coarsened) forward KL, as the dense and top-k losses do."""
    teacher, student = _pair()
    target = sparse_from_logits(teacher, 8, (1.0,))
    got = sparse_divergence(student, target.ids, target.logprobs.double(), target.log_tail[..., 0].double(),
                            None, "jsd", beta)
    s, t = _collapse(student.log_softmax(-1), target.ids), _collapse(teacher.log_softmax(-1), target.ids)
    torch.testing.assert_close(got, _reference_terms(s, t, kl, 0.5).sum(-1), rtol=1e-5, atol=1e-6)


# --- distill.py: the teacher keywords and the sampled tail through DistillLoss ------------------


def test_unknown_teacher_keywords_are_named_not_ignored():
    s, t = _pair()
    mask = torch.ones(2, 5)
    # a misspelt keyword would otherwise drop the tail silently and fall back to a renormalized top-k
    with pytest.raises(TypeError, match=r"unexpected teacher keyword\(s\): teacher_a, teacher_log_tails$"):
        DistillLoss().masked_sums(s, mask, teacher_logits=t, teacher_log_tails=t[..., 0], teacher_a=t)
    hidden, head = torch.randn(2, 5, 4), torch.randn(64, 4)
    with pytest.raises(TypeError, match=r"unexpected teacher keyword\(s\): teacher_topk_id$"):
        ChunkedDistillLoss(chunk_size=2)(hidden, head, mask, teacher_logits=t, teacher_topk_id=t)


def test_student_renorm_with_a_tail_is_refused_saying_why():
    teacher, student = _pair()
    target = sparse_from_logits(teacher, 8, (1.0,))
    for part in ("student_renorm compares conditionals on a renormalized top-k",
                 r"its tail \(teacher_log_tail\) needs no renormalization"):
        with pytest.raises(ValueError, match=part):
            DistillLoss(student_renorm=True)(student, torch.ones(2, 5), teacher_topk_ids=target.ids,
                                             teacher_topk_logprobs=target.logprobs,
                                             teacher_log_tail=target.log_tail[..., 0])


@pytest.mark.parametrize("divergence, beta", [("jsd", 0.3), ("forward_kl", 0.5)])
def test_sampled_tail_through_distill_loss_is_the_weighted_sum_of_dense_terms(divergence, beta):
    """top-k terms + sum_j w_j * term_j over the tail samples, w_j = tail_s / (M p_s(j)), all
    from the dense teacher and student at the loss temperature (T=2; samples drawn at T=2)."""
    teacher, student = _pair(vocab=64, heavy=True)
    k, m, temp = 4, 6, 2.0
    target = sparse_from_logits(teacher, k, (1.0, temp), m, temp, torch.Generator().manual_seed(0))
    mask = torch.tensor([[1.0, 1, 0, 1, 1], [0, 1, 1, 1, 0.5]], dtype=torch.float64)
    weights = sample_log_weights(target.logprobs, k, target.log_tail[..., 1], temp)
    out = DistillLoss(divergence, beta, temperature=temp)(
        student, mask, teacher_topk_ids=target.ids, teacher_topk_logprobs=target.logprobs,
        teacher_log_tail=target.log_tail[..., 1], teacher_sample_log_weights=weights)

    t_logps, s_logps = (teacher / temp).log_softmax(-1), (student / temp).log_softmax(-1)
    terms = _reference_terms(s_logps.gather(-1, target.ids), t_logps.gather(-1, target.ids), divergence, beta)
    tail = 1 - t_logps.gather(-1, target.ids[..., :k]).exp().sum(-1, keepdim=True)
    w = tail / (m * t_logps.gather(-1, target.ids[..., k:]).exp())
    d = terms[..., :k].sum(-1) + (w * terms[..., k:]).sum(-1)
    want = (d * mask).sum() / mask.sum()
    assert out.kd.item() == pytest.approx(want.item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(temp**2 * want.item(), rel=1e-5)
    # the samples matter: the same top-k with the tail as one bucket gives another value
    bucket = DistillLoss(divergence, beta, temperature=temp)(
        student, mask, teacher_topk_ids=target.ids[..., :k], teacher_topk_logprobs=target.logprobs[..., :k],
        teacher_log_tail=target.log_tail[..., 1])
    assert abs(bucket.kd.item() - want.item()) > 1e-3 * want.item()
