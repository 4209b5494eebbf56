"""`llm-teach report --compare RUN_A RUN_B ...`: runs side by side -- a table of final metrics
and, for training runs, their curves overlaid on shared axes (how a method is chosen)."""

from __future__ import annotations

from pathlib import Path

from llm_teach.report import plots
from llm_teach.report.render import Report, Section, Table
from llm_teach.report.runfiles import final_metrics, manifest, metric_series, read_json, read_records, run_kind
from llm_teach.report.training import CURVES

SHOWN = ("loss", "reward", "kd_loss", "beta", "learning_rate")


def labels(run_dirs: list[Path]) -> list[str]:
    """Short unique names: the directory name, or its parent/name when two names clash."""
    names = [p.name for p in run_dirs]
    return [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in run_dirs]


def build(run_dirs: list[Path]) -> Report:
    kinds = [run_kind(p) for p in run_dirs]  # each must be a run directory (UserError otherwise)
    names = labels(run_dirs)
    report = Report(f"Comparison of {len(run_dirs)} runs", "compare", ", ".join(map(str, run_dirs)))
    table = Section("Final metrics", "final")
    metrics = {name: read_records(path / "metrics.jsonl") for name, path in zip(names, run_dirs)}
    rows = []
    for name, path, kind in zip(names, run_dirs, kinds):
        last = final_metrics(metrics[name])
        summary = read_json(path / "summary.json") or {}
        config = manifest(path).get("config") or {}
        rows.append([name, kind, config.get("seed"), last.get("step"), *[last.get(k) for k in SHOWN],
                     summary.get("accuracy")])
    table.tables.append(Table(["run", "kind", "seed", "steps", *SHOWN, "eval accuracy"], rows))
    report.sections.append(table)
    curves = Section("Training curves", "curves")
    for key in CURVES:
        series = {name: metric_series(rows_, key) for name, rows_ in metrics.items()}
        series = {name: s for name, s in series.items() if s[0]}
        if series:
            curves.figures.append(plots.lines(series, f"{key} vs step", ylabel=key))
    if not curves.figures:
        accuracies = [r[-1] for r in rows]
        if any(a is not None for a in accuracies):
            curves.title = "Accuracy"
            curves.figures.append(plots.bars(names, [a or 0.0 for a in accuracies], "Eval accuracy", "accuracy"))
        else:
            curves.text.append("None of these runs logged training metrics.")
    report.sections.append(curves)
    return report
