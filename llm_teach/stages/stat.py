"""STAT, skill-targeted adaptive training (Skill-Targeted Adaptive Training, 2025).

Instead of more data of every kind, the student gets data for the skills it lacks:

1. Skills. The teacher reads a sample of the task's problems and proposes a list of skills
   (or the user gives one with `skills_file`); the list is parsed from JSON or numbered /
   bulleted lines, deduplicated and capped. The teacher then labels every problem with up to
   5 skills of that list (names not on the list are dropped).
2. Difficult problems. The student answers each problem K times (sampled). A problem is
   difficult when the student gets it wrong (majority vote of the K answers, or one extra
   greedy answer) or when fewer than 2 of the K answers agree (the paper's consistency rule).
3. Missing-Skill-Profile. For each difficult problem the teacher reads the student's response
   next to the gold answer (and reference solution when known) and names the skills from the
   list the student is missing; the counts per skill are the profile.
4. Training data, in proportion to the profile (largest-remainder quotas, seeded sampling):
   - STAT-Sel: existing problems labelled with each missing skill. Their worked solution is
     the target; problems without one are solved by the teacher (graded against the gold
     answer, first correct of `solve_attempts` kept).
   - STAT-Syn: the teacher writes new problems for each missing skill from reference problems
     (difficult problems missing that skill first), solves each 3 times, and keeps a problem
     only when at least 2 answers agree (grouped by `answer_key`, so "1,000" and "1000.0"
     agree), with only the agreeing solutions.

Outputs in OUT: `skills.json`, `labels.jsonl`, `answers.jsonl` (the student's graded answers
and the difficulty verdicts), `missing.jsonl` (the teacher's judgements), `profile.json`,
`synthetic.jsonl` (STAT-Syn problems, Problem records), `sft.jsonl` (`{messages}` SFT records
for `llm-teach train --method sft`) and `manifest.json`.

Not implemented: the paper also allows a process reward model to flag difficult problems
(low step rewards); that would be a backend plug-in scoring the student's responses and is
left for later. STAT-Syn problems are also checked against evaluation sets (n-gram overlap
with GSM8K test, MATH-500 and `--decontaminate` files) and for ROUGE-L near-duplicates of the
input and of each other; the paper describes neither filter.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from llm_teach.backends import Backend, SamplingConfig
from llm_teach.data.decontam import DecontamConfig, Decontaminator, NearDuplicates, admit, drop_near_duplicates
from llm_teach.data.jsonl import write_json_atomic
from llm_teach.data.problems import Problem, grading_benchmark
from llm_teach.errors import UserError
from llm_teach.evaluation import majority_vote
from llm_teach.grading import answer_key, extract_answer, grade, last_boxed
from llm_teach.runs.hashing import file_hash
from llm_teach.prompts import render
from llm_teach.runs.hashing import content_hash, derive_seed, ids_digest
from llm_teach.runs.stage_run import StageRun, Unit, Work, records
from llm_teach.stages.roles import Models
from llm_teach.stages.parsing import parse_problem

MAX_SKILL_CHARS = 80  # a "skill" longer than this is a sentence, not a name
MAX_SKILL_WORDS = 12


@dataclass
class STATConfig:
    """Settings of the STAT stage (paper defaults noted where the paper gives one)."""

    # sel: reuse existing problems; syn: teacher-written problems; both: the union of the two
    # (the paper evaluates STAT-Sel and STAT-Syn separately).
    mode: Literal["sel", "syn", "both"] = "both"
    # A skill list to use instead of asking the teacher: a JSON list (or {"skills": [...]}), or
    # one skill per line (bullets and numbering allowed).
    skills_file: str | None = None
    skill_sample: int = 32  # problems the teacher reads to propose the skill list (seeded sample)
    max_skills: int = 30  # cap on the skill list (the teacher is asked for at most this many)
    max_labels: int = 5  # skills per problem label (paper: up to 5)
    max_missing: int = 3  # missing skills the teacher may name per difficult problem
    student_samples: int = 4  # K: student answers per problem
    student_temperature: float = 0.7  # sampling temperature of the K answers (they must be able to disagree)
    # "wrong" means: the majority vote of the K answers is wrong, or one extra greedy answer is.
    correctness: Literal["majority", "greedy"] = "majority"
    # Consistency rule: difficult when fewer than this many of the K answers agree (paper: 2; 0 = off).
    min_agreement: int = 2
    sel_size: int | None = None  # STAT-Sel problems to select (None = as many as the input problems)
    syn_size: int | None = None  # STAT-Syn problems to write before filtering (None = as many as the input)
    syn_references: int = 3  # reference problems shown to the teacher per written problem
    syn_solutions: int = 3  # teacher solutions per written problem (paper: 3)
    syn_min_agree: int = 2  # keep a written problem when at least this many solutions agree (paper: 2)
    # Drop written problems at least this ROUGE-L-similar to the input or to each other
    # (Self-Instruct's 0.7; the paper describes no such filter).
    near_duplicate_rouge_l: float = 0.7
    # Evaluation sets written problems must not overlap (word n-grams); `--decontaminate` adds files.
    decontamination: DecontamConfig = field(default_factory=DecontamConfig)
    syn_temperature: float = 1.0  # sampling temperature when writing problems (diversity)
    solve_temperature: float = 0.7  # sampling temperature of teacher solutions (they must be independent)
    solve_attempts: int = 3  # STAT-Sel: teacher attempts at a selected problem without a worked solution
    top_p: float = 1.0  # nucleus sampling for every sampled call
    max_new_tokens: int = 512  # budget of student answers and teacher solutions
    list_max_new_tokens: int = 256  # budget of skill lists, labels, judgements and written problems
    chunk_size: int = 8  # items per work unit (the most a killed run redoes)
    seed: int = 0  # base seed; units, quotas and samples derive theirs from it
    # How problems are posed to student and teacher, and the SFT user turn (the evaluation prompt).
    solve_template: str = "eval/boxed.jinja"
    skills_template: str = "stat/skills.jinja"  # teacher proposes the skill list
    label_template: str = "stat/label.jinja"  # teacher labels a problem with skills
    judge_template: str = "stat/judge.jinja"  # teacher names the skills a student response is missing
    synthesize_template: str = "stat/synthesize.jinja"  # teacher writes a new problem for a skill

    def __post_init__(self) -> None:
        if self.student_samples < 1 or self.syn_solutions < 1 or self.solve_attempts < 1:
            raise ValueError("student_samples, syn_solutions and solve_attempts must be at least 1")
        if self.min_agreement > self.student_samples:
            raise ValueError(f"min_agreement ({self.min_agreement}) cannot exceed student_samples "
                             f"({self.student_samples}): every problem would be difficult")
        if not 1 <= self.syn_min_agree <= self.syn_solutions:
            raise ValueError("syn_min_agree must be between 1 and syn_solutions")
        if min(self.max_skills, self.max_labels, self.max_missing, self.skill_sample, self.syn_references) < 1:
            raise ValueError("max_skills, max_labels, max_missing, skill_sample and syn_references "
                             "must be at least 1")
        for name in ("sel_size", "syn_size"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")


def stat(problems: list[Problem], models: Models, config: STATConfig, out: str | Path) -> dict[str, Any]:
    """Run STAT over `problems`; write the skill list, labels, profile and SFT records under
    `out`. Returns the manifest."""
    if not problems:
        raise UserError("stat: no problems")
    out = Path(out)
    inputs: dict[str, Any] = {"problems": len(problems),
                              "problem_ids": ids_digest([p.id for p in problems])}
    if config.skills_file:
        if not Path(config.skills_file).is_file():
            raise UserError(f"{config.skills_file}: skills file not found")
        inputs["skills_file"] = file_hash(config.skills_file)
    templates = [config.solve_template, config.label_template, config.judge_template]
    templates += [] if config.skills_file else [config.skills_template]
    templates += [config.synthesize_template] if config.mode != "sel" else []
    run = StageRun(out, "stat", config, models, templates=templates, inputs=inputs)
    decontam, decontam_report = (Decontaminator.from_config(config.decontamination) if config.mode != "sel"
                                 else (None, {}))
    teacher = run.backend(models.teacher_backend, "teacher")
    student = run.backend(models.student_backend, "student")
    by_id = {p.id: p for p in problems}

    rng = random.Random(derive_seed(run.seed, "skill-sample"))
    sample = rng.sample(problems, min(config.skill_sample, len(problems)))
    skills_work = run.once("skills", lambda unit: _propose_skills(unit, sample, teacher, config),
                           depends_on=[inputs.get("skills_file"), [p.id for p in sample]])
    skills = [r["name"] for r in skills_work.records["skills"]]
    # Units of later steps hash what they depend on (the skill list, the judged response), so a
    # re-run over changed inputs redoes them instead of reusing stale results.
    skills_key = content_hash(skills)
    labels = records(run.map("labels", problems, config.chunk_size,
                             lambda unit: _label(unit, skills, teacher, config),
                             key=lambda p: f"{p.id}|{skills_key}"), "labels")
    answers = records(run.map("answers", problems, config.chunk_size,
                              lambda unit: _answer(unit, student, config)), "answers")
    difficult = [by_id[a["id"]] for a in answers if a["difficult"]]
    responses = {a["id"]: a["completions"][a["shown"]] for a in answers if a["difficult"]}
    missing = records(run.map("judge", difficult, config.chunk_size,
                              lambda unit: _judge(unit, skills, responses, teacher, config),
                              key=lambda p: f"{p.id}|{skills_key}|{content_hash(responses[p.id])}"), "missing")
    profile = skill_profile(missing, skills)

    sft: list[dict[str, Any]] = []
    synthetic: list[dict[str, Any]] = []
    if config.mode in ("sel", "both"):
        sft += _sel(run, problems, labels, profile, teacher, config)
    if config.mode in ("syn", "both"):
        syn_sft, synthetic = _syn(run, problems, labels, missing, profile, teacher, decontam, config)
        sft += syn_sft

    write_json_atomic(out / "skills.json", {"skills": skills, "source": "file" if config.skills_file else "teacher",
                                            "raw": skills_work.records["raw"][0]["text"]})
    write_json_atomic(out / "profile.json", {
        "skills": profile, "problems": len(problems), "difficult": len(difficult),
        "judged_without_skill": sum(1 for m in missing if not m["missing"]),
        "sel_quota": allocate(profile, _size(config.sel_size, problems)) if config.mode != "syn" else {},
        "syn_quota": allocate(profile, _size(config.syn_size, problems)) if config.mode != "sel" else {},
    })
    return run.finish({"labels.jsonl": labels, "answers.jsonl": answers, "missing.jsonl": missing,
                       "synthetic.jsonl": synthetic, "sft.jsonl": sft},
                      files=["skills.json", "profile.json"], decontamination=decontam_report,
                      summary={"problems": len(problems), "skills": len(skills), "difficult": len(difficult),
                               "missing_skills": len(profile), "sft_records": len(sft),
                               "sel_records": sum(r["origin"] == "sel" for r in sft),
                               "syn_records": sum(r["origin"] == "syn" for r in sft),
                               "syn_problems": len(synthetic)})


# -- step 1: the skill list and the labels ------------------------------------------------------


def _propose_skills(unit: Unit, sample: list[Problem], teacher: Backend, config: STATConfig) -> Work:
    counts: Counter = Counter()
    if config.skills_file:
        text = Path(config.skills_file).read_text(encoding="utf-8")
        names = parse_skill_file(text)
    else:
        prompt = [{"role": "user", "content": render(config.skills_template, problems=[p.question for p in sample],
                                                     max_skills=config.max_skills)}]
        text = teacher.generate([prompt], 1, _greedy(config.list_max_new_tokens, unit.seed))[0][0].completion
        names = parse_name_list(text)
    skills = dedupe_skills(names)[: config.max_skills]
    counts["skills/proposed"] += len(names)
    counts["skills/kept"] += len(skills)
    if not skills:
        counts["skills/none_parsed"] += 1
    return Work(records={"skills": [{"id": s, "name": s} for s in skills], "raw": [{"id": "raw", "text": text}]},
                counts=counts)


def _label(unit: Unit, skills: list[str], teacher: Backend, config: STATConfig) -> Work:
    problems: tuple[Problem, ...] = unit.items
    counts: Counter = Counter()
    if not skills:
        counts["labels/unlabelled"] += len(problems)
        return Work(records={"labels": [{"id": p.id, "skills": [], "unknown": []} for p in problems]}, counts=counts)
    prompts = [[{"role": "user", "content": render(config.label_template, skills=skills, question=p.question,
                                                   max_labels=config.max_labels)}] for p in problems]
    outs = teacher.generate(prompts, 1, _greedy(config.list_max_new_tokens, unit.seed))
    records = []
    for problem, gens in zip(problems, outs):
        matched, unknown = match_skills(parse_name_list(gens[0].completion, loose=True), skills, config.max_labels)
        counts["labels/unlabelled" if not matched else "labels/labelled"] += 1
        counts["labels/unknown_names"] += len(unknown)
        records.append({"id": problem.id, "skills": matched, "unknown": unknown})
    return Work(records={"labels": records}, counts=counts)


# -- step 2: difficult problems -----------------------------------------------------------------


def _answer(unit: Unit, student: Backend, config: STATConfig) -> Work:
    problems: tuple[Problem, ...] = unit.items
    counts: Counter = Counter()
    prompts = [solve_prompt(p.question, config) for p in problems]
    sampled = student.generate(prompts, config.student_samples, SamplingConfig(
        temperature=config.student_temperature, top_p=config.top_p, max_new_tokens=config.max_new_tokens,
        seed=unit.seed))
    greedy = (student.generate(prompts, 1, _greedy(config.max_new_tokens, derive_seed(unit.seed, "greedy")))
              if config.correctness == "greedy" else [[] for _ in problems])
    records = []
    for problem, gens, extra in zip(problems, sampled, greedy):
        benchmark = grading_benchmark(problem.source)
        completions = [g.completion for g in gens] + [g.completion for g in extra]
        grades = [grade(c, problem.answer, benchmark, problem.meta) for c in completions]
        item = {"answers": [g.extracted for g in grades], "correct": [g.correct for g in grades]}
        k = config.student_samples
        sample_item = {"answers": item["answers"][:k], "correct": item["correct"][:k]}
        majority, agreement = majority_vote(sample_item["answers"], benchmark)
        correct = (grades[k].correct if config.correctness == "greedy"
                   else majority is not None and bool(sample_item["correct"][majority]))
        difficult, reason = is_difficult(correct, agreement, config.min_agreement)
        counts[f"answers/{reason}"] += 1
        records.append({"id": problem.id, "gold": problem.answer, "completions": completions, **item,
                        "decided_correct": correct, "agreement": agreement, "difficult": difficult,
                        "reason": reason, "shown": shown_response(grades, k, config.correctness, benchmark)})
    return Work(records={"answers": records}, counts=counts)


def is_difficult(correct: bool, agreement: int, min_agreement: int) -> tuple[bool, str]:
    """(difficult?, reason): wrong first, then the consistency rule (fewer than `min_agreement`
    of the K answers agree, even if the vote happened to land on the right answer)."""
    if not correct:
        return True, "wrong"
    if min_agreement and agreement < min_agreement:
        return True, "inconsistent"
    return False, "solved"


def shown_response(grades: list, k: int, correctness: str, benchmark: str) -> int:
    """Which response the teacher judges: the greedy one under the greedy rule when wrong, else
    a sampled response with the most common wrong answer (an answered mistake says more about
    a missing skill than a response that never reaches an answer), else the first wrong one,
    else the first response."""
    if correctness == "greedy" and not grades[k].correct:
        return k
    wrong = [i for i in range(k) if not grades[i].correct]
    answered = [i for i in wrong if grades[i].extracted is not None]
    if answered:
        keys = {i: answer_key(grades[i].extracted, benchmark) for i in answered}
        votes = Counter(keys.values())
        top = max(votes.values())
        return next(i for i in answered if votes[keys[i]] == top)
    return wrong[0] if wrong else 0


# -- step 3: the Missing-Skill-Profile ----------------------------------------------------------


def _judge(unit: Unit, skills: list[str], responses: dict[str, str], teacher: Backend, config: STATConfig) -> Work:
    problems: tuple[Problem, ...] = unit.items
    counts: Counter = Counter({"judge/problems": len(problems)})
    if not skills:
        counts["missing/no_skill"] += len(problems)
        return Work(records={"missing": [{"id": p.id, "missing": [], "unknown": []} for p in problems]}, counts=counts)
    prompts = [[{"role": "user", "content": render(
        config.judge_template, skills=skills, question=p.question, answer=p.answer, solution=p.solution or "",
        response=responses[p.id], max_missing=config.max_missing)}] for p in problems]
    outs = teacher.generate(prompts, 1, _greedy(config.list_max_new_tokens, unit.seed))
    records = []
    for problem, gens in zip(problems, outs):
        matched, unknown = match_skills(parse_name_list(gens[0].completion, loose=True), skills, config.max_missing)
        counts["missing/no_skill" if not matched else "missing/named"] += 1
        counts["missing/unknown_names"] += len(unknown)
        records.append({"id": problem.id, "missing": matched, "unknown": unknown})
    return Work(records={"missing": records}, counts=counts)


def skill_profile(missing: list[dict[str, Any]], skills: list[str]) -> dict[str, int]:
    """Counts per missing skill, most common first (ties in skill-list order)."""
    counts = Counter(s for m in missing for s in m["missing"])
    order = {s: i for i, s in enumerate(skills)}
    return {s: counts[s] for s in sorted(counts, key=lambda s: (-counts[s], order.get(s, len(order))))}


def allocate(profile: dict[str, int], total: int) -> dict[str, int]:
    """Split `total` items over skills in proportion to the profile (largest remainder; exact
    fractions, ties to the more frequent, then earlier, skill). Skills with quota 0 are left out."""
    weight = sum(profile.values())
    if total <= 0 or weight == 0:
        return {}
    exact = {s: Fraction(total * c, weight) for s, c in profile.items()}
    quota = {s: int(e) for s, e in exact.items()}
    order = list(profile)
    by_remainder = sorted(order, key=lambda s: (-(exact[s] - quota[s]), -profile[s], order.index(s)))
    for s in by_remainder[: total - sum(quota.values())]:
        quota[s] += 1
    return {s: q for s, q in quota.items() if q > 0}


# -- step 4a: STAT-Sel --------------------------------------------------------------------------


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


def solution_target(problem: Problem) -> str | None:
    """The dataset's worked solution as an SFT target ending in `\\boxed{}` (what evaluation
    extracts), or None when there is none. GSM8K's `#### N` becomes a boxed answer and its
    calculator annotations `<<48/2=24>>` are removed."""
    solution = (problem.solution or "").strip()
    if not solution:
        return None
    if last_boxed(solution) is not None:
        return solution
    if "####" in solution:
        body, answer = solution.rsplit("####", 1)
        body = re.sub(r"<<[^<>]*>>", "", body).strip()
        return f"{body}\n\nThe final answer is \\boxed{{{answer.strip()}}}."
    return f"{solution}\n\nThe final answer is \\boxed{{{problem.answer}}}."


def _sel(run: StageRun, problems: list[Problem], labels: list[dict[str, Any]], profile: dict[str, int],
         teacher: Backend, config: STATConfig) -> list[dict[str, Any]]:
    by_id = {p.id: p for p in problems}
    picks, pick_counts = select(profile, labels, _size(config.sel_size, problems), run.seed)
    order = {p.id: i for i, p in enumerate(problems)}
    need = sorted({pid for pid, _ in picks if solution_target(by_id[pid]) is None}, key=order.__getitem__)
    solved = records(run.map("sel_solve", [by_id[pid] for pid in need], config.chunk_size,
                             lambda unit: _solve_gold(unit, teacher, config)), "solutions")
    targets = {r["id"]: r["solution"] for r in solved}

    def assemble(unit: Unit) -> Work:
        counts, records, seen = Counter(pick_counts), [], Counter()
        counts["sel/picked"] += len(picks)
        for pid, skill in picks:
            problem = by_id[pid]
            target = solution_target(problem) or targets.get(pid)
            if target is None:
                counts["rejected/sel_no_correct_solution"] += 1
                continue
            seen[pid] += 1
            records.append(_sft_record(f"sel-{pid}-{seen[pid]}", problem.question, target, config, origin="sel",
                                       skill=skill, problem_id=pid, answer=problem.answer, source=problem.source))
        return Work(records={"sft": records}, counts=counts)

    return run.once("sel", assemble, depends_on=[picks, targets]).records["sft"]


def _solve_gold(unit: Unit, teacher: Backend, config: STATConfig) -> Work:
    """Teacher solutions for selected problems that have no worked solution; the first one
    graded correct against the gold answer is kept."""
    problems: tuple[Problem, ...] = unit.items
    counts: Counter = Counter()
    outs = teacher.generate([solve_prompt(p.question, config) for p in problems], config.solve_attempts,
                            _sampled(config, config.solve_temperature, unit.seed))
    records = []
    for problem, gens in zip(problems, outs):
        benchmark = grading_benchmark(problem.source)
        good = next((g.completion for g in gens
                     if grade(g.completion, problem.answer, benchmark, problem.meta).correct), None)
        counts["sel/teacher_solved" if good else "sel/teacher_failed"] += 1
        if good:
            records.append({"id": problem.id, "solution": good})
    return Work(records={"solutions": records}, counts=counts)


# -- step 4b: STAT-Syn --------------------------------------------------------------------------


@dataclass(frozen=True)
class SynTask:
    """One problem to write: `index`-th of `skill`'s quota, modelled on `references`."""

    id: str
    skill: str
    references: tuple[str, ...]  # problem ids
    benchmark: str  # how answers to the new problem are extracted and grouped


def syn_tasks(profile: dict[str, int], total: int, problems: list[Problem], labels: list[dict[str, Any]],
              missing: list[dict[str, Any]], n_refs: int, seed: int) -> list[SynTask]:
    """The problems to write, fixed before any is written. References for a skill come first
    from difficult problems missing it, then from problems labelled with it, then from any
    problem (seeded per task, so each task sees its own examples)."""
    by_id = {p.id: p for p in problems}
    tasks = []
    for skill, quota in allocate(profile, total).items():
        lacking = [m["id"] for m in missing if skill in m["missing"]]
        labelled = [r["id"] for r in labels if skill in r["skills"] and r["id"] not in lacking]
        rest = [p.id for p in problems if p.id not in lacking and p.id not in labelled]
        for index in range(quota):
            rng = random.Random(derive_seed(seed, f"syn-refs/{skill}/{index}"))
            refs: list[str] = []
            for tier in (lacking, labelled, rest):
                room = n_refs - len(refs)
                if room > 0:
                    refs += rng.sample(tier, min(room, len(tier)))
            tasks.append(SynTask(f"syn-{_slug(skill)}-{index}", skill, tuple(refs),
                                 grading_benchmark(by_id[refs[0]].source)))
    return tasks


def _syn(run: StageRun, problems: list[Problem], labels: list[dict[str, Any]], missing: list[dict[str, Any]],
         profile: dict[str, int], teacher: Backend, decontam: Decontaminator,
         config: STATConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    by_id = {p.id: p for p in problems}
    tasks = syn_tasks(profile, _size(config.syn_size, problems), problems, labels, missing,
                      config.syn_references, run.seed)
    pool = NearDuplicates(config.near_duplicate_rouge_l, [p.question for p in problems])  # copied per unit
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
            sft.append(_sft_record(f"{record['id']}-sol{i}", record["question"], solution, config, origin="syn",
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
                                 _sampled(config, config.solve_temperature, derive_seed(unit.seed, "solve")))
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
    (grouped by `answer_key`; ties to the answer seen first), else (None, [])."""
    answers = [extract_answer(c, benchmark)[0] for c in completions]
    index, votes = majority_vote(answers, benchmark)
    if index is None or votes < min_agree:
        return None, []
    winner = answer_key(answers[index], benchmark)
    return answers[index], [c for c, a in zip(completions, answers)
                            if a is not None and answer_key(a, benchmark) == winner]


# -- parsing model text -------------------------------------------------------------------------

_JSON_LIST = re.compile(r"\[[^\[\]]*\]", re.S)
_BULLET = re.compile(r"^\s*(?:\d{1,3}\s*[.):]|[-*\u2022+])\s+(.+?)\s*$")


def parse_name_list(text: str, loose: bool = False) -> list[str]:
    """Names from model text: the first JSON list of strings (or of {"name"/"skill": ...}), else
    numbered or bulleted lines. `loose` (for picking names from a known list) also accepts
    comma-, semicolon- or line-separated names. Never evaluates the text."""
    for match in _JSON_LIST.finditer(text or ""):
        try:
            value = json.loads(match.group(0))
        except json.JSONDecodeError:
            continue
        names = [_list_item(v) for v in value]
        names = [n for n in names if n]
        if names:
            return names
    names = [_clean_name(m.group(1)) for line in (text or "").splitlines() if (m := _BULLET.match(line))]
    names = [n for n in names if n]
    if names or not loose:
        return names
    parts = re.split(r"[,;\n]", text or "")
    return [n for n in (_clean_name(p) for p in parts) if n]


def parse_skill_file(text: str) -> list[str]:
    """A user's skill list: JSON (a list, or {"skills": [...]}) or one skill per line (bullets
    and numbering allowed; blank lines and `#` comments ignored)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if isinstance(value, dict):
        value = value.get("skills")
    if isinstance(value, list):
        return [n for n in (_list_item(v) for v in value) if n]
    names = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _BULLET.match(line)
        name = _clean_name(m.group(1) if m else line)
        if name:
            names.append(name)
    return names


def dedupe_skills(names: list[str]) -> list[str]:
    """Drop repeats that differ only in case, spacing or punctuation (first spelling kept)."""
    seen, out = set(), []
    for name in names:
        key = skill_key(name)
        if key and key not in seen:
            seen.add(key)
            out.append(name)
    return out


def match_skills(names: list[str], skills: list[str], limit: int) -> tuple[list[str], list[str]]:
    """(names found in `skills`, spelled as in the list, deduplicated, at most `limit`;
    names not on the list)."""
    canonical = {skill_key(s): s for s in skills}
    matched, unknown = [], []
    for name in names:
        skill = canonical.get(skill_key(name))
        if skill is None:
            unknown.append(name)
        elif skill not in matched and len(matched) < limit:
            matched.append(skill)
    return matched, unknown


def skill_key(name: str) -> str:
    return " ".join(re.sub(r"[^0-9a-z]+", " ", name.casefold()).split())



def _list_item(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("name", value.get("skill", ""))
    return _clean_name(value) if isinstance(value, str) else ""


def _clean_name(raw: str) -> str:
    """"**Adding fractions**: combining ..." -> "Adding fractions"; too long -> ""."""
    name = re.sub(r"[*`_\"]+", " ", raw).strip()
    name = re.split(r"\s*:\s+|\s+[-\u2013\u2014]\s+", name, maxsplit=1)[0]
    name = " ".join(name.split()).strip(" .,;'")
    if not name or len(name) > MAX_SKILL_CHARS or len(name.split()) > MAX_SKILL_WORDS:
        return ""
    return name


# -- small helpers ------------------------------------------------------------------------------


def solve_prompt(question: str, config: STATConfig) -> list[dict[str, str]]:
    """How a problem is posed: the evaluation prompt, so SFT trains the student in the context
    it is tested in."""
    return [{"role": "user", "content": render(config.solve_template, question=question)}]


def _sft_record(rid: str, question: str, solution: str, config: STATConfig, **extra: Any) -> dict[str, Any]:
    return {"id": rid, "messages": [*solve_prompt(question, config), {"role": "assistant", "content": solution}],
            **extra}


def _size(value: int | None, problems: list[Problem]) -> int:
    return len(problems) if value is None else value


def _greedy(max_new_tokens: int, seed: int) -> SamplingConfig:
    return SamplingConfig(temperature=0.0, max_new_tokens=max_new_tokens, seed=seed)


def _sampled(config: STATConfig, temperature: float, seed: int) -> SamplingConfig:
    return SamplingConfig(temperature=temperature, top_p=config.top_p, max_new_tokens=config.max_new_tokens, seed=seed)


def _slug(name: str) -> str:
    return skill_key(name).replace(" ", "-")[:40] or "skill"

