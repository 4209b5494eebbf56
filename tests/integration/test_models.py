"""Model specs: tiny-random determinism; merged LoRA adapters in the cache."""

from __future__ import annotations

from pathlib import Path

import torch

from llm_teach.models import load_model, prepare


def test_tiny_random_is_deterministic_per_seed(tiny_model_dir):
    a = load_model("tiny-random").state_dict()
    b = load_model(prepare("tiny-random")).state_dict()  # the cached directory is a valid spec too
    c = load_model("tiny-random?seed=1").state_dict()
    name = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(a[name], b[name])
    assert not torch.equal(a[name], c[name])


def _adapter(path, seed: int):
    """A LoRA adapter on tiny-random as `llm-teach train` leaves it (random B, so merging changes weights)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    lora = LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False)
    model = get_peft_model(load_model("tiny-random"), lora)
    model.save_pretrained(path)
    (path / "llm_teach_base.json").write_text('{"spec": "tiny-random"}')
    return path


def test_merges_of_deleted_or_retrained_adapters_leave_the_cache(tiny_model_dir, tmp_path, monkeypatch):
    """A merge is a full copy of the base weights; one whose adapter is gone or rewritten can never
    be asked for again, so the next merge removes it (before: every evaluated run left one behind)."""
    import shutil
    import time

    from llm_teach.models import MERGED_SOURCE

    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    (home / "models" / "tiny-random-seed0").symlink_to(prepare("tiny-random"))  # no rebuild in the new home
    monkeypatch.setenv("LLM_TEACH_HOME", str(home))
    adapters = {name: _adapter(tmp_path / name / "adapter", i) for i, name in enumerate(["kept", "deleted", "retrained"])}
    kept, retrained = adapters["kept"], adapters["retrained"]
    merged = {name: Path(prepare(str(a))) for name, a in adapters.items()}
    assert all((m / MERGED_SOURCE).is_file() for m in merged.values()) and len(set(merged.values())) == 3
    merged_q = load_model(str(merged["kept"])).state_dict()["model.layers.0.self_attn.q_proj.weight"]
    assert not torch.equal(merged_q, load_model("tiny-random").state_dict()["model.layers.0.self_attn.q_proj.weight"])

    shutil.rmtree(tmp_path / "deleted")
    time.sleep(0.01)
    _adapter(retrained, 9)  # trained again in place: new weights, new stamp
    assert Path(prepare(str(kept))) == merged["kept"]  # a cached merge: nothing pruned, nothing rebuilt
    assert merged["deleted"].is_dir() and merged["retrained"].is_dir()
    fresh = Path(prepare(str(retrained)))  # a new merge is due, so the stale ones go first
    assert fresh != merged["retrained"] and fresh.is_dir()
    assert not merged["deleted"].exists() and not merged["retrained"].exists()
    assert merged["kept"].is_dir() and (home / "models" / "tiny-random-seed0").is_dir()
    assert sorted(p.name for p in (home / "models").iterdir() if not p.name.startswith(".")) == sorted(
        [merged["kept"].name, fresh.name, "tiny-random-seed0"])
