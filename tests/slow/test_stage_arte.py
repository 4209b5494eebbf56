"""ARTE on SmolLM2."""

from __future__ import annotations

import json

import pytest

from conftest import run_cli
from llm_teach.data import read_jsonl


@pytest.mark.slow
def test_arte_on_smollm2(tmp_path, smollm2_dir):
    """A real teacher and a pruned student through every step, DPO included (ties allowed: a
    12-layer student scores ~0 on every probe, and without pairs nothing would be trained). The
    budgets are small where no assertion reads the text (on CPU the decode steps, i.e. the token
    budgets, are most of each generate call here, not the rows): short questions, rationales and
    probe answers, one DPO step, one re-solve per final rationale."""
    out = tmp_path / "arte"
    result = run_cli("generate", "arte", "--teacher", "smollm2-135m", "--student", "smollm2-135m?layers=12",
                     "--data", "rg:chain_sum", "--limit", "4", "--out", out,
                     "--set", "max_new_tokens=40", "--set", "question_max_new_tokens=32",
                     "--set", "probe_max_new_tokens=24", "--set", "questions_per_prompt=2",
                     "--set", "styles=[concise, step_by_step]", "--set", "dpo.max_steps=1",
                     "--set", "require_answer=false", "--set", "allow_ties=true", "--set", "final_resolves=1")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    drafts = read_jsonl(out / "drafts.jsonl")
    assert drafts and all(len(d["question"]) >= 10 for d in drafts)
    assert manifest["summary"]["aligned"] is True and manifest["usage"]["aligned_teacher"]["completions"] > 0
    assert len(read_jsonl(out / "sft.jsonl")) == manifest["summary"]["sft_records"]
