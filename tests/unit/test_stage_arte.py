"""ARTE: preference-pair tables, the whole stage with a scripted teacher and student (the
student's preferences controllable). The CLI on tiny-random with a real DPO step is in
tests/integration, SmolLM2 in tests/slow."""

from __future__ import annotations

import re

import pytest

from llm_teach.data import load_problems, read_jsonl
from llm_teach.data.decontam import DecontamConfig
from llm_teach.errors import UserError
from llm_teach.stages.arte import ARTEConfig, arte, split_probe
from llm_teach.stages.arte_pairs import question_pairs, rationale_pair
from llm_teach.stages.arte_prompts import brainstorms, one_shot_prompt
from llm_teach.stages.roles import Models
from scripted_backend import ScriptedBackend
from stage_cases import ARTE_CONFIG, ARTE_OUTPUTS, QUESTIONS, arte_models

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


# -- a re-run over more problems (the stage contract's models: tests/stage_cases.py) ----------

def test_a_rerun_over_more_problems_equals_a_fresh_run(tmp_path):
    small, large = load_problems("rg:chain_sum", limit=6), load_problems("rg:chain_sum", limit=9)
    arte(small, Models.of(*arte_models(small)), ARTEConfig(**ARTE_CONFIG), tmp_path / "grown")
    grown = arte(large, Models.of(*arte_models(large)), ARTEConfig(**ARTE_CONFIG), tmp_path / "grown")
    fresh = arte(large, Models.of(*arte_models(large)), ARTEConfig(**ARTE_CONFIG), tmp_path / "fresh")
    assert grown["summary"]["dpo_pairs"] > 0 and grown["summary"]["sft_records"] > 0
    for name in ARTE_OUTPUTS:
        assert (tmp_path / "grown" / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes(), name
    assert grown["counts"] == fresh["counts"]


