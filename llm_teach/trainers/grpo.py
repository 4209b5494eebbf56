"""GRPO with TRL's GRPOTrainer; the reward is answer correctness from `llm_teach.grading`.

Problems come from any Problem source. Each becomes a dataset row with the evaluation chat
prompt plus the columns the reward needs (`answer`, `benchmark`, `meta` as JSON text, since
reasoning-gym metadata has no fixed Arrow schema); TRL passes those columns to the reward
functions next to the completions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_teach.config import check_fields, option
from llm_teach.trainers.model_loading import load_student
from llm_teach.trainers.records import load_training_problems, problem_prompt
from llm_teach.trainers.train_config import TrainConfig, lora_config, make_args, trl_kwargs


@dataclass
class GRPOConfig(TrainConfig):
    """GRPO on Problems with a correctness reward (+ optional format reward)."""

    learning_rate: float = option("Peak learning rate (AdamW).", 1e-6)
    num_generations: int = option("Completions sampled per prompt (the GRPO group size). "
                                 "per_device_train_batch_size x processes must be a multiple of it.", 4)
    max_completion_length: int = option("Maximum new tokens per completion.", 256)
    temperature: float = option("Sampling temperature of the rollouts.", 1.0)
    top_p: float = option("Nucleus sampling of the rollouts.", 1.0)
    beta: float = option("Coefficient of GRPO's own KL to the reference model (0 = no reference model).", 0.0)
    loss_type: str = option("TRL GRPO loss aggregation: dapo, grpo, dr_grpo, bnpo, ...", "dapo")
    epsilon: float = option("PPO-style clipping range of the importance ratio.", 0.2)
    scale_rewards: str = option("Advantage normalization: group, batch or none.", "group")
    num_iterations: int = option("Optimization passes per generated batch (mu in the GRPO paper).", 1)
    mask_truncated_completions: bool = option("Exclude completions that hit max_completion_length from the loss.",
                                             False)
    format_reward: float = option("Weight of a format reward (1 if the completion has a \\boxed{} answer); "
                                 "0 disables it.", 0.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        # num_generations >= 2: GRPO compares completions within a group.
        check_fields(self, num_generations=">= 2", max_completion_length=">= 1", temperature="> 0", top_p="(0, 1]",
                           beta=">= 0", epsilon="> 0", num_iterations=">= 1", format_reward=">= 0")


def completion_text(completion: Any) -> str:
    """TRL hands conversational completions as `[{"role": "assistant", "content": ...}]`."""
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion if isinstance(m, dict))
    return str(completion)


def correctness(completions: list, answer: list[str], benchmark: list[str], meta: list[str], **_) -> list[float]:
    """1.0 when the completion's final answer grades correct against the gold answer, else 0.0."""
    from llm_teach.grading import is_correct

    return [float(is_correct(completion_text(c), a, b, json.loads(m)))
            for c, a, b, m in zip(completions, answer, benchmark, meta, strict=True)]


def boxed_format(completions: list, **_) -> list[float]:
    """1.0 when the completion states a final answer in \\boxed{} (what evaluation extracts)."""
    from llm_teach.grading import last_boxed

    return [float(last_boxed(completion_text(c)) is not None) for c in completions]


def reward_functions(cfg: GRPOConfig) -> tuple[list, list[float]]:
    """Reward functions and their weights. Correctness is always first: KDRL's reward-guided
    masking reads that column."""
    funcs, weights = [correctness], [1.0]
    if cfg.format_reward:
        funcs.append(boxed_format)
        weights.append(cfg.format_reward)
    return funcs, weights


def build_dataset(cfg: TrainConfig) -> list[dict[str, Any]]:
    from llm_teach.data import grading_benchmark

    return [{"prompt": problem_prompt(p.question, cfg.template), "answer": p.answer,
             "benchmark": grading_benchmark(p.source), "meta": json.dumps(p.meta), "id": p.id}
            for p in load_training_problems(cfg)]


def grpo_args(cfg: GRPOConfig, out: Path, **extra):
    import trl

    return make_args(
        trl.GRPOConfig,
        **trl_kwargs(cfg, out), num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length, temperature=cfg.temperature, top_p=cfg.top_p,
        beta=cfg.beta, loss_type=cfg.loss_type, epsilon=cfg.epsilon, scale_rewards=cfg.scale_rewards,
        num_iterations=cfg.num_iterations, mask_truncated_completions=cfg.mask_truncated_completions,
        reward_weights=reward_functions(cfg)[1], log_completions=False, **extra)


def build_trainer(cfg: GRPOConfig, out: Path, callbacks=None):
    import datasets
    import trl

    from llm_teach.models import load_tokenizer

    rows = build_dataset(cfg)
    args = grpo_args(cfg, out)
    return trl.GRPOTrainer(model=load_student(cfg), reward_funcs=reward_functions(cfg)[0], args=args,
                           train_dataset=datasets.Dataset.from_list(rows),
                           processing_class=load_tokenizer(cfg.model), peft_config=lora_config(cfg),
                           callbacks=callbacks)
