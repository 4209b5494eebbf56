"""STAT-Syn: the teacher writes new problems for each missing skill and keeps the ones it can
solve consistently.

Problems are written from reference problems of the training pool (labelled with the skill
first, as the STAT README retrieves "3 questions from the MATH training set" per missing skill),
checked against evaluation sets and for near-duplicates, solved `syn_solutions` times, and kept
only when at least `syn_min_agree` answers agree (grouped by verified equivalence, `answer_groups`), with only the
agreeing solutions.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llm_teach.backends import Backend, SamplingConfig
from llm_teach.data.decontam import Decontaminator, NearDuplicates, admit, drop_near_duplicates
from llm_teach.data.problems import Problem, grading_benchmark
from llm_teach.grading import extract_answer
from llm_teach.grading.voting import answer_groups
from llm_teach.prompts import render
from llm_teach.runs.hashing import derive_seed
from llm_teach.runs.stage_run import StageRun, Unit, Work, records
from llm_teach.stages.parsing import parse_problem, skill_key
from llm_teach.stages.stat_profile import allocate, data_size
from llm_teach.stages.stat_prompts import sampled, sft_record, solve_prompt

if TYPE_CHECKING:  # only for annotations: stat.py imports this module
    from llm_teach.stages.stat import STATConfig


@dataclass(frozen=True)
class SynTask:
    """One problem to write: `index`-th of `skill`'s quota, modelled on `references`."""

    id: str
    skill: str
    references: tuple[str, ...]  # problem ids
    benchmark: str  # how answers to the new problem are extracted and grouped


def syn_tasks(profile: dict[str, int], total: int, problems: list[Problem], labels: list[dict[str, Any]],
              n_refs: int, seed: int) -> list[SynTask]:
    """The problems to write, fixed before any is written. References for a skill come from
    the pool's problems labelled with it, then from any pool problem (seeded per task, so each
    task sees its own examples); never from the diagnosis set."""
    by_id = {p.id: p for p in problems}
    tasks = []
    for skill, quota in allocate(profile, total).items():
        labelled = [r["id"] for r in labels if skill in r["skills"] and r["id"] in by_id]
        rest = [p.id for p in problems if p.id not in set(labelled)]
        for index in range(quota):
            rng = random.Random(derive_seed(seed, f"syn-refs/{skill}/{index}"))
            refs: list[str] = []
            for tier in (labelled, rest):
                room = n_refs - len(refs)
                if room > 0:
                    refs += rng.sample(tier, min(room, len(tier)))
            tasks.append(SynTask(f"syn-{_slug(skill)}-{index}", skill, tuple(refs),
                                 grading_benchmark(by_id[refs[0]].source)))
    return tasks


def syn_records(run: StageRun, problems: list[Problem], labels: list[dict[str, Any]], profile: dict[str, int],
                teacher: Backend, decontam: Decontaminator, config: STATConfig,
                seen: list[str] | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """STAT-Syn's `(SFT records, written problems)`: one SFT record per agreeing solution.
    `problems` is the training pool; written problems must not near-duplicate it nor `seen`
    (the diagnosis set's questions)."""
    by_id = {p.id: p for p in problems}
    tasks = syn_tasks(profile, data_size(config.syn_size, problems), problems, labels, config.syn_references,
                      run.seed)
    pool = NearDuplicates(config.near_duplicate_rouge_l, [p.question for p in problems] + (seen or []))  # per unit a copy
    works = run.map("syn", tasks, config.chunk_size,
                    lambda unit: _write_and_solve(unit, by_id, pool, teacher, decontam, config),
                    key=lambda t: f"{t.id}|{t.skill}|{','.join(t.references)}")
    written = records(works, "problems")

    def dedupe(unit: Unit) -> Work:
        """Units dropped near-duplicates of the input; two units can still write near-identical
        problems: the first (in task order) is kept."""
        counts: Counter = Counter()
        kept = drop_near_duplicates(written, NearDuplicates(config.near_duplicate_rouge_l), counts)
        return Work(records={"problems": kept}, counts=counts)

    synthetic = run.once("syn_dedupe", dedupe, depends_on=written).records["problems"]
    sft = []
    for record in synthetic:
        for i, solution in enumerate(record.pop("solutions"), start=1):
            sft.append(sft_record(f"{record['id']}-sol{i}", record["question"], solution, config, origin="syn",
                                   skill=record["meta"]["skill"], problem_id=record["id"], answer=record["answer"],
                                   source=record["source"]))
    return sft, synthetic


def _write_and_solve(unit: Unit, by_id: dict[str, Problem], pool: NearDuplicates, teacher: Backend,
                     decontam: Decontaminator, config: STATConfig) -> Work:
    """Write this unit's problems, drop unusable ones (empty, contaminated, near-duplicates of
    the input or of each other), then solve the rest `syn_solutions` times and keep those whose
    answers agree."""
    tasks: tuple[SynTask, ...] = unit.items
    counts: Counter = Counter()
    prompts = [[{"role": "user", "content": render(config.synthesize_template, skill=t.skill,
                                                   references=[by_id[r].question for r in t.references])}]
               for t in tasks]
    outs = teacher.generate(prompts, 1, SamplingConfig(temperature=config.syn_temperature, top_p=config.top_p,
                                                       max_new_tokens=config.list_max_new_tokens, seed=unit.seed))
    candidates = []
    seen = pool.copy()
    for task, gens in zip(tasks, outs):
        question = parse_problem(gens[0].completion)
        counts["syn/written"] += 1
        if question is None:
            counts["rejected/syn_empty_problem"] += 1
            continue
        if not admit(question, decontam, seen, counts):
            continue
        candidates.append((task, question))
    solutions = teacher.generate([solve_prompt(q, config) for _, q in candidates], config.syn_solutions,
                                 sampled(config, config.solve_temperature, derive_seed(unit.seed, "solve")))
    records = []
    for (task, question), gens in zip(candidates, solutions):
        answer, agreeing = agreeing_solutions([g.completion for g in gens], task.benchmark, config.syn_min_agree)
        if answer is None:
            counts["rejected/syn_no_agreement"] += 1
            continue
        counts["syn/kept"] += 1
        source = task.benchmark if task.benchmark in ("gsm8k", "math500") else "stat-syn"
        records.append({"id": task.id, "question": question, "answer": answer, "source": source,
                        "solution": agreeing[0],
                        "meta": {"skill": task.skill, "references": list(task.references),
                                 "benchmark": task.benchmark, "agreement": len(agreeing)},
                        "solutions": agreeing})
    return Work(records={"problems": records}, counts=counts)


def agreeing_solutions(completions: list[str], benchmark: str, min_agree: int) -> tuple[str | None, list[str]]:
    """(the majority answer, the solutions giving it) when at least `min_agree` solutions agree
    (grouped by verified equivalence, `answer_groups`; ties to the answer seen first), else
    (None, [])."""
    answers = [extract_answer(c, benchmark)[0] for c in completions]
    groups = answer_groups(answers, benchmark)
    votes = Counter(g for g in groups if g is not None)
    if not votes:
        return None, []
    top = max(votes.values())
    winner = next(g for g in groups if g is not None and votes[g] == top)
    if top < min_agree:
        return None, []
    return answers[winner], [c for c, g in zip(completions, groups) if g == winner]


def _slug(name: str) -> str:
    return skill_key(name).replace(" ", "-")[:40] or "skill"
