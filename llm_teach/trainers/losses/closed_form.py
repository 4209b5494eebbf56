"""Per-row divergence against full teacher logits AND its gradient with respect to the student's
logits, in closed form: the fast path of `TiledDistillLoss`'s fused tiles.

Why by hand: autograd of `dense_divergence` on a `[tile, V]` tile allocates a fresh tile-sized
tensor for every intermediate and every backward node (about twice as many full-width passes as
needed, each a page-faulted allocation); at V = 49k-152k those passes are a quarter of the
loss's time on a CPU. Every divergence here is a sum of per-token terms of the student's
probabilities `q = softmax(z)`, `z = logits / T`, so with `g_j = dD/dq_j` its gradient is

    dD/dz = q * (g - <q, g>)

and `q * g` is simple for each:
* forward KL, `sum p log(p/q)`:   q g = -p, <q, g> = -1         -> dD/dz = q - p
* reverse KL, `sum q log(q/p)`:   g = log(q/p) + 1               -> dD/dz = q * (log(q/p) - D)
* JSD(beta), M = beta p + (1 - beta) q: g = (1 - beta) log(q/M)  (the derivative through M cancels)

The values are the same formulas as `divergences.py` (tested equal, and the gradients equal
autograd's, in tests/unit/test_closed_form_divergence.py); tiles are overwritten in place.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def divergence_and_grad(student_logits: Tensor, teacher_logits: Tensor, divergence: str,
                        beta: float = 0.5, temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """`(D [n], dD/d student_logits [n, V])` for `[n, V]` logits of both models (the teacher's
    without gradient), both softened by `temperature`; D is `dense_divergence`'s, without T^2.
    `divergence` in forward_kl / reverse_kl / jsd (TRL convention: jsd at beta 0 / 1 is forward
    / reverse KL)."""
    if divergence == "jsd" and beta in (0.0, 1.0):
        divergence = "forward_kl" if beta == 0.0 else "reverse_kl"
    if student_logits.dtype in (torch.float16, torch.bfloat16):  # as `distill._upcast`
        student_logits, teacher_logits = student_logits.float(), teacher_logits.float()
    inv_t = 1.0 / temperature
    soft = (lambda x: x * inv_t) if temperature != 1.0 else (lambda x: x)
    s = torch.log_softmax(soft(student_logits), -1)  # log q
    t = torch.log_softmax(soft(teacher_logits.detach().to(s.dtype)), -1)  # log p
    if divergence == "forward_kl":
        p = t.exp()
        value = _rowdot(p, t.sub_(s))
        grad = s.exp_().sub_(p)
    elif divergence == "reverse_kl":
        log_ratio = s.sub(t)  # log(q/p)
        q = s.exp_()
        value = _rowdot(q, log_ratio)
        grad = log_ratio.sub_(value[:, None]).mul_(q)
    elif divergence == "jsd":
        log_m = torch.logaddexp(s + math.log1p(-beta), t + math.log(beta))
        p, q = t.exp(), s.exp()
        log_pm, log_qm = t.sub_(log_m), s.sub_(log_m)
        del log_m
        value = beta * _rowdot(p, log_pm) + (1 - beta) * _rowdot(q, log_qm)
        g = log_qm.mul_(1 - beta)
        grad = g.sub_(_rowdot(q, g)[:, None]).mul_(q)
    else:
        raise ValueError(f"unknown divergence {divergence!r}")
    return value, grad.mul_(inv_t) if temperature != 1.0 else grad


def _rowdot(a: Tensor, b: Tensor) -> Tensor:
    """`(a * b).sum(-1)` for [n, V] without a third [n, V] tensor."""
    return torch.einsum("ij,ij->i", a, b)


def cross_entropy_and_grad(logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """`(CE [n], dCE/d logits [n, V])` at temperature 1, as `F.cross_entropy(reduction="none")`:
    targets of -100 count 0 with a zero gradient."""
    x = logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits
    valid = (targets != -100).to(x.dtype)
    index = targets.long().clamp_min(0)[:, None]
    lse = x.logsumexp(-1)
    ce = (lse - x.gather(-1, index).squeeze(-1)) * valid
    grad = x.sub(lse[:, None]).exp_()
    grad.scatter_add_(-1, index, torch.full_like(index, -1, dtype=x.dtype))
    return ce, grad.mul_(valid[:, None])
