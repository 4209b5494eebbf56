"""Pipelines: validation (one-line errors naming file, step and key), a real tiny pipeline
end to end through `llm-teach run`, skipping finished steps, and the shipped recipes."""

from __future__ import annotations

import json

import pytest

from conftest import ROOT, run_cli
from llm_teach.errors import UserError
from llm_teach.pipeline import check_pipeline, load_pipeline

TINY = """
name: tiny
vars: {model: tiny-random, task: "rg:chain_sum", n: 3}
steps:
  - name: before
    eval: ${vars.model}
    data: ${vars.task}?seed=5
    limit: ${vars.n}
    config: {max_new_tokens: 8}
  - name: l2l
    generate: llm2llm
    teacher: ${vars.model}
    data: ${vars.task}
    limit: 3
    config: {rounds: 1, train: {max_steps: 1}, eval_max_new_tokens: 8, teacher_max_new_tokens: 16,
             solve_max_new_tokens: 8, decontamination: {benchmarks: []}}
  - name: sft
    train: sft
    config: {model: "${vars.model}", data: "${l2l.out}/train.jsonl", max_steps: 1}
  - name: after
    eval: ${sft.model}
    data: ${vars.task}?seed=5
    limit: ${vars.n}
    config: {max_new_tokens: 8}
"""


def _write(tmp_path, text, name="p.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("edit, message", [
    (("name: tiny", "nmae: tiny"), "unknown key 'nmae'; did you mean 'name'?"),
    (("    limit: 3\n", "    limt: 3\n"), "step 'l2l': unknown key 'limt'; did you mean 'limit'?"),
    (("${l2l.out}", "${l3l.out}"), "step 'sft': '${l3l.out}' refers to no earlier step"),
    (("${sft.model}", "${sft.weights}"), "a step offers only .out and .model"),
    (("${vars.n}", "${vars.m}"), "unknown variable '${vars.m}'"),
    (("name: after", "name: before"), "step 'before': duplicate step name"),
    (("    train: sft\n", "    train: sft\n    generate: ssb\n"), "needs exactly one of"),
    (("rounds: 1", "round: 1"), "step 'l2l': config: unknown key 'round'; did you mean 'rounds'?"),
    (("max_steps: 1}\n  - name: after", "max_step: 1}\n  - name: after"), "step 'sft': config: unknown key 'max_step'"),
])
def test_bad_pipelines_are_one_line_errors(tmp_path, edit, message):
    path = _write(tmp_path, TINY.replace(*edit, 1))
    assert TINY.replace(*edit, 1) != TINY
    with pytest.raises(UserError, match=None) as err:
        check_pipeline(load_pipeline(path), tmp_path / "out")
    assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_cli_bad_pipeline_exit_2(tmp_path):
    path = _write(tmp_path, TINY.replace("rounds: 1", "round: 1"))
    result = run_cli("run", path, "--out", tmp_path / "out")
    assert result.returncode == 2 and result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert not (tmp_path / "out" / "before").exists()  # nothing ran


def test_tiny_pipeline_end_to_end_then_skips(tmp_path):
    path = _write(tmp_path, TINY)
    out = tmp_path / "out"
    first = run_cli("run", path, "--out", out)
    assert first.returncode == 0, first.stderr
    assert "before: tiny-random accuracy" in first.stdout and "after: " in first.stdout
    state = json.loads((out / "pipeline.json").read_text())
    assert list(state["steps"]) == ["before", "l2l", "sft", "after"]
    assert state["steps"]["sft"]["result"]["model"] == str(out / "sft" / "model")
    assert json.loads((out / "after" / "summary.json").read_text())["model"] == str(out / "sft" / "model")
    assert (out / "l2l" / "train.jsonl").exists() and (out / "sft" / "model" / "config.json").exists()
    second = run_cli("run", path, "--out", out)
    assert second.returncode == 0 and second.stdout.count("complete, skipped") == 4
    # A changed step reruns, and so does every step that reads it, though the paths they read
    # (${l2l.out}, ${sft.model}) are the same; the rest is skipped; old outputs are kept aside.
    before_change = json.loads((out / "pipeline.json").read_text())["steps"]
    changed = _write(tmp_path, TINY.replace("teacher_max_new_tokens: 16", "teacher_max_new_tokens: 12"), "changed.yaml")
    third = run_cli("run", changed, "--out", out)
    assert third.returncode == 0, third.stderr
    assert "[before] complete, skipped" in third.stdout and third.stdout.count("complete, skipped") == 1
    state = json.loads((out / "pipeline.json").read_text())
    assert all(step["status"] == "complete" for step in state["steps"].values())
    for name in ("l2l", "sft", "after"):
        assert (out / f"{name}.stale-1" / "manifest.json").exists() and (out / name / "manifest.json").exists(), name
        assert state["steps"][name]["fingerprint"] != before_change[name]["fingerprint"], name
    assert state["steps"]["before"] == before_change["before"] and not (out / "before.stale-1").exists()


@pytest.mark.parametrize("path", sorted((ROOT / "pipelines").glob("*.yaml")) + sorted((ROOT / "eval" / "experiments").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_shipped_pipelines_validate(path, tmp_path):
    check_pipeline(load_pipeline(path), tmp_path / "out")


def test_jobs_runs_real_steps_in_processes(tmp_path):
    """`--jobs 2` with the real (spawned) step processes: an eval and a training that do not read
    each other run at once, the eval of the trained model after; each step's log and CPU time."""
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"What is {i}+7-{i}?", "completion": "\\boxed{7}"}) + "\n"
                            for i in range(8)))
    path = _write(tmp_path, f"""
steps:
  - {{name: before, eval: tiny-random, data: "rg:chain_sum?seed=5", limit: 2, config: {{max_new_tokens: 4}}}}
  - {{name: sft, train: sft, config: {{model: tiny-random, data: "{data}", max_steps: 2}}}}
  - {{name: after, eval: "${{sft.model}}", data: "rg:chain_sum?seed=5", limit: 2, config: {{max_new_tokens: 4}}}}
""")
    out = tmp_path / "out"
    result = run_cli("run", path, "--out", out, "--jobs", "2")
    assert result.returncode == 0, result.stderr
    state = json.loads((out / "pipeline.json").read_text())["steps"]
    assert [state[n]["status"] for n in ("before", "sft", "after")] == ["complete"] * 3
    assert json.loads((out / "after" / "summary.json").read_text())["model"] == str(out / "sft" / "model")
    assert all(state[n]["result"]["cpu_seconds"] > 0 for n in state)
    assert "before: tiny-random accuracy" in result.stdout and "[after] complete" in result.stdout
    assert (out / "logs" / "sft.log").stat().st_size > 0 and (out / "logs" / "before.log").stat().st_size > 0
