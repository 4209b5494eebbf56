"""The grader's bounds: false positives that came from overflow and truncation, absurd answers
refused unparsed, math-verify killed when it overruns -- from any thread -- and fuzzing.

Real math-verify in real worker processes throughout (no mocks). Time is never asserted: a
thread's join timeout is only a hang guard; what is asserted is that the call returns and
that the grader itself reports `timed_out` rather than an answer.
"""

from __future__ import annotations

import json
import logging
import re
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import shared_data
from llm_teach.grading import Grade, extract_answer, grade, is_correct, last_boxed, stats
from llm_teach.grading import sandbox
from llm_teach.grading.bounds import MAX_DIGITS, nesting, refusal, shorten, tower_digits
from llm_teach.grading.extraction import answer_tail
from llm_teach.grading.numbers import gsm_value

MATH500 = shared_data("math500", "test.jsonl")

# (completion, gold, benchmark, expected): each used to be graded correct.
FALSE_POSITIVES = [
    ("#### 2e400", "2", "gsm8k", False),  # overflow fell back to the leading digit
    ("\\boxed{1e99999}", "1", "gsm8k", False),
    ("\\boxed{-1e99999}", "-1", "gsm8k", False),
    ("#### 1 2 3", "1", "gsm8k", False),  # a list is not its first number
    ("#### 1, 2, 3", "1", "gsm8k", False),
    ("\\boxed{7", "7", "gsm8k", False),  # a truncated box gives no answer
    ("First 7. \\boxed{7", "7", "gsm8k", False),
    ("\\boxed{7} and then \\boxed{8", "7", "gsm8k", False),
    ("#### 2e400", "2", "rg:chain_sum", False),
    ("\\boxed{7", "7", "rg:chain_sum", False),
    ("The answer is \\boxed{7", "7", "math", False),
    ("\\boxed{1e99999}", "1", "math", False),
    # ... while their well-formed neighbours still count.
    ("#### 2e3", "2000", "gsm8k", True),
    ("\\boxed{1e-3}", "0.001", "gsm8k", True),
    ("#### 18 dollars", "18", "gsm8k", True),
    ("#### 18, which is her profit", "18", "gsm8k", True),
    ("#### 1,000", "1000", "gsm8k", True),
    ("\\boxed{7}", "7", "gsm8k", True),
    ("\\boxed{7} then 8", "7", "gsm8k", True),
    ("The answer is 7", "7", "rg:chain_sum", True),
]


@pytest.mark.parametrize("completion, gold, benchmark, expected", FALSE_POSITIVES)
def test_false_positives(completion, gold, benchmark, expected):
    assert is_correct(completion, gold, benchmark) is expected


def test_unclosed_box_is_no_answer():
    for benchmark in ("gsm8k", "math", "rg:chain_sum"):
        assert extract_answer("So 7. \\boxed{7", benchmark) == (None, "none")
        assert extract_answer("\\boxed{3} and \\boxed{\\frac{1}{2", benchmark) == (None, "none")


def test_overflowing_numbers_have_no_value():
    assert gsm_value("2e400") is None and gsm_value("1e99999") is None
    assert gsm_value("3/0") is None
    assert gsm_value("2e3") == 2000 and gsm_value("x = 18 dollars") == 18


# (answer, refused?)
REFUSALS = [
    ("2^{10}", False),
    ("2^{2^{10}}", False),  # 309 digits
    ("2^{2^{2^{10}}}", True),
    ("9^{9^{9^9}}", True),
    ("10^{999}", False),  # exactly MAX_DIGITS digits
    ("10^{1000}", True),
    ("10 ^ { 1000 }", True),
    ("1^{9^{9^{9^9}}}", True),  # 1 to any power is 1, but sympy evaluates the exponent first
    ("e^{x^{2}}", False),
    ("x^{10^{6}}", False),  # no integer base: sympy keeps it symbolic
    ("100!", False),
    ("449!", False),  # 997 digits
    ("450!", True),
    ("99999999!", True),
    ("(10^{8})!", True),
    ("(2n)!", False),
    ("1" * MAX_DIGITS, False),
    ("1" * (MAX_DIGITS + 1), True),
    ("{" * 30 + "1" + "}" * 30, False),
    ("{" * 31 + "1" + "}" * 31, True),
    ("x+" * 1000, False),
    ("x+" * 1001, True),  # 2002 characters
]


@pytest.mark.parametrize("answer, refused", REFUSALS)
def test_refusal(answer, refused):
    assert (refusal(answer) is not None) is refused


def test_tower_digits_reads_right_to_left():
    assert tower_digits("2^{10}") == 4  # 1024
    assert tower_digits("2^{3^{2}}") == 3  # 2^9 = 512, not 8^2 = 64
    assert tower_digits("3^{2^{3}}") == 4  # 3^8 = 6561, not 9^3 = 729
    assert tower_digits("10^{999}") == 1000 and tower_digits("7") == 1


def test_nesting_counts_all_bracket_kinds():
    assert nesting("(a[b{c}])") == 3 and nesting("a)(b") == 1 and nesting("") == 0


@pytest.mark.skipif(not MATH500.exists(), reason=f"{MATH500} not present")
def test_no_math500_gold_is_refused():
    rows = [json.loads(line) for line in MATH500.read_text().splitlines() if line.strip()]
    for row in rows:
        assert refusal(row["answer"]) is None, row["answer"]
        assert refusal(last_boxed(row["solution"]) or "") is None, row["solution"]


def test_refused_math_answer_is_timed_out_and_counted():
    before = stats()["refused"]
    assert grade("\\boxed{9^{9^{9^9}}}", "7", "math") == Grade(
        False, "9^{9^{9^9}}", "boxed", "math_verify", timed_out=True)
    assert stats()["refused"] == before + 1


def test_log_lines_are_shortened(caplog):
    huge = "\\boxed{" + "x+" * 500_000 + "1}"
    with caplog.at_level(logging.WARNING, logger="llm_teach.grading"):
        assert grade(huge, "7", "math").timed_out
    assert caplog.records and all(len(r.getMessage()) < 600 for r in caplog.records)
    assert "1000011 characters" in caplog.text
    assert shorten("abc") == "'abc'"


# Inputs that ran for minutes from a thread; the last two pass every pre-check and have to be
# stopped by killing the worker (sympy evaluates them eagerly).
PATHOLOGICAL = {
    "power tower": "\\boxed{9^{9^{9^9}}}",
    "huge factorial": "\\boxed{99999999!}",
    "nested braces": "\\boxed{" + "{" * 10_000 + "7" + "}" * 10_000 + "}",
    "megabyte answer": "\\boxed{" + "1+" * 500_000 + "1}",
    "megabyte stated answer": "The answer is " + "x+" * 500_000 + "1",
    "spaces after the anchor": "The answer is" + " " * 1_000_000 + "\n",
    "overflowing exponent": "\\boxed{1e99999}",
    "huge binomial": "\\boxed{\\binom{1000000}{500000}}",
    "huge sum": "The answer is $\\sum_{k=1}^{999} k^{999}$.",
}


def _in_thread(fn):
    """fn() run on a fresh thread; the join timeout is a hang guard, not a speed assertion."""
    out: list = []
    worker = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "the grader hung"
    return out[0]


@pytest.fixture
def short_budget(monkeypatch):
    monkeypatch.setattr(sandbox, "GRADE_SECONDS", 2.0)  # the same mechanism, a shorter wait


@pytest.mark.parametrize("name", PATHOLOGICAL)
def test_pathological_answers_return_from_a_thread(name, short_budget):
    completion = PATHOLOGICAL[name]
    before = stats()
    result = _in_thread(lambda: grade(completion, "7", "math"))
    assert result.correct is False
    after = stats()
    if name == "spaces after the anchor":
        assert result == Grade(False, None, "none", "none")
    else:
        assert result.timed_out, result
        assert after["timeouts"] + after["refused"] > before["timeouts"] + before["refused"]
    if name.startswith("huge b") or name.startswith("huge s"):
        assert after["timeouts"] == before["timeouts"] + 1  # stopped by the deadline, not a pre-check
    for benchmark in ("gsm8k", "rg:chain_sum"):
        assert _in_thread(lambda: grade(completion, "7", benchmark)).correct is False


def test_sandbox_works_again_after_a_kill(short_budget):
    _in_thread(lambda: grade(PATHOLOGICAL["huge binomial"], "7", "math"))
    assert _in_thread(lambda: grade("\\boxed{(x+1)^2}", "x^2+2x+1", "math")) == Grade(
        True, "(x+1)^2", "boxed", "math_verify")


def test_concurrent_threads_share_the_workers():
    pairs = [("\\boxed{\\frac{1}{2}}", "0.5", True), ("\\boxed{(x-1)^2}", "x^2+2x+1", False),
             ("\\boxed{[0,1)}", "[0,1)", True), ("\\boxed{\\sqrt{12}}", "2\\sqrt{3}", True)] * 3
    results: dict[int, bool] = {}

    def work(i, completion, gold):
        results[i] = is_correct(completion, gold, "math")

    threads = [threading.Thread(target=work, args=(i, c, g)) for i, (c, g, _) in enumerate(pairs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == {i: expected for i, (_, _, expected) in enumerate(pairs)}


_OLD_ANSWER_IS = re.compile(r"\banswer\**\s*(?:is\b\s*:?|:)\s*\**[ \t]*(?P<ans>[^\n]*\S)", re.IGNORECASE)


def _old_answer_tail(text: str) -> str | None:
    found = list(_OLD_ANSWER_IS.finditer(text))
    return found[-1].group("ans").strip().strip("*").strip() if found else None


TOKENS = ["answer", "Answer", " is", ":", "*", "**", " ", "  ", "\t", "\n", "$", "\\boxed{", "\\boxed",
          "\\fbox{", "{", "}", "\\frac", "\\frac{1}{2}", "####", "#### ", "-", "+", "=", ".", ",",
          "e", "E", "^", "!", "/", "(", ")", "[", "]", "\\%", "%", "\\text{", "x", "0", "1", "7",
          "42", "999", "1e400", "3.5", "\u2212", "\\left(", "\\right)", "\\sqrt", "\\$", "dollars"]
completions = st.one_of(st.lists(st.sampled_from(TOKENS), max_size=30).map("".join), st.text(max_size=60))
golds = st.sampled_from(["7", "-4", "0.5", "\\frac{1}{2}", "x^2+2x+1", "[0,1)", "1000", "#### 42"])
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(completions)
def test_answer_tail_matches_the_regex_it_replaces(text):
    assert answer_tail(text) == _old_answer_tail(text)


@FUZZ
@given(completions, golds, st.sampled_from(["gsm8k", "math", "rg:chain_sum"]))
def test_fuzz_grade_never_raises(completion, gold, benchmark):
    result = grade(completion, gold, benchmark)
    assert isinstance(result.correct, bool)
    assert not (result.correct and result.timed_out)
    assert not (result.correct and result.extracted is None)
    assert is_correct(completion, gold, benchmark) is result.correct
    answer, method = extract_answer(completion, benchmark)
    assert answer is None or isinstance(answer, str)
    assert (answer is None) == (method == "none")


@FUZZ
@given(completions)
def test_fuzz_extractors_never_raise(text):
    boxed = last_boxed(text)
    assert boxed is None or boxed in text
    tail = answer_tail(text)
    assert tail is None or isinstance(tail, str)
    value = gsm_value(text)
    assert value is None or value == value  # never nan
