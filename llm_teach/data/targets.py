"""Training targets from a dataset's own solutions, in the answer format evaluation asks for.

The evaluation prompt asks for the final answer "within \\boxed{}", so SFT targets end in one:
a student trained on GSM8K's `#### 72` lines would learn a format the grader reads, but not the
one it is later asked for. One wording for every stage ("The final answer is \\boxed{N}."), so
the data of two stages can be mixed without teaching two formats.
"""

from __future__ import annotations

import re

from llm_teach.data.problems import Problem
from llm_teach.grading import last_boxed


def boxed_answer(answer: str) -> str:
    """The closing sentence of every target: `The final answer is \\boxed{answer}.`"""
    return f"The final answer is \\boxed{{{answer}}}."


def boxed_solution(problem: Problem) -> str | None:
    """The dataset's worked solution as an SFT target ending in `\\boxed{}` (what evaluation
    extracts), or None when there is none. A solution that already has a box is kept as it is;
    GSM8K's `#### N` becomes a boxed answer and its calculator annotations `<<48/2=24>>` are
    removed; any other solution gets the gold answer boxed after it."""
    solution = (problem.solution or "").strip()
    if not solution:
        return None
    if last_boxed(solution) is not None:
        return solution
    if "####" in solution:
        body, answer = solution.rsplit("####", 1)
        body = re.sub(r"<<[^<>]*>>", "", body).strip()
        return f"{body}\n\n{boxed_answer(answer.strip())}"
    return f"{solution}\n\n{boxed_answer(problem.answer)}"
