"""Divergences between two distributions given as log-probs over the same support, [..., S]:
forward KL, reverse KL and GKD's generalized JSD. The building blocks of the distillation
losses (`distill.py`), which decide what the support is (full vocabulary or a teacher's top-k).

Each returns the per-position divergence [...] with no reduction; the student comes first,
the teacher second, whatever the direction of the KL.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _kl(p_logps: Tensor, q_logps: Tensor) -> Tensor:
    """KL(p || q) = sum_s p_s (log p_s - log q_s) over the last dim. [..., S] -> [...]"""
    return (p_logps.exp() * (p_logps - q_logps)).sum(-1)


def pointwise(student_logps: Tensor, teacher_logps: Tensor, divergence: str, beta: float = 0.5) -> Tensor:
    """The per-token terms whose sum over the support is the divergence, [..., S] -> [..., S].

    Each term is `p_s * f(q_s / p_s)` (teacher p, student q) for the divergence's f, so it
    depends on that token's two probabilities only: summing a subset, a coarsened bucket, or
    importance-weighted samples of the support are all meaningful (the sparse targets of
    `llm_teach.data.sparse_targets` do exactly that). `sum(-1)` of it equals `forward_kl`,
    `reverse_kl` or `jsd`.
    """
    s, t = student_logps, teacher_logps
    if divergence == "jsd" and beta in (0.0, 1.0):
        divergence = "forward_kl" if beta == 0.0 else "reverse_kl"
    if divergence == "forward_kl":
        return t.exp() * (t - s)
    if divergence == "reverse_kl":
        return s.exp() * (s - t)
    if divergence != "jsd":
        raise ValueError(f"unknown divergence {divergence!r}")
    mix = torch.logaddexp(s + math.log1p(-beta), t + math.log(beta))
    return beta * t.exp() * (t - mix) + (1 - beta) * s.exp() * (s - mix)


def forward_kl(student_logps: Tensor, teacher_logps: Tensor) -> Tensor:
    """Forward KL, KL(teacher || student): mode-covering, the classic Hinton KD objective.

    Args:
        student_logps: student log-probs over the support, [..., S].
        teacher_logps: teacher log-probs over the same support, [..., S].

    Returns:
        Per-position divergence, [...] (no reduction).

    Example:
        >>> s, t = torch.randn(2, 5, 7).log_softmax(-1), torch.randn(2, 5, 7).log_softmax(-1)
        >>> forward_kl(s, t).shape
        torch.Size([2, 5])
    """
    return _kl(teacher_logps, student_logps)


def reverse_kl(student_logps: Tensor, teacher_logps: Tensor) -> Tensor:
    """Reverse KL, KL(student || teacher): mode-seeking, what on-policy KD (KDRL, MiniLLM) uses.

    Args / Returns: as `forward_kl`, [..., S] -> [...].
    """
    return _kl(student_logps, teacher_logps)


def jsd(student_logps: Tensor, teacher_logps: Tensor, beta: float = 0.5) -> Tensor:
    """Generalized Jensen-Shannon divergence of GKD (Agarwal et al. 2024, eq. 1), TRL convention.

    With the mixture `M = beta * teacher + (1 - beta) * student`::

        JSD(beta) = beta * KL(teacher || M) + (1 - beta) * KL(student || M)

    and, exactly as TRL's `GKDTrainer.generalized_jsd_loss`, the end points are special-cased:
    `beta == 0` returns forward KL and `beta == 1` returns reverse KL. Note this makes the
    function discontinuous in beta: the formula itself tends to 0 at both ends (as
    `beta * KL(teacher || student)` for small beta), so beta=0.01 is ~100x smaller than beta=0.

    Args:
        student_logps: [..., S] log-probs.
        teacher_logps: [..., S] log-probs over the same support.
        beta: mixture weight of the teacher, in [0, 1].

    Returns:
        Per-position divergence, [...].
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"jsd beta must be in [0, 1], got {beta}")
    if beta == 0.0:
        return forward_kl(student_logps, teacher_logps)
    if beta == 1.0:
        return reverse_kl(student_logps, teacher_logps)
    mix = torch.logsumexp(
        torch.stack([student_logps + math.log1p(-beta), teacher_logps + math.log(beta)]), dim=0
    )
    return beta * _kl(teacher_logps, mix) + (1 - beta) * _kl(student_logps, mix)
