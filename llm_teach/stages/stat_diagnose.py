"""STAT's diagnosis set: where the student's difficult questions are found (steps 2-3).

The paper finds difficult questions on a VALIDATION set and then selects (STAT-Sel) or writes
from references (STAT-Syn) out of the TRAINING set (STAT README: "500 difficult questions from
the validation set"; references "from the MATH training set"). Diagnosing on the training pool
itself would make STAT-Sel hand the student the very questions it was tested on. So the
diagnosis set is `--diagnose SOURCE` (a hub name gives its train split, never the test split),
or by default a seeded held-out `diagnose_fraction` of `--data`; either way no diagnosis
problem (same id or same question) is in the pool that Sel selects from and Syn draws
references from. The manifest states which (`diagnosis`).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from llm_teach.data.problems import Problem, load_problems
from llm_teach.errors import UserError
from llm_teach.runs.hashing import derive_seed, ids_digest

if TYPE_CHECKING:  # only for annotations: stat.py imports this module
    from llm_teach.stages.stat import STATConfig


def diagnosis_split(problems: list[Problem], config: STATConfig,
                    seed: int) -> tuple[list[Problem], list[Problem], dict[str, Any]]:
    """(diagnosis set, training pool, what the manifest records about it). Both keep input order."""
    if config.diagnose:
        diagnosis = load_problems(config.diagnose, split="train")
        taken = {p.id for p in diagnosis} | {_text(p) for p in diagnosis}
        pool = [p for p in problems if p.id not in taken and _text(p) not in taken]
        source = config.diagnose
    else:
        if len(problems) < 2:
            raise UserError("stat needs at least 2 problems to hold out a diagnosis set (or pass --diagnose SOURCE)")
        n = min(len(problems) - 1, max(1, round(config.diagnose_fraction * len(problems))))
        chosen = set(random.Random(derive_seed(seed, "diagnose")).sample(range(len(problems)), n))
        diagnosis = [p for i, p in enumerate(problems) if i in chosen]
        pool = [p for i, p in enumerate(problems) if i not in chosen]
        source = f"held-out {config.diagnose_fraction:g} of --data (seeded)"
    if not pool:
        raise UserError(f"--diagnose {config.diagnose}: it contains every --data problem; no training pool is left")
    return diagnosis, pool, {"source": source, "problems": len(diagnosis), "ids": ids_digest([p.id for p in diagnosis]),
                             "pool": len(pool), "removed_from_pool": len(problems) - len(pool) - (
                                 0 if config.diagnose else len(diagnosis))}


def _text(problem: Problem) -> str:
    return " ".join(problem.question.split())
