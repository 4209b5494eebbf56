"""The teacher-hacking watch's detection rule (`llm_teach.trainers.hacking_watch`), by tables."""

from __future__ import annotations

import pytest

from llm_teach.trainers.hacking_watch import WatchPoint, golden_key, golden_worse, hacking_streak, teacher_hacking

P = WatchPoint


@pytest.mark.parametrize("prev, cur, worse", [
    (P(1.0, 0.5), P(0.9, 0.4), True),  # accuracy fell
    (P(1.0, 0.5), P(0.9, 0.5), False),  # accuracy flat, no reference
    (P(1.0, 0.5), P(0.9, 0.6), False),  # accuracy rose
    (P(1.0, 0.5, 2.0), P(0.9, 0.5, 2.5), True),  # flat accuracy, reference KL grew
    (P(1.0, 0.5, 2.0), P(0.9, 0.5, 1.5), False),  # flat accuracy, reference KL fell
    (P(1.0, 0.5, 2.0), P(0.9, 0.6, 2.5), False),  # accuracy rose: better, whatever the reference says
    (P(1.0, 0.5, 2.0), P(0.9, 0.4, 1.0), True),  # accuracy fell: worse
])
def test_golden_worse(prev, cur, worse):
    assert golden_worse(prev, cur) is worse


# proxy, accuracy per evaluation -> streak, fires with patience 2
@pytest.mark.parametrize("points, streak, fires", [
    ([], 0, False),
    ([(1.0, 0.5)], 0, False),
    ([(1.0, 0.5), (0.9, 0.4)], 1, False),
    ([(1.0, 0.5), (0.9, 0.4), (0.8, 0.3)], 2, True),
    ([(1.0, 0.5), (0.9, 0.4), (0.8, 0.3), (0.7, 0.2)], 3, True),
    ([(1.0, 0.5), (0.9, 0.4), (0.95, 0.3)], 0, False),  # proxy rose at the last evaluation: no hacking
    ([(1.0, 0.5), (0.9, 0.4), (0.8, 0.4)], 0, False),  # golden flat at the last: the streak is broken
    ([(1.0, 0.5), (0.9, 0.6), (0.8, 0.5), (0.7, 0.4)], 2, True),  # an early improvement does not count
    ([(1.0, 0.5), (0.9, 0.4), (0.8, 0.5), (0.7, 0.4)], 1, False),  # not consecutive
    ([(1.0, 0.5), (1.0, 0.4), (0.9, 0.3)], 1, False),  # proxy flat is not falling
    ([(1.0, 0.5), (1.1, 0.6), (1.2, 0.7)], 0, False),  # both improve... in opposite senses: no
])
def test_streak_and_rule(points, streak, fires):
    pts = [P(p, a) for p, a in points]
    assert hacking_streak(pts) == streak
    assert teacher_hacking(pts, patience=2) is fires


def test_patience_is_k_evaluations():
    pts = [P(1.0 - i / 10, 0.9 - i / 10) for i in range(4)]  # 3 bad transitions
    assert [teacher_hacking(pts, k) for k in (1, 2, 3, 4)] == [True, True, True, False]


def test_golden_key_orders_accuracy_then_reference():
    assert golden_key(P(0.1, 0.6, 9.0)) > golden_key(P(0.1, 0.5, 1.0))
    assert golden_key(P(0.1, 0.5, 1.0)) > golden_key(P(0.1, 0.5, 2.0))


def test_a_resumed_watch_keeps_the_saved_best(tmp_path):
    """OUT/best-golden from before an interruption is replaced only by a better evaluation."""
    import json

    from llm_teach.trainers.hacking_watch import TeacherHackingWatch

    (tmp_path / "best.json").write_text(json.dumps({"step": 4, "proxy": 0.5, "accuracy": 0.75, "reference_kl": None}))
    watch = TeacherHackingWatch(None, None, None, every=1, patience=2, stop=False, max_new_tokens=4,
                                best_dir=tmp_path)
    assert watch.best == (golden_key(P(0.5, 0.75)), 4)
    assert TeacherHackingWatch(None, None, None, every=1, patience=2, stop=False, max_new_tokens=4,
                               best_dir=tmp_path / "none").best is None
