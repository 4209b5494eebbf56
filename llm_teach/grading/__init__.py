"""Answer extraction and verification: is this completion's final answer the gold answer?

Every number this project reports (pass@1, maj@k, rewards for GRPO/KDRL, the data
filters of LLM2LLM and STaT) goes through `grade`, so it is strict where a lenient grader
would invent accuracy and lenient where a strict one would hide it:

* Never an exact string match: "1,000", "1000.0" and "$1000" are one answer, and so are
  `\\dfrac{1}{2}`, `0.5` and `\\frac12`. String matching under-counts small models, which
  vary their formatting far more than their mathematics.
* Never digit stripping (`re.sub(r"\\D", "", s)`): it turns "-5" into "5" and "1.5" into
  "15". Numbers are parsed into values that keep their sign and decimal point, then
  compared with a relative tolerance of 1e-6.
* One answer per completion: the `####` line or the LAST `\\boxed{}` (brace-matched, so
  `\\boxed{\\frac{1}{2}}` survives). Grading "any number in the text" would reward a
  completion that merely mentions the gold value on the way to a wrong answer.
* MATH answers are compared by math-verify (`parse` then `verify`), which knows that
  `(x+1)^2 = x^2+2x+1` and that `[0,1)` is not `[0,1]`. `verify(gold, pred)` is not
  symmetric -- it simplifies assignments and turns relations into intervals on the gold
  side only (a gold `1<x<2` accepts the answer `(1,2)`; a gold `(1,2)` rejects the answer
  `1<x<2`), so the gold always goes first.
* Bounded: one grade takes at most `sandbox.GRADE_SECONDS` (5 s) in any thread or process
  -- math-verify runs in worker processes that are killed when they overrun, absurd answers
  (`9^{9^{9^9}}`, a megabyte of text) are refused unparsed, and either is graded incorrect
  with `timed_out=True`, counted in `stats()`.
* reasoning-gym tasks are scored by the task's own `score_answer`; numeric golds use the
  same numeric comparison as GSM8K.

Benchmarks: "gsm8k", "math" / "math500", "rg:<task>" (any registered reasoning-gym task).

Example:
    >>> is_correct("so the answer is \\\\boxed{42}", "42", "gsm8k")
    True
    >>> grade("#### 5", "-5", "gsm8k")
    Grade(correct=False, extracted='5', method='hash', verifier='numeric', timed_out=False)

The package, one job a module: `extraction` (the final answer in a completion), `numbers`
(numbers as values), `verification` (`grade`: is it the gold answer?) and `voting`
(`answer_key`, `majority_vote`: which answers are one answer), with `bounds` (what is refused
unparsed) and `sandbox` / `mv_worker` (math-verify in killable worker processes).
"""

from __future__ import annotations

from llm_teach.grading.extraction import extract_answer, last_boxed
from llm_teach.grading.sandbox import stats
from llm_teach.grading.verification import Grade, grade, is_correct
from llm_teach.grading.voting import answer_key, majority_vote

__all__ = ["Grade", "grade", "is_correct", "extract_answer", "answer_key", "last_boxed", "majority_vote", "stats"]
