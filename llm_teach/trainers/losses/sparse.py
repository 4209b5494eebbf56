"""Divergence against a sparse teacher that keeps its tail: top-k + one tail bucket, or top-k +
importance-weighted tail samples (the stored format: `llm_teach/data/sparse_targets.py`).

Why not renormalize the top-k: that drops the teacher's tail and overstates forward KL (+87% at
T=2 from top-32 on SmolLM2). Here the teacher is a proper distribution at the loss temperature:
its top-k log-probs re-tempered and scaled to `1 - tail_T`, plus

* no samples: one bucket holding `tail_T`, matched against the student's mass outside the same
  ids (`log(1 - sum_support q)`, computed as a log-sum-exp over the masked vocabulary, so it is
  exact even when the support holds almost all of the student's mass). The divergence is the
  exact divergence between the two distributions coarsened to support + bucket: a lower bound
  of the full one (data processing), with no infinities, so reverse KL and JSD are fine too.
* M samples: each sampled token j adds `w_j * p_T(j) f(q_j / p_T(j))`, with the importance
  weight `w_j = tail_s / (M p_s(j))` of its draw at the store's sample temperature; their sum
  is an unbiased estimate of the tail's part of the divergence (and of its gradient).
"""

from __future__ import annotations

import torch
from torch import Tensor

from llm_teach.data.sparse_targets import PAD_LOGPROB, tempered_logprobs
from llm_teach.trainers.losses.divergences import pointwise

_NEG = -1e30


def sparse_divergence(
    student_logits: Tensor,
    teacher_ids: Tensor,
    teacher_logprobs: Tensor,
    teacher_log_tail: Tensor,
    teacher_sample_log_weights: Tensor | None = None,
    divergence: str = "forward_kl",
    jsd_beta: float = 0.5,
    temperature: float = 1.0,
) -> Tensor:
    """Per-position divergence between the full student and a sparse teacher with its tail.

    Args:
        student_logits: [B, T, V] (float32 or upcast by the caller), aligned with the teacher.
        teacher_ids: [B, T, K + M] the K top-k ids, then the M tail samples (M may be 0).
        teacher_logprobs: [B, T, K + M] their teacher log-probs at T=1; entries at or below
            PAD_LOGPROB / 2 are padding and count for nothing.
        teacher_log_tail: [B, T] log of the teacher's mass outside the top-k AT `temperature`.
        teacher_sample_log_weights: [B, T, M] log importance weight of each sample, or None
            when there are no samples (then the tail is one bucket).
        divergence, jsd_beta: as `topk_divergence`.
        temperature: the loss temperature (no T^2 factor here).

    Returns:
        [B, T] divergence per position.
    """
    m = 0 if teacher_sample_log_weights is None else teacher_sample_log_weights.size(-1)
    k = teacher_ids.size(-1) - m
    lp = teacher_logprobs.float().detach()
    valid = lp > PAD_LOGPROB / 2
    # Padding must not enter the support's normalizer. Masks are huge finite negatives, not
    # -inf: an all-masked row would otherwise turn into NaN gradients through logsumexp.
    teacher = tempered_logprobs(lp.masked_fill(~valid, _NEG), k, teacher_log_tail.detach(), temperature)
    logits = student_logits / temperature
    log_z = logits.logsumexp(-1, keepdim=True)
    ids = teacher_ids.long()
    student = logits.gather(-1, ids) - log_z
    terms = pointwise(student, teacher, divergence, jsd_beta).masked_fill(~valid, 0.0)
    d = terms[..., :k].sum(-1)
    if m:
        weights = teacher_sample_log_weights.float().detach().exp()
        return d + (weights * terms[..., k:]).sum(-1)
    # The student's own tail: everything but the (valid) support ids. Padding repeats a
    # support id, so pointing invalid entries at entry 0 masks nothing extra.
    support = torch.where(valid[..., :k], ids[..., :k], ids[..., :1])
    student_tail = logits.scatter(-1, support, _NEG).logsumexp(-1) - log_z.squeeze(-1)
    teacher_tail = teacher_log_tail.float().detach().clamp(min=PAD_LOGPROB)
    bucket = pointwise(student_tail.clamp(min=PAD_LOGPROB), teacher_tail, divergence, jsd_beta)
    return d + bucket
