"""Sparse teacher targets: what a top-k store must hold per position so the KD loss stays close
to full-vocabulary KD, and the math that turns it into a proper distribution at temperature T.

A teacher known only on its top-k loses its tail: renormalizing the top-k over itself inflates
forward KL (+87% at T=2 from top-32 on SmolLM2, where 42% of the tempered mass lies outside
it). Two remedies, both computed here from the teacher's full log-probs at T=1:

* a tail bucket: `log_tail[T] = log(1 - sum_{top-k} p_T)` for each temperature the loss may
  use. With it, the top-k plus one bucket is an exact distribution (a coarsening of the
  teacher), and every divergence over support + bucket is a lower bound of the full one.
* sampled tail tokens (stratified "Sparse Logit Sampling", Anshumann et al. 2025): M tokens
  drawn with replacement from the teacher's tail at `sample_temperature`, each standing for
  `tail_mass / (M * p(token))` of the tail. The sum over them is an unbiased estimate of the
  tail's part of any f-divergence (forward/reverse KL, JSD), so the loss is unbiased where a
  bucket is biased low.

Re-tempering stored T=1 log-probs is exact given the tail: with `lp` the T=1 log-probs,
`log p_T(i) = lp_i / T - logsumexp_{top-k}(lp / T) + log(1 - tail_T)`.

Hand-written: no maintained library stores sparse KD targets (TRL's distillation trainers run
the teacher model online).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

PAD_LOGPROB = -1e4  # an absent entry (finite: float16-safe, exp() == 0); also the floor of a log mass


def log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x <= 0, accurate at both ends (Maechler 2012): -expm1 near 0,
    log1p(-exp) far from it. Clamped so that x == 0 gives PAD_LOGPROB, not -inf."""
    x = x.clamp(max=0.0)
    near = torch.log(-torch.expm1(x.clamp(min=-math.log(2.0))))
    far = torch.log1p(-torch.exp(x.clamp(max=-math.log(2.0))))
    return torch.where(x > -math.log(2.0), near, far).clamp(min=PAD_LOGPROB)


class SparseTarget(NamedTuple):
    """One teacher's sparse target per position, [..., *]; `ids`/`logprobs` hold the K exact
    top-k entries first, then the M tail samples."""

    ids: Tensor  # [..., K + M] int64
    logprobs: Tensor  # [..., K + M] teacher log-probs at T=1
    log_tail: Tensor  # [..., len(temperatures)] log mass outside the top-k at each temperature


def sparse_from_logits(
    logits: Tensor,
    k: int,
    temperatures: tuple[float, ...] = (1.0,),
    samples: int = 0,
    sample_temperature: float | None = None,
    generator: torch.Generator | None = None,
) -> SparseTarget:
    """The sparse target of full teacher logits [..., V]: top-k, tail mass at each temperature,
    and `samples` tail tokens drawn at `sample_temperature` (which must be in `temperatures`)."""
    logits = logits.float()
    logp = logits.log_softmax(-1)
    values, ids = logp.topk(min(k, logp.size(-1)), dim=-1)
    tails = []
    for t in temperatures:
        lp_t = logits.div(t).log_softmax(-1)
        tails.append(log1mexp(lp_t.gather(-1, ids).logsumexp(-1)))
    log_tail = torch.stack(tails, -1) if tails else logp.new_zeros(logp.shape[:-1] + (0,))
    if samples:
        if sample_temperature not in temperatures:
            raise ValueError(f"sample_temperature {sample_temperature} must be one of {temperatures}")
        tail_logits = (logits / sample_temperature).scatter(-1, ids, float("-inf"))
        flat = tail_logits.reshape(-1, tail_logits.size(-1))
        empty = torch.isinf(flat).all(-1)  # nothing outside the top-k (V <= k)
        probs = flat.masked_fill(empty[:, None], 0.0).softmax(-1).nan_to_num(0.0)
        probs[empty, 0] = 1.0
        drawn = torch.multinomial(probs, samples, replacement=True, generator=generator)
        drawn = drawn.view(*logits.shape[:-1], samples)
        drawn_lp = logp.gather(-1, drawn).masked_fill(empty.view(*logits.shape[:-1], 1), PAD_LOGPROB)
        ids, values = torch.cat([ids, drawn], -1), torch.cat([values, drawn_lp], -1)
    return SparseTarget(ids, values, log_tail)


def tail_from_topk(topk_logprobs: Tensor) -> Tensor:
    """log tail mass at T=1 from normalized T=1 top-k log-probs alone (any backend's top-k,
    and every v1 store): 1 - sum of their probabilities. [..., K] -> [...]"""
    return log1mexp(topk_logprobs.float().logsumexp(-1))


def tempered_logprobs(logprobs: Tensor, k: int, log_tail: Tensor, temperature: float) -> Tensor:
    """Teacher log-probs at `temperature` of every entry (top-k and samples) from T=1 log-probs
    and the tail mass at that temperature. [..., K + M], [...] -> [..., K + M]"""
    x = logprobs.float() / temperature
    support = x[..., :k].logsumexp(-1, keepdim=True)
    return (x - support + log1mexp(log_tail.float())[..., None]).clamp(min=PAD_LOGPROB)


def sample_log_weights(logprobs: Tensor, k: int, log_tail_s: Tensor, sample_temperature: float) -> Tensor:
    """log of each tail sample's weight `tail_s / (M * p_s(token))` (importance weight of a
    draw from the tail at `sample_temperature`; the same at every loss temperature, because
    the loss weighs `p_T(token) * f(...)`). [..., K + M], [...] -> [..., M]"""
    m = logprobs.size(-1) - k
    lp_s = tempered_logprobs(logprobs, k, log_tail_s, sample_temperature)[..., k:]
    w = log_tail_s.float()[..., None] - math.log(max(m, 1)) - lp_s
    return w.masked_fill(logprobs[..., k:] <= PAD_LOGPROB / 2, PAD_LOGPROB)


def store_tail_problem(meta: dict, temperature: float) -> str | None:
    """Why a logit store (its meta.json) cannot give the tail at the loss `temperature`, or None.
    The T=1 tail is always available: it follows from normalized T=1 top-k log-probs alone."""
    temps = meta.get("tail_temperatures") or []
    if temperature in temps or temperature == 1.0:
        return None
    held = f"tail mass at T={temps}" if temps else "no tail mass (no tail_temperatures, e.g. a version-1 store)"
    return (f"the logit store holds {held}, but the loss temperature is {temperature:g}: re-score it with "
            f"tail_temperatures including {temperature:g} (hf teacher backend), distill at temperature 1, "
            "or set sparse_target: renormalize (the old top-k renormalization, biased at T > 1)")


def loss_inputs(meta: dict, topk_ids, topk_logprobs, log_tail, temperature: float) -> dict[str, Tensor]:
    """The keyword tensors of `DistillLoss` for one stored record at the loss `temperature`
    (numpy arrays in, [T, ...] tensors out): ids, T=1 log-probs, the log tail at `temperature`
    and, for a store with samples, their log importance weights."""
    lp = torch.from_numpy(topk_logprobs.astype("float32"))
    out = {"teacher_topk_ids": torch.from_numpy(topk_ids.astype("int64")), "teacher_topk_logprobs": lp}
    k, temps = meta["k"], meta.get("tail_temperatures") or []
    tails = torch.from_numpy(log_tail.astype("float32")) if log_tail is not None else None
    if temperature in temps:
        out["teacher_log_tail"] = tails[:, temps.index(temperature)]
    elif temperature == 1.0:
        out["teacher_log_tail"] = tail_from_topk(lp[:, :k].masked_fill(lp[:, :k] <= PAD_LOGPROB / 2, -math.inf))
    else:
        raise ValueError(store_tail_problem(meta, temperature))
    if meta.get("samples"):
        ts = meta["sample_temperature"]
        out["teacher_sample_log_weights"] = sample_log_weights(lp, k, tails[:, temps.index(ts)], ts)
    return out
