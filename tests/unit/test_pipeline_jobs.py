"""`llm-teach run --jobs N`: independent steps run at once in processes of their own, a step
waits for the steps it reads, failures are handled as in a sequential run, each step's CPU time
is its own, and OUT takes one run at a time.

The step bodies are stand-ins (as in test_pipeline_keep_going.py) that record when they ran;
what is under test is the scheduler, the processes and the bookkeeping. The processes are
forked here so the stand-ins reach them (the command uses `spawn`; the real spawn path is
tests/integration/test_pipeline.py::test_jobs_runs_real_steps_in_processes)."""

import json
import os
import time

import pytest

from llm_teach import pipeline as pl
from pipeline_files import stand_in_pipeline
from llm_teach.errors import UserError
from llm_teach.runs import step_process
from llm_teach.runs.pipeline_state import exclusive


@pytest.fixture
def grid(tmp_path, monkeypatch):
    """a, b independent; c reads a and b; d reads nothing. Each stand-in writes its start and
    end time to OUT/<step>/times and does what `behaviour[step]` says."""
    monkeypatch.setattr(step_process, "CONTEXT", "fork")
    behaviour = {}

    def runner(step, out):
        out.mkdir(parents=True, exist_ok=True)
        started = time.time()
        print(f"step {step.name} says hello")
        what = behaviour.get(step.name, "sleep")
        if what == "fail":
            raise UserError(f"{out}/records.jsonl: no records")
        if what == "die":
            os._exit(9)
        if what == "burn":
            while time.process_time() < 0.6:
                pass
        else:
            time.sleep(0.6)
        (out / "times").write_text(f"{started} {time.time()}")
        return {"out": str(out)}

    evals = {"a": "m", "b": "m", "c": "${a.out}${b.out}", "d": "m"}
    return stand_in_pipeline(tmp_path, monkeypatch, evals, runner), tmp_path / "out", behaviour


def _times(out, name):
    return [float(t) for t in (out / name / "times").read_text().split()]


def test_two_jobs_run_independent_steps_at_once_and_a_reader_after_its_inputs(grid):
    pipeline, out, _ = grid
    lines = []
    results = pl.run_pipeline(pipeline, out, echo=lines.append, jobs=2)
    a, b, c, d = (_times(out, n) for n in "abcd")
    assert a[0] < b[1] and b[0] < a[1]  # a and b overlapped
    assert c[0] >= max(a[1], b[1])  # c reads both: it started after both ended
    saved = json.loads((out / "pipeline.json").read_text())["steps"]
    assert {saved[n]["status"] for n in "abcd"} == {"complete"}
    assert set(results) == set("abcd") and all(r["seconds"] >= 0.5 for r in results.values())
    log = (out / "logs" / "a.log").read_text()
    assert "step a says hello" in log  # each step's output in its log
    assert log.startswith("--- ") and "llm-teach step a started (pid " in log.splitlines()[0]  # each start marked
    assert any(line.startswith("[a] started (log: ") for line in lines)
    again = []
    pl.run_pipeline(pipeline, out, echo=again.append, jobs=2)  # a re-run skips all four
    assert sorted(again) == sorted(f"[{n}] complete, skipped" for n in "abcd")


def test_one_job_runs_one_step_at_a_time(grid):
    pipeline, out, _ = grid
    pl.run_pipeline(pipeline, out, echo=lambda *_: None, jobs=1)
    spans = sorted(_times(out, n) for n in "abcd")
    assert all(first[1] <= second[0] for first, second in zip(spans, spans[1:]))


def test_each_step_reports_its_own_cpu_time(grid):
    pipeline, out, behaviour = grid
    behaviour["a"] = "burn"  # a computes while b sleeps beside it
    results = pl.run_pipeline(pipeline, out, echo=lambda *_: None, jobs=2)
    assert results["a"]["cpu_seconds"] >= 0.5
    assert results["b"]["cpu_seconds"] < 0.3


def test_keep_going_with_jobs_skips_the_readers_of_a_failure(grid):
    pipeline, out, behaviour = grid
    behaviour["a"] = "fail"
    results = pl.run_pipeline(pipeline, out, echo=lambda *_: None, jobs=2, keep_going=True)
    assert "no records" in results["a"]["failed"] and "reads a" in results["c"]["failed"]
    saved = json.loads((out / "pipeline.json").read_text())["steps"]
    assert [saved[n]["status"] for n in "abcd"] == ["failed", "complete", "skipped", "complete"]


def test_without_keep_going_a_failure_lets_the_running_step_finish_then_stops(grid):
    pipeline, out, behaviour = grid
    behaviour["a"] = "fail"  # fails at once while b sleeps
    with pytest.raises(UserError, match="step 'a': .*no records"):
        pl.run_pipeline(pipeline, out, echo=lambda *_: None, jobs=2)
    saved = json.loads((out / "pipeline.json").read_text())["steps"]
    assert saved["a"]["status"] == "failed" and saved["b"]["status"] == "complete"  # b's work is kept
    assert "c" not in saved and "d" not in saved  # nothing new started after the failure


def test_a_step_whose_process_dies_is_a_failure_naming_its_log(grid):
    pipeline, out, behaviour = grid
    behaviour["b"] = "die"
    results = pl.run_pipeline(pipeline, out, echo=lambda *_: None, jobs=2, keep_going=True)
    assert "exit code 9" in results["b"]["failed"] and str(out / "logs" / "b.log") in results["b"]["failed"]
    assert "failed" not in results["a"] and "failed" not in results["d"]


def test_a_second_run_on_the_same_out_is_refused(grid):
    pipeline, out, _ = grid
    with exclusive(out):  # another run holds OUT
        with pytest.raises(UserError, match="another `llm-teach run` is running into this directory"):
            pl.run_pipeline(pipeline, out, echo=lambda *_: None, jobs=2)
    assert not (out / "a").exists()
    pl.run_pipeline(pipeline, out, echo=lambda *_: None, jobs=2)  # released: runs


def test_only_runs_a_step_and_what_it_reads(grid):
    pipeline, out, _ = grid
    pl.run_pipeline(pipeline, out / "one", echo=lambda *_: None, jobs=2, only=["c"])
    assert sorted(json.loads((out / "one" / "pipeline.json").read_text())["steps"]) == ["a", "b", "c"]  # not d
    pl.run_pipeline(pipeline, out / "two", echo=lambda *_: None, only=["b", "d"])
    assert sorted(json.loads((out / "two" / "pipeline.json").read_text())["steps"]) == ["b", "d"]
    with pytest.raises(UserError, match="--only 'e' names no step"):
        pl.run_pipeline(pipeline, out, only=["e"])
