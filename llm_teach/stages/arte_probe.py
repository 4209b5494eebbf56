"""ARTE's probe set: the questions the student's one-shot accuracy is measured on (step 2).

The paper picks its 40 probe questions from a validation set with item response theory: the
questions that DISCRIMINATE, i.e. whose outcome depends on what the student was shown. A
question the student always (or never) answers, whatever the demonstration, scores every
rationale the same and only dilutes the preference signal. Here, without fitting an IRT model:
each candidate is answered one-shot after each of `probe_demos` candidate demonstrations (seed
problems with their worked solutions), and the `probe_size` candidates whose accuracy varies
most across demonstrations (largest p(1-p), p the fraction right) are kept; ties go to the
earlier candidate. Candidates come from `--probe SOURCE` (its train split for a hub name, never
the test split; seed problems are removed) or, by default, a held-out seeded split of the input.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import TYPE_CHECKING, Any

from llm_teach.backends import Backend, SamplingConfig
from llm_teach.data.problems import Problem, grading_benchmark, load_problems
from llm_teach.data.targets import boxed_answer, boxed_solution
from llm_teach.errors import UserError
from llm_teach.grading import grade
from llm_teach.runs.hashing import derive_seed
from llm_teach.runs.stage_run import Work
from llm_teach.stages.arte_prompts import one_shot_prompt

if TYPE_CHECKING:  # only for annotations: arte.py imports this module
    from llm_teach.stages.arte import ARTEConfig


def split_probe(problems: list[Problem], probe_size: int, seed: int) -> tuple[list[Problem], list[Problem]]:
    """(probe set, seed pool): a seeded sample of at most `probe_size` problems and at most half
    the input for probing; the rest are the seed questions. Both keep input order."""
    n = min(probe_size, max(1, len(problems) // 2))
    chosen = set(random.Random(derive_seed(seed, "probe")).sample(range(len(problems)), n))
    return ([p for i, p in enumerate(problems) if i in chosen], [p for i, p in enumerate(problems) if i not in chosen])


def probe_candidates(problems: list[Problem], config: ARTEConfig, seed: int) -> tuple[list[Problem], list[Problem]]:
    """(probe candidates, seed pool). With `config.probe` every input problem is a seed."""
    if not config.probe:
        return split_probe(problems, config.probe_pool or config.probe_size, seed)
    ids = {p.id for p in problems}
    candidates = [p for p in load_problems(config.probe, split="train") if p.id not in ids]
    if not candidates:
        raise UserError(f"--probe {config.probe}: no probe problems (after removing the seed problems)")
    return candidates, problems


def select_probe(candidates: list[Problem], seeds: list[Problem], student: Backend, config: ARTEConfig,
                 seed: int) -> Work:
    """The `probe_size` most discriminative candidates (all of them when there are no more)."""
    counts: Counter = Counter({"probe/candidates": len(candidates)})
    if len(candidates) <= config.probe_size:
        rows = [{"id": p.id, "accuracy_by_demo": None, "discrimination": None, "selected": True} for p in candidates]
        return Work(records={"selection": rows}, counts=counts)
    rng = random.Random(derive_seed(seed, "probe-demos"))
    demos = rng.sample(seeds, min(config.probe_demos, len(seeds)))
    prompts = [one_shot_prompt(d.question, boxed_solution(d) or boxed_answer(d.answer), p, config)
               for p in candidates for d in demos]
    outs = student.generate(prompts, 1, SamplingConfig(temperature=0.0, max_new_tokens=config.probe_max_new_tokens,
                                                       seed=seed))
    rows: list[dict[str, Any]] = []
    for i, p in enumerate(candidates):
        correct = [grade(row[0].completion, p.answer, grading_benchmark(p.source), p.meta).correct
                   for row in outs[i * len(demos):(i + 1) * len(demos)]]
        accuracy = sum(correct) / len(correct)
        rows.append({"id": p.id, "accuracy_by_demo": correct, "discrimination": accuracy * (1 - accuracy)})
    ranked = sorted(range(len(rows)), key=lambda i: (-rows[i]["discrimination"], i))
    chosen = set(ranked[:config.probe_size])
    for i, row in enumerate(rows):
        row["selected"] = i in chosen
    counts["probe/discriminative"] += sum(row["discrimination"] > 0 for row in rows)
    return Work(records={"selection": rows}, counts=counts)
