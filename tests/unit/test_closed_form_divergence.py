"""`losses.closed_form`: the hand-derived divergence and cross-entropy gradients that
`TiledDistillLoss`'s fused tiles use against full teacher logits, checked against autograd of the
plain formulas (`dense_divergence`, `F.cross_entropy`) for every divergence, beta end points and
temperatures on both sides of 1."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llm_teach.trainers.losses.closed_form import cross_entropy_and_grad, divergence_and_grad
from llm_teach.trainers.losses.distill import dense_divergence

CASES = [("forward_kl", 0.5, 1.0), ("forward_kl", 0.5, 2.5), ("reverse_kl", 0.5, 0.7), ("reverse_kl", 0.5, 1.0),
         ("jsd", 0.3, 2.0), ("jsd", 0.5, 1.0), ("jsd", 0.9, 0.5), ("jsd", 0.0, 1.5), ("jsd", 1.0, 2.0)]


def _logits(seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(6, 31, generator=g, dtype=dtype) * 2, torch.randn(6, 31, generator=g, dtype=dtype) * 3


@pytest.mark.parametrize("divergence,beta,temperature", CASES)
def test_value_and_gradient_equal_autograd_of_the_plain_formula(divergence, beta, temperature):
    student, teacher = _logits(0)
    student.requires_grad_()
    ref = dense_divergence(student, teacher, divergence, beta, temperature)
    weights = torch.rand(6, dtype=ref.dtype, generator=torch.Generator().manual_seed(1))  # row weights
    (ref_grad,) = torch.autograd.grad((ref * weights).sum(), student)
    value, grad = divergence_and_grad(student.detach().clone(), teacher, divergence, beta, temperature)
    torch.testing.assert_close(value, ref.detach(), atol=1e-12, rtol=0)
    torch.testing.assert_close(grad * weights[:, None], ref_grad, atol=1e-12, rtol=0)


def test_inputs_are_left_unchanged_and_half_precision_is_upcast():
    student, teacher = _logits(2, torch.bfloat16)
    s0, t0 = student.clone(), teacher.clone()
    value, grad = divergence_and_grad(student, teacher, "jsd", 0.5, 2.0)
    assert value.dtype == grad.dtype == torch.float32
    assert torch.equal(student, s0) and torch.equal(teacher, t0)
    ref = dense_divergence(student.float(), teacher.float(), "jsd", 0.5, 2.0)
    torch.testing.assert_close(value, ref, atol=1e-6, rtol=0)


def test_cross_entropy_and_gradient_equal_torch_with_ignored_targets():
    logits, _ = _logits(3)
    logits.requires_grad_()
    targets = torch.tensor([0, 30, -100, 7, 7, -100])
    ref = F.cross_entropy(logits, targets, reduction="none", ignore_index=-100)
    (ref_grad,) = torch.autograd.grad(ref.sum(), logits)
    ce, grad = cross_entropy_and_grad(logits.detach(), targets)
    torch.testing.assert_close(ce, ref.detach(), atol=1e-12, rtol=0)
    torch.testing.assert_close(grad, ref_grad, atol=1e-12, rtol=0)
    assert grad[2].abs().max() == 0 and grad[5].abs().max() == 0


def test_unknown_divergence_is_refused():
    student, teacher = _logits(4)
    with pytest.raises(ValueError, match="unknown divergence"):
        divergence_and_grad(student, teacher, "tv")


def test_defaults_are_jsd_beta_half_at_temperature_one():
    student, teacher = _logits(5)
    value, grad = divergence_and_grad(student, teacher, "jsd")
    torch.testing.assert_close(value, dense_divergence(student, teacher, "jsd", 0.5, 1.0), atol=1e-12, rtol=0)


def test_half_precision_cross_entropy_is_upcast():
    logits, _ = _logits(6, torch.bfloat16)
    ce, grad = cross_entropy_and_grad(logits, torch.tensor([1, 2, 3, 4, 5, -100]))
    assert ce.dtype == grad.dtype == torch.float32
    ref = F.cross_entropy(logits.float(), torch.tensor([1, 2, 3, 4, 5, -100]), reduction="none")
    torch.testing.assert_close(ce, ref, atol=1e-6, rtol=0)
