"""KDRL losses (GRPO + reverse KL to a teacher on the student's own rollouts): per-token
estimators of `KL(pi_theta || pi_T)`, their masked reduction, the beta schedule and
reward-guided masking.

Pure torch: no TRL here, so `trainers/kdrl.py` wraps these at GRPOTrainer's loss hook without
circular knowledge. All tensors are per token of the sampled completions, [B, T], with B the
completions of a step laid out group by group as GRPO generates them.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Estimator = Literal["k1", "k2", "k3"]


def kd_estimator(student_logps: Tensor, teacher_logps: Tensor, kind: Estimator = "k2") -> Tensor:
    """Per-token estimator of KL(pi_theta || pi_T) on tokens sampled from the student (KDRL).

    With `R_t = log pi_T(o_t) - log pi_theta(o_t)` (teacher detached), the LOSS terms are::

        k1 = -R          = log pi_theta - log pi_T
        k2 = R^2 / 2                                   (default)
        k3 = e^R - R - 1 = (ratio - 1) - log ratio,    ratio = pi_T / pi_theta   (Schulman)

    Sign convention: KDRL / the design note call k1 "R" in the reward sense (R is a per-token
    reward, higher = closer to the teacher); as a term to MINIMIZE it is `-R`, whose
    expectation under pi_theta is the reverse KL (>= 0). k2 and k3 are even in that sense.

    What the gradient does when o ~ pi_theta is sampled and the loss is differentiated only
    through log pi_theta(o) (the usual "add it to the per-token loss" way):
      * k2: E[grad k2] = grad KL(pi_theta || pi_T) exactly; the reason it is the default.
      * k1: E[grad k1] = E[grad log pi_theta] = 0. Its value is unbiased for the KL, but its
        pathwise gradient vanishes in expectation; k1 only trains when used as a reward (-k1)
        through the policy-gradient / advantage path.
      * k3: value unbiased for the KL (E[e^R] = 1), but E[grad k3] = grad KL(pi_T || pi_theta),
        the FORWARD KL gradient, which is still a pull toward the teacher.

    Args:
        student_logps: [B, T] log pi_theta of the sampled tokens (with grad).
        teacher_logps: [B, T] log pi_T of the same tokens (detached here).
        kind: "k1", "k2" or "k3".

    Returns:
        [B, T] per-token loss values; reduce with `masked_mean`.
    """
    r = teacher_logps.detach() - student_logps
    if kind == "k1":
        return -r
    if kind == "k2":
        return 0.5 * r.square()
    if kind == "k3":
        return torch.expm1(r) - r
    raise ValueError(f"unknown estimator {kind!r} (k1, k2, k3)")


def masked_mean(
    values: Tensor, mask: Tensor, reduction: Literal["token", "sequence"] = "token"
) -> Tensor:
    """Mean of `values` [B, T] over `mask` [B, T] (bool or float).

    "token": sum(values * mask) / sum(mask) - every token weighs the same (DAPO-style).
    "sequence": per-sequence mean, then the mean over ALL B rows (TRL GRPO's "grpo" loss
    type); rows with no unmasked token contribute 0 but still count, so masking whole
    responses (e.g. `reward_mask`) scales the term down by the fraction kept.
    Empty masks give 0, never NaN.
    """
    m = mask.to(values.dtype)
    if reduction == "token":
        return (values * m).sum() / m.sum().clamp_min(1.0)
    if reduction == "sequence":
        return ((values * m).sum(-1) / m.sum(-1).clamp_min(1.0)).mean()
    raise ValueError(f"unknown reduction {reduction!r} (token, sequence)")


def beta_schedule(
    step: int,
    beta0: float = 5e-3,
    kind: Literal["constant", "linear"] = "constant",
    beta_min: float = 1e-3,
    delta: float = 5e-5,
) -> float:
    """KD coefficient at `step`: constant `beta0`, or linear `max(beta0 - delta * step, beta_min)`.

    Defaults are KDRL's (beta0=5e-3, beta_min=1e-3, delta=5e-5: reaches the floor at step 80).
    """
    if kind == "constant":
        return beta0
    if kind == "linear":
        return max(beta0 - delta * step, beta_min)
    raise ValueError(f"unknown beta schedule {kind!r} (constant, linear)")


def reward_mask(
    rewards: Tensor,
    group_size: int,
    mode: Literal["none", "response", "group"] = "none",
    threshold: float = 0.0,
) -> Tensor:
    """Which responses get the KD term, from their rewards. [B] -> float [B].

    A response counts as CORRECT when `reward > threshold` (threshold 0 fits 0/1 correctness
    rewards; raise it for shaped rewards such as format bonuses). A NaN reward (TRL's value when
    a reward function returns None: the grader could not tell) is UNKNOWN, never correct, so it
    keeps its KD term: dropping the teacher's signal on a response nobody graded would be a
    silent choice the user did not make. Count NaNs with `torch.isnan(rewards)` to report them.
      * "none": all ones.
      * "response": 1 for every response not known to be correct: imitate the teacher where RL
        says we failed (or cannot say) -- KDRL's reward-guided masking.
      * "group": 1 for every response of a group with no correct response (where GRPO's
        advantages are all zero and KD is the only signal); 0 elsewhere.

    `rewards` is laid out group by group, `group_size` consecutive responses per prompt, as
    GRPO generates them.
    """
    if mode == "none":
        return torch.ones_like(rewards, dtype=torch.float32)
    correct = rewards > threshold  # NaN > x is False: unknown is not correct
    if mode == "response":
        return (~correct).float()
    if mode == "group":
        if rewards.numel() % group_size:
            raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
        none_correct = ~correct.view(-1, group_size).any(-1, keepdim=True)
        return none_correct.expand(-1, group_size).reshape(-1).float()
    raise ValueError(f"unknown reward mask mode {mode!r} (none, response, group)")


def importance_weights(
    logps: Tensor, old_logps: Tensor | None, eps_low: float = 0.2, eps_high: float = 0.2
) -> Tensor:
    """Per-token weights that make the KD gradient right when the rollouts are stale. [B, T].

    The k2 identity `E_{o~pi_theta}[grad k2] = grad KL(pi_theta || pi_T)` needs o sampled from
    the CURRENT policy. GRPO reuses a generation batch (`num_iterations > 1`, or
    `steps_per_generation` > gradient accumulation), so later updates see samples of pi_old;
    reweighting each token by `rho = pi_theta / pi_old` restores the expectation (token-level,
    as GRPO's own ratio). The weight is detached (it corrects the sampling distribution; its
    own gradient would add a score-function term k2 does not have) and clipped to
    [1 - eps_low, 1 + eps_high] like GRPO's ratio, trading a little bias for bounded variance.
    `old_logps=None` (TRL's on-policy case) gives exactly 1.
    """
    if old_logps is None:
        return torch.ones_like(logps).detach()
    return torch.exp(logps.detach() - old_logps).clamp(1.0 - eps_low, 1.0 + eps_high)


def kd_term(per_token: Tensor, mask: Tensor, weights: Tensor, num_tokens: Tensor | float) -> Tensor:
    """The KD term of one micro-batch: `sum(weights * per_token * mask) / num_tokens`.

    Normalization, chosen on purpose: `num_tokens` counts ALL completion tokens of the batch
    (GRPO's "dapo" denominator), not only the tokens the KD mask keeps. A token's weight is then
    fixed, so masking responses out (reward-guided KD) shrinks the term in proportion instead of
    scaling up the remaining tokens: with half the responses masked, each remaining token pulls
    toward the teacher exactly as hard as before. (A mean over kept tokens would double it.)
    """
    m = mask.to(per_token.dtype)
    return (weights * per_token * m).sum() / torch.as_tensor(num_tokens, dtype=per_token.dtype).clamp_min(1.0)
