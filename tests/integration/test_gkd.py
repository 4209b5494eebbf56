"""`train --method gkd` on tiny-random: the loss falls on fixed data, on-policy batches really
are the student's samples, a LoRA run interrupted after its step-2 checkpoint resumes to the
same metrics as an uninterrupted one (the lmbda draws and samples come back with the RNG state)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import TrainerCallback

from llm_teach.trainers import train

TEACHER = "tiny-random?seed=1"


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def problems(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gkd") / "problems.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", "question": f"What is {i}+{i}?", "answer": str(2 * i)}) + "\n"
                            for i in range(4)))
    return path


def base(problems: Path, **extra) -> dict:
    return {"model": "tiny-random", "teacher": TEACHER, "data": str(problems), "limit": 2,
            "per_device_train_batch_size": 2, "max_new_tokens": 6, "temperature": 1.3, **extra}


def test_loss_falls_on_dataset_completions(tmp_path, problems):
    out = tmp_path / "off"
    train("gkd", base(problems, lmbda=0.0, beta=0.5, max_steps=4, learning_rate=5e-3), out)
    rows = metrics(out)
    assert [r["on_policy"] for r in rows] == [0.0] * 4
    assert rows[-1]["kd_loss"] < 0.8 * rows[0]["kd_loss"], [r["kd_loss"] for r in rows]
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"


class _Interrupt(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == 2:
            raise KeyboardInterrupt  # after the step-2 checkpoint, like a Ctrl-C


def test_on_policy_lora_resume_matches_uninterrupted(tmp_path, problems):
    values = base(problems, lmbda=0.5, max_steps=3, save_steps=1, lora_r=4, learning_rate=1e-2, seed=3)
    straight = tmp_path / "straight"
    train("gkd", values, straight)
    rows = metrics(straight)
    assert {r["on_policy"] for r in rows} == {0.0, 1.0}  # seed 3: both kinds of batches in 3 steps
    # on-policy rows score the student's own samples (at most max_new_tokens each), not the dataset's
    dataset_tokens = {r["completion_tokens"] for r in rows if r["on_policy"] == 0.0}
    assert all(r["completion_tokens"] <= 2 * 6 for r in rows if r["on_policy"] == 1.0)
    assert all(t > 2 * 6 for t in dataset_tokens)
    assert (straight / "adapter" / "adapter_config.json").is_file()

    crashed = tmp_path / "crashed"
    with pytest.raises(KeyboardInterrupt):
        train("gkd", values, crashed, callbacks=[_Interrupt()])
    assert not (crashed / "adapter").exists()
    train("gkd", values, crashed, resume=True)
    resumed = metrics(crashed)
    assert [r["step"] for r in resumed] == [1, 2, 3]
    for a, b in zip(rows, resumed):
        assert (a["on_policy"], a["completion_tokens"]) == (b["on_policy"], b["completion_tokens"])  # same samples
        # the loss after the restart agrees to float noise of the reloaded optimizer state (~4e-4 measured)
        assert a["kd_loss"] == pytest.approx(b["kd_loss"], rel=1e-2)
