"""The hf backend's memory-budgeted batches on tiny-random: a budget that forces many small
batches (and splits a prompt's samples) changes neither the order and count of samples nor
greedy results, and the shared-prefix prefill equals plain `model.generate`."""

from __future__ import annotations

import torch

from integration.test_hf_backend import CHAT
from llm_teach.backends.base import SamplingConfig, encode_prompt
from llm_teach.backends.hf import HFBackend, HFConfig

PROMPTS = [CHAT, "plain text prompt", [{"role": "user", "content": "Name a color, any color you like."}], "x"]


def _with_budget(tiny_backend, tokens: int) -> HFBackend:
    return HFBackend("tiny-random", HFConfig(max_batch_tokens=tokens), hf_model=tiny_backend.lm,
                     tokenizer=tiny_backend.tokenizer)


def test_small_budget_same_greedy_results_in_order(tiny_backend):
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=5)
    big = tiny_backend.generate(PROMPTS, 3, greedy)
    small = _with_budget(tiny_backend, 40).generate(PROMPTS, 3, greedy)  # ~1 row per batch
    assert [[g.prompt for g in gens] for gens in small] == [[p] * 3 for p in PROMPTS]
    assert [[g.token_ids for g in gens] for gens in small] == [[g.token_ids for g in gens] for gens in big]


def test_seeded_samples_reproducible_under_any_budget(tiny_backend):
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=5, seed=11)
    for budget in (0, 60):
        backend = _with_budget(tiny_backend, budget)
        a, b = backend.generate(PROMPTS, 2, sampling), backend.generate(PROMPTS, 2, sampling)
        assert [[g.token_ids for g in x] for x in a] == [[g.token_ids for g in x] for x in b]


def test_prefix_prefill_matches_plain_generate(tiny_backend):
    """Greedy rows of one batch (prompts prefilled once, cache copied to the samples) equal
    transformers' own batched generate over the same left-padded rows."""
    lm, tok = tiny_backend.lm, tiny_backend.tokenizer
    encoded = [encode_prompt(tok, p) for p in PROMPTS]
    width = max(map(len, encoded))
    rows = [e for e in encoded for _ in range(2)]
    ids = torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    with torch.no_grad():
        plain = lm.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False,
                            pad_token_id=tok.pad_token_id, temperature=None, top_p=None, top_k=None)
    ours = tiny_backend._generate_rows(encoded, [2] * len(encoded), SamplingConfig(max_new_tokens=6), seed=0)
    eos = tok.eos_token_id
    for row, out in zip(plain[:, width:].tolist(), ours):
        expected = row[:row.index(eos)] if eos in row else row
        assert out["token_ids"] == expected
