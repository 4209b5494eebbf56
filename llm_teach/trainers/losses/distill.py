"""Distillation losses (SSB, sequence KD, GKD-style): match the teacher's next-token
distribution at every completion position, either from full-vocabulary teacher logits or from
the teacher's stored top-k log-probs (see `llm_teach/data/logit_store.py`).

`DistillLoss` works on student logits; `ChunkedDistillLoss` works on hidden states + the
lm_head weight, runs `DistillLoss` chunk by chunk and never builds `[B, T, V]` logits for the
whole batch. Pure torch: no TRL here, so the trainers can wrap these without circular knowledge.

Alignment contract (all distillation losses): the CALLER shifts. `student_logits[:, t]` must
already be the prediction for the token at `targets[:, t]`, and the teacher tensors at `t` the
teacher's distribution for that same token. With a causal LM that means
`logits = model(input_ids).logits[:, :-1]` and `targets = input_ids[:, 1:]` (and the teacher
top-k stored per completion token is already in that frame). Nothing in this module shifts,
so shifting again here would silently train on the wrong token.
"""

from __future__ import annotations

import inspect
import math
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from llm_teach.trainers.losses.divergences import forward_kl, jsd, reverse_kl
from llm_teach.trainers.losses.sparse import sparse_divergence

Divergence = Literal["forward_kl", "reverse_kl", "jsd"]


def _upcast(x: Tensor) -> Tensor:
    # log_softmax over 100k+ classes in bf16/fp16 loses the small probabilities KD is about.
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _soften(logits: Tensor, temperature: float) -> Tensor:
    # Skipping the division at T=1 saves a full [.., V] pass forward and backward.
    return logits if temperature == 1.0 else logits / temperature


def topk_divergence(
    student_logits: Tensor,
    teacher_topk_ids: Tensor,
    teacher_topk_logprobs: Tensor,
    divergence: Divergence = "forward_kl",
    jsd_beta: float = 0.5,
    temperature: float = 1.0,
    student_renorm: bool = False,
) -> Tensor:
    """Per-position divergence between the student and a teacher known only on its top-k.

    The teacher is renormalized over its top-k support (`log_softmax(logprobs / T)` over the
    K entries): the stored log-probs are a truncation of its distribution and the mass it put
    elsewhere is unknown, so the only proper distribution we have is the one on the support.
    Re-tempering stored T=1 log-probs this way is exact on the support, because
    `log_softmax((logits - c) / T) == log_softmax(logits / T)`.

    The student, `student_renorm=False` (default): log-softmax over the FULL vocabulary, then
    gather at the K ids. The divergence is then the exact divergence between the full student
    distribution and the renormalized teacher (which is zero off the support):
      * forward KL: the sum over the support (off-support teacher terms are 0). It also pushes
        the student's mass onto the support, since sum_k p_k log q_k <= log sum_k q_k.
      * JSD (0 < beta < 1): the support terms plus the off-support student mass `q_rest`,
        which contributes `-(1 - beta) * log(1 - beta) * q_rest` in closed form.
      * reverse KL (and JSD with beta=1) is infinite whenever the student puts any mass off the
        support, so it is refused; use `student_renorm=True` or full teacher logits.

    `student_renorm=True`: the student is also renormalized on the K ids, so the divergence
    compares the two conditionals on the support and ignores how much mass the student puts
    elsewhere. Well defined for every divergence, but blind to off-support mass.

    Args:
        student_logits: [B, T, V], already aligned with the teacher (see module docstring).
        teacher_topk_ids: [B, T, K] int64 token ids (distinct within a position).
        teacher_topk_logprobs: [B, T, K] teacher log-probs at those ids (any float dtype).
        divergence: "forward_kl", "reverse_kl" or "jsd".
        jsd_beta: beta of `jsd` (TRL convention: 0 -> forward KL, 1 -> reverse KL).
        temperature: both sides are softened by T (no T^2 factor here; `DistillLoss` applies it).
        student_renorm: renormalize the student on the support too (see above).

    Returns:
        [B, T] divergence per position (unmasked, unreduced).
    """
    if divergence == "jsd" and jsd_beta == 0.0:
        divergence = "forward_kl"
    beta_one = divergence == "reverse_kl" or (divergence == "jsd" and jsd_beta == 1.0)
    if beta_one and not student_renorm:
        raise ValueError(
            "reverse KL against a top-k teacher is infinite unless the student is renormalized "
            "on the support too: pass student_renorm=True, full teacher logits, or use "
            "forward_kl / jsd with beta < 1"
        )
    teacher = torch.log_softmax(_upcast(teacher_topk_logprobs).detach() / temperature, dim=-1)
    logits = _upcast(student_logits) / temperature
    if student_renorm:
        student = torch.log_softmax(logits.gather(-1, teacher_topk_ids.long()), dim=-1)
    else:
        student = torch.log_softmax(logits, dim=-1).gather(-1, teacher_topk_ids.long())

    if divergence == "forward_kl":
        return forward_kl(student, teacher)
    if divergence == "reverse_kl":
        return reverse_kl(student, teacher)
    if divergence != "jsd":
        raise ValueError(f"unknown divergence {divergence!r}")
    d = jsd(student, teacher, jsd_beta)
    if not student_renorm and jsd_beta < 1.0:
        q_rest = (-torch.expm1(torch.logsumexp(student, dim=-1))).clamp_min(0.0)
        d = d - (1 - jsd_beta) * math.log1p(-jsd_beta) * q_rest
    return d


def dense_divergence(
    student_logits: Tensor,
    teacher_logits: Tensor,
    divergence: Divergence = "forward_kl",
    jsd_beta: float = 0.5,
    temperature: float = 1.0,
) -> Tensor:
    """Per-position divergence against full-vocabulary teacher logits. [B, T, V] x2 -> [B, T]"""
    student = torch.log_softmax(_soften(_upcast(student_logits), temperature), dim=-1)
    teacher = torch.log_softmax(_soften(_upcast(teacher_logits).detach(), temperature), dim=-1)
    if divergence == "forward_kl":
        return forward_kl(student, teacher)
    if divergence == "reverse_kl":
        return reverse_kl(student, teacher)
    if divergence == "jsd":
        return jsd(student, teacher, jsd_beta)
    raise ValueError(f"unknown divergence {divergence!r}")


class DistillLossOutput(NamedTuple):
    """What `DistillLoss` returns: `loss` to backprop, detached parts for logging."""

    loss: Tensor  # scalar: lambda_kd * T^2 * kd + lambda_ce * ce
    kd: Tensor  # scalar: mean divergence D over unmasked tokens (no T^2), detached
    ce: Tensor  # scalar: mean cross-entropy on the targets, detached (0 if not computed)
    num_tokens: Tensor  # scalar: mask sum, the denominator of every mean


class DistillLoss(nn.Module):
    """Knowledge-distillation loss: `lambda_kd * T^2 * D(teacher, student) + lambda_ce * CE`.

    The teacher is given either as its top-k (`teacher_topk_ids`, `teacher_topk_logprobs`;
    see `topk_divergence` for how the truncated support is handled) or as full
    `teacher_logits`. D is averaged over unmasked positions, and so is the cross-entropy on
    `targets` (computed at temperature 1: it is the ordinary LM loss). The T^2 factor (Hinton
    et al. 2015) keeps the gradient scale of the soft term independent of the temperature.

    Alignment contract: inputs are ALREADY aligned by the caller. `student_logits[:, t]`
    predicts `targets[:, t]`, and the teacher tensors at `t` describe the same prediction. For a
    causal LM: `logits[:, :-1]` with `input_ids[:, 1:]`. This module never shifts.

    Args:
        divergence: "forward_kl" KL(teacher||student), "reverse_kl" KL(student||teacher), or
            "jsd" (generalized JSD, TRL's convention).
        jsd_beta: beta for "jsd" (0 -> forward KL, 1 -> reverse KL).
        temperature: softening temperature T applied to both student and teacher.
        lambda_kd: weight of the distillation term.
        lambda_ce: weight of the cross-entropy on `targets` (0 disables it; targets optional).
        student_renorm: top-k only; renormalize the student on the teacher's support too.

    Shapes (forward):
        student_logits: [B, T, V]; mask: [B, T] (bool or float; 0 = ignore);
        targets: [B, T] token ids (optional when lambda_ce == 0; masked positions must hold a
            valid id or -100);
        teacher_topk_ids / teacher_topk_logprobs: [B, T, K] (+ teacher_log_tail [B, T] and
            teacher_sample_log_weights [B, T, M] for a top-k that keeps its tail); or
            teacher_logits: [B, T, V].

    Returns:
        `DistillLossOutput(loss, kd, ce, num_tokens)`, all scalars.

    Example:
        >>> loss_fn = DistillLoss(divergence="forward_kl", temperature=2.0, lambda_ce=0.5)
        >>> logits = torch.randn(2, 6, 50, requires_grad=True)
        >>> t_lp, t_ids = torch.randn(2, 6, 50).log_softmax(-1).topk(8, dim=-1)
        >>> out = loss_fn(logits, torch.ones(2, 6), targets=torch.randint(0, 50, (2, 6)),
        ...               teacher_topk_ids=t_ids, teacher_topk_logprobs=t_lp)
        >>> out.loss.backward()
    """

    def __init__(
        self,
        divergence: Divergence = "forward_kl",
        jsd_beta: float = 0.5,
        temperature: float = 1.0,
        lambda_kd: float = 1.0,
        lambda_ce: float = 0.0,
        student_renorm: bool = False,
    ) -> None:
        super().__init__()
        if divergence not in ("forward_kl", "reverse_kl", "jsd"):
            raise ValueError(f"unknown divergence {divergence!r}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= jsd_beta <= 1.0:
            raise ValueError(f"jsd_beta must be in [0, 1], got {jsd_beta}")
        self.divergence = divergence
        self.jsd_beta = jsd_beta
        self.temperature = temperature
        self.lambda_kd = lambda_kd
        self.lambda_ce = lambda_ce
        self.student_renorm = student_renorm

    def token_losses(
        self, student_logits: Tensor, targets: Tensor | None = None, **teacher: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """Unreduced per-position `(D [B, T], CE [B, T] or None)`, the building block of
        `masked_sums`; `teacher`: the teacher keywords of `forward` (declared once, there). D is
        returned without the T^2 factor. With `teacher_log_tail` ([B, T], the teacher's log mass
        outside its top-k at this loss's temperature) the top-k keeps its tail
        (`losses.sparse.sparse_divergence`; `teacher_sample_log_weights` [B, T, M] when the last
        M entries are tail samples); without it the top-k is renormalized."""
        unknown = sorted(set(teacher) - TEACHER_KEYWORDS)
        if unknown:
            raise TypeError(f"DistillLoss got unexpected teacher keyword(s): {', '.join(unknown)}")
        ids, logprobs = teacher.get("teacher_topk_ids"), teacher.get("teacher_topk_logprobs")
        tail = teacher.get("teacher_log_tail")
        if teacher.get("teacher_logits") is not None:
            d = dense_divergence(
                student_logits, teacher["teacher_logits"], self.divergence, self.jsd_beta, self.temperature
            )
        elif ids is not None and logprobs is not None and tail is not None:
            if self.student_renorm:
                raise ValueError("student_renorm compares conditionals on a renormalized top-k; a teacher with "
                                 "its tail (teacher_log_tail) needs no renormalization")
            d = sparse_divergence(_upcast(student_logits), ids, logprobs, tail,
                                  teacher.get("teacher_sample_log_weights"), self.divergence,
                                  self.jsd_beta, self.temperature)
        elif ids is not None and logprobs is not None:
            d = topk_divergence(
                student_logits, ids, logprobs, self.divergence, self.jsd_beta, self.temperature, self.student_renorm
            )
        else:
            raise ValueError("give teacher_logits or teacher_topk_ids + teacher_topk_logprobs")
        ce = None
        if self.lambda_ce != 0.0:
            if targets is None:
                raise ValueError("lambda_ce > 0 needs targets")
            logits = _upcast(student_logits)
            ce = F.cross_entropy(
                logits.flatten(0, -2), targets.flatten().long(), reduction="none", ignore_index=-100
            ).view(targets.shape)
        return d, ce

    def combine(
        self, kd_sum: Tensor, ce_sum: Tensor | None, num_tokens: Tensor
    ) -> DistillLossOutput:
        """Masked sums (over the whole batch) -> the weighted mean loss and logging parts."""
        n = num_tokens.clamp_min(1.0)
        kd = kd_sum / n
        loss = self.lambda_kd * self.temperature**2 * kd
        ce = torch.zeros_like(kd)
        if ce_sum is not None:
            ce = ce_sum / n
            loss = loss + self.lambda_ce * ce
        return DistillLossOutput(loss, kd.detach(), ce.detach(), num_tokens.detach())

    def masked_sums(
        self,
        student_logits: Tensor,
        mask: Tensor,
        targets: Tensor | None = None,
        **teacher: Tensor | None,
    ) -> tuple[Tensor, Tensor | None, Tensor]:
        """`(sum of D * mask, sum of CE * mask or None, sum of mask)`, scalars: what `combine`
        turns into means, and what `ChunkedDistillLoss` adds up chunk by chunk. `teacher`: the
        teacher keywords of `forward`."""
        d, ce = self.token_losses(student_logits, targets, **teacher)
        m = mask.to(d.dtype)
        return (d * m).sum(), None if ce is None else (ce * m).sum(), m.sum()

    def forward(
        self,
        student_logits: Tensor,
        mask: Tensor,
        targets: Tensor | None = None,
        teacher_topk_ids: Tensor | None = None,
        teacher_topk_logprobs: Tensor | None = None,
        teacher_logits: Tensor | None = None,
        teacher_log_tail: Tensor | None = None,
        teacher_sample_log_weights: Tensor | None = None,
    ) -> DistillLossOutput:
        sums = self.masked_sums(
            student_logits,
            mask,
            targets,
            teacher_topk_ids=teacher_topk_ids,
            teacher_topk_logprobs=teacher_topk_logprobs,
            teacher_logits=teacher_logits,
            teacher_log_tail=teacher_log_tail,
            teacher_sample_log_weights=teacher_sample_log_weights,
        )
        return self.combine(*sums)


# The teacher keywords `forward` declares (and `token_losses`, `masked_sums` and the chunked
# losses pass on as `**teacher`).
TEACHER_KEYWORDS = frozenset(inspect.signature(DistillLoss.forward).parameters) - {
    "self", "student_logits", "mask", "targets"}


def _slice(x: Tensor | None, s: int, e: int) -> Tensor | None:
    return None if x is None else x[:, s:e]


class ChunkedDistillLoss(nn.Module):
    """`DistillLoss` computed from hidden states, `chunk_size` positions at a time.

    Each chunk computes its logits `hidden[:, s:e] @ lm_head_weight.T` ([B, chunk, V]) and
    runs the plain loss on them (`DistillLoss.masked_sums`), keeping only the sums; the result
    is `sum of chunk sums / total mask count`, i.e. exactly the plain loss. With
    `checkpoint=True` (default) each chunk runs under activation checkpointing, so its logits
    are freed after the forward and recomputed in the backward: peak memory is one chunk of
    logits instead of [B, T, V] (without it, autograd would keep every chunk's softmax alive
    until backward, which adds up to the full tensor again).

    Args:
        chunk_size: positions per chunk.
        checkpoint: recompute each chunk's logits in the backward instead of storing them.
        **loss_kwargs: forwarded to `DistillLoss` (divergence, jsd_beta, temperature, ...).

    Shapes (forward):
        hidden: [B, T, H] final hidden states (after the final norm), aligned like the logits
        of `DistillLoss`; lm_head_weight: [V, H], or the output-embedding module itself (under
        DeepSpeed ZeRO-3 the weight is only gathered inside that module's forward);
        mask, targets: [B, T];
        teacher: the teacher keywords of `DistillLoss.forward`, sliced per chunk along T:
            teacher_topk_ids / teacher_topk_logprobs: [B, T, K]; or teacher_logits: [B, T, V].

    Returns:
        `DistillLossOutput`, equal to `DistillLoss` on `hidden @ lm_head_weight.T`.

    Example:
        >>> loss_fn = ChunkedDistillLoss(chunk_size=4, divergence="jsd", jsd_beta=0.5)
        >>> h, w = torch.randn(2, 10, 16, requires_grad=True), torch.randn(50, 16)
        >>> t_lp, t_ids = torch.randn(2, 10, 50).log_softmax(-1).topk(8, dim=-1)
        >>> loss_fn(h, w, torch.ones(2, 10), teacher_topk_ids=t_ids,
        ...         teacher_topk_logprobs=t_lp).loss.backward()
    """

    def __init__(self, chunk_size: int = 256, checkpoint: bool = True, **loss_kwargs) -> None:
        super().__init__()
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.chunk_size = chunk_size
        self.checkpoint = checkpoint
        self.loss = DistillLoss(**loss_kwargs)

    def _chunk_sums(
        self,
        hidden: Tensor,
        weight: Tensor | nn.Module,
        mask: Tensor,
        targets: Tensor | None,
        teacher: dict[str, Tensor | None],
    ) -> tuple[Tensor, Tensor]:
        """One chunk's logits, then its masked sums (a CE sum of 0 when CE is off)."""
        logits = weight(hidden) if isinstance(weight, nn.Module) else F.linear(hidden, weight)
        kd_sum, ce_sum, _ = self.loss.masked_sums(logits, mask, targets, **teacher)
        return kd_sum, ce_sum if ce_sum is not None else torch.zeros((), device=kd_sum.device)

    def forward(
        self,
        hidden: Tensor,
        lm_head_weight: Tensor | nn.Module,
        mask: Tensor,
        targets: Tensor | None = None,
        **teacher: Tensor | None,
    ) -> DistillLossOutput:
        kd_sum = ce_sum = torch.zeros((), device=hidden.device)
        for s in range(0, hidden.shape[1], self.chunk_size):
            e = s + self.chunk_size
            chunk = {name: _slice(value, s, e) for name, value in teacher.items()}
            args = (hidden[:, s:e], lm_head_weight, mask[:, s:e], _slice(targets, s, e), chunk)
            if self.checkpoint and torch.is_grad_enabled():
                kd, ce = checkpoint(self._chunk_sums, *args, use_reentrant=False)
            else:
                kd, ce = self._chunk_sums(*args)
            kd_sum, ce_sum = kd_sum + kd, ce_sum + ce
        num_tokens = mask.to(kd_sum.dtype).sum()
        return self.loss.combine(kd_sum, ce_sum if self.loss.lambda_ce != 0.0 else None, num_tokens)

