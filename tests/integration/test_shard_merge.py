"""`--shard 1..3/3` of SSB on tiny-random, merged with `llm-teach merge`, against the unsharded
run: the same ids in the same order and the same (sampled) rollouts; the CLI's refusals."""

from __future__ import annotations

import json

from conftest import run_cli
from llm_teach.data import load_problems, read_jsonl
from llm_teach.runs.shard import Shard
from llm_teach.stages.roles import Models
from llm_teach.stages.ssb import SSBConfig, ssb

CONFIG = dict(chunk_size=1, max_new_tokens=4, explain_max_new_tokens=4, rollouts=2)


def test_three_shards_merge_to_the_unsharded_run(tmp_path, tiny_backend):
    problems = load_problems("rg:chain_sum?seed=5", limit=4)
    models = Models.of(tiny_backend)
    ssb(problems, models, SSBConfig(**CONFIG), tmp_path / "ref")
    for k in (1, 2, 3):
        ssb(problems, models, SSBConfig(**CONFIG), tmp_path / f"s{k}", shard=Shard(k, 3))
    result = run_cli("merge", tmp_path / "s2", tmp_path / "s3", tmp_path / "s1", "--out", tmp_path / "m")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"merge: wrote {tmp_path / 'm'} from 3 shards")
    merged, reference = read_jsonl(tmp_path / "m" / "rollouts.jsonl"), read_jsonl(tmp_path / "ref" / "rollouts.jsonl")
    assert [r["id"] for r in merged] == [p.id for p in problems]
    assert merged == reference  # sampled at T 0.7: the same units with the same seeds
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    ref_manifest = json.loads((tmp_path / "ref" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["counts"] == ref_manifest["counts"]
    assert [s["out"] for s in manifest["shards"]] == [str(tmp_path / f"s{k}") for k in (1, 2, 3)]

    again = run_cli("merge", tmp_path / "s1", tmp_path / "s2", "--out", tmp_path / "m2")
    assert again.returncode == 2 and again.stderr.strip() == "error: merge needs all 3 shards: missing 3/3"
    assert not (tmp_path / "m2").exists()


def test_cli_refuses_to_shard_a_stage_with_global_steps(tmp_path):
    result = run_cli("generate", "llm2llm", "--teacher", "tiny-random", "--data", "rg:chain_sum", "--shard", "1/2",
                     "--out", tmp_path / "x")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "generate llm2llm cannot --shard: each round trains the student" in result.stderr
    assert not (tmp_path / "x").exists()
