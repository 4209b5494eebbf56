"""The stage contract's inputs, one entry per stage of `llm_teach.stages.STAGES`.

tests/integration/test_stage_contract.py checks every stage for the same three promises (a
re-run of a finished run is a no-op, a SIGKILLed run resumes to identical bytes, a finished
run loads no model); each stage needs problems, models and fast options for that, and `CASES`
below holds them keyed by stage name. A stage with no entry fails the contract test, so a
fifth stage must add one here.

The models are scripted (tests/scripted_backend.py) with outputs that are pure functions of
(prompt, sample, seed), as a seeded real model's are, so a resumed unit redoes exactly what
the killed one did; each exercises every branch of its stage. LLM2LLM's student is the real
tiny-random model, since the stage trains it.

Run as a script, `python tests/stage_cases.py STAGE OUT` runs one stage with its models
slowed down (`StageCase.kill_delay` per call), so the SIGKILL test's kills land mid-stage.
"""

from __future__ import annotations

import re
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from llm_teach.backends import Backend
from llm_teach.data import load_problems, read_jsonl
from llm_teach.data.decontam import DecontamConfig
from llm_teach.data.logit_store import TopKLogitStore
from llm_teach.data.problems import Problem
from llm_teach.stages import load_stage
from llm_teach.stages.roles import Models
from scripted_backend import ScriptedBackend

NO_BENCHMARKS = DecontamConfig(benchmarks=[])  # the scripted runs do not need GSM8K/MATH-500 loaded


# -- STAT -----------------------------------------------------------------------------------------

SYN_TEMPLATES = ["A baker sells {n} rolls in the morning and 9 in the evening. How many rolls?",
                 "Ivy swims {n} lengths on Monday, then twice as many on Tuesday. Total lengths?",
                 "A crate weighs {n} kg and a lid adds 4 kg; what do three crates with lids weigh?",
                 "Paolo saves {n} euros a week for 6 weeks and spends 20. What is left?"]


def stat_models(problems, delay: float = 0.0):
    """A scripted teacher and student whose outputs are pure functions of (prompt, sample,
    seed) -- what a seeded real model is -- with every branch of the stage exercised: some
    answers right, some inconsistent, skills named and not, written problems agreeing or not."""
    gold = {p.question: int(p.answer) for p in problems}
    index = {q: k for k, q in enumerate(gold)}

    def find(text):
        return next((q for q in gold if q in text), None)

    def teacher(text, i, seed):
        time.sleep(delay)
        h = zlib.crc32(text.encode())
        if "List the distinct skills" in text:
            return '["addition", "subtraction", "carrying", "sign handling"]'
        if "Which of the skills above" in text:
            return ["addition, carrying", "subtraction", "sign handling, addition"][index[find(text)] % 3]
        if "Decide which skills the student is missing" in text:
            return ["- carrying", '["subtraction", "sign handling"]', "none"][h % 3]
        if "Write one new problem" in text:
            return SYN_TEMPLATES[seed % 4].format(n=seed % 90 + 10)
        q = find(text)
        if q is None:  # a written problem: its solutions agree unless its text hashes odd
            return f"so \\boxed{{{h % 50 + (i if h % 2 else 0)}}}"
        return f"so \\boxed{{{gold[q] + (seed + i) % 2}}}"

    def student(text, i, seed):
        time.sleep(delay)
        g = gold[find(text)]
        return f"\\boxed{{{g + (seed + i * index[find(text)]) % 3}}}"

    return ScriptedBackend(teacher, "teacher"), ScriptedBackend(student, "student")


STAT_CONFIG = dict(chunk_size=1, syn_size=8, diagnose_fraction=0.5, decontamination=NO_BENCHMARKS)


STAT_OUTPUTS = ("skills.json", "profile.json", "labels.jsonl", "answers.jsonl", "missing.jsonl", "synthetic.jsonl",
           "sft.jsonl")


# -- ARTE -----------------------------------------------------------------------------------------

QUESTIONS = [  # what the scripted teacher brainstorms, in order: 2 draft prompts x 4, then the final ones
    "A farmer packs 96 apples into crates of 8. How many crates does he fill?",
    "Lena reads 23 pages of her novel every evening. How many pages after two weeks?",
    "A jar holds 14 dimes and 9 quarters. What is the total value in cents?",
    "Runners complete 12 laps of a 400 metre track. How far is that in kilometres?",
    "Two trains leave towns 300 km apart at 60 and 90 km/h toward each other. When do they meet?",
    "Each garden bed gets 35 seeds and 4 of every 5 sprout. How many sprouts from 6 beds?",
    "A floor of 9 by 12 metres is covered with half-metre square tiles. How many tiles are needed?",
    "An album has 13 songs averaging 3.5 minutes. How long is it in minutes?",
    "Eggs come in cartons of a dozen; a bakery uses 150 eggs. How many cartons must it open?",
    "Climbing a hill takes 1200 steps and Omar has climbed 475. How many are left?",
    "Seven wires each hold 18 birds until a third of them fly off. How many remain?",
    "A parking lot has 14 rows of 22 spaces and 57 are empty. How many cars are parked?",
    "A recipe needs 2.25 cups of flour per cake. How much flour for 8 cakes?",
    "Mia owns 340 stamps and gives a fifth to her cousin. How many does she keep?",
    "A lake rents 15 boats at 12 dollars per hour for 3 hours. What is the income?",
    "A hall seats 28 rows of 35 chairs. How many people can sit?",
]


def arte_models(problems, delay: float = 0.0):
    """A scripted teacher and student whose outputs are pure functions of (prompt, sample,
    seed), as a seeded real model's are; the student's one-shot success depends on the
    demonstration, so scores differ and pairs exist."""
    gold = {p.question: p.answer for p in problems}

    def teacher(text, i, seed):
        time.sleep(delay)
        if "Write one new question" in text:
            return "Question: " + QUESTIONS[(seed * 7 + i) % len(QUESTIONS)]
        return f"reasoning {zlib.crc32(text.encode()) % 1000} so \\boxed{{{zlib.crc32(text.encode()) % 7}}}"  # re-solves agree

    def student(text, i, seed):
        time.sleep(delay)
        last = text.rsplit("user: ", 1)[-1]
        question = next(q for q in gold if q in last)
        good = zlib.crc32(text[: -len(last)].encode()) % 3 == 0
        return f"\\boxed{{{gold[question] if good else 'no'}}}"

    return ScriptedBackend(teacher, "teacher"), ScriptedBackend(student, "student")


ARTE_CONFIG = dict(align=False, chunk_size=1, probe_size=3, draft_prompts=4, final_prompts=3,
                   decontamination=NO_BENCHMARKS)


ARTE_OUTPUTS = ("drafts.jsonl", "probe.jsonl", "dpo_pairs.jsonl", "sft.jsonl")


# -- SSB ------------------------------------------------------------------------------------------

def ssb_models(problems: list[Problem], delay: float = 0.0) -> ScriptedBackend:
    """One scripted model (SSB is self-distillation): rollouts mostly wrong by a seeded offset,
    hinted explanations long and right, so most problems give a kept record."""
    gold = {p.question: int(p.answer) for p in problems}

    def respond(text, i, seed):
        time.sleep(delay)
        g = next(v for q, v in gold.items() if q in text)
        if "CORRECT" in text:
            return " ".join(f"step{(seed + k) % 97}" for k in range(40)) + f" \\boxed{{{g}}}"
        return f"try {seed % 1000} \\boxed{{{g + (i + seed) % 3}}}"

    return ScriptedBackend(respond)


SSB_CONFIG = dict(chunk_size=1, top_k=5, rollouts=4)
SSB_OUTPUTS = ("rollouts.jsonl", "records.jsonl")


def ssb_check(reference: Path, resumed: Path, manifest: dict) -> None:
    """The logit store holds each record exactly once, with the uninterrupted run's arrays."""
    records = read_jsonl(reference / "records.jsonl")
    assert len(records) >= 6  # the scripted model leaves most problems with right and wrong rollouts
    ref_store, res_store = TopKLogitStore(reference / "logits"), TopKLogitStore(resumed / "logits")
    assert len(res_store) == len(records)
    for record in records:
        for x, y in zip(ref_store.get(record["id"]), res_store.get(record["id"])):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# -- LLM2LLM --------------------------------------------------------------------------------------

NEW_PROBLEM = re.compile(r"Lena has (\d+) apples and buys (\d+) more")


def llm2llm_teacher(problems: list[Problem], delay: float = 0.0) -> ScriptedBackend:
    """A teacher whose new problems and re-solutions are pure functions of the prompt: it writes
    an apple sum for each wrong seed (every other one a near-copy of the seed, rejected), and
    re-solves the sums it wrote."""
    def respond(text, i, seed):
        time.sleep(delay)
        if "Write ONE new practice problem" in text:
            k = next(j for j, p in enumerate(problems) if p.question in text)
            a, b = 3 + seed % 50, 2 + k
            question = problems[k].question if k % 2 else f"Lena has {a} apples and buys {b} more. How many now?"
            return f"Question: {question}\nSolution: {a} + {b} = {a + b}, so \\boxed{{{a + b}}}"
        found = NEW_PROBLEM.search(text)
        return f"The answer is \\boxed{{{int(found[1]) + int(found[2])}}}" if found else "unknown"

    return ScriptedBackend(respond, model="teacher")


LLM2LLM_CONFIG = dict(rounds=2, train={"max_steps": 1, "per_device_train_batch_size": 2}, eval_max_new_tokens=8,
                      chunk_size=2, decontamination=NO_BENCHMARKS)
LLM2LLM_OUTPUTS = ("problems.jsonl", "rounds.jsonl", "train.jsonl")


# -- the table --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StageCase:
    """What the stage contract needs to run one stage fast and deterministically."""

    problems: int  # how many rg:chain_sum problems
    backends: Callable[[list[Problem], float], dict[str, Backend]]  # scripted models by spec, given a delay per call
    config: dict[str, Any]  # config values (small and fast)
    outputs: tuple[str, ...]  # the final files, the one written last at the end
    kill_delay: float  # seconds per model call in the SIGKILL child, so kills land mid-stage
    student: str = "student"  # the student spec: a scripted one, the teacher's, or a real model
    check: Callable[[Path, Path, dict], None] = field(default=lambda reference, resumed, manifest: None)
    gaps: dict[str, str] = field(default_factory=dict)  # contract test name -> why the stage fails it (xfail)
    sigkill: bool = True  # in the SIGKILL contract test (False only with the reason beside the entry)


def _has(*keys: str) -> Callable[[Path, Path, dict], None]:
    def check(reference: Path, resumed: Path, manifest: dict) -> None:
        assert all(manifest["summary"][key] > 0 for key in keys), manifest["summary"]  # every step had work
    return check


CASES: dict[str, StageCase] = {
    "stat": StageCase(12, lambda problems, delay: dict(zip(("teacher", "student"), stat_models(problems, delay))),
                      STAT_CONFIG, STAT_OUTPUTS, kill_delay=0.04, check=_has("sel_records", "syn_records")),
    "arte": StageCase(12, lambda problems, delay: dict(zip(("teacher", "student"), arte_models(problems, delay))),
                      ARTE_CONFIG, ARTE_OUTPUTS, kill_delay=0.03, check=_has("dpo_pairs", "sft_records")),
    "ssb": StageCase(12, lambda problems, delay: {"teacher": ssb_models(problems, delay)},
                     SSB_CONFIG, SSB_OUTPUTS, kill_delay=0.03, student="teacher", check=ssb_check),
    "llm2llm": StageCase(4, lambda problems, delay: {"teacher": llm2llm_teacher(problems, delay)},
                         LLM2LLM_CONFIG, LLM2LLM_OUTPUTS, kill_delay=0.0, student="tiny-random",
                         # Not in the SIGKILL test: five runs that each train and evaluate a real student
                         # (~3 min on 2 cores), and its one run differed after a resume mid-training
                         # (work/round1/eval.jsonl): an open gap, named in the issue note.
                         sigkill=False),
}


def run_case(stage: str, case: StageCase, out: Path, backends: dict[str, Backend] | None) -> dict:
    """Run `stage` on its case into `out`; `backends` (scripted, by spec) are handed to the
    stage ready-made, or with None every backend is made by `make_backend` on first use."""
    function, config_cls = load_stage(stage)
    problems = load_problems("rg:chain_sum", limit=case.problems)
    models = Models(teacher="teacher", student=case.student)
    for spec, backend in (backends or {}).items():
        models.provide("teacher" if spec == models.teacher else "student", backend)
    return function(problems, models, config_cls(**case.config), out)


if __name__ == "__main__":  # the SIGKILL test's child: python tests/stage_cases.py STAGE OUT
    stage, out = sys.argv[1], Path(sys.argv[2])
    case = CASES[stage]
    run_case(stage, case, out, case.backends(load_problems("rg:chain_sum", limit=case.problems), case.kill_delay))
