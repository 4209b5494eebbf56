"""STAT: parsing and selection tables, the whole stage with a scripted teacher and student
(outputs controllable). The CLI on tiny-random is in tests/integration, SmolLM2 in tests/slow."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from llm_teach.data import load_problems, read_jsonl
from llm_teach.data.decontam import DecontamConfig
from llm_teach.errors import UserError
from llm_teach.grading import Grade
from llm_teach.stages.parsing import dedupe_skills, match_skills, parse_name_list, parse_problem, parse_skill_file
from llm_teach.stages.roles import Models
from llm_teach.stages.stat import STATConfig, is_difficult, shown_response, stat
from llm_teach.stages.stat_profile import allocate, skill_profile
from llm_teach.stages.stat_sel import select
from llm_teach.stages.stat_syn import agreeing_solutions
from scripted_backend import ScriptedBackend
from stage_cases import STAT_CONFIG, STAT_OUTPUTS, stat_models

NO_BENCHMARKS = DecontamConfig(benchmarks=[])  # the scripted tests do not need GSM8K/MATH-500 loaded


# -- parsing model text -------------------------------------------------------------------------

@pytest.mark.parametrize("text, loose, expected", [
    ('["Addition", "carrying digits"]', False, ["Addition", "carrying digits"]),
    ('Sure! Here:\n```json\n["a b", "c"]\n```', False, ["a b", "c"]),
    ('[{"name": "fractions"}, {"skill": "ratios"}, 3]', False, ["fractions", "ratios"]),
    ("1. **Adding fractions**: combining parts\n2) Ratios - comparing\n- unit conversion.", False,
     ["Adding fractions", "Ratios", "unit conversion"]),
    ("* one\n\u2022 two", False, ["one", "two"]),
    ("[1, 2] then [\"x\"]", False, ["x"]),  # the first list with names wins
    ("the skills are addition and subtraction", False, []),  # prose is not a list
    ("addition, Subtraction; carrying", True, ["addition", "Subtraction", "carrying"]),
    ("- " + "word " * 20, False, []),  # a sentence, not a skill name
    ("", True, []),
    ("[not json", False, []),
])
def test_parse_name_list(text, loose, expected):
    assert parse_name_list(text, loose=loose) == expected


def test_skill_file_forms():
    assert parse_skill_file('["a", "b"]') == ["a", "b"]
    assert parse_skill_file('{"skills": ["a", {"name": "b"}]}') == ["a", "b"]
    assert parse_skill_file("# my list\naddition\n\n- subtraction\n2. long division\n") == [
        "addition", "subtraction", "long division"]


def test_dedupe_and_match_skills():
    skills = dedupe_skills(["Linear equations", "linear_equations", "Fractions", " fractions. ", "Ratios"])
    assert skills == ["Linear equations", "Fractions", "Ratios"]
    matched, unknown = match_skills(["fractions", "LINEAR EQUATIONS", "Fractions", "magic", "ratios"], skills, 2)
    assert matched == ["Fractions", "Linear equations"] and unknown == ["magic"]  # capped, list spelling


@pytest.mark.parametrize("text, expected", [
    ("Problem: A shop sells 3 pens for $2. How much do 12 pens cost?",
     "A shop sells 3 pens for $2. How much do 12 pens cost?"),
    ("**New problem 2:** What is 7 times 8?\n\nSolution: 56", "What is 7 times 8?"),
    ("How many legs do 4 cats have?\n**Answer**: 16", "How many legs do 4 cats have?"),
    ("Example 3:\nA jar has 5 red and 7 blue marbles. How many marbles?", "A jar has 5 red and 7 blue marbles. How many marbles?"),
    ("Problem:", None),
    ("", None),
])
def test_parse_problem(text, expected):
    assert parse_problem(text) == expected


# -- selection logic ----------------------------------------------------------------------------

@pytest.mark.parametrize("profile, total, expected", [
    ({"a": 2, "b": 1, "c": 1}, 8, {"a": 4, "b": 2, "c": 2}),
    ({"a": 1, "b": 1, "c": 1}, 4, {"a": 2, "b": 1, "c": 1}),  # remainder tie: earlier skill
    ({"a": 5, "b": 3}, 3, {"a": 2, "b": 1}),  # 1.875 / 1.125
    ({"a": 1, "b": 9}, 2, {"b": 2}),  # a skill whose quota rounds to 0 is left out
    ({"a": 1}, 0, {}),
    ({}, 5, {}),
])
def test_allocate_is_proportional_and_exact(profile, total, expected):
    quota = allocate(profile, total)
    assert quota == expected and sum(quota.values()) == (total if profile else 0)


def test_profile_orders_by_count_then_skill_list():
    missing = [{"missing": ["b", "c"]}, {"missing": ["c"]}, {"missing": []}, {"missing": ["a", "b"]}]
    assert list(skill_profile(missing, ["a", "b", "c"]).items()) == [("b", 2), ("c", 2), ("a", 1)]


def test_select_is_seeded_cycles_small_pools_and_skips_unlabelled_skills():
    labels = [{"id": f"p{i}", "skills": ["x"] if i < 2 else ["y"]} for i in range(6)]
    picks, counts = select({"x": 3, "y": 1, "z": 2}, labels, 6, seed=0)
    xs = [pid for pid, s in picks if s == "x"]
    assert len(xs) == 3 and set(xs) == {"p0", "p1"} and counts["sel/pool_repeated"] == 1
    assert sorted(Counter(xs).values()) == [1, 2]  # each pass draws without replacement
    assert len([p for p, s in picks if s == "y"]) == 1 and counts["sel/skill_without_problems"] == 1
    assert select({"x": 3, "y": 1, "z": 2}, labels, 6, seed=0) == (picks, counts)


@pytest.mark.parametrize("correct, agreement, expected", [
    (False, 4, (True, "wrong")),
    (True, 1, (True, "inconsistent")),  # the paper's rule: fewer than 2 of K agree
    (True, 2, (False, "solved")),
])
def test_difficulty_rule(correct, agreement, expected):
    assert is_difficult(correct, agreement, 2) == expected
    assert is_difficult(True, 1, 0) == (False, "solved")  # consistency rule off


def G(correct, extracted):
    return Grade(correct, extracted, "boxed")


def test_shown_response_prefers_the_common_answered_mistake():
    grades = [G(True, "5"), G(False, None), G(False, "7"), G(False, "8"), G(False, "7.0")]
    assert shown_response(grades, 5, "majority", "rg:chain_sum") == 2
    assert shown_response([G(False, None), G(True, "5")], 2, "majority", "rg:chain_sum") == 0
    assert shown_response([G(True, "5"), G(False, "4")], 1, "greedy", "rg:chain_sum") == 1  # the greedy one


@pytest.mark.parametrize("answers, expected", [
    (["1,000", "1000.0", "999"], ("1,000", 2)),  # grouped by answer_key
    (["3", "4", "5"], (None, 0)),
    (["3", None, None], (None, 0)),
    (["7", "7", "7"], ("7", 3)),
])
def test_agreeing_solutions(answers, expected):
    completions = [f"work \\boxed{{{a}}}" if a else "no idea" for a in answers]
    answer, kept = agreeing_solutions(completions, "gsm8k", 2)
    assert (answer, len(kept)) == expected
    assert all(c in completions for c in kept)


def test_config_validation():
    with pytest.raises(ValueError, match="min_agreement"):
        STATConfig(student_samples=1)
    with pytest.raises(ValueError, match="syn_min_agree"):
        STATConfig(syn_min_agree=4)


# -- the whole stage with scripted models -------------------------------------------------------

WRITTEN = [  # what the scripted teacher writes for STAT-Syn, in order; answers its solutions give
    ("A baker made 17 loaves and sold 9 of them. How many loaves remain?", ["8", "8", "8"]),
    ("Tom has 45 marbles, gives away 12, then finds 7 more. How many marbles now?", ["40", "40.0", "41"]),
    ("A train carries 120 passengers; 35 leave and 18 board. How many ride on?", ["103", "104", "105"]),
    ("Problem: CONTAMINATED quarterly garden plots each yield ninety one carrots while rabbits steal eleven per plot "
     "every single week of the season", ["1", "1", "1"]),
]


def _scripted(problems):
    """Student on problem k: 0 always right; 1 always the same wrong answer; 2 four different
    answers (the first right: majority right, but inconsistent); 3 three of four right;
    4 two wrong then two right (the tie goes to the wrong one); 5 never answers.
    Teacher: proposes 4 skills (one a duplicate), labels even problems with addition/carrying and
    odd ones with subtraction, judges the difficult ones, solves every original problem but #3,
    and writes WRITTEN in order."""
    gold = {p.question: int(p.answer) for p in problems}
    index = {p.question: k % 6 for k, p in enumerate(problems)}  # pool k and diagnosis problem k: one plan
    written = iter(WRITTEN)
    solutions = {}

    def find(text):
        return next(q for q in gold if q in text)

    def teacher(text, i, seed):
        if "List the distinct skills" in text:
            return "Here you go:\n1. **Addition**: adding\n2. Subtraction\n- addition\n* Carrying digits"
        if "Which of the skills above" in text:
            return '["addition", "carrying digits", "nonsense"]' if index[find(text)] % 2 == 0 else "Subtraction, Addition"
        if "Decide which skills the student is missing" in text:
            return {1: "1. Carrying digits\n2. Made-up skill", 2: '["Subtraction"]',
                    4: '["carrying digits", "subtraction"]', 5: "nothing to say"}[index[find(text)]]
        if "Write one new problem" in text:
            question, answers = next(written)
            solutions[question.removeprefix("Problem: ")] = answers
            return question + "\n\nSolution: not shown"
        for question, answers in solutions.items():
            if question in text:
                return f"Working... so \\boxed{{{answers[i]}}}"
        k = index[find(text)]
        return f"\\boxed{{{gold[find(text)] + (5 if k == 3 else 0)}}}"

    def student(text, i, seed):
        g = gold[find(text)]
        plan = {0: [g] * 4, 1: [g + 1] * 4, 2: [g, g + 1, g + 2, g + 3], 3: [g, g, g + 1, g],
                4: [g + 1, g + 1, g, g], 5: [None] * 4}[index[find(text)]]
        return "I am not sure." if plan[i] is None else f"so \\boxed{{{plan[i]}}}"

    return ScriptedBackend(teacher, "teacher-model"), ScriptedBackend(student, "student-model")


def test_stat_end_to_end_with_scripted_models(tmp_path):
    problems, diagnosis = load_problems("rg:chain_sum", limit=12)[:6], load_problems("rg:chain_sum", limit=12)[6:]
    diagnose = tmp_path / "diagnose.jsonl"
    diagnose.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in diagnosis))
    contaminated = WRITTEN[3][0].removeprefix("Problem: ")
    ref = tmp_path / "heldout.jsonl"
    ref.write_text(json.dumps({"question": contaminated, "answer": "1"}) + "\n")
    teacher, student = _scripted(problems + diagnosis)
    config = STATConfig(syn_size=4, chunk_size=4, decontamination=DecontamConfig(benchmarks=[], paths=[str(ref)]),
                        diagnose=str(diagnose))
    manifest = stat(problems, Models.of(teacher, student), config, tmp_path / "out")
    out = tmp_path / "out"
    c = manifest["counts"]

    skills = json.loads((out / "skills.json").read_text())
    assert skills["skills"] == ["Addition", "Subtraction", "Carrying digits"] and skills["source"] == "teacher"
    labels = read_jsonl(out / "labels.jsonl")
    assert labels[0] == {"id": problems[0].id, "skills": ["Addition", "Carrying digits"], "unknown": ["nonsense"]}
    assert labels[1]["skills"] == ["Subtraction", "Addition"]

    answers = {a["id"]: a for a in read_jsonl(out / "answers.jsonl")}
    reasons = [answers[p.id]["reason"] for p in diagnosis]
    assert reasons == ["solved", "wrong", "inconsistent", "solved", "wrong", "wrong"]
    assert answers[diagnosis[2].id]["agreement"] == 1 and answers[diagnosis[2].id]["decided_correct"] is True
    assert c["answers/wrong"] == 3 and c["answers/inconsistent"] == 1 and c["judge/problems"] == 4

    missing = {m["id"]: m for m in read_jsonl(out / "missing.jsonl")}
    assert missing[diagnosis[1].id] == {"id": diagnosis[1].id, "missing": ["Carrying digits"],
                                        "unknown": ["Made-up skill"]}
    assert missing[diagnosis[5].id]["missing"] == [] and c["missing/no_skill"] == 1
    profile = json.loads((out / "profile.json").read_text())
    assert list(profile["skills"].items()) == [("Subtraction", 2), ("Carrying digits", 2)]
    assert profile["sel_quota"] == {"Subtraction": 3, "Carrying digits": 3} and profile["difficult"] == 4
    assert profile["syn_quota"] == {"Subtraction": 2, "Carrying digits": 2}

    sft = read_jsonl(out / "sft.jsonl")
    sel = [r for r in sft if r["origin"] == "sel"]
    # 3 + 3 picks over the pools {1,3,5} and {0,2,4}; #3 has no worked solution and the teacher fails it
    assert len(sel) == 5 and c["rejected/sel_no_correct_solution"] == 1 and c["sel/teacher_failed"] == 1
    assert {r["problem_id"] for r in sel} == {problems[k].id for k in (0, 1, 2, 4, 5)}
    for record in sel:
        problem = next(p for p in problems if p.id == record["problem_id"])
        assert record["messages"][0]["role"] == "user" and problem.question in record["messages"][0]["content"]
        assert "\\boxed{}" in record["messages"][0]["content"]  # the evaluation prompt
        assert record["messages"][1] == {"role": "assistant", "content": f"\\boxed{{{problem.answer}}}"}

    synthetic = read_jsonl(out / "synthetic.jsonl")
    assert [(s["question"], s["answer"]) for s in synthetic] == [(WRITTEN[0][0], "8"), (WRITTEN[1][0], "40")]
    assert synthetic[0]["meta"]["skill"] == "Subtraction" and synthetic[0]["meta"]["agreement"] == 3
    syn = [r for r in sft if r["origin"] == "syn"]
    assert len(syn) == 5  # all 3 agreeing solutions of the first, the 2 agreeing ones of the second
    assert all("41" not in r["messages"][1]["content"] for r in syn)
    assert c["rejected/syn_no_agreement"] == 1 and c["rejected/contaminated"] == 1
    assert c[f"decontamination/dropped/{ref}"] == 1 and manifest["decontamination"] == {str(ref): 1}
    assert c["records/sft.jsonl"] == 10 and manifest["summary"]["syn_problems"] == 2

    assert set(manifest["prompts"]) == {"eval/boxed.jinja", "stat/label.jinja", "stat/judge.jinja", "stat/free_label.jinja",
                                        "stat/skills.jinja", "stat/synthesize.jinja"}
    assert manifest["usage"]["student"]["completions"] == 24 and manifest["status"] == "complete"

    # Re-running the finished stage calls no model and rewrites the same records.
    calls = len(teacher.calls) + len(student.calls)
    before = {name: (out / name).read_text() for name in ("sft.jsonl", "labels.jsonl", "profile.json")}
    again = stat(problems, Models.of(teacher, student), config, out)
    assert len(teacher.calls) + len(student.calls) == calls and again["counts"] == manifest["counts"]
    assert {name: (out / name).read_text() for name in before} == before


def test_skills_file_and_sel_only(tmp_path):
    problems = load_problems("rg:chain_sum", limit=4)
    skills = tmp_path / "skills.txt"
    skills.write_text("- Addition\n- Subtraction\n")
    teacher, student = _scripted(problems)
    config = STATConfig(mode="sel", skills_file=str(skills), decontamination=NO_BENCHMARKS)
    manifest = stat(problems, Models.of(teacher, student), config, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "skills.json").read_text())["skills"] == ["Addition", "Subtraction"]
    assert not any("List the distinct skills" in text for _, text in teacher.calls)
    assert not any("Write one new problem" in text for _, text in teacher.calls)
    assert "stat/skills.jinja" not in manifest["prompts"] and manifest["inputs"]["skills_file"].startswith("sha256:")
    assert all(r["origin"] == "sel" for r in read_jsonl(tmp_path / "out" / "sft.jsonl"))
    with pytest.raises(UserError, match="skills file not found"):
        stat(problems, Models.of(teacher, student), STATConfig(skills_file=str(tmp_path / "none.txt")), tmp_path / "x")


# -- a re-run over more problems (the stage contract's models: tests/stage_cases.py) ----------

def test_a_rerun_over_more_problems_equals_a_fresh_run(tmp_path):
    """Steps computed from earlier results are keyed by them: a second run in the same OUT with
    a larger --limit redoes what changed and ends exactly where a fresh run over all ends."""
    small, large = load_problems("rg:chain_sum", limit=4), load_problems("rg:chain_sum", limit=7)
    stat(small, Models.of(*stat_models(small)), STATConfig(**STAT_CONFIG), tmp_path / "grown")
    grown = stat(large, Models.of(*stat_models(large)), STATConfig(**STAT_CONFIG), tmp_path / "grown")
    fresh = stat(large, Models.of(*stat_models(large)), STATConfig(**STAT_CONFIG), tmp_path / "fresh")
    assert grown["summary"]["sft_records"] > 0 and grown["summary"]["syn_records"] > 0
    for name in STAT_OUTPUTS:
        assert (tmp_path / "grown" / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes(), name
    assert grown["counts"] == fresh["counts"]


