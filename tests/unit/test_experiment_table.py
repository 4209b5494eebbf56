"""eval/experiments/table.py: the numbers of eval/RESULTS.md's table, from a run's records."""

from __future__ import annotations

import importlib.util
import json
import statistics

import pytest

from conftest import ROOT

spec = importlib.util.spec_from_file_location("experiment_table", ROOT / "eval" / "experiments" / "table.py")
table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(table)


def _eval(accuracy, no_answer=0.0, status="complete"):
    return {"status": status, "result": {"summary": {"accuracy": accuracy, "no_answer_fraction": no_answer}}}


def _train(cpu, status="complete"):
    return {"status": status, "result": {"cpu_seconds": cpu}}


@pytest.fixture
def run(tmp_path):
    steps = {"teacher-heldout": _eval(0.9), "none-heldout": _eval(0.1, no_answer=0.2),
             "llm2llm": {"status": "complete", "result": {"cpu_seconds": 600}}}
    for s, (acc, cpu) in enumerate([(0.5, 120), (0.6, 180), (0.7, 240)]):
        steps[f"logitkd-s{s}"] = _train(cpu)
        steps[f"logitkd-s{s}-heldout"] = _eval(acc, no_answer=0.1 * s)
        steps[f"llm2llm-s{s}"] = _train(60)
        steps[f"llm2llm-s{s}-heldout"] = _eval(0.3)
    steps["sft-gold-s0-heldout"] = _eval(0.99, status="stale")  # another definition's result
    (tmp_path / "logitkd-s0").mkdir()
    (tmp_path / "logitkd-s0" / "manifest.json").write_text(json.dumps(
        {"global_step": 40, "world_size": 2, "config": {"per_device_train_batch_size": 8,
                                                        "gradient_accumulation_steps": 2}}))
    (tmp_path / "llm2llm").mkdir()
    (tmp_path / "llm2llm" / "manifest.json").write_text(json.dumps({"usage": {"teacher": {"completions": 41}}}))
    return table.table_rows(steps, tmp_path)


def test_rows_mean_sd_gap_and_cost(run):
    rows, teacher, none = run
    assert (teacher, none) == (0.9, 0.1)
    row = {r["method"]: r for r in rows}["logitkd"]
    assert row["seeds"] == 3 and row["mean"] == pytest.approx(0.6)
    assert row["sd"] == pytest.approx(statistics.stdev([0.5, 0.6, 0.7]))  # sample sd, not population
    assert row["gap"] == pytest.approx((0.6 - 0.1) / (0.9 - 0.1))  # of the teacher-student gap
    assert row["answered"] == pytest.approx(1 - 0.1)  # mean over seeds of 1 - no_answer
    assert row["cpu_min"] == pytest.approx(180 / 60)  # mean training, no stage
    assert row["teacher_calls"] == 40 * 8 * 2 * 2  # steps x batch x accumulation x ranks


def test_a_stage_adds_its_cost_and_teacher_calls_once(run):
    row = {r["method"]: r for r in run[0]}["llm2llm"]
    assert row["cpu_min"] == pytest.approx((60 + 600) / 60)  # one training plus the whole stage
    assert row["teacher_calls"] == 41  # the stage's; SFT asks the teacher nothing


def test_only_complete_results_count(run):
    rows = {r["method"]: r for r in run[0]}
    assert rows["sft-gold"]["seeds"] == 0 and rows["sft-gold"]["mean"] is None  # stale: not in the table
    assert rows["none"]["answered"] == pytest.approx(0.8)


@pytest.mark.parametrize("mean, sd, base_mean, base_sd, expected", [
    (0.70, 0.02, 0.60, 0.03, "beats"),
    (0.70, 0.12, 0.60, 0.03, "ties"),  # within the method's own spread
    (0.70, 0.02, 0.60, 0.12, "ties"),  # within the baseline's spread
    (0.50, 0.02, 0.60, 0.03, "worse than"),
    (0.09, None, 0.078, None, "beats"),  # one model each: any gain counts
    (None, None, 0.60, 0.03, None),  # pending
])
def test_verdict_needs_a_gap_beyond_both_spreads(mean, sd, base_mean, base_sd, expected):
    assert table.verdict({"mean": mean, "sd": sd}, {"mean": base_mean, "sd": base_sd}) == expected


def test_each_method_is_judged_against_its_baseline(run):
    rows = {r["method"]: r for r in run[0]}
    assert (rows["logitkd"]["baseline"], rows["logitkd"]["verdict"]) == ("sft-gold", None)  # sft-gold pending
    assert (rows["llm2llm"]["baseline"], rows["llm2llm"]["verdict"]) == ("sft-gold", None)
    assert rows["sft-gold"]["baseline"] == "none" and rows["none"]["baseline"] is None


def test_update_replaces_only_the_marked_block(run, tmp_path):
    doc = tmp_path / "RESULTS.md"
    doc.write_text(f"intro\n{table.BEGIN}\nold table\n{table.END}\nafter\n")
    text = table.markdown(*run, {"gsm8k-none": 0.02})
    table.update(doc, text)
    table.update(doc, text)  # idempotent
    assert doc.read_text() == f"intro\n{table.BEGIN}\n{text}\n{table.END}\nafter\n"
    assert "| logitkd | 3 | 0.600 ± 0.100 (0.500, 0.600, 0.700) | pending sft-gold | 0.62 |" in text
    unmeasured = next(line for line in text.splitlines() if line.startswith("| sft-gold |"))
    assert unmeasured.split(" | ")[2:5] == ["pending", "pending", "pending"]  # not "pending ± pending"
    assert "GSM8K subset: gsm8k-none 0.020." in text
    doc.write_text("no markers\n")
    with pytest.raises(SystemExit, match="needs one"):
        table.update(doc, text)
