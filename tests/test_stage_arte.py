"""ARTE: preference-pair tables, the whole stage with a scripted teacher and student (the
student's preferences controllable), the CLI on tiny-random with a real DPO step, and SmolLM2."""

from __future__ import annotations

import json
import re

import pytest

from conftest import ROOT, run_cli
from llm_teach.data import load_problems, read_jsonl
from llm_teach.data.decontam import DecontamConfig
from llm_teach.errors import UserError
from llm_teach.stages.arte import ARTEConfig, arte, split_probe
from llm_teach.stages.arte_pairs import question_pairs, rationale_pair
from llm_teach.stages.arte_prompts import brainstorms, one_shot_prompt
from llm_teach.stages.roles import Models
from scripted_backend import ScriptedBackend
from stage_kill import killed_run_matches_reference

NO_BENCHMARKS = DecontamConfig(benchmarks=[])


@pytest.mark.parametrize("scores, ties, expected", [
    ([0.5, 0.0], False, [(0, 1)]),
    ([0.0, 0.5], False, [(1, 0)]),
    ([0.5, 0.5], False, []),  # a tie is no preference
    ([0.5, 0.5], True, [(0, 1)]),
    ([0.1, 0.9, 0.5, 0.3, 0.7, 0.2, 0.4, 0.0], False, [(1, 7), (4, 0)]),  # quartile of 8 is 2: best-worst, 2nd-2nd
    ([0.2, 0.9, 0.2], False, [(1, 2)]),  # the later of tied questions ranks lower
    ([0.3], False, []),
])
def test_question_pairs(scores, ties, expected):
    assert question_pairs([(f"q{i}", s) for i, s in enumerate(scores)], ties) == expected


@pytest.mark.parametrize("scores, ties, expected", [
    ([0.25, 0.75, 0.0, 0.75], False, (1, 2)),  # first best, worst
    ([0.5, 0.5, 0.5], False, None),
    ([0.5, 0.5, 0.5], True, (0, 2)),  # ties: first against last
    ([0.0, 0.5, 0.0], False, (1, 2)),
    ([1.0], False, None),
])
def test_rationale_pair(scores, ties, expected):
    assert rationale_pair(scores, ties) == expected


def test_probe_split_and_brainstorm_prompts_are_seeded():
    problems = load_problems("rg:chain_sum", limit=10)
    probe, seeds = split_probe(problems, 8, seed=3)
    assert len(probe) == 5 and len(seeds) == 5  # at most half the input is probed
    assert {p.id for p in probe}.isdisjoint(p.id for p in seeds)
    assert split_probe(problems, 8, seed=3) == (probe, seeds)
    draft = brainstorms("draft", 3, seeds, 2, seed=3)
    assert [b.id for b in draft] == ["draft0000", "draft0001", "draft0002"]
    assert all(len(b.examples) == 2 for b in draft) and draft == brainstorms("draft", 3, seeds, 2, seed=3)
    assert brainstorms("final", 3, seeds, 2, seed=3) != draft


def test_one_shot_prompt_is_a_demonstration_turn():
    problem = load_problems("rg:chain_sum", limit=1)[0]
    prompt = one_shot_prompt("What is 2 + 2?", "2 + 2 = 4, so \\boxed{4}", problem, ARTEConfig())
    assert [m["role"] for m in prompt] == ["user", "assistant", "user"]
    assert "What is 2 + 2?" in prompt[0]["content"] and prompt[1]["content"].endswith("\\boxed{4}")
    assert problem.question in prompt[2]["content"] and "\\boxed{}" in prompt[2]["content"]


def test_config_validation():
    with pytest.raises(ValueError, match="dpo.model is set by the stage"):
        ARTEConfig(dpo={"model": "x"})
    with pytest.raises(ValueError, match="styles must not repeat"):
        ARTEConfig(styles=["concise", "concise"])


# -- the whole stage with scripted models -------------------------------------------------------

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


def _scripted(problems):
    """Teacher: brainstorms QUESTIONS in order (with a label and an answer to strip); tags each
    rationale with its style. Student: answers a probe question right when the demonstration
    is concise, or step-by-step about apples or trains (one such question per draft prompt)."""
    gold = {p.question: p.answer for p in problems}
    written = iter(QUESTIONS)

    def teacher(text, i, seed):
        if "Write one new question" in text:
            return f"Question: {next(written)}\nAnswer: 42"
        style = ("concise" if "Be concise" in text else "steps" if "numbered steps" in text
                 else "teacher" if "patient teacher" in text else "plan" if "write a short plan" in text else "plain")
        return f"[{style}] some reasoning, so \\boxed{{{len(text) % 50}}}"

    def student(text, i, seed):
        last = text.rsplit("user: ", 1)[-1]
        question = next(q for q in gold if q in last)
        demo = text[: -len(last)]
        good = "[concise]" in demo or ("[steps]" in demo and re.search("apples|trains", demo) is not None)
        return f"\\boxed{{{gold[question] if good else 'nope'}}}"

    return ScriptedBackend(teacher, "teacher-model"), ScriptedBackend(student, "student-model")


def test_arte_preferences_pairs_and_final_data_with_scripted_models(tmp_path):
    problems = load_problems("rg:chain_sum", limit=8)
    teacher, student = _scripted(problems)
    config = ARTEConfig(align=False, chunk_size=3, decontamination=NO_BENCHMARKS)
    manifest = arte(problems, Models.of(teacher, student), config, tmp_path)
    c, summary = manifest["counts"], manifest["summary"]

    probe = read_jsonl(tmp_path / "probe.jsonl")
    assert summary["probe"] == len(probe) == 4 and summary["seeds"] == 4
    drafts = read_jsonl(tmp_path / "drafts.jsonl")
    assert summary["draft_questions"] == len(drafts) == 8  # 2 prompts x 4 questions
    assert [d["question"] for d in drafts] == QUESTIONS[:8]
    for d in drafts:
        by_style = {r["style"]: r["score"] for r in d["rationales"]}
        assert list(by_style) == config.styles
        assert by_style["concise"] == 1.0 and by_style["detailed"] == 0.0 and by_style["plan_and_solve"] == 0.0
        assert by_style["step_by_step"] == (1.0 if re.search("apples|trains", d["question"]) else 0.0)
        assert d["score"] == pytest.approx(sum(by_style.values()) / 4)
    assert c["probe/answers"] == 8 * 4 * 4 and summary["probe_zero_shot_accuracy"] == 0.0

    pairs = read_jsonl(tmp_path / "dpo_pairs.jsonl")
    rationale_pairs = [p for p in pairs if p["level"] == "rationale"]
    assert len(rationale_pairs) == 8
    for p in rationale_pairs:
        question = next(d["question"] for d in drafts if p["id"].startswith(f"r:{d['id']}:"))
        # first best style wins: step-by-step (listed first) when it also scores 1, else concise
        assert p["chosen"].startswith("[steps]" if re.search("apples|trains", question) else "[concise]")
        assert p["rejected"].startswith("[plan]") and p["chosen_score"] == 1.0 and p["rejected_score"] == 0.0
        # the DPO prompt is the style-free rationale prompt: the aligned teacher must not be told the style
        assert len(p["prompt"]) == 1 and "Be concise" not in p["prompt"][0]["content"]
        assert "with a rationale a student can learn from" in p["prompt"][0]["content"]
    question_level = [p for p in pairs if p["level"] == "question"]
    assert len(question_level) == 2  # one per brainstorm prompt: its apples/trains question beats a plain one
    for p in question_level:
        assert re.search("apples|trains", p["chosen"]) and not re.search("apples|trains", p["rejected"])
        assert p["chosen_score"] == 0.5 and p["rejected_score"] == 0.25
        assert "Write one new question" in p["prompt"][0]["content"]

    assert summary["aligned"] is False and "align/trained" not in c
    sft = read_jsonl(tmp_path / "sft.jsonl")
    assert len(sft) == 8 and c["final/kept"] == 8
    for record in sft:
        assert [m["role"] for m in record["messages"]] == ["user", "assistant"]
        assert record["question"] in record["messages"][0]["content"] and record["answer"] is not None
        assert record["messages"][1]["content"].startswith("[plain]")  # the style-free prompt
    assert [r["question"] for r in sft] == QUESTIONS[8:]  # fresh questions from fresh prompts


def test_arte_refuses_a_served_teacher_and_too_few_problems(tmp_path):
    problems = load_problems("rg:chain_sum", limit=4)
    teacher, student = _scripted(problems)
    models = Models.of(teacher, student)
    models.teacher_options.backend = "openai"
    with pytest.raises(UserError, match="must be a local model"):
        arte(problems, models, ARTEConfig(), tmp_path / "a")
    with pytest.raises(UserError, match="at least 2 problems"):
        arte(problems[:1], Models.of(teacher, student), ARTEConfig(), tmp_path / "b")


# -- the CLI on tiny-random (with a real DPO step), and SmolLM2 ---------------------------------

FAST = ["--set", "max_new_tokens=8", "--set", "question_max_new_tokens=12", "--set", "probe_max_new_tokens=8",
        "--set", "questions_per_prompt=2", "--set", "styles=[concise, step_by_step]", "--set", "allow_ties=true",
        "--set", "require_answer=false", "--set", "dpo.max_steps=1", "--set", "decontamination.benchmarks=[]"]


def test_cli_on_tiny_random_aligns_the_teacher_and_survives_sigkill_during_dpo(tmp_path):
    import signal
    import subprocess
    import time

    from conftest import CLI

    args = ["generate", "arte", "--teacher", "tiny-random", "--student", "tiny-random", "--data", "rg:chain_sum",
            "--limit", "6", *FAST]
    out = tmp_path / "arte"
    first = run_cli(*args, "--out", out)
    assert first.returncode == 0, first.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["stage"] == "arte"
    summary = manifest["summary"]
    assert summary["probe"] == 3 and summary["aligned"] is True
    assert re.fullmatch(r"teacher_dpo/pairs-[0-9a-f]{16}/(adapter|model)", summary["aligned_teacher"])
    assert (out / summary["aligned_teacher"]).is_dir()
    assert json.loads(((out / summary["aligned_teacher"]).parent / "manifest.json").read_text())["status"] == "complete"
    assert "aligned_teacher" in manifest["usage"]  # the final data came from the aligned checkpoint
    drafts = read_jsonl(out / "drafts.jsonl")
    pairs = read_jsonl(out / "dpo_pairs.jsonl")
    assert len(pairs) == summary["dpo_pairs"] > 0 and all(set(p) >= {"prompt", "chosen", "rejected"} for p in pairs)
    assert manifest["counts"]["probe/answers"] == 3 * sum(len(d["rationales"]) for d in drafts)
    sft = read_jsonl(out / "sft.jsonl")
    assert len(sft) == manifest["counts"]["records/sft.jsonl"] > 0
    assert all(r["messages"][-1]["role"] == "assistant" for r in sft)

    # Kill a second run while the teacher is being trained, re-run: the same records.
    resumed = tmp_path / "resumed"
    proc = subprocess.Popen([*CLI, *map(str, args), "--out", str(resumed)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (resumed / "teacher_dpo").exists() and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.5)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (resumed / "sft.jsonl").exists()
    again = run_cli(*args, "--out", resumed)
    assert again.returncode == 0, again.stderr
    for name in ("drafts.jsonl", "dpo_pairs.jsonl", "sft.jsonl"):
        assert (resumed / name).read_bytes() == (out / name).read_bytes(), name


@pytest.mark.slow
def test_arte_on_smollm2(tmp_path, smollm2_dir):
    """A real teacher and a pruned student through every step, DPO included (ties allowed: a
    12-layer student scores ~0 on every probe, and without pairs nothing would be trained)."""
    out = tmp_path / "arte"
    result = run_cli("generate", "arte", "--teacher", "smollm2-135m", "--student", "smollm2-135m?layers=12",
                     "--data", "rg:chain_sum", "--limit", "4", "--out", out,
                     "--set", "max_new_tokens=64", "--set", "question_max_new_tokens=48",
                     "--set", "probe_max_new_tokens=48", "--set", "questions_per_prompt=2",
                     "--set", "styles=[concise, step_by_step]", "--set", "dpo.max_steps=2",
                     "--set", "require_answer=false", "--set", "allow_ties=true")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    drafts = read_jsonl(out / "drafts.jsonl")
    assert drafts and all(len(d["question"]) >= 10 for d in drafts)
    assert manifest["summary"]["aligned"] is True and manifest["usage"]["aligned_teacher"]["completions"] > 0
    assert len(read_jsonl(out / "sft.jsonl")) == manifest["summary"]["sft_records"]


# -- SIGKILL at random points, re-run, and get exactly the uninterrupted output -----------------

def pure_models(problems, delay: float = 0.0):
    """A scripted teacher and student whose outputs are pure functions of (prompt, sample,
    seed), as a seeded real model's are; the student's one-shot success depends on the
    demonstration, so scores differ and pairs exist."""
    import time
    import zlib

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


PURE_CONFIG = dict(align=False, chunk_size=1, probe_size=3, draft_prompts=4, final_prompts=3,
                   decontamination=NO_BENCHMARKS)
OUTPUTS = ("drafts.jsonl", "probe.jsonl", "dpo_pairs.jsonl", "sft.jsonl")


def test_a_rerun_over_more_problems_equals_a_fresh_run(tmp_path):
    small, large = load_problems("rg:chain_sum", limit=6), load_problems("rg:chain_sum", limit=9)
    arte(small, Models.of(*pure_models(small)), ARTEConfig(**PURE_CONFIG), tmp_path / "grown")
    grown = arte(large, Models.of(*pure_models(large)), ARTEConfig(**PURE_CONFIG), tmp_path / "grown")
    fresh = arte(large, Models.of(*pure_models(large)), ARTEConfig(**PURE_CONFIG), tmp_path / "fresh")
    assert grown["summary"]["dpo_pairs"] > 0 and grown["summary"]["sft_records"] > 0
    for name in OUTPUTS:
        assert (tmp_path / "grown" / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes(), name
    assert grown["counts"] == fresh["counts"]


KILL_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from llm_teach.data import load_problems
from llm_teach.stages.arte import ARTEConfig, arte
from llm_teach.stages.roles import Models
from test_stage_arte import PURE_CONFIG, pure_models

problems = load_problems("rg:chain_sum", limit=12)
arte(problems, Models.of(*pure_models(problems, delay=0.03)), ARTEConfig(**PURE_CONFIG), sys.argv[1])
"""


def test_arte_survives_sigkill_with_identical_records(tmp_path):
    script = tmp_path / "run_arte.py"
    script.write_text(KILL_SCRIPT.format(tests=str(ROOT / "tests")))
    manifest = killed_run_matches_reference(script, tmp_path, OUTPUTS, seed=7)
    assert manifest["summary"]["dpo_pairs"] > 0 and manifest["summary"]["sft_records"] > 0  # every step had work


def test_a_finished_run_rerun_loads_no_model(tmp_path, monkeypatch):
    """Backends are made when a unit needs them: re-running a finished run (as a resume after
    the last unit would) makes none, where it used to load teacher and student up front."""
    import llm_teach.stages.roles as models_module

    problems = load_problems("rg:chain_sum", limit=6)
    teacher, student = pure_models(problems)
    made = []

    def make_backend(spec, options):
        made.append(spec)
        return {"teacher": teacher, "student": student}[spec]

    monkeypatch.setattr(models_module, "make_backend", make_backend)
    first = arte(problems, Models("teacher", "student"), ARTEConfig(**PURE_CONFIG), tmp_path)
    assert sorted(made) == ["student", "teacher"]  # each made once, though many units used them
    made.clear()
    again = arte(problems, Models("teacher", "student"), ARTEConfig(**PURE_CONFIG), tmp_path)
    assert made == []
    assert again["counts"] == first["counts"] and again["usage"] == first["usage"]
    assert first["usage"]["teacher"]["generate_calls"] > 0 and first["usage"]["student"]["generate_calls"] > 0
