"""Decontamination (n-gram overlap with evaluation sets) and ROUGE-L near-duplicate filtering."""

from __future__ import annotations

import json
import time

import pytest

from conftest import needs_shared, shared_data
from llm_teach.data.decontam import DecontamConfig, Decontaminator, NearDuplicates
from llm_teach.errors import UserError

TEST_Q = ("Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins "
          "for her friends every day with four. She sells the remainder at the farmers' market daily.")


@pytest.mark.parametrize("text, hit", [
    (TEST_Q, True),
    ("A new problem. " + TEST_Q.upper().replace(".", "!"), True),  # case and punctuation do not hide overlap
    ("Janet's ducks lay 16 eggs per day. She sells them all.", False),  # under 13 shared words
    ("Tom's hens lay 12 eggs per day. He eats two for breakfast every morning and bakes bread daily.", False),
    ("bakes muffins for her friends every day", True),  # shorter than n: a contiguous span of a reference
    ("muffins every day", False),
    ("", False),
])
def test_ngram_overlap(text, hit):
    index = Decontaminator({"gsm8k": [TEST_Q]}, ngram=13)
    assert (index.match(text) == "gsm8k") is hit


def test_extra_file_and_report(tmp_path):
    path = tmp_path / "private.jsonl"
    path.write_text(json.dumps({"question": TEST_Q, "answer": "18"}) + "\n")
    index, report = Decontaminator.from_config(DecontamConfig(benchmarks=[], paths=[str(path)]))
    assert index.match(TEST_Q) == str(path) and report == {str(path): 1}
    with pytest.raises(UserError, match="file not found"):
        Decontaminator.from_config(DecontamConfig(benchmarks=[], paths=[str(tmp_path / "missing.jsonl")]))
    with pytest.raises(UserError, match="unknown benchmark 'aime'"):
        Decontaminator.from_config(DecontamConfig(benchmarks=["aime"]))


@needs_shared
def test_real_benchmarks_from_shared_data():
    index, report = Decontaminator.from_config(DecontamConfig())
    assert report == {"gsm8k": 1319, "math500": 500}
    first = json.loads(shared_data("math500", "test.jsonl").read_text().splitlines()[0])
    assert index.match(first["problem"]) == "math500"
    assert index.match("Lena has 7 marbles and gives 2 to her brother. How many does she have left?") is None


def test_near_duplicates_by_rouge_l():
    seen = NearDuplicates(0.7, ["Tom has 3 apples and buys 4 more. How many apples does Tom have?"])
    hit = seen.find("Tom has 5 apples and buys 4 more. How many apples does Tom have?")
    assert hit is not None and hit[0] == pytest.approx(13 / 14)  # 14 words, 13 in common
    assert seen.find("A train leaves at 3 pm travelling 60 km per hour; when does it arrive 180 km away?") is None
    seen.add("A train leaves at 3 pm travelling 60 km per hour; when does it arrive 180 km away?")
    assert seen.find("A train leaves at 4 pm travelling 60 km per hour; when does it arrive 180 km away?")


def test_near_duplicate_bound_keeps_large_pools_fast():
    pool = [f"item {i} costs {i * 3} dollars and weighs {i % 17} kilograms in store {i % 5}" for i in range(5000)]
    seen = NearDuplicates(0.7, pool)
    start = time.perf_counter()
    assert seen.find("A farmer plants 12 rows of corn with 8 plants in each row.") is None
    assert time.perf_counter() - start < 2.0


def test_keep_copy_and_drop_near_duplicates():
    from collections import Counter

    from llm_teach.data.decontam import drop_near_duplicates

    apples = "Tom has 3 apples and buys 4 more. How many apples does Tom have?"
    train = "A train leaves at 3 pm travelling 60 km per hour; when does it arrive 180 km away?"
    pool = NearDuplicates(0.7, [apples])
    mine = pool.copy()
    assert mine.keep(train) is True and mine.keep(train.replace("3 pm", "4 pm")) is False
    assert pool.find(train) is None  # the copy's additions stay in the copy
    assert pool.copy().find(apples.replace("3", "5")) is not None  # the pool is in every copy
    counts = Counter()
    records = [{"question": apples.replace("3", "6"), "n": 0}, {"question": train, "n": 1},
               {"question": train.replace("60", "70"), "n": 2}, {"question": "Add 2 and 2.", "n": 3}]
    kept = drop_near_duplicates(records, pool.copy(), counts)
    assert [r["n"] for r in kept] == [1, 3] and counts == Counter({"rejected/near_duplicate": 2})
    assert [r["n"] for r in drop_near_duplicates(records, NearDuplicates(0.7), Counter())] == [0, 1, 3]
