"""KDRL's teacher scoring runs each distinct prompt once and copies its KV cache to the rollouts:
the hidden states it returns equal one plain forward over prompt + completion per rollout
(called as TRL calls the student), with left-padded prompts and right-padded completions."""

from __future__ import annotations

import pytest
import torch

from llm_teach.trainers.kdrl import _completion_hidden


@pytest.mark.parametrize("width", [1, 5])
def test_prompt_once_equals_full_forward(tiny_backend, width):
    tiny_model = tiny_backend.lm
    torch.manual_seed(0)
    vocab = tiny_model.config.vocab_size
    prompts = torch.randint(3, vocab, (3, 6))
    prompt_mask = torch.ones_like(prompts)
    prompt_mask[1, :2] = 0  # left padding of a shorter prompt
    prompt_mask[2, :4] = 0
    order = torch.tensor([0, 0, 1, 2, 1, 0])  # rollouts of the same prompt, not all adjacent
    prompt_ids, prompt_mask = prompts[order], prompt_mask[order]
    completion_ids = torch.randint(3, vocab, (len(order), width))
    completion_mask = torch.ones_like(completion_ids)
    if width > 1:
        completion_mask[2, 3:] = 0  # an early-stopped rollout
    with torch.no_grad():
        ours = _completion_hidden(tiny_model, prompt_ids, prompt_mask, completion_ids, completion_mask)
        full = tiny_model(input_ids=torch.cat([prompt_ids, completion_ids], 1),
                          attention_mask=torch.cat([prompt_mask, completion_mask], 1),
                          output_hidden_states=True, use_cache=False).hidden_states[-1][:, -width - 1:-1]
    assert ours.shape == full.shape
    valid = completion_mask.bool()
    torch.testing.assert_close(ours[valid], full[valid], rtol=1e-4, atol=1e-5)
