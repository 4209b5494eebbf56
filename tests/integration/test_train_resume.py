"""Re-running the same command after a crash continues from the last checkpoint with the same
steps and data order: a run SIGKILLed right after its step-2 checkpoint, then re-run, logs the
same losses and ends at the same global step as an uninterrupted run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, run_cli

CRASH = """
import os, signal, sys, json
from transformers import TrainerCallback
from llm_teach.trainers import train

class CrashAfterCheckpoint(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == 2:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, like a preempted job

train("sft", json.loads(sys.argv[1]), sys.argv[2], callbacks=[CrashAfterCheckpoint()])
"""


def losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("resume") / "sft.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Count to {i}.", "completion": " ".join(map(str, range(i + 2)))})
                            + "\n" for i in range(8)))
    return path


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path, records):
    values = {"model": "tiny-random", "data": str(records), "max_steps": 6, "save_steps": 2,
              "per_device_train_batch_size": 2, "learning_rate": 1e-3}  # 6 steps of 2 = 1.5 epochs
    args = ["--method", "sft", "--model", "tiny-random", "--data", records, "--max-steps", "6",
            "--learning-rate", "1e-3", "--set", "save_steps=2", "--set", "per_device_train_batch_size=2"]
    crashed = tmp_path / "crashed"
    proc = subprocess.run([sys.executable, "-c", CRASH, json.dumps(values), str(crashed)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert (crashed / "checkpoints" / "checkpoint-2").is_dir() and not (crashed / "model").exists()
    assert json.loads((crashed / "manifest.json").read_text())["status"] == "running"

    # The same command again (no --resume needed: same config and data) continues the killed run.
    res = run_cli("train", *args, "--out", crashed)
    assert res.returncode == 0, res.stderr[-2000:]
    straight = tmp_path / "straight"
    res = run_cli("train", *args, "--out", straight)
    assert res.returncode == 0, res.stderr[-2000:]

    resumed_manifest = json.loads((crashed / "manifest.json").read_text())
    assert resumed_manifest["resumed_from"] == "checkpoint-2"
    assert resumed_manifest["global_step"] == json.loads((straight / "manifest.json").read_text())["global_step"] == 6
    a, b = losses(crashed), losses(straight)
    assert list(a) == list(b) == [1, 2, 3, 4, 5, 6]  # each step logged once, in order
    assert [a[s] for s in a] == pytest.approx([b[s] for s in b], rel=1e-5)  # same batches in the same order

    # A finished run is not redone: the same command returns its model at once.
    res = run_cli("train", *args, "--out", straight)
    assert res.returncode == 0 and res.stdout.strip().splitlines()[-1] == str(straight / "model")
