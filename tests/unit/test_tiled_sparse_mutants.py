"""Tests written against the mutants of `losses/tiled.py` and `losses/sparse.py` that the other
fast tests let survive (issue 11, section 5; `make mutate`): the default tile size, the CE term
through a module head and at lambda_ce 1, the closed-form route for a full teacher, a frozen
hidden state, and the sparse loss's defaults and padding. Each compares against a dense
reference computed here or in the tests it extends. Tensor-level, no model: about a second."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from integration.test_chunked_teacher import B, DIVERGENCES, H, T, V, _check, _dense, _inputs, _Wrapped
from llm_teach.data.sparse_targets import PAD_LOGPROB, sample_log_weights, sparse_from_logits
from llm_teach.trainers.losses.distill import DistillLoss
from llm_teach.trainers.losses.sparse import sparse_divergence
from llm_teach.trainers.losses.tiled import (MAX_TILE_ROWS, TILE_ELEMENTS, TiledDistillLoss, default_tile_rows,
                                             plain_weight, teacher_tile_targets)
from unit.test_sparse_targets import DIVERGENCES as SPARSE_DIVERGENCES
from unit.test_sparse_targets import _collapse, _dense_reference, _pair

# --- tiled.py ---------------------------------------------------------------------------------


def test_default_tile_rows_is_the_element_budget_within_16_and_256():
    assert (TILE_ELEMENTS, MAX_TILE_ROWS) == (2**25, 256)
    # a small vocabulary hits the 256-row cap; SmolLM2 (49152) too; Qwen (151936) gets 2^25 // V
    # rows; a 2^21 vocabulary exactly the 16-row floor, a wider one is held at it
    got = [default_tile_rows(v) for v in (1000, 49152, 151936, 2**21, 2**23)]
    assert got == [256, 256, 220, 16, 16] and all(type(r) is int for r in got)


@pytest.mark.parametrize("head_kind", ["weight", "module"])
def test_default_tile_size_gives_the_dense_loss(head_kind):
    kwargs = DIVERGENCES[3]  # jsd with the CE term
    hidden, weight, t_hidden, t_weight, mask, targets = _inputs()
    ref = _dense(kwargs, hidden, weight, t_hidden, t_weight, mask, targets)
    ref_grads = torch.autograd.grad(ref.loss, (hidden, weight))
    head = weight if head_kind == "weight" else _Wrapped(weight)
    out = TiledDistillLoss(**kwargs)(hidden, head, mask, targets, teacher_hidden=t_hidden, teacher_head=t_weight)
    _check(out, ref, torch.autograd.grad(out.loss, (hidden, weight)), ref_grads, atol=1e-12)


@pytest.mark.parametrize("lambda_ce", [0.7, 1.0])
@pytest.mark.parametrize("head_kind", ["weight", "module"])
def test_ce_term_through_either_path_equals_the_dense_loss(head_kind, lambda_ce):
    """The CE term reaches the loss through the fused closed form and through a module head, at
    any weight including 1 (a `lambda_ce != 0` test is easy to get wrong)."""
    kwargs = dict(divergence="forward_kl", temperature=1.5, lambda_ce=lambda_ce)
    hidden, weight, t_hidden, t_weight, mask, targets = _inputs(seed=2)
    ref = _dense(kwargs, hidden, weight, t_hidden, t_weight, mask, targets)
    assert ref.ce > 0
    ref_grads = torch.autograd.grad(ref.loss, (hidden, weight))
    head = weight if head_kind == "weight" else _Wrapped(weight)
    out = TiledDistillLoss(tile_rows=4, **kwargs)(hidden, head, mask, targets, teacher_hidden=t_hidden,
                                                  teacher_head=t_weight)
    _check(out, ref, torch.autograd.grad(out.loss, (hidden, weight)), ref_grads, atol=1e-12)


def test_targets_are_needed_only_with_the_ce_term():
    hidden, weight, t_hidden, t_weight, mask, targets = _inputs()
    ref = _dense(DIVERGENCES[0], hidden, weight, t_hidden, t_weight, mask, None)
    out = TiledDistillLoss(tile_rows=4, **DIVERGENCES[0])(hidden, weight, mask, None, teacher_hidden=t_hidden,
                                                          teacher_head=t_weight)
    torch.testing.assert_close(out.loss, ref.loss, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match=r"^lambda_ce > 0 needs targets$"):
        TiledDistillLoss(tile_rows=4, **DIVERGENCES[3])(hidden, weight, mask, None, teacher_hidden=t_hidden,
                                                        teacher_head=t_weight)


class _Ops(TorchDispatchMode):
    """Records the name of every aten op run (with `shapes`: `(name, output shape)`)."""

    def __init__(self, shapes: bool = False):
        super().__init__()
        self.shapes = shapes
        self.names: list = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
        self.names.append((func.__name__, shape) if self.shapes else func.__name__)
        return out


@pytest.mark.parametrize("kwargs", DIVERGENCES)
def test_full_teacher_takes_the_closed_form_gradient_not_autograd(kwargs):
    """Against full teacher logits the fused tiles' gradient is the closed form of
    `losses.closed_form` (fewer passes over each [tile, V] tensor than autograd of the plain
    loss), so no autograd backward kernel runs, forward or backward; the same loss through a
    module head (autograd of the plain loss per tile) shows the probe sees them."""
    hidden, weight, t_hidden, t_weight, mask, targets = _inputs()
    ops = {}
    for name, head in (("fused", weight), ("module", _Wrapped(weight))):
        with _Ops() as seen:
            TiledDistillLoss(tile_rows=4, **kwargs)(hidden, head, mask, targets, teacher_hidden=t_hidden,
                                                    teacher_head=t_weight).loss.backward()
        ops[name] = [n for n in seen.names if "softmax_backward" in n]
    assert ops["fused"] == [] and ops["module"], ops


@pytest.mark.parametrize("head_kind", ["weight", "module"])
def test_head_gets_the_dense_gradient_when_the_hidden_states_need_none(head_kind):
    """Only the head trains (hidden states without gradient): the fused function's backward
    has no hidden-state gradient to scale and must still return the head's, and a module
    head's checkpointed tiles must still reach its parameters (a reentrant checkpoint would not:
    none of its tensor inputs needs a gradient)."""
    kwargs = DIVERGENCES[2]
    hidden, weight, t_hidden, t_weight, mask, targets = _inputs()
    hidden = hidden.detach()
    ref = _dense(kwargs, hidden, weight, t_hidden, t_weight, mask, targets)
    (ref_grad,) = torch.autograd.grad(ref.loss, weight)
    head = weight if head_kind == "weight" else _Wrapped(weight)
    out = TiledDistillLoss(tile_rows=4, **kwargs)(hidden, head, mask, targets, teacher_hidden=t_hidden,
                                                  teacher_head=t_weight)
    (grad,) = torch.autograd.grad(out.loss * 3.0, weight)  # the incoming gradient scales it
    torch.testing.assert_close(grad, 3.0 * ref_grad, atol=1e-12, rtol=0)
    assert hidden.shape == (B, T, H) and weight.shape == (V, H)


def test_plain_weight_only_where_projecting_is_exactly_f_linear():
    linear = nn.Linear(H, V, bias=False)
    assert plain_weight(linear.weight) is linear.weight and plain_weight(linear) is linear.weight
    assert plain_weight(nn.Linear(H, V)) is None  # a bias
    assert plain_weight(_Wrapped(linear.weight)) is None and plain_weight(lambda x: x) is None
    hooked = nn.Linear(H, V, bias=False)
    hooked.register_forward_hook(lambda module, args, out: out * 2.0)
    pre_hooked = nn.Linear(H, V, bias=False)
    pre_hooked.register_forward_pre_hook(lambda module, args: None)
    assert plain_weight(hooked) is None and plain_weight(pre_hooked) is None
    zero3 = nn.Linear(H, V, bias=False)
    zero3.weight.ds_id = 0  # what DeepSpeed ZeRO-3 tags a partitioned parameter with
    assert plain_weight(zero3) is None


@pytest.mark.parametrize("kind", ["bias", "hook"])
def test_a_head_that_is_more_than_its_weight_is_called(kind):
    """A biased or hooked head is run as a module, so its bias / hook reaches the logits."""
    kwargs = DIVERGENCES[0]
    hidden, weight, t_hidden, t_weight, mask, targets = _inputs()
    head = nn.Linear(H, V, bias=kind == "bias", dtype=torch.float64)
    head.weight = nn.Parameter(weight.detach().clone())
    if kind == "bias":
        nn.init.normal_(head.bias, std=3.0)
    else:
        head.register_forward_hook(lambda module, args, out: out * 2.0)
    ref = DistillLoss(**kwargs)(head(hidden), mask, targets, teacher_logits=(t_hidden @ t_weight.T).detach())
    out = TiledDistillLoss(tile_rows=4, **kwargs)(hidden, head, mask, targets, teacher_hidden=t_hidden,
                                                  teacher_head=t_weight)
    torch.testing.assert_close(out.loss, ref.loss, atol=1e-12, rtol=0)


def test_teacher_tile_targets_fit_the_vocabulary_and_upcast():
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(30, 20, generator=g)  # more rows than vocabulary entries
    padded = teacher_tile_targets(logits, 23)
    assert list(padded) == ["teacher_logits"] and padded["teacher_logits"].shape == (30, 23)
    torch.testing.assert_close(padded["teacher_logits"][:, :20], logits)
    assert (padded["teacher_logits"][:, 20:] == PAD_LOGPROB).all()
    assert torch.equal(teacher_tile_targets(logits, 12)["teacher_logits"], logits[:, :12])
    half = teacher_tile_targets(logits.bfloat16(), 20)["teacher_logits"]
    assert half.dtype == torch.float32 and torch.equal(half, logits.bfloat16().float())
    top = teacher_tile_targets(logits, 20, top_k=3)
    values, ids = logits.log_softmax(-1).topk(3)
    assert torch.equal(top["teacher_topk_ids"], ids) and torch.equal(top["teacher_topk_logprobs"], values)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_online_top_k_with_its_tail_equals_the_sparse_loss(temperature):
    """`tail_temperature`: the online teacher's top-k keeps its exact tail bucket at the loss
    temperature, as a stored sparse target does."""
    kwargs = dict(divergence="reverse_kl", temperature=temperature, lambda_ce=0.3)
    hidden, weight, t_hidden, t_weight, mask, targets = _inputs()
    target = sparse_from_logits((t_hidden @ t_weight.T).detach(), 5, (temperature,))
    ref = DistillLoss(**kwargs)(hidden @ weight.T, mask, targets, teacher_topk_ids=target.ids,
                                teacher_topk_logprobs=target.logprobs, teacher_log_tail=target.log_tail[..., 0])
    ref_grads = torch.autograd.grad(ref.loss, (hidden, weight))
    out = TiledDistillLoss(tile_rows=4, teacher_top_k=5, tail_temperature=temperature, **kwargs)(
        hidden, weight, mask, targets, teacher_hidden=t_hidden, teacher_head=t_weight)
    _check(out, ref, torch.autograd.grad(out.loss, (hidden, weight)), ref_grads, atol=1e-10)


def test_stored_top_k_with_the_ce_term_equals_the_dense_loss():
    kwargs = dict(divergence="jsd", jsd_beta=0.4, temperature=2.0, lambda_ce=0.6)
    hidden, weight, t_hidden, t_weight, mask, targets = _inputs()
    logprobs, ids = (t_hidden.detach() @ t_weight.detach().T).log_softmax(-1).topk(5, dim=-1)
    teacher = dict(teacher_topk_ids=ids, teacher_topk_logprobs=logprobs)
    ref = DistillLoss(**kwargs)(hidden @ weight.T, mask, targets, **teacher)
    ref_grads = torch.autograd.grad(ref.loss, (hidden, weight))
    out = TiledDistillLoss(tile_rows=4, **kwargs)(hidden, weight, mask, targets, **teacher)
    _check(out, ref, torch.autograd.grad(out.loss, (hidden, weight)), ref_grads, atol=1e-12)


@pytest.mark.parametrize("head_kind", ["weight", "module"])
def test_values_without_any_gradient_for_every_teacher(head_kind):
    """Nothing needs a gradient (evaluation, or under no_grad): both paths give the values of
    the training call, for a full and for a top-k teacher."""
    hidden, weight, t_hidden, t_weight, mask, targets = _inputs()
    head = (lambda w: w) if head_kind == "weight" else _Wrapped
    for top_k in (0, 5):
        loss = TiledDistillLoss(tile_rows=4, teacher_top_k=top_k, **DIVERGENCES[3])
        ref = loss(hidden, head(weight), mask, targets, teacher_hidden=t_hidden, teacher_head=t_weight)
        frozen = loss(hidden.detach(), head(weight.detach()), mask, targets, teacher_hidden=t_hidden,
                      teacher_head=t_weight)
        with torch.no_grad():
            no_grad = loss(hidden, head(weight), mask, targets, teacher_hidden=t_hidden, teacher_head=t_weight)
        for out in (frozen, no_grad):
            for a, b in zip(out, ref):
                torch.testing.assert_close(a.detach(), b.detach(), atol=1e-12, rtol=0)


def test_one_token_or_less_is_not_divided_by_more():
    """The mean is over the mask's weight, floored at 1 only for an empty batch."""
    hidden, weight, t_hidden, t_weight, _, targets = _inputs()
    for weight_of_token in (1.0, 0.5):
        mask = torch.zeros(B, T, dtype=torch.float64)
        mask[2, 3] = weight_of_token
        ref = _dense(DIVERGENCES[0], hidden, weight, t_hidden, t_weight, mask, targets)
        out = TiledDistillLoss(tile_rows=4, **DIVERGENCES[0])(hidden, weight, mask, targets,
                                                              teacher_hidden=t_hidden, teacher_head=t_weight)
        torch.testing.assert_close(out.loss, ref.loss, atol=1e-12, rtol=0)
        assert ref.loss > 0


def test_bfloat16_student_within_bfloat16_error_of_the_float32_loss():
    """A bf16 student (hidden states and head): logits and gradients of each tile are taken in
    float32 and accumulated in float32; the result matches the dense float32 loss of the same
    bf16 numbers to bf16 precision, with bf16 gradients."""
    hidden, weight, t_hidden, t_weight, mask, targets = _inputs(torch.float32, seed=4)
    h16 = hidden.detach().bfloat16().requires_grad_()
    w16 = weight.detach().bfloat16().requires_grad_()
    h32, w32 = h16.detach().float().requires_grad_(), w16.detach().float().requires_grad_()
    for kwargs in (DIVERGENCES[3], dict(divergence="forward_kl", temperature=2.0)):
        ref = _dense(kwargs, h32, w32, t_hidden, t_weight, mask, targets)
        ref_grads = torch.autograd.grad(ref.loss, (h32, w32))
        for top_k in (0, 5):
            if top_k:
                logprobs, ids = (t_hidden.detach() @ t_weight.detach().T).log_softmax(-1).topk(5, dim=-1)
                ref = DistillLoss(**kwargs)(h32 @ w32.T, mask, targets, teacher_topk_ids=ids,
                                            teacher_topk_logprobs=logprobs)
                ref_grads = torch.autograd.grad(ref.loss, (h32, w32))
            out = TiledDistillLoss(tile_rows=4, teacher_top_k=top_k, **kwargs)(
                h16, w16, mask, targets, teacher_hidden=t_hidden, teacher_head=t_weight)
            grads = torch.autograd.grad(out.loss, (h16, w16))
            assert out.loss.dtype == torch.float32 and [g.dtype for g in grads] == [torch.bfloat16] * 2
            torch.testing.assert_close(out.loss, ref.loss, atol=2e-2, rtol=2e-2)
            for a, b in zip(grads, ref_grads):
                torch.testing.assert_close(a.float(), b, atol=2e-2, rtol=5e-2)


def test_gradient_buffers_only_for_what_trains():
    """The fused function allocates no head-gradient buffer for a frozen head (a LoRA student's
    lm_head: a [V, H] tensor) and no hidden-state buffer when the hidden states need none."""
    hidden, weight, t_hidden, t_weight, mask, targets = _inputs()
    n = int((mask != 0).sum())
    for h, w, absent in ((hidden, weight.detach(), (V, H)), (hidden.detach(), weight, (n, H))):
        with _Ops(shapes=True) as seen:
            TiledDistillLoss(tile_rows=4)(h, w, mask, targets, teacher_hidden=t_hidden, teacher_head=t_weight)
        zeros = [shape for name, shape in seen.names if name.startswith("zeros")]
        assert absent not in zeros and ((V, H) in zeros or (n, H) in zeros), zeros


def test_wrong_arguments_are_refused_with_what_to_do():
    hidden, weight, t_hidden, t_weight, mask, targets = _inputs()
    loss = TiledDistillLoss(tile_rows=4)
    both = r"^give teacher_hidden \+ teacher_head, or the teacher's per-position tensors$"
    with pytest.raises(ValueError, match=both):
        loss(hidden, weight, mask, targets)
    with pytest.raises(ValueError, match=both):
        loss(hidden, weight, mask, targets, teacher_hidden=t_hidden, teacher_head=t_weight,
             teacher_logits=torch.zeros(B, T, V))
    with pytest.raises(ValueError, match=r"^teacher_hidden needs teacher_head$"):
        loss(hidden, weight, mask, targets, teacher_hidden=t_hidden)
    for bad in (dict(tile_rows=0), dict(teacher_top_k=-1)):
        with pytest.raises(ValueError, match=r"^tile_rows must be >= 1 and teacher_top_k >= 0, got"):
            TiledDistillLoss(**bad)


# --- sparse.py --------------------------------------------------------------------------------


def test_sparse_divergence_defaults_are_t1_and_beta_half():
    teacher, student = _pair(seed=4)
    target = sparse_from_logits(teacher, 6, (1.0,))
    got = sparse_divergence(student, target.ids, target.logprobs, target.log_tail[..., 0], None, "jsd")
    want = _dense_reference("jsd", 0.5)(_collapse(student.log_softmax(-1), target.ids),
                                        _collapse(teacher.log_softmax(-1), target.ids))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def _padded(ids, logprobs, k: int, pads: int):
    """The `k` top-k entries followed by `pads` padding entries as the store and the served
    teacher write them (PAD_LOGPROB, the id repeating a support id), then the tail samples."""
    pad_ids = ids[..., :1].expand(*ids.shape[:-1], pads)
    pad_lp = torch.full(pad_ids.shape, PAD_LOGPROB, dtype=logprobs.dtype)
    return (torch.cat([ids[..., :k], pad_ids, ids[..., k:]], -1),
            torch.cat([logprobs[..., :k], pad_lp, logprobs[..., k:]], -1))


@pytest.mark.parametrize("div, beta", SPARSE_DIVERGENCES)
def test_sparse_padding_counts_for_nothing(div, beta):
    """A top-k with padding entries (fewer alternatives than k) gives the value and gradient of
    the same top-k without them, for the tail bucket and for sampled tails, in every divergence
    (reverse KL and JSD weigh the student's mass on a padded id, so a pad taken for a real
    entry shows there)."""
    teacher, student = _pair(seed=5)
    temperature, k = 2.0, 3
    sampled = sparse_from_logits(teacher, k, (1.0, 2.0), 4, 2.0, torch.Generator().manual_seed(1))
    for m in (0, 4):
        ids, lp = sampled.ids[..., :k + m], sampled.logprobs[..., :k + m]
        tail = sampled.log_tail[..., 1]
        w = sample_log_weights(lp, k, tail, 2.0) if m else None
        pad_ids, pad_lp = _padded(ids, lp, k, 2)
        values, grads = [], []
        for i, l in ((ids, lp), (pad_ids, pad_lp)):
            x = student.clone().requires_grad_()
            d = sparse_divergence(x, i, l, tail, w, div, beta, temperature)
            d.sum().backward()
            values.append(d.detach())
            grads.append(x.grad)
        torch.testing.assert_close(values[1], values[0], rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(grads[1], grads[0], rtol=1e-6, atol=1e-8)
