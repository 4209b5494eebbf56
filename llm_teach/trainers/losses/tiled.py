"""`DistillLoss` over tiles of the batch's flattened valid rows, with BOTH models' logits built
one tile at a time from their hidden states and lm-heads.

Why not `ChunkedDistillLoss`: it takes the teacher as dense per-position tensors and chunks
positions per row, so one chunk is `B x chunk x V` and an online teacher's `[B, C, V]` logits
(plus their log-softmax) exist in full. Here the masked positions are dropped first, the
remaining rows of the whole batch are flattened to `[N, H]` and cut into tiles of `tile_rows`
rows; each tile projects the student's and the teacher's hidden states, runs the plain
`DistillLoss.masked_sums` on those `[tile, V]` logits and keeps only the sums. Peak memory is a
few `tile x V` tensors whatever the batch size (TRL's `ChunkedDivergenceFunction` tiles the
same way, with hand-written divergence kernels; we reuse our own formulas per tile, as
torchtune's chunked KD loss reuses its plain loss, so there is one place where the math lives).

Two ways through the tiles:
* fused (the student head is a plain weight: a tensor, or a bias-free `nn.Linear` with no
  hooks): `_FusedTiles`, a custom autograd function, takes the gradient of each tile's loss
  with respect to its logits right away (autograd of the plain loss on a detached tile), turns
  it into the hidden-state and head gradients with two matmuls and frees the tile. Nothing is
  recomputed in the backward, which only scales the stored gradients: 4 projections per row in
  all (student + teacher forward, two gradient matmuls), as few as a dense loss and fewer than
  TRL's recompute-in-backward (6, 8 for JSD). The head gradient is skipped when the head is
  frozen (LoRA/PEFT students).
* module (anything else: a LoRA-wrapped or hooked head, a DeepSpeed ZeRO-3 module whose weight
  is only gathered inside its own forward, any callable): each tile calls the head and runs
  under activation checkpointing, so its logits are recomputed in the backward; gathers and
  adapters work as in the model's own forward.

The teacher is either `teacher_hidden` + `teacher_head` (projected per tile without gradient,
cut or padded to the student's vocabulary, optionally reduced to its top-k) or the per-position
tensors `DistillLoss` accepts (a stored top-k), flattened with the same rows.
"""

from __future__ import annotations

from typing import Callable, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from llm_teach.data.logit_store import PAD_LOGPROB
from llm_teach.data.sparse_targets import sparse_from_logits
from llm_teach.trainers.losses.closed_form import cross_entropy_and_grad, divergence_and_grad
from llm_teach.trainers.losses.distill import DistillLoss, DistillLossOutput

Head = Union[Tensor, nn.Module, Callable[[Tensor], Tensor]]
# Default tile: at most 2^25 logits (128 MB in float32) per [tile, V] tensor and at most 256
# rows. Measured on a 2-core CPU, one thread (CPU seconds, forward+backward, closed-form path):
# V=49152: 64 rows 3.99 s, 128 3.56, 170 3.53, 256 3.42, 341 3.67 (dense GKD 4.35) per 1024
# rows; V=151936: 32 rows 7.34 s, 55 6.62, 110 6.11, 220 5.65 (dense 6.74) per 512 rows. Small
# tiles re-read both heads once per tile; wide ones leave the cache. The per-tile loss holds
# ~8 such tensors at its peak (JSD): 1.44 GB above the inputs at V=151936, 2x512.
TILE_ELEMENTS = 2**25
MAX_TILE_ROWS = 256


def default_tile_rows(vocab: int) -> int:
    """Rows per tile for a `vocab`-wide head: `TILE_ELEMENTS // vocab`, within [16, 256]."""
    return max(16, min(MAX_TILE_ROWS, TILE_ELEMENTS // vocab))


def plain_weight(head: Head) -> Tensor | None:
    """The `[V, H]` weight when projecting is exactly `F.linear(h, weight)` and may bypass the
    module: a tensor, or a bias-free `nn.Linear` without hooks (ZeRO-3 and accelerate's offload
    install hooks; PEFT wraps the layer in another class). None otherwise."""
    if isinstance(head, Tensor):
        return head
    if (type(head) is nn.Linear and head.bias is None and not hasattr(head.weight, "ds_id")
            and not (head._forward_hooks or head._forward_pre_hooks)):
        return head.weight
    return None


def project(head: Head, hidden: Tensor) -> Tensor:
    """`hidden [n, H]` -> logits `[n, V]` through `head`."""
    weight = plain_weight(head)
    return F.linear(hidden, weight) if weight is not None else head(hidden)


def teacher_tile_targets(logits: Tensor, vocab: int, top_k: int = 0,
                         tail_temperature: float | None = None) -> dict[str, Tensor]:
    """The `DistillLoss` teacher keywords for one tile of online-teacher logits: full logits cut
    or padded (a smaller teacher vocabulary: the rest is impossible) to the student's `vocab`,
    or its top-k log-probs at T=1 (the loss applies the temperature), with the exact log mass
    outside the top-k at `tail_temperature` when given (the full logits are at hand)."""
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    logits = logits[..., :vocab]
    if logits.size(-1) < vocab:
        logits = F.pad(logits, (0, vocab - logits.size(-1)), value=PAD_LOGPROB)
    if not top_k:
        return {"teacher_logits": logits}
    if tail_temperature is not None:
        target = sparse_from_logits(logits, top_k, (tail_temperature,))
        return {"teacher_topk_ids": target.ids, "teacher_topk_logprobs": target.logprobs,
                "teacher_log_tail": target.log_tail[..., 0]}
    values, ids = logits.log_softmax(-1).topk(top_k, dim=-1)
    return {"teacher_topk_ids": ids, "teacher_topk_logprobs": values}


class _Rows:
    """The valid rows of a batch, flattened, and what a tile of them needs besides the student's
    hidden states: mask weights, targets and the teacher's keywords for `DistillLoss`."""

    def __init__(self, mask: Tensor, targets: Tensor | None, teacher_hidden: Tensor | None,
                 teacher_head: Head | None, top_k: int, teacher: dict[str, Tensor | None],
                 tail_temperature: float | None = None) -> None:
        flat = mask.reshape(-1)
        self.index = flat.nonzero().squeeze(1)
        self.weights = flat.index_select(0, self.index)
        self.targets = None if targets is None else self.take(targets)
        self.teacher_hidden = None if teacher_hidden is None else self.take(teacher_hidden).detach()
        self.teacher_head, self.top_k, self.tail_temperature = teacher_head, top_k, tail_temperature
        self.teacher = {k: self.take(v) for k, v in teacher.items() if v is not None}
        if (self.teacher_hidden is None) == (not self.teacher):
            raise ValueError("give teacher_hidden + teacher_head, or the teacher's per-position tensors")
        if self.teacher_hidden is not None and teacher_head is None:
            raise ValueError("teacher_hidden needs teacher_head")

    def take(self, x: Tensor) -> Tensor:
        """`[B, T, ...]` -> `[N, ...]`, the valid rows in order."""
        return x.reshape(-1, *x.shape[2:]).index_select(0, self.index)

    def __len__(self) -> int:
        return self.index.numel()

    def tile(self, s: int, e: int, vocab: int) -> dict[str, Tensor | None]:
        """Everything of rows `s:e` but the student: `mask`, `targets` and teacher keywords."""
        if self.teacher_hidden is not None:
            with torch.no_grad():
                logits = project(self.teacher_head, self.teacher_hidden[s:e])
                teacher = teacher_tile_targets(logits, vocab, self.top_k, self.tail_temperature)
        else:
            teacher = {k: v[s:e] for k, v in self.teacher.items()}
        targets = None if self.targets is None else self.targets[s:e]
        return {"mask": self.weights[s:e], "targets": targets, **teacher}


def _tile_sums(loss: DistillLoss, logits: Tensor, tile: dict[str, Tensor | None]) -> tuple[Tensor, Tensor]:
    """A tile's `(kd_sum, ce_sum)`; ce_sum is 0 when the CE term is off."""
    kd, ce, _ = loss.masked_sums(logits, **tile)
    return kd, ce if ce is not None else torch.zeros((), device=kd.device)


def _tile_grad(loss: DistillLoss, logits: Tensor, tile: dict[str, Tensor | None], one: Tensor,
               need_grad: bool) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """A tile's `(weighted loss sum, kd_sum, ce_sum, d(weighted)/d logits or None)`. Against
    full teacher logits the gradient is the closed form of `losses.closed_form` (fewer passes
    over the tile); against a top-k or sparse teacher, autograd of the plain loss."""
    if set(tile) - {"mask", "targets"} == {"teacher_logits"}:
        d, grad = divergence_and_grad(logits, tile["teacher_logits"], loss.divergence, loss.jsd_beta,
                                      loss.temperature)
        w = tile["mask"].to(d.dtype)
        kd, ce = (d * w).sum(), torch.zeros((), dtype=d.dtype, device=d.device)
        grad.mul_((loss.lambda_kd * loss.temperature**2 * w)[:, None])
        if loss.lambda_ce != 0.0:
            if tile["targets"] is None:
                raise ValueError("lambda_ce > 0 needs targets")
            ce_rows, ce_grad = cross_entropy_and_grad(logits, tile["targets"])
            ce = (ce_rows * w).sum()
            grad.add_(ce_grad.mul_((loss.lambda_ce * w)[:, None]))
        weighted = loss.combine(kd, ce, one).loss  # the loss's own weighting of the sums
        return weighted, kd, ce, grad.to(logits.dtype) if need_grad else None
    with torch.enable_grad():
        logits.requires_grad_(need_grad)
        kd, ce = _tile_sums(loss, logits, tile)
        weighted = loss.combine(kd, ce, one).loss
        g = torch.autograd.grad(weighted, logits)[0] if need_grad else None
    return weighted.detach(), kd.detach(), ce.detach(), g


class _FusedTiles(torch.autograd.Function):
    """`(weighted loss sum, kd_sum, ce_sum)` over all tiles, the gradient taken in the forward.

    The loss is linear in the per-tile sums, so its gradient with respect to the inputs is
    `g * sum over tiles of d(tile sum)/d(inputs)` for the incoming scalar gradient `g`; the
    forward accumulates that sum and the backward only scales it."""

    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, rows: _Rows, loss: DistillLoss, tile_rows: int):
        need_h, need_w = ctx.needs_input_grad[:2]
        acc = torch.promote_types(hidden.dtype, torch.float32)  # accumulate bf16/fp16 in fp32
        grad_h = torch.zeros(hidden.shape, dtype=acc, device=hidden.device) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
        one = torch.ones((), device=hidden.device)
        sums = torch.zeros(3, dtype=acc, device=hidden.device)  # weighted loss, kd, ce
        for s in range(0, len(rows), tile_rows):
            h = hidden[s:s + tile_rows]
            logits = F.linear(h, weight)
            tile = rows.tile(s, s + h.size(0), logits.size(-1))
            weighted, kd, ce, g = _tile_grad(loss, logits, tile, one, need_h or need_w)
            sums += torch.stack([weighted.detach(), kd.detach(), ce.detach()]).to(acc)
            if need_h:
                grad_h[s:s + h.size(0)] = g @ weight
            if need_w:
                grad_w.addmm_(g.t().to(acc), h.to(acc))
        ctx.save_for_backward(grad_h, grad_w)
        ctx.dtypes = hidden.dtype, weight.dtype
        total, kd, ce = sums.unbind()
        ctx.mark_non_differentiable(kd, ce)
        return total, kd, ce

    @staticmethod
    def backward(ctx, grad_loss: Tensor, *_unused: Tensor):
        grad_h, grad_w = ctx.saved_tensors
        scale = grad_loss.to(grad_h.dtype if grad_h is not None else grad_w.dtype)
        out_h = None if grad_h is None else (grad_h * scale).to(ctx.dtypes[0])
        out_w = None if grad_w is None else (grad_w * scale).to(ctx.dtypes[1])
        return out_h, out_w, None, None, None


class TiledDistillLoss(nn.Module):
    """`DistillLoss` from hidden states, over tiles of the flattened valid rows (module docstring).

    Args:
        tile_rows: rows (valid completion positions of the whole batch) per tile; None =
            `default_tile_rows(V)`.
        teacher_top_k: online teacher: 0 = its full distribution, k = only its top-k.
        **loss_kwargs: forwarded to `DistillLoss` (divergence, jsd_beta, temperature, ...).

    Shapes (forward):
        hidden: [B, T, H] the student's final hidden states, aligned like `DistillLoss`'s logits;
        head: the student's output layer: its [V, H] weight, the module, or any callable
            `[n, H] -> [n, V]`;
        mask, targets: [B, T];
        teacher_hidden: [B, T, H_t] and teacher_head (as `head`): the online teacher; or the
            teacher keywords of `DistillLoss.forward` ([B, T, K] top-k or [B, T, V] logits).

    Returns:
        `DistillLossOutput`, equal to `DistillLoss` on `head(hidden)`.

    Example:
        >>> loss_fn = TiledDistillLoss(tile_rows=5, divergence="jsd", temperature=2.0)
        >>> h, w = torch.randn(2, 10, 16, requires_grad=True), torch.randn(50, 16, requires_grad=True)
        >>> out = loss_fn(h, w, torch.ones(2, 10), teacher_hidden=torch.randn(2, 10, 8),
        ...               teacher_head=torch.randn(50, 8))
        >>> out.loss.backward()
    """

    def __init__(self, tile_rows: int | None = None, teacher_top_k: int = 0, tail_temperature: float | None = None,
                 **loss_kwargs) -> None:
        super().__init__()
        if (tile_rows is not None and tile_rows < 1) or teacher_top_k < 0:
            raise ValueError(f"tile_rows must be >= 1 and teacher_top_k >= 0, got {tile_rows}, {teacher_top_k}")
        self.tile_rows = tile_rows
        self.teacher_top_k = teacher_top_k
        self.tail_temperature = tail_temperature  # online top-k: keep its tail bucket at this temperature
        self.loss = DistillLoss(**loss_kwargs)

    def forward(self, hidden: Tensor, head: Head, mask: Tensor, targets: Tensor | None = None,
                teacher_hidden: Tensor | None = None, teacher_head: Head | None = None,
                **teacher: Tensor | None) -> DistillLossOutput:
        rows = _Rows(mask, targets, teacher_hidden, teacher_head, self.teacher_top_k, teacher, self.tail_temperature)
        flat = rows.take(hidden)
        num_tokens = rows.weights.float().sum()
        weight = plain_weight(head)
        if weight is not None:
            tile_rows = self.tile_rows or default_tile_rows(weight.size(0))
            total, kd, ce = _FusedTiles.apply(flat, weight, rows, self.loss, tile_rows)
            out = self.loss.combine(kd, ce if self.loss.lambda_ce != 0.0 else None, num_tokens)
            return out._replace(loss=total / num_tokens.clamp_min(1.0))
        kd = ce = flat.sum() * 0.0  # keeps the graph (and a zero gradient) when every row is masked
        tile_rows = self.tile_rows or 128  # the head's width is unknown before it runs
        for s in range(0, len(rows), tile_rows):
            h = flat[s:s + tile_rows]
            if torch.is_grad_enabled():
                tile_kd, tile_ce = checkpoint(self._module_tile, h, head, rows, s, use_reentrant=False)
            else:
                tile_kd, tile_ce = self._module_tile(h, head, rows, s)
            kd, ce = kd + tile_kd, ce + tile_ce
        return self.loss.combine(kd, ce if self.loss.lambda_ce != 0.0 else None, num_tokens)

    def _module_tile(self, h: Tensor, head: Head, rows: _Rows, s: int) -> tuple[Tensor, Tensor]:
        logits = head(h)
        return _tile_sums(self.loss, logits, rows.tile(s, s + h.size(0), logits.size(-1)))
