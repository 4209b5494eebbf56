"""SSB, semantic soft bootstrapping (Mitra & Ulukus 2025, arXiv:2512.05105).

The model is its own teacher, seen in two contexts. For each problem:

1. K rollouts from the model on the bare problem; each is graded against the gold answer.
2. Problems where every rollout is right, or every one wrong, teach nothing and are dropped.
3. From the rest: one correct rollout, and a rollout with the MOST COMMON wrong answer
   (wrong answers grouped by `answer_key`, so "1,000" and "1000.0" are one mistake).
4. The model, given the problem plus both responses labelled correct / wrong, writes a
   standalone explanation ending in `\\boxed{}`; it is kept only if GRADED correct (never
   by string equality with the gold answer).
5. The teacher's top-k log-probs over the explanation's tokens in the hinted context are
   stored (`data.logit_store`), and a distill record is written whose `prompt` is the
   student's view: the bare problem as chat messages, so the trainer applies the chat
   template (the reference code trains the student on the raw question without it).

`train --method distill` then makes the student match those log-probs from the bare problem.
By default teacher and student are the same model; with a separate teacher, `rollouts_from`
chooses whose mistakes are mined (the student's, by default).

Outputs in OUT: `records.jsonl` (distill records), `rollouts.jsonl` (every rollout, graded,
for inspection), `logits/` (the top-k store), `manifest.json`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from llm_teach.backends import Backend, SamplingConfig
from llm_teach.config import option
from llm_teach.data.logit_store import append_scored, open_writer
from llm_teach.data.problems import Problem, grading_benchmark
from llm_teach.grading import answer_key, grade
from llm_teach.prompts import render
from llm_teach.runs.hashing import derive_seed, ids_digest
from llm_teach.runs.stage_run import StageRun, Unit, Work
from llm_teach.stages.roles import Models


@dataclass
class SSBConfig:
    """Settings of the SSB stage (defaults follow the paper where it gives one)."""

    rollouts: int = option("K: rollouts per problem (paper: 4).", 4)
    rollout_temperature: float = option("Sampling temperature of the rollouts (they must differ).", 0.7)
    top_p: float = option("Nucleus sampling for rollouts and explanations.", 1.0)
    max_new_tokens: int = option("Token budget of each rollout.", 512)
    rollouts_from: Literal["student", "teacher"] = option(
        "Whose rollouts are mined for mistakes: the student's or the teacher's.", "student")
    explanations: int = option("Explanation attempts per kept problem; the first graded correct is used.", 1)
    explain_temperature: float = option(
        "Sampling temperature of explanations; 0 = greedy (a single attempt should be the careful one).", 0.0)
    explain_max_new_tokens: int = option("Token budget of the explanation (the distillation target).", 768)
    top_k: int = option("Teacher log-probs stored per completion token (the distill target's support).", 20)
    logits_dtype: Literal["float16", "float32"] = option("Storage precision of the top-k log-probs.", "float16")
    chunk_size: int = option("Problems per work unit (the most a killed run redoes).", 8)
    seed: int = option("Base seed; each unit derives its own from it.", 0)
    solve_template: str = option("Template: the rollout prompt and the student's view of a problem.", "ssb/solve.jinja")
    explain_template: str = option("Template: the hinted prompt with correct and wrong responses.", "ssb/explain.jinja")

    def __post_init__(self) -> None:
        if self.rollouts < 2:
            raise ValueError("rollouts must be at least 2 (one right and one wrong are needed)")
        if self.explanations < 1 or self.top_k < 1:
            raise ValueError("explanations and top_k must be at least 1")


def ssb(problems: list[Problem], models: Models, config: SSBConfig, out: str | Path) -> dict[str, Any]:
    """Run SSB over `problems`; write distill records, rollouts and the logit store under `out`.
    Returns the manifest."""
    out = Path(out)
    run = StageRun(out, "ssb", config, models, templates=[config.solve_template, config.explain_template],
                   inputs={"problems": len(problems), "problem_ids": ids_digest([p.id for p in problems])},
                   problems=problems)
    teacher = run.backend(models.teacher_backend, "teacher")
    roller = teacher if config.rollouts_from == "teacher" else run.backend(models.student_backend, "student")
    store = LogitSink(out / "logits", config, teacher.model)
    try:
        results = run.map("ssb", problems, config.chunk_size, lambda unit: _work(unit, roller, teacher, store, config))
    finally:
        store.close()
    records = [r for w in results for r in w.records.get("distill", [])]
    rollouts = [r for w in results for r in w.records.get("rollouts", [])]
    kept = len(records)
    return run.finish({"records.jsonl": records, "rollouts.jsonl": rollouts},
                      summary={"problems": len(problems), "kept": kept,
                               "kept_fraction": kept / len(problems) if problems else 0.0,
                               "logits": str(out / "logits")})


def solve_prompt(problem: Problem, config: SSBConfig) -> list[dict[str, str]]:
    """The student's view: the bare problem as a chat, exactly what the model sees at eval."""
    return [{"role": "user", "content": render(config.solve_template, question=problem.question)}]


def explain_prompt(problem: Problem, correct: str, wrong: str, wrong_answer: str, config: SSBConfig) -> list[dict[str, str]]:
    return [{"role": "user", "content": render(config.explain_template, question=problem.question,
                                               correct_response=correct, wrong_response=wrong,
                                               wrong_answer=wrong_answer)}]


def pick_pair(completions: list[str], grades: list) -> tuple[int, int] | None:
    """(index of a correct rollout, index of a rollout with the most common wrong answer), or
    None when the rollouts are all right or all wrong. Ties go to the answer seen first; a
    rollout with no extractable answer counts as wrong, but an answered mistake is preferred
    (a missing answer is a formatting failure, not a mistake worth explaining)."""
    correct = [i for i, g in enumerate(grades) if g.correct]
    wrong = [i for i, g in enumerate(grades) if not g.correct]
    if not correct or not wrong:
        return None
    answered = [i for i in wrong if grades[i].extracted is not None]
    if not answered:
        return correct[0], wrong[0]
    keys = {i: grades[i].key for i in answered}
    votes = Counter(keys.values())
    top = max(votes.values())
    return correct[0], next(i for i in answered if votes[keys[i]] == top)


@dataclass(frozen=True)
class _Graded:
    correct: bool
    extracted: str | None
    key: str | None


def _grade(problem: Problem, completion: str) -> _Graded:
    benchmark = grading_benchmark(problem.source)
    g = grade(completion, problem.answer, benchmark, problem.meta)
    return _Graded(g.correct, g.extracted, answer_key(g.extracted, benchmark) if g.extracted is not None else None)


def _work(unit: Unit, roller: Backend, teacher: Backend, store: "LogitSink", config: SSBConfig) -> Work:
    problems: tuple[Problem, ...] = unit.items
    counts: Counter = Counter(problems=len(problems))
    sampling = SamplingConfig(temperature=config.rollout_temperature, top_p=config.top_p,
                              max_new_tokens=config.max_new_tokens, seed=unit.seed)
    rollouts = roller.generate([solve_prompt(p, config) for p in problems], config.rollouts, sampling)
    rollout_records, chosen = [], []
    for problem, gens in zip(problems, rollouts):
        completions = [g.completion for g in gens]
        grades = [_grade(problem, c) for c in completions]
        counts["rollouts/correct"] += sum(g.correct for g in grades)
        counts["rollouts/wrong"] += sum(not g.correct for g in grades)
        pair = pick_pair(completions, grades)
        rollout_records.append({"id": problem.id, "gold": problem.answer, "completions": completions,
                                "answers": [g.extracted for g in grades], "correct": [g.correct for g in grades],
                                "picked": list(pair) if pair else None})
        if pair is None:
            counts["rejected/all_correct" if grades[0].correct else "rejected/all_wrong"] += 1
            continue
        ci, wi = pair
        wrong_answer = grades[wi].extracted if grades[wi].extracted is not None else "(no final answer)"
        chosen.append((problem, explain_prompt(problem, completions[ci], completions[wi], wrong_answer, config)))

    records = []
    if chosen:
        explain = SamplingConfig(temperature=config.explain_temperature, top_p=config.top_p,
                                 max_new_tokens=config.explain_max_new_tokens,
                                 seed=derive_seed(unit.seed, "explain"))
        explanations = teacher.generate([tp for _, tp in chosen], config.explanations, explain)
        kept = []
        for (problem, teacher_prompt), gens in zip(chosen, explanations):
            good = next((g.completion for g in gens if _grade(problem, g.completion).correct), None)
            if good is None:
                counts["rejected/explanation_wrong"] += 1
            else:
                kept.append((problem, teacher_prompt, good))
        scores = teacher.score([tp for _, tp, _ in kept], [c for _, _, c in kept], top_k=config.top_k) if kept else []
        for (problem, teacher_prompt, completion), scored in zip(kept, scores):
            records.append({
                "id": problem.id,
                "prompt": solve_prompt(problem, config),
                "teacher_prompt": teacher_prompt,
                "completion": completion,
                "logits_ref": store.put(problem.id, scored),
                "answer": problem.answer,
                "source": problem.source,
            })
        counts["kept"] += len(records)
    return Work(records={"distill": records, "rollouts": rollout_records}, counts=counts)


class LogitSink:
    """The stage's top-k store. A unit redone after a crash may find its records already
    stored (the store is written before the unit's line in the work log): those keys return
    their existing ref, so the store never holds a record twice (`logit_store.append_scored`)."""

    def __init__(self, root: Path, config: SSBConfig, model: str):
        self.writer = open_writer(root, k=config.top_k, dtype=config.logits_dtype, model=model)

    def put(self, key: str, scored) -> dict[str, Any]:
        return append_scored(self.writer, key, scored)

    def close(self) -> None:
        self.writer.close()
