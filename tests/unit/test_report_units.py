"""Report pieces without a model: the Wilson interval, escaping of model text, the KDRL chart,
and a directory that is not a run."""

from __future__ import annotations

import json

import pytest

from llm_teach.errors import UserError
from llm_teach.report import build
from llm_teach.report.eval import wilson
from llm_teach.report.render import Report, Section, to_html, to_markdown


def test_wilson_interval_matches_its_formula_at_the_edges_and_inside():
    low, high = wilson(0, 10)  # 0/10: the interval is not empty (a normal interval would be [0, 0])
    assert low == 0.0 and high == pytest.approx(0.27753, abs=1e-4)
    low, high = wilson(5, 10)  # symmetric around 1/2
    assert low == pytest.approx(1 - high) and low == pytest.approx(0.23659, abs=1e-4)
    low, high = wilson(10, 10)
    assert high == pytest.approx(1.0) and low == pytest.approx(1 - 0.27753, abs=1e-4)
    assert wilson(30, 100)[1] - wilson(30, 100)[0] < wilson(3, 10)[1] - wilson(3, 10)[0]  # narrows with n


def test_model_text_reaches_the_page_as_text_not_markup():
    evil = "<script>alert(1)</script>{{ 7*7 }}"
    report = Report("t", "eval", "/x", [Section("S", "s", text=[evil], samples=[{"title": evil, "text": evil,
                                                                                  "correct": False}])])
    page = to_html(report)
    assert "<script>alert" not in page and "&lt;script&gt;" in page and "49" not in page
    assert evil in to_markdown(report)


def test_kdrl_run_plots_the_kd_term_beside_the_reward(tmp_path):
    rows = [{"step": s, "loss": 1.0 / s, "reward": 0.1 * s, "kd_loss": 2.0 - 0.1 * s, "beta": 0.005,
             "learning_rate": 1e-5} for s in (1, 2, 3)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "manifest.json").write_text(json.dumps({"kind": "train:kdrl", "method": "kdrl", "status": "complete"}))
    report = build(tmp_path)
    captions = [f.caption for s in report.sections for f in s.figures]
    assert captions[0] == "KD term beside the reward"
    assert {"loss vs step", "reward vs step", "kd_loss vs step", "beta vs step", "learning_rate vs step"} <= set(captions)
    assert all(f.png.startswith(b"\x89PNG") for s in report.sections for f in s.figures)


def test_a_directory_without_a_run_is_one_line(tmp_path):
    with pytest.raises(UserError, match="not a run directory"):
        build(tmp_path)


def test_llm2llm_report_shows_what_the_teacher_wrote_by_outcome(tmp_path):
    replies = [{"id": "a~r1.0", "round": 1, "seed": "a", "reply": "1 + 2 = 3. \\boxed{3}", "outcome": "rejected/unparsable"},
               {"id": "b~r1.0", "round": 1, "seed": "b", "reply": "x" * 500, "outcome": "rejected/unparsable"},
               {"id": "c~r1.0", "round": 1, "seed": "c", "reply": "Question: Q\nSolution: \\boxed{4}", "outcome": "added"}]
    (tmp_path / "generated.jsonl").write_text("".join(json.dumps(r) + "\n" for r in replies))
    (tmp_path / "rounds.jsonl").write_text(json.dumps({"round": 1, "seed_accuracy": 0.5, "wrong": 3, "generated": 3,
                                                       "added": 1, "data_size": 4}) + "\n")
    (tmp_path / "manifest.json").write_text(json.dumps({"kind": "generate:llm2llm", "stage": "llm2llm",
                                                        "status": "complete", "counts": {"generated": 3}}))
    tables = [t for s in build(tmp_path).sections for t in s.tables if t.caption.startswith("The teacher's replies")]
    assert [row[:2] for row in tables[0].rows] == [["added", 1], ["rejected/unparsable", 2]]
    assert tables[0].rows[1][2] == "1 + 2 = 3. \\boxed{3} (a)"  # the first reply of that outcome, and its seed
