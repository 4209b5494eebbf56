"""`llm-teach run --keep-going`: a failing step is recorded, the steps that read it are skipped,
the independent ones still run, and a re-run retries exactly what did not complete.

The step runners are swapped for ones that fail on demand: what is under test is the
pipeline's bookkeeping, not evaluation."""

import json

import pytest

from llm_teach import pipeline as pl
from llm_teach.errors import UserError
from pipeline_files import stand_in_pipeline


@pytest.fixture
def grid(tmp_path, monkeypatch):
    calls, failing = [], {"a"}

    def runner(step, out):
        calls.append(step.name)
        out.mkdir(parents=True, exist_ok=True)
        (out / "partial").write_text(step.name)  # what an interrupted or failed step leaves behind
        if step.name in failing:
            raise UserError(f"{out}/records.jsonl: no records")
        return {"out": str(out)}

    # a (fails) <- b reads it <- c reads b; d is independent of all three.
    evals = {"a": "m", "b": "${a.out}/m", "c": "${b.out}/m", "d": "m"}
    return stand_in_pipeline(tmp_path, monkeypatch, evals, runner), tmp_path / "out", calls, failing


def test_without_keep_going_the_first_failure_stops_the_run(grid):
    pipeline, out, calls, _ = grid
    with pytest.raises(UserError, match="no records"):
        pl.run_pipeline(pipeline, out, echo=lambda *_: None)
    assert calls == ["a"]


def test_keep_going_skips_what_reads_the_failure_and_runs_the_rest(grid):
    pipeline, out, calls, failing = grid
    lines = []
    results = pl.run_pipeline(pipeline, out, echo=lines.append, keep_going=True)
    assert calls == ["a", "d"]  # b reads a, c reads b: neither runs
    assert "no records" in results["a"]["failed"]
    assert "reads a" in results["b"]["failed"] and "reads b" in results["c"]["failed"]
    assert "failed" not in results["d"]
    saved = json.loads((out / "pipeline.json").read_text())["steps"]
    assert [saved[n]["status"] for n in "abcd"] == ["failed", "skipped", "skipped", "complete"]
    assert "no records" in saved["a"]["error"]
    assert any(line.startswith("[a] failed:") for line in lines)

    failing.clear()  # the cause is fixed: the same command retries a, b, c and skips d
    results = pl.run_pipeline(pipeline, out, echo=lambda *_: None, keep_going=True)
    assert calls == ["a", "d", "a", "b", "c"]
    assert not any("failed" in r for r in results.values())
    saved = json.loads((out / "pipeline.json").read_text())["steps"]
    assert {saved[n]["status"] for n in "abcd"} == {"complete"}


def test_the_command_exits_2_naming_the_failed_steps(grid, monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from llm_teach.cli import app

    _, out, calls, _ = grid
    monkeypatch.setattr("llm_teach.report.write_report", lambda run_dir: f"{run_dir}/report.html")
    result = CliRunner().invoke(app, ["run", str(tmp_path / "p.yaml"), "--out", str(out), "--keep-going"])
    assert calls == ["a", "d"]
    assert isinstance(result.exception, UserError) and "3 step(s) did not complete: a, b, c" in str(result.exception)


def test_rerun_redoes_a_completed_step_and_what_reads_it(grid):
    pipeline, out, calls, failing = grid
    failing.clear()
    pl.run_pipeline(pipeline, out, echo=lambda *_: None)
    (out / "b" / "marker").parent.mkdir(parents=True, exist_ok=True)
    (out / "b" / "marker").write_text("old")
    lines = []
    pl.run_pipeline(pipeline, out, echo=lines.append, rerun=["b"])
    assert calls == ["a", "b", "c", "d", "b", "c"]  # b again, c reads b; a and d untouched
    assert (out / "b.stale-1" / "marker").read_text() == "old" and not (out / "b" / "marker").exists()
    assert any(line.startswith("[b] --rerun") for line in lines)
    with pytest.raises(UserError, match="--rerun 'zz' names no step"):
        pl.run_pipeline(pipeline, out, rerun=["zz"])


def test_a_skipped_step_resumes_its_partial_output_once_its_input_completes(grid):
    pipeline, out, calls, failing = grid
    failing.clear()
    failing.add("b")
    pl.run_pipeline(pipeline, out, echo=lambda *_: None, keep_going=True)  # b fails, leaving b/partial
    failing.clear()
    failing.add("a")
    # a runs again and fails, b is skipped. Not with --rerun a: that would make a new a, and b,
    # which read the old one, would rightly start over; here a's record is marked failed instead.
    state = json.loads((out / "pipeline.json").read_text())
    state["steps"]["a"]["status"] = "failed"
    (out / "pipeline.json").write_text(json.dumps(state))
    pl.run_pipeline(pipeline, out, echo=lambda *_: None, keep_going=True)
    assert json.loads((out / "pipeline.json").read_text())["steps"]["b"]["status"] == "skipped"
    failing.clear()
    lines = []
    pl.run_pipeline(pipeline, out, echo=lines.append, keep_going=True)
    assert not (out / "b.stale-1").exists() and not any(line.startswith("[b] changed") for line in lines)
    assert json.loads((out / "pipeline.json").read_text())["steps"]["b"]["status"] == "complete"


def test_a_step_whose_input_was_rerun_is_redone_even_by_a_later_run(grid):
    # --rerun b stopped before c (here --until b; a kill does the same): c's record still says
    # complete, but it describes the OLD b. The next plain run must redo c, and only c.
    from llm_teach.pipeline_status import pipeline_status

    pipeline, out, calls, failing = grid
    failing.clear()
    pl.run_pipeline(pipeline, out, echo=lambda *_: None)
    pl.run_pipeline(pipeline, out, echo=lambda *_: None, rerun=["b"], until="b")
    assert calls == ["a", "b", "c", "d", "b"]
    status = {r["name"]: r["status"] for r in pipeline_status(pipeline, out)}
    assert status == {"a": "complete", "b": "complete", "c": "stale", "d": "complete"}
    pl.run_pipeline(pipeline, out, echo=lambda *_: None)
    assert calls == ["a", "b", "c", "d", "b", "c"]
    pl.run_pipeline(pipeline, out, echo=lambda *_: None)  # and then all is complete: nothing runs
    assert calls == ["a", "b", "c", "d", "b", "c"]
