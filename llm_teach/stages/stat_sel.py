"""STAT-Sel: existing problems labelled with each missing skill, in proportion to the profile.

A selected problem's worked solution is the target (`data.targets.boxed_solution`); problems
without one are solved by the teacher, graded against the gold answer, first correct of
`solve_attempts` kept.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import TYPE_CHECKING, Any

from llm_teach.backends import Backend
from llm_teach.data.problems import Problem, grading_benchmark
from llm_teach.data.targets import boxed_solution
from llm_teach.grading import grade
from llm_teach.runs.hashing import derive_seed
from llm_teach.runs.stage_run import StageRun, Unit, Work, records
from llm_teach.stages.stat_profile import allocate, data_size
from llm_teach.stages.stat_prompts import sampled, sft_record, solve_prompt

if TYPE_CHECKING:  # only for annotations: stat.py imports this module
    from llm_teach.stages.stat import STATConfig


def select(profile: dict[str, int], labels: list[dict[str, Any]], total: int,
           seed: int) -> tuple[list[tuple[str, str]], Counter]:
    """`[(problem_id, skill)]`: per missing skill, its quota of problems labelled with it, drawn
    without replacement in seeded random order and cycled when the pool is smaller than the
    quota (the paper samples with replacement). A skill no problem is labelled with gets none."""
    counts: Counter = Counter()
    picks: list[tuple[str, str]] = []
    for skill, quota in allocate(profile, total).items():
        pool = [r["id"] for r in labels if skill in r["skills"]]
        if not pool:
            counts["sel/skill_without_problems"] += 1
            continue
        if len(pool) < quota:
            counts["sel/pool_repeated"] += 1
        rng = random.Random(derive_seed(seed, f"sel/{skill}"))
        drawn: list[str] = []
        while len(drawn) < quota:
            order = list(pool)
            rng.shuffle(order)
            drawn += order[: quota - len(drawn)]
        picks += [(pid, skill) for pid in drawn]
    return picks, counts


def sel_records(run: StageRun, problems: list[Problem], labels: list[dict[str, Any]], profile: dict[str, int],
                teacher: Backend, config: STATConfig) -> list[dict[str, Any]]:
    """STAT-Sel's SFT records: the selected problems with their worked (or teacher) solutions."""
    by_id = {p.id: p for p in problems}
    picks, pick_counts = select(profile, labels, data_size(config.sel_size, problems), run.seed)
    order = {p.id: i for i, p in enumerate(problems)}
    need = sorted({pid for pid, _ in picks if boxed_solution(by_id[pid]) is None}, key=order.__getitem__)
    solved = records(run.map("sel_solve", [by_id[pid] for pid in need], config.chunk_size,
                             lambda unit: _solve_gold(unit, teacher, config)), "solutions")
    targets = {r["id"]: r["solution"] for r in solved}

    def assemble(unit: Unit) -> Work:
        counts, records, seen = Counter(pick_counts), [], Counter()
        counts["sel/picked"] += len(picks)
        for pid, skill in picks:
            problem = by_id[pid]
            target = boxed_solution(problem) or targets.get(pid)
            if target is None:
                counts["rejected/sel_no_correct_solution"] += 1
                continue
            seen[pid] += 1
            records.append(sft_record(f"sel-{pid}-{seen[pid]}", problem.question, target, config, origin="sel",
                                       skill=skill, problem_id=pid, answer=problem.answer, source=problem.source))
        return Work(records={"sft": records}, counts=counts)

    return run.once("sel", assemble, depends_on=[picks, targets]).records["sft"]


def _solve_gold(unit: Unit, teacher: Backend, config: STATConfig) -> Work:
    """Teacher solutions for selected problems that have no worked solution; the first one
    graded correct against the gold answer is kept."""
    problems: tuple[Problem, ...] = unit.items
    counts: Counter = Counter()
    outs = teacher.generate([solve_prompt(p.question, config) for p in problems], config.solve_attempts,
                            sampled(config, config.solve_temperature, unit.seed))
    records = []
    for problem, gens in zip(problems, outs):
        benchmark = grading_benchmark(problem.source)
        good = next((g.completion for g in gens
                     if grade(g.completion, problem.answer, benchmark, problem.meta).correct), None)
        counts["sel/teacher_solved" if good else "sel/teacher_failed"] += 1
        if good:
            records.append({"id": problem.id, "solution": good})
    return Work(records={"solutions": records}, counts=counts)
