"""The transformers backend on tiny-random: batching, n samples, greedy/seeded determinism, score()
(stop strings on SmolLM2: tests/slow)."""

from __future__ import annotations

import pytest

from llm_teach.backends.base import SamplingConfig

CHAT = [{"role": "user", "content": "What is 2+3?"}]


def test_generate_returns_n_per_prompt_in_order(tiny_backend):
    prompts = [CHAT, "plain text prompt", [{"role": "user", "content": "Name a color."}]]
    out = tiny_backend.generate(prompts, 3, SamplingConfig(temperature=1.0, max_new_tokens=6, seed=1))
    assert [len(g) for g in out] == [3, 3, 3]
    for prompt, gens in zip(prompts, out):
        for g in gens:
            assert g.prompt == prompt and g.backend == "hf" and g.model == "tiny-random"
            assert len(g.token_ids) <= 6 and g.finish_reason in ("stop", "length")
    # sampling at temperature 1 over a random 49k-vocab model: the 3 samples differ
    assert len({tuple(g.token_ids) for g in out[0]}) > 1


def test_same_seed_same_samples_and_batching_independent(tiny_backend):
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=5, seed=7)
    a = tiny_backend.generate([CHAT], 2, sampling)
    b = tiny_backend.generate([CHAT], 2, sampling)
    assert [g.token_ids for g in a[0]] == [g.token_ids for g in b[0]]
    greedy = SamplingConfig(temperature=0.0, max_new_tokens=5)
    g1 = tiny_backend.generate([CHAT, "x y z"], 1, greedy)
    g2 = tiny_backend.generate([CHAT], 1, greedy)
    assert g1[0][0].token_ids == g2[0][0].token_ids  # left padding does not change the result


def test_sampled_logprobs_match_score(tiny_backend):
    gens = tiny_backend.generate([CHAT], 2, SamplingConfig(temperature=1.0, max_new_tokens=6, seed=3, logprobs=True))
    for g in gens[0]:
        if not g.token_ids:
            continue
        text = tiny_backend.tokenizer.decode(g.token_ids)
        scored = tiny_backend.score([CHAT], [text])[0]
        if scored.token_ids == g.token_ids:  # decode/re-encode round-trips for most samples
            assert scored.logprobs == pytest.approx(g.logprobs, abs=1e-4)


def test_score_is_a_distribution_and_top_k_is_sorted(tiny_backend):
    scored = tiny_backend.score([CHAT, "abc"], [" The answer is 5.", " def"], top_k=4)
    for s in scored:
        assert len(s.token_ids) == len(s.logprobs) == len(s.top_k)
        for lp, top in zip(s.logprobs, s.top_k):
            values = list(top.values())
            assert values == sorted(values, reverse=True) and len(values) == 4
            assert lp <= max(values) + 1e-6 and all(v <= 0 for v in values)
    assert scored[0].total == pytest.approx(sum(scored[0].logprobs))


def test_score_batch_equals_one_by_one(tiny_backend):
    prompts = [CHAT, "short", [{"role": "user", "content": "a much longer prompt " * 5}]]
    completions = [" 5", " a longer completion here", " x"]
    batch = tiny_backend.score(prompts, completions)
    single = [tiny_backend.score([p], [c])[0] for p, c in zip(prompts, completions)]
    for a, b in zip(batch, single):
        assert a.token_ids == b.token_ids
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
