"""SIGKILL `llm-teach generate` at random points, re-run, and get exactly the uninterrupted output.

Two runs of each: one uninterrupted (the reference) and one killed at least 3 times at seeded
random moments (after a random number of finished work units plus a random delay, so kills land
inside model calls, between a unit's records and its log line, and inside logit-store writes),
then run to completion. Outputs must be byte-identical, and the logit store must hold each
record exactly once with the same arrays.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from conftest import CLI, ROOT
from stage_kill import units_done
from llm_teach.data import read_jsonl
from llm_teach.data.logit_store import TopKLogitStore

KILLS = 3


def _kill_repeatedly(command: list[str], out: Path, step: str, total_units: int, seed: int) -> list[int]:
    """Start `command` KILLS times, each time SIGKILLing it after a random amount of progress."""
    rng = random.Random(seed)
    killed_at = []
    for _ in range(KILLS):
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        target = min(total_units - 3, units_done(out, step) + rng.randint(0, 2))  # leave work to kill
        deadline = time.time() + 300
        while units_done(out, step) < target and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at.append(units_done(out, step))
        assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed; make it longer"
    return killed_at


def test_cli_ssb_on_tiny_random_survives_sigkill(tmp_path):
    args = ["generate", "ssb", "--teacher", "tiny-random", "--data", "rg:chain_sum", "--limit", "8",
            "--set", "chunk_size=1", "--set", "max_new_tokens=16", "--set", "explain_max_new_tokens=8"]
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    assert subprocess.run([*CLI, *args, "--out", str(reference)], cwd=ROOT, capture_output=True).returncode == 0
    killed_at = _kill_repeatedly([*CLI, *args, "--out", str(resumed)], resumed, "ssb", 8, seed=1)
    assert killed_at[-1] < 8
    assert subprocess.run([*CLI, *args, "--out", str(resumed)], cwd=ROOT, capture_output=True).returncode == 0
    for name in ("rollouts.jsonl", "records.jsonl", "work/ssb.jsonl"):
        assert (resumed / name).read_bytes() == (reference / name).read_bytes(), name
    assert not list(resumed.rglob("*.part"))


SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
from llm_teach.data import load_problems
from llm_teach.stages.roles import Models
from llm_teach.stages.ssb import SSBConfig, ssb
from scripted_backend import ScriptedBackend

problems = load_problems("rg:chain_sum", limit=12)
gold = {{p.question: int(p.answer) for p in problems}}

def respond(text, i, seed):
    time.sleep(0.03)
    g = next(v for q, v in gold.items() if q in text)
    if "CORRECT" in text:
        return " ".join(f"step{{(seed + k) % 97}}" for k in range(40)) + f" \\\\boxed{{{{{{g}}}}}}"
    return f"try {{seed % 1000}} \\\\boxed{{{{{{g + (i + seed) % 3}}}}}}"

ssb(problems, Models.of(ScriptedBackend(respond)), SSBConfig(chunk_size=1, top_k=5, rollouts=4), sys.argv[1])
"""


def test_ssb_records_and_logit_store_survive_sigkill(tmp_path):
    script = tmp_path / "run_ssb.py"
    script.write_text(SCRIPT.format(tests=str(ROOT / "tests")))
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    assert subprocess.run([sys.executable, script, reference], cwd=ROOT).returncode == 0
    records = read_jsonl(reference / "records.jsonl")
    assert len(records) >= 6  # the scripted model leaves most problems with right and wrong rollouts
    _kill_repeatedly([sys.executable, str(script), str(resumed)], resumed, "ssb", 12, seed=2)
    assert subprocess.run([sys.executable, script, resumed], cwd=ROOT).returncode == 0

    def without_store_path(rs):
        return [{**r, "logits_ref": {k: v for k, v in r["logits_ref"].items() if k != "store"}} for r in rs]

    assert without_store_path(read_jsonl(resumed / "records.jsonl")) == without_store_path(records)
    assert (resumed / "rollouts.jsonl").read_bytes() == (reference / "rollouts.jsonl").read_bytes()
    ref_store, res_store = TopKLogitStore(reference / "logits"), TopKLogitStore(resumed / "logits")
    assert len(res_store) == len(records)  # each record stored exactly once
    for record in records:
        a, b = ref_store.get(record["id"]), res_store.get(record["id"])
        for x, y in zip(a, b):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
