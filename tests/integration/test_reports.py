"""Reports, cards and tracking on real runs: a tiny-random pipeline (eval -> sft -> eval), a
second SFT run with TensorBoard, and the scripted stage runs of tests/stage_cases.py, all made
once per session; then each page is opened in headless Chromium.

The stage runs use the stage contract's scripted models (sub-second, and they exercise every
branch: kept and dropped items, skills, preference pairs), not tiny-random, whose answers are
all wrong and would leave the stage pages empty.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import run_cli
from stage_cases import CASES, run_case

PIPELINE = """
name: report-test
steps:
  - name: before
    eval: tiny-random
    data: rg:chain_sum?seed=3
    limit: 4
    config: {max_new_tokens: 8, samples: 2}
  - name: sft
    train: sft
    config: {model: tiny-random, data: "rg:chain_sum", limit: 8, max_steps: 2, seed: 1, learning_rate: 1.0e-3}
  - name: after
    eval: ${sft.model}
    data: rg:chain_sum?seed=3
    limit: 4
    config: {max_new_tokens: 8, samples: 2}
"""


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> dict[str, Path]:
    """name -> run directory, each made by the real code path once for the whole session."""
    from llm_teach.data import load_problems
    from llm_teach.pipeline import load_pipeline, run_pipeline
    from llm_teach.trainers import train

    root = tmp_path_factory.mktemp("report-runs")
    recipe = root / "pipeline.yaml"
    recipe.write_text(PIPELINE)
    run_pipeline(load_pipeline(recipe, None), root / "pipe", echo=lambda line: None)
    train("sft", {"model": "tiny-random", "data": "rg:chain_sum", "limit": 8, "max_steps": 2, "seed": 2,
                  "learning_rate": 1e-3, "report_to": "tensorboard"}, root / "sft2")
    found = {"pipe": root / "pipe", "eval": root / "pipe" / "before", "sft": root / "pipe" / "sft", "sft2": root / "sft2"}
    for stage in ("ssb", "stat", "arte"):
        case = CASES[stage]
        out = root / stage
        run_case(stage, case, out, case.backends(load_problems("rg:chain_sum", limit=case.problems), 0.0))
        found[stage] = out
    return found


def headings(html: str) -> list[str]:
    return re.findall(r"<h[12]>([^<]*)</h[12]>", html)


def test_run_cli_writes_the_pipeline_report_and_report_cli_the_others(runs):
    from typer.testing import CliRunner

    from llm_teach.cli import app

    # In-process (the modules are loaded already): every step is skipped, then the report is written.
    res = CliRunner().invoke(app, ["run", str(runs["pipe"].parent / "pipeline.yaml"), "--out", str(runs["pipe"])])
    assert res.exit_code == 0, res.output
    assert f"report: {runs['pipe'] / 'report.html'}" in res.output
    page = (runs["pipe"] / "report.html").read_text()
    assert {"Steps", "Accuracy before and after", "Time per step"} <= set(headings(page))
    for step in ("before", "sft", "after"):  # each step's own page exists and is linked
        assert (runs["pipe"] / step / "report.html").is_file()
        assert f'href="{step}/report.html"' in page
    res = run_cli("report", runs["ssb"], "--html", runs["ssb"].parent / "ssb.html")
    assert res.returncode == 0 and (runs["ssb"].parent / "ssb.md").is_file(), res.stderr
    bad = run_cli("report", runs["ssb"] / "work")
    assert bad.returncode == 2 and "not a run directory" in bad.stderr and "Traceback" not in bad.stderr


def test_train_report_plots_logged_curves_and_tensorboard_wrote_events(runs):
    from llm_teach.report import build

    report = build(runs["sft2"])
    curves = next(s for s in report.sections if s.title == "Training curves")
    logged = [json.loads(line) for line in (runs["sft2"] / "metrics.jsonl").read_text().splitlines()]
    assert [f.caption for f in curves.figures] == [f"{k} vs step" for k in ("loss", "learning_rate", "grad_norm")
                                                   if any(k in row for row in logged)]
    final = next(s for s in report.sections if s.title == "Final metrics").tables[0]
    assert dict(final.rows)["loss"] == logged[-1]["loss"]
    assert list((runs["sft2"] / "tensorboard").glob("events.out.tfevents.*")), "no TensorBoard events file"
    card = (runs["sft2"] / "model" / "README.md").read_text()
    assert "base_model: tiny-random" in card and "**sft**" in card and "Apache-2.0" in card


def test_compare_overlays_both_runs_curves(runs, tmp_path):
    from llm_teach.report import compare, write_comparison

    report = compare.build([runs["sft"], runs["sft2"]])
    table = report.sections[0].tables[0]
    assert [row[0] for row in table.rows] == ["sft", "sft2"] and [row[2] for row in table.rows] == [1, 2]
    assert report.sections[1].figures, "no overlaid curves"
    page = write_comparison([runs["sft"], runs["sft2"]], tmp_path / "c.html").read_text()
    assert page.count("data:image/png;base64,") == len(report.sections[1].figures)


def test_generated_datasets_carry_a_card_and_load_with_datasets(runs):
    import datasets

    for stage, main in (("ssb", "records.jsonl"), ("stat", "sft.jsonl"), ("arte", "sft.jsonl")):
        loaded = datasets.load_dataset("json", data_dir=str(runs[stage]))["train"]
        expected = [json.loads(line) for line in (runs[stage] / main).read_text().splitlines()]
        assert [r["id"] for r in loaded] == [r["id"] for r in expected], stage
        card = (runs[stage] / "README.md").read_text()
        assert f"Stage **{stage}**" in card and "rg:chain_sum" in card and "Apache-2.0" in card


# -- the browser --------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed when missing (needs apt and root); skipped only where it cannot be."""
    found = shutil.which("chromium")
    if found is None and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "chromium"], capture_output=True, timeout=600)
        found = shutil.which("chromium")
    if found is None:
        pytest.skip("chromium is not installed and `apt-get install -y chromium` failed here (no apt or no root)")
    return found


# Appended to a copy of each page: after load, record every image's natural size in the DOM.
PROBE = ("<script>window.addEventListener('load',()=>{document.body.setAttribute('data-sizes',"
         "JSON.stringify([...document.images].map(i=>[i.naturalWidth,i.naturalHeight])))});</script>")


def browse(chromium: str, page: Path, shot: Path) -> tuple[str, list[list[int]]]:
    probe = page.with_name(page.stem + ".probe.html")
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    # One browser start per page takes the screenshot and dumps the DOM after the load handler ran.
    dom = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=3000",
                          f"--screenshot={shot}", "--window-size=1000,1400", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    sizes = json.loads(re.search(r'data-sizes="([^"]*)"', dom).group(1).replace("&quot;", '"'))
    return dom, sizes


def test_every_page_renders_in_headless_chromium(runs, chromium, tmp_path):
    from llm_teach.report import write_comparison, write_report

    pages = {"eval": (write_report(runs["eval"]), "Accuracy"), "train": (write_report(runs["sft2"]), "Training curves"),
             "ssb": (write_report(runs["ssb"]), "SSB problems kept and dropped"),
             "stat": (write_report(runs["stat"]), "STAT missing-skill profile"),
             "arte": (write_report(runs["arte"]), "ARTE preference pairs"),
             "pipeline": (write_report(runs["pipe"]), "Accuracy before and after"),
             "compare": (write_comparison([runs["sft"], runs["sft2"]], tmp_path / "compare.html"), "Training curves")}
    for name, (page, heading) in pages.items():
        shot = tmp_path / f"{name}.png"
        dom, sizes = browse(chromium, page, shot)
        assert shot.is_file() and shot.stat().st_size > 1000, name
        assert f"<h2>{heading}</h2>" in dom, name
        assert sizes and all(w > 0 and h > 0 for w, h in sizes), (name, sizes)
