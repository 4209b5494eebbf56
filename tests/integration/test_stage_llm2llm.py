"""LLM2LLM: validation logic with a scripted teacher and a really trained tiny student; the CLI.
(Parsing the teacher's text: tests/unit; SmolLM2: tests/slow.)"""

from __future__ import annotations

import json

from conftest import run_cli
from llm_teach.data import load_problems, read_jsonl
from llm_teach.data.decontam import DecontamConfig
from llm_teach.stages.llm2llm import LLM2LLMConfig, llm2llm
from llm_teach.stages.roles import Models
from scripted_backend import ScriptedBackend

LEAKED = "A bakery sells 120 croissants every morning and donates a third of the leftovers to the shelter down the street"


def _teacher(seeds):
    """Seed k's new problem has a known defect: 0 valid, 1 unparsable, 2 no answer, 3 overlaps an
    evaluation file, 4 the teacher's re-solution disagrees, 5 a near-copy of the seed itself."""
    truth = {}

    def respond(text, i, seed):
        if "Write ONE new practice problem" in text:
            k = next(j for j, s in enumerate(seeds) if s.question in text)
            a, b = 3 + seed % 50, 2 + seed % 7
            question = [f"Lena has {a} apples and buys {b} more. How many apples does Lena have now?",
                        None, "How many pears are there?", LEAKED + f" on day {a}?",
                        f"What is {a} plus {b} plus one?", seeds[k].question][k]
            if question is None:
                return "I would rather not."
            truth[question] = a + b
            solution = "think about it" if k == 2 else f"{a} + {b} = {a + b}, so \\boxed{{{a + b + (k == 4)}}}"
            return f"Question: {question}\nSolution: {solution}"
        question = next((q for q in truth if q in text), None)
        return f"The answer is \\boxed{{{truth[question]}}}" if question else "unknown"

    return ScriptedBackend(respond, model="scripted-teacher")


def test_rounds_validate_merge_and_only_reaugment_seeds(tmp_path, tiny_model_dir):
    seeds = load_problems("rg:chain_sum", limit=6)
    leaked = tmp_path / "heldout.jsonl"
    leaked.write_text(json.dumps({"question": LEAKED + " in the city center?", "answer": "40"}) + "\n")
    teacher = _teacher(seeds)
    models = Models(teacher="scripted-teacher", student="tiny-random")  # the student is really trained
    models.provide("teacher", teacher)
    config = LLM2LLMConfig(rounds=2, train={"max_steps": 1, "per_device_train_batch_size": 2}, eval_max_new_tokens=8,
                           decontamination=DecontamConfig(benchmarks=[], paths=[str(leaked)]), chunk_size=4)
    manifest = llm2llm(seeds, models, config, tmp_path / "out")

    rounds = read_jsonl(tmp_path / "out" / "rounds.jsonl")
    assert [r["round"] for r in rounds] == [1, 2]
    for r in rounds:  # tiny-random gets every seed wrong, so every seed is augmented each round
        assert r["wrong"] == 6 and r["generated"] == 6 and r["added"] == 1
        assert r["rejected"] == {"contaminated": 1, "disagree": 1, "near_duplicate": 1, "no_answer": 1, "unparsable": 1}
    assert [r["data_size"] for r in rounds] == [7, 8]
    problems = read_jsonl(tmp_path / "out" / "problems.jsonl")
    assert [p["id"] for p in problems[6:]] == [f"{seeds[0].id}~r1.0", f"{seeds[0].id}~r2.0"]
    assert problems[6]["meta"] == {"seed": seeds[0].id, "round": 1}
    # only seeds were ever shown to the teacher for augmentation, with the student's wrong answer
    augment_prompts = [t for kind, t in teacher.calls if kind == "generate" and "Write ONE" in t]
    assert len(augment_prompts) == 12
    assert not any(problems[6]["question"] in t for t in augment_prompts)
    (eval_dir,) = (tmp_path / "out" / "round1").glob("eval-*")
    eval_items = read_jsonl(eval_dir / "items.jsonl")
    assert eval_items[0]["completions"][0].strip()[:40] in augment_prompts[0]
    # round 2 trained on round 1's data plus what round 1 added
    assert len(read_jsonl(tmp_path / "out" / "data" / "round2.jsonl")) == 7
    train = read_jsonl(tmp_path / "out" / "train.jsonl")
    assert len(train) == 8 and train[6]["messages"][1]["content"].endswith("\\boxed{%s}" % problems[6]["answer"])
    assert manifest["counts"]["decontamination/dropped/" + str(leaked)] == 2
    assert manifest["decontamination"] == {str(leaked): 1}
    assert manifest["usage"]["teacher"]["prompts"] == 12 + 4  # 6 augment prompts + 2 re-solves per round
    # every teacher reply is kept with what became of it, so "added: 1 of 6" can be read
    replies = read_jsonl(tmp_path / "out" / "generated.jsonl")
    assert [(x["round"], x["seed"]) for x in replies] == [(r, s.id) for r in (1, 2) for s in seeds]
    assert [x["outcome"] for x in replies[:6]] == ["added", "rejected/unparsable", "rejected/no_answer",
                                                  "rejected/contaminated", "rejected/disagree", "rejected/near_duplicate"]
    assert replies[1]["reply"] == "I would rather not."
    assert [x["id"] for x in replies if x["outcome"] == "added"] == [p["id"] for p in problems[6:]]

    # a second run over the same OUT does no model call at all
    teacher.calls.clear()
    llm2llm(seeds, models, config, tmp_path / "out")
    assert teacher.calls == []


def test_cli_on_tiny_random(tmp_path):
    out = tmp_path / "l2l"
    result = run_cli("generate", "llm2llm", "--teacher", "tiny-random", "--data", "rg:chain_sum", "--limit", "4",
                     "--out", out, "--set", "rounds=1", "--set", "train.max_steps=1", "--set", "eval_max_new_tokens=8",
                     "--set", "teacher_max_new_tokens=16", "--set", "solve_max_new_tokens=8")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["counts"]["generated"] == 4
    assert set(manifest["prompts"]) == {"eval/boxed.jinja", "llm2llm/augment.jinja", "llm2llm/solve.jinja"}
    assert len(read_jsonl(out / "train.jsonl")) >= 4 and len(read_jsonl(out / "rounds.jsonl")) == 1
    (train_dir,) = (out / "round1").glob("train-*")
    assert (train_dir / "model" / "config.json").exists()
