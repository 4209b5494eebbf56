"""The report of an `llm-teach run` directory: one page linking every step's own report,
before/after accuracy of its eval steps, and the time each step took (OUT/pipeline.json)."""

from __future__ import annotations

from pathlib import Path

from llm_teach.report import plots
from llm_teach.report.render import Report, Section, Table
from llm_teach.report.runfiles import read_json, run_kind


def build(run_dir: Path, step_reports: dict[str, str] | None = None) -> Report:
    """`step_reports`: step name -> the step's report.html relative to `run_dir` (written by
    the caller, `write_report`); steps without one are listed without a link."""
    state = read_json(run_dir / "pipeline.json") or {}
    steps = state.get("steps") or {}
    report = Report(f"Pipeline {state.get('name', run_dir.name)}: {run_dir.name}", "pipeline", str(run_dir))
    overview = Section("Steps", "steps")
    overview.text.append(f"Recipe {state.get('pipeline', '?')}; {len(steps)} step(s).")
    rows, accuracy, seconds = [], [], []
    for name, step in steps.items():
        result = step.get("result") or {}
        step_dir = run_dir / name
        kind = run_kind(step_dir) if step_dir.is_dir() and (step_dir / "manifest.json").is_file() else "?"
        summary = result.get("summary") or {}
        rows.append([name, kind, step.get("status"), result.get("seconds"), summary.get("accuracy"),
                     result.get("model") or result.get("out")])
        if summary.get("accuracy") is not None:
            accuracy.append((name, summary["accuracy"], int(summary.get("n") or 0)))
        if result.get("seconds") is not None:
            seconds.append((name, float(result["seconds"])))
        if step_reports and name in step_reports:
            overview.links.append((f"{name}: {kind} report", step_reports[name]))
    overview.tables.append(Table(["step", "kind", "status", "seconds", "accuracy", "output"], rows))
    report.sections.append(overview)
    if accuracy:
        from llm_teach.report.eval import wilson

        section = Section("Accuracy before and after", "accuracy")
        section.figures.append(plots.bars([a[0] for a in accuracy], [a[1] for a in accuracy],
                                          "Accuracy of each eval step (95% Wilson interval)", "accuracy",
                                          errors=[wilson(acc * n, n) for _, acc, n in accuracy]))
        if len(accuracy) >= 2:
            section.text.append(f"{accuracy[0][0]} {accuracy[0][1]:.3f} -> {accuracy[-1][0]} {accuracy[-1][1]:.3f} "
                                f"(change {accuracy[-1][1] - accuracy[0][1]:+.3f})")
        report.sections.append(section)
    if seconds:
        section = Section("Time per step", "time")
        section.figures.append(plots.bars([s[0] for s in seconds], [s[1] for s in seconds], "Wall time per step",
                                          "seconds"))
        section.text.append("A skipped step (finished by an earlier run) shows the time it took then.")
        report.sections.append(section)
    return report
