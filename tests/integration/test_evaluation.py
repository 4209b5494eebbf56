"""Evaluation: the CLI end to end, and resuming a killed run (the metrics' math: tests/unit)."""

from __future__ import annotations

import json
import pytest

from conftest import CLI, run_cli
from llm_teach.evaluation import EvalConfig
from sigkill import kill_when


def eval_args(out, limit=4, *extra):
    return ["eval", "--model", "tiny-random", "--benchmark", "rg:chain_sum", "--limit", str(limit),
            "--max-new-tokens", "8", "--out", str(out), *extra]


def test_eval_cli_writes_items_summary_manifest(tmp_path, tiny_model_dir):
    r = run_cli(*eval_args(tmp_path / "e", 3, "--samples", "2"))
    assert r.returncode == 0, r.stderr
    items = [json.loads(line) for line in (tmp_path / "e" / "items.jsonl").read_text().splitlines()]
    assert [it["id"] for it in items] == ["chain_sum-s0-0", "chain_sum-s0-1", "chain_sum-s0-2"]
    for it in items:
        assert len(it["completions"]) == len(it["answers"]) == len(it["correct"]) == 2
        assert it["prompt"][0]["role"] == "user" and "\\boxed{}" in it["prompt"][0]["content"]
    summary = json.loads((tmp_path / "e" / "summary.json").read_text())
    assert {"benchmark", "model", "n", "accuracy", "maj_at_k", "pass_at_k"} <= summary.keys()
    assert summary["n"] == 3 and summary["samples"] == 2 and summary["temperature"] == 0.7
    manifest = json.loads((tmp_path / "e" / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["versions"]["transformers"]
    assert "accuracy" in r.stdout  # the printed table


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path, tiny_model_dir):
    # Sampled (2 samples at temperature 0.7), so equality proves the resumed chunks were seeded alike.
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert run_cli(*eval_args(full, 24, "--samples", "2")).returncode == 0
    part = killed / "items.jsonl.part"
    kill_when([*CLI, *eval_args(killed, 24, "--samples", "2")], lambda: part.exists() and part.read_text().count("\n") >= 8)
    assert not (killed / "items.jsonl").exists() and not (killed / "summary.json").exists()
    done_before = part.read_text().count("\n")
    assert 8 <= done_before < 24
    r = run_cli(*eval_args(killed, 24, "--samples", "2"))
    assert r.returncode == 0, r.stderr
    assert (killed / "items.jsonl").read_text() == (full / "items.jsonl").read_text()
    assert json.loads((killed / "summary.json").read_text()) == json.loads((full / "summary.json").read_text())


def test_resume_refuses_another_config(tmp_path, tiny_model_dir):
    assert run_cli(*eval_args(tmp_path / "e", 2)).returncode == 0
    r = run_cli(*eval_args(tmp_path / "e", 2, "--temperature", "1.0"))
    assert r.returncode == 2 and "with other config: config.temperature: 0.0 -> 1.0" in r.stderr
    assert "Traceback" not in r.stderr


def test_suite_runs_each_benchmark_into_its_own_directory(tmp_path, tiny_model_dir):
    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text("".join(json.dumps({"question": f"What is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"}) + "\n"
                           for i in range(3)))
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"benchmarks:\n"
                     f"  - {{benchmark: 'rg:chain_sum', limit: 3, max_new_tokens: 8}}\n"
                     f"  - {{benchmark: gsm8k, data: {gsm}, max_new_tokens: 6, samples: 2}}\n"
                     f"  - {{benchmark: math500, data: {tmp_path / 'absent' / 'test.jsonl'}}}\n")
    r = run_cli("eval", "--model", "tiny-random", "--suite", str(suite), "--limit", "2", "--samples", "3",
                "--out", str(tmp_path / "s"))
    assert r.returncode == 0, r.stderr
    assert "skipping math500" in r.stderr
    result = json.loads((tmp_path / "s" / "suite.json").read_text())
    assert result["skipped"] == ["math500"] and list(result["results"]) == ["rg-chain_sum", "gsm8k"]
    for name, max_new_tokens in (("rg-chain_sum", 8), ("gsm8k", 6)):
        summary = result["results"][name]
        assert summary["n"] == 2  # --limit caps the entry's limit (and the file's 3 problems)
        assert summary["samples"] == 3  # a typed option beats the entry's value...
        assert summary["max_new_tokens"] == max_new_tokens  # ...and the entry's value beats the default
        assert len((tmp_path / "s" / name / "items.jsonl").read_text().splitlines()) == 2
        assert json.loads((tmp_path / "s" / name / "summary.json").read_text()) == summary


@pytest.mark.parametrize("entries, message", [
    ("  - {benchmark: gsm8k, limt: 3}", "benchmarks[0]: unknown key 'limt'; did you mean 'limit'?"),
    ("  - {benchmark: gsm8k, samples: 0}", "benchmarks[0]: 'samples' must be at least 1"),
    ("  - {benchmark: gsm8k}\n  - {benchmark: gsm8k, limit: 2}", "distinct 'name:'s"),
    ("benchmark: gsm8k", "unknown key 'benchmark'; did you mean 'benchmarks'?"),
])
def test_bad_suites_are_one_line_errors(tmp_path, entries, message):
    from llm_teach.errors import UserError
    from llm_teach.evaluation import load_suite

    suite = tmp_path / "suite.yaml"
    suite.write_text(f"benchmarks:\n{entries}\n")
    with pytest.raises(UserError) as info:
        load_suite(suite)
    assert message in str(info.value) and str(suite) in str(info.value) and "\n" not in str(info.value)


def test_cli_suite_with_no_data_on_this_machine_is_exit_2(tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text("benchmarks:\n  - {benchmark: gsm8k, data: nowhere/test.jsonl}\n")
    r = run_cli("eval", "--model", "tiny-random", "--suite", str(suite), "--out", str(tmp_path / "s"))
    assert r.returncode == 2 and "none of its benchmarks' data is on this machine" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "s").exists()


def test_resume_refuses_a_model_directory_trained_again(tmp_path, tiny_model_dir):
    """The spec of a local model is its path, which stays the same when it is trained again;
    the manifest's weights stamp tells the two apart, so old items are never reused."""
    import shutil

    from llm_teach.backends import BackendOptions, make_backend
    from llm_teach.data import load_problems
    from llm_teach.errors import UserError
    from llm_teach.evaluation import evaluate

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    backend = make_backend(str(model), BackendOptions(dtype="float32"))
    problems = load_problems("rg:chain_sum", 2)
    config = EvalConfig(benchmark="rg:chain_sum", max_new_tokens=4)
    first = evaluate(backend, problems, config, tmp_path / "e")
    assert evaluate(backend, problems, config, tmp_path / "e") == first  # same weights: resumes
    weights = next(model.glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes())  # "retrained": same path, new file
    with pytest.raises(UserError, match="weights"):
        evaluate(backend, problems, config, tmp_path / "e")
