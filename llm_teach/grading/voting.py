"""Which answers are the same answer, and which one most samples gave (maj@k, STAT's votes).

`answer_key` groups equivalent answers ("1,000", "1000.0" and "$1000"); `majority_vote` counts
the groups. Pure text, like the rest of grading: evaluation's maj@k and the stages' agreement
rules both vote through here.
"""

from __future__ import annotations

import re
from collections import Counter

from llm_teach.grading.extraction import benchmark_kind
from llm_teach.grading.numbers import gsm_value, number

def answer_key(answer: str, benchmark: str) -> str:
    """A canonical key under which equivalent answers group together (for maj@k).

    Numbers become their value to 10 significant digits ("1,000", "1000.0" and "$1000" ->
    "1000"; "\\frac{3}{4}" and "0.75" -> "0.75"); for GSM8K units are dropped as in grading
    ("18 dollars" -> "18"). Anything else is the LaTeX with whitespace, `\\left`/`\\right`,
    thin spaces and surrounding `$` removed and `\\dfrac`/`\\tfrac` spelled `\\frac`.
    Equal keys mean equal answers; symbolically equal but differently written expressions
    (`(x+1)^2`, `x^2+2x+1`) keep different keys.
    """
    kind, _ = benchmark_kind(benchmark)
    value = gsm_value(answer) if kind == "gsm8k" else number(answer, strict=True)
    if value is not None:
        key = f"{value:.10g}"
        return "0" if key == "-0" else key
    return _normalize_latex(answer)


def majority_vote(answers: list[str | None], benchmark: str) -> tuple[int | None, int]:
    """(index of the first answer of the most common kind, its number of votes); answers vote
    together when their `answer_key` is equal (1,000 and 1000.0); ties go to the kind seen
    first; None never votes. (None, 0) when no answer was given."""
    keys = [answer_key(a, benchmark) if a is not None else None for a in answers]
    votes = Counter(k for k in keys if k is not None)
    if not votes:
        return None, 0
    top = max(votes.values())
    return next(i for i, k in enumerate(keys) if k is not None and votes[k] == top), top


def _normalize_latex(s: str) -> str:
    s = s.strip().strip("$").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\\(?:left|right)(?![a-zA-Z])|\\[,!;: ]|\\displaystyle|\s+", "", s)
    return s.rstrip(".")

