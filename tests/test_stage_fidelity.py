"""Stage fidelity (issue 12): the rules the stages take from their papers and reference code,
pinned with scripted backends (no model). One section per rule; each says where it comes from."""

from __future__ import annotations

import json

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
