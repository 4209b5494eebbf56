"""Is the extracted answer the gold answer? (`grade`, `is_correct`)

GSM8K and numeric reasoning-gym golds are compared as values (`llm_teach.grading.numbers`);
MATH answers by math-verify, gold first (`verify(gold, pred)` is not symmetric); other
reasoning-gym tasks by the task's own `score_answer`.

A grade has a hard time bound (`sandbox.GRADE_SECONDS` in all, in any thread): math-verify
runs in the grading sandbox's worker processes, answers no parser could finish with are
refused beforehand (`bounds.refusal`), and two integers are compared without sympy -- the
common MATH case, which so never pays the sandbox's round trip. Not charged to the bound: a
worker's own start (about 2 s, once per process and after each kill; `STARTUP_SECONDS` caps it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from llm_teach.errors import UserError
from llm_teach.grading import sandbox
from llm_teach.grading.extraction import after_hashes, benchmark_kind, extract_within, last_boxed
from llm_teach.grading.numbers import close, gsm_value, number

_INTEGER = re.compile(r"\s*[-+]?\d{1,300}\s*")


@dataclass(frozen=True)
class Grade:
    """The verdict on one completion.

    Attributes:
        correct: whether the extracted answer equals the gold answer.
        extracted: the answer text pulled from the completion, None when there is none.
        method: how it was pulled out: "hash" (a `#### x` line), "boxed" (last `\\boxed{}`
            or `\\fbox{}`), "answer_is" ("the answer is x" / "Answer: x"), "last_number",
            "math_verify_fallback" (MATH without a box: what math-verify reads after
            "the answer is" / "Answer:") or "none".
        verifier: how it was compared: "numeric", "math_verify", "rg_scorer" or "none".
        timed_out: the comparison was cut off and graded incorrect: math-verify ran out of
            the grade's time budget, or the answer was refused beforehand as one it could
            not finish with (see `llm_teach.grading.bounds`). Counted in `grading.stats()`.
    """

    correct: bool
    extracted: str | None
    method: str
    verifier: str = "none"
    timed_out: bool = False


def is_correct(completion: str, gold: str, benchmark: str, meta: dict | None = None) -> bool:
    """True when the completion's final answer equals `gold` (see `grade`)."""
    return grade(completion, gold, benchmark, meta).correct


def grade(completion: str, gold: str, benchmark: str, meta: dict | None = None) -> Grade:
    """Extract the final answer from `completion` and compare it with `gold`.

    Args:
        completion: the model's output text.
        gold: the gold answer; for GSM8K it may be a whole solution ending in `#### 72`,
            for MATH a whole solution with a `\\boxed{}` (the last box is used).
        benchmark: "gsm8k", "math", "math500" or "rg:<task>".
        meta: the reasoning-gym entry's `metadata` (some scorers need it); may also carry
            the entry's "question".

    Returns:
        A `Grade`. Grading never raises on odd completions: a completion without an answer,
        an unparsable answer or a crashing scorer is simply incorrect, and a MATH answer
        math-verify cannot settle within `sandbox.GRADE_SECONDS` (extraction included) is
        incorrect with `timed_out=True`, whichever thread calls.

    Raises:
        UserError: for an unknown benchmark, or an unknown reasoning-gym task whose
            scorer is needed (a non-numeric gold).
    """
    kind, task = benchmark_kind(benchmark)
    budget = sandbox.Budget()
    try:
        extracted, method = extract_within(completion or "", benchmark, budget)
    except sandbox.GradingTimeout:
        return Grade(False, None, "math_verify_fallback", "math_verify", timed_out=True)
    if extracted is None:
        return Grade(False, None, method, "none")
    if kind == "gsm8k":
        gold_value = gsm_value(_gsm_gold(str(gold)))
        pred_value = gsm_value(extracted)
        return Grade(close(gold_value, pred_value), extracted, method, "numeric")
    if kind == "math":
        gold_answer = last_boxed(str(gold)) or str(gold)
        try:
            correct = _math_equal(gold_answer, extracted, budget)
        except sandbox.GradingTimeout:
            return Grade(False, extracted, method, "math_verify", timed_out=True)
        return Grade(correct, extracted, method, "math_verify")
    # reasoning-gym: numbers by value, everything else by the task's own scorer.
    gold_value = number(str(gold), strict=True) if gold is not None else None
    if gold_value is not None:
        return Grade(close(gold_value, gsm_value(extracted)), extracted, method, "numeric")
    return Grade(_rg_score(task, extracted, gold, meta), extracted, method, "rg_scorer")


def _gsm_gold(gold: str) -> str:
    """A GSM8K gold: the `####` answer of a full solution, else the string itself."""
    return after_hashes(gold) or gold


def _for_math_verify(answer: str) -> str:
    """An answer in the form math-verify parses best: boxed inside `$...$`.

    Plain scientific notation is rewritten first: math-verify reads `1.5e3` as 1.5*e*3.
    """
    answer = re.sub(r"^\s*([-+]?\d+(?:\.\d+)?)[eE]([-+]?\d+)\s*$", r"\1\\times 10^{\2}", answer)
    return f"$\\boxed{{{answer}}}$"


def _math_equal(gold: str, pred: str, budget: sandbox.Budget) -> bool:
    """math-verify equivalence of two answer strings, gold first; False on any failure.

    Raises `sandbox.GradingTimeout` when math-verify runs out of `budget` or an answer is
    refused unparsed (`bounds.refusal`).
    """
    if _INTEGER.fullmatch(gold) and _INTEGER.fullmatch(pred):
        return int(gold) == int(pred)  # what math-verify concludes too, without sympy
    gold, pred = _for_math_verify(gold), _for_math_verify(pred)
    sandbox.refuse_absurd(gold)
    sandbox.refuse_absurd(pred)
    return bool(sandbox.call(("equal", gold, pred), budget))


@lru_cache(maxsize=None)
def _rg_scorer(task: str):
    import reasoning_gym  # imported here: it is slow to import and only rg:* needs it
    from reasoning_gym.factory import DATASETS

    if task not in DATASETS:
        raise UserError(f"unknown reasoning-gym task {task!r} (benchmark 'rg:{task}')")
    return reasoning_gym.get_score_answer_fn(task)


def _rg_score(task: str, answer: str, gold, meta: dict | None) -> bool:
    """The task's own `score_answer`; correct iff it gives full marks."""
    meta = meta or {}
    entry = {"question": meta.get("question", ""), "answer": gold, "metadata": meta}
    try:
        return float(_rg_scorer(task)(answer, entry)) >= 1.0
    except UserError:
        raise
    except Exception:  # scorers index metadata and parse freely; a crash is a wrong answer
        return False

