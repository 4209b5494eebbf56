"""SSB, semantic soft bootstrapping (Mitra & Ulukus 2025, arXiv:2512.05105).

The model is its own teacher, seen in two contexts. For each problem:

1. K rollouts from the model on the bare problem; each is graded against the gold answer.
2. Problems where every rollout is right, or every one wrong, teach nothing and are dropped.
   So is a problem whose wrong rollouts have no extractable answer (truncated or unboxed):
   there is no mistake to show, only a formatting failure (counted as
   `rejected/no_answered_mistake`).
3. From the rest: one correct rollout, and a rollout with the MOST COMMON wrong answer
   (wrong answers grouped by verified equivalence, `answer_groups`, so "1,000" and "1000.0",
   `\\sqrt2` and `\\sqrt{2}` are one mistake).
4. The model, given the problem plus both responses labelled correct / wrong, writes a
   standalone explanation ending in `\\boxed{}`; it is kept only if GRADED correct (never
   by string equality with the gold answer).
5. The teacher's top-k log-probs over the explanation's tokens in the hinted context are
   stored (`data.logit_store`), its end-of-turn token included when the explanation stopped by
   itself (so the student learns where to stop), and a distill record is written whose `prompt` is the
   student's view: the bare problem as chat messages, so the trainer applies the chat
   template (the reference code trains the student on the raw question without it).

Which source each rule follows -- the reference code (purbeshmitra/semantic-soft-bootstrapping,
`logit_gen.py`) unless marked:
- K = 4 rollouts, sampled (reference: T 0.8, top-k 50; `rollout_temperature`, our default 0.7;
  top-k sampling is not a backend option here, `top_p` is).
- Keep a problem only with at least one correct and one ANSWERED wrong rollout (reference:
  wrong = a boxed answer that is not the gold one; a rollout without one is neither).
- The most common wrong answer (reference: `Counter.most_common`, a random one among unique
  answers; here the first seen, so a run is reproducible).
- Explanations sampled at T 0.4 in the reference; `explain_temperature` (our default 0 =
  greedy, the recipe sets 0.4), kept only when correct (reference: boxed answer == gold;
  here graded, see step 4).
- Teacher logits over the explanation in the hinted context, the student trained from the
  bare question (reference); top-k instead of the full vocabulary (ours: `top_k`).

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

from llm_teach.backends import Backend, Generation, SamplingConfig, top_p_option
from llm_teach.config import FieldError, check_fields, option
from llm_teach.data.logit_store import DEFAULT_TAIL_SAMPLES, DEFAULT_TOP_K, append_scored, open_writer, tail_request
from llm_teach.data.problems import Problem, grading_benchmark
from llm_teach.grading import grade
from llm_teach.grading.voting import answer_groups
from llm_teach.prompts import render
from llm_teach.runs.hashing import derive_seed, ids_digest
from llm_teach.runs.shard import Shard
from llm_teach.runs.stage_run import StageRun, Unit, Work, chunk_size_option, seed_option
from llm_teach.stages.roles import Models


@dataclass
class SSBConfig:
    """Settings of the SSB stage (defaults follow the paper where it gives one)."""

    rollouts: int = option("K: rollouts per problem (paper: 4).", 4)
    rollout_temperature: float = option(
        "Sampling temperature of the rollouts (they must differ; reference code: 0.8 with top-k 50).", 0.7)
    top_p: float = top_p_option()
    max_new_tokens: int = option("Token budget of each rollout.", 512)
    rollouts_from: Literal["student", "teacher"] = option(
        "Whose rollouts are mined for mistakes: the student's or the teacher's.", "student")
    explanations: int = option("Explanation attempts per kept problem; the first graded correct is used.", 1)
    explain_temperature: float = option(
        "Sampling temperature of explanations; 0 = greedy (a single attempt should be the careful one; the "
        "reference code samples at 0.4).", 0.0)
    explain_max_new_tokens: int = option("Token budget of the explanation (the distillation target).", 768)
    top_k: int = option("Teacher log-probs stored per completion token (the distill target's exact support; "
                        "issue 11 measured the default's KD error, benchmarks/RESULTS.md).", DEFAULT_TOP_K)
    tail_temperatures: list[float] = option(
        "Temperatures at which each token's teacher mass outside the top-k is stored; distill's `temperature` "
        "must be one of them (1 always works). Above 1 only the hf teacher backend can compute it (vLLM returns "
        "log-probs at T=1 only); the default covers the SSB recipe's T=2.", factory=lambda: [1.0, 2.0])
    tail_samples: int = option("Teacher tail tokens sampled per completion token at the highest tail temperature "
                               "(unbiased KD over the tail; 0 = a tail bucket only; hf teacher backend only).",
                               DEFAULT_TAIL_SAMPLES)
    logits_dtype: Literal["float16", "float32"] = option("Storage precision of the top-k log-probs.", "float16")
    chunk_size: int = chunk_size_option("Problems")
    seed: int = seed_option("units")
    solve_template: str = option("Template: the rollout prompt and the student's view of a problem.", "ssb/solve.jinja")
    explain_template: str = option("Template: the hinted prompt with correct and wrong responses.", "ssb/explain.jinja")

    def __post_init__(self) -> None:
        # rollouts >= 2: one right and one wrong are needed.
        check_fields(self, rollouts=">= 2", rollout_temperature=">= 0", top_p="(0, 1]", max_new_tokens=">= 1",
                           explanations=">= 1", explain_temperature=">= 0", explain_max_new_tokens=">= 1",
                           top_k=">= 1", chunk_size=">= 1", tail_samples=">= 0")
        if self.tail_samples and not self.tail_temperatures:
            raise FieldError("tail_samples", "needs tail_temperatures")
        temps = self.tail_temperatures
        if not isinstance(temps, (list, tuple)) or not all(isinstance(t, (int, float)) and t > 0 for t in temps):
            raise FieldError("tail_temperatures", f"must all be > 0 (got {self.tail_temperatures})")


def ssb(problems: list[Problem], models: Models, config: SSBConfig, out: str | Path,
        shard: Shard | None = None) -> dict[str, Any]:
    """Run SSB over `problems` (with `shard`, over that shard's work units only: every step of
    SSB is per problem); write distill records, rollouts and the logit store under `out`.
    Returns the manifest."""
    out = Path(out)
    run = StageRun(out, "ssb", config, models, templates=[config.solve_template, config.explain_template],
                   inputs={"problems": len(problems), "problem_ids": ids_digest([p.id for p in problems])},
                   problems=problems, shard=shard)
    teacher = run.backend(models.teacher_backend, "teacher")
    roller = teacher if config.rollouts_from == "teacher" else run.backend(models.student_backend, "student")
    store = LogitSink(out / "logits", config, models.teacher)  # the spec: naming the store loads no model
    try:
        results = run.map("ssb", problems, config.chunk_size, lambda unit: _work(unit, roller, teacher, store, config))
    finally:
        store.close()
    records = [r for w in results for r in w.records.get("distill", [])]
    rollouts = [r for w in results for r in w.records.get("rollouts", [])]
    kept, done = len(records), sum(w.counts.get("problems", 0) for w in results)  # done: this shard's
    return run.finish({"records.jsonl": records, "rollouts.jsonl": rollouts},
                      summary={"problems": done, "kept": kept,
                               "skipped_no_answered_mistake": sum(
                                   w.counts.get("rejected/no_answered_mistake", 0) for w in results),
                               "kept_fraction": kept / done if done else 0.0,
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
    None when no rollout is right or no rollout gives a wrong ANSWER (a rollout without an
    extractable answer is a formatting failure, not a mistake worth explaining; the reference
    skips such problems). Ties go to the answer seen first."""
    correct = [i for i, g in enumerate(grades) if g.correct]
    answered = [i for i, g in enumerate(grades) if not g.correct and g.extracted is not None]
    if not correct or not answered:
        return None
    keys = {i: grades[i].key for i in answered}
    votes = Counter(keys.values())
    top = max(votes.values())
    return correct[0], next(i for i in answered if votes[keys[i]] == top)


def _unpaired_reason(grades: list) -> str:
    """Why `pick_pair` found no pair: every rollout right, none right, or no wrong answer given."""
    if all(g.correct for g in grades):
        return "all_correct"
    if not any(g.correct for g in grades):
        return "all_wrong"
    return "no_answered_mistake"


@dataclass(frozen=True)
class _Graded:
    correct: bool
    extracted: str | None
    key: str | None  # equal keys: equivalent answers (the rollouts' `answer_groups` index)


def _grade(problem: Problem, completion: str) -> _Graded:
    g = grade(completion, problem.answer, grading_benchmark(problem.source), problem.meta)
    return _Graded(g.correct, g.extracted, None)


def _grade_rollouts(problem: Problem, completions: list[str]) -> list[_Graded]:
    """Each rollout graded, keyed by its group of equivalent answers."""
    grades = [_grade(problem, c) for c in completions]
    groups = answer_groups([g.extracted for g in grades], grading_benchmark(problem.source), problem.meta)
    return [_Graded(g.correct, g.extracted, None if k is None else str(k)) for g, k in zip(grades, groups)]


def _work(unit: Unit, roller: Backend, teacher: Backend, store: "LogitSink", config: SSBConfig) -> Work:
    problems: tuple[Problem, ...] = unit.items
    counts: Counter = Counter(problems=len(problems))
    sampling = SamplingConfig(temperature=config.rollout_temperature, top_p=config.top_p,
                              max_new_tokens=config.max_new_tokens, seed=unit.seed)
    rollouts = roller.generate([solve_prompt(p, config) for p in problems], config.rollouts, sampling)
    rollout_records, chosen = [], []
    for problem, gens in zip(problems, rollouts):
        completions = [g.completion for g in gens]
        grades = _grade_rollouts(problem, completions)
        counts["rollouts/correct"] += sum(g.correct for g in grades)
        counts["rollouts/wrong"] += sum(not g.correct for g in grades)
        pair = pick_pair(completions, grades)
        rollout_records.append({"id": problem.id, "gold": problem.answer, "completions": completions,
                                "answers": [g.extracted for g in grades], "correct": [g.correct for g in grades],
                                "picked": list(pair) if pair else None})
        if pair is None:
            counts[f"rejected/{_unpaired_reason(grades)}"] += 1
            continue
        ci, wi = pair
        chosen.append((problem, explain_prompt(problem, completions[ci], completions[wi], grades[wi].extracted,
                                               config)))

    records = []
    if chosen:
        explain = SamplingConfig(temperature=config.explain_temperature, top_p=config.top_p,
                                 max_new_tokens=config.explain_max_new_tokens,
                                 seed=derive_seed(unit.seed, "explain"))
        explanations = teacher.generate([tp for _, tp in chosen], config.explanations, explain)
        kept = []
        for (problem, teacher_prompt), gens in zip(chosen, explanations):
            good = next((g for g in gens if _grade(problem, g.completion).correct), None)
            if good is None:
                counts["rejected/explanation_wrong"] += 1
            else:
                kept.append((problem, teacher_prompt, _target(good, teacher)))
        scores = teacher.score([tp for _, tp, _ in kept], [c for _, _, c in kept], top_k=config.top_k,
                               **store.score_kwargs(unit.seed)) if kept else []
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


def _target(explanation: Generation, teacher: Backend) -> str:
    """The distillation target: the explanation, plus the teacher's end of turn when it stopped
    by itself (not cut by the token budget). The store then holds the teacher's distribution at
    the stopping position, so the distilled student learns to end its answer; without it, it
    never sees a reason to stop (measured: every held-out answer ran to the token limit)."""
    if explanation.finish_reason == "stop":
        return explanation.completion + teacher.end_of_turn
    return explanation.completion


class LogitSink:
    """The stage's top-k store. A unit redone after a crash may find its records already
    stored (the store is written before the unit's line in the work log): those keys return
    their existing ref, so the store never holds a record twice (`logit_store.append_scored`)."""

    def __init__(self, root: Path, config: SSBConfig, model: str):
        temps = config.tail_temperatures
        self.writer = open_writer(root, k=config.top_k, dtype=config.logits_dtype, model=model, tail_temperatures=temps,
                                  samples=config.tail_samples,
                                  sample_temperature=max(temps) if config.tail_samples else None)

    def score_kwargs(self, seed: int) -> dict[str, Any]:
        """What the teacher's `score()` must add for this store's tail (`logit_store.tail_request`)."""
        return tail_request(self.writer, seed)

    def put(self, key: str, scored) -> dict[str, Any]:
        return append_scored(self.writer, key, scored)

    def close(self) -> None:
        self.writer.close()
