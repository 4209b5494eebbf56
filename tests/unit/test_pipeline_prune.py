"""`llm-teach run --prune-checkpoints`: a completed train step's checkpoints go, its model
stays; a failed one keeps them to resume; without the flag nothing is removed. The training
body is a stand-in that writes what a trainer leaves in OUT (what is under test is the
pipeline's housekeeping)."""

import json

import pytest

from llm_teach import pipeline as pl
from llm_teach import pipeline_steps
from llm_teach.errors import UserError


@pytest.fixture
def two_trainings(tmp_path, monkeypatch):
    (tmp_path / "p.yaml").write_text(
        "steps:\n"
        "  - {name: good, train: sft, config: {model: tiny-random, data: d.jsonl, max_steps: 1}}\n"
        "  - {name: bad, train: sft, config: {model: tiny-random, data: d.jsonl, max_steps: 2}}\n")

    def trainer(step, out):
        (out / "checkpoints" / "checkpoint-1").mkdir(parents=True)
        (out / "checkpoints" / "checkpoint-1" / "optimizer.pt").write_bytes(b"x" * 1000)
        if step.name == "bad":
            raise UserError("training failed; re-run to resume")
        (out / "model").mkdir()
        (out / "model" / "model.safetensors").write_bytes(b"w")
        return {"out": str(out), "model": str(out / "model")}

    monkeypatch.setitem(pipeline_steps.RUNNERS, "train", trainer)
    monkeypatch.chdir(tmp_path)
    return pl.load_pipeline(tmp_path / "p.yaml"), tmp_path / "out"


def test_prune_removes_a_completed_trainings_checkpoints_only(two_trainings):
    pipeline, out = two_trainings
    lines = []
    pl.run_pipeline(pipeline, out, echo=lines.append, keep_going=True, prune_checkpoints=True)
    assert not (out / "good" / "checkpoints").exists() and (out / "good" / "model" / "model.safetensors").is_file()
    assert (out / "bad" / "checkpoints" / "checkpoint-1" / "optimizer.pt").is_file()  # kept to resume
    assert any(line.startswith("[good] checkpoints removed") for line in lines)
    assert json.loads((out / "pipeline.json").read_text())["steps"]["good"]["status"] == "complete"


def test_without_the_flag_checkpoints_stay(two_trainings):
    pipeline, out = two_trainings
    pl.run_pipeline(pipeline, out, echo=lambda *_: None, keep_going=True)
    assert (out / "good" / "checkpoints" / "checkpoint-1").is_dir()
