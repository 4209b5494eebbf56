"""SSB on SmolLM2."""

from __future__ import annotations

import json
import re

import pytest

from conftest import run_cli
from llm_teach.data import read_jsonl


@pytest.mark.slow
def test_ssb_on_smollm2(tmp_path, smollm2_dir):
    out = tmp_path / "ssb"
    result = run_cli("generate", "ssb", "--teacher", "smollm2-135m", "--data", "rg:chain_sum", "--limit", "4",
                     "--out", out, "--set", "max_new_tokens=96", "--set", "explain_max_new_tokens=128")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    rollouts = read_jsonl(out / "rollouts.jsonl")
    assert len(rollouts) == 4 and manifest["counts"]["problems"] == 4
    assert any(a is not None for r in rollouts for a in r["answers"])  # a real model answers in \boxed{}
    for record in read_jsonl(out / "records.jsonl"):
        assert re.search(r"\\boxed\{", record["completion"]) and record["logits_ref"]["length"] > 0
