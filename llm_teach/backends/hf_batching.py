"""How the hf backend splits a generate() call into batches: by tokens in flight, by length.

On a CPU (and on a GPU with room to spare) one large batch decodes faster than several small
ones: every decode step is a matrix product whose cost grows far slower than its row count. So
the limit is memory, and what fills memory while decoding is the KV cache of every row's prompt
and new tokens plus one float32 logits row per sequence. The budget below is derived from the
device's *total* memory (not the free memory of the moment), so the same inputs on the same
machine always give the same batches -- and thus the same seeded samples after a resume.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# Share of total memory the in-flight batch may take: the model itself, the caller's data and
# (on a shared CPU box) other processes need the rest.
CPU_SHARE, GPU_SHARE = 0.25, 0.5


@dataclass(frozen=True)
class Batch:
    """`copies[j]` samples of prompt `prompts[j]` (indices into the call's prompts)."""

    prompts: tuple[int, ...]
    copies: tuple[int, ...]

    @property
    def rows(self) -> int:
        return sum(self.copies)


def bytes_per_token(config, dtype_bytes: int) -> int:
    """KV-cache bytes one token of one row holds (keys + values of every layer), plus scratch
    activations of the same order (hidden states and MLP intermediates of a prefill)."""
    text = config.get_text_config()
    heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    kv = 2 * text.num_hidden_layers * heads * head_dim * dtype_bytes
    scratch = (2 * text.hidden_size + getattr(text, "intermediate_size", 4 * text.hidden_size)) * dtype_bytes
    return kv + scratch


def token_budget(model, device: str) -> int:
    """Tokens in flight (rows x (prompt + new tokens)) that fit the memory share of the device."""
    import torch

    if device.startswith("cuda"):
        total = torch.cuda.get_device_properties(torch.device(device)).total_memory * GPU_SHARE
        total -= sum(p.numel() * p.element_size() for p in model.parameters())
    else:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * CPU_SHARE
    dtype_bytes = next(model.parameters()).element_size()
    per_token = bytes_per_token(model.config, dtype_bytes)
    # the sampler's float32 logits (and softmax/probabilities copies) cost ~4 vocab rows per sequence,
    # charged here per token of a typical 256-token row
    per_token += 4 * 4 * model.config.get_text_config().vocab_size // 256
    return max(1, int(total // per_token))


def plan_batches(lengths: list[int], n: int, max_new_tokens: int, budget: int) -> list[Batch]:
    """Batches of whole prompts (all `n` samples of a prompt together, so the prompt is prefilled
    once) in order of prompt length, longest first, each within `budget` tokens in flight
    counting every row at the batch's widest prompt (left padding). A prompt whose `n` rows
    alone exceed the budget is split across batches."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[Batch] = []
    prompts: list[int] = []
    copies: list[int] = []
    width = 0
    for i in order:
        left = n
        while left:
            width_now = width if prompts else lengths[i]
            room = budget // (width_now + max_new_tokens) - sum(copies)
            if room <= 0 and prompts:
                batches.append(Batch(tuple(prompts), tuple(copies)))
                prompts, copies, width = [], [], 0
                continue
            take = min(left, max(1, room))
            prompts.append(i)
            copies.append(take)
            width = max(width, lengths[i])
            left -= take
    if prompts:
        batches.append(Batch(tuple(prompts), tuple(copies)))
    return batches
