"""`make demo`'s closing numbers: the change in accuracy is paired over the same problems, its
sign is after - before, and its interval comes from the per-problem differences."""

import math

from llm_teach.demo import paired_change


def _items(correct: list[bool]) -> list[dict]:
    return [{"id": f"p{i}", "correct": [c]} for i, c in enumerate(correct)]


def test_change_is_after_minus_before_with_the_paired_interval():
    before = [True] * 2 + [False] * 8
    after = [True] * 6 + [False] * 4  # 4 problems gained, none lost
    change, low, high = paired_change(_items(before), _items(after))
    assert change == 0.4
    diffs = [0, 0, 1, 1, 1, 1, 0, 0, 0, 0]
    sd = math.sqrt(sum((d - 0.4) ** 2 for d in diffs) / 9)
    assert math.isclose(high - change, 1.959964 * sd / math.sqrt(10)) and math.isclose(change - low, high - change)
    assert paired_change(_items(after), _items(before))[0] == -0.4


def test_pairs_by_problem_id_not_by_position():
    before = _items([True, False, False, False])
    after = list(reversed(before))  # the same answers, listed in another order
    assert paired_change(before, after) == (0.0, 0.0, 0.0)


def test_pairing_narrows_the_interval_when_the_same_problems_stay_right():
    # 50 problems right before and after, 10 gained: the unpaired interval of the difference
    # would be far wider than the paired one.
    before = [True] * 50 + [False] * 50
    after = [True] * 60 + [False] * 40
    change, low, high = paired_change(_items(before), _items(after))
    unpaired_half = 1.959964 * math.sqrt(0.5 * 0.5 / 100 + 0.6 * 0.4 / 100)
    assert math.isclose(change, 0.1) and (high - low) / 2 < 0.5 * unpaired_half
