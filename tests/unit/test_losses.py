"""Distillation and KDRL losses against dense references, TRL, and closed-form gradients."""

import math
import os

import pytest
import torch

from llm_teach.trainers.losses.distill import ChunkedDistillLoss, DistillLoss, dense_divergence, topk_divergence
from llm_teach.trainers.losses.divergences import forward_kl, jsd, reverse_kl
from llm_teach.trainers.losses.kdrl import beta_schedule, kd_estimator, masked_mean, reward_mask

B, T, V, K, H = 2, 7, 23, 5, 8
NEG = -1e4  # "minus infinity" that keeps 0 * log 0 finite in dense references


def _batch(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(B, T, V, generator=g, dtype=dtype) * 2
    teacher = torch.randn(B, T, V, generator=g, dtype=dtype) * 2
    mask = torch.ones(B, T)
    mask[0, -2:] = 0  # padding at the end of one row
    mask[1, 0] = 0
    targets = torch.randint(0, V, (B, T), generator=g)
    return student, teacher, mask, targets


def _topk(teacher_logits, k=K):
    lp, ids = teacher_logits.log_softmax(-1).topk(k, dim=-1)
    return ids, lp


def _dense(values, ids):
    """[B, T, V] logits: `values` [B, T, K] at `ids`, NEG elsewhere (a top-k-only distribution)."""
    return torch.full((*ids.shape[:-1], V), NEG, dtype=values.dtype).scatter(-1, ids, values)


def _trl_jsd(student, teacher, mask, beta, temperature=1.0):
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from trl.experimental.gkd import GKDTrainer

    labels = torch.where(mask.bool(), 0, -100)
    return GKDTrainer.generalized_jsd_loss(
        student, teacher, labels, beta=beta, temperature=temperature
    )


# --- divergences -------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_dense_jsd_matches_trl(beta, temperature):
    student, teacher, mask, _ = _batch()
    loss = DistillLoss("jsd", jsd_beta=beta, temperature=temperature)
    out = loss(student, mask, teacher_logits=teacher)
    ref = _trl_jsd(student, teacher, mask, beta, temperature)
    torch.testing.assert_close(out.kd, ref, atol=1e-6, rtol=1e-5)
    # T^2 is ours (Hinton), not TRL's
    torch.testing.assert_close(out.loss, temperature**2 * ref, atol=1e-6, rtol=1e-5)


def test_jsd_endpoints_are_kls_and_formula_is_symmetric_at_half():
    s, t = torch.randn(4, 9).log_softmax(-1), torch.randn(4, 9).log_softmax(-1)
    torch.testing.assert_close(jsd(s, t, 0.0), forward_kl(s, t))
    torch.testing.assert_close(jsd(s, t, 1.0), reverse_kl(s, t))
    torch.testing.assert_close(jsd(s, t, 0.5), jsd(t, s, 0.5))
    # TRL's convention is discontinuous at the end points: the formula vanishes like beta * KL
    torch.testing.assert_close(jsd(s, t, 1e-4) / 1e-4, forward_kl(s, t), rtol=1e-2, atol=1e-4)
    assert (forward_kl(s, t) >= 0).all() and (reverse_kl(s, t) >= 0).all()


def test_trl_dense_matches_ours_with_top_k_support_only_teacher():
    """student_renorm=False is the exact divergence vs the renormalized top-k teacher."""
    student, teacher, mask, _ = _batch(1)
    ids, lp = _topk(teacher)
    dense_teacher = _dense(lp, ids)
    for div, beta in [("forward_kl", 0.5), ("jsd", 0.0), ("jsd", 0.3), ("jsd", 0.5), ("jsd", 0.9)]:
        for temp in (1.0, 1.5):
            out = DistillLoss(div, jsd_beta=beta, temperature=temp)(
                student, mask, teacher_topk_ids=ids, teacher_topk_logprobs=lp
            )
            ref = _trl_jsd(student, dense_teacher, mask, 0.0 if div == "forward_kl" else beta, temp)
            torch.testing.assert_close(out.kd, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "div,beta", [("forward_kl", 0.5), ("reverse_kl", 0.5), ("jsd", 0.4), ("jsd", 1.0)]
)
def test_student_renorm_equals_dense_on_the_support(div, beta):
    student, teacher, mask, _ = _batch(2)
    ids, lp = _topk(teacher)
    got = topk_divergence(student, ids, lp, div, beta, temperature=2.0, student_renorm=True)
    ref = dense_divergence(_dense(student.gather(-1, ids) / 2, ids), _dense(lp / 2, ids), div, beta)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_topk_with_full_support_equals_dense():
    student, teacher, mask, _ = _batch(3)
    ids, lp = _topk(teacher, k=V)
    for div in ("forward_kl", "jsd"):
        a = topk_divergence(student, ids, lp, div, 0.5, temperature=3.0)
        b = dense_divergence(student, teacher, div, 0.5, temperature=3.0)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_reverse_kl_without_student_renorm_is_refused():
    student, teacher, mask, _ = _batch()
    ids, lp = _topk(teacher)
    with pytest.raises(ValueError, match="student_renorm"):
        DistillLoss("reverse_kl")(student, mask, teacher_topk_ids=ids, teacher_topk_logprobs=lp)
    with pytest.raises(ValueError, match="student_renorm"):
        topk_divergence(student, ids, lp, "jsd", jsd_beta=1.0)
    # full teacher logits are fine
    DistillLoss("reverse_kl")(student, mask, teacher_logits=teacher)


def test_forward_kl_topk_pushes_student_mass_onto_support():
    _, teacher, mask, _ = _batch()
    ids, lp = _topk(teacher)
    student = torch.zeros(B, T, V, requires_grad=True)
    opt = torch.optim.Adam([student], lr=0.1)
    for _ in range(100):
        opt.zero_grad()
        DistillLoss()(student, mask, teacher_topk_ids=ids, teacher_topk_logprobs=lp).loss.backward()
        opt.step()
    on_support = student.detach().softmax(-1).gather(-1, ids).sum(-1)
    assert on_support[mask.bool()].min() > 0.95


# --- DistillLoss: CE, masking, alignment ---------------------------------------------------


def test_distill_loss_total_and_ce():
    student, teacher, mask, targets = _batch()
    targets = targets.masked_fill(~mask.bool(), -100)  # ignored either way
    ids, lp = _topk(teacher)
    fn = DistillLoss("forward_kl", temperature=2.0, lambda_kd=0.7, lambda_ce=0.3)
    out = fn(student, mask, targets, ids, lp)
    m = mask.bool()
    ce_ref = torch.nn.functional.cross_entropy(student[m], targets[m])
    torch.testing.assert_close(out.ce, ce_ref)
    torch.testing.assert_close(out.loss, 0.7 * 4.0 * out.kd + 0.3 * out.ce)
    assert out.num_tokens.item() == m.sum().item()


def test_masked_positions_do_not_matter_and_empty_mask_is_zero():
    student, teacher, mask, targets = _batch()
    ids, lp = _topk(teacher)
    fn = DistillLoss("jsd", lambda_ce=1.0)
    a = fn(student, mask, targets, ids, lp).loss
    garbage = student.clone()
    garbage[~mask.bool()] = 1e3
    b = fn(garbage, mask, targets, ids, lp).loss
    torch.testing.assert_close(a, b)
    s = student.clone().requires_grad_()
    out = fn(s, torch.zeros(B, T), targets, ids, lp)
    out.loss.backward()
    assert out.loss.item() == 0.0 and torch.isfinite(s.grad).all()


def test_missing_teacher_or_targets_is_an_error():
    student, teacher, mask, _ = _batch()
    with pytest.raises(ValueError):
        DistillLoss()(student, mask)
    with pytest.raises(ValueError, match="targets"):
        DistillLoss(lambda_ce=1.0)(student, mask, teacher_logits=teacher)


# --- chunked ------------------------------------------------------------------------------


@pytest.mark.parametrize("checkpointing", [True, False])
@pytest.mark.parametrize(
    "kwargs,teacher_kind",
    [
        (dict(divergence="forward_kl", temperature=2.0, lambda_ce=0.5), "topk"),
        (dict(divergence="jsd", jsd_beta=0.3, lambda_kd=2.0), "topk"),
        (dict(divergence="reverse_kl", student_renorm=True, lambda_ce=1.0), "topk"),
        (dict(divergence="reverse_kl", temperature=1.5), "dense"),
    ],
)
def test_chunked_equals_plain_values_and_grads(kwargs, teacher_kind, checkpointing):
    g = torch.Generator().manual_seed(4)
    hidden = torch.randn(B, T, H, generator=g, requires_grad=True)
    weight = torch.randn(V, H, generator=g, requires_grad=True)
    _, teacher, mask, targets = _batch()
    ids, lp = _topk(teacher)
    tk = dict(teacher_logits=teacher) if teacher_kind == "dense" else dict(
        teacher_topk_ids=ids, teacher_topk_logprobs=lp.half()  # as stored
    )
    plain = DistillLoss(**kwargs)(hidden @ weight.T, mask, targets, **tk)
    plain.loss.backward()
    grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None

    chunked = ChunkedDistillLoss(chunk_size=3, checkpoint=checkpointing, **kwargs)(
        hidden, weight, mask, targets, **tk
    )
    chunked.loss.backward()
    for a, b in zip(plain, chunked):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(hidden.grad, grads[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weight.grad, grads[1], atol=1e-5, rtol=1e-5)


def test_chunked_with_checkpoint_never_keeps_logits_for_backward():
    hidden = torch.randn(B, 12, H, requires_grad=True)
    weight = torch.randn(V, H, requires_grad=True)
    ids, lp = _topk(torch.randn(B, 12, V))

    def saved_logits(fn):
        """Saved-for-backward tensors shaped like logits, [B, chunk, V]."""
        saved = []

        def pack(x):
            if x.dim() == 3 and x.shape[-1] == V:
                saved.append(x.shape)
            return x

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            fn(hidden, weight, torch.ones(B, 12), teacher_topk_ids=ids, teacher_topk_logprobs=lp)
        return saved

    assert len(saved_logits(ChunkedDistillLoss(chunk_size=4, checkpoint=False))) >= 3
    assert saved_logits(ChunkedDistillLoss(chunk_size=4, checkpoint=True)) == []


# --- KDRL ---------------------------------------------------------------------------------


def _toy(seed=0, v=11):
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(v, generator=g, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(v, generator=g, dtype=torch.float64).log_softmax(-1)
    return theta, teacher


def _on_policy_expectation(theta, teacher, kind, detach_weights=True):
    """E_{o ~ pi_theta}[k(o)] as an exact sum over the vocabulary (no Monte Carlo).

    detach_weights=True is what sampling + a per-token loss gives: the samples do not carry
    gradient, only log pi_theta(o) does.
    """
    logp = theta.log_softmax(-1)
    w = logp.exp().detach() if detach_weights else logp.exp()
    return (w * kd_estimator(logp[None], teacher[None], kind)[0]).sum()


def _grad(f, theta):
    (g,) = torch.autograd.grad(f, theta)
    return g


def _rkl(theta, teacher):
    return reverse_kl(theta.log_softmax(-1), teacher)


def test_k2_on_policy_gradient_is_exactly_the_reverse_kl_gradient():
    for seed in range(3):
        theta, teacher = _toy(seed)
        g_k2 = _grad(_on_policy_expectation(theta, teacher, "k2"), theta)
        g_kl = _grad(_rkl(theta, teacher), theta)
        torch.testing.assert_close(g_k2, g_kl, atol=1e-5, rtol=0)
        assert g_kl.abs().max() > 1e-2  # not trivially zero


def test_k1_on_policy_gradient_vanishes_but_its_value_is_the_kl():
    theta, teacher = _toy(1)
    g_k1 = _grad(_on_policy_expectation(theta, teacher, "k1"), theta)
    g_kl = _grad(_rkl(theta, teacher), theta)
    torch.testing.assert_close(g_k1, torch.zeros_like(g_k1), atol=1e-12, rtol=0)
    assert (g_k1 - g_kl).abs().max() > 1e-2
    # value unbiased; and through the score-function path (weights not detached) it IS grad KL
    e_k1 = _on_policy_expectation(theta, teacher, "k1", detach_weights=False)
    torch.testing.assert_close(e_k1, _rkl(theta, teacher))
    torch.testing.assert_close(_grad(e_k1, theta), g_kl)


def test_k3_value_is_the_kl_and_its_gradient_is_forward_kl():
    theta, teacher = _toy(2)
    torch.testing.assert_close(_on_policy_expectation(theta, teacher, "k3"), _rkl(theta, teacher))
    g_k3 = _grad(_on_policy_expectation(theta, teacher, "k3"), theta)
    g_fkl = _grad(forward_kl(theta.log_softmax(-1), teacher), theta)
    torch.testing.assert_close(g_k3, g_fkl, atol=1e-10, rtol=0)


@pytest.mark.parametrize("kind", ["k1", "k2", "k3"])
def test_minimizing_each_estimator_moves_student_toward_teacher(kind):
    # k2/k3 as a per-token loss on on-policy samples; k1 through its score-function path
    # (as a reward), since its per-token pathwise gradient is zero in expectation.
    theta, teacher = _toy(5)
    opt = torch.optim.SGD([theta], lr=0.5)
    kls = [_rkl(theta, teacher).item()]
    for _ in range(150):
        opt.zero_grad()
        _on_policy_expectation(theta, teacher, kind, detach_weights=kind != "k1").backward()
        opt.step()
        kls.append(_rkl(theta, teacher).item())
    assert kls[-1] < 0.05 * kls[0]
    assert all(b <= a + 1e-12 for a, b in zip(kls, kls[1:]))


def test_per_token_signs():
    # student over-confident on a token (log p_theta > log p_T): every estimator's gradient
    # step lowers it; under-confident: k2 and k3 raise it, k1 lowers it regardless.
    teacher = torch.tensor([[-1.0, -1.0]])
    for kind in ("k1", "k2", "k3"):
        s = torch.tensor([[-0.5, -2.0]], requires_grad=True)
        kd_estimator(s, teacher, kind).sum().backward()
        assert s.grad[0, 0] > 0  # descent decreases log p_theta of the over-confident token
        assert (s.grad[0, 1] < 0) == (kind != "k1")
    r = torch.tensor([[0.3]])
    assert kd_estimator(-r, torch.zeros(1, 1), "k1").item() == pytest.approx(-0.3)
    assert kd_estimator(-r, torch.zeros(1, 1), "k2").item() == pytest.approx(0.045)
    assert kd_estimator(-r, torch.zeros(1, 1), "k3").item() == pytest.approx(math.exp(0.3) - 1.3)
    with pytest.raises(ValueError):
        kd_estimator(r, r, "k4")


def test_teacher_is_detached():
    s = torch.zeros(1, 3, requires_grad=True)
    t = torch.full((1, 3), -1.0, requires_grad=True)
    kd_estimator(s, t, "k2").sum().backward()
    assert t.grad is None


def test_masked_mean():
    v = torch.tensor([[1.0, 2.0, 3.0, 100.0], [4.0, 100.0, 100.0, 100.0], [100.0] * 4])
    m = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    assert masked_mean(v, m, "token").item() == pytest.approx((1 + 2 + 3 + 4) / 4)
    assert masked_mean(v, m, "sequence").item() == pytest.approx((2.0 + 4.0 + 0.0) / 3)
    assert masked_mean(v, torch.zeros_like(m), "token").item() == 0.0
    assert masked_mean(v, m.bool(), "token").item() == pytest.approx(2.5)
    with pytest.raises(ValueError):
        masked_mean(v, m, "batch")


def test_beta_schedule():
    assert beta_schedule(0) == 5e-3 and beta_schedule(10_000) == 5e-3
    assert beta_schedule(0, kind="linear") == pytest.approx(5e-3)
    assert beta_schedule(40, kind="linear") == pytest.approx(3e-3)
    assert beta_schedule(80, kind="linear") == pytest.approx(1e-3)
    assert beta_schedule(10_000, kind="linear") == 1e-3
    assert beta_schedule(5, beta0=1.0, kind="linear", beta_min=0.0, delta=0.1) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        beta_schedule(0, kind="cosine")


def test_reward_mask():
    r = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, -0.5, 0.2])
    assert reward_mask(r, 2, "none").tolist() == [1.0] * 10
    assert reward_mask(r, 2, "response").tolist() == [0, 1, 1, 1, 1, 1, 0, 0, 1, 0]
    assert reward_mask(r, 2, "group").tolist() == [0, 0, 1, 1, 1, 1, 0, 0, 0, 0]
    assert reward_mask(r, 2, "group", threshold=0.5).tolist() == [0, 0, 1, 1, 1, 1, 0, 0, 1, 1]
    assert reward_mask(r, 5, "group").tolist() == [0] * 10
    assert reward_mask(r, 2, "response").dtype == torch.float32
    with pytest.raises(ValueError):
        reward_mask(r, 3, "group")
    with pytest.raises(ValueError):
        reward_mask(r, 2, "sometimes")
