"""Which answers are the same answer, and which one most samples gave (maj@k, STAT's votes).

Answers are grouped by VERIFIED equivalence, not by text: `\\sqrt2` and `\\sqrt{2}`, `0.5` and
`\\frac12` are one answer. Two answers are equivalent when their `answer_key`s are equal (a cheap
canonical spelling that settles most cases without a verifier) or when the benchmark's own
grader accepts one as the gold answer of the other -- math-verify for MATH, numeric comparison for
GSM8K, the task's `score_answer` for reasoning-gym. The check goes through the public `grade`, so
it runs under the grader's time bound and never raises.

Every place that groups answers votes through here: evaluation's maj@k, STAT's difficulty rule
(fewer than 2 of K agree) and STAT-Syn's agreement, SSB's most common wrong answer.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from llm_teach.grading.extraction import benchmark_kind, last_boxed
from llm_teach.grading.numbers import gsm_value, number
from llm_teach.grading.verification import grade


def answer_key(answer: str, benchmark: str) -> str:
    """A canonical spelling: equal keys mean equal answers (the converse needs `equivalent`).

    Numbers become their value to 10 significant digits ("1,000", "1000.0" and "$1000" ->
    "1000"; "\\frac{3}{4}" and "0.75" -> "0.75"); for GSM8K units are dropped as in grading
    ("18 dollars" -> "18"). Anything else is the LaTeX with whitespace, `\\left`/`\\right`,
    thin spaces and surrounding `$` removed and `\\dfrac`/`\\tfrac` spelled `\\frac`.
    Symbolically equal but differently written expressions (`(x+1)^2`, `x^2+2x+1`) keep
    different keys; `answer_groups` joins them through the grader.
    """
    kind, _ = benchmark_kind(benchmark)
    value = gsm_value(answer) if kind == "gsm8k" else number(answer, strict=True)
    if value is not None:
        key = f"{value:.10g}"
        return "0" if key == "-0" else key
    return _normalize_latex(answer)


def answer_groups(answers: list[str | None], benchmark: str,
                  meta: dict[str, Any] | None = None) -> list[int | None]:
    """For each answer, the index of the first answer of its group (None for no answer).

    An answer joins the first earlier group whose first answer has the same `answer_key` or is
    accepted by the grader as its gold, or accepts it as gold (both directions: math-verify is
    not symmetric -- a gold `1<x<2` accepts `(1,2)` but not the reverse); else it starts a
    group. `meta` is the reasoning-gym entry's metadata, for scorers that need it. Answers whose key was already seen join that key's group without another
    verifier call, so K samples cost at most (distinct keys x groups) grader calls.
    """
    groups: list[int | None] = []
    by_key: dict[str, int] = {}
    heads: list[int] = []
    for i, answer in enumerate(answers):
        if answer is None:
            groups.append(None)
            continue
        key = answer_key(answer, benchmark)
        if key not in by_key:
            head = next((h for h in heads if _accepts(answers[h], answer, benchmark, meta)
                         or _accepts(answer, answers[h], benchmark, meta)), None)
            if head is None:
                heads.append(i)
                head = i
            by_key[key] = head
        groups.append(by_key[key])
    return groups


def majority_vote(answers: list[str | None], benchmark: str,
                  meta: dict[str, Any] | None = None) -> tuple[int | None, int]:
    """(index of the first answer of the most common group, its number of votes); answers vote
    together when `answer_groups` puts them in one group (1,000 and 1000.0; \\sqrt2 and \\sqrt{2}); ties go to
    the group seen first; None never votes. (None, 0) when no answer was given."""
    groups = answer_groups(answers, benchmark, meta)
    votes = Counter(g for g in groups if g is not None)
    if not votes:
        return None, 0
    top = max(votes.values())
    return next(g for g in groups if g is not None and votes[g] == top), top


def _accepts(gold: str, answer: str, benchmark: str, meta: dict[str, Any] | None) -> bool:
    """Does the grader take `answer`, boxed as a completion, as correct against `gold`? An answer
    the box would not carry intact (unbalanced braces) is compared by key only."""
    completion = f"\\boxed{{{answer}}}"
    if last_boxed(completion) != answer.strip():
        return False
    return grade(completion, gold, benchmark, meta).correct


def _normalize_latex(s: str) -> str:
    s = s.strip().strip("$").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\\(?:left|right)(?![a-zA-Z])|\\[,!;: ]|\\displaystyle|\s+", "", s)
    return s.rstrip(".")
