"""hf_batching.plan_batches: every sample planned once, batches within the token budget,
grouped by prompt length, whole prompts kept together when they fit."""

from __future__ import annotations

from collections import Counter

import pytest

from llm_teach.backends.hf_batching import bytes_per_token, plan_batches

LENGTHS = [30, 5, 17, 30, 8, 12, 25, 3]


@pytest.mark.parametrize("n, budget", [(1, 10_000), (4, 10_000), (4, 400), (3, 160), (5, 40), (2, 1)])
def test_every_sample_once_and_within_budget(n, budget):
    new = 8
    batches = plan_batches(LENGTHS, n, new, budget)
    planned = Counter()
    for b in batches:
        for i, k in zip(b.prompts, b.copies):
            planned[i] += k
        width = max(LENGTHS[i] for i in b.prompts)
        # over budget only when one row alone does not fit
        assert b.rows * (width + new) <= budget or b.rows == 1
    assert planned == Counter({i: n for i in range(len(LENGTHS))})


def test_one_batch_when_everything_fits_longest_first():
    (only,) = plan_batches(LENGTHS, 4, 8, 10_000)
    assert [LENGTHS[i] for i in only.prompts] == sorted(LENGTHS, reverse=True)
    assert only.copies == (4,) * len(LENGTHS)


def test_batches_group_similar_lengths():
    batches = plan_batches(LENGTHS, 2, 10, 160)  # 4 rows of width 30, 7 rows of width 12
    widths = [sorted(LENGTHS[i] for i in b.prompts) for b in batches]
    assert widths == [[30, 30], [17, 25], [3, 5, 8, 12], [3]]
    assert batches[2].copies == (2, 2, 2, 1) and batches[3].copies == (1,)  # the last prompt split


def test_kv_bytes_per_token_counts_layers_and_kv_heads():
    from transformers import LlamaConfig

    config = LlamaConfig(num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3, hidden_size=576,
                         intermediate_size=1536)
    kv = 2 * 30 * 3 * 64 * 4  # keys + values, 30 layers, 3 KV heads of 64 dims, float32
    assert bytes_per_token(config, 4) == kv + (2 * 576 + 1536) * 4
    assert bytes_per_token(config, 2) == (kv + (2 * 576 + 1536) * 4) // 2
