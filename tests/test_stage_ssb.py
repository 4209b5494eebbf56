"""SSB: selection logic with a scripted model, plumbing with tiny-random, the CLI, and SmolLM2."""

from __future__ import annotations

import json
import re

import pytest

from conftest import run_cli
from llm_teach.data import load_problems, read_jsonl
from llm_teach.data.logit_store import TopKLogitStore
from llm_teach.stages.roles import Models
from llm_teach.stages.ssb import LogitSink, SSBConfig, _Graded, pick_pair, ssb
from scripted_backend import ScriptedBackend

FAST = ["--set", "max_new_tokens=16", "--set", "explain_max_new_tokens=16", "--set", "chunk_size=4"]


def G(correct, extracted, key=None):
    return _Graded(correct, extracted, key if key is not None else extracted)


@pytest.mark.parametrize("grades, expected", [
    ([G(True, "5"), G(True, "5")], None),  # nothing wrong
    ([G(False, "4"), G(False, None)], None),  # nothing right
    ([G(False, "4"), G(True, "5"), G(False, "7"), G(False, "7")], (1, 2)),  # most common wrong answer
    ([G(False, None), G(False, None), G(False, "4"), G(True, "5")], (3, 2)),  # an answered mistake beats no answer
    ([G(False, None), G(True, "5")], (1, 0)),  # only unanswered mistakes: still a pair
    ([G(False, "4"), G(False, "7"), G(True, "5")], (2, 0)),  # tie: first seen
    ([G(False, "1,000", "1000"), G(False, "9"), G(False, "1000.0", "1000"), G(True, "5")], (3, 0)),  # grouped by key
])
def test_pick_pair(grades, expected):
    assert pick_pair(["x"] * len(grades), grades) == expected


def _scripted_model(problems, explain_ok):
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

    return ScriptedBackend(respond)


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
        assert record["completion"].endswith(f"\\boxed{{{problem.answer}}}")
        arrays = store.get(record["logits_ref"])
        assert arrays.topk_ids.shape == (len(record["completion"].split()), 3 + store.samples)  # top-k, tail samples
    rollouts = read_jsonl(tmp_path / "rollouts.jsonl")
    assert len(rollouts) == 6 and rollouts[0]["correct"] == [True, False, False, True, False]
    assert manifest["usage"]["teacher"]["score_calls"] == 2  # one per unit with kept problems


def test_ssb_drops_problems_without_both_right_and_wrong(tmp_path):
    problems = load_problems("rg:chain_sum", limit=3)
    gold = {p.question: p.answer for p in problems}
    always_right = ScriptedBackend(lambda text, i, seed: f"\\boxed{{{next(a for q, a in gold.items() if q in text)}}}")
    manifest = ssb(problems, Models.of(always_right), SSBConfig(), tmp_path / "right")
    assert manifest["counts"]["rejected/all_correct"] == 3 and read_jsonl(tmp_path / "right" / "records.jsonl") == []
    always_wrong = ScriptedBackend(lambda text, i, seed: "no idea")
    manifest = ssb(problems, Models.of(always_wrong), SSBConfig(), tmp_path / "wrong")
    assert manifest["counts"]["rejected/all_wrong"] == 3


def test_logit_sink_stores_real_teacher_scores(tmp_path, tiny_backend):
    prompt = [{"role": "user", "content": "What is 2 + 3?"}]
    sink = LogitSink(tmp_path / "logits", SSBConfig(top_k=4), "tiny-random")
    scored = tiny_backend.score([prompt], ["It is 5, so \\boxed{5}"], top_k=4, **sink.score_kwargs(0))[0]
    ref = sink.put("p1", scored)
    assert sink.put("p1", scored) == ref  # a redone unit gets the stored ref back
    sink.close()
    again = LogitSink(tmp_path / "logits", SSBConfig(top_k=4), "tiny-random")
    assert again.put("p1", scored) == ref  # and so does a resumed run
    again.close()
    rec = TopKLogitStore(tmp_path / "logits").get(ref)
    assert list(rec.token_ids) == scored.token_ids
    assert rec.topk_ids[0, 0] == max(scored.top_k[0], key=scored.top_k[0].get)
    assert rec.token_logprobs[0] == pytest.approx(scored.logprobs[0], abs=1e-5)


def test_cli_on_tiny_random_and_rerun_is_a_no_op(tmp_path):
    out = tmp_path / "ssb"
    args = ["generate", "ssb", "--teacher", "tiny-random", "--data", "rg:chain_sum", "--limit", "6", "--out", out, *FAST]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["stage"] == "ssb"
    assert manifest["counts"]["problems"] == 6 and manifest["counts"]["rollouts/wrong"] + manifest["counts"]["rollouts/correct"] == 24
    assert manifest["usage"]["student"]["completions"] == 24 and manifest["prompts"]["ssb/solve.jinja"].startswith("sha256:")
    assert len(read_jsonl(out / "rollouts.jsonl")) == 6 and (out / "records.jsonl").exists()
    before = (out / "rollouts.jsonl").read_text()
    second = run_cli(*args)
    assert second.returncode == 0 and (out / "rollouts.jsonl").read_text() == before
    assert json.loads((out / "manifest.json").read_text())["usage"] == manifest["usage"]


def test_cli_bad_input_is_one_line_exit_2(tmp_path):
    bad = run_cli("generate", "ssb", "--teacher", "tiny-random", "--data", "rg:chain_sum", "--limit", "2",
                  "--out", tmp_path / "x", "--set", "rolouts=3")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0
    assert "unknown key 'rolouts'; did you mean 'rollouts'?" in bad.stderr
    bad = run_cli("generate", "ssb", "--teacher", "no-such-model", "--data", "rg:chain_sum", "--out", tmp_path / "y")
    assert bad.returncode == 2 and "unknown model spec 'no-such-model'" in bad.stderr
    bad = run_cli("generate", "ssb", "--teacher", "tiny-random", "--data", "rg:chain_sum", "--out", tmp_path / "z",
                  "--decontaminate", "x.jsonl")
    assert bad.returncode == 2 and "generates no new problems" in bad.stderr


@pytest.mark.slow
def test_ssb_on_smollm2(tmp_path, smollm2_dir):
    out = tmp_path / "ssb"
    result = run_cli("generate", "ssb", "--teacher", "smollm2-135m", "--data", "rg:chain_sum", "--limit", "4",
                     "--out", out, "--set", "max_new_tokens=96", "--set", "explain_max_new_tokens=128")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    rollouts = read_jsonl(out / "rollouts.jsonl")
    assert len(rollouts) == 4 and manifest["counts"]["problems"] == 4
    assert any(a is not None for r in rollouts for a in r["answers"])  # a real model answers in \boxed{}
    for record in read_jsonl(out / "records.jsonl"):
        assert re.search(r"\\boxed\{", record["completion"]) and record["logits_ref"]["length"] > 0
