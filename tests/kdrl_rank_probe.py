"""Run under `accelerate launch` (2 ranks) by test_planted_bugs.py: a KDRL trainer whose
correctness reward depends on each completion's text, recording on every rank, per generation,
the rewards of ITS completions and the KD mask it applied. Usage: kdrl_rank_probe.py OUT PROBLEMS"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

seen: list[list[float]] = []


def even_length(completions, **_):
    """1.0 when the completion text has an even number of characters: varies across responses."""
    rewards = [float(len(c if isinstance(c, str) else c[0]["content"]) % 2 == 0) for c in completions]
    seen.append(rewards)
    return rewards


def main(out: Path, problems: str) -> None:
    from datasets import Dataset

    from llm_teach.models import load_tokenizer
    from llm_teach.trainers.grpo import build_dataset, grpo_args
    from llm_teach.trainers.kdrl import KDRLConfig, KDRLTrainer
    from llm_teach.trainers.lifecycle import end_process_group
    from llm_teach.trainers.model_loading import load_student, load_teacher

    cfg = KDRLConfig(model="tiny-random", teacher="tiny-random?seed=1", data=problems, max_completion_length=8,
                     num_generations=4, per_device_train_batch_size=4, max_steps=2, kd_mask="response")
    trainer = KDRLTrainer(model=load_student(cfg), reward_funcs=[even_length], args=grpo_args(cfg, out),
                          train_dataset=Dataset.from_list(build_dataset(cfg)),
                          processing_class=load_tokenizer("tiny-random"),
                          teacher=load_teacher("tiny-random?seed=1", "float32"))
    generate, rows = trainer._generate_and_score_completions, []

    def record(inputs):
        output = generate(inputs)
        rows.append({"rewards": seen[-1], "kd_mask": output["kd_mask"].tolist()})
        return output

    trainer._generate_and_score_completions = record
    trainer.train()
    rank = trainer.accelerator.process_index
    (out / f"rank{rank}.json").write_text(json.dumps(rows))
    end_process_group()  # as `llm-teach train` does: a gloo group left to exit can abort a rank


if __name__ == "__main__":
    torch.manual_seed(0)
    main(Path(sys.argv[1]), sys.argv[2])
