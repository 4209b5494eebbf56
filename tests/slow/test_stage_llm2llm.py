"""LLM2LLM on SmolLM2."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli
from llm_teach.data import read_jsonl


@pytest.mark.slow
def test_llm2llm_on_smollm2(tmp_path, smollm2_dir):
    """A real teacher writes and re-solves problems for a real (pruned) student's mistakes."""
    out = tmp_path / "l2l"
    result = run_cli("generate", "llm2llm", "--teacher", "smollm2-135m", "--student", "smollm2-135m?layers=24",
                     "--data", "rg:chain_sum", "--limit", "3", "--out", out, "--set", "rounds=1",
                     "--set", "train.max_steps=1", "--set", "eval_max_new_tokens=32", "--set", "new_per_wrong=2",
                     "--set", "teacher_max_new_tokens=96", "--set", "solve_max_new_tokens=96")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    rounds = read_jsonl(out / "rounds.jsonl")
    assert rounds[0]["wrong"] >= 1 and rounds[0]["generated"] == 2 * rounds[0]["wrong"]
    assert rounds[0]["generated"] == rounds[0]["added"] + sum(rounds[0]["rejected"].values())
    assert manifest["usage"]["teacher"]["completion_tokens"] > 0
    for problem in read_jsonl(out / "problems.jsonl")[3:]:  # whatever survived validation is well formed
        assert problem["question"] and problem["answer"] and problem["meta"]["round"] == 1
