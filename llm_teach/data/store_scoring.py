"""Writing a teacher backend's `score()` results into a top-k logit store (`logit_store`):
sorting and padding each position's top-k, adding the tail the store asks for, and turning
the writer's refusals into one-line errors. What the SSB stage and distillation from a served
teacher both call.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from llm_teach.data.logit_store import PAD_LOGPROB, TopKLogitWriter
from llm_teach.errors import UserError


def open_writer(root: str | os.PathLike, **kwargs: Any) -> TopKLogitWriter:
    """`TopKLogitWriter(root, **kwargs)`, its refusals (another writer has the store open, a store
    written with other settings) turned into one-line UserErrors."""
    try:
        return TopKLogitWriter(root, **kwargs)
    except (RuntimeError, ValueError) as exc:
        raise UserError(f"{root}: {exc}") from None


def tail_request(writer: TopKLogitWriter, seed: int = 0) -> dict[str, Any]:
    """`score()` keyword arguments a teacher backend needs for this store's tail: `{}` when the
    store holds no tail or only the T=1 tail (derived from the top-k itself, so every backend
    can fill it), else `{"tail": TailRequest(...)}` (which only the hf backend can serve)."""
    temps, m = writer.meta["tail_temperatures"], writer.meta["samples"]
    if not m and set(temps) <= {1.0}:
        return {}
    from llm_teach.backends.base import TailRequest

    return {"tail": TailRequest(tuple(temps), m, writer.meta["sample_temperature"], seed)}


def _log_tail_from_topk(logprobs: np.ndarray) -> np.ndarray:
    """log(1 - sum exp(top-k T=1 log-probs)) per row, floored at PAD_LOGPROB (numpy twin of
    `sparse_targets.tail_from_topk`: this module stays torch-free)."""
    top = logprobs.max(-1, keepdims=True) if logprobs.size else np.zeros(logprobs.shape[:-1] + (1,))
    support = np.minimum(top[..., 0] + np.log(np.exp(logprobs - top).sum(-1)), 0.0)
    with np.errstate(divide="ignore"):
        tail = np.where(support > -np.log(2), np.log(-np.expm1(support)), np.log1p(-np.exp(support)))
    return np.maximum(tail, PAD_LOGPROB)


def _scored_tail(writer: TopKLogitWriter, key: str, scored: Any, logps: np.ndarray) -> np.ndarray | None:
    """[T, nT] log tail mass for the store's tail temperatures, from the backend's answer (the
    T=1 column from the stored top-k when the backend gave none)."""
    temps = writer.meta["tail_temperatures"]
    if not temps:
        return None
    cols = []
    for t in temps:
        col = (scored.log_tail or {}).get(t)
        if col is None and t == 1.0:
            col = _log_tail_from_topk(logps[:, :writer.meta["k"]])
        if col is None:
            raise UserError(f"the teacher backend returned no tail mass at T={t} for '{key}' (the store's "
                            f"tail_temperatures are {temps}); only the hf backend computes it")
        cols.append(np.asarray(col, dtype=np.float64).reshape(len(logps)))
    return np.stack(cols, -1)


def append_scored(writer: TopKLogitWriter, key: str, scored: Any) -> dict:
    """Store one `Scored` result of a backend's `score(..., top_k=k, **tail_request(writer))`
    under `key`; returns its ref.

    Each position's `{token_id: logprob}` row is sorted by log-prob and cut or padded to the
    store's k (padding: the row's last id, or 0 for an empty row, with PAD_LOGPROB); a store
    with samples gets the backend's tail samples after it, and a store with tail temperatures
    the tail mass. A key already in the store returns its existing ref and stores nothing, so a
    caller that redoes work after a crash never stores a record twice.
    """
    if key in writer:
        return writer.ref(key)
    if scored.top_k is None:
        raise UserError(f"the teacher backend returned no top-k log-probs for '{key}'; a backend whose "
                        "score() supports top_k is needed (hf, vllm, openai on vLLM)")
    k, m = writer.meta["k"], writer.meta["samples"]
    if m and (scored.tail_samples is None or any(len(row) != m for row in scored.tail_samples)):
        raise UserError(f"the teacher backend returned no {m} tail samples per position for '{key}'; only the hf "
                        "backend draws them")
    ids, logps = [], []
    for j, row in enumerate(scored.top_k):
        pairs = sorted(row.items(), key=lambda kv: -kv[1])[:k]
        pairs += [(pairs[-1][0] if pairs else 0, PAD_LOGPROB)] * (k - len(pairs))
        pairs += list(scored.tail_samples[j]) if m else []
        ids.append([i for i, _ in pairs])
        logps.append([lp for _, lp in pairs])
    shape = (len(ids), k + m)  # also for an empty completion: [0, k], not [0]
    logps = np.array(logps, dtype=np.float64).reshape(shape)
    return writer.append(key, scored.token_ids, np.array(ids, dtype=np.int64).reshape(shape), logps,
                         scored.logprobs, _scored_tail(writer, key, scored, logps))
