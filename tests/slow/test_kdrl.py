"""KDRL on SmolLM2 with LoRA."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli
from integration.test_kdrl import PROBLEMS, metrics


@pytest.mark.slow
def test_smollm2_kdrl_lora(tmp_path, smollm2_dir):
    """The real thing, small: SmolLM2-135M teaches its 6-layer pruning, LoRA on the student."""
    problems = tmp_path / "problems.jsonl"
    problems.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS[:2]))
    out = tmp_path / "out"
    res = run_cli("train", "--method", "kdrl", "--model", "smollm2-135m?layers=6", "--teacher", "smollm2-135m",
                  "--data", problems, "--max-steps", "2", "--out", out, "--lora-r", "8",
                  "--set", "max_completion_length=16", "--set", "num_generations=2",
                  "--set", "per_device_train_batch_size=2", "--set", "teacher_batch_size=2")
    assert res.returncode == 0, res.stderr[-2000:]
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2] and all(r["kd_loss"] > 0 for r in rows)
    assert [r["beta"] for r in rows] == pytest.approx([5e-3, 4.95e-3])  # the default linear annealing
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
