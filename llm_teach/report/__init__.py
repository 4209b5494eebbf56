"""Run directory -> a page a person is glad to open: `report.html` (self-contained: figures
embedded, no network) and `report.md`, for every kind of run (eval, eval suite, train,
generate, pipeline), and `compare` for several runs side by side.

Reports read files only (manifest.json, metrics.jsonl, items.jsonl, the stage outputs); they
import no trainer, stage or model. Modules: `runfiles` (reading a run), one builder per run
kind (`eval`, `training`, `stages`, `pipeline`, `compare`), `plots` (matplotlib figures),
`render` (the report as data, HTML and Markdown through sandboxed Jinja2).
"""

from __future__ import annotations

from pathlib import Path

from llm_teach.report.render import Report, write
from llm_teach.report.runfiles import run_kind


def build(run_dir: str | Path) -> Report:
    """The report of one run directory, by its kind."""
    from llm_teach.report import eval as eval_report, stages, training

    run_dir = Path(run_dir)
    kind = run_kind(run_dir)
    if kind == "pipeline":
        from llm_teach.report import pipeline

        return pipeline.build(run_dir)
    if kind == "eval":
        return eval_report.build(run_dir)
    if kind == "eval-suite":
        return eval_report.build_suite(run_dir)
    if kind.startswith("train:"):
        return training.build(run_dir)
    if kind.startswith("generate:"):
        return stages.build(run_dir)
    from llm_teach.errors import UserError

    raise UserError(f"{run_dir}: a run of kind '{kind}' has no report")


def write_report(run_dir: str | Path, html: str | Path | None = None) -> Path:
    """Write the report of `run_dir`; returns the HTML path. Default: RUN_DIR/report.html and
    RUN_DIR/report.md; with `html`, that file and the .md beside it. A pipeline first writes
    each step's report into the step's directory and links them."""
    run_dir = Path(run_dir)
    html_path = Path(html) if html is not None else run_dir / "report.html"
    if run_kind(run_dir) == "pipeline":
        from llm_teach.report import pipeline

        links = {}
        for step in sorted(p for p in run_dir.iterdir() if p.is_dir() and (p / "manifest.json").is_file()
                           and ".stale-" not in p.name):
            step_html = write_report(step)
            links[step.name] = _relative(step_html, html_path.parent)
        report = pipeline.build(run_dir, links)
    else:
        report = build(run_dir)
    write(report, html_path, html_path.with_suffix(".md"))
    return html_path


def write_comparison(run_dirs: list[str | Path], html: str | Path) -> Path:
    from llm_teach.report import compare

    html_path = Path(html)
    write(compare.build([Path(p) for p in run_dirs]), html_path, html_path.with_suffix(".md"))
    return html_path


def _relative(path: Path, start: Path) -> str:
    import os

    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


__all__ = ["build", "write_report", "write_comparison", "Report"]
