"""STAT: the CLI on tiny-random (schemas, counts, resume)."""

from __future__ import annotations

import json

from conftest import run_cli
from llm_teach.data import read_jsonl

FAST = ["--set", "max_new_tokens=12", "--set", "list_max_new_tokens=12", "--set", "chunk_size=3",
        "--set", "decontamination.benchmarks=[]"]


def test_cli_on_tiny_random_writes_every_output_and_rerun_is_a_no_op(tmp_path):
    out = tmp_path / "stat"
    args = ["generate", "stat", "--teacher", "tiny-random", "--student", "tiny-random", "--data", "rg:chain_sum",
            "--limit", "6", "--out", out, *FAST]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["stage"] == "stat"
    # one of the 6 problems is held out as the diagnosis set (diagnose_fraction 0.2), five are the pool
    assert manifest["usage"]["student"]["completions"] == 4 and manifest["inputs"]["problems"] == 6
    assert all(h.startswith("sha256:") for h in manifest["prompts"].values())
    for name in ("skills.json", "profile.json", "labels.jsonl", "answers.jsonl", "missing.jsonl",
                 "synthetic.jsonl", "sft.jsonl"):
        assert (out / name).exists(), name
    answers = read_jsonl(out / "answers.jsonl")
    assert len(answers) == 1 and all(len(a["completions"]) == 4 for a in answers)
    assert sum(manifest["counts"].get(f"answers/{r}", 0) for r in ("wrong", "inconsistent", "solved")) == 1
    assert len(read_jsonl(out / "labels.jsonl")) == 5
    before = {p.name: p.read_text() for p in out.iterdir() if p.is_file() and p.name != "manifest.json"}
    second = run_cli(*args)
    assert second.returncode == 0, second.stderr
    assert {p.name: p.read_text() for p in out.iterdir() if p.is_file() and p.name != "manifest.json"} == before
    assert json.loads((out / "manifest.json").read_text())["usage"] == manifest["usage"]
