"""ARTE: the CLI on tiny-random with a real DPO step, killed during DPO."""

from __future__ import annotations

import json
import re

from conftest import CLI, run_cli
from llm_teach.data import read_jsonl
from sigkill import kill_when

FAST = ["--set", "max_new_tokens=8", "--set", "question_max_new_tokens=12", "--set", "probe_max_new_tokens=8",
        "--set", "questions_per_prompt=2", "--set", "styles=[concise, step_by_step]", "--set", "allow_ties=true",
        "--set", "require_answer=false", "--set", "dpo.max_steps=1", "--set", "decontamination.benchmarks=[]"]


def test_cli_on_tiny_random_aligns_the_teacher_and_survives_sigkill_during_dpo(tmp_path):
    args = ["generate", "arte", "--teacher", "tiny-random", "--student", "tiny-random", "--data", "rg:chain_sum",
            "--limit", "6", *FAST]
    out = tmp_path / "arte"
    first = run_cli(*args, "--out", out)
    assert first.returncode == 0, first.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["stage"] == "arte"
    summary = manifest["summary"]
    assert summary["probe"] == 3 and summary["aligned"] is True
    assert re.fullmatch(r"teacher_dpo/pairs-[0-9a-f]{16}/(adapter|model)", summary["aligned_teacher"])
    assert (out / summary["aligned_teacher"]).is_dir()
    assert json.loads(((out / summary["aligned_teacher"]).parent / "manifest.json").read_text())["status"] == "complete"
    assert "aligned_teacher" in manifest["usage"]  # the final data came from the aligned checkpoint
    drafts = read_jsonl(out / "drafts.jsonl")
    pairs = read_jsonl(out / "dpo_pairs.jsonl")
    assert len(pairs) == summary["dpo_pairs"] > 0 and all(set(p) >= {"prompt", "chosen", "rejected"} for p in pairs)
    assert manifest["counts"]["probe/answers"] == 3 * sum(len(d["rationales"]) for d in drafts)
    sft = read_jsonl(out / "sft.jsonl")
    assert len(sft) == manifest["counts"]["records/sft.jsonl"] > 0
    assert all(r["messages"][-1]["role"] == "assistant" for r in sft)

    # Kill a second run while the teacher is being trained, re-run: the same records.
    resumed = tmp_path / "resumed"
    kill_when([*CLI, *map(str, args), "--out", str(resumed)], (resumed / "teacher_dpo").exists, after=0.5)
    assert not (resumed / "sft.jsonl").exists()
    again = run_cli(*args, "--out", resumed)
    assert again.returncode == 0, again.stderr
    for name in ("drafts.jsonl", "dpo_pairs.jsonl", "sft.jsonl"):
        assert (resumed / name).read_bytes() == (out / name).read_bytes(), name
