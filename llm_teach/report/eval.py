"""The report of an `llm-teach eval` run (and of each benchmark of a --suite): accuracy with a
Wilson interval, maj@k/pass@k, a per-source table and a sample of graded completions."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from llm_teach.report import plots
from llm_teach.report.render import Report, Section, Table
from llm_teach.report.runfiles import manifest, read_json, read_records

Z95 = 1.959964  # the two-sided 95% normal quantile


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion. Written here (5 lines) rather than adding
    statsmodels or scipy for one formula; unlike the normal interval it stays inside [0, 1] and
    is not empty at 0/n, which is where small evaluations live."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def source_of(item: dict[str, Any], default: str) -> str:
    return str(item.get("source") or default)


def eval_sections(run_dir: Path, name: str = "", samples_shown: int = 5) -> list[Section]:
    """Summary, per-source and sample sections of one eval directory (anchors prefixed by `name`)."""
    summary = read_json(run_dir / "summary.json") or {}
    items = read_records(run_dir / "items.jsonl")
    n = int(summary.get("n") or len(items))
    accuracy = float(summary.get("accuracy") or 0.0)
    low, high = wilson(accuracy * n, n)
    prefix = f"{name}-" if name else ""
    head = Section(f"{name + ': ' if name else ''}Accuracy", f"{prefix}accuracy")
    head.text.append(f"{summary.get('model', '?')} on {summary.get('benchmark', '?')}: accuracy {accuracy:.3f} "
                     f"(95% Wilson interval {low:.3f}-{high:.3f}) over {n} problems, {summary.get('samples', 1)} "
                     f"sample(s) each.")
    rows = [["accuracy (pass@1)", accuracy], ["95% CI low", low], ["95% CI high", high],
            ["± stderr", summary.get("accuracy_stderr")]]
    rows += [[f"pass@{k}", v] for k, v in (summary.get("pass_at") or {}).items()]
    rows += [["maj@k", summary.get("maj_at_k")], ["pass@k", summary.get("pass_at_k")],
             ["truncated fraction", summary.get("truncated_fraction")],
             ["no-answer fraction", summary.get("no_answer_fraction")]]
    head.tables.append(Table(["metric", "value"], rows))
    by_source = per_source(items, str(summary.get("benchmark", "?")))
    head.figures.append(plots.bars([s for s, *_ in by_source], [acc for _, _, acc, _ in by_source],
                                   "Accuracy by source (95% Wilson interval)", "accuracy",
                                   errors=[ci for *_, ci in by_source]))
    pass_at = summary.get("pass_at") or {}
    if len(pass_at) > 1:
        ks = sorted(pass_at, key=int)
        head.figures.append(plots.lines({"pass@k": ([int(k) for k in ks], [pass_at[k] for k in ks])},
                                        "pass@k by k", "k", "pass@k"))
    sources = Section(f"{name + ': ' if name else ''}Per source", f"{prefix}sources")
    sources.tables.append(Table(["source", "problems", "accuracy", "95% CI"],
                                [[s, count, acc, f"{lo:.3f}-{hi:.3f}"] for s, count, acc, (lo, hi) in by_source]))
    shown = Section(f"{name + ': ' if name else ''}Sample completions", f"{prefix}samples")
    for item in items[:samples_shown]:
        for completion, answer, correct in list(zip(item.get("completions", []), item.get("answers", []),
                                                     item.get("correct", [])))[:1]:
            mark = "correct" if correct else "incorrect"
            shown.samples.append({"title": f"{item.get('id')}: extracted {answer!r}, gold {item.get('gold')!r} "
                                           f"- {mark}", "text": completion, "correct": bool(correct)})
    return [head, sources, shown]


def per_source(items: list[dict[str, Any]], default: str) -> list[tuple[str, int, float, tuple[float, float]]]:
    """(source, problems, accuracy, Wilson interval) per source; accuracy averages samples."""
    groups: dict[str, list[float]] = defaultdict(list)
    for item in items:
        correct = item.get("correct") or []
        groups[source_of(item, default)].append(sum(map(bool, correct)) / len(correct) if correct else 0.0)
    return [(s, len(v), sum(v) / len(v), wilson(sum(v), len(v))) for s, v in sorted(groups.items())]


def build(run_dir: Path) -> Report:
    report = Report(f"Evaluation: {run_dir.name}", "eval", str(run_dir))
    report.sections += eval_sections(run_dir)
    report.sections.append(provenance(manifest(run_dir)))
    return report


def build_suite(run_dir: Path) -> Report:
    """A --suite run: one block of sections per benchmark directory (OUT/<name>/)."""
    report = Report(f"Evaluation suite: {run_dir.name}", "eval-suite", str(run_dir))
    for sub in sorted(p for p in run_dir.iterdir() if (p / "summary.json").is_file()):
        report.sections += eval_sections(sub, sub.name)
    return report


def provenance(found: dict[str, Any]) -> Section:
    """What produced the run: command, data, config, versions (from its manifest)."""
    from llm_teach.report.runfiles import flatten

    section = Section("Provenance", "provenance")
    if found.get("command"):
        section.text.append(f"Command: {found['command']}")
    rows = [[k, v] for part in ("data", "models", "model", "config", "versions") if part in found
            for k, v in flatten(found[part], f"{part}.")]
    section.tables.append(Table(["key", "value"], rows))
    return section
