"""sft, dpo, grpo end to end through `llm-teach train` on tiny-random: a few steps, the loss or
reward moves, metrics.jsonl has one line per step, the model changes and loads back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def assert_trained(out: Path, steps: int, base: str = "tiny-random") -> list[dict]:
    """The common contract of a finished run; returns its metrics lines."""
    from llm_teach.models import load_model

    rows = metrics(out)
    assert [r["step"] for r in rows] == list(range(1, steps + 1))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["world_size"] == 1
    assert manifest["global_step"] == steps and manifest["versions"]["trl"]
    assert (out / "checkpoints" / f"checkpoint-{steps}" / "model.safetensors").is_file() or \
        (out / "checkpoints" / f"checkpoint-{steps}" / "adapter_model.safetensors").is_file()
    trained = load_model(str(out / "model" if (out / "model").is_dir() else out / "adapter"), device="cpu")
    initial = load_model(base, device="cpu")
    diff = max((a - b).abs().max().item() for a, b in zip(trained.state_dict().values(), initial.state_dict().values()))
    assert diff > 0, "the saved model is the initial one"
    return rows


def sft_records(n: int = 8) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"What is {i}+{i}?"},
                          {"role": "assistant", "content": f"{i}+{i}={2 * i}. The answer is \\boxed{{{2 * i}}}."}]}
            for i in range(n)]


def test_sft_completion_only_loss_masks_the_prompt(tiny_model_dir):
    """The labels TRL trains on are exactly the assistant turn's tokens (+ its end-of-turn)."""
    import trl
    from datasets import Dataset

    from llm_teach.models import load_tokenizer
    from llm_teach.trainers.sft import SFTConfig, build_dataset

    tok = load_tokenizer("tiny-random")
    cfg = SFTConfig(model="tiny-random", data="rg:chain_sum", limit=2)
    rows = build_dataset(cfg)
    trainer = trl.SFTTrainer(model=tiny_model_dir, train_dataset=Dataset.from_list(rows), processing_class=tok,
                             args=trl.SFTConfig(output_dir="/tmp/unused", completion_only_loss=True, use_cpu=True,
                                                report_to="none", max_length=512))
    batch = trainer.data_collator([trainer.train_dataset[0]])
    labels = batch["labels"][0]
    trained = tok.decode(labels[labels != -100])
    prompt_text = tok.apply_chat_template(rows[0]["prompt"], tokenize=False, add_generation_prompt=True)
    assert trained.startswith(rows[0]["completion"][0]["content"])  # starts right at the answer
    assert trained.endswith("<|im_end|>\n") or trained.endswith("<|im_end|>")
    assert tok.decode(batch["input_ids"][0][labels == -100]) .startswith(prompt_text[:40])
    assert (labels != -100).sum() < len(labels) / 2


def test_sft_cli_loss_falls_model_changes(tmp_path):
    data = write_jsonl(tmp_path / "sft.jsonl", sft_records())
    out = tmp_path / "out"
    res = run_cli("train", "--method", "sft", "--model", "tiny-random", "--data", data, "--max-steps", "4",
                  "--out", out, "--learning-rate", "1e-3", "--set", "per_device_train_batch_size=4")
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == str(out / "model")
    rows = assert_trained(out, 4)
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert (out / "model" / "tokenizer.json").is_file()
    assert not (out / "model" / "training_args.bin").exists()


def test_dpo_cli_with_lora_merge(tmp_path):
    pairs = [{"prompt": f"What is {i}+1?", "chosen": f"\\boxed{{{i + 1}}}", "rejected": f"\\boxed{{{i + 2}}}"}
             for i in range(8)]
    data = write_jsonl(tmp_path / "dpo.jsonl", pairs)
    out = tmp_path / "out"
    res = run_cli("train", "--method", "dpo", "--model", "tiny-random", "--data", data, "--max-steps", "3",
                  "--out", out, "--learning-rate", "5e-3", "--lora-r", "8", "--lora-alpha", "16", "--merge")
    assert res.returncode == 0, res.stderr[-2000:]
    rows = assert_trained(out, 3)
    assert (out / "adapter" / "adapter_model.safetensors").is_file() and (out / "model" / "config.json").is_file()
    assert len({round(r["loss"], 6) for r in rows}) > 1  # DPO starts at log 2 and moves
    assert rows[0]["loss"] == pytest.approx(0.6931, abs=1e-3)


@pytest.fixture(scope="module")
def boxed_tiny(tmp_path_factory) -> str:
    """tiny-random taught by SFT to answer \\boxed{7}: sampled at temperature 1 it is right only
    sometimes, which is what GRPO needs (a random model is never right: zero advantages)."""
    from llm_teach.trainers import train

    root = tmp_path_factory.mktemp("warm")
    data = write_jsonl(root / "warm.jsonl", [{"prompt": f"What is {i}+7-{i}?", "completion": "\\boxed{7}"}
                                             for i in range(8)])
    return str(train("sft", {"model": "tiny-random", "data": str(data), "max_steps": 30, "learning_rate": 3e-3,
                             "lr_scheduler_type": "constant", "logging_steps": 10}, root / "out"))


def test_grpo_cli_rewards_correct_answers(tmp_path, boxed_tiny):
    problems = write_jsonl(tmp_path / "problems.jsonl",
                           [{"id": f"p{i}", "question": f"What is {i}+7-{i}?", "answer": "7"} for i in range(8)])
    out = tmp_path / "out"
    res = run_cli("train", "--method", "grpo", "--model", boxed_tiny, "--data", problems, "--max-steps", "3",
                  "--out", out, "--learning-rate", "1e-3", "--set", "max_completion_length=8",
                  "--set", "format_reward=0.5", "--set", "num_generations=4")
    assert res.returncode == 0, res.stderr[-2000:]
    rows = assert_trained(out, 3, base=boxed_tiny)
    assert all("rewards/correctness/mean" in r and "rewards/boxed_format/mean" in r for r in rows)
    assert any(r["reward_std"] > 0 for r in rows), "no reward variance: GRPO had nothing to learn from"
    assert any(r["loss"] != 0 for r in rows)
