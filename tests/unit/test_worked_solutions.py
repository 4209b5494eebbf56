"""Worked solutions for reasoning-gym arithmetic (`rg:...&solutions=worked`), and the seeding
fact the comparison experiment's splits rely on."""

import re

import pytest

from llm_teach.data import load_problems
from llm_teach.data.worked import worked_solution
from llm_teach.errors import UserError
from llm_teach.grading import grade


def test_steps_follow_evaluation_order_and_end_boxed():
    assert worked_solution("3 + 4 - 2", "5") == "3 + 4 = 7, 7 - 2 = 5. The final answer is \\boxed{5}."
    # precedence and parentheses: the product first, then the sum
    assert worked_solution("( 2 + 3 ) * 4 - 6 / 3", "18") == (
        "2 + 3 = 5, 5 * 4 = 20, 6 / 3 = 2, 20 - 2 = 18. The final answer is \\boxed{18}.")
    assert worked_solution("5 - -3", "8") == "5 - -3 = 8. The final answer is \\boxed{8}."
    assert worked_solution("-( 2 + 5 )", "-7") == "2 + 5 = 7, -(7) = -7. The final answer is \\boxed{-7}."


def test_a_solution_never_teaches_a_wrong_answer_or_runs_code():
    assert worked_solution("3 + 4", "8") is None  # disagrees with the gold answer
    assert worked_solution("__import__('os').getcwd()", "0") is None
    assert worked_solution("2 ** 3", "8") is None  # not one of + - * /
    assert worked_solution("1 / 0", "0") is None


@pytest.mark.parametrize("source", [
    "rg:chain_sum?min_terms=2&max_terms=4&min_digits=1&max_digits=2&seed=5&solutions=worked",
    "rg:basic_arithmetic?min_terms=2&max_terms=3&min_digits=1&max_digits=2&seed=5&solutions=worked",
])
def test_every_generated_problem_gets_a_solution_its_verifier_accepts(source):
    problems = load_problems(source, 60)
    assert all(p.solution for p in problems)
    benchmark = source.split("?")[0]
    assert all(grade(p.solution, p.answer, benchmark, p.meta).correct for p in problems)
    # each step's arithmetic is right (the last step's result is the answer)
    for p in problems:
        last = re.findall(r"= (-?\d+(?:\.\d+)?)", p.solution)[-1]
        assert last == p.answer


def test_solutions_are_opt_in_and_checked():
    plain = load_problems("rg:chain_sum?seed=5", 3)
    assert all(p.solution is None for p in plain)
    with pytest.raises(UserError, match="solutions must be 'worked'"):
        load_problems("rg:chain_sum?seed=5&solutions=gold", 3)
    with pytest.raises(UserError, match="leg_counting does not"):
        load_problems("rg:leg_counting?seed=5&solutions=worked", 3)


def test_reasoning_gym_seeds_are_offsets_so_splits_need_distant_seeds():
    """reasoning-gym seeds problem i with seed+i: seed 11 and seed 12 share all but one problem.
    The experiment's train/validation/held-out splits use seeds far apart (and decontaminate)."""
    a = [p.question for p in load_problems("rg:chain_sum?seed=11", 20)]
    b = [p.question for p in load_problems("rg:chain_sum?seed=12", 20)]
    assert a[1:] == b[:-1]
