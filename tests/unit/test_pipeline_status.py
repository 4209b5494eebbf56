"""`llm-teach run --status` (`pipeline.pipeline_status`): each step's state in OUT, judged
against the pipeline file as it is now, without running or changing anything.

The case that made it: a grid whose file changed (round 2's student) keeps round 1's records
under the same step names until they run again; a table reading pipeline.json alone mixed them
in. Stand-in steps as in test_pipeline_jobs.py: what is under test is the bookkeeping."""

import json
import os

import pytest

from llm_teach import pipeline as pl
from llm_teach.pipeline_status import pipeline_status
from llm_teach.errors import UserError
from llm_teach.runs.pipeline_state import exclusive
from pipeline_files import stand_in_pipeline


@pytest.fixture
def chain(tmp_path, monkeypatch):
    """a; b reads a; c; d reads c. `failing` names the steps whose stand-in raises."""
    failing = {"c"}

    def runner(step, out):
        if step.name in failing:
            raise UserError(f"{step.name}: no records")
        out.mkdir(parents=True, exist_ok=True)
        return {"out": str(out), "seconds": 1.0}

    def make(evals):
        return stand_in_pipeline(tmp_path, monkeypatch, evals, runner)

    evals = {"a": "m", "b": "${a.out}", "c": "m", "d": "${c.out}"}
    return make, evals, tmp_path / "out", failing


def _status(pipeline, out):
    return {r["name"]: r["status"] for r in pipeline_status(pipeline, out)}


def test_complete_failed_skipped_and_pending(chain):
    make, evals, out, _ = chain
    pipeline = make(evals)
    pl.run_pipeline(pipeline, out, echo=lambda *_: None, keep_going=True, until="c")
    assert _status(pipeline, out) == {"a": "complete", "b": "complete", "c": "failed", "d": "pending"}
    pl.run_pipeline(pipeline, out, echo=lambda *_: None, keep_going=True)
    rows = {r["name"]: r for r in pipeline_status(pipeline, out)}
    assert rows["d"]["status"] == "skipped" and "reads c" in rows["d"]["error"]
    assert rows["a"]["result"]["out"] == str(out / "a") and rows["c"]["result"] is None


def test_a_changed_definition_makes_the_step_and_its_readers_stale(chain):
    make, evals, out, failing = chain
    failing.clear()
    pl.run_pipeline(make(evals), out, echo=lambda *_: None)
    assert set(_status(make(evals), out).values()) == {"complete"}
    assert _status(make({**evals, "b": "${a.out}/other"}), out) == \
        {"a": "complete", "b": "stale", "c": "complete", "d": "complete"}
    # a's definition changed: b's record is stale too (its fingerprint holds a's), though b's own
    # text did not change -- exactly what a run would redo.
    changed = make({**evals, "a": "m2"})
    assert _status(changed, out) == {"a": "stale", "b": "stale", "c": "complete", "d": "complete"}
    before = (out / "pipeline.json").read_text()
    assert (out / "pipeline.json").read_text() == before  # looking changed nothing
    lines = []
    pl.run_pipeline(changed, out, echo=lines.append)
    assert "[a] complete, skipped" not in lines and "[b] complete, skipped" not in lines
    assert "[c] complete, skipped" in lines and "[d] complete, skipped" in lines


def test_a_started_step_is_running_while_a_run_holds_out_and_interrupted_after(chain):
    make, evals, out, failing = chain
    failing.clear()
    pipeline = make(evals)
    pl.run_pipeline(pipeline, out, until="a", echo=lambda *_: None)
    state = json.loads((out / "pipeline.json").read_text())
    # The record a run writes when it starts b: status running, with b's current fingerprint.
    schedule = pl._Schedule(pipeline, out, lambda *_: None, False, set(), 1, False)
    schedule.results["a"] = state["steps"]["a"]["result"]
    schedule.fingerprints["a"] = state["steps"]["a"]["fingerprint"]
    state["steps"]["b"] = {"fingerprint": schedule._fingerprint(pipeline.steps[1], {"a"})[1], "status": "running"}
    (out / "pipeline.json").write_text(json.dumps(state))
    assert _status(pipeline, out)["b"] == "interrupted"
    with exclusive(out):
        assert _status(pipeline, out)["b"] == "running"
    assert _status(pipeline, out)["b"] == "interrupted"
    # Started by a run that has ended, while a new run holds OUT and waits to resume it:
    # interrupted, not running. Started by the run holding OUT (this process here): running.
    import subprocess
    import sys

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for pid, expected in ((int(ended.stdout), "interrupted"), (os.getpid(), "running")):
        state["steps"]["b"]["run_pid"] = pid
        (out / "pipeline.json").write_text(json.dumps(state))
        with exclusive(out):
            assert _status(pipeline, out)["b"] == expected
    # A running record of another definition is not this step running: stale.
    state["steps"]["b"]["fingerprint"] = "sha256:other"
    (out / "pipeline.json").write_text(json.dumps(state))
    with exclusive(out):
        assert _status(pipeline, out)["b"] == "stale"


def test_the_command_prints_each_step_and_the_counts(chain, tmp_path):
    from typer.testing import CliRunner

    from llm_teach.cli import app

    make, evals, out, _ = chain
    make(evals)
    result = CliRunner().invoke(app, ["run", str(tmp_path / "p.yaml"), "--out", str(out), "--status"])
    assert isinstance(result.exception, UserError) and "no pipeline run here" in str(result.exception)
    assert not out.exists()  # looking created nothing
    pl.run_pipeline(make(evals), out, echo=lambda *_: None, keep_going=True, until="c")
    result = CliRunner().invoke(app, ["run", str(tmp_path / "p.yaml"), "--out", str(out), "--status"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:2] == ["a", "complete"] and lines[2].split()[:3] == ["c", "failed", "c:"]
    assert lines[3].split() == ["d", "pending"]
    assert lines[-1] == "2/4 steps complete; 1 failed, 1 pending"
    assert not (out / "d").exists()  # nothing ran
