"""`llm-teach run --until STEP` and the CPU time each step records (`cpu_seconds`).

The step runners are swapped for ones that burn or wait out a known amount of time: what is
under test is the pipeline's bookkeeping, not evaluation."""

import json
import time

import pytest

from llm_teach import pipeline as pl
from llm_teach import pipeline_steps
from llm_teach.errors import UserError


def _burn(step, out):
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    return {"out": str(out)}


def _wait(step, out):
    time.sleep(0.3)
    return {"out": str(out)}


@pytest.fixture
def three_steps(tmp_path, monkeypatch):
    data = tmp_path / "p.jsonl"
    data.write_text(json.dumps({"id": "a", "question": "1 + 1 =", "answer": "2"}) + "\n")
    (tmp_path / "p.yaml").write_text(
        "steps:\n" + "".join(f"  - {{name: {n}, eval: m, data: {data}, benchmark: math500}}\n"
                             for n in ("burn", "wait", "last")))
    calls = []
    monkeypatch.setitem(pipeline_steps.RUNNERS, "eval", lambda step, out: (calls.append(step.name),
                                                                (_burn if step.name == "burn" else _wait)(step, out))[1])
    return pl.load_pipeline(tmp_path / "p.yaml"), tmp_path / "out", calls


def test_until_stops_after_the_step_and_a_rerun_continues(three_steps):
    pipeline, out, calls = three_steps
    results = pl.run_pipeline(pipeline, out, echo=lambda *_: None, until="wait")
    assert list(results) == ["burn", "wait"] and calls == ["burn", "wait"]
    pl.run_pipeline(pipeline, out, echo=lambda *_: None)
    assert calls == ["burn", "wait", "last"]  # finished steps skipped, the rest run
    with pytest.raises(UserError, match="--until 'nope' names no step"):
        pl.run_pipeline(pipeline, out, until="nope")


def test_cpu_seconds_count_work_not_waiting(three_steps):
    pipeline, out, _ = three_steps
    results = pl.run_pipeline(pipeline, out, echo=lambda *_: None)
    assert results["burn"]["cpu_seconds"] >= 0.25
    assert results["wait"]["cpu_seconds"] < 0.15 <= results["wait"]["seconds"] + 0.1
    saved = json.loads((out / "pipeline.json").read_text())["steps"]
    assert saved["burn"]["result"]["cpu_seconds"] == results["burn"]["cpu_seconds"]
