"""Bad input gets one clear line, exit code 2, no traceback, and no half-written output."""

from __future__ import annotations

import pytest

from conftest import check_one_line_error, run_cli


@pytest.fixture()
def bad_jsonl(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"question": "q1", "answer": "#### 1"}\n{"question": "q2", "answer": \n')
    return f


def test_malformed_jsonl(tmp_path, bad_jsonl, tiny_model_dir):
    r = run_cli("eval", "--model", "tiny-random", "--benchmark", "gsm8k", "--data", bad_jsonl, "--out", tmp_path / "o")
    check_one_line_error(r, "bad.jsonl", "line 2")
    assert not (tmp_path / "o" / "items.jsonl").exists() and not (tmp_path / "o" / "summary.json").exists()


def test_missing_column(tmp_path):
    f = tmp_path / "cols.jsonl"
    f.write_text('{"question": "q1"}\n')
    r = run_cli("eval", "--model", "tiny-random", "--benchmark", "gsm8k", "--data", f, "--out", tmp_path / "o")
    check_one_line_error(r, "cols.jsonl", "line 1", "missing column 'answer'")


def test_unknown_model_and_benchmark(tmp_path, bad_jsonl):
    r = run_cli("eval", "--model", "no-such-model", "--benchmark", "gsm8k", "--data", bad_jsonl, "--out", tmp_path / "o")
    check_one_line_error(r, "unknown model spec 'no-such-model'", "tiny-random")
    r = run_cli("eval", "--model", "tiny-random", "--benchmark", "mmlu", "--out", tmp_path / "o")
    check_one_line_error(r, "unknown benchmark 'mmlu'")


def test_bad_option_and_unknown_command_exit_2():
    r = run_cli("eval", "--model", "tiny-random", "--samples", "x", "--out", "o")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = run_cli("frobnicate")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_models_list_and_prepare(tiny_model_dir):
    r = run_cli("models", "list")
    assert r.returncode == 0 and "smollm2-135m" in r.stdout and "tiny-random" in r.stdout
    r = run_cli("models", "prepare", "tiny-random")
    assert r.returncode == 0 and r.stdout.strip() == tiny_model_dir


@pytest.mark.parametrize("stage", ["llm2llm", "stat", "ssb", "arte"])
def test_generate_show_options_documents_every_key(stage):
    """Every key of the stage config (nested decontamination keys included) is listed with its
    default and a help line, through the real CLI, without --teacher/--data/--out."""
    import dataclasses

    from llm_teach.stages import load_stage

    res = run_cli("generate", stage, "--show-options")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    keys = {line.split(" = ")[0]: lines[i + 1] for i, line in enumerate(lines) if " = " in line and not line.startswith(" ")}
    config = load_stage(stage)[1]
    for f in dataclasses.fields(config):
        assert f.name in keys and len(keys[f.name].strip()) > 10, f.name  # an indented help line follows
    if "decontamination" in keys:
        assert keys["decontamination.ngram"].strip().startswith("Words in a shared span")
    missing = run_cli("generate", stage, "--data", "rg:chain_sum")
    assert missing.returncode == 2 and "--teacher" in missing.stderr and "--out" in missing.stderr
