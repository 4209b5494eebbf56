"""ARTE's final data (step 4 of the stage): the aligned teacher answers fresh questions, and a
rationale is kept only when its answer is right as far as can be told.

Brainstormed questions have no gold answer, so "right" means: the teacher, solving the same
question `final_resolves` more times independently (sampled, other seeds), gives the
rationale's answer in more than half of them (answers grouped by verified equivalence,
`answer_groups`). A rationale with merely SOME answer is not enough: training the student on
confidently wrong rationales is what the check prevents. The paper keeps final rationales
without saying how they are checked; this rule is ours (as in STAT-Syn's agreement filter).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from llm_teach.backends import Backend, SamplingConfig
from llm_teach.grading import extract_answer
from llm_teach.grading.voting import answer_groups
from llm_teach.prompts import render
from llm_teach.runs.hashing import derive_seed
from llm_teach.runs.stage_run import Work
from llm_teach.stages.arte_prompts import Brainstorm, rationale_prompt

if TYPE_CHECKING:  # only for annotations: arte.py imports this module
    from llm_teach.stages.arte import ARTEConfig


def majority_agrees(answer: str, resolved: list[str | None], benchmark: str) -> bool:
    """Does `answer` have more than half of the independent re-solves' votes (None never votes)?"""
    groups = answer_groups([answer, *resolved], benchmark)
    return 2 * sum(g == groups[0] for g in groups[1:]) > len(resolved)


def final_work(questions: list[tuple[Brainstorm, str, str]], writer: Backend, benchmark: str, seed: int,
               config: ARTEConfig, counts: Counter) -> Work:
    """SFT records for one unit's `(prompt, question id, question)`: a style-free rationale each,
    kept when it has an answer (`require_answer`) that the re-solves' majority confirms."""
    sampling = SamplingConfig(temperature=config.rationale_temperature, top_p=config.top_p,
                              max_new_tokens=config.max_new_tokens, seed=derive_seed(seed, "rationales"))
    prompts = [rationale_prompt(q, config) for _, _, q in questions]
    outs = writer.generate(prompts, 1, sampling) if questions else []
    answers = [extract_answer(row[0].completion, benchmark)[0] for row in outs]
    checked = [i for i, a in enumerate(answers) if a is not None] if config.final_resolves else []
    resolves = writer.generate([prompts[i] for i in checked], config.final_resolves, SamplingConfig(
        temperature=config.resolve_temperature, top_p=config.top_p, max_new_tokens=config.max_new_tokens,
        seed=derive_seed(seed, "resolves"))) if checked else []
    resolved = {i: [extract_answer(g.completion, benchmark)[0] for g in gens] for i, gens in zip(checked, resolves)}
    records: list[dict[str, Any]] = []
    for i, ((b, qid, question), row) in enumerate(zip(questions, outs)):
        answer = answers[i]
        if answer is None and config.require_answer:
            counts["rejected/no_answer"] += 1
            continue
        if i in resolved and not majority_agrees(answer, resolved[i], benchmark):
            counts["rejected/final_disagrees"] += 1
            continue
        records.append({"id": qid, "messages": [
            {"role": "user", "content": render(config.student_template, question=question)},
            {"role": "assistant", "content": row[0].completion}], "question": question, "answer": answer,
            "prompt_id": b.id, "origin": "arte"})
    counts["final/kept"] += len(records)
    return Work(records={"sft": records}, counts=counts)
