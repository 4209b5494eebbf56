"""Reading a run directory for a report: its kind, manifest, JSONL files and metrics.

Reports read files only (never a trainer or a model), so they work on a run copied from
another machine and on runs whose code has since changed. A file that is missing or torn is
read as empty: a report of an interrupted run shows what is there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llm_teach.errors import UserError
from llm_teach.runs.directory import MARKERS, manifest_kind


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_records(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file, stopping at a torn last line; [] when absent."""
    records: list[dict[str, Any]] = []
    if not path.is_file():
        return records
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            break
        if isinstance(record, dict):
            records.append(record)
    return records


def run_kind(run_dir: Path) -> str:
    """"eval", "eval-suite", "train:METHOD", "generate:STAGE" or "pipeline"; a directory that
    holds no run is a one-line UserError."""
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: not a directory (give a run directory: an --out of eval, train, generate or run)")
    for name, kind in MARKERS.items():
        if (run_dir / name).is_file():
            return kind
    manifest = read_json(run_dir / "manifest.json")
    if not isinstance(manifest, dict):
        raise UserError(f"{run_dir}: no readable manifest.json or pipeline.json; not a run directory")
    return manifest_kind(manifest)


def manifest(run_dir: Path) -> dict[str, Any]:
    found = read_json(run_dir / "manifest.json")
    return found if isinstance(found, dict) else {}


def metric_series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of one metrics.jsonl key, skipping rows without a number for it."""
    xs, ys = [], []
    for row in rows:
        value = row.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and isinstance(row.get("step"), (int, float)):
            xs.append(row["step"])
            ys.append(float(value))
    return xs, ys


def final_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The last logged value of every numeric metric."""
    last: dict[str, float] = {}
    for row in rows:
        for key, value in row.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                last[key] = value
    return last


def flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts as (dotted key, leaf) rows for a config table."""
    if isinstance(value, dict):
        return [row for key, v in value.items() for row in flatten(v, f"{prefix}{key}.")]
    if isinstance(value, list):
        value = ", ".join(map(str, value))
    return [(prefix.rstrip("."), value)]
