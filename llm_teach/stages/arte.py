"""ARTE, aligning the teacher with student preferences (Liu et al. 2024, arXiv:2406.19227).

A teacher writes better training data for a particular student once it has learned what that
student learns from. Four steps:

1. Draft (knowledge elicitation). Brainstorm prompts each show a few seed questions; the
   teacher samples new questions from each, then writes one rationale per question in each
   reasoning style (`styles`, one template each under `prompts/arte/styles/`).
2. Preference. Each (question, rationale) pair is scored by the student's one-shot in-context
   accuracy on a small probe set: the pair is the only demonstration (a user turn and the
   assistant's rationale) before each probe question; answers are graded with
   `llm_teach.grading` against the probe problems' gold answers. A question's score is the mean
   of its rationales' scores.
3. Align. DPO pairs at two levels, written to `dpo_pairs.jsonl`:
   - question level: within each brainstorm prompt, the top quartile of its questions by score
     against the bottom quartile (best with worst, second best with second worst, ...), the
     brainstorm prompt being the DPO prompt;
   - rationale level: per question, the best rationale against the worst, with the style-free
     rationale prompt as the DPO prompt (so the aligned teacher produces the preferred style
     without being told).
   A pair needs a strictly higher score for `chosen` (`allow_ties` lifts that, for plumbing
   tests only). The teacher is then trained with DPO through `launch.train_model`, the one
   training path of stages and pipelines (in-process here; LoRA by default).
4. Generate. The aligned teacher (a backend for the new checkpoint, made by `Models` with the
   teacher's options) brainstorms fresh questions from freshly sampled seeds and answers each
   with the style-free rationale prompt; a rationale is kept only when `final_resolves`
   independent re-solves by the same teacher mostly give its answer (`arte_final`: the
   questions are new, so there is no gold answer to grade against); those become the SFT
   records (`sft.jsonl`).

Generated questions are checked against evaluation sets (n-gram overlap) and for ROUGE-L
near-duplicates of the input and of each other; the paper describes neither filter.

The probe set (`arte_probe`): candidates from `--probe SOURCE` or a held-out split of the input,
the `probe_size` most discriminative kept -- those whose one-shot accuracy varies across candidate
demonstrations (the paper picks 40 discriminative validation questions with item response
theory; this is the same preference without fitting an IRT model). Their ids are in the manifest
summary and `probe_selection.jsonl`.

Deviations from the paper, on purpose: quartiles are taken within each brainstorm prompt (the paper has one prompt per task, so the
two coincide there); one round of alignment. Outputs in OUT: `drafts.jsonl`, `probe.jsonl`,
`probe_selection.jsonl`, `dpo_pairs.jsonl`, `teacher_dpo/pairs-<hash>/` (the DPO run; its adapter or model directory is
the aligned teacher),
`sft.jsonl`, `manifest.json`.

The prompts ARTE writes live in `arte_prompts`, the DPO pair building in `arte_pairs`.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_teach.backends import Backend, SamplingConfig, top_p_option
from llm_teach.config import FieldError, check_fields, option
from llm_teach.data.decontam import (DecontamConfig, Decontaminator, NearDuplicates, admit, decontamination_option,
                                     drop_near_duplicates, near_duplicate_option)
from llm_teach.data.jsonl import write_jsonl_atomic
from llm_teach.data.problems import Problem, grading_benchmark
from llm_teach.errors import UserError
from llm_teach.grading import extract_answer, grade
from llm_teach.prompts import render
from llm_teach.runs.hashing import content_hash, derive_seed, ids_digest
from llm_teach.runs.stage_run import StageRun, Unit, Work, chunk_size_option, records, seed_option
from llm_teach.stages.arte_final import final_work
from llm_teach.stages.arte_pairs import attach_scores, dpo_pairs
from llm_teach.stages.arte_probe import probe_candidates, select_probe, split_probe  # noqa: F401
from llm_teach.stages.arte_prompts import (Brainstorm, brainstorm_prompt, brainstorms, one_shot_prompt,
                                          rationale_prompt, style_template)
from llm_teach.stages.parsing import parse_problem
from llm_teach.stages.roles import Models


# `train dpo` options ARTE starts from; `ARTEConfig.dpo` overrides them key by key. LoRA keeps the
# aligned teacher a small adapter over the base weights (the paper aligns with LoRA too).
DPO_DEFAULTS: dict[str, Any] = {"lora_r": 16, "lora_alpha": 32, "learning_rate": 5e-6, "beta": 0.1,
                                "num_train_epochs": 1.0}


@dataclass
class ARTEConfig:
    """Settings of the ARTE stage (paper defaults noted where the paper gives one)."""

    probe_size: int = option(
        "Probe problems the student is scored on, the most discriminative of the candidates (arte_probe). "
        "Paper: 40 discriminative validation questions chosen with IRT.", 8)
    probe: str | None = option(
        "Problem source of probe candidates (`--probe SOURCE`; a hub name gives its train split); None = a "
        "held-out seeded split of the input, at most half of it (the rest are seed questions).", None)
    probe_pool: int | None = option(
        "Candidates taken from the input when `probe` is None (None = probe_size: no selection).", None)
    probe_demos: int = option(
        "Candidate demonstrations (seed problems with solutions) each probe candidate is tried under; the "
        "candidates whose one-shot accuracy varies most across them are kept.", 4)
    seeds_per_prompt: int = option("Seed questions shown in each brainstorm prompt (paper: 3 examples).", 3)
    draft_prompts: int | None = option("Brainstorm prompts of the draft (None = each seed shown about once).", None)
    questions_per_prompt: int = option("Questions sampled per brainstorm prompt (quartiles are taken within one).", 4)
    styles: list[str] = option(
        "Rationale styles, one template each (prompts/arte/styles/<name>.jinja); one draft rationale per "
        "style.", factory=lambda: ["step_by_step", "concise", "detailed", "plan_and_solve"])
    question_temperature: float = option("Sampling temperature of brainstormed questions (diversity).", 1.0)
    rationale_temperature: float = option("Sampling temperature of rationales.", 0.7)
    top_p: float = top_p_option()
    question_max_new_tokens: int = option("Token budget of a brainstormed question.", 256)
    max_new_tokens: int = option("Token budget of a rationale.", 512)
    probe_max_new_tokens: int = option("Token budget of the student's (greedy) probe answers.", 384)
    allow_ties: bool = option(
        "Let DPO pairs have equal scores (only for plumbing tests: a tie is no preference).", False)
    align: bool = option("Train the teacher with DPO; false: final data from the base teacher (an ablation).", True)
    dpo: dict[str, Any] = option(
        "`train dpo` options over DPO_DEFAULTS (LoRA r16, lr 5e-6, beta 0.1, 1 epoch), e.g. {max_steps: 20}; "
        "model and data are set by the stage.", factory=dict)
    final_prompts: int | None = option(
        "Brainstorm prompts of the final generation (None = as many as the draft).", None)
    require_answer: bool = option("Drop final rationales without an extractable final answer.", True)
    final_resolves: int = option(
        "Independent teacher re-solves of each final question; a rationale is kept only when more than half "
        "of them give its answer (0 = no check; ours, the paper gives no rule).", 3)
    resolve_temperature: float = option("Sampling temperature of the re-solves (they must be independent).", 0.7)
    near_duplicate_rouge_l: float = near_duplicate_option("questions")
    decontamination: DecontamConfig = decontamination_option("new questions")
    chunk_size: int = chunk_size_option("Brainstorm prompts, or rationales to score,")
    seed: int = seed_option("the probe split, seed samples and units")
    brainstorm_template: str = option(
        "Template: the teacher writes a new question from seed examples.", "arte/brainstorm.jinja")
    rationale_template: str = option(
        "Template: the style-free rationale prompt (DPO prompt; final data).", "arte/rationale.jinja")
    student_template: str = option(
        "Template: how the student is asked (probe turns), and the SFT user turn (the evaluation prompt).",
        "eval/boxed.jinja")

    def __post_init__(self) -> None:
        check_fields(self, probe_size=">= 1", seeds_per_prompt=">= 1", draft_prompts=">= 1",
                           questions_per_prompt=">= 1", question_temperature=">= 0", rationale_temperature=">= 0",
                           top_p="(0, 1]", question_max_new_tokens=">= 1", max_new_tokens=">= 1",
                           probe_max_new_tokens=">= 1", final_prompts=">= 1", near_duplicate_rouge_l="(0, 1]",
                           chunk_size=">= 1", probe_demos=">= 1", final_resolves=">= 0",
                           resolve_temperature=">= 0")
        if self.probe_pool is not None and self.probe_pool < self.probe_size:
            raise FieldError("probe_pool", f"must be at least probe_size ({self.probe_size})")
        if not self.styles:
            raise ValueError("styles must name at least one rationale style")
        if len(set(self.styles)) != len(self.styles):
            raise ValueError("styles must not repeat")
        for key in ("model", "data"):
            if key in self.dpo:
                raise ValueError(f"dpo.{key} is set by the stage; remove it")


def arte(problems: list[Problem], models: Models, config: ARTEConfig, out: str | Path) -> dict[str, Any]:
    """Run ARTE over `problems` (seeds and probe set); align the teacher and write SFT records
    under `out`. Returns the manifest."""
    if len(problems) < 2:
        raise UserError("arte needs at least 2 problems (a probe set and seed questions)")
    if config.align and models.teacher_options.backend == "openai":
        raise UserError("arte trains the teacher with DPO, so the teacher must be a local model (--teacher-backend "
                        "hf or vllm), not a served one; or set align=false")
    out = Path(out)
    templates = [config.brainstorm_template, config.rationale_template, config.student_template,
                 *[style_template(s) for s in config.styles]]
    run = StageRun(out, "arte", config, models, templates=templates,
                   inputs={"problems": len(problems),
                           "problem_ids": ids_digest([p.id for p in problems])},
                   problems=problems)
    decontam, decontam_report = Decontaminator.from_config(config.decontamination)
    candidates, seeds = probe_candidates(problems, config, run.seed)
    teacher = run.backend(models.teacher_backend, "teacher")  # made on first use (see Metered)
    student = run.backend(models.student_backend, "student")
    selection = run.once("probe", lambda unit: select_probe(candidates, seeds, student, config, run.seed),
                         depends_on=[[p.id for p in candidates], [p.id for p in seeds]]).records["selection"]
    chosen = {r["id"] for r in selection if r["selected"]}
    probe = [p for p in candidates if p.id in chosen]
    benchmark = grading_benchmark(probe[0].source)
    # Each unit copies this index of the input (built once) for its near-duplicate checks.
    pool = NearDuplicates(config.near_duplicate_rouge_l, [p.question for p in problems])

    # 1. Draft questions and one rationale per style.
    n_draft = config.draft_prompts or math.ceil(len(seeds) / config.seeds_per_prompt)
    draft_prompts = brainstorms("draft", n_draft, seeds, config.seeds_per_prompt, run.seed)
    drafted = records(run.map("draft", draft_prompts, config.chunk_size,
                              lambda unit: _draft(unit, teacher, decontam, pool, benchmark, config),
                              key=lambda b: f"{b.id}|{content_hash(b.examples)}"), "questions")
    drafts = run.once("draft_dedupe", lambda unit: _dedupe(drafted, config), depends_on=drafted).records["questions"]

    # 2. Student preferences: one-shot in-context accuracy on the probe set.
    probe_key = content_hash([p.id for p in probe])
    baseline = run.once("baseline", lambda unit: _probe_baseline(unit, probe, student, config), depends_on=probe_key)
    pairs_to_score = [(d["id"], r["style"], d["question"], r["text"]) for d in drafts for r in d["rationales"]]
    scored = records(run.map("preference", pairs_to_score, config.chunk_size,
                             lambda unit: _score(unit, probe, student, config),
                             key=lambda x: f"{x[0]}/{x[1]}|{content_hash(x[2:])}|{probe_key}"), "scores")
    scores = {s["id"]: s["score"] for s in scored}
    attach_scores(drafts, scores)

    # 3. Align the teacher with DPO on question- and rationale-level pairs.
    prompts_by_id = {b.id: b for b in draft_prompts}
    pairs = run.once("pairs", lambda unit: dpo_pairs(drafts, prompts_by_id, config), depends_on=drafts).records["pairs"]
    aligned_rel = _aligned_teacher(run, models, pairs, out, config)
    writer = teacher if aligned_rel is None else run.backend(
        lambda: models.backend(str(out / aligned_rel), models.teacher_options), "aligned_teacher")

    # 4. Final data from the aligned teacher (the base one without alignment).
    n_final = config.final_prompts or n_draft
    final_prompts = brainstorms("final", n_final, seeds, config.seeds_per_prompt, run.seed)
    generated = records(run.map("final", final_prompts, config.chunk_size,
                                lambda unit: _final(unit, writer, decontam, pool, benchmark, config),
                                # the keys (and so the seeds) name the writer
                                key=lambda b: f"{b.id}|{content_hash(b.examples)}|{aligned_rel or 'base'}"), "sft")
    sft = run.once("final_dedupe", lambda unit: _dedupe(generated, config), depends_on=generated).records["questions"]

    base_accuracy = baseline.records["baseline"][0]["accuracy"]
    return run.finish(
        {"drafts.jsonl": drafts, "probe.jsonl": [p.to_dict() for p in probe], "dpo_pairs.jsonl": pairs,
         "probe_selection.jsonl": selection, "sft.jsonl": sft}, primary="sft.jsonl",
        decontamination=decontam_report,
        summary={"problems": len(problems), "probe": len(probe), "seeds": len(seeds),
                 "probe_source": config.probe or "held-out split of --data", "probe_ids": [p.id for p in probe], "draft_questions": len(drafts),
                 "draft_rationales": len(pairs_to_score), "dpo_pairs": len(pairs),
                 "question_pairs": sum(p["level"] == "question" for p in pairs),
                 "rationale_pairs": sum(p["level"] == "rationale" for p in pairs),
                 "probe_zero_shot_accuracy": base_accuracy,
                 "probe_one_shot_accuracy_mean": (sum(scores.values()) / len(scores)) if scores else None,
                 "aligned": aligned_rel is not None,
                 "aligned_teacher": aligned_rel,
                 "sft_records": len(sft)})


# -- 1. draft -----------------------------------------------------------------------------------


def _questions(unit: Unit, teacher: Backend, decontam: Decontaminator, pool: NearDuplicates, config: ARTEConfig,
               counts: Counter, phase: str) -> list[tuple[Brainstorm, str, str]]:
    """Sample `questions_per_prompt` questions from each brainstorm prompt of the unit and keep
    the usable ones: `[(prompt, question id, question)]`."""
    prompts: tuple[Brainstorm, ...] = unit.items
    outs = teacher.generate([brainstorm_prompt(b, config) for b in prompts], config.questions_per_prompt,
                            SamplingConfig(temperature=config.question_temperature, top_p=config.top_p,
                                           max_new_tokens=config.question_max_new_tokens, seed=unit.seed))
    seen = pool.copy()
    kept = []
    for b, gens in zip(prompts, outs):
        for j, gen in enumerate(gens):
            counts[f"{phase}/questions_written"] += 1
            question = parse_problem(gen.completion)
            if question is None:
                counts["rejected/empty_question"] += 1
                continue
            if not admit(question, decontam, seen, counts):
                continue
            kept.append((b, f"{b.id}-q{j}", question))
    return kept


def _draft(unit: Unit, teacher: Backend, decontam: Decontaminator, pool: NearDuplicates,
           benchmark: str, config: ARTEConfig) -> Work:
    counts: Counter = Counter()
    questions = _questions(unit, teacher, decontam, pool, config, counts, "draft")
    prompts = [rationale_prompt(q, config, style) for _, _, q in questions for style in config.styles]
    outs = teacher.generate(prompts, 1, SamplingConfig(temperature=config.rationale_temperature, top_p=config.top_p,
                                                       max_new_tokens=config.max_new_tokens,
                                                       seed=derive_seed(unit.seed, "rationales"))) if prompts else []
    records = []
    for i, (b, qid, question) in enumerate(questions):
        rows = outs[i * len(config.styles):(i + 1) * len(config.styles)]
        rationales = [{"style": style, "text": row[0].completion,
                       "answer": extract_answer(row[0].completion, benchmark)[0],
                       "finish_reason": row[0].finish_reason} for style, row in zip(config.styles, rows)]
        counts["draft/rationales_written"] += len(rationales)
        counts["draft/rationales_without_answer"] += sum(r["answer"] is None for r in rationales)
        records.append({"id": qid, "prompt_id": b.id, "question": question, "rationales": rationales})
    counts["draft/questions_kept"] += len(records)
    return Work(records={"questions": records}, counts=counts)


def _dedupe(questions: list[dict[str, Any]], config: ARTEConfig) -> Work:
    """Units dropped near-duplicates of the input; two units can still write near-identical
    questions: the first (in prompt order) is kept."""
    counts: Counter = Counter()
    kept = drop_near_duplicates(questions, NearDuplicates(config.near_duplicate_rouge_l), counts)
    return Work(records={"questions": kept}, counts=counts)


# -- 2. preference ------------------------------------------------------------------------------


def _probe_sampling(config: ARTEConfig, seed: int) -> SamplingConfig:
    return SamplingConfig(temperature=0.0, max_new_tokens=config.probe_max_new_tokens, seed=seed)


def _score(unit: Unit, probe: list[Problem], student: Backend, config: ARTEConfig) -> Work:
    items: tuple[tuple[str, str, str, str], ...] = unit.items
    prompts = [one_shot_prompt(q, r, p, config) for _, _, q, r in items for p in probe]
    outs = student.generate(prompts, 1, _probe_sampling(config, unit.seed))
    records, counts = [], Counter()
    for i, (qid, style, _, _) in enumerate(items):
        rows = outs[i * len(probe):(i + 1) * len(probe)]
        correct = [grade(row[0].completion, p.answer, grading_benchmark(p.source), p.meta).correct
                   for p, row in zip(probe, rows)]
        counts["probe/answers"] += len(correct)
        counts["probe/correct"] += sum(correct)
        records.append({"id": f"{qid}/{style}", "score": sum(correct) / len(correct), "correct": correct})
    return Work(records={"scores": records}, counts=counts)


def _probe_baseline(unit: Unit, probe: list[Problem], student: Backend, config: ARTEConfig) -> Work:
    """Zero-shot accuracy on the probe set, the reference point for the one-shot scores."""
    prompts = [[{"role": "user", "content": render(config.student_template, question=p.question)}] for p in probe]
    outs = student.generate(prompts, 1, _probe_sampling(config, unit.seed))
    correct = [grade(row[0].completion, p.answer, grading_benchmark(p.source), p.meta).correct
               for p, row in zip(probe, outs)]
    return Work(records={"baseline": [{"id": "baseline", "accuracy": sum(correct) / len(correct),
                                       "correct": correct}]})


# -- 3. align -----------------------------------------------------------------------------------


def _aligned_teacher(run: StageRun, models: Models, pairs: list[dict[str, Any]], out: Path,
                     config: ARTEConfig) -> str | None:
    """Train the teacher with DPO on the pairs (step 3); returns the aligned model's directory
    relative to `out` (the same seeds in any OUT), or None when the base teacher writes."""
    if not config.align:
        return None
    if not pairs:
        run.once("align", lambda unit: Work(counts=Counter({"align/skipped_no_pairs": 1})), depends_on=pairs)
        return None
    write_jsonl_atomic(out / "dpo_pairs.jsonl", pairs)  # the training data must exist before training
    # Training needs the memory the base models hold (on one GPU: all of it); neither is used again.
    models.release(models.teacher, models.teacher_options)
    models.release(models.student, models.student_options)
    result = run.once("align", lambda unit: _align(out, models.teacher, pairs, config), depends_on=pairs)
    return result.records["align"][0]["model"]


def _align(out: Path, teacher_spec: str, pairs: list[dict[str, Any]], config: ARTEConfig) -> Work:
    """DPO on the pairs, from the base teacher, in `teacher_dpo/<hash of the pairs>/` (a
    finished training run is reused only for the very same data). `resume=True` continues a
    run killed after a checkpoint and is a fresh start without one (`train_model` without launch
    options trains in-process, resuming)."""
    from llm_teach.launch import train_model

    values = {**DPO_DEFAULTS, **config.dpo, "model": teacher_spec, "data": str(out / "dpo_pairs.jsonl")}
    values.setdefault("seed", config.seed)
    model_dir = train_model("dpo", values, out / "teacher_dpo" / f"pairs-{content_hash(pairs)}")
    return Work(records={"align": [{"id": "align", "model": str(Path(model_dir).relative_to(out))}]},
                counts=Counter({"align/trained": 1}))


# -- 4. final generation ------------------------------------------------------------------------


def _final(unit: Unit, writer: Backend, decontam: Decontaminator, pool: NearDuplicates,
           benchmark: str, config: ARTEConfig) -> Work:
    counts: Counter = Counter()
    questions = _questions(unit, writer, decontam, pool, config, counts, "final")
    return final_work(questions, writer, benchmark, unit.seed, config, counts)
