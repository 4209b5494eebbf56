"""The openai backend against a faulty local server (against a real `transformers serve`:
tests/slow/test_openai_backend.py).

The fault server (tests/fault_server.py) injects 500s, 429s with Retry-After, slow answers
and dropped connections in a seeded pattern.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli
from fault_server import FaultServer
from llm_teach.backends.base import SamplingConfig
from llm_teach.backends.openai import OpenAIBackend, OpenAIConfig


def _read(out: Path, name: str):
    text = (out / name).read_text()
    return [json.loads(line) for line in text.splitlines()] if name.endswith(".jsonl") else json.loads(text)


# -- against transformers serve --------------------------------------------------------------


# -- against the fault server ----------------------------------------------------------------
FAULTY_EVAL = ["--model", "fault-model", "--benchmark", "rg:chain_sum", "--limit", "16", "--samples", "2",
               "--max-new-tokens", "16", "--max-concurrency", "4", "--timeout", "2", "--max-retries", "5"]


@pytest.mark.parametrize("honour_n", [True, False], ids=["native-n", "fan-out"])
def test_faulty_server_every_completion_exactly_once(tmp_path, honour_n):
    with FaultServer(seed=7, fault_rate=0.5, honour_n=honour_n) as server:
        result = run_cli("eval", "--backend", "openai", "--base-url", server.base_url, *FAULTY_EVAL,
                         "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    items = _read(tmp_path, "items.jsonl")
    assert len(items) == 16 and len({it["id"] for it in items}) == 16
    for item in items:
        # Both samples present, each once: seeds 0 and 1 (native n children or fan-out requests).
        tags = sorted(c.rsplit("[seed ", 1)[1] for c in item["completions"])
        assert tags == ["0]", "1]"], item["completions"]
        assert all(item["correct"]), item  # each completion belongs to its own problem
    stats = _read(tmp_path, "manifest.json")["backend_stats"]
    injected = server.injected
    assert sum(injected.values()) >= 8 and all(injected[kind] > 0 for kind in ("http_500", "http_429", "slow", "drop"))
    assert stats["retries"] == {"http_5xx": injected["http_500"], "http_429": injected["http_429"],
                                "timeout": injected["slow"], "connection": injected["drop"], "bad_response": 0}
    assert set(server.answered.values()) == {1}  # no request was answered twice
    assert stats["server_ignores_n"] is (not honour_n)
    assert stats["fan_out_requests"] == (0 if honour_n else 16)


def test_retry_after_is_honoured():
    with FaultServer(seed=1, fault_rate=1.0, max_faults_per_key=1, retry_after="1") as server:
        server.decide = lambda key, _orig=server.decide: "http_429" if _orig(key) else None
        backend = OpenAIBackend("m", OpenAIConfig(base_url=server.base_url, backoff_base=0.001, backoff_max=0.001))
        out = backend.generate(["problem: 2 + 3 ="], 1, SamplingConfig(max_new_tokens=8))
    assert "\\boxed{5}" in out[0][0].completion
    (t429, _, first), (t_ok, _, second) = server.events
    assert (first, second) == ("http_429", "ok")
    assert t_ok - t429 >= 0.9  # waited for Retry-After, not the 1 ms backoff
    assert backend.stats["retries"]["http_429"] == 1


def test_exhausted_retries_one_line_exit_2_nothing_finalized(tmp_path):
    with FaultServer(always_status=503) as server:
        result = run_cli("eval", "--backend", "openai", "--base-url", server.base_url, "--model", "m",
                         "--benchmark", "rg:chain_sum", "--limit", "2", "--max-retries", "2",
                         "--out", tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert server.base_url in lines[0] and "HTTP 503" in lines[0] and "3 attempts" in lines[0]
    assert not (tmp_path / "items.jsonl").exists() and not (tmp_path / "summary.json").exists()


def test_api_key_is_sent_but_never_written(tmp_path):
    secret = "sk-test-secret-123"
    with FaultServer(fault_rate=0.0) as server:
        result = run_cli("eval", "--backend", "openai", "--base-url", server.base_url, "--model", "m",
                         "--api-key-env", "LLM_TEACH_TEST_KEY", "--benchmark", "rg:chain_sum", "--limit", "2",
                         "--out", tmp_path, env={"LLM_TEACH_TEST_KEY": secret})
    assert result.returncode == 0, result.stderr
    assert server.authorization == {f"Bearer {secret}"}
    written = result.stdout + result.stderr + "".join(p.read_text() for p in tmp_path.iterdir() if p.is_file())
    assert secret not in written
