"""Stage fidelity (issue 12): the rules the stages take from their papers and reference code,
pinned with scripted backends (no model). One section per rule; each says where it comes from."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from llm_teach.data import load_problems, read_jsonl
from llm_teach.data.decontam import DecontamConfig, Decontaminator
from llm_teach.errors import UserError
from llm_teach.evaluation import majority_correct
from llm_teach.grading.voting import answer_groups, majority_vote
from llm_teach.stages.stat_syn import agreeing_solutions


# -- answer equivalence wherever answers are grouped --------------------------------------------

@pytest.mark.parametrize("benchmark, answers, groups", [
    ("math", ["\\sqrt2", "\\sqrt{2}", "2"], [0, 0, 2]),  # not one key: math-verify joins them
    ("math", ["0.5", "\\frac12", "\\dfrac{1}{2}", "1/2", "2"], [0, 0, 0, 0, 4]),
    ("math", ["(x+1)^2", "x^2+2x+1", "x^2+1"], [0, 0, 2]),
    ("math", ["[0,1)", "[0,1]"], [0, 1]),  # equivalence is not leniency
    ("gsm8k", ["1,000", "$1000", "1000.0", "18 dollars", "18"], [0, 0, 0, 3, 3]),
    ("rg:chain_sum", ["-4", "-4.0", "4", None], [0, 0, 2, None]),
])
def test_equivalent_spellings_group_together(benchmark, answers, groups):
    assert answer_groups(answers, benchmark) == groups


def test_votes_count_equivalent_spellings_as_one_answer():
    # text equality would see four answers of one vote each and let the first ("3") win
    assert majority_vote(["3", "\\sqrt2", "\\sqrt{2}", "\\sqrt{ 2 }"], "math") == (1, 3)
    # maj@k: the right answer, spelled three ways, outvotes a wrong one given twice
    item = {"answers": ["7", "0.5", "\\frac12", "7", "\\tfrac{1}{2}"], "correct": [False, True, True, False, True]}
    assert majority_correct(item, "math500") is True
    # STAT-Syn's 2-of-3 agreement keeps both solutions that spell the answer differently
    answer, kept = agreeing_solutions(["so \\boxed{\\sqrt2}", "\\boxed{3}", "hence \\boxed{\\sqrt{2}}"], "math", 2)
    assert answer == "\\sqrt2" and kept == ["so \\boxed{\\sqrt2}", "hence \\boxed{\\sqrt{2}}"]


# -- decontamination is not optional by accident -----------------------------------------------

def _offline(monkeypatch, tmp_path):
    """A machine without local benchmark copies and without the Hub."""
    import llm_teach.data.decontam as decontam
    import llm_teach.data.problems as problems

    def no_hub(name, split, limit):
        raise UserError(f"cannot load '{name}' from the Hugging Face Hub (ConnectionError)")

    monkeypatch.setattr(decontam, "shared_data_dir", lambda: tmp_path / "no-shared-data")
    monkeypatch.setattr(problems, "load_hub", no_hub)


def test_an_unloadable_decontamination_set_stops_the_run(monkeypatch, tmp_path):
    from llm_teach.stages.roles import Models
    from llm_teach.stages.stat import STATConfig, stat
    from scripted_backend import ScriptedBackend

    _offline(monkeypatch, tmp_path)
    with pytest.raises(UserError, match=r"gsm8k.*--no-decontaminate"):
        Decontaminator.from_config(DecontamConfig())
    model = ScriptedBackend(lambda text, i, seed: "\\boxed{1}")
    problems = load_problems("rg:chain_sum", limit=4)
    with pytest.raises(UserError, match=r"gsm8k.*--no-decontaminate"):
        stat(problems, Models.of(model, model), STATConfig(mode="syn", chunk_size=4), tmp_path / "out")
    assert not model.calls and not (tmp_path / "out" / "sft.jsonl").exists()  # stopped before any work

    index, report = Decontaminator.from_config(DecontamConfig(enabled=False))
    assert index.match("anything at all, however long it is") is None and "no-decontaminate" in report["disabled"]


def test_proceeding_without_decontamination_is_recorded_in_the_manifest(monkeypatch, tmp_path):
    from llm_teach.stages.roles import Models
    from llm_teach.stages.stat import STATConfig, stat
    from scripted_backend import ScriptedBackend

    _offline(monkeypatch, tmp_path)
    model = ScriptedBackend(lambda text, i, seed: "\\boxed{1}")
    problems = load_problems("rg:chain_sum", limit=4)
    manifest = stat(problems, Models.of(model, model),
                    STATConfig(mode="syn", chunk_size=4, decontamination=DecontamConfig(enabled=False)), tmp_path / "o")
    assert "no-decontaminate" in manifest["decontamination"]["disabled"]
    assert manifest["config"]["decontamination"]["enabled"] is False


# -- SSB: a problem without an answered mistake is skipped (reference logit_gen.py) ---------------

def test_ssb_skips_problems_whose_wrong_rollouts_have_no_answer(tmp_path):
    from llm_teach.stages.roles import Models
    from llm_teach.stages.ssb import SSBConfig, ssb
    from scripted_backend import ScriptedBackend

    problems = load_problems("rg:chain_sum", limit=4)
    gold = {p.question: int(p.answer) for p in problems}
    truncated = {problems[0].question, problems[2].question}  # their mistakes never reach an answer

    def respond(text, i, seed):
        question = next(q for q in gold if q in text)
        g = gold[question]
        if "CORRECT" in text:
            return f"Careful steps. \\boxed{{{g}}}"
        if i == 0:
            return f"so \\boxed{{{g}}}"
        return "Let me add these up one at a time and" if question in truncated else f"so \\boxed{{{g + 1}}}"

    manifest = ssb(problems, Models.of(ScriptedBackend(respond)), SSBConfig(rollouts=3, chunk_size=4, top_k=2),
                   tmp_path)
    records = read_jsonl(tmp_path / "records.jsonl")
    assert sorted(r["id"] for r in records) == sorted([problems[1].id, problems[3].id])
    assert manifest["counts"]["rejected/no_answered_mistake"] == 2
    assert manifest["summary"]["skipped_no_answered_mistake"] == 2
    assert all(str(gold[p.question] + 1) in r["teacher_prompt"][0]["content"]
               for r in records for p in problems if p.id == r["id"])


# -- LLM2LLM: augment units are keyed by the student's completion and the round's model ----------

class _AnyModel(dict):
    """Models' backend cache that answers for every spec: the scripted teacher for the teacher,
    a scripted student for any checkpoint (whose answers depend on which checkpoint it is)."""

    def __init__(self, teacher, student_for):
        super().__init__()
        self.teacher, self.student_for = teacher, student_for

    def __contains__(self, key):
        return True

    def __getitem__(self, key):
        return self.teacher if key[0] == "scripted-teacher" else self.student_for(key[0])

    def pop(self, *args):
        return None


def _llm2llm_models(monkeypatch, prompts, seeds):
    """A scripted teacher (records the student answers it was shown) and students that answer
    every seed wrong with a value that depends on the checkpoint; training is skipped -- each
    round's 'model' is named after its training directory, i.e. after the data it trained on."""
    import llm_teach.launch as launch
    from llm_teach.runs.hashing import content_hash
    from llm_teach.stages.roles import Models
    from scripted_backend import ScriptedBackend

    monkeypatch.setattr(launch, "train_model", lambda method, values, out, launch_=None: f"ckpt-{out.name}")

    truth: dict[str, int] = {}

    def teacher(text, i, seed):
        if "Write ONE new practice problem" in text:
            k = next(j for j, s in enumerate(seeds) if s.question in text)
            shown = int(text.split("(final answer: ")[-1].split(")")[0])
            question = f"Seed {k}: Lena had {shown} pens and got 2 more; how many now?"
            truth[question] = shown + 2
            return f"Question: {question}\nSolution: {shown} + 2, so \\boxed{{{shown + 2}}}"
        return f"\\boxed{{{next(v for q, v in truth.items() if q in text)}}}"

    def student_for(spec):
        wrong = 1000 + int(content_hash(spec)[:4], 16) % 997
        return ScriptedBackend(lambda text, i, seed: f"I get \\boxed{{{wrong}}}", model=spec)

    scripted_teacher = ScriptedBackend(lambda text, i, seed: prompts.append(text) or teacher(text, i, seed),
                                       model="scripted-teacher")
    models = Models(teacher="scripted-teacher", student="scripted-student")
    models._made = _AnyModel(scripted_teacher, student_for)
    return models


def test_llm2llm_rerun_with_another_students_answers_regenerates(monkeypatch, tmp_path):
    from llm_teach.stages.llm2llm import LLM2LLMConfig, llm2llm

    seeds = load_problems("rg:chain_sum", limit=4)
    config = LLM2LLMConfig(rounds=1, decontamination=DecontamConfig(benchmarks=[]), chunk_size=2,
                           near_duplicate_rouge_l=1.0)
    prompts: list[str] = []
    llm2llm(seeds[:3], _llm2llm_models(monkeypatch, prompts, seeds), config, tmp_path / "grown")
    first = {p["meta"]["seed"]: p["question"] for p in read_jsonl(tmp_path / "grown" / "problems.jsonl")[3:]}
    # a grown --limit: the round trains on other data, so its student answers the old seeds differently
    llm2llm(seeds, _llm2llm_models(monkeypatch, prompts, seeds), config, tmp_path / "grown")
    llm2llm(seeds, _llm2llm_models(monkeypatch, [], seeds), config, tmp_path / "fresh")
    grown = read_jsonl(tmp_path / "grown" / "problems.jsonl")
    assert grown == read_jsonl(tmp_path / "fresh" / "problems.jsonl")  # a resumed run equals a fresh one
    regenerated = {p["meta"]["seed"]: p["question"] for p in grown[4:]}
    assert set(regenerated) == {s.id for s in seeds}
    assert all(regenerated[s] != first[s] for s in first)  # made from the new model's mistakes
    assert len([t for t in prompts if "Write ONE" in t]) == 3 + 4


# -- ARTE: a final rationale is kept only when independent re-solves confirm its answer ----------

def test_arte_drops_a_final_rationale_whose_answer_is_wrong(tmp_path):
    from llm_teach.stages.arte import ARTEConfig, arte
    from llm_teach.stages.roles import Models
    from scripted_backend import ScriptedBackend

    problems = load_problems("rg:chain_sum", limit=6)
    questions = iter(f"Mia has {n} stamps and buys {n + 1} more. How many stamps now?" for n in range(10, 400))

    def teacher(text, i, seed):
        if "Write one new question" in text:
            return f"Question: {next(questions)}"
        n = int(text.split("Mia has ")[1].split()[0]) if "Mia has" in text else 0
        right = 2 * n + 1
        # the first sample of a call (the rationale, and one of 3 re-solves) is wrong for even n
        if n % 2 == 0 and i == 0:
            return f"{n} + {n + 1} = {right + 3}, so \\boxed{{{right + 3}}}"
        return f"{n} + {n + 1} = {right}, so \\boxed{{{right}}}"

    def student(text, i, seed):
        return "\\boxed{0}"

    models = Models.of(ScriptedBackend(teacher, "teacher-model"), ScriptedBackend(student, "student-model"))
    config = ARTEConfig(align=False, chunk_size=4, styles=["concise"], draft_prompts=1, final_prompts=2,
                        questions_per_prompt=4, near_duplicate_rouge_l=1.0,
                        decontamination=DecontamConfig(benchmarks=[]))
    manifest = arte(problems, models, config, tmp_path)
    sft = read_jsonl(tmp_path / "sft.jsonl")
    numbers = [int(r["question"].split("Mia has ")[1].split()[0]) for r in sft]
    assert sft and all(n % 2 == 1 for n in numbers)  # the wrong (even) ones are gone ...
    assert all(r["answer"] == str(2 * n + 1) for r, n in zip(sft, numbers))  # ... the kept ones are right
    assert manifest["counts"]["rejected/final_disagrees"] == 4 == len(sft)  # 8 written: 4 even, 4 odd


# -- ARTE: discriminative probe questions from --probe SOURCE -------------------------------------

def test_arte_keeps_the_probe_questions_whose_accuracy_depends_on_the_demonstration(tmp_path):
    from llm_teach.stages.arte import ARTEConfig, arte
    from llm_teach.stages.roles import Models
    from scripted_backend import ScriptedBackend

    problems = load_problems("rg:chain_sum", limit=4)
    candidates = [{"id": f"c{i}", "question": f"Probe {i}: what is {i} + {i}?", "answer": str(2 * i)}
                  for i in range(6)]
    probe_file = tmp_path / "probe.jsonl"
    probe_file.write_text("".join(json.dumps(c) + "\n" for c in candidates))
    first_seed = problems[0].question

    def student(text, i, seed):
        k = int(text.rsplit("Probe ", 1)[1].split(":")[0])
        # c0, c1 always right, c2, c3 never; c4, c5 right only after the first seed's demonstration
        right = k < 2 or (k >= 4 and first_seed in text)
        return f"\\boxed{{{2 * k if right else -1}}}"

    def teacher(text, i, seed):
        return "Question: How many legs do 3 cats have?" if "Write one new question" in text else "\\boxed{12}"

    models = Models.of(ScriptedBackend(teacher, "teacher-model"), ScriptedBackend(student, "student-model"))
    config = ARTEConfig(align=False, probe=str(probe_file), probe_size=2, probe_demos=4, chunk_size=4,
                        draft_prompts=1, final_prompts=1, questions_per_prompt=1, styles=["concise"],
                        decontamination=DecontamConfig(benchmarks=[]))
    manifest = arte(problems, models, config, tmp_path / "out")
    assert manifest["summary"]["probe_ids"] == ["c4", "c5"] and manifest["summary"]["seeds"] == 4
    assert [p["id"] for p in read_jsonl(tmp_path / "out" / "probe.jsonl")] == ["c4", "c5"]
    selection = {r["id"]: r for r in read_jsonl(tmp_path / "out" / "probe_selection.jsonl")}
    assert selection["c4"]["discrimination"] == pytest.approx(0.25 * 0.75)
    assert selection["c0"]["discrimination"] == 0 and not selection["c0"]["selected"]


# -- STAT: the skill catalog comes from the labels of all problems (Didolkar et al. 2024) ---------

def test_stat_catalog_comes_from_the_free_labels_of_all_problems(tmp_path):
    from llm_teach.stages.roles import Models
    from llm_teach.stages.stat import STATConfig, stat
    from scripted_backend import ScriptedBackend

    problems = load_problems("rg:chain_sum", limit=50)  # 10 held out for diagnosis, a pool of 40 (> a sample of 32)
    index = {p.question: k for k, p in enumerate(problems)}
    shown: list[str] = []

    def teacher(text, i, seed):
        if "Name the skills a student needs" in text:
            k = next(v for q, v in index.items() if q in text)
            # every problem has its own skill; odd ones spell the even one before them differently
            return json.dumps([f"Skill {k // 2} variants" if k % 2 else f"skill {k // 2} variant", "Adding"])
        if "List the distinct skills" in text:
            shown.append(text)
            return json.dumps(["Adding numbers", "Skill family"])
        if "Which of the skills above" in text:
            return '["adding numbers", "skill 3 variant"]'
        return "\\boxed{0}"

    def student(text, i, seed):
        k = next(v for q, v in index.items() if q in text)
        return f"\\boxed{{{problems[k].answer}}}"

    config = STATConfig(mode="sel", chunk_size=8, decontamination=DecontamConfig(benchmarks=[]))
    stat(problems, Models.of(ScriptedBackend(teacher, "t"), ScriptedBackend(student, "s")), config, tmp_path)
    catalog = json.loads((tmp_path / "skills.json").read_text())
    pool = [index[p.question] for p in problems if p.id in {r["id"] for r in read_jsonl(tmp_path / "free_labels.jsonl")}]
    assert len(pool) == 40
    expected = Counter(k // 2 for k in pool)  # "Skill 3 variants" and "skill 3 variant" are one name
    first = {}
    for k in pool:
        first.setdefault(k // 2, f"Skill {k // 2} variants" if k % 2 else f"skill {k // 2} variant")
    merged = {m["name"]: m["count"] for m in catalog["merged_names"]}
    assert merged == {"Adding": 40, **{first[j]: n for j, n in expected.items()}}
    (prompt,) = shown
    assert all(f"- {name}\n" in prompt for name in first.values())  # the teacher clustered every label
    assert catalog["skills"] == ["Adding numbers", "Skill family"]
    labels = read_jsonl(tmp_path / "labels.jsonl")
    assert all(r["skills"] == ["Adding numbers"] and r["unknown"] == ["skill 3 variant"] for r in labels)


# -- STAT: difficult problems are found on a diagnosis set the Sel pool never contains -------------

def _stat_models(problems):
    from scripted_backend import ScriptedBackend

    gold = {p.question: p.answer for p in problems}

    def teacher(text, i, seed):
        if "List the distinct skills" in text:
            return '["Adding"]'
        if "Name the skills" in text or "Which of the skills above" in text or "Decide which skills" in text:
            return '["Adding"]'
        return f"\\boxed{{{next((a for q, a in gold.items() if q in text), 0)}}}"  # solves Sel problems

    def student(text, i, seed):
        return "\\boxed{123456789}"  # always wrong: every diagnosed problem is difficult

    return ScriptedBackend(teacher, "t"), ScriptedBackend(student, "s")


@pytest.mark.parametrize("explicit", [False, True])
def test_stat_diagnosis_set_and_sel_pool_never_overlap(tmp_path, explicit):
    from llm_teach.stages.roles import Models
    from llm_teach.stages.stat import STATConfig, stat

    problems = load_problems("rg:chain_sum", limit=10)
    diagnose = None
    if explicit:  # a --diagnose file that shares two problems with --data (one by id, one by question)
        diagnose = tmp_path / "val.jsonl"
        rows = [problems[0].to_dict(), {**problems[1].to_dict(), "id": "val-1"},
                *[p.to_dict() for p in load_problems("rg:chain_sum", limit=14)[10:]]]
        diagnose.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = STATConfig(mode="sel", chunk_size=4, decontamination=DecontamConfig(benchmarks=[]),
                        diagnose=str(diagnose) if diagnose else None)
    manifest = stat(problems, Models.of(*_stat_models(problems)), config, tmp_path / "out")
    diagnosed = {a["id"] for a in read_jsonl(tmp_path / "out" / "answers.jsonl")}
    questions = {p.id: p.question for p in load_problems("rg:chain_sum", limit=14)} | {"val-1": problems[1].question}
    pool = {r["id"] for r in read_jsonl(tmp_path / "out" / "labels.jsonl")}
    selected = {r["problem_id"] for r in read_jsonl(tmp_path / "out" / "sft.jsonl")}
    assert selected and selected <= pool  # Sel had work, from the pool only
    assert not diagnosed & pool and not {questions[i] for i in diagnosed} & {questions[i] for i in pool}
    assert manifest["diagnosis"]["problems"] == len(diagnosed)
    if explicit:
        assert len(diagnosed) == 6 and pool == {p.id for p in problems[2:]}
        assert manifest["diagnosis"]["source"] == str(diagnose) and manifest["diagnosis"]["removed_from_pool"] == 2
    else:
        assert len(diagnosed) == 2 and len(pool) == 8 and "held-out" in manifest["diagnosis"]["source"]
