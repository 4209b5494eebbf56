"""`llm-teach eval --backend openai`: `--max-concurrency`, not the chunk size (8 problems),
bounds the requests in flight, and chunks are still saved one by one, in order, so a killed run
resumes to the bytes of an uninterrupted one. Against the local fault server with every answer
delayed (correct, tagged with its seed), so requests overlap for long enough to be counted."""

from __future__ import annotations

import json

from conftest import CLI, run_cli
from fault_server import FaultServer
from sigkill import kill_when

EVAL = ["eval", "--backend", "openai", "--model", "m", "--benchmark", "rg:chain_sum", "--limit", "40",
        "--max-new-tokens", "8", "--timeout", "60"]


def slow_server(seconds: float) -> FaultServer:
    """Every request answered correctly after `seconds` (the fault server's 'slow' answer)."""
    server = FaultServer(slow_seconds=seconds)
    server.decide = lambda key: "slow"
    return server


def test_max_concurrency_bounds_requests_in_flight_across_chunks(tmp_path):
    with slow_server(1.0) as server:
        result = run_cli(*EVAL, "--base-url", server.base_url, "--max-concurrency", "20", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    # 20 requests in flight span three chunks of 8; one chunk at a time would cap them at 8.
    assert server.max_in_flight == 20
    items = [json.loads(line) for line in (tmp_path / "items.jsonl").read_text().splitlines()]
    assert len(items) == 40 and all(item["correct"] == [True] for item in items)


def test_killed_eval_resumes_to_the_bytes_of_an_uninterrupted_run(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    sampled = ["--samples", "2", "--temperature", "0.7", "--max-concurrency", "8"]
    with slow_server(0.5) as server:
        assert run_cli(*EVAL, "--base-url", server.base_url, *sampled, "--out", full).returncode == 0
        order = [json.loads(line)["id"] for line in (full / "items.jsonl").read_text().splitlines()]
        part = killed / "items.jsonl.part"
        kill_when([*CLI, *EVAL, "--base-url", server.base_url, *sampled, "--out", str(killed)],
                  lambda: part.exists() and part.read_text().count("\n") >= 8)
        text = part.read_text()
        saved = [json.loads(line)["id"] for line in text[:text.rfind("\n") + 1].splitlines()]
        assert len(saved) % 8 == 0 and saved == order[:len(saved)] and len(saved) < 40  # whole chunks, in order
        asked = len(server.events)
        again = run_cli(*EVAL, "--base-url", server.base_url, *sampled, "--out", killed)
        assert again.returncode == 0, again.stderr
        assert len(server.events) - asked == 40 - len(saved)  # only what was not saved is asked again
    assert (killed / "items.jsonl").read_bytes() == (full / "items.jsonl").read_bytes()
    assert (killed / "summary.json").read_bytes() == (full / "summary.json").read_bytes()
