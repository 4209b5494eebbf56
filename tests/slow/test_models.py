"""Model specs: pruning and the SmolLM2 conversion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llm_teach.models import load_model, prepare

pytestmark = pytest.mark.slow  # every test here loads the real SmolLM2-135M


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
