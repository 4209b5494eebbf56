"""`--shard K/N` and `llm-teach merge` with a scripted model: the merged run is the unsharded
run (ids, order, sampled contents, teacher log-probs), and merge refuses what is not one run
(tiny-random through the CLI: tests/integration/test_shard_merge.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llm_teach.data import load_problems, read_jsonl
from llm_teach.data.logit_store import TopKLogitStore
from llm_teach.errors import UserError
from llm_teach.runs.merge import merge_shards
from llm_teach.runs.shard import Shard
from llm_teach.stages import run_stage
from llm_teach.stages.roles import Models
from llm_teach.stages.ssb import SSBConfig, ssb
from stage_cases import ssb_models

CONFIG = SSBConfig(chunk_size=2, top_k=5, rollouts=4)


def test_shards_partition_the_units():
    for n in (1, 2, 3, 5):
        shards = [Shard.parse(f"{k}/{n}") for k in range(1, n + 1)]
        for unit in range(23):
            assert sum(s.takes(unit) for s in shards) == 1
    assert Shard.parse(" 2 / 3 ") == Shard(2, 3) and not Shard(2, 3).takes(0) and Shard(2, 3).takes(4)
    for bad in ("0/3", "4/3", "3", "a/b", "1/0"):
        with pytest.raises(UserError, match="--shard"):
            Shard.parse(bad)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An unsharded SSB run and its 3 shards (scripted model: sampled rollouts depend on the seed)."""
    root = tmp_path_factory.mktemp("shards")
    problems = load_problems("rg:chain_sum", limit=11)  # 6 units of 2 (the last of 1): 2 per shard
    model = ssb_models(problems)
    ssb(problems, Models.of(model), CONFIG, root / "ref")
    for k in (1, 2, 3):
        ssb(problems, Models.of(model), CONFIG, root / f"s{k}", shard=Shard(k, 3))
    return root, problems, model


def _without_store(record):
    return {**record, "logits_ref": {k: v for k, v in record["logits_ref"].items() if k != "store"}}


def test_merged_shards_equal_the_unsharded_run(runs, tmp_path):
    root, problems, _ = runs
    shard_ids = [[r["id"] for r in read_jsonl(root / f"s{k}" / "rollouts.jsonl")] for k in (1, 2, 3)]
    assert [len(ids) for ids in shard_ids] == [4, 4, 3]  # units 0,3 / 1,4 / 2,5
    manifest = merge_shards([root / "s3", root / "s1", root / "s2"], tmp_path / "m")
    out, ref = tmp_path / "m", root / "ref"
    assert (out / "rollouts.jsonl").read_text() == (ref / "rollouts.jsonl").read_text()  # sampled, same
    merged, reference = read_jsonl(out / "records.jsonl"), read_jsonl(ref / "records.jsonl")
    assert len(reference) >= 6 and [r["id"] for r in merged] == [r["id"] for r in reference]
    assert [_without_store(r) for r in merged] == [_without_store(r) for r in reference]  # same offsets too
    assert all(r["logits_ref"]["store"] == str(out / "logits") for r in merged)
    store, ref_store = TopKLogitStore(out / "logits"), TopKLogitStore(ref / "logits")
    assert len(store) == len(ref_store) == len(merged)
    for record in merged:
        for x, y in zip(store.get(record["logits_ref"]), ref_store.get(record["id"])):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    ref_manifest = json.loads((ref / "manifest.json").read_text())
    assert manifest["counts"] == ref_manifest["counts"] and manifest["usage"] == ref_manifest["usage"]
    assert manifest["summary"] == {**ref_manifest["summary"], "logits": str(out / "logits")}
    assert [s["shard"] for s in manifest["shards"]] == ["1/3", "2/3", "3/3"] and "shard" not in manifest
    assert manifest["config"] == ref_manifest["config"] and manifest["data"] == ref_manifest["data"]
    work = [_work(e) for e in read_jsonl(out / "work" / "ssb.jsonl")]
    assert work == [_work(e) for e in read_jsonl(ref / "work" / "ssb.jsonl")]


def _work(entry):
    return {**entry, "records": {**entry["records"],
                                 "distill": [_without_store(r) for r in entry["records"]["distill"]]}}


def test_a_shard_held_twice_is_merged_once(runs, tmp_path):
    root, _, _ = runs
    (tmp_path / "copy").mkdir()
    import shutil

    shutil.copytree(root / "s2", tmp_path / "copy" / "s2")
    merge_shards([root / "s1", root / "s2", tmp_path / "copy" / "s2", root / "s3"], tmp_path / "m")
    assert (tmp_path / "m" / "rollouts.jsonl").read_text() == (root / "ref" / "rollouts.jsonl").read_text()


def test_merge_refuses_what_is_not_one_finished_run(runs, tmp_path):
    root, problems, model = runs
    ssb(problems, Models.of(model), SSBConfig(chunk_size=2, top_k=5, rollouts=4, seed=9), tmp_path / "other",
        shard=Shard(2, 3))
    ssb(problems, Models.of(model), CONFIG, tmp_path / "of2", shard=Shard(2, 2))
    cases = [
        ([root / "s1", root / "s2"], "missing 3/3"),
        ([root / "s1", tmp_path / "other", root / "s3"], "another run than"),
        ([root / "s1", tmp_path / "of2", root / "s3"], "shard_count"),
        ([root / "s1", root / "ref", root / "s3"], "is not a shard"),
        ([root / "s1", tmp_path / "nothing", root / "s3"], "no manifest.json"),
    ]
    for dirs, needle in cases:
        with pytest.raises(UserError, match=needle) as err:
            merge_shards(dirs, tmp_path / "m")
        assert "\n" not in str(err.value)
        assert not (tmp_path / "m").exists()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep")
    with pytest.raises(UserError, match="not empty"):
        merge_shards([root / "s1", root / "s2", root / "s3"], tmp_path / "full")
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["x"]
    with pytest.raises(UserError, match="other shard"):  # a shard never resumes as another shard
        ssb(problems, Models.of(model), CONFIG, root / "s1", shard=Shard(2, 3))


def test_unfinished_shard_is_refused(runs, tmp_path):
    root, _, _ = runs
    import shutil

    shutil.copytree(root / "s3", tmp_path / "s3")
    manifest = json.loads((tmp_path / "s3" / "manifest.json").read_text())
    (tmp_path / "s3" / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
    with pytest.raises(UserError, match="has not finished"):
        merge_shards([root / "s1", root / "s2", tmp_path / "s3"], tmp_path / "m")


@pytest.mark.parametrize("stage", ["stat", "arte", "llm2llm"])
def test_stages_with_global_steps_refuse_to_shard(stage, tmp_path):
    with pytest.raises(UserError, match=f"generate {stage} cannot --shard: ") as err:
        run_stage(stage, Models(teacher="tiny-random", student="tiny-random"), data="rg:chain_sum",
                  out=str(tmp_path / "x"), shard=Shard(1, 2))
    assert "\n" not in str(err.value) and not (tmp_path / "x").exists()
