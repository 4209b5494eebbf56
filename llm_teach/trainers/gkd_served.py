"""A served teacher's side of the GKD loss: its top-k prompt log-probs of every completion in the
batch (vLLM / any `Backend.score`), laid out in the loss frame with the tail mass outside the
top-k (`data.sparse_targets.tail_from_topk`, exact at T = 1), so `losses.sparse` matches the
student against top-k + one tail bucket instead of a renormalized top-k.

Completions are detokenized and re-scored (as kdrl's served teacher): a row whose
re-tokenization differs from the student's ids is left out of the loss (`teacher_mask`).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from llm_teach.data.sparse_targets import PAD_LOGPROB, tail_from_topk


def served_teacher_inputs(backend, tokenizer, prompts: list, inputs: dict[str, torch.Tensor], mask: torch.Tensor,
                          top_k: int) -> dict[str, Any]:
    """`teacher_topk_ids` / `teacher_topk_logprobs` [B, L-1, K], `teacher_log_tail` [B, L-1] and
    `teacher_mask` [B, L-1] for `TiledDistillLoss`, from `backend.score` of every row's
    completion (the tokens where `mask`, the loss frame's completion mask, is set)."""
    targets = inputs["input_ids"][:, 1:]
    rows = [targets[i][mask[i].bool()].tolist() for i in range(targets.size(0))]
    texts = tokenizer.batch_decode(rows, skip_special_tokens=False)
    scored = backend.score(prompts, texts, top_k=top_k)
    shape = (*targets.shape, top_k)
    ids = torch.zeros(shape, dtype=torch.long, device=targets.device)
    logprobs = torch.full(shape, PAD_LOGPROB, dtype=torch.float32, device=targets.device)
    keep = torch.zeros(targets.shape, dtype=torch.float32, device=targets.device)
    for i, (row, result) in enumerate(zip(rows, scored, strict=True)):
        if not row or list(result.token_ids) != row or not result.top_k:
            continue
        where = mask[i].nonzero().squeeze(-1).tolist()
        for pos, alternatives in zip(where, result.top_k, strict=True):
            top = sorted(alternatives.items(), key=lambda kv: -kv[1])[:top_k]
            ids[i, pos, :len(top)] = torch.tensor([t for t, _ in top])
            ids[i, pos, len(top):] = top[0][0]  # padding repeats a support id (masks nothing extra)
            logprobs[i, pos, :len(top)] = torch.tensor([lp for _, lp in top])
        keep[i, where] = 1.0
    support = logprobs.masked_fill(logprobs <= PAD_LOGPROB / 2, -math.inf)
    return {"teacher_topk_ids": ids, "teacher_topk_logprobs": logprobs,
            "teacher_log_tail": tail_from_topk(support), "teacher_mask": keep}
