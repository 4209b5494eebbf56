"""The shared stage machinery: fixed seeded units, resume without duplicates, manifest checks."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

import pytest

from llm_teach.errors import UserError
from llm_teach.runs.stage_run import StageRun, Work
from llm_teach.stages.roles import Models
from scripted_backend import ScriptedBackend


@dataclass
class Cfg:
    seed: int = 0
    size: int = 2


def _models():
    return Models.of(ScriptedBackend(lambda text, i, seed: f"answer {seed % 7} {i}"))


def _work(unit, backend):
    gens = backend.generate([str(x) for x in unit.items], 2, _sampling(unit.seed))
    recs = [{"id": str(x), "text": g[0].completion} for x, g in zip(unit.items, gens)]
    return Work(records={"out": recs}, counts=Counter({"seen": len(unit.items), "rejected/odd": sum(x % 2 for x in unit.items)}))


def _sampling(seed):
    from llm_teach.backends import SamplingConfig

    return SamplingConfig(seed=seed)


def test_units_are_fixed_and_seeded_by_content(tmp_path):
    run = StageRun(tmp_path, "toy", Cfg(), _models())
    a = run.units("s", list(range(5)), 2)
    assert [u.items for u in a] == [(0, 1), (2, 3), (4,)]
    b = run.units("s", list(range(6)), 2)
    assert [u.key for u in a[:2]] == [u.key for u in b[:2]] and a[2].key != b[2].key  # changed unit is redone
    assert a[0].seed == run.units("s", [0, 1], 2)[0].seed and a[0].seed != a[1].seed


def test_resume_skips_done_units_and_sums_counts_and_usage(tmp_path):
    models = _models()
    run = StageRun(tmp_path, "toy", Cfg(), models)
    backend = run.backend(models.teacher_backend, "teacher")
    calls = []

    def work(unit):
        calls.append(unit.index)
        if unit.index == 1 and len(calls) == 2:
            raise KeyboardInterrupt  # "killed" in the middle of the second unit
        return _work(unit, backend)

    with pytest.raises(KeyboardInterrupt):
        run.map("s", list(range(5)), 2, work)
    assert (tmp_path / "work" / "s.jsonl.part").exists()

    run2 = StageRun(tmp_path, "toy", Cfg(), models)
    backend = run2.backend(models.teacher_backend, "teacher")
    results = run2.map("s", list(range(5)), 2, work)
    assert calls == [0, 1, 1, 2]  # unit 0 was not redone
    records = [r for w in results for r in w.records["out"]]
    manifest = run2.finish({"out.jsonl": records})
    assert [r["id"] for r in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())] == list("01234")
    assert manifest["status"] == "complete"
    assert manifest["counts"] == {"records/out.jsonl": 5, "rejected/odd": 2, "seen": 5}
    assert manifest["usage"]["teacher"]["completions"] == 10  # 5 prompts x 2, counted once each
    assert not (tmp_path / "work" / "s.jsonl.part").exists()


def test_another_config_in_the_same_out_is_refused(tmp_path):
    StageRun(tmp_path, "toy", Cfg(), _models())
    StageRun(tmp_path, "toy", Cfg(size=4), _models())  # nothing done yet: starting over is allowed
    run = StageRun(tmp_path, "toy", Cfg(), _models())
    run.map("s", [0, 1], 2, lambda unit: Work(records={"out": [{"id": "x"}]}))
    with pytest.raises(UserError, match=r"holds a generate:toy run with other config: config.size: 2 -> 3;"):
        StageRun(tmp_path, "toy", Cfg(size=3), _models())


def test_once_caches_a_single_piece_of_work(tmp_path):
    models = _models()
    calls = []
    for _ in range(2):
        run = StageRun(tmp_path, "toy", Cfg(), models)
        w = run.once("train", lambda unit: calls.append(1) or Work(records={"model": [{"path": "x"}]}))
        assert w.records["model"] == [{"path": "x"}]
    assert calls == [1]


def test_records_and_ids_digest():
    import hashlib

    from llm_teach.runs.hashing import ids_digest
    from llm_teach.runs.stage_run import records

    works = [Work(records={"a": [{"id": 1}], "b": [{"id": 2}]}), Work(), Work(records={"a": [{"id": 3}]})]
    assert records(works, "a") == [{"id": 1}, {"id": 3}] and records(works, "c") == []
    ids = ["p1", "gsm8k/2", "ü"]
    # the value manifests already hold: the hash of the plain JSON list
    assert ids_digest(ids) == "sha256:" + hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:16]
    assert ids_digest(tuple(ids)) == ids_digest(ids)
