"""Model specs: parsing, errors, tiny-random determinism, pruning, the SmolLM2 conversion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llm_teach.errors import UserError
from llm_teach.models import load_model, parse_spec, prepare, pruned_layer_indices


@pytest.mark.parametrize("spec, kind", [
    ("smollm2-135m", "alias"),
    ("tiny-random", "alias"),
    ("tiny-random?seed=3", "alias"),
    ("smollm2-135m?layers=20", "alias"),
    ("HuggingFaceTB/SmolLM2-135M-Instruct", "hub"),
])
def test_parse_spec_kinds(spec, kind):
    assert parse_spec(spec).kind == kind


@pytest.mark.parametrize("spec, message", [
    ("no-such-model", "unknown model spec"),
    ("smollm2-135m?layers=0", "whole number"),
    ("smollm2-135m?layers=x", "whole number"),
    ("smollm2-135m?depth=3", "unknown option"),
    ("smollm2-135m?seed=1", "only applies to tiny-random"),
    ("missing.gguf", "GGUF file not found"),
])
def test_bad_specs_are_one_clear_error(spec, message):
    with pytest.raises(UserError, match=message):
        parse_spec(spec)


def test_local_dir_without_config_is_refused(tmp_path):
    with pytest.raises(UserError, match="no config.json"):
        parse_spec(str(tmp_path))


@pytest.mark.parametrize("total, keep, expected", [
    (30, 1, [0]),
    (30, 2, [0, 29]),
    (30, 4, [0, 10, 19, 29]),
    (5, 5, [0, 1, 2, 3, 4]),
])
def test_pruned_layer_indices_spread_evenly(total, keep, expected):
    assert pruned_layer_indices(total, keep) == expected


def test_tiny_random_is_deterministic_per_seed(tiny_model_dir):
    a = load_model("tiny-random").state_dict()
    b = load_model(prepare("tiny-random")).state_dict()  # the cached directory is a valid spec too
    c = load_model("tiny-random?seed=1").state_dict()
    name = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(a[name], b[name])
    assert not torch.equal(a[name], c[name])


def test_pruned_student_keeps_chosen_layers_and_generates(smollm2_dir):
    full = load_model("smollm2-135m")
    pruned_dir = Path(prepare("smollm2-135m?layers=4"))
    pruned = load_model(str(pruned_dir))
    kept = json.loads((pruned_dir / "llm_teach_pruning.json").read_text())["kept_layers"]
    assert kept == [0, 10, 19, 29] and pruned.config.num_hidden_layers == 4
    for new, old in enumerate(kept):
        assert torch.equal(pruned.model.layers[new].mlp.up_proj.weight, full.model.layers[old].mlp.up_proj.weight)
        assert pruned.model.layers[new].self_attn.layer_idx == new  # KV cache slots renumbered
    ids = torch.tensor([[1, 504, 3458]])
    out = pruned.generate(ids, max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 7)


def test_smollm2_conversion_loads_fast_and_matches_gguf_config(smollm2_dir):
    model = load_model("smollm2-135m")
    assert model.config.num_hidden_layers == 30 and model.config.vocab_size == 49152
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    assert (Path(smollm2_dir) / "model.safetensors").is_file()
    assert "quantization_config" not in json.loads((Path(smollm2_dir) / "config.json").read_text())
