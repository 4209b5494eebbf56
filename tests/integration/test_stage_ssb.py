"""SSB: plumbing with tiny-random, the CLI (rerun, bad input, SIGKILL)."""

from __future__ import annotations

import json

import pytest

from conftest import CLI, run_cli
from llm_teach.data import read_jsonl
from llm_teach.data.logit_store import TopKLogitStore
from llm_teach.stages.ssb import LogitSink, SSBConfig
from sigkill import killed_run_matches_reference

FAST = ["--set", "max_new_tokens=16", "--set", "explain_max_new_tokens=16", "--set", "chunk_size=4"]


def test_logit_sink_stores_real_teacher_scores(tmp_path, tiny_backend):
    prompt = [{"role": "user", "content": "What is 2 + 3?"}]
    sink = LogitSink(tmp_path / "logits", SSBConfig(top_k=4), "tiny-random")
    scored = tiny_backend.score([prompt], ["It is 5, so \\boxed{5}"], top_k=4, **sink.score_kwargs(0))[0]
    ref = sink.put("p1", scored)
    assert sink.put("p1", scored) == ref  # a redone unit gets the stored ref back
    sink.close()
    again = LogitSink(tmp_path / "logits", SSBConfig(top_k=4), "tiny-random")
    assert again.put("p1", scored) == ref  # and so does a resumed run
    again.close()
    rec = TopKLogitStore(tmp_path / "logits").get(ref)
    assert list(rec.token_ids) == scored.token_ids
    assert rec.topk_ids[0, 0] == max(scored.top_k[0], key=scored.top_k[0].get)
    assert rec.token_logprobs[0] == pytest.approx(scored.logprobs[0], abs=1e-5)


def test_end_of_turn_is_scored_as_the_eos_token(tiny_backend):
    # what SSB appends to a finished explanation must reach the store as the ONE token the
    # student stops with (the tokenizer's EOS id), not as the characters of its name
    prompt = [{"role": "user", "content": "What is 2 + 3?"}]
    plain, ended = tiny_backend.score([prompt, prompt], ["\\boxed{5}", "\\boxed{5}" + tiny_backend.end_of_turn])
    assert ended.token_ids == plain.token_ids + [tiny_backend.tokenizer.eos_token_id]


def test_cli_on_tiny_random_and_rerun_is_a_no_op(tmp_path):
    out = tmp_path / "ssb"
    args = ["generate", "ssb", "--teacher", "tiny-random", "--data", "rg:chain_sum", "--limit", "6", "--out", out, *FAST]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["stage"] == "ssb"
    assert manifest["counts"]["problems"] == 6 and manifest["counts"]["rollouts/wrong"] + manifest["counts"]["rollouts/correct"] == 24
    assert manifest["usage"]["student"]["completions"] == 24 and manifest["prompts"]["ssb/solve.jinja"].startswith("sha256:")
    assert len(read_jsonl(out / "rollouts.jsonl")) == 6 and (out / "records.jsonl").exists()
    before = (out / "rollouts.jsonl").read_text()
    second = run_cli(*args)
    assert second.returncode == 0 and (out / "rollouts.jsonl").read_text() == before
    assert json.loads((out / "manifest.json").read_text())["usage"] == manifest["usage"]


def test_cli_bad_input_is_one_line_exit_2(tmp_path):
    bad = run_cli("generate", "ssb", "--teacher", "tiny-random", "--data", "rg:chain_sum", "--limit", "2",
                  "--out", tmp_path / "x", "--set", "rolouts=3")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert "unknown key 'rolouts'; did you mean 'rollouts'?" in bad.stderr
    bad = run_cli("generate", "ssb", "--teacher", "no-such-model", "--data", "rg:chain_sum", "--out", tmp_path / "y")
    assert bad.returncode == 2 and "unknown model spec 'no-such-model'" in bad.stderr
    bad = run_cli("generate", "ssb", "--teacher", "tiny-random", "--data", "rg:chain_sum", "--out", tmp_path / "z",
                  "--decontaminate", "x.jsonl")
    assert bad.returncode == 2 and "generates no new problems" in bad.stderr


def test_cli_on_tiny_random_survives_sigkill(tmp_path):
    """The stage contract's SIGKILL test (test_stage_contract.py) with a real model through the
    CLI: sampled rollouts and real teacher scores must come out the same after a resume."""
    args = ["generate", "ssb", "--teacher", "tiny-random", "--data", "rg:chain_sum", "--limit", "8",
            "--set", "chunk_size=1", "--set", "max_new_tokens=16", "--set", "explain_max_new_tokens=8"]
    killed_run_matches_reference(lambda out: [*CLI, *args, "--out", str(out)], tmp_path,
                                 ("rollouts.jsonl", "records.jsonl"), seed=1)
