"""STAT on SmolLM2."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli
from llm_teach.data import read_jsonl


@pytest.mark.slow
def test_stat_on_smollm2(tmp_path, smollm2_dir):
    """A real model through every step; with a given skill list, so labels and judgements are
    matched against names a 135M model can copy (it rarely writes a usable list itself)."""
    out = tmp_path / "stat"
    skills = tmp_path / "skills.txt"
    skills.write_text("addition\nsubtraction\nmulti-digit arithmetic\nnegative numbers\n")
    result = run_cli("generate", "stat", "--teacher", "smollm2-135m", "--data", "rg:chain_sum", "--limit", "4",
                     "--out", out, "--set", "max_new_tokens=64", "--set", "list_max_new_tokens=40",
                     "--set", f"skills_file={skills}", "--set", "syn_size=2",
                     # short lists and fewer teacher re-tries where only the plumbing is checked
                     "--set", "solve_attempts=1", "--set", "syn_solutions=2")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["counts"]["records/answers.jsonl"] == 1  # 1 of 4 held out
    answers = read_jsonl(out / "answers.jsonl")
    assert any(a is not None for r in answers for a in r["answers"])  # a real model answers in \boxed{}
    names = ["addition", "subtraction", "multi-digit arithmetic", "negative numbers"]
    assert json.loads((out / "skills.json").read_text())["skills"] == names
    assert all(set(r["skills"]) <= set(names) for r in read_jsonl(out / "labels.jsonl"))
    for record in read_jsonl(out / "sft.jsonl"):
        assert [m["role"] for m in record["messages"]] == ["user", "assistant"]
