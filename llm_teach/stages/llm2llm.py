"""LLM2LLM, iterative error mining (Lee et al. 2024, arXiv:2403.15042).

Each round r = 1..R (`rounds`, the number of AUGMENTATIONS; see "Rounds" below):

1. train: SFT the student on the current data (from the base model each round, as the paper
   does, or continuing from the last round's model: `train_from`);
2. evaluate the trained student on the SEED problems (only seeds: synthetic problems are never
   re-augmented, as in the paper), greedily or sampled (`eval_temperature`, `eval_top_p`;
   the reference samples at T 0.7, top-p 0.9);
3. augment: for every seed it got wrong, the teacher writes `new_per_wrong` new problems like
   it. The prompt shows the problem, its gold solution AND the student's wrong answer (the
   reference implementation formats the wrong answer into nothing), and asks for changed names
   and numbers and a worked solution ending in a final answer;
4. validate each new problem: its written solution must have an extractable answer; it must
   not overlap an evaluation set (n-gram decontamination) nor be a ROUGE-L near-duplicate of
   data we already have; and the teacher, re-solving it without the solution, must reach the
   same answer (graded, so "1,000" equals "1000");
5. merge the survivors into the data.

Rounds: the stage ends with augmented data, so `rounds: R` trains R times and augments R
times, and the last training on `train.jsonl` is a separate `train sft` step (training R+1).
The reference's `steps: N` (SqueezeAILab/LLM2LLM, GSM8K/generator_gsm.py) is N trainings and
N-1 augmentations: set `rounds: N-1` and train once more (pipelines/llm2llm-gsm8k.yaml).

Re-runs: an augment unit is keyed by the seed, the student's wrong completion and the round's
model, so a re-run whose student answered differently (a grown `--limit` retrains on other
data) writes new problems from the new mistakes instead of reusing ones made from old ones.

Sources: rounds, seeds-only re-augmentation, 1 new problem per wrong seed, training from the
base model each round, teacher T 1.0, ROUGE-L 0.95 near-duplicate filter and sampled seed
evaluation follow the reference code; showing the student's wrong answer follows the paper
(the reference formats it into nothing); the teacher's re-solution check, decontamination and
graded answers are ours.

Outputs in OUT: `train.jsonl` (SFT `{messages}` records of the final data), `problems.jsonl`
(seeds + generated problems with their lineage in `meta`), `rounds.jsonl` (per round: seed
accuracy, problems added, rejections by reason), `generated.jsonl` (every teacher reply with its
outcome: added, or the rejection that dropped it), `data/round{r}.jsonl` (what round r trained
on), `round{r}/train/` and `round{r}/eval/` (trainer and evaluation outputs), `manifest.json`.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from llm_teach.backends import Backend, BackendOptions, SamplingConfig
from llm_teach.config import check_fields, option
from llm_teach.data.decontam import DecontamConfig, Decontaminator, NearDuplicates, admit, drop_near_duplicates
from llm_teach.data.jsonl import read_jsonl, write_jsonl_atomic
from llm_teach.data.problems import Problem, grading_benchmark
from llm_teach.data.targets import boxed_answer, boxed_solution
from llm_teach.errors import UserError
from llm_teach.grading import extract_answer, grade
from llm_teach.prompts import render
from llm_teach.runs.hashing import content_hash, derive_seed, ids_digest
from llm_teach.runs.stage_run import StageRun, Unit, Work, chunk_size_option, records, seed_option
from llm_teach.stages.roles import Models

_FORMAT = re.compile(r"Question:\s*(?P<question>.+?)\s*(?:Solution|Answer):\s*(?P<solution>.+)", re.S | re.I)


@dataclass
class LLM2LLMConfig:
    """Settings of the LLM2LLM stage (defaults follow the paper/reference code where CPU allows)."""

    rounds: int = option(
        "R: train -> evaluate -> augment iterations, i.e. R trainings and R augmentations; the final training "
        "on train.jsonl is a separate step (R+1 trainings in all). The reference's `steps: N` (N trainings, "
        "N-1 augmentations; paper: 10 on GSM8K) is rounds N-1.", 3)
    new_per_wrong: int = option("New problems the teacher writes per wrong seed per round (reference: 1).", 1)
    train_from: Literal["base", "previous"] = option(
        "Each round trains the base student (paper) or continues from the previous round's model.", "base")
    train: dict[str, Any] = option(
        "`train sft` options for each round (model and data are set by the stage).",
        factory=lambda: {"num_train_epochs": 3})
    train_launch: dict[str, Any] = option(
        "Run each round's training under `accelerate launch` with {config_file, num_processes, args} "
        "(multi-GPU/ZeRO); empty = in-process.", factory=dict)
    eval_template: str = option(
        "Template: the prompt the student is evaluated with (and trained on).", "eval/boxed.jinja")
    eval_max_new_tokens: int = option("Token budget of the student's answers on the seeds.", 256)
    eval_temperature: float = option(
        "Sampling temperature of the student's answers on the seeds; 0 = greedy (reference: 0.7).", 0.0)
    eval_top_p: float = option("Nucleus sampling of the student's answers on the seeds (reference: 0.9).", 1.0)
    augment_template: str = option(
        "Template: the teacher writes a new problem from a wrong seed.", "llm2llm/augment.jinja")
    solve_template: str = option("Template: the teacher re-solves a new problem.", "llm2llm/solve.jinja")
    teacher_temperature: float = option("Sampling temperature of new problems (reference: 1.0).", 1.0)
    teacher_max_new_tokens: int = option("Token budget of a new problem with its solution.", 512)
    solve_max_new_tokens: int = option("Token budget of the teacher's re-solution (greedy).", 512)
    near_duplicate_rouge_l: float = option(
        "Drop new problems at least this ROUGE-L-similar to existing data (reference: 0.95).", 0.95)
    decontamination: DecontamConfig = option("Evaluation sets new problems must not overlap.", factory=DecontamConfig)
    chunk_size: int = chunk_size_option("Wrong seed problems")
    seed: int = seed_option("units and their sampling calls")

    def __post_init__(self) -> None:
        check_fields(self, rounds=">= 1", new_per_wrong=">= 1", eval_max_new_tokens=">= 1", eval_temperature=">= 0",
                           eval_top_p="(0, 1]",
                           teacher_temperature=">= 0", teacher_max_new_tokens=">= 1", solve_max_new_tokens=">= 1",
                           near_duplicate_rouge_l="(0, 1]", chunk_size=">= 1")
        for key in ("model", "data"):
            if key in self.train:
                raise ValueError(f"train.{key} is set by the stage; remove it")


def llm2llm(problems: list[Problem], models: Models, config: LLM2LLMConfig, out: str | Path) -> dict[str, Any]:
    """Run R rounds of LLM2LLM over the seed `problems`; returns the manifest."""
    if not problems:
        raise UserError("llm2llm needs at least one seed problem")
    benchmarks = {grading_benchmark(p.source) for p in problems}
    if len(benchmarks) > 1:
        raise UserError(f"llm2llm seeds must share one grading rule (got {', '.join(sorted(benchmarks))})")
    benchmark = benchmarks.pop()
    from llm_teach.trainers import make_config

    make_config("sft", {**config.train, "model": models.student, "data": "data.jsonl"}, "llm2llm config: train")
    out = Path(out)
    run = StageRun(out, "llm2llm", config, models,
                   templates=[config.eval_template, config.augment_template, config.solve_template],
                   inputs={"seeds": len(problems), "seed_ids": ids_digest([p.id for p in problems])},
                   problems=problems)
    decontam, decontam_report = Decontaminator.from_config(config.decontamination)
    data = [asdict(p) for p in problems]  # the growing data set, as Problem dicts
    rounds, model, replies = [], None, []
    for r in range(1, config.rounds + 1):
        write_jsonl_atomic(out / "data" / f"round{r}.jsonl", [sft_record(Problem(**d), config) for d in data])
        base = model if (config.train_from == "previous" and model) else models.student
        # Each step's key (and directory) hashes what it is computed from, so a re-run over other
        # seeds (a larger --limit) redoes a round instead of reusing a model trained on less.
        train_key = content_hash([base, data])
        model = run.once(f"round{r}/train", lambda unit: _train(base, out, r, train_key, config),
                         depends_on=train_key).records["model"][0]["path"]
        eval_key = content_hash([model, [p.id for p in problems]])
        evaluated = run.once(f"round{r}/eval", lambda unit: _evaluate(run, models, model, problems, benchmark,
                                                                       out / f"round{r}" / f"eval-{eval_key[:8]}", r, config),
                             depends_on=eval_key)
        answers = {w["id"]: w for w in evaluated.records["wrong"]}
        wrong = [(p, answers[p.id]) for p in problems if p.id in answers]  # seeds only, in seed order
        teacher = run.backend(models.teacher_backend, "teacher")
        pool = [d["question"] for d in data]
        seen = NearDuplicates(config.near_duplicate_rouge_l, pool)  # the round's data, indexed once; units copy it
        works = run.map(f"round{r}/augment", wrong, config.chunk_size,
                        lambda unit: _augment(unit, teacher, seen, decontam, benchmark, r, config),
                        key=lambda pair: augment_key(pair[0].id, pair[1]["completion"], model))
        merged = run.once(f"round{r}/merge", lambda unit: _merge(works, seen),
                          depends_on=[pool, [w.records for w in works]])
        data += merged.records["added"]
        added = {d["id"] for d in merged.records["added"]}
        for w in works:  # a candidate the merge kept was added; one it dropped was a cross-unit near-duplicate
            replies += [{**x, "outcome": ("added" if x["id"] in added else "rejected/near_duplicate")
                         if x["outcome"] == "candidate" else x["outcome"]} for x in w.records.get("replies", [])]
        rejected = Counter()
        for w in [*works, merged]:
            rejected.update({k.split("/", 1)[1]: v for k, v in w.counts.items() if k.startswith("rejected/")})
        rounds.append({"round": r, "model": model, "seed_accuracy": evaluated.records["summary"][0]["accuracy"],
                       "seeds": len(problems), "wrong": len(wrong), "generated": sum(w.counts["generated"] for w in works),
                       "added": len(merged.records["added"]), "rejected": dict(sorted(rejected.items())),
                       "data_size": len(data)})
    records = [sft_record(Problem(**d), config) for d in data]
    return run.finish({"train.jsonl": records, "problems.jsonl": data, "rounds.jsonl": rounds,
                       "generated.jsonl": replies},
                      rounds=rounds, decontamination=decontam_report,
                      summary={"seeds": len(problems), "final_size": len(data),
                               "seed_accuracy_by_round": [x["seed_accuracy"] for x in rounds]})


def _target(problem: Problem) -> str:
    """The worked solution ending in `\\boxed{answer}` (`data.targets`); a problem without a
    solution gets the one-line boxed answer."""
    return boxed_solution(problem) or boxed_answer(problem.answer)


def sft_record(problem: Problem, config: LLM2LLMConfig) -> dict[str, Any]:
    """A chat SFT record: the evaluation prompt and a solution ending in `\\boxed{answer}`."""
    return {"id": problem.id, "messages": [
        {"role": "user", "content": render(config.eval_template, question=problem.question)},
        {"role": "assistant", "content": _target(problem)},
    ]}


def augment_key(seed_id: str, completion: str, model: str) -> str:
    """What an augment unit's new problems are computed from: the seed, the student's wrong
    completion shown to the teacher, and the model that wrote it."""
    return f"{seed_id}|{content_hash([completion, model])}"


def parse_generated(text: str) -> tuple[str, str] | None:
    """`(question, solution)` from the teacher's "Question: ... Solution: ..." reply."""
    m = _FORMAT.search(text)
    if not m:
        return None
    question, solution = m.group("question").strip(), m.group("solution").strip()
    return (question, solution) if question and solution else None


def _train(base: str, out: Path, r: int, key: str, config: LLM2LLMConfig) -> Work:
    from llm_teach.launch import train_model

    values = {**config.train, "model": base, "data": str(out / "data" / f"round{r}.jsonl")}
    # resumes a killed round from its checkpoints
    path = train_model("sft", values, out / f"round{r}" / f"train-{key[:8]}", config.train_launch)
    return Work(records={"model": [{"path": str(path)}]})


def _evaluate(run: StageRun, models: Models, model: str, seeds: list[Problem], benchmark: str, eval_dir: Path,
              r: int, config: LLM2LLMConfig) -> Work:
    """Accuracy of round r's student on the seeds, and what it answered on the ones it missed.
    A freshly trained checkpoint is loaded in-process (a server cannot serve it yet)."""
    from llm_teach.evaluation import EvalConfig, evaluate

    options = models.student_options
    if options.backend == "openai":
        options = BackendOptions(backend="hf", dtype=options.dtype)
    student = run.backend(lambda: models.backend(model, options), "student")
    cfg = EvalConfig(benchmark=benchmark, max_new_tokens=config.eval_max_new_tokens, template=config.eval_template,
                     temperature=config.eval_temperature, top_p=config.eval_top_p,
                     seed=derive_seed(config.seed, f"round{r}/eval"))
    summary = evaluate(student, seeds, cfg, eval_dir)
    models.release(model, options)
    items = read_jsonl(eval_dir / "items.jsonl")
    wrong = [{"id": it["id"], "completion": it["completions"][0], "answer": it["answers"][0]}
             for it in items if not it["correct"][0]]
    return Work(records={"wrong": wrong, "summary": [{"accuracy": summary["accuracy"], "n": summary["n"]}]},
                counts=Counter({f"round{r}/seeds_wrong": len(wrong)}))


def _augment(unit: Unit, teacher: Backend, pool: NearDuplicates, decontam: Decontaminator, benchmark: str, r: int,
             config: LLM2LLMConfig) -> Work:
    """New problems for one unit of wrong seeds: generate, parse, filter cheaply, then have the
    teacher re-solve the survivors and keep the ones whose answers agree."""
    counts: Counter = Counter()
    replies = []  # every teacher reply and what became of it (generated.jsonl): why "added: 0"
    prompts = [[{"role": "user", "content": render(config.augment_template, question=seed.question,
                                                   solution=_target(seed), student_answer=_shown(wrong))}]
               for seed, wrong in unit.items]
    sampling = SamplingConfig(temperature=config.teacher_temperature, max_new_tokens=config.teacher_max_new_tokens,
                              seed=unit.seed)
    outputs = teacher.generate(prompts, config.new_per_wrong, sampling)
    seen = pool.copy()
    candidates = []
    for (seed, _), gens in zip(unit.items, outputs):
        for j, gen in enumerate(gens):
            counts["generated"] += 1
            reply = {"id": f"{seed.id}~r{r}.{j}", "round": r, "seed": seed.id, "reply": gen.completion,
                     "outcome": "candidate"}
            replies.append(reply)
            parsed = parse_generated(gen.completion)
            if parsed is None:
                counts["rejected/unparsable"] += 1
                reply["outcome"] = "rejected/unparsable"
                continue
            question, solution = parsed
            answer, _ = extract_answer(solution, benchmark)
            if answer is None:
                counts["rejected/no_answer"] += 1
                reply["outcome"] = "rejected/no_answer"
                continue
            before = Counter(counts)
            if not admit(question, decontam, seen, counts):
                reply["outcome"] = next(k for k in counts if k.startswith("rejected/") and counts[k] != before[k])
                continue
            candidates.append(Problem(id=reply["id"], question=question, answer=answer, source=seed.source,
                                      solution=solution, meta={"seed": seed.id, "round": r}))
    if candidates:
        solve = SamplingConfig(temperature=0.0, max_new_tokens=config.solve_max_new_tokens,
                               seed=derive_seed(unit.seed, "solve"))
        prompts = [[{"role": "user", "content": render(config.solve_template, question=p.question)}] for p in candidates]
        resolved = teacher.generate(prompts, 1, solve)
        kept = []
        outcome = {r["id"]: r for r in replies}
        for problem, gens in zip(candidates, resolved):
            if grade(gens[0].completion, problem.answer, benchmark).correct:
                kept.append(problem)
            else:
                counts["rejected/disagree"] += 1
                outcome[problem.id]["outcome"] = "rejected/disagree"
        candidates = kept
    return Work(records={"problems": [asdict(p) for p in candidates], "replies": replies}, counts=counts)


def _merge(works: list[Work], pool: NearDuplicates) -> Work:
    """Units filtered near-duplicates against the data at round start (`pool`); this pass drops
    the ones two units produced independently (in unit order, so it is deterministic)."""
    counts: Counter = Counter()
    added = drop_near_duplicates(records(works, "problems"), pool.copy(), counts)
    counts["added"] = len(added)
    return Work(records={"added": added}, counts=counts)


def _shown(wrong: dict[str, Any], limit: int = 1500) -> str:
    text = (wrong.get("completion") or "").strip()
    text = text if len(text) <= limit else text[:limit] + " ..."
    answer = wrong.get("answer")
    return f"{text}\n(final answer: {answer if answer is not None else 'none given'})".strip()
