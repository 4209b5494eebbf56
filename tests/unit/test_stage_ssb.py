"""SSB: selection logic with a scripted model (tiny-random and the CLI: tests/integration)."""

from __future__ import annotations

import pytest

from llm_teach.data import load_problems, read_jsonl
from llm_teach.data.logit_store import TopKLogitStore
from llm_teach.stages.roles import Models
from llm_teach.stages.ssb import SSBConfig, _Graded, pick_pair, ssb
from scripted_backend import ScriptedBackend


def G(correct, extracted, key=None):
    return _Graded(correct, extracted, key if key is not None else extracted)


@pytest.mark.parametrize("grades, expected", [
    ([G(True, "5"), G(True, "5")], None),  # nothing wrong
    ([G(False, "4"), G(False, None)], None),  # nothing right
    ([G(False, "4"), G(True, "5"), G(False, "7"), G(False, "7")], (1, 2)),  # most common wrong answer
    ([G(False, None), G(False, None), G(False, "4"), G(True, "5")], (3, 2)),  # an answered mistake beats no answer
    ([G(False, None), G(True, "5")], None),  # only unanswered mistakes: skipped, as in the reference
    ([G(False, "4"), G(False, "7"), G(True, "5")], (2, 0)),  # tie: first seen
    ([G(False, "1,000", "1000"), G(False, "9"), G(False, "1000.0", "1000"), G(True, "5")], (3, 0)),  # grouped by key
])
def test_pick_pair(grades, expected):
    assert pick_pair(["x"] * len(grades), grades) == expected


def _scripted_model(problems, explain_ok, finish_reason="stop"):
    """Five rollouts per problem: right, gold+2, gold+1, right, gold+1 -- so the most common
    wrong answer (gold+1) is not the first wrong one. An explanation is right when `explain_ok`."""
    gold = {p.question: int(p.answer) for p in problems}

    def respond(text, i, seed):
        question = next(q for q in gold if q in text)
        g = gold[question]
        if "CORRECT" in text:
            ok = explain_ok(question)
            return f"Careful steps for the sum. \\boxed{{{g if ok else g + 10}}}"
        return [f"so \\boxed{{{g}}}", f"oops \\boxed{{{g + 2}}}", f"hmm \\boxed{{{g + 1}}}",
                f"fine \\boxed{{{g}}}", f"again \\boxed{{{g + 1}}}"][i]

    return ScriptedBackend(respond, finish_reason=finish_reason)


def test_ssb_selects_explains_and_emits_distill_records(tmp_path):
    problems = load_problems("rg:chain_sum", limit=6)
    bad_explanation = problems[1].question
    model = _scripted_model(problems, explain_ok=lambda q: q != bad_explanation)
    manifest = ssb(problems, Models.of(model), SSBConfig(rollouts=5, chunk_size=4, top_k=3), tmp_path)

    records = read_jsonl(tmp_path / "records.jsonl")
    assert [r["id"] for r in records] == [p.id for i, p in enumerate(problems) if i != 1]
    assert manifest["counts"]["rejected/explanation_wrong"] == 1
    assert manifest["counts"]["kept"] == 5 and manifest["counts"]["records/records.jsonl"] == 5
    store = TopKLogitStore(tmp_path / "logits")
    for record, problem in zip(records, [p for i, p in enumerate(problems) if i != 1]):
        # student view: the bare problem as chat messages, no hint anywhere
        assert record["prompt"] == [{"role": "user", "content": record["prompt"][0]["content"]}]
        assert problem.question in record["prompt"][0]["content"] and "CORRECT" not in record["prompt"][0]["content"]
        hinted = record["teacher_prompt"][0]["content"]
        wrong = int(problem.answer) + 1  # the most common wrong answer (2 of 5 rollouts)
        assert f"final answer {wrong}" in hinted and "oops" not in hinted and f"\\boxed{{{problem.answer}}}" in hinted
        # the explanation, then the teacher's end of turn: the store covers the stopping position
        assert record["completion"] == f"Careful steps for the sum. \\boxed{{{problem.answer}}}" + model.end_of_turn
        arrays = store.get(record["logits_ref"])
        assert arrays.topk_ids.shape == (len(record["completion"].split()), 3 + store.samples)  # top-k, tail samples
    assert [text for kind, text in model.calls if kind == "score"] == [r["completion"] for r in records]
    rollouts = read_jsonl(tmp_path / "rollouts.jsonl")
    assert len(rollouts) == 6 and rollouts[0]["correct"] == [True, False, False, True, False]
    assert manifest["usage"]["teacher"]["score_calls"] == 2  # one per unit with kept problems


def test_ssb_adds_no_end_of_turn_to_an_explanation_cut_by_the_budget(tmp_path):
    # an explanation that ran out of tokens did not end: the student must not learn to stop there
    problems = load_problems("rg:chain_sum", limit=2)
    model = _scripted_model(problems, explain_ok=lambda q: True, finish_reason="length")
    ssb(problems, Models.of(model), SSBConfig(rollouts=5, top_k=3), tmp_path)
    records = read_jsonl(tmp_path / "records.jsonl")
    assert len(records) == 2
    assert all(r["completion"].endswith(f"\\boxed{{{p.answer}}}") for r, p in zip(records, problems))
    scored = [text for kind, text in model.calls if kind == "score"]
    assert scored == [r["completion"] for r in records]


def test_ssb_drops_problems_without_both_right_and_wrong(tmp_path):
    problems = load_problems("rg:chain_sum", limit=3)
    gold = {p.question: p.answer for p in problems}
    always_right = ScriptedBackend(lambda text, i, seed: f"\\boxed{{{next(a for q, a in gold.items() if q in text)}}}")
    manifest = ssb(problems, Models.of(always_right), SSBConfig(), tmp_path / "right")
    assert manifest["counts"]["rejected/all_correct"] == 3 and read_jsonl(tmp_path / "right" / "records.jsonl") == []
    always_wrong = ScriptedBackend(lambda text, i, seed: "no idea")
    manifest = ssb(problems, Models.of(always_wrong), SSBConfig(), tmp_path / "wrong")
    assert manifest["counts"]["rejected/all_wrong"] == 3
