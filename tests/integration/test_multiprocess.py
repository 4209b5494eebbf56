"""`llm-teach train` unchanged under `accelerate launch`: 2 gloo ranks on CPU, and DeepSpeed
ZeRO-3 on 2 CPU ranks, for sft and kdrl. Both ranks must take part (world size 2 in the
manifest) and a checkpoint must be written. The ZeRO jobs do not compile DeepSpeed's
inference-only shm kernel (it took ~1-2 min; see llm_teach/trainers/deepspeed_ops.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from fault_server import free_port

pytestmark = pytest.mark.slow

ACCELERATE = str(Path(sys.executable).parent / "accelerate")
CONFIGS = {
    "gloo": (["--config_file", "configs/accelerate/cpu-2proc.yaml"], {}),
    "zero3": (["--config_file", "configs/accelerate/zero3.yaml", "--num_processes", "2", "--mixed_precision", "no"],
              {"DS_ACCELERATOR": "cpu"}),
}


def launch(kind: str, *train_args, timeout: float = 900) -> subprocess.CompletedProcess:
    flags, env = CONFIGS[kind]
    # A port of its own: under `pytest -n` another 2-rank test may be running beside this one.
    return subprocess.run([ACCELERATE, "launch", *flags, "--main_process_port", str(free_port()),
                           "-m", "llm_teach", "train", *map(str, train_args)],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout, env={**os.environ, **env})


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mp")
    sft = root / "sft.jsonl"
    sft.write_text("".join(json.dumps({"prompt": f"What is {i}+{i}?", "completion": f"\\boxed{{{2 * i}}}"}) + "\n"
                           for i in range(8)))
    problems = root / "problems.jsonl"
    problems.write_text("".join(json.dumps({"id": f"p{i}", "question": f"What is {i}+{i}?", "answer": str(2 * i)})
                                + "\n" for i in range(4)))
    return {"sft": sft, "problems": problems}


def check(out: Path, res: subprocess.CompletedProcess, steps: int = 2) -> list[dict]:
    assert res.returncode == 0, res.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["status"] == "complete"
    assert (out / "checkpoints" / f"checkpoint-{steps}" / "trainer_state.json").is_file()
    assert (out / "model" / "model.safetensors").is_file()
    assert res.stdout.count(str(out / "model")) == 1  # printed once, not once per rank
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, steps + 1))  # written by rank 0 only
    return rows


@pytest.mark.parametrize("kind", ["gloo", "zero3"])
def test_sft_two_ranks(tmp_path, data, kind):
    out = tmp_path / "out"
    res = launch(kind, "--method", "sft", "--model", "tiny-random", "--data", data["sft"], "--max-steps", "2",
                 "--out", out, "--set", "per_device_train_batch_size=2")
    rows = check(out, res)
    assert all(r["loss"] > 0 for r in rows)
    # DeepSpeed's inference-only shm all-reduce kernel is not compiled for training (deepspeed_ops.py).
    assert "deepspeed_shm_comm" not in res.stdout + res.stderr


@pytest.mark.parametrize("kind", ["gloo", "zero3"])
def test_kdrl_two_ranks(tmp_path, data, kind):
    """Groups of 4 completions span the two ranks (2 per rank): rewards and the KD mask are
    computed over the gathered batch, kd_loss is reduced over both ranks."""
    out = tmp_path / "out"
    res = launch(kind, "--method", "kdrl", "--model", "tiny-random", "--teacher", "tiny-random?seed=1",
                 "--data", data["problems"], "--max-steps", "2", "--out", out,
                 "--set", "per_device_train_batch_size=2", "--set", "num_generations=4",
                 "--set", "max_completion_length=8", "--set", "kd_mask=group")
    rows = check(out, res)
    assert all(r["kd_loss"] > 0 and r["kd_masked_frac"] == 0.0 for r in rows)
    assert [r["beta"] for r in rows] == pytest.approx([5e-3, 4.95e-3])


def test_gkd_two_ranks(tmp_path, data):
    """gkd under 2 gloo ranks: the lmbda draw is the same on both (one seed), kd_loss is reduced
    over both ranks."""
    out = tmp_path / "out"
    res = launch("gloo", "--method", "gkd", "--model", "tiny-random", "--teacher", "tiny-random?seed=1",
                 "--data", data["problems"], "--max-steps", "2", "--out", out,
                 "--set", "per_device_train_batch_size=1", "--set", "max_new_tokens=4", "--set", "lmbda=0.5")
    rows = check(out, res)
    assert all(r["kd_loss"] > 0 and r["on_policy"] in (0.0, 1.0) for r in rows)
