"""KDRL through the trainer (the loss-level math is tested in test_losses.py): the teacher
term is exact where it must be (teacher == student gives R == 0, also across padded
vocabularies and through a scoring Backend), kd_loss/beta are logged every step, the beta
schedule and reward-guided masking do what they say, and tokenizer mismatches are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli

PROBLEMS = [{"id": f"p{i}", "question": f"What is {i}+7-{i}?", "answer": "7"} for i in range(8)]


@pytest.fixture(scope="module")
def problems(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("kdrl") / "problems.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    return str(path)


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def small(problems: str, **extra) -> dict:
    return {"model": "tiny-random", "teacher": "tiny-random", "data": problems, "max_completion_length": 8,
            "num_generations": 4, "per_device_train_batch_size": 4, **extra}


def make_trainer(tmp: Path, problems: str, teacher, reward_funcs=None, **kd):
    """A KDRLTrainer on tiny-random with any teacher object (model or Backend) and rewards."""
    from datasets import Dataset

    from llm_teach.models import load_tokenizer
    from llm_teach.trainers.model_loading import load_student
    from llm_teach.trainers.grpo import build_dataset, grpo_args, reward_functions
    from llm_teach.trainers.kdrl import KDRLConfig, KDRLTrainer

    cfg = KDRLConfig(**small(problems, max_steps=1))
    return KDRLTrainer(model=load_student(cfg), reward_funcs=reward_funcs or reward_functions(cfg)[0],
                       args=grpo_args(cfg, tmp), train_dataset=Dataset.from_list(build_dataset(cfg)),
                       processing_class=load_tokenizer("tiny-random"), teacher=teacher, **kd)


def test_kdrl_cli_logs_kd_each_step_and_linear_schedule(tmp_path, problems):
    out = tmp_path / "out"
    res = run_cli("train", "--method", "kdrl", "--model", "tiny-random", "--teacher", "tiny-random?seed=1",
                  "--data", problems, "--max-steps", "3", "--out", out,
                  "--set", "max_completion_length=8", "--set", "kd_beta_schedule=linear", "--set", "kd_beta=5e-3",
                  "--set", "kd_beta_delta=1e-3", "--set", "kd_beta_min=3.5e-3", "--learning-rate", "1e-3")
    assert res.returncode == 0, res.stderr[-2000:]
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3]
    # beta_t = max(beta0 - delta * t, beta_min) at optimizer steps t = 0, 1, 2
    assert [r["beta"] for r in rows] == pytest.approx([5e-3, 4e-3, 3.5e-3])
    assert all(r["kd_loss"] > 0 and "reward" in r and r["kd_masked_frac"] == 0.0 for r in rows)
    assert len({r["kd_loss"] for r in rows}) == 3  # a different teacher: the term moves
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["models"]["teacher"] == "tiny-random?seed=1" and manifest["config"]["kd_estimator"] == "k2"
    from llm_teach.models import load_model

    trained, initial = load_model(str(out / "model"), device="cpu"), load_model("tiny-random", device="cpu")
    assert any(not a.equal(b) for a, b in zip(trained.state_dict().values(), initial.state_dict().values()))


def test_teacher_equal_to_student_gives_zero_kd(tmp_path, problems):
    """R_t = log pi_T - log pi_theta must be 0 when they are the same model: the teacher is
    scored over exactly the rollout tokens at exactly the student's positions."""
    from llm_teach.trainers import train

    train("kdrl", small(problems, max_steps=1, kd_estimator="k3"), tmp_path / "out")
    (row,) = metrics(tmp_path / "out")
    assert row["kd_loss"] == pytest.approx(0.0, abs=1e-9)


def test_padded_teacher_vocabulary_is_cut_to_the_shared_one(tmp_path, problems, tiny_model_dir):
    """The same weights with 64 extra (padding) rows in the vocabulary: scoring over the
    common vocabulary keeps R == 0; a softmax over the padded one would not."""
    from transformers import AutoModelForCausalLM

    from llm_teach.trainers.model_loading import load_teacher

    padded = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    padded.resize_token_embeddings(padded.config.vocab_size + 64, mean_resizing=False)
    padded.save_pretrained(tmp_path / "padded")
    trainer = make_trainer(tmp_path / "run", problems, load_teacher(str(tmp_path / "padded"), "float32"))
    assert trainer.common_vocab == 49152
    trainer.train()
    kd = [h["kd_loss"] for h in trainer.state.log_history if "kd_loss" in h]
    assert kd and kd[0] == pytest.approx(0.0, abs=1e-9)


def test_backend_teacher_scores_through_score(tmp_path, problems):
    """Any Backend with score() can teach (the openai/vLLM path): here the in-process HF backend
    over the student's own weights, so every aligned response has R == 0."""
    from llm_teach.backends.hf import HFBackend, HFConfig

    teacher = HFBackend("tiny-random", HFConfig(dtype="float32", device="cpu"))
    trainer = make_trainer(tmp_path / "run", problems, teacher)
    trainer.train()
    (log,) = [h for h in trainer.state.log_history if "kd_loss" in h]
    assert 0.0 <= log["kd_teacher_aligned_frac"] <= 1.0
    if log["kd_teacher_aligned_frac"] > 0:
        assert log["kd_loss"] == pytest.approx(0.0, abs=1e-6)


def first_of_group_correct(completions, **_):
    """Constructed rewards: in every group of 4 consecutive completions, only the first is right."""
    return [1.0 if i % 4 == 0 else 0.0 for i in range(len(completions))]


def all_wrong(completions, **_):
    return [0.0] * len(completions)


@pytest.mark.parametrize("mode, reward, masked, kd_zero", [
    ("none", first_of_group_correct, 0.0, False),
    ("response", first_of_group_correct, 0.25, False),  # KD only on the 3 wrong responses
    ("group", first_of_group_correct, 1.0, True),  # every group has a correct one: no KD anywhere
    ("group", all_wrong, 0.0, False),  # no group has a correct one: KD everywhere
])
def test_reward_guided_masking(tmp_path, problems, mode, reward, masked, kd_zero):
    from llm_teach.trainers.model_loading import load_teacher

    trainer = make_trainer(tmp_path / "run", problems, load_teacher("tiny-random?seed=1", "float32"),
                           reward_funcs=[reward], kd_mask=mode)
    trainer.train()
    (log,) = [h for h in trainer.state.log_history if "kd_loss" in h]
    assert log["kd_masked_frac"] == pytest.approx(masked)
    assert (log["kd_loss"] == 0.0) == kd_zero


def test_mismatched_tokenizer_is_refused(tmp_path, tiny_model_dir, problems):
    import shutil

    from transformers import AutoTokenizer

    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    tok = AutoTokenizer.from_pretrained(other)
    tok.add_tokens(["<not-in-the-student>"])
    tok.save_pretrained(other)
    res = run_cli("train", "--method", "kdrl", "--model", "tiny-random", "--teacher", other, "--data", problems,
                  "--max-steps", "1", "--out", tmp_path / "out")
    assert res.returncode == 2
    assert "different tokenizer" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("values, message", [
    ({}, "needs a teacher"),
    ({"teacher": "tiny-random", "kd_estimator": "k4"}, "kd_estimator"),
    ({"teacher": "tiny-random", "kd_mask": "wrong"}, "kd_mask"),
    ({"teacher": "x", "teacher_backend": "openai"}, "teacher_base_url"),
])
def test_kdrl_config_is_validated(values, message):
    from llm_teach.errors import UserError
    from llm_teach.trainers import make_config

    with pytest.raises(UserError, match=message):
        make_config("kdrl", {"model": "tiny-random", "data": "rg:chain_sum", **values})


@pytest.mark.slow
def test_smollm2_kdrl_lora(tmp_path, smollm2_dir):
    """The real thing, small: SmolLM2-135M teaches its 6-layer pruning, LoRA on the student."""
    problems = tmp_path / "problems.jsonl"
    problems.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS[:2]))
    out = tmp_path / "out"
    res = run_cli("train", "--method", "kdrl", "--model", "smollm2-135m?layers=6", "--teacher", "smollm2-135m",
                  "--data", problems, "--max-steps", "2", "--out", out, "--lora-r", "8",
                  "--set", "max_completion_length=16", "--set", "num_generations=2",
                  "--set", "per_device_train_batch_size=2", "--set", "teacher_batch_size=2")
    assert res.returncode == 0, res.stderr[-2000:]
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2] and all(r["kd_loss"] > 0 for r in rows)
    assert [r["beta"] for r in rows] == pytest.approx([5e-3, 4.95e-3])  # the default linear annealing
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
