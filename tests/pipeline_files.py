"""Pipelines of stand-in steps, for the tests of the pipeline's scheduling and bookkeeping
(tests/unit/test_pipeline_keep_going.py, test_pipeline_jobs.py).

What those tests check is which steps run, when, and what is recorded; not evaluation. So
every step is an eval step over one tiny problems file, and the eval runner is swapped for the
test's own stand-in.
"""

from __future__ import annotations

import json
from typing import Callable

from llm_teach import pipeline as pl
from llm_teach import pipeline_steps


def stand_in_pipeline(tmp_path, monkeypatch, evals: dict[str, str], runner: Callable) -> pl.Pipeline:
    """A pipeline (written to tmp_path/p.yaml) with one eval step per `evals` item: step `name`
    evaluates `evals[name]` (a model name, or references to earlier steps such as
    `${a.out}/m`), and `runner(step, out)` stands in for every eval step."""
    data = tmp_path / "p.jsonl"
    data.write_text(json.dumps({"id": "a", "question": "1 + 1 =", "answer": "2"}) + "\n")
    steps = "".join(f"  - {{name: {name}, eval: '{model}', data: {data}, benchmark: math500}}\n"
                    for name, model in evals.items())
    (tmp_path / "p.yaml").write_text("steps:\n" + steps)
    monkeypatch.setitem(pipeline_steps.RUNNERS, "eval", runner)
    return pl.load_pipeline(tmp_path / "p.yaml")
