"""Model specs: tiny-random determinism."""

from __future__ import annotations

import torch

from llm_teach.models import load_model, prepare


def test_tiny_random_is_deterministic_per_seed(tiny_model_dir):
    a = load_model("tiny-random").state_dict()
    b = load_model(prepare("tiny-random")).state_dict()  # the cached directory is a valid spec too
    c = load_model("tiny-random?seed=1").state_dict()
    name = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(a[name], b[name])
    assert not torch.equal(a[name], c[name])
