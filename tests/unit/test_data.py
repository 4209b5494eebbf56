"""Problem loaders and the crash-safe JSONL files every output is made of."""

from __future__ import annotations

import json

import pytest

from conftest import needs_shared, shared_data
from llm_teach.data import Problem, RecordLog, load_problems, read_jsonl
from llm_teach.data.problems import grading_benchmark
from llm_teach.errors import UserError


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_gsm8k_original_format_splits_solution_and_answer(tmp_path):
    f = write(tmp_path / "g.jsonl", [{"question": "q?", "answer": "3 * 4 = <<3*4=12>>12\n#### 1,200"}])
    (p,) = load_problems(str(f), data_format="gsm8k")
    assert p.answer == "1200" and p.solution.startswith("3 * 4") and p.source == "gsm8k"
    assert grading_benchmark(p.source) == "gsm8k"
    (q,) = load_problems(str(f))  # recognized by its `####` answers without being told
    assert q.source == "gsm8k" and q.answer == "1200"


def test_math_format_and_problem_records(tmp_path):
    f = write(tmp_path / "m.jsonl", [
        {"problem": "Find x.", "solution": "... \\boxed{2}", "answer": "2", "unique_id": "test/a/1.json", "level": 3},
        {"id": "p2", "question": "Q", "answer": "\\frac12", "source": "mine", "meta": {"k": 1}},
    ])
    a, b = load_problems(str(f))
    assert (a.id, a.question, a.answer, a.meta) == ("test/a/1.json", "Find x.", "2", {"level": 3})
    assert (b.id, b.source, b.meta) == ("p2", "mine", {"k": 1})


def test_column_mapping_and_missing_column_names_file_and_line(tmp_path):
    f = write(tmp_path / "c.jsonl", [{"q": "1+1", "a": "2"}, {"q": "2+2"}])
    with pytest.raises(UserError, match=r"c.jsonl: line 2: missing column 'a'"):
        load_problems(str(f), columns={"question": "q", "answer": "a"})
    (p,) = load_problems(str(f), limit=1, columns={"question": "q", "answer": "a"})
    assert (p.question, p.answer) == ("1+1", "2")
    with pytest.raises(UserError, match=r"line 1: missing column 'question'"):
        load_problems(str(f))


def test_malformed_jsonl_names_the_line(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"question": "q1", "answer": "1"}\n\n{"question": "q2", "answer": \n')
    with pytest.raises(UserError, match=r"bad.jsonl: line 3: invalid JSON"):
        load_problems(str(f))


def test_duplicate_ids_and_empty_files_are_refused(tmp_path):
    f = write(tmp_path / "d.jsonl", [{"id": "x", "question": "a", "answer": "1"}] * 2)
    with pytest.raises(UserError, match="duplicate id 'x'"):
        load_problems(str(f))
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(UserError, match="no problems"):
        load_problems(str(tmp_path / "e.jsonl"))


def test_parquet_is_read(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"question": "q", "answer": "7"}]), tmp_path / "p.parquet")
    (p,) = load_problems(str(tmp_path / "p.parquet"))
    assert p.answer == "7" and p.id == "p-1"


def test_reasoning_gym_is_seeded_and_offline():
    a = load_problems("rg:chain_sum", limit=5)
    b = load_problems("rg:chain_sum", limit=5)
    c = load_problems("rg:chain_sum?seed=3", limit=5)
    assert [p.question for p in a] == [p.question for p in b] != [p.question for p in c]
    assert len(a) == 5 and a[0].source == "rg:chain_sum" and a[0].id == "chain_sum-s0-0"
    assert grading_benchmark(a[0].source) == "rg:chain_sum"
    json.dumps([p.to_dict() for p in a])  # metadata is plain JSON


@pytest.mark.parametrize("source, message", [
    ("rg:no_such_task", "reasoning-gym source"),
    ("nonsense", "unknown data source"),
    ("missing.jsonl", "file not found"),
])
def test_bad_sources(source, message):
    with pytest.raises(UserError, match=message):
        load_problems(source)


def test_hub_source_offline_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(UserError, match="pass a local copy with --data"):
        load_problems("gsm8k", limit=1)


@needs_shared
def test_shared_gsm8k_and_math500():
    gsm = load_problems(str(shared_data("gsm8k", "test.jsonl")), data_format="gsm8k")
    assert len(gsm) == 1319 and gsm[0].answer == "18"
    math = load_problems(str(shared_data("math500", "test.jsonl")), data_format="math500")
    assert len(math) == 500 and math[0].answer.startswith("\\left( 3")
    assert len({p.id for p in math}) == 500


def test_record_log_survives_a_torn_write_and_never_duplicates(tmp_path):
    log = RecordLog(tmp_path / "items.jsonl")
    log.append([{"id": "a", "v": 1}, {"id": "b", "v": 2}])
    with open(log.part, "a") as handle:  # the process died mid-record
        handle.write('{"id": "c", "v"')
    log = RecordLog(tmp_path / "items.jsonl")
    assert log.keys() == {"a", "b"}
    log.append([{"id": "b", "v": 99}, {"id": "c", "v": 3}])
    assert [r["id"] for r in log.records()] == ["a", "b", "c"]
    final = log.finalize(order=["c", "a", "b"])
    assert [r["id"] for r in final] == ["c", "a", "b"] and not log.part.exists()
    assert read_jsonl(tmp_path / "items.jsonl")[1] == {"id": "a", "v": 1}
    again = RecordLog(tmp_path / "items.jsonl")  # extending a finished output
    again.append([{"id": "d"}])
    assert len(again.records()) == 4


def test_solution_targets_end_in_a_box():
    from llm_teach.data.targets import boxed_answer, boxed_solution

    gsm = Problem("g", "q", "24", "gsm8k", solution="Half of 48 is 48/2 = <<48/2=24>>24.\n#### 24")
    assert boxed_solution(gsm) == "Half of 48 is 48/2 = 24.\n\nThe final answer is \\boxed{24}."
    math = Problem("m", "q", "\\frac12", "math500", solution="So it is $\\boxed{\\frac12}$.")
    assert boxed_solution(math) == math.solution
    plain = Problem("p", "q", "7", "file:x", solution="Add 3 and 4.")
    assert boxed_solution(plain) == "Add 3 and 4.\n\nThe final answer is \\boxed{7}."
    assert boxed_solution(Problem("r", "q", "7", "rg:chain_sum")) is None
    assert boxed_answer("7") == "The final answer is \\boxed{7}."
