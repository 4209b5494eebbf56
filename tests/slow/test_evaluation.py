"""Evaluation of SmolLM2 on real GSM8K."""

from __future__ import annotations

import json

import pytest

from conftest import needs_shared, run_cli, shared_data


@needs_shared
@pytest.mark.slow
def test_smollm2_on_real_gsm8k(tmp_path, smollm2_dir):
    r = run_cli("eval", "--model", "smollm2-135m", "--benchmark", "gsm8k", "--data",
                shared_data("gsm8k", "test.jsonl"), "--limit", "2", "--max-new-tokens", "48", "--out", tmp_path / "g")
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "g" / "summary.json").read_text())
    assert summary["n"] == 2 and 0.0 <= summary["accuracy"] <= 1.0
    items = [json.loads(x) for x in (tmp_path / "g" / "items.jsonl").read_text().splitlines()]
    assert items[0]["gold"] == "18" and items[0]["completions"][0].strip()
