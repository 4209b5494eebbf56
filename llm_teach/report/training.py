"""The report of an `llm-teach train` run (every method): curves of loss, reward, KD loss,
beta and learning rate vs step from metrics.jsonl; final metrics; config and data provenance.
A KDRL run plots its KD term beside the reward on one chart, the trade-off it is tuned on."""

from __future__ import annotations

from pathlib import Path

from llm_teach.report import plots
from llm_teach.report.eval import provenance
from llm_teach.report.render import Report, Section, Table
from llm_teach.report.runfiles import final_metrics, manifest, metric_series, read_records

# The curves worth a chart of their own, in the order shown (a method logs a subset of them).
CURVES = ("loss", "reward", "kd_loss", "beta", "learning_rate", "grad_norm", "rewards/accuracy_reward/mean")


def curve_sections(run_dir: Path) -> list[Section]:
    rows = read_records(run_dir / "metrics.jsonl")
    section = Section("Training curves", "curves")
    if not rows:
        section.text.append("metrics.jsonl is empty or missing: no step was logged.")
        return [section]
    reward, kd = metric_series(rows, "reward"), metric_series(rows, "kd_loss")
    if reward[0] and kd[0]:
        section.figures.append(plots.twin_lines(("reward", *reward), ("kd_loss", *kd), "KD term beside the reward"))
    for key in CURVES:
        xs, ys = metric_series(rows, key)
        if xs:
            section.figures.append(plots.lines({key: (xs, ys)}, f"{key} vs step", ylabel=key))
    final = Section("Final metrics", "final")
    last = final_metrics(rows)
    final.tables.append(Table(["metric", "last value"], [[k, v] for k, v in sorted(last.items())]))
    return [section, final]


def build(run_dir: Path) -> Report:
    found = manifest(run_dir)
    method = found.get("method", found.get("kind", "train:?").split(":")[-1])
    report = Report(f"Training ({method}): {run_dir.name}", f"train:{method}", str(run_dir))
    overview = Section("Overview", "overview")
    model_dir = found.get("model_dir")
    overview.text.append(f"Method {method}, status {found.get('status', '?')}, {found.get('global_step', '?')} "
                         f"optimizer steps, world size {found.get('world_size', 1)}; final model in "
                         f"{model_dir or '(not written yet)'}.")
    summary = found.get("summary") or {}
    if summary:
        overview.tables.append(Table(["summary", "value"], [[k, v] for k, v in summary.items()]))
    report.sections += [overview, *curve_sections(run_dir), provenance(found)]
    return report
