"""STAT, skill-targeted adaptive training (Skill-Targeted Adaptive Training, 2025).

Instead of more data of every kind, the student gets data for the skills it lacks:

1. Skills. A catalog (`stat_catalog`, following Didolkar et al. 2024, which STAT builds on):
   the teacher names the skills of every problem (or `catalog_sample` of them) in its own
   words, near-identical names are merged, and the teacher clusters the names into a catalog
   of at most `max_skills` (about 117 for MATH in that work); or the user gives one with
   `skills_file`. The teacher then labels every problem with up to 5 skills of the catalog
   (names not on it are dropped), and judgements (step 3) are constrained to it too.
2. Difficult problems, on the diagnosis set (`stat_diagnose`: `--diagnose SOURCE`, default a
   held-out split of the input; never part of the pool below). The student answers each K
   times (sampled). A problem is
   difficult when the student gets it wrong (majority vote of the K answers, or one extra
   greedy answer) or when fewer than 2 of the K answers agree (the paper's consistency rule).
3. Missing-Skill-Profile. For each difficult problem the teacher reads the student's response
   next to the gold answer (and reference solution when known) and names the skills from the
   list the student is missing; the counts per skill are the profile.
4. Training data, in proportion to the profile (largest-remainder quotas, seeded sampling):
   - STAT-Sel: existing problems of the training pool labelled with each missing skill. Their worked solution is
     the target; problems without one are solved by the teacher (graded against the gold
     answer, first correct of `solve_attempts` kept).
   - STAT-Syn: the teacher writes new problems for each missing skill from reference problems
     of the training pool (labelled with that skill first), solves each 3 times, and keeps a problem
     only when at least 2 answers agree (grouped by verified equivalence, `answer_groups`, so
     "1,000" and "1000.0", `\\sqrt2` and `\\sqrt{2}` agree), with only the agreeing solutions.

Outputs in OUT: `skills.json` (the catalog, the clustering reply, every merged free-form name
with its count), `free_labels.jsonl`, `labels.jsonl`, `answers.jsonl` (the student's graded answers
and the difficulty verdicts), `missing.jsonl` (the teacher's judgements), `profile.json`,
`synthetic.jsonl` (STAT-Syn problems, Problem records), `sft.jsonl` (`{messages}` SFT records
for `llm-teach train --method sft`) and `manifest.json`.

Which source each rule follows: the catalog, labels of every problem and clustering follow
Didolkar et al. 2024 (which the paper cites for them); the diagnosis set held out of the training
pool, 2-3 missing skills per difficult question, reference problems from the training set, 3
solutions per written problem kept at a consistency of 2 follow the STAT README; K sampled answers
with the 2-agree consistency rule follow the paper (which also uses a process reward model, see
below); Sel and Syn are separate variants in the paper (`mode`; `both` is ours and matches
neither); largest-remainder quotas, graded answers and seeded sampling are ours.

Not implemented: the paper also allows a process reward model to flag difficult problems
(low step rewards); that would be a backend plug-in scoring the student's responses and is
left for later. STAT-Syn problems are also checked against evaluation sets (n-gram overlap
with GSM8K test, MATH-500 and `--decontaminate` files) and for ROUGE-L near-duplicates of the
input and of each other; the paper describes neither filter.

Where the pieces live: steps 1-3 and the stage function here; the profile's quotas in
`stat_profile`, step 4 in `stat_sel` and `stat_syn`, how problems are posed in `stat_prompts`,
and the reading of skill lists in `parsing`.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, NamedTuple

from llm_teach.backends import Backend, SamplingConfig, top_p_option
from llm_teach.config import FieldError, check_fields, option
from llm_teach.data.decontam import DecontamConfig, Decontaminator, decontamination_option, near_duplicate_option
from llm_teach.data.jsonl import read_text, write_json_atomic
from llm_teach.data.problems import Problem, grading_benchmark
from llm_teach.errors import UserError
from llm_teach.grading import grade
from llm_teach.grading.voting import answer_groups, majority_vote
from llm_teach.prompts import render
from llm_teach.runs.hashing import content_hash, derive_seed, file_hash, ids_digest
from llm_teach.runs.stage_run import StageRun, Unit, Work, chunk_size_option, records, seed_option
from llm_teach.stages.parsing import dedupe_skills, match_skills, parse_name_list, parse_skill_file
from llm_teach.stages.stat_catalog import cluster, free_labels, merge_names
from llm_teach.stages.stat_diagnose import diagnosis_split
from llm_teach.stages.roles import Models
from llm_teach.stages.stat_profile import allocate, data_size, skill_profile
from llm_teach.stages.stat_prompts import solve_prompt
from llm_teach.stages.stat_sel import sel_records
from llm_teach.stages.stat_syn import syn_records


@dataclass
class STATConfig:
    """Settings of the STAT stage (paper defaults noted where the paper gives one)."""

    diagnose: str | None = option(
        "Problem source of the diagnosis set (`--diagnose SOURCE`; a hub name gives its train split): where "
        "difficult problems are found. None = a held-out `diagnose_fraction` of the input. Never overlaps the "
        "Sel pool and Syn references.", None)
    diagnose_fraction: float = option("Held-out share of the input diagnosed when `diagnose` is None.", 0.2)
    mode: Literal["sel", "syn", "both"] = option(
        "sel: reuse existing problems; syn: teacher-written problems; both: the union of the two (the paper "
        "evaluates STAT-Sel and STAT-Syn separately).", "both")
    skills_file: str | None = option(
        "A skill list to use instead of asking the teacher: a JSON list (or {\"skills\": [...]}), or one skill "
        "per line (bullets and numbering allowed).", None)
    catalog_sample: int | None = option(
        "Problems labelled free-form to build the skill catalog (seeded sample; None = all of them).", None)
    catalog_max_names: int = option(
        "Merged free-form names shown to the teacher when it clusters them (most frequent first).", 400)
    catalog_max_new_tokens: int = option("Budget of the teacher's catalog (a long list).", 2048)
    max_skills: int = option(
        "Cap on the skill catalog (the teacher is asked for at most this many; Didolkar et al.: ~117 for MATH).", 30)
    max_labels: int = option("Skills per problem label (paper: up to 5).", 5)
    max_missing: int = option("Missing skills the teacher may name per difficult problem.", 3)
    student_samples: int = option("K: student answers per problem.", 4)
    student_temperature: float = option("Sampling temperature of the K answers (they must be able to disagree).", 0.7)
    correctness: Literal["majority", "greedy"] = option(
        "When an answer counts as wrong: the majority vote of the K answers is wrong, or one extra greedy "
        "answer is.", "majority")
    min_agreement: int = option(
        "Consistency rule: difficult when fewer than this many of the K answers agree (paper: 2; 0 = off).", 2)
    sel_size: int | None = option("STAT-Sel problems to select (None = as many as the input problems).", None)
    syn_size: int | None = option("STAT-Syn problems to write before filtering (None = as many as the input).", None)
    syn_references: int = option("Reference problems shown to the teacher per written problem.", 3)
    syn_solutions: int = option("Teacher solutions per written problem (paper: 3).", 3)
    syn_min_agree: int = option("Keep a written problem when at least this many solutions agree (paper: 2).", 2)
    near_duplicate_rouge_l: float = near_duplicate_option("written problems")
    decontamination: DecontamConfig = decontamination_option("written problems")
    syn_temperature: float = option("Sampling temperature when writing problems (diversity).", 1.0)
    solve_temperature: float = option("Sampling temperature of teacher solutions (they must be independent).", 0.7)
    solve_attempts: int = option("STAT-Sel: teacher attempts at a selected problem without a worked solution.", 3)
    top_p: float = top_p_option()
    max_new_tokens: int = option("Budget of student answers and teacher solutions.", 512)
    list_max_new_tokens: int = option("Budget of skill lists, labels, judgements and written problems.", 256)
    chunk_size: int = chunk_size_option("Items")
    seed: int = seed_option("units, quotas and samples")
    solve_template: str = option(
        "Template: how problems are posed to student and teacher, and the SFT user turn (the evaluation prompt).",
        "eval/boxed.jinja")
    free_label_template: str = option(
        "Template: the teacher names a problem's skills in its own words (catalog step 1).", "stat/free_label.jinja")
    skills_template: str = option(
        "Template: the teacher clusters the merged names into the catalog (catalog step 3).", "stat/skills.jinja")
    label_template: str = option("Template: the teacher labels a problem with skills.", "stat/label.jinja")
    judge_template: str = option(
        "Template: the teacher names the skills a student response is missing.", "stat/judge.jinja")
    synthesize_template: str = option(
        "Template: the teacher writes a new problem for a skill.", "stat/synthesize.jinja")

    def __post_init__(self) -> None:
        check_fields(self, diagnose_fraction="(0, 1)", catalog_sample=">= 1", catalog_max_names=">= 1",
                           catalog_max_new_tokens=">= 1", max_skills=">= 1", max_labels=">= 1", max_missing=">= 1",
                           student_samples=">= 1", student_temperature=">= 0", min_agreement=">= 0",
                           sel_size=">= 0", syn_size=">= 0", syn_references=">= 1", syn_solutions=">= 1",
                           syn_min_agree=">= 1", near_duplicate_rouge_l="(0, 1]", syn_temperature=">= 0",
                           solve_temperature=">= 0", solve_attempts=">= 1", top_p="(0, 1]", max_new_tokens=">= 1",
                           list_max_new_tokens=">= 1", chunk_size=">= 1")
        if self.min_agreement > self.student_samples:
            raise ValueError(f"min_agreement ({self.min_agreement}) cannot exceed student_samples "
                             f"({self.student_samples}): every problem would be difficult")
        if self.syn_min_agree > self.syn_solutions:
            raise FieldError("syn_min_agree", f"cannot exceed syn_solutions ({self.syn_solutions})")


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
    if config.diagnose and Path(config.diagnose).is_file():
        inputs["diagnose_file"] = file_hash(config.diagnose)
    templates = [config.solve_template, config.label_template, config.judge_template]
    templates += [] if config.skills_file else [config.free_label_template, config.skills_template]
    templates += [config.synthesize_template] if config.mode != "sel" else []
    run = StageRun(out, "stat", config, models, templates=templates, inputs=inputs, problems=problems)
    decontam, decontam_report = (Decontaminator.from_config(config.decontamination) if config.mode != "sel"
                                 else (None, {}))
    teacher = run.backend(models.teacher_backend, "teacher")
    student = run.backend(models.student_backend, "student")
    diagnosis, problems, diagnosis_report = diagnosis_split(problems, config, run.seed)  # problems: the pool
    by_id = {p.id: p for p in diagnosis}

    skills_work, free = _catalog(run, problems, teacher, config, inputs.get("skills_file"))
    skills = [r["name"] for r in skills_work.records["skills"]]
    # Units of later steps hash what they depend on (the skill list, the judged response), so a
    # re-run over changed inputs redoes them instead of reusing stale results.
    skills_key = content_hash(skills)
    labels = records(run.map("labels", problems, config.chunk_size,
                             lambda unit: _label(unit, skills, teacher, config),
                             key=lambda p: f"{p.id}|{skills_key}"), "labels")
    answers = records(run.map("answers", diagnosis, config.chunk_size,
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
        sft += sel_records(run, problems, labels, profile, teacher, config)
    if config.mode in ("syn", "both"):
        syn_sft, synthetic = syn_records(run, problems, labels, profile, teacher, decontam, config,
                                         seen=[p.question for p in diagnosis])
        sft += syn_sft

    write_json_atomic(out / "skills.json", {"skills": skills, "source": "file" if config.skills_file else "teacher",
                                            "raw": skills_work.records["raw"][0]["text"],
                                            "merged_names": [{"name": m["name"], "count": m["count"]}
                                                             for m in skills_work.records.get("merged", [])]})
    write_json_atomic(out / "profile.json", {
        "skills": profile, "problems": len(problems), "diagnosed": len(diagnosis), "difficult": len(difficult),
        "judged_without_skill": sum(1 for m in missing if not m["missing"]),
        "sel_quota": allocate(profile, data_size(config.sel_size, problems)) if config.mode != "syn" else {},
        "syn_quota": allocate(profile, data_size(config.syn_size, problems)) if config.mode != "sel" else {},
    })
    return run.finish({"free_labels.jsonl": free, "labels.jsonl": labels, "answers.jsonl": answers, "missing.jsonl": missing,
                       "synthetic.jsonl": synthetic, "sft.jsonl": sft}, primary="sft.jsonl",
                      files=["skills.json", "profile.json"], decontamination=decontam_report,
                      diagnosis=diagnosis_report,
                      summary={"problems": len(problems), "diagnosed": len(diagnosis), "skills": len(skills),
                               "difficult": len(difficult),
                               "missing_skills": len(profile), "sft_records": len(sft),
                               "sel_records": sum(r["origin"] == "sel" for r in sft),
                               "syn_records": sum(r["origin"] == "syn" for r in sft),
                               "syn_problems": len(synthetic)})


# -- step 1: the skill list and the labels ------------------------------------------------------


def _catalog(run: StageRun, problems: list[Problem], teacher: Backend, config: STATConfig,
             skills_file: str | None) -> tuple[Work, list[dict[str, Any]]]:
    """(the skills step's Work: `skills`, `raw`, `merged`; the free-form labels it came from)."""
    if skills_file:
        def from_file(unit: Unit) -> Work:
            text = read_text(config.skills_file)
            names = parse_skill_file(text)
            skills = dedupe_skills(names)[: config.max_skills]
            return Work(records={"skills": [{"id": s, "name": s} for s in skills], "raw": [{"id": "raw", "text": text}]},
                        counts=Counter({"skills/proposed": len(names), "skills/kept": len(skills)}))

        return run.once("skills", from_file, depends_on=skills_file), []
    sample = problems
    if config.catalog_sample is not None and config.catalog_sample < len(problems):
        sample = random.Random(derive_seed(run.seed, "catalog-sample")).sample(problems, config.catalog_sample)
    free = records(run.map("free_labels", sample, config.chunk_size, lambda unit: free_labels(unit, teacher, config)),
                   "free_labels")
    merged = merge_names(free)
    work = run.once("skills", lambda unit: cluster(merged, teacher, config, unit.seed), depends_on=merged)
    return work, free


def _label(unit: Unit, skills: list[str], teacher: Backend, config: STATConfig) -> Work:
    def prompt(p: Problem) -> list[dict[str, str]]:
        return [{"role": "user", "content": render(config.label_template, skills=skills, question=p.question,
                                                   max_labels=config.max_labels)}]

    return _ask_for_skills(_LABELS, unit, prompt, skills, config.max_labels, teacher, config, Counter())


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
        majority, agreement = majority_vote(sample_item["answers"], benchmark, problem.meta)
        correct = (grades[k].correct if config.correctness == "greedy"
                   else majority is not None and bool(sample_item["correct"][majority]))
        difficult, reason = is_difficult(correct, agreement, config.min_agreement)
        counts[f"answers/{reason}"] += 1
        records.append({"id": problem.id, "gold": problem.answer, "completions": completions, **item,
                        "decided_correct": correct, "agreement": agreement, "difficult": difficult,
                        "reason": reason,
                        "shown": shown_response(grades, k, config.correctness, benchmark, problem.meta)})
    return Work(records={"answers": records}, counts=counts)


def is_difficult(correct: bool, agreement: int, min_agreement: int) -> tuple[bool, str]:
    """(difficult?, reason): wrong first, then the consistency rule (fewer than `min_agreement`
    of the K answers agree, even if the vote happened to land on the right answer)."""
    if not correct:
        return True, "wrong"
    if min_agreement and agreement < min_agreement:
        return True, "inconsistent"
    return False, "solved"


def shown_response(grades: list, k: int, correctness: str, benchmark: str, meta: dict | None = None) -> int:
    """Which response the teacher judges: the greedy one under the greedy rule when wrong, else
    a sampled response with the most common wrong answer (an answered mistake says more about
    a missing skill than a response that never reaches an answer), else the first wrong one,
    else the first response."""
    if correctness == "greedy" and not grades[k].correct:
        return k
    wrong = [i for i in range(k) if not grades[i].correct]
    answered = [i for i in wrong if grades[i].extracted is not None]
    if answered:
        groups = answer_groups([grades[i].extracted for i in answered], benchmark, meta)
        votes = Counter(groups)
        top = max(votes.values())
        return next(i for i, g in zip(answered, groups) if votes[g] == top)
    return wrong[0] if wrong else 0


# -- step 3: the Missing-Skill-Profile ----------------------------------------------------------


def _judge(unit: Unit, skills: list[str], responses: dict[str, str], teacher: Backend, config: STATConfig) -> Work:
    def prompt(p: Problem) -> list[dict[str, str]]:
        return [{"role": "user", "content": render(
            config.judge_template, skills=skills, question=p.question, answer=p.answer, solution=p.solution or "",
            response=responses[p.id], max_missing=config.max_missing)}]

    counts: Counter = Counter({"judge/problems": len(unit.items)})
    return _ask_for_skills(_JUDGEMENTS, unit, prompt, skills, config.max_missing, teacher, config, counts)


# -- helpers ------------------------------------------------------------------------------------


class _SkillQuestion(NamedTuple):
    """What one of the per-problem questions to the teacher records (labels, judgements)."""

    output: str  # the Work's record set, also the prefix of its counts
    field: str  # the record field holding the names from the skill list
    named: str  # count of problems given at least one name from the list
    unnamed: str  # count of problems given none (or asked nothing: no skill list)


_LABELS = _SkillQuestion("labels", "skills", "labelled", "unlabelled")
_JUDGEMENTS = _SkillQuestion("missing", "missing", "named", "no_skill")


def _ask_for_skills(question: _SkillQuestion, unit: Unit, prompt: Callable[[Problem], list[dict[str, str]]],
                    skills: list[str], limit: int, teacher: Backend, config: STATConfig, counts: Counter) -> Work:
    """Ask the teacher about each problem of the unit (greedy) and keep the names on the skill
    list: one record `{id, <field>: names on the list, spelled as there, at most `limit`;
    unknown: names not on it}` per problem. Without a skill list nothing is asked."""
    problems: tuple[Problem, ...] = unit.items
    if not skills:
        counts[f"{question.output}/{question.unnamed}"] += len(problems)
        return Work(records={question.output: [{"id": p.id, question.field: [], "unknown": []} for p in problems]},
                    counts=counts)
    outs = teacher.generate([prompt(p) for p in problems], 1, _greedy(config.list_max_new_tokens, unit.seed))
    records = []
    for problem, gens in zip(problems, outs):
        matched, unknown = match_skills(parse_name_list(gens[0].completion, loose=True), skills, limit)
        counts[f"{question.output}/{question.named if matched else question.unnamed}"] += 1
        counts[f"{question.output}/unknown_names"] += len(unknown)
        records.append({"id": problem.id, question.field: matched, "unknown": unknown})
    return Work(records={question.output: records}, counts=counts)


def _greedy(max_new_tokens: int, seed: int) -> SamplingConfig:
    return SamplingConfig(temperature=0.0, max_new_tokens=max_new_tokens, seed=seed)


